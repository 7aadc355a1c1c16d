//! Data exports (`crate::exports`, docs/exports.md): a run's and a service
//! request's data as CSV (one table, `?table=`), xlsx (a sheet per table)
//! or JSON (everything). Runs: everyone who reads data, narrowed to the
//! caller's sites like the other run routes; service requests: the lab's
//! readers, unscoped callers only, like `GET /api/v1/service-requests/{id}`.

use super::{ApiError, ApiState, filter};
use crate::exports::stream::{self, Export};
use crate::exports::{ExportError, Format, request, run, safe_filename};
use crate::identity::Principal;
use crate::metric_names::HUB_EXPORTS_TOTAL;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/runs/{id}/export.csv", get(run_csv))
        .route("/api/v1/runs/{id}/export.xlsx", get(run_xlsx))
        .route("/api/v1/runs/{id}/export.json", get(run_json))
        .route("/api/v1/service-requests/{id}/export.csv", get(request_csv))
        .route(
            "/api/v1/service-requests/{id}/export.xlsx",
            get(request_xlsx),
        )
        .route(
            "/api/v1/service-requests/{id}/export.json",
            get(request_json),
        )
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> ApiError {
        match e {
            ExportError::NotFound(m) => ApiError::not_found(m),
            ExportError::Invalid(m) => ApiError::bad_request(m),
            ExportError::TooLarge(m) => ApiError::new(StatusCode::CONFLICT, "too_large", m),
            ExportError::Db(e) => ApiError::unavailable(e),
            ExportError::Write(e) => ApiError::unavailable(e),
        }
    }
}

/// `?table=` of a CSV export.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CsvParams {
    table: Option<String>,
}

/// xlsx and JSON take no parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoParams {}

fn refused(kind: &'static str, format: Format, e: ExportError) -> ApiError {
    metrics::counter!(HUB_EXPORTS_TOTAL, "kind" => kind, "format" => format.as_str(), "outcome" => "refused")
        .increment(1);
    e.into()
}

/// Checks, then streams: every refusal comes before the first byte.
async fn send(
    s: &ApiState,
    kind: &'static str,
    format: Format,
    export: Result<Export, ExportError>,
    table: Option<String>,
    default_table: &str,
) -> Result<Response, ApiError> {
    let pool = s.store.pool().clone();
    let export = export.map_err(|e| refused(kind, format, e))?;
    let export = match format {
        Format::Csv => export
            .only(table.as_deref(), default_table)
            .map_err(|e| refused(kind, format, e))?,
        _ => export,
    };
    if format == Format::Xlsx {
        export
            .check_rows(&pool, s.exports.max_xlsx_rows)
            .await
            .map_err(|e| refused(kind, format, e))?;
    }
    let filename = match format {
        Format::Csv => safe_filename(
            &format!("{}-{}", export.stem, export.tables[0].spec.name),
            "csv",
        ),
        _ => safe_filename(&export.stem, format.as_str()),
    };
    let rx = stream::spawn(export, format, pool, kind);
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

async fn run_export(
    s: &ApiState,
    by: &Principal,
    id: &str,
    format: Format,
    table: Option<String>,
) -> Result<Response, ApiError> {
    let id = super::runs::run_id(id)?;
    let row = super::runs::visible(s, by, &id).await?;
    let export = run::export(s.store.pool(), row).await;
    send(s, "run", format, export, table, "readings").await
}

async fn run_csv(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<CsvParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    run_export(&s, &by, &id, Format::Csv, filter("table", q.table)?).await
}

async fn run_xlsx(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    q?;
    run_export(&s, &by, &id, Format::Xlsx, None).await
}

async fn run_json(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    q?;
    run_export(&s, &by, &id, Format::Json, None).await
}

async fn request_export(
    s: &ApiState,
    id: String,
    format: Format,
    table: Option<String>,
) -> Result<Response, ApiError> {
    let id =
        filter("id", Some(id))?.ok_or_else(|| ApiError::bad_request("`id` must not be empty"))?;
    let export = request::export(s.store.pool(), &id).await;
    send(s, "service_request", format, export, table, "runs").await
}

async fn request_csv(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<CsvParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    request_export(&s, id, Format::Csv, filter("table", q.table)?).await
}

async fn request_xlsx(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    q?;
    request_export(&s, id, Format::Xlsx, None).await
}

async fn request_json(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    q?;
    request_export(&s, id, Format::Json, None).await
}
