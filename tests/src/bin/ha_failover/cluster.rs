//! The HA cluster of the failover run: etcd, two PostgreSQL nodes under
//! Patroni, HAProxy in front; started in a temp dir, killed on drop.

use anyhow::{Context, Result, bail};
use e2e_tests::{Proc, free_port, wait_for};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const PG_BINDIR: &str = "/usr/lib/postgresql/15/bin";

fn peers_venv() -> PathBuf {
    e2e_tests::peers::peers_dir().join("ha-venv")
}

/// The `postgres` user's ids when running as root (PostgreSQL refuses root).
fn owner() -> Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name("postgres")?
        .context("running as root and there is no `postgres` user to run PostgreSQL as")?;
    Ok(Some((u.uid.as_raw(), u.gid.as_raw())))
}

pub struct Node {
    pub name: String,
    pub pg_port: u16,
    pub rest_port: u16,
    pub data: PathBuf,
    pub patroni: Option<Proc>,
}

impl Node {
    pub fn rest(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.rest_port)
    }

    /// The postmaster's pid, from the first line of `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Result<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .with_context(|| format!("{}: no postmaster.pid", self.name))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid: no pid on its first line")
    }
}

/// etcd + two Patroni nodes + HAProxy; stopped in order on drop (Patroni
/// first, so it stops its PostgreSQL; a postmaster it left is stopped then).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub haproxy_port: u16,
    pub _haproxy: Option<Proc>,
    pub _etcd: Option<Proc>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(p) = n.patroni.take() {
                let _ = p.terminate(Duration::from_secs(60));
            }
            if let Ok(pid) = n.postmaster_pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGQUIT,
                );
            }
        }
    }
}

fn patroni_yaml(dir: &Path, scope: &str, node: &Node, etcd_port: u16, sync: bool) -> String {
    let home = dir.join(&node.name);
    format!(
        r#"scope: {scope}
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
  protocol: http
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    # A crashed primary is failed over at once instead of restarted in place
    # (default 300 s of local restart attempts first).
    primary_start_timeout: 0
    maximum_lag_on_failover: 16777216
    synchronous_mode: {sync}
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        synchronous_commit: "on"
  initdb:
    - encoding: UTF8
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {PG_BINDIR}
  pgpass: {home}/pgpass
  authentication:
    superuser:
      username: postgres
      password: ha-superuser
    replication:
      username: replicator
      password: ha-replicator
    rewind:
      username: postgres
      password: ha-superuser
  parameters:
    unix_socket_directories: {home}
  # A throwaway cluster on loopback.
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
"#,
        name = node.name,
        rest = node.rest_port,
        pg = node.pg_port,
        data = node.data.display(),
        home = home.display(),
    )
}

const HAPROXY_CFG: &str = r#"global
  maxconn 200
defaults
  mode tcp
  timeout connect 2s
  timeout client 30m
  timeout server 30m
  timeout check 1s
listen postgres
  bind 127.0.0.1:{listen}
  # Only the node whose Patroni says it is the primary takes connections;
  # sessions to a node marked down are cut, so no client keeps writing to a
  # demoted server.
  option httpchk GET /primary
  http-check expect status 200
  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
  server node1 127.0.0.1:{pg1} check port {rest1}
  server node2 127.0.0.1:{pg2} check port {rest2}
"#;

