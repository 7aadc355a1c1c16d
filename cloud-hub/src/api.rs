//! REST API for central operations (JSON). Errors are JSON too:
//! `{"error": "<kind>", "message": "<what to change>"}`.

use crate::storage::{ReadingQuery, StorageTier, Store};
use axum::extract::Path;
use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub max_page_size: u32,
    pub metrics: Option<PrometheusHandle>,
    pub analytics: crate::config::AnalyticsConfig,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/readings", get(readings))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/gateways/{gateway}/commands", post(create_command))
        .route("/api/v1/commands/{id}", get(get_command))
        .merge(crate::analytics::routes())
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .fallback(not_found)
        .with_state(state)
}

/// An API error: status, machine-readable kind, human message.
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            message: message.into(),
        }
    }

    /// The request was well-formed but names something that does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("hub_api_errors_total", "kind" => self.kind).increment(1);
        (
            self.status,
            Json(json!({"error": self.kind, "message": self.message})),
        )
            .into_response()
    }
}

impl From<crate::storage::StoreError> for ApiError {
    fn from(e: crate::storage::StoreError) -> ApiError {
        tracing::error!(error = %e, "API query failed");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "storage_unavailable",
            message: "the database did not answer; retry later".into(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad_request(e.body_text())
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the API is described at /api/v1/openapi.json")
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn ready(State(s): State<ApiState>) -> Response {
    let tier: StorageTier = s.store.tier();
    match s.store.ping(std::time::Duration::from_secs(2)).await {
        Ok(()) => {
            Json(json!({"status": "ready", "database": "ok", "storage_tier": tier})).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "database": e.to_string(), "storage_tier": tier})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(s): State<ApiState>) -> String {
    s.metrics.as_ref().map(|h| h.render()).unwrap_or_default()
}

/// Every parameter arrives as text so that a bad value gets our message, not serde's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsParams {
    gateway: Option<String>,
    device: Option<String>,
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    order: Option<String>,
}

pub fn parse_time(name: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match v.as_deref() {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "`{name}` must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z ({e}); got {s:?}"
                ))
            }),
    }
}

pub fn parse_limit(v: &Option<String>, default: u32, max: u32) -> Result<i64, ApiError> {
    match v.as_deref() {
        None => Ok(i64::from(default.min(max))),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n >= 1 && n <= max => Ok(i64::from(n)),
            _ => Err(ApiError::bad_request(format!(
                "`limit` must be an integer from 1 to {max}; got {s:?}"
            ))),
        },
    }
}

pub fn filter(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        // Characters, not bytes: that is what the OpenAPI document's maxLength counts.
        Some(s) if s.chars().count() > 128 || s.chars().any(char::is_control) => Err(
            ApiError::bad_request(format!("`{name}` must be at most 128 printable characters")),
        ),
        Some(s) => Ok(Some(s)),
    }
}

