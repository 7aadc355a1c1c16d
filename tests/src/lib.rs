//! Harness for the end-to-end tests: a throwaway PostgreSQL, the real
//! binaries as child processes, free ports, and polling helpers.
//!
//! Binaries come from the workspace's `target/debug` (override with
//! `QI_BIN_DIR`); `scripts/test.sh` builds them before running the tests.
//! PostgreSQL: set `QI_TEST_DATABASE_URL` to use an existing server (each test
//! gets its own database in it); otherwise every test starts its own cluster
//! with the Debian binaries (initdb into a temp dir, random port).

pub mod agent_auth;
pub mod bench;
pub mod certificate_fixture;
pub mod certs;
pub mod doc_blocks;
pub mod grpc;
pub mod http;
pub mod hub_auth;
pub mod hub_launch;
pub mod module_graph;
pub mod mqtt_raw;
pub mod multi_hub;
pub mod netns;
pub mod notify;
pub mod oidc;
pub mod otlp;
pub mod pdf;
pub mod peers;
pub mod pg;
pub mod pki;
pub mod process;
pub mod pv_rig;
pub mod runs;
pub mod sse;
pub mod storage_probe;
pub mod util;
pub mod webhook_receiver;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use hub_launch::{HubLaunch, hub_command};
pub use pg::PgServer;
pub use process::Proc;
pub use util::{bin, free_port, get_json, hub_count, profiles_dir, wait_for, workspace_root};

/// A running platform slice: PostgreSQL, hub, simulator and agent, each
/// startable and stoppable on its own.
pub struct Stack {
    pub dir: tempfile::TempDir,
    /// None for edge-only tests (see [`Stack::edge_only`]).
    pub pg: Option<PgServer>,
    pub grpc_port: u16,
    pub hub_http_port: u16,
    pub agent_http_port: u16,
    pub sim_port: u16,
    /// Extra command-line arguments for the hub (e.g. `--log-format json`).
    pub hub_args: Vec<String>,
    /// Extra keys for the hub's `[grpc]` table (TLS, auth).
    pub hub_grpc_extra: String,
    /// Tables after the hub's `[http]` (e.g. `[live]`, `[alarms]`).
    pub hub_after: String,
    /// Extra environment of the hub and of the agent (e.g. `NOTIFY_SOCKET`).
    pub hub_env: Vec<(String, String)>,
    pub agent_env: Vec<(String, String)>,
    pub hub: Option<Proc>,
    pub sim: Option<Proc>,
    pub agent: Option<Proc>,
}

impl Stack {
    pub async fn new() -> Result<Stack> {
        let mut s = Stack::edge_only()?;
        s.pg = Some(PgServer::start().await?);
        Ok(s)
    }

    /// A stack without PostgreSQL: for tests of the agent's acquisition side
    /// (its uplink simply keeps retrying, which is fine).
    pub fn edge_only() -> Result<Stack> {
        let dir = tempfile::Builder::new().prefix("qi-e2e-").tempdir()?;
        Ok(Stack {
            dir,
            pg: None,
            grpc_port: free_port(),
            hub_http_port: free_port(),
            agent_http_port: free_port(),
            sim_port: free_port(),
            hub_args: Vec::new(),
            hub_grpc_extra: String::new(),
            hub_after: String::new(),
            hub_env: Vec::new(),
            agent_env: Vec::new(),
            hub: None,
            sim: None,
            agent: None,
        })
    }

    pub fn pg_url(&self) -> Result<String> {
        self.pg
            .as_ref()
            .map(PgServer::url)
            .context("this stack has no PostgreSQL (edge_only)")
    }

