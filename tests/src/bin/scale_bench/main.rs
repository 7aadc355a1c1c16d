//! Scale figures of issue #18 (BENCHMARKS.md "Scale (issue #18)"), each in
//! one run, each printing a markdown table ready to paste:
//!
//! - `hubs [STREAMS] [SECONDS]`: hub ingest with 1, 2 and 3 hubs over one
//!   PostgreSQL, the same gateway streams spread round-robin over them;
//!   rows/s, each hub's and PostgreSQL's CPU, and where the machine binds.
//! - `rest [CONNECTIONS] [SECONDS] [INGEST_ROWS_PER_S]`: closed-loop REST load
//!   (a mix of real routes with an API key) without and with a paced ingest
//!   in the background; req/s, p50/p95/p99, errors, and the projection to the
//!   seed's 10k req/s.
//! - `rest --rates R1,R2,.. [--seconds S] [--ingest ROWS_PER_S]
//!   [--max-connections C] [--timeout-s T]`: the same routes at fixed
//!   arrival rates (open loop, `open/`), latency from each request's
//!   scheduled send; the rate where p99 crosses 200 ms.
//! - `citus [STREAMS] [SECONDS]`: hub ingest on tier citus with 1 then 2
//!   workers, the same load (needs scripts/setup-citus.sh).
//!
//!   scripts/bench-scale.sh hubs|rest|citus [ARGS...]
//!
//! `SCALE_BATCH` sets the readings per batch (default 500).
//!
//! Binaries come from QI_BIN_DIR (the script sets target/release or
//! target/debug); the figures must say which.

mod citus;
mod hubs;
mod load;
mod open;
mod rest;

use anyhow::{Context, Result, bail};
use e2e_tests::bench::release_bin;
use e2e_tests::{HubLaunch, Proc, free_port};
use std::path::Path;
use std::time::Duration;

/// Load excluded from the figures at the start of each configuration.
const WARM_UP: Duration = Duration::from_secs(3);

/// A hub over `pg_url`, its files in `dir`.
pub struct Hub {
    pub proc: Proc,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Hub {
    pub async fn start(pg_url: &str, dir: &Path, after: &str) -> Result<Hub> {
        std::fs::create_dir_all(dir)?;
        let (grpc_port, http_port) = (free_port(), free_port());
        let proc = HubLaunch {
            binary: release_bin("cloud-hub")?,
            pg_url,
            grpc_port,
            http_port,
            database: "",
            grpc: "",
            after,
            args: &[],
            dir,
            log: &dir.join("hub.log"),
        }
        .start()
        .await?;
        Ok(Hub {
            proc,
            grpc_port,
            http_port,
        })
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// Positional argument `i` (after the subcommand), or `default`.
fn arg<T: std::str::FromStr>(i: usize, default: T) -> Result<T> {
    match std::env::args().nth(i + 1) {
        Some(a) => a
            .parse()
            .ok()
            .with_context(|| format!("argument {i}: {a:?} is not a number")),
        None => Ok(default),
    }
}

/// Cores of this machine.
fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Which binaries are measured (debug figures must say so).
fn profile() -> String {
    release_bin("cloud-hub")
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|d| d.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    let usage = "usage: scale_bench hubs [STREAMS] [SECONDS] | rest [CONNECTIONS] [SECONDS] [INGEST_ROWS_PER_S] | rest --rates R1,R2,.. [--seconds S] [--ingest ROWS_PER_S] [--max-connections C] [--timeout-s T] | citus [STREAMS] [SECONDS]";
    let which = std::env::args().nth(1).context(usage)?;
    println!(
        "machine: {} cores; binaries: {}; load per gateway stream: batches of {} readings, {} ahead of their acks",
        cores(),
        profile(),
        load::batch_size(),
        load::IN_FLIGHT
    );
    match which.as_str() {
        "hubs" => hubs::run(arg(1, 6)?, arg(2, 20)?).await,
        "rest" if std::env::args().nth(2).is_some_and(|a| a.starts_with("--")) => {
            open::run(open::Args::parse(std::env::args().skip(2))?).await
        }
        "rest" => rest::run(arg(1, 32)?, arg(2, 20)?, arg(3, 20_000.0)?).await,
        "citus" => citus::run(arg(1, 4)?, arg(2, 20)?).await,
        other => bail!("{usage}, not {other:?}"),
    }
}
