//! Stored readings and the devices that sent them.

use super::{ApiError, ApiState, filter, parse_limit, parse_time};
use crate::storage::ReadingQuery;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;

/// Every parameter arrives as text so that a bad value gets our message, not serde's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsParams {
    gateway: Option<String>,
    device: Option<String>,
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    order: Option<String>,
}

pub(super) async fn readings(
    State(s): State<ApiState>,
    params: Result<Query<ReadingsParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params?;
    let from = parse_time("from", &p.from)?;
    let to = parse_time("to", &p.to)?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::bad_request(format!(
            "`from` ({f}) must be before `to` ({t})"
        )));
    }
    let ascending = match p.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "`order` must be asc or desc; got {o:?}"
            )));
        }
    };
    let q = ReadingQuery {
        gateway: filter("gateway", p.gateway)?,
        device: filter("device", p.device)?,
        metric: filter("metric", p.metric)?,
        from,
        to,
        limit: parse_limit(&p.limit, 100, s.max_page_size)?,
        ascending,
    };
    let rows = s.store.query_readings(&q).await?;
    Ok(Json(
        json!({"count": rows.len(), "limit": q.limit, "readings": rows}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesParams {
    gateway: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

pub(super) async fn devices(
    State(s): State<ApiState>,
    params: Result<Query<DevicesParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params?;
    let limit = parse_limit(&p.limit, 1000, s.max_page_size)?;
    let offset = match p.offset.as_deref() {
        None => 0,
        Some(o) => o.parse::<u32>().map(i64::from).map_err(|_| {
            ApiError::bad_request(format!(
                "`offset` must be a non-negative integer; got {o:?}"
            ))
        })?,
    };
    let gateway = filter("gateway", p.gateway)?;
    let rows = s
        .store
        .list_devices(gateway.as_deref(), limit, offset)
        .await?;
    Ok(Json(
        json!({"count": rows.len(), "limit": limit, "offset": offset, "devices": rows}),
    ))
}
