//! `[live]` (the live stream's limits) and `[alarms]` (webhooks). The code
//! that uses them is `crate::live` and `crate::alarms`; the settings live
//! here so that the config types do not depend on it.

use serde::Deserialize;

/// `[live]`: the fan-out of what just happened and the SSE streams over it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Concurrent `GET /api/v1/twins/stream` connections; beyond, 503.
    #[serde(default = "default_max_subscribers")]
    pub max_subscribers: usize,
    /// Events a subscriber may fall behind before it is skipped ahead.
    #[serde(default = "default_fanout_capacity")]
    pub fanout_capacity: usize,
    /// Events kept for clients resuming with `Last-Event-ID`.
    #[serde(default = "default_resume_events")]
    pub resume_events: usize,
    /// SSE events queued for one connection while its socket is busy.
    #[serde(default = "default_client_buffer_events")]
    pub client_buffer_events: usize,
    /// A connection whose queue stays full this long is dropped.
    #[serde(default = "default_send_timeout_s")]
    pub send_timeout_s: u64,
    /// A comment line is sent when nothing else was for this long.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
}

fn default_max_subscribers() -> usize {
    2000
}
// A slot holds a whole batch (up to uplink.batch_max readings, ~150 bytes
// each): 1024 batches of the agents' default 1000 readings is ~150 MiB at
// most, and at 50 batches/s still 20 s of lag or reconnect.
fn default_fanout_capacity() -> usize {
    1024
}
fn default_resume_events() -> usize {
    1024
}
fn default_client_buffer_events() -> usize {
    256
}
fn default_send_timeout_s() -> u64 {
    10
}
fn default_keepalive_s() -> u64 {
    15
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            max_subscribers: default_max_subscribers(),
            fanout_capacity: default_fanout_capacity(),
            resume_events: default_resume_events(),
            client_buffer_events: default_client_buffer_events(),
            send_timeout_s: default_send_timeout_s(),
            keepalive_s: default_keepalive_s(),
        }
    }
}

impl LiveConfig {
    /// On error, the key (below `live`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("max_subscribers", self.max_subscribers),
            ("fanout_capacity", self.fanout_capacity),
            ("client_buffer_events", self.client_buffer_events),
        ] {
            if v == 0 {
                return Err((key, "must be >= 1".into()));
            }
        }
        for (key, v) in [
            ("fanout_capacity", self.fanout_capacity),
            ("resume_events", self.resume_events),
        ] {
            if v > 1 << 20 {
                return Err((
                    key,
                    "must be at most 1048576 (events are held in memory)".into(),
                ));
            }
        }
        if self.send_timeout_s == 0 {
            return Err(("send_timeout_s", "must be >= 1".into()));
        }
        if self.keepalive_s == 0 {
            return Err(("keepalive_s", "must be >= 1".into()));
        }
        Ok(())
    }
}

/// `[alarms]`: where alarm notifications go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// `[[alarms.webhooks]]`: each gets every alarm change, signed.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// Most time for one delivery attempt.
    #[serde(default = "default_webhook_timeout_s")]
    pub webhook_timeout_s: u64,
    /// Attempts per notification and webhook (the first included).
    #[serde(default = "default_webhook_attempts")]
    pub webhook_attempts: u32,
    /// First retry after this long, doubling per attempt (up to 60 s).
    #[serde(default = "default_webhook_retry_ms")]
    pub webhook_retry_ms: u64,
    /// Notifications waiting for delivery per webhook; beyond, dropped and counted.
    #[serde(default = "default_webhook_queue")]
    pub webhook_queue: usize,
}

/// One webhook.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `https://...`, or `http://` to a loopback address.
    pub url: String,
    /// HMAC-SHA256 key of the signature header (at least 16 bytes).
    pub secret: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("Webhook").field("url", &self.url).finish()
    }
}

fn default_webhook_timeout_s() -> u64 {
    5
}
fn default_webhook_attempts() -> u32 {
    6
}
fn default_webhook_retry_ms() -> u64 {
    1000
}
fn default_webhook_queue() -> usize {
    1000
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            webhooks: Vec::new(),
            webhook_timeout_s: default_webhook_timeout_s(),
            webhook_attempts: default_webhook_attempts(),
            webhook_retry_ms: default_webhook_retry_ms(),
            webhook_queue: default_webhook_queue(),
        }
    }
}

impl AlarmsConfig {
    /// On error, the key (below `alarms`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, w) in self.webhooks.iter().enumerate() {
            let loopback_http = w.url.strip_prefix("http://").is_some_and(|rest| {
                let host = rest.split(['/', '?']).next().unwrap_or("");
                let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback())
            });
            if !(w.url.starts_with("https://") || loopback_http) {
                return Err((
                    format!("webhooks[{i}].url"),
                    "must be https:// (plain http:// only to a loopback address): \
                     notifications name twins and values"
                        .into(),
                ));
            }
            if w.url.parse::<http::Uri>().is_err() {
                return Err((format!("webhooks[{i}].url"), "is not a valid URL".into()));
            }
            if w.secret.len() < 16 {
                return Err((
                    format!("webhooks[{i}].secret"),
                    "must be at least 16 bytes (receivers check the signature with it)".into(),
                ));
            }
        }
        if self.webhook_timeout_s == 0 {
            return Err(("webhook_timeout_s".into(), "must be >= 1".into()));
        }
        if self.webhook_attempts == 0 {
            return Err(("webhook_attempts".into(), "must be >= 1".into()));
        }
        if self.webhook_queue == 0 {
            return Err(("webhook_queue".into(), "must be >= 1".into()));
        }
        Ok(())
    }
}
