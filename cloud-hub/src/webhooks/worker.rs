//! The delivery worker: one loop that claims due deliveries (`FOR UPDATE
//! SKIP LOCKED`, so several hubs over one database share the work without
//! sending one twice), POSTs them signed with at most
//! `webhooks.concurrency` in flight, and records each outcome: delivered
//! on a 2xx, otherwise retried after an exponential backoff with jitter,
//! dead after `webhooks.max_attempts`.
//!
//! A claim counts the attempt and leases the delivery (its next attempt
//! moves past the request timeout) in one statement: a hub that dies with
//! a request in flight leaves a delivery that any hub retries once the
//! lease ends, so pending deliveries survive restarts.

use super::signature::{
    EVENT_HEADER, IDEMPOTENCY_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign,
};
use super::target::{self, GuardedResolver, Policy};
use crate::config::webhooks::WebhooksConfig;
use crate::metric_names as m;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How often the worker looks for due deliveries when nothing finished.
const POLL: Duration = Duration::from_millis(500);
/// How long a claimed delivery stays leased beyond the request timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The wait before attempt `attempt + 1`: base doubling per attempt, capped,
/// then a random point in its upper half (`jitter` in 0..=1) so receivers
/// that come back are not hit by every hub's retries at once.
pub fn backoff(attempt: u32, base_ms: u64, max_ms: u64, jitter: f64) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(40));
    let capped = exp.min(max_ms) as f64;
    Duration::from_millis((capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))) as u64)
}

fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    }
}

#[derive(sqlx::FromRow)]
struct Claimed {
    delivery_id: i64,
    attempts: i32,
    event_id: String,
    event_type: String,
    body: String,
    url: String,
    secret: Vec<u8>,
}

pub struct Worker {
    pool: PgPool,
    cfg: WebhooksConfig,
    client: HttpClient,
}

enum Outcome {
    Ok(u16),
    HttpError(u16),
    Timeout,
    Unreachable(String),
    /// The target is not allowed (an address the rules refuse): never retried.
    Refused(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::HttpError(_) => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::Refused(_) => "refused",
        }
    }

    fn status(&self) -> Option<i32> {
        match self {
            Outcome::Ok(s) | Outcome::HttpError(s) => Some(i32::from(*s)),
            _ => None,
        }
    }

    fn error(&self, timeout_s: u64) -> Option<String> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::HttpError(s) => Some(format!("HTTP {s}")),
            Outcome::Timeout => Some(format!(
                "no answer within {timeout_s} s (webhooks.timeout_s)"
            )),
            Outcome::Unreachable(e) | Outcome::Refused(e) => Some(e.chars().take(500).collect()),
        }
    }
}

