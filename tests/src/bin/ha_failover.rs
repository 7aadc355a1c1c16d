//! Database failover under ingest (issue #18, "Database high availability").
//!
//! etcd (one member), two PostgreSQL 15 nodes managed by Patroni, HAProxy in
//! front routing to whichever node answers Patroni's `GET /primary`, the hub
//! (target/debug) pointed at HAProxy, and a gateway client streaming batches
//! as fast as the hub acks them. Mid-ingest the primary's postmaster is
//! killed with SIGKILL; Patroni promotes the replica; the hub and the client
//! reconnect by themselves. At the end every acknowledged sequence must be
//! stored exactly once. Run once with Patroni's `synchronous_mode` and once
//! with asynchronous replication: failover gap, rows/s before and after,
//! acked readings lost.
//!
//!   scripts/ha-failover.sh [sync|async|both]

use anyhow::{Context, Result, bail};
use e2e_tests::{HubLaunch, Proc, bin, free_port, wait_for};
use qi_proto::v1::uplink_client::UplinkClient;
use qi_proto::v1::{EdgeMessage, Hello, Reading, ReadingBatch, edge_message, hub_message};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const PG_BINDIR: &str = "/usr/lib/postgresql/15/bin";
const GATEWAY: &str = "gw-ha";
/// Readings per batch (an agent's poll cycle of a large gateway).
const BATCH: u64 = 500;
/// Batches sent ahead of their acks: the hub writes two at once (its PIPELINE).
const IN_FLIGHT: usize = 4;

fn env_secs(name: &str, default: u64) -> Result<Duration> {
    Ok(Duration::from_secs(match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}"))?,
        Err(_) => default,
    }))
}

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

struct Node {
    name: String,
    pg_port: u16,
    rest_port: u16,
    data: PathBuf,
    patroni: Option<Proc>,
}

impl Node {
    fn rest(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.rest_port)
    }

    /// The postmaster's pid, from the first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> Result<i32> {
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
struct Cluster {
    nodes: Vec<Node>,
    haproxy_port: u16,
    _haproxy: Option<Proc>,
    _etcd: Option<Proc>,
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
    async fn start(dir: &Path, sync: bool) -> Result<Cluster> {
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

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.haproxy_port
        )
    }

    /// The node whose Patroni answers 200 to `GET /primary`.
    async fn primary(&self) -> Option<usize> {
        for (i, n) in self.nodes.iter().enumerate() {
            if let Ok(r) = reqwest::get(n.rest("/primary")).await
                && r.status() == 200
            {
                return Some(i);
            }
        }
        None
    }

    async fn wait_primary(&self, timeout: Duration) -> Result<usize> {
        wait_for("a Patroni primary", timeout, || async {
            Ok(self.primary().await)
        })
        .await
        .with_context(|| self.logs())
    }

    /// Until `GET /cluster` shows a streaming replica (a synchronous
    /// standby in sync mode).
    async fn wait_replicating(&self, sync: bool, timeout: Duration) -> Result<()> {
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
    async fn members(&self) -> String {
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

    fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            if let Some(p) = &n.patroni {
                s.push_str(&format!("\n----- {} -----\n{}", n.name, p.log_tail(30)));
            }
        }
        s
    }
}

/// What the gateway client saw: every ack with its arrival time, and when
/// each stream (connection) began.
#[derive(Default)]
struct Tally {
    acked: u64,
    acks: Vec<(Instant, u64)>,
    streams: Vec<Instant>,
}

fn reading(seq: u64, base_us: i64) -> Reading {
    Reading {
        seq,
        device_id: "meter-ha".into(),
        metric: "active_power".into(),
        // 10 µs apart, ending near now: inside the day partitions the hub keeps.
        timestamp_us: base_us + seq as i64 * 10,
        value: seq as f64,
        unit: "W".into(),
        quality: 1,
        ..Default::default()
    }
}

fn batch(from: u64, base_us: i64) -> EdgeMessage {
    EdgeMessage {
        kind: Some(edge_message::Kind::Batch(ReadingBatch {
            readings: (from..from + BATCH).map(|s| reading(s, base_us)).collect(),
            ..Default::default()
        })),
    }
}

