//! Runs one protocol run (what each step does is in `steps`): the steps in order, the `[[record]]` series at
//! their intervals, device trouble per the step's policy, and the end
//! (completed, or safe state then aborted / failed). Everything recorded
//! goes to the durable buffer with the checkpoint it belongs to; the engine
//! only appends, so a hub that is away never slows a run.

mod steps;

use super::cursor::{Boundary, Cursor};
use super::m;
use super::plan::{self, check_limit};
use super::state::{Aggregate, Checkpoint, StepProgress};
use super::timing::{self, OfflineAction};
use super::view::{EventView, RunState, RunView};
use crate::buffer::{Buffer, NewRunEvent, NewRunReading};
use crate::fleet::{Fleet, FleetView};
use crate::sources::command::WriteError;
use crate::sources::health::DeviceState;
use qi_proto::v1::RunEventKind;
use qi_protocol::Protocol;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Wall time between two looks at a step (conditions, timers, devices).
const TICK: Duration = Duration::from_millis(20);
/// Wall time between checkpoints of a step's timers.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// A ramp writes at most every this many simulated seconds, and not more
/// often than every `RAMP_MIN_WALL` of wall time.
const RAMP_EVERY_S: f64 = 10.0;
const RAMP_MIN_WALL: Duration = Duration::from_millis(100);
/// A polled value older than this many poll intervals (plus the slack) is
/// not available.
const FRESH_POLLS: u64 = 3;
const FRESH_SLACK_MS: i64 = 2000;

/// How a run ends (or stops being run by this process).
#[derive(Debug)]
pub(super) enum End {
    Completed,
    Aborted(String),
    Failed(String),
    /// The agent is shutting down: the checkpoint stays for the next start.
    Stopped,
}

enum Progress {
    Done,
    Continue,
    /// A device of the step did not answer: handled like one gone offline.
    Offline(String),
}

pub(super) struct Exec {
    pub buffer: Arc<Buffer>,
    pub fleet: Arc<Fleet>,
    pub protocol: Arc<Protocol>,
    pub cp: Checkpoint,
    pub view: Arc<Mutex<RunView>>,
    pub abort: watch::Receiver<Option<String>>,
    pub stop: qi_common::shutdown::Stop,
    /// Boundaries crossed and not yet recorded (the last step's, at the end).
    pub pending: Vec<NewRunEvent>,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Exec {
    pub fn event(&self, kind: RunEventKind, step: String, message: String) -> NewRunEvent {
        NewRunEvent {
            timestamp_us: now_us(),
            run_id: self.cp.run_id.clone(),
            kind,
            step,
            message,
            start: None,
        }
    }

    pub fn boundary_events(&self, bs: Vec<Boundary>) -> Vec<NewRunEvent> {
        bs.into_iter()
            .map(|b| match b {
                Boundary::Started(p) => self.event(RunEventKind::StepStarted, p, String::new()),
                Boundary::Finished(p) => self.event(RunEventKind::StepFinished, p, String::new()),
            })
            .collect()
    }

    /// Appends events and readings with the current checkpoint (or, at the
    /// end, its deletion) in one durable write, then shows them.
    pub async fn commit(
        &mut self,
        events: Vec<NewRunEvent>,
        readings: Vec<NewRunReading>,
        keep: bool,
    ) -> Result<(), End> {
        let bytes = keep.then(|| self.cp.encode());
        let res = self
            .buffer
            .append_run(
                &events,
                &readings,
                Some((&self.cp.run_id, bytes.as_deref())),
            )
            .await;
        if let Err(e) = res {
            metrics::counter!(crate::metric_names::EDGE_RUN_STORAGE_ERRORS_TOTAL).increment(1);
            tracing::error!(run = %self.cp.run_id, error = %e, "cannot record the run's progress");
            return Err(End::Failed(format!("cannot record the run: {e}")));
        }
        self.show(&events);
        Ok(())
    }

    /// Saves the timers alone (no events).
    async fn save(&mut self) {
        if let Err(e) = self
            .buffer
            .save_run_state(&self.cp.run_id, Some(&self.cp.encode()))
            .await
        {
            metrics::counter!(crate::metric_names::EDGE_RUN_STORAGE_ERRORS_TOTAL).increment(1);
            tracing::warn!(run = %self.cp.run_id, error = %e, "cannot checkpoint the run's timers");
        }
    }

    fn show(&self, events: &[NewRunEvent]) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.update_from(&self.cp, &self.protocol);
        for e in events {
            v.push_event(EventView::of(e));
        }
    }

