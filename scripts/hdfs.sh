#!/usr/bin/env bash
# A real HDFS (one NameNode + one DataNode, Hadoop's MiniDFSCluster from
# org.apache.hadoop:hadoop-minicluster on Maven Central) on loopback, for the
# archive tests and by hand. WebHDFS is on; ports are chosen free by Hadoop.
#
#   scripts/hdfs.sh fetch               resolve the jars, compile the launcher (idempotent)
#   scripts/hdfs.sh start [STATE_DIR]   start (or find running) and print
#                                       NAMENODE_URL=hdfs://127.0.0.1:PORT and WEBHDFS_PORT=PORT
#   scripts/hdfs.sh restart-namenode [STATE_DIR]   restart the NameNode on the same port
#   scripts/hdfs.sh stop [STATE_DIR]    stop it and wait for it to exit
#
# STATE_DIR defaults to $BLKKIN_CACHE/hdfs-run; it holds the HDFS data, the
# log (minihdfs.log) and cluster.env. The cache (jars, pom, compiled
# launcher) is $BLKKIN_CACHE/hdfs, BLKKIN_CACHE defaulting to ~/.cache/blkkin.
# The JVM gets BLKKIN_HDFS_HEAP (default 768m) of heap.
set -euo pipefail

HADOOP_VERSION=3.4.1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${BLKKIN_CACHE:-$HOME/.cache/blkkin}"
BUILD="$CACHE/hdfs"
SRC="$HERE/hdfs/BlkkinMiniHdfs.java"

die() { echo "hdfs.sh: $*" >&2; exit 1; }

write_pom() {
	cat >"$BUILD/pom.xml.new" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>blkkin.test</groupId>
  <artifactId>blkkin-minihdfs</artifactId>
  <version>1</version>
  <!-- Maven's nearest-wins picks an old jackson-core for hadoop-minicluster;
       Hadoop $HADOOP_VERSION is built against the 2.12 line. -->
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>com.fasterxml.jackson.core</groupId>
        <artifactId>jackson-core</artifactId>
        <version>2.12.7</version>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>org.apache.hadoop</groupId>
      <artifactId>hadoop-minicluster</artifactId>
      <version>$HADOOP_VERSION</version>
      <exclusions>
        <exclusion><groupId>ch.qos.logback</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
    <!-- MiniDFSCluster loads these test libraries at run time. -->
    <dependency><groupId>junit</groupId><artifactId>junit</artifactId><version>4.13.2</version></dependency>
    <dependency><groupId>org.mockito</groupId><artifactId>mockito-core</artifactId><version>2.28.2</version></dependency>
  </dependencies>
</project>
POM
	if ! cmp -s "$BUILD/pom.xml.new" "$BUILD/pom.xml" 2>/dev/null; then
		mv "$BUILD/pom.xml.new" "$BUILD/pom.xml"
		rm -f "$BUILD/classpath.txt"
	else
		rm -f "$BUILD/pom.xml.new"
	fi
}

fetch() {
	command -v java >/dev/null || die "java (17) is needed: apt-get install openjdk-17-jdk-headless"
	command -v mvn >/dev/null || die "maven is needed: apt-get install maven"
	mkdir -p "$BUILD/classes"
	write_pom
	if [ ! -s "$BUILD/classpath.txt" ]; then
		echo "hdfs.sh: resolving hadoop-minicluster $HADOOP_VERSION from Maven Central" >&2
		(cd "$BUILD" && mvn -q -B dependency:build-classpath -Dmdep.outputFile=classpath.txt.new >&2) ||
			die "maven could not resolve hadoop-minicluster"
		mv "$BUILD/classpath.txt.new" "$BUILD/classpath.txt"
	fi
	if [ ! -f "$BUILD/classes/BlkkinMiniHdfs.class" ] || [ "$SRC" -nt "$BUILD/classes/BlkkinMiniHdfs.class" ]; then
		javac -d "$BUILD/classes" -cp "$(cat "$BUILD/classpath.txt")" "$SRC" || die "javac failed"
	fi
}

