#!/usr/bin/env bash
# The Debian packages end to end (packaging/README.md): builds the debug
# binaries, then tests/tests/packaging.rs: contents and lintian, and install N /
# buffer with the hub down / upgrade to N+1 / drain exactly once / remove / purge
# in a Debian 12 root booted with systemd-nspawn. Needs root. CI runs the same
# test inside scripts/test.sh; this runs only it (~60 s once the root is cached).
# Release packages: scripts/package.sh --release (the test uses the debug ones).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
scripts/setup-packaging.sh
scripts/debian-root.sh >/dev/null
cargo build --locked -p edge-agent -p cloud-hub -p instrument-sim --bins
cargo test --locked -p e2e-tests --test packaging -- --test-threads 2
