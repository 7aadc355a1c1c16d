//! A small webhook receiver for the lab webhook tests (issue #15): a real
//! HTTP server on a loopback port that checks each request as a LIMS or QMS
//! would — the HMAC-SHA256 signature over `<timestamp>.<body>` with its own
//! copy of the secret (computed here with ring, not with the hub's code),
//! the timestamp within a window — records the Idempotency-Key of each
//! request, and answers as the test scripts it: 500 a number of times per
//! event, or sleeping past the hub's timeout.

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request older or newer than this (seconds) is refused as a replay.
pub const WINDOW_S: i64 = 300;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// 200 to every well-signed request.
    Ok,
    /// 500 to the first `n` requests of each event (by Idempotency-Key), then 200.
    FailEachEvent(usize),
    /// 500 to everything.
    AlwaysFail,
    /// Sleep this long, then 200 (past the hub's timeout: it has given up).
    Sleep(Duration),
    /// Hold each request until [`Receiver::release`], then 200.
    Hold,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: String,
    pub event_type: String,
    pub body: Value,
    /// The raw body bytes, as signed.
    pub raw: Vec<u8>,
    /// The signature and timestamp held (else the answer was 401).
    pub authentic: bool,
    /// What the receiver answered (0: slept past the hub's patience).
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    secret: Vec<u8>,
    mode: Option<Mode>,
    received: Vec<Received>,
    held: usize,
}

pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    released: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

type Shared = (Arc<Mutex<Inner>>, Arc<tokio::sync::watch::Sender<bool>>);

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The receiver's check: `x-qi-signature` is `sha256=` and the hex HMAC of
/// `<x-qi-timestamp>.<body>` under `secret`, compared in constant time, and
/// the timestamp is within `WINDOW_S` of `now`.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| format!("timestamp {timestamp:?} is not a number"))?;
    if (now - ts).abs() > WINDOW_S {
        return Err(format!("timestamp {ts} is outside the {WINDOW_S} s window"));
    }
    let got = signature
        .strip_prefix("sha256=")
        .ok_or("signature lacks sha256=")?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut msg = timestamp.as_bytes().to_vec();
    msg.push(b'.');
    msg.extend_from_slice(body);
    let tag: Option<Vec<u8>> = (0..got.len())
        .step_by(2)
        .map(|i| {
            got.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let tag = tag.ok_or("signature is not hex")?;
    // ring compares in constant time.
    ring::hmac::verify(&key, &msg, &tag).map_err(|_| "signature does not match".to_string())
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn hook(
    State((inner, released)): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = h("idempotency-key");
    let (secret, mode, seen) = {
        let g = lock(&inner);
        let seen = g
            .received
            .iter()
            .filter(|r| r.idempotency_key == key)
            .count();
        (g.secret.clone(), g.mode.unwrap_or(Mode::Ok), seen)
    };
    let now = chrono::Utc::now().timestamp();
    let authentic = verify(
        &secret,
        &h("x-qi-timestamp"),
        &h("x-qi-signature"),
        &body,
        now,
    )
    .is_ok();
    let status = if !authentic {
        401
    } else {
        match mode {
            Mode::Ok => 200,
            Mode::AlwaysFail => 500,
            Mode::FailEachEvent(n) if seen < n => 500,
            Mode::FailEachEvent(_) => 200,
            Mode::Sleep(_) => 0,
            Mode::Hold => 200,
        }
    };
    let record = Received {
        idempotency_key: key,
        event_type: h("x-qi-event"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        authentic,
        status,
    };
    lock(&inner).received.push(record);
    match (authentic, mode) {
        (true, Mode::Sleep(d)) => tokio::time::sleep(d).await,
        (true, Mode::Hold) => {
            lock(&inner).held += 1;
            let mut rx = released.subscribe();
            let _ = rx.wait_for(|r| *r).await;
            lock(&inner).held -= 1;
        }
        _ => {}
    }
    StatusCode::from_u16(if status == 0 { 200 } else { status }).unwrap_or(StatusCode::OK)
}

impl Receiver {
    /// Listens on a free loopback port; answers 200 until scripted otherwise.
    pub async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks/qi", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner::default()));
        let released = Arc::new(tokio::sync::watch::channel(false).0);
        let app = axum::Router::new()
            .fallback(axum::routing::post(hook))
            .with_state((Arc::clone(&inner), Arc::clone(&released)));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            url,
            inner,
            released,
            task,
        })
    }

    /// The secret the hub showed when the subscription was made.
    pub fn set_secret(&self, secret: &str) {
        lock(&self.inner).secret = secret.as_bytes().to_vec();
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.inner).mode = Some(mode);
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner).received.clone()
    }

    /// Requests it accepted (authentic, answered 2xx).
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.authentic && r.status == 200)
            .collect()
    }

    /// Every request carrying this Idempotency-Key.
    pub fn attempts_of(&self, key: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.idempotency_key == key)
            .collect()
    }

    /// Requests being held now ([`Mode::Hold`]).
    pub fn held(&self) -> usize {
        lock(&self.inner).held
    }

    /// Lets every held request (and every later one) answer 200.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// Waits (polling, generous deadline) for an accepted event of `kind`
    /// for which `pred` holds on its envelope.
    pub async fn wait_accepted(
        &self,
        kind: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Received> {
        crate::wait_for(
            &format!("an accepted {kind} webhook"),
            Duration::from_secs(90),
            || async {
                Ok(self
                    .accepted()
                    .into_iter()
                    .find(|r| r.event_type == kind && r.body["type"] == kind && pred(&r.body)))
            },
        )
        .await
        .with_context(|| format!("received so far: {:?}", self.summary()))
    }

    /// (type, key, status, authentic) of each request, for failure messages.
    pub fn summary(&self) -> Vec<(String, String, u16, bool)> {
        self.received()
            .into_iter()
            .map(|r| (r.event_type, r.idempotency_key, r.status, r.authentic))
            .collect()
    }
}
