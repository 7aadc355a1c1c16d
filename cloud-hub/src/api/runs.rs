//! Protocol runs (`crate::runs`): everyone reads runs, their events, raw
//! readings and evaluations; engineers re-evaluate and decide provisional
//! verdicts. Every route narrows to the caller's sites itself (scope
//! `filtered`): a run of a gateway outside them answers 404, as if absent.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, filter, parse_limit};
use crate::identity::Principal;
use crate::runs::approval::Decision;
use crate::runs::query::{self, RUN_STATES, RunFilter};
use crate::runs::{RunError, RunRow};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/runs", get(list))
        .route("/api/v1/runs/{id}", get(one))
        .route("/api/v1/runs/{id}/events", get(events))
        .route("/api/v1/runs/{id}/readings", get(readings))
        .route("/api/v1/runs/{id}/evaluate", post(evaluate))
        .route("/api/v1/runs/{id}/approval", post(approval))
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        match e {
            RunError::NotFound(m) => ApiError::not_found(m),
            RunError::Conflict(m) => ApiError::conflict(m),
            RunError::Forbidden(m) => ApiError::forbidden(m),
            RunError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            e @ RunError::Template(_) => ApiError::conflict(e.to_string()),
            RunError::Db(e) => ApiError::unavailable(e),
            RunError::Audit(e) => ApiError::unavailable(e),
        }
    }
}

pub(super) fn run_id(v: &str) -> Result<String, ApiError> {
    if crate::runs::validate::valid_run_id(v) {
        Ok(v.to_string())
    } else {
        Err(ApiError::bad_request(
            "a run id is a lowercase hyphenated UUID (0b7c2a4e-9f1d-4c3b-8a2e-5d6f7a8b9c0d)",
        ))
    }
}

/// The run, if it exists and lies in the caller's sites.
pub(super) async fn visible(s: &ApiState, by: &Principal, id: &str) -> Result<RunRow, ApiError> {
    let pool = s.store.pool();
    let run = query::run(pool, id).await?;
    let missing = || ApiError::not_found(format!("no run {id} (or not in your sites)"));
    let run = run.ok_or_else(missing)?;
    if let Some(allowed) = &by.sites {
        let placed =
            crate::identity::sites::of_gateways(pool, std::slice::from_ref(&run.gateway_id))
                .await?;
        if !placed
            .get(&run.gateway_id)
            .is_some_and(|site| allowed.contains(site))
        {
            return Err(missing());
        }
    }
    Ok(run)
}

fn positive(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|x| {
        x.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}` must be a non-negative integer (the previous page's next_{name})"
            ))
        })
    })
    .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    sample: Option<String>,
    bench: Option<String>,
    gateway: Option<String>,
    protocol: Option<String>,
    state: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    // An empty state is not one of the states (the document's enum).
    if p.state.as_deref() == Some("") {
        return Err(ApiError::bad_request("`state` must not be empty"));
    }
    let state = filter("state", p.state)?;
    if let Some(st) = &state
        && !RUN_STATES.contains(&st.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`state` must be one of {}",
            RUN_STATES.join(", ")
        )));
    }
    let f = RunFilter {
        sample: filter("sample", p.sample)?,
        bench: filter("bench", p.bench)?,
        gateway: filter("gateway", p.gateway)?,
        protocol: filter("protocol", p.protocol)?,
        state,
        sites: by.sites.clone(),
        before: positive("before", p.before.as_deref())?,
        limit: parse_limit(&p.limit, 100, s.max_page_size)?,
    };
    let runs = query::list(s.store.pool(), &f).await?;
    let next = (runs.len() as i64 == f.limit)
        .then(|| runs.last().map(|r| r.run_no))
        .flatten();
    Ok(Json(
        json!({"count": runs.len(), "runs": runs, "next_before": next}),
    ))
}

async fn one(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = run_id(&id)?;
    let run = visible(&s, &by, &id).await?;
    let pool = s.store.pool();
    let steps = query::steps(pool, &id).await?;
    let evaluation = query::latest_evaluation(pool, &id).await?;
    let series = query::series(pool, &id).await?;
    Ok(Json(json!({
        "run": run,
        "steps": steps,
        "series": series,
        "evaluation": evaluation,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventParams {
    after_seq: Option<String>,
    limit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadingParams {
    after_seq: Option<String>,
    limit: Option<String>,
    series: Option<String>,
}

async fn events(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    let id = run_id(&id)?;
    let after = positive("after_seq", p.after_seq.as_deref())?.unwrap_or(0);
    let limit = parse_limit(&p.limit, 1000, s.max_page_size)?;
    visible(&s, &by, &id).await?;
    let rows = query::events(s.store.pool(), &id, after, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(
        json!({"run_id": id, "count": rows.len(), "events": rows, "next_after_seq": next}),
    ))
}

async fn readings(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
    params: Result<Query<ReadingParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    let id = run_id(&id)?;
    let series = filter("series", p.series)?;
    let after = positive("after_seq", p.after_seq.as_deref())?.unwrap_or(0);
    let limit = parse_limit(&p.limit, 1000, s.max_page_size)?;
    visible(&s, &by, &id).await?;
    let rows = query::readings(s.store.pool(), &id, series.as_deref(), after, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(
        json!({"run_id": id, "count": rows.len(), "readings": rows, "next_after_seq": next}),
    ))
}

async fn evaluate(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = run_id(&id)?;
    visible(&s, &by, &id).await?;
    let o = crate::runs::evaluate(s.store.pool(), &id, "api", &by.id, true).await?;
    Ok(Json(json!({
        "evaluation": o.evaluation,
        "matches_previous": o.evaluation.matches_previous,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalBody {
    decision: Decision,
    #[serde(default)]
    comment: String,
}

async fn approval(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
    JsonObject(b): JsonObject<ApprovalBody>,
) -> Result<Json<Value>, ApiError> {
    let id = run_id(&id)?;
    visible(&s, &by, &id).await?;
    let e =
        crate::runs::approval::decide(s.store.pool(), &id, &by, &origin, b.decision, &b.comment)
            .await?;
    Ok(Json(json!({"evaluation": e})))
}