impl Cluster {
    pub async fn start(dir: &Path, sync: bool) -> Result<Cluster> {
        let ids = owner()?;
        let patroni = peers_venv().join("bin/patroni");
        if !patroni.is_file() || !Path::new(PG_BINDIR).join("postgres").is_file() {
            bail!(
                "{} or {PG_BINDIR}/postgres missing: run scripts/setup-ha-peers.sh",
                patroni.display()
            );
        }
        if let Some((uid, gid)) = ids {
            nix::unistd::chown(
                dir,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )?;
        }
        let (etcd_client, etcd_peer) = (free_port(), free_port());
        let etcd = Proc::spawn_cmd(
            "etcd",
            Command::new("etcd").args([
                "--name",
                "ha",
                "--data-dir",
                &dir.join("etcd").to_string_lossy(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-cluster",
                &format!("ha=http://127.0.0.1:{etcd_peer}"),
            ]),
            &dir.join("etcd.log"),
        )
        .context("cannot start etcd: run scripts/setup-ha-peers.sh")?;
        let health = format!("http://127.0.0.1:{etcd_client}/health");
        wait_for("etcd /health", Duration::from_secs(30), || async {
            let r = reqwest::get(&health).await.ok();
            Ok(match r {
                Some(r) => r.text().await.ok().filter(|t| t.contains("true")),
                None => None,
            })
        })
        .await?;
        let scope = format!("qi-ha-{}", std::process::id());
        let mut cluster = Cluster {
            nodes: Vec::new(),
            haproxy_port: free_port(),
            _haproxy: None,
            _etcd: Some(etcd),
        };
        for (i, name) in ["node1", "node2"].iter().enumerate() {
            let home = dir.join(name);
            std::fs::create_dir_all(&home)?;
            let node = Node {
                name: name.to_string(),
                pg_port: free_port(),
                rest_port: free_port(),
                data: home.join("data"),
                patroni: None,
            };
            let yaml = home.join("patroni.yml");
            std::fs::write(&yaml, patroni_yaml(dir, &scope, &node, etcd_client, sync))?;
            if let Some((uid, gid)) = ids {
                for p in [&home, &yaml] {
                    nix::unistd::chown(
                        p,
                        Some(nix::unistd::Uid::from_raw(uid)),
                        Some(nix::unistd::Gid::from_raw(gid)),
                    )?;
                }
            }
            let mut cmd = Command::new(&patroni);
            cmd.arg(&yaml).current_dir(&home);
            if let Some((uid, gid)) = ids {
                cmd.uid(uid).gid(gid).env("HOME", &home);
            }
            cluster.nodes.push(Node {
                patroni: Some(Proc::spawn_cmd(
                    &format!("patroni {name}"),
                    &mut cmd,
                    &dir.join(format!("patroni-{name}.log")),
                )?),
                ..node
            });
            if i == 0 {
                // The first node bootstraps (initdb) alone: a simultaneous
                // start only races for the initialize key, this is just quieter.
                cluster.wait_primary(Duration::from_secs(120)).await?;
            }
        }
        cluster
            .wait_replicating(sync, Duration::from_secs(180))
            .await?;
        let cfg = dir.join("haproxy.cfg");
        let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
        std::fs::write(
            &cfg,
            HAPROXY_CFG
                .replace("{listen}", &cluster.haproxy_port.to_string())
                .replace("{pg1}", &a.pg_port.to_string())
                .replace("{rest1}", &a.rest_port.to_string())
                .replace("{pg2}", &b.pg_port.to_string())
                .replace("{rest2}", &b.rest_port.to_string()),
        )?;
        let haproxy = Proc::spawn_cmd(
            "haproxy",
            Command::new("haproxy").arg("-db").arg("-f").arg(&cfg),
            &dir.join("haproxy.log"),
        )?;
        cluster._haproxy = Some(haproxy);
        let url = cluster.url();
        wait_for(
            "PostgreSQL through HAProxy",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    use sqlx::Connection;
                    Ok(sqlx::PgConnection::connect(&url).await.ok().map(|_| ()))
                }
            },
        )
        .await?;
        Ok(cluster)
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.haproxy_port
        )
    }

    /// The node whose Patroni answers 200 to `GET /primary`.
    pub async fn primary(&self) -> Option<usize> {
        for (i, n) in self.nodes.iter().enumerate() {
            if let Ok(r) = reqwest::get(n.rest("/primary")).await
                && r.status() == 200
            {
                return Some(i);
            }
        }
        None
    }

    pub async fn wait_primary(&self, timeout: Duration) -> Result<usize> {
        wait_for("a Patroni primary", timeout, || async {
            Ok(self.primary().await)
        })
        .await
        .with_context(|| self.logs())
    }

    /// Until `GET /cluster` shows a streaming replica (a synchronous
    /// standby in sync mode).
    pub async fn wait_replicating(&self, sync: bool, timeout: Duration) -> Result<()> {
        let url = self.nodes[0].rest("/cluster");
        wait_for("a streaming replica", timeout, || async {
            let Ok(r) = reqwest::get(&url).await else {
                return Ok(None);
            };
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            let ok = v["members"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["state"] == "streaming" && (!sync || m["role"] == "sync_standby"))
            });
            Ok(ok.then_some(()))
        })
        .await
        .with_context(|| self.logs())
    }

    /// "node1 sync_standby/streaming, node2 leader/running".
    pub async fn members(&self) -> String {
        let Ok(r) = reqwest::get(self.nodes[0].rest("/cluster")).await else {
            return "?".into();
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        let list = v["members"].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|m| {
                format!(
                    "{} {}/{}",
                    m["name"].as_str().unwrap_or("?"),
                    m["role"].as_str().unwrap_or("?"),
                    m["state"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            if let Some(p) = &n.patroni {
                s.push_str(&format!("\n----- {} -----\n{}", n.name, p.log_tail(30)));
            }
        }
        s
    }
}
