//! `[http]`: the local API's listener, TLS, allowed host names and the
//! web page's live-stream limits.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the local API (`/health`, `/metrics`, `/api/v1/devices`).
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Host names the local API answers to besides IP literals and `localhost`
    /// (a browser reaching it by another name may be a DNS rebinding attack).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this certificate chain and key (PEM); both or neither.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Live-update streams of the local web page (`GET /api/v1/live`) open
    /// at once, all sessions together; more are refused with 429.
    #[serde(default = "default_max_live_streams")]
    pub max_live_streams: usize,
    /// Of those, at most this many per login session (a few tabs).
    #[serde(default = "default_max_live_streams_per_session")]
    pub max_live_streams_per_session: usize,
}

fn default_max_live_streams() -> usize {
    32
}
fn default_max_live_streams_per_session() -> usize {
    4
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            allowed_hosts: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_live_streams: default_max_live_streams(),
            max_live_streams_per_session: default_max_live_streams_per_session(),
        }
    }
}

/// Why a name in `http.allowed_hosts` cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0:?} is not a host name (give names only, without scheme, port or path)")]
pub struct BadHostName(pub String);

impl HttpConfig {
    /// `allowed_hosts` in the form the local API compares them (see
    /// [`allowed_host_name`]); the first unusable entry is the error.
    pub fn allowed_host_names(&self) -> Result<Vec<String>, BadHostName> {
        self.allowed_hosts
            .iter()
            .map(|n| allowed_host_name(n))
            .collect()
    }
}

/// A configured host name, normalised as [`normalize_host_name`] does; only
/// plain names are accepted (a scheme, port or path would never match a Host).
pub fn allowed_host_name(name: &str) -> Result<String, BadHostName> {
    let norm = normalize_host_name(name);
    let ok = !norm.is_empty()
        && norm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(norm)
    } else {
        Err(BadHostName(name.to_string()))
    }
}

/// Host names compare case-insensitively and with or without the root's trailing dot.
pub fn normalize_host_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
