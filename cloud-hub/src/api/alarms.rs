//! Alarm rules (engineers) and alarms (everyone reads, operators
//! acknowledge). The evaluator and the lifecycle are `crate::alarms`.
//! Every route narrows to the caller's sites itself (scope `filtered`): a
//! rule or alarm of a twin outside them answers 404, as if absent.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, filter, parse_limit};
use crate::alarms::rules::{self, RuleInput};
use crate::alarms::store::{self, AlarmQuery};
use crate::audit::{self, NewEntry};
use crate::identity::Principal;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

fn rule_id(v: &str) -> Result<i64, ApiError> {
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::bad_request("the id must be a positive integer"))
}

/// Whether `twin` exists (not deleted) and lies in one of `sites` (if limited).
async fn twin_visible(
    s: &ApiState,
    twin: &str,
    sites: Option<&[String]>,
) -> Result<bool, ApiError> {
    let site: Option<Option<String>> = sqlx::query_scalar(
        "SELECT twin_site(twin_id) FROM twins WHERE twin_id = $1 AND deleted_at IS NULL",
    )
    .bind(twin)
    .fetch_optional(s.store.pool())
    .await?;
    Ok(match (site, sites) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(site), Some(allowed)) => site.is_some_and(|x| allowed.contains(&x)),
    })
}

fn no_twin(twin: &str) -> ApiError {
    ApiError::not_found(format!("no twin {twin:?} (or not in your sites)"))
}

fn no_rule(id: i64) -> ApiError {
    ApiError::not_found(format!("no alarm rule {id}"))
}

