//! Fleet benchmark (issue #18, BENCHMARKS.md): DEVICES fleet-sim devices
//! across AGENTS agents (one per site) publishing once a second for SECONDS,
//! one hub, one PostgreSQL, all on this machine, in one run:
//! - per-connection memory in the agent (connections open, quiet);
//! - aggregate acknowledged msg/s, hub rows/s, end-to-end lag (reading ts ->
//!   hub received_at) p50/p99, each process' CPU and RSS from /proc;
//! - the exactly-once check of tests/tests/fleet.rs, at this size.
//!
//!   scripts/bench-fleet.sh [DEVICES] [AGENTS] [SECONDS] [PER_CONNECTION]
//!
//! Binaries come from QI_BIN_DIR (the script sets target/release or target/debug).
use anyhow::{Context, Result};
use e2e_tests::bench::{cpu_s, release_bin, rss_mib, tree_cpu_s, vm_hwm_mib};
use e2e_tests::{HubLaunch, Proc, Stack, free_port, wait_for};
use std::time::{Duration, Instant};

const PW: &str = "fleet-bench-pw";

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn fleet(
    sites: &[String],
    devices: u64,
    per_conn: u64,
    period_ms: u64,
    seconds: u64,
    report: &std::path::Path,
    log: &std::path::Path,
) -> Result<Proc> {
    let mut cmd = std::process::Command::new(release_bin("fleet-sim")?);
    cmd.arg("mqtt");
    for s in sites {
        cmd.args(["--site", s]);
    }
    cmd.args([
        "--devices",
        &devices.to_string(),
        "--per-connection",
        &per_conn.to_string(),
    ])
    .args([
        "--period-ms",
        &period_ms.to_string(),
        "--seconds",
        &seconds.to_string(),
    ])
    // A bounded window per connection and a short drain keep the full-size
    // run under ten minutes: beyond the window, publishes are skipped and
    // counted (the offered rate the machine cannot take), not queued.
    .args(["--max-inflight", "1000", "--drain-s", "30"])
    .args(["--username", "fleet", "--report"])
    .arg(report)
    .env("FLEET_SIM_PASSWORD", PW);
    Proc::spawn_cmd("fleet-sim", &mut cmd, log)
}

