//! Small helpers every test and benchmark uses: where things are, free
//! ports, polling until something holds, one JSON GET.

use crate::http;
use anyhow::{Context, Result, bail};
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The workspace root (where `Cargo.toml` and `firmware-profiles/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn profiles_dir() -> PathBuf {
    workspace_root().join("firmware-profiles")
}

/// Path of one of the workspace's binaries, with a clear error if it is not built.
pub fn bin(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("QI_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("debug"),
    };
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "binary {} not found; build it first with `cargo build --workspace --bins` (scripts/test.sh does this)",
            p.display()
        );
    }
    Ok(p)
}

/// A TCP port that was free a moment ago on 127.0.0.1.
///
/// Ports come from below the kernel's ephemeral range (32768-60999 on
/// Linux): a port the kernel handed out with `bind(0)` is released at once
/// and may be given to the next outgoing connection's local end before the
/// child process binds it, which made tests fail with "Address already in
/// use" under load. Below that range only explicit binds compete, and a
/// per-process counter (seeded by the pid) keeps parallel tests and test
/// binaries apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Spread processes apart: consecutive pids start 997 ports away.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(997) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + n % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free TCP port on 127.0.0.1 between {LOW} and {}",
        LOW + SPAN
    )
}

/// Polls `check` until it returns `Ok(Some(v))` or `timeout` passes; the
/// error then carries the last reason `check` gave.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Readings stored at the hub (all gateways).
pub async fn hub_count(pool: &sqlx::PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(pool)
        .await?)
}

/// GET a URL and parse JSON, returning the status too.
pub async fn get_json(url: &str) -> Result<(u16, serde_json::Value)> {
    let resp = http::get(url).await.with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    let json = serde_json::from_str(&body)
        .with_context(|| format!("GET {url}: body is not JSON: {body}"))?;
    Ok((status, json))
}

/// `sim.base` of every numeric point of a firmware profile, as its register
/// type carries it (an f32 register rounds it): what a freshly started
/// simulator serves.
pub fn profile_sim_bases(profile: &str) -> std::collections::BTreeMap<String, f64> {
    let text = std::fs::read_to_string(profiles_dir().join(format!("{profile}.toml"))).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("type").and_then(|t| t.as_str()) != Some("string"))
        .map(|p| {
            let base = p
                .get("sim")
                .and_then(|s| s.get("base"))
                .and_then(|b| b.as_float())
                .unwrap_or(0.0);
            let v = if p["type"].as_str() == Some("f32") {
                f64::from(base as f32)
            } else {
                base
            };
            (p["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}
