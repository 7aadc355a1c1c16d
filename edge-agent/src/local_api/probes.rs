//! `/live` and `/ready`, for systemd checks, Kubernetes probes and load
//! balancers (docs/operations.md). Both are open: they say whether, never
//! what is behind it.
//!
//! Readiness is about this gateway doing its job: reading instruments into a
//! durable buffer. The hub being unreachable is NOT a reason to be unready:
//! a gateway that buffers through an outage is doing exactly its job, and a
//! probe that failed then would get it restarted or drained for nothing.

use super::ApiState;
use crate::sources::health::DeviceState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Always 200 while the process serves HTTP.
pub(super) async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

/// Gauges read from the running agent when Prometheus scrapes: what the
/// alert rules (packaging/prometheus/alerts.yml) watch.
pub(super) fn scrape_gauges(s: &ApiState) {
    use crate::metric_names::{
        EDGE_BUFFER_OLDEST_PENDING_SECONDS, EDGE_DEVICE_ONLINE, EDGE_UPLINK_CONNECTED,
    };
    let age_s = s
        .buffer
        .oldest_pending_us()
        .map(|ts| (chrono::Utc::now().timestamp_micros() - ts).max(0) as f64 / 1e6)
        .unwrap_or(0.0);
    metrics::gauge!(EDGE_BUFFER_OLDEST_PENDING_SECONDS).set(age_s);
    let connected = s.uplink.borrow().state == crate::uplink::LinkState::Connected;
    metrics::gauge!(EDGE_UPLINK_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    for d in s.fleet.view().snapshot() {
        let up = matches!(d.state, DeviceState::Online | DeviceState::Degraded);
        metrics::gauge!(EDGE_DEVICE_ONLINE, "device" => d.device_id.clone()).set(if up {
            1.0
        } else {
            0.0
        });
    }
}

/// Why the agent cannot do its job now, if it cannot.
pub(super) fn not_ready_reason(s: &ApiState) -> Option<&'static str> {
    if s.stop.is_stopped() {
        return Some("shutting_down");
    }
    if !s.buffer.is_open() {
        return Some("buffer_unavailable");
    }
    match s.fleet.ended_pollers() {
        None => Some("pollers_restarting"),
        Some(0) => None,
        Some(_) => Some("poller_ended"),
    }
}

/// 200 `{"status":"ready"}` or 503 `{"status":"not_ready","reason":...}`.
pub(super) async fn ready(State(s): State<ApiState>) -> Response {
    match not_ready_reason(&s) {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response(),
    }
}
