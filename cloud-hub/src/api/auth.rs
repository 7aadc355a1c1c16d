//! Login, token refresh, logout, the caller's identity and the public keys
//! that verify the hub's tokens.

use super::guard::ReqOrigin;
use super::params::JsonObject;
use super::{ApiError, ApiState};
use crate::identity::Principal;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshBody {
    refresh_token: String,
}

fn limit(s: &ApiState, ip: Option<std::net::IpAddr>) -> Result<(), ApiError> {
    if let Some(ip) = ip
        && let Err(wait) = s.identity.limiter.attempt(ip)
    {
        return Err(crate::identity::AuthError::RateLimited {
            retry_after_s: wait,
        }
        .into());
    }
    Ok(())
}

pub(super) async fn login(
    State(s): State<ApiState>,
    ReqOrigin(origin, ip): ReqOrigin,
    body: Result<JsonObject<LoginBody>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    limit(&s, ip)?;
    let JsonObject(b) = body?;
    let pair = s
        .identity
        .sessions()
        .login(&b.username, &b.password, &origin)
        .await?;
    Ok(Json(json!(pair)))
}

pub(super) async fn refresh(
    State(s): State<ApiState>,
    ReqOrigin(origin, ip): ReqOrigin,
    body: Result<JsonObject<RefreshBody>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    limit(&s, ip)?;
    let JsonObject(b) = body?;
    let pair = s
        .identity
        .sessions()
        .refresh(&b.refresh_token, &origin)
        .await?;
    Ok(Json(json!(pair)))
}

pub(super) async fn logout(
    State(s): State<ApiState>,
    ReqOrigin(origin, ip): ReqOrigin,
    body: Result<JsonObject<RefreshBody>, ApiError>,
) -> Result<StatusCode, ApiError> {
    limit(&s, ip)?;
    let JsonObject(b) = body?;
    s.identity
        .sessions()
        .logout(&b.refresh_token, &origin)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn me(Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    Json(json!({
        "id": p.id, "kind": p.kind, "role": p.role, "sites": p.sites,
        "permissions": crate::identity::permissions::RULES.iter()
            .filter(|r| p.may(r.permission))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>(),
    }))
}

pub(super) async fn jwks(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(s.identity.signer.jwks())
}
