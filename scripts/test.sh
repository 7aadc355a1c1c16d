#!/usr/bin/env bash
# The whole test suite, from a clean checkout: system packages, build, lint, tests.
#
# Tests start their own throwaway PostgreSQL clusters (initdb in a temp dir, random
# port). To use an existing server instead, set QI_TEST_DATABASE_URL to a URL of a
# role that may CREATE DATABASE; every test then gets a fresh database in it.
# The storage tests then run again on the two TimescaleDB tiers and on Citus
# (QI_TEST_TIER, see tests/src/pg.rs), on servers this script builds itself.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
start=$(date +%s)

step "system packages"
scripts/setup.sh

step "format check"
cargo fmt --all -- --check

step "test peers (pymodbus, libmodbus unit-test-server, mbpoll, socat)"
scripts/setup-test-peers.sh

step "storage tiers: TimescaleDB Apache-2 build (Debian source), TimescaleDB in PGlite, Citus (vendored source)"
scripts/setup-timescaledb.sh
scripts/setup-pglite.sh
# Citus comes from a vendored source tarball no registry serves
# (../shared/vendor next to the checkout, or QI_CITUS_TARBALL): where it is
# absent the Citus tier cannot be built, and this run says so below.
citus_tarball=${QI_CITUS_TARBALL:-$(pwd)/../shared/vendor/citus-13.2.2.tar.gz}
if [ -f "$citus_tarball" ]; then
  QI_CITUS_TARBALL=$citus_tarball scripts/setup-citus.sh
fi

step "build (debug: the end-to-end tests run these binaries)"
cargo build --workspace --bins --locked

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# Each end-to-end test runs PostgreSQL, a hub, simulators and an agent: four at a
# time keeps two cores from starving their timing windows.
cargo test --workspace --locked -- --test-threads 4

# Tier none ran above. Tier apache is a real multi-connection server: the
# whole end-to-end suite runs again on it. PGlite (tier timescale) serves one
# connection at a time, so there only the tests that reach the database
# through the hub or the store's own pool run.
# Tests whose outcome does not depend on the storage tier (packages, units,
# docs, the module graph, log and trace output) run once, above.
tier_independent=" packaging systemd_units module_graph config_docs metrics_docs promtool observability hub_partition "
apache_tests=()
for f in tests/tests/*.rs; do
  name=$(basename "$f" .rs)
  [[ "$tier_independent" == *" $name "* ]] || apache_tests+=(--test "$name")
done
step "end-to-end tests on tier apache (TimescaleDB 2.19 Apache-2 build, PostgreSQL 15)"
env -u QI_TEST_DATABASE_URL QI_TEST_TIER=apache cargo test -p e2e-tests --locked "${apache_tests[@]}" -- --test-threads 4
step "storage and analytics tests on tier timescale (TimescaleDB 2.23 in PGlite)"
env -u QI_TEST_DATABASE_URL QI_TEST_TIER=timescale cargo test -p e2e-tests --locked \
  --test storage_suite --test analytics --test walking_skeleton -- --test-threads 2

# Tier citus: a coordinator and two workers (three clusters per test), the
# same subset as tier timescale; about 70 s on 2 cores.
if [ -f "$citus_tarball" ]; then
  step "storage and analytics tests on tier citus (Citus 13.2.2, coordinator + 2 workers)"
  env -u QI_TEST_DATABASE_URL QI_TEST_TIER=citus cargo test -p e2e-tests --locked \
    --test storage_suite --test analytics --test walking_skeleton -- --test-threads 2
else
  step "tier citus NOT TESTED: its source $citus_tarball is not here (set QI_CITUS_TARBALL; docs/scaling.md, Citus)"
fi

step "all green in $(( $(date +%s) - start )) s"
