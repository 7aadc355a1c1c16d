//! Helpers for the benchmark binaries (`tests/src/bin/*_bench.rs`).

use crate::workspace_root;
use anyhow::{Result, bail};
use std::path::PathBuf;

/// A release binary of the workspace (benchmarks never measure debug builds).
pub fn release_bin(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("QI_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release"));
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} missing: run the benchmark through its scripts/bench-*.sh (they build release binaries)",
            p.display()
        );
    }
    Ok(p)
}

/// Resident set size of a process, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") / 1024.0
}

/// Peak resident set size of a process so far (`VmHWM`), MiB.
pub fn vm_hwm_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM:") / 1024.0
}

fn status_kib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// CPU seconds (user + system) of a process so far, from `/proc/<pid>/stat`.
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime are fields 14 and 15: 12 and 13 after the ')'. Clock
    // ticks are 100 per second on Linux (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds (user + system) of process `root` and all its descendants
/// so far: a PostgreSQL server with its backends and background workers.
pub fn tree_cpu_s(root: u32) -> f64 {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                .filter_map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    let ppid = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    // Plus what the root reaped: backends that ended during the window.
    tree.iter().map(|p| cpu_s(*p)).sum::<f64>() + reaped_cpu_s(root)
}

/// CPU seconds of the children a process has waited for (`cutime + cstime`).
fn reaped_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(13) + ticks(14)) / 100.0
}

/// Loads `days` of 1 Hz samples for 10 series of gateway `bench` straight
/// into the hub's schema (the query benchmarks' data set). Returns the series
/// ids and the loaded range (to = the current hour).
pub async fn load_ten_series(
    pool: &sqlx::PgPool,
    days: i64,
) -> Result<(
    Vec<i32>,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
)> {
    sqlx::query("INSERT INTO gateways (gateway_id) VALUES ('bench')")
        .execute(pool)
        .await?;
    let ids: Vec<i32> = sqlx::query_scalar(
        "INSERT INTO series (gateway_id, device_id, metric, unit)
         SELECT 'bench', 'dev-' || i, 'temp', 'Cel' FROM generate_series(1, 10) i RETURNING series_id",
    )
    .fetch_all(pool)
    .await?;
    let to: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT date_trunc('hour', now())")
        .fetch_one(pool)
        .await?;
    let from = to - chrono::Duration::days(days);
    let t = std::time::Instant::now();
    for (k, id) in ids.iter().enumerate() {
        sqlx::query(
            "INSERT INTO samples (ts, series_id, seq, value, quality)
             SELECT $2 + make_interval(secs => s), $1, $3 + s, 20 + 5 * sin(s / 3600.0) + random(), 1
             FROM generate_series(0, $4 - 1) s",
        )
        .bind(id)
        .bind(from)
        .bind(k as i64 * 100_000_000)
        .bind(days * 86_400)
        .execute(pool)
        .await?;
        eprintln!(
            "series {}/{} loaded ({:.0} s)",
            k + 1,
            ids.len(),
            t.elapsed().as_secs_f64()
        );
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok((ids, from, to))
}

/// The hub's API state with default settings over `store` and `identity`,
/// as the API benchmarks serve it.
pub async fn api_state(
    store: &cloud_hub::storage::Store,
    identity: std::sync::Arc<cloud_hub::identity::Identity>,
) -> Result<cloud_hub::api::ApiState> {
    let pool = store.pool().clone();
    let live = cloud_hub::live::Fanout::new(16, 0);
    let translog = std::sync::Arc::new(cloud_hub::translog::LogSigner::load(&pool).await?);
    Ok(cloud_hub::api::ApiState {
        translog,
        stop: qi_common::shutdown::channel().1,
        leader: cloud_hub::leader::Leadership::new(false),
        store: store.clone(),
        max_page_size: 10_000,
        metrics: None,
        analytics: cloud_hub::config::AnalyticsConfig::default(),
        identity,
        public_url: String::new(),
        lab: cloud_hub::config::lab::LabConfig::default(),
        webhooks: cloud_hub::config::webhooks::WebhooksConfig::default(),
        exports: cloud_hub::config::exports::ExportsConfig::default(),
        calibration: cloud_hub::config::calibration::CalibrationConfig::default(),
        certificates: std::sync::Arc::new(
            cloud_hub::certificates::Issuer::from_config(
                &cloud_hub::config::certificates::CertificatesConfig::default(),
                "",
            )
            .map_err(anyhow::Error::msg)?,
        ),
        alarms: cloud_hub::alarms::Alarms::new(
            pool.clone(),
            live.clone(),
            &cloud_hub::config::live::AlarmsConfig::default(),
        )
        .map_err(anyhow::Error::msg)?,
        live: live.clone(),
        streams: cloud_hub::live::sse::Streams::new(
            cloud_hub::config::live::LiveConfig::default(),
            live,
            cloud_hub::live::index::TwinIndex::new(pool),
        ),
    })
}

/// The `p` quantile (0..=1) of `v`, nearest rank (sorts `v`).
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Serves `app` on a loopback port (with peer addresses, as the hub does);
/// returns its base URL.
pub async fn serve(app: axum::Router) -> Result<String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(
            l,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    Ok(format!("http://{addr}"))
}

/// A fleet's catch-up as the hub's tables hold it: `series` new series (of
/// gateway `bench`), `rows` samples each at 1 Hz a day ago, inserted in the
/// order a catch-up delivers them (time-major), `received_at` rising over the
/// `spread_s` seconds ending now (rollup_bench, the rollup_watchdog test).
pub async fn load_catch_up_backlog(
    pool: &sqlx::PgPool,
    rows: i64,
    series: i64,
    spread_s: f64,
) -> Result<()> {
    sqlx::query("INSERT INTO gateways (gateway_id) VALUES ('bench')")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO series (gateway_id, device_id, metric, unit)
         SELECT 'bench', 'dev-' || i, 'temp', 'Cel' FROM generate_series(1, $1) i",
    )
    .bind(series as i32)
    .execute(pool)
    .await?;
    let now = chrono::Utc::now();
    let t0 = (now - chrono::Duration::days(1)).timestamp() as f64;
    let r0 = now.timestamp() as f64 - spread_s;
    // In slices of time so each statement stays moderate; to_timestamp of a
    // number (immutable) rather than now() + interval: Citus takes it too.
    let step = 50;
    for from in (0..rows).step_by(step) {
        sqlx::query(
            "INSERT INTO samples (ts, series_id, seq, value, quality, received_at)
             SELECT to_timestamp($1 + s), x.series_id, s, 20 + 5 * sin(s / 60.0) + random(), 1,
                    to_timestamp($2 + s * $3)
             FROM generate_series($4, $5) s CROSS JOIN series x ORDER BY s",
        )
        .bind(t0)
        .bind(r0)
        .bind(spread_s / rows as f64)
        .bind(from)
        .bind((from + step as i64).min(rows) - 1)
        .execute(pool)
        .await?;
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}
