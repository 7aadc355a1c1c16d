//! Analytics routes read from the replica (`database.read_url`) when there
//! is one: [`ReadState`] hands the handler a state whose store reads from the
//! replica (or the primary, as a fallback), and [`headers`] tells the client
//! which served and how far behind it was:
//!
//! - `X-Read-Source: replica | primary`
//! - `X-Replica-Lag-Ms: <ms>` (served by the replica)
//! - `X-Read-Fallback: <reason>` (a replica is configured but did not serve)

use super::ApiState;
use crate::storage::ReadSource;
use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::{Arc, Mutex};

type Slot = Arc<Mutex<Option<ReadSource>>>;

/// The API state with its store reading from the replica if one serves.
pub(super) struct ReadState(pub ApiState);

impl FromRequestParts<ApiState> for ReadState {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, Self::Rejection> {
        let (store, source) = s.store.for_reads();
        if let Some(slot) = parts.extensions.get::<Slot>() {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
        }
        let mut s = s.clone();
        s.store = store;
        Ok(ReadState(s))
    }
}

/// Route layer of the analytics routes: says where the read went.
pub(super) async fn headers(mut req: Request, next: Next) -> Response {
    let slot: Slot = Arc::default();
    req.extensions_mut().insert(Arc::clone(&slot));
    let mut res = next.run(req).await;
    let source = *slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(src) = source {
        let h = res.headers_mut();
        h.insert("x-read-source", HeaderValue::from_static(src.served_by));
        if let Some(lag) = src.lag_ms {
            h.insert("x-replica-lag-ms", HeaderValue::from(lag));
        }
        if let Some(why) = src.fallback {
            h.insert("x-read-fallback", HeaderValue::from_static(why));
        }
    }
    res
}
