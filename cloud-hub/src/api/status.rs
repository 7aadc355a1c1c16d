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

pub(super) async fn ready(State(s): State<ApiState>) -> Response {
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

pub(super) async fn metrics_text(State(s): State<ApiState>) -> String {
    s.metrics.as_ref().map(|h| h.render()).unwrap_or_default()
}
