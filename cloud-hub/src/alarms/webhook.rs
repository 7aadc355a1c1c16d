//! Alarm notifications to webhooks (`[[alarms.webhooks]]`): a JSON POST,
//! signed with HMAC-SHA256 over `<timestamp>.<body>`, retried with
//! exponential backoff, from a bounded queue per webhook (a notification
//! that finds it full is dropped and counted, never buffered without end).

use crate::config::live::{AlarmsConfig, Webhook};
use crate::metric_names as m;
use crate::webhooks::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Webhooks {
    queues: Vec<mpsc::Sender<Bytes>>,
}

impl Webhooks {
    /// Starts one sender task per webhook.
    pub fn start(cfg: &AlarmsConfig) -> Result<Arc<Webhooks>, String> {
        let mut queues = Vec::new();
        if !cfg.webhooks.is_empty() {
            let provider = tokio_rustls::rustls::crypto::ring::default_provider();
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| format!("TLS setup for webhooks: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
            for hook in &cfg.webhooks {
                let (tx, rx) = mpsc::channel(cfg.webhook_queue);
                let sender = Sender {
                    client: client.clone(),
                    hook: hook.clone(),
                    timeout: Duration::from_secs(cfg.webhook_timeout_s),
                    attempts: cfg.webhook_attempts,
                    retry: Duration::from_millis(cfg.webhook_retry_ms),
                };
                tokio::spawn(sender.run(rx));
                queues.push(tx);
            }
        }
        Ok(Arc::new(Webhooks { queues }))
    }

    /// Queues `body` for every webhook.
    pub fn notify(&self, body: &serde_json::Value) {
        if self.queues.is_empty() {
            return;
        }
        let bytes = Bytes::from(body.to_string());
        for q in &self.queues {
            if q.try_send(bytes.clone()).is_err() {
                metrics::counter!(m::HUB_ALARM_WEBHOOK_DROPPED_TOTAL).increment(1);
                tracing::warn!(
                    "alarm webhook queue full (alarms.webhook_queue): notification dropped"
                );
            }
        }
    }
}

struct Sender {
    client: HttpClient,
    hook: Webhook,
    timeout: Duration,
    attempts: u32,
    retry: Duration,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Bytes>) {
        while let Some(body) = rx.recv().await {
            let mut wait = self.retry;
            for attempt in 1..=self.attempts {
                let result = self.attempt(&body).await;
                metrics::counter!(m::HUB_ALARM_WEBHOOK_ATTEMPTS_TOTAL, "result" => result.label())
                    .increment(1);
                if let Outcome::Ok = result {
                    break;
                }
                tracing::warn!(url = %self.hook.url, attempt, result = result.label(),
                    detail = %result.detail(), "alarm webhook attempt failed");
                if attempt == self.attempts {
                    metrics::counter!(m::HUB_ALARM_WEBHOOK_FAILED_TOTAL).increment(1);
                    tracing::error!(url = %self.hook.url, attempts = self.attempts,
                        "alarm notification given up");
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }

    async fn attempt(&self, body: &Bytes) -> Outcome {
        let ts = chrono::Utc::now().timestamp();
        let request = http::Request::post(self.hook.url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "cloud-hub-alarms")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(
                SIGNATURE_HEADER,
                sign(self.hook.secret.as_bytes(), ts, body),
            )
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Outcome::Unreachable(e.to_string()),
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Outcome::Timeout,
            Ok(Err(e)) => Outcome::Unreachable(e.to_string()),
            Ok(Ok(r)) if r.status().is_success() => Outcome::Ok,
            Ok(Ok(r)) => Outcome::HttpError(r.status().as_u16()),
        }
    }
}

enum Outcome {
    Ok,
    HttpError(u16),
    Timeout,
    Unreachable(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::HttpError(_) => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable(_) => "unreachable",
        }
    }

    fn detail(&self) -> String {
        match self {
            Outcome::HttpError(s) => format!("HTTP {s}"),
            Outcome::Unreachable(e) => e.clone(),
            Outcome::Ok | Outcome::Timeout => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real HTTP server on a loopback port: answers each request with the
    /// next status of `statuses` (after `delay`), reports each request's
    /// head and body.
    async fn server(
        statuses: Vec<u16>,
        delay: Duration,
    ) -> (String, mpsc::UnboundedReceiver<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for status in statuses {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                // Head and body arrive together for these small requests.
                while !String::from_utf8_lossy(&got).contains("\"alarm_id\"") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
                tokio::time::sleep(delay).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (url, rx)
    }

    fn cfg(url: &str, attempts: u32, timeout_s: u64, queue: usize) -> AlarmsConfig {
        AlarmsConfig {
            webhooks: vec![Webhook {
                url: url.to_string(),
                secret: "0123456789abcdef".into(),
            }],
            webhook_timeout_s: timeout_s,
            webhook_attempts: attempts,
            webhook_retry_ms: 50,
            webhook_queue: queue,
        }
    }

    #[tokio::test]
    async fn a_failed_delivery_is_retried_and_signed_each_time() {
        let (url, mut rx) = server(vec![500, 500, 200], Duration::ZERO).await;
        let w = Webhooks::start(&cfg(&url, 5, 5, 10)).expect("start");
        w.notify(&serde_json::json!({"alarm_id": 1}));
        for _ in 0..3 {
            let req = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an attempt")
                .expect("request");
            let head = req.to_ascii_lowercase();
            let ts: i64 = head
                .lines()
                .find_map(|l| l.strip_prefix("x-qi-timestamp: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("timestamp header");
            let body = req.split("\r\n\r\n").nth(1).expect("body");
            let want = sign(b"0123456789abcdef", ts, body.as_bytes());
            assert!(head.contains(&format!("x-qi-signature: {want}")), "{req}");
        }
    }

    #[tokio::test]
    async fn attempts_end_at_the_configured_count_and_slow_answers_time_out() {
        // Two attempts, each slower than the 1 s timeout: the third answer
        // is never asked for.
        let (url, mut rx) = server(vec![200, 200, 200], Duration::from_secs(3)).await;
        let w = Webhooks::start(&cfg(&url, 2, 1, 10)).expect("start");
        w.notify(&serde_json::json!({"alarm_id": 1}));
        let started = std::time::Instant::now();
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an attempt");
        }
        // The second attempt began after the first timed out.
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(
            tokio::time::timeout(Duration::from_secs(3), rx.recv())
                .await
                .is_err(),
            "a third attempt"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_notifications_instead_of_growing() {
        // The server never answers (3 s), the queue holds one notification.
        let (url, mut rx) = server(vec![200; 4], Duration::from_secs(3)).await;
        let w = Webhooks::start(&cfg(&url, 1, 10, 1)).expect("start");
        for i in 0..5 {
            w.notify(&serde_json::json!({"alarm_id": i}));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // One in flight, one queued: the other three were dropped.
        let mut got = 0;
        while tokio::time::timeout(Duration::from_secs(7), rx.recv())
            .await
            .is_ok_and(|r| r.is_some())
        {
            got += 1;
        }
        assert_eq!(got, 2);
    }
}
