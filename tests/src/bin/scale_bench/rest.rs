//! REST under load: C connections, each a closed loop (next request when the
//! answer is in), over a mix of real routes with an API key; once without
//! ingest, once while gateway streams ingest at a fixed rate, in one run.
//! The open loop (fixed arrival rates) is `open/`, over the same [`Target`].

use crate::load::{CpuWindow, Load, machine, me};
use crate::{Hub, WARM_UP, cores};
use anyhow::{Context, Result, bail};
use e2e_tests::PgServer;
use e2e_tests::bench::pct;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Gateway streams of the background ingest (paced to the asked rate).
const INGEST_STREAMS: usize = 4;
/// Twins made for the twin routes.
const TWINS: usize = 20;

/// What one phase measured.
struct Phase {
    name: String,
    requests: usize,
    req_per_s: f64,
    /// Latencies (ms) per route name.
    by_route: Vec<(&'static str, Vec<f64>)>,
    errors: u64,
    first_error: Option<String>,
    ingest_rows_per_s: f64,
    cores: Vec<(String, f64)>,
}

/// The route mix: (name, path and query), taken in turn.
fn routes(series: &[i32]) -> Vec<(&'static str, String)> {
    let list = series
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    vec![
        (
            "analytics latest",
            "/api/v1/latest?gateway=gw-rest-seed-0&limit=100".to_string(),
        ),
        (
            "analytics aggregates (10 series, 2 h, 1 min buckets)",
            format!(
                "/api/v1/aggregates?series={list}&bucket=1m&functions=avg,min,max,count&from={}",
                {
                    let from = chrono::Utc::now() - chrono::Duration::hours(2);
                    // Hour-aligned: `source=auto` reads the rollups only from an aligned `from`.
                    from.format("%Y-%m-%dT%H:00:00Z")
                }
            ),
        ),
        ("twins list", "/api/v1/twins?limit=50".to_string()),
        ("twin get", "/api/v1/twins/site-{i}".to_string()),
        ("health", "/health".to_string()),
        ("ready", "/ready".to_string()),
    ]
}

/// The system under load, seeded: PostgreSQL, one hub (rollups every 2 s),
/// readings of two gateways and some twins, the admin API key, the route mix.
/// Shared by the closed loop here and the open loop (`open/`).
pub struct Target {
    pub pg: PgServer,
    pub pg_pid: u32,
    pub hub: Hub,
    pub base: String,
    /// The `authorization` header value of the admin API key.
    pub auth: String,
    pub mix: Arc<Vec<(&'static str, String)>>,
    _dir: tempfile::TempDir,
}

impl Target {
    pub async fn start() -> Result<Target> {
        let dir = tempfile::Builder::new()
            .prefix("qi-scale-rest-")
            .tempdir()?;
        let pg = PgServer::start().await?;
        let pg_pid = pg
            .pid()
            .context("a local PostgreSQL (its CPU is measured)")?;
        // Rollups every 2 s, so `source=auto` aggregates read them (as a
        // dashboard's would) once the seed is rolled up.
        let hub = Hub::start(
            &pg.url(),
            &dir.path().join("hub"),
            "[analytics]\nrollup_interval_s = 2\n",
        )
        .await?;
        let base = hub.http_url();
        // The admin API key HubLaunch made for the harness.
        let auth = e2e_tests::http::headers_for(&base)
            .into_iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v)
            .context("no API key registered for the hub")?;

