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

mod cluster;
mod gateway;

use anyhow::{Context, Result, bail};
use cluster::Cluster;
use e2e_tests::{HubLaunch, bin, free_port, wait_for};
use gateway::{GATEWAY, Tally, gateway};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_secs(name: &str, default: u64) -> Result<Duration> {
    Ok(Duration::from_secs(match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}"))?,
        Err(_) => default,
    }))
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
