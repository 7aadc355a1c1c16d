//! REST API for central operations (JSON). Errors are JSON too:
//! `{"error": "<kind>", "message": "<what to change>"}`.
//!
//! Rooms: `error` (the error type every handler returns), `params` (parsing
//! of query parameters shared by handlers), `status` (health, readiness,
//! metrics), `readings` (readings and devices), `commands` (commands to
//! gateways), `analytics` (series, live state, aggregates, downsampling,
//! statistics, anomalies; the computations live in `crate::analytics`).
//! Every route is declared in `router`, and described in `openapi.json`.

mod analytics;
mod commands;
mod error;
mod params;
mod readings;
mod status;
#[cfg(test)]
mod tests;

pub use error::ApiError;
pub use params::{filter, parse_limit, parse_time};
pub use readings::{DevicesParams, ReadingsParams};

use crate::storage::Store;
use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub max_page_size: u32,
    pub metrics: Option<PrometheusHandle>,
    pub analytics: crate::config::AnalyticsConfig,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health", get(status::health))
        .route("/ready", get(status::ready))
        .route("/metrics", get(status::metrics_text))
        .route("/api/v1/readings", get(readings::readings))
        .route("/api/v1/devices", get(readings::devices))
        .route(
            "/api/v1/gateways/{gateway}/commands",
            post(commands::create_command),
        )
        .route("/api/v1/commands/{id}", get(commands::get_command))
        .merge(analytics::routes())
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .fallback(status::not_found)
        .with_state(state)
}

/// The API's description (OpenAPI 3), served as is.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}
