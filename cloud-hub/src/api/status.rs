//! Liveness, readiness and the Prometheus metrics, plus the fallback for
//! unknown paths.

use super::{ApiError, ApiState};
use crate::storage::StorageTier;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the API is described at /api/v1/openapi.json")
}

pub(super) async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Always 200 while the process serves HTTP: restart it only if this fails.
pub(super) async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

/// How long `/ready` waits for the database: a probe must answer before its
/// own timeout (Kubernetes' default is 1 s... set it above this, see
/// docs/operations.md).
const READY_DB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Can the hub do its job: not shutting down, database reachable, schema
/// current. Open, so the reason is a fixed word, never the driver's error
/// (which can name hosts and users; the log has it).
pub(super) async fn ready(State(s): State<ApiState>) -> Response {
    let tier: StorageTier = s.store.tier();
    let reason = if s.stop.is_stopped() {
        Some("shutting_down")
    } else {
        match s.store.schema_current(READY_DB_TIMEOUT).await {
            Ok(true) => None,
            Ok(false) => Some("migrations_pending"),
            Err(e) => {
                tracing::warn!(error = %e, "/ready: database unreachable");
                Some("database_unreachable")
            }
        }
    };
    // Not conditions: a follower serves ingest and the API as well, and
    // without its replica the hub reads from the primary.
    let leader = s.leader.role();
    let replica = s.store.replica_status();
    match reason {
        None => Json(json!({"status": "ready", "database": "ok", "storage_tier": tier,
                            "leader": leader, "replica": replica}))
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason, "storage_tier": tier, "leader": leader})),
        )
            .into_response(),
    }
}

pub(super) async fn metrics_text(State(s): State<ApiState>) -> String {
    s.metrics.as_ref().map(|h| h.render()).unwrap_or_default()
}
