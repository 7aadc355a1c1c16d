//! The local API's defence against DNS rebinding: a page on `evil.example`
//! whose name is re-pointed at this gateway's address would otherwise reach
//! the API from a browser on the LAN, with the browser's same-origin blessing.
//! Such a request still carries `Host: evil.example`, so the API answers only
//! Host values that name this gateway.
//!
//! Accepted: no Host at all (HTTP/1.0 tools; browsers always send one), an IP
//! address literal (a browser sends one only for a page whose origin is that
//! address, which no rebinding can forge), `localhost`, and the names listed
//! in `http.allowed_hosts`. The port is not compared: the name is what tells
//! a rebinding apart, and a proxy or port forward may change the port.

use crate::config::{allowed_host_name, normalize_host_name};
use axum::extract::{Request, State};
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

/// The names (besides IP literals and `localhost`) this gateway answers to.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: HashSet<String>,
}

pub use crate::config::BadHostName;

impl AllowedHosts {
    /// The names of `http.allowed_hosts`, checked and normalised by the
    /// configuration's rule ([`crate::config::allowed_host_name`]).
    pub fn new<'a>(
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<AllowedHosts, BadHostName> {
        let names = names
            .into_iter()
            .map(|n| allowed_host_name(n))
            .collect::<Result<HashSet<_>, _>>()?;
        Ok(AllowedHosts { names })
    }

    /// Whether a request's Host header value names this gateway.
    pub fn accepts(&self, host: &str) -> bool {
        let name = strip_port(host.trim());
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = normalize_host_name(name);
        name == "localhost" || self.names.contains(&name)
    }
}

/// `host:port` -> `host`; `[v6]:port` and `[v6]` -> `v6`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More than one without brackets: a bare IPv6 literal.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Middleware: 421 Misdirected Request, with a JSON message, for a Host that
/// does not name this gateway.
pub async fn check_host(
    State(allowed): State<Arc<AllowedHosts>>,
    req: Request,
    next: Next,
) -> Response {
    let host = match req.headers().get(HOST) {
        None => return next.run(req).await,
        Some(h) => h.to_str().ok().map(str::to_string),
    };
    match host {
        Some(h) if allowed.accepts(&h) => next.run(req).await,
        other => {
            let shown = other.unwrap_or_else(|| "(not text)".into());
            tracing::warn!(host = %shown, path = %req.uri().path(),
                "request refused: Host does not name this gateway (DNS rebinding?)");
            super::error(
                axum::http::StatusCode::MISDIRECTED_REQUEST,
                "bad_host",
                format!(
                    "Host {shown:?} is not a name of this gateway; use its IP address or \
                     localhost, or list the name in http.allowed_hosts"
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_localhost_and_listed_names_only() {
        let names = vec!["Gateway-7.plant.local.".to_string()];
        let a = AllowedHosts::new(&names).unwrap_or_default();
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:8080",
            "[::1]",
            "::1",
            "localhost:8080",
            "LOCALHOST",
            "gateway-7.plant.local:8080",
            "GATEWAY-7.plant.local.",
        ] {
            assert!(a.accepts(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "gateway-7.plant.local.evil",
            "",
            "[evil.example]:80",
        ] {
            assert!(!a.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn configured_names_must_be_plain_names() {
        for bad in ["http://x", "x:8080", "", "a b", "x/y"] {
            let names = vec![bad.to_string()];
            assert!(AllowedHosts::new(&names).is_err(), "{bad}");
        }
    }
}
