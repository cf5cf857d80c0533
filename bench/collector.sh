#!/usr/bin/env bash
# Collector benchmarks (issue 4): assembly + encoding throughput per core,
# record → queryable latency in the embedded store at 10 k spans/s, and the
# collector's memory bound under never-closing spans (bench/collector.py).
# Optimised builds of the daemons and the collector with the `bench-fast`
# profile (release without LTO, 16 codegen units: the shipped thin-LTO,
# one-codegen-unit build of DataFusion takes most of an hour on 2 vCPUs);
# PROFILE=release measures the shipped build.
# Writes bench/results/collector.json; `bash bench/run.sh collector` runs
# this and rewrites docs/BENCHMARKS.md.
#
# usage: bash bench/collector.sh [--quick]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out/collector"
RESULTS="$ROOT/bench/results"
log() { echo "[bench] $*" >&2; }
mkdir -p "$OUT" "$RESULTS"
PROFILE="${PROFILE:-bench-fast}"
TARGET="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

export PROFILE
log "building blkkin-relayd, blkkin-consumerd, blkkin-collector, libblkin (profile $PROFILE)"
BIN="$TARGET/$PROFILE"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
cargo build --profile "$PROFILE" -q "${BENCH_PKGS[@]}" --manifest-path "$ROOT/Cargo.toml"
mkdir -p "$OUT/lib"
cp "$BIN/libblkin.so" "$OUT/lib/libblkin.so"
ln -sf libblkin.so "$OUT/lib/libblkin.so.0"
gcc -O2 -Wall -Wextra -I"$ROOT/include" "$ROOT/bench/c/span_load.c" -L"$OUT/lib" -lblkin \
	-Wl,-rpath,"$OUT/lib" -o "$OUT/span_load"

log "assembly + encoding throughput (collector/benches/throughput.rs)"
cargo bench -q --profile "$PROFILE" "${BENCH_PKGS[@]}" --bench throughput \
	--manifest-path "$ROOT/Cargo.toml" | tee "$OUT/throughput.txt"

python3 "$ROOT/bench/collector.py" --bin "$BIN" --lib "$OUT/lib" --load "$OUT/span_load" \
	--throughput "$OUT/throughput.txt" --out "$RESULTS/collector.json" --work "$OUT/work" "$@"
rm -rf "$OUT/work"
