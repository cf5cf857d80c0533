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
# Then the pipeline benchmarks of the consumer daemon and the relay
# (bench/pipeline.py, see its docstring). Results are kept in bench/results/
# (record.jsonl, pipeline.json) so either part can be re-run alone and the
# report is always written from both.
#
# The collector benchmarks (bench/collector.sh: assembly + encoding per
# core, record → queryable in the embedded store, memory bound) and the span
# archive benchmark (bench/archive.sh: demo-like spans into a real HDFS and a
# local directory, then `analyze` over 1 M spans) and the Cassandra store writes, ours vs Zipkin's own writer
# (bench/cassandra.sh) run only when asked: `bash bench/run.sh
# collector|archive|cassandra` (results in collector.json, archive.json,
# cassandra.json, kept like the others).
#
# `bash bench/run.sh install` times scripts/install.sh from a fresh clone
# (bench/install.sh; results in install.json).
#
# `bash bench/run.sh fuzz` runs every fuzz target of fuzz/ for 10 minutes
# (scripts/fuzz.sh; results in fuzz.jsonl).
#
# usage: bash bench/run.sh [all|record|pipeline|collector|archive|cassandra|install|fuzz|report]
#   all       both parts (default; about 5 minutes)
#   record    record-path benchmarks only (about 2-3 minutes)
#   pipeline  consumer → relay benchmarks only (about 3 minutes)
#   collector collector benchmarks only (about 5 minutes after the release build)
#   archive   span archive → HDFS/local and analyze (a few minutes, after a
#             first build of DataFusion & co. that takes tens of minutes on
#             2 vCPUs)
#   cassandra Cassandra sink vs Zipkin's writer (about 10 minutes)
#   install   scripts/install.sh from a fresh clone, timed (a few minutes)
#   report    only rewrite docs/BENCHMARKS.md from bench/results/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
RESULTS="$ROOT/bench/results"
WHAT="${1:-all}"
case "$WHAT" in
all | record | pipeline | collector | archive | cassandra | install | fuzz | report) ;;
*)
	echo "usage: bash bench/run.sh [all|record|pipeline|collector|archive|cassandra|install|fuzz|report]" >&2
	exit 2
	;;
esac
mkdir -p "$OUT" "$RESULTS"
log() { echo "[bench] $*" >&2; }

report() {
	log "writing docs/BENCHMARKS.md"
	python3 "$ROOT/bench/report.py" "$RESULTS" "$ROOT/docs/BENCHMARKS.md"
	log "done: docs/BENCHMARKS.md"
}
TARGET="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

run_pipeline() {
	log "building the daemons and the pipeline load generator (release)"
	cargo build --release -q -p blkkin-consumerd -p blkkin-relayd -p blkkin-pipeline-bench \
		--manifest-path "$ROOT/Cargo.toml"
	rm -rf "$OUT/pipeline"
	python3 "$ROOT/bench/pipeline.py" --bin "$TARGET/release" --out "$RESULTS/pipeline.json" \
		--work "$OUT/pipeline"
}

if [ "$WHAT" = report ]; then
	report
	exit 0
fi
if [ "$WHAT" = archive ]; then
	bash "$ROOT/bench/archive.sh"
	report
	exit 0
fi
if [ "$WHAT" = cassandra ]; then
	bash "$ROOT/bench/cassandra.sh" "$RESULTS/cassandra.json"
	report
	exit 0
fi
if [ "$WHAT" = install ]; then
	bash "$ROOT/bench/install.sh" "$RESULTS/install.json"
	report
	exit 0
fi
if [ "$WHAT" = fuzz ]; then
	# Findings are reported in the table too: the run's failure does not stop it.
	bash "$ROOT/scripts/fuzz.sh" "${BLKKIN_FUZZ_SECONDS:-600}" "$RESULTS/fuzz.jsonl" || log "fuzzing found something: see the table"
	report
	exit 0
fi
if [ "$WHAT" = pipeline ]; then
	run_pipeline
	report
	exit 0
fi
if [ "$WHAT" = collector ]; then
	bash "$ROOT/bench/collector.sh"
	report
	exit 0
fi
: >"$OUT/results.jsonl"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

log "building libblkin (release)"
cargo build --release -q -p blkin-capi --manifest-path "$ROOT/Cargo.toml"
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
	for suite in blkkin fastrace; do
		log "Rust API run $1: $suite"
		BLKIN_SHM_DIR="$dir" BLKIN_RING_MODE=overwrite \
			"$TARGET/release/examples/bench_rust" 200000 31 "$suite" |
			sed "s/}\$/,\"run\":$1}/" >>"$OUT/results.jsonl"
	done
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

cp "$OUT/results.jsonl" "$RESULTS/record.jsonl"
python3 "$ROOT/bench/report.py" "$RESULTS" --machine >"$RESULTS/record_machine.txt"
if [ "$WHAT" = all ]; then
	run_pipeline
fi
report
