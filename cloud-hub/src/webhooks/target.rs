//! Where a webhook may point (against SSRF: a subscription must not turn
//! the hub into a client of its own database, its cloud's metadata service
//! or the lab's internal hosts): `https://` only unless
//! `webhooks.allow_http`, and only public addresses unless
//! `webhooks.allow_private_targets`. Checked when a subscription is made
//! and again at every connection, by the resolver the worker's client uses,
//! so a name that later resolves to a private address (DNS rebinding) is
//! refused too.

use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Whether an address is one the public internet routes to.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_broadcast()
        || a.is_documentation()
        || a.is_unspecified()
        || a.is_multicast()
        || o[0] == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // Benchmarking, 198.18.0.0/15.
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        // IETF protocol assignments, 192.0.0.0/24.
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        // Reserved, 240.0.0.0/4.
        || o[0] >= 240)
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10.
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        // Documentation 2001:db8::/32.
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // NAT64 and IPv4-compatible forms hide an IPv4 address: refused.
        || (s[0] == 0x0064 && s[1] == 0xff9b)
        || s[..6] == [0; 6])
}

/// What the URL rules allow.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub allow_http: bool,
    pub allow_private: bool,
}

/// Checks a URL's form and, for a literal address or `localhost`, its
/// target. Returns the host and port to resolve for the rest.
pub fn check_url(url: &str, p: Policy) -> Result<(String, u16), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`url` is not a valid URL: {e}"))?;
    let port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") if p.allow_http => 80,
        Some("http") => {
            return Err(
                "`url` must be https:// (webhooks.allow_http is off: events name customers and results)"
                    .into(),
            );
        }
        _ => return Err("`url` must be an https:// URL".into()),
    };
    let auth = uri
        .authority()
        .ok_or("`url` must name a host (https://lims.example.com/hooks/qi)")?;
    if auth.as_str().contains('@') {
        return Err(
            "`url` must not carry a user name or password; the signature authenticates the hub"
                .into(),
        );
    }
    if url.contains('#') {
        return Err("`url` must not have a fragment".into());
    }
    let host = auth.host().trim_matches(['[', ']']).to_ascii_lowercase();
    let port = auth.port_u16().unwrap_or(port);
    if !p.allow_private {
        let local_name = host == "localhost" || host.ends_with(".localhost");
        let private_ip = host.parse::<IpAddr>().is_ok_and(|ip| !is_public(ip));
        if local_name || private_ip {
            return Err(refusal(&host));
        }
    }
    Ok((host, port))
}

fn refusal(host: &str) -> String {
    format!(
        "`url` points at {host}, a loopback, private or otherwise non-public address; \
         the hub does not send there unless webhooks.allow_private_targets is on"
    )
}

/// Checks a URL completely: its form, then every address its host resolves
/// to (the check a subscription passes when it is made).
pub async fn check_url_resolving(url: &str, p: Policy) -> Result<(), String> {
    let (host, port) = check_url(url, p)?;
    if p.allow_private || host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout(std::time::Duration::from_secs(5), lookup)
        .await
        .map_err(|_| format!("`url`: resolving {host} took longer than 5 s"))?
        .map_err(|e| format!("`url`: cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(refusal(&host));
    }
    Ok(())
}

/// The worker's resolver: the system's, with non-public answers refused
/// unless allowed.
#[derive(Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow || is_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    refusal(&host),
                ));
            }
            Ok(public.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy {
        allow_http: false,
        allow_private: false,
    };

    #[test]
    fn private_loopback_and_odd_targets_are_refused_by_default() {
        for bad in [
            "https://127.0.0.1/x",
            "https://localhost:8443/x",
            "https://10.1.2.3/x",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
        ] {
            let e = check_url(bad, STRICT).expect_err(bad);
            assert!(e.contains("allow_private_targets"), "{bad}: {e}");
        }
        for bad in [
            "http://lims.example.com/x",
            "ftp://x/",
            "https://u:p@lims.example.com/",
        ] {
            assert!(check_url(bad, STRICT).is_err(), "{bad}");
        }
        assert_eq!(
            check_url("https://lims.example.com:8443/hook", STRICT),
            Ok(("lims.example.com".into(), 8443))
        );
        assert!(check_url("https://8.8.8.8/x", STRICT).is_ok());
    }

    #[test]
    fn the_config_keys_open_what_they_say() {
        let http = Policy {
            allow_http: true,
            allow_private: false,
        };
        assert!(check_url("http://lims.example.com/x", http).is_ok());
        assert!(check_url("http://127.0.0.1:9/x", http).is_err());
        let private = Policy {
            allow_http: true,
            allow_private: true,
        };
        assert!(check_url("http://127.0.0.1:9/x", private).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        use tower_service::Service;
        let mut strict = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().expect("name");
        assert!(strict.call(name.clone()).await.is_err());
        let mut open = GuardedResolver {
            allow_private: true,
        };
        assert!(open.call(name).await.is_ok());
    }
}
