#!/usr/bin/env bash
# What authentication costs (BENCHMARKS.md, issue #12): token verification per request,
# the aggregates query's p50/p95 without the guard, with an access token and with an
# API key (interleaved, one run), and its p95 during a login flood.
#   scripts/bench-auth.sh [DAYS]   (default 7: 6M samples)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked -p e2e-tests --bin auth_bench
exec target/release/auth_bench "${1:-7}"
