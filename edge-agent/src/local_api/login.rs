//! `POST /api/v1/login`, `POST /api/v1/logout`, `GET /api/v1/session`.

use super::audit::{self, Event, Origin};
use super::auth::session_token;
use super::{ApiState, error};
use crate::identity::{Session, valid_user_name};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    username: String,
    password: String,
}

fn counted(result: &'static str) {
    metrics::counter!(crate::metric_names::EDGE_AUTH_LOGINS_TOTAL, "result" => result).increment(1);
}

pub(super) async fn login(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Response {
    let auth = Arc::clone(&s.auth);
    if let Err(wait) = auth.limiter.check(peer.ip()) {
        counted("rate_limited");
        tracing::warn!(%peer, "login refused: too many failed attempts from this address");
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many failed logins from {}; try again in {secs} s",
                peer.ip()
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            counted("bad_request");
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "body must be {{\"username\": \"...\", \"password\": \"...\"}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    if auth.users.current().is_empty() {
        counted("no_users");
        return error(
            StatusCode::UNAUTHORIZED,
            "no_users",
            "no local users exist on this gateway: add one with `edge-agent user add NAME --role ROLE`",
        );
    }
    let origin = Origin::of(peer, &headers);
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let checked = {
        let (auth, name, pw) = (Arc::clone(&auth), req.username.clone(), req.password);
        tokio::task::spawn_blocking(move || auth.users.authenticate(&name, &pw)).await
    };
    let user = match checked {
        Ok(Some(u)) => u,
        Ok(None) | Err(_) => {
            auth.limiter.failed(peer.ip());
            counted("bad_credentials");
            // Only names that could be users are recorded: the field is the attacker's to fill.
            let actor = if valid_user_name(&req.username) {
                req.username.as_str()
            } else {
                ""
            };
            tracing::warn!(user = actor, %peer, "login failed");
            audit::record(
                &s.buffer,
                &origin,
                Event {
                    actor,
                    action: "login_failed",
                    target: "session".into(),
                    outcome: "bad_credentials",
                    before: None,
                    after: None,
                },
            )
            .await;
            return error(
                StatusCode::UNAUTHORIZED,
                "bad_credentials",
                "wrong user name or password",
            );
        }
    };
    auth.limiter.succeeded(peer.ip());
    let (token, csrf) = auth.sessions.create(&user);
    metrics::gauge!(crate::metric_names::EDGE_AUTH_SESSIONS).set(auth.sessions.count() as f64);
    counted("ok");
    tracing::info!(user = %user.name, role = %user.role, %peer, "login");
    audit::record(
        &s.buffer,
        &origin,
        Event {
            actor: &user.name,
            action: "login",
            target: "session".into(),
            outcome: "ok",
            before: None,
            after: Some(json!({"role": user.role})),
        },
    )
    .await;
    let mut r = Json(json!({
        "user": user.name,
        "role": user.role,
        "csrf_token": csrf,
        "idle_timeout_s": auth.session_idle_s,
        "max_age_s": auth.session_max_s,
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&auth.cookie(&token, auth.session_max_s)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn logout(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(sess): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = session_token(&headers) {
        s.auth.sessions.revoke(&token);
    }
    metrics::gauge!(crate::metric_names::EDGE_AUTH_SESSIONS).set(s.auth.sessions.count() as f64);
    tracing::info!(user = %sess.user, %peer, "logout");
    audit::record(
        &s.buffer,
        &Origin::of(peer, &headers),
        Event {
            actor: &sess.user,
            action: "logout",
            target: "session".into(),
            outcome: "ok",
            before: None,
            after: None,
        },
    )
    .await;
    let mut r = Json(json!({"ok": true})).into_response();
    if let Ok(v) = HeaderValue::from_str(&s.auth.cookie("", 0)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Who the session is, and its CSRF token again (a page reloaded after login
/// has lost it, the cookie has not).
pub(super) async fn session(Extension(sess): Extension<Session>) -> Response {
    Json(json!({"user": sess.user, "role": sess.role, "csrf_token": sess.csrf})).into_response()
}
