//! The hub's storage interface, the same tests on every tier that runs here:
//! `QI_TEST_TIER` = none (plain PostgreSQL 15), apache (TimescaleDB's Apache-2
//! build on PostgreSQL 15), timescale (TimescaleDB with compression and
//! continuous aggregates, on PGlite) or citus (a coordinator and two workers).
//! See tests/src/pg.rs.
//!
//! These drive `cloud_hub::storage::Store` directly, on the store's own pool:
//! PGlite takes one connection at a time, so nothing else may hold one.

use anyhow::{Result, ensure};
use chrono::{DateTime, Duration as Days, DurationRound, Utc};
use cloud_hub::storage::{
    IngestMethod, Retention, Source, StorageTier, Store, StoreOptions, TierChoice,
};
use e2e_tests::PgServer;
use e2e_tests::pg::test_tier;
use e2e_tests::storage_probe::{
    age_day_partitions, citus_layout, day_table, one_hour, partitions, rollups_off_raw, run_jobs,
    scalar_i64, shards_on_workers,
};
use qi_proto::v1::Reading;
use std::time::Duration;

fn options(url: String, retention: Retention) -> StoreOptions {
    let pglite = test_tier() == "timescale";
    StoreOptions {
        url,
        max_connections: if pglite { 1 } else { 4 },
        connect_timeout: Duration::from_secs(60),
        tier: TierChoice::Auto,
        // PGlite's socket server cannot take COPY FROM STDIN.
        ingest: if pglite {
            IngestMethod::Insert
        } else {
            IngestMethod::Copy
        },
        retention,
    }
}

fn expected_tier() -> StorageTier {
    match test_tier().as_str() {
        "apache" => StorageTier::Apache,
        "timescale" => StorageTier::Timescale,
        "citus" => StorageTier::Citus,
        _ => StorageTier::None,
    }
}

