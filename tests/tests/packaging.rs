//! Issue #17: the Debian packages `qi-edge-agent` and `qi-cloud-hub`.
//!
//! - `packages_hold_their_files_and_pass_lintian`: both .debs, built by
//!   `scripts/package.sh` from the debug binaries, hold the binary, the
//!   config as a conffile, the unit, the profiles, and `lintian` (Debian's)
//!   finds no error or warning beyond the overrides in `packaging/debian/`.
//! - `install_upgrade_remove_purge_in_a_booted_debian_root`: a debootstrap'ed
//!   Debian 12 root (`scripts/debian-root.sh`, cached) booted with
//!   `systemd-nspawn -b`, so systemd is PID 1 inside and the maintainer
//!   scripts, `systemctl` and the units run for real. Version N of both is
//!   installed, the agent (started by systemd, as its system user) buffers an
//!   instrument's readings with the hub down, is upgraded to N+1 with
//!   `dpkg -i`, the hub starts, and the hub then holds every sequence the
//!   agent took exactly once. The locally edited conffiles survive the
//!   upgrade, `dpkg -r` keeps the state and the users, `dpkg -P` removes them.
//!   The container shares the host's network: PostgreSQL and the simulator
//!   run on the host's loopback, as in the other end-to-end tests.
// qi-test: tier-independent (the .deb packages and their scripts; the database is not involved): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::{Proc, Stack, agent_auth, get_json, wait_for, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const N: &str = "0.1.0-1";
const N1: &str = "0.1.0-2";

/// Builds both packages at `version` into `out` from the debug binaries.
fn build_packages(out: &Path, version: &str) -> Result<(PathBuf, PathBuf)> {
    let o = Command::new(workspace_root().join("scripts/package.sh"))
        .args(["--no-build", "--deb-version", version, "--out"])
        .arg(out)
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/package.sh")?;
    ensure!(o.status.success(), "scripts/package.sh: {}", o.status);
    let find = |pkg: &str| -> Result<PathBuf> {
        std::fs::read_dir(out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_{version}_")))
            })
            .with_context(|| format!("no {pkg}_{version}_*.deb in {}", out.display()))
    };
    Ok((find("qi-edge-agent")?, find("qi-cloud-hub")?))
}

