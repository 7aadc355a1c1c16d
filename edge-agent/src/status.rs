//! The local status server: `/health` (JSON for people and scripts) and `/metrics` (Prometheus).

use crate::buffer::{Buffer, BufferStats};
use crate::sources::health::{DeviceHealth, DeviceState};
use crate::uplink::{LinkState, UplinkStatus};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct StatusSources {
    pub gateway_id: String,
    pub buffer: Arc<Buffer>,
    pub uplink: watch::Receiver<UplinkStatus>,
    pub devices: Vec<watch::Receiver<DeviceHealth>>,
    pub metrics: Option<PrometheusHandle>,
}

#[derive(Serialize)]
pub struct HealthReport {
    /// "ok" when the uplink is connected and no device is offline, else "degraded".
    pub status: &'static str,
    pub gateway_id: String,
    pub version: &'static str,
    pub buffer: BufferStats,
    pub uplink: UplinkStatus,
    pub devices: Vec<DeviceHealth>,
}

impl StatusSources {
    pub fn report(&self) -> HealthReport {
        let devices: Vec<DeviceHealth> = self.devices.iter().map(|d| d.borrow().clone()).collect();
        let uplink = self.uplink.borrow().clone();
        let ok = uplink.state == LinkState::Connected
            && devices.iter().all(|d| d.state == DeviceState::Online);
        HealthReport {
            status: if ok { "ok" } else { "degraded" },
            gateway_id: self.gateway_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            buffer: self.buffer.stats(),
            uplink,
            devices,
        }
    }
}

pub fn router(sources: StatusSources) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
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
