//! Reads for the analytics API: series, latest values, bucketed aggregates
//! from raw samples or the rollups, and raw points for the math done in Rust.
//! All SQL text is constant; every value is a bound parameter.

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SeriesRow {
    pub series_id: i32,
    pub gateway_id: String,
    pub device_id: String,
    pub metric: String,
    pub unit: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LatestRow {
    pub series_id: i32,
    pub gateway_id: String,
    pub device_id: String,
    pub metric: String,
    pub unit: String,
    pub ts: Option<DateTime<Utc>>,
    pub value: Option<f64>,
}

/// Where aggregates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Raw,
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
}

/// One bucket of one series: combinable parts plus optional percentiles.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BucketRow {
    pub series_id: i32,
    pub bucket: DateTime<Utc>,
    pub n: i64,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f64,
    pub max: f64,
    pub first: f64,
    pub last: f64,
    pub percentiles: Option<Vec<f64>>,
}

impl Store {
    pub async fn list_series(
        &self,
        gateway: Option<&str>,
        device: Option<&str>,
        metric: Option<&str>,
        after_id: i32,
        limit: i64,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT series_id, gateway_id, device_id, metric, unit FROM series
             WHERE ($1::text IS NULL OR gateway_id = $1) AND ($2::text IS NULL OR device_id = $2)
               AND ($3::text IS NULL OR metric = $3) AND series_id > $4
             ORDER BY series_id LIMIT $5",
        )
        .bind(gateway)
        .bind(device)
        .bind(metric)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn series_by_ids(&self, ids: &[i32]) -> Result<Vec<SeriesRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT series_id, gateway_id, device_id, metric, unit FROM series
             WHERE series_id = ANY($1) ORDER BY series_id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The newest sample of each matching series (the "live state").
    pub async fn latest(
        &self,
        gateway: Option<&str>,
        device: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LatestRow>, StoreError> {
        let sql = if self.tier == super::StorageTier::Citus {
            // Citus cannot run a LATERAL .. LIMIT over a distributed table per
            // row of a local one; `series_latest`, kept in every ingest
            // transaction, holds the same row.
            "SELECT s.series_id, s.gateway_id, s.device_id, s.metric, s.unit, l.ts, l.value
             FROM series s LEFT JOIN series_latest l USING (series_id)
             WHERE ($1::text IS NULL OR s.gateway_id = $1) AND ($2::text IS NULL OR s.device_id = $2)
             ORDER BY s.series_id LIMIT $3"
        } else {
            "SELECT s.series_id, s.gateway_id, s.device_id, s.metric, s.unit, l.ts, l.value
             FROM series s
             LEFT JOIN LATERAL (
                SELECT ts, value FROM samples x WHERE x.series_id = s.series_id
                ORDER BY ts DESC LIMIT 1) l ON true
             WHERE ($1::text IS NULL OR s.gateway_id = $1) AND ($2::text IS NULL OR s.device_id = $2)
             ORDER BY s.series_id LIMIT $3"
        };
        Ok(sqlx::query_as(sql)
            .bind(gateway)
            .bind(device)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Samples the rollups say lie in the range (cheap; rollups lag by up to
    /// their interval, so the newest samples are not counted).
    pub async fn estimate_rows(
        &self,
        ids: &[i32],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT sum(n)::bigint FROM rollup_1m WHERE series_id = ANY($1) AND bucket >= $2 AND bucket < $3",
        )
        .bind(ids)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unwrap_or(0))
    }

    /// Buckets of `width_s` seconds aligned on `from`. Percentiles (`pcts`,
    /// 0..=1) only from raw data.
    pub async fn aggregate(
        &self,
        source: Source,
        ids: &[i32],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        width_s: i64,
        pcts: &[f64],
    ) -> Result<Vec<BucketRow>, StoreError> {
        let width = format!("{width_s} seconds");
        let q = match source {
            Source::Raw => sqlx::query_as::<_, BucketRow>(
                "SELECT series_id, date_bin($4::interval, ts, $2) AS bucket, count(*) AS n,
                        sum(value) AS sum, sum(value * value) AS sum_sq, min(value) AS min, max(value) AS max,
                        (array_agg(value ORDER BY ts))[1] AS first,
                        (array_agg(value ORDER BY ts DESC))[1] AS last,
                        CASE WHEN cardinality($5::float8[]) > 0
                             THEN percentile_cont($5::float8[]) WITHIN GROUP (ORDER BY value) END AS percentiles
                 FROM samples
                 WHERE series_id = ANY($1) AND ts >= $2 AND ts < $3
                 GROUP BY 1, 2 ORDER BY 1, 2",
            ),
            Source::Minute => sqlx::query_as::<_, BucketRow>(ROLLUP_MINUTE),
            Source::Hour => sqlx::query_as::<_, BucketRow>(ROLLUP_HOUR),
        };
        Ok(q.bind(ids)
            .bind(from)
            .bind(to)
            .bind(width)
            .bind(pcts)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Raw (time, value) points of one series, oldest first, at most `limit`.
    pub async fn points(
        &self,
        id: i32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, f64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT ts, value FROM samples WHERE series_id = $1 AND ts >= $2 AND ts < $3
             ORDER BY ts LIMIT $4",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

macro_rules! rollup_sql {
    ($table:literal) => {
        concat!(
            "SELECT series_id, date_bin($4::interval, bucket, $2) AS bucket, sum(n)::bigint AS n,
                    sum(sum) AS sum, sum(sum_sq) AS sum_sq, min(min) AS min, max(max) AS max,
                    (array_agg(first ORDER BY first_ts))[1] AS first,
                    (array_agg(last ORDER BY last_ts DESC))[1] AS last,
                    CASE WHEN cardinality($5::float8[]) > 0 THEN NULL::float8[] END AS percentiles
             FROM ",
            $table,
            " WHERE series_id = ANY($1) AND bucket >= $2 AND bucket < $3
             GROUP BY 1, 2 ORDER BY 1, 2"
        )
    };
}

const ROLLUP_MINUTE: &str = rollup_sql!("rollup_1m");
const ROLLUP_HOUR: &str = rollup_sql!("rollup_1h");
