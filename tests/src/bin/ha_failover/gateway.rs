//! The gateway side of the failover run: a client streaming batches of
//! readings over the real uplink as fast as the hub acks them, reconnecting
//! by itself, tallying every ack.

use anyhow::{Context, Result};
use qi_proto::v1::{EdgeMessage, Reading, ReadingBatch, edge_message, hub_message};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const GATEWAY: &str = "gw-ha";
/// Readings per batch (an agent's poll cycle of a large gateway).
pub const BATCH: u64 = 500;
/// Batches sent ahead of their acks: the hub writes two at once (its PIPELINE).
const IN_FLIGHT: usize = 4;

/// What the gateway client saw: every ack with its arrival time, and when
/// each stream (connection) began.
#[derive(Default)]
pub struct Tally {
    pub acked: u64,
    pub acks: Vec<(Instant, u64)>,
    pub streams: Vec<Instant>,
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
pub async fn gateway(url: String, tally: Arc<Mutex<Tally>>, stop: Arc<tokio::sync::Notify>) {
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
    let (tx, mut inbound) = e2e_tests::grpc::open_stream(
        url,
        GATEWAY,
        "ha-failover",
        IN_FLIGHT + 2,
        Duration::from_secs(2),
    )
    .await?;
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