fn run(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        o.status.success(),
        "{cmd:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn packages_hold_their_files_and_pass_lintian() -> Result<()> {
    let out = tempfile::Builder::new().prefix("qi-deb-").tempdir()?;
    let (agent, hub) = build_packages(out.path(), N)?;
    let expect = [
        (
            &agent,
            &[
                "./usr/bin/edge-agent",
                "./etc/edge-agent/config.toml",
                "./usr/lib/systemd/system/edge-agent.service",
                "./usr/share/edge-agent/firmware-profiles/eastron-sdm630.toml",
                "./usr/share/edge-agent/protocols/stc-power.toml",
                "./usr/share/doc/qi-edge-agent/copyright",
                "./usr/share/doc/qi-edge-agent/changelog.Debian.gz",
            ][..],
            "/etc/edge-agent/config.toml",
        ),
        (
            &hub,
            &[
                "./usr/bin/cloud-hub",
                "./etc/cloud-hub/config.toml",
                "./usr/lib/systemd/system/cloud-hub.service",
                "./usr/share/doc/qi-cloud-hub/copyright",
            ][..],
            "/etc/cloud-hub/config.toml",
        ),
    ];
    for (deb, files, conffile) in expect {
        let listing = run(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
        for f in files {
            ensure!(
                listing.lines().any(|l| l.ends_with(f)),
                "{} lacks {f}:\n{listing}",
                deb.display()
            );
        }
        let conffiles = run(Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .arg("conffiles"))?;
        ensure!(
            conffiles.lines().any(|l| l.trim() == conffile),
            "{conffile} is not a conffile of {}: {conffiles}",
            deb.display()
        );
        // lintian exits non-zero on an error; warnings are findings too.
        let o = Command::new("lintian")
            .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
            .arg(deb)
            .output()
            .context("running lintian (Debian package `lintian`, scripts/setup-packaging.sh)")?;
        let text = String::from_utf8_lossy(&o.stdout);
        ensure!(
            o.status.success()
                && !text
                    .lines()
                    .any(|l| l.starts_with("E:") || l.starts_with("W:")),
            "lintian {}: {}\n{text}{}",
            deb.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

/// A copy of the cached Debian root booted with systemd-nspawn; commands run
/// inside through `nsenter` into the container's namespaces and root.
struct Booted {
    nspawn: Option<Proc>,
    leader: u32,
    root: PathBuf,
}

impl Booted {
    async fn boot(root: PathBuf, log: &Path) -> Result<Booted> {
        let mut cmd = Command::new("systemd-nspawn");
        // --keep-unit and --register=no: PID 1 here is not systemd, there is
        // no machined to register with nor a scope to create.
        cmd.args(["-q", "--register=no", "--keep-unit", "-b", "-D"])
            .arg(&root)
            .stdin(Stdio::null());
        let nspawn = Proc::spawn_cmd("systemd-nspawn", &mut cmd, log)?;
        let pid = nspawn.pid();
        let leader = wait_for("the container's init", Duration::from_secs(30), || async {
            if let Some(code) = nspawn.exit_status()? {
                bail!("systemd-nspawn exited ({code}):\n{}", nspawn.log_tail(40));
            }
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            Ok(children
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok()))
        })
        .await?;
        let booted = Booted {
            nspawn: Some(nspawn),
            leader,
            root,
        };
        wait_for(
            "systemd to finish booting",
            Duration::from_secs(120),
            || {
                let state = booted.sh("systemctl is-system-running 2>/dev/null || true");
                async move {
                    let state = state?;
                    Ok(matches!(state.trim(), "running" | "degraded").then_some(()))
                }
            },
        )
        .await
        .with_context(|| booted.log())?;
        Ok(booted)
    }

    /// `sh -c script` inside the container, as root; its stdout.
    fn sh(&self, script: &str) -> Result<String> {
        run(Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-m",
                "-u",
                "-i",
                "-p",
                "-r",
                "-w",
                "--",
            ])
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C",
            ])
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null()))
    }

    /// Writes a file into the container (same tree, seen from the host).
    fn write(&self, path: &str, text: &str) -> Result<()> {
        let p = self.root.join(path.trim_start_matches('/'));
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    }

    fn log(&self) -> String {
        self.nspawn
            .as_ref()
            .map(|p| p.log_tail(60))
            .unwrap_or_default()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // SIGTERM makes nspawn halt the container's systemd cleanly.
        if let Some(p) = self.nspawn.take() {
            let _ = p.terminate(Duration::from_secs(60));
        }
    }
}

