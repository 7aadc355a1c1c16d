//! The twin registry's REST operations: twins, their graph and state. The
//! rules live in `crate::twins`; this room parses requests, checks sites,
//! commits, and tells live subscribers what changed.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, parse_limit, parse_time};
use crate::identity::{Principal, sites};
use crate::live::EventBody;
use crate::twins::graph::{self, Direction, NewRelation};
use crate::twins::search::{self, Cursor, Filter, SortKey};
use crate::twins::store::{self, NewTwin, Twin, TwinPatch};
use crate::twins::{Actor, model, state, types};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/twins", get(list).post(create))
        .route("/api/v1/twins/{id}", get(read).patch(update).delete(remove))
        .route("/api/v1/twins/{id}/ancestors", get(ancestors))
        .route("/api/v1/twins/{id}/descendants", get(descendants))
        .route("/api/v1/twins/{id}/relations", get(relations))
        .route("/api/v1/twins/{id}/history", get(history))
        .route("/api/v1/relations", post(relate))
        .route("/api/v1/relations/{id}", delete(end_relation))
}

/// The version an `If-Match` header names (`"3"`, `W/"3"` or `*`).
pub(super) fn if_match(h: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = h.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s == "*" {
        return Ok(None);
    }
    s.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "If-Match must be the ETag of a previous answer (e.g. \"3\"); got {:?}",
                s.chars().take(40).collect::<String>()
            ))
        })
}

pub(super) fn with_etag(etag: String, status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// Refuses unless every named twin lies in one of a site-limited caller's
/// sites (unscoped callers pass).
pub(super) async fn require_sites(
    s: &ApiState,
    by: &Principal,
    ids: &[&str],
) -> Result<(), ApiError> {
    let Some(allowed) = &by.sites else {
        return Ok(());
    };
    for id in ids {
        let site = sites::of_twin(&s.identity.pool, id).await?;
        if !site.is_some_and(|x| allowed.contains(&x)) {
            metrics::counter!(crate::metric_names::HUB_API_AUTH_FAILURES_TOTAL, "reason" => "site")
                .increment(1);
            return Err(ApiError::forbidden(format!(
                "{} is limited to sites {allowed:?}; twin {id:?} is not in one of them",
                by.id
            )));
        }
    }
    Ok(())
}

fn twin_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if id.is_empty() || id.chars().count() > model::MAX_TEXT_LEN || id.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request("not a twin id"));
    }
    Ok(id)
}

fn published(s: &ApiState, t: &Twin, change: &str) {
    metrics::counter!(crate::metric_names::HUB_TWIN_WRITES_TOTAL, "action" => format!("twin.{change}"))
        .increment(1);
    s.live.publish(EventBody::Twin {
        twin_id: t.twin_id.clone(),
        kind: t.kind.clone(),
        change: change.to_string(),
        version: t.version,
    });
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    kind: Option<String>,
    #[serde(rename = "type")]
    type_id: Option<String>,
    within: Option<String>,
    attr: Option<String>,
    q: Option<String>,
    bbox: Option<String>,
    near: Option<String>,
    radius_m: Option<String>,
    discovered: Option<String>,
    deleted: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

fn numbers(name: &str, v: &str, n: usize) -> Result<Vec<f64>, ApiError> {
    let xs: Vec<f64> = v
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ApiError::bad_request(format!("`{name}` must be {n} numbers separated by commas"))
        })?;
    if xs.len() != n || xs.iter().any(|x| !x.is_finite()) {
        return Err(ApiError::bad_request(format!(
            "`{name}` must be {n} finite numbers separated by commas"
        )));
    }
    Ok(xs)
}

