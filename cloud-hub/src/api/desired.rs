//! Desired state of instrument twins (`crate::desired`): set a writable
//! point, see desired beside reported, stop reconciling.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, filter};
use crate::desired::{self, DesiredError, SetRequest};
use crate::identity::Principal;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/twins/{id}/desired", get(list))
        .route("/api/v1/twins/{id}/desired/{point}", put(set).delete(clear))
}

impl From<DesiredError> for ApiError {
    fn from(e: DesiredError) -> Self {
        match e {
            DesiredError::NoTwin(_) | DesiredError::NoDesired(..) => {
                ApiError::not_found(e.to_string())
            }
            DesiredError::NotApplicable(m) => ApiError::conflict(m),
            DesiredError::Refused(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m)
            }
            DesiredError::Db(e) => e.into(),
            DesiredError::Audit(e) => e.into(),
            DesiredError::Store(e) => e.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetBody {
    value: f64,
    #[serde(default, deserialize_with = "super::params::present")]
    deadline_s: Option<i64>,
}

fn ids(id: String, point: Option<String>) -> Result<(String, Option<String>), ApiError> {
    // Any twin's id, as on the other twin routes: derived ids
    // ("gateway:<gateway id>") may be longer than a filter value.
    if id.is_empty()
        || id.chars().count() > crate::twins::model::MAX_TEXT_LEN
        || id.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request("not a twin id"));
    }
    let point = match point {
        Some(p) => {
            Some(filter("point", Some(p))?.ok_or_else(|| ApiError::bad_request("empty point"))?)
        }
        None => None,
    };
    Ok((id, point))
}

pub(super) async fn set(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path((id, point)): Path<(String, String)>,
    body: Result<JsonObject<SetBody>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let JsonObject(b) = body?;
    let (id, point) = ids(id, Some(point))?;
    let point = point.unwrap_or_default();
    let deadline_s = match b.deadline_s {
        None => desired::DEFAULT_DEADLINE_S,
        Some(d) => i32::try_from(d)
            .ok()
            .filter(|d| (1..=desired::MAX_DEADLINE_S).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`deadline_s` must be 1..={}",
                    desired::MAX_DEADLINE_S
                ))
            })?,
    };
    let row = desired::set(
        s.store.pool(),
        SetRequest {
            twin: &id,
            point: &point,
            value: b.value,
            deadline_s,
            by: &by,
            origin: &origin,
        },
    )
    .await?;
    s.live.publish(row.event("set"));
    Ok((StatusCode::ACCEPTED, Json(json!(row))))
}

pub(super) async fn list(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, _) = ids(id, None)?;
    match desired::list(&s.store, &s.live, &id).await? {
        Some(points) => Ok(Json(json!({"twin_id": id, "points": points}))),
        None => Err(ApiError::not_found(format!("no twin {id:?}"))),
    }
}

pub(super) async fn clear(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path((id, point)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (id, point) = ids(id, Some(point))?;
    let point = point.unwrap_or_default();
    let before = desired::clear(s.store.pool(), &id, &point, &by, &origin).await?;
    s.live.publish(before.event("cleared"));
    Ok(StatusCode::NO_CONTENT)
}
