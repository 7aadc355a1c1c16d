//! Starting a hub from a config the harness writes, and running its
//! subcommands: shared by the tests' `Stack`, the multi-hub harness and
//! the benchmarks.

use crate::http;
use crate::netns;
use crate::process::Proc;
use crate::util::{get_json, wait_for};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs a `cloud-hub` subcommand against `config`, feeding `stdin`; returns
/// its standard output, or an error with its output if it failed.
pub fn hub_command(binary: &Path, config: &Path, args: &[&str], stdin: &str) -> Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "cloud-hub {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How to start a hub: the one place the tests and the benchmarks write a
/// hub's config file and wait for it to be ready.
pub struct HubLaunch<'a> {
    /// The `cloud-hub` binary (debug for tests, release for benchmarks).
    pub binary: PathBuf,
    pub pg_url: &'a str,
    pub grpc_port: u16,
    pub http_port: u16,
    /// Extra keys of `[database]`.
    pub database: &'a str,
    /// Extra keys of `[grpc]` (may be followed by other tables).
    pub grpc: &'a str,
    /// Tables after `[http]` (e.g. `[analytics]`).
    pub after: &'a str,
    pub args: &'a [String],
    /// Where `hub.toml` is written.
    pub dir: &'a Path,
    pub log: &'a Path,
}

impl HubLaunch<'_> {
    /// Writes the config, starts the hub and waits until `/ready` answers 200.
    pub async fn start(&self) -> Result<Proc> {
        self.start_with_env(&[]).await
    }

    /// [`HubLaunch::start`] with extra environment variables for the hub.
    pub async fn start_with_env(&self, env: &[(String, String)]) -> Result<Proc> {
        self.launch(env, None).await
    }

    /// [`HubLaunch::start`] inside `ns`: the hub listens on the namespace's
    /// address (`pg_url` must name one it can reach: the host end's).
    pub async fn start_in(&self, ns: &netns::Netns) -> Result<Proc> {
        self.launch(&[], Some(ns)).await
    }

    async fn launch(&self, env: &[(String, String)], ns: Option<&netns::Netns>) -> Result<Proc> {
        let host = ns.map_or_else(|| "127.0.0.1".to_string(), |n| n.ns_addr.to_string());
        let cfg = self.dir.join("hub.toml");
        std::fs::write(
            &cfg,
            format!(
                "[database]\nurl = \"{}\"\n{}\n[grpc]\nlisten = \"{host}:{}\"\n{}\n[http]\nlisten = \"{host}:{}\"\n{}",
                self.pg_url, self.database, self.grpc_port, self.grpc, self.http_port, self.after
            ),
        )?;
        // An admin key for the tests' requests, made before the hub starts
        // (single-connection servers would not take the command's connection
        // next to the hub's).
        let key = hub_command(
            &self.binary,
            &cfg,
            &["key", "create", "--name", "e2e-harness", "--role", "admin"],
            "",
        )?;
        let base = format!("http://{host}:{}", self.http_port);
        http::remember(
            &base,
            vec![("authorization".into(), format!("Bearer {}", key.trim()))],
        );
        let mut cmd = match ns {
            Some(ns) => ns.command(&self.binary),
            None => std::process::Command::new(&self.binary),
        };
        cmd.arg("--config")
            .arg(&cfg)
            .args(self.args)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn_cmd("cloud-hub", &mut cmd, self.log)?;
        let url = format!("{base}/ready");
        wait_for("hub /ready", Duration::from_secs(30), || async {
            if let Some(code) = proc.exit_status()? {
                bail!("hub exited early ({code}); log:\n{}", proc.log_tail(40));
            }
            Ok(get_json(&url).await.ok().filter(|(s, _)| *s == 200))
        })
        .await?;
        Ok(proc)
    }
}
