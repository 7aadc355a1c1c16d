//! Issue #16, the operators' local web page, with the real agent binary,
//! an instrument simulator (`meter-1`, an SDM630) and the simulated PV rig
//! (`pv-rig-sim` at 1000x, examples/pv-rig/devices-and-bench.toml), no hub
//! (so the page must say the hub is unreachable). The HTTP side is checked
//! here (security headers, gzip, sessions on every data route, the live
//! stream's bounds, events and end); the page itself in a real browser by
//! tests/browser/web_page.py (Playwright driving Debian's chromium, axe-core
//! on each page), whose screenshots land in target/web-page/.
// qi-test: tier-independent (the agent's web page; no hub): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail, ensure};
use e2e_tests::pv_rig::{self, RigSim};
use e2e_tests::{Stack, agent_auth, peers, sse, wait_for, workspace_root};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const VIEWER: (&str, &str) = ("vera", "viewer password");
/// Live streams: at most this many in all, and per session.
const MAX_STREAMS: usize = 5;
const MAX_PER_SESSION: usize = 3;

fn artifacts() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("web-page")
}

fn protocols(stack: &Stack) -> Result<PathBuf> {
    let p = stack.dir.path().join("protocols");
    std::fs::create_dir_all(&p)?;
    for t in ["stc-power", "tc200"] {
        std::fs::copy(
            workspace_root().join(format!("protocols/{t}.toml")),
            p.join(format!("{t}.toml")),
        )?;
    }
    Ok(p)
}

