#!/usr/bin/env bash
# Runs every test of the project, in order of cost:
#   1. formatting and lints (cargo fmt --check, clippy -D warnings)
#   2. unit, property and end-to-end tests (cargo test --workspace), which
#      compile the C/C++ programs in tests/c against include/ and -lblkin
#   3. the ring writer/reader tests under AddressSanitizer (nightly)
#   4. the ring protocol tests under Miri (nightly)
#   5. every fuzz target of fuzz/ for 30 s (scripts/fuzz.sh; cargo-fuzz)
# Steps 3-5 need the nightly toolchain with miri and rust-src, and cargo-fuzz
# (.ci/run installs them); set BLKKIN_SKIP_NIGHTLY=1 to skip them on a machine
# without it.
#
# usage: scripts/test.sh        (no arguments; --help prints this)
set -euo pipefail
case "${1:-}" in
-h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) echo "test.sh: takes no arguments (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --workspace -q -- -D warnings
step "cargo test --workspace"
cargo test --workspace
step "the TLS building blocks (feature certs of libblkkin)"
cargo clippy -p blkkin --features certs --all-targets -q -- -D warnings
cargo test -q -p blkkin --features certs --lib tls::
step "the node tool scripts/install.sh builds (blkkin without its default features)"
cargo clippy -p blkkin-cli --no-default-features -q -- -D warnings

if [ "${BLKKIN_SKIP_NIGHTLY:-0}" = 1 ]; then
	echo "BLKKIN_SKIP_NIGHTLY=1: skipping the sanitizer and Miri runs"
	exit 0
fi
HOST="$(rustc -vV | sed -n 's/^host: //p')"
step "ring and rseq tests under AddressSanitizer"
RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
	cargo +nightly test -q -p blkkin --lib --target "$HOST" --target-dir target/asan -- ring:: rseq::
step "ring protocol tests under Miri"
# Miri's weak-memory emulation aborts on the mixed-size accesses a byte copy
# into atomically-read memory makes; data-race detection stays on.
MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-disable-weak-memory-emulation" \
	cargo +nightly miri test -q -p blkkin --lib -- ring::
step "fuzz targets, 30 s each"
bash scripts/fuzz.sh "${BLKKIN_FUZZ_SECONDS:-30}"
