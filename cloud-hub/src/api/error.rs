//! The one error type of the API: status, machine-readable kind, message.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error: status, machine-readable kind, human message.
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            message: message.into(),
        }
    }

    /// The request was well-formed but names something that does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(crate::metric_names::HUB_API_ERRORS_TOTAL, "kind" => self.kind)
            .increment(1);
        (
            self.status,
            Json(json!({"error": self.kind, "message": self.message})),
        )
            .into_response()
    }
}

impl From<crate::storage::StoreError> for ApiError {
    fn from(e: crate::storage::StoreError) -> ApiError {
        tracing::error!(error = %e, "API query failed");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "storage_unavailable",
            message: "the database did not answer; retry later".into(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad_request(e.body_text())
    }
}
