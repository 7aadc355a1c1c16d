//! The hub's configuration file (TOML). Every key is documented in
//! `docs/configuration.md`; keep the two in step.

use qi_common::config::{ConfigError, load_toml_validated};
use qi_common::logging::LogFormat;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

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
    /// Give up connecting on start after this long.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
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
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: default_grpc_listen(),
        }
    }
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50051))
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            max_page_size: default_max_limit(),
        }
    }
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8081))
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
        if self.database.max_connections == 0 {
            return Err(("database.max_connections".into(), "must be >= 1".into()));
        }
        if self.http.max_page_size == 0 {
            return Err(("http.max_page_size".into(), "must be >= 1".into()));
        }
        Ok(())
    }
}
