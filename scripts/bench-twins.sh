#!/usr/bin/env bash
# What the twin registry costs at fleet size (BENCHMARKS.md, issue #13): 100,000 twins,
# p50/p95/p99 of listing, search, subtree and twin-with-live-state through the REST API.
#   scripts/bench-twins.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked -p e2e-tests --bin twins_bench
exec target/release/twins_bench