async fn checked(s: &ApiState, by: &Principal, b: &RuleInput) -> Result<(), ApiError> {
    rules::check(b).map_err(ApiError::bad_request)?;
    if !twin_visible(s, &b.twin_id, by.sites.as_deref()).await? {
        return Err(no_twin(&b.twin_id));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleParams {
    twin: Option<String>,
}

pub(super) async fn list_rules(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    params: Result<Query<RuleParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    let twin = filter("twin", p.twin)?;
    let rules = rules::list(s.store.pool(), twin.as_deref(), by.sites.as_deref()).await?;
    Ok(Json(json!({"count": rules.len(), "rules": rules})))
}

pub(super) async fn create_rule(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    body: Result<JsonObject<RuleInput>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let JsonObject(b) = body?;
    checked(&s, &by, &b).await?;
    let mut tx = s.store.pool().begin().await?;
    let rule = rules::create(&mut tx, &b).await?;
    audit::append_in(
        &mut tx,
        NewEntry::new(
            by.kind,
            &by.id,
            "alarm_rule.create",
            format!("alarm_rule:{}", rule.rule_id),
        )
        .origin(&origin)
        .after(json!(rule)),
    )
    .await?;
    tx.commit().await?;
    s.alarms.rules_changed();
    Ok((StatusCode::CREATED, Json(json!(rule))))
}

/// A rule the caller may see, locked when `lock`.
async fn visible_rule(
    s: &ApiState,
    conn: &mut sqlx::PgConnection,
    by: &Principal,
    id: i64,
    lock: bool,
) -> Result<rules::Rule, ApiError> {
    let rule = rules::get(conn, id, lock)
        .await?
        .ok_or_else(|| no_rule(id))?;
    if by.sites.is_some() && !twin_visible(s, &rule.twin_id, by.sites.as_deref()).await? {
        return Err(no_rule(id));
    }
    Ok(rule)
}

pub(super) async fn get_rule(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = rule_id(&id)?;
    let mut conn = s.store.pool().acquire().await?;
    let rule = visible_rule(&s, &mut conn, &by, id, false).await?;
    Ok(Json(json!(rule)))
}

pub(super) async fn update_rule(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
    body: Result<JsonObject<RuleInput>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let id = rule_id(&id)?;
    let JsonObject(b) = body?;
    checked(&s, &by, &b).await?;
    let mut tx = s.store.pool().begin().await?;
    let before = visible_rule(&s, &mut tx, &by, id, true).await?;
    let after = rules::update(&mut tx, id, &b).await?;
    // A disabled rule, or one that now watches something else, leaves no
    // alarm active behind it.
    let watches_same = before.twin_id == after.twin_id && before.metric == after.metric;
    let cleared = if !after.enabled || !watches_same {
        store::clear(
            &mut tx,
            id,
            json!({"reason": "rule changed"}),
            (by.kind, &by.id),
            Some(&origin),
        )
        .await
        .map_err(store_error)?
    } else {
        None
    };
    audit::append_in(
        &mut tx,
        NewEntry::new(
            by.kind,
            &by.id,
            "alarm_rule.update",
            format!("alarm_rule:{id}"),
        )
        .origin(&origin)
        .before(json!(before))
        .after(json!(after)),
    )
    .await?;
    tx.commit().await?;
    if let Some(a) = cleared {
        s.alarms.announce("cleared", &a);
    }
    s.alarms.rules_changed();
    Ok(Json(json!(after)))
}

pub(super) async fn delete_rule(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = rule_id(&id)?;
    let mut tx = s.store.pool().begin().await?;
    let before = visible_rule(&s, &mut tx, &by, id, true).await?;
    rules::delete(&mut tx, id).await?;
    let cleared = store::clear(
        &mut tx,
        id,
        json!({"reason": "rule deleted"}),
        (by.kind, &by.id),
        Some(&origin),
    )
    .await
    .map_err(store_error)?;
    audit::append_in(
        &mut tx,
        NewEntry::new(
            by.kind,
            &by.id,
            "alarm_rule.delete",
            format!("alarm_rule:{id}"),
        )
        .origin(&origin)
        .before(json!(before)),
    )
    .await?;
    tx.commit().await?;
    if let Some(a) = cleared {
        s.alarms.announce("cleared", &a);
    }
    s.alarms.rules_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlarmParams {
    state: Option<String>,
    twin: Option<String>,
    severity: Option<String>,
    before_id: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list_alarms(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    params: Result<Query<AlarmParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    if let Some(st) = p.state.as_deref()
        && !store::STATES.contains(&st)
    {
        return Err(ApiError::bad_request(format!(
            "`state` must be one of {:?}",
            store::STATES
        )));
    }
    if let Some(sev) = p.severity.as_deref()
        && !rules::SEVERITIES.contains(&sev)
    {
        return Err(ApiError::bad_request(format!(
            "`severity` must be one of {:?}",
            rules::SEVERITIES
        )));
    }
    let before_id = p.before_id.as_deref().map(rule_id).transpose()?;
    let twin = filter("twin", p.twin)?;
    let q = AlarmQuery {
        state: p.state.as_deref(),
        twin: twin.as_deref(),
        severity: p.severity.as_deref(),
        sites: by.sites.as_deref(),
        before_id,
        limit: parse_limit(&p.limit, 100, s.max_page_size)?,
    };
    let alarms = store::list(s.store.pool(), &q).await?;
    let next = if alarms.len() as i64 == q.limit {
        alarms.last().map(|a| a.alarm_id)
    } else {
        None
    };
    Ok(Json(
        json!({"count": alarms.len(), "alarms": alarms, "next_before_id": next}),
    ))
}

pub(super) async fn acknowledge(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = rule_id(&id)?;
    let (alarm, changed) = store::acknowledge(
        s.store.pool(),
        id,
        by.sites.as_deref(),
        (by.kind, &by.id),
        &origin,
    )
    .await
    .map_err(store_error)?
    .ok_or_else(|| ApiError::not_found(format!("no alarm {id}")))?;
    if changed {
        s.alarms.announce("acknowledged", &alarm);
    }
    Ok(Json(json!(alarm)))
}

fn store_error(e: store::StoreError) -> ApiError {
    match e {
        store::StoreError::Db(e) => e.into(),
        store::StoreError::Audit(e) => e.into(),
    }
}
