//! Instrument calibration (`crate::calibration`): engineers record an
//! instrument twin's calibrations (ManageTwins: a calibration record is a
//! fact about an asset of the registry, like its attributes) and issue the
//! calibration certificate of one the lab did (IssueCertificates: it is
//! signed in the lab's name, like a test certificate); everyone signed in
//! reads them and the listing of what is due.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, parse_limit};
use crate::calibration::records::{self, NewCalibration};
use crate::calibration::{CalibrationError, due};
use crate::identity::Principal;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/twins/{id}/calibrations", get(list).post(record))
        .route("/api/v1/calibrations/due", get(due_list))
        .route("/api/v1/calibrations/{id}/certificate", post(certify))
}

impl From<CalibrationError> for ApiError {
    fn from(e: CalibrationError) -> ApiError {
        metrics::counter!(crate::metric_names::HUB_CALIBRATION_REFUSED_TOTAL, "reason" => e.reason())
            .increment(1);
        match e {
            CalibrationError::NotFound(m) => ApiError::not_found(m),
            CalibrationError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
            }
            CalibrationError::Refused(m) => ApiError::conflict(m),
            CalibrationError::Db(e) => ApiError::unavailable(e),
            CalibrationError::Audit(e) => ApiError::unavailable(e),
        }
    }
}

fn twin_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if id.is_empty()
        || id.chars().count() > crate::twins::model::MAX_TEXT_LEN
        || id.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request("not a twin id"));
    }
    Ok(id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    limit: Option<String>,
}

async fn list(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = params?;
    let id = twin_id(p)?;
    let limit = parse_limit(&q.limit, 100, s.max_page_size)?;
    let rows = records::list(s.store.pool(), &id, limit).await?;
    let status = records::twin_status(s.store.pool(), &id, s.calibration.warn_days).await?;
    Ok(Json(
        json!({"twin_id": id, "status": status, "count": rows.len(), "calibrations": rows}),
    ))
}

async fn record(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    p: Result<Path<String>, PathRejection>,
    JsonObject(body): JsonObject<NewCalibration>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = twin_id(p)?;
    let c = records::record(
        s.store.pool(),
        &id,
        &body,
        &s.certificates.lab_name,
        &by,
        &origin,
    )
    .await?;
    let status = records::twin_status(s.store.pool(), &id, s.calibration.warn_days).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"calibration": c, "status": status})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DueParams {
    within_days: Option<String>,
    limit: Option<String>,
}

async fn due_list(
    State(s): State<ApiState>,
    params: Result<Query<DueParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = params?;
    let within = match q.within_days.as_deref() {
        None => s.calibration.warn_days,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= due::MAX_WITHIN_DAYS)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`within_days` must be an integer from 0 to {}; got {v:?}",
                    due::MAX_WITHIN_DAYS
                ))
            })?,
    };
    let limit = parse_limit(&q.limit, 100, s.max_page_size)?;
    let items = due::list(s.store.pool(), within, s.calibration.warn_days, limit).await?;
    Ok(Json(
        json!({"within_days": within, "count": items.len(), "due": items}),
    ))
}

async fn certify(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    p: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Path(raw) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::bad_request("a calibration id is a positive integer"))?;
    let c =
        crate::certificates::calibration::issue(s.store.pool(), &s.certificates, &by, &origin, id)
            .await?;
    Ok((StatusCode::CREATED, Json(json!({"certificate": c}))))
}
