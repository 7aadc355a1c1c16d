//! Issue #16, the hub's verdict and certificate on the gateway's page, with
//! the real hub and agent and the simulated PV rig: an STC run at the bench
//! is evaluated at the hub and the agent's `/api/v1/runs/{id}` shows the
//! hub's verdict (`hub.final_verdict`, HubMessage.run_verdicts); a
//! certificate issued at the hub reaches the agent with its verification
//! link, its revocation too, and a new certificate then stands (valid
//! before revoked); with the hub stopped and the agent restarted, the agent still
//! shows both (kept in its buffer database), and the run page in a real
//! browser (Debian's chromium via Playwright) shows the verdict and the
//! certificate as a link to the hub's verification page.
// qi-test: tier-independent (what the gateway shows of the hub's verdicts (evaluation per tier: runs_acceptance, hub_runs)): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail};
use cloud_hub::identity::Role;
use e2e_tests::certs::{IssuingPki, login};
use e2e_tests::hub_auth::{admin_token, call as hub_call, new_key};
use e2e_tests::pv_rig::{self, RigSim};
use e2e_tests::{Stack, agent_auth, peers, wait_for, workspace_root};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const SAMPLE: &str = "sample:VER-0001";

async fn agent_get(stack: &Stack, path: &str) -> Result<(StatusCode, Value)> {
    let r = e2e_tests::http::Client::new()
        .get(format!("{}{path}", stack.agent_url()))
        .send()
        .await?;
    let s = r.status();
    let text = r.text().await?;
    Ok((
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn start_agent(stack: &mut Stack, rig: &RigSim) -> Result<PathBuf> {
    let bench = pv_rig::example_bench(rig, &pv_rig::stc_only(stack.dir.path())?)?;
    let cfg = stack.agent_config_with(&bench)?;
    stack.start_agent(&cfg).await?;
    devices_online(stack).await?;
    Ok(cfg)
}

async fn devices_online(stack: &Stack) -> Result<()> {
    pv_rig::devices_online(stack, Duration::from_secs(40)).await
}

/// The agent's run once `hub` satisfies `done`.
async fn agent_hub(
    stack: &Stack,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(what, Duration::from_secs(120), || async {
        let (s, v) = agent_get(stack, &format!("/api/v1/runs/{id}")).await?;
        Ok((s == StatusCode::OK && done(&v["hub"])).then_some(v))
    })
    .await
    .with_context(|| stack.logs())
}

/// The lab's side: a service request whose sample the run tests (a
/// certificate is issued for a sample of a service request).
async fn service_request(stack: &Stack) -> Result<()> {
    let hub = stack.hub_url();
    let operator = new_key(stack, Role::Operator, None).await?;
    let (s, sr) = hub_call(
        Method::POST,
        &format!("{hub}/api/v1/service-requests"),
        Some(&operator),
        Some(&json!({"customer": "Solar GmbH", "module_type": "SG-400M",
                     "protocols": ["stc-power"]})),
    )
    .await?;
    anyhow::ensure!(s == 201, "{sr}");
    let id = sr["request_id"].as_str().context("request id")?;
    let (s, v) = hub_call(
        Method::POST,
        &format!("{hub}/api/v1/service-requests/{id}/samples"),
        Some(&operator),
        Some(&json!({"serial_number": SAMPLE.trim_start_matches("sample:")})),
    )
    .await?;
    anyhow::ensure!(s == 201, "{v}");
    Ok(())
}

async fn browser(stack: &Stack, run: &str, cert: &str, url: &str) -> Result<()> {
    let artifacts = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("hub-verdict-page");
    let cfg = json!({
        "base": stack.agent_url(),
        "operator": [agent_auth::USER, agent_auth::PASSWORD],
        "run": run, "verdict": "pass", "certificate": cert, "url": url,
        "chromium": "/usr/bin/chromium",
        "artifacts": artifacts,
    });
    let python = peers::python()?;
    let script = workspace_root().join("tests/browser/hub_verdict.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(cfg.to_string())
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    if !out.status.success() || report["ok"] != true {
        bail!(
            "browser check failed ({}), screenshot in {}:\n{}\n{stdout}{}",
            out.status,
            artifacts.display(),
            String::from_utf8_lossy(&out.stderr),
            stack.logs()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_shows_the_hubs_verdict_and_certificate_and_keeps_them_offline() -> Result<()> {
    let mut stack = Stack::new().await?;
    let pki = IssuingPki::new(stack.dir.path(), "lab")?;
    stack.hub_after = pki.hub_table("lab_name = \"PV Lab\"\nlab_country = \"DE\"");
    stack.start_hub().await?;
    let rig = RigSim::start(&stack.log_path("rig"), &["--time-scale", "1000"]).await?;
    let cfg = start_agent(&mut stack, &rig).await?;
    service_request(&stack).await?;

    // STC at the bench: the hub evaluates it and tells the gateway.
    let c = e2e_tests::http::Client::new();
    let r = c
        .post(format!("{}/api/v1/runs", stack.agent_url()))
        .json(
            &json!({"protocol": "stc-power", "bench": "pv-rig", "sample_id": SAMPLE,
                      "parameters": {"rated_pmax": 400}}),
        )
        .send()
        .await?;
    anyhow::ensure!(
        r.status() == StatusCode::CREATED,
        "start: {}",
        r.text().await?
    );
    let run: Value = r.json().await?;
    let id = run["id"].as_str().context("run id")?.to_string();
    // Any verdict first, then which: a wrong one fails at once, saying why
    // (the run's provisional verdicts are in the answer).
    let v = agent_hub(&stack, &id, "the hub's verdict at the agent", |h| {
        h["final_verdict"].is_string()
    })
    .await?;
    assert_eq!(v["hub"]["final_verdict"], "pass", "{v}");
    assert_eq!(v["state"], "completed", "{v}");
    let hub = &v["hub"];
    assert_eq!(hub["computed"], "pass", "{hub}");
    assert!(hub["evaluation_id"].as_i64().is_some(), "{hub}");
    assert!(hub["evaluated_at"].is_string(), "{hub}");
    assert!(hub["certificate_id"].is_null(), "none issued yet: {hub}");
    // The list carries it too.
    let (_, list) = agent_get(&stack, "/api/v1/runs").await?;
    let listed = list["runs"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == id.as_str()))
        .context("the run in the list")?;
    assert_eq!(listed["hub"]["final_verdict"], "pass", "{listed}");

    // A certificate at the hub: the agent shows it with its link.
    let url = stack.hub_url();
    let engineer = login(&url, &admin_token(&stack), "erin", "engineer").await?;
    let issue = || async {
        let (s, c) = hub_call(
            Method::POST,
            &format!("{url}/api/v1/certificates"),
            Some(&engineer),
            Some(&json!({"sample": SAMPLE, "allow_simulated": true})),
        )
        .await?;
        anyhow::ensure!(s == 201, "issue: {s} {c}");
        Ok::<_, anyhow::Error>(
            c["certificate"]["certificate_id"]
                .as_str()
                .context("certificate id")?
                .to_string(),
        )
    };
    let first = issue().await?;
    agent_hub(&stack, &id, "the certificate at the agent", |h| {
        h["certificate_id"] == first.as_str() && h["certificate_state"] == "valid"
    })
    .await?;
    // Revoked: the agent hears it; a new certificate then stands (a valid
    // one before revoked ones).
    let (s, r) = hub_call(
        Method::POST,
        &format!("{url}/api/v1/certificates/{first}/revoke"),
        Some(&engineer),
        Some(&json!({"reason": "issued for the wrong customer"})),
    )
    .await?;
    anyhow::ensure!(s == 200, "revoke: {s} {r}");
    agent_hub(&stack, &id, "the revocation at the agent", |h| {
        h["certificate_id"] == first.as_str() && h["certificate_state"] == "revoked"
    })
    .await?;
    let cert = issue().await?;
    let v = agent_hub(&stack, &id, "the new certificate at the agent", |h| {
        h["certificate_id"] == cert.as_str()
    })
    .await?;
    let hub = &v["hub"];
    assert_eq!(hub["certificate_state"], "valid", "{hub}");
    let link = hub["verification_url"]
        .as_str()
        .context("verification url")?
        .to_string();
    assert!(link.ends_with(&format!("/api/v1/verify/{cert}")), "{link}");
    // The link opens the hub's public verification page.
    let r = reqwest::get(&link).await?;
    assert_eq!(r.status(), StatusCode::OK, "{link}");

    let metrics = e2e_tests::http::get(format!("{url}/metrics"))
        .await?
        .text()
        .await?;
    let sent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hub_run_verdicts_sent_total "))
        .and_then(|n| n.trim().parse::<f64>().ok());
    assert!(
        sent.is_some_and(|n| n >= 4.0),
        "after Welcome, the evaluation, two issues and a revocation: {sent:?}"
    );

    // The hub goes away; the agent restarts while it is down and still
    // shows what the hub said (the run itself ended in the earlier process).
    drop(stack.hub.take());
    stack.agent.take().context("agent")?.kill9()?;
    stack.start_agent(&cfg).await?;
    devices_online(&stack).await?;
    let (s, v) = agent_get(&stack, &format!("/api/v1/runs/{id}")).await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["known_from"], "hub", "{v}");
    assert_eq!(v["hub"]["final_verdict"], "pass", "{v}");
    assert_eq!(v["hub"]["certificate_id"], cert.as_str(), "{v}");
    assert_eq!(v["hub"]["verification_url"], link.as_str(), "{v}");
    let (_, list) = agent_get(&stack, "/api/v1/runs").await?;
    assert!(
        list["earlier_runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == id.as_str())),
        "{list}"
    );
    let metrics = e2e_tests::http::Client::new()
        .get(format!("{}/metrics", stack.agent_url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("edge_hub_verdicts_known 1"),
        "the kept verdict is counted after the restart"
    );

    // The page, with the hub still down.
    browser(&stack, &id, &cert, &link).await?;
    Ok(())
}
