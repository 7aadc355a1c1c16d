//! The identity provider's documents over HTTP(S): hyper with rustls on ring
//! and the webpki roots (reqwest's rustls feature would pull aws-lc-rs).
//!
//! Every URL passes `config::oidc::check_url` first (https, or http to
//! loopback only).

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Discovery documents and key sets are a few KiB; anything far larger is
/// not one, and must not be buffered whole.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a URL may not be used, or a fetch failed (a human-readable sentence).
pub(super) type FetchError = String;

pub(super) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl Fetcher {
    pub(super) fn new(timeout: Duration) -> Result<Fetcher, FetchError> {
        let provider = tokio_rustls::rustls::crypto::ring::default_provider();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| format!("TLS setup: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Fetcher { client, timeout })
    }

    /// GETs a JSON document (status 200, at most 1 MiB, within the timeout).
    pub(super) async fn get_json(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        let uri = crate::config::oidc::check_url(url)?;
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| format!("GET {url}: {e}"))?;
        let fetch = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| format!("GET {url}: reading the body: {e}"))?
                .to_bytes();
            if status != http::StatusCode::OK {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(format!("GET {url}: HTTP {status}: {text}"));
            }
            serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| format!("GET {url}: no answer within {:?}", self.timeout))?
    }
}

/// hyper's errors say "client error (Connect)" and keep the cause underneath.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