async fn readings(
    State(s): State<ApiState>,
    params: Result<Query<ReadingsParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params?;
    let from = parse_time("from", &p.from)?;
    let to = parse_time("to", &p.to)?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::bad_request(format!(
            "`from` ({f}) must be before `to` ({t})"
        )));
    }
    let ascending = match p.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "`order` must be asc or desc; got {o:?}"
            )));
        }
    };
    let q = ReadingQuery {
        gateway: filter("gateway", p.gateway)?,
        device: filter("device", p.device)?,
        metric: filter("metric", p.metric)?,
        from,
        to,
        limit: parse_limit(&p.limit, 100, s.max_page_size)?,
        ascending,
    };
    let rows = s.store.query_readings(&q).await?;
    Ok(Json(
        json!({"count": rows.len(), "limit": q.limit, "readings": rows}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesParams {
    gateway: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

async fn devices(
    State(s): State<ApiState>,
    params: Result<Query<DevicesParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params?;
    let limit = parse_limit(&p.limit, 1000, s.max_page_size)?;
    let offset = match p.offset.as_deref() {
        None => 0,
        Some(o) => o.parse::<u32>().map(i64::from).map_err(|_| {
            ApiError::bad_request(format!(
                "`offset` must be a non-negative integer; got {o:?}"
            ))
        })?,
    };
    let gateway = filter("gateway", p.gateway)?;
    let rows = s
        .store
        .list_devices(gateway.as_deref(), limit, offset)
        .await?;
    Ok(Json(
        json!({"count": rows.len(), "limit": limit, "offset": offset, "devices": rows}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritePointBody {
    device: String,
    point: String,
    value: f64,
}

const COMMAND_SHAPE: &str = "body must be {\"write_point\": {\"device\": ..., \"point\": ..., \"value\": number}, \"timeout_s\": 1..86400} or {\"reload_config\": {}}";

/// `{"write_point": {"device": "...", "point": "...", "value": 1.5}, "timeout_s": 60}`
/// or `{"reload_config": {}}`. Read by hand from a JSON object because serde's
/// `Option` would take an explicit `null` for a missing key, and the API
/// refuses what its OpenAPI document does not allow.
fn command_action(body: serde_json::Value) -> Result<(serde_json::Value, Option<u32>), ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("{COMMAND_SHAPE}: {why}"));
    let serde_json::Value::Object(mut b) = body else {
        return Err(bad("not a JSON object"));
    };
    if let Some(k) = b
        .keys()
        .find(|k| !matches!(k.as_str(), "write_point" | "reload_config" | "timeout_s"))
    {
        return Err(bad(&format!("unknown field `{k}`")));
    }
    let timeout = match b.remove("timeout_s") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| ApiError::bad_request("`timeout_s` must be 1..=86400"))?,
        ),
    };
    let action = match (b.remove("write_point"), b.remove("reload_config")) {
        (Some(w), None) => {
            let w: WritePointBody =
                serde_json::from_value(w).map_err(|e| bad(&format!("write_point: {e}")))?;
            let device = filter("device", Some(w.device))?
                .ok_or_else(|| ApiError::bad_request("`device` is empty"))?;
            let point = filter("point", Some(w.point))?
                .ok_or_else(|| ApiError::bad_request("`point` is empty"))?;
            if !w.value.is_finite() {
                return Err(ApiError::bad_request("`value` must be a finite number"));
            }
            json!({"write_point": {"device": device, "point": point, "value": w.value}})
        }
        (None, Some(serde_json::Value::Object(o))) if o.is_empty() => json!({"reload_config": {}}),
        (None, Some(_)) => return Err(bad("`reload_config` takes no options: {}")),
        _ => {
            return Err(bad(
                "give exactly one action: `write_point` or `reload_config`",
            ));
        }
    };
    Ok((action, timeout))
}

/// Queues a command for a gateway. It is delivered while the gateway is
/// connected, and its state is kept until the gateway reports a result or the
/// timeout passes (`GET /api/v1/commands/{id}`).
async fn create_command(
    State(s): State<ApiState>,
    Path(gateway): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(b) =
        body.map_err(|e| ApiError::bad_request(format!("{COMMAND_SHAPE}: {}", e.body_text())))?;
    let gateway = filter("gateway", Some(gateway))?
        .ok_or_else(|| ApiError::bad_request("empty gateway id"))?;
    let (action, timeout_s) = command_action(b)?;
    let timeout = timeout_s.unwrap_or(60);
    if !(1..=86_400).contains(&timeout) {
        return Err(ApiError::bad_request("`timeout_s` must be 1..=86400"));
    }
    let deadline = Utc::now() + chrono::Duration::seconds(i64::from(timeout));
    let row = s.store.create_command(&gateway, &action, deadline).await?;
    tracing::info!(command = row.id, %gateway, "command queued");
    Ok((StatusCode::ACCEPTED, Json(json!(row))))
}

async fn get_command(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("command id must be an integer; got {id:?}")))?;
    match s.store.command(id).await? {
        Some(row) => Ok(Json(json!(row))),
        None => Err(ApiError::not_found(format!("no command {id}"))),
    }
}
