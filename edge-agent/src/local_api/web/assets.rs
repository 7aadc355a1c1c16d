//! The page's files, embedded at build time from `edge-agent/web/` (no files
//! to deploy, no build tool: plain HTML, CSS and ES modules). Each is
//! gzip-compressed once, at first request, and served compressed to every
//! browser that accepts it; an ETag lets a reload revalidate without the body.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::sync::OnceLock;

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $mime:literal) => {
        Asset {
            name: $name,
            mime: $mime,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $name)),
        }
    };
}

/// Every file the page loads; nothing else is served under `/ui/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("chart.js", "text/javascript; charset=utf-8"),
    asset!("overview.js", "text/javascript; charset=utf-8"),
    asset!("device.js", "text/javascript; charset=utf-8"),
    asset!("runs.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

struct Prepared {
    gzip: Vec<u8>,
    etag: HeaderValue,
}

fn prepared() -> &'static [Prepared] {
    static P: OnceLock<Vec<Prepared>> = OnceLock::new();
    P.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                // Writing to a Vec cannot fail; an empty body is the fallback.
                let gzip = z
                    .write_all(a.body)
                    .and_then(|_| z.finish())
                    .unwrap_or_default();
                let digest = crate::identity::sha256_hex(a.body);
                let etag = HeaderValue::from_str(&format!("\"{}\"", &digest[..16]))
                    .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
                Prepared { gzip, etag }
            })
            .collect()
    })
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let (a, p) = (&ASSETS[i], &prepared()[i]);
    let mut r = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == p.etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) && !p.gzip.is_empty() {
        let mut r = p.gzip.clone().into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        a.body.into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    h.insert(header::ETAG, p.etag.clone());
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // Revalidate each time: an upgraded agent serves new files at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|q| matches!(q.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

pub(super) async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

pub(super) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == file) {
        Some(i) => serve(i, &headers),
        None => super::super::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no file {file:?} in the page"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_compresses_and_the_page_stays_small() {
        assert!(prepared().iter().all(|p| !p.gzip.is_empty()));
        // The issue's budget is 300 KB for everything the page loads.
        let total: usize = prepared().iter().map(|p| p.gzip.len()).sum();
        assert!(total < 300 * 1024, "{total}");
    }

    #[test]
    fn gzip_is_served_only_when_accepted() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&h)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn no_inline_script_or_style_in_the_html() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("style="), "inline style attribute");
        assert!(!html.contains("<style"), "inline style element");
        for tag in html.split("<script").skip(1) {
            assert!(
                tag.trim_start().starts_with("type=\"module\" src=") || tag.contains(" src="),
                "inline script: {tag}"
            );
        }
    }
}
