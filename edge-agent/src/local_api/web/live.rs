//! `GET /api/v1/live`: the page's live updates as Server-Sent Events. Each
//! second every open stream gets one `snapshot` event: the whole state the
//! page shows (the `/health` report, MQTT clients, alarms, runs). The
//! snapshot is built once a second and shared by all streams, so five open
//! pages cost one serialisation, not five.
//!
//! Resuming: a reconnecting browser (EventSource sends `Last-Event-ID`)
//! first gets a fresh full snapshot, so nothing the page shows is lost; the
//! values between the two (the chart's) are in the history
//! (`/api/v1/history`), which the page reloads after a reconnect.
//!
//! Bounds: `http.max_live_streams` in all, `http.max_live_streams_per_session`
//! per session (429 beyond). A stream ends when its session ends (logout,
//! expiry, user removed: a last `session_end` event says why) or the agent
//! stops; it does not refresh the session's idle timer.

use super::super::auth::session_token;
use super::super::{ApiState, error};
use crate::runs::RunView;
use crate::sources::health::DeviceHealth;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often a snapshot is sent.
const TICK: Duration = Duration::from_secs(1);
/// What the browser waits before reconnecting a broken stream.
const RETRY: Duration = Duration::from_secs(2);

/// One snapshot, serialised once for every stream.
#[derive(Default)]
pub struct Tick {
    pub id: u64,
    pub json: String,
}

/// An alarm: a point the profile marks `priority = "high"` (limit flags,
/// breakdowns, open circuits); active while its value is not 0.
#[derive(Serialize)]
struct Alarm<'a> {
    device: &'a str,
    point: &'a str,
    description: &'a str,
    value: Option<f64>,
    active: bool,
}

#[derive(Serialize)]
struct RunSummary<'a> {
    id: &'a str,
    protocol: &'a str,
    bench: &'a str,
    sample_id: &'a str,
    operator: &'a str,
    state: &'static str,
    step: &'a str,
    step_kind: &'a str,
    steps_done: u64,
    executed_steps: u64,
    elapsed_s: f64,
    message: Option<&'a str>,
    /// The hub's verdict of record once it said one (`verdicts`).
    hub_verdict: Option<String>,
}

impl<'a> RunSummary<'a> {
    fn of(r: &'a RunView, hub_verdict: Option<String>) -> RunSummary<'a> {
        RunSummary {
            id: &r.id,
            protocol: &r.protocol,
            bench: &r.bench,
            sample_id: &r.sample_id,
            operator: &r.operator,
            state: r.state.as_str(),
            step: &r.step,
            step_kind: &r.step_kind,
            steps_done: r.steps_done,
            executed_steps: r.executed_steps,
            elapsed_s: r.elapsed_s,
            message: r.message.as_deref(),
            hub_verdict,
        }
    }
}

#[derive(Serialize)]
struct Mqtt {
    clients: u64,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    time_ms: i64,
    #[serde(flatten)]
    report: &'a super::super::HealthReport,
    /// None: this gateway runs no MQTT bus.
    mqtt: Option<Mqtt>,
    alarms: Vec<Alarm<'a>>,
    runs: Vec<RunSummary<'a>>,
}

fn alarms<'a>(
    devices: &'a [DeviceHealth],
    models: &'a [(String, Arc<device_profile::Profile>)],
) -> Vec<Alarm<'a>> {
    let mut out = Vec::new();
    for (id, profile) in models {
        let health = devices.iter().find(|d| &d.device_id == id);
        for p in profile
            .points
            .iter()
            .filter(|p| p.priority == device_profile::Priority::High)
        {
            let value = health
                .and_then(|h| h.values.get(&p.name))
                .and_then(|v| v.value);
            out.push(Alarm {
                device: id,
                point: &p.name,
                description: &p.description,
                value,
                active: value.is_some_and(|v| v != 0.0),
            });
        }
    }
    out
}

/// The snapshot as JSON.
fn build(s: &ApiState) -> String {
    let report = s.report();
    let models = s.fleet.view().models;
    let runs = s.runs.list();
    let snap = Snapshot {
        time_ms: chrono::Utc::now().timestamp_millis(),
        report: &report,
        mqtt: s.mqtt_enabled.then(|| Mqtt {
            clients: crate::mqtt::connected_clients(),
        }),
        alarms: alarms(&report.devices, &models),
        runs: runs
            .iter()
            .map(|r| RunSummary::of(r, s.verdicts.of(&r.id).map(|h| h.final_verdict)))
            .collect(),
    };
    metrics::counter!(crate::metric_names::EDGE_WEB_SNAPSHOTS_TOTAL).increment(1);
    serde_json::to_string(&snap).unwrap_or_else(|e| {
        tracing::error!(error = %e, "live snapshot not serialisable");
        "{}".into()
    })
}

