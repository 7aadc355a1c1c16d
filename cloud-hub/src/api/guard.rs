//! The gate every request passes: finds the operation's rule in the
//! permission table, authenticates the bearer token, checks the role and,
//! for principals limited to sites, that every gateway the request touches
//! is in one of their sites. A route without a rule is refused to everyone.

use super::{ApiError, ApiState};
use crate::audit::Origin;
use crate::identity::{Principal, Scope, permissions, sites};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

pub(super) async fn guard(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    match check(&s, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn check(s: &ApiState, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let Some(path) = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        // No route matched: the fallback answers 404.
        return Ok(Request::from_parts(parts, body));
    };
    let method = parts.method.as_str().to_string();
    let Some(rule) = permissions::required(&method, &path) else {
        if permissions::RULES.iter().any(|r| r.path == path) {
            // Another method of a known path: let the router say 405.
            return Ok(Request::from_parts(parts, body));
        }
        tracing::error!(%method, %path, "route without a rule in the permission table: refused");
        return Err(ApiError::forbidden(
            "this operation has no permission rule; refused",
        ));
    };
    if rule.permission == permissions::Permission::Public {
        return Ok(Request::from_parts(parts, body));
    }
    let token = bearer(&parts)?;
    let principal = s.identity.authenticate(token).await?;
    if !principal.may(rule.permission) {
        return Err(crate::identity::AuthError::forbidden(
            "role",
            format!(
                "{} {} needs role {} or higher; {} has {}",
                method,
                path,
                rule.permission.min_role().map_or("-", |r| r.as_str()),
                principal.id,
                principal.role
            ),
        )
        .into());
    }
    if let Some(allowed) = &principal.sites {
        check_scope(s, &mut parts, rule.scope, &principal, allowed).await?;
    }
    parts.extensions.insert(principal);
    Ok(Request::from_parts(parts, body))
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let missing = || {
        metrics::counter!(crate::metric_names::HUB_API_AUTH_FAILURES_TOTAL, "reason" => "no_credential")
            .increment(1);
        ApiError::unauthorized(
            "sign in: send `Authorization: Bearer <token>` (an access token from POST /api/v1/auth/login, or an API key)",
        )
    };
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, token) = v.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

async fn check_scope(
    s: &ApiState,
    parts: &mut Parts,
    scope: Scope,
    principal: &Principal,
    allowed: &[String],
) -> Result<(), ApiError> {
    let refuse = |msg: String| -> ApiError {
        crate::identity::AuthError::forbidden("site_scope", msg).into()
    };
    let params: Vec<(String, String)> = RawPathParams::from_request_parts(parts, &())
        .await
        .map(|ps| {
            ps.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let path_param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let gateways: Vec<String> = match scope {
        Scope::None | Scope::Filtered => return Ok(()),
        Scope::Twin => {
            let id = path_param("id").unwrap_or_default();
            let site = sites::of_twin(&s.identity.pool, &id).await?;
            return match site {
                Some(site) if allowed.contains(&site) => Ok(()),
                _ => Err(refuse(format!(
                    "{} is limited to sites {allowed:?}; twin {id:?} is not in one of them",
                    principal.id
                ))),
            };
        }
        Scope::Fleet => {
            return Err(refuse(format!(
                "{} is limited to sites {allowed:?}; this operation spans the whole fleet",
                principal.id
            )));
        }
        Scope::Gateway => {
            let mut g: Vec<String> = query
                .iter()
                .filter(|(k, _)| k == "gateway")
                .map(|(_, v)| v.clone())
                .collect();
            g.extend(path_param("gateway"));
            if g.is_empty() {
                return Err(refuse(format!(
                    "{} is limited to sites {allowed:?}: name a gateway of those sites (gateway=...)",
                    principal.id
                )));
            }
            g
        }
        Scope::Series => {
            let mut ids: Vec<i32> = query
                .iter()
                .filter(|(k, _)| k == "series")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .filter_map(|x| x.trim().parse().ok())
                        .collect::<Vec<_>>()
                })
                .collect();
            ids.extend(path_param("id").and_then(|v| v.parse::<i32>().ok()));
            sites::gateways_of_series(&s.identity.pool, &ids).await?
        }
        Scope::Command => match path_param("id").and_then(|v| v.parse().ok()) {
            Some(id) => sites::gateway_of_command(&s.identity.pool, id)
                .await?
                .into_iter()
                .collect(),
            None => Vec::new(),
        },
    };
    let placed = sites::of_gateways(&s.identity.pool, &gateways).await?;
    for g in &gateways {
        match placed.get(g) {
            Some(site) if allowed.contains(site) => {}
            _ => {
                return Err(refuse(format!(
                    "{} is limited to sites {allowed:?}; gateway {g:?} is not in one of them",
                    principal.id
                )));
            }
        }
    }
    Ok(())
}

/// Where a request came from (peer address, user agent), for the audit
/// trail and the login limiter.
pub(super) struct ReqOrigin(pub Origin, pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReqOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ReqOrigin(
            Origin {
                addr: ip.map(|i| i.to_string()),
                user_agent: parts
                    .headers
                    .get(axum::http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.chars().take(256).collect()),
            },
            ip,
        ))
    }
}
