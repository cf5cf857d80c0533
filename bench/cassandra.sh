#!/usr/bin/env bash
# Cassandra write benchmark: the same demo-like spans written into one local
# Cassandra node (scripts/cassandra.sh) (a) by blkkin's Cassandra sink and
# (b) POSTed as JSON to the real Zipkin server's HTTP collector
# (STORAGE_TYPE=cassandra3, Zipkin's own Java writer) on the same node; each
# run writes a fresh keyspace, consistency LOCAL_ONE for both (Zipkin's
# default and ours). Throughput counts until Cassandra holds every span
# (collector/examples/cassandra_bench.rs polls COUNT(*) of the span table).
# Rounds alternate ours/Zipkin so a noisy phase of the machine hits both.
#
# usage: bash bench/cassandra.sh [RESULTS_JSON]
# Environment: BENCH_SPANS (default 21000), BENCH_ROUNDS (default 3),
# BENCH_BATCH (spans per request, default 500), BENCH_CONCURRENCY (requests
# in flight, default 4), CASSANDRA_HEAP (default 1g), ZIPKIN_HEAP (default
# 512m), BENCH_PROFILE (cargo profile, default bench-fast: release without
# LTO, as the other collector benchmarks; release = the shipped thin LTO; `dev`
# only to smoke-test this script).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="${1:-$ROOT/bench/results/cassandra.json}"
SPANS="${BENCH_SPANS:-21000}"
ROUNDS="${BENCH_ROUNDS:-3}"
BATCH="${BENCH_BATCH:-500}"
CONC="${BENCH_CONCURRENCY:-4}"
log() { echo "[bench cassandra] $*" >&2; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PROFILE="${BENCH_PROFILE:-bench-fast}"
log "building the benchmark (profile $PROFILE)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
cargo build --profile "$PROFILE" -q "${BENCH_PKGS[@]}" --example cassandra_bench --manifest-path "$ROOT/Cargo.toml"
TARGET="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
PROFILE_DIR="$PROFILE"
[ "$PROFILE" = dev ] && PROFILE_DIR=debug
BENCH="$TARGET/$PROFILE_DIR/examples/cassandra_bench"
ZIPKIN_JAR="$(bash "$ROOT/scripts/zipkin.sh" fetch)"

WORK="$(mktemp -d)"
ZPID=""
cleanup() {
	[ -n "$ZPID" ] && kill "$ZPID" 2>/dev/null || true
	bash "$ROOT/scripts/cassandra.sh" stop "$WORK/cassandra" || true
	rm -rf "$WORK"
}
trap cleanup EXIT

CPORT="$(free_port)"
log "starting Cassandra on 127.0.0.1:$CPORT (heap ${CASSANDRA_HEAP:-1g})"
CASSANDRA_HEAP="${CASSANDRA_HEAP:-1g}" bash "$ROOT/scripts/cassandra.sh" start "$WORK/cassandra" "$CPORT" >/dev/null

start_zipkin() {
	local keyspace="$1" port
	port="$(free_port)"
	STORAGE_TYPE=cassandra3 CASSANDRA_CONTACT_POINTS="127.0.0.1:$CPORT" CASSANDRA_LOCAL_DC=datacenter1 \
		CASSANDRA_KEYSPACE="$keyspace" CASSANDRA_ENSURE_SCHEMA=true QUERY_PORT="$port" \
		COLLECTOR_SCRIBE_ENABLED=false STORAGE_THROTTLE_ENABLED="${ZIPKIN_THROTTLE:-true}" \
		STORAGE_THROTTLE_MAX_QUEUE_SIZE=10000 \
		java -Xms"${ZIPKIN_HEAP:-512m}" -Xmx"${ZIPKIN_HEAP:-512m}" -XX:ActiveProcessorCount=2 \
		-jar "$ZIPKIN_JAR" >"$WORK/zipkin-$keyspace.log" 2>&1 &
	ZPID=$!
	for _ in $(seq 1 360); do
		if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
			ZURL="http://127.0.0.1:$port"
			return 0
		fi
		kill -0 "$ZPID" 2>/dev/null || { tail -n 30 "$WORK/zipkin-$keyspace.log" >&2; exit 1; }
		sleep 0.5
	done
	log "zipkin did not become healthy"
	exit 1
}

RUNS="$WORK/runs.jsonl"
: >"$RUNS"
common=(--cassandra "127.0.0.1:$CPORT" --spans "$SPANS" --batch "$BATCH" --concurrency "$CONC")
for round in $(seq 1 "$ROUNDS"); do
	log "round $round: ours"
	"$BENCH" --mode ours --keyspace "bench_ours_$round" "${common[@]}" |
		sed "s/}\$/,\"round\":$round}/" | tee -a "$RUNS" >&2
	log "round $round: zipkin (starting it on keyspace bench_zipkin_$round)"
	start_zipkin "bench_zipkin_$round"
	"$BENCH" --mode zipkin --zipkin "$ZURL" --keyspace "bench_zipkin_$round" "${common[@]}" |
		sed "s/}\$/,\"round\":$round}/" | tee -a "$RUNS" >&2
	kill "$ZPID" 2>/dev/null || true
	wait "$ZPID" 2>/dev/null || true
	ZPID=""
	mkdir -p "$ROOT/bench/out/cassandra"
	cp "$WORK/zipkin-bench_zipkin_$round.log" "$ROOT/bench/out/cassandra/" 2>/dev/null || true
done
cp "$WORK/cassandra/system.log" "$ROOT/bench/out/cassandra/cassandra-system.log" 2>/dev/null || true

mkdir -p "$(dirname "$RESULTS")"
python3 - "$RUNS" "$RESULTS" "$SPANS" "$BATCH" "$CONC" "${CASSANDRA_HEAP:-1g}" "${ZIPKIN_HEAP:-512m}" "$PROFILE" <<'EOF'
import json, os, subprocess, sys
runs_path, dst, spans, batch, conc, cheap, zheap, profile = sys.argv[1:]
runs = [json.loads(l) for l in open(runs_path) if l.strip()]
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
out = {
    "when": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
    "machine": {"cpus": os.cpu_count(), "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
                "loadavg_at_end": sh("cut -d' ' -f1-3 /proc/loadavg")},
    "config": {"spans": int(spans), "batch": int(batch), "concurrency": int(conc),
               "cassandra": "5.0.9, one node, heap " + cheap, "zipkin": "3.6.1, heap " + zheap,
               "zipkin_storage_throttle": os.environ.get("ZIPKIN_THROTTLE", "true") == "true",
               "consistency": "LOCAL_ONE",
               "profile": "release (thin LTO, 1 codegen unit)" if profile == "release" else profile},
    "runs": runs,
}
json.dump(out, open(dst, "w"), indent=1)
print(f"wrote {dst}", file=sys.stderr)
EOF
