//! Issue #18: a rollup catch-up never starves the systemd watchdog. The real
//! hub, given `$NOTIFY_SOCKET` and a 3 s `$WATCHDOG_USEC` (tests/src/notify.rs),
//! starts over a backlog of 1M samples in 2,000 series received over the last
//! 5 minutes, as a fleet's catch-up leaves it. The pass that rolled up
//! everything in one transaction held its watchdog beat for ~10 s here
//! (pings withheld, "stalled: rollup pass"); the chunked pass beats between
//! chunks and batches, so the pings keep coming the whole catch-up and the
//! rollups end up complete. Cost: ~8 s to load, ~5 s to roll up (debug, 2 cores).

use anyhow::{Context, Result, ensure};
use cloud_hub::storage::{IngestMethod, Retention, Store, StoreOptions, TierChoice};
use e2e_tests::notify::{Manager, has_line};
use e2e_tests::{Stack, wait_for};
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(3);
const ROWS_PER_SERIES: i64 = 500;
const SERIES: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollup_catch_up_keeps_the_watchdog_fed() -> Result<()> {
    let mut stack = Stack::new().await?;
    // The hub's schema first (what the hub would migrate at start), then the
    // backlog, so the hub's first pass finds all of it.
    let store = Store::open(&StoreOptions {
        url: stack.pg_url()?,
        max_connections: 2,
        connect_timeout: Duration::from_secs(60),
        tier: TierChoice::Auto,
        ingest: IngestMethod::Copy,
        retention: Retention::default(),
    })
    .await?;
    e2e_tests::bench::load_catch_up_backlog(store.pool(), ROWS_PER_SERIES, SERIES, 300.0).await?;
    store.pool().close().await;

    stack.hub_after = "[analytics]\nrollup_interval_s = 1\n".into();
    let manager = Manager::bind(stack.dir.path(), vec![stack.hub_http_port])?;
    stack.hub_env = manager.env(&WATCHDOG.as_micros().to_string());
    stack.start_hub().await?;
    let ready = manager
        .wait("READY=1", 0, |t| has_line(t, "READY=1"))
        .await?;

    let pool = stack.db().await?;
    let rows = ROWS_PER_SERIES * SERIES;
    wait_for(
        "the backlog rolled up",
        Duration::from_secs(300),
        || async {
            let n: Option<i64> = sqlx::query_scalar("SELECT sum(n)::bigint FROM rollup_1h")
                .fetch_one(&pool)
                .await?;
            Ok((n == Some(rows)).then_some(()))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    let minutes: Option<i64> = sqlx::query_scalar("SELECT sum(n)::bigint FROM rollup_1m")
        .fetch_one(&pool)
        .await?;
    assert_eq!(minutes, Some(rows));

    let seen = manager.messages();
    let stalled: Vec<&str> = seen
        .iter()
        .filter(|m| m.text.contains("stalled:"))
        .map(|m| m.text.as_str())
        .collect();
    ensure!(
        stalled.is_empty(),
        "the catch-up stalled the watchdog: {stalled:?}\n{}",
        stack.logs()
    );
    // Pings every half interval; a gap of 3 intervals would be a restart
    // under systemd. Generous: the machine is shared.
    let pings: Vec<_> = seen
        .iter()
        .skip(ready)
        .filter(|m| has_line(&m.text, "WATCHDOG=1"))
        .map(|m| m.at)
        .collect();
    ensure!(pings.len() >= 2, "pings during the catch-up: {seen:?}");
    let gap = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    ensure!(
        gap < WATCHDOG * 3,
        "a gap of {gap:?} between WATCHDOG=1 pings (watchdog {WATCHDOG:?})"
    );
    let log = stack.logs();
    ensure!(
        !log.contains("watchdog pings withheld"),
        "the hub withheld pings:\n{log}"
    );
    Ok(())
}