fn reading(seq: u64, metric: &str, ts: DateTime<Utc>, value: f64) -> Reading {
    Reading {
        seq,
        device_id: "rig".into(),
        metric: metric.into(),
        timestamp_us: ts.timestamp_micros(),
        value,
        unit: "V".into(),
        quality: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_is_detected_and_its_layout_built_once() -> Result<()> {
    let pg = PgServer::start().await?;
    let store = Store::open(&options(pg.url(), Retention::default())).await?;
    assert_eq!(
        store.tier(),
        expected_tier(),
        "QI_TEST_TIER={}",
        test_tier()
    );
    // What the hub runs at start and hourly.
    store.maintain(&Retention::default()).await?;
    let pool = store.pool().clone();
    match store.tier() {
        StorageTier::None | StorageTier::Citus => {
            let parts: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'samples'::regclass",
            )
            .fetch_one(&pool)
            .await?;
            ensure!(parts >= 8, "day partitions ahead: {parts}");
            if store.tier() == StorageTier::Citus {
                citus_layout(&pool).await?;
            }
        }
        tier => {
            let interval: String = sqlx::query_scalar(
                "SELECT time_interval::text FROM timescaledb_information.dimensions
                 WHERE hypertable_name = 'samples'",
            )
            .fetch_one(&pool)
            .await?;
            assert_eq!(interval, "1 day");
            let compressed: bool = sqlx::query_scalar(
                "SELECT compression_enabled FROM timescaledb_information.hypertables
                 WHERE hypertable_name = 'samples'",
            )
            .fetch_one(&pool)
            .await?;
            let caggs: Vec<String> = sqlx::query_scalar(
                "SELECT view_name::text FROM timescaledb_information.continuous_aggregates ORDER BY 1",
            )
            .fetch_all(&pool)
            .await?;
            let jobs: Vec<String> = sqlx::query_scalar(
                "SELECT proc_name::text || ':' || hypertable_name::text FROM timescaledb_information.jobs
                 WHERE hypertable_name IS NOT NULL ORDER BY 1",
            )
            .fetch_all(&pool)
            .await?;
            if tier == StorageTier::Timescale {
                ensure!(compressed, "compression enabled on samples");
                assert_eq!(caggs, vec!["rollup_1h", "rollup_1m"]);
                ensure!(
                    jobs.iter()
                        .any(|j| j.starts_with("policy_compression:samples")),
                    "{jobs:?}"
                );
                ensure!(
                    jobs.iter()
                        .filter(|j| j.starts_with("policy_refresh_continuous_aggregate"))
                        .count()
                        == 2,
                    "{jobs:?}"
                );
            } else {
                ensure!(
                    !compressed && caggs.is_empty() && jobs.is_empty(),
                    "{caggs:?} {jobs:?}"
                );
            }
        }
    }
    // A restart (the same options again) finds everything in place.
    // (PGlite serves one connection: this one must be closed first.)
    pool.close().await;
    drop(store);
    let again = Store::open(&options(pg.url(), Retention::default())).await?;
    assert_eq!(again.tier(), expected_tier());
    Ok(())
}

/// One test per tier run, because PGlite starts in ~5 s and holds ~0.5 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_rollups_late_data_compression_and_retention() -> Result<()> {
    let pg = PgServer::start().await?;
    // Everything kept at first; retention comes later, as time passes.
    let store = Store::open(&options(pg.url(), Retention::default())).await?;
    let tier = store.tier();
    assert_eq!(tier, expected_tier());
    store.gateway_connected("gw-s", "test").await?;

    // Two hours every 10 s, two days ago (hour-aligned), `ramp` = i; and one
    // reading 40 days and one 400 days ago.
    let t0 = (Utc::now() - Days::days(2)).duration_trunc(Days::hours(1))?;
    let (d40, d400) = (t0 - Days::days(40), t0 - Days::days(400));
    let mut batch: Vec<Reading> = (0..720)
        .map(|i| reading(i + 1, "ramp", t0 + Days::seconds(10 * i as i64), i as f64))
        .collect();
    batch.push(reading(1000, "ramp", d40, -4.0));
    batch.push(reading(1001, "ramp", d400, -5.0));
    let mut stored = 0;
    for chunk in batch.chunks(250) {
        stored += store.insert_batch("gw-s", chunk).await?;
    }
    assert_eq!(stored, 722);
    // Redelivery after a reconnect: nothing stored twice.
    for chunk in batch.chunks(250) {
        assert_eq!(store.insert_batch("gw-s", chunk).await?, 0);
    }
    assert_eq!(
        scalar_i64(&store, "SELECT count(*) FROM samples").await?,
        722
    );

    store.roll_up().await?;
    let id: i32 = sqlx::query_scalar("SELECT series_id FROM series WHERE metric = 'ramp'")
        .fetch_one(store.pool())
        .await?;
    let to = t0 + Days::hours(2);
    let hours = store
        .aggregate(Source::Hour, &[id], t0, to, 3600, &[])
        .await?;
    let raw = store
        .aggregate(Source::Raw, &[id], t0, to, 3600, &[])
        .await?;
    let minutes = store
        .aggregate(Source::Minute, &[id], t0, to, 3600, &[])
        .await?;
    assert_eq!(hours.len(), 2, "{hours:?}");
    for ((h, r), m) in hours.iter().zip(&raw).zip(&minutes) {
        for other in [r, m] {
            assert_eq!((h.bucket, h.n), (other.bucket, other.n));
            assert!((h.sum - other.sum).abs() < 1e-6 && (h.sum_sq - other.sum_sq).abs() < 1e-3);
            assert_eq!(
                (h.min, h.max, h.first, h.last),
                (other.min, other.max, other.first, other.last)
            );
        }
    }
    assert_eq!(
        (hours[0].n, hours[0].first, hours[0].last, hours[1].max),
        (360, 0.0, 359.0, 719.0)
    );

    // Late data (a backlog arriving after an outage) lands in buckets already
    // rolled up: the next pass corrects them.
    let late = reading(2000, "ramp", t0 + Days::seconds(301), 1000.0);
    assert_eq!(store.insert_batch("gw-s", &[late]).await?, 1);
    store.roll_up().await?;
    let m = store
        .aggregate(
            Source::Minute,
            &[id],
            t0 + Days::minutes(5),
            t0 + Days::minutes(6),
            60,
            &[],
        )
        .await?;
    assert_eq!((m[0].n, m[0].max), (7, 1000.0), "{m:?}");
    let h = store
        .aggregate(Source::Hour, &[id], t0, t0 + Days::hours(1), 3600, &[])
        .await?;
    assert_eq!((h[0].n, h[0].max), (361, 1000.0), "{h:?}");

    if tier == StorageTier::Timescale {
        // The compression policy (7 days), run now (PGlite has no job
        // scheduler): the old chunks are compressed, the recent ones not.
        run_jobs(&store, "policy_compression").await?;
        let compressed: Vec<bool> = sqlx::query_scalar(
            "SELECT is_compressed FROM timescaledb_information.chunks
             WHERE hypertable_name = 'samples' ORDER BY range_start",
        )
        .fetch_all(store.pool())
        .await?;
        assert_eq!(&compressed[..2], &[true, true], "{compressed:?}");
        assert_eq!(compressed.last(), Some(&false), "{compressed:?}");
        // Dedupe holds on a compressed chunk; new rows still go in and are
        // rolled up.
        assert_eq!(store.insert_batch("gw-s", &[batch[721].clone()]).await?, 0);
        let beside = reading(1002, "ramp", d400 + Days::seconds(1), -6.0);
        assert_eq!(store.insert_batch("gw-s", &[beside]).await?, 1);
        store.roll_up().await?;
    }
    let hour_of = |t: DateTime<Utc>| t.duration_trunc(Days::hours(1));
    let (h40, h400) = (hour_of(d40)?, hour_of(d400)?);
    let before = (
        one_hour(&store, id, h40).await?,
        one_hour(&store, id, h400).await?,
    );
    ensure!(
        before.0.len() == 1 && before.1.len() == 1,
        "old hours rolled up: {before:?}"
    );

    let partitioned = matches!(tier, StorageTier::None | StorageTier::Citus);
    if partitioned {
        // The hub has run for 400 days (simulated): the old rows sit in
        // their own day partitions, on the workers on tier citus.
        age_day_partitions(&store, t0, d40, d400).await?;
    }
    // Time has passed: retention is now raw 30 days, minutes 365 days,
    // hours forever (a restart with the new config).
    let retention = Retention {
        raw_days: 30,
        minute_days: 365,
        hour_days: 0,
        ..Retention::default()
    };
    store.pool().close().await;
    let store = Store::open(&options(pg.url(), retention)).await?;
    let (old_days, kept_day) = (
        [day_table(d400), day_table(d40)],
        day_table(t0 + Days::hours(1)),
    );
    if partitioned {
        assert_eq!(
            scalar_i64(&store, "SELECT count(*) FROM samples").await?,
            723
        );
        for t in old_days.iter().chain([&kept_day]) {
            ensure!(shards_on_workers(&pg, t).await? > 0, "{t} has shards");
        }
    }
    match tier {
        StorageTier::Timescale => run_jobs(&store, "policy_retention").await?,
        _ => store.maintain(&retention).await?,
    }
    if partitioned {
        let parts = partitions(&store).await?;
        for gone in old_days.iter().chain([&"samples_before".to_string()]) {
            ensure!(!parts.contains(gone), "{gone} dropped: {parts:?}");
            assert_eq!(shards_on_workers(&pg, gone).await?, 0, "{gone}'s shards");
        }
        ensure!(
            parts.contains(&kept_day) && parts.contains(&"samples_default".to_string()),
            "{parts:?}"
        );
        ensure!(shards_on_workers(&pg, &kept_day).await? > 0);
        // A backlog reading older than every partition left lands in the
        // default partition; the next upkeep deletes it there.
        let stale = reading(3000, "ramp", t0 - Days::days(100), 0.0);
        assert_eq!(store.insert_batch("gw-s", &[stale]).await?, 1);
        assert_eq!(
            scalar_i64(&store, "SELECT count(*) FROM samples_default").await?,
            1
        );
        store.maintain(&retention).await?;
        assert_eq!(
            scalar_i64(&store, "SELECT count(*) FROM samples_default").await?,
            0
        );
    }
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM samples WHERE ts < now() - interval '30 days'")
            .fetch_all(store.pool())
            .await?;
    ensure!(
        left.is_empty(),
        "raw samples older than 30 days left: {left:?}"
    );
    assert_eq!(
        scalar_i64(&store, "SELECT count(*) FROM samples").await?,
        721
    );
    let minutes_left: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT bucket FROM rollup_1m WHERE bucket < now() - interval '30 days' ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await?;
    assert_eq!(
        minutes_left,
        vec![d40.duration_trunc(Days::minutes(1))?],
        "the 40-day-old minute stays, the 400-day-old one goes"
    );
    // Further rollup passes must not erase what was built from dropped data.
    store.roll_up().await?;
    let after = (
        one_hour(&store, id, h40).await?,
        one_hour(&store, id, h400).await?,
    );
    ensure!(
        after.0.len() == 1
            && after.1.len() == 1
            && after.0[0].n == before.0[0].n
            && after.1[0].n == before.1[0].n,
        "hour rollups are kept forever: {before:?} -> {after:?}"
    );
    Ok(())
}

