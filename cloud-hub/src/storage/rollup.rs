//! Keeps the 1-minute and 1-hour rollups current. Every `interval`, samples
//! committed since the watermark (by `received_at`, with an overlap so a
//! transaction that committed late is not missed) give, per series, the span
//! of minutes to recompute from raw data; the hours of that span are then
//! recomputed from the minutes.
//! Recomputing a bucket is idempotent, so overlap and restarts are harmless,
//! and late data (a gateway's backlog after an outage) lands in the right
//! buckets.

use super::{Store, StoreError};
use qi_common::shutdown::Stop;
use std::time::Duration;

// Samples committed up to 60 s before the watermark are looked at again
// (the `interval '60 seconds'` in the queries below).

impl Store {
    /// One pass; returns how many minute buckets were recomputed (tier
    /// timescale: 0, the database does not say).
    pub async fn roll_up(&self) -> Result<u64, StoreError> {
        if self.tier == super::StorageTier::Timescale {
            return self.refresh_continuous_aggregates().await;
        }
        let mut tx = self.pool.begin().await?;
        // One worker at a time, even with several hubs on one database.
        sqlx::query("SELECT pg_advisory_xact_lock(7261001)")
            .execute(&mut *tx)
            .await?;
        let cut: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        // Per series, the span of minutes its new samples fall in; every
        // minute of that span is recomputed with one index range scan per
        // series (samples mostly arrive in time order, so the span is what
        // was touched; a backlog's span is recomputed whole).
        let spans = "SELECT series_id, date_trunc('minute', min(ts)) AS lo,
                            date_trunc('minute', max(ts)) + interval '1 minute' AS hi
                     FROM samples, rollup_state s
                     WHERE s.name = 'samples' AND received_at > s.watermark - interval '60 seconds'
                       AND received_at <= $1
                     GROUP BY series_id";
        let touched: Vec<(
            i32,
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
        )> = sqlx::query_as(spans).bind(cut).fetch_all(&mut *tx).await?;
        let mut minutes = 0;
        for (series, lo, hi) in touched {
            minutes += sqlx::query(
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
            .await?
            .rows_affected();
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
        Ok(minutes)
    }

    /// Tier timescale: the continuous aggregates are refreshed up to the
    /// start of this pass (every bucket that ended before it is then
    /// materialized; late rows below it were logged as invalidations and are
    /// redone too), then the watermark moves there, as on the other tiers.
    /// The refresh policies do the same on the database's own schedule; this
    /// keeps the lag bound even where the job scheduler is off.
    async fn refresh_continuous_aggregates(&self) -> Result<u64, StoreError> {
        let cut: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?;
        // CALL refresh_continuous_aggregate cannot run in a transaction block,
        // so these go one by one on the pool, minutes before hours. A window
        // reaching back past what retention dropped from an aggregate's
        // source would recompute those buckets from nothing and empty them.
        let since = |days: i64| (days > 0).then(|| cut - chrono::Duration::days(days));
        for (cagg, start) in [
            ("rollup_1m", since(self.retention.raw_days)),
            ("rollup_1h", since(self.retention.minute_days)),
        ] {
            sqlx::query(
                "CALL refresh_continuous_aggregate($1::regclass, $2::timestamptz, $3::timestamptz)",
            )
            .bind(cagg)
            .bind(start)
            .bind(cut)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("UPDATE rollup_state SET watermark = $1 WHERE name = 'samples'")
            .bind(cut)
            .execute(&self.pool)
            .await?;
        Ok(0)
    }

    /// When the rollups were last brought up to date (None: never).
    pub async fn rollup_watermark(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let w: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT CASE WHEN watermark = '-infinity' THEN NULL ELSE watermark END FROM rollup_state WHERE name = 'samples'",
        )
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        Ok(w)
    }

    /// Runs `roll_up` every `interval` until `stop`.
    pub async fn run_rollups(self, interval: Duration, mut stop: Stop) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            let t = std::time::Instant::now();
            let rolling = qi_common::progress::Progress::process().register("rollup pass");
            let result = self.roll_up().await;
            drop(rolling);
            match result {
                Ok(n) => {
                    metrics::counter!(crate::metric_names::HUB_ROLLUP_BUCKETS_TOTAL).increment(n);
                    metrics::histogram!(crate::metric_names::HUB_ROLLUP_SECONDS)
                        .record(t.elapsed().as_secs_f64());
                }
                Err(e) => {
                    metrics::counter!(crate::metric_names::HUB_ROLLUP_ERRORS_TOTAL).increment(1);
                    tracing::warn!(error = %e, "rollup pass failed; retrying next interval");
                }
            }
        }
    }
}
