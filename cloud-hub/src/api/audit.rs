//! The audit trail, newest first, with filters and keyset pagination
//! (`before_id` = the last id of the previous page).

use super::{ApiError, ApiState, filter, parse_limit, parse_time};
use crate::audit::{self, AuditQuery};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    gateway: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before_id: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list(
    State(s): State<ApiState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params?;
    let before_id = p
        .before_id
        .as_deref()
        .map(|v| v.parse::<i64>().ok().filter(|n| *n >= 1))
        .map(|v| v.ok_or_else(|| ApiError::bad_request("`before_id` must be a positive integer")))
        .transpose()?;
    let q = AuditQuery {
        actor: filter("actor", p.actor)?,
        action: filter("action", p.action)?,
        target: filter("target", p.target)?,
        gateway: filter("gateway", p.gateway)?,
        from: parse_time("from", &p.from)?,
        to: parse_time("to", &p.to)?,
        before_id,
        limit: parse_limit(&p.limit, 100, s.max_page_size)?,
    };
    let entries = audit::query(&s.identity.pool, &q).await?;
    let next = if entries.len() as i64 == q.limit {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(
        json!({"count": entries.len(), "entries": entries, "next_before_id": next}),
    ))
}