/// `database.tier = citus` on a database without the extension: the start
/// fails and says what to do, rather than quietly running on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiring_citus_without_the_extension_fails_with_the_reason() -> Result<()> {
    if test_tier() != "none" {
        eprintln!("tier none only: the other tiers' servers are not plain PostgreSQL");
        return Ok(());
    }
    let pg = PgServer::start().await?;
    let mut o = options(pg.url(), Retention::default());
    o.tier = TierChoice::Citus;
    let err = match Store::open(&o).await {
        Ok(s) => anyhow::bail!("started on tier {} with database.tier = citus", s.tier()),
        Err(e) => e.to_string(),
    };
    ensure!(
        err.contains("database.tier = citus") && err.contains("CREATE EXTENSION citus"),
        "{err}"
    );
    Ok(())
}

/// Tier citus: a reading beyond the day partitions waits in the default
/// partition; when its day's partition is created (more days ahead), it moves
/// in, still found once, and redelivery still skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citus_new_day_partitions_take_the_rows_waiting_in_default() -> Result<()> {
    if test_tier() != "citus" {
        eprintln!("tier citus only (QI_TEST_TIER=citus)");
        return Ok(());
    }
    let pg = PgServer::start().await?;
    let store = Store::open(&options(pg.url(), Retention::default())).await?;
    assert_eq!(store.tier(), StorageTier::Citus);
    store.maintain(&Retention::default()).await?;
    store.gateway_connected("gw-c", "test").await?;
    let day10 = (Utc::now() + Days::days(10)).duration_trunc(Days::days(1))? + Days::hours(12);
    let ahead = [
        reading(1, "far", day10, 1.0),
        reading(2, "far", Utc::now(), 2.0),
    ];
    assert_eq!(store.insert_batch("gw-c", &ahead).await?, 2);
    assert_eq!(
        scalar_i64(&store, "SELECT count(*) FROM samples_default").await?,
        1
    );
    let more = Retention {
        partition_days_ahead: 12,
        ..Retention::default()
    };
    store.maintain(&more).await?;
    let name = format!("samples_{}", day10.format("%Y%m%d"));
    let moved: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {name} WHERE seq = 1"
    )))
    .fetch_one(store.pool())
    .await?;
    assert_eq!(moved, 1, "the waiting row moved into {name}");
    assert_eq!(
        scalar_i64(&store, "SELECT count(*) FROM samples_default").await?,
        0
    );
    assert_eq!(scalar_i64(&store, "SELECT count(*) FROM samples").await?, 2);
    assert_eq!(store.insert_batch("gw-c", &ahead).await?, 0);
    Ok(())
}

