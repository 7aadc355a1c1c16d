//! The local web page's cost on the agent (issue #16): 50 simulated devices
//! x 20 float32 points polled at 1 Hz (one instrument-sim answering unit ids
//! 1..50), the agent's CPU and RSS over a window with no browser, then with
//! 5 pages open on the overview (each its own session and live stream, in
//! Debian's chromium driven by tests/browser/web_bench.py), plus the time to
//! the first meaningful paint and the page weight.
//!
//!   scripts/bench-web.sh [SECONDS]        (release binaries)
//!   QI_BIN_DIR=target/debug target/debug/web_bench [SECONDS]   (debug build)

use anyhow::{Context, Result, bail};
use e2e_tests::bench::{cpu_s, release_bin, rss_mib};
use e2e_tests::peers::{peers_dir, python};
use e2e_tests::{Proc, agent_auth, free_port, get_json, wait_for, workspace_root};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEVICES: usize = 50;
const POINTS: usize = 20;
const PAGES: usize = 5;

/// The agent's CPU (% of one core) and mean RSS (MiB) over `secs`.
async fn window(pid: u32, secs: u64) -> (f64, f64) {
    let (c0, t0) = (cpu_s(pid), Instant::now());
    let mut rss = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(rss_mib(pid));
    }
    let cpu = (cpu_s(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    (cpu, rss.iter().sum::<f64>() / rss.len().max(1) as f64)
}

#[tokio::main]
async fn main() -> Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(30);
    let dir = tempfile::Builder::new().prefix("qi-web-bench-").tempdir()?;
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles)?;
    let mut text = format!(
        "format_version = 1\n[model]\nid = \"bench-f32x{POINTS}\"\nmanufacturer = \"bench\"\nname = \"{POINTS} float32 points\"\ndevice_type = \"bench\"\n[modbus]\ntimeout_ms = 1000\n"
    );
    for i in 0..POINTS {
        text.push_str(&format!(
            "[[points]]\nname = \"p{i:02}\"\nunit = \"V\"\nregister = \"input\"\naddress = {}\ntype = \"f32\"\nsim = {{ base = {i}.0, amplitude = 1.0, period_s = 30.0 }}\n",
            i * 2
        ));
    }
    std::fs::write(profiles.join(format!("bench-f32x{POINTS}.toml")), &text)?;
    let sim_port = free_port();
    let units: Vec<String> = (1..=DEVICES).map(|u| u.to_string()).collect();
    let profile = profiles.join(format!("bench-f32x{POINTS}.toml"));
    let listen = format!("127.0.0.1:{sim_port}");
    let unit_list = units.join(",");
    let _sim = Proc::spawn(
        "instrument-sim",
        &release_bin("instrument-sim")?,
        &[
            "--profile".as_ref(),
            profile.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--unit-id".as_ref(),
            unit_list.as_ref(),
        ],
        &dir.path().join("sim.log"),
    )?;
    let http = free_port();
    let mut cfg = format!(
        "gateway_id = \"gw-web-bench\"\nprofiles_dir = \"{}\"\n[buffer]\npath = \"{}\"\n[uplink]\nhub_url = \"http://127.0.0.1:{}\"\nreconnect_max_ms = 5000\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        profiles.display(),
        dir.path().join("buffer").display(),
        free_port()
    );
    for u in 1..=DEVICES {
        cfg.push_str(&format!(
            "[[devices]]\nid = \"dev{u:02}\"\nprofile = \"bench-f32x{POINTS}\"\ntransport = {{ tcp = \"{listen}\" }}\nunit_id = {u}\npoll_interval_ms = 1000\n"
        ));
    }
    let cfg_path = dir.path().join("agent.toml");
    std::fs::write(&cfg_path, cfg)?;
    let agent_bin = release_bin("edge-agent")?;
    let (user, password) = ("bench", "bench password");
    agent_auth::add_user_with(&agent_bin, &cfg_path, user, "viewer", password)?;
    let agent = Proc::spawn(
        "edge-agent",
        &agent_bin,
        &["--config".as_ref(), cfg_path.as_os_str()],
        &dir.path().join("agent.log"),
    )?;
    let base = format!("http://127.0.0.1:{http}");
    wait_for("agent /health", Duration::from_secs(30), || async {
        Ok(get_json(&format!("{base}/health")).await.ok().map(|_| ()))
    })
    .await?;
    let login = agent_auth::login(&base, user, password).await?;
    e2e_tests::http::remember(&base, login.headers());
    wait_for("50 devices online", Duration::from_secs(60), || async {
        let (_, d) = get_json(&format!("{base}/api/v1/devices")).await?;
        let n = d
            .as_array()
            .map(|a| a.iter().filter(|d| d["state"] == "online").count());
        Ok((n == Some(DEVICES)).then_some(()))
    })
    .await
    .with_context(|| agent.log_tail(30))?;
    // The pages' sessions, made now: argon2id takes 19 MiB per login, which
    // the allocator keeps; that is the login's cost, not the page's.
    let mut cookies = Vec::new();
    for _ in 0..PAGES {
        cookies.push(agent_auth::login(&base, user, password).await?.cookie);
    }
    // Settle: the chart history fills its series within the first minute.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let pid = agent.pid();
    let (cpu0, rss0) = window(pid, secs).await;
    println!("no browser:   agent CPU {cpu0:.2} % of one core, RSS {rss0:.1} MiB");

    let script = workspace_root().join("tests/browser/web_bench.py");
    let conf = serde_json::json!({"base": base, "cookies": cookies, "first_device": "dev01"});
    let mut child = Command::new(python()?)
        .arg(script)
        .arg(conf.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the browser script")?;
    let stdout = child.stdout.take().context("stdout")?;
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("ready ").map(str::to_string))
    })
    .await?;
    let Some(ready) = ready else {
        let _ = child.kill();
        bail!("the browser script ended before its pages were ready");
    };
    let report: serde_json::Value = serde_json::from_str(&ready)?;
    let (cpu1, rss1) = window(pid, secs).await;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(b"");
    }
    let _ = child.wait();
    let streams = e2e_tests::http::get(&format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let sent = streams
        .lines()
        .find(|l| l.starts_with("edge_web_events_total{event=\"snapshot\"}"))
        .unwrap_or("")
        .to_string();
    println!("{PAGES} pages open: agent CPU {cpu1:.2} % of one core, RSS {rss1:.1} MiB");
    println!(
        "extra with {PAGES} pages: CPU {:.2} % of one core, RSS {:+.1} MiB (goal < 5 %, < 8 MiB)",
        cpu1 - cpu0,
        rss1 - rss0
    );
    println!(
        "first meaningful paint, logged in (ms): cold {} warm {}",
        report["meaningful_paint_cold_ms"], report["meaningful_paint_warm_ms"]
    );
    println!("page weight: {}", report["weight"]);
    println!("{sent}");
    println!("peers: {}", peers_dir().display());
    Ok(())
}
