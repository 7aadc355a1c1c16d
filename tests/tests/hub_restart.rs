//! Exactly-once across crashes: kill -9 the hub mid-stream (several times)
//! and the agent once, restart them, and check PostgreSQL holds every reading the edge
//! produced, once: sequences 1..=N with no gap and no duplicate.

use anyhow::{Context, Result};
use e2e_tests::{Stack, hub_count, wait_for};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_arrives_exactly_once_across_hub_crashes() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    // 13 points every 20 ms: several hundred readings a second, small batches.
    let cfg = stack.write_agent_config("gw-crash", 20, "batch_max = 50\n")?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;

    let mut seen = 0;
    for round in 1..=3 {
        wait_for(
            "readings to reach the hub",
            Duration::from_secs(20),
            || async { Ok((hub_count(&pool).await? > seen + 300).then_some(())) },
        )
        .await
        .with_context(|| stack.logs())?;
        // Crash the hub mid-stream: no chance to finish a transaction or send an ack.
        stack.hub.take().context("hub")?.kill9()?;
        let during = stack.agent_health().await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let health = stack.agent_health().await?;
        assert_ne!(
            health["uplink"]["state"], "connected",
            "round {round}: {health}"
        );
        assert!(
            health["buffer"]["backlog"].as_u64() > during["buffer"]["backlog"].as_u64(),
            "round {round}: backlog should grow while the hub is down: {during} -> {health}"
        );
        // The oldest waiting reading is as old as the outage.
        assert!(
            health["backlog_age_s"].as_f64() >= Some(1.0),
            "round {round}: {health}"
        );
        stack.start_hub().await?;
        seen = hub_count(&pool).await?;
    }

    // Also crash the agent once: acks it had applied but not yet flushed are
    // lost with it, so it resends readings the hub already holds.
    stack.agent.take().context("agent")?.kill9()?;
    stack.start_agent(&cfg).await?;
    wait_for(
        "readings after the agent restart",
        Duration::from_secs(20),
        || async { Ok((hub_count(&pool).await? > seen + 300).then_some(())) },
    )
    .await
    .with_context(|| stack.logs())?;

    // Stop the instrument so the edge stops producing, then wait for the drain.
    let last_seq = stack.drain().await?;
    assert!(
        last_seq > 900,
        "too few readings to mean anything: {last_seq}"
    );
    stack.assert_exactly_once("gw-crash", last_seq).await?;
    let count = last_seq;
    let hub_log = std::fs::read_to_string(stack.log_path("hub"))?;
    eprintln!(
        "{count} readings stored exactly once; redeliveries the hub deduplicated: {}",
        hub_log.matches("redelivered readings ignored").count()
    );
    Ok(())
}
