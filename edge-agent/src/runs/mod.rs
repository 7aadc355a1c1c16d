//! The run engine: runs a protocol template (`qi-protocol`) on a bench
//! (`benches`) for a sample. The rooms: `plan` (what is checked before a
//! run starts), `cursor` (where a run is, step paths), `timing` (waits,
//! ramps and device trouble as pure functions of simulated time), `state`
//! (the durable checkpoint), `exec` (running the steps), `iv` (IV curves),
//! `view` (what the local API shows). docs/runs.md (## On the edge) is the
//! user's account of it.

mod cursor;
mod exec;
mod iv;
mod plan;
mod state;
mod timing;
mod view;

pub use plan::StartError;
pub use view::{RunState, RunView, Verdict};

use crate::benches::Bench;
use crate::buffer::{Buffer, NewRunEvent, StoredBenchPoint, StoredRunStart};
use crate::fleet::Fleet;
use exec::Exec;
use qi_proto::v1::RunEventKind;
use qi_protocol::{Protocol, RestartPolicy};
use sha2::Digest;
use state::{CHECKPOINT_FORMAT, Checkpoint, StepProgress};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Metric helpers: names live in `metric_names`.
mod m {
    use crate::metric_names as n;
    pub fn steps(k: u64) {
        metrics::counter!(n::EDGE_RUN_STEPS_TOTAL).increment(k);
    }
    pub fn setpoint(result: &'static str) {
        metrics::counter!(n::EDGE_RUN_SETPOINTS_TOTAL, "result" => result).increment(1);
    }
    pub fn sweep(result: &'static str) {
        metrics::counter!(n::EDGE_RUN_IV_SWEEPS_TOTAL, "result" => result).increment(1);
    }
    pub fn record_missed(ticks: u64) {
        metrics::counter!(n::EDGE_RUN_RECORD_MISSED_TOTAL).increment(ticks);
    }
    pub fn outcome(o: &'static str) {
        metrics::counter!(n::EDGE_RUN_OUTCOMES_TOTAL, "outcome" => o).increment(1);
    }
}

/// A template offered on this gateway, with its exact text.
pub struct Template {
    pub protocol: Arc<Protocol>,
    pub text: String,
    pub sha256: String,
}

/// What `POST /api/v1/runs` asks for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub protocol: String,
    pub bench: String,
    pub sample_id: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, f64>,
}

struct Slot {
    view: Arc<Mutex<RunView>>,
    protocol: Arc<Protocol>,
    abort: watch::Sender<Option<String>>,
}