/// The full chain of an error: hyper's top level says little ("client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Worker {
    pub fn new(pool: PgPool, cfg: WebhooksConfig) -> Result<Arc<Worker>, String> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow_private: cfg.allow_private_targets,
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(cfg.timeout_s)));
        let provider = tokio_rustls::rustls::crypto::ring::default_provider();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| format!("TLS setup for webhooks: {e}"))?;
        let connector = if cfg.allow_http {
            connector
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        } else {
            connector.https_only().enable_http1().wrap_connector(http)
        };
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Arc::new(Worker { pool, cfg, client }))
    }

    fn policy(&self) -> Policy {
        Policy {
            allow_http: self.cfg.allow_http,
            allow_private: self.cfg.allow_private_targets,
        }
    }

    /// Delivers until `stop`. Requests in flight then are dropped; their
    /// leases end and they are sent again (same Idempotency-Key).
    pub async fn run(self: Arc<Self>, mut stop: qi_common::shutdown::Stop) {
        let mut inflight: JoinSet<()> = JoinSet::new();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut polled = false;
            tokio::select! {
                () = stop.wait() => break,
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                _ = tick.tick() => polled = true,
            }
            if polled && let Err(e) = self.gauges().await {
                metrics::counter!(m::HUB_WEBHOOK_WORKER_ERRORS_TOTAL).increment(1);
                tracing::warn!(error = %e, "webhook queue gauges: database failed");
            }
            let free = (self.cfg.concurrency as usize).saturating_sub(inflight.len());
            if free == 0 {
                continue;
            }
            match self.claim(free as i64).await {
                Ok(rows) => {
                    for r in rows {
                        let w = Arc::clone(&self);
                        inflight.spawn(async move { w.deliver(r).await });
                    }
                }
                Err(e) => {
                    metrics::counter!(m::HUB_WEBHOOK_WORKER_ERRORS_TOTAL).increment(1);
                    tracing::warn!(error = %e, "cannot claim webhook deliveries; retrying");
                }
            }
        }
        inflight.abort_all();
    }

    async fn gauges(&self) -> Result<(), sqlx::Error> {
        let (depth, oldest): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
               FROM webhook_deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!(m::HUB_WEBHOOK_QUEUE_DEPTH).set(depth as f64);
        metrics::gauge!(m::HUB_WEBHOOK_OLDEST_PENDING_SECONDS).set(oldest.unwrap_or(0.0));
        Ok(())
    }

    async fn claim(&self, n: i64) -> Result<Vec<Claimed>, sqlx::Error> {
        let lease = Duration::from_secs(self.cfg.timeout_s) + LEASE_MARGIN;
        sqlx::query_as(
            "WITH due AS (
                 SELECT d.delivery_id FROM webhook_deliveries d
                   JOIN webhook_subscriptions s USING (subscription_id)
                  WHERE d.state = 'pending' AND d.next_attempt_at <= now() AND s.enabled
                  ORDER BY d.next_attempt_at LIMIT $1
                    FOR UPDATE OF d SKIP LOCKED)
             UPDATE webhook_deliveries d
                SET attempts = d.attempts + 1,
                    next_attempt_at = now() + $2 * interval '1 millisecond'
               FROM due, webhook_events e, webhook_subscriptions s
              WHERE d.delivery_id = due.delivery_id AND e.event_id = d.event_id
                AND s.subscription_id = d.subscription_id
          RETURNING d.delivery_id, d.attempts, e.event_id::text AS event_id, e.event_type, e.body,
                    s.url, s.secret",
        )
        .bind(n)
        .bind(lease.as_millis() as i64)
        .fetch_all(&self.pool)
        .await
    }

    async fn attempt(&self, c: &Claimed) -> Outcome {
        // A literal address never reaches the resolver: checked here.
        if let Err(e) = target::check_url(&c.url, self.policy()) {
            return Outcome::Refused(e);
        }
        let ts = chrono::Utc::now().timestamp();
        let request = http::Request::post(c.url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "cloud-hub-webhooks")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(&c.secret, ts, c.body.as_bytes()))
            .header(IDEMPOTENCY_KEY_HEADER, c.event_id.as_str())
            .header(EVENT_HEADER, c.event_type.as_str())
            .body(Full::new(Bytes::from(c.body.clone())));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Outcome::Refused(e.to_string()),
        };
        let timeout = Duration::from_secs(self.cfg.timeout_s);
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Outcome::Timeout,
            Ok(Err(e)) => {
                let detail = chain(&e);
                if detail.contains("allow_private_targets") {
                    Outcome::Refused(detail)
                } else {
                    Outcome::Unreachable(detail)
                }
            }
            Ok(Ok(r)) if r.status().is_success() => Outcome::Ok(r.status().as_u16()),
            Ok(Ok(r)) => Outcome::HttpError(r.status().as_u16()),
        }
    }

    async fn deliver(&self, c: Claimed) {
        let outcome = self.attempt(&c).await;
        metrics::counter!(m::HUB_WEBHOOK_ATTEMPTS_TOTAL, "result" => outcome.label()).increment(1);
        let attempts = c.attempts.max(0) as u32;
        let (state, wait) = match &outcome {
            Outcome::Ok(_) => ("delivered", Duration::ZERO),
            Outcome::Refused(_) => ("dead", Duration::ZERO),
            _ if attempts >= self.cfg.max_attempts => ("dead", Duration::ZERO),
            _ => (
                "retry",
                backoff(
                    attempts,
                    self.cfg.backoff_base_ms,
                    self.cfg.backoff_max_ms,
                    jitter(),
                ),
            ),
        };
        let error = outcome.error(self.cfg.timeout_s);
        // `attempts = $n`: a delivery whose lease ended and that another
        // claim took meanwhile is that claim's to record.
        let stored = sqlx::query(
            "UPDATE webhook_deliveries SET
                 state = CASE $3 WHEN 'retry' THEN 'pending' ELSE $3 END,
                 last_status = $4, last_error = $5,
                 next_attempt_at = CASE $3 WHEN 'retry'
                     THEN now() + $6 * interval '1 millisecond' ELSE next_attempt_at END,
                 delivered_at = CASE $3 WHEN 'delivered' THEN now() END,
                 dead_at = CASE $3 WHEN 'dead' THEN now() END
             WHERE delivery_id = $1 AND attempts = $2 AND state = 'pending'",
        )
        .bind(c.delivery_id)
        .bind(c.attempts)
        .bind(state)
        .bind(outcome.status())
        .bind(&error)
        .bind(wait.as_millis() as i64)
        .execute(&self.pool)
        .await;
        if let Err(e) = stored {
            // The lease ends and the delivery is tried again: at least once.
            metrics::counter!(m::HUB_WEBHOOK_WORKER_ERRORS_TOTAL).increment(1);
            tracing::warn!(delivery = c.delivery_id, error = %e, "cannot record a webhook delivery's outcome");
            return;
        }
        metrics::counter!(m::HUB_WEBHOOK_DELIVERIES_TOTAL, "outcome" => state).increment(1);
        match state {
            "delivered" => tracing::info!(delivery = c.delivery_id, event = %c.event_id,
                r#type = %c.event_type, attempts, "webhook delivered"),
            "dead" => tracing::error!(delivery = c.delivery_id, event = %c.event_id, url = %c.url,
                attempts, error = error.as_deref().unwrap_or(""),
                "webhook delivery dead: replay it from the dead letters once the receiver is fixed"),
            _ => tracing::warn!(delivery = c.delivery_id, event = %c.event_id, url = %c.url,
                attempts, result = outcome.label(), error = error.as_deref().unwrap_or(""),
                retry_in_ms = wait.as_millis() as u64, "webhook attempt failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_max_with_jitter_in_the_upper_half() {
        let ms = |a, j| backoff(a, 1000, 60_000, j).as_millis();
        assert_eq!((ms(1, 1.0), ms(2, 1.0), ms(3, 1.0)), (1000, 2000, 4000));
        assert_eq!(ms(1, 0.0), 500);
        assert_eq!(ms(30, 1.0), 60_000);
        assert_eq!(ms(100, 0.0), 30_000);
        // No overflow for huge attempt numbers or bases.
        assert_eq!(
            backoff(u32::MAX, u64::MAX, 86_400_000, 1.0),
            Duration::from_millis(86_400_000)
        );
    }
}