/// Plays a gateway: streams batches until `stop`, resending from the last
/// ack after any broken stream (what the agent does: acked readings leave
/// its buffer, unacked ones are sent again).
async fn gateway(url: String, tally: Arc<Mutex<Tally>>, stop: Arc<tokio::sync::Notify>) {
    let base_us = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let run = one_stream(&url, &tally, base_us);
        tokio::select! {
            _ = &mut stopped => return,
            r = run => {
                if let Err(e) = r {
                    eprintln!("  gateway stream ended: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn one_stream(url: &str, tally: &Mutex<Tally>, base_us: i64) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let mut client = UplinkClient::new(channel);
    let (tx, rx) = mpsc::channel(IN_FLIGHT + 2);
    tx.send(EdgeMessage {
        kind: Some(edge_message::Kind::Hello(Hello {
            gateway_id: GATEWAY.into(),
            agent_version: "ha-failover".into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut next = {
        let mut t = tally.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        t.streams.push(Instant::now());
        t.acked + 1
    };
    let mut outstanding = 0usize;
    loop {
        while outstanding < IN_FLIGHT {
            tx.send(batch(next, base_us)).await?;
            next += BATCH;
            outstanding += 1;
        }
        let m = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .context("no answer from the hub in 30 s")??
            .context("the hub closed the stream")?;
        if let Some(hub_message::Kind::Ack(a)) = m.kind {
            let mut t = tally.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            t.acked = t.acked.max(a.committed_up_to);
            t.acks.push((Instant::now(), a.committed_up_to));
            outstanding = outstanding.saturating_sub(1);
        }
    }
}

struct Outcome {
    mode: &'static str,
    before_rps: f64,
    after_rps: f64,
    gap_s: f64,
    acked: u64,
    stored: i64,
    lost: i64,
    duplicates: i64,
    promoted: String,
    /// The cluster at the end (`GET /cluster`): whether the old primary came
    /// back as a (synchronous) standby during the "after" window.
    members: String,
}

fn rate(acks: &[(Instant, u64)], from: Instant, to: Instant) -> f64 {
    let inside: Vec<&(Instant, u64)> = acks
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .collect();
    match (inside.first(), inside.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 / (b.0 - a.0).as_secs_f64(),
        _ => 0.0,
    }
}

async fn run(sync: bool, before: Duration, after: Duration) -> Result<Outcome> {
    let mode = if sync { "sync" } else { "async" };
    let tmp = tempfile::Builder::new().prefix("qi-ha-").tempdir()?;
    let dir = tmp.path();
    eprintln!(
        "[{mode}] etcd + 2 Patroni nodes + HAProxy in {}",
        dir.display()
    );
    let cluster = Cluster::start(dir, sync).await?;
    let first = cluster.wait_primary(Duration::from_secs(10)).await?;
    let (grpc, http) = (free_port(), free_port());
    let hub = HubLaunch {
        binary: bin("cloud-hub")?,
        pg_url: &cluster.url(),
        grpc_port: grpc,
        http_port: http,
        database: "",
        grpc: "",
        after: "",
        args: &[],
        dir,
        log: &dir.join("hub.log"),
    }
    .start()
    .await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let client = tokio::spawn(gateway(
        format!("http://127.0.0.1:{grpc}"),
        Arc::clone(&tally),
        Arc::clone(&stop),
    ));
    let started = Instant::now();
    tokio::time::sleep(before).await;
    let victim = &cluster.nodes[first];
    let pid = victim.postmaster_pid()?;
    eprintln!(
        "[{mode}] kill -9 postmaster {pid} of {} (primary)",
        victim.name
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let killed = Instant::now();
    let promoted = wait_for("the replica promoted", Duration::from_secs(120), || async {
        Ok(cluster.primary().await.filter(|p| *p != first))
    })
    .await
    .with_context(|| cluster.logs())?;
    eprintln!(
        "[{mode}] {} is primary after {:.1} s",
        cluster.nodes[promoted].name,
        killed.elapsed().as_secs_f64()
    );
    // The first ack on a stream opened after the kill: the hub reached the
    // new primary.
    let resumed = wait_for("ingest resumed", Duration::from_secs(120), || async {
        let t = tally.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let since = t.streams.iter().copied().find(|s| *s > killed);
        Ok(since.and_then(|s| t.acks.iter().find(|(at, _)| *at > s).map(|a| a.0)))
    })
    .await
    .with_context(|| format!("hub log:\n{}", hub.log_tail(40)))?;
    eprintln!(
        "[{mode}] first ack after the kill at +{:.1} s",
        (resumed - killed).as_secs_f64()
    );
    tokio::time::sleep(after).await;
    let ended = Instant::now();
    stop.notify_one();
    client.await?;
    let (acked, before_rps, after_rps) = {
        let t = tally.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        // Warm-up excluded: the first 3 s (connections, caches).
        let warm = started + Duration::from_secs(3);
        (
            t.acked,
            rate(&t.acks, warm, killed),
            rate(&t.acks, resumed, ended),
        )
    };
    drop(hub);
    let members = cluster.members().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url())
        .await?;
    let (stored, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT seq) FROM readings WHERE gateway_id = $1 AND seq <= $2",
    )
    .bind(GATEWAY)
    .bind(acked as i64)
    .fetch_one(&pool)
    .await?;
    let lost = acked as i64 - distinct;
    if lost > 0 {
        let gaps: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT min(s), max(s) FROM (SELECT s, s - row_number() OVER (ORDER BY s) AS g
               FROM generate_series(1, $2::bigint) s
              WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE r.gateway_id = $1 AND r.seq = s)) x
             GROUP BY g ORDER BY 1 LIMIT 10",
        )
        .bind(GATEWAY)
        .bind(acked as i64)
        .fetch_all(&pool)
        .await?;
        eprintln!("[{mode}] acked but missing: {gaps:?}");
    }
    pool.close().await;
    drop(cluster);
    Ok(Outcome {
        mode,
        before_rps,
        after_rps,
        gap_s: (resumed - killed).as_secs_f64(),
        acked,
        stored,
        lost,
        duplicates: stored - distinct,
        promoted: format!("node{}", promoted + 1),
        members,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "both".into());
    let modes: &[bool] = match which.as_str() {
        "sync" => &[true],
        "async" => &[false],
        "both" => &[true, false],
        other => bail!("usage: ha_failover [sync|async|both], not {other:?}"),
    };
    let before = env_secs("HA_BEFORE_S", 20)?;
    let after = env_secs("HA_AFTER_S", 20)?;
    let mut out = Vec::new();
    for &sync in modes {
        out.push(run(sync, before, after).await?);
    }
    println!(
        "\n| replication | readings/s before | readings/s after | kill -> next ack (s) | acked | stored (<= acked) | acked lost | duplicates | new primary | cluster at the end |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in &out {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} |",
            o.mode,
            o.before_rps,
            o.after_rps,
            o.gap_s,
            o.acked,
            o.stored,
            o.lost,
            o.duplicates,
            o.promoted,
            o.members
        );
    }
    let bad: Vec<&Outcome> = out
        .iter()
        .filter(|o| o.duplicates != 0 || (o.mode == "sync" && o.lost != 0))
        .collect();
    if !bad.is_empty() {
        bail!("acknowledged readings lost or duplicated with synchronous replication");
    }
    Ok(())
}
