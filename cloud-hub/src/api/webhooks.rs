//! Outbound webhooks (`crate::webhooks`) and non-conformances
//! (`crate::nonconformance`): admins manage subscriptions and replay dead
//! letters; everyone signed in reads non-conformances, engineers close them.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, filter, parse_limit};
use crate::identity::Principal;
use crate::nonconformance;
use crate::webhooks::subscriptions::{self, NewSubscription};
use crate::webhooks::target::Policy;
use crate::webhooks::{WebhookError, dead_letters};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route("/api/v1/webhooks/{id}", delete(remove))
        .route("/api/v1/webhooks/dead-letters", get(dead))
        .route("/api/v1/webhooks/dead-letters/{id}/replay", post(replay))
        .route("/api/v1/nonconformances", get(list_nc))
        .route("/api/v1/nonconformances/{id}", get(one_nc))
        .route("/api/v1/nonconformances/{id}/close", post(close_nc))
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> ApiError {
        metrics::counter!(crate::metric_names::HUB_WEBHOOKS_REFUSED_TOTAL, "reason" => e.reason())
            .increment(1);
        match e {
            WebhookError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
            }
            WebhookError::Target(m) => ApiError::new(StatusCode::FORBIDDEN, "target_refused", m),
            WebhookError::NotFound(m) => ApiError::not_found(m),
            WebhookError::Conflict(m) => ApiError::conflict(m),
            WebhookError::Db(e) => ApiError::unavailable(e),
            WebhookError::Audit(e) => ApiError::unavailable(e),
        }
    }
}

fn refused(reason: &'static str, e: ApiError) -> ApiError {
    metrics::counter!(crate::metric_names::HUB_WEBHOOKS_REFUSED_TOTAL, "reason" => reason)
        .increment(1);
    e
}

/// A positive integer id from the path.
fn int_id(v: &str, what: &str) -> Result<i64, ApiError> {
    v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        refused(
            "bad_id",
            ApiError::bad_request(format!("`{what}` must be a positive integer")),
        )
    })
}

async fn list(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let subs = subscriptions::list(s.store.pool()).await?;
    Ok(Json(json!({"count": subs.len(), "subscriptions": subs})))
}

async fn create(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    JsonObject(n): JsonObject<NewSubscription>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let policy = Policy {
        allow_http: s.webhooks.allow_http,
        allow_private: s.webhooks.allow_private_targets,
    };
    let (sub, secret) = subscriptions::create(s.store.pool(), n, policy, &by, &origin).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"subscription": sub, "secret": secret})),
    ))
}

async fn remove(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = int_id(&id, "id")?;
    subscriptions::delete(s.store.pool(), id, &by, &origin).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageParams {
    after: Option<String>,
    limit: Option<String>,
}

fn after(v: &Option<String>) -> Result<i64, ApiError> {
    v.as_deref()
        .map(|a| {
            a.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request("`after` must be a non-negative integer (next_after)")
            })
        })
        .transpose()
        .map(|a| a.unwrap_or(0))
}

async fn dead(
    State(s): State<ApiState>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    let limit = parse_limit(&p.limit, 100, s.max_page_size)?;
    let rows = dead_letters::list(s.store.pool(), after(&p.after)?, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.delivery_id))
        .flatten();
    Ok(Json(
        json!({"count": rows.len(), "dead_letters": rows, "next_after": next}),
    ))
}

async fn replay(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = int_id(&id, "id")?;
    let d = dead_letters::replay(s.store.pool(), id, &by, &origin).await?;
    Ok(Json(json!({"delivery": d})))
}

/// A non-conformance id as the hub makes them: `NC-<year>-<number>`.
fn nc_id(v: &str) -> Result<String, ApiError> {
    let ok = !v.is_empty()
        && v.len() <= nonconformance::MAX_ID_LEN
        && v.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(v.to_string())
    } else {
        Err(refused(
            "bad_id",
            ApiError::bad_request(
                "a non-conformance id is like NC-2026-000001 (A-Z, 0-9 and -, at most 40)",
            ),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NcParams {
    state: Option<String>,
    run: Option<String>,
    service_request: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

async fn list_nc(
    State(s): State<ApiState>,
    params: Result<Query<NcParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    if p.state.as_deref() == Some("") {
        return Err(ApiError::bad_request("`state` must not be empty"));
    }
    let state = filter("state", p.state)?;
    if let Some(st) = &state
        && !nonconformance::STATES.contains(&st.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`state` must be one of {}",
            nonconformance::STATES.join(", ")
        )));
    }
    let after = after(&p.after)?;
    let f = nonconformance::Filter {
        state,
        run: filter("run", p.run)?,
        service_request: filter("service_request", p.service_request)?,
        after: Some(after),
        limit: parse_limit(&p.limit, 100, s.max_page_size)?,
    };
    let rows = nonconformance::list(s.store.pool(), &f).await?;
    let next = (rows.len() as i64 == f.limit)
        .then(|| rows.last().map(|r| r.nc_no))
        .flatten();
    Ok(Json(
        json!({"count": rows.len(), "nonconformances": rows, "next_after": next}),
    ))
}

async fn one_nc(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = nc_id(&id)?;
    let nc = nonconformance::get(s.store.pool(), &id)
        .await?
        .ok_or_else(|| {
            refused(
                "not_found",
                ApiError::not_found(format!("no non-conformance {id}")),
            )
        })?;
    Ok(Json(json!({"nonconformance": nc})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloseBody {
    comment: String,
}

async fn close_nc(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
    JsonObject(b): JsonObject<CloseBody>,
) -> Result<Json<Value>, ApiError> {
    let id = nc_id(&id)?;
    let nc = nonconformance::close(s.store.pool(), &id, &b.comment, &by, &origin).await?;
    Ok(Json(json!({"nonconformance": nc})))
}
