//! Rollup catch-up (BENCHMARKS.md "Rollup catch-up", issue #18): a backlog of
//! SERIES series x ROWS samples at 1 Hz, received over 512 s as a fleet's
//! catch-up arrives, rolled up from nothing twice in one run on the same
//! data: by the pass the hub had before (one transaction over the whole
//! backlog, two statements per series, one watchdog beat for the pass; its
//! SQL is copied below as the baseline) and by the hub's chunked pass
//! (`Store::roll_up_chunk` until caught up). Prints each one's time and its
//! longest gap between watchdog beats, and checks both wrote the same buckets.
//!    cargo run -p e2e-tests --bin rollup_bench -- [ROWS_PER_SERIES] [SERIES]
//! (defaults 500 x 10,000 = 5M rows; the tier is QI_TEST_TIER's, see tests/src/pg.rs)
use anyhow::{Result, ensure};
use cloud_hub::storage::{IngestMethod, Pacer, Retention, Store, StoreOptions, TierChoice};
use e2e_tests::PgServer;
use qi_common::progress::Progress;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SPREAD_S: f64 = 512.0;

#[tokio::main]
async fn main() -> Result<()> {
    let arg = |n: usize, d: i64| -> Result<i64> {
        Ok(std::env::args()
            .nth(n)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(d))
    };
    let (rows, series) = (arg(1, 500)?, arg(2, 10_000)?);
    let pg = PgServer::start().await?;
    let store = Store::open(&StoreOptions {
        url: pg.url(),
        max_connections: 4,
        connect_timeout: Duration::from_secs(60),
        tier: TierChoice::Auto,
        ingest: IngestMethod::Copy,
        retention: Retention::default(),
    })
    .await?;
    let pool = store.pool().clone();
    let t = Instant::now();
    e2e_tests::bench::load_catch_up_backlog(&pool, rows, series, SPREAD_S).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM samples")
        .fetch_one(&pool)
        .await?;
    println!(
        "tier {:?}: {total} rows, {series} series, received over {SPREAD_S} s; loaded in {:.1} s",
        store.tier(),
        t.elapsed().as_secs_f64()
    );

    let progress = Progress::new();
    let gap = GapMeter::start(progress.clone());
    let t = Instant::now();
    {
        let _pass = progress.register("old pass");
        old_pass(&pool).await?;
    }
    let (old_s, old_gap) = (t.elapsed().as_secs_f64(), gap.take());
    for stmt in [
        "CREATE TABLE old_1m AS SELECT * FROM rollup_1m",
        "CREATE TABLE old_1h AS SELECT * FROM rollup_1h",
        "TRUNCATE rollup_1m, rollup_1h",
        "UPDATE rollup_state SET watermark = '-infinity'",
    ] {
        sqlx::query(stmt).execute(&pool).await?;
    }

    let t = Instant::now();
    let mut chunks = 0;
    {
        let pass = progress.register("chunked pass");
        let mut pacer = Pacer::default();
        loop {
            let c = store.roll_up_chunk(&mut pacer, &pass).await?;
            chunks += 1;
            pass.beat();
            if c.caught_up {
                break;
            }
        }
    }
    let (new_s, new_gap) = (t.elapsed().as_secs_f64(), gap.take());
    for (table, old) in [("rollup_1m", "old_1m"), ("rollup_1h", "old_1h")] {
        let sql = format!(
            "SELECT count(*) FROM {old} o FULL JOIN {table} n USING (series_id, bucket)
             WHERE o.n IS DISTINCT FROM n.n OR abs(o.sum - n.sum) > 1e-6
                OR o.min <> n.min OR o.max <> n.max OR o.first <> n.first OR o.last <> n.last"
        );
        let off: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await?;
        ensure!(
            off == 0,
            "{table}: {off} buckets differ between the two passes"
        );
    }
    let buckets: i64 = sqlx::query_scalar("SELECT count(*) FROM rollup_1m")
        .fetch_one(&pool)
        .await?;
    println!(
        "old pass (one transaction, 2 statements per series): {old_s:.1} s, longest gap between watchdog beats {old_gap:.1} s"
    );
    println!(
        "chunked pass: {new_s:.1} s in {chunks} chunks, longest gap between watchdog beats {new_gap:.2} s"
    );
    println!(
        "same {buckets} minute buckets from both; chunked/old time {:.2}x",
        new_s / old_s
    );
    Ok(())
}

