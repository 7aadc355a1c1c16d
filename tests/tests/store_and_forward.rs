//! Store-and-forward under faults, with real processes: the agent killed with
//! SIGKILL over and over while it ingests, and PostgreSQL restarted under load.
//! Each ends with: the hub holds every reading the agent accepted, exactly
//! once, in order per device.

use anyhow::{Context, Result};
use e2e_tests::{Stack, hub_count, wait_for};
use qi_proto::v1::uplink_server::{Uplink, UplinkServer};
use qi_proto::v1::{EdgeMessage, HubMessage, Welcome, hub_message};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

async fn drain_and_check(stack: &mut Stack, gateway: &str) -> Result<i64> {
    let last = stack.drain().await?;
    stack.assert_exactly_once(gateway, last).await?;
    Ok(last)
}

fn jitter_ms(max: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 % max)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_reading_arrives_once_across_repeated_agent_crashes() -> Result<()> {
    // QI_KILL_ROUNDS=100 for the long run; CI does 20.
    let rounds: u32 = std::env::var("QI_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-kill", 20, "batch_max = 50\n")?;
    let mut last = 0;
    for round in 0..rounds {
        stack.start_agent(&cfg).await?;
        // Let it accept something new, then kill it at a random moment.
        last = wait_for(
            "the agent to accept new readings",
            Duration::from_secs(20),
            || async {
                let seq = stack.agent_health().await?["buffer"]["last_seq"]
                    .as_i64()
                    .unwrap_or(0);
                Ok((seq > last + 26).then_some(seq))
            },
        )
        .await
        .with_context(|| format!("round {round}: {}", stack.logs()))?;
        tokio::time::sleep(Duration::from_millis(jitter_ms(300))).await;
        stack.agent.take().context("agent")?.kill9()?;
    }
    stack.start_agent(&cfg).await?;
    let total = drain_and_check(&mut stack, "gw-kill").await?;
    let hub_log = std::fs::read_to_string(stack.log_path("hub"))?;
    eprintln!(
        "{rounds} kill -9 rounds: {total} readings stored exactly once; redeliveries deduplicated by the hub: {}",
        hub_log.matches("redelivered readings ignored").count()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_ingest_loses_nothing() -> Result<()> {
    if e2e_tests::pg::skip_on_shared_server(
        "a_postgres_restart_during_ingest_loses_nothing",
        "restarts PostgreSQL",
    ) {
        return Ok(());
    }
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-pg", 20, "batch_max = 50\n")?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;
    wait_for("readings at the hub", Duration::from_secs(20), || async {
        Ok((hub_count(&pool).await? > 300).then_some(()))
    })
    .await?;
    drop(pool);
    // Watch /ready while the database is down: it must say so, not hang.
    let ready_url = format!("{}/ready", stack.hub_url());
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        for _ in 0..40 {
            if let Ok(r) = client.get(&ready_url).send().await {
                seen.push(r.status().as_u16());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(seen)
    });
    stack
        .pg
        .as_mut()
        .context("pg")?
        .restart(Duration::from_secs(2))
        .await?;
    // The hub notices, the agent buffers and resends; ingest resumes by itself.
    let pool = stack.db().await?;
    let before = hub_count(&pool).await?;
    wait_for(
        "ingest to resume after the restart",
        Duration::from_secs(30),
        || async { Ok((hub_count(&pool).await? > before + 300).then_some(())) },
    )
    .await
    .with_context(|| stack.logs())?;
    let (status, ready) = e2e_tests::get_json(&format!("{}/ready", stack.hub_url())).await?;
    assert_eq!(status, 200, "{ready}");
    let seen = watcher.await??;
    assert!(
        seen.contains(&503),
        "/ready never reported the outage: {seen:?}"
    );
    drain_and_check(&mut stack, "gw-pg").await?;
    Ok(())
}

/// Hub down, buffer bounded at 300 readings: the policy holds the bound, counts
/// what it dropped or refused, the agent keeps polling; when the hub comes
/// back, what was kept arrives once.
async fn full_buffer(policy: &str) -> Result<(Value, i64, i64)> {
    let mut stack = Stack::new().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-full", 20, "batch_max = 50\n")?;
    let buffer = format!(
        "[buffer]\npath = \"{}\"\n",
        stack.dir.path().join("buffer").display()
    );
    let text = std::fs::read_to_string(&cfg)?.replacen(
        &buffer,
        &format!("{buffer}max_readings = 300\nfull_policy = \"{policy}\"\n"),
        1,
    );
    anyhow::ensure!(
        text.contains("max_readings = 300"),
        "config layout changed: {text}"
    );
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;
    let key = if policy == "drop_oldest" {
        "dropped"
    } else {
        "rejected"
    };
    let health = wait_for("the bound to be hit", Duration::from_secs(20), || async {
        let h = stack.agent_health().await?;
        Ok((h["buffer"][key].as_u64() > Some(200)).then_some(h))
    })
    .await
    .with_context(|| stack.logs())?;
    assert!(
        health["buffer"]["backlog"].as_u64() <= Some(300),
        "{health}"
    );
    assert_eq!(health["devices"][0]["state"], "online", "{health}");
    assert_eq!(health["buffer"]["full_policy"], policy);
    let metrics = e2e_tests::http::get(format!("{}/metrics", stack.agent_url()))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(&format!("edge_buffer_{key}_total")),
        "{metrics}"
    );
    stack.start_hub().await?;
    let last = stack.drain().await?;
    let pool = stack.db().await?;
    let (readings, distinct, min): (i64, i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq), min(seq) FROM readings")
            .fetch_one(&pool)
            .await?;
    assert_eq!(readings, distinct, "duplicates");
    // Audit events (the harness's login) take sequence numbers too.
    let (events, first_event): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), min(seq) FROM gateway_audit_events")
            .fetch_one(&pool)
            .await?;
    let count = readings + events;
    let h = stack.agent_health().await?;
    let lost = h["buffer"][key].as_i64().unwrap_or(0);
    if policy == "drop_oldest" {
        // Everything not dropped arrived. A record dropped while its batch was
        // already on the wire may arrive too (it is counted as dropped when it
        // leaves the buffer), so at most `lost` are missing, never more.
        assert!(count >= last - lost && count <= last, "{count} stored: {h}");
    } else {
        // Refused readings never got a sequence number: every accepted one arrived.
        assert_eq!(count, last, "{h}");
    }
    let min = match policy {
        // Dropping the oldest concerns readings (events wait in the high lane).
        "drop_oldest" => min,
        _ => match (min, first_event) {
            (Some(r), Some(e)) => Some(r.min(e)),
            (r, e) => r.or(e),
        },
    };
    Ok((h, count, min.unwrap_or(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_stays_healthy() -> Result<()> {
    let (_, _, min) = full_buffer("drop_oldest").await?;
    assert!(
        min > 1,
        "the oldest readings should have been dropped (min seq {min})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_refuses_the_newest_and_stays_healthy() -> Result<()> {
    let (_, _, min) = full_buffer("reject_newest").await?;
    assert_eq!(min, 1, "the oldest readings should have been kept");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_buffer_is_reported_and_the_agent_carries_on() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-corrupt", 50, "")?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;
    wait_for("readings at the hub", Duration::from_secs(20), || async {
        Ok((hub_count(&pool).await? > 100).then_some(()))
    })
    .await?;
    stack
        .agent
        .take()
        .context("agent")?
        .terminate(Duration::from_secs(10))?;
    let before: i64 = sqlx::query_scalar("SELECT max(seq) FROM readings")
        .fetch_one(&pool)
        .await?;
    // Trash the buffer's data file between runs.
    std::fs::write(stack.dir.path().join("buffer/db"), vec![0xA5u8; 200_000])?;
    stack.start_agent(&cfg).await?;
    let h = stack.agent_health().await?;
    let damage = h["buffer"]["damage"].as_str().unwrap_or("").to_string();
    assert!(damage.contains("moved to"), "{h}");
    let after = wait_for(
        "new readings after the damage",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings WHERE seq > $1")
                .bind(before)
                .fetch_one(&pool)
                .await?;
            Ok((n > 50).then_some(n))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    // The fresh buffer continued above what the hub already held: no sequence reused.
    let (count, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq) FROM readings")
            .fetch_one(&pool)
            .await?;
    assert_eq!(count, distinct, "a sequence number was reused");
    assert!(after > 50);
    let log = stack.agent.as_ref().context("agent")?.log_text();
    assert!(log.contains("buffer damaged"), "{log}");
    Ok(())
}

/// A hub that takes batches and never acknowledges them.
struct SilentHub {
    streams: Arc<AtomicU32>,
}

#[tonic::async_trait]
impl Uplink for SilentHub {
    type StreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<HubMessage, tonic::Status>> + Send>,
    >;

    async fn stream(
        &self,
        req: tonic::Request<tonic::Streaming<EdgeMessage>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        self.streams.fetch_add(1, AtomicOrdering::SeqCst);
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let welcome = HubMessage {
                kind: Some(hub_message::Kind::Welcome(Welcome {
                    highest_committed_seq: 0,
                })),
            };
            let _ = tx.send(Ok(welcome)).await;
            // Swallow everything, answer nothing.
            while let Ok(Some(_)) = inbound.message().await {}
            drop(tx);
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_acks_is_detected_and_reopened() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let streams = Arc::new(AtomicU32::new(0));
    // Bind first, then point the agent at whatever port we got: no race for a "free" port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    stack.grpc_port = listener.local_addr()?.port();
    let hub = SilentHub {
        streams: Arc::clone(&streams),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            // As the real hub: the agent gzips batches by default.
            .add_service(
                UplinkServer::new(hub).accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-stall", 100, "ack_timeout_ms = 1000\n")?;
    stack.start_agent(&cfg).await?;
    let h = wait_for(
        "the watchdog to reopen the stream",
        Duration::from_secs(15),
        || async {
            let h = stack.agent_health().await?;
            Ok((streams.load(AtomicOrdering::SeqCst) >= 3).then_some(h))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    let log = stack.agent.as_ref().context("agent")?.log_text();
    assert!(log.contains("stalled"), "{log}");
    // Nothing was acknowledged, so nothing was deleted.
    assert_eq!(h["buffer"]["acked_up_to"], 0, "{h}");
    let metrics = e2e_tests::http::get(format!("{}/metrics", stack.agent_url()))
        .await?
        .text()
        .await?;
    // Present from start at 0 (describe()), so the stall must show as a count.
    let stalls: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("edge_uplink_stalls_total "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| metrics.clone())?;
    assert!(stalls >= 1.0, "{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_wait_at_most_the_linger_time_for_more_readings() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    // 13 readings every 20 ms; batches may wait 500 ms to fill up.
    let cfg = stack.write_agent_config("gw-linger", 20, "batch_linger_ms = 500\n")?;
    stack.start_agent(&cfg).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = stack.agent_health().await?;
    let (batches, readings) = (
        h["uplink"]["batches_sent"].as_f64().unwrap_or(0.0),
        h["uplink"]["readings_sent"].as_f64().unwrap_or(0.0),
    );
    // ~650 readings/s in batches of ~325, not ~13.
    assert!(batches >= 2.0 && readings / batches >= 100.0, "{h}");
    // And the hub is never more than about the linger time behind.
    assert!(h["backlog_age_s"].as_f64().unwrap_or(0.0) < 1.5, "{h}");
    let last = stack.drain().await?;
    stack.assert_exactly_once("gw-linger", last).await?;
    Ok(())
}

/// After an outage, the hub gets the high-priority lane's backlog before any
/// bulk reading, and current readings while the bulk backlog still drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_drain_first_and_live_readings_overtake_the_backlog() -> Result<()> {
    let mut stack = Stack::new().await?;
    // A profile directory where the meter's frequency is an alarm-class point.
    let profiles = stack.dir.path().join("profiles");
    std::fs::create_dir_all(&profiles)?;
    let sdm = std::fs::read_to_string(e2e_tests::profiles_dir().join("eastron-sdm630.toml"))?;
    let marked = sdm.replacen(
        "name = \"frequency\"\n",
        "name = \"frequency\"\npriority = \"high\"\n",
        1,
    );
    anyhow::ensure!(marked != sdm, "eastron-sdm630 has no frequency point");
    std::fs::write(profiles.join("eastron-sdm630.toml"), marked)?;
    stack.start_sim(false).await?;
    // Small batches, one in flight: the drain takes many round trips.
    let cfg = stack.write_agent_config("gw-prio", 20, "batch_max = 20\nmax_in_flight = 1\n")?;
    let text = std::fs::read_to_string(&cfg)?;
    let text = text.replacen(
        &format!("profiles_dir = \"{}\"", e2e_tests::profiles_dir().display()),
        &format!("profiles_dir = \"{}\"", profiles.display()),
        1,
    );
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;
    let h = wait_for("a backlog", Duration::from_secs(30), || async {
        let h = stack.agent_health().await?;
        Ok((h["buffer"]["backlog"].as_u64() >= Some(3000)).then_some(h))
    })
    .await
    .with_context(|| stack.logs())?;
    assert!(h["buffer"]["backlog_high"].as_u64() > Some(100), "{h}");
    let hub_up_us = chrono::Utc::now().timestamp_micros();
    stack.start_hub().await?;
    // Let the backlog drain while the meter is still polled, then stop.
    wait_for("the backlog to drain", Duration::from_secs(30), || async {
        let h = stack.agent_health().await?;
        Ok((h["buffer"]["backlog"].as_u64() < Some(100)).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    let last = stack.drain().await?;
    stack.assert_exactly_once("gw-prio", last).await?;
    let pool = stack.db().await?;
    let at = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let t: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(sql)
                .bind(chrono::DateTime::from_timestamp_micros(hub_up_us))
                .fetch_one(&pool)
                .await?;
            t.context(sql)
        }
    };
    // Each batch is its own transaction, so received_at orders the batches.
    let high_backlog_done =
        at("SELECT max(received_at) FROM readings WHERE metric = 'frequency' AND ts < $1").await?;
    let bulk_backlog_start =
        at("SELECT min(received_at) FROM readings WHERE metric <> 'frequency' AND ts < $1").await?;
    assert!(
        high_backlog_done <= bulk_backlog_start,
        "alarms finished at {high_backlog_done}, bulk backlog started at {bulk_backlog_start}"
    );
    // Live data interleaved: some bulk readings reached the hub before older ones.
    let overtakers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
           SELECT received_at, max(received_at) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS older_max
           FROM readings WHERE metric <> 'frequency') x
         WHERE received_at < older_max",
    )
    .fetch_one(&pool)
    .await?;
    let batches: Vec<(chrono::DateTime<chrono::Utc>, i64, i64, i64)> = sqlx::query_as(
        "SELECT received_at, min(seq), max(seq), count(*) FROM readings GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    assert!(
        overtakers > 0,
        "bulk readings arrived strictly oldest first; batches (received_at, seqs, count): {:?}",
        &batches[..batches.len().min(40)]
    );
    Ok(())
}
