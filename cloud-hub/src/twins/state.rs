//! A twin's live state: the latest value of every metric its instrument
//! reports (from `series_latest`, kept current by ingest, never a scan of
//! raw data), next to what its type says it should report, with the
//! analytics links for each metric's history; and the health of the
//! gateway it hangs on. (An instrument's calibration status is
//! `crate::calibration`'s; the API adds it.)

use super::store::Twin;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct MetricState {
    pub metric: String,
    pub unit: String,
    pub series_id: Option<i32>,
    pub value: Option<f64>,
    pub ts: Option<DateTime<Utc>>,
    pub quality: Option<i16>,
    /// Declared by the twin's type (expected) or only seen at ingest.
    pub declared: bool,
    pub writable: bool,
}

/// Reported state of an instrument twin (empty for twins not bound to a device).
pub async fn metrics(pool: &PgPool, t: &Twin) -> Result<Vec<MetricState>, sqlx::Error> {
    let (Some(gw), Some(dev)) = (&t.gateway_id, &t.device_id) else {
        return Ok(Vec::new());
    };
    sqlx::query_as(
        "WITH declared AS (
             SELECT m ->> 'name' AS metric, coalesce(m ->> 'unit', '') AS unit,
                    coalesce((m ->> 'writable')::bool, false) AS writable
             FROM twin_types ty, jsonb_array_elements(ty.metrics) m
             WHERE ty.type_id = $3),
         seen AS (
             SELECT s.series_id, s.metric, s.unit, l.value, l.ts, l.quality
             FROM series s LEFT JOIN series_latest l USING (series_id)
             WHERE s.gateway_id = $1 AND s.device_id = $2 AND s.run_id IS NULL)
         SELECT coalesce(seen.metric, declared.metric) AS metric,
                coalesce(seen.unit, declared.unit) AS unit,
                seen.series_id, seen.value, seen.ts, seen.quality,
                declared.metric IS NOT NULL AS declared,
                coalesce(declared.writable, false) AS writable
         FROM seen FULL JOIN declared ON declared.metric = seen.metric
         ORDER BY 1, 2",
    )
    .bind(gw)
    .bind(dev)
    .bind(&t.type_id)
    .fetch_all(pool)
    .await
}

/// The health of the gateway a twin hangs on (online while its uplink is
/// open and recently heard from, `crate::live::health`) and, for an
/// instrument, when its device last reported a reading.
pub async fn health(pool: &PgPool, t: &Twin) -> Result<Value, sqlx::Error> {
    let Some(gw) = &t.gateway_id else {
        return Ok(Value::Null);
    };
    let h = crate::live::health::of_gateways(pool, std::slice::from_ref(gw))
        .await?
        .remove(gw);
    let device_last: Option<DateTime<Utc>> = match &t.device_id {
        Some(dev) => {
            sqlx::query_scalar(
                "SELECT last_seen FROM devices WHERE gateway_id = $1 AND device_id = $2",
            )
            .bind(gw)
            .bind(dev)
            .fetch_optional(pool)
            .await?
        }
        None => None,
    };
    Ok(json!({
        "gateway": gw,
        "online": h.as_ref().is_some_and(|h| h.online),
        "last_seen": h.as_ref().map(|h| h.last_seen),
        "connected_at": h.as_ref().and_then(|h| h.connected_at),
        "disconnected_at": h.as_ref().and_then(|h| h.disconnected_at),
        "device_last_reading": device_last,
    }))
}

/// What `GET /api/v1/twins/{id}` shows as `state`: the metrics with their
/// history links and the health.
pub async fn live(pool: &PgPool, t: &Twin) -> Result<Value, sqlx::Error> {
    let metrics: Vec<Value> = metrics(pool, t)
        .await?
        .into_iter()
        .map(|m| {
            let links = m.series_id.map(history_links);
            let mut v = json!(m);
            v["history"] = links.unwrap_or(Value::Null);
            v
        })
        .collect();
    let health = health(pool, t).await?;
    Ok(json!({"metrics": metrics, "health": health}))
}

/// Where a metric's history is: the analytics API by series id.
pub fn history_links(series_id: i32) -> Value {
    json!({
        "aggregates": format!("/api/v1/aggregates?series={series_id}&bucket=1h"),
        "downsample": format!("/api/v1/series/{series_id}/downsample"),
        "stats": format!("/api/v1/series/{series_id}/stats"),
        "anomalies": format!("/api/v1/series/{series_id}/anomalies"),
    })
}
