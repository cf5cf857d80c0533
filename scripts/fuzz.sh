#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (every decoder of outside bytes).
#   bash scripts/fuzz.sh SECONDS [JSON_OUT]
# Each target runs SECONDS (the test command: 30; bench/run.sh fuzz: 600)
# from its corpus in fuzz/corpus/<target>/ (new inputs found are kept in a
# scratch copy, not in the repository). A crash fails the run and leaves the
# input in fuzz/artifacts/<target>/ (add a regression test for it). With
# JSON_OUT, one JSON line per target: executions, seconds, corpus size and
# findings, for docs/BENCHMARKS.md.
# Needs the nightly toolchain and cargo-fuzz (.ci/run installs both).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:?usage: scripts/fuzz.sh SECONDS [JSON_OUT]}"
OUT="${2:-}"
cd "$ROOT/fuzz"
TARGETS=(frame_decoder ring_reader segment_recovery span_json scribe_reply)
cargo +nightly fuzz build -O
[ -n "$OUT" ] && : >"$OUT"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in "${TARGETS[@]}"; do
	mkdir -p "$scratch/$t"
	log="$scratch/$t.log"
	echo "=== fuzz $t for ${SECS}s"
	status=0
	cargo +nightly fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
		-max_total_time="$SECS" -rss_limit_mb=2048 -max_len=131072 -print_final_stats=1 \
		>"$log" 2>&1 || status=$?
	execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
	corpus="$(find "$scratch/$t" "corpus/$t" -type f | wc -l)"
	crashes="$(find "artifacts/$t" -type f 2>/dev/null | wc -l)"
	echo "    $t: ${execs:-?} executions, corpus $corpus, exit $status, crash inputs $crashes"
	if [ "$status" != 0 ]; then
		failed=1
		tail -40 "$log"
	fi
	if [ -n "$OUT" ]; then
		printf '{"target":"%s","seconds":%s,"executions":%s,"corpus":%s,"exit":%s,"crashes":%s,"finished":"%s"}\n' \
			"$t" "$SECS" "${execs:-0}" "$corpus" "$status" "$crashes" "$(date -u '+%Y-%m-%d %H:%M UTC')" >>"$OUT"
	fi
done
exit "$failed"
