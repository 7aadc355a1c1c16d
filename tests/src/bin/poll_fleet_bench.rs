//! Polling at fleet size (issue #18, BENCHMARKS.md): one agent polls
//! DEVICES simulated Modbus TCP devices (fleet-sim modbus, 10 float32
//! points each, every answer after 20 ms) once a second, in several layouts
//! of the same devices: one port per device (one connection each), 20 unit
//! ids behind each port, 100 behind each port; then 100 per port against
//! simulators that answer pipelined requests (`--concurrent`) with the
//! profile's `modbus.max_in_flight` at 1, 4 and 8. Per layout: cycles done
//! vs due (missed or late cycles), requests/s per connection, agent CPU and
//! RSS.
//!
//!   scripts/bench-poll-fleet.sh [SECONDS] [DEVICES]
use anyhow::{Context, Result};
use e2e_tests::bench::{cpu_s, release_bin, rss_mib};
use e2e_tests::{Proc, free_port, get_json, wait_for};
use std::time::{Duration, Instant};

const POINTS: u64 = 10;

async fn cycles(url: &str) -> Result<u64> {
    let (_, devs) = get_json(&format!("{url}/api/v1/devices")).await?;
    let readings: u64 = devs
        .as_array()
        .context("devices")?
        .iter()
        .map(|d| d["readings"].as_u64().unwrap_or(0))
        .sum();
    Ok(readings / POINTS)
}

#[tokio::main]
async fn main() -> Result<()> {
    let arg = |i: usize, d: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let seconds = arg(1, 30);
    let devices = arg(2, 1000);
    let dir = tempfile::Builder::new().prefix("qi-bench-").tempdir()?;
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles)?;
    // One profile per window: `fleet-f32x10-w{max_in_flight}`.
    for window in [1u8, 4, 8] {
        let id = format!("fleet-f32x10-w{window}");
        let mut text = format!(
            "format_version = 1\n[model]\nid = \"{id}\"\nmanufacturer = \"bench\"\nname = \"10 float32 points\"\ndevice_type = \"bench\"\n[modbus]\ntimeout_ms = 1000\nmax_in_flight = {window}\n"
        );
        for i in 0..POINTS {
            text.push_str(&format!(
                "[[points]]\nname = \"p{i}\"\nunit = \"V\"\nregister = \"input\"\naddress = {}\ntype = \"f32\"\nsim = {{ base = {i}.0, amplitude = 1.0, period_s = 7.0 }}\n",
                i * 2
            ));
        }
        std::fs::write(profiles.join(format!("{id}.toml")), text)?;
    }
    let profile = profiles.join("fleet-f32x10-w1.toml");
    println!(
        "| layout | device answers | max_in_flight | cycles due | done | missed or late | requests/s per connection | agent CPU (cores) | agent RSS MiB |\n|---|---|---|---|---|---|---|---|---|"
    );
    // (unit ids per port, simulator answers pipelined requests, max_in_flight)
    let layouts: [(u64, bool, u8); 6] = [
        (1, false, 1),
        (20, false, 1),
        (100, false, 1),
        (100, true, 1),
        (100, true, 4),
        (100, true, 8),
    ];
    for (k, (units_per_port, concurrent, window)) in layouts.into_iter().enumerate() {
        let ports = devices.div_ceil(units_per_port);
        // A block of ports below the harness's free_port range and the ephemeral one, one per layout.
        let base = 10_000 + k as u64 * 1_100;
        let tag = format!("{units_per_port}-{concurrent}-{window}");
        let mut sim_args: Vec<String> = vec![
            "modbus".into(),
            "--profile".into(),
            profile.display().to_string(),
            "--first-port".into(),
            base.to_string(),
            "--ports".into(),
            ports.to_string(),
            "--unit-ids".into(),
            format!("1-{units_per_port}"),
            "--delay-ms".into(),
            "20".into(),
        ];
        if concurrent {
            sim_args.push("--concurrent".into());
        }
        let sim_args: Vec<&std::ffi::OsStr> = sim_args.iter().map(|a| a.as_ref()).collect();
        let sim = Proc::spawn(
            "fleet-sim",
            &release_bin("fleet-sim")?,
            &sim_args,
            &dir.path().join(format!("sim-{tag}.log")),
        )?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let http = free_port();
        let mut cfg = format!(
            "gateway_id = \"bench\"\nprofiles_dir = \"{}\"\n[buffer]\npath = \"{}\"\n[uplink]\nhub_url = \"http://127.0.0.1:1\"\nreconnect_min_ms = 5000\nreconnect_max_ms = 30000\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
            profiles.display(),
            dir.path().join(format!("buffer-{tag}")).display()
        );
        for d in 0..devices {
            cfg.push_str(&format!(
                "[[devices]]\nid = \"dev{d}\"\nprofile = \"fleet-f32x10-w{window}\"\ntransport = {{ tcp = \"127.0.0.1:{}\" }}\nunit_id = {}\npoll_interval_ms = 1000\n",
                base + d / units_per_port,
                1 + d % units_per_port
            ));
        }
        let cfg_path = dir.path().join(format!("agent-{tag}.toml"));
        std::fs::write(&cfg_path, cfg)?;
        let agent_bin = release_bin("edge-agent")?;
        e2e_tests::agent_auth::add_user_with(
            &agent_bin,
            &cfg_path,
            e2e_tests::agent_auth::USER,
            "viewer",
            e2e_tests::agent_auth::PASSWORD,
        )?;
        let agent = Proc::spawn(
            "edge-agent",
            &agent_bin,
            &["--config".as_ref(), cfg_path.as_os_str()],
            &dir.path().join(format!("agent-{tag}.log")),
        )?;
        let url = format!("http://127.0.0.1:{http}");
        wait_for("agent login", Duration::from_secs(60), || async {
            Ok(e2e_tests::agent_auth::login_and_remember(&url).await.ok())
        })
        .await?;
        // Warm up: every connection open, first cycles done.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (n0, c0, t0) = (cycles(&url).await?, cpu_s(agent.pid()), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (n1, c1, el) = (
            cycles(&url).await?,
            cpu_s(agent.pid()),
            t0.elapsed().as_secs_f64(),
        );
        let rss = rss_mib(agent.pid());
        agent.terminate(Duration::from_secs(30))?;
        sim.terminate(Duration::from_secs(10))?;
        let due = (devices as f64 * el).round() as u64;
        let done = n1 - n0;
        // One read per cycle (10 contiguous f32 = 20 registers).
        println!(
            "| {ports} ports x {units_per_port} unit ids | {} | {window} | {due} | {done} | {:.1} % | {:.0} | {:.2} | {rss:.0} |",
            if concurrent {
                "pipelined"
            } else {
                "one at a time"
            },
            100.0 * due.saturating_sub(done) as f64 / due as f64,
            done as f64 / el / ports as f64,
            (c1 - c0) / el
        );
    }
    Ok(())
}
