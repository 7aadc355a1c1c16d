//! Store-and-forward benchmark (issue #4):
//! 1. buffer append throughput with durability on (fsync per append), for
//!    single 100-byte readings and for poll-cycle batches of 1,000;
//! 2. a backlog of N readings (default 10M) drained by the real agent to a
//!    live hub and PostgreSQL, end to end, with the agent's peak RSS;
//! 3. in the same run, the hub database's raw COPY rate for the same rows
//!    (binary COPY of what the hub stored into an identical empty table).
//!
//!   scripts/bench-drain.sh [READINGS]

use anyhow::{Context, Result, bail};
use e2e_tests::bench::{release_bin, rss_mib};
use e2e_tests::{HubLaunch, PgServer, Proc, free_port, get_json};
use edge_agent::buffer::{Buffer, BufferOptions, NewReading, Priority};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn dir_mib(p: &std::path::Path) -> f64 {
    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(p) as f64 / 1024.0 / 1024.0
}

fn cycle(
    i: u64,
    n: usize,
    device: &Arc<str>,
    metrics: &[Arc<str>],
    unit: &Arc<str>,
) -> Vec<NewReading> {
    (0..n)
        .map(|k| NewReading {
            device_id: Arc::clone(device),
            metric: Arc::clone(&metrics[k % metrics.len()]),
            timestamp_us: 1_790_000_000_000_000 + (i * n as u64 + k as u64) as i64,
            value: (i as f64) * 0.5 + k as f64,
            unit: Arc::clone(unit),
            quality: 1,
            priority: Priority::Normal,
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let dir = tempfile::Builder::new().prefix("qi-drain-").tempdir()?;
    let device: Arc<str> = Arc::from("bench-meter-with-a-realistic-name-01");
    let metrics: Vec<Arc<str>> = (0..50)
        .map(|m| Arc::from(format!("active_power_phase_l{m}_total").as_str()))
        .collect();
    let unit: Arc<str> = Arc::from("kWh");

    // 1a. Single readings (~100 bytes encoded each), one fsync per append.
    let single = Buffer::open(
        &dir.path().join("single"),
        BufferOptions::with_cache(8 << 20),
    )?;
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(5) {
        single
            .append(&cycle(n, 1, &device, &metrics, &unit))
            .await?;
        n += 1;
    }
    let single_rate = n as f64 / t.elapsed().as_secs_f64();
    drop(single);

    // 1c. The flush policy's cost: 10 concurrent sources appending single readings,
    // fsync at once (shared by whoever is appending) vs a 5 ms group-commit window.
    let mut concurrent = Vec::new();
    for (name, every) in [
        ("at once", None),
        ("5 ms window", Some(Duration::from_millis(5))),
    ] {
        let opts = BufferOptions {
            flush_every: every,
            ..BufferOptions::with_cache(8 << 20)
        };
        let b = Arc::new(Buffer::open(
            &dir.path().join(format!("conc-{}", every.is_some())),
            opts,
        )?);
        let t = Instant::now();
        let tasks: Vec<_> = (0..10u64)
            .map(|src| {
                let (b, d, m, u) = (
                    Arc::clone(&b),
                    Arc::clone(&device),
                    metrics.clone(),
                    Arc::clone(&unit),
                );
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while t.elapsed() < Duration::from_secs(3) {
                        let _ = b.append(&cycle(src * 1_000_000 + n, 1, &d, &m, &u)).await;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total_appends = 0;
        for task in tasks {
            total_appends += task.await?;
        }
        concurrent.push((name, total_appends as f64 / t.elapsed().as_secs_f64()));
    }

    // 1b + fill: poll-cycle batches of 1,000 into the buffer the agent will drain.
    let buf_path = dir.path().join("buffer");
    let buffer = Buffer::open(&buf_path, BufferOptions::with_cache(8 << 20))?;
    let t = Instant::now();
    let batches = total / 1000;
    for i in 0..batches {
        buffer
            .append(&cycle(i, 1000, &device, &metrics, &unit))
            .await?;
        if i % 1000 == 999 {
            eprintln!("filled {} readings", (i + 1) * 1000);
        }
    }
    let fill_s = t.elapsed().as_secs_f64();
    buffer.flush().await?;
    drop(buffer);
    let disk = dir_mib(&buf_path);

    // 2. Drain to a live hub.
    let pg = PgServer::start().await?;
    let (grpc, hub_http, agent_http) = (free_port(), free_port(), free_port());
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
    // QI_DRAIN_COMPRESSION=none measures a LAN uplink without gzip.
    let compression = std::env::var("QI_DRAIN_COMPRESSION").unwrap_or_else(|_| "gzip".into());
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "gateway_id = \"drain\"\n[buffer]\npath = \"{}\"\n[uplink]\nhub_url = \"http://127.0.0.1:{grpc}\"\nbatch_max = 10000\nmax_in_flight = 4\ncompression = \"{compression}\"\n[http]\nlisten = \"127.0.0.1:{agent_http}\"\n",
            buf_path.display()
        ),
    )?;
    let hub_cpu_before = cpu_seconds(_hub.pid());
    let t = Instant::now();
    let agent_bin = release_bin("edge-agent")?;
    e2e_tests::agent_auth::add_user_with(
        &agent_bin,
        &agent_cfg,
        e2e_tests::agent_auth::USER,
        "viewer",
        e2e_tests::agent_auth::PASSWORD,
    )?;
    let agent = Proc::spawn(
        "edge-agent",
        &agent_bin,
        &["--config".as_ref(), agent_cfg.as_os_str()],
        &dir.path().join("agent.log"),
    )?;
    let mut peak_rss: f64 = 0.0;
    let health = format!("http://127.0.0.1:{agent_http}/health");
    let agent_url = format!("http://127.0.0.1:{agent_http}");
    let mut logged_in = false;
    loop {
        // /health shows the buffer only to a logged-in user.
        if !logged_in {
            logged_in = e2e_tests::agent_auth::login_and_remember(&agent_url)
                .await
                .is_ok();
        }
        peak_rss = peak_rss.max(rss_mib(agent.pid()));
        if let Ok((_, h)) = get_json(&health).await
            && h["buffer"]["backlog"] == 0
            && h["buffer"]["last_seq"].as_u64() == Some(batches * 1000)
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(3600) {
            bail!("drain did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_s = t.elapsed().as_secs_f64();
    let agent_cpu = cpu_seconds(agent.pid());
    let hub_cpu = cpu_seconds(_hub.pid()) - hub_cpu_before;
    let hub_metrics = e2e_tests::http::get(format!("http://127.0.0.1:{hub_http}/metrics"))
        .await?
        .text()
        .await?;
    let metric = |name: &str| {
        hub_metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let wire = metric("hub_grpc_wire_bytes_received_total");
    let message = metric("hub_grpc_message_bytes_received_total");
    agent.terminate(Duration::from_secs(30))?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&pool)
        .await?;
    if stored as u64 != batches * 1000 {
        bail!("hub holds {stored} readings, expected {}", batches * 1000);
    }

    // 3. Raw COPY of the very rows the hub stored into an identical empty
    //    table (same indexes), in one COPY: the database's ceiling.
    sqlx::query("CREATE TABLE samples_raw (LIKE samples INCLUDING ALL)")
        .execute(&pool)
        .await?;
    // Same kind of table as the hub writes to: a hypertable on the TimescaleDB tiers.
    let hyper: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
    )
    .fetch_one(&pool)
    .await?;
    if hyper {
        sqlx::query(
            "SELECT create_hypertable('samples_raw', 'ts', chunk_time_interval => interval '1 day')",
        )
        .execute(&pool)
        .await?;
    }
    let mut conn = pool.acquire().await?;
    let mut rows_bin = Vec::new();
    {
        use tokio_stream::StreamExt;
        let mut out = conn
            .copy_out_raw(
                "COPY (SELECT ts, series_id, seq, value, quality FROM samples) TO STDOUT (FORMAT binary)",
            )
            .await?;
        while let Some(chunk) = out.next().await {
            rows_bin.extend_from_slice(&chunk?);
        }
    }
    let t = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY samples_raw (ts, series_id, seq, value, quality) FROM STDIN (FORMAT binary)",
        )
        .await?;
    for chunk in rows_bin.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let raw_n = copy.finish().await.context("raw COPY")?;
    let raw_rate = raw_n as f64 / t.elapsed().as_secs_f64();

    println!("append, single ~100-byte readings, fsync each : {single_rate:.0} appends/s");
    for (name, rate) in &concurrent {
        println!("append, 10 concurrent sources, flush {name:<11}: {rate:.0} appends/s");
    }
    println!(
        "append, poll-cycle batches of 1,000, fsync each: {:.0} readings/s ({:.0} appends/s)",
        (batches * 1000) as f64 / fill_s,
        batches as f64 / fill_s
    );
    println!(
        "backlog                                       : {} readings, {disk:.0} MiB on disk",
        batches * 1000
    );
    println!(
        "drain to hub + PostgreSQL, end to end         : {:.0} readings/s ({drain_s:.1} s, uplink compression {compression})",
        (batches * 1000) as f64 / drain_s
    );
    println!("agent peak RSS while draining                 : {peak_rss:.1} MiB");
    let n = (batches * 1000) as f64;
    println!(
        "on the wire (hub, below TLS)                  : {:.1} bytes/reading; protobuf {:.1} bytes/reading; wire/protobuf {:.2}",
        wire / n,
        message / n,
        wire / message
    );
    println!(
        "CPU while draining                            : agent {agent_cpu:.1} s ({:.0}% of one core), hub {hub_cpu:.1} s ({:.0}%)",
        100.0 * agent_cpu / drain_s,
        100.0 * hub_cpu / drain_s
    );
    println!(
        "hub database raw COPY (binary), same rows      : {raw_rate:.0} rows/s (one COPY into an identical empty table)"
    );
    println!(
        "drain / raw COPY                               : {:.2}x",
        (batches * 1000) as f64 / drain_s / raw_rate
    );
    Ok(())
}

/// User + system CPU time of a process so far, from /proc (Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of stat: indexes 11 and 12 after the ")".
    (ticks(11) + ticks(12)) / hz
}
