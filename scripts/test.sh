#!/usr/bin/env bash
# The whole test suite, from a clean checkout: system packages, build, lint, tests.
#
# Tests start their own throwaway PostgreSQL clusters (initdb in a temp dir, random
# port). To use an existing server instead, set QI_TEST_DATABASE_URL to a URL of a
# role that may CREATE DATABASE; every test then gets a fresh database in it.
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

step "build (debug: the end-to-end tests run these binaries)"
cargo build --workspace --bins --locked

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# Each end-to-end test runs PostgreSQL, a hub, simulators and an agent: four at a
# time keeps two cores from starving their timing windows.
cargo test --workspace --locked -- --test-threads 4

step "all green in $(( $(date +%s) - start )) s"
