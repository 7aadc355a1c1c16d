//! The local status server: `/health` (JSON for people and scripts) and `/metrics` (Prometheus).

use crate::buffer::{Buffer, BufferStats};
use crate::fleet::Fleet;
use crate::sources::command::WriteError;
use crate::sources::health::{DeviceHealth, DeviceState};
use crate::uplink::{LinkState, UplinkStatus};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::watch;

mod host;
pub use host::{AllowedHosts, BadHostName};

#[derive(Clone)]
pub struct StatusSources {
    pub gateway_id: String,
    pub buffer: Arc<Buffer>,
    pub uplink: watch::Receiver<UplinkStatus>,
    pub fleet: Arc<Fleet>,
    pub metrics: Option<PrometheusHandle>,
}

#[derive(Serialize)]
pub struct HealthReport {
    /// "ok" when the uplink is connected and no device is offline, else "degraded".
    pub status: &'static str,
    pub gateway_id: String,
    pub version: &'static str,
    pub buffer: BufferStats,
    /// Age of the oldest reading still waiting for the hub, in seconds.
    pub backlog_age_s: Option<f64>,
    pub uplink: UplinkStatus,
    pub devices: Vec<DeviceHealth>,
}

impl StatusSources {
    pub fn report(&self) -> HealthReport {
        let devices: Vec<DeviceHealth> = self
            .fleet
            .view()
            .health
            .iter()
            .map(|d| d.borrow().clone())
            .collect();
        let uplink = self.uplink.borrow().clone();
        let ok = uplink.state == LinkState::Connected
            && devices.iter().all(|d| d.state == DeviceState::Online);
        HealthReport {
            status: if ok { "ok" } else { "degraded" },
            gateway_id: self.gateway_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            buffer: self.buffer.stats(),
            backlog_age_s: self
                .buffer
                .oldest_pending_us()
                .map(|ts| (chrono::Utc::now().timestamp_micros() - ts).max(0) as f64 / 1e6),
            uplink,
            devices,
        }
    }
}

/// The local API; requests whose Host does not name this gateway are refused
/// (see [`host`]).
pub fn router(sources: StatusSources, allowed_hosts: AllowedHosts) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/devices/{id}/write", post(write))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(allowed_hosts),
            host::check_host,
        ))
        .with_state(sources)
}

// Always 200 while the process serves: a degraded uplink is reported in the
// body, not as an HTTP failure, so a watchdog does not restart a gateway that
// is correctly buffering through an outage.
async fn health(State(s): State<StatusSources>) -> Json<HealthReport> {
    Json(s.report())
}

async fn metrics_text(State(s): State<StatusSources>) -> impl IntoResponse {
    let stats = s.buffer.stats();
    metrics::gauge!("edge_buffer_backlog").set(stats.backlog as f64);
    metrics::gauge!("edge_buffer_last_seq").set(stats.last_seq as f64);
    s.metrics.as_ref().map(|h| h.render()).unwrap_or_default()
}

fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Response {
    metrics::counter!("edge_http_errors_total", "kind" => kind).increment(1);
    (
        status,
        Json(json!({"error": kind, "message": message.into()})),
    )
        .into_response()
}

async fn devices(State(s): State<StatusSources>) -> Json<Vec<DeviceHealth>> {
    Json(
        s.fleet
            .view()
            .health
            .iter()
            .map(|d| d.borrow().clone())
            .collect(),
    )
}

async fn device(State(s): State<StatusSources>, Path(id): Path<String>) -> Response {
    match s
        .fleet
        .view()
        .health
        .iter()
        .find(|d| d.borrow().device_id == id)
    {
        Some(d) => Json(d.borrow().clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no device {id:?} on this gateway"),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRequest {
    point: String,
    value: f64,
}

/// Writes one point: only points the profile marks writable, encoded per the
/// profile (type, scale, byte and word order); anything else is refused.
async fn write(
    State(s): State<StatusSources>,
    Path(id): Path<String>,
    body: Result<Json<WriteRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "body must be {{\"point\": \"name\", \"value\": number}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    let view = s.fleet.view();
    let Some(handle) = view.handles.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            WriteError::UnknownDevice(id).to_string(),
        );
    };
    match handle.write(&req.point, req.value).await {
        Ok(()) => Json(json!({"ok": true, "device": id, "point": req.point, "value": req.value}))
            .into_response(),
        Err(e) => {
            let (status, kind) = match &e {
                WriteError::UnknownDevice(_) | WriteError::UnknownPoint(_) => {
                    (StatusCode::NOT_FOUND, "not_found")
                }
                WriteError::NotWritable(_) => (StatusCode::FORBIDDEN, "not_writable"),
                WriteError::BadValue(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_value"),
                WriteError::DeviceError(_) => (StatusCode::BAD_GATEWAY, "device_error"),
                WriteError::Unreachable(_) | WriteError::NotRunning(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unreachable")
                }
                WriteError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            };
            error(status, kind, e.to_string())
        }
    }
}
