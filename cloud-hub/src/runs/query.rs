//! The API's reads of runs: listings with filters and keyset pages, one
//! run with its steps (from the events) and latest evaluation, its events,
//! and its raw readings with the step each belongs to.

use super::evaluation::{Evaluation, latest};
use super::{RunRow, run_columns};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Filters of `GET /api/v1/runs`, validated by the API.
#[derive(Debug, Default)]
pub struct RunFilter {
    pub sample: Option<String>,
    pub bench: Option<String>,
    pub gateway: Option<String>,
    pub protocol: Option<String>,
    pub state: Option<String>,
    /// Only runs of gateways in these sites (a site-limited caller).
    pub sites: Option<Vec<String>>,
    /// Keyset: runs listed before this one (the previous page's `next_before`).
    pub before: Option<i64>,
    pub limit: i64,
}

/// A run in a listing: the row, its position for paging, and the verdict
/// that stands.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ListedRun {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub run: RunRow,
    #[serde(skip)]
    pub run_no: i64,
    pub verdict: Option<String>,
}

pub const RUN_STATES: [&str; 5] = ["running", "paused", "completed", "aborted", "failed"];

pub async fn list(pool: &PgPool, f: &RunFilter) -> Result<Vec<ListedRun>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {cols}, r.run_no,
                (SELECT coalesce(a.final_verdict, e.verdict) FROM run_evaluations e
                   LEFT JOIN run_approvals a ON a.approval_id = e.approval_id
                  WHERE e.run_id = r.run_id ORDER BY e.evaluation_id DESC LIMIT 1) AS verdict
           FROM runs r
          WHERE ($1::text IS NULL OR r.sample_id = $1)
            AND ($2::text IS NULL OR r.bench_id = $2)
            AND ($3::text IS NULL OR r.gateway_id = $3)
            AND ($4::text IS NULL OR r.protocol_id = $4)
            AND ($5::text IS NULL OR r.state = $5)
            AND ($6::bigint IS NULL OR r.run_no < $6)
            AND ($7::text[] IS NULL OR twin_site(
                    (SELECT t.twin_id FROM twins t WHERE t.kind = 'gateway'
                        AND t.gateway_id = r.gateway_id AND t.deleted_at IS NULL)) = ANY($7))
          ORDER BY r.run_no DESC LIMIT $8",
        cols = run_columns(false)
    )))
    .bind(&f.sample)
    .bind(&f.bench)
    .bind(&f.gateway)
    .bind(&f.protocol)
    .bind(&f.state)
    .bind(f.before)
    .bind(&f.sites)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

pub async fn run(pool: &PgPool, run_id: &str) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM runs WHERE run_id = $1::uuid",
        run_columns(false)
    )))
    .bind(run_id)
    .fetch_optional(pool)
    .await
}

/// One step as the events tell it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StepRow {
    pub step: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub started_seq: Option<i64>,
    pub finished_seq: Option<i64>,
}

/// The run's steps in the order they started, with their start and end.
pub async fn steps(pool: &PgPool, run_id: &str) -> Result<Vec<StepRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT step,
                min(ts) FILTER (WHERE kind = 'step_started') AS started_at,
                max(ts) FILTER (WHERE kind = 'step_finished') AS finished_at,
                min(seq) FILTER (WHERE kind = 'step_started') AS started_seq,
                max(seq) FILTER (WHERE kind = 'step_finished') AS finished_seq
           FROM run_events
          WHERE run_id = $1::uuid AND kind IN ('step_started', 'step_finished')
          GROUP BY step
          ORDER BY min(seq)",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

pub async fn latest_evaluation(
    pool: &PgPool,
    run_id: &str,
) -> Result<Option<Evaluation>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    latest(&mut conn, run_id).await
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub kind: String,
    pub ts: DateTime<Utc>,
    pub step: String,
    pub message: String,
    pub received_at: DateTime<Utc>,
}

/// The run's events in seq order, after `after_seq`.
pub async fn events(
    pool: &PgPool,
    run_id: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, kind, ts, step, message, received_at FROM run_events
          WHERE run_id = $1::uuid AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(run_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RunReading {
    pub seq: i64,
    pub series: String,
    /// The series id in the analytics API (`/api/v1/series/{id}/...`).
    pub series_id: i32,
    pub device_id: String,
    pub metric: String,
    pub unit: String,
    /// The step whose STEP_STARTED is the last event of the run before it.
    pub step: Option<String>,
    pub ts: DateTime<Utc>,
    pub value: f64,
    pub quality: i16,
}

/// The run's raw readings in seq order, after `after_seq`, optionally one
/// series.
pub async fn readings(
    pool: &PgPool,
    run_id: &str,
    series: Option<&str>,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<RunReading>, sqlx::Error> {
    sqlx::query_as(
        // The page first, then each row's step: on tier citus `samples` is
        // distributed, and Citus refuses a subquery on a coordinator table
        // correlated with it ("direct joins between distributed and local
        // tables"); over the materialized page it is an ordinary local query.
        "WITH x AS MATERIALIZED (
            SELECT x.seq, s.run_series AS series, s.series_id, s.device_id, s.metric, s.unit,
                   x.ts, x.value, x.quality
              FROM series s JOIN samples x ON x.series_id = s.series_id
             WHERE s.run_id = $1::uuid AND ($2::text IS NULL OR s.run_series = $2) AND x.seq > $3
             ORDER BY x.seq LIMIT $4)
         SELECT x.seq, x.series, x.series_id, x.device_id, x.metric, x.unit,
                (SELECT e.step FROM run_events e
                  WHERE e.run_id = $1::uuid AND e.kind = 'step_started' AND e.seq < x.seq
                  ORDER BY e.seq DESC LIMIT 1) AS step,
                x.ts, x.value, x.quality
           FROM x ORDER BY x.seq",
    )
    .bind(run_id)
    .bind(series)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The run's series: name, analytics series id, device point, readings.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RunSeries {
    pub series: String,
    pub series_id: i32,
    pub device_id: String,
    pub metric: String,
    pub unit: String,
}

pub async fn series(pool: &PgPool, run_id: &str) -> Result<Vec<RunSeries>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_series AS series, series_id, device_id, metric, unit FROM series
          WHERE run_id = $1::uuid ORDER BY run_series, series_id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}