/// The page's background loop (see [`super::start`]).
pub(super) async fn produce(
    state: ApiState,
    tx: watch::Sender<Arc<Tick>>,
    mut stop: qi_common::shutdown::Stop,
) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id: u64 = 0;
    let history_every = super::HISTORY_STEP_S.max(1);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait() => return,
        }
        id += 1;
        if id % history_every == 1 {
            state.web.history.sample(&state.fleet.view().snapshot());
        }
        // Web holds one receiver to subscribe from; more means a stream is open.
        if tx.receiver_count() > 1 {
            let json = build(&state);
            tx.send_replace(Arc::new(Tick { id, json }));
        }
    }
}

/// The open streams, per session (by the SHA-256 of its token).
pub struct Streams {
    max: usize,
    per_session: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// A stream's place in the budget, given back when the stream is dropped.
pub struct Ticket {
    web: Arc<super::Web>,
    key: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.web.streams.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
        gauge(&open);
    }
}

fn gauge(open: &HashMap<String, usize>) {
    metrics::gauge!(crate::metric_names::EDGE_WEB_STREAMS).set(open.values().sum::<usize>() as f64);
}

impl Streams {
    pub fn new(max: usize, per_session: usize) -> Streams {
        Streams {
            max,
            per_session,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a stream of session `key`, or says which bound refused it.
    fn admit(&self, key: &str) -> Result<(), &'static str> {
        let mut open = self.lock();
        if open.values().sum::<usize>() >= self.max {
            return Err("total");
        }
        let n = open.entry(key.to_string()).or_insert(0);
        if *n >= self.per_session {
            if *n == 0 {
                open.remove(key);
            }
            return Err("per_session");
        }
        *n += 1;
        gauge(&open);
        Ok(())
    }
}

enum Phase {
    First(Arc<Tick>),
    Follow,
    Done,
}

struct Follow {
    state: ApiState,
    token: String,
    rx: watch::Receiver<Arc<Tick>>,
    phase: Phase,
    _ticket: Ticket,
}

fn snapshot_event(t: &Tick) -> Event {
    metrics::counter!(crate::metric_names::EDGE_WEB_EVENTS_TOTAL, "event" => "snapshot")
        .increment(1);
    Event::default()
        .id(t.id.to_string())
        .event("snapshot")
        .retry(RETRY)
        .data(t.json.as_str())
}

async fn next(mut f: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    match std::mem::replace(&mut f.phase, Phase::Follow) {
        Phase::First(t) => return Some((Ok(snapshot_event(&t)), f)),
        Phase::Done => return None,
        Phase::Follow => {}
    }
    // An error: the background task stopped (the agent is stopping).
    f.rx.changed().await.ok()?;
    if let Err(e) = f.state.auth.sessions.peek(&f.token, &f.state.auth.users) {
        f.phase = Phase::Done;
        metrics::counter!(crate::metric_names::EDGE_WEB_EVENTS_TOTAL, "event" => "session_end")
            .increment(1);
        let data =
            serde_json::json!({"reason": e.reason(), "message": format!("{e}; log in again")});
        let ev = Event::default().event("session_end").data(data.to_string());
        return Some((Ok(ev), f));
    }
    let t = Arc::clone(&f.rx.borrow_and_update());
    Some((Ok(snapshot_event(&t)), f))
}

pub(super) async fn live(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    // The permission table let the request through, so the cookie is there.
    let Some(token) = session_token(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "no_credentials", "log in first");
    };
    let key = crate::identity::sha256_hex(token.as_bytes());
    if let Err(reason) = s.web.streams.admit(&key) {
        metrics::counter!(crate::metric_names::EDGE_WEB_STREAMS_REFUSED_TOTAL, "reason" => reason)
            .increment(1);
        let bound = if reason == "total" {
            "http.max_live_streams"
        } else {
            "http.max_live_streams_per_session"
        };
        tracing::warn!(reason, "live stream refused: {bound} reached");
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("too many live pages open ({bound}); close one and reload"),
        );
    }
    let ticket = Ticket {
        web: Arc::clone(&s.web),
        key,
    };
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    tracing::debug!(?resumed, "live stream opened");
    let mut rx = s.web.ticks.clone();
    // What is current now is superseded by the fresh snapshot below.
    let id = rx.borrow_and_update().id;
    let first = Arc::new(Tick {
        id,
        json: build(&s),
    });
    let follow = Follow {
        state: s,
        token,
        rx,
        phase: Phase::First(first),
        _ticket: ticket,
    };
    Sse::new(futures::stream::unfold(follow, next)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_in_all_and_per_session() {
        let s = Streams::new(3, 2);
        assert_eq!(s.admit("a"), Ok(()));
        assert_eq!(s.admit("a"), Ok(()));
        assert_eq!(s.admit("a"), Err("per_session"));
        assert_eq!(s.admit("b"), Ok(()));
        assert_eq!(s.admit("c"), Err("total"));
        let none = Streams::new(0, 4);
        assert_eq!(none.admit("a"), Err("total"));
    }
}
