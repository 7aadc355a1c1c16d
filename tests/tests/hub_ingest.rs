//! The hub's ingest with several gateways streaming at once: every stream's
//! batches committed and acknowledged in order, shared device and metric
//! names across gateways kept apart, redeliveries ignored, nothing lost to a
//! deadlock between concurrent transactions. Runs on every tier with more
//! than one connection (`QI_TEST_TIER` none and apache in scripts/test.sh).

use anyhow::{Context, Result};
use e2e_tests::Stack;
use e2e_tests::grpc::{Client, batch, exchange, hello, reading};
use qi_proto::v1::hub_message;

const GATEWAYS: u64 = 4;
const BATCHES: u64 = 20;
const PER_BATCH: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_gateway_streams_are_all_stored_once() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let url = format!("http://127.0.0.1:{}", stack.grpc_port);
    let started = std::time::Instant::now();
    let mut streams = tokio::task::JoinSet::new();
    for g in 0..GATEWAYS {
        let client = Client::plain(&url);
        streams.spawn(async move {
            let gw = format!("gw-par-{g}");
            // Same device and metric names on every gateway (10 series each).
            let batches: Vec<_> = (0..BATCHES)
                .map(|b| {
                    batch(
                        (1..=PER_BATCH)
                            .map(|i| {
                                let seq = b * PER_BATCH + i;
                                let mut r = reading(seq, seq as f64);
                                r.device_id = format!("meter-{}", seq % 10);
                                r
                            })
                            .collect(),
                    )
                })
                .collect();
            let mut msgs = vec![hello(&gw)];
            msgs.extend(batches.iter().cloned());
            // The last batch once more, as after a lost ack.
            msgs.push(batches[batches.len() - 1].clone());
            let (got, err) = exchange(&client, msgs).await?;
            anyhow::ensure!(err.is_none(), "{gw}: {err:?}");
            let acks: Vec<(u64, u32)> = got
                .iter()
                .filter_map(|m| match m {
                    hub_message::Kind::Ack(a) => Some((a.committed_up_to, a.inserted)),
                    _ => None,
                })
                .collect();
            Ok::<_, anyhow::Error>((gw, acks))
        });
    }
    while let Some(done) = streams.join_next().await {
        let (gw, acks) = done?.with_context(|| stack.logs())?;
        assert_eq!(acks.len() as u64, BATCHES + 1, "{gw}");
        for (b, (up_to, _)) in acks.iter().take(BATCHES as usize).enumerate() {
            assert_eq!(*up_to, (b as u64 + 1) * PER_BATCH, "{gw}: acks in order");
        }
        assert_eq!(acks[BATCHES as usize].0, BATCHES * PER_BATCH, "{gw}");
        // The redelivered batch is written alongside the original (two batches
        // of a stream are in flight), so either may be the one stored: the
        // acks count each reading as new exactly once between them.
        let new: u64 = acks.iter().map(|a| u64::from(a.1)).sum();
        assert_eq!(new, BATCHES * PER_BATCH, "{gw}: {acks:?}");
    }
    let secs = started.elapsed().as_secs_f64();
    let pool = stack.db().await?;
    let per_gateway: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT gateway_id, count(*), count(DISTINCT seq) FROM readings
         WHERE gateway_id LIKE 'gw-par-%' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(per_gateway.len() as u64, GATEWAYS);
    for (gw, n, distinct) in &per_gateway {
        assert_eq!(
            (*n as u64, *distinct as u64),
            (BATCHES * PER_BATCH, BATCHES * PER_BATCH),
            "{gw}"
        );
    }
    let series: i64 =
        sqlx::query_scalar("SELECT count(*) FROM series WHERE gateway_id LIKE 'gw-par-%'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        series as u64,
        GATEWAYS * 10,
        "series kept apart per gateway"
    );
    eprintln!(
        "{GATEWAYS} parallel streams: {} readings in {secs:.2} s (debug build, incl. setup of the streams)",
        GATEWAYS * BATCHES * PER_BATCH
    );
    Ok(())
}

/// Two batches of one stream, in flight together, that both bring the same
/// new series: the hub creates each series once, without a deadlock between
/// the two transactions (CI saw 40P01 when series were inserted in hash
/// order). Many series per batch and many gateways make a wrong lock order
/// near certain to meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_series_created_by_two_batches_at_once_do_not_deadlock() -> Result<()> {
    const GWS: u64 = 12;
    const SERIES: u64 = 200;
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let url = format!("http://127.0.0.1:{}", stack.grpc_port);
    let mut streams = tokio::task::JoinSet::new();
    for g in 0..GWS {
        let client = Client::plain(&url);
        streams.spawn(async move {
            let gw = format!("gw-new-{g}");
            let half = |from: u64| {
                batch(
                    (0..SERIES)
                        .map(|i| {
                            let mut r = reading(from + i, i as f64);
                            r.device_id = format!("dev-{i}");
                            r
                        })
                        .collect(),
                )
            };
            let msgs = vec![hello(&gw), half(1), half(1 + SERIES)];
            let (got, err) = exchange(&client, msgs).await?;
            anyhow::ensure!(err.is_none(), "{gw}: {err:?}");
            let acks = got
                .iter()
                .filter(|m| matches!(m, hub_message::Kind::Ack(_)))
                .count();
            anyhow::ensure!(acks == 2, "{gw}: {acks} acks");
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = streams.join_next().await {
        done?.with_context(|| stack.logs())?;
    }
    let pool = stack.db().await?;
    let (series, readings): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM series WHERE gateway_id LIKE 'gw-new-%'),
                (SELECT count(*) FROM readings WHERE gateway_id LIKE 'gw-new-%')",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(series as u64, GWS * SERIES);
    assert_eq!(readings as u64, GWS * SERIES * 2);
    Ok(())
}
