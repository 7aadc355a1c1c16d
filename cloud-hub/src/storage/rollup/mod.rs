//! Keeps the 1-minute and 1-hour rollups current. Every `interval`, a pass
//! brings them up to date chunk by chunk (see `chunk`): each chunk takes the
//! samples committed in the next window of `received_at` past the watermark
//! (with an overlap so a transaction that committed late is not missed),
//! gives per series the span of minutes to recompute from raw data, then
//! the hours of that span from the minutes, and moves the watermark.
//! Recomputing a bucket is idempotent, so overlap and restarts are harmless,
//! and late data (a gateway's backlog after an outage) lands in the right
//! buckets.

mod chunk;

pub use chunk::{Chunk, Pacer};

use super::{Store, StoreError};
use qi_common::progress::{Beat, Progress};
use qi_common::shutdown::Stop;
use std::time::Duration;

impl Store {
    /// Brings the rollups up to date, chunk after chunk; returns how many
    /// minute buckets were recomputed (tier timescale: 0, the database does
    /// not say).
    pub async fn roll_up(&self) -> Result<u64, StoreError> {
        let beat = Progress::new().register("rollup");
        let mut pacer = Pacer::default();
        let mut minutes = 0;
        loop {
            let c = self.roll_up_chunk(&mut pacer, &beat).await?;
            minutes += c.minutes;
            if c.caught_up {
                return Ok(minutes);
            }
        }
    }

    /// One step of a pass: one chunk (tier timescale: the whole refresh,
    /// always caught up). `beat` is beaten between batches of series.
    pub async fn roll_up_chunk(&self, pacer: &mut Pacer, beat: &Beat) -> Result<Chunk, StoreError> {
        if self.tier == super::StorageTier::Timescale {
            return self.refresh_continuous_aggregates().await;
        }
        self.chunk(pacer, beat).await
    }

    /// Tier timescale: the continuous aggregates are refreshed up to the
    /// start of this pass (every bucket that ended before it is then
    /// materialized; late rows below it were logged as invalidations and are
    /// redone too), then the watermark moves there, as on the other tiers.
    /// The refresh policies do the same on the database's own schedule; this
    /// keeps the lag bound even where the job scheduler is off.
    async fn refresh_continuous_aggregates(&self) -> Result<Chunk, StoreError> {
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
        Ok(Chunk {
            minutes: 0,
            rows: 0,
            series: 0,
            watermark: cut,
            lag: Duration::ZERO,
            caught_up: true,
        })
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

    /// Runs a pass every `interval` until `stop` (which also fires when this
    /// hub stops leading): chunk after chunk until caught up, checking `stop`
    /// between chunks. The pass's watchdog entry beats between chunks and
    /// between batches within one, so a long catch-up is progress, not a
    /// stall; a statement that hangs (a lock) still stops the beats.
    pub async fn run_rollups(self, interval: Duration, mut stop: Stop) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pacer = Pacer::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait() => return,
            }
            let t = std::time::Instant::now();
            let rolling = Progress::process().register("rollup pass");
            let mut failed = None;
            let mut chunks = 0u64;
            while !stop.is_stopped() {
                match self.roll_up_chunk(&mut pacer, &rolling).await {
                    Ok(c) => {
                        chunks += 1;
                        rolling.beat();
                        metrics::counter!(crate::metric_names::HUB_ROLLUP_CHUNKS_TOTAL)
                            .increment(1);
                        metrics::counter!(crate::metric_names::HUB_ROLLUP_BUCKETS_TOTAL)
                            .increment(c.minutes);
                        metrics::gauge!(crate::metric_names::HUB_ROLLUP_LAG_SECONDS)
                            .set(c.lag.as_secs_f64());
                        if c.caught_up {
                            break;
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            drop(rolling);
            match failed {
                None => {
                    metrics::histogram!(crate::metric_names::HUB_ROLLUP_SECONDS)
                        .record(t.elapsed().as_secs_f64());
                    if chunks > 1 {
                        tracing::info!(
                            chunks,
                            seconds = t.elapsed().as_secs_f64(),
                            "rollups caught up"
                        );
                    }
                }
                Some(e) => {
                    metrics::counter!(crate::metric_names::HUB_ROLLUP_ERRORS_TOTAL).increment(1);
                    tracing::warn!(error = %e, "rollup pass failed; retrying next interval (chunks done are kept)");
                }
            }
        }
    }
}
