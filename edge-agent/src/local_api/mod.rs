//! The gateway's local HTTP API: `/health` (JSON for people and scripts),
//! `/metrics` (Prometheus), the device list and the write endpoint, behind a
//! login, and the operators' web page on `/` ([`web`]). It is meant for the
//! site's LAN, hence one room per concern: [`health`], [`devices`],
//! [`login`], who may call what in [`auth`], the local audit trail in
//! [`audit`], HTTPS in [`tls`], and the Host check in [`host`].

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

mod audit;
pub mod auth;
mod devices;
mod health;
mod host;
mod login;
mod probes;
mod runs;
pub mod tls;
pub mod web;

pub use auth::{Access, AuthState, PERMISSIONS};
pub use health::HealthReport;
pub use host::{AllowedHosts, BadHostName};
pub use web::Web;

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
    pub auth: Arc<AuthState>,
    pub runs: Arc<crate::runs::RunEngine>,
    /// What the hub said of this gateway's runs (`hub` in the runs API).
    pub verdicts: Arc<crate::verdicts::HubVerdicts>,
    /// The web page's live streams and chart history.
    pub web: Arc<Web>,
    /// Whether this agent runs the site MQTT bus (the page shows its clients).
    pub mqtt_enabled: bool,
    /// Fired at shutdown: `/ready` turns 503 before the listener closes.
    pub stop: qi_common::shutdown::Stop,
}

/// The local API; requests whose Host does not name this gateway are refused
/// (see [`host`]), then every route is checked against [`PERMISSIONS`].
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the
/// login limit and the audit trail need the client's address.
pub fn router(state: ApiState, allowed_hosts: AllowedHosts) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics_text))
        .route("/live", get(probes::live))
        .route("/ready", get(probes::ready))
        .route("/api/v1/login", post(login::login))
        .route("/api/v1/logout", post(login::logout))
        .route("/api/v1/session", get(login::session))
        .route("/api/v1/devices", get(devices::list))
        .route("/api/v1/devices/{id}", get(devices::one))
        .route("/api/v1/devices/{id}/write", post(devices::write))
        .route("/api/v1/devices/{id}/points", get(devices::points))
        .route("/api/v1/protocols", get(runs::protocols))
        .route("/api/v1/benches", get(runs::benches))
        .route("/api/v1/runs", get(runs::list).post(runs::start))
        .route("/api/v1/runs/{id}", get(runs::one))
        .route("/api/v1/runs/{id}/abort", post(runs::abort))
        .merge(web::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(allowed_hosts),
            host::check_host,
        ))
        .layer(axum::middleware::from_fn(web::security_headers))
        // Outermost: every answer carries X-Request-Id, every log line of a
        // request its `request_id` (qi_common::request_id).
        .layer(axum::middleware::from_fn(qi_common::request_id::http))
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
