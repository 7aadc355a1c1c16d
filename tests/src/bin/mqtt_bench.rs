//! MQTT benchmark (BENCHMARKS.md, issue #5), one run:
//! 1. the agent's acknowledged-and-durable rate: N publishers, QoS 1, ~100-byte
//!    telemetry payloads, W messages in flight each; every PUBACK means the
//!    reading is fsynced in the agent's buffer;
//! 2. Debian's mosquitto, same load, with a subscriber counting what it gets;
//! 3. at 10k msg/s: publish -> PUBACK (durable) latency, and publish -> readable
//!    at the hub (PostgreSQL `received_at` minus the payload's timestamp);
//! 4. the agent's RSS idle and at full load.
//!    scripts/bench-mqtt.sh [MESSAGES] [PUBLISHERS]
use anyhow::{Context, Result, bail};
use bytes::{BufMut, Bytes, BytesMut};
use e2e_tests::bench::{release_bin, rss_mib};
use e2e_tests::{HubLaunch, PgServer, Proc, free_port, get_json, wait_for};
use edge_agent::mqtt::frame;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PW: &str = "bench-pw";

fn connect_frame(client_id: &str, login: Option<(&str, &str)>) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(4);
    body.put_slice(b"MQTT");
    body.put_u8(4);
    body.put_u8(0x02 | if login.is_some() { 0xC0 } else { 0 });
    body.put_u16(60);
    body.put_u16(client_id.len() as u16);
    body.put_slice(client_id.as_bytes());
    if let Some((u, p)) = login {
        body.put_u16(u.len() as u16);
        body.put_slice(u.as_bytes());
        body.put_u16(p.len() as u16);
        body.put_slice(p.as_bytes());
    }
    let mut b = BytesMut::new();
    b.put_u8(0x10);
    put_len(&mut b, body.len());
    b.put_slice(&body);
    b.freeze()
}

fn put_len(b: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        b.put_u8(byte);
        if n == 0 {
            return;
        }
    }
}

fn publish_qos1(b: &mut BytesMut, topic: &str, payload: &[u8], pkid: u16) {
    b.put_u8(0x32);
    put_len(b, 2 + topic.len() + 2 + payload.len());
    b.put_u16(topic.len() as u16);
    b.put_slice(topic.as_bytes());
    b.put_u16(pkid);
    b.put_slice(payload);
}

async fn connect(port: u16, id: &str, login: Option<(&str, &str)>) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    s.write_all(&connect_frame(id, login)).await?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await?;
    if ack[0] != 0x20 || ack[3] != 0 {
        bail!("CONNACK refused: {ack:?}");
    }
    Ok(s)
}

fn payload(i: u64) -> Vec<u8> {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!(
        r#"{{"metric":"v","value":{}.5,"unit":"V","ts":"{ts}","quality":"good"}}"#,
        i % 100_000
    )
    .into_bytes()
}

/// One QoS 1 publisher: `n` messages, at most `window` unacknowledged, paced
/// to `rate` msg/s if given. Returns per-message publish -> PUBACK latencies.
async fn publisher(
    port: u16,
    id: String,
    login: Option<(&'static str, &'static str)>,
    n: u64,
    window: usize,
    rate: Option<f64>,
) -> Result<Vec<Duration>> {
    let s = connect(port, &id, login).await?;
    let (mut rd, mut wr) = s.into_split();
    let topic = format!("site/s1/bench/{id}/telemetry");
    let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; 65536]));
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let reader = {
        let sent = Arc::clone(&sent);
        let permits = Arc::clone(&permits);
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            let mut buf = BytesMut::with_capacity(64 * 1024);
            while (lat.len() as u64) < n {
                if rd.read_buf(&mut buf).await? == 0 {
                    bail!("connection closed after {} acks", lat.len());
                }
                while let Some(f) = frame::next_frame(&mut buf, 1 << 20)? {
                    if f.first == 0x40 && f.bytes.len() >= 4 {
                        let pkid = u16::from_be_bytes([f.bytes[2], f.bytes[3]]) as usize;
                        if let Some(t) =
                            sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[pkid].take()
                        {
                            lat.push(t.elapsed());
                        }
                        permits.add_permits(1);
                    }
                }
            }
            Ok(lat)
        })
    };
    let start = Instant::now();
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut pkid: u16 = 0;
    for i in 0..n {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / r);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                if !out.is_empty() {
                    wr.write_all(&out.split()).await?;
                }
                tokio::time::sleep(wait).await;
            }
        }
        let permit = match permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if !out.is_empty() {
                    wr.write_all(&out.split()).await?;
                }
                permits.acquire().await?
            }
        };
        permit.forget();
        pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
        sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[pkid as usize] = Some(Instant::now());
        publish_qos1(&mut out, &topic, &payload(i), pkid);
        if out.len() > 32 * 1024 {
            wr.write_all(&out.split()).await?;
        }
    }
    if !out.is_empty() {
        wr.write_all(&out.split()).await?;
    }
    reader.await?
}

