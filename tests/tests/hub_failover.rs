//! Several hubs over one database (issue #18): the agent fails over when the
//! hub it streams to is killed -9 mid-stream, nothing is lost or doubled, and
//! leadership of the background jobs moves to the surviving hub, which then
//! runs them (a rollup pass). Once with the agent listing both hubs
//! (`uplink.hub_urls`), once with HAProxy (TCP mode) in front of them.
//!
//! The gap from the kill to the agent's next ack is printed (run with
//! `--nocapture`): a figure for BENCHMARKS.md, not asserted.

use anyhow::{Context, Result};
use e2e_tests::multi_hub::{Replica, haproxy};
use e2e_tests::{Stack, hub_count, wait_for};
use std::time::Duration;

/// Rollups every second, so "a background job ran" is quick to see.
const AFTER: &str = "[analytics]\nrollup_interval_s = 1\n";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn logs(stack: &Stack, hubs: &[&Replica]) -> String {
    let mut s = stack.logs();
    for h in hubs {
        s.push_str(&h.log_tail());
    }
    s
}

/// Kills `victim` once the agent streams, then waits for the next ack
/// (returns the gap in ms) and for readings to flow again.
async fn kill_and_wait_for_ack(stack: &Stack, victim: &mut Replica) -> Result<i64> {
    let pool = stack.db().await?;
    wait_for(
        "readings to reach the hub",
        Duration::from_secs(30),
        || async { Ok((hub_count(&pool).await? > 300).then_some(())) },
    )
    .await?;
    let killed_at = now_ms();
    victim.kill9()?;
    let acked = wait_for(
        "an ack from the surviving hub",
        Duration::from_secs(60),
        || async {
            let h = stack.agent_health().await?;
            Ok(h["uplink"]["last_ack_ms"]
                .as_i64()
                .filter(|t| *t > killed_at && h["uplink"]["state"] == "connected"))
        },
    )
    .await?;
    let before = hub_count(&pool).await?;
    wait_for(
        "readings after the failover",
        Duration::from_secs(30),
        || async { Ok((hub_count(&pool).await? > before + 100).then_some(())) },
    )
    .await?;
    Ok(acked - killed_at)
}

