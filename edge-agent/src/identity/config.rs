//! `[auth]`: where the users live, how long sessions last, the login limit.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The users file; default: `users.json` next to the buffer directory.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// A session unused this long ends.
    #[serde(default = "default_idle_s")]
    pub session_idle_s: u64,
    /// A session ends this long after its login, used or not.
    #[serde(default = "default_max_s")]
    pub session_max_s: u64,
    /// Failed logins from one address within `login_window_s` before that
    /// address is refused (429) until the window has passed.
    #[serde(default = "default_max_failures")]
    pub login_max_failures: u32,
    #[serde(default = "default_window_s")]
    pub login_window_s: u64,
    /// SHA-256 (hex) of a bearer token that may read `/metrics` (Prometheus).
    #[serde(default)]
    pub metrics_token_sha256: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users_file: None,
            session_idle_s: default_idle_s(),
            session_max_s: default_max_s(),
            login_max_failures: default_max_failures(),
            login_window_s: default_window_s(),
            metrics_token_sha256: None,
        }
    }
}

fn default_idle_s() -> u64 {
    1800
}
fn default_max_s() -> u64 {
    12 * 3600
}
fn default_max_failures() -> u32 {
    5
}
fn default_window_s() -> u64 {
    300
}

impl AuthConfig {
    /// The users file, defaulting to `users.json` beside the buffer
    /// directory (the gateway's state directory, already private to the agent).
    pub fn users_path(&self, buffer_path: &Path) -> PathBuf {
        self.users_file.clone().unwrap_or_else(|| {
            buffer_path
                .parent()
                .map(|p| p.join("users.json"))
                .unwrap_or_else(|| PathBuf::from("users.json"))
        })
    }

    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_s)
    }
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.session_max_s)
    }
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.login_window_s)
    }

    /// The key at fault and why, for the config loader.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.session_idle_s == 0 {
            return Err(("auth.session_idle_s".into(), "must be > 0".into()));
        }
        if self.session_max_s < self.session_idle_s {
            return Err((
                "auth.session_max_s".into(),
                "must be >= auth.session_idle_s".into(),
            ));
        }
        if self.login_max_failures == 0 || self.login_window_s == 0 {
            return Err((
                "auth.login_max_failures".into(),
                "login_max_failures and login_window_s must be > 0".into(),
            ));
        }
        if let Some(h) = &self.metrics_token_sha256
            && !(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err((
                "auth.metrics_token_sha256".into(),
                "must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)".into(),
            ));
        }
        Ok(())
    }
}
