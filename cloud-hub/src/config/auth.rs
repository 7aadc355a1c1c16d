//! `[auth]` of the hub's configuration (docs/configuration.md).

use super::oidc;
use serde::Deserialize;

/// `[auth]`: the REST API's users, tokens and limits (docs/security.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of the hub's access tokens.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud` of the hub's access tokens.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Lifetime of an access token (seconds).
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl_s: u64,
    /// Lifetime of a refresh token (seconds).
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl_s: u64,
    /// A new signing key is made when the current one is this old (days).
    #[serde(default = "default_rotation_days")]
    pub signing_key_rotation_days: u64,
    /// Login, refresh and logout attempts one source address may make per minute.
    #[serde(default = "default_login_attempts")]
    pub login_attempts_per_minute: u32,
    /// `[auth.oidc]`: single sign-on with an OpenID Connect provider.
    #[serde(default)]
    pub oidc: Option<oidc::OidcConfig>,
}

fn default_issuer() -> String {
    "cloud-hub".into()
}
fn default_audience() -> String {
    "cloud-hub-api".into()
}
fn default_access_ttl() -> u64 {
    900
}
fn default_refresh_ttl() -> u64 {
    30 * 86_400
}
fn default_rotation_days() -> u64 {
    30
}
fn default_login_attempts() -> u32 {
    10
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: default_issuer(),
            audience: default_audience(),
            access_token_ttl_s: default_access_ttl(),
            refresh_token_ttl_s: default_refresh_ttl(),
            signing_key_rotation_days: default_rotation_days(),
            login_attempts_per_minute: default_login_attempts(),
            oidc: None,
        }
    }
}
