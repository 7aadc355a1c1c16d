#!/usr/bin/env bash
# Hub query benchmark (BENCHMARKS.md): 10 series x 1 Hz x DAYS (default 30 = 25.9M samples),
# 1-hour buckets over the whole range from the rollup vs raw, p50/p95 through the REST API.
#   scripts/bench-query.sh [DAYS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked -p cloud-hub --bins
cargo build --release --locked -p e2e-tests --bin query_bench
exec target/release/query_bench "${1:-30}"
