#!/usr/bin/env bash
# Backup and restore benchmark (BENCHMARKS.md, docs/backup.md): DAYS (default 7) of 10 series
# at 1 Hz in a hub database (tier none), dumped and restored with the doc's own commands,
# then a hub started on the restored database. The hub is the debug build: it only migrates
# and starts; the timed steps are PostgreSQL's tools.
#   scripts/bench-backup.sh [DAYS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --locked -p cloud-hub --bins
cargo build --locked -p e2e-tests --bin backup_bench
exec target/debug/backup_bench "${1:-7}"
