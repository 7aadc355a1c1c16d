//! Hub ingest with 1, 2 and 3 hubs over one PostgreSQL, from the same load in
//! one run: all three hubs run throughout; configuration k spreads the
//! gateway streams round-robin over the first k.

use crate::load::{Load, machine, me, measure, ours};
use crate::{Hub, WARM_UP, cores};
use anyhow::{Context, Result};
use e2e_tests::PgServer;
use std::time::Duration;

const HUBS: usize = 3;

struct Row {
    hubs: usize,
    rows_per_s: f64,
    cores: Vec<(String, f64)>,
    broken: u64,
}

pub async fn run(streams: usize, seconds: u64) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("qi-scale-hubs-")
        .tempdir()?;
    let pg = PgServer::start().await?;
    let pg_pid = pg
        .pid()
        .context("a local PostgreSQL (its CPU is measured)")?;
    let mut hubs = Vec::new();
    for i in 0..HUBS {
        // One after the other: start-up takes the schema lock anyway.
        hubs.push(Hub::start(&pg.url(), &dir.path().join(format!("hub{}", i + 1)), "").await?);
    }
    let mut rows = Vec::new();
    for k in 1..=HUBS {
        let urls: Vec<String> = hubs[..k].iter().map(Hub::grpc_url).collect();
        eprintln!("[hubs] {k} hub(s), {streams} gateway streams, {seconds} s");
        let load = Load::start(&urls, streams, &format!("gw-h{k}"), None);
        let mut procs: Vec<(String, Vec<u32>, bool)> = hubs
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("hub {}", i + 1), vec![h.proc.pid()], false))
            .collect();
        procs.push(("PostgreSQL".into(), vec![pg_pid], true));
        procs.push(me());
        let (rate, cores) = measure(&load, WARM_UP, Duration::from_secs(seconds), procs).await;
        let broken = load.stop().await;
        rows.push(Row {
            hubs: k,
            rows_per_s: rate,
            cores,
            broken,
        });
    }
    for h in hubs {
        let _ = h.proc.terminate(Duration::from_secs(30));
    }
    print(&rows, streams, seconds);
    Ok(())
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
        "\n### Hub ingest with 1, 2, 3 hubs over one PostgreSQL ({streams} gateway streams round-robin, {seconds} s each)\n"
    );
    println!(
        "| hubs | rows/s | hub 1 / 2 / 3 CPU (cores) | PostgreSQL CPU | bench client CPU | total (these processes) | machine busy (all processes) | hub CPU per 1k rows/s | PostgreSQL CPU per 1k rows/s | broken streams |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let hub = get(&r.cores, "hub ");
        let pg = get(&r.cores, "PostgreSQL");
        let total = ours(&r.cores);
        let per_k = |c: f64| {
            if r.rows_per_s > 0.0 {
                c / (r.rows_per_s / 1000.0)
            } else {
                f64::NAN
            }
        };
        let each: Vec<String> = (1..=HUBS)
            .map(|i| format!("{:.2}", get(&r.cores, &format!("hub {i}"))))
            .collect();
        println!(
            "| {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} of {} | {:.4} | {:.4} | {} |",
            r.hubs,
            r.rows_per_s,
            each.join(" / "),
            pg,
            get(&r.cores, "bench client"),
            total,
            machine(&r.cores),
            cores(),
            per_k(hub),
            per_k(pg),
            r.broken
        );
    }
    let Some(one) = rows.first() else { return };
    let busiest = rows.iter().map(|r| machine(&r.cores)).fold(0.0, f64::max);
    let n = cores() as f64;
    println!();
    if busiest >= 0.85 * n {
        println!(
            "Where it binds: the machine's {n} cores ({busiest:.2} busy at most, every process counted). PostgreSQL, every hub and this load generator share them, so a second or third hub cannot add CPU: it only spreads the same work (and adds its own idle cost)."
        );
    } else {
        println!(
            "Where it binds: not the CPU alone ({busiest:.2} of {n} cores busy at most, every process counted): per-stream round trips (batch commit, ack) or PostgreSQL's commit path; more streams would show it."
        );
    }
    let hub_k = get(&one.cores, "hub 1") / (one.rows_per_s / 1000.0);
    let pg_k = get(&one.cores, "PostgreSQL") / (one.rows_per_s / 1000.0);
    if hub_k.is_finite() && pg_k.is_finite() && hub_k > 0.0 && pg_k > 0.0 {
        println!(
            "Projection (1-hub run): a hub spends {hub_k:.4} cores per 1k rows/s ({:.0} rows/s per hub core), PostgreSQL {pg_k:.4} ({:.0} rows/s per database core). With hubs on hosts of their own, hub replicas add ingest until the database's cores bind.",
            1000.0 / hub_k,
            1000.0 / pg_k
        );
    }
}
