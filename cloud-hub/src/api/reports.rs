//! PDF reports (`crate::reports`): a certificate's for whoever may read
//! the certificate, a run's for whoever may read the run (narrowed to the
//! caller's sites like the run itself), and a certificate's QR code alone,
//! public like the verification URL it encodes.

use super::certificates::cert_id;
use super::runs::{run_id, visible};
use super::{ApiError, ApiState};
use crate::identity::Principal;
use crate::metric_names::HUB_REPORTS_FAILED_TOTAL;
use crate::reports::{self, ReportError};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/certificates/{id}/report.pdf", get(certificate))
        .route("/api/v1/certificates/{id}/qr.svg", get(qr))
        .route("/api/v1/runs/{id}/report.pdf", get(run))
}

/// The error as the API answers it, counted.
fn refused(kind: &'static str, e: ReportError) -> ApiError {
    let reason = match &e {
        ReportError::NotFound(_) => "not_found",
        ReportError::Invalid(_) => "invalid",
        ReportError::Db(_) | ReportError::Cert(_) => "storage",
    };
    metrics::counter!(HUB_REPORTS_FAILED_TOTAL, "kind" => kind, "reason" => reason).increment(1);
    match e {
        ReportError::NotFound(m) => ApiError::not_found(m),
        ReportError::Invalid(m) => {
            tracing::error!(kind, error = %m, "report not rendered");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the report could not be rendered; see the hub's log",
            )
        }
        ReportError::Db(e) => ApiError::unavailable(e),
        ReportError::Cert(e) => e.into(),
    }
}

/// A file download: the name is made of ids the API already checked
/// (A-Z, 0-9, - and hex), so it needs no quoting beyond the quotes.
fn file(content_type: &'static str, name: String, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    )
        .into_response()
}

async fn certificate(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = cert_id(&id)?;
    let pdf = reports::certificate_pdf(s.store.pool(), &id)
        .await
        .map_err(|e| refused("certificate", e))?;
    Ok(file("application/pdf", format!("{id}.report.pdf"), pdf))
}

async fn qr(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = cert_id(&id)?;
    let (cert, _) = reports::stored_certificate(s.store.pool(), &id)
        .await
        .map_err(|e| refused("qr", e))?;
    let svg = reports::qr::svg(&cert.verification_url, 8).map_err(|e| refused("qr", e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        svg,
    )
        .into_response())
}

async fn run(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?;
    let row = visible(&s, &by, &id).await?;
    let pdf = reports::run_pdf(s.store.pool(), row)
        .await
        .map_err(|e| refused("run", e))?;
    Ok(file("application/pdf", format!("run-{id}.report.pdf"), pdf))
}