    /// Runs from the checkpoint's step to the end.
    pub async fn run(mut self) {
        let end = match self.steps().await {
            Ok(()) => End::Completed,
            Err(e) => e,
        };
        self.finish(end).await;
    }

    async fn steps(&mut self) -> Result<(), End> {
        loop {
            self.leaf().await?;
            let mut out = Vec::new();
            let more = self.cp.cursor.advance(&self.protocol, &mut out);
            let finished = out
                .iter()
                .filter(|b| matches!(b, Boundary::Finished(_)))
                .count();
            self.cp.steps_done += finished as u64;
            m::steps(finished as u64);
            self.cp.step = StepProgress::default();
            let events = self.boundary_events(out);
            if !more {
                self.pending = events;
                return Ok(());
            }
            self.commit(events, Vec::new(), true).await?;
        }
    }

    /// The current leaf step, tick by tick, until it is done.
    async fn leaf(&mut self) -> Result<(), End> {
        let Some(step) = self.cp.cursor.step(&self.protocol).cloned() else {
            return Ok(());
        };
        let (policy, _) = self.cp.cursor.policies(&self.protocol);
        let scale = self.cp.time_scale;
        let mut last = Instant::now();
        let mut saved = Instant::now();
        loop {
            if let Some(reason) = self.abort.borrow().clone() {
                return Err(End::Aborted(reason));
            }
            if self.stop.is_stopped() {
                return Err(End::Stopped);
            }
            let now = Instant::now();
            let dt = now.duration_since(last).as_secs_f64() * scale;
            last = now;
            let fleet = self.fleet.view();
            let offline = self
                .offline_device(&fleet)
                .or_else(|| self.not_back(&fleet));
            self.on_devices(policy, offline).await?;
            if self.cp.paused_by.is_none() {
                self.cp.step.elapsed_s += dt;
                self.cp.run_elapsed_s += dt;
                self.record(&fleet).await?;
                match self.act(&step, dt, &fleet).await? {
                    Progress::Done => return Ok(()),
                    Progress::Continue => {}
                    Progress::Offline(d) => self.on_devices(policy, Some(d)).await?,
                }
            }
            if saved.elapsed() >= SAVE_EVERY {
                self.save().await;
                saved = Instant::now();
                self.show(&[]);
            }
            let mut abort = self.abort.clone();
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = abort.changed() => {}
                _ = stop.wait() => {}
            }
        }
    }

    /// Pauses, resumes or aborts on what the devices do.
    async fn on_devices(
        &mut self,
        policy: qi_protocol::OfflinePolicy,
        offline: Option<String>,
    ) -> Result<(), End> {
        let step = self.cp.cursor.path();
        match timing::offline_action(policy, offline.as_deref(), self.cp.paused_by.as_deref()) {
            OfflineAction::Carry | OfflineAction::StayPaused => Ok(()),
            OfflineAction::Pause(d) => {
                tracing::warn!(run = %self.cp.run_id, device = %d, %step, "device offline; step paused");
                self.cp.paused_by = Some(d.clone());
                self.cp.paused_at_ms = Some(chrono::Utc::now().timestamp_millis());
                let e = self.event(RunEventKind::Paused, step, format!("device {d} is offline"));
                self.commit(vec![e], Vec::new(), true).await
            }
            OfflineAction::Resume => {
                let d = self.cp.paused_by.take().unwrap_or_default();
                self.cp.paused_at_ms = None;
                tracing::info!(run = %self.cp.run_id, device = %d, %step, "device back; step resumed");
                let e = self.event(RunEventKind::Resumed, step, format!("device {d} is back"));
                self.commit(vec![e], Vec::new(), true).await
            }
            OfflineAction::Abort(d) => Err(End::Aborted(format!(
                "device {d} went offline during step {step} (on_device_offline = abort)"
            ))),
        }
    }

    fn devices(&self) -> Vec<String> {
        let b = &self.cp.bench;
        let mut d: Vec<String> = b
            .points
            .values()
            .map(|p| p.device.clone())
            .chain(b.instruments.values().cloned())
            .collect();
        d.sort();
        d.dedup();
        d
    }

    fn offline_device(&self, fleet: &FleetView) -> Option<String> {
        self.devices().into_iter().find(|d| {
            fleet.health.iter().any(|h| {
                let h = h.borrow();
                h.device_id == *d && matches!(h.state, DeviceState::Offline | DeviceState::Error)
            })
        })
    }

    /// The device a pause waits for, while it has not been polled
    /// successfully since the pause began (a failed write pauses before the
    /// poller has noticed anything; its health still says online).
    fn not_back(&self, fleet: &FleetView) -> Option<String> {
        let d = self.cp.paused_by.as_ref()?;
        let since = self.cp.paused_at_ms.unwrap_or(0);
        let back = fleet.health.iter().any(|h| {
            let h = h.borrow();
            h.device_id == *d && h.last_success_ms.is_some_and(|t| t > since)
        });
        (!back).then(|| d.clone())
    }

    /// The latest polled value of a bench point, if fresh.
    pub fn read(&self, fleet: &FleetView, name: &str) -> Option<f64> {
        let bp = self.cp.bench.points.get(name)?;
        let point = bp.read.as_ref()?;
        let h = fleet
            .health
            .iter()
            .find(|h| h.borrow().device_id == bp.device)?;
        let h = h.borrow();
        let v = h.values.get(point)?;
        let age = chrono::Utc::now().timestamp_millis() - v.ts_ms;
        let fresh = (FRESH_POLLS * bp.poll_ms) as i64 + FRESH_SLACK_MS;
        (age <= fresh).then_some(v.value).flatten()
    }

    fn reading(
        &self,
        device: &str,
        metric: &str,
        unit: &str,
        value: f64,
        series: String,
        ts: i64,
    ) -> NewRunReading {
        NewRunReading {
            device_id: device.to_string(),
            metric: metric.to_string(),
            timestamp_us: ts,
            value,
            unit: unit.to_string(),
            run_id: self.cp.run_id.clone(),
            run_series: series,
        }
    }

    /// Records every `[[record]]` series that is due.
    async fn record(&mut self, fleet: &FleetView) -> Result<(), End> {
        let mut out = Vec::new();
        let ts = now_us();
        let protocol = Arc::clone(&self.protocol);
        for (i, r) in protocol.record.iter().enumerate() {
            let Some(due) = self.cp.record_due_s.get(i).copied() else {
                continue;
            };
            if due > self.cp.run_elapsed_s {
                continue;
            }
            let every = plan::seconds(&protocol, &r.interval, &self.cp.parameters).unwrap_or(60.0);
            let mut next = due + every;
            if next <= self.cp.run_elapsed_s {
                // More than an interval behind (a busy machine at a high
                // time scale): the ticks in between get no reading, since a
                // value read now is not the value then; they are counted.
                let skipped = ((self.cp.run_elapsed_s - due) / every).floor();
                m::record_missed(skipped as u64);
                next = self.cp.run_elapsed_s + every;
            }
            self.cp.record_due_s[i] = next;
            match self.read(fleet, &r.point) {
                Some(v) => {
                    let bp = &self.cp.bench.points[&r.point];
                    let metric = bp.read.clone().unwrap_or_default();
                    out.push(self.reading(&bp.device, &metric, &r.unit, v, r.name.clone(), ts));
                    let a = self.cp.aggregates.get(&r.name).copied();
                    self.cp
                        .aggregates
                        .insert(r.name.clone(), Aggregate::add(a, v));
                }
                None => m::record_missed(1),
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        self.commit(Vec::new(), out, true).await
    }

    /// Writes a bench point, with the bench's limits checked again.
    async fn write(&mut self, fleet: &FleetView, name: &str, value: f64) -> Result<Progress, End> {
        let Some(bp) = self.cp.bench.points.get(name) else {
            return Err(End::Failed(format!("bench maps no point {name}")));
        };
        if let Err(e) = check_limit(bp, value, "setpoint") {
            m::setpoint("refused");
            return Err(End::Failed(e.to_string()));
        }
        let (device, point) = (bp.device.clone(), bp.write.clone().unwrap_or_default());
        let Some(handle) = fleet.handles.get(&device) else {
            return Ok(Progress::Offline(device));
        };
        match handle.write(&point, value).await {
            Ok(()) => {
                m::setpoint("written");
                self.cp.last_setpoints.insert(name.to_string(), value);
                tracing::info!(run = %self.cp.run_id, point = %name, value, "setpoint written");
                Ok(Progress::Done)
            }
            Err(
                WriteError::Unreachable(_) | WriteError::Timeout(_) | WriteError::NotRunning(_),
            ) => {
                m::setpoint("failed");
                Ok(Progress::Offline(device))
            }
            Err(e) => {
                m::setpoint("refused");
                Err(End::Failed(format!(
                    "writing {value} to {name} ({device}.{point}): {e}"
                )))
            }
        }
    }

    /// Writes the template's safe state; returns what happened, for the event.
    async fn safe_state(&mut self) -> String {
        let fleet = self.fleet.view();
        let mut parts = Vec::new();
        for s in self.protocol.safe_state.setpoints.clone() {
            let res = match self.write(&fleet, &s.point, s.value).await {
                Ok(Progress::Done) => "ok".to_string(),
                Ok(_) => "device unreachable".to_string(),
                Err(End::Failed(e)) => e,
                Err(_) => "not written".to_string(),
            };
            parts.push(format!("{} = {} {}: {res}", s.point, s.value, s.unit));
        }
        if parts.is_empty() {
            "the template has no safe state".into()
        } else {
            parts.join("; ")
        }
    }

    async fn finish(&mut self, end: End) {
        let step = self.cp.cursor.path();
        let mut events = std::mem::take(&mut self.pending);
        let (state, kind, message) = match end {
            End::Stopped => {
                self.save().await;
                tracing::info!(run = %self.cp.run_id, %step, "agent stopping; the run continues at the next start");
                return;
            }
            End::Completed => (RunState::Completed, RunEventKind::Completed, String::new()),
            End::Aborted(why) => (RunState::Aborted, RunEventKind::Aborted, why),
            End::Failed(why) => (RunState::Failed, RunEventKind::Failed, why),
        };
        if state != RunState::Completed {
            let applied = self.safe_state().await;
            events.push(self.event(RunEventKind::SafeStateApplied, step.clone(), applied));
        }
        events.push(self.event(kind, String::new(), message.clone()));
        m::outcome(state.as_str());
        tracing::info!(run = %self.cp.run_id, outcome = state.as_str(), %message, "run ended");
        let _ = self.commit(events, Vec::new(), false).await;
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.state = state;
        v.message = (!message.is_empty()).then_some(message);
    }
}

/// A new run's cursor and first events (after STARTED).
pub(super) fn first_steps(p: &Protocol) -> (Cursor, Vec<Boundary>) {
    Cursor::start(p)
}
