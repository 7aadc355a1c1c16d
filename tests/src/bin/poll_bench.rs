//! Polling benchmark (issue #3): 10 simulated devices x 1,000 float32 points,
//! polled as fast as possible over loopback TCP by the agent, then the same
//! register blocks read by libmodbus in a tight C loop (bench/modbus_loop.c),
//! in the same run, against the same simulator processes.
//!
//!   scripts/bench-poll.sh [SECONDS] [POLL_INTERVAL_MS]
//!
//! POLL_INTERVAL_MS 1 (default) polls back to back: the maximum rate. 100
//! gives 10 x 1000 x 10 = 100k tags/s, to read the CPU cost at that rate.
//!
//! Binaries come from target/release (QI_BIN_DIR overrides).

use anyhow::{Context, Result};
use e2e_tests::bench::{release_bin, rss_mib};
use e2e_tests::peers::peers_dir;
use e2e_tests::{Proc, free_port, get_json, wait_for};
use std::time::{Duration, Instant};

const DEVICES: usize = 10;
const POINTS: usize = 1000;
/// 50 float32 points per read: 20 reads of 100 registers per device cycle,
/// the same blocks the C loop reads.
const BLOCK_REGS: u16 = 100;

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(ticks / hz)
}

async fn total_readings(agent_url: &str) -> Result<u64> {
    let (_, devs) = get_json(&format!("{agent_url}/api/v1/devices")).await?;
    Ok(devs
        .as_array()
        .context("devices")?
        .iter()
        .map(|d| d["readings"].as_u64().unwrap_or(0))
        .sum())
}

#[tokio::main]
async fn main() -> Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(15);
    let interval_ms: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1);
    let dir = tempfile::Builder::new().prefix("qi-bench-").tempdir()?;
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles)?;
    let mut text = format!(
        "format_version = 1\n[model]\nid = \"bench-f32x{POINTS}\"\nmanufacturer = \"bench\"\nname = \"{POINTS} float32 points\"\ndevice_type = \"bench\"\n[modbus]\nmax_registers_per_read = {BLOCK_REGS}\ntimeout_ms = 1000\n"
    );
    for i in 0..POINTS {
        text.push_str(&format!(
            "[[points]]\nname = \"p{i}\"\nunit = \"V\"\nregister = \"input\"\naddress = {}\ntype = \"f32\"\nsim = {{ base = {i}.0, amplitude = 1.0, period_s = 7.0 }}\n",
            i * 2
        ));
    }
    let profile = profiles.join(format!("bench-f32x{POINTS}.toml"));
    std::fs::write(&profile, text)?;

    // The simulators, shared by both runs.
    let mut sims = Vec::new();
    let mut ports = Vec::new();
    for d in 0..DEVICES {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        sims.push(Proc::spawn(
            "instrument-sim",
            &release_bin("instrument-sim")?,
            &[
                "--profile".as_ref(),
                profile.as_os_str(),
                "--listen".as_ref(),
                listen.as_ref(),
            ],
            &dir.path().join(format!("sim{d}.log")),
        )?);
        ports.push(port);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The agent: every device polled back to back (1 ms interval: no idle time).
    let http = free_port();
    let mut cfg = format!(
        "gateway_id = \"bench\"\nprofiles_dir = \"{}\"\n[buffer]\npath = \"{}\"\n[uplink]\nhub_url = \"http://127.0.0.1:1\"\nreconnect_min_ms = 5000\nreconnect_max_ms = 30000\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        profiles.display(),
        dir.path().join("buffer").display()
    );
    for (d, port) in ports.iter().enumerate() {
        cfg.push_str(&format!(
            "[[devices]]\nid = \"dev{d}\"\nprofile = \"bench-f32x{POINTS}\"\ntransport = {{ tcp = \"127.0.0.1:{port}\" }}\npoll_interval_ms = {interval_ms}\n"
        ));
    }
    let cfg_path = dir.path().join("agent.toml");
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
        &dir.path().join("agent.log"),
    )?;
    let url = format!("http://127.0.0.1:{http}");
    wait_for("agent login", Duration::from_secs(20), || async {
        Ok(e2e_tests::agent_auth::login_and_remember(&url).await.ok())
    })
    .await?;
    wait_for("agent polling", Duration::from_secs(20), || async {
        Ok((total_readings(&url).await? > 0).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r0, c0, t0) = (
        total_readings(&url).await?,
        cpu_seconds(agent.pid())?,
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (r1, c1, el) = (
        total_readings(&url).await?,
        cpu_seconds(agent.pid())?,
        t0.elapsed().as_secs_f64(),
    );
    let (_, devs) = get_json(&format!("{url}/api/v1/devices")).await?;
    let requests_per_cycle = devs[0]["requests_per_cycle"].as_u64().unwrap_or(0);
    let rss = rss_mib(agent.pid());
    let backlog = get_json(&format!("{url}/health")).await?.1["buffer"]["backlog"]
        .as_u64()
        .unwrap_or(0);
    agent.terminate(Duration::from_secs(30))?;
    let agent_tags = (r1 - r0) as f64 / el;
    let agent_cores = (c1 - c0) / el;

    // The same blocks with libmodbus, one connection per simulator.
    let blocks = (POINTS * 2) as u16 / BLOCK_REGS;
    let out = std::process::Command::new(peers_dir().join("bin/modbus_loop"))
        .arg(seconds.to_string())
        .arg(BLOCK_REGS.to_string())
        .arg(blocks.to_string())
        .args(ports.iter().map(|p| p.to_string()))
        .output()
        .context("bench/modbus_loop not built: run scripts/setup-test-peers.sh")?;
    let c: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("modbus_loop said: {}", String::from_utf8_lossy(&out.stderr)))?;
    let c_tags = c["f32_tags_per_s"].as_f64().unwrap_or(0.0);
    drop(sims);

    println!(
        "devices x points        : {DEVICES} x {POINTS} float32 ({requests_per_cycle} reads of {BLOCK_REGS} registers per device cycle)"
    );
    println!("poll interval           : {interval_ms} ms per device");
    println!("window                  : {el:.1} s");
    println!(
        "agent tags/s            : {agent_tags:.0} (decoded, dead-band checked, appended to the durable buffer)"
    );
    println!(
        "agent CPU               : {agent_cores:.2} cores ({:.0} % of one core)",
        agent_cores * 100.0
    );
    println!(
        "agent RSS at the end    : {rss:.1} MiB (buffer backlog {backlog} readings, uplink down)"
    );
    println!(
        "libmodbus loop tags/s   : {c_tags:.0} ({} requests, {} errors)",
        c["requests"], c["errors"]
    );
    println!(
        "agent / libmodbus       : {:.2}x",
        agent_tags / c_tags.max(1.0)
    );
    Ok(())
}