#[tokio::test]
async fn install_upgrade_remove_purge_in_a_booted_debian_root() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "booting a Debian root with systemd-nspawn needs root"
    );
    let cached = PathBuf::from(
        run(&mut Command::new(
            workspace_root().join("scripts/debian-root.sh"),
        ))?
        .trim(),
    );
    let work = tempfile::Builder::new()
        .prefix("qi-pkg-root-")
        .tempdir_in(workspace_root().join("target"))?;
    let root = work.path().join("root");
    run(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&root))?;
    // Both versions, built from the same binaries: the upgrade is a dpkg
    // upgrade (maintainer scripts, conffiles, restart), not a code change.
    let debs = root.join("root/debs");
    let (agent_n, hub_n) = build_packages(&debs.join("n"), N)?;
    let (agent_n1, hub_n1) = build_packages(&debs.join("n1"), N1)?;
    let inside = |p: &Path| -> Result<String> {
        Ok(format!(
            "/{}",
            p.strip_prefix(&root)?
                .display()
                .to_string()
                .trim_start_matches('/')
        ))
    };

    let mut stack = Stack::new().await?;
    stack.start_sim(false).await?;
    let c = Booted::boot(root.clone(), &work.path().join("nspawn.log")).await?;

    // Version N of both.
    c.sh(&format!(
        "dpkg -i {} {}",
        inside(&hub_n)?,
        inside(&agent_n)?
    ))?;
    for user in ["edge-agent", "cloud-hub"] {
        c.sh(&format!("getent passwd {user}"))?;
        let enabled = c.sh(&format!("systemctl is-enabled {user}.service"))?;
        ensure!(enabled.trim() == "enabled", "{user}.service: {enabled}");
        // Installed, not started: both need their config edited first.
        let active = c.sh(&format!("systemctl is-active {user}.service || true"))?;
        ensure!(active.trim() == "inactive", "{user}.service: {active}");
        let st = c.sh(&format!("stat -c '%U:%G %a' /etc/{user}/config.toml"))?;
        ensure!(st.trim() == format!("root:{user} 640"), "config: {st}");
        let st = c.sh(&format!("stat -c '%U:%G %a' /var/lib/{user}"))?;
        ensure!(st.trim() == format!("{user}:{user} 750"), "state: {st}");
    }
    let groups = c.sh("id -nG edge-agent")?;
    ensure!(
        groups.split_whitespace().any(|g| g == "dialout"),
        "edge-agent not in dialout: {groups}"
    );

    // Local edits of both conffiles: the site's hub, instrument and ports.
    let pg_url = stack.pg_url()?;
    c.write(
        "/etc/cloud-hub/config.toml",
        &format!(
            "# edited on site\n[database]\nurl = \"{pg_url}\"\n[grpc]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n",
            stack.grpc_port, stack.hub_http_port
        ),
    )?;
    let gateway = "gw-packaged";
    let agent_cfg = format!(
        r#"# edited on site
gateway_id = "{gateway}"

[buffer]
path = "/var/lib/edge-agent/buffer"

[uplink]
hub_url = "http://127.0.0.1:{grpc}"
reconnect_min_ms = 100
reconnect_max_ms = 1000

[http]
listen = "127.0.0.1:{http}"

[[devices]]
id = "meter-1"
profile = "eastron-sdm630"
transport = {{ tcp = "127.0.0.1:{sim}" }}
poll_interval_ms = 200
retry_min_ms = 100
retry_max_ms = 1000
"#,
        grpc = stack.grpc_port,
        http = stack.agent_http_port,
        sim = stack.sim_port,
    );
    c.write("/etc/edge-agent/config.toml", &agent_cfg)?;
    // The harness's operator, added as the daemon's user (users.json sits
    // next to the buffer, in the state directory).
    c.sh(&format!(
        "printf '%s\\n' '{pw}' | runuser -u edge-agent -- edge-agent --config /etc/edge-agent/config.toml user add {user} --role operator",
        pw = agent_auth::PASSWORD,
        user = agent_auth::USER
    ))?;

    // The agent runs (systemd, Type=notify, its user, the packaged profiles)
    // with the hub down: readings pile up in the buffer.
    c.sh("systemctl start edge-agent.service")?;
    let agent_url = stack.agent_url();
    wait_for("agent /health", Duration::from_secs(30), || async {
        Ok(get_json(&format!("{agent_url}/health"))
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    agent_auth::login_and_remember(&agent_url).await?;
    let buffered = wait_for(
        "readings buffered with the hub down",
        Duration::from_secs(60),
        || async {
            let h = stack.agent_health().await?;
            Ok(h["buffer"]["backlog"].as_i64().filter(|b| *b >= 50))
        },
    )
    .await?;
    let user = c.sh("stat -c %U /proc/$(systemctl show -p MainPID --value edge-agent.service)")?;
    ensure!(user.trim() == "edge-agent", "agent runs as {user}");
    let pid_n = c.sh("systemctl show -p MainPID --value edge-agent.service")?;

    // Upgrade to N+1 while it runs.
    c.sh(&format!(
        "dpkg -i {} {}",
        inside(&hub_n1)?,
        inside(&agent_n1)?
    ))?;
    let versions = c.sh("dpkg-query -W -f '${Version} ' qi-edge-agent qi-cloud-hub")?;
    ensure!(
        versions.trim() == format!("{N1} {N1}"),
        "versions: {versions}"
    );
    let active = c.sh("systemctl is-active edge-agent.service || true")?;
    ensure!(active.trim() == "active", "agent after upgrade: {active}");
    let pid_n1 = c.sh("systemctl show -p MainPID --value edge-agent.service")?;
    ensure!(
        pid_n != pid_n1,
        "the upgrade did not restart the agent (pid {pid_n})"
    );
    for (path, text) in [
        ("/etc/edge-agent/config.toml", agent_cfg.as_str()),
        ("/etc/cloud-hub/config.toml", "# edited on site\n"),
    ] {
        let now = c.sh(&format!("cat {path}"))?;
        ensure!(now.starts_with(text), "{path} lost its local edit:\n{now}");
        let st = c.sh(&format!("stat -c '%a' {path}"))?;
        ensure!(st.trim() == "640", "{path} mode after upgrade: {st}");
    }

    // The hub comes up; the new agent drains what the old one buffered.
    c.sh("systemctl start cloud-hub.service")?;
    let hub_ready = format!("{}/ready", stack.hub_url());
    wait_for("hub /ready", Duration::from_secs(60), || async {
        Ok(get_json(&hub_ready)
            .await
            .ok()
            .filter(|(s, _)| *s == 200)
            .map(|_| ()))
    })
    .await
    .with_context(|| {
        c.sh("journalctl -u cloud-hub --no-pager | tail -n 30")
            .unwrap_or_default()
    })?;
    agent_auth::login_and_remember(&agent_url).await?;
    let last_seq = stack.drain().await?;
    ensure!(
        last_seq >= buffered,
        "last seq {last_seq} < {buffered} buffered"
    );
    stack.assert_exactly_once(gateway, last_seq).await?;

    // Under systemd the default log format ("auto") is JSON in the journal,
    // with the gateway on every line: read back from the container's own
    // journald, the real one, not an imitation of JOURNAL_STREAM.
    let journal = c.sh("journalctl -u edge-agent.service -o json --no-pager -n 300")?;
    let mut daemon_lines = 0;
    for entry in journal.lines().filter(|l| !l.trim().is_empty()) {
        let e: serde_json::Value =
            serde_json::from_str(entry).with_context(|| format!("journal entry {entry}"))?;
        // Skipped: systemd's own lines about the unit, and the answer of
        // ExecStartPre's `--check` (a command's result for a person).
        // (That process is gone before journald reads its command line, so
        // its answer is known by its text.)
        if e["_COMM"] != "edge-agent" {
            continue;
        }
        let msg = e["MESSAGE"]
            .as_str()
            .with_context(|| format!("MESSAGE is not text: {entry}"))?;
        if msg.starts_with("/etc/edge-agent/config.toml: OK") {
            continue;
        }
        let line: serde_json::Value = serde_json::from_str(msg)
            .with_context(|| format!("the agent logged a non-JSON line to the journal: {msg}"))?;
        ensure!(line["gateway"] == gateway, "no gateway field: {msg}");
        daemon_lines += 1;
    }
    ensure!(
        daemon_lines >= 3,
        "{daemon_lines} agent lines in the journal:\n{journal}"
    );

    // remove: daemons stopped, state, users and conffiles kept.
    c.sh("dpkg -r qi-edge-agent qi-cloud-hub")?;
    c.sh("test -d /var/lib/edge-agent/buffer && test -f /var/lib/edge-agent/users.json")?;
    c.sh("getent passwd edge-agent && getent passwd cloud-hub")?;
    c.sh("grep -q 'edited on site' /etc/edge-agent/config.toml")?;
    c.sh("! systemctl is-active -q edge-agent.service && ! test -e /usr/bin/edge-agent")?;
    // purge: all gone.
    c.sh("dpkg -P qi-edge-agent qi-cloud-hub")?;
    for user in ["edge-agent", "cloud-hub"] {
        c.sh(&format!(
            "! test -e /var/lib/{user} && ! test -e /etc/{user} && ! getent passwd {user} && ! getent group {user}"
        ))
        .with_context(|| format!("purge left {user}'s state, config or user"))?;
    }
    drop(c);
    Ok(())
}
