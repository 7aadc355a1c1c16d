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
    /// Seconds, for 429 answers.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn too_many(retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after_s),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many attempts from this address; try again in {retry_after_s} s"),
            )
        }
    }

    /// The database failed; the caller may retry.
    pub fn unavailable(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "API request failed on the database");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the database did not answer; retry later",
        )
    }

    /// The request was well-formed but names something that does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(crate::metric_names::HUB_API_ERRORS_TOTAL, "kind" => self.kind)
            .increment(1);
        let mut r = (
            self.status,
            Json(json!({"error": self.kind, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(s) = self.retry_after
            && let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<crate::twins::TwinError> for ApiError {
    fn from(e: crate::twins::TwinError) -> ApiError {
        use crate::twins::TwinError as E;
        match e {
            E::Invalid(i) => {
                metrics::counter!(crate::metric_names::HUB_TWIN_WRITES_REFUSED_TOTAL, "reason" => "invalid").increment(1);
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", i.to_string())
            }
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict(m) => {
                metrics::counter!(crate::metric_names::HUB_TWIN_WRITES_REFUSED_TOTAL, "reason" => "conflict").increment(1);
                ApiError::conflict(m)
            }
            e @ E::Stale { .. } => {
                metrics::counter!(crate::metric_names::HUB_TWIN_WRITES_REFUSED_TOTAL, "reason" => "stale").increment(1);
                ApiError::new(StatusCode::PRECONDITION_FAILED, "stale", e.to_string())
            }
            E::Db(e) => ApiError::unavailable(e),
            E::Audit(e) => ApiError::unavailable(e),
        }
    }
}

impl From<crate::storage::StoreError> for ApiError {
    fn from(e: crate::storage::StoreError) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl From<crate::identity::AuthError> for ApiError {
    fn from(e: crate::identity::AuthError) -> ApiError {
        use crate::identity::AuthError as A;
        metrics::counter!(crate::metric_names::HUB_API_AUTH_FAILURES_TOTAL, "reason" => e.reason())
            .increment(1);
        match e {
            A::Unauthenticated { message, .. } => ApiError::unauthorized(message),
            A::Forbidden { message, .. } => ApiError::forbidden(message),
            A::RateLimited { retry_after_s } => ApiError::too_many(retry_after_s),
            A::Db(e) => ApiError::unavailable(e),
            A::Internal(m) => {
                tracing::error!(error = %m, "identity failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the hub's log",
                )
            }
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> ApiError {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text());
        }
        ApiError::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad_request(e.body_text())
    }
}
