//! One chunk of a rollup pass: the samples received in a window of
//! `received_at` past the watermark, their series' minute spans recomputed
//! from raw data in batches, then the hours of those spans from the minutes,
//! and the watermark moved to the window's end, in one transaction.
//!
//! Why a chunk and not the whole backlog: a pass over everything received
//! since the watermark is one transaction as long as the backlog (minutes
//! after a fleet's catch-up), it holds the watchdog's beat the whole time,
//! and a restart throws all of it away. A chunk is short, commits its
//! progress, and the pass beats between chunks and between batches.

use super::super::{Store, StoreError};
use chrono::{DateTime, Utc};
use qi_common::progress::Beat;
use std::time::Duration;

/// Rows received up to this long before a window's start are looked at
/// again: `received_at` is the ingest transaction's start (`now()`), so a
/// transaction that started before the previous window's end may have
/// committed after that window was read. Ingest transactions are far
/// shorter than this.
pub(super) const OVERLAP: Duration = Duration::from_secs(60);
/// The widest window: one minute of `received_at`, a steady-state pass at
/// the default `analytics.rollup_interval_s` fits in one chunk.
pub(super) const MAX_WIDTH: Duration = Duration::from_secs(60);
/// The narrowest window (a very dense backlog).
const MIN_WIDTH: Duration = Duration::from_secs(1);
/// The window is narrowed or widened so a chunk reads about this many raw
/// rows: its first statement (the spans, one aggregate over the window, the
/// only statement of a chunk that grows with the ingest rate) then takes
/// about a second here, far inside any watchdog interval.
const TARGET_ROWS: f64 = 1_000_000.0;
/// Series recomputed per statement: one statement per batch rather than two
/// per series (400k series at fleet size), each short enough to beat between.
const BATCH: usize = 500;
/// The advisory lock that serializes chunks, even across hubs.
const LOCK: i64 = 7261001;

/// A recomputed bucket replaces the stored one whole (recomputing is
/// idempotent): the tail of both rollups' INSERTs.
macro_rules! upsert_bucket {
    () => {
        "
         ON CONFLICT (series_id, bucket) DO UPDATE SET
            n = EXCLUDED.n, sum = EXCLUDED.sum, sum_sq = EXCLUDED.sum_sq,
            min = EXCLUDED.min, max = EXCLUDED.max,
            first_ts = EXCLUDED.first_ts, first = EXCLUDED.first,
            last_ts = EXCLUDED.last_ts, last = EXCLUDED.last"
    };
}

/// What one chunk did.
#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    /// Minute buckets recomputed.
    pub minutes: u64,
    /// Raw rows in the window (overlap included).
    pub rows: i64,
    /// Series touched.
    pub series: usize,
    /// The watermark now: rows received up to here are rolled up.
    pub watermark: DateTime<Utc>,
    /// How far the watermark is behind the database's clock.
    pub lag: Duration,
    /// The window reached the chunk's start: nothing is left to do.
    pub caught_up: bool,
}

/// What the chunks of one catch-up carry from one to the next: the window
/// width that suits the backlog's density, and where the next window may
/// start without the overlap (only a window far behind the clock has no
/// transaction in flight below its end).
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    width: Duration,
    resume: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            width: MAX_WIDTH,
            resume: None,
        }
    }
}

impl Pacer {
    fn after(&mut self, rows: i64, watermark: DateTime<Utc>, now: DateTime<Utc>) {
        let scale = (TARGET_ROWS / rows.max(1) as f64).clamp(0.25, 2.0);
        self.width = self.width.mul_f64(scale).clamp(MIN_WIDTH, MAX_WIDTH);
        // Every transaction that can still commit a row started after
        // `now - OVERLAP`; below that, the window saw all there will be.
        let settled = now - chrono::Duration::from_std(OVERLAP).unwrap_or_default();
        self.resume = Some((watermark, watermark.min(settled)));
    }
}

type Span = (i32, DateTime<Utc>, DateTime<Utc>, i64);

