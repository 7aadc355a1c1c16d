//! The hub's configuration file (TOML). Every key is documented in
//! `docs/configuration.md`; keep the two in step.

mod auth;
pub mod calibration;
pub mod certificates;
pub mod exports;
pub mod lab;
pub mod live;
pub mod oidc;
pub mod webhooks;

pub use auth::AuthConfig;

use qi_common::config::{ConfigError, load_toml_validated};
use qi_common::logging::LogFormat;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    #[serde(default)]
    pub grpc: GrpcConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Traces over OTLP (off by default).
    #[serde(default)]
    pub telemetry: qi_common::telemetry::TelemetryConfig,
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    #[serde(default)]
    pub retention: crate::storage::Retention,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub live: live::LiveConfig,
    #[serde(default)]
    pub alarms: live::AlarmsConfig,
    #[serde(default)]
    pub lab: lab::LabConfig,
    #[serde(default)]
    pub exports: exports::ExportsConfig,
    #[serde(default)]
    pub certificates: certificates::CertificatesConfig,
    #[serde(default)]
    pub webhooks: webhooks::WebhooksConfig,
    #[serde(default)]
    pub calibration: calibration::CalibrationConfig,
}

/// `[analytics]`: rollups and query limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// How often the 1-minute and 1-hour rollups are brought up to date (their lag).
    #[serde(default = "default_rollup_interval_s")]
    pub rollup_interval_s: u64,
    /// A raw query that would read more samples than this is refused with advice.
    #[serde(default = "default_max_scan_rows")]
    pub max_scan_rows: i64,
    /// Most buckets (or points) one series may return.
    #[serde(default = "default_max_points")]
    pub max_points: i64,
    /// Most series in one request.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            rollup_interval_s: default_rollup_interval_s(),
            max_scan_rows: default_max_scan_rows(),
            max_points: default_max_points(),
            max_series: default_max_series(),
        }
    }
}

fn default_rollup_interval_s() -> u64 {
    10
}
fn default_max_scan_rows() -> i64 {
    5_000_000
}
fn default_max_points() -> i64 {
    10_000
}
fn default_max_series() -> usize {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL. The `QI_HUB_DATABASE_URL` environment variable (or
    /// `--database-url`) overrides it, so the password need not be in the file.
    #[serde(default)]
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// On start, keep retrying (with backoff, each failure logged) for this
    /// long before giving up; also the pool's wait for a connection.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// `auto` (the best tier the database offers), `none` or `citus` (required).
    #[serde(default)]
    pub tier: crate::storage::TierChoice,
    /// `copy` or `insert` (servers without COPY FROM STDIN).
    #[serde(default)]
    pub ingest: crate::storage::IngestMethod,
    /// Several hubs over one database: run the singleton background jobs
    /// (rollups, retention, calibration checks) only on the elected leader.
    /// `false`: this hub runs them unconditionally (one hub only, or a server
    /// that takes a single connection).
    #[serde(default = "default_true")]
    pub leader_election: bool,
    /// A streaming replica of `url` for the analytics queries (empty: none).
    #[serde(default)]
    pub read_url: String,
}

fn default_true() -> bool {
    true
}
fn default_max_connections() -> u32 {
    8
}
fn default_connect_timeout_s() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Where gateways connect.
    #[serde(default = "default_grpc_listen")]
    pub listen: SocketAddr,
    /// How gateways prove who they are.
    #[serde(default)]
    pub auth: GatewayAuth,
    /// Server certificate and key (PEM). Required for `mtls`; for `token`,
    /// optional (TLS may be terminated by a proxy in front of the hub).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs gateway certificates; required for `mtls`.
    pub client_ca: Option<PathBuf>,
    /// `token` mode: gateway id -> SHA-256 of its token, 64 hex digits.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
    /// Readings stamped further ahead of the hub's clock are refused.
    #[serde(default = "default_max_future_skew_s")]
    pub max_future_skew_s: i64,
}

fn default_max_future_skew_s() -> i64 {
    qi_proto::limits::MAX_FUTURE_SKEW_S
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayAuth {
    /// Anyone may connect and claim any gateway id: development only.
    #[default]
    None,
    /// Client certificates signed by `client_ca`; the gateway id is the
    /// certificate's subject common name.
    Mtls,
    /// `authorization: Bearer <token>` per gateway, checked against `tokens`.
    Token,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: default_grpc_listen(),
            auth: GatewayAuth::None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            tokens: BTreeMap::new(),
            max_future_skew_s: default_max_future_skew_s(),
        }
    }
}

/// Loopback: a hub reachable from other machines needs gateway
/// authentication first (validate refuses `auth = "none"` elsewhere).
fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// REST API, `/health`, `/ready`, `/metrics`.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Largest `limit` a list endpoint accepts.
    #[serde(default = "default_max_limit")]
    pub max_page_size: u32,
    /// The API's base URL as clients reach it (a proxy in front); empty:
    /// `http://<listen>`.
    #[serde(default)]
    pub public_url: String,
}

impl HttpConfig {
    /// The base URL links to the API are made from, without a trailing `/`.
    pub fn public_url(&self) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.public_url.trim_end_matches('/').to_string()
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            max_page_size: default_max_limit(),
            public_url: String::new(),
        }
    }
}

