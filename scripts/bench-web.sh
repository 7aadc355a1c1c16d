#!/usr/bin/env bash
# The local web page's cost on the agent (BENCHMARKS.md, "Local web page"):
# 50 devices x 20 points at 1 Hz, agent CPU and RSS without a browser and with
# 5 pages open in Debian's chromium; first meaningful paint; page weight.
#   scripts/bench-web.sh [SECONDS]    (window per side, default 30)
# Set QI_WEB_BENCH_DEBUG=1 to measure the debug build (no release build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-peers.sh >/dev/null
if [ "${QI_WEB_BENCH_DEBUG:-0}" = 1 ]; then
  cargo build --locked -p edge-agent -p instrument-sim -p e2e-tests --bins
  QI_BIN_DIR=target/debug exec target/debug/web_bench "${1:-30}"
fi
cargo build --release --locked -p edge-agent -p instrument-sim --bins
cargo build --release --locked -p e2e-tests --bin web_bench
exec target/release/web_bench "${1:-30}"
