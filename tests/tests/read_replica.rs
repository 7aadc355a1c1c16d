//! `database.read_url` (issue #18): the analytics routes read from a real
//! PostgreSQL streaming replica of the test cluster (pg_basebackup -R), say
//! so and how far behind it is in their headers and in `/ready`, and fall
//! back to the primary (saying that too) when the replica is stopped.

use anyhow::{Context, Result};
use e2e_tests::multi_hub::Replica;
use e2e_tests::{Stack, get_json, http, wait_for};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_read_from_the_replica_and_fall_back_to_the_primary() -> Result<()> {
    if e2e_tests::pg::skip_on_shared_server(
        "analytics_read_from_the_replica_and_fall_back_to_the_primary",
        "builds a streaming replica of its cluster",
    ) {
        return Ok(());
    }
    let mut stack = Stack::new().await?;
    let mut standby = stack
        .pg
        .as_ref()
        .context("stack without PostgreSQL")?
        .start_replica()
        .await?;
    let database = format!("read_url = \"{}\"\n", standby.url());
    let hub = Replica::start(&stack, "hub", &database, "").await?;
    stack.start_sim(false).await?;
    stack.grpc_port = hub.grpc_port;
    let cfg = stack.write_agent_config("gw-replica", 100, "")?;
    stack.start_agent(&cfg).await?;

    // Readings committed on the primary show up in series read on the replica.
    let url = format!("{}/api/v1/series?gateway=gw-replica", hub.http_url());
    let headers = wait_for(
        "series of gw-replica on the replica",
        Duration::from_secs(30),
        || async {
            let r = http::get(&url).await?;
            anyhow::ensure!(r.status() == 200, "status {}", r.status());
            let h = r.headers().clone();
            let body: serde_json::Value = r.json().await?;
            let on_replica = h.get("x-read-source").is_some_and(|v| v == "replica");
            Ok((on_replica && body["count"].as_u64() > Some(0)).then_some(h))
        },
    )
    .await
    .with_context(|| format!("{}{}", stack.logs(), hub.log_tail()))?;
    let lag: i64 = headers
        .get("x-replica-lag-ms")
        .context("no X-Replica-Lag-Ms")?
        .to_str()?
        .parse()?;
    assert!(lag >= 0, "{lag}");
    assert!(headers.get("x-read-fallback").is_none());
    let (status, ready) = get_json(&format!("{}/ready", hub.http_url())).await?;
    assert_eq!(status, 200);
    assert_eq!(ready["replica"]["state"], "ok", "{ready}");
    assert!(ready["replica"]["lag_ms"].is_i64(), "{ready}");

    // Replica down: answers still come, from the primary, and say so.
    standby.stop()?;
    let h = wait_for(
        "fallback to the primary",
        Duration::from_secs(30),
        || async {
            let r = http::get(&url).await?;
            anyhow::ensure!(r.status() == 200, "status {}", r.status());
            let h = r.headers().clone();
            Ok(h.get("x-read-source")
                .is_some_and(|v| v == "primary")
                .then_some(h))
        },
    )
    .await
    .with_context(|| hub.log_tail())?;
    assert!(h.get("x-read-fallback").is_some(), "{h:?}");
    assert!(h.get("x-replica-lag-ms").is_none(), "{h:?}");
    let (status, ready) = get_json(&format!("{}/ready", hub.http_url())).await?;
    assert_eq!(status, 200, "a missing replica is no reason to be unready");
    assert_eq!(ready["replica"]["state"], "unavailable", "{ready}");

    // Without read_url nothing changes: the primary serves, no fallback.
    let plain = Replica::start(&stack, "hub-plain", "", "").await?;
    let r = http::get(format!("{}/api/v1/series", plain.http_url())).await?;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get("x-read-source")
            .is_some_and(|v| v == "primary")
    );
    assert!(r.headers().get("x-read-fallback").is_none());
    let (_, ready) = get_json(&format!("{}/ready", plain.http_url())).await?;
    assert!(ready["replica"].is_null(), "{ready}");
    Ok(())
}
