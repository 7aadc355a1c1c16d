//! `[auth.oidc]`: single sign-on with an OpenID Connect provider. The
//! verifier that uses these settings is `identity::oidc`; they live here so
//! that the config file's types do not depend on the identity code (which
//! reads them).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `[auth.oidc]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer identifier, exactly as its tokens' `iss`.
    pub issuer: String,
    /// The `aud` a token must carry to be meant for the hub.
    pub audience: String,
    /// Dotted path to the claim listing the user's groups or roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim value -> hub role. Unmapped values are ignored.
    pub role_map: BTreeMap<String, MappedRole>,
    /// Dotted path to the claim listing the sites the user is limited to.
    #[serde(default)]
    pub sites_claim: Option<String>,
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    /// Least time between two fetches of the key set.
    #[serde(default = "default_jwks_min_refresh_s")]
    pub jwks_min_refresh_s: u64,
    /// Keys older than this are fetched again.
    #[serde(default = "default_jwks_max_age_s")]
    pub jwks_max_age_s: u64,
    #[serde(default = "default_http_timeout_s")]
    pub http_timeout_s: u64,
}

fn default_roles_claim() -> String {
    "roles".into()
}
fn default_clock_skew_s() -> u64 {
    60
}
fn default_jwks_min_refresh_s() -> u64 {
    10
}
fn default_jwks_max_age_s() -> u64 {
    3600
}
fn default_http_timeout_s() -> u64 {
    5
}

/// What a provider's claim value maps to: one of the hub's roles.
pub use qi_common::role::Role as MappedRole;

impl OidcConfig {
    /// Checks the settings; on error, the key (below `auth.oidc`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_url(&self.issuer).map_err(|e| ("issuer", e))?;
        if self.audience.trim().is_empty() {
            return Err(("audience", "must not be empty".into()));
        }
        for (key, path) in [
            ("roles_claim", Some(&self.roles_claim)),
            ("sites_claim", self.sites_claim.as_ref()),
        ] {
            if let Some(p) = path
                && (p.is_empty() || p.split('.').any(str::is_empty))
            {
                return Err((
                    key,
                    format!("`{p}` is not a claim path (e.g. `realm_access.roles`)"),
                ));
            }
        }
        if self.role_map.is_empty() {
            return Err((
                "role_map",
                "maps no claim value to a role, so every token would be refused".into(),
            ));
        }
        if self.clock_skew_s > 600 {
            return Err(("clock_skew_s", "must be <= 600 (ten minutes)".into()));
        }
        if self.jwks_min_refresh_s == 0 {
            return Err((
                "jwks_min_refresh_s",
                "must be >= 1: at 0 every token with an unknown key id would make the hub fetch the key set"
                    .into(),
            ));
        }
        if self.jwks_max_age_s < self.jwks_min_refresh_s {
            return Err(("jwks_max_age_s", "must be >= jwks_min_refresh_s".into()));
        }
        if self.http_timeout_s == 0 {
            return Err(("http_timeout_s", "must be >= 1".into()));
        }
        Ok(())
    }
}

/// Plain `http://` is allowed only to loopback hosts (a provider run by the
/// tests, or a sidecar on the same machine): anywhere else an attacker on
/// the path could hand the hub their own keys.
/// Checks the scheme policy; returns the parsed URI.
pub fn check_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("`{url}` has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(format!(
            "`{url}` is plain http to a host that is not loopback; use https"
        )),
        _ => Err(format!("`{url}` must start with https://")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<OidcConfig, toml::de::Error> {
        toml::from_str(&format!(
            "issuer = \"https://id.example\"\naudience = \"urn:qi:hub\"\n[role_map]\nops = \"viewer\"\n{extra}"
        ))
    }

    #[test]
    fn settings_are_checked() -> Result<(), toml::de::Error> {
        let ok = cfg("")?;
        assert_eq!((ok.clock_skew_s, ok.jwks_min_refresh_s), (60, 10));
        assert!(ok.validate().is_ok());
        assert!(cfg("nope = 1").is_err());
        assert!(cfg("[role_map]\nx = \"root\"").is_err(), "unknown role");
        for (c, key) in [
            (
                OidcConfig {
                    issuer: "http://id.example".into(),
                    ..ok.clone()
                },
                "issuer",
            ),
            (
                OidcConfig {
                    audience: " ".into(),
                    ..ok.clone()
                },
                "audience",
            ),
            (
                OidcConfig {
                    roles_claim: "a..b".into(),
                    ..ok.clone()
                },
                "roles_claim",
            ),
            (
                OidcConfig {
                    role_map: BTreeMap::new(),
                    ..ok.clone()
                },
                "role_map",
            ),
            (
                OidcConfig {
                    jwks_min_refresh_s: 0,
                    ..ok.clone()
                },
                "jwks_min_refresh_s",
            ),
            (
                OidcConfig {
                    jwks_max_age_s: 5,
                    ..ok.clone()
                },
                "jwks_max_age_s",
            ),
            (
                OidcConfig {
                    http_timeout_s: 0,
                    ..ok.clone()
                },
                "http_timeout_s",
            ),
            (
                OidcConfig {
                    clock_skew_s: 601,
                    ..ok.clone()
                },
                "clock_skew_s",
            ),
        ] {
            assert_eq!(c.validate().map_err(|e| e.0), Err(key));
        }
        Ok(())
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://login.example.com/realms/ops",
            "http://127.0.0.1:8080",
            "http://127.3.4.5/x",
            "http://localhost:9000/",
            "http://[::1]:9000/",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "http://10.0.0.1:8080",
            "ftp://127.0.0.1/",
            "login.example.com",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
