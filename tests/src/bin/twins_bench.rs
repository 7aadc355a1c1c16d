//! What the twin registry costs at fleet size (BENCHMARKS.md, issue #13):
//! 100,000 twins (10 sites x 10 areas x 10 benches, 10 gateways, 10,000
//! instruments with 5 metrics each and their latest values, ~89,000 samples
//! on the benches), loaded straight into the hub's schema; then p50/p95/p99
//! of the registry's REST operations through the real router (guard and
//! all, a viewer API key, loopback TCP, one database):
//! - list: a page of 100 instruments of one site (`kind`, `within`);
//! - search: text (`q=` part of a serial number), attribute, radius;
//! - list as a site-limited caller (the site filter on every row);
//! - subtree: a bench's and an area's descendants;
//! - one instrument with its live state (5 metrics) and health.
//!
//! Run: `scripts/bench-twins.sh`
use anyhow::{Result, bail};
use cloud_hub::api;
use cloud_hub::config::AuthConfig;
use cloud_hub::identity::{Identity, Role, api_keys};
use cloud_hub::storage::{IngestMethod, Retention, Store, StoreOptions, TierChoice};
use e2e_tests::PgServer;
use e2e_tests::bench::{pct, serve};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fleet, in SQL: ids say where each twin sits.
const LOAD: &[&str] = &[
    "INSERT INTO gateways (gateway_id, agent_version)
     SELECT 'gw-s' || s, 'bench' FROM generate_series(0, 9) s",
    // Discovery made the gateway twins; the sites contain them.
    "INSERT INTO twins (twin_id, kind, name, latitude, longitude)
     SELECT 'site-' || s, 'site', 'Site ' || s, 47.0 + s * 0.5, 8.0 + s * 0.7 FROM generate_series(0, 9) s",
    "INSERT INTO twins (twin_id, kind, name)
     SELECT 'area-' || s || '-' || a, 'area', 'Hall ' || a FROM generate_series(0, 9) s, generate_series(0, 9) a",
    "INSERT INTO twins (twin_id, kind, name, attributes)
     SELECT 'bench-' || s || '-' || a || '-' || b, 'bench', 'Bench ' || b,
            jsonb_build_object('max_temperature_c', 85 + b)
     FROM generate_series(0, 9) s, generate_series(0, 9) a, generate_series(0, 9) b",
    "INSERT INTO twin_types (type_id, kind, name, metrics, source)
     VALUES ('profile:meter', 'instrument', 'Meter',
             '[{\"name\":\"m0\",\"unit\":\"V\"},{\"name\":\"m1\",\"unit\":\"V\"},{\"name\":\"m2\",\"unit\":\"A\"},{\"name\":\"m3\",\"unit\":\"W\"},{\"name\":\"m4\",\"unit\":\"Hz\"}]',
             'profile')",
    "INSERT INTO devices (gateway_id, device_id, first_seen, last_seen)
     SELECT 'gw-s' || s, 'dev-' || a || '-' || b || '-' || i, now(), now()
     FROM generate_series(0, 9) s, generate_series(0, 9) a, generate_series(0, 9) b, generate_series(0, 9) i",
    "UPDATE twins SET type_id = 'profile:meter', discovered = false WHERE kind = 'instrument'",
    "INSERT INTO twins (twin_id, kind, name, serial_number, attributes)
     SELECT 'pv-' || n, 'sample', 'Module ' || n, 'SN' || lpad(n::text, 8, '0'),
            jsonb_build_object('maker', CASE WHEN n % 10 = 0 THEN 'acme' ELSE 'other' END, 'area_m2', 1.6)
     FROM generate_series(0, 88879) n",
    "INSERT INTO twin_relations (kind, source_id, target_id)
     SELECT 'contains', 'site-' || s, 'gateway:gw-s' || s FROM generate_series(0, 9) s",
    "INSERT INTO twin_relations (kind, source_id, target_id)
     SELECT 'contains', 'site-' || s, 'area-' || s || '-' || a FROM generate_series(0, 9) s, generate_series(0, 9) a",
    "INSERT INTO twin_relations (kind, source_id, target_id)
     SELECT 'contains', 'area-' || s || '-' || a, 'bench-' || s || '-' || a || '-' || b
     FROM generate_series(0, 9) s, generate_series(0, 9) a, generate_series(0, 9) b",
    "INSERT INTO twin_relations (kind, source_id, target_id)
     SELECT 'contains', 'bench-' || s || '-' || a || '-' || b, 'instrument:gw-s' || s || ':dev-' || a || '-' || b || '-' || i
     FROM generate_series(0, 9) s, generate_series(0, 9) a, generate_series(0, 9) b, generate_series(0, 9) i",
    "INSERT INTO twin_relations (kind, source_id, target_id)
     SELECT 'contains', 'bench-' || (n / 1000) % 10 || '-' || (n / 100) % 10 || '-' || (n / 10) % 10, 'pv-' || n
     FROM generate_series(0, 88879) n",
    "INSERT INTO series (gateway_id, device_id, metric, unit)
     SELECT d.gateway_id, d.device_id, 'm' || m, 'V' FROM devices d, generate_series(0, 4) m",
    "INSERT INTO series_latest (series_id, ts, value, quality, seq)
     SELECT series_id, now(), random() * 230, 1, 1 FROM series",
    "ANALYZE",
];

