//! Keeps the 1-minute and 1-hour rollups current. Every `interval`, samples
//! committed since the watermark (by `received_at`, with an overlap so a
//! transaction that committed late is not missed) name the minute buckets to
//! recompute from raw data; the touched hours are recomputed from minutes.
//! Recomputing a bucket is idempotent, so overlap and restarts are harmless,
//! and late data (a gateway's backlog after an outage) lands in the right
//! buckets.

use super::{Store, StoreError};
use qi_common::shutdown::Stop;
use std::time::Duration;

// Samples committed up to 60 s before the watermark are looked at again
// (the `interval '60 seconds'` in the queries below).

impl Store {
    /// One pass; returns how many minute buckets were recomputed.
    pub async fn roll_up(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One worker at a time, even with several hubs on one database.
        sqlx::query("SELECT pg_advisory_xact_lock(7261001)")
            .execute(&mut *tx)
            .await?;
        let cut: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        let minutes = sqlx::query(
            "WITH touched AS (
                SELECT DISTINCT series_id, date_trunc('minute', ts) AS bucket
                FROM samples, rollup_state s
                WHERE s.name = 'samples' AND received_at > s.watermark - interval '60 seconds'
                  AND received_at <= $1)
             INSERT INTO rollup_1m
             SELECT t.series_id, t.bucket, count(*), sum(x.value), sum(x.value * x.value),
                    min(x.value), max(x.value),
                    min(x.ts), (array_agg(x.value ORDER BY x.ts))[1],
                    max(x.ts), (array_agg(x.value ORDER BY x.ts DESC))[1]
             FROM touched t
             JOIN samples x ON x.series_id = t.series_id
                 AND x.ts >= t.bucket AND x.ts < t.bucket + interval '1 minute'
             GROUP BY t.series_id, t.bucket
             ON CONFLICT (series_id, bucket) DO UPDATE SET
                n = EXCLUDED.n, sum = EXCLUDED.sum, sum_sq = EXCLUDED.sum_sq,
                min = EXCLUDED.min, max = EXCLUDED.max,
                first_ts = EXCLUDED.first_ts, first = EXCLUDED.first,
                last_ts = EXCLUDED.last_ts, last = EXCLUDED.last",
        )
        .bind(cut)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "WITH touched AS (
                SELECT DISTINCT series_id, date_trunc('hour', ts) AS bucket
                FROM samples, rollup_state s
                WHERE s.name = 'samples' AND received_at > s.watermark - interval '60 seconds'
                  AND received_at <= $1)
             INSERT INTO rollup_1h
             SELECT t.series_id, t.bucket, sum(m.n), sum(m.sum), sum(m.sum_sq), min(m.min), max(m.max),
                    min(m.first_ts), (array_agg(m.first ORDER BY m.first_ts))[1],
                    max(m.last_ts), (array_agg(m.last ORDER BY m.last_ts DESC))[1]
             FROM touched t
             JOIN rollup_1m m ON m.series_id = t.series_id
                 AND m.bucket >= t.bucket AND m.bucket < t.bucket + interval '1 hour'
             GROUP BY t.series_id, t.bucket
             ON CONFLICT (series_id, bucket) DO UPDATE SET
                n = EXCLUDED.n, sum = EXCLUDED.sum, sum_sq = EXCLUDED.sum_sq,
                min = EXCLUDED.min, max = EXCLUDED.max,
                first_ts = EXCLUDED.first_ts, first = EXCLUDED.first,
                last_ts = EXCLUDED.last_ts, last = EXCLUDED.last",
        )
        .bind(cut)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE rollup_state SET watermark = $1 WHERE name = 'samples'")
            .bind(cut)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(minutes)
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
            match self.roll_up().await {
                Ok(n) => {
                    metrics::counter!("hub_rollup_buckets_total").increment(n);
                    metrics::histogram!("hub_rollup_seconds").record(t.elapsed().as_secs_f64());
                }
                Err(e) => {
                    metrics::counter!("hub_rollup_errors_total").increment(1);
                    tracing::warn!(error = %e, "rollup pass failed; retrying next interval");
                }
            }
        }
    }
}