    pub fn hub_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub_http_port)
    }

    pub fn agent_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.agent_http_port)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    pub async fn start_hub(&mut self) -> Result<()> {
        // PGlite: one connection at a time (none to spare for the leader
        // lock), no COPY FROM STDIN.
        let database = if pg::test_tier() == "timescale" {
            "max_connections = 1\ningest = \"insert\"\nleader_election = false\n"
        } else {
            ""
        };
        let proc = HubLaunch {
            binary: bin("cloud-hub")?,
            pg_url: &self.pg_url()?,
            grpc_port: self.grpc_port,
            http_port: self.hub_http_port,
            database,
            grpc: &self.hub_grpc_extra,
            after: &self.hub_after,
            args: &self.hub_args,
            dir: self.dir.path(),
            log: &self.log_path("hub"),
        }
        .start_with_env(&self.hub_env)
        .await?;
        self.hub = Some(proc);
        Ok(())
    }

    pub async fn start_sim(&mut self, constant: bool) -> Result<()> {
        let extra: &[&str] = if constant { &["--constant"] } else { &[] };
        self.start_sim_with("eastron-sdm630", extra).await
    }

    /// Starts `instrument-sim` serving a shipped profile on `sim_port`.
    pub async fn start_sim_with(&mut self, profile: &str, extra: &[&str]) -> Result<()> {
        let profile = profiles_dir().join(format!("{profile}.toml"));
        let listen = format!("127.0.0.1:{}", self.sim_port);
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--profile".as_ref(),
            profile.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        self.sim = Some(Proc::spawn(
            "instrument-sim",
            &bin("instrument-sim")?,
            &args,
            &self.log_path("sim"),
        )?);
        let addr = listen.clone();
        wait_for("simulator port", Duration::from_secs(10), || {
            let addr = addr.clone();
            async move { Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())) }
        })
        .await
    }

    /// Writes an agent config with the given `[[devices]]` tables and returns its path.
    pub fn agent_config_with(&self, devices: &str) -> Result<PathBuf> {
        let cfg = self.dir.path().join("agent.toml");
        let text = format!(
            "gateway_id = \"gw-acq\"\nprofiles_dir = \"{profiles}\"\n\n[buffer]\npath = \"{buffer}\"\n\n[uplink]\nhub_url = \"http://127.0.0.1:{grpc}\"\nreconnect_min_ms = 1000\nreconnect_max_ms = 5000\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n{devices}",
            profiles = profiles_dir().display(),
            buffer = self.dir.path().join("buffer").display(),
            grpc = self.grpc_port,
            http = self.agent_http_port,
        );
        std::fs::write(&cfg, text)?;
        Ok(cfg)
    }

    /// A counter or gauge of the agent's /metrics, summed over its series
    /// whose labels contain every one of `labels` (`device="meter"`, ...).
    pub async fn agent_metric(&self, name: &str, labels: &[&str]) -> Result<f64> {
        let text = http::get(format!("{}/metrics", self.agent_url()))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter(|l| labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// One device's state from the agent's local API.
    pub async fn device(&self, id: &str) -> Result<serde_json::Value> {
        let (status, body) = get_json(&format!("{}/api/v1/devices/{id}", self.agent_url())).await?;
        anyhow::ensure!(status == 200, "device {id}: {status} {body}");
        Ok(body)
    }

    /// Device `id`'s state once it reports a value for at least `points`
    /// points (waiting up to `timeout`; the stack's logs on failure).
    pub async fn device_with_values(
        &self,
        id: &str,
        points: usize,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        wait_for(
            &format!("values of every point of {id}"),
            timeout,
            || async {
                let d = self.device(id).await?;
                let n = d["values"].as_object().map(|m| m.len()).unwrap_or(0);
                Ok((n >= points).then_some(d))
            },
        )
        .await
        .with_context(|| self.logs())
    }

    /// Writes an agent config (one SDM630 on the simulator's port) and returns its path.
    pub fn write_agent_config(
        &self,
        gateway_id: &str,
        poll_ms: u64,
        extra: &str,
    ) -> Result<PathBuf> {
        let cfg = self.dir.path().join("agent.toml");
        let text = format!(
            r#"gateway_id = "{gateway_id}"
profiles_dir = "{profiles}"

[buffer]
path = "{buffer}"

[uplink]
hub_url = "http://127.0.0.1:{grpc}"
reconnect_min_ms = 100
reconnect_max_ms = 1000
{extra}
[http]
listen = "127.0.0.1:{http}"

[[devices]]
id = "meter-1"
profile = "eastron-sdm630"
transport = {{ tcp = "127.0.0.1:{sim}" }}
poll_interval_ms = {poll_ms}
retry_min_ms = 100
retry_max_ms = 1000
"#,
            profiles = profiles_dir().display(),
            buffer = self.dir.path().join("buffer").display(),
            grpc = self.grpc_port,
            http = self.agent_http_port,
            sim = self.sim_port,
        );
        std::fs::write(&cfg, text)?;
        Ok(cfg)
    }

    /// The agent config of `write_agent_config` plus a site bus on a free
    /// loopback port (`[mqtt]`, site `s1`, device `th-1`, `extra` keys), with
    /// `users` as (name, rule lines), each logging in with `password`.
    /// Returns the bus port and the config path.
    pub fn write_bus_config(
        &self,
        gateway: &str,
        extra: &str,
        users: &[(&str, &str)],
        password: &str,
    ) -> Result<(u16, PathBuf)> {
        let port = free_port();
        let hash = edge_agent::mqtt::auth::hash_password(password, 1000);
        let cfg = self.write_agent_config(gateway, 500, "")?;
        let mut text = std::fs::read_to_string(&cfg)?;
        text.push_str(&format!(
            "\n[mqtt]\nlisten = \"127.0.0.1:{port}\"\nsite = \"s1\"\ndevices = [\"th-1\"]\n{extra}\n"
        ));
        for (name, rules) in users {
            text.push_str(&format!(
                "\n[[mqtt.users]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\n{rules}\n"
            ));
        }
        std::fs::write(&cfg, text)?;
        Ok((port, cfg))
    }

    /// Starts the agent with `config`, with the harness's operator user
    /// added first and its session registered for [`Stack::agent_url`].
    pub async fn start_agent(&mut self, config: &Path) -> Result<()> {
        agent_auth::add_user(config, agent_auth::USER, "operator", agent_auth::PASSWORD)?;
        let mut cmd = std::process::Command::new(bin("edge-agent")?);
        cmd.arg("--config")
            .arg(config)
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)));
        self.agent = Some(Proc::spawn_cmd(
            "edge-agent",
            &mut cmd,
            &self.log_path("agent"),
        )?);
        let url = format!("{}/health", self.agent_url());
        wait_for("agent /health", Duration::from_secs(20), || async {
            self.check_alive("agent")?;
            Ok(get_json(&url).await.ok().map(|_| ()))
        })
        .await?;
        agent_auth::login_and_remember(&self.agent_url()).await
    }

    /// One more agent of this stack, for tests with several gateways: its
    /// config `{name}.toml` (gateway `gateway`, buffer `{name}-buffer`, HTTP on
    /// `http_port`, `extra` appended: `[mqtt]` and such) is written, the agent
    /// started (log `{name}.log`) and its `/health` awaited. The stack's own
    /// `agent` is untouched.
    pub async fn spawn_agent(
        &self,
        name: &str,
        gateway: &str,
        http_port: u16,
        extra: &str,
    ) -> Result<Proc> {
        let cfg = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "gateway_id = \"{gateway}\"\nprofiles_dir = \"{profiles}\"\n\n[buffer]\npath = \"{buffer}\"\n\n[uplink]\nhub_url = \"http://127.0.0.1:{grpc}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n{extra}\n",
                profiles = profiles_dir().display(),
                buffer = self.dir.path().join(format!("{name}-buffer")).display(),
                grpc = self.grpc_port,
            ),
        )?;
        let mut cmd = std::process::Command::new(bin("edge-agent")?);
        cmd.arg("--config")
            .arg(&cfg)
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn_cmd("edge-agent", &mut cmd, &self.log_path(name))?;
        let url = format!("http://127.0.0.1:{http_port}/health");
        wait_for(
            &format!("{name} /health"),
            Duration::from_secs(20),
            || async {
                if let Some(code) = proc.exit_status()? {
                    bail!("{name} exited early ({code}); log:\n{}", proc.log_tail(40));
                }
                Ok(get_json(&url).await.ok().map(|_| ()))
            },
        )
        .await?;
        Ok(proc)
    }

    fn check_alive(&self, which: &str) -> Result<()> {
        let p = match which {
            "hub" => self.hub.as_ref(),
            "agent" => self.agent.as_ref(),
            _ => self.sim.as_ref(),
        };
        if let Some(p) = p
            && let Some(code) = p.exit_status()?
        {
            bail!("{which} exited early ({code}); log:\n{}", p.log_tail(40));
        }
        Ok(())
    }

    /// The agent's `/health` document.
    pub async fn agent_health(&self) -> Result<serde_json::Value> {
        Ok(get_json(&format!("{}/health", self.agent_url())).await?.1)
    }

    /// Connects to the hub's database.
    pub async fn db(&self) -> Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.pg_url()?)
            .await?)
    }

    /// Stops the instrument and waits until the agent has delivered its whole
    /// backlog; returns the agent's last sequence number.
    pub async fn drain(&mut self) -> Result<i64> {
        if let Some(sim) = self.sim.take() {
            sim.kill9()?;
        }
        wait_for(
            "the edge backlog to drain",
            Duration::from_secs(60),
            || async {
                let h = self.agent_health().await?;
                let b = &h["buffer"];
                let stopped = h["devices"][0]["state"] == "offline";
                Ok((stopped && b["backlog"] == 0)
                    .then(|| b["last_seq"].as_i64())
                    .flatten())
            },
        )
        .await
        .with_context(|| self.logs())
    }

    /// Checks the hub holds sequences `1..=last_seq` of `gateway` exactly once,
    /// in time order per device.
    ///
    /// Audit events (the harness's own logins, for one) share the gateway's
    /// sequence with readings, so the sequences the hub holds are those of
    /// its readings and of its `gateway_audit_events`.
    pub async fn assert_exactly_once(&self, gateway: &str, last_seq: i64) -> Result<()> {
        let pool = self.db().await?;
        let (count, distinct, min, max): (i64, i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM (
                 SELECT seq FROM readings WHERE gateway_id = $1
                 UNION ALL SELECT seq FROM gateway_audit_events WHERE gateway_id = $1) x",
        )
        .bind(gateway)
        .fetch_one(&pool)
        .await?;
        anyhow::ensure!(
            distinct == count,
            "duplicates stored: {count} rows, {distinct} sequences"
        );
        anyhow::ensure!(min == Some(1), "first reading missing: min seq {min:?}");
        anyhow::ensure!(
            max == Some(last_seq),
            "last reading missing: max {max:?}, agent {last_seq}"
        );
        anyhow::ensure!(
            count == last_seq,
            "gap: {count} stored of {last_seq} accepted"
        );
        let out_of_order: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT ts, lag(ts) OVER (PARTITION BY device_id ORDER BY seq) AS prev
             FROM readings WHERE gateway_id = $1) x WHERE ts < prev",
        )
        .bind(gateway)
        .fetch_one(&pool)
        .await?;
        anyhow::ensure!(
            out_of_order == 0,
            "{out_of_order} readings of one device out of order"
        );
        Ok(())
    }

    /// Logs of every process, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, p) in [
            ("hub", &self.hub),
            ("sim", &self.sim),
            ("agent", &self.agent),
        ] {
            if let Some(p) = p {
                s.push_str(&format!("\n----- {name} -----\n{}", p.log_tail(60)));
            }
        }
        s
    }
}
