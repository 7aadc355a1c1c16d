#!/usr/bin/env bash
# Fleet benchmark (BENCHMARKS.md, docs/scaling.md): fleet-sim devices across agents (one per
# site), one hub, one PostgreSQL, this machine; msg/s, hub rows/s, lag p99, CPU/RSS per process,
# per-connection memory in the agent, and the exactly-once check at this size.
#   scripts/bench-fleet.sh [DEVICES] [AGENTS] [SECONDS] [PER_CONNECTION]   (default 100000 10 120 100)
#   QI_BENCH_PROFILE=debug scripts/bench-fleet.sh ...   debug binaries (figures must say so)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
profile="${QI_BENCH_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --locked -p edge-agent -p cloud-hub -p instrument-sim --bins
  cargo build --release --locked -p e2e-tests --bin fleet_bench
else
  cargo build --locked -p edge-agent -p cloud-hub -p instrument-sim --bins
  cargo build --locked -p e2e-tests --bin fleet_bench
fi
ulimit -n "$(ulimit -Hn)"
QI_BIN_DIR="$PWD/target/$profile" exec "target/$profile/fleet_bench" "${1:-100000}" "${2:-10}" "${3:-120}" "${4:-100}"