state_dir() { echo "${1:-$CACHE/hdfs-run}"; }

running_pid() {
	local st="$1" pid
	[ -f "$st/pid" ] || return 1
	pid="$(cat "$st/pid")"
	kill -0 "$pid" 2>/dev/null || return 1
	echo "$pid"
}

start() {
	local st
	st="$(state_dir "${1:-}")"
	fetch
	mkdir -p "$st"
	st="$(cd "$st" && pwd)"
	if running_pid "$st" >/dev/null && [ -f "$st/cluster.env" ]; then
		cat "$st/cluster.env"
		return
	fi
	rm -f "$st/cluster.env" "$st/control" "$st/restarts"
	rm -rf "$st/data"
	# Log4j 1 configuration: warnings only, to the log file.
	cat >"$st/log4j.properties" <<'LOG'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=%d{ISO8601} %p %c{1}: %m%n
LOG
	(
		cd "$st"
		exec setsid java -Xmx"${BLKKIN_HDFS_HEAP:-768m}" -Djava.net.preferIPv4Stack=true \
			--add-opens java.base/java.lang=ALL-UNNAMED \
			-Dlog4j.configuration="file:$st/log4j.properties" \
			-cp "$BUILD/classes:$(cat "$BUILD/classpath.txt")" BlkkinMiniHdfs "$st" \
			</dev/null >"$st/minihdfs.log" 2>&1
	) &
	echo $! >"$st/pid"
	local waited=0
	while [ ! -f "$st/cluster.env" ]; do
		if ! kill -0 "$(cat "$st/pid")" 2>/dev/null; then
			tail -n 40 "$st/minihdfs.log" >&2 || true
			die "HDFS exited during startup (log: $st/minihdfs.log)"
		fi
		if [ "$waited" -ge 300 ]; then
			tail -n 40 "$st/minihdfs.log" >&2 || true
			stop "$st"
			die "HDFS did not come up in 150 s (log: $st/minihdfs.log)"
		fi
		sleep 0.5
		waited=$((waited + 1))
	done
	cat "$st/cluster.env"
}

restart_namenode() {
	local st before after waited=0
	st="$(state_dir "${1:-}")"
	running_pid "$st" >/dev/null || die "no HDFS running in $st"
	before="$(cat "$st/restarts" 2>/dev/null || echo 0)"
	echo restart-namenode >"$st/control.new" && mv "$st/control.new" "$st/control"
	while :; do
		after="$(cat "$st/restarts" 2>/dev/null || echo 0)"
		[ "$after" != "$before" ] && break
		running_pid "$st" >/dev/null || die "HDFS died during the NameNode restart (log: $st/minihdfs.log)"
		[ "$waited" -ge 240 ] && die "NameNode restart did not finish in 120 s"
		sleep 0.5
		waited=$((waited + 1))
	done
	echo "namenode restarted ($after)"
}

stop() {
	local st pid waited=0
	st="$(state_dir "${1:-}")"
	if ! pid="$(running_pid "$st")"; then
		echo "hdfs.sh: not running" >&2
		rm -f "$st/pid" "$st/cluster.env"
		return 0
	fi
	echo stop >"$st/control.new" && mv "$st/control.new" "$st/control"
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$waited" -ge 60 ]; then
			kill -TERM "$pid" 2>/dev/null || true
		fi
		if [ "$waited" -ge 100 ]; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
		sleep 0.3
		waited=$((waited + 1))
	done
	rm -f "$st/pid" "$st/cluster.env"
	echo "hdfs.sh: stopped" >&2
}

case "${1:-}" in
fetch) fetch ;;
start) start "${2:-}" ;;
restart-namenode) restart_namenode "${2:-}" ;;
stop) stop "${2:-}" ;;
*)
	sed -n '2,17p' "$0" >&2
	exit 2
	;;
esac
