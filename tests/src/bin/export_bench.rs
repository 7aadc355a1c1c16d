//! Export throughput (BENCHMARKS.md, issue #15): stores a completed
//! stc-power run of N readings (default 100,000) through the hub's own
//! ingest write path, then writes its CSV, xlsx and JSON export with the
//! hub's exporter (`cloud_hub::exports`: pages from PostgreSQL, formatting,
//! for xlsx DEFLATE) into a counting sink, three times each, and prints
//! rows/s and bytes. No HTTP: the figure is the exporter's, which the
//! connection can only slow down.
//!
//! Run: `cargo run -p e2e-tests --bin export_bench -- [N]`.
use anyhow::{Context, Result, ensure};
use cloud_hub::exports::{Format, run, stream};
use cloud_hub::storage::{IngestMethod, Retention, Store, StoreOptions, TierChoice};
use e2e_tests::PgServer;
use e2e_tests::runs::Run;
use qi_proto::v1::{EdgeMessage, RunEventKind, edge_message};
use std::time::{Duration, Instant};

const T0: i64 = 1_780_000_000_000_000;
const RUN_ID: &str = "00000000-0000-4000-8000-0000000000e1";

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
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

    let mut r = Run::new(RUN_ID, 1, T0);
    r.start(
        "stc-power",
        "sample:BENCH-1",
        "olga",
        &[("rated_pmax", 400.0)],
        1.0,
    )?;
    r.event(RunEventKind::StepStarted, "1");
    for i in 0..n {
        match i % 2 {
            0 => r.reading("stc.curve", "smu", "voltage", "V", (i % 480) as f64 / 10.0),
            _ => r.reading(
                "stc.curve",
                "smu",
                "current",
                "A",
                9.8 - (i % 98) as f64 / 10.0,
            ),
        };
        r.t_us -= 990_000;
    }
    r.event(RunEventKind::StepFinished, "1")
        .event(RunEventKind::Completed, "");
    let EdgeMessage {
        kind: Some(edge_message::Kind::Batch(b)),
    } = r.all()
    else {
        anyhow::bail!("not a batch");
    };
    let mut events = b.run_events.as_slice();
    for chunk in b.readings.chunks(40_000) {
        let upto = chunk.last().map_or(0, |x| x.seq);
        let k = events.iter().take_while(|e| e.seq <= upto).count();
        store
            .insert_batch_with_events("gw-bench", chunk, &[], &events[..k])
            .await?;
        events = &events[k..];
    }
    store
        .insert_batch_with_events("gw-bench", &[], &[], events)
        .await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    println!("stored a run of {n} readings");

    for format in [Format::Csv, Format::Xlsx, Format::Json] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..3 {
            let row = cloud_hub::runs::query::run(&pool, RUN_ID)
                .await?
                .context("the run")?;
            let t = Instant::now();
            let mut export = run::export(&pool, row).await?;
            if format == Format::Csv {
                export = export.only(None, "readings")?;
            }
            let mut rx = stream::spawn(export, format, pool.clone(), "run");
            bytes = 0;
            while let Some(chunk) = rx.recv().await {
                bytes += chunk?.len();
            }
            times.push(t.elapsed().as_secs_f64());
        }
        ensure!(bytes > n * 20, "{format:?}: only {bytes} bytes");
        times.sort_by(f64::total_cmp);
        let median = times[1];
        println!(
            "{:>4}: {n} readings in median {median:.2} s (min {:.2}, max {:.2}): {:.0} rows/s, {:.1} MB",
            format.as_str(),
            times[0],
            times[2],
            n as f64 / median,
            bytes as f64 / 1e6
        );
    }
    Ok(())
}
