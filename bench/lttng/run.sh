#!/usr/bin/env bash
# Baseline benchmark of the original BlkKin record path (LTTng-UST
# tracepoints with BlkKin's zipkin:* event layout), with a real LTTng
# session recording. See README.md.
#
# stdout: only JSON lines {"bench":"...","median_ns":...}; logs on stderr.
#
# Tunables (environment): BENCH_N (calls per round, 200000), BENCH_ROUNDS
# (11), BENCH_WARMUP (100000), BENCH_DRAIN_MS (30), BENCH_PRIME (events
# written per CPU before measuring, 600000), BENCH_VERBOSE=1 (per-round
# numbers on stderr), LTTNG_SUBBUF_SIZE (4M), LTTNG_NUM_SUBBUF (8),
# KEEP_WORKDIR=1 (keep build + trace for inspection).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N="${BENCH_N:-200000}"
ROUNDS="${BENCH_ROUNDS:-11}"
WARMUP="${BENCH_WARMUP:-100000}"
DRAIN_MS="${BENCH_DRAIN_MS:-30}"
PRIME="${BENCH_PRIME:-600000}"
SUBBUF_SIZE="${LTTNG_SUBBUF_SIZE:-4M}"
NUM_SUBBUF="${LTTNG_NUM_SUBBUF:-8}"
CHANNEL="zipkinchan"
SESSION="blkin-bench-$$"

