//! `/health` and `/metrics`.

use super::ApiState;
use crate::buffer::BufferStats;
use crate::sources::health::{DeviceHealth, DeviceState};
use crate::uplink::{LinkState, UplinkStatus};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

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

impl ApiState {
    pub fn report(&self) -> HealthReport {
        let devices = self.fleet.view().snapshot();
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

// Always 200 while the process serves: a degraded uplink is reported in the
// body, not as an HTTP failure, so a watchdog does not restart a gateway that
// is correctly buffering through an outage. Without a session only the
// status is shown: liveness probes need no credential, and device names,
// errors, the hub's address and the software version stay with logged-in users.
pub(super) async fn health(
    State(s): State<ApiState>,
    session: Option<Extension<crate::identity::Session>>,
) -> Response {
    let report = s.report();
    match session {
        Some(_) => Json(report).into_response(),
        None => Json(serde_json::json!({"status": report.status})).into_response(),
    }
}

pub(super) async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    let stats = s.buffer.stats();
    metrics::gauge!(crate::metric_names::EDGE_BUFFER_BACKLOG).set(stats.backlog as f64);
    metrics::gauge!(crate::metric_names::EDGE_BUFFER_LAST_SEQ).set(stats.last_seq as f64);
    super::probes::scrape_gauges(&s);
    s.metrics.as_ref().map(|h| h.render()).unwrap_or_default()
}