/// The longest time any registered entry went without a beat, polled every
/// 20 ms (what the hub's watchdog would have seen).
struct GapMeter {
    longest: Arc<std::sync::Mutex<f64>>,
    _run: Arc<AtomicBool>,
}

impl GapMeter {
    fn start(progress: Progress) -> GapMeter {
        let longest = Arc::new(std::sync::Mutex::new(0.0f64));
        let run = Arc::new(AtomicBool::new(true));
        let (l, r) = (Arc::clone(&longest), Arc::clone(&run));
        tokio::spawn(async move {
            // Largest threshold still stalled = the current gap (50 ms steps).
            while r.load(Ordering::Relaxed) {
                let mut gap = 0.0;
                let mut lo = 0u64;
                let mut hi = 3_600_000u64;
                while hi - lo > 50 {
                    let mid = (lo + hi) / 2;
                    if progress.stalled(Duration::from_millis(mid)).is_empty() {
                        hi = mid;
                    } else {
                        lo = mid;
                        gap = mid as f64 / 1000.0;
                    }
                }
                if let Ok(mut m) = l.lock() {
                    *m = m.max(gap);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        GapMeter { longest, _run: run }
    }

    /// The longest gap since the last `take`.
    fn take(&self) -> f64 {
        self.longest
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or(0.0)
    }
}

impl Drop for GapMeter {
    fn drop(&mut self) {
        self._run.store(false, Ordering::Relaxed);
    }
}

/// The hub's rollup pass before issue #18's chunks, as it was: one
/// transaction over everything received since the watermark, two statements
/// per touched series. Kept here only as the baseline.
async fn old_pass(pool: &sqlx::PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7261001)")
        .execute(&mut *tx)
        .await?;
    let cut: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let touched: Vec<(
        i32,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "SELECT series_id, date_trunc('minute', min(ts)) AS lo,
                    date_trunc('minute', max(ts)) + interval '1 minute' AS hi
             FROM samples, rollup_state s
             WHERE s.name = 'samples' AND received_at > s.watermark - interval '60 seconds'
               AND received_at <= $1
             GROUP BY series_id",
    )
    .bind(cut)
    .fetch_all(&mut *tx)
    .await?;
    for (series, lo, hi) in touched {
        sqlx::query(
            "INSERT INTO rollup_1m
             SELECT series_id, date_trunc('minute', ts), count(*), sum(value), sum(value * value),
                    min(value), max(value),
                    min(ts), (array_agg(value ORDER BY ts))[1],
                    max(ts), (array_agg(value ORDER BY ts DESC))[1]
             FROM samples WHERE series_id = $1 AND ts >= $2 AND ts < $3
             GROUP BY 1, 2
             ON CONFLICT (series_id, bucket) DO UPDATE SET
                n = EXCLUDED.n, sum = EXCLUDED.sum, sum_sq = EXCLUDED.sum_sq,
                min = EXCLUDED.min, max = EXCLUDED.max,
                first_ts = EXCLUDED.first_ts, first = EXCLUDED.first,
                last_ts = EXCLUDED.last_ts, last = EXCLUDED.last",
        )
        .bind(series)
        .bind(lo)
        .bind(hi)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO rollup_1h
             SELECT series_id, date_trunc('hour', bucket), sum(n), sum(sum), sum(sum_sq), min(min), max(max),
                    min(first_ts), (array_agg(first ORDER BY first_ts))[1],
                    max(last_ts), (array_agg(last ORDER BY last_ts DESC))[1]
             FROM rollup_1m
             WHERE series_id = $1 AND bucket >= date_trunc('hour', $2::timestamptz)
               AND bucket < date_trunc('hour', $3::timestamptz - interval '1 microsecond') + interval '1 hour'
             GROUP BY 1, 2
             ON CONFLICT (series_id, bucket) DO UPDATE SET
                n = EXCLUDED.n, sum = EXCLUDED.sum, sum_sq = EXCLUDED.sum_sq,
                min = EXCLUDED.min, max = EXCLUDED.max,
                first_ts = EXCLUDED.first_ts, first = EXCLUDED.first,
                last_ts = EXCLUDED.last_ts, last = EXCLUDED.last",
        )
        .bind(series)
        .bind(lo)
        .bind(hi)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE rollup_state SET watermark = $1 WHERE name = 'samples'")
        .bind(cut)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
