#!/usr/bin/env bash
# Runs the record-path benchmarks side by side on this machine and writes
# docs/BENCHMARKS.md from what it measured:
#   * blkkin through the C ABI (bench/c/bench_blkin.c, -lblkin)
#   * the original BlkKin path: LTTng-UST tracepoints with a live session
#     (bench/lttng/run.sh; installs lttng-tools/liblttng-ust-dev if needed)
#   * blkkin's Rust API and fastrace (libblkkin/examples/bench_rust.rs)
#   * bytes per record
# All harnesses use one method (spin to warm the vCPU, interleaved rounds,
# median per run) and alternate (C, Rust, LTTng, C, Rust, LTTng, C, Rust) so a
# slow phase of a noisy VM hits all of them; the table shows the median of
# the runs. Raw results go to bench/out/.
#
# usage: bash bench/run.sh        (about 2-3 minutes)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
mkdir -p "$OUT"
: >"$OUT/results.jsonl"
log() { echo "[bench] $*" >&2; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

log "building libblkin (release)"
cargo build --release -q -p blkin-capi --manifest-path "$ROOT/Cargo.toml"
TARGET="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
mkdir -p "$TMP/lib"
cp "$TARGET/release/libblkin.so" "$TMP/lib/libblkin.so"
ln -sf libblkin.so "$TMP/lib/libblkin.so.0"
gcc -O2 -Wall -Wextra -I"$ROOT/include" "$ROOT/bench/c/bench_blkin.c" -L"$TMP/lib" -lblkin \
	-Wl,-rpath,"$TMP/lib" -lpthread -o "$TMP/bench_blkin"

run_blkin() {
	local dir
	dir="$(mktemp -d "$TMP/rings.XXXX")"
	log "blkkin C ABI run $1"
	BLKIN_SHM_DIR="$dir" BLKIN_RING_MODE=overwrite "$TMP/bench_blkin" | sed "s/}\$/,\"run\":$1}/" >>"$OUT/results.jsonl"
	rm -rf "$dir"
}
run_lttng() {
	log "LTTng-UST run $1"
	bash "$ROOT/bench/lttng/run.sh" | sed "s/}\$/,\"run\":$1}/" >>"$OUT/results.jsonl"
}
cargo build --release -q -p blkkin --example bench_rust --manifest-path "$ROOT/Cargo.toml"
run_rust() {
	local dir
	dir="$(mktemp -d "$TMP/rings.XXXX")"
	log "blkkin Rust API + fastrace run $1"
	BLKIN_SHM_DIR="$dir" BLKIN_RING_MODE=overwrite "$TARGET/release/examples/bench_rust" |
		sed "s/}\$/,\"run\":$1}/" >>"$OUT/results.jsonl"
	rm -rf "$dir"
}
run_blkin 1
run_rust 1
run_lttng 1
run_blkin 2
run_rust 2
run_lttng 2
run_blkin 3
run_rust 3

log "record sizes"
SIZES="$(mktemp -d "$TMP/rings.XXXX")"
BLKIN_SHM_DIR="$SIZES" cargo run -q --release -p blkkin --example record_size --manifest-path "$ROOT/Cargo.toml" >>"$OUT/results.jsonl"

log "writing docs/BENCHMARKS.md"
python3 "$ROOT/bench/report.py" "$OUT/results.jsonl" "$ROOT/docs/BENCHMARKS.md"
log "done: docs/BENCHMARKS.md"
