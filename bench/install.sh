#!/usr/bin/env bash
# What a C user waits for: scripts/install.sh from a fresh clone (its own
# empty target directory, crates already in Cargo's local registry cache),
# timed, then checked: a C program built with `pkg-config --cflags --libs
# blkin` against the installed tree records and the installed `blkkin dump`
# reads its ring; and whether the library crates' dependency trees
# (`cargo tree -p blkkin`, `-p blkin-capi`) hold tokio, serde or a
# collector dependency. Writes bench/results/install.json; `bash bench/run.sh
# install` runs this and rewrites docs/BENCHMARKS.md.
#
# usage: bash bench/install.sh [OUT.json]
set -euo pipefail
case "${1:-}" in
-h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_JSON="${1:-$ROOT/bench/results/install.json}"
log() { echo "[install] $*" >&2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

git clone -q "$ROOT" "$WORK/src"
export CARGO_TARGET_DIR="$WORK/target"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "scripts/install.sh --prefix $WORK/prefix (fresh clone, empty target directory)"
START=$(date +%s.%N)
bash "$WORK/src/scripts/install.sh" --prefix "$WORK/prefix" >&2
END=$(date +%s.%N)
SECONDS_TAKEN=$(python3 -c "print(round($END - $START, 1))")
log "took ${SECONDS_TAKEN} s"

# The installed tree works: a C program through pkg-config, `blkkin dump`.
export PKG_CONFIG_PATH="$WORK/prefix/lib/pkgconfig"
cat >"$WORK/t.c" <<'C'
#include <zipkin_c.h>
int main(void)
{
	struct blkin_endpoint ep;
	struct blkin_trace t;
	blkin_init_endpoint(&ep, "10.0.0.1", 6800, "osd.0");
	blkin_init_new_trace(&t, "osd_op", &ep);
	BLKIN_TIMESTAMP(&t, &ep, "installed");
	return 0;
}
C
# shellcheck disable=SC2046
cc "$WORK/t.c" $(pkg-config --cflags --libs blkin) -Wl,-rpath,"$WORK/prefix/lib" -o "$WORK/t"
mkdir -m 0700 "$WORK/rings"
BLKIN_SHM_DIR="$WORK/rings" "$WORK/t"
DUMP="$("$WORK/prefix/bin/blkkin" dump "$WORK/rings")"
echo "$DUMP" | grep -q installed || { log "blkkin dump did not show the record: $DUMP"; exit 1; }
SUBCOMMANDS="$("$WORK/prefix/bin/blkkin" --help | sed -n '/^Commands:/,/^$/p' | awk 'NR>1 && $1 != "" {print $1}' | paste -sd, -)"
log "installed blkkin: $SUBCOMMANDS"

tree_has() {
	cargo tree -q -e normal -p "$1" --prefix none --manifest-path "$WORK/src/Cargo.toml" 2>/dev/null |
		awk '{print $1}' | sort -u | grep -xE 'tokio|serde|serde_json|datafusion|arrow|scylla|rusqlite|axum|hdfs-native' | paste -sd, - || true
}
BLKKIN_TREE="$(tree_has blkkin)"
CAPI_TREE="$(tree_has blkin-capi)"
log "cargo tree -p blkkin: [$BLKKIN_TREE]; -p blkin-capi: [$CAPI_TREE]"

python3 - "$OUT_JSON" <<PY
import json, os, subprocess, sys, datetime
json.dump({
    "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "machine": f"{os.cpu_count()} vCPU " + subprocess.run(
        "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True,
        capture_output=True, text=True).stdout.strip(),
    "loadavg_before": "$LOAD_BEFORE",
    "commit": subprocess.run(["git", "-C", "$ROOT", "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip(),
    "install_seconds": $SECONDS_TAKEN,
    "target_seconds": 300,
    "blkkin_subcommands": "$SUBCOMMANDS".split(","),
    "c_program_and_dump_ok": True,
    "tree_blkkin": [x for x in "$BLKKIN_TREE".split(",") if x],
    "tree_capi": [x for x in "$CAPI_TREE".split(",") if x],
}, open(sys.argv[1], "w"), indent=1)
PY
log "wrote $OUT_JSON"
