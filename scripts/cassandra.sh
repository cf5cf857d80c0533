#!/usr/bin/env bash
# Fetches and runs a single-node Apache Cassandra 5.0 on loopback, for the
# Cassandra store's tests and benchmarks (collector/src/cassandra).
#
#   scripts/cassandra.sh fetch                  resolve cassandra-all and its runtime
#                                               classpath from Maven Central (idempotent)
#   scripts/cassandra.sh start DIR PORT [SPORT] start a node with its data, config and log
#                                               under DIR, CQL on 127.0.0.1:PORT, storage on
#                                               SPORT (a free port when omitted); prints the
#                                               pid once the CQL port accepts connections
#   scripts/cassandra.sh stop DIR               stop the node started under DIR (waits)
#   scripts/cassandra.sh classpath              print the classpath (after fetch)
#
# Environment: BLKKIN_CACHE (default ~/.cache/blkkin) holds the jars under
# cassandra/<version>; CASSANDRA_VERSION (default 5.0.9); CASSANDRA_HEAP
# (default 768m); CASSANDRA_START_TIMEOUT seconds (default 240);
# CASSANDRA_EXTRA_YAML, a file appended to the generated cassandra.yaml
# (e.g. client_encryption_options for the TLS test).
#
# No tarball and no cassandra-env.sh: the daemon runs straight from the
# Maven-resolved classpath with the JVM options Cassandra's own
# conf/jvm17-server.options gives for Java 17.
set -euo pipefail

CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
CACHE="${BLKKIN_CACHE:-$HOME/.cache/blkkin}/cassandra/$CASSANDRA_VERSION"

die() {
	echo "cassandra.sh: $*" >&2
	exit 1
}

fetch() {
	if [ -f "$CACHE/lib/.complete" ]; then
		return 0
	fi
	command -v mvn >/dev/null || die "mvn not found (Debian package 'maven')"
	command -v java >/dev/null || die "java not found (Debian package 'openjdk-17-jre-headless')"
	mkdir -p "$CACHE"
	local work
	work="$(mktemp -d "$CACHE/fetch.XXXXXX")"
	cat >"$work/pom.xml" <<EOF
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>blkkin.test</groupId>
  <artifactId>cassandra-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
	echo "cassandra.sh: resolving cassandra-all $CASSANDRA_VERSION from Maven Central" >&2
	(cd "$work" && mvn -q -B -DincludeScope=runtime -DoutputDirectory="$work/lib" \
		dependency:copy-dependencies) || die "maven could not resolve cassandra-all $CASSANDRA_VERSION"
	rm -rf "$CACHE/lib"
	mv "$work/lib" "$CACHE/lib"
	rm -rf "$work"
	touch "$CACHE/lib/.complete"
}

classpath() {
	[ -f "$CACHE/lib/.complete" ] || die "not fetched: run '$0 fetch' first"
	echo "$CACHE/lib/*"
}

# A TCP port nobody listens on (bash only: probe random high ports).
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_config() {
	local dir="$1" port="$2" sport="$3"
	mkdir -p "$dir/conf" "$dir/data" "$dir/commitlog" "$dir/saved_caches" "$dir/hints" "$dir/triggers"
	cat >"$dir/conf/cassandra.yaml" <<EOF
cluster_name: blkkin-test
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
commitlog_sync: periodic
commitlog_sync_period: 10000ms
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $sport
native_transport_port: $port
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$sport"
data_file_directories:
  - $dir/data
commitlog_directory: $dir/commitlog
saved_caches_directory: $dir/saved_caches
hints_directory: $dir/hints
# Zipkin's schema indexes span columns with SASI (disabled by default since 4.0).
sasi_indexes_enabled: true
# A small single-node test instance.
num_tokens: 16
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
concurrent_compactors: 1
key_cache_size: 8MiB
# Schema changes and lightweight transactions on one node.
auto_snapshot: false
EOF
	if [ -n "${CASSANDRA_EXTRA_YAML:-}" ]; then
		[ -f "$CASSANDRA_EXTRA_YAML" ] || die "CASSANDRA_EXTRA_YAML: no file $CASSANDRA_EXTRA_YAML"
		cat "$CASSANDRA_EXTRA_YAML" >>"$dir/conf/cassandra.yaml"
	fi
	cat >"$dir/conf/logback.xml" <<EOF
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$dir/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
EOF
}