async fn hub_rows(pool: &sqlx::PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM samples")
        .fetch_one(pool)
        .await?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let devices = arg(1, 100_000);
    let n_agents = arg(2, 10) as usize;
    let seconds = arg(3, 120);
    let per_conn = arg(4, 100);
    let stack = Stack::new().await?;
    let hub = HubLaunch {
        binary: release_bin("cloud-hub")?,
        pg_url: &stack.pg_url()?,
        grpc_port: stack.grpc_port,
        http_port: stack.hub_http_port,
        database: "",
        grpc: "",
        after: "",
        args: &[],
        dir: stack.dir.path(),
        log: &stack.log_path("hub"),
    }
    .start()
    .await?;
    let hash = edge_agent::mqtt::auth::hash_password(PW, 1000);
    let mut agents = Vec::new();
    let mut sites = Vec::new();
    for i in 0..n_agents {
        let mqtt = free_port();
        let extra = format!(
            "[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\nsite = \"site-{i}\"\naccept_unknown_devices = true\npublish_polled = false\nmax_connections = 5000\nmax_connections_per_address = 5000\n\n[[mqtt.users]]\nname = \"fleet\"\npassword_hash = \"{hash}\"\npublish = [\"site/site-{i}/+/+/telemetry\"]\n"
        );
        agents.push(
            stack
                .spawn_agent(
                    &format!("agent-{i}"),
                    &format!("gw-site-{i}"),
                    free_port(),
                    &extra,
                )
                .await?,
        );
        sites.push(format!("site-{i}=127.0.0.1:{mqtt}"));
    }
    let conns_per_agent = (devices / n_agents as u64).div_ceil(per_conn);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle: Vec<f64> = agents.iter().map(|a| rss_mib(a.pid())).collect();

    // Phase 1: every connection open, one message each, then quiet.
    let quiet = fleet(
        &sites,
        devices,
        per_conn,
        3_600_000,
        15,
        &stack.dir.path().join("quiet.json"),
        &stack.log_path("fleet-quiet"),
    )?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let connected: Vec<f64> = agents.iter().map(|a| rss_mib(a.pid())).collect();
    quiet.wait(Duration::from_secs(200))?;
    let per_conn_kib: Vec<f64> = idle
        .iter()
        .zip(&connected)
        .map(|(i, c)| (c - i) * 1024.0 / conns_per_agent as f64)
        .collect();

    // Phase 2: the load.
    let pool = stack.db().await?;
    let report = stack.dir.path().join("fleet.json");
    let sim = fleet(
        &sites,
        devices,
        per_conn,
        1000,
        seconds,
        &report,
        &stack.log_path("fleet"),
    )?;
    let pids: Vec<(String, u32)> = std::iter::once(("hub".to_string(), hub.pid()))
        .chain(std::iter::once(("fleet-sim".to_string(), sim.pid())))
        .chain(
            agents
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("agent-{i}"), a.pid())),
        )
        .collect();
    let t0 = Instant::now();
    let cpu0: Vec<f64> = pids.iter().map(|(_, p)| cpu_s(*p)).collect();
    let pg_cpu0 = pg_tree_cpu(&stack);
    // Steady state: from 10 s in to the end of the publishing.
    tokio::time::sleep(Duration::from_secs(10.min(seconds / 3))).await;
    let (ts, rs) = (Instant::now(), hub_rows(&pool).await?);
    tokio::time::sleep(Duration::from_secs(
        seconds.saturating_sub(10.min(seconds / 3)) + 1,
    ))
    .await;
    let (te, re) = (Instant::now(), hub_rows(&pool).await?);
    let wall = t0.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu0)
        .map(|((_, p), c0)| (cpu_s(*p) - c0) / wall)
        .collect();
    let pg_cpu = (pg_tree_cpu(&stack) - pg_cpu0) / wall;
    let rss: Vec<(f64, f64)> = pids
        .iter()
        .map(|(_, p)| (rss_mib(*p), vm_hwm_mib(*p)))
        .collect();
    sim.wait(Duration::from_secs(300))?;
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    let acked = r["acked"].as_i64().context("acked")?;
    let quiet_r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stack.dir.path().join("quiet.json"))?)?;
    let expected = (acked + quiet_r["acked"].as_i64().unwrap_or(0)) * 4;
    let catch_up = Instant::now();
    wait_for(
        "the hub to hold every acknowledged reading",
        Duration::from_secs(900),
        || async { Ok((hub_rows(&pool).await? >= expected).then_some(())) },
    )
    .await?;
    let catch_up_s = catch_up.elapsed().as_secs_f64();
    let (dupes, lag): (i64, Vec<f64>) = {
        let d: i64 =
            sqlx::query_scalar("SELECT count(*) - count(DISTINCT (series_id, ts)) FROM samples")
                .fetch_one(&pool)
                .await?;
        let l: Vec<f64> = sqlx::query_scalar(
            "SELECT unnest(percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - ts)))::float8 FROM samples",
        )
        .fetch_all(&pool)
        .await?;
        (d, l)
    };
    let total = hub_rows(&pool).await?;

    println!(
        "## fleet: {devices} devices, {n_agents} agents, {per_conn} devices/connection ({conns_per_agent} connections/agent), {seconds} s"
    );
    println!(
        "binaries: {}",
        release_bin("fleet-sim")?
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    println!(
        "fleet-sim: sent {} acked {acked} ({:.0} msg/s acknowledged, offered {:.0}/s), unacked {}, skipped {}, missed ticks {}, publish->PUBACK p50 {} ms p99 {} ms, RSS {} MiB (peak {} MiB)",
        r["sent"],
        r["acked_per_s"].as_f64().unwrap_or(0.0),
        devices as f64,
        r["unacked"],
        r["skipped"],
        r["missed_ticks"],
        r["ack_latency_ms_p50"],
        r["ack_latency_ms_p99"],
        r["rss_kib"].as_u64().unwrap_or(0) / 1024,
        r["peak_rss_kib"].as_u64().unwrap_or(0) / 1024
    );
    println!(
        "hub rows/s (steady state): {:.0}; catch-up after the fleet stopped: {catch_up_s:.1} s; rows {total}, duplicates {dupes}",
        (re - rs) as f64 / (te - ts).as_secs_f64()
    );
    println!(
        "end-to-end lag (reading ts -> hub received_at): p50 {:.2} s, p99 {:.2} s",
        lag.first().copied().unwrap_or(f64::NAN),
        lag.get(1).copied().unwrap_or(f64::NAN)
    );
    println!(
        "agent per-connection memory (RSS with {conns_per_agent} quiet connections - idle, / connections): {}",
        per_conn_kib
            .iter()
            .map(|k| format!("{k:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
            + " KiB"
    );
    println!("| process | CPU (cores) | RSS MiB | peak RSS MiB |\n|---|---|---|---|");
    for (((name, _), c), (m, h)) in pids.iter().zip(&cpu).zip(&rss) {
        println!("| {name} | {c:.2} | {m:.0} | {h:.0} |");
    }
    println!("| postgres (all backends) | {pg_cpu:.2} | | |");
    let sum: f64 = cpu.iter().sum::<f64>() + pg_cpu;
    println!("total CPU: {sum:.2} of 2 cores");
    for a in agents {
        let _ = a.terminate(Duration::from_secs(30));
    }
    let _ = hub.terminate(Duration::from_secs(30));
    anyhow::ensure!(dupes == 0, "{dupes} duplicate readings at the hub");
    Ok(())
}

/// CPU seconds of every PostgreSQL process of the stack's cluster.
fn pg_tree_cpu(stack: &Stack) -> f64 {
    stack
        .pg
        .as_ref()
        .and_then(|p| p.pid())
        .map_or(0.0, tree_cpu_s)
}
