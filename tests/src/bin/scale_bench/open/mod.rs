//! REST at fixed arrival rates (open loop), over the same seeded hub and
//! route mix as the closed loop (`rest.rs`): each rate in turn without
//! ingest, then each again while the same paced ingest runs, in one run.
//! The figure for capacity planning is the rate where p99 crosses the
//! seed's goal (200 ms).
//!
//!   scale_bench rest --rates 500,1000,2000,3000 [--seconds 20]
//!       [--ingest ROWS_PER_S] [--max-connections 256] [--timeout-s 10]

mod engine;
mod report;

use crate::WARM_UP;
use crate::load::{CpuWindow, Load};
use crate::rest::{Target, request};
use anyhow::{Context, Result, bail};
use engine::{Outcome, Paths, Plan};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The seed's latency goal: p99 under 200 ms (at 10k req/s).
pub const GOAL_P99_MS: f64 = 200.0;
/// Sent at each rate before the counted window (connections, caches).
const STEP_WARM: Duration = Duration::from_secs(1);
/// Between rate steps: the previous step's backlog drains.
const STEP_PAUSE: Duration = Duration::from_secs(2);

/// The open loop's command line.
#[derive(Debug, PartialEq)]
pub struct Args {
    pub rates: Vec<f64>,
    pub seconds: u64,
    pub ingest_rows_per_s: f64,
    pub max_connections: usize,
    pub timeout_s: u64,
}

impl Args {
    /// `--rates A,B,.. [--seconds S] [--ingest R] [--max-connections C]
    /// [--timeout-s T]`, in any order.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args> {
        let mut a = Args {
            rates: Vec::new(),
            seconds: 20,
            ingest_rows_per_s: 20_000.0,
            max_connections: 256,
            timeout_s: 10,
        };
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            let bad = || format!("{flag} {value:?}: not a number");
            match flag.as_str() {
                "--rates" => {
                    a.rates = value
                        .split(',')
                        .map(|r| r.trim().parse::<f64>())
                        .collect::<Result<_, _>>()
                        .with_context(bad)?
                }
                "--seconds" => a.seconds = value.parse().with_context(bad)?,
                "--ingest" => a.ingest_rows_per_s = value.parse().with_context(bad)?,
                "--max-connections" => a.max_connections = value.parse().with_context(bad)?,
                "--timeout-s" => a.timeout_s = value.parse().with_context(bad)?,
                other => bail!("unknown flag {other:?}"),
            }
        }
        if a.rates.is_empty() || a.rates.iter().any(|r| !(*r > 0.0 && r.is_finite())) {
            bail!("--rates: one or more request rates per second > 0, comma-separated");
        }
        if a.seconds == 0 || a.max_connections == 0 || a.timeout_s == 0 {
            bail!("--seconds, --max-connections and --timeout-s must be >= 1");
        }
        Ok(a)
    }

    fn plan(&self, rate: f64) -> Plan {
        Plan {
            rate,
            warm: STEP_WARM,
            window: Duration::from_secs(self.seconds),
            max_connections: self.max_connections,
            timeout: Duration::from_secs(self.timeout_s),
        }
    }
}

/// One rate step of one phase.
pub struct Step {
    pub phase: String,
    pub rate: f64,
    pub outcome: Outcome,
    pub cores: Vec<(String, f64)>,
    pub ingest_rows_per_s: f64,
}

pub async fn run(args: Args) -> Result<()> {
    let t = Target::start().await?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", t.auth.parse()?);
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(args.max_connections)
        // A backstop only: each request's deadline runs from its due time.
        .timeout(Duration::from_secs(args.timeout_s + 5))
        .build()?;
    let mix = Arc::clone(&t.mix);
    let names: Vec<&'static str> = mix.iter().map(|(n, _)| *n).collect();
    let paths: Paths = Arc::new(move |i| request(&mix, i));

    let mut steps = Vec::new();
    for rate in &args.rates {
        eprintln!("[rest open] {rate} req/s, {} s, no ingest", args.seconds);
        steps.push(step(&t, &client, &paths, &args, *rate, "without ingest", None).await);
        tokio::time::sleep(STEP_PAUSE).await;
    }
    let ingest = t.ingest(args.ingest_rows_per_s);
    tokio::time::sleep(WARM_UP).await;
    let busy = format!(
        "with ingest at {:.0} rows/s offered",
        args.ingest_rows_per_s
    );
    for rate in &args.rates {
        eprintln!(
            "[rest open] {rate} req/s, {} s, ingest at {:.0} rows/s",
            args.seconds, args.ingest_rows_per_s
        );
        steps.push(step(&t, &client, &paths, &args, *rate, &busy, Some(&ingest)).await);
        tokio::time::sleep(STEP_PAUSE).await;
    }
    let broken = ingest.stop().await;
    t.stop();
    report::print(&steps, &names, &args, broken);
    Ok(())
}

async fn step(
    t: &Target,
    client: &reqwest::Client,
    paths: &Paths,
    args: &Args,
    rate: f64,
    phase: &str,
    ingest: Option<&Load>,
) -> Step {
    let plan = args.plan(rate);
    let (outcome, (cpu, t0, r0)) = engine::run(client, &t.base, t.mix.len(), paths, &plan, || {
        (
            CpuWindow::start(t.procs()),
            Instant::now(),
            ingest.map_or(0, Load::rows),
        )
    })
    .await;
    let wall = t0.elapsed().as_secs_f64().max(1e-3);
    Step {
        phase: phase.to_string(),
        rate,
        outcome,
        cores: cpu.cores(),
        ingest_rows_per_s: ingest.map_or(0.0, |l| (l.rows() - r0) as f64 / wall),
    }
}

#[cfg(test)]
mod tests;
