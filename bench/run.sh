#!/usr/bin/env bash
# Runs the record-path benchmarks side by side on this machine and writes
# docs/BENCHMARKS.md from what it measured:
#   * blkkin through the C ABI (bench/c/bench_blkin.c, -lblkin)
#   * the original BlkKin path: LTTng-UST tracepoints with a live session
#     (bench/lttng/run.sh; installs lttng-tools/liblttng-ust-dev if needed)
#   * blkkin's Rust API and fastrace (cargo bench -p blkkin --bench record)
#   * bytes per record
# The C and LTTng harnesses alternate (3 + 2 runs) so a slow phase of a noisy
# VM hits both; each reports medians over many rounds, and the table shows
# the median of the runs. Raw results go to bench/out/.
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
run_blkin 1
run_lttng 1
run_blkin 2
run_lttng 2
run_blkin 3

log "Rust API and fastrace (criterion)"
RINGS="$(mktemp -d "$TMP/rings.XXXX")"
BLKIN_SHM_DIR="$RINGS" BLKIN_RING_MODE=overwrite \
	cargo bench -q -p blkkin --bench record --manifest-path "$ROOT/Cargo.toml" -- --noplot >"$OUT/criterion.txt" 2>&1 ||
	{ cat "$OUT/criterion.txt" >&2; exit 1; }
python3 - "$TARGET/criterion" >>"$OUT/results.jsonl" <<'PY'
import json, os, sys
base = sys.argv[1]
for group in ("rust", "fastrace"):
    for name in sorted(os.listdir(os.path.join(base, group))):
        est = os.path.join(base, group, name, "new", "estimates.json")
        if os.path.exists(est):
            med = json.load(open(est))["median"]["point_estimate"]
            print(json.dumps({"bench": f"{group}_{name}", "median_ns": round(med, 2)}))
PY

log "record sizes"
SIZES="$(mktemp -d "$TMP/rings.XXXX")"
BLKIN_SHM_DIR="$SIZES" cargo run -q --release -p blkkin --example record_size --manifest-path "$ROOT/Cargo.toml" >>"$OUT/results.jsonl"

log "writing docs/BENCHMARKS.md"
python3 "$ROOT/bench/report.py" "$OUT/results.jsonl" "$ROOT/docs/BENCHMARKS.md"
log "done: docs/BENCHMARKS.md"
