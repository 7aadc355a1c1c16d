//! Evaluation time of a protocol run with many recorded readings
//! (BENCHMARKS.md, issue #14; goal <= 1 s for 1,000,000): stores a completed
//! tc200 run of N readings over its three record series through the hub's
//! own ingest write path, with the STC runs before and after it on the same
//! sample, then times `cloud_hub::runs::evaluate` (inputs gathered in SQL,
//! criteria, stored evaluation) a few times.
//!
//! Run: `cargo run -p e2e-tests --bin run_eval_bench -- [N]` (debug), or
//! with `--release` for the figure that counts; N defaults to 1,000,000.
use anyhow::{Result, ensure};
use cloud_hub::storage::{IngestMethod, Retention, Store, StoreOptions, TierChoice};
use e2e_tests::PgServer;
use e2e_tests::runs::{Run, stc};
use qi_proto::v1::{EdgeMessage, RunEventKind, edge_message};
use std::time::{Duration, Instant};

const T0: i64 = 1_780_000_000_000_000;

async fn store_all(store: &Store, run: &Run) -> Result<()> {
    let EdgeMessage {
        kind: Some(edge_message::Kind::Batch(b)),
    } = run.all()
    else {
        anyhow::bail!("not a batch");
    };
    // Batches as the agent sends them: at most 50,000 entries.
    let mut events = b.run_events.as_slice();
    for chunk in b.readings.chunks(40_000) {
        let upto = chunk.last().map_or(0, |r| r.seq);
        let n = events.iter().take_while(|e| e.seq <= upto).count();
        store
            .insert_batch_with_events("gw-bench", chunk, &[], &events[..n])
            .await?;
        events = &events[n..];
    }
    store
        .insert_batch_with_events("gw-bench", &[], &[], events)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let pg = PgServer::start().await?;
    let store = Store::open(&StoreOptions {
        url: pg.url(),
        max_connections: 4,
        connect_timeout: Duration::from_secs(30),
        tier: TierChoice::None,
        ingest: IngestMethod::Copy,
        retention: Retention::default(),
    })
    .await?;
    store.gateway_connected("gw-bench", "bench").await?;
    let pool = store.pool().clone();
    let sample = "sample:BENCH-1";

    let mut before = Run::new("00000000-0000-4000-8000-000000000001", 1, T0);
    stc(&mut before, sample, 400.0, "olga")?;
    store_all(&store, &before).await?;

    let tc_id = "00000000-0000-4000-8000-000000000002";
    let mut tc = Run::new(tc_id, before.seq, T0 + 3_600_000_000);
    tc.start("tc200", sample, "olga", &[("area_m2", 1.6)], 1000.0)?;
    tc.event(RunEventKind::StepStarted, "0");
    let load = Instant::now();
    for i in 0..n {
        match i % 10 {
            0..=3 => tc.reading(
                "module_temperature",
                "module",
                "temperature",
                "Cel",
                -41.0 + (i % 128) as f64,
            ),
            4..=6 => tc.reading("current", "psu", "current", "A", 9.0),
            _ => tc.reading("open_circuit", "psu", "open_circuit", "1", 0.0),
        };
        // One second per reading would put 1M readings 11 days long.
        tc.t_us -= 999_000;
    }
    tc.event(RunEventKind::StepFinished, "0")
        .event(RunEventKind::Completed, "");
    store_all(&store, &tc).await?;
    let mut after = Run::new(
        "00000000-0000-4000-8000-000000000003",
        tc.seq,
        tc.t_us + 3_600_000_000,
    );
    stc(&mut after, sample, 392.0, "olga")?;
    store_all(&store, &after).await?;
    println!(
        "stored a tc200 run of {n} recorded readings (+ two STC runs) in {:.1} s",
        load.elapsed().as_secs_f64()
    );
    sqlx::query("ANALYZE").execute(&pool).await?;

    let mut times = Vec::new();
    let mut verdict = String::new();
    for _ in 0..5 {
        let t = Instant::now();
        let o = cloud_hub::runs::evaluate(&pool, tc_id, "bench", "bench", true).await?;
        times.push(t.elapsed().as_secs_f64());
        verdict = o.evaluation.verdict.clone();
        let count = o.evaluation.inputs["sources"]["module_temperature.max"]["readings"]
            .as_i64()
            .unwrap_or(0);
        ensure!(
            count as usize == (0..n).filter(|i| i % 10 <= 3).count(),
            "aggregate over {count}"
        );
    }
    times.sort_by(f64::total_cmp);
    println!(
        "evaluation of a run of {n} readings: min {:.3} s, median {:.3} s, max {:.3} s (verdict {verdict}, 5 runs)",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}