        // Data for the routes: two gateways' readings, and some site twins.
        eprintln!("[rest] seeding readings and {TWINS} twins");
        let seed = Load::start(&[hub.grpc_url()], 2, "gw-rest-seed", None);
        tokio::time::sleep(Duration::from_secs(3)).await;
        seed.stop().await;
        let client = reqwest::Client::new();
        for i in 0..TWINS {
            let r = client
                .post(format!("{base}/api/v1/twins"))
                .header("authorization", &auth)
                .json(&serde_json::json!({"twin_id": format!("site-{i}"), "kind": "site", "name": format!("Site {i}")}))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("POST /api/v1/twins: {} {}", r.status(), r.text().await?);
            }
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg.url())
            .await?;
        let series: Vec<i32> = sqlx::query_scalar(
            "SELECT series_id FROM series WHERE gateway_id = 'gw-rest-seed-0' ORDER BY series_id LIMIT 10",
        )
        .fetch_all(&pool)
        .await?;
        // Compared in SQL: the watermark starts at -infinity, which chrono cannot hold.
        let seeded: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
        e2e_tests::wait_for("the seed rolled up", Duration::from_secs(600), || async {
            let done: Option<bool> = sqlx::query_scalar(
                "SELECT watermark > $1 FROM rollup_state WHERE name = 'samples'",
            )
            .bind(seeded)
            .fetch_optional(&pool)
            .await?;
            Ok(done.unwrap_or(false).then_some(()))
        })
        .await?;
        pool.close().await;
        Ok(Target {
            mix: Arc::new(routes(&series)),
            pg,
            pg_pid,
            hub,
            base,
            auth,
            _dir: dir,
        })
    }

    /// The processes whose CPU each figure reports.
    pub fn procs(&self) -> Vec<(String, Vec<u32>, bool)> {
        vec![
            ("hub".to_string(), vec![self.hub.proc.pid()], false),
            ("PostgreSQL".to_string(), vec![self.pg_pid], true),
            me(),
        ]
    }

    /// The background ingest of the "with ingest" phase: INGEST_STREAMS
    /// gateway streams paced to `rows_per_s` in total.
    pub fn ingest(&self, rows_per_s: f64) -> Load {
        Load::start(
            &[self.hub.grpc_url()],
            INGEST_STREAMS,
            "gw-rest-bg",
            Some(rows_per_s),
        )
    }

    pub fn stop(self) {
        let _ = self.hub.proc.terminate(Duration::from_secs(30));
        drop(self.pg);
    }
}

