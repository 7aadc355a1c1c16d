#!/usr/bin/env bash
# Scale figures of issue #18 (BENCHMARKS.md "Scale (issue #18)", docs/scaling.md), each in one run,
# each printing a markdown table (tests/src/bin/scale_bench/):
#   scripts/bench-scale.sh hubs  [STREAMS] [SECONDS]            hub ingest with 1, 2, 3 hubs over one PostgreSQL (default 6 20)
#   scripts/bench-scale.sh rest  [CONNECTIONS] [SECONDS] [ROWS/S] REST mix (closed loop) with an API key, without and with ingest (default 32 20 20000)
#   scripts/bench-scale.sh rest --rates R1,R2,.. [--seconds S] [--ingest ROWS/S] [--max-connections C] [--timeout-s T]
#                                                               the same mix in an OPEN loop: fixed arrival rates, latency from each request's
#                                                               scheduled send; where p99 crosses 200 ms (defaults 20 s, 20000, 256, 10)
#   scripts/bench-scale.sh citus [STREAMS] [SECONDS]            ingest on tier citus, 1 vs 2 workers (default 4 20; runs scripts/setup-citus.sh)
#   QI_BENCH_PROFILE=debug scripts/bench-scale.sh ...           debug binaries (figures must say so)
# SCALE_BATCH=N: readings per gateway batch (default 500).
# QI_TEST_TIER picks the storage tier of hubs and rest (default none), as for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
scripts/setup.sh >/dev/null
if [ "$1" = citus ]; then scripts/setup-citus.sh; fi
profile="${QI_BENCH_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --locked -p cloud-hub --bins
  cargo build --release --locked -p e2e-tests --bin scale_bench
else
  cargo build --locked -p cloud-hub --bins
  cargo build --locked -p e2e-tests --bin scale_bench
fi
ulimit -n "$(ulimit -Hn)"
QI_BIN_DIR="$PWD/target/$profile" exec "target/$profile/scale_bench" "$@"
