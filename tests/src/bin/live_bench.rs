//! Live push benchmark (BENCHMARKS.md, "Live push (issue #13)"): SUBS
//! concurrent SSE subscribers on one hub, each filtered to one instrument
//! twin, while gRPC clients ingest RATE readings/s spread over those
//! instruments.
//!
//! Latency is measured from `committed_at` (the hub's clock when it
//! published the batch, right after its COMMIT returned) to the moment the
//! subscriber parsed the event's `data:` line (same machine, same clock).
//! Hub RSS before and after the subscribers connect (growth per
//! subscriber) and hub CPU over the ingest window from /proc.
//!    scripts/bench-live.sh [SUBS] [RATE] [SECONDS]
use anyhow::{Context, Result, bail};
use e2e_tests::bench::{cpu_s, rss_mib};
use e2e_tests::{HubLaunch, PgServer, free_port};
use qi_proto::v1::uplink_client::UplinkClient;
use qi_proto::v1::{EdgeMessage, Reading, ReadingBatch, edge_message};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Gateways the readings come from; devices per gateway = SUBS / GATEWAYS.
const GATEWAYS: usize = 10;
/// Batches per second per gateway.
const BATCHES_PER_S: u64 = 5;

fn pct(v: &mut [f32], p: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    v.sort_by(f32::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Shared {
    measuring: AtomicBool,
    events: AtomicU64,
    lagged: AtomicU64,
    /// Commit-to-delivery of each event in the window, ms.
    latencies: std::sync::Mutex<Vec<f32>>,
}

/// One subscriber: raw HTTP/1.1 over TCP (the lightest client a debug
/// build can run a thousand of), reading the SSE lines as they arrive.
async fn subscriber(
    http: u16,
    key: String,
    twin: String,
    shared: Arc<Shared>,
    connected: tokio::sync::mpsc::Sender<()>,
) -> Result<()> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http)).await?;
    let req = format!(
        "GET /api/v1/twins/stream?twin={twin} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut line = Vec::new();
    let mut head_done = false;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            bail!("stream of {twin} closed");
        }
        let now = chrono::Utc::now();
        for &b in &buf[..n] {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            if !head_done {
                if text.starts_with("HTTP/1.1") && !text.contains(" 200 ") {
                    bail!("{twin}: {text}");
                }
                if text.trim().is_empty() {
                    head_done = true;
                    let _ = connected.send(()).await;
                }
            } else if text.starts_with("event: lagged") {
                shared.lagged.fetch_add(1, Ordering::Relaxed);
            } else if let Some(at) = text
                .split_once("\"committed_at\":\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(t, _)| t)
                && shared.measuring.load(Ordering::Relaxed)
            {
                let t = chrono::DateTime::parse_from_rfc3339(at).context("committed_at")?;
                let ms = (now - t.with_timezone(&chrono::Utc))
                    .num_microseconds()
                    .unwrap_or(0);
                shared
                    .latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ms as f32 / 1000.0);
                shared.events.fetch_add(1, Ordering::Relaxed);
            }
            line.clear();
        }
    }
}

/// One gateway's uplink: Hello, then `per_batch` readings every
/// 1/BATCHES_PER_S s over its devices until `until`. Returns readings acked.
async fn gateway(
    grpc: u16,
    gw: usize,
    devices: usize,
    per_batch: usize,
    until: Instant,
    acked_total: Arc<AtomicU64>,
) -> Result<u64> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))?
        .connect()
        .await?;
    let mut client = UplinkClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(e2e_tests::grpc::hello(&format!("gw-{gw}"))).await?;
    let mut inbound = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let acks = tokio::spawn(async move {
        let mut acked = 0u64;
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(qi_proto::v1::hub_message::Kind::Ack(a)) = m.kind {
                acked += u64::from(a.inserted);
                acked_total.fetch_add(u64::from(a.inserted), Ordering::Relaxed);
            }
        }
        acked
    });
    let mut seq = 0u64;
    let mut next = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / BATCHES_PER_S));
    while Instant::now() < until {
        tick.tick().await;
        let now = chrono::Utc::now().timestamp_micros();
        let readings = (0..per_batch)
            .map(|i| {
                seq += 1;
                next = (next + 1) % devices;
                Reading {
                    seq,
                    device_id: format!("dev-{next}"),
                    metric: "temp".into(),
                    timestamp_us: now + i as i64,
                    value: seq as f64,
                    unit: "Cel".into(),
                    quality: 1,
                    ..Default::default()
                }
            })
            .collect();
        tx.send(EdgeMessage {
            kind: Some(edge_message::Kind::Batch(ReadingBatch {
                readings,
                events: vec![],
                run_events: vec![],
                traceparent: String::new(),
            })),
        })
        .await?;
    }
    // Let the last acks arrive, then end the stream.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(120), acks)
        .await
        .context("the hub's last acks")?
        .context("ack reader")
}

