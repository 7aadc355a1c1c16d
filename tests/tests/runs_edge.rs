//! Issue #14, the run engine on the edge, with the real agent binary against
//! the simulated PV rig (`pv-rig-sim` at 1000x, the bench of
//! examples/pv-rig/devices-and-bench.toml): an STC run sweeps an IV curve and
//! gets a plausible Pmax; refusals (parameters, limits, busy bench and
//! sample, hostile bodies) are clear; a shortened thermal cycling run pauses
//! while the chamber is silent and resumes, survives a kill -9 of the agent
//! (INTERRUPTED, then resumed per its policy) and completes; an abort puts
//! the rig in the template's safe state.
// qi-test: tier-independent (the run engine on the edge): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail};
use e2e_tests::pv_rig::{self, RigSim};
use e2e_tests::{Stack, agent_auth, wait_for, workspace_root};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A copy of tc200 with `count` cycles and its own id.
fn short_tc(dir: &Path, id: &str, count: u32, offline: &str) -> Result<()> {
    let text = std::fs::read_to_string(workspace_root().join("protocols/tc200.toml"))?
        .replace("id = \"tc200\"", &format!("id = \"{id}\""))
        .replace("count = 200", &format!("count = {count}"))
        .replace(
            "on_device_offline = \"pause\"",
            &format!("on_device_offline = \"{offline}\""),
        );
    std::fs::write(dir.join(format!("{id}.toml")), text)?;
    Ok(())
}

/// Protocols offered: stc-power as shipped, tc2 (2 cycles, pause), tc2-abort
/// (abort on a device going offline), and tc-hot whose safe state is beyond
/// the chamber's limits.
fn protocols(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("protocols");
    std::fs::create_dir_all(&p)?;
    std::fs::copy(
        workspace_root().join("protocols/stc-power.toml"),
        p.join("stc-power.toml"),
    )?;
    short_tc(&p, "tc2", 2, "pause")?;
    short_tc(&p, "tc2-abort", 1, "abort")?;
    let hot = std::fs::read_to_string(p.join("tc2.toml"))?
        .replace("id = \"tc2\"", "id = \"tc-hot\"")
        .replace(
            "{ point = \"chamber.temperature\", unit = \"Cel\", value = 25 }",
            "{ point = \"chamber.temperature\", unit = \"Cel\", value = 95 }",
        );
    std::fs::write(p.join("tc-hot.toml"), hot)?;
    std::fs::write(p.join("broken.toml"), "format_version = 1\n")?;
    Ok(p)
}

async fn start(stack: &mut Stack, rig: &RigSim) -> Result<PathBuf> {
    let bench = pv_rig::example_bench(rig, &protocols(stack.dir.path())?)?;
    let cfg = stack.agent_config_with(&bench)?;
    stack.start_agent(&cfg).await?;
    pv_rig::devices_online(stack, Duration::from_secs(30)).await?;
    Ok(cfg)
}