#[tokio::main]
async fn main() -> Result<()> {
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
    let t = Instant::now();
    for sql in LOAD {
        sqlx::query(*sql).execute(&pool).await?;
    }
    let load_s = t.elapsed().as_secs_f64();
    let (twins, relations, series): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM twins), (SELECT count(*) FROM twin_relations), (SELECT count(*) FROM series_latest)",
    )
    .fetch_one(&pool)
    .await?;
    let trgm: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'twins_text')",
    )
    .fetch_one(&pool)
    .await?;

    let identity = Arc::new(Identity::open(pool.clone(), &AuthConfig::default()).await?);
    let state = e2e_tests::bench::api_state(&store, identity.clone()).await?;
    let base = serve(api::router(state)).await?;
    let mut tx = pool.begin().await?;
    let (_, key) = api_keys::create(&mut tx, "bench", Role::Viewer, &None, None, "bench").await?;
    let sites = Some(vec!["site-3".to_string()]);
    let (_, site_key) =
        api_keys::create(&mut tx, "bench-site", Role::Viewer, &sites, None, "bench").await?;
    tx.commit().await?;

    let client = reqwest::Client::new();
    let once = |path: String, token: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let t = Instant::now();
            let r = client.get(&url).bearer_auth(token).send().await?;
            let status = r.status().as_u16();
            let body = r.bytes().await?;
            if status != 200 {
                bail!("{url}: {status} {}", String::from_utf8_lossy(&body));
            }
            Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let rounds = 300;
    type PathOf = Box<dyn Fn(usize) -> String>;
    let cases: Vec<(&str, PathOf, bool)> = vec![
        (
            "list: 100 instruments of a site",
            Box::new(|i| {
                format!(
                    "/api/v1/twins?kind=instrument&within=site-{}&limit=100",
                    i % 10
                )
            }),
            false,
        ),
        (
            "list: 100 instruments, site-limited caller",
            Box::new(|_| "/api/v1/twins?kind=instrument&limit=100".into()),
            true,
        ),
        (
            "search: text in serial numbers",
            Box::new(|i| format!("/api/v1/twins?q=SN000{:04}&limit=50", (i * 37) % 8888)),
            false,
        ),
        (
            "search: attribute",
            Box::new(|i| {
                format!(
                    "/api/v1/twins?attr=max_temperature_c:{}&limit=100",
                    85 + i % 10
                )
            }),
            false,
        ),
        (
            "search: within 60 km of a point",
            Box::new(|i| {
                format!(
                    "/api/v1/twins?near={},{}&radius_m=60000",
                    47.0 + (i % 10) as f64 * 0.5,
                    8.0 + (i % 10) as f64 * 0.7
                )
            }),
            false,
        ),
        (
            "subtree: a bench (10 instruments, ~89 samples)",
            Box::new(|i| {
                format!(
                    "/api/v1/twins/bench-{}-{}-{}/descendants",
                    i % 10,
                    (i / 10) % 10,
                    (i / 100) % 10
                )
            }),
            false,
        ),
        (
            "subtree: an area (10 benches, ~1,000 twins)",
            Box::new(|i| {
                format!(
                    "/api/v1/twins/area-{}-{}/descendants",
                    i % 10,
                    (i / 10) % 10
                )
            }),
            false,
        ),
        (
            "twin with live state (5 metrics) and health",
            Box::new(|i| {
                format!(
                    "/api/v1/twins/instrument:gw-s{}:dev-{}-{}-{}",
                    i % 10,
                    (i / 10) % 10,
                    (i / 100) % 10,
                    (i / 7) % 10
                )
            }),
            false,
        ),
    ];
    println!(
        "twin registry: {twins} twins, {relations} relations, {series} series with a latest value; loaded in {load_s:.1} s; trigram index: {trgm}"
    );
    println!(
        "{:<50} {:>8} {:>8} {:>8}",
        "operation", "p50 ms", "p95 ms", "p99 ms"
    );
    for (name, path, scoped) in &cases {
        let token = if *scoped {
            site_key.clone()
        } else {
            key.clone()
        };
        for i in 0..20 {
            once(path(i), token.clone()).await?;
        }
        let mut v = Vec::with_capacity(rounds);
        for i in 0..rounds {
            v.push(once(path(i), token.clone()).await?);
        }
        println!(
            "{name:<50} {:>8.2} {:>8.2} {:>8.2}",
            pct(&mut v, 0.5),
            pct(&mut v, 0.95),
            pct(&mut v, 0.99)
        );
    }
    Ok(())
}