/// The rollup watermark (ms) — moved only by a rollup pass.
async fn rollup_watermark_ms(stack: &Stack) -> Result<i64> {
    let pool = stack.db().await?;
    let ms: Option<f64> = sqlx::query_scalar(
        "SELECT CASE WHEN watermark = '-infinity' THEN NULL
                ELSE extract(epoch FROM watermark) * 1000 END::float8
         FROM rollup_state WHERE name = 'samples'",
    )
    .fetch_one(&pool)
    .await?;
    Ok(ms.unwrap_or(0.0) as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_fails_over_to_the_next_hub_and_leadership_follows() -> Result<()> {
    let mut stack = Stack::new().await?;
    let mut a = Replica::start(&stack, "hub-a", "", AFTER).await?;
    wait_for("hub-a to lead", Duration::from_secs(20), || async {
        Ok((a.leader_role().await? == "leader").then_some(()))
    })
    .await?;
    let b = Replica::start(&stack, "hub-b", "", AFTER).await?;
    // A follower is ready (it ingests and serves the API) but does not lead.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.leader_role().await?, "follower");
    assert_eq!(a.leader_role().await?, "leader");

    stack.start_sim(false).await?;
    stack.grpc_port = a.grpc_port;
    let extra = format!("batch_max = 50\nhub_urls = [\"{}\"]\n", b.grpc_url());
    let cfg = stack.write_agent_config("gw-failover", 20, &extra)?;
    stack.start_agent(&cfg).await?;
    let h = stack.agent_health().await?;
    assert_eq!(h["uplink"]["hub_url"], a.grpc_url().as_str(), "{h}");

    let killed_at = now_ms();
    let gap = kill_and_wait_for_ack(&stack, &mut a)
        .await
        .with_context(|| logs(&stack, &[&a, &b]))?;
    let h = stack.agent_health().await?;
    assert_eq!(h["uplink"]["hub_url"], b.grpc_url().as_str(), "{h}");

    // Leadership moved, and a background job ran on the survivor.
    wait_for("hub-b to lead", Duration::from_secs(30), || async {
        Ok((b.leader_role().await? == "leader").then_some(()))
    })
    .await
    .with_context(|| logs(&stack, &[&b]))?;
    wait_for(
        "a rollup pass on hub-b",
        Duration::from_secs(30),
        || async { Ok((rollup_watermark_ms(&stack).await? > killed_at).then_some(())) },
    )
    .await
    .with_context(|| logs(&stack, &[&b]))?;
    let b_log = std::fs::read_to_string(stack.log_path("hub-b"))?;
    assert!(b_log.contains("leadership gained"), "{b_log}");

    let last_seq = stack.drain().await.with_context(|| logs(&stack, &[&b]))?;
    stack.assert_exactly_once("gw-failover", last_seq).await?;
    eprintln!("hub_urls failover: kill -9 to next ack {gap} ms; {last_seq} readings exactly once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_behind_haproxy_survives_a_hub_kill() -> Result<()> {
    let mut stack = Stack::new().await?;
    let a = Replica::start(&stack, "hub-a", "", AFTER).await?;
    let b = Replica::start(&stack, "hub-b", "", AFTER).await?;
    let (_haproxy, port) = haproxy(stack.dir.path(), &[a.grpc_port, b.grpc_port]).await?;

    stack.start_sim(false).await?;
    stack.grpc_port = port;
    let cfg = stack.write_agent_config("gw-haproxy", 20, "batch_max = 50\n")?;
    stack.start_agent(&cfg).await?;
    let mut hubs = [a, b];
    // The hub HAProxy sent the stream to.
    let at = wait_for("the stream on one hub", Duration::from_secs(30), || async {
        let on = [
            hubs[0].gateways_connected().await?,
            hubs[1].gateways_connected().await?,
        ];
        Ok(match on {
            [1.0, 0.0] => Some(0),
            [0.0, 1.0] => Some(1),
            _ => None,
        })
    })
    .await?;
    let gap = kill_and_wait_for_ack(&stack, &mut hubs[at])
        .await
        .with_context(|| logs(&stack, &[&hubs[0], &hubs[1]]))?;
    let survivor = &hubs[1 - at];
    assert_eq!(survivor.gateways_connected().await?, 1.0);
    wait_for("the survivor to lead", Duration::from_secs(30), || async {
        Ok((survivor.leader_role().await? == "leader").then_some(()))
    })
    .await?;

    let last_seq = stack
        .drain()
        .await
        .with_context(|| logs(&stack, &[survivor]))?;
    stack.assert_exactly_once("gw-haproxy", last_seq).await?;
    eprintln!("HAProxy failover: kill -9 to next ack {gap} ms; {last_seq} readings exactly once");
    Ok(())
}

/// `database.leader_election = false`: the hub leads from the start without
/// campaigning (a single hub, or a single-connection server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_election_always_leads() -> Result<()> {
    let stack = Stack::new().await?;
    let solo = Replica::start(&stack, "hub-solo", "leader_election = false\n", AFTER).await?;
    assert_eq!(solo.leader_role().await?, "always");
    let started = now_ms();
    wait_for("a rollup pass", Duration::from_secs(30), || async {
        Ok((rollup_watermark_ms(&stack).await? > started).then_some(()))
    })
    .await?;
    let log = std::fs::read_to_string(stack.log_path("hub-solo"))?;
    assert!(!log.contains("leadership gained"), "{log}");
    Ok(())
}

/// The leader whose lock connection breaks (here: terminated by the
/// database) steps down; a hub leads again, and at no sample do two lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lock_connection_steps_down() -> Result<()> {
    let stack = Stack::new().await?;
    let a = Replica::start(&stack, "hub-a", "", AFTER).await?;
    wait_for("hub-a to lead", Duration::from_secs(20), || async {
        Ok((a.leader_role().await? == "leader").then_some(()))
    })
    .await?;
    let b = Replica::start(&stack, "hub-b", "", AFTER).await?;
    let pool = stack.db().await?;
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(l.pid) FROM pg_locks l
           JOIN pg_stat_activity s USING (pid)
          WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = 'cloud-hub leader'
            AND s.datname = current_database()) x",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(ended, 1, "one leader session");
    // hub-a learns at its next ping; until then it still says leader, and
    // hub-b, which may hold the lock by then, waits out its grace period.
    let mut leaders_seen = Vec::new();
    wait_for("hub-a to step down", Duration::from_secs(10), || async {
        let roles = [a.leader_role().await?, b.leader_role().await?];
        anyhow::ensure!(roles != ["leader", "leader"], "two leaders at once");
        let log = std::fs::read_to_string(stack.log_path("hub-a"))?;
        Ok(log.contains("leadership lost").then_some(()))
    })
    .await?;
    wait_for("a leader again", Duration::from_secs(30), || async {
        let roles = [a.leader_role().await?, b.leader_role().await?];
        let n = roles.iter().filter(|r| *r == "leader").count();
        anyhow::ensure!(n <= 1, "two leaders at once: {roles:?}");
        Ok((n == 1).then_some(()))
    })
    .await
    .with_context(|| format!("{}{}", a.log_tail(), b.log_tail()))?;
    for _ in 0..10 {
        let roles = [a.leader_role().await?, b.leader_role().await?];
        leaders_seen.push(roles.iter().filter(|r| *r == "leader").count());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(leaders_seen.iter().all(|n| *n == 1), "{leaders_seen:?}");
    Ok(())
}
