//! Hub ingest on storage tier citus with 1 worker, then 2, from the same
//! gateway load in one run: a fresh coordinator and workers for each
//! (`PgServer::start_citus`, the relocated PostgreSQL of
//! scripts/setup-citus.sh), one hub.

use crate::load::{Load, machine, me, measure, ours};
use crate::{Hub, WARM_UP, cores};
use anyhow::{Context, Result};
use e2e_tests::PgServer;
use std::time::Duration;

struct Row {
    workers: usize,
    rows_per_s: f64,
    cores: Vec<(String, f64)>,
    broken: u64,
    /// Shards of `samples`' partitions per worker (placement check).
    placements: String,
}

pub async fn run(streams: usize, seconds: u64) -> Result<()> {
    let mut rows = Vec::new();
    for workers in [1, 2] {
        let dir = tempfile::Builder::new()
            .prefix("qi-scale-citus-")
            .tempdir()?;
        eprintln!("[citus] coordinator + {workers} worker(s)");
        let pg = PgServer::start_citus(workers).await?;
        let coordinator = pg
            .pid()
            .context("a local coordinator (its CPU is measured)")?;
        let hub = Hub::start(&pg.url(), &dir.path().join("hub"), "").await?;
        let load = Load::start(&[hub.grpc_url()], streams, &format!("gw-c{workers}"), None);
        let mut procs = vec![
            ("hub".to_string(), vec![hub.proc.pid()], false),
            ("coordinator".to_string(), vec![coordinator], true),
        ];
        for (i, w) in pg.worker_pids().into_iter().enumerate() {
            procs.push((format!("worker {}", i + 1), vec![w], true));
        }
        procs.push(me());
        let (rate, cores) = measure(&load, WARM_UP, Duration::from_secs(seconds), procs).await;
        let broken = load.stop().await;
        let placements = placements(&pg.url())
            .await
            .unwrap_or_else(|e| format!("? ({e:#})"));
        let _ = hub.proc.terminate(Duration::from_secs(30));
        rows.push(Row {
            workers,
            rows_per_s: rate,
            cores,
            broken,
            placements,
        });
    }
    print(&rows, streams, seconds);
    Ok(())
}

/// "port: shards" per node holding shards of `samples`' partitions.
async fn placements(url: &str) -> Result<String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT nodeport, count(*) FROM citus_shards WHERE table_name::text LIKE 'samples%' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(rows
        .iter()
        .map(|(p, n)| format!("{p}: {n}"))
        .collect::<Vec<_>>()
        .join(", "))
}

fn get(cores: &[(String, f64)], name: &str) -> f64 {
    cores
        .iter()
        .filter(|(n, _)| n.starts_with(name))
        .map(|(_, c)| *c)
        .sum()
}

fn print(rows: &[Row], streams: usize, seconds: u64) {
    println!(
        "\n### Tier citus: ingest with 1 vs 2 workers ({streams} gateway streams, one hub, {seconds} s each)\n"
    );
    println!(
        "| workers | rows/s | hub CPU | coordinator CPU | worker CPU (each) | bench client CPU | total (these processes) | machine busy | shards of samples per node (port: shards) | broken streams |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let each: Vec<String> = (1..=r.workers)
            .map(|i| format!("{:.2}", get(&r.cores, &format!("worker {i}"))))
            .collect();
        let total = ours(&r.cores);
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {total:.2} | {:.2} of {} | {} | {} |",
            r.workers,
            r.rows_per_s,
            get(&r.cores, "hub"),
            get(&r.cores, "coordinator"),
            each.join(" / "),
            get(&r.cores, "bench client"),
            machine(&r.cores),
            cores(),
            r.placements,
            r.broken
        );
    }
    if let [one, two] = rows {
        let total = |r: &Row| machine(&r.cores);
        println!(
            "\n2 workers / 1 worker: {:.2}x rows/s. Every node, the hub and this load generator share this machine's {} cores ({:.2} and {:.2} busy, every process counted): a second worker adds shards, not CPU, here; on hardware with a host (cores) per worker the workers' share of the CPU is what scales out, the coordinator's (2PC, the series and latest tables) does not.",
            two.rows_per_s / one.rows_per_s.max(1.0),
            cores(),
            total(one),
            total(two)
        );
    }
}
