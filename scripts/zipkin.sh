#!/usr/bin/env bash
# The real Zipkin server (io.zipkin:zipkin-server:3.6.1:jar:exec from Maven
# Central, Java 17) for the collector's integration tests and for people
# trying the collector by hand.
#
#   scripts/zipkin.sh fetch                       download once into the cache (idempotent); prints the jar
#   scripts/zipkin.sh run HTTP_PORT SCRIBE_PORT   run in the foreground (exec java) on 127.0.0.1
#   scripts/zipkin.sh start [HTTP_PORT [SCRIBE_PORT]]
#                                                 run in the background on free ports, wait for
#                                                 /health, print "URL SCRIBE_ADDR PID"
#
# The cache is $BLKKIN_CACHE/zipkin (default ~/.cache/blkkin/zipkin), the
# tests fetch the jar through this script too.
# The Scribe collector is enabled (COLLECTOR_SCRIBE_ENABLED=true, its port is
# COLLECTOR_PORT, category zipkin); storage is in memory. The HTTP port binds
# to 127.0.0.1; Zipkin's Scribe server has no bind-address setting and
# listens on every interface of its port.
set -euo pipefail

VERSION=3.6.1
CACHE="${BLKKIN_CACHE:-$HOME/.cache/blkkin}/zipkin"
JAR="$CACHE/zipkin-server-$VERSION-exec.jar"

die() { echo "zipkin.sh: $*" >&2; exit 1; }

fetch() {
	if [ -s "$JAR" ]; then
		echo "$JAR"
		return
	fi
	command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
	mkdir -p "$CACHE"
	local tmp
	tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
	mvn -q -B dependency:copy -Dartifact="io.zipkin:zipkin-server:$VERSION:jar:exec" \
		-DoutputDirectory="$tmp" >&2 || { rm -rf "$tmp"; die "mvn could not fetch zipkin-server $VERSION"; }
	[ -s "$tmp/zipkin-server-$VERSION-exec.jar" ] || { rm -rf "$tmp"; die "mvn produced no jar"; }
	mv -f "$tmp/zipkin-server-$VERSION-exec.jar" "$JAR"
	rm -rf "$tmp"
	echo "$JAR"
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run() {
	local http="$1" scribe="$2"
	[ -s "$JAR" ] || die "$JAR missing: run 'scripts/zipkin.sh fetch' first"
	command -v java >/dev/null || die "java not found (Java 17: apt-get install openjdk-17-jre-headless)"
	export STORAGE_TYPE=mem COLLECTOR_SCRIBE_ENABLED=true COLLECTOR_PORT="$scribe" SCRIBE_CATEGORY=zipkin
	export QUERY_PORT="$http"
	exec java -Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -jar "$JAR" \
		--armeria.ports[0].ip=127.0.0.1 --armeria.ports[0].port="$http" \
		--armeria.ports[0].protocols[0]=http
}

start() {
	local http="${1:-$(free_port)}" scribe="${2:-$(free_port)}"
	fetch >/dev/null
	local log="$CACHE/zipkin-$http.log"
	"$0" run "$http" "$scribe" >"$log" 2>&1 &
	local pid=$!
	for _ in $(seq 1 240); do
		if curl -fsS "http://127.0.0.1:$http/health" >/dev/null 2>&1; then
			echo "http://127.0.0.1:$http 127.0.0.1:$scribe $pid"
			return
		fi
		kill -0 "$pid" 2>/dev/null || die "zipkin exited; see $log"
		sleep 0.5
	done
	kill "$pid" 2>/dev/null || true
	die "zipkin did not become healthy in 120 s; see $log"
}

case "${1:-}" in
fetch) fetch ;;
run) [ $# -eq 3 ] || die "usage: $0 run HTTP_PORT SCRIBE_PORT"; run "$2" "$3" ;;
start) shift; start "$@" ;;
*) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
