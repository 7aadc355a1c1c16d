//! Hub query benchmark (BENCHMARKS.md, issue #6): 30 days of 10 series at
//! 1 Hz (25.9M samples) in the hub's schema; 1-hour buckets over the whole
//! range through the REST API, from the hour rollup (what `source=auto`
//! picks) and from raw samples, p50/p95 of repeated requests.
//!    scripts/bench-query.sh [DAYS]
use anyhow::{Result, bail};
use e2e_tests::bench::{pct, release_bin};
use e2e_tests::{HubLaunch, PgServer, free_port, get_json, wait_for};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let days: i64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(30);
    let dir = tempfile::tempdir()?;
    let pg = PgServer::start().await?;
    let (grpc, http) = (free_port(), free_port());
    let hub = HubLaunch {
        binary: release_bin("cloud-hub")?,
        pg_url: &pg.url(),
        grpc_port: grpc,
        http_port: http,
        database: "",
        grpc: "",
        after: "[analytics]\nrollup_interval_s = 2\nmax_scan_rows = 1000000000\n",
        args: &[],
        dir: dir.path(),
        log: &dir.path().join("hub.log"),
    }
    .start()
    .await?;
    let base = format!("http://127.0.0.1:{http}");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await?;
    let t = Instant::now();
    let (ids, from, to) = e2e_tests::bench::load_ten_series(&pool, days).await?;
    let load_s = t.elapsed().as_secs_f64();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM samples")
        .fetch_one(&pool)
        .await?;
    // Wait for the hub's rollup worker to cover everything.
    let t = Instant::now();
    let loaded_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
    wait_for("rollups", Duration::from_secs(3600), || async {
        let wm: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT watermark FROM rollup_state WHERE name = 'samples'")
                .fetch_optional(&pool)
                .await?;
        Ok(wm.filter(|w| *w > loaded_at).map(|_| ()))
    })
    .await?;
    let rollup_s = t.elapsed().as_secs_f64();
    let list = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let range = format!(
        "from={}&to={}",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let run = |source: &'static str, n: usize| {
        let url = format!(
            "{base}/api/v1/aggregates?series={list}&{range}&bucket=1h&functions=avg,min,max,count&source={source}"
        );
        async move {
            let mut lat = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let (status, body) = get_json(&url).await?;
                if status != 200 {
                    bail!("{url}: {status} {body}");
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                let count: f64 = body["series"][0]["values"]["count"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_f64()).sum())
                    .unwrap_or(0.0);
                if count as i64 != days * 86_400 {
                    bail!(
                        "{source}: series 0 counted {count} samples, expected {}",
                        days * 86_400
                    );
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }
    };
    let mut rollup = run("auto", 40).await?;
    let mut raw = run("raw", 5).await?;
    drop(hub);
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "data: {rows} samples, 10 series at 1 Hz over {days} days (loaded in {load_s:.0} s; rolled up by the hub in {rollup_s:.0} s)"
    );
    println!(
        "1-hour buckets, all 10 series, whole range, from the 1 h rollup (source=auto): p50 {:.1} ms, p95 {:.1} ms ({} requests)",
        pct(&mut rollup, 0.5),
        pct(&mut rollup, 0.95),
        rollup.len()
    );
    println!(
        "same from raw samples (source=raw): p50 {:.0} ms, p95 {:.0} ms ({} requests)",
        pct(&mut raw, 0.5),
        pct(&mut raw, 0.95),
        raw.len()
    );
    Ok(())
}
