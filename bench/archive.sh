#!/usr/bin/env bash
# Span archive benchmark (issue 6), run by `bash bench/run.sh archive`:
#   1. builds bench/archive (blkkin-archive-bench) with the bench-fast
#      profile (release optimisation, no LTO, 16 codegen units: DataFusion
#      with thin LTO and one codegen unit takes ~18 min to build here);
#   2. starts a real HDFS (scripts/hdfs.sh: MiniDFSCluster, one NameNode and
#      one DataNode on loopback);
#   3. writes SPANS (default 2 M) demo-like spans (client → volume → mapper →
#      blocker: 4 services, RPC kinds, tags, annotations; 1 M per hour of
#      span time) through the archive writer into HDFS, then into a local
#      directory, each time measuring spans/s and MB/s inside the writer;
#   4. times `analyze` over the first hour of each archive (1 M spans).
# Writes bench/results/archive.json; bench/report.py renders it into
# docs/BENCHMARKS.md.
#
# Environment: SPANS (default 2000000), PER_HOUR (1000000), COMPRESSION
# (none), BENCH_WORK (scratch directory, default a temporary one; needs
# about 2 × 0.6 GB per 2 M spans), PROFILE (cargo profile, default
# bench-fast; `dev` for a quick check of the script, whose numbers mean
# nothing), OUT (default bench/results/archive.json).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/results"
SPANS="${SPANS:-2000000}"
PER_HOUR="${PER_HOUR:-1000000}"
COMPRESSION="${COMPRESSION:-none}"
PROFILE="${PROFILE:-bench-fast}"
OUT="${OUT:-$RESULTS/archive.json}"
log() { echo "[bench archive] $*" >&2; }
mkdir -p "$RESULTS"

WORK="${BENCH_WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
cleanup() {
	bash "$ROOT/scripts/hdfs.sh" stop "$WORK/hdfs" >/dev/null 2>&1 || true
	if [ -z "${BENCH_WORK:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

TARGET="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
log "building blkkin-archive-bench (profile $PROFILE)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
cargo build --profile "$PROFILE" -q "${BENCH_PKGS[@]}" --manifest-path "$ROOT/Cargo.toml"
case "$PROFILE" in
dev) BIN="$TARGET/debug/blkkin-archive-bench" ;;
*) BIN="$TARGET/$PROFILE/blkkin-archive-bench" ;;
esac

log "starting HDFS (scripts/hdfs.sh)"
bash "$ROOT/scripts/hdfs.sh" fetch >&2
bash "$ROOT/scripts/hdfs.sh" start "$WORK/hdfs" >&2
NAMENODE_URL="$(sed -n 's/^NAMENODE_URL=//p' "$WORK/hdfs/cluster.env")"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN" "$NAMENODE_URL/bench/spans" "$WORK/local" --spans "$SPANS" --per-hour "$PER_HOUR" \
	--compression "$COMPRESSION" >"$WORK/runs.jsonl"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$WORK/runs.jsonl" "$OUT" "$LOAD_BEFORE" "$LOAD_AFTER" "$PROFILE" <<'PY'
import datetime, json, os, platform, subprocess, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
java = sh("java -version 2>&1 | head -1")
out = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "machine": f"{os.cpu_count()} vCPU {model}, {platform.system()} {platform.release()}; "
               f"{sh('rustc --version')}; {java}",
    "profile": {"bench-fast": "bench-fast (opt-level 3, no LTO, 16 codegen units)",
                "release": "release (opt-level 3, thin LTO, 1 codegen unit)"}.get(sys.argv[5], sys.argv[5]),
    "hdfs": "MiniDFSCluster (hadoop-minicluster 3.4.1), 1 NameNode + 1 DataNode, replication 1, loopback",
    "loadavg_before": sys.argv[3],
    "loadavg_after": sys.argv[4],
    "runs": runs,
}
with open(sys.argv[2], "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
PY
log "results in $OUT"