/// Loopback: central ops reach the API through a TLS-terminating proxy, or
/// set this to a routable address knowingly (tokens and passwords travel in
/// it).
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_max_limit() -> u32 {
    10_000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        load_toml_validated(path, Config::validate)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.telemetry.validate("telemetry")?;
        if self.database.max_connections == 0 {
            return Err(("database.max_connections".into(), "must be >= 1".into()));
        }
        let g = &self.grpc;
        if g.tls_cert.is_some() != g.tls_key.is_some() {
            return Err((
                "grpc.tls_cert".into(),
                "tls_cert and tls_key go together".into(),
            ));
        }
        match g.auth {
            GatewayAuth::Mtls if g.tls_cert.is_none() || g.client_ca.is_none() => {
                return Err((
                    "grpc.auth".into(),
                    "\"mtls\" needs grpc.tls_cert, grpc.tls_key and grpc.client_ca".into(),
                ));
            }
            GatewayAuth::Token => {
                if g.tokens.is_empty() {
                    return Err((
                        "grpc.tokens".into(),
                        "\"token\" auth needs at least one gateway token".into(),
                    ));
                }
                for (gw, hash) in &g.tokens {
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err((
                            format!("grpc.tokens.{gw}"),
                            "must be the SHA-256 of the token, 64 hex digits (sha256sum)".into(),
                        ));
                    }
                }
            }
            GatewayAuth::None if !g.listen.ip().is_loopback() => {
                return Err((
                    "grpc.auth".into(),
                    format!(
                        "is \"none\" while grpc.listen = {} is reachable from other machines: \
                         any host could send readings for any gateway. Set grpc.auth = \"mtls\" \
                         (with tls_cert, tls_key, client_ca) or \"token\" (with [grpc.tokens]); \
                         see docs/security.md. For a hub that only local gateways reach, \
                         listen on 127.0.0.1",
                        g.listen
                    ),
                ));
            }
            _ => {}
        }
        let a = &self.auth;
        if a.access_token_ttl_s == 0 || a.access_token_ttl_s > 86_400 {
            return Err((
                "auth.access_token_ttl_s".into(),
                "must be 1..=86400 seconds".into(),
            ));
        }
        if a.refresh_token_ttl_s < a.access_token_ttl_s {
            return Err((
                "auth.refresh_token_ttl_s".into(),
                "must be at least auth.access_token_ttl_s".into(),
            ));
        }
        if a.signing_key_rotation_days == 0 {
            return Err((
                "auth.signing_key_rotation_days".into(),
                "must be >= 1".into(),
            ));
        }
        if a.login_attempts_per_minute == 0 {
            return Err((
                "auth.login_attempts_per_minute".into(),
                "must be >= 1 (0 would lock everyone out)".into(),
            ));
        }
        if a.issuer.is_empty() || a.audience.is_empty() {
            return Err((
                "auth.issuer".into(),
                "issuer and audience must not be empty".into(),
            ));
        }
        if self.http.max_page_size == 0 {
            return Err(("http.max_page_size".into(), "must be >= 1".into()));
        }
        let url = &self.http.public_url;
        if !url.is_empty()
            && (!(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(['?', '#', ' '])
                || url.chars().any(char::is_control))
        {
            return Err((
                "http.public_url".into(),
                "must be an http:// or https:// URL without query or fragment, e.g. \"https://hub.example.com\"".into(),
            ));
        }
        if self.database.connect_timeout_s == 0 {
            return Err((
                "database.connect_timeout_s".into(),
                "is 0: no connection could ever be handed out and the hub would not start; \
                 set it to how long to wait for the database (default 30)"
                    .into(),
            ));
        }
        if self.grpc.max_future_skew_s <= 0 {
            return Err((
                "grpc.max_future_skew_s".into(),
                "must be > 0 (seconds a reading may be stamped ahead of the hub's clock; \
                 at 0 a gateway whose clock is a moment ahead would have every batch refused)"
                    .into(),
            ));
        }
        self.validate_analytics()?;
        self.lab.validate()?;
        self.exports.validate()?;
        self.certificates.validate()?;
        self.webhooks.validate()?;
        self.calibration.validate()?;
        self.live
            .validate()
            .map_err(|(key, why)| (format!("live.{key}"), why))?;
        self.alarms
            .validate()
            .map_err(|(key, why)| (format!("alarms.{key}"), why))?;
        if let Some(oidc) = &self.auth.oidc {
            oidc.validate()
                .map_err(|(key, why)| (format!("auth.oidc.{key}"), why))?;
        }
        self.validate_retention()
    }

    fn validate_analytics(&self) -> Result<(), (String, String)> {
        let a = &self.analytics;
        if a.rollup_interval_s == 0 {
            return Err((
                "analytics.rollup_interval_s".into(),
                "must be > 0 (seconds between rollup refreshes; default 10)".into(),
            ));
        }
        if a.max_scan_rows <= 0 {
            return Err((
                "analytics.max_scan_rows".into(),
                "must be > 0 (at 0 every raw query is refused)".into(),
            ));
        }
        if a.max_points <= 0 {
            return Err((
                "analytics.max_points".into(),
                "must be > 0 (at 0 every aggregate is refused)".into(),
            ));
        }
        if a.max_series == 0 {
            return Err((
                "analytics.max_series".into(),
                "must be > 0 (at 0 every aggregate is refused)".into(),
            ));
        }
        Ok(())
    }

    fn validate_retention(&self) -> Result<(), (String, String)> {
        let r = &self.retention;
        for (key, days) in [
            ("retention.raw_days", r.raw_days),
            ("retention.minute_days", r.minute_days),
            ("retention.hour_days", r.hour_days),
        ] {
            if days < 0 {
                return Err((key.into(), "must be >= 0 (0 keeps data forever)".into()));
            }
        }
        if r.compress_after_days < 1 {
            return Err((
                "retention.compress_after_days".into(),
                "must be >= 1 (today's chunk is still being written)".into(),
            ));
        }
        if !(1..=366).contains(&r.partition_days_ahead) {
            return Err((
                "retention.partition_days_ahead".into(),
                "must be 1..=366".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
