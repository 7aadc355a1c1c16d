//! Storage tier `none` on a real PostgreSQL: samples partitioned by day,
//! partitions created ahead, rows from the default partition moved into
//! their day when it is created, retention by dropping whole partitions,
//! and the uplink's dedupe across all of it.

use anyhow::{Context, Result};
use e2e_tests::grpc::{Client, batch, exchange, hello};
use e2e_tests::{Stack, wait_for};
use qi_proto::v1::{Reading, hub_message};
use std::time::Duration;

const FUTURE: &str = "max_future_skew_s = 1296000\n";

fn at(seq: u64, ts: chrono::DateTime<chrono::Utc>) -> Reading {
    Reading {
        seq,
        device_id: "d1".into(),
        metric: "m".into(),
        timestamp_us: ts.timestamp_micros(),
        value: seq as f64,
        unit: "".into(),
        quality: 1,
        ..Default::default()
    }
}

async fn partitions(pool: &sqlx::PgPool) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'samples'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

async fn where_is(pool: &sqlx::PgPool, seq: i64) -> Result<String> {
    Ok(
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM samples WHERE seq = $1")
            .bind(seq)
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_are_partitioned_by_day_with_retention_by_drop() -> Result<()> {
    if e2e_tests::pg::test_tier() != "none" {
        eprintln!("tier none only (QI_TEST_TIER is set); tests/storage_suite.rs covers every tier");
        return Ok(());
    }
    let mut stack = Stack::new().await?;
    // Readings up to 10 days ahead test the partitions made ahead: the hub
    // is told to take them (grpc.max_future_skew_s, default one day).
    stack.hub_grpc_extra = FUTURE.into();
    stack.start_hub().await?;
    let pool = stack.db().await?;
    let today = chrono::Utc::now().date_naive();
    let day = |d: i64| {
        (today + chrono::Duration::days(d))
            .and_hms_opt(12, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_default()
    };
    let name = |d: i64| {
        format!(
            "samples_{}",
            (today + chrono::Duration::days(d)).format("%Y%m%d")
        )
    };
    let parts = wait_for("partitions ahead", Duration::from_secs(20), || async {
        let p = partitions(&pool).await?;
        Ok(p.contains(&name(7)).then_some(p))
    })
    .await?;
    assert!(parts.contains(&"samples_before".to_string()), "{parts:?}");
    assert!(parts.contains(&"samples_default".to_string()), "{parts:?}");
    assert!(!parts.contains(&name(8)), "{parts:?}");

    // Today, in 3 days, in 10 days (beyond the partitions: default), last year.
    let readings = vec![
        at(1, day(-400)),
        at(2, day(0)),
        at(3, day(3)),
        at(4, day(10)),
    ];
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let (got, err) = exchange(&client, vec![hello("gw-p"), batch(readings.clone())]).await?;
    anyhow::ensure!(err.is_none(), "{err:?}");
    assert!(
        matches!(got.last(), Some(hub_message::Kind::Ack(a)) if a.inserted == 4),
        "{got:?}"
    );
    assert_eq!(where_is(&pool, 1).await?, "samples_before");
    assert_eq!(where_is(&pool, 2).await?, "samples_before");
    assert_eq!(where_is(&pool, 3).await?, name(3));
    assert_eq!(where_is(&pool, 4).await?, "samples_default");
    // Redelivered: every reading recognised, none stored twice.
    let (got, _) = exchange(&client, vec![hello("gw-p"), batch(readings)]).await?;
    assert!(
        matches!(got.last(), Some(hub_message::Kind::Ack(a)) if a.inserted == 0),
        "{got:?}"
    );

    // More days ahead: day 10 gets its partition and its row moves in.
    stack
        .hub
        .take()
        .context("hub")?
        .terminate(Duration::from_secs(10))?;
    stack.hub_grpc_extra = format!("{FUTURE}[retention]\npartition_days_ahead = 12\n");
    stack.start_hub().await?;
    wait_for("the row to move", Duration::from_secs(20), || async {
        Ok((where_is(&pool, 4).await? == name(10)).then_some(()))
    })
    .await?;

    // Time passes (simulated): what was "before" is now a year old, and
    // retention of 30 days drops it whole, with today's data moved aside first.
    stack
        .hub
        .take()
        .context("hub")?
        .terminate(Duration::from_secs(10))?;
    let old_bound = day(-300).date_naive();
    for stmt in [
        "CREATE TABLE keep_today AS SELECT * FROM samples_before WHERE ts >= now() - interval '2 days'".to_string(),
        "ALTER TABLE samples DETACH PARTITION samples_before".to_string(),
        "DELETE FROM samples_before WHERE ts >= now() - interval '2 days'".to_string(),
        format!("ALTER TABLE samples ATTACH PARTITION samples_before FOR VALUES FROM (MINVALUE) TO ('{old_bound}')"),
        format!("CREATE TABLE samples_recent PARTITION OF samples FOR VALUES FROM ('{old_bound}') TO ('{}')", today + chrono::Duration::days(1)),
        "INSERT INTO samples SELECT * FROM keep_today".to_string(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt)).execute(&pool).await?;
    }
    stack.hub_grpc_extra = format!("{FUTURE}[retention]\nraw_days = 30\n");
    stack.start_hub().await?;
    wait_for("retention", Duration::from_secs(20), || async {
        Ok((!partitions(&pool)
            .await?
            .contains(&"samples_before".to_string()))
        .then_some(()))
    })
    .await?;
    let left: Vec<i64> = sqlx::query_scalar("SELECT seq FROM samples ORDER BY seq")
        .fetch_all(&pool)
        .await?;
    assert_eq!(
        left,
        vec![2, 3, 4],
        "the year-old reading went with its partition"
    );
    Ok(())
}