log() { echo "[bench/lttng] $*" >&2; }
die() { echo "[bench/lttng] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
ensure_packages() {
	local need=()
	command -v lttng >/dev/null 2>&1 || need+=(lttng-tools)
	command -v lttng-sessiond >/dev/null 2>&1 || need+=(lttng-tools)
	dpkg -s liblttng-ust-dev >/dev/null 2>&1 || need+=(liblttng-ust-dev)
	command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
	local want_bt=0
	command -v babeltrace2 >/dev/null 2>&1 || want_bt=1
	if [ "${#need[@]}" -gt 0 ]; then
		mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
	fi
	if [ "${#need[@]}" -eq 0 ] && [ "$want_bt" -eq 0 ]; then
		return 0
	fi
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install: ${need[*]} babeltrace2"
		sudo=(sudo -n)
	fi
	export DEBIAN_FRONTEND=noninteractive
	if [ "${#need[@]}" -gt 0 ]; then
		log "installing: ${need[*]} (+ babeltrace2, optional)"
		"${sudo[@]}" apt-get update -qq >&2
		"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
		"${sudo[@]}" apt-get install -y -qq --no-install-recommends babeltrace2 >&2 ||
			log "babeltrace2 could not be installed; event counting will be skipped"
	else
		log "installing optional babeltrace2"
		{ "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends babeltrace2; } >&2 ||
			log "babeltrace2 could not be installed; event counting will be skipped"
	fi
}

# ---------------------------------------------------------------- cleanup
WORK=""
TRACE_DIR=""
STARTED_SESSIOND_PID=""
SESSION_CREATED=0

cleanup() {
	local rc=$?
	set +e
	if [ "$SESSION_CREATED" -eq 1 ]; then
		lttng destroy "$SESSION" >/dev/null 2>&1
	fi
	if [ -n "$STARTED_SESSIOND_PID" ] && kill -0 "$STARTED_SESSIOND_PID" 2>/dev/null; then
		log "stopping lttng-sessiond (pid $STARTED_SESSIOND_PID) started by this script"
		kill -TERM "$STARTED_SESSIOND_PID" 2>/dev/null
		for _ in $(seq 1 50); do
			kill -0 "$STARTED_SESSIOND_PID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$STARTED_SESSIOND_PID" 2>/dev/null; then
			log "lttng-sessiond did not exit after SIGTERM; sending SIGKILL"
			kill -KILL "$STARTED_SESSIOND_PID" 2>/dev/null
		fi
	fi
	if [ "${KEEP_WORKDIR:-0}" = "1" ]; then
		[ -z "$WORK" ] || log "keeping work dir $WORK (trace in $TRACE_DIR)"
	else
		[ -z "$TRACE_DIR" ] || [ ! -d "$TRACE_DIR" ] || rm -rf "$TRACE_DIR"
		[ -z "$WORK" ] || [ ! -d "$WORK" ] || rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- main
ensure_packages

WORK="$(mktemp -d "${TMPDIR:-/tmp}/blkin-lttng-bench.XXXXXX")"
BUILD="$WORK/build"
# The trace (~1 GB at the default sizes) goes to a RAM-backed temp dir when
# /dev/shm has room: on a 2-core machine, disk write-back of a previous or
# the current trace by kernel threads otherwise steals CPU from the bench
# (seen as +30-50% ns/op). Override with BENCH_TRACE_PARENT=/some/dir.
TRACE_PARENT="${BENCH_TRACE_PARENT:-}"
if [ -z "$TRACE_PARENT" ]; then
	TRACE_PARENT="$WORK"
	if [ -d /dev/shm ] && [ -w /dev/shm ]; then
		shm_free_kb="$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')"
		if [ "${shm_free_kb:-0}" -ge $((3 * 1024 * 1024)) ]; then
			TRACE_PARENT=/dev/shm
		fi
	fi
fi
TRACE_DIR="$(mktemp -d "$TRACE_PARENT/blkin-lttng-trace.XXXXXX")"
TRACE="$TRACE_DIR/trace"
# Private LTTNG_HOME: the lttng client's current-session file (.lttngrc),
# lttng.conf and auto-loaded session configs live here. NOTE: for root,
# lttng-sessiond ignores LTTNG_HOME for its runtime dir (always
# /var/run/lttng), so as root the daemon itself is the system-wide one.
export LTTNG_HOME="$WORK/home"
mkdir -p "$BUILD" "$LTTNG_HOME"

if [ ! -d /dev/shm ]; then
	log "WARNING: /dev/shm is missing; lttng-ust needs it (shm_open) for its wait/ring-buffer shm"
fi

log "building provider + benchmark in $BUILD"
CFLAGS=(-O2 -g -Wall -Wextra -I"$HERE")
gcc "${CFLAGS[@]}" -c "$HERE/zipkin_tp.c" -o "$BUILD/zipkin_tp.o"
gcc "${CFLAGS[@]}" -pthread -c "$HERE/bench_lttng.c" -o "$BUILD/bench_lttng.o"
gcc -pthread "$BUILD/bench_lttng.o" "$BUILD/zipkin_tp.o" -o "$BUILD/bench_lttng" -llttng-ust -ldl

if [ "$(id -u)" -eq 0 ]; then
	RUNDIR=/var/run/lttng
else
	RUNDIR="$LTTNG_HOME/.lttng"
fi

if lttng list >/dev/null 2>&1; then
	# A session daemon for this user is already up (as root: the system one
	# in /var/run/lttng). Reuse it with a uniquely named session; never kill it.
	log "reusing already running lttng-sessiond (rundir $RUNDIR); it will be left running"
else
	log "starting lttng-sessiond --no-kernel --daemonize (rundir $RUNDIR)"
	lttng-sessiond --no-kernel --daemonize >&2
	[ -s "$RUNDIR/lttng-sessiond.pid" ] || die "lttng-sessiond started but $RUNDIR/lttng-sessiond.pid is missing"
	STARTED_SESSIOND_PID="$(cat "$RUNDIR/lttng-sessiond.pid")"
	log "lttng-sessiond pid $STARTED_SESSIOND_PID"
	for _ in $(seq 1 50); do
		lttng list >/dev/null 2>&1 && break
		sleep 0.1
	done
	lttng list >/dev/null 2>&1 || die "lttng-sessiond is not answering"
fi

BENCH=("$BUILD/bench_lttng" -n "$N" -r "$ROUNDS" -w "$WARMUP" -d "$DRAIN_MS" -p "$PRIME")
[ "${BENCH_VERBOSE:-0}" != "1" ] || BENCH+=(-v)

# 1) dormant: sessiond up, app registered, but no session -> tracepoints off.
# JSON lines are collected and printed only once the trace has been verified.
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
log "dormant run (no session active)"
"${BENCH[@]}" --mode=dormant >>"$RESULTS"

# 2) active: a real session recording zipkin:* into $TRACE.
log "creating session $SESSION -> $TRACE (channel $CHANNEL: ${NUM_SUBBUF} x ${SUBBUF_SIZE} sub-buffers)"
lttng --no-sessiond create "$SESSION" --output="$TRACE" >&2
SESSION_CREATED=1
lttng enable-channel -u -s "$SESSION" --subbuf-size="$SUBBUF_SIZE" --num-subbuf="$NUM_SUBBUF" "$CHANNEL" >&2
lttng enable-event -u -s "$SESSION" -c "$CHANNEL" 'zipkin:*' >&2
lttng start "$SESSION" >&2

BENCH_ERR="$WORK/bench.stderr"
log "active run"
set +e
"${BENCH[@]}" --mode=active >>"$RESULTS" 2> >(tee "$BENCH_ERR" >&2)
bench_rc=$?
set -e
# let the tee process substitution flush
sleep 0.2
[ "$bench_rc" -eq 0 ] || die "bench_lttng --mode=active failed (rc $bench_rc)"

STOP_OUT="$WORK/stop.out"
lttng stop "$SESSION" >"$STOP_OUT" 2>&1 || { cat "$STOP_OUT" >&2; die "lttng stop failed"; }
cat "$STOP_OUT" >&2
LIST_OUT="$WORK/list.out"
lttng list "$SESSION" >"$LIST_OUT" 2>&1 || true
# lttng 2.13 prints "Discarded events: N" / "Lost packets: N" per channel in
# 'lttng list SESSION'; older versions warn "N events were discarded" on stop.
discarded="$(awk -F: '/Discarded events:/ {gsub(/ /, "", $2); n += $2; f = 1} END {if (f) print n+0}' "$LIST_OUT")"
lost_packets="$(awk -F: '/Lost packets:/ {gsub(/ /, "", $2); n += $2; f = 1} END {if (f) print n+0}' "$LIST_OUT")"
[ -n "$discarded" ] || discarded="$(grep -oiE '[0-9]+ events? (were|was) discarded' "$STOP_OUT" | grep -oE '^[0-9]+' | head -n1 || true)"
[ -n "$lost_packets" ] || lost_packets="$(grep -oiE '[0-9]+ packets? (were|was) lost' "$STOP_OUT" | grep -oE '^[0-9]+' | head -n1 || true)"
discarded="${discarded:-0}"
lost_packets="${lost_packets:-0}"
grep -iE 'discarded|lost' "$LIST_OUT" >&2 || true
lttng destroy "$SESSION" >&2
SESSION_CREATED=0

# ---------------------------------------------------------------- verify
[ -d "$TRACE" ] || die "trace directory $TRACE was not created: no events recorded"
stream_bytes=0
nstreams=0
while IFS= read -r -d '' f; do
	sz=$(stat -c %s "$f")
	stream_bytes=$((stream_bytes + sz))
	nstreams=$((nstreams + 1))
done < <(find "$TRACE" -type f -path '*/ust/*' ! -name metadata ! -path '*/index/*' -print0)
total_bytes="$(du -sb "$TRACE" | cut -f1)"
log "trace dir: $total_bytes bytes total, $nstreams stream files, $stream_bytes bytes of event streams"
[ "$stream_bytes" -gt 0 ] || die "trace directory has no event data: the zipkin:* tracepoints did not fire into the session"

attempted="$(grep -oE 'TOTAL_EVENTS_ATTEMPTED=[0-9]+' "$BENCH_ERR" | tail -n1 | cut -d= -f2 || true)"
attempted="${attempted:-0}"
log "tracepoint calls made while recording: $attempted; discarded events (lttng): $discarded; lost packets: $lost_packets"

if command -v babeltrace2 >/dev/null 2>&1; then
	t0=$(date +%s.%N)
	# The counter sink counts the same events as 'babeltrace2 DIR | wc -l'
	# without formatting text (much faster for ~10^7 events).
	count_out="$(babeltrace2 "$TRACE" -c sink.utils.counter -p 'step=+0' 2>"$WORK/bt.err")" || {
		cat "$WORK/bt.err" >&2
		die "babeltrace2 could not read the trace"
	}
	events="$(printf '%s\n' "$count_out" | awk '$2 == "Event" && $3 == "messages" {n = $1} END {print n}')"
	bt_discarded="$(printf '%s\n' "$count_out" | awk '$2 == "Discarded" && $3 == "event" {n = $1} END {print n}')"
	[ -z "$bt_discarded" ] || [ "$bt_discarded" = "0" ] ||
		log "babeltrace2: the trace carries $bt_discarded discarded-events record(s)"
	if [ -z "$events" ]; then
		log "counter sink output not understood, falling back to 'babeltrace2 DIR | wc -l'"
		events="$(babeltrace2 "$TRACE" 2>/dev/null | wc -l)"
	fi
	t1=$(date +%s.%N)
	log "babeltrace2: $events events recorded ($(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s to count)"
	babeltrace2 "$TRACE" 2>/dev/null | head -n 3 | sed 's/^/[bench\/lttng]   sample: /' >&2 || true
	[ "$events" -gt 0 ] || die "babeltrace2 found 0 zipkin events in the trace"
	if [ "$attempted" -gt 0 ]; then
		log "recorded/attempted: $(awk -v e="$events" -v a="$attempted" 'BEGIN{printf "%.2f%%", 100*e/a}')"
	fi
	log "approx. bytes per recorded event (stream bytes incl. packet headers / events): $(awk -v b="$stream_bytes" -v e="$events" 'BEGIN{printf "%.1f", b/e}')"
else
	log "babeltrace2 not available: skipping event count"
	recorded=$((attempted - discarded))
	if [ "$recorded" -gt 0 ]; then
		log "approx. bytes per recorded event (stream bytes / (attempted - discarded)): $(awk -v b="$stream_bytes" -v e="$recorded" 'BEGIN{printf "%.1f", b/e}')"
	fi
fi
nres="$(grep -c '^{"bench":' "$RESULTS" || true)"
[ "$nres" -eq 5 ] || die "expected 5 JSON result lines, got $nres"
log "done"
cat "$RESULTS"
