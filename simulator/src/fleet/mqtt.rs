//! The fleet's MQTT side: one task pair (writer, PUBACK reader) per
//! connection, each connection publishing for its devices on every tick.
//!
//! Every device has two counters (sent, acknowledged); an acknowledged
//! message is one the agent has stored durably (it acknowledges after its
//! buffer's fsync), so the end-of-run report is what the hub must hold.

use super::latency::Histogram;
use super::{Plan, codec, model};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How the fleet publishes.
#[derive(Debug, Clone)]
pub struct Options {
    pub period: Duration,
    pub duration: Duration,
    /// After `duration`: how long to wait for outstanding PUBACKs.
    pub drain: Duration,
    /// Unacknowledged messages per connection before a device's message is
    /// skipped (counted): an agent that falls behind is not buried.
    pub max_inflight: usize,
    pub login: Option<(String, String)>,
    pub seed: u64,
}

#[derive(Default)]
struct Totals {
    skipped: AtomicU64,
    missed_ticks: AtomicU64,
    connect_failures: AtomicU64,
    drops: AtomicU64,
    refused: AtomicU64,
}

struct Shared {
    plan: Plan,
    opts: Options,
    sent: Vec<AtomicU32>,
    acked: Vec<AtomicU32>,
    latency: Histogram,
    totals: Totals,
    stop: AtomicBool,
    /// Unix ms of the run's first tick: every message's `ts` is this plus a
    /// whole number of periods plus its connection's offset, so `ts`
    /// identifies a message of a device.
    epoch_ms: u64,
    started: Instant,
}

/// What the run did, as the report file says it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub devices: u32,
    pub sites: usize,
    pub connections: usize,
    pub period_ms: u64,
    pub seconds: f64,
    pub sent: u64,
    pub acked: u64,
    /// Sent but never acknowledged (connection lost, or the drain timed out):
    /// these may or may not be at the hub.
    pub unacked: u64,
    pub skipped: u64,
    pub missed_ticks: u64,
    pub connect_failures: u64,
    pub connection_drops: u64,
    pub refused_connacks: u64,
    pub acked_per_s: f64,
    pub readings_per_message: u64,
    pub ack_latency_ms_p50: Option<u64>,
    pub ack_latency_ms_p99: Option<u64>,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// Device id -> [sent, acked].
    pub per_device: HashMap<String, [u32; 2]>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the fleet for `opts.duration`, then drains and reports.
pub async fn run(plan: Plan, opts: Options) -> Report {
    let n = plan.devices as usize;
    let conns = plan.connections();
    let shared = Arc::new(Shared {
        sent: (0..n).map(|_| AtomicU32::new(0)).collect(),
        acked: (0..n).map(|_| AtomicU32::new(0)).collect(),
        latency: Histogram::default(),
        totals: Totals::default(),
        stop: AtomicBool::new(false),
        epoch_ms: unix_ms() + 1000,
        started: Instant::now() + Duration::from_secs(1),
        plan,
        opts,
    });
    tracing::info!(
        devices = n,
        connections = conns.len(),
        sites = shared.plan.sites.len(),
        "fleet starting"
    );
    let count = conns.len().max(1) as u32;
    let mut tasks = Vec::new();
    for (i, (site, devices)) in conns.into_iter().enumerate() {
        // Spread the connections over the period: no thundering tick.
        let offset = shared.opts.period * i as u32 / count;
        tasks.push(tokio::spawn(connection(
            Arc::clone(&shared),
            i,
            site,
            devices,
            offset,
        )));
    }
    let progress = tokio::spawn(progress(Arc::clone(&shared)));
    tokio::time::sleep_until(shared.started + shared.opts.duration).await;
    shared.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    report(&shared, count as usize)
}

async fn progress(s: Arc<Shared>) {
    let mut last = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let acked: u64 = s
            .acked
            .iter()
            .map(|a| u64::from(a.load(Ordering::Relaxed)))
            .sum();
        tracing::info!(
            acked,
            per_s = (acked - last) / 5,
            skipped = s.totals.skipped.load(Ordering::Relaxed),
            "fleet progress"
        );
        last = acked;
    }
}

fn report(s: &Shared, connections: usize) -> Report {
    let sum =
        |v: &[AtomicU32]| -> u64 { v.iter().map(|a| u64::from(a.load(Ordering::Relaxed))).sum() };
    let (sent, acked) = (sum(&s.sent), sum(&s.acked));
    let per_device = (0..s.plan.devices)
        .map(|d| {
            (
                s.plan.device_id(d),
                [
                    s.sent[d as usize].load(Ordering::Relaxed),
                    s.acked[d as usize].load(Ordering::Relaxed),
                ],
            )
        })
        .collect();
    let (rss_kib, peak_rss_kib) = super::rss_kib();
    let seconds = s.opts.duration.as_secs_f64();
    let t = &s.totals;
    Report {
        devices: s.plan.devices,
        sites: s.plan.sites.len(),
        connections,
        period_ms: s.opts.period.as_millis() as u64,
        seconds,
        sent,
        acked,
        unacked: sent - acked,
        skipped: t.skipped.load(Ordering::Relaxed),
        missed_ticks: t.missed_ticks.load(Ordering::Relaxed),
        connect_failures: t.connect_failures.load(Ordering::Relaxed),
        connection_drops: t.drops.load(Ordering::Relaxed),
        refused_connacks: t.refused.load(Ordering::Relaxed),
        acked_per_s: acked as f64 / seconds,
        readings_per_message: model::READINGS_PER_MESSAGE,
        ack_latency_ms_p50: s.latency.quantile(0.5),
        ack_latency_ms_p99: s.latency.quantile(0.99),
        rss_kib,
        peak_rss_kib,
        per_device,
    }
}

