//! The gateway's local HTTP API: `/health` (JSON for people and scripts),
//! `/metrics` (Prometheus), the device list and the write endpoint. It is
//! meant for the site's LAN and will grow a web page and a login, hence one
//! room per concern: [`health`], [`devices`], and the Host check in [`host`].

use crate::buffer::Buffer;
use crate::fleet::Fleet;
use crate::uplink::UplinkStatus;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::watch;

mod devices;
mod health;
mod host;

pub use health::HealthReport;
pub use host::{AllowedHosts, BadHostName};

/// Request bodies larger than this are refused before they are parsed.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the API reads from the running agent.
#[derive(Clone)]
pub struct ApiState {
    pub gateway_id: String,
    pub buffer: Arc<Buffer>,
    pub uplink: watch::Receiver<UplinkStatus>,
    pub fleet: Arc<Fleet>,
    pub metrics: Option<PrometheusHandle>,
}

/// The local API; requests whose Host does not name this gateway are refused
/// (see [`host`]).
pub fn router(state: ApiState, allowed_hosts: AllowedHosts) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics_text))
        .route("/api/v1/devices", get(devices::list))
        .route("/api/v1/devices/{id}", get(devices::one))
        .route("/api/v1/devices/{id}/write", post(devices::write))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(allowed_hosts),
            host::check_host,
        ))
        .with_state(state)
}

/// An error answer, `{"error": kind, "message": ...}`, counted by kind.
fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Response {
    metrics::counter!(crate::metric_names::EDGE_HTTP_ERRORS_TOTAL, "kind" => kind).increment(1);
    (
        status,
        Json(json!({"error": kind, "message": message.into()})),
    )
        .into_response()
}
