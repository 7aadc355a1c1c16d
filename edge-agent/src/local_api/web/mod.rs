//! The operators' local web page: a few static files embedded in the binary
//! ([`assets`]), one live-update stream per open page ([`live`], Server-Sent
//! Events), and an hour of every point's values kept in memory for its
//! charts ([`history`]). docs/web.md is the operators' and reviewers' account.
//!
//! The page's HTML, JS and CSS are open (the login form must load without a
//! session); every byte of data behind them needs a session, through the same
//! permission table as the JSON API. Every answer of the local API carries
//! the security headers of [`security_headers`].

mod assets;
mod history;
mod live;

use super::ApiState;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use std::sync::Arc;
use tokio::sync::watch;

pub use history::{HISTORY_SAMPLES, HISTORY_STEP_S, MAX_HISTORY_SERIES};

/// No inline script or style, nothing from another origin, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the page's routes share: the live streams' budget and ticks, and the
/// chart history.
pub struct Web {
    streams: live::Streams,
    ticks: watch::Receiver<Arc<live::Tick>>,
    /// Taken by [`start`]: the background task owns the sender, so the
    /// streams end when it stops (a graceful shutdown then completes).
    sender: std::sync::Mutex<Option<watch::Sender<Arc<live::Tick>>>>,
    history: history::History,
}

impl Web {
    pub fn new(http: &crate::config::HttpConfig) -> Web {
        let (tx, rx) = watch::channel(Arc::new(live::Tick::default()));
        Web {
            streams: live::Streams::new(http.max_live_streams, http.max_live_streams_per_session),
            ticks: rx,
            sender: std::sync::Mutex::new(Some(tx)),
            history: history::History::default(),
        }
    }
}

/// The page's routes (each has its entry in [`super::PERMISSIONS`]).
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(assets::index))
        .route("/ui/{file}", get(assets::asset))
        .route("/api/v1/live", get(live::live))
        .route("/api/v1/history", get(history::history))
}

/// Starts the page's background task: every second it samples the chart
/// history (each [`HISTORY_STEP_S`]) and, while a live stream is open,
/// builds the snapshot every stream sends. It ends with `stop`, and the open
/// streams with it.
pub fn start(state: ApiState, stop: qi_common::shutdown::Stop) -> tokio::task::JoinHandle<()> {
    let sender = state
        .web
        .sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    tokio::spawn(async move {
        match sender {
            Some(tx) => live::produce(state, tx, stop).await,
            None => tracing::error!("the web page's background task was started twice"),
        }
    })
}

/// Middleware: the headers every answer carries. API answers also get
/// `Cache-Control: no-store` unless they set their own (session data must
/// not linger in a shared browser's cache).
pub(super) async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
