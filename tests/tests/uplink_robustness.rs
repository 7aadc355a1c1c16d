//! The uplink protocol's own robustness against a client that lies, with a
//! hand-written gRPC client against the real hub and agent (field-trial
//! finding 8; who may connect at all is the identity issue's business).

use anyhow::{Context, Result};
use e2e_tests::grpc::{self, Client};
use e2e_tests::{Stack, hub_count, wait_for};
use qi_proto::v1::{Reading, hub_message};
use std::time::Duration;

fn forged(seq: u64, timestamp_us: i64) -> Reading {
    Reading {
        seq,
        device_id: "meter-1".into(),
        metric: "forged".into(),
        timestamp_us,
        value: 666.0,
        unit: "V".into(),
        quality: 1,
        ..Default::default()
    }
}

/// One forged reading with sequence 2^63-1 under a real gateway's id once
/// made that gateway's agent number past what the hub stores, after which
/// nothing it sent was accepted again. Now the agent does not take the
/// hub's word for an implausible sequence and keeps delivering exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_sequence_does_not_poison_the_real_gateway() -> Result<()> {
    let gw = "gw-seq-poison";
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config(gw, 200, "")?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;
    wait_for("first readings", Duration::from_secs(20), || async {
        Ok((hub_count(&pool).await? > 0).then_some(()))
    })
    .await?;

    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let now = chrono::Utc::now().timestamp_micros();
    let (got, status) = grpc::exchange(
        &client,
        vec![
            grpc::hello(gw),
            grpc::batch(vec![forged(i64::MAX as u64, now)]),
        ],
    )
    .await?;
    assert!(status.is_none(), "{status:?}");
    assert!(
        matches!(got.last(), Some(hub_message::Kind::Ack(_))),
        "{got:?}"
    );

    // The agent reconnects (a restart) and hears the forged highest sequence.
    stack
        .agent
        .take()
        .context("agent")?
        .terminate(Duration::from_secs(10))?;
    stack.start_agent(&cfg).await?;
    let before = hub_count(&pool).await?;
    wait_for(
        "readings after the restart",
        Duration::from_secs(20),
        || async { Ok((hub_count(&pool).await? > before + 20).then_some(())) },
    )
    .await
    .with_context(|| stack.logs())?;
    assert!(
        stack.logs().contains("beyond any an agent can have sent"),
        "the agent says why it did not adopt the hub's sequence"
    );
    let last = stack.drain().await?;
    assert!(last < 1_000_000, "agent kept its own numbering: {last}");
    sqlx::query("DELETE FROM samples WHERE series_id IN (SELECT series_id FROM series WHERE metric = 'forged')")
        .execute(&pool)
        .await?;
    stack.assert_exactly_once(gw, last).await
}

/// The hub bounds what it accepts: a reading stamped far in the future is
/// refused with the reason, and nothing of its batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_from_the_far_future_are_refused_by_the_hub() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let now = chrono::Utc::now().timestamp_micros();
    let two_days = 2 * 86_400 * 1_000_000;
    let (_, status) = grpc::exchange(
        &client,
        vec![
            grpc::hello("gw-future"),
            grpc::batch(vec![forged(1, now), forged(2, now + two_days)]),
        ],
    )
    .await?;
    let status = status.context("the batch must be refused")?;
    assert!(
        status.message().contains("ahead of the hub's clock"),
        "{status:?}"
    );
    assert_eq!(hub_count(&stack.db().await?).await?, 0);
    Ok(())
}

/// A full batch (`uplink.batch_max` at its maximum) is taken whole: tonic's
/// default 4 MiB message limit once refused it, and the agent would have
/// resent it forever. One reading more is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_taken_and_a_larger_one_refused() -> Result<()> {
    let max = qi_proto::limits::MAX_BATCH_READINGS as u64;
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let now = chrono::Utc::now().timestamp_micros();
    let batch = |from: u64, n: u64| {
        (from..from + n)
            .map(|seq| Reading {
                seq,
                device_id: "meter-with-a-long-device-identifier-01".into(),
                metric: "active_power_total_import_phase_l1".into(),
                timestamp_us: now - 1_000_000 + seq as i64,
                value: seq as f64,
                unit: "kW".into(),
                quality: 1,
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    let (got, status) = grpc::exchange(
        &client,
        vec![grpc::hello("gw-full"), grpc::batch(batch(1, max))],
    )
    .await?;
    assert!(status.is_none(), "{status:?}");
    assert!(
        matches!(got.last(), Some(hub_message::Kind::Ack(_))),
        "{got:?}"
    );
    assert_eq!(hub_count(&stack.db().await?).await?, max as i64);
    let (_, status) = grpc::exchange(
        &client,
        vec![grpc::hello("gw-full"), grpc::batch(batch(max + 1, max + 1))],
    )
    .await?;
    let status = status.context("a batch over the limit must be refused")?;
    assert!(status.message().contains("at most"), "{status:?}");
    Ok(())
}
