#!/usr/bin/env bash
# Protocol runs benchmark (BENCHMARKS.md, "Protocol runs (issue #14)"): a TC run of
# CYCLES cycles (default 200: the shipped tc200) on the simulated PV rig at TIME_SCALE
# (default 1000x) through the agent's local API while the same agent polls the rig and
# an SDM630: wall time, readings recorded and their arrival at the hub, the hub's
# evaluation, the agent's CPU and RSS with polling alone (the first ALONE_S seconds,
# default 60) and with run + polling. Release builds. The full run takes ~40 min.
#   scripts/bench-runs.sh [CYCLES] [TIME_SCALE] [ALONE_S]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
# One command for all four packages: built apart, their dependencies' features would
# differ and each command would rebuild the other's (~9 min each on 2 cores).
cargo build --release --locked -p cloud-hub -p edge-agent -p instrument-sim -p e2e-tests --bins
QI_BIN_DIR="$PWD/target/release" exec target/release/run_bench "${1:-200}" "${2:-1000}" "${3:-60}"