/// Request `n` of the mix: (route index, path), the routes in turn.
pub fn request(mix: &[(&'static str, String)], n: u64) -> (usize, String) {
    let k = (n % mix.len() as u64) as usize;
    (k, mix[k].1.replace("{i}", &(n % TWINS as u64).to_string()))
}

pub async fn run(connections: usize, seconds: u64, ingest_rows_per_s: f64) -> Result<()> {
    let t = Target::start().await?;
    let window = Duration::from_secs(seconds);
    eprintln!("[rest] {connections} connections, {seconds} s, no ingest");
    let quiet = phase(
        "without ingest",
        &t.base,
        &t.auth,
        &t.mix,
        connections,
        window,
        None,
        t.procs(),
    )
    .await?;
    eprintln!("[rest] the same with ingest paced at {ingest_rows_per_s:.0} rows/s");
    let ingest = t.ingest(ingest_rows_per_s);
    tokio::time::sleep(WARM_UP).await;
    let busy = phase(
        &format!("with ingest at {ingest_rows_per_s:.0} rows/s offered"),
        &t.base,
        &t.auth,
        &t.mix,
        connections,
        window,
        Some(&ingest),
        t.procs(),
    )
    .await?;
    let broken = ingest.stop().await;
    t.stop();
    print(&[quiet, busy], connections, seconds, broken);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    name: &str,
    base: &str,
    auth: &str,
    mix: &Arc<Vec<(&'static str, String)>>,
    connections: usize,
    window: Duration,
    ingest: Option<&Load>,
    procs: Vec<(String, Vec<u32>, bool)>,
) -> Result<Phase> {
    // One warm-up second (connections, caches), not counted.
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + window;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", auth.parse()?);
        // One connection per task: a client of its own, one idle connection.
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()?;
        let (mix, base) = (Arc::clone(mix), base.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<Vec<f64>> = vec![Vec::new(); mix.len()];
            let (mut errors, mut first_error) = (0u64, None);
            let mut n = c as u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let (k, path) = request(&mix, n);
                n += 1;
                let t = Instant::now();
                let outcome = match client.get(format!("{base}{path}")).send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!("{path}: {}", r.status())),
                    Err(e) => Err(format!("{path}: {e}")),
                };
                if t < warm {
                    continue;
                }
                match outcome {
                    Ok(()) => lat[k].push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    tokio::time::sleep_until(warm.into()).await;
    let cpu = CpuWindow::start(procs);
    let r0 = ingest.map(Load::rows).unwrap_or(0);
    let t0 = Instant::now();
    let mut by_route: Vec<(&'static str, Vec<f64>)> =
        mix.iter().map(|(n, _)| (*n, Vec::new())).collect();
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let (lat, e, f) = t.await?;
        for (k, l) in lat.into_iter().enumerate() {
            by_route[k].1.extend(l);
        }
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let cores = cpu.cores();
    let wall = t0.elapsed().as_secs_f64();
    let ingest_rows_per_s = ingest.map_or(0.0, |l| (l.rows() - r0) as f64 / wall);
    let requests: usize = by_route.iter().map(|(_, l)| l.len()).sum();
    Ok(Phase {
        name: name.to_string(),
        requests,
        req_per_s: requests as f64 / window.as_secs_f64(),
        by_route,
        errors,
        first_error,
        ingest_rows_per_s,
        cores,
    })
}

fn get(cores: &[(String, f64)], name: &str) -> f64 {
    cores
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, c)| *c)
        .sum()
}

fn print(phases: &[Phase], connections: usize, seconds: u64, broken: u64) {
    println!(
        "\n### REST under load: {connections} connections (closed loop), {seconds} s per phase, API key, routes in turn: {}\n",
        phases
            .first()
            .map(|p| p
                .by_route
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    println!(
        "| phase | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | ingest rows/s | hub CPU | PostgreSQL CPU | bench client CPU | machine busy | req/s per hub core |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for p in phases {
        let mut all: Vec<f64> = p
            .by_route
            .iter()
            .flat_map(|(_, l)| l.iter().copied())
            .collect();
        let hub = get(&p.cores, "hub");
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            p.name,
            p.requests,
            p.req_per_s,
            pct(&mut all, 0.5),
            pct(&mut all, 0.95),
            pct(&mut all, 0.99),
            all.iter().copied().fold(0.0, f64::max),
            p.errors,
            p.ingest_rows_per_s,
            hub,
            get(&p.cores, "PostgreSQL"),
            get(&p.cores, "bench client"),
            machine(&p.cores),
            if hub > 0.0 {
                p.req_per_s / hub
            } else {
                f64::NAN
            }
        );
    }
    println!("\nPer route (p50 / p99 ms, requests):\n");
    println!(
        "| route | {} |",
        phases
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(phases.len()));
    if let Some(first) = phases.first() {
        for (k, (route, _)) in first.by_route.iter().enumerate() {
            let cells: Vec<String> = phases
                .iter()
                .map(|p| {
                    let mut l = p.by_route[k].1.clone();
                    format!(
                        "{:.2} / {:.2} ({})",
                        pct(&mut l, 0.5),
                        pct(&mut l, 0.99),
                        l.len()
                    )
                })
                .collect();
            println!("| {route} | {} |", cells.join(" | "));
        }
    }
    for p in phases {
        if let Some(e) = &p.first_error {
            println!("\n{}: first error: {e}", p.name);
        }
    }
    if broken > 0 {
        println!("\nbackground ingest: {broken} broken streams (resent from their last ack)");
    }
    let n = cores() as f64;
    for p in phases {
        let hub = get(&p.cores, "hub");
        let pg = get(&p.cores, "PostgreSQL");
        let total = machine(&p.cores);
        if p.req_per_s <= 0.0 || hub <= 0.0 {
            continue;
        }
        println!(
            "\nProjection ({}): {:.0} req/s per hub core, {:.0} per PostgreSQL core; the seed's 10k req/s at this mix needs about {:.1} hub cores and {:.1} database cores. Machine: {total:.2} of {n} cores busy (every process){}.",
            p.name,
            p.req_per_s / hub,
            if pg > 0.0 { p.req_per_s / pg } else { f64::NAN },
            10_000.0 / (p.req_per_s / hub),
            if pg > 0.0 {
                10_000.0 / (p.req_per_s / pg)
            } else {
                f64::NAN
            },
            if total >= 0.85 * n {
                ": the cores bind (hub, PostgreSQL and this load generator share them)"
            } else {
                ""
            }
        );
    }
}
