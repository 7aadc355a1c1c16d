//! Who may call what on the local API: the permission table, and the
//! middleware that applies it to every routed request.
//!
//! Credentials: the session cookie set by `POST /api/v1/login`, or, for
//! `/metrics` only, `Authorization: Bearer <token>` whose SHA-256 is
//! `auth.metrics_token_sha256` (Prometheus cannot log in). Every
//! state-changing request also carries the session's CSRF token in
//! `X-CSRF-Token`: a cross-site form or script can make the browser send the
//! cookie (SameSite=Strict already stops most), but cannot read the token.
//!
//! A route missing from [`PERMISSIONS`] is refused (fail closed), so a new
//! route cannot be reached before someone decides who may call it.

use super::{ApiState, error};
use crate::identity::{LoginLimiter, Role, Session, SessionError, Sessions, UserStore};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "qi_session";
/// Header carrying the CSRF token on state changes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (login itself; `/health` answers only its status without a session).
    Open,
    /// A session of at least this role (plus the CSRF token on state changes).
    Role(Role),
    /// The metrics bearer token, or a session of at least `viewer`.
    Scrape,
}

/// The local API's permission table: (method, route, access). Documented in
/// docs/security.md (## Edge); the `local_api_auth` e2e test walks it.
pub const PERMISSIONS: &[(&str, &str, Access)] = &[
    ("GET", "/health", Access::Open),
    ("GET", "/metrics", Access::Scrape),
    ("GET", "/live", Access::Open),
    ("GET", "/ready", Access::Open),
    ("POST", "/api/v1/login", Access::Open),
    ("POST", "/api/v1/logout", Access::Role(Role::Viewer)),
    ("GET", "/api/v1/session", Access::Role(Role::Viewer)),
    ("GET", "/api/v1/devices", Access::Role(Role::Viewer)),
    ("GET", "/api/v1/devices/{id}", Access::Role(Role::Viewer)),
    (
        "GET",
        "/api/v1/devices/{id}/points",
        Access::Role(Role::Viewer),
    ),
    (
        "POST",
        "/api/v1/devices/{id}/write",
        Access::Role(Role::Operator),
    ),
    ("GET", "/api/v1/protocols", Access::Role(Role::Viewer)),
    ("GET", "/api/v1/benches", Access::Role(Role::Viewer)),
    ("GET", "/api/v1/runs", Access::Role(Role::Viewer)),
    ("POST", "/api/v1/runs", Access::Role(Role::Operator)),
    ("GET", "/api/v1/runs/{id}", Access::Role(Role::Viewer)),
    (
        "POST",
        "/api/v1/runs/{id}/abort",
        Access::Role(Role::Operator),
    ),
    // The web page: its files are open (the login form must load), its data is not.
    ("GET", "/", Access::Open),
    ("GET", "/ui/{file}", Access::Open),
    ("GET", "/api/v1/live", Access::Role(Role::Viewer)),
    ("GET", "/api/v1/history", Access::Role(Role::Viewer)),
];

/// The identity side of the API's state.
pub struct AuthState {
    pub users: UserStore,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    /// `auth.metrics_token_sha256`, lowercase.
    pub metrics_token_sha256: Option<String>,
    /// The listener is TLS: cookies get `Secure`.
    pub secure_cookies: bool,
    /// `auth.session_max_s`, the cookie's Max-Age.
    pub session_max_s: u64,
    pub session_idle_s: u64,
}

impl AuthState {
    pub fn new(
        cfg: &crate::identity::AuthConfig,
        users_file: std::path::PathBuf,
        tls: bool,
    ) -> AuthState {
        AuthState {
            users: UserStore::new(users_file),
            sessions: Sessions::new(cfg.idle(), cfg.max_age()),
            limiter: LoginLimiter::new(cfg.login_max_failures, cfg.window()),
            metrics_token_sha256: cfg
                .metrics_token_sha256
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            secure_cookies: tls,
            session_max_s: cfg.session_max_s,
            session_idle_s: cfg.session_idle_s,
        }
    }

