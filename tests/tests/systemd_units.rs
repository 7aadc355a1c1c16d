//! Issue #17: the shipped units (`systemd/*.service`) are valid for the
//! systemd here (`systemd-analyze verify`), hardened to an exposure level of
//! at most 2.0 ("OK") by `systemd-analyze security --offline=yes`, and keep
//! the notify/watchdog/reload settings the daemons are built for.
//!
//! PID 1 here need not be systemd: `verify` and `security --offline` read
//! unit files only. `verify` wants the `ExecStart=` binaries to exist, so the
//! units are checked from a copy pointing at the binaries just built.
// qi-test: tier-independent (unit files checked by systemd-analyze): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::{bin, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// "OK" in systemd-analyze's scale; the bound.
const MAX_EXPOSURE: f64 = 2.0;
const UNITS: [&str; 2] = ["edge-agent", "cloud-hub"];

fn systemd_analyze() -> Result<PathBuf> {
    for dir in ["/usr/bin", "/bin"] {
        let p = Path::new(dir).join("systemd-analyze");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("systemd-analyze not found: install the Debian package `systemd`")
}

fn unit_text(name: &str) -> Result<String> {
    let path = workspace_root().join(format!("systemd/{name}.service"));
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The unit copied into `dir` with `/usr/bin/<daemon>` replaced by the built binary.
fn installed_copy(dir: &Path, name: &str) -> Result<PathBuf> {
    let mut text = unit_text(name)?;
    for daemon in UNITS {
        text = text.replace(
            &format!("/usr/bin/{daemon}"),
            &bin(daemon)?.display().to_string(),
        );
    }
    let path = dir.join(format!("{name}.service"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `Key=value` settings of the unit (every occurrence).
fn settings<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn units_verify_without_a_warning() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for name in UNITS {
        let unit = installed_copy(dir.path(), name)?;
        let out = Command::new(systemd_analyze()?)
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // verify exits 0 on an unknown key; the warning is the finding.
        ensure!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {name}.service: {}\n{stderr}",
            out.status
        );
    }
    Ok(())
}

#[test]
fn units_are_hardened_to_ok() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for name in UNITS {
        let unit = installed_copy(dir.path(), name)?;
        let out = Command::new(systemd_analyze()?)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let level: f64 = stdout
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no exposure level in:\n{stdout}"))?;
        eprintln!("{name}.service: exposure {level}");
        ensure!(
            level <= MAX_EXPOSURE,
            "{name}.service exposure {level} > {MAX_EXPOSURE}:\n{stdout}"
        );
        // The threshold form CI scripts use agrees (exposure x 10).
        let st = Command::new(systemd_analyze()?)
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(&unit)
            .output()?
            .status;
        ensure!(st.success(), "--threshold=20 fails for {name}.service");
    }
    Ok(())
}

#[test]
fn units_notify_with_a_watchdog_and_the_agent_reloads() -> Result<()> {
    for name in UNITS {
        let text = unit_text(name)?;
        ensure!(settings(&text, "Type") == ["notify"], "{name}: Type=notify");
        ensure!(
            settings(&text, "NotifyAccess") == ["main"],
            "{name}: NotifyAccess=main"
        );
        ensure!(
            !settings(&text, "WatchdogSec").is_empty(),
            "{name}: WatchdogSec"
        );
        ensure!(
            settings(&text, "AmbientCapabilities")
                .iter()
                .all(|v| v.is_empty()),
            "{name}: no ambient capabilities by default"
        );
    }
    let agent = unit_text("edge-agent")?;
    ensure!(
        settings(&agent, "ExecReload") == ["/bin/kill -HUP $MAINPID"],
        "the agent reloads on SIGHUP (tests/tests/systemd_notify.rs)"
    );
    for dev in ["char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"] {
        ensure!(
            settings(&agent, "DeviceAllow").contains(&dev),
            "serial lines stay reachable: DeviceAllow={dev}"
        );
    }
    Ok(())
}

/// The agent's stop (poll in flight, the uplink's drain, the final flush)
/// must fit `TimeoutStopSec` with its default settings, or systemd kills it
/// mid-flush.
#[test]
fn the_agent_stops_within_timeout_stop_sec() -> Result<()> {
    let agent = unit_text("edge-agent")?;
    let stop_s: u64 = settings(&agent, "TimeoutStopSec")
        .first()
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .context("TimeoutStopSec in seconds")?;
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "gateway_id = \"gw\"\n[buffer]\npath = \"/tmp/b\"\n[uplink]\nhub_url = \"http://127.0.0.1:1\"\n",
    )?;
    let c = edge_agent::config::Config::load(&cfg)?;
    // A Modbus/SCPI request times out within 5 s by default (profiles), the
    // drain is bounded by shutdown_drain_ms; 10 s for the fsync of the buffer.
    let needed_ms = 5_000 + c.uplink.shutdown_drain_ms + 10_000;
    ensure!(
        stop_s * 1000 >= needed_ms,
        "TimeoutStopSec={stop_s} < {needed_ms} ms the agent may need to stop"
    );
    Ok(())
}