pub struct RunEngine {
    buffer: Arc<Buffer>,
    fleet: Arc<Fleet>,
    benches: BTreeMap<String, Bench>,
    templates: BTreeMap<String, Template>,
    time_scale: f64,
    /// What the hub said of the instruments' calibration.
    calibrations: Arc<crate::calibration::Calibrations>,
    runs: Mutex<BTreeMap<String, Slot>>,
    stop: qi_common::shutdown::Stop,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Loads every `*.toml` of `dir` that is a valid template; the others are
/// logged and left out (a bad file must not take the good ones down).
pub fn load_templates(dir: &Path) -> BTreeMap<String, Template> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no protocol templates offered (runs.protocols_dir)");
            return out;
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "protocol template not readable; not offered");
                continue;
            }
        };
        // A run carries its template to the hub, which refuses larger ones.
        if text.len() > qi_proto::limits::MAX_TEMPLATE_BYTES {
            tracing::error!(file = %path.display(), bytes = text.len(),
                max = qi_proto::limits::MAX_TEMPLATE_BYTES, "protocol template too large; not offered");
            continue;
        }
        match Protocol::parse(&text, &path) {
            Ok(p) => {
                let sha256 = hex(&sha2::Sha256::digest(text.as_bytes()));
                out.insert(
                    p.protocol.id.clone(),
                    Template {
                        protocol: Arc::new(p),
                        text,
                        sha256,
                    },
                );
            }
            Err(e) => tracing::error!(error = %e, "protocol template invalid; not offered"),
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random (version 4) UUID, lowercase and hyphenated.
fn new_run_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl RunEngine {
    pub fn new(
        buffer: Arc<Buffer>,
        fleet: Arc<Fleet>,
        benches: Vec<Bench>,
        templates: BTreeMap<String, Template>,
        time_scale: f64,
        calibrations: Arc<crate::calibration::Calibrations>,
        stop: qi_common::shutdown::Stop,
    ) -> Arc<RunEngine> {
        Arc::new(RunEngine {
            buffer,
            fleet,
            benches: benches.into_iter().map(|b| (b.id.clone(), b)).collect(),
            templates,
            time_scale,
            calibrations,
            runs: Mutex::new(BTreeMap::new()),
            stop,
            tasks: Mutex::new(Vec::new()),
        })
    }

    pub fn benches(&self) -> Vec<Bench> {
        self.benches.values().cloned().collect()
    }

    pub fn templates(&self) -> &BTreeMap<String, Template> {
        &self.templates
    }

    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    pub fn calibrations(&self) -> &crate::calibration::Calibrations {
        &self.calibrations
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gauge(&self) {
        let n = self
            .slots()
            .values()
            .filter(|s| s.view.lock().map(|v| v.state.is_active()).unwrap_or(false))
            .count();
        metrics::gauge!(crate::metric_names::EDGE_RUNS_ACTIVE).set(n as f64);
    }

    /// Checks and starts a run; it is recorded (STARTED, durable) before this returns.
    pub async fn start(
        self: &Arc<Self>,
        req: StartRequest,
        operator: &str,
    ) -> Result<RunView, StartError> {
        let res = self.start_inner(req, operator).await;
        if let Err(e) = &res {
            let reason = match e {
                StartError::UnknownProtocol(_) => "unknown_protocol",
                StartError::UnknownBench(_) => "unknown_bench",
                StartError::BenchUnavailable { .. } => "bench_unavailable",
                StartError::Parameter(_) => "parameter",
                StartError::Binding(_) => "binding",
                StartError::Limit(_) => "limit",
                StartError::BenchBusy { .. } => "bench_busy",
                StartError::SampleBusy { .. } => "sample_busy",
                StartError::BadSample(_) => "bad_sample",
                StartError::Storage(_) => "storage",
                StartError::Calibration { .. } => "calibration",
            };
            metrics::counter!(crate::metric_names::EDGE_RUNS_REFUSED_TOTAL, "reason" => reason)
                .increment(1);
        }
        res
    }

    async fn start_inner(
        self: &Arc<Self>,
        req: StartRequest,
        operator: &str,
    ) -> Result<RunView, StartError> {
        let t = self
            .templates
            .get(&req.protocol)
            .ok_or_else(|| StartError::UnknownProtocol(req.protocol.clone()))?;
        let bench = self
            .benches
            .get(&req.bench)
            .ok_or_else(|| StartError::UnknownBench(req.bench.clone()))?;
        if let Some(reason) = &bench.unavailable {
            return Err(StartError::BenchUnavailable {
                bench: bench.id.clone(),
                reason: reason.clone(),
            });
        }
        if !qi_proto::limits::valid_id(&req.sample_id) || req.sample_id.trim().is_empty() {
            return Err(StartError::BadSample(
                "must be the sample's twin id at the hub, e.g. \"sample:MOD-0001\" (1 to 128 bytes, no control characters)".into(),
            ));
        }
        self.calibrations
            .check(bench.devices(), chrono::Utc::now().timestamp_millis())
            .map_err(|r| StartError::Calibration {
                device: r.device,
                due: r.due,
                message: format!("bench {:?}: {}", bench.id, r.message),
            })?;
        let p = Arc::clone(&t.protocol);
        let params = plan::parameters(&p, &req.parameters)?;
        plan::check(&p, bench, &params)?;
        let run_id = new_run_id();
        let (cursor, boundaries) = exec::first_steps(&p);
        let cp = Checkpoint {
            format: CHECKPOINT_FORMAT,
            run_id: run_id.clone(),
            protocol_id: p.protocol.id.clone(),
            protocol_version: p.protocol.version.clone(),
            template_toml: t.text.clone(),
            template_sha256: t.sha256.clone(),
            bench: bench.clone(),
            sample_id: req.sample_id.clone(),
            operator: operator.to_string(),
            time_scale: self.time_scale,
            parameters: params,
            started_us: chrono::Utc::now().timestamp_micros(),
            cursor,
            step: StepProgress::default(),
            paused_by: None,
            paused_at_ms: None,
            last_setpoints: BTreeMap::new(),
            steps_done: 0,
            run_elapsed_s: 0.0,
            record_due_s: vec![0.0; p.record.len()],
            values: BTreeMap::new(),
            aggregates: BTreeMap::new(),
        };
        let (abort, abort_rx) = watch::channel(None);
        let view = Arc::new(Mutex::new(RunView::new(&cp, &p)));
        {
            // Busy checks and the reservation under one lock: two starts
            // racing for one bench cannot both pass.
            let mut slots = self.slots();
            for (id, s) in slots.iter() {
                let v = s.view.lock().unwrap_or_else(|p| p.into_inner());
                if !v.state.is_active() {
                    continue;
                }
                if v.bench == req.bench {
                    return Err(StartError::BenchBusy {
                        bench: req.bench.clone(),
                        run: id.clone(),
                    });
                }
                if v.sample_id == req.sample_id {
                    return Err(StartError::SampleBusy {
                        sample: req.sample_id.clone(),
                        run: id.clone(),
                    });
                }
            }
            slots.insert(
                run_id.clone(),
                Slot {
                    view: Arc::clone(&view),
                    protocol: Arc::clone(&p),
                    abort,
                },
            );
        }
        let mut ex = Exec {
            buffer: Arc::clone(&self.buffer),
            fleet: Arc::clone(&self.fleet),
            protocol: Arc::clone(&p),
            cp,
            view: Arc::clone(&view),
            abort: abort_rx,
            stop: self.stop.clone(),
            pending: Vec::new(),
        };
        let mut events = vec![NewRunEvent {
            timestamp_us: ex.cp.started_us,
            run_id: run_id.clone(),
            kind: RunEventKind::Started,
            step: String::new(),
            message: String::new(),
            start: Some(run_start(&ex.cp)),
        }];
        events.extend(ex.boundary_events(boundaries));
        if ex.commit(events, Vec::new(), true).await.is_err() {
            self.slots().remove(&run_id);
            return Err(StartError::Storage(
                "the buffer did not take the run's start".into(),
            ));
        }
        metrics::counter!(crate::metric_names::EDGE_RUNS_STARTED_TOTAL).increment(1);
        tracing::info!(run = %run_id, protocol = %req.protocol, bench = %req.bench,
            sample = %req.sample_id, %operator, time_scale = self.time_scale, "run started");
        self.spawn(ex);
        let v = view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(v)
    }

    fn spawn(self: &Arc<Self>, ex: Exec) {
        let me = Arc::clone(self);
        let task = tokio::spawn(async move {
            ex.run().await;
            me.gauge();
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        self.gauge();
    }

    /// Asks a running run to abort; false when there is no such active run.
    pub fn abort(&self, run_id: &str, reason: String) -> bool {
        let slots = self.slots();
        let Some(s) = slots.get(run_id) else {
            return false;
        };
        if !s.view.lock().map(|v| v.state.is_active()).unwrap_or(false) {
            return false;
        }
        s.abort.send_replace(Some(reason));
        true
    }

    pub fn list(&self) -> Vec<RunView> {
        self.slots()
            .values()
            .map(|s| s.view.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// A run's view and its provisional verdicts.
    pub fn get(&self, run_id: &str) -> Option<(RunView, Vec<Verdict>)> {
        let slots = self.slots();
        let s = slots.get(run_id)?;
        let v = s.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let verdicts = view::verdicts(&s.protocol, &v.values, &v.parameters);
        Some((v, verdicts))
    }

    /// Finds runs a previous process left (crash, power cut, restart) and,
    /// per the interrupted step's `on_restart`, resumes or aborts each,
    /// after recording INTERRUPTED.
    pub async fn recover(self: &Arc<Self>) {
        let states = match self.buffer.run_states() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read run checkpoints");
                return;
            }
        };
        for (id, bytes) in states {
            let unreadable = |why: String| {
                metrics::counter!(crate::metric_names::EDGE_RUN_RECOVERED_TOTAL, "action" => "unreadable").increment(1);
                tracing::error!(run = %id, error = %why, "interrupted run cannot be continued; its checkpoint stays for inspection");
            };
            let cp = match Checkpoint::decode(&bytes) {
                Ok(cp) => cp,
                Err(e) => {
                    unreadable(e.to_string());
                    continue;
                }
            };
            let p = match Protocol::parse(
                &cp.template_toml,
                Path::new(&format!("{}.toml", cp.protocol_id)),
            ) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    unreadable(e.to_string());
                    continue;
                }
            };
            let (_, restart) = cp.cursor.policies(&p);
            let (abort, abort_rx) = watch::channel(None);
            let view = Arc::new(Mutex::new(RunView::new(&cp, &p)));
            self.slots().insert(
                id.clone(),
                Slot {
                    view: Arc::clone(&view),
                    protocol: Arc::clone(&p),
                    abort: abort.clone(),
                },
            );
            let step = cp.cursor.path();
            let mut ex = Exec {
                buffer: Arc::clone(&self.buffer),
                fleet: Arc::clone(&self.fleet),
                protocol: p,
                cp,
                view,
                abort: abort_rx,
                stop: self.stop.clone(),
                pending: Vec::new(),
            };
            let (action, message) = match restart {
                RestartPolicy::Resume => (
                    "resume",
                    "agent restarted; resuming the step (on_restart = resume)",
                ),
                RestartPolicy::Abort => ("abort", "agent restarted; aborting (on_restart = abort)"),
            };
            metrics::counter!(crate::metric_names::EDGE_RUN_RECOVERED_TOTAL, "action" => action)
                .increment(1);
            tracing::warn!(run = %id, %step, action, "interrupted run found");
            // Paused before the restart: it stays paused until the device has
            // been polled successfully again (then RESUMED).
            let e = ex.event(RunEventKind::Interrupted, step, message.into());
            if ex.commit(vec![e], Vec::new(), true).await.is_err() {
                continue;
            }
            if restart == RestartPolicy::Abort {
                abort.send_replace(Some(
                    "the agent restarted during the step (on_restart = abort)".into(),
                ));
            }
            self.spawn(ex);
        }
    }

    /// Waits for the run tasks after the stop signal (their checkpoints are saved).
    pub async fn stopped(&self) {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn run_start(cp: &Checkpoint) -> StoredRunStart {
    StoredRunStart {
        protocol_id: cp.protocol_id.clone(),
        protocol_version: cp.protocol_version.clone(),
        template_toml: cp.template_toml.clone(),
        template_sha256: cp.template_sha256.clone(),
        bench_id: cp.bench.id.clone(),
        sample_id: cp.sample_id.clone(),
        parameters: cp.parameters.clone(),
        operator: cp.operator.clone(),
        time_scale: cp.time_scale,
        bindings: cp
            .bench
            .points
            .values()
            .map(|b| StoredBenchPoint {
                name: b.name.clone(),
                device_id: b.device.clone(),
                read_point: b.read.clone().unwrap_or_default(),
                write_point: b.write.clone().unwrap_or_default(),
                unit: b.unit.clone(),
                min: b.min,
                max: b.max,
            })
            .collect(),
    }
}
