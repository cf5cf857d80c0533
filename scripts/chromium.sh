#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (package `chromium`) for the
# test that loads the real Zipkin UI (tests/cassandra_e2e.rs). Idempotent: a
# no-op when `chromium` is already on the PATH. Needs root (.ci/run is).
#
#   scripts/chromium.sh install     install when missing; prints the binary's path
set -euo pipefail

die() { echo "chromium.sh: $*" >&2; exit 1; }

install() {
	if ! command -v chromium >/dev/null 2>&1; then
		[ "$(id -u)" = 0 ] || die "chromium is missing and installing it needs root (apt-get install chromium)"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
	fi
	command -v chromium
}

case "${1:-}" in
install) install ;;
*) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
