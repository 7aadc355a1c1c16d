#!/usr/bin/env bash
# Polling at fleet size (BENCHMARKS.md, docs/scaling.md): one agent, DEVICES Modbus TCP devices
# (fleet-sim modbus, 20 ms answers) polled every second, layouts of 1, 20, 100 unit ids per port
# answering one request at a time, then 100 per port answering pipelined requests with the
# profile's modbus.max_in_flight at 1, 4 and 8.
#   scripts/bench-poll-fleet.sh [SECONDS] [DEVICES]      (default 30 1000)
#   QI_BENCH_PROFILE=debug scripts/bench-poll-fleet.sh   debug binaries (figures must say so)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${QI_BENCH_PROFILE:-release}"
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --locked -p edge-agent -p instrument-sim --bins
cargo build "${flag[@]}" --locked -p e2e-tests --bin poll_fleet_bench
ulimit -n "$(ulimit -Hn)"
QI_BIN_DIR="$PWD/target/$profile" exec "target/$profile/poll_fleet_bench" "${1:-30}" "${2:-1000}"
