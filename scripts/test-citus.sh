#!/usr/bin/env bash
# The whole end-to-end suite on storage tier citus: every test that depends on
# the storage tier, each against its own Citus coordinator and workers
# (QI_TEST_CITUS_WORKERS, default 2; three PostgreSQL clusters per test).
#
# CI (scripts/test.sh) runs only the storage suite, the analytics tests and the
# walking skeleton on tier citus; this is the rest, which CI cannot afford:
# ~18 min on the 2-core reference machine (docs/scaling.md, "Citus").
#
# Like scripts/test.sh, tests whose subject does not depend on the storage tier
# (a `// qi-test: tier-independent` line in their file) are left out. Tests
# that need what tier citus does not offer say SKIPPED and why
# (tests/src/pg.rs `skip_on_tier`).
#
# Needs the vendored Citus source (../shared/vendor/citus-13.2.2.tar.gz or
# QI_CITUS_TARBALL) for scripts/setup-citus.sh, and the test peers
# (scripts/setup-test-peers.sh). Extra arguments go to the test harness,
# e.g. `scripts/test-citus.sh --test-threads 1`; default: 2 at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup-citus.sh
cargo build --workspace --bins --locked

tests=()
for f in tests/tests/*.rs; do
  grep -q '^// qi-test: tier-independent' "$f" || tests+=(--test "$(basename "$f" .rs)")
done
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--test-threads 2)

status=0
env -u QI_TEST_DATABASE_URL QI_TEST_TIER=citus \
  cargo test -p e2e-tests --locked --no-fail-fast "${tests[@]}" -- "${args[@]}" || status=$?
echo "tier citus: $(( ${#tests[@]} / 2 )) test files, exit $status, $(( $(date +%s) - start )) s"
exit $status
