//! Backup and restore figures for BENCHMARKS.md (issue #17): DAYS of the
//! query benchmarks' data set (10 series at 1 Hz: 864,000 samples a day) in
//! the hub's schema, dumped and restored with the commands of docs/backup.md
//! (read out of it and run as written), then a hub started on the restored
//! database until `/ready`.
//!    scripts/bench-backup.sh [DAYS]
use anyhow::{Context, Result, ensure};
use e2e_tests::doc_blocks::run_block;
use e2e_tests::{HubLaunch, PgServer, bin, free_port, pg};
use std::path::Path;
use std::time::Instant;

async fn samples(url: &str) -> Result<i64> {
    let pool = sqlx::PgPool::connect(url).await?;
    let n = sqlx::query_scalar("SELECT count(*) FROM samples")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(n)
}

#[tokio::main]
async fn main() -> Result<()> {
    let days: i64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(7);
    let dir = tempfile::Builder::new()
        .prefix("qi-backup-bench-")
        .tempdir()?;
    let hub_bin = bin("cloud-hub")?;
    let tools = [
        pg::pg_bindir()?,
        hub_bin.parent().context("bin dir")?.into(),
    ];
    let tools: Vec<&Path> = tools.iter().map(|p| p.as_path()).collect();
    let launch = |url: &str, sub: &str| {
        let sub = dir.path().join(sub);
        std::fs::create_dir_all(&sub)?;
        anyhow::Ok((url.to_string(), sub))
    };

    let pg = PgServer::start().await?;
    let (url, hub_dir) = launch(&pg.url(), "old")?;
    let hub = HubLaunch {
        binary: hub_bin.clone(),
        pg_url: &url,
        grpc_port: free_port(),
        http_port: free_port(),
        database: "",
        grpc: "",
        after: "",
        args: &[],
        dir: &hub_dir,
        log: &hub_dir.join("hub.log"),
    }
    .start()
    .await?;
    let pool = sqlx::PgPool::connect(&url).await?;
    e2e_tests::bench::load_ten_series(&pool, days).await?;
    let db_bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let rows = samples(&url).await?;

    let backup = dir.path().join("hub.dump");
    let t = Instant::now();
    run_block(
        "docs/backup.md",
        "hub-dump",
        &tools,
        &[
            ("HUB_DATABASE_URL", url.clone()),
            ("BACKUP", backup.display().to_string()),
        ],
    )?;
    let dump_s = t.elapsed().as_secs_f64();
    let dump_bytes = std::fs::metadata(&backup)?.len();
    hub.terminate(std::time::Duration::from_secs(20))?;
    drop(pg);

    let mut new_pg = PgServer::start().await?;
    let server_url = new_pg.url();
    new_pg.switch_database("qi_hub")?;
    let t = Instant::now();
    run_block(
        "docs/backup.md",
        "hub-restore-none",
        &tools,
        &[
            ("SERVER_URL", server_url),
            ("RESTORED_URL", new_pg.url()),
            ("BACKUP", backup.display().to_string()),
        ],
    )?;
    let restore_s = t.elapsed().as_secs_f64();
    let restored = samples(&new_pg.url()).await?;
    ensure!(restored == rows, "restored {restored} of {rows} samples");

    let (url, hub_dir) = launch(&new_pg.url(), "new")?;
    let t = Instant::now();
    let hub = HubLaunch {
        binary: hub_bin,
        pg_url: &url,
        grpc_port: free_port(),
        http_port: free_port(),
        database: "",
        grpc: "",
        after: "",
        args: &[],
        dir: &hub_dir,
        log: &hub_dir.join("hub.log"),
    }
    .start()
    .await?;
    let start_s = t.elapsed().as_secs_f64();
    hub.terminate(std::time::Duration::from_secs(20))?;

    let mib = |b: f64| b / 1_048_576.0;
    println!(
        "{days} days, {rows} samples, database {:.0} MiB: pg_dump {dump_s:.1} s ({:.0} k samples/s), archive {:.0} MiB; \
         restore (createdb + pg_restore --single-transaction + vacuumdb --analyze-only) {restore_s:.1} s ({:.0} k samples/s); \
         hub start on the restored database to /ready {start_s:.1} s",
        mib(db_bytes as f64),
        rows as f64 / dump_s / 1000.0,
        mib(dump_bytes as f64),
        rows as f64 / restore_s / 1000.0,
    );
    Ok(())
}
