#!/usr/bin/env bash
# Database failover under ingest (BENCHMARKS.md "Database failover", docs/scaling.md
# "Database high availability"). On this machine, in a temp dir, on random loopback ports:
# etcd 3.4 (one member), two PostgreSQL 15 nodes managed by Patroni 4.1.5 (run as the
# `postgres` user when root), HAProxy routing to the node whose Patroni answers
# `GET /primary` (200 only on the leader), the hub (target/debug) pointed at HAProxy, and a
# gateway client (tests/src/bin/ha_failover/) streaming 500-reading batches, 4 ahead of
# their acks, resending from its last ack after a broken stream (as the agent does).
# After HA_BEFORE_S (20) seconds the primary's postmaster gets SIGKILL; Patroni
# (primary_start_timeout 0, loop_wait 1) promotes the replica; the hub reconnects through
# HAProxy; HA_AFTER_S (20) seconds later ingest stops and every acknowledged sequence is
# looked up on the new primary: it must be there exactly once.
# Mode `sync` runs Patroni's synchronous_mode (synchronous_commit = on waits for the standby's
# flush: an ack means the batch is on both nodes), `async` plain streaming replication;
# `both` (default) runs one after the other. Prints a table: readings/s before and after,
# seconds from the kill to the next ack, acked, stored, acked-but-lost, duplicates.
# Fails if any acked reading is duplicated, or lost with synchronous replication.
#   scripts/ha-failover.sh [sync|async|both]      (about 2.5 min for both)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-ha-peers.sh
export CARGO_INCREMENTAL=0
cargo build --locked -p cloud-hub --bin cloud-hub
cargo build --locked -p e2e-tests --bin ha_failover
exec target/debug/ha_failover "${1:-both}"
