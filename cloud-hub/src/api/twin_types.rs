//! Twin types (models) over REST: read by anyone who reads data, written by
//! engineers; types made from firmware profiles are read-only here.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::twins::{if_match, with_etag};
use super::{ApiError, ApiState, parse_limit};
use crate::identity::Principal;
use crate::twins::types::{self, NewType};
use crate::twins::{Actor, model};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/twin-types", get(list).post(create))
        .route(
            "/api/v1/twin-types/{id}",
            get(read).put(replace).delete(remove),
        )
}

fn type_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if id.is_empty() || id.chars().count() > model::MAX_TEXT_LEN || id.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request("not a type id"));
    }
    Ok(id)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    kind: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(s): State<ApiState>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q?;
    if let Some(k) = &p.kind
        && model::Kind::parse(k).is_none()
    {
        return Err(ApiError::bad_request(
            "`kind` must be site, area, bench, gateway, instrument or sample",
        ));
    }
    if p.after
        .as_ref()
        .is_some_and(|a| a.chars().count() > model::MAX_TEXT_LEN || a.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("`after` is not a type id"));
    }
    let limit = parse_limit(&p.limit, 100, s.max_page_size.min(1000))?;
    let rows = types::list(
        &s.identity.pool,
        p.kind.as_deref(),
        p.after.as_deref(),
        limit,
    )
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|t| t.type_id.clone()))
        .flatten();
    Ok(Json(
        json!({"count": rows.len(), "types": rows, "next_after": next}),
    ))
}

async fn read(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = type_id(p)?;
    let mut conn = s.identity.pool.acquire().await?;
    let t = types::get(&mut conn, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no twin type {id:?}")))?;
    Ok(with_etag(t.etag(), StatusCode::OK, json!(t)))
}

async fn create(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    body: Result<JsonObject<NewType>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonObject(n) = body?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.identity.pool.begin().await?;
    let t = types::create(&mut tx, n, &actor).await?;
    tx.commit().await?;
    metrics::counter!(crate::metric_names::HUB_TWIN_WRITES_TOTAL, "action" => "twin_type.create")
        .increment(1);
    Ok(with_etag(t.etag(), StatusCode::CREATED, json!(t)))
}

async fn replace(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Result<JsonObject<NewType>, ApiError>,
) -> Result<Response, ApiError> {
    let id = type_id(p)?;
    let JsonObject(n) = body?;
    if n.type_id != id {
        return Err(ApiError::bad_request(format!(
            "the body's type_id {:?} is not the path's {id:?}",
            n.type_id
        )));
    }
    let expected = if_match(&headers)?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.identity.pool.begin().await?;
    let t = types::replace(&mut tx, n, expected, &actor).await?;
    tx.commit().await?;
    metrics::counter!(crate::metric_names::HUB_TWIN_WRITES_TOTAL, "action" => "twin_type.update")
        .increment(1);
    Ok(with_etag(t.etag(), StatusCode::OK, json!(t)))
}

async fn remove(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    p: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = type_id(p)?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.identity.pool.begin().await?;
    types::delete(&mut tx, &id, &actor).await?;
    tx.commit().await?;
    metrics::counter!(crate::metric_names::HUB_TWIN_WRITES_TOTAL, "action" => "twin_type.delete")
        .increment(1);
    Ok(StatusCode::NO_CONTENT)
}