start() {
	local dir="${1:?usage: start DIR PORT [STORAGE_PORT]}" port="${2:?usage: start DIR PORT [STORAGE_PORT]}"
	local sport="${3:-}"
	fetch
	mkdir -p "$dir"
	dir="$(cd "$dir" && pwd)"
	if [ -f "$dir/cassandra.pid" ] && kill -0 "$(cat "$dir/cassandra.pid")" 2>/dev/null; then
		die "already running under $dir (pid $(cat "$dir/cassandra.pid"))"
	fi
	port_open "$port" && die "port $port is already in use"
	[ -n "$sport" ] || sport="$(free_port)"
	write_config "$dir" "$port" "$sport"
	local lib="$CACHE/lib"
	local jamm
	jamm="$(ls "$lib"/jamm-*.jar 2>/dev/null | head -n1 || true)"
	local agent=()
	[ -n "$jamm" ] && agent=("-javaagent:$jamm")
	# JVM options: heap/GC for a small test node, then the Java 17 module
	# exports and opens of Cassandra 5.0's conf/jvm17-server.options.
	nohup java -cp "$lib/*" "${agent[@]}" \
		-Xms"${CASSANDRA_HEAP:-768m}" -Xmx"${CASSANDRA_HEAP:-768m}" -Xss512k \
		-XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -XX:ActiveProcessorCount=2 \
		-Djava.net.preferIPv4Stack=true \
		-Djdk.attach.allowAttachSelf=true \
		-Dcassandra-foreground=yes \
		-Dcassandra.config="file://$dir/conf/cassandra.yaml" \
		-Dcassandra.storagedir="$dir" \
		-Dcassandra.triggers_dir="$dir/triggers" \
		-Dcassandra.logdir="$dir" \
		-Dlogback.configurationFile="$dir/conf/logback.xml" \
		-Dcassandra.jmx.local.port=0 \
		-Dcassandra.skip_wait_for_gossip_to_settle=0 \
		-Dcassandra.ring_delay_ms=100 \
		-Dcassandra.max_queued_native_transport_requests=4096 \
		--add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
		--add-exports java.base/jdk.internal.ref=ALL-UNNAMED \
		--add-exports java.base/sun.nio.ch=ALL-UNNAMED \
		--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
		--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED \
		--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
		--add-exports java.sql/java.sql=ALL-UNNAMED \
		--add-exports java.base/java.lang.ref=ALL-UNNAMED \
		--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED \
		--add-opens java.base/java.lang.module=ALL-UNNAMED \
		--add-opens java.base/jdk.internal.loader=ALL-UNNAMED \
		--add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
		--add-opens java.base/jdk.internal.reflect=ALL-UNNAMED \
		--add-opens java.base/jdk.internal.math=ALL-UNNAMED \
		--add-opens java.base/jdk.internal.module=ALL-UNNAMED \
		--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
		--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
		--add-opens java.base/sun.nio.ch=ALL-UNNAMED \
		--add-opens java.base/java.io=ALL-UNNAMED \
		--add-opens java.base/java.nio=ALL-UNNAMED \
		--add-opens java.base/java.lang.reflect=ALL-UNNAMED \
		--add-opens java.base/java.lang=ALL-UNNAMED \
		--add-opens java.base/java.util=ALL-UNNAMED \
		--add-opens java.base/java.util.concurrent=ALL-UNNAMED \
		--add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED \
		--add-opens java.base/java.net=ALL-UNNAMED \
		org.apache.cassandra.service.CassandraDaemon >"$dir/stdout.log" 2>&1 </dev/null &
	local pid=$!
	echo "$pid" >"$dir/cassandra.pid"
	local deadline=$((SECONDS + ${CASSANDRA_START_TIMEOUT:-240}))
	until port_open "$port"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 40 "$dir/stdout.log" "$dir/system.log" >&2 2>/dev/null || true
			die "cassandra exited during startup (logs under $dir)"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			kill "$pid" 2>/dev/null || true
			tail -n 40 "$dir/system.log" >&2 2>/dev/null || true
			die "cassandra did not open port $port within ${CASSANDRA_START_TIMEOUT:-240}s"
		fi
		sleep 1
	done
	echo "$pid"
}

stop() {
	local dir="${1:?usage: stop DIR}"
	[ -f "$dir/cassandra.pid" ] || return 0
	local pid
	pid="$(cat "$dir/cassandra.pid")"
	if kill "$pid" 2>/dev/null; then
		local i
		for i in $(seq 1 60); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/cassandra.pid"
}

case "${1:-}" in
fetch) fetch ;;
start) shift && start "$@" ;;
stop) shift && stop "$@" ;;
classpath) classpath ;;
*)
	sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