/// Runs `pubs` publishers of `total` messages; returns (msg/s, latencies).
async fn load(
    port: u16,
    login: Option<(&'static str, &'static str)>,
    total: u64,
    pubs: u64,
    window: usize,
    rate: Option<f64>,
    tag: &str,
) -> Result<(f64, Vec<Duration>)> {
    let t = Instant::now();
    let tasks: Vec<_> = (0..pubs)
        .map(|p| {
            tokio::spawn(publisher(
                port,
                format!("{tag}-{p}"),
                login,
                total / pubs,
                window,
                rate.map(|r| r / pubs as f64),
            ))
        })
        .collect();
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await??);
    }
    Ok((
        (total / pubs * pubs) as f64 / t.elapsed().as_secs_f64(),
        lat,
    ))
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Counts PUBLISH packets on `site/#` until `expect` arrived or 5 s of silence.
async fn subscriber(port: u16, expect: u64, count: Arc<AtomicU64>) -> Result<Instant> {
    let mut s = connect(port, "bench-sub", None).await?;
    let mut sub = BytesMut::new();
    sub.put_u8(0x82);
    put_len(&mut sub, 2 + 2 + 6 + 1);
    sub.put_u16(1);
    sub.put_u16(6);
    sub.put_slice(b"site/#");
    sub.put_u8(0);
    s.write_all(&sub).await?;
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut last = Instant::now();
    while count.load(Ordering::SeqCst) < expect {
        match tokio::time::timeout(Duration::from_secs(5), s.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
        while let Some(f) = frame::next_frame(&mut buf, 1 << 20)? {
            if f.kind() == frame::PUBLISH {
                count.fetch_add(1, Ordering::SeqCst);
                last = Instant::now();
            }
        }
    }
    Ok(last)
}

#[tokio::main]
async fn main() -> Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let pubs: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(8);
    let window = 200;
    let dir = tempfile::tempdir()?;

    // The agent, hub not yet running: the rate of durable buffering alone.
    let (grpc, hub_http, agent_http, mqtt_port) =
        (free_port(), free_port(), free_port(), free_port());
    let hash = edge_agent::mqtt::auth::hash_password(PW, 1000);
    // buffer.recycle_after_mib (0 = never reopen sled), for comparisons.
    let recycle: u64 = std::env::var("RECYCLE_AFTER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(edge_agent::buffer::DEFAULT_RECYCLE_AFTER_BYTES >> 20);
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "gateway_id = \"bench\"\n[buffer]\npath = \"{}\"\nrecycle_after_mib = {recycle}\n[uplink]\nhub_url = \"http://127.0.0.1:{grpc}\"\nbatch_max = 10000\n\
             [http]\nlisten = \"127.0.0.1:{agent_http}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\nsite = \"s1\"\n\
             accept_unknown_devices = true\n[[mqtt.users]]\nname = \"bench\"\npassword_hash = \"{hash}\"\n\
             publish = [\"site/#\"]\nsubscribe = [\"site/#\"]\n",
            dir.path().join("buffer").display()
        ),
    )?;
    let agent = Proc::spawn(
        "edge-agent",
        &release_bin("edge-agent")?,
        &["--config".as_ref(), agent_cfg.as_os_str()],
        &dir.path().join("agent.log"),
    )?;
    let health = format!("http://127.0.0.1:{agent_http}/health");
    wait_for("agent", Duration::from_secs(20), || async {
        Ok(get_json(&health).await.ok().map(|_| ()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_mib(agent.pid());
    let peak = Arc::new(std::sync::Mutex::new(0f64));
    let sampler = {
        let peak = Arc::clone(&peak);
        let pid = agent.pid();
        tokio::spawn(async move {
            loop {
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(rss_mib(pid));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let login = Some(("bench", PW));
    let (agent_rate, _) = load(mqtt_port, login, total, pubs, window, None, "a").await?;
    sampler.abort();
    let loaded_rss = peak.lock().map(|p| *p).unwrap_or(0.0);
    let (_, h) = get_json(&health).await?;
    let buffered = h["buffer"]["backlog"].as_u64().unwrap_or(0);

    // Many distinct topics: rumqttd keeps a log per topic filter.
    let topics: u64 = 10_000;
    {
        let mut s = connect(mqtt_port, "topics", login).await?;
        let mut out = BytesMut::new();
        for i in 0..topics * 5 {
            let topic = format!("site/s1/bench/t-{}/telemetry", i % topics);
            publish_qos1(&mut out, &topic, &payload(i), (i % 60_000 + 1) as u16);
            if out.len() > 64 * 1024 {
                s.write_all(&out.split()).await?;
            }
        }
        s.write_all(&out.split()).await?;
        let mut acks = 0u64;
        let mut buf = BytesMut::new();
        while acks < topics * 5 {
            if s.read_buf(&mut buf).await? == 0 {
                bail!("topics connection closed after {acks} acks");
            }
            while let Some(f) = frame::next_frame(&mut buf, 1 << 20)? {
                acks += u64::from(f.first == 0x40);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let topics_rss = rss_mib(agent.pid());

    // mosquitto, same load, one subscriber counting.
    let mport = free_port();
    let mconf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &mconf,
        format!(
            "listener {mport} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        ),
    )?;
    let mosq = Proc::spawn(
        "mosquitto",
        std::path::Path::new("/usr/sbin/mosquitto"),
        &["-c".as_ref(), mconf.as_os_str()],
        &dir.path().join("mosquitto.log"),
    )
    .context("mosquitto not installed? scripts/bench-mqtt.sh installs it")?;
    wait_for("mosquitto", Duration::from_secs(10), || async {
        Ok(TcpStream::connect(("127.0.0.1", mport))
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    let expect = total / pubs * pubs;
    let got = Arc::new(AtomicU64::new(0));
    let sub = tokio::spawn(subscriber(mport, expect, Arc::clone(&got)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let (mosq_pub_rate, _) = load(mport, None, total, pubs, window, None, "m").await?;
    let last = sub.await??;
    let received = got.load(Ordering::SeqCst);
    let mosq_rate = received as f64 / last.duration_since(t).as_secs_f64();
    drop(mosq);

    // Latency at 10k msg/s with the hub live.
    let pg = PgServer::start().await?;
    let _hub = HubLaunch {
        binary: release_bin("cloud-hub")?,
        pg_url: &pg.url(),
        grpc_port: grpc,
        http_port: hub_http,
        database: "max_connections = 4",
        grpc: "",
        after: "",
        args: &[],
        dir: dir.path(),
        log: &dir.path().join("hub.log"),
    }
    .start()
    .await?;
    wait_for(
        "backlog drained to the hub",
        Duration::from_secs(600),
        || async {
            let (_, h) = get_json(&health).await?;
            Ok((h["buffer"]["backlog"] == 0).then_some(()))
        },
    )
    .await?;
    let lat_n: u64 = 100_000.min(total);
    let since = chrono::Utc::now();
    let (_, mut lat) = load(mqtt_port, login, lat_n, 4, window, Some(10_000.0), "l").await?;
    wait_for(
        "latency run at the hub",
        Duration::from_secs(120),
        || async {
            let (_, h) = get_json(&health).await?;
            Ok((h["buffer"]["backlog"] == 0).then_some(()))
        },
    )
    .await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url())
        .await?;
    let (hub_p50, hub_p99, hub_n): (Option<f64>, Option<f64>, i64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP (ORDER BY d), count(*)
         FROM (SELECT extract(epoch FROM received_at - ts) * 1000 AS d FROM readings
               WHERE device_id LIKE 'l-%' AND ts >= $1) x",
    )
    .bind(since)
    .fetch_one(&pool)
    .await?;
    drop(agent);

    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "load: {pubs} publishers, QoS 1, ~100-byte JSON payloads, {window} in flight each, {total} messages"
    );
    println!(
        "agent, acknowledged and durable (hub offline)  : {agent_rate:.0} msg/s ({buffered} readings buffered)"
    );
    println!(
        "mosquitto, publish -> subscriber               : {mosq_rate:.0} msg/s ({received} of {expect} received; publishers saw acks at {mosq_pub_rate:.0} msg/s)"
    );
    println!(
        "agent / mosquitto                              : {:.2}x",
        agent_rate / mosq_rate
    );
    println!(
        "latency at 10k msg/s ({} messages), publish -> durable (PUBACK): p50 {:.1} ms, p99 {:.1} ms",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    println!(
        "latency at 10k msg/s ({hub_n} readings), publish -> readable at the hub: p50 {:.1} ms, p99 {:.1} ms",
        hub_p50.unwrap_or(f64::NAN),
        hub_p99.unwrap_or(f64::NAN)
    );
    println!(
        "agent RSS idle: {idle_rss:.1} MiB; peak under the full-rate load: {loaded_rss:.1} MiB"
    );
    println!("agent RSS after 5 messages on each of {topics} distinct topics: {topics_rss:.1} MiB");
    Ok(())
}
