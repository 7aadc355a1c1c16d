//! The lab work flow's REST operations: service requests, their samples,
//! inspections and photos. The rules live in `crate::lab`; this room parses
//! requests, commits, and counts.

use super::guard::ReqOrigin;
use super::idempotent;
use super::params::JsonObject;
use super::twins::{if_match, with_etag};
use super::{ApiError, ApiState, filter, parse_limit};
use crate::identity::Principal;
use crate::lab::inspections::{self, NewInspection};
use crate::lab::requests::{self, NewRequest, NewSample, State as RequestState};
use crate::lab::{LabError, photos};
use crate::twins::Actor;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/v1/service-requests",
            get(list_requests).post(create_request),
        )
        .route("/api/v1/service-requests/{id}", get(read_request))
        .route(
            "/api/v1/service-requests/{id}/transitions",
            post(transition),
        )
        .route("/api/v1/service-requests/{id}/samples", post(add_sample))
        .route(
            "/api/v1/samples/{id}/inspections",
            get(list_inspections).post(create_inspection),
        )
        .route("/api/v1/inspections/{id}", get(read_inspection))
        .route(
            "/api/v1/inspections/{id}/photos",
            // The photo's own limit (`lab.max_photo_bytes`) applies in the handler.
            post(add_photo).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/inspections/{id}/photos/{no}", get(photo))
}

impl From<LabError> for ApiError {
    fn from(e: LabError) -> ApiError {
        metrics::counter!(crate::metric_names::HUB_LAB_REFUSED_TOTAL, "reason" => e.reason())
            .increment(1);
        match e {
            LabError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            LabError::NotFound(m) => ApiError::not_found(m),
            LabError::Conflict(m) => ApiError::conflict(m),
            e @ LabError::Stale { .. } => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "stale", e.to_string())
            }
            LabError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            LabError::Unsupported(m) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m,
            ),
            LabError::Twin(e) => e.into(),
            LabError::Db(e) => ApiError::unavailable(e),
            LabError::Audit(e) => ApiError::unavailable(e),
        }
    }
}

fn written(action: &'static str) {
    metrics::counter!(crate::metric_names::HUB_LAB_WRITES_TOTAL, "action" => action).increment(1);
}

fn text_id(p: Result<Path<String>, PathRejection>, what: &str) -> Result<String, ApiError> {
    let Path(id) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    filter(what, Some(id.clone()))?
        .ok_or_else(|| ApiError::bad_request(format!("`{what}` must not be empty")))
}

fn number_id(p: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let Path(id) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_request("an inspection id is a positive integer"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    customer: Option<String>,
    external_ref: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

async fn list_requests(
    State(s): State<ApiState>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state = match p.state.as_deref() {
        None => None,
        Some(x) => Some(RequestState::parse(x).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`state` must be one of {:?}",
                RequestState::ALL.map(RequestState::as_str)
            ))
        })?),
    };
    let customer = filter("customer", p.customer)?;
    let external_ref = filter("external_ref", p.external_ref)?;
    let after = filter("after", p.after)?;
    let limit = parse_limit(&p.limit, 100, s.max_page_size)?;
    let items = requests::list(
        s.store.pool(),
        state,
        customer.as_deref(),
        external_ref.as_deref(),
        after.as_deref(),
        limit,
    )
    .await?;
    let next = if items.len() as i64 == limit {
        items.last().map(|r| r.request_id.clone())
    } else {
        None
    };
    Ok(Json(
        json!({"count": items.len(), "service_requests": items, "next_after": next}),
    ))
}

async fn create_request(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    headers: HeaderMap,
    body: Result<JsonObject<NewRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let key = idempotent::key(&headers)?;
    let JsonObject(n) = body?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let op = "service_request.create";
    let mut tx = s.store.pool().begin().await?;
    if let Some(replay) = idempotent::claim(&mut tx, &by, op, key.as_deref(), &n).await? {
        return Ok(replay);
    }
    let r = requests::create(&mut tx, n, &actor).await?;
    let answer = idempotent::record(&mut tx, &by, op, key.as_deref(), r.etag(), json!(r)).await?;
    tx.commit().await?;
    written(op);
    Ok(answer)
}

