//! Request ids: one id per REST request and per gRPC stream, taken from the
//! client (`X-Request-Id`) when it is well-formed, made here otherwise,
//! returned on the response and carried by every log line of the request
//! (the `request_id` field of its span). A proxy's or client's id lets an SRE
//! follow one call through its logs and ours.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header (HTTP) and metadata key (gRPC) carrying the id.
pub const HEADER: &str = "x-request-id";
/// Longest id taken from a client; a UUID is 36 characters.
pub const MAX_LEN: usize = 128;

/// `id` if a client's id may be used as is: 1 to [`MAX_LEN`] characters of
/// ASCII letters, digits and `-._:`. Anything else (control characters that
/// would forge log lines, quotes, spaces, an id the size of a page) is
/// replaced, never echoed.
pub fn well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
}

/// A new id: a random (version 4) UUID.
pub fn new_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The client's id if well-formed, a new one otherwise.
pub fn accept_or_new(client: Option<&str>) -> String {
    match client {
        Some(id) if well_formed(id) => id.to_string(),
        _ => new_id(),
    }
}

/// The request's id, for handlers that want it (an extension set by [`http`]).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// axum middleware (`Router::layer(axum::middleware::from_fn(http))`): the
/// request id and a span `http_request` around the request with `request_id`,
/// `http.request.method`, `http.route` and, once answered,
/// `http.response.status_code`; a `traceparent` header from the client
/// continues the client's trace when traces are on.
pub async fn http(mut req: Request, next: Next) -> Response {
    let id = accept_or_new(req.headers().get(HEADER).and_then(|v| v.to_str().ok()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let span = tracing::info_span!(
        "http_request",
        request_id = %id,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
    );
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        crate::telemetry::continue_trace(&span, tp);
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_are_kept_and_others_replaced() {
        for ok in ["abc", "0f8e-12.x_y:z", &"a".repeat(MAX_LEN)] {
            assert_eq!(accept_or_new(Some(ok)), ok);
        }
        for bad in [
            "",
            "a b",
            "line\nforged",
            "q\"uote",
            "é",
            &"a".repeat(MAX_LEN + 1),
        ] {
            let got = accept_or_new(Some(bad));
            assert_ne!(got, bad);
            assert!(well_formed(&got));
        }
    }

    #[test]
    fn new_ids_are_version_4_uuids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(new_id(), id);
    }
}