async fn call(
    stack: &Stack,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let base = stack.agent_url();
    let c = e2e_tests::http::Client::new();
    let url = format!("{base}{path}");
    let mut rb = match method {
        "GET" => c.get(&url),
        _ => c.post(&url),
    };
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await?;
    let s = r.status();
    let text = r.text().await?;
    Ok((
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn run_until(
    stack: &Stack,
    id: &str,
    what: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(what, Duration::from_secs(secs), || async {
        let (s, v) = call(stack, "GET", &format!("/api/v1/runs/{id}"), None).await?;
        if s != StatusCode::OK {
            bail!("GET run {id}: {s} {v}");
        }
        Ok(done(&v).then_some(v))
    })
    .await
    .with_context(|| stack.logs())
}

fn has_event(v: &Value, kind: &str) -> bool {
    v["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["kind"] == kind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_stc_run_sweeps_a_plausible_curve_and_bad_starts_are_refused() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let rig = RigSim::start(&stack.log_path("rig"), &["--time-scale", "1000"]).await?;
    start(&mut stack, &rig).await?;

    let (s, p) = call(&stack, "GET", "/api/v1/protocols", None).await?;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = p["protocols"]
        .as_array()
        .context("list")?
        .iter()
        .filter_map(|x| x["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["stc-power", "tc-hot", "tc2", "tc2-abort"],
        "the broken file is not offered"
    );
    assert_eq!(p["time_scale"], 1000.0);
    let (_, b) = call(&stack, "GET", "/api/v1/benches", None).await?;
    assert_eq!(
        b["benches"][0]["points"]["chamber.temperature"]["max"], 90.0,
        "{b}"
    );

    let stc = |params: Value| json!({"protocol": "stc-power", "bench": "pv-rig", "sample_id": "sample:MOD-0001", "parameters": params});
    // Refusals, each with its status and kind, nothing started.
    for (body, status, kind) in [
        (
            stc(json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_parameter",
        ),
        (
            stc(json!({"rated_pmax": 400, "colour": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_parameter",
        ),
        (
            stc(json!({"rated_pmax": 400, "tolerance_pct": 50})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_parameter",
        ),
        (
            json!({"protocol": "tc-hot", "bench": "pv-rig", "sample_id": "sample:X", "parameters": {"area_m2": 1.6}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "over_limit",
        ),
        (
            json!({"protocol": "nope", "bench": "pv-rig", "sample_id": "sample:X"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (json!(["stc-power"]), StatusCode::BAD_REQUEST, "bad_request"),
        (
            json!({"protocol": "stc-power", "bench": "pv-rig", "sample_id": "sample:X", "extra": true}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (s, v) = call(&stack, "POST", "/api/v1/runs", Some(body.clone())).await?;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(kind)),
            "{body}: {v}"
        );
    }
    let (_, runs) = call(&stack, "GET", "/api/v1/runs", None).await?;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0));

    let (s, run) = call(
        &stack,
        "POST",
        "/api/v1/runs",
        Some(stc(json!({"rated_pmax": 400}))),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().context("id")?.to_string();
    assert_eq!(
        (run["time_scale"].as_f64(), run["executed_steps"].as_u64()),
        (Some(1000.0), Some(2))
    );
    let done = run_until(&stack, &id, "the STC run to end", 60, |v| {
        v["state"] != "running"
    })
    .await?;
    assert_eq!(done["state"], "completed", "{done}");
    let pmax = done["values"]["stc.pmax"].as_f64().context("stc.pmax")?;
    assert!((300.0..=450.0).contains(&pmax), "Pmax {pmax} W: {done}");
    let ff = done["values"]["stc.ff"].as_f64().context("ff")?;
    assert!((60.0..=90.0).contains(&ff), "FF {ff} %");
    assert!(
        (done["values"]["conditions.irradiance"]
            .as_f64()
            .unwrap_or(0.0)
            - 1000.0)
            .abs()
            < 20.0,
        "{done}"
    );
    let verdict = done["verdicts"]
        .as_array()
        .context("verdicts")?
        .iter()
        .find(|c| c["criterion"] == "pmax-rated")
        .cloned();
    assert_eq!(
        verdict.as_ref().map(|c| c["verdict"].clone()),
        Some(json!("pass")),
        "{verdict:?}"
    );
    assert_eq!(done["steps_done"], 2);
    for k in ["started", "step_started", "step_finished", "completed"] {
        assert!(has_event(&done, k), "{k}: {done}");
    }
    // Everything went to the buffer's high lane (no hub here): events, the
    // six figures and 200 curve points (two readings each), audit events.
    let h = stack.agent_health().await?;
    assert!(
        h["buffer"]["backlog_high"].as_u64().unwrap_or(0) > 6 + 400 + 5,
        "{h}"
    );
    let metrics = e2e_tests::http::get(format!("{}/metrics", stack.agent_url()))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("edge_run_iv_sweeps_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("edge_runs_refused_total{reason=\"limit\"} 1"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thermal_cycling_pauses_survives_kill_9_completes_and_abort_leaves_the_safe_state()
-> Result<()> {
    let mut stack = Stack::edge_only()?;
    let rig = RigSim::start(&stack.log_path("rig"), &["--time-scale", "1000"]).await?;
    let cfg = start(&mut stack, &rig).await?;
    let tc = |protocol: &str, sample: &str| json!({"protocol": protocol, "bench": "pv-rig", "sample_id": sample, "parameters": {"area_m2": 1.6}});
    let (s, run) = call(
        &stack,
        "POST",
        "/api/v1/runs",
        Some(tc("tc2", "sample:MOD-0002")),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().context("id")?.to_string();
    // One run per bench, one run per sample.
    let (s, v) = call(
        &stack,
        "POST",
        "/api/v1/runs",
        Some(tc("tc2-abort", "sample:MOD-0003")),
    )
    .await?;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("bench_busy")),
        "{v}"
    );

    // Into the first cycle, then the chamber goes silent: paused, then resumed.
    run_until(&stack, &id, "the first cycle", 60, |v| {
        v["step"].as_str().is_some_and(|s| s.starts_with("3:1/"))
    })
    .await?;
    rig.control("silence chamber").await?;
    let paused = run_until(&stack, &id, "PAUSED", 30, |v| v["state"] == "paused").await?;
    assert_eq!(paused["paused_by"], "chamber", "{paused}");
    let at = paused["elapsed_s"].as_f64().unwrap_or(0.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = run_until(&stack, &id, "still paused", 5, |_| true).await?;
    assert_eq!(
        still["elapsed_s"].as_f64(),
        Some(at),
        "timers stop while paused: {still}\n{}",
        stack.logs()
    );
    rig.control("answer chamber").await?;
    let resumed = run_until(&stack, &id, "RESUMED", 30, |v| {
        has_event(v, "resumed") && v["state"] == "running"
    })
    .await?;
    assert!(has_event(&resumed, "paused"));

    // kill -9 mid-run: the restarted agent records INTERRUPTED and resumes (on_restart = resume).
    run_until(&stack, &id, "the second pass", 90, |v| {
        v["step"].as_str().is_some_and(|s| s.starts_with("3:2/"))
    })
    .await?;
    let before = run_until(&stack, &id, "progress", 5, |_| true).await?;
    stack.agent.take().context("agent")?.kill9()?;
    stack.start_agent(&cfg).await?;
    let after = run_until(&stack, &id, "INTERRUPTED", 30, |v| {
        has_event(v, "interrupted")
    })
    .await?;
    assert!(
        after["steps_done"].as_u64() >= before["steps_done"].as_u64(),
        "{before}\n{after}"
    );
    let ev = after["events"].as_array().context("events")?;
    assert!(
        ev[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("resum")),
        "{after}"
    );
    let done = run_until(&stack, &id, "the run to complete", 120, |v| {
        v["state"] != "running" && v["state"] != "paused"
    })
    .await?;
    assert_eq!(done["state"], "completed", "{done}");
    // 3 steps, the repeat and its 2 x 8, the last: every STEP_FINISHED counted once.
    assert_eq!(done["steps_done"].as_u64(), Some(21), "{done}");
    assert_eq!(done["executed_steps"].as_u64(), Some(21));
    let tmax = done["values"]["module_temperature.max"]
        .as_f64()
        .context("max")?;
    assert!(tmax >= 83.0, "{done}");

    // Abort: the safe state (supply 0 A, chamber 25 Cel), then ABORTED.
    let (s, run) = call(
        &stack,
        "POST",
        "/api/v1/runs",
        Some(tc("tc2-abort", "sample:MOD-0003")),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().context("id")?.to_string();
    run_until(&stack, &id, "injection on", 60, |v| {
        v["step"].as_str().is_some_and(|s| s.starts_with("3:1/3"))
    })
    .await?;
    let (s, v) = call(
        &stack,
        "POST",
        &format!("/api/v1/runs/{id}/abort"),
        Some(json!({"reason": "operator test"})),
    )
    .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let ended = run_until(&stack, &id, "ABORTED", 30, |v| v["state"] == "aborted").await?;
    assert!(has_event(&ended, "safe_state_applied"), "{ended}");
    assert!(
        ended["message"]
            .as_str()
            .is_some_and(|m| m.contains("operator test") && m.contains(agent_auth::USER)),
        "{ended}"
    );
    let state = rig.state().await?;
    assert_eq!(
        state["supply"]["current_setpoint"].as_f64(),
        Some(0.0),
        "{state}"
    );
    assert_eq!(
        state["chamber"]["temperature_setpoint"].as_f64(),
        Some(25.0),
        "{state}"
    );
    let (s, _) = call(
        &stack,
        "POST",
        &format!("/api/v1/runs/{id}/abort"),
        Some(json!({})),
    )
    .await?;
    assert_eq!(s, StatusCode::CONFLICT);

    // on_device_offline = abort: the chamber goes silent, the run aborts,
    // the safe state is written where it can be and the failure is named.
    let (s, run) = call(
        &stack,
        "POST",
        "/api/v1/runs",
        Some(tc("tc2-abort", "sample:MOD-0004")),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().context("id")?.to_string();
    run_until(&stack, &id, "injection on", 60, |v| {
        v["step"].as_str().is_some_and(|s| s.starts_with("3:1/3"))
    })
    .await?;
    rig.control("silence chamber").await?;
    let ended = run_until(&stack, &id, "ABORTED by policy", 60, |v| {
        v["state"] == "aborted"
    })
    .await?;
    assert!(
        ended["message"]
            .as_str()
            .is_some_and(|m| m.contains("chamber went offline")),
        "{ended}"
    );
    let safe = ended["events"]
        .as_array()
        .context("events")?
        .iter()
        .find(|e| e["kind"] == "safe_state_applied")
        .cloned();
    let safe = safe.context("safe state event")?;
    assert!(
        safe["message"].as_str().is_some_and(
            |m| m.contains("supply.current = 0 A: ok") && m.contains("chamber.temperature")
        ),
        "{safe}"
    );
    assert_eq!(
        rig.state().await?["supply"]["current_setpoint"].as_f64(),
        Some(0.0)
    );
    rig.control("answer chamber").await?;
    Ok(())
}

/// `--check` takes the rig's bench and refuses a bench that contradicts a
/// profile, naming the bench, the point and why.
#[test]
fn check_accepts_the_rig_bench_and_refuses_a_write_to_a_read_only_point() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = format!(
        "gateway_id = \"gw\"\nprofiles_dir = \"{}\"\n[buffer]\npath = \"{}\"\n[uplink]\nhub_url = \"http://127.0.0.1:1\"\n",
        e2e_tests::profiles_dir().display(),
        dir.path().join("buffer").display()
    );
    let example =
        std::fs::read_to_string(workspace_root().join("examples/pv-rig/devices-and-bench.toml"))?;
    let check = |text: String| -> Result<std::process::Output> {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text)?;
        Ok(std::process::Command::new(e2e_tests::bin("edge-agent")?)
            .arg("--check")
            .arg("--config")
            .arg(&path)
            .output()?)
    };
    let ok = check(format!("{base}{example}"))?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = check(format!(
        "{base}{}",
        example.replace("write = \"voltage_setpoint\"", "write = \"voltage\"")
    ))?;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("pv-rig") && err.contains("bias.voltage") && err.contains("not writable"),
        "{err}"
    );
    Ok(())
}

/// What a run records travels on the uplink like everything else: a hub of
/// today (which ignores run events) acknowledges the batches, the agent's
/// backlog drains, and the sweep's figures are stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_data_reaches_the_hub_and_is_acknowledged() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let rig = RigSim::start(&stack.log_path("rig"), &["--time-scale", "1000"]).await?;
    start(&mut stack, &rig).await?;
    let body = json!({"protocol": "stc-power", "bench": "pv-rig", "sample_id": "sample:MOD-0009", "parameters": {"rated_pmax": 400}});
    let (s, run) = call(&stack, "POST", "/api/v1/runs", Some(body)).await?;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().context("id")?.to_string();
    run_until(&stack, &id, "the STC run to complete", 60, |v| {
        v["state"] == "completed"
    })
    .await?;
    wait_for("the high lane drained", Duration::from_secs(60), || async {
        Ok((stack.agent_health().await?["buffer"]["backlog_high"] == 0).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    let pool = stack.db().await?;
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM readings WHERE gateway_id = 'gw-acq' AND device_id = 'smu' AND metric = 'pmax'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(n, 1, "{}", stack.logs());
    Ok(())
}
