//! HTTP as the tests speak it: every request carries the credentials the
//! harness registered for its base URL (the hub's admin key, the agent's
//! operator session), so a test about readings need not log in first, and a
//! test about authentication uses plain `reqwest` (no credentials) or
//! [`Client::bare`].

use std::sync::Mutex;

/// Header name and value.
type Headers = Vec<(String, String)>;

/// Base URL -> headers every request under it carries.
static CREDENTIALS: Mutex<Vec<(String, Headers)>> = Mutex::new(Vec::new());

/// Remember `headers` for every request whose URL starts with `base_url`
/// (replacing what was registered for it before).
pub fn remember(base_url: &str, headers: Vec<(String, String)>) {
    let mut c = CREDENTIALS.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|(b, _)| b != base_url);
    c.push((base_url.to_string(), headers));
}

/// Forget the credentials of `base_url` (a stopped daemon's).
pub fn forget(base_url: &str) {
    let mut c = CREDENTIALS.lock().unwrap_or_else(|p| p.into_inner());
    c.retain(|(b, _)| b != base_url);
}

/// The headers registered for `url`, if any (longest matching base URL).
pub fn headers_for(url: &str) -> Vec<(String, String)> {
    let c = CREDENTIALS.lock().unwrap_or_else(|p| p.into_inner());
    c.iter()
        .filter(|(b, _)| url.starts_with(b.as_str()))
        .max_by_key(|(b, _)| b.len())
        .map(|(_, h)| h.clone())
        .unwrap_or_default()
}

/// A reqwest client that adds the registered credentials to each request.
#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    authenticated: bool,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client {
            inner: reqwest::Client::new(),
            authenticated: true,
        }
    }

    /// A client that sends no credentials (what an attacker has).
    pub fn bare() -> Client {
        Client {
            inner: reqwest::Client::new(),
            authenticated: false,
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        url: impl AsRef<str>,
    ) -> reqwest::RequestBuilder {
        let url = url.as_ref();
        let mut rb = self.inner.request(method, url);
        if self.authenticated {
            for (k, v) in headers_for(url) {
                rb = rb.header(k, v);
            }
        }
        rb
    }

    pub fn get(&self, url: impl AsRef<str>) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, url)
    }

    pub fn post(&self, url: impl AsRef<str>) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, url)
    }

    pub fn put(&self, url: impl AsRef<str>) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::PUT, url)
    }

    pub fn delete(&self, url: impl AsRef<str>) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::DELETE, url)
    }
}

/// `reqwest::get` with the registered credentials.
pub async fn get(url: impl AsRef<str>) -> reqwest::Result<reqwest::Response> {
    Client::new().get(url).send().await
}
