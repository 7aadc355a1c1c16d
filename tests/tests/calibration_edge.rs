//! Issue #15, calibration at the edge, with the real agent and hub and the
//! simulated PV rig: an expired calibration recorded at the hub for one of
//! the bench's instruments reaches the gateway (HubMessage.calibrations),
//! which refuses a run on the bench with 409 naming the instrument and its
//! due date; the hub is stopped and the agent restarted while it is down,
//! and the refusal still holds (the status is kept in the agent's buffer
//! database); with the hub back, a valid calibration is recorded and the
//! run starts.
// qi-test: tier-independent (what the gateway does with calibrations it learned): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail};
use cloud_hub::identity::Role;
use e2e_tests::hub_auth::{call as hub_call, new_key};
use e2e_tests::pv_rig::{self, RigSim};
use e2e_tests::{Stack, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const SMU: &str = "instrument:gw-acq:smu";

async fn agent_call(
    stack: &Stack,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let c = e2e_tests::http::Client::new();
    let url = format!("{}{path}", stack.agent_url());
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

async fn start(stack: &mut Stack, rig: &RigSim) -> Result<PathBuf> {
    let bench = pv_rig::example_bench(rig, &pv_rig::stc_only(stack.dir.path())?)?;
    let cfg = stack.agent_config_with(&bench)?;
    stack.start_agent(&cfg).await?;
    devices_online(stack).await?;
    Ok(cfg)
}

async fn devices_online(stack: &Stack) -> Result<()> {
    pv_rig::devices_online(stack, Duration::from_secs(40)).await
}

/// The smu's calibration status as the agent's benches answer shows it.
async fn smu_status(stack: &Stack) -> Result<Value> {
    let (s, v) = agent_call(stack, "GET", "/api/v1/benches", None).await?;
    if s != StatusCode::OK {
        bail!("benches: {s} {v}");
    }
    let bench = v["benches"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["id"] == "pv-rig"))
        .context("bench pv-rig")?;
    bench["calibration"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["device"] == "smu"))
        .cloned()
        .context("smu in the bench's calibration")
}

async fn smu_becomes(stack: &Stack, want: &str) -> Result<Value> {
    wait_for(
        &format!("the agent to hold the smu's calibration as {want}"),
        Duration::from_secs(60),
        || async {
            let s = smu_status(stack).await?;
            Ok((s["status"] == want).then_some(s))
        },
    )
    .await
    .with_context(|| stack.logs())
}

fn stc() -> Value {
    json!({"protocol": "stc-power", "bench": "pv-rig", "sample_id": "sample:CAL-0001",
           "parameters": {"rated_pmax": 400}})
}

async fn record(stack: &Stack, token: &str, calibrated_days: i64, due_days: i64) -> Result<Value> {
    let t = |d: i64| {
        (chrono::Utc::now() + chrono::Duration::days(d))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let (s, v) = hub_call(
        Method::POST,
        &format!("{}/api/v1/twins/{SMU}/calibrations", stack.hub_url()),
        Some(token),
        Some(&json!({"calibrated_at": t(calibrated_days), "due_at": t(due_days),
            "measured": [{"name": "Isc", "value": 9.8, "unit": "A", "expanded_uncertainty": 0.05}]})),
    )
    .await?;
    anyhow::ensure!(s == 201, "record: {s} {v}");
    Ok(v)
}

async fn refused_for_calibration(stack: &Stack, due: &str) -> Result<()> {
    let (s, v) = agent_call(stack, "POST", "/api/v1/runs", Some(stc())).await?;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "calibration", "{v}");
    let m = v["message"].as_str().unwrap_or("");
    assert!(
        m.contains("\"smu\"") && m.contains("out of calibration") && m.contains(due),
        "the refusal names the instrument and its due date ({due}): {m}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_instrument_refuses_runs_at_the_edge_even_offline_until_recalibrated()
-> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let rig = RigSim::start(&stack.log_path("rig"), &["--time-scale", "1000"]).await?;
    let cfg = start(&mut stack, &rig).await?;
    let engineer = new_key(&stack, Role::Engineer, None).await?;

    // The hub learns the smu from the gateway's Hello.
    let hub = stack.hub_url();
    wait_for("the smu's twin", Duration::from_secs(30), || async {
        let (s, _) = hub_call(
            Method::GET,
            &format!("{hub}/api/v1/twins/{SMU}"),
            Some(&engineer),
            None,
        )
        .await?;
        Ok((s == 200).then_some(()))
    })
    .await?;
    // Nothing known yet: runs are allowed by default (not started here).
    assert_eq!(smu_status(&stack).await?["status"], "unknown");

    let v = record(&stack, &engineer, -400, -3).await?;
    let due = v["calibration"]["due_at"].as_str().context("due")?[..10].to_string();
    let held = smu_becomes(&stack, "expired").await?;
    assert_eq!(
        held["calibration_id"], v["calibration"]["calibration_id"],
        "{held}"
    );
    refused_for_calibration(&stack, &due).await?;

    // The hub goes away; the agent restarts while it is down.
    drop(stack.hub.take());
    stack.agent.take().context("agent")?.kill9()?;
    stack.start_agent(&cfg).await?;
    devices_online(&stack).await?;
    assert_eq!(smu_status(&stack).await?["status"], "expired");
    refused_for_calibration(&stack, &due).await?;
    let (_, metrics) = {
        let r = e2e_tests::http::Client::new()
            .get(format!("{}/metrics", stack.agent_url()))
            .send()
            .await?;
        (r.status(), r.text().await?)
    };
    assert!(
        metrics.contains("edge_runs_refused_total{reason=\"calibration\"} 1"),
        "counted once since the restart"
    );

    // The hub is back: a new calibration reaches the gateway, the run starts.
    stack.start_hub().await?;
    record(&stack, &engineer, -1, 365).await?;
    smu_becomes(&stack, "valid").await?;
    let (s, v) = agent_call(&stack, "POST", "/api/v1/runs", Some(stc())).await?;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().context("run id")?.to_string();
    let (s, v) = agent_call(
        &stack,
        "POST",
        &format!("/api/v1/runs/{id}/abort"),
        Some(json!({"reason": "test over"})),
    )
    .await?;
    assert!(
        s == StatusCode::ACCEPTED || s == StatusCode::CONFLICT,
        "{v}"
    );
    Ok(())
}