    /// The session the request's cookie names, if it carries one.
    pub fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, SessionError> {
        match session_token(headers) {
            None => Ok(None),
            Some(t) => self.sessions.check(&t, &self.users).map(Some),
        }
    }

    fn metrics_token_ok(&self, headers: &HeaderMap) -> bool {
        let (Some(want), Some(got)) = (&self.metrics_token_sha256, bearer(headers)) else {
            return false;
        };
        crate::identity::same_secret(
            crate::identity::sha256_hex(got.as_bytes()).as_bytes(),
            want.as_bytes(),
        )
    }

    /// `Set-Cookie` value for a new session (or, with an empty token and
    /// Max-Age 0, one that deletes it).
    pub fn cookie(&self, token: &str, max_age_s: u64) -> String {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        format!(
            "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
        )
    }
}

/// The session token from the `Cookie` header(s).
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn refuse(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Response {
    metrics::counter!(crate::metric_names::EDGE_AUTH_REFUSED_TOTAL, "reason" => reason)
        .increment(1);
    let kind = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        "forbidden"
    };
    error(status, kind, message)
}

/// Refusal for a request without a usable session.
fn unauthenticated(s: &ApiState, why: Option<SessionError>) -> Response {
    if s.auth.users.current().is_empty() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "no_users",
            "no local users exist on this gateway: add one with `edge-agent user add NAME --role ROLE`",
        );
    }
    match why {
        Some(e) => refuse(
            StatusCode::UNAUTHORIZED,
            e.reason(),
            format!("{e}; log in again (POST /api/v1/login)"),
        ),
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "no_credentials",
            "log in first (POST /api/v1/login) and send the session cookie",
        ),
    }
}

/// Middleware: applies [`PERMISSIONS`] to the matched route; hands the
/// session to the handler as an extension.
pub(super) async fn authorize(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
    else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let entry = PERMISSIONS
        .iter()
        .find(|(m, p, _)| *p == path && *m == method.as_str());
    let access = match entry {
        Some((_, _, a)) => *a,
        // A listed route with another method: the router answers 405.
        None if PERMISSIONS.iter().any(|(_, p, _)| *p == path) => return next.run(req).await,
        None => {
            tracing::error!(%path, %method, "route has no entry in the permission table; refused");
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route has no permission entry",
            );
        }
    };
    let session = s.auth.session(req.headers());
    let need = match access {
        Access::Open => {
            if let Ok(Some(sess)) = session {
                req.extensions_mut().insert(sess);
            }
            return next.run(req).await;
        }
        Access::Scrape if s.auth.metrics_token_ok(req.headers()) => return next.run(req).await,
        Access::Scrape => {
            if bearer(req.headers()).is_some() && session_token(req.headers()).is_none() {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "bad_metrics_token",
                    "bearer token does not match auth.metrics_token_sha256",
                );
            }
            Role::Viewer
        }
        Access::Role(r) => r,
    };
    let sess = match session {
        Ok(Some(sess)) => sess,
        Ok(None) => return unauthenticated(&s, None),
        Err(e) => return unauthenticated(&s, Some(e)),
    };
    if sess.role < need {
        tracing::warn!(user = %sess.user, role = %sess.role, need = %need, %method, %path, "request refused: role too low");
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{method} {path} needs role {need}; {} is {}",
                sess.user, sess.role
            ),
        );
    }
    if changes_state(&method) {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !crate::identity::same_secret(sent, sess.csrf.as_bytes()) {
            tracing::warn!(user = %sess.user, %method, %path, "request refused: missing or wrong CSRF token");
            return refuse(
                StatusCode::FORBIDDEN,
                "bad_csrf",
                "state changes need the session's CSRF token in the X-CSRF-Token header (from the login answer)",
            );
        }
    }
    req.extensions_mut().insert(sess);
    next.run(req).await
}
