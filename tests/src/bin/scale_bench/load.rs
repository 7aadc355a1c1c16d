//! The ingest load: gateway streams played by hand (as tests/src/grpc.rs and
//! ha_failover do), each sending batches ahead of their acks, either as fast
//! as the hub acks them or paced at a fixed rate; and CPU sampling of the
//! processes under test.

use anyhow::{Context, Result};
use e2e_tests::bench::{cpu_s, tree_cpu_s};
use qi_proto::v1::{EdgeMessage, Reading, ReadingBatch, edge_message, hub_message};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Readings per batch: `SCALE_BATCH`, default 500 (a large gateway's poll
/// cycle, as in ha_failover; the agent sends up to `uplink.batch_max`).
pub fn batch_size() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::env::var("SCALE_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(500)
    })
}
/// Batches sent ahead of their acks: the hub writes two of a stream at once.
pub const IN_FLIGHT: usize = 4;
/// Metrics per gateway (series = gateways x METRICS).
const METRICS: u64 = 10;

/// Running gateway streams; `rows()` is what the hubs acknowledged so far.
pub struct Load {
    acked: Vec<Arc<AtomicU64>>,
    errors: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `streams` gateways named `{prefix}-{i}`, stream `i` to `urls[i % len]`
    /// (round-robin over the hubs). `rows_per_s`: the total rate, paced per
    /// stream; None: as fast as the acks come.
    pub fn start(urls: &[String], streams: usize, prefix: &str, rows_per_s: Option<f64>) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let errors = Arc::new(AtomicU64::new(0));
        let period = rows_per_s
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(batch_size() as f64 * streams as f64 / r));
        let mut acked = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..streams {
            let a = Arc::new(AtomicU64::new(0));
            acked.push(Arc::clone(&a));
            tasks.push(tokio::spawn(gateway(
                urls[i % urls.len()].clone(),
                format!("{prefix}-{i}"),
                a,
                Arc::clone(&errors),
                period,
                stop_rx.clone(),
            )));
        }
        Load {
            acked,
            errors,
            stop,
            tasks,
        }
    }

    /// Readings acknowledged by the hubs (committed) so far.
    pub fn rows(&self) -> u64 {
        self.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Stops every stream; returns how many streams broke on the way.
    pub async fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.errors.load(Ordering::Relaxed)
    }
}

