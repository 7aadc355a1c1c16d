//! `GET /api/v1/twins/stream`: the live stream of twins (Server-Sent
//! Events). The stream itself is `crate::live::sse`; this parses the
//! request and narrows it to the caller's sites.

use super::{ApiError, ApiState, filter};
use crate::identity::Principal;
use crate::live::filter::{Filter, KINDS, MAX_TWINS};
use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::HashSet;

pub(super) async fn stream(
    State(s): State<ApiState>,
    Extension(by): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("query string: {e}")))?;
    let mut twins: Option<HashSet<String>> = None;
    let mut kinds: Option<HashSet<String>> = None;
    let mut subtree = None;
    let mut last_id = None;
    for (k, v) in pairs {
        match k.as_str() {
            "twin" => {
                let set = twins.get_or_insert_with(HashSet::new);
                for id in v.split(',') {
                    if let Some(id) = filter("twin", Some(id.trim().to_string()))? {
                        set.insert(id);
                    }
                }
                if set.len() > MAX_TWINS {
                    return Err(ApiError::bad_request(format!(
                        "at most {MAX_TWINS} twins in `twin`; use `subtree` for more"
                    )));
                }
            }
            "kind" => {
                let set = kinds.get_or_insert_with(HashSet::new);
                for kind in v.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                    if !KINDS.contains(&kind) {
                        return Err(ApiError::bad_request(format!(
                            "`kind` must be among {KINDS:?}; got {kind:?}"
                        )));
                    }
                    set.insert(kind.to_string());
                }
            }
            "subtree" if subtree.is_none() => subtree = filter("subtree", Some(v))?,
            "last_event_id" => last_id = Some(event_id(&v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown or repeated query parameter `{other}`; this operation takes twin, subtree, kind, last_event_id"
                )));
            }
        }
    }
    // The header a browser's EventSource sends on reconnect wins over the
    // parameter the page was first opened with.
    if let Some(v) = headers.get("last-event-id") {
        let v = v
            .to_str()
            .map_err(|_| ApiError::bad_request("`Last-Event-ID` must be an event id"))?;
        last_id = Some(event_id(v)?);
    }
    let f = Filter::new(twins, subtree, kinds, by.sites.clone());
    let events = s.streams.open(f, last_id).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            e.to_string(),
        )
    })?;
    tracing::debug!(principal = %by.id, ?last_id, "live stream opened");
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(s.streams.keepalive()))
        .into_response())
}

fn event_id(v: &str) -> Result<u64, ApiError> {
    v.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "an event id is the `id` of an event this stream sent (an unsigned integer); got {v:?}"
        ))
    })
}
