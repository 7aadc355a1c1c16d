//! The open-loop engine: requests go out at fixed arrival times (a constant
//! rate: request `i` at `i / rate` seconds, no jitter, so two runs offer the
//! same load), whatever the answers do. Each latency runs from the request's
//! SCHEDULED send time, not from when a connection was free to send it: a
//! closed loop measures from the send, so a stalled server slows the load
//! down instead of showing up in the figures (coordinated omission).
//!
//! Connections: as many as the requests in flight need, up to
//! `max_connections` (HTTP/1.1: one request per connection). A request
//! due while every connection is busy waits for one, counted as a late
//! start; its wait is in its latency. A request whose answer is not in
//! `timeout` after its scheduled time is a timeout (counted, and its
//! latency is infinite in the percentiles, so a tail of timeouts shows as
//! such instead of vanishing).

use anyhow::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout_at;

/// One rate step.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Requests per second offered.
    pub rate: f64,
    /// Sent at the rate but not counted (connections opening, caches).
    pub warm: Duration,
    /// Counted: requests scheduled in `[warm, warm + window)`.
    pub window: Duration,
    pub max_connections: usize,
    /// From the scheduled time to the end of the answer.
    pub timeout: Duration,
}

impl Plan {
    /// When request `i` is due, from the start of the step.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Requests of the step: (all, the first counted one).
    pub fn count(&self) -> (u64, u64) {
        let n = |d: Duration| (d.as_secs_f64() * self.rate).ceil() as u64;
        (n(self.warm + self.window), n(self.warm))
    }
}

/// What a rate step measured (counted requests only).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests scheduled in the window.
    pub scheduled: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered non-2xx, or the connection failed.
    pub errors: u64,
    /// No answer `timeout` after the scheduled time (or no connection free
    /// by then: never sent).
    pub timeouts: u64,
    pub first_error: Option<String>,
    /// Due while every connection was busy: sent when one came free.
    pub late_starts: u64,
    /// The longest wait from scheduled to actual send.
    pub max_start_delay_ms: f64,
    /// Requests in flight at once, at most (= connections open, HTTP/1.1).
    pub peak_in_flight: usize,
    /// Per route: ms from the scheduled send to the end of the answer (2xx
    /// and timeouts; a timeout is +inf).
    pub by_route: Vec<Vec<f64>>,
    /// ms from the actual send (what a closed loop would report), 2xx only.
    pub service_ms: Vec<f64>,
    /// 2xx answers per second, from the first counted due time to the last
    /// counted answer.
    pub achieved_per_s: f64,
}

impl Outcome {
    /// Every counted latency (ms, timeouts +inf), all routes.
    pub fn latencies(&self) -> Vec<f64> {
        self.by_route.iter().flatten().copied().collect()
    }
}

/// What to send: route `k` and its path for request `i`.
pub type Paths = Arc<dyn Fn(u64) -> (usize, String) + Send + Sync>;

/// The answer to one request, as the dispatcher sees it.
struct Done {
    counted: bool,
    route: usize,
    due: Instant,
    sent: Instant,
    end: Instant,
    /// None: timeout.
    result: Option<Result<(), String>>,
}

/// Runs one rate step against `base` (`client` carries the auth headers).
/// `at_warm` is called once when the first counted request is due (start
/// the CPU window there); its value comes back with the outcome.
pub async fn run<W>(
    client: &reqwest::Client,
    base: &str,
    routes: usize,
    paths: &Paths,
    plan: &Plan,
    at_warm: impl FnOnce() -> W,
) -> (Outcome, W) {
    let (total, first) = plan.count();
    let slots = Arc::new(Semaphore::new(plan.max_connections));
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let mut out = Outcome {
        by_route: vec![Vec::new(); routes],
        ..Outcome::default()
    };
    let mut at_warm = Some(at_warm);
    let mut probe = None;
    let t0 = Instant::now();
    for i in 0..total {
        let due = t0 + plan.due(i);
        let counted = i >= first;
        tokio::time::sleep_until(due.into()).await;
        if counted && let Some(f) = at_warm.take() {
            probe = Some(f());
        }
        let deadline = due + plan.timeout;
        let (route, path) = paths(i);
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                if counted {
                    out.late_starts += 1;
                }
                match timeout_at(deadline.into(), Arc::clone(&slots).acquire_owned()).await {
                    Ok(Ok(s)) => s,
                    // Never sent: it would have timed out anyway.
                    _ => {
                        let _ = tx.send(Done {
                            counted,
                            route,
                            due,
                            sent: deadline,
                            end: deadline,
                            result: None,
                        });
                        continue;
                    }
                }
            }
        };
        let sent = Instant::now();
        out.peak_in_flight = out
            .peak_in_flight
            .max(plan.max_connections - slots.available_permits());
        let request = client.get(format!("{base}{path}"));
        let tx = tx.clone();
        tokio::spawn(async move {
            let answer = async {
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!("{path}: {}", r.status())),
                    Err(e) => Err(format!("{path}: {e}")),
                }
            };
            let result = timeout_at(deadline.into(), answer).await.ok();
            let end = Instant::now();
            drop(slot);
            let _ = tx.send(Done {
                counted,
                route,
                due,
                sent,
                end,
                result,
            });
        });
    }
    drop(tx);
    let probe = match (probe, at_warm) {
        (Some(p), _) => p,
        // A window shorter than one request: probe at the end.
        (None, Some(f)) => f(),
        (None, None) => unreachable!("at_warm is taken only where probe is set"),
    };
    let start = t0 + plan.due(first);
    let mut last = start;
    while let Some(d) = rx.recv().await {
        if !d.counted {
            continue;
        }
        out.scheduled += 1;
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
        out.max_start_delay_ms = out.max_start_delay_ms.max(ms(d.due, d.sent));
        match d.result {
            Some(Ok(())) => {
                out.ok += 1;
                out.by_route[d.route].push(ms(d.due, d.end));
                out.service_ms.push(ms(d.sent, d.end));
                last = last.max(d.end);
            }
            Some(Err(e)) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
            None => {
                out.timeouts += 1;
                out.by_route[d.route].push(f64::INFINITY);
            }
        }
    }
    let span = last.saturating_duration_since(start).as_secs_f64();
    out.achieved_per_s = if span > 0.0 {
        out.ok as f64 / span
    } else {
        0.0
    };
    (out, probe)
}

/// The `p` quantile (0..=1) of `v` (sorted here), nearest rank; NaN if empty.
pub fn quantile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64) * p).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The first (lowest) offered rate whose p99 is over `goal_ms`, from
/// (rate, p99) pairs in any order.
pub fn crossing(points: &[(f64, f64)], goal_ms: f64) -> Option<f64> {
    points
        .iter()
        // NaN (no answer at all) does not meet the goal either.
        .filter(|(_, p99)| p99.is_nan() || *p99 > goal_ms)
        .map(|(r, _)| *r)
        .min_by(f64::total_cmp)
}