/// A backlog received over several minutes is rolled up in chunks (one
/// window of `received_at` each, committed with the watermark); a restart
/// mid catch-up and rows that committed late (inside the overlap) or landed
/// in minutes already rolled up change nothing: both rollups end equal to a
/// recomputation from raw samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_rolled_up_in_chunks_across_a_restart() -> Result<()> {
    let pg = PgServer::start().await?;
    let store = Store::open(&options(pg.url(), Retention::default())).await?;
    store.gateway_connected("gw-s", "test").await?;
    // 12 series x 2 hours every 10 s, two days ago; received over the last
    // 6 minutes (as a gateway's backlog arrives), so in at least 6 chunks.
    let t0 = (Utc::now() - Days::days(2)).duration_trunc(Days::hours(1))?;
    let mut batch = Vec::new();
    for s in 0..12u64 {
        for i in 0..720u64 {
            let ts = t0 + Days::seconds(10 * i as i64);
            batch.push(reading(
                s * 1000 + i + 1,
                &format!("m{s}"),
                ts,
                (s * i) as f64,
            ));
        }
    }
    for chunk in batch.chunks(2000) {
        store.insert_batch("gw-s", chunk).await?;
    }
    // Citus refuses stable functions (now(), timestamptz + interval) next
    // to column references in an UPDATE: epoch seconds and to_timestamp.
    let start = (Utc::now() - Days::minutes(6)).timestamp() as f64;
    sqlx::query("UPDATE samples SET received_at = to_timestamp($1 + (seq % 1000) * 0.5)")
        .bind(start)
        .execute(store.pool())
        .await?;
    let chunked = store.tier() != StorageTier::Timescale;
    if chunked {
        let beat = qi_common::progress::Progress::new().register("test");
        let mut pacer = cloud_hub::storage::Pacer::default();
        for n in 0..2 {
            let c = store.roll_up_chunk(&mut pacer, &beat).await?;
            ensure!(
                !c.caught_up && c.rows > 0,
                "chunk {n} of the backlog: {c:?}"
            );
        }
    }
    // A restart mid catch-up (the pacer's memory is gone); meanwhile a row
    // that committed late (received 30 s before the watermark) and one late
    // reading in a minute already rolled up.
    store.pool().close().await;
    let store = Store::open(&options(pg.url(), Retention::default())).await?;
    let late = [reading(50_000, "m3", t0 + Days::seconds(5), 777.0)];
    store.insert_batch("gw-s", &late).await?;
    let inside = [reading(50_001, "m4", t0 + Days::seconds(7), -3.0)];
    store.insert_batch("gw-s", &inside).await?;
    if let Some(w) = store.rollup_watermark().await? {
        sqlx::query("UPDATE samples SET received_at = $1 WHERE seq = 50001")
            .bind(w - Days::seconds(30))
            .execute(store.pool())
            .await?;
    }
    store.roll_up().await?;
    for (table, unit) in [("rollup_1m", "minute"), ("rollup_1h", "hour")] {
        let off = rollups_off_raw(&store, table, unit).await?;
        ensure!(off == 0, "{table}: {off} buckets differ from raw samples");
    }
    let n: i64 = sqlx::query_scalar("SELECT sum(n)::bigint FROM rollup_1h")
        .fetch_one(store.pool())
        .await?;
    assert_eq!(n, 12 * 720 + 2);
    Ok(())
}
