//! API keys (admin only) and the site of each gateway.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, filter};
use crate::audit::{self, NewEntry};
use crate::identity::{Principal, Role, api_keys, sites, users};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    name: String,
    role: Role,
    #[serde(default)]
    sites: Option<Vec<String>>,
    /// Days until the key stops working; absent: never.
    #[serde(default, deserialize_with = "super::params::present")]
    expires_in_days: Option<u32>,
}

pub(super) async fn list(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let keys = api_keys::list(&s.identity.pool).await?;
    Ok(Json(json!({"count": keys.len(), "keys": keys})))
}

pub(super) async fn create(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    body: Result<JsonObject<NewKey>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let JsonObject(b) = body?;
    let name =
        filter("name", Some(b.name))?.ok_or_else(|| ApiError::bad_request("`name` is empty"))?;
    if !users::valid_sites(&b.sites) {
        return Err(ApiError::bad_request(
            "`sites` must be a list of at most 1000 site ids, or null for every site",
        ));
    }
    let expires_at = match b.expires_in_days {
        Some(0) | Some(36_501..) => {
            return Err(ApiError::bad_request("`expires_in_days` must be 1..=36500"));
        }
        Some(d) => Some(Utc::now() + chrono::Duration::days(i64::from(d))),
        None => None,
    };
    let mut tx = s.identity.pool.begin().await?;
    let (key, secret) =
        api_keys::create(&mut tx, &name, b.role, &b.sites, expires_at, &by.id).await?;
    audit::append_in(
        &mut tx,
        NewEntry::new(
            by.kind,
            &by.id,
            "api_key.create",
            format!("api_key:{}", key.id),
        )
        .origin(&origin)
        .after(json!(key)),
    )
    .await?;
    tx.commit().await?;
    let mut out = json!(key);
    // The only time the secret is shown.
    out["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

pub(super) async fn revoke(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = filter("id", Some(id))?.ok_or_else(|| ApiError::bad_request("empty key id"))?;
    let mut tx = s.identity.pool.begin().await?;
    let Some(before) = api_keys::revoke(&mut tx, &id).await? else {
        return Err(ApiError::not_found(format!("no API key {id:?}")));
    };
    audit::append_in(
        &mut tx,
        NewEntry::new(by.kind, &by.id, "api_key.revoke", format!("api_key:{id}"))
            .origin(&origin)
            .before(json!(before)),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SiteBody {
    site: String,
}

pub(super) async fn set_site(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(gateway): Path<String>,
    body: Result<JsonObject<SiteBody>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let JsonObject(b) = body?;
    let gateway = filter("gateway", Some(gateway))?
        .ok_or_else(|| ApiError::bad_request("empty gateway id"))?;
    if !qi_proto::limits::valid_id(&b.site) {
        return Err(ApiError::bad_request(format!(
            "`site` must be 1-{} printable characters",
            qi_proto::limits::MAX_ID_LEN
        )));
    }
    let mut tx = s.identity.pool.begin().await?;
    let before = match sites::set(&mut tx, &gateway, &b.site).await {
        Ok(before) => before,
        Err(e @ sites::PlaceError::NotASite(..)) => return Err(ApiError::conflict(e.to_string())),
        Err(sites::PlaceError::Db(e)) => return Err(e.into()),
    };
    audit::append_in(
        &mut tx,
        NewEntry::new(
            by.kind,
            &by.id,
            "gateway.set_site",
            format!("gateway:{gateway}"),
        )
        .origin(&origin)
        .before(json!({"site": before}))
        .after(json!({"site": b.site})),
    )
    .await?;
    // The gateway twin moved in the graph: live streams re-read which site
    // its twin and its instruments lie in.
    let (twin_id, version): (String, i64) = sqlx::query_as(
        "SELECT twin_id, version FROM twins
         WHERE kind = 'gateway' AND gateway_id = $1 AND deleted_at IS NULL",
    )
    .bind(&gateway)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    s.live.publish(crate::live::EventBody::Twin {
        twin_id,
        kind: "gateway".into(),
        change: "placed".into(),
        version,
    });
    Ok(Json(json!({"gateway": gateway, "site": b.site})))
}