/// Packet id -> (device, when sent), for one connection.
type Inflight = Arc<Mutex<HashMap<u16, (u32, Instant)>>>;

/// One connection's life: connect, publish every tick, reconnect after a
/// drop, and at the end wait for the outstanding acknowledgements.
async fn connection(
    s: Arc<Shared>,
    index: usize,
    site: usize,
    devices: Vec<u32>,
    offset: Duration,
) {
    let topics: Vec<Box<[u8]>> = devices
        .iter()
        .map(|d| s.plan.topic(*d).into_bytes().into_boxed_slice())
        .collect();
    let addr = s.plan.sites[site].addr.clone();
    let client_id = format!("fleet-{}-{index}", s.plan.sites[site].name);
    let first_tick = s.started + offset;
    let mut tick: u64 = 0;
    while !s.stop.load(Ordering::SeqCst) {
        let stream = match open(&s, &addr, &client_id).await {
            Ok(st) => st,
            Err(e) => {
                s.totals.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%addr, error = %e, "fleet connection failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (rd, mut wr) = stream.into_split();
        let inflight: Inflight = Arc::default();
        let reader = tokio::spawn(read_acks(Arc::clone(&s), rd, Arc::clone(&inflight)));
        let mut buf = Vec::with_capacity(devices.len() * 400);
        let mut payload = Vec::with_capacity(512);
        let mut pkid: u16 = 0;
        let ok = loop {
            let due = first_tick + s.opts.period * tick as u32;
            // A long period must not keep the connection past the run's end.
            if due >= s.started + s.opts.duration {
                tokio::time::sleep_until(s.started + s.opts.duration).await;
                break !reader.is_finished();
            }
            tokio::time::sleep_until(due).await;
            if s.stop.load(Ordering::SeqCst) || reader.is_finished() {
                break !reader.is_finished();
            }
            // Behind schedule (CPU bound): skip to the current tick, counted.
            let now_tick = (Instant::now()
                .saturating_duration_since(first_tick)
                .as_nanos()
                / s.opts.period.as_nanos().max(1)) as u64;
            if now_tick > tick {
                s.totals
                    .missed_ticks
                    .fetch_add(now_tick - tick, Ordering::Relaxed);
                tick = now_tick;
            }
            let ts_ms =
                s.epoch_ms + offset.as_millis() as u64 + tick * s.opts.period.as_millis() as u64;
            tick += 1;
            buf.clear();
            let sent_at = Instant::now();
            {
                let mut inf = inflight.lock().unwrap_or_else(|p| p.into_inner());
                for (d, topic) in devices.iter().zip(&topics) {
                    if inf.len() >= s.opts.max_inflight {
                        s.totals.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    loop {
                        pkid = pkid.wrapping_add(1).max(1);
                        if !inf.contains_key(&pkid) {
                            break;
                        }
                    }
                    payload.clear();
                    model::payload(&mut payload, s.opts.seed, *d, s.plan.type_of(*d), ts_ms);
                    codec::publish_qos1(&mut buf, topic, pkid, &payload);
                    inf.insert(pkid, (*d, sent_at));
                    s.sent[*d as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Err(e) = wr.write_all(&buf).await {
                tracing::warn!(%addr, error = %e, "fleet connection lost");
                break false;
            }
        };
        if ok {
            let deadline = Instant::now() + s.opts.drain;
            while Instant::now() < deadline && !reader.is_finished() {
                if inflight.lock().map(|m| m.is_empty()).unwrap_or(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = wr.write_all(&codec::DISCONNECT).await;
            reader.abort();
            return;
        }
        reader.abort();
        s.totals.drops.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("CONNACK return code {0}")]
    Refused(u8),
    #[error("no CONNACK")]
    NoConnAck,
    #[error("{0}")]
    Codec(#[from] codec::CodecError),
}

async fn open(s: &Shared, addr: &str, client_id: &str) -> Result<TcpStream, OpenError> {
    let go = async {
        let mut st = TcpStream::connect(addr).await?;
        st.set_nodelay(true)?;
        let keep_alive = (s.opts.period.as_secs() * 3).clamp(60, 3600) as u16;
        let login = s.opts.login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        st.write_all(&codec::connect(client_id, keep_alive, login))
            .await?;
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 64];
            let n = st.read(&mut chunk).await?;
            if n == 0 {
                return Err(OpenError::NoConnAck);
            }
            buf.extend_from_slice(&chunk[..n]);
            match codec::next(&mut buf)? {
                Some(codec::Incoming::ConnAck(0)) => return Ok(st),
                Some(codec::Incoming::ConnAck(rc)) => {
                    s.totals.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(OpenError::Refused(rc));
                }
                Some(_) => return Err(OpenError::NoConnAck),
                None => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .map_err(|_| OpenError::Timeout)?
}

async fn read_acks(s: Arc<Shared>, mut rd: tokio::net::tcp::OwnedReadHalf, inflight: Inflight) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let now = Instant::now();
        let mut inf = inflight.lock().unwrap_or_else(|p| p.into_inner());
        let mut at_byte = 0;
        loop {
            match codec::parse(&buf[at_byte..]) {
                Ok(Some((codec::Incoming::PubAck(id), used))) => {
                    at_byte += used;
                    if let Some((d, at)) = inf.remove(&id) {
                        s.acked[d as usize].fetch_add(1, Ordering::Relaxed);
                        s.latency.record(now - at);
                    }
                }
                Ok(Some((_, used))) => at_byte += used,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        buf.drain(..at_byte);
    }
}
