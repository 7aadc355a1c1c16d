//! REST API for central operations (JSON). Errors are JSON too:
//! `{"error": "<kind>", "message": "<what to change>"}`.
//!
//! Rooms: `error` (the error type every handler returns), `params` (parsing
//! of query parameters shared by handlers), `status` (health, readiness,
//! metrics), `readings` (readings and devices), `commands` (commands to
//! gateways), `analytics` (series, live state, aggregates, downsampling,
//! statistics, anomalies; the computations live in `crate::analytics`).
//! `aas` (Asset Administration Shell read API, `crate::aas`), `desired` (desired state of instrument twins, `crate::desired`).
//! `guard` (authentication and authorization of every request), `auth`
//! (login, tokens), `users`, `keys` (API keys, gateway sites), `audit`, `live` (the
//! live stream of twins), `alarms` (alarm rules, alarms), `lab` (service
//! requests, samples, inspections, photos: `crate::lab`), `runs` (protocol
//! runs, their evaluations and approvals, `crate::runs`), `certificates`
//! (issuing, revoking, documents, the public verification, `crate::certificates`),
//! `translog` (the transparency log's public read API, `crate::translog`),
//! `webhooks` (webhook subscriptions, dead letters and non-conformances,
//! `crate::webhooks`, `crate::nonconformance`),
//! `exports` (CSV, xlsx and JSON exports of runs and service requests,
//! `crate::exports`), `idempotent` (`Idempotency-Key` on the lab's creates),
//! `calibration` (instrument calibrations, what is due, calibration
//! certificates, `crate::calibration`).
//! Every route is declared in `router`, described in `openapi.json`, and has
//! a rule in `crate::identity::permissions`.

mod aas;
mod alarms;
mod analytics;
mod audit;
mod auth;
mod calibration;
mod certificates;
mod commands;
mod desired;
mod error;
mod exports;
mod guard;
mod idempotent;
mod keys;
mod lab;
mod live;
pub(crate) mod params;
mod readings;
mod replica;
mod reports;
mod runs;
mod status;
#[cfg(test)]
mod tests;
mod translog;
mod twin_types;
mod twins;
mod users;
mod webhooks;

pub use error::ApiError;
pub use params::{filter, parse_limit, parse_time, present};
pub use readings::{DevicesParams, ReadingsParams};

use crate::storage::Store;
use axum::Router;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub max_page_size: u32,
    pub metrics: Option<PrometheusHandle>,
    pub analytics: crate::config::AnalyticsConfig,
    pub identity: std::sync::Arc<crate::identity::Identity>,
    /// What just happened (committed readings, twin changes, ...), for live streams.
    pub live: std::sync::Arc<crate::live::Fanout>,
    /// The API's base URL as clients reach it (`http.public_url`), for links
    /// in documents the hub hands out (AAS time-series endpoints).
    pub public_url: String,
    /// The SSE streams over `live` (limits, open streams, the twin index).
    pub streams: std::sync::Arc<crate::live::sse::Streams>,
    /// Alarm rules' reload signal and alarm announcements.
    pub alarms: std::sync::Arc<crate::alarms::Alarms>,
    /// Bounds of inspection photos (`[lab]`).
    pub lab: crate::config::lab::LabConfig,
    /// Bounds of the data exports (`[exports]`).
    pub exports: crate::config::exports::ExportsConfig,
    /// When a calibration is due soon (`[calibration]`).
    pub calibration: crate::config::calibration::CalibrationConfig,
    /// The issuing key and what documents say (`[certificates]`).
    pub certificates: std::sync::Arc<crate::certificates::Issuer>,
    /// The transparency log's key and signed heads (`crate::translog`).
    pub translog: std::sync::Arc<crate::translog::LogSigner>,
    /// Where webhook subscriptions may point (`[webhooks]`).
    pub webhooks: crate::config::webhooks::WebhooksConfig,
    /// Whether this hub runs the singleton background jobs (`/ready` says).
    pub leader: std::sync::Arc<crate::leader::Leadership>,
    /// Fired at shutdown: `/ready` turns 503 while requests drain.
    pub stop: qi_common::shutdown::Stop,
}

/// The API, every operation behind the guard (authentication, role, sites).
pub fn router(state: ApiState) -> Router {
    routes()
        // Route layers run after routing, so the guard sees the matched path.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .fallback(status::not_found)
        // Outermost: the guard's and the handlers' log lines carry the
        // request id, and every answer (401, 404 too) returns it.
        .layer(axum::middleware::from_fn(qi_common::request_id::http))
        .with_state(state)
}

/// The same API with no guard: every operation open to anyone. Only for
/// the benchmark that measures what the guard costs (tests/src/bin/
/// auth_bench.rs); the hub never serves it.
pub fn router_without_guard_for_benchmarks(state: ApiState) -> Router {
    routes()
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .fallback(status::not_found)
        .with_state(state)
}

fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health", get(status::health))
        .route("/live", get(status::live))
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
        .merge(desired::routes())
        .merge(aas::routes())
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/me", get(auth::me))
        .route("/api/v1/auth/jwks.json", get(auth::jwks))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{username}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route("/api/v1/keys", get(keys::list).post(keys::create))
        .route("/api/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/api/v1/gateways/{gateway}/site", put(keys::set_site))
        .route("/api/v1/audit", get(audit::list))
        .merge(twins::routes())
        .merge(twin_types::routes())
        .merge(lab::routes())
        .route("/api/v1/twins/stream", get(live::stream))
        .route(
            "/api/v1/alarm-rules",
            get(alarms::list_rules).post(alarms::create_rule),
        )
        .route(
            "/api/v1/alarm-rules/{id}",
            get(alarms::get_rule)
                .put(alarms::update_rule)
                .delete(alarms::delete_rule),
        )
        .route("/api/v1/alarms", get(alarms::list_alarms))
        .route("/api/v1/alarms/{id}/acknowledge", post(alarms::acknowledge))
        .merge(runs::routes())
        .merge(certificates::routes())
        .merge(reports::routes())
        .merge(calibration::routes())
        .merge(translog::routes())
        .merge(webhooks::routes())
        .merge(exports::routes())
}

/// The API's description (OpenAPI 3), served as is.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}