#[tokio::main]
async fn main() -> Result<()> {
    let arg = |i: usize, d: u64| -> Result<u64> {
        Ok(std::env::args()
            .nth(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(d))
    };
    let subs = arg(1, 1000)? as usize;
    let rate = arg(2, 10_000)?;
    let secs = arg(3, 30)?;
    let devices = subs.div_ceil(GATEWAYS);
    let per_batch = (rate / GATEWAYS as u64 / BATCHES_PER_S) as usize;
    let dir = tempfile::tempdir()?;
    let pg = PgServer::start().await?;
    let (grpc, http) = (free_port(), free_port());
    // Debug build: a release build takes ~9 min on this shared machine.
    let hub = HubLaunch {
        binary: e2e_tests::bin("cloud-hub")?,
        pg_url: &pg.url(),
        grpc_port: grpc,
        http_port: http,
        database: "",
        grpc: "",
        after: "",
        args: &[],
        dir: dir.path(),
        log: &dir.path().join("hub.log"),
    }
    .start()
    .await?;
    let key = e2e_tests::http::headers_for(&format!("http://127.0.0.1:{http}"))
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.trim_start_matches("Bearer ").to_string())
        .context("harness key")?;

    // Every instrument twin exists (discovered at ingest) before anyone subscribes.
    let warm = Instant::now() + Duration::from_millis(1500);
    let mut w = Vec::new();
    for g in 0..GATEWAYS {
        w.push(tokio::spawn(gateway(
            grpc,
            g,
            devices,
            devices,
            warm,
            Arc::new(AtomicU64::new(0)),
        )));
    }
    for t in w {
        t.await??;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_mib(hub.pid());
    eprintln!("twins discovered; hub RSS {rss_before:.1} MiB; connecting {subs} subscribers");

    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        events: AtomicU64::new(0),
        lagged: AtomicU64::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
    });
    let (ctx, mut crx) = tokio::sync::mpsc::channel(subs);
    let mut clients = Vec::new();
    let t = Instant::now();
    for i in 0..subs {
        let twin = format!("instrument:gw-{}:dev-{}", i % GATEWAYS, i / GATEWAYS);
        clients.push(tokio::spawn(subscriber(
            http,
            key.clone(),
            twin,
            Arc::clone(&shared),
            ctx.clone(),
        )));
    }
    for _ in 0..subs {
        tokio::time::timeout(Duration::from_secs(60), crx.recv())
            .await
            .context("subscribers connecting")?;
    }
    let connect_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_subs = rss_mib(hub.pid());

    // Ingest; measure after a warm-up of 5 s.
    let until = Instant::now() + Duration::from_secs(secs + 5);
    let acked_now = Arc::new(AtomicU64::new(0));
    let mut g = Vec::new();
    for k in 0..GATEWAYS {
        g.push(tokio::spawn(gateway(
            grpc,
            k,
            devices,
            per_batch,
            until,
            Arc::clone(&acked_now),
        )));
    }
    eprintln!("subscribers connected in {connect_s:.1} s; ingesting");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, bench0, t0) = (cpu_s(hub.pid()), cpu_s(std::process::id()), Instant::now());
    let acked0 = acked_now.load(Ordering::Relaxed);
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    let acked_window = acked_now.load(Ordering::Relaxed) - acked0;
    let (cpu1, bench1) = (cpu_s(hub.pid()), cpu_s(std::process::id()));
    let rss_load = rss_mib(hub.pid());
    let mut acked = 0;
    for t in g {
        acked += t.await??;
    }
    let delivered = shared.events.load(Ordering::Relaxed);
    let mut failed = 0;
    for c in &clients {
        if c.is_finished() {
            failed += 1;
        }
    }
    for c in clients {
        if c.is_finished() {
            if let Ok(Err(e)) = c.await {
                eprintln!("subscriber: {e:#}");
            }
        } else {
            c.abort();
        }
    }
    let mut lat = std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    let n = lat.len();
    let text = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{http}/metrics"))
        .bearer_auth(&key)
        .send()
        .await?
        .text()
        .await?;
    let metric = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("0")
            .to_string()
    };
    drop(hub);
    println!(
        "machine: {} cores; hub: debug build",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "subscribers: {subs} (one instrument twin each), connected in {connect_s:.1} s; ingest: {GATEWAYS} gRPC streams, {per_batch} readings per batch, {BATCHES_PER_S} batches/s each = {} readings/s offered, {acked} readings acked over {:.0} s incl. warm-up",
        per_batch as u64 * GATEWAYS as u64 * BATCHES_PER_S,
        secs + 5 + 2
    );
    println!(
        "measured window {window:.1} s: {acked_window} readings committed and acked ({:.0}/s), {delivered} reading events delivered ({:.0}/s), {n} latencies",
        acked_window as f64 / window,
        delivered as f64 / window
    );
    println!(
        "commit-to-delivery (committed_at -> event parsed by the subscriber): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.9),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    println!(
        "hub RSS: {rss_before:.1} MiB before subscribers, {rss_subs:.1} MiB with {subs} idle subscribers ({:.1} KiB each), {rss_load:.1} MiB under load",
        (rss_subs - rss_before) * 1024.0 / subs as f64
    );
    println!(
        "hub CPU over the window: {:.0} % of one core; bench client: {:.0} %",
        (cpu1 - cpu0) / window * 100.0,
        (bench1 - bench0) / window * 100.0
    );
    println!(
        "subscribers that failed: {failed}; lagged events seen by subscribers: {}; hub_live_skipped_events_total {}, hub_live_dropped_total {}, hub_live_events_sent_total {}",
        shared.lagged.load(Ordering::Relaxed),
        metric("hub_live_skipped_events_total"),
        metric("hub_live_dropped_total"),
        metric("hub_live_events_sent_total")
    );
    Ok(())
}