/// The agent with the meter and the rig, both users, every device online.
async fn start(stack: &mut Stack, rig: &RigSim) -> Result<PathBuf> {
    let rig_devices = pv_rig::example_bench(rig, &protocols(stack)?)?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"meter-1\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{}\" }}\npoll_interval_ms = 500\nretry_min_ms = 200\nretry_max_ms = 1000\n\n{rig_devices}",
        stack.sim_port
    ))?;
    // The stream bounds under test: keys of [http], which the harness wrote.
    let text = std::fs::read_to_string(&cfg)?.replace(
        "[http]\n",
        &format!(
            "[http]\nmax_live_streams = {MAX_STREAMS}\nmax_live_streams_per_session = {MAX_PER_SESSION}\n"
        ),
    );
    std::fs::write(&cfg, text)?;
    agent_auth::add_user(&cfg, VIEWER.0, "viewer", VIEWER.1)?;
    stack.start_agent(&cfg).await?;
    wait_for("every device online", Duration::from_secs(60), || async {
        let h = stack.agent_health().await?;
        let all = h["devices"]
            .as_array()
            .map(|d| d.len() == 7 && d.iter().all(|d| d["state"] == "online"));
        Ok((all == Some(true)).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    Ok(cfg)
}

async fn get(url: &str, headers: &[(String, String)]) -> Result<reqwest::Response> {
    let mut rb = reqwest::Client::builder().no_gzip().build()?.get(url);
    for (k, v) in headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    rb.send().await.with_context(|| format!("GET {url}"))
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A metric's value summed over its series matching `filter`.
async fn metric(
    stack: &Stack,
    session: &[(String, String)],
    name: &str,
    filter: &str,
) -> Result<f64> {
    let text = get(&format!("{}/metrics", stack.agent_url()), session)
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The page's files and its security headers; data only with a session.
async fn http_side(stack: &Stack, viewer: &[(String, String)]) -> Result<()> {
    let base = stack.agent_url();
    let page = get(&format!("{base}/"), &[]).await?;
    ensure!(page.status() == 200, "GET /: {}", page.status());
    let csp = header(&page, "content-security-policy");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        ensure!(csp.contains(part), "CSP {csp:?} lacks {part}");
    }
    ensure!(!csp.contains("unsafe-inline"), "{csp}");
    ensure!(header(&page, "x-content-type-options") == "nosniff");
    ensure!(header(&page, "referrer-policy") == "no-referrer");
    ensure!(header(&page, "content-type").starts_with("text/html"));
    let html = page.text().await?;
    ensure!(html.contains("/ui/app.js"), "{html}");
    // Compressed when the browser accepts it, plain otherwise.
    let gz = get(
        &format!("{base}/ui/app.js"),
        &[("accept-encoding".into(), "gzip".into())],
    )
    .await?;
    ensure!(
        header(&gz, "content-encoding") == "gzip",
        "app.js not gzipped"
    );
    let etag = header(&gz, "etag");
    let plain = get(&format!("{base}/ui/app.js"), &[]).await?;
    ensure!(header(&plain, "content-encoding").is_empty());
    ensure!(header(&plain, "content-type").starts_with("text/javascript"));
    let again = get(
        &format!("{base}/ui/app.js"),
        &[("if-none-match".into(), etag)],
    )
    .await?;
    ensure!(again.status() == 304, "revalidation: {}", again.status());
    let missing = get(&format!("{base}/ui/secret.txt"), &[]).await?;
    ensure!(missing.status() == 404);
    // Errors and data carry the headers too, and data needs a session.
    for path in [
        "/api/v1/live",
        "/api/v1/history?device=chamber",
        "/api/v1/devices/chamber/points",
    ] {
        let r = get(&format!("{base}{path}"), &[]).await?;
        ensure!(
            r.status() == 401,
            "{path} without a session: {}",
            r.status()
        );
        ensure!(header(&r, "x-content-type-options") == "nosniff");
    }
    // Sampled every 10 s: the first sample after the devices came online.
    let url = format!("{base}/api/v1/history?device=chamber&seconds=600");
    let h: Value = wait_for("the chamber's history", Duration::from_secs(40), || async {
        let h: Value = get(&url, viewer).await?.json().await?;
        let some = h["points"]["temperature"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        Ok(some.then_some(h))
    })
    .await?;
    ensure!(h["held"] == "agent memory" && h["step_s"] == 10, "{h}");
    let r = get(&format!("{base}/api/v1/history?device=nope"), viewer).await?;
    ensure!(r.status() == 404);
    let r = get(
        &format!("{base}/api/v1/history?device=chamber&seconds=-1"),
        viewer,
    )
    .await?;
    ensure!(r.status() == 400);
    let p: Value = get(&format!("{base}/api/v1/devices/chamber/points"), viewer)
        .await?
        .json()
        .await?;
    let writable: Vec<&str> = p["points"]
        .as_array()
        .context("points")?
        .iter()
        .filter(|x| x["writable"] == true)
        .filter_map(|x| x["name"].as_str())
        .collect();
    ensure!(
        writable == ["temperature_setpoint", "humidity_setpoint"],
        "{p}"
    );
    Ok(())
}

/// Runs tests/browser/web_page.py; its JSON report.
async fn browser(stack: &Stack, rig: &RigSim) -> Result<Value> {
    let cfg = json!({
        "base": stack.agent_url(),
        "artifacts": artifacts(),
        "rig_control": rig.control.to_string(),
        "operator": [agent_auth::USER, agent_auth::PASSWORD],
        "viewer": [VIEWER.0, VIEWER.1],
        "meter_sim_pid": stack.sim.as_ref().context("meter simulator")?.pid(),
        "agent_pid": stack.agent.as_ref().context("agent")?.pid(),
        "axe": peers::peers_dir().join("node/axe/node_modules/axe-core/axe.min.js"),
        "chromium": "/usr/bin/chromium",
    });
    let python = peers::python()?;
    let script = workspace_root().join("tests/browser/web_page.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(cfg.to_string())
            .output()
    })
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stderr}");
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    if !out.status.success() || report["ok"] != true {
        bail!(
            "browser test failed ({}), screenshots in {}:\n{stderr}\n{stdout}{}",
            out.status,
            artifacts().display(),
            stack.logs()
        );
    }
    Ok(report)
}

/// The live stream: a snapshot a second with what the page shows, bounded
/// per session and in all (http.max_live_streams*), ended by a logout.
async fn live_stream(stack: &Stack) -> Result<()> {
    let base = stack.agent_url();
    let url = format!("{base}/api/v1/live");
    let login = || agent_auth::login(&base, VIEWER.0, VIEWER.1);
    let (a, b) = (login().await?, login().await?);
    let watcher = login().await?.headers();
    // The browser's streams are gone once the server has tried to write to them.
    wait_for(
        "the browser's streams closed",
        Duration::from_secs(30),
        || async {
            Ok((metric(stack, &watcher, "edge_web_streams", "").await? == 0.0).then_some(()))
        },
    )
    .await?;
    let mut open = Vec::new();
    for _ in 0..MAX_PER_SESSION {
        let (status, s) = sse::open_with(&url, &a.headers(), None).await?;
        ensure!(status == 200, "stream of session a: {status}");
        open.push(s.context("stream")?);
    }
    let (status, _) = sse::open_with(&url, &a.headers(), None).await?;
    ensure!(
        status == 429,
        "a stream beyond the session's bound: {status}"
    );
    for _ in MAX_PER_SESSION..MAX_STREAMS {
        let (status, s) = sse::open_with(&url, &b.headers(), None).await?;
        ensure!(status == 200, "stream of session b: {status}");
        open.push(s.context("stream")?);
    }
    let (status, _) = sse::open_with(&url, &b.headers(), None).await?;
    ensure!(status == 429, "a stream beyond the total bound: {status}");
    ensure!(metric(stack, &watcher, "edge_web_streams", "").await? == MAX_STREAMS as f64);
    for reason in ["per_session", "total"] {
        let n = metric(stack, &watcher, "edge_web_streams_refused_total", reason).await?;
        ensure!(n >= 1.0, "refusals {reason}: {n}");
    }
    // Snapshots, each with an id, carrying what the page shows.
    let s = &mut open[0];
    let first = s
        .until(Duration::from_secs(20), |e| e.event == "snapshot")
        .await?;
    let second = s
        .until(Duration::from_secs(20), |e| e.event == "snapshot")
        .await?;
    ensure!(
        second.id > first.id,
        "ids {:?} then {:?}",
        first.id,
        second.id
    );
    let d = &second.data;
    for key in [
        "devices",
        "buffer",
        "uplink",
        "alarms",
        "runs",
        "backlog_age_s",
    ] {
        ensure!(d.get(key).is_some(), "snapshot lacks {key}: {d}");
    }
    ensure!(d["uplink"]["state"] != "connected", "{}", d["uplink"]);
    ensure!(d["devices"].as_array().map(Vec::len) == Some(7));
    ensure!(
        d["alarms"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["point"] == "breakdown")),
        "the insulation tester's breakdown flag is an alarm point: {}",
        d["alarms"]
    );
    // A reconnect naming its last event gets a full snapshot at once. The
    // dropped stream's slot is free once the agent's next write to it fails
    // (a browser's EventSource retries a 429 the same way: later).
    drop(open.pop());
    wait_for(
        "the dropped stream's slot freed",
        Duration::from_secs(30),
        || async {
            let n = metric(stack, &watcher, "edge_web_streams", "").await?;
            Ok((n < MAX_STREAMS as f64).then_some(()))
        },
    )
    .await?;
    let (status, again) = sse::open_with(&url, &b.headers(), second.id).await?;
    ensure!(status == 200, "reconnect: {status}");
    let resumed = again
        .context("stream")?
        .until(Duration::from_secs(20), |e| e.event == "snapshot")
        .await?;
    ensure!(resumed.data["devices"].as_array().map(Vec::len) == Some(7));
    // Logging out ends the session's streams with a last event saying why.
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/logout"))
        .header("cookie", &a.cookie)
        .header("x-csrf-token", &a.csrf)
        .send()
        .await?;
    ensure!(r.status() == 200);
    let end = open[1]
        .until(Duration::from_secs(20), |e| e.event == "session_end")
        .await?;
    ensure!(end.data["reason"] == "unknown_session", "{}", end.data);
    ensure!(
        metric(stack, &watcher, "edge_web_events_total", "snapshot").await? > 0.0,
        "no snapshot counted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_page_in_a_real_browser() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    stack.start_sim(false).await?;
    let rig = RigSim::start(&stack.log_path("rig"), &["--time-scale", "1000"]).await?;
    start(&mut stack, &rig).await?;
    let viewer = agent_auth::login(&stack.agent_url(), VIEWER.0, VIEWER.1)
        .await?
        .headers();
    http_side(&stack, &viewer)
        .await
        .with_context(|| stack.logs())?;
    let report = browser(&stack, &rig).await?;
    eprintln!("browser checks: {}", report["checks"]);
    eprintln!("browser timings: {}", report["timings"]);
    ensure!(
        report["checks"].as_array().map(Vec::len).unwrap_or(0) >= 15,
        "{report}"
    );
    for size in ["1366x768", "1280x800", "800x1280"] {
        for page in ["overview", "device", "run-tc200"] {
            let shot = artifacts().join(format!("{page}-{size}.png"));
            ensure!(shot.is_file(), "no screenshot {}", shot.display());
        }
    }
    live_stream(&stack).await.with_context(|| stack.logs())?;
    Ok(())
}
