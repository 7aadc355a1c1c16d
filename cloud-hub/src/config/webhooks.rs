//! `[webhooks]`: where the lab's outbound webhooks may go and how their
//! deliveries are retried (`crate::webhooks`, docs/webhooks.md).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Subscriptions may name plain `http://` URLs (tests, a receiver on
    /// the hub's own host); otherwise only `https://`.
    #[serde(default)]
    pub allow_http: bool,
    /// Subscriptions may target loopback, private, link-local and other
    /// non-public addresses (checked at creation and at every connection).
    #[serde(default)]
    pub allow_private_targets: bool,
    /// Attempts per delivery, the first included; then it is a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles per attempt, with jitter.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Longest wait between two attempts.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Most time for one attempt: connect, send, answer.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Deliveries in flight at once (all receivers together).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

fn default_max_attempts() -> u32 {
    10
}
fn default_backoff_base_ms() -> u64 {
    2_000
}
fn default_backoff_max_ms() -> u64 {
    3_600_000
}
fn default_timeout_s() -> u64 {
    10
}
fn default_concurrency() -> u32 {
    4
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_http: false,
            allow_private_targets: false,
            max_attempts: default_max_attempts(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            timeout_s: default_timeout_s(),
            concurrency: default_concurrency(),
        }
    }
}

impl WebhooksConfig {
    /// On error, the key (with `webhooks.`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, why: &str| Err((format!("webhooks.{k}"), why.to_string()));
        if !(1..=100).contains(&self.max_attempts) {
            return bad("max_attempts", "must be 1..=100");
        }
        if !(1..=3_600_000).contains(&self.backoff_base_ms) {
            return bad("backoff_base_ms", "must be 1..=3600000 (one hour)");
        }
        if self.backoff_max_ms < self.backoff_base_ms || self.backoff_max_ms > 86_400_000 {
            return bad(
                "backoff_max_ms",
                "must be at least webhooks.backoff_base_ms and at most 86400000 (one day)",
            );
        }
        if !(1..=300).contains(&self.timeout_s) {
            return bad("timeout_s", "must be 1..=300 seconds");
        }
        if !(1..=64).contains(&self.concurrency) {
            return bad("concurrency", "must be 1..=64");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused_by_key() {
        let ok = WebhooksConfig::default();
        assert!(ok.validate().is_ok());
        for (c, key) in [
            (
                WebhooksConfig {
                    max_attempts: 0,
                    ..ok
                },
                "webhooks.max_attempts",
            ),
            (
                WebhooksConfig {
                    backoff_base_ms: 0,
                    ..ok
                },
                "webhooks.backoff_base_ms",
            ),
            (
                WebhooksConfig {
                    backoff_max_ms: 1,
                    ..ok
                },
                "webhooks.backoff_max_ms",
            ),
            (WebhooksConfig { timeout_s: 0, ..ok }, "webhooks.timeout_s"),
            (
                WebhooksConfig {
                    concurrency: 65,
                    ..ok
                },
                "webhooks.concurrency",
            ),
        ] {
            assert_eq!(c.validate().map_err(|(k, _)| k), Err(key.to_string()));
        }
    }
}