async fn read_request(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = text_id(p, "id")?;
    let pool = s.store.pool();
    let mut conn = pool.acquire().await?;
    let r = requests::get(&mut conn, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no service request {id:?}")))?;
    drop(conn);
    let samples = requests::samples(pool, &id).await?;
    let transitions = requests::transitions(pool, &id).await?;
    // Where the work stands: each sample's runs, newest first, with the
    // verdict that stands (approved, or as evaluated).
    let mut runs = serde_json::Map::new();
    let mut plans = serde_json::Map::new();
    for sample in &samples {
        let listed = crate::runs::query::list(
            pool,
            &crate::runs::query::RunFilter {
                sample: Some(sample.clone()),
                limit: i64::from(s.max_page_size),
                ..Default::default()
            },
        )
        .await?;
        let brief: Vec<_> = listed
            .iter()
            .map(|l| {
                json!({"run_id": l.run.run_id, "protocol_id": l.run.protocol_id,
                       "bench_id": l.run.bench_id, "state": l.run.state,
                       "started_at": l.run.started_at, "ended_at": l.run.ended_at,
                       "verdict": l.verdict})
            })
            .collect();
        // The listing is newest first; the plan matches oldest first.
        let done: Vec<crate::lab::plan::DoneRun> = listed
            .iter()
            .rev()
            .map(|l| crate::lab::plan::DoneRun {
                protocol_id: l.run.protocol_id.clone().unwrap_or_default(),
                run_id: l.run.run_id.clone(),
                state: l.run.state.clone(),
                verdict: l.verdict.clone(),
            })
            .collect();
        plans.insert(
            sample.clone(),
            json!(crate::lab::plan::plan(&r.protocols, &done)),
        );
        runs.insert(sample.clone(), json!(brief));
    }
    let mut body = json!(r);
    body["samples"] = json!(samples);
    body["runs"] = serde_json::Value::Object(runs);
    body["plan"] = serde_json::Value::Object(plans);
    body["transitions"] = json!(transitions);
    Ok(with_etag(r.etag(), StatusCode::OK, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionBody {
    to: RequestState,
    #[serde(default)]
    comment: String,
}

async fn transition(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Result<JsonObject<TransitionBody>, ApiError>,
) -> Result<Response, ApiError> {
    let id = text_id(p, "id")?;
    let JsonObject(b) = body?;
    let expected = if_match(&headers)?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.store.pool().begin().await?;
    let r = requests::transition(&mut tx, &id, b.to, &b.comment, expected, &actor).await?;
    tx.commit().await?;
    written("service_request.transition");
    Ok(with_etag(r.etag(), StatusCode::OK, json!(r)))
}

async fn add_sample(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Result<JsonObject<NewSample>, ApiError>,
) -> Result<Response, ApiError> {
    let id = text_id(p, "id")?;
    let key = idempotent::key(&headers)?;
    let JsonObject(n) = body?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    // Per request: the same key may add a sample to each of two requests.
    let op = format!("service_request.add_sample:{id}");
    let mut tx = s.store.pool().begin().await?;
    if let Some(replay) = idempotent::claim(&mut tx, &by, &op, key.as_deref(), &n).await? {
        return Ok(replay);
    }
    let t = requests::add_sample(&mut tx, &id, n, &actor).await?;
    let answer = idempotent::record(&mut tx, &by, &op, key.as_deref(), t.etag(), json!(t)).await?;
    tx.commit().await?;
    written("service_request.add_sample");
    Ok(answer)
}

async fn list_inspections(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = text_id(p, "id")?;
    let mut conn = s.store.pool().acquire().await?;
    inspections::require_sample(&mut conn, &id).await?;
    drop(conn);
    let items = inspections::of_sample(s.store.pool(), &id).await?;
    Ok(Json(json!({"count": items.len(), "inspections": items})))
}

async fn create_inspection(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    p: Result<Path<String>, PathRejection>,
    body: Result<JsonObject<NewInspection>, ApiError>,
) -> Result<Response, ApiError> {
    let id = text_id(p, "id")?;
    let JsonObject(n) = body?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.store.pool().begin().await?;
    let i = inspections::create(&mut tx, &id, n, &actor).await?;
    tx.commit().await?;
    written("inspection.create");
    // A stress run's `after.major_visual_defects` may be this inspection:
    // its verdict is brought up to date before the answer, so the caller
    // sees it next. A failure leaves the inspection recorded; an engineer's
    // `POST /api/v1/runs/{id}/evaluate` does it again.
    if let Err(e) = crate::runs::evaluation::reevaluate_sample(
        s.store.pool(),
        &id,
        &inspections::target(i.inspection_id),
        None,
    )
    .await
    {
        tracing::warn!(sample = %id, error = %e, "re-evaluating the sample's runs after an inspection failed");
    }
    Ok((StatusCode::CREATED, Json(json!(i))).into_response())
}

async fn read_inspection(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = number_id(p)?;
    let i = inspections::get(s.store.pool(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no inspection {id}")))?;
    let photos = photos::list(s.store.pool(), id).await?;
    let mut body = json!(i);
    body["photos"] = json!(photos);
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhotoParams {
    caption: Option<String>,
}

async fn add_photo(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<PhotoParams>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = number_id(p)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limits = photos::Limits::from(&s.lab);
    // Read one byte past the limit so an oversized upload is told apart
    // from one exactly at it, without holding more.
    let bytes = axum::body::to_bytes(body, limits.max_bytes + 1)
        .await
        .map_err(|_| {
            ApiError::from(LabError::TooLarge(format!(
                "the photo is larger than {} bytes (`lab.max_photo_bytes`)",
                limits.max_bytes
            )))
        })?;
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.store.pool().begin().await?;
    let photo = photos::add(
        &mut tx,
        id,
        &bytes,
        declared,
        q.caption.as_deref().unwrap_or(""),
        limits,
        &actor,
    )
    .await?;
    tx.commit().await?;
    written("inspection.add_photo");
    Ok((StatusCode::CREATED, Json(json!(photo))).into_response())
}

async fn photo(
    State(s): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((id, no)) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (Ok(id), Ok(no)) = (id.parse::<i64>(), no.parse::<i32>()) else {
        return Err(ApiError::bad_request(
            "an inspection id and a photo number are positive integers",
        ));
    };
    let (content_type, bytes) = photos::bytes(s.store.pool(), id, no)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no photo {no} of inspection {id}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            // Never sniffed into something a browser would run.
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        bytes,
    )
        .into_response())
}