impl Store {
    /// One chunk (tiers none, apache, citus): rolls up the rows received in
    /// the next window past the watermark (beating `beat` between batches)
    /// and commits the new watermark with the buckets.
    pub(super) async fn chunk(&self, pacer: &mut Pacer, beat: &Beat) -> Result<Chunk, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One worker at a time, even with several hubs on one database.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK)
            .execute(&mut *tx)
            .await?;
        let (watermark, now): (Option<DateTime<Utc>>, DateTime<Utc>) = sqlx::query_as(
            "SELECT CASE WHEN watermark = '-infinity' THEN NULL ELSE watermark END, now()
             FROM rollup_state WHERE name = 'samples'",
        )
        .fetch_one(&mut *tx)
        .await?;
        let overlap = chrono::Duration::from_std(OVERLAP).unwrap_or_default();
        let (from, lo) = match watermark {
            Some(w) => match pacer.resume {
                // The previous chunk of this catch-up ended here: start where
                // it said nothing can still arrive.
                Some((end, settled)) if end == w => (w, settled),
                _ => (w, w - overlap),
            },
            None => {
                // Never rolled up: start at the oldest row (one scan, once).
                let first: Option<DateTime<Utc>> =
                    sqlx::query_scalar("SELECT min(received_at) FROM samples")
                        .fetch_one(&mut *tx)
                        .await?;
                let first = first.unwrap_or(now) - chrono::Duration::microseconds(1);
                (first, first)
            }
        };
        let width = chrono::Duration::from_std(pacer.width).unwrap_or(overlap);
        let hi = (from + width).min(now);
        // Per series, the span of minutes its rows in the window fall in;
        // every minute of that span is recomputed (samples mostly arrive in
        // time order, so the span is what was touched; a backlog's span is
        // recomputed whole).
        let spans: Vec<Span> = sqlx::query_as(
            "SELECT series_id, date_trunc('minute', min(ts)),
                    date_trunc('minute', max(ts)) + interval '1 minute', count(*)
             FROM samples WHERE received_at > $1 AND received_at <= $2
             GROUP BY series_id ORDER BY series_id",
        )
        .bind(lo)
        .bind(hi)
        .fetch_all(&mut *tx)
        .await?;
        beat.beat();
        let rows = spans.iter().map(|s| s.3).sum::<i64>();
        let mut minutes = 0;
        for batch in spans.chunks(BATCH) {
            minutes += recompute(&mut tx, batch).await?;
            beat.beat();
        }
        sqlx::query("UPDATE rollup_state SET watermark = $1 WHERE name = 'samples'")
            .bind(hi)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        pacer.after(rows, hi, now);
        Ok(Chunk {
            minutes,
            rows,
            series: spans.len(),
            watermark: hi,
            lag: (now - hi).to_std().unwrap_or_default(),
            caught_up: hi >= now,
        })
    }
}

/// Recomputes the minutes of each series' span from raw samples, then the
/// hours covering those minutes from the minutes: one statement each for the
/// batch. The spans go in as arrays joined to the tables by series and time
/// range (an index range scan per series, as one statement per series did;
/// on Citus the join is on the distribution column of co-located tables).
/// Returns the minute buckets written.
async fn recompute(tx: &mut sqlx::PgConnection, batch: &[Span]) -> Result<u64, StoreError> {
    let ids: Vec<i32> = batch.iter().map(|s| s.0).collect();
    let los: Vec<DateTime<Utc>> = batch.iter().map(|s| s.1).collect();
    let his: Vec<DateTime<Utc>> = batch.iter().map(|s| s.2).collect();
    let minutes = sqlx::query(concat!(
        "INSERT INTO rollup_1m
         SELECT s.series_id, date_trunc('minute', s.ts), count(*), sum(s.value), sum(s.value * s.value),
                min(s.value), max(s.value),
                min(s.ts), (array_agg(s.value ORDER BY s.ts))[1],
                max(s.ts), (array_agg(s.value ORDER BY s.ts DESC))[1]
         FROM unnest($1::int[], $2::timestamptz[], $3::timestamptz[]) AS t(series_id, lo, hi)
         JOIN samples s ON s.series_id = t.series_id AND s.ts >= t.lo AND s.ts < t.hi
         GROUP BY 1, 2",
        upsert_bucket!()
    ))
    .bind(&ids)
    .bind(&los)
    .bind(&his)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(concat!(
        "INSERT INTO rollup_1h
         SELECT m.series_id, date_trunc('hour', m.bucket), sum(m.n), sum(m.sum), sum(m.sum_sq),
                min(m.min), max(m.max),
                min(m.first_ts), (array_agg(m.first ORDER BY m.first_ts))[1],
                max(m.last_ts), (array_agg(m.last ORDER BY m.last_ts DESC))[1]
         FROM unnest($1::int[], $2::timestamptz[], $3::timestamptz[]) AS t(series_id, lo, hi)
         JOIN rollup_1m m ON m.series_id = t.series_id
              AND m.bucket >= date_trunc('hour', t.lo)
              AND m.bucket < date_trunc('hour', t.hi - interval '1 microsecond') + interval '1 hour'
         GROUP BY 1, 2",
        upsert_bucket!()
    ))
    .bind(&ids)
    .bind(&los)
    .bind(&his)
    .execute(&mut *tx)
    .await?;
    Ok(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_narrows_on_a_dense_backlog_and_widens_back() {
        let now = Utc::now();
        let mut p = Pacer::default();
        p.after(8_000_000, now, now);
        assert_eq!(
            p.width,
            Duration::from_secs(15),
            "at most 4x narrower per chunk"
        );
        p.after(4_000_000, now, now);
        assert_eq!(p.width, Duration::from_millis(3750));
        for _ in 0..10 {
            p.after(0, now, now);
        }
        assert_eq!(
            p.width, MAX_WIDTH,
            "empty windows widen it back, to the cap"
        );
    }

    #[test]
    fn only_a_window_far_behind_the_clock_resumes_without_the_overlap() {
        let now = Utc::now();
        let mut p = Pacer::default();
        let behind = now - chrono::Duration::minutes(5);
        p.after(10, behind, now);
        assert_eq!(p.resume, Some((behind, behind)));
        let recent = now - chrono::Duration::seconds(10);
        p.after(10, recent, now);
        assert_eq!(
            p.resume,
            Some((recent, now - chrono::Duration::seconds(60)))
        );
    }
}
