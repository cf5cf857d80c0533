#!/usr/bin/env bash
# Builds and installs the blkin C library (libblkin.so, libblkin.a), its
# headers (zipkin_c.h, ztracer.hpp), a pkg-config file (blkin.pc) and the
# `blkkin` node tool (dump, clean, workload, tail, status, certs), in a few
# minutes: without the collector's back ends (DataFusion, Cassandra, SQLite).
#
# usage: scripts/install.sh [--prefix DIR] [--libdir DIR] [--destdir DIR] [--full]
#   --prefix   install prefix (default /usr/local)
#   --libdir   library directory (default PREFIX/lib)
#   --destdir  staging root prepended to every path (for packaging)
#   --full     a `blkkin` with up, demo and analyze too (the whole
#              collector: most of an hour of release build on 2 cores)
#
# Afterwards an instrumented daemon builds unchanged with
#   cc daemon.c $(pkg-config --cflags --libs blkin)
# (static: pkg-config --static --libs blkin, with libblkin.a).
set -euo pipefail

PREFIX=/usr/local
LIBDIR=
DESTDIR=
FEATURES=(--no-default-features)
while [ $# -gt 0 ]; do
	case "$1" in
	--prefix) PREFIX="$2"; shift 2 ;;
	--libdir) LIBDIR="$2"; shift 2 ;;
	--destdir) DESTDIR="$2"; shift 2 ;;
	--full) FEATURES=(); shift ;;
	-h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
LIBDIR="${LIBDIR:-$PREFIX/lib}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
SOMAJOR=0

cargo build --release -q -p blkin-capi -p blkkin-cli "${FEATURES[@]}" --manifest-path "$ROOT/Cargo.toml"
TARGET="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"

install -d "$DESTDIR$PREFIX/include" "$DESTDIR$LIBDIR/pkgconfig" "$DESTDIR$PREFIX/bin"
install -m 0644 "$ROOT/include/zipkin_c.h" "$ROOT/include/ztracer.hpp" "$DESTDIR$PREFIX/include/"
install -m 0755 "$TARGET/libblkin.so" "$DESTDIR$LIBDIR/libblkin.so.$VERSION"
ln -sf "libblkin.so.$VERSION" "$DESTDIR$LIBDIR/libblkin.so.$SOMAJOR"
ln -sf "libblkin.so.$SOMAJOR" "$DESTDIR$LIBDIR/libblkin.so"
install -m 0644 "$TARGET/libblkin.a" "$DESTDIR$LIBDIR/libblkin.a"
install -m 0755 "$TARGET/blkkin" "$DESTDIR$PREFIX/bin/blkkin"
sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@LIBDIR@|$LIBDIR|g" -e "s|@VERSION@|$VERSION|g" \
	"$ROOT/include/blkin.pc.in" >"$DESTDIR$LIBDIR/pkgconfig/blkin.pc"
echo "installed blkin $VERSION under $DESTDIR$PREFIX (libraries in $DESTDIR$LIBDIR)"
if [ -z "$DESTDIR" ] && command -v ldconfig >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
	ldconfig "$LIBDIR" 2>/dev/null || true
fi
