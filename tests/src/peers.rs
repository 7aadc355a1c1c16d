//! Independent peers installed by `scripts/setup-test-peers.sh`: pymodbus,
//! libmodbus's unit-test-server, mbpoll, socat, and the SCPI responder.

use crate::process::Proc;
use crate::{wait_for, workspace_root};
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub fn peers_dir() -> PathBuf {
    std::env::var_os("QI_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/peers"))
}

fn need(path: PathBuf) -> Result<PathBuf> {
    if !path.exists() {
        bail!(
            "{} missing: run scripts/setup-test-peers.sh (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

pub fn python() -> Result<PathBuf> {
    need(peers_dir().join("venv/bin/python"))
}

pub fn peer_script(name: &str) -> PathBuf {
    workspace_root().join("tests/peers").join(name)
}

/// Waits until a peer's log says "ready".
async fn ready(p: &Proc, what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(20), || async {
        if p.exit_status()?.is_some() {
            bail!("{what} exited: {}", p.log_tail(30));
        }
        Ok(p.log_text().contains("ready").then_some(()))
    })
    .await
}

/// pymodbus serving a profile's registers at their `sim.base` values.
pub async fn pymodbus(dir: &Path, name: &str, profile: &str, args: &[&str]) -> Result<Proc> {
    let profile = crate::profiles_dir().join(format!("{profile}.toml"));
    let script = peer_script("pymodbus_server.py");
    let mut all: Vec<&OsStr> = vec![
        script.as_os_str(),
        "--profile".as_ref(),
        profile.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    let p = Proc::spawn(name, &python()?, &all, &dir.join(format!("{name}.log")))?;
    ready(&p, name).await?;
    // "ready" is printed just before the listener starts; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(p)
}

/// The SCPI / ASCII responder.
pub async fn scpi_responder(dir: &Path, name: &str, args: &[&str]) -> Result<Proc> {
    let script = peer_script("scpi_responder.py");
    let mut all: Vec<&OsStr> = vec![script.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let p = Proc::spawn(name, &python()?, &all, &dir.join(format!("{name}.log")))?;
    ready(&p, name).await?;
    Ok(p)
}

/// A socat pseudo-terminal pair: two linked serial "ports".
pub struct PtyPair {
    pub a: PathBuf,
    pub b: PathBuf,
    _proc: Proc,
}

pub async fn pty_pair(dir: &Path, name: &str) -> Result<PtyPair> {
    let a = dir.join(format!("{name}-a"));
    let b = dir.join(format!("{name}-b"));
    let arg = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
    let (aa, bb) = (arg(&a), arg(&b));
    let proc = Proc::spawn(
        "socat",
        Path::new("socat"),
        &["-d".as_ref(), aa.as_ref(), bb.as_ref()],
        &dir.join(format!("{name}-socat.log")),
    )
    .context("socat not installed? run scripts/setup-test-peers.sh")?;
    let (ca, cb) = (a.clone(), b.clone());
    wait_for("socat pty links", Duration::from_secs(10), || {
        let (ca, cb) = (ca.clone(), cb.clone());
        async move { Ok((ca.exists() && cb.exists()).then_some(())) }
    })
    .await?;
    Ok(PtyPair { a, b, _proc: proc })
}

/// libmodbus's unit-test-server on `port` (it serves one client, then exits).
pub async fn unit_test_server(dir: &Path, port: u16) -> Result<Proc> {
    let bin = need(peers_dir().join("bin/unit-test-server"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("tcp").env("UT_PORT", port.to_string());
    let p = Proc::spawn_cmd(
        "unit-test-server",
        &mut cmd,
        &dir.join(format!("uts-{port}.log")),
    )?;
    wait_for(
        "unit-test-server port",
        Duration::from_secs(10),
        || async move {
            // A probe connection would be its one client; wait for the listening socket instead.
            let listening = std::fs::read_to_string("/proc/net/tcp")?
                .lines()
                .any(|l| l.contains(&format!(":{port:04X} 00000000:0000 0A")));
            Ok(listening.then_some(()))
        },
    )
    .await?;
    Ok(p)
}

/// Runs mbpoll once and returns its stdout (errors if it fails).
pub fn mbpoll(args: &[&str]) -> Result<String> {
    let out = Command::new("mbpoll")
        .args(args)
        .output()
        .context("mbpoll not installed? run scripts/setup-test-peers.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "mbpoll {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// One mbpoll read over TCP from unit 1: `kind` is mbpoll's `-t` ("3:float"
/// input float32, "4" holding u16, "4:float" holding float32), `count` values
/// from 0-based `addr`; `big_words` reads 32-bit values high word first (-B).
pub fn mbpoll_read(
    port: u16,
    kind: &str,
    addr: u16,
    count: u16,
    big_words: bool,
) -> Result<Vec<(u32, f64)>> {
    let (p, r, c) = (port.to_string(), format!("{addr:#06x}"), count.to_string());
    let mut args = vec![
        "-m", "tcp", "-a", "1", "-t", kind, "-0", "-r", &r, "-c", &c, "-1", "-p", &p,
    ];
    if big_words {
        args.push("-B");
    }
    args.push("127.0.0.1");
    Ok(mbpoll_values(&mbpoll(&args)?))
}

/// One holding register value (float32 read low word first, as mbpoll does without -B).
pub fn mbpoll_holding(port: u16, kind: &str, addr: u16) -> Result<Vec<(u32, f64)>> {
    mbpoll_read(port, kind, addr, 1, false)
}

/// Parses mbpoll's `[addr]: value` lines.
pub fn mbpoll_values(output: &str) -> Vec<(u32, f64)> {
    output
        .lines()
        .filter_map(|l| {
            let (a, v) = l.trim().split_once("]:")?;
            Some((
                a.trim_start_matches('[').parse().ok()?,
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}
