//! Users (admin only): list, create, read, change, delete; every change
//! audited in the same transaction.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState, parse_limit};
use crate::audit::{self, NewEntry};
use crate::identity::users::{self, Patch, UserError};
use crate::identity::{Principal, Role, passwords};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    username: String,
    password: String,
    role: Role,
    #[serde(default)]
    sites: Option<Vec<String>>,
}

/// Absent keys stay; `"sites": null` means every site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserPatch {
    #[serde(default, deserialize_with = "super::params::present")]
    role: Option<Role>,
    #[serde(default, with = "serde_with_double_option")]
    sites: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "super::params::present")]
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "super::params::present")]
    password: Option<String>,
}

/// `Option<Option<T>>` that tells an absent key (None) from `null` (Some(None)).
mod serde_with_double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    limit: Option<String>,
    offset: Option<String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if users::valid_username(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "`username` must be 1-64 characters of letters, digits and ._@-",
        ))
    }
}

fn check_sites(sites: &Option<Vec<String>>) -> Result<(), ApiError> {
    if users::valid_sites(sites) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`sites` must be a list of at most 1000 ids of 1-{} printable characters, or null for every site",
            qi_proto::limits::MAX_ID_LEN
        )))
    }
}

fn password_error(e: passwords::PasswordError) -> ApiError {
    match e {
        passwords::PasswordError::Hash(m) => ApiError::unavailable(m),
        other => ApiError::bad_request(other.to_string()),
    }
}

pub(super) async fn list(
    State(s): State<ApiState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params?;
    let limit = parse_limit(&p.limit, 100, s.max_page_size)?;
    let offset = p
        .offset
        .as_deref()
        .map(|o| o.parse::<u32>().map(i64::from))
        .transpose()
        .map_err(|_| ApiError::bad_request("`offset` must be a non-negative integer"))?
        .unwrap_or(0);
    let rows = users::list(&s.identity.pool, limit, offset).await?;
    Ok(Json(json!({"count": rows.len(), "users": rows})))
}

pub(super) async fn create(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    body: Result<JsonObject<NewUser>, ApiError>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let JsonObject(b) = body?;
    check_name(&b.username)?;
    check_sites(&b.sites)?;
    let hash = passwords::hash(&b.password).await.map_err(password_error)?;
    let mut tx = s.identity.pool.begin().await?;
    let user = users::create(&mut tx, &b.username, &hash, b.role, &b.sites)
        .await
        .map_err(|e| match e {
            UserError::Exists(_) => ApiError::conflict(e.to_string()),
            UserError::Db(e) => ApiError::unavailable(e),
        })?;
    audit::append_in(
        &mut tx,
        NewEntry::new(
            by.kind,
            &by.id,
            "user.create",
            format!("user:{}", user.username),
        )
        .origin(&origin)
        .after(json!(user)),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(json!(user))))
}

pub(super) async fn get(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name(&name)?;
    match users::get(&s.identity.pool, &name).await? {
        Some(u) => Ok(Json(json!(u))),
        None => Err(ApiError::not_found(format!("no user {name:?}"))),
    }
}

pub(super) async fn update(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(name): Path<String>,
    body: Result<JsonObject<UserPatch>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name(&name)?;
    let JsonObject(b) = body?;
    if let Some(sites) = &b.sites {
        check_sites(sites)?;
    }
    let password_hash = match &b.password {
        Some(p) => Some(passwords::hash(p).await.map_err(password_error)?),
        None => None,
    };
    let patch = Patch {
        role: b.role,
        sites: b.sites,
        disabled: b.disabled,
        password_hash,
    };
    let mut tx = s.identity.pool.begin().await?;
    let Some((before, after)) = users::update(&mut tx, &name, &patch).await? else {
        return Err(ApiError::not_found(format!("no user {name:?}")));
    };
    let mut after_json = json!(after);
    if patch.password_hash.is_some() {
        after_json["password"] = json!("changed");
    }
    audit::append_in(
        &mut tx,
        NewEntry::new(by.kind, &by.id, "user.update", format!("user:{name}"))
            .origin(&origin)
            .before(json!(before))
            .after(after_json),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(json!(after)))
}

pub(super) async fn delete(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    ReqOrigin(origin, _): ReqOrigin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_name(&name)?;
    let mut tx = s.identity.pool.begin().await?;
    let Some(before) = users::delete(&mut tx, &name).await? else {
        return Err(ApiError::not_found(format!("no user {name:?}")));
    };
    audit::append_in(
        &mut tx,
        NewEntry::new(by.kind, &by.id, "user.delete", format!("user:{name}"))
            .origin(&origin)
            .before(json!(before)),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