fn boolean(name: &str, v: &Option<String>) -> Result<Option<bool>, ApiError> {
    match v.as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{name}` must be true or false"
        ))),
    }
}

/// A `kind` filter: one of the twin kinds.
fn twin_kind(v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(k) if model::Kind::parse(&k).is_none() => Err(ApiError::bad_request(
            "`kind` must be site, area, bench, gateway, instrument or sample",
        )),
        v => Ok(v),
    }
}

fn short(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s)
            if s.chars().count() > model::MAX_QUERY_TEXT_LEN || s.chars().any(char::is_control) =>
        {
            Err(ApiError::bad_request(format!(
                "`{name}` must be at most {} printable characters",
                model::MAX_QUERY_TEXT_LEN
            )))
        }
        v => Ok(v),
    }
}

async fn list(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q?;
    let kind = twin_kind(p.kind)?;
    let attributes = match short("attr", p.attr)? {
        None => None,
        Some(a) => {
            let (k, v) = a.split_once(':').ok_or_else(|| {
                ApiError::bad_request("`attr` must be name:value (value as JSON, or text)")
            })?;
            let v = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.into()));
            if model::has_nul(&v) {
                return Err(ApiError::bad_request("`attr` holds a NUL character"));
            }
            Some(json!({ k: v }))
        }
    };
    let bbox = match short("bbox", p.bbox)? {
        None => None,
        Some(b) => {
            let x = numbers("bbox", &b, 4)?;
            model::check_location(Some(x[0]), Some(x[1]))
                .and(model::check_location(Some(x[2]), Some(x[3])))
                .map_err(|e| {
                    ApiError::bad_request(format!("bbox (min_lat,min_lon,max_lat,max_lon): {e}"))
                })?;
            Some((x[0], x[1], x[2], x[3]))
        }
    };
    let near = match (short("near", p.near)?, p.radius_m) {
        (None, None) => None,
        (Some(n), Some(r)) => {
            let x = numbers("near", &n, 2)?;
            model::check_location(Some(x[0]), Some(x[1]))
                .map_err(|e| ApiError::bad_request(format!("near (lat,lon): {e}")))?;
            let r = numbers("radius_m", &r, 1)?[0];
            if !(0.0..=20_100_000.0).contains(&r) {
                return Err(ApiError::bad_request("`radius_m` must be 0..=20100000"));
            }
            Some((x[0], x[1], r))
        }
        _ => {
            return Err(ApiError::bad_request(
                "give `near=lat,lon` together with `radius_m`",
            ));
        }
    };
    let (sort, desc) = match p.sort.as_deref() {
        None => (SortKey::Id, false),
        Some(v) => SortKey::parse(v).ok_or_else(|| {
            ApiError::bad_request(
                "`sort` must be twin_id, name, created_at or updated_at, with - for descending",
            )
        })?,
    };
    let cursor = match p.cursor.as_deref() {
        None => None,
        Some(c) => {
            let c = (c.len() <= model::MAX_CURSOR_LEN)
                .then(|| Cursor::decode(c))
                .flatten()
                .filter(|c| {
                    matches!(sort, SortKey::Id | SortKey::Name)
                        || chrono::DateTime::parse_from_rfc3339(&c.key).is_ok()
                });
            Some(c.ok_or_else(|| {
                ApiError::bad_request(
                    "`cursor` must be the `next` of a previous page with the same sort",
                )
            })?)
        }
    };
    let limit = parse_limit(&p.limit, 100, s.max_page_size.min(1000))?;
    let f = Filter {
        kind,
        type_id: short("type", p.type_id)?,
        within: short("within", p.within)?,
        sites: by.sites.clone(),
        attributes,
        text: short("q", p.q)?,
        bbox,
        near,
        discovered: boolean("discovered", &p.discovered)?,
        include_deleted: boolean("deleted", &p.deleted)?.unwrap_or(false),
    };
    let page = search::list(&s.identity.pool, &f, sort, desc, cursor.as_ref(), limit).await?;
    Ok(Json(json!({
        "count": page.twins.len(),
        "twins": page.twins,
        "next": page.next,
    })))
}

async fn create(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    body: Result<JsonObject<NewTwin>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonObject(n) = body?;
    if by.sites.is_some() {
        let parent = n.parent.as_deref().ok_or_else(|| {
            ApiError::forbidden(
                "a site-limited caller must place a new twin (`parent`) in one of its sites",
            )
        })?;
        require_sites(&s, &by, &[parent]).await?;
    }
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.identity.pool.begin().await?;
    let t = store::create(&mut tx, n, &actor).await?;
    tx.commit().await?;
    published(&s, &t, "created");
    Ok(with_etag(t.etag(), StatusCode::CREATED, json!(t)))
}

async fn read(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = twin_id(p)?;
    let pool = &s.identity.pool;
    let mut conn = pool.acquire().await?;
    let t = store::get(&mut conn, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no twin {id:?}")))?;
    // The twin is gone, the record of it is not: say where that lives.
    if let Some(at) = t.deleted_at {
        return Err(ApiError::not_found(format!(
            "twin {id:?} was deleted at {}: its changes stay at /api/v1/twins/{id}/history, \
             its last state in GET /api/v1/twins?deleted=true",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    let ty = match &t.type_id {
        Some(tid) => types::get(&mut conn, tid).await?,
        None => None,
    };
    drop(conn);
    let parent = graph::ancestors(pool, &id, Utc::now())
        .await?
        .into_iter()
        .next();
    let site = sites::of_twin(pool, &id).await?;
    let mut body = json!(t);
    body["type"] = json!(ty);
    body["parent"] = json!(parent);
    body["site"] = json!(site);
    body["state"] = state::live(pool, &t).await?;
    body["state"]["calibration"] =
        crate::calibration::records::of_twin(pool, &t.twin_id, &t.kind, s.calibration.warn_days)
            .await?;
    Ok(with_etag(t.etag(), StatusCode::OK, body))
}

async fn update(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Result<JsonObject<TwinPatch>, ApiError>,
) -> Result<Response, ApiError> {
    let id = twin_id(p)?;
    let JsonObject(patch) = body?;
    let expected = if_match(&headers)?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.identity.pool.begin().await?;
    let t = store::update(&mut tx, &id, patch, expected, &actor).await?;
    tx.commit().await?;
    published(&s, &t, "updated");
    Ok(with_etag(t.etag(), StatusCode::OK, json!(t)))
}

async fn remove(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = twin_id(p)?;
    let expected = if_match(&headers)?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.identity.pool.begin().await?;
    let t = store::delete(&mut tx, &id, expected, &actor).await?;
    tx.commit().await?;
    published(&s, &t, "deleted");
    Ok(with_etag(t.etag(), StatusCode::OK, json!(t)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphParams {
    at: Option<String>,
    kind: Option<String>,
    depth: Option<String>,
    direction: Option<String>,
    limit: Option<String>,
}

/// A graph query names a twin that exists (now, or at `at`).
async fn require_twin_at(
    s: &ApiState,
    id: &str,
    at: Option<chrono::DateTime<Utc>>,
) -> Result<(), ApiError> {
    if graph::existed(&s.identity.pool, id, at).await? {
        return Ok(());
    }
    let when = at.map(|t| format!(" at {t}")).unwrap_or_default();
    Err(ApiError::not_found(format!("no twin {id:?}{when}")))
}

async fn ancestors(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<GraphParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = twin_id(p)?;
    let Query(q) = q?;
    let at = parse_time("at", &q.at)?;
    require_twin_at(&s, &id, at).await?;
    let at = at.unwrap_or_else(Utc::now);
    let nodes = graph::ancestors(&s.identity.pool, &id, at).await?;
    Ok(Json(json!({"twin_id": id, "at": at, "ancestors": nodes})))
}

async fn descendants(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<GraphParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = twin_id(p)?;
    let Query(q) = q?;
    let at = parse_time("at", &q.at)?;
    let kind = twin_kind(q.kind)?;
    let depth = match q.depth.as_deref() {
        None => None,
        Some(d) => Some(
            d.parse::<i32>()
                .ok()
                .filter(|d| (1..=graph::MAX_DEPTH).contains(d))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("`depth` must be 1..={}", graph::MAX_DEPTH))
                })?,
        ),
    };
    let limit = parse_limit(&q.limit, 1000, s.max_page_size)?;
    require_twin_at(&s, &id, at).await?;
    let nodes =
        graph::descendants(&s.identity.pool, &id, at, kind.as_deref(), depth, limit).await?;
    Ok(Json(json!({
        "twin_id": id,
        "at": at.unwrap_or_else(Utc::now),
        "count": nodes.len(),
        "descendants": nodes,
    })))
}

async fn relations(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<GraphParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = twin_id(p)?;
    let Query(q) = q?;
    let at = parse_time("at", &q.at)?;
    let kind = short("kind", q.kind)?;
    if let Some(k) = &kind
        && model::RelationKind::parse(k).is_none()
    {
        return Err(ApiError::bad_request(
            "`kind` must be contains, connected_to, measures or calibrated_by",
        ));
    }
    let direction = match q.direction.as_deref() {
        None | Some("both") => Direction::Both,
        Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some(_) => return Err(ApiError::bad_request("`direction` must be out, in or both")),
    };
    let limit = parse_limit(&q.limit, 1000, s.max_page_size)?;
    let rels =
        graph::relations_of(&s.identity.pool, &id, kind.as_deref(), direction, at, limit).await?;
    Ok(Json(
        json!({"twin_id": id, "at": at, "count": rels.len(), "relations": rels}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    before_id: Option<String>,
    limit: Option<String>,
}

/// A twin's changes from the audit trail, newest first: its own writes and
/// the relations that joined or left it.
async fn history(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = twin_id(p)?;
    let Query(q) = q?;
    let before_id = match q.before_id.as_deref() {
        None => None,
        Some(b) => Some(b.parse::<i64>().ok().filter(|b| *b >= 1).ok_or_else(|| {
            ApiError::bad_request(
                "`before_id` must be the id of an entry (the previous page's next_before_id)",
            )
        })?),
    };
    let limit = parse_limit(&q.limit, 100, s.max_page_size.min(1000))?;
    // A deleted twin's history stays readable; an id never created has none.
    if store::get(&mut *s.identity.pool.acquire().await?, &id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no twin {id:?}")));
    }
    let entries = crate::audit::query(
        &s.identity.pool,
        &crate::audit::AuditQuery {
            target: Some(crate::twins::audit_target(&id)),
            before_id,
            limit,
            ..Default::default()
        },
    )
    .await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(
        json!({"twin_id": id, "count": entries.len(), "changes": entries, "next_before_id": next}),
    ))
}

async fn relate(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    body: Result<JsonObject<NewRelation>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let JsonObject(r) = body?;
    let mut ends = vec![r.source.as_str()];
    ends.extend(r.target.as_deref());
    require_sites(&s, &by, &ends).await?;
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.identity.pool.begin().await?;
    let rel = graph::relate(&mut tx, r, &actor).await?;
    tx.commit().await?;
    relation_changed(&s, &rel, "relation.create").await;
    Ok((StatusCode::CREATED, Json(json!(rel))))
}

async fn end_relation(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    p: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(rid) = p.map_err(|_| ApiError::bad_request("a relation id is a number"))?;
    if by.sites.is_some() {
        let source: Option<String> =
            sqlx::query_scalar("SELECT source_id FROM twin_relations WHERE relation_id = $1")
                .bind(rid)
                .fetch_optional(&s.identity.pool)
                .await?;
        let source = source.ok_or_else(|| ApiError::not_found(format!("no relation {rid}")))?;
        require_sites(&s, &by, &[source.as_str()]).await?;
    }
    let actor = Actor {
        principal: &by,
        origin: &origin,
    };
    let mut tx = s.identity.pool.begin().await?;
    let rel = graph::end(&mut tx, rid, &actor).await?;
    tx.commit().await?;
    relation_changed(&s, &rel, "relation.end").await;
    Ok(Json(json!(rel)))
}

/// Both twins a relation joins changed place: subtree filters of live
/// streams must be recomputed.
async fn relation_changed(s: &ApiState, rel: &graph::Relation, action: &'static str) {
    metrics::counter!(crate::metric_names::HUB_TWIN_WRITES_TOTAL, "action" => action).increment(1);
    let ids: Vec<&String> = std::iter::once(&rel.source_id)
        .chain(rel.target_id.as_ref())
        .collect();
    // The change is committed: a failed lookup only leaves the kind out.
    let kinds: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT twin_id, kind, version FROM twins WHERE twin_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&s.identity.pool)
            .await
            .unwrap_or_default();
    for id in ids {
        let (kind, version) = kinds
            .iter()
            .find(|k| &k.0 == id)
            .map(|k| (k.1.clone(), k.2))
            .unwrap_or_default();
        s.live.publish(EventBody::Twin {
            twin_id: id.clone(),
            kind,
            change: action.to_string(),
            version,
        });
    }
}
