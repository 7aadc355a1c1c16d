//! Tier citus: a coordinator and its workers, each a throwaway cluster.

use super::{PgServer, Preload};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// The relocated PostgreSQL with Citus: `QI_CITUS_BINDIR`, else where
/// `scripts/setup-citus.sh` recorded it (`target/citus/bindir`).
fn citus_bindir() -> Result<PathBuf> {
    let dir = match std::env::var_os("QI_CITUS_BINDIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = std::env::var_os("QI_CITUS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join("target/citus"));
            match std::fs::read_to_string(out.join("bindir")) {
                Ok(recorded) => PathBuf::from(recorded.trim()),
                Err(_) => out.join("pg/lib/postgresql/15/bin"),
            }
        }
    };
    if !dir.join("postgres").is_file() {
        bail!(
            "QI_TEST_TIER=citus needs PostgreSQL with Citus in {}; run scripts/setup-citus.sh",
            dir.display()
        );
    }
    Ok(dir)
}

/// Workers of a tier-citus test cluster (`QI_TEST_CITUS_WORKERS`, default 2).
pub fn citus_workers() -> Result<usize> {
    match std::env::var("QI_TEST_CITUS_WORKERS") {
        Ok(n) => n
            .parse()
            .with_context(|| format!("QI_TEST_CITUS_WORKERS must be a number, not {n:?}")),
        Err(_) => Ok(2),
    }
}

impl PgServer {
    /// A Citus coordinator with `workers` workers (0: the coordinator holds
    /// every shard), each a throwaway cluster of its own; the URL is the
    /// coordinator's. `citus` is created in the `postgres` database of each,
    /// so the hub finds it there and lays out tier citus.
    pub async fn start_citus(workers: usize) -> Result<PgServer> {
        use sqlx::Connection;
        let bindir = citus_bindir()?;
        let mut nodes = Vec::with_capacity(workers);
        for _ in 0..workers {
            nodes.push(Self::start_local(bindir.clone(), Preload::Citus, None).await?);
        }
        let mut coordinator = Self::start_local(bindir, Preload::Citus, None).await?;
        for node in nodes.iter().chain(std::iter::once(&coordinator)) {
            let mut conn = sqlx::PgConnection::connect(&node.url).await?;
            sqlx::query("CREATE EXTENSION IF NOT EXISTS citus")
                .execute(&mut conn)
                .await
                .with_context(|| format!("CREATE EXTENSION citus on {}", node.url))?;
        }
        let mut conn = sqlx::PgConnection::connect(&coordinator.url).await?;
        let port = |s: &PgServer| s.local.as_ref().map(|l| i32::from(l.port)).unwrap_or(0);
        sqlx::query("SELECT citus_set_coordinator_host('127.0.0.1', $1)")
            .bind(port(&coordinator))
            .execute(&mut conn)
            .await
            .context("citus_set_coordinator_host")?;
        for node in &nodes {
            sqlx::query("SELECT citus_add_node('127.0.0.1', $1)")
                .bind(port(node))
                .execute(&mut conn)
                .await
                .with_context(|| format!("citus_add_node for {}", node.url))?;
        }
        coordinator.workers = nodes;
        Ok(coordinator)
    }
}
