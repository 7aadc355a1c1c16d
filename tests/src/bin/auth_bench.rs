//! What authentication costs (BENCHMARKS.md, issue #12), measured in one run:
//! - token verification per request, in process: a hub access token (Ed25519
//!   JWT) and an API key (one primary-key lookup);
//! - p50/p95 of the aggregates query (1-hour buckets, 10 series, the whole
//!   range, from the rollup) through the REST API with no guard, with an
//!   access token and with an API key, requests interleaved, both routers in
//!   this process over loopback TCP, one database;
//! - the same query's p95 while 16 clients hammer the login endpoint with
//!   wrong passwords (limiter opened up so every attempt is hashed).
//!
//! Run: `scripts/bench-auth.sh [DAYS]`
use anyhow::{Result, bail};
use cloud_hub::api;
use cloud_hub::config::AuthConfig;
use cloud_hub::identity::{Identity, Role, api_keys};
use cloud_hub::storage::{IngestMethod, Retention, Store, StoreOptions, TierChoice};
use e2e_tests::PgServer;
use e2e_tests::bench::{pct, serve};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let days: i64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(7);
    let pg = PgServer::start().await?;
    let store = Store::open(&StoreOptions {
        url: pg.url(),
        max_connections: 8,
        connect_timeout: Duration::from_secs(30),
        tier: TierChoice::None,
        ingest: IngestMethod::Copy,
        retention: Retention::default(),
    })
    .await?;
    let pool = store.pool().clone();
    let (ids, from, to) = e2e_tests::bench::load_ten_series(&pool, days).await?;
    let (_stop_trigger, stop) = qi_common::shutdown::channel();
    tokio::spawn(
        store
            .clone()
            .run_rollups(Duration::from_secs(1), stop.clone()),
    );
    let loaded_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
    e2e_tests::wait_for("rollups", Duration::from_secs(3600), || async {
        // Compared in SQL: the initial watermark is -infinity, which chrono cannot hold.
        let done: Option<bool> =
            sqlx::query_scalar("SELECT watermark > $1 FROM rollup_state WHERE name = 'samples'")
                .bind(loaded_at)
                .fetch_optional(&pool)
                .await?;
        Ok(done.filter(|d| *d).map(|_| ()))
    })
    .await?;

    let auth = AuthConfig {
        login_attempts_per_minute: u32::MAX,
        ..AuthConfig::default()
    };
    let identity = Arc::new(Identity::open(pool.clone(), &auth).await?);
    let state = e2e_tests::bench::api_state(&store, identity.clone()).await?;
    let guarded = serve(api::router(state.clone())).await?;
    let open = serve(api::router_without_guard_for_benchmarks(state)).await?;
    let jwt = identity.signer.issue("bench", Role::Viewer, None)?;
    let mut tx = pool.begin().await?;
    let (_, key) = api_keys::create(&mut tx, "bench", Role::Viewer, &None, None, "bench").await?;
    tx.commit().await?;
    sqlx::query(
        "INSERT INTO users (username, password_hash, role) VALUES ('victim', $1, 'viewer')",
    )
    .bind(cloud_hub::identity::passwords::hash("the right password 1").await?)
    .execute(&pool)
    .await?;

    // Verification alone, in process.
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        identity.authenticate(&jwt).await?;
    }
    let jwt_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let n_key = 5_000;
    let t = Instant::now();
    for _ in 0..n_key {
        identity.authenticate(&key).await?;
    }
    let key_us = t.elapsed().as_secs_f64() * 1e6 / n_key as f64;

    let list = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let path = format!(
        "/api/v1/aggregates?series={list}&from={}&to={}&bucket=1h&functions=avg,min,max,count",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let client = reqwest::Client::new();
    let once = |base: String, token: Option<String>| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let t = Instant::now();
            let mut rb = client.get(&url);
            if let Some(tk) = token {
                rb = rb.bearer_auth(tk);
            }
            let r = rb.send().await?;
            let status = r.status().as_u16();
            let _ = r.bytes().await?;
            if status != 200 {
                bail!("{url}: {status}");
            }
            Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
        }
    };
    // Warm up, then interleave so drift hits all three alike.
    for _ in 0..20 {
        once(open.clone(), None).await?;
    }
    let rounds = 200;
    let (mut none, mut with_jwt, mut with_key) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        none.push(once(open.clone(), None).await?);
        with_jwt.push(once(guarded.clone(), Some(jwt.clone())).await?);
        with_key.push(once(guarded.clone(), Some(key.clone())).await?);
    }

    // Under a login flood.
    let attempts = Arc::new(AtomicU64::new(0));
    let flood_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flooders = Vec::new();
    for _ in 0..16 {
        let (client, url, attempts, stop) = (
            client.clone(),
            format!("{guarded}/api/v1/auth/login"),
            attempts.clone(),
            flood_stop.clone(),
        );
        flooders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .json(
                        &serde_json::json!({"username": "victim", "password": "a wrong guess 123"}),
                    )
                    .send()
                    .await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
                attempts.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a0 = attempts.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut flooded = Vec::new();
    for _ in 0..rounds {
        flooded.push(once(guarded.clone(), Some(jwt.clone())).await?);
    }
    let flood_rate = (attempts.load(Ordering::Relaxed) - a0) as f64 / t.elapsed().as_secs_f64();
    flood_stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.await;
    }

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM samples")
        .fetch_one(&pool)
        .await?;
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "data: {rows} samples, 10 series at 1 Hz over {days} days; query: 1-hour buckets of all 10 series over the whole range (rollup)"
    );
    println!(
        "verification in process: access token (Ed25519 JWT) {jwt_us:.1} us, API key (SHA-256 + primary-key lookup) {key_us:.1} us per request"
    );
    let (p50n, p95n) = (pct(&mut none, 0.5), pct(&mut none, 0.95));
    let (p50j, p95j) = (pct(&mut with_jwt, 0.5), pct(&mut with_jwt, 0.95));
    let (p50k, p95k) = (pct(&mut with_key, 0.5), pct(&mut with_key, 0.95));
    println!("aggregates, no guard:      p50 {p50n:.2} ms, p95 {p95n:.2} ms ({rounds} requests)");
    println!(
        "aggregates, access token:  p50 {p50j:.2} ms, p95 {p95j:.2} ms ({:+.1}% p95)",
        (p95j / p95n - 1.0) * 100.0
    );
    println!(
        "aggregates, API key:       p50 {p50k:.2} ms, p95 {p95k:.2} ms ({:+.1}% p95)",
        (p95k / p95n - 1.0) * 100.0
    );
    let (p50f, p95f) = (pct(&mut flooded, 0.5), pct(&mut flooded, 0.95));
    println!(
        "aggregates with an access token during a login flood (16 clients, wrong passwords, {flood_rate:.0} attempts/s hashed): p50 {p50f:.2} ms, p95 {p95f:.2} ms ({:+.0}% p95 vs no flood)",
        (p95f / p95j - 1.0) * 100.0
    );
    Ok(())
}