/// One gateway: streams until stopped, resending from its last ack after a
/// broken stream (what the agent does with its buffer).
async fn gateway(
    url: String,
    id: String,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    period: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    // Timestamps 10 us apart from an hour ago: inside the hub's partitions.
    let base_us = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    while !*stop.borrow() {
        let run = one_stream(&url, &id, &acked, base_us, period, stop.clone());
        tokio::select! {
            _ = stop.changed() => return,
            r = run => if let Err(e) = r {
                errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("  {id}: stream ended: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn batch(id: &str, from: u64, base_us: i64) -> EdgeMessage {
    let readings = (from..from + batch_size())
        .map(|seq| Reading {
            seq,
            device_id: format!("dev-{id}"),
            metric: format!("m{}", seq % METRICS),
            timestamp_us: base_us + seq as i64 * 10,
            value: seq as f64,
            unit: "W".into(),
            quality: 1,
            ..Default::default()
        })
        .collect();
    EdgeMessage {
        kind: Some(edge_message::Kind::Batch(ReadingBatch {
            readings,
            ..Default::default()
        })),
    }
}

async fn one_stream(
    url: &str,
    id: &str,
    acked: &AtomicU64,
    base_us: i64,
    period: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let (tx, mut inbound) = e2e_tests::grpc::open_stream(
        url,
        id,
        "scale-bench",
        IN_FLIGHT + 2,
        Duration::from_secs(5),
    )
    .await?;
    let mut next = acked.load(Ordering::Relaxed) + 1;
    let mut outstanding = 0usize;
    let mut tick = period.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    // Paced: one batch may go per tick (at most IN_FLIGHT saved up).
    let mut credit = 0usize;
    loop {
        while outstanding < IN_FLIGHT && (tick.is_none() || credit > 0) {
            tx.send(batch(id, next, base_us)).await?;
            next += batch_size();
            outstanding += 1;
            credit = credit.saturating_sub(1);
        }
        tokio::select! {
            m = tokio::time::timeout(Duration::from_secs(30), inbound.message()) => {
                let m = m
                    .context("no answer from the hub in 30 s")??
                    .context("the hub closed the stream")?;
                if let Some(hub_message::Kind::Ack(a)) = m.kind {
                    acked.fetch_max(a.committed_up_to, Ordering::Relaxed);
                    outstanding = outstanding.saturating_sub(1);
                }
            }
            _ = async { if let Some(t) = tick.as_mut() { t.tick().await; } }, if tick.is_some() => {
                credit = (credit + 1).min(IN_FLIGHT);
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// CPU of named processes over a window: cores used = CPU seconds / wall.
pub struct CpuWindow {
    start: Instant,
    procs: Vec<(String, Vec<u32>, bool, f64)>,
    machine: f64,
}

impl CpuWindow {
    /// `procs`: (name, pids, whole process tree?) for each figure.
    pub fn start(procs: Vec<(String, Vec<u32>, bool)>) -> CpuWindow {
        let procs = procs
            .into_iter()
            .map(|(n, pids, tree)| {
                let c = cpu_of(&pids, tree);
                (n, pids, tree, c)
            })
            .collect();
        CpuWindow {
            start: Instant::now(),
            procs,
            machine: machine_busy_s(),
        }
    }

    /// (name, cores) per process over the window so far, and last
    /// (`MACHINE`) the whole machine's busy cores, whoever used them.
    pub fn cores(&self) -> Vec<(String, f64)> {
        let wall = self.start.elapsed().as_secs_f64().max(1e-3);
        self.procs
            .iter()
            .map(|(n, pids, tree, c0)| (n.clone(), (cpu_of(pids, *tree) - c0) / wall))
            .chain(std::iter::once((
                MACHINE.to_string(),
                (machine_busy_s() - self.machine) / wall,
            )))
            .collect()
    }
}

/// The name of the whole machine's figure in [`CpuWindow::cores`].
pub const MACHINE: &str = "machine";

/// Busy CPU seconds of the whole machine (all cores, every process) since
/// boot, from the first line of `/proc/stat` (everything but idle and iowait).
fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = f.iter().sum();
    (total - f.get(3).unwrap_or(&0.0) - f.get(4).unwrap_or(&0.0)) / 100.0
}

/// The sum of the processes' cores, without the machine figure.
pub fn ours(cores: &[(String, f64)]) -> f64 {
    cores
        .iter()
        .filter(|(n, _)| n != MACHINE)
        .map(|(_, c)| c)
        .sum()
}

/// The machine's busy cores in `cores`.
pub fn machine(cores: &[(String, f64)]) -> f64 {
    cores
        .iter()
        .find(|(n, _)| n == MACHINE)
        .map_or(0.0, |(_, c)| *c)
}

fn cpu_of(pids: &[u32], tree: bool) -> f64 {
    pids.iter()
        .map(|p| if tree { tree_cpu_s(*p) } else { cpu_s(*p) })
        .sum()
}

/// After `warm_up` of the load: rows acknowledged per second over `window`
/// and the cores each of `procs` used meanwhile.
pub async fn measure(
    load: &Load,
    warm_up: Duration,
    window: Duration,
    procs: Vec<(String, Vec<u32>, bool)>,
) -> (f64, Vec<(String, f64)>) {
    tokio::time::sleep(warm_up).await;
    let cpu = CpuWindow::start(procs);
    let r0 = load.rows();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let rate = (load.rows() - r0) as f64 / t0.elapsed().as_secs_f64();
    (rate, cpu.cores())
}

/// This process (the load generator, sharing the machine's cores).
pub fn me() -> (String, Vec<u32>, bool) {
    ("bench client".into(), vec![std::process::id()], false)
}
