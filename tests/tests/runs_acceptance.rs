//! Issue #14's acceptance, end to end with every real part: PostgreSQL, the
//! hub, one gateway agent with two benches, each a simulated PV rig
//! (`pv-rig-sim` at 1000x) holding one module: module A degrades little
//! (passes), module B degrades 4 % per thermal cycle (fails).
//!
//! The lab's work flow around them: a service request with the two samples,
//! intake inspections; then on both benches at once STC -> thermal cycling
//! (tc200 shortened to 2 cycles: the full one is in BENCHMARKS.md) -> STC
//! -> insulation / wet leakage; a final inspection; the hub's verdicts with
//! their explanations, the visual criterion approved by a second engineer.
//!
//! On the way: the hub is down for the whole thermal cycling, and the agent
//! is killed (-9) in the middle of it: both runs record INTERRUPTED and
//! resume as tc200 declares, and the hub holds every sequence number once.
//! Last, a high-voltage run aborted mid-test leaves its rig in the
//! template's safe state (hipot at 0 V).
//!
//! Issue #15's acceptance rides on the same flow: module A gets a
//! certificate that `xmlsec1` and the offline verifier accept (and refuse
//! with one byte flipped, or once revoked), whose PDF reads right; module
//! B's failed runs reach the QMS as signed non-conformance webhooks.

use anyhow::{Context, Result, bail};
use cloud_hub::identity::Role;
use e2e_tests::certs::{IssuingPki, certify_and_challenge};
use e2e_tests::hub_auth::{admin_token, call as hub_call, new_key, pool};
use e2e_tests::pv_rig::RigSim;
use e2e_tests::webhook_receiver::Receiver;
use e2e_tests::{Stack, wait_for, workspace_root};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BENCHES: [(&str, &str); 2] = [("a", "sample:MOD-A"), ("b", "sample:MOD-B")];

/// The protocols the agent offers: three as shipped, tc200 cut to 2 cycles
/// (id `tc2`), and an insulation test whose first high-voltage step lasts
/// 2 h (id `hipot-long`), long enough to abort in.
fn protocols(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("protocols");
    std::fs::create_dir_all(&p)?;
    let shipped = workspace_root().join("protocols");
    for f in ["stc-power.toml", "insulation-wet-leakage.toml"] {
        std::fs::copy(shipped.join(f), p.join(f))?;
    }
    let tc = std::fs::read_to_string(shipped.join("tc200.toml"))?
        .replace("id = \"tc200\"", "id = \"tc2\"")
        .replace("count = 200", "count = 2");
    std::fs::write(p.join("tc2.toml"), tc)?;
    let long = std::fs::read_to_string(shipped.join("insulation-wet-leakage.toml"))?
        .replace("id = \"insulation-wet-leakage\"", "id = \"hipot-long\"")
        .replacen("duration = \"1 min\"", "duration = \"2 h\"", 1);
    std::fs::write(p.join("hipot-long.toml"), long)?;
    Ok(p)
}

/// The example rig's devices and bench, once per rig, ids suffixed.
fn benches(stack: &Stack, rigs: &[&RigSim; 2]) -> Result<String> {
    let example =
        std::fs::read_to_string(workspace_root().join("examples/pv-rig/devices-and-bench.toml"))?;
    let (runs, rest) = example
        .split_once("[[devices]]")
        .context("the example's [[devices]]")?;
    let mut out = runs.replace(
        "/usr/share/edge-agent/protocols",
        &protocols(stack.dir.path())?.display().to_string(),
    );
    for ((suffix, _), rig) in BENCHES.iter().zip(rigs) {
        let mut part = format!("[[devices]]{rest}")
            .replace("127.0.0.1:5021", &rig.modbus.to_string())
            .replace("127.0.0.1:5025", &rig.scpi.to_string())
            .replace("id = \"pv-rig\"", &format!("id = \"pv-rig-{suffix}\""));
        for d in ["chamber", "daq", "supply", "bias", "hipot", "smu"] {
            part = part
                .replace(&format!("id = \"{d}\""), &format!("id = \"{d}-{suffix}\""))
                .replace(
                    &format!("device = \"{d}\""),
                    &format!("device = \"{d}-{suffix}\""),
                );
        }
        out.push_str(&part);
        out.push('\n');
    }
    Ok(out)
}

/// The agent's local API, as the harness's operator.
async fn agent(stack: &Stack, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let c = e2e_tests::http::Client::new();
    let url = format!("{}{path}", stack.agent_url());
    let mut rb = if method == "GET" {
        c.get(&url)
    } else {
        c.post(&url)
    };
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await?;
    let s = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !s.is_success() {
        bail!("{method} {path}: {s} {v}");
    }
    Ok(v)
}

async fn start_run(stack: &Stack, protocol: &str, bench: usize, params: Value) -> Result<String> {
    let (suffix, sample) = BENCHES[bench];
    let run = agent(
        stack,
        "POST",
        "/api/v1/runs",
        Some(
            json!({"protocol": protocol, "bench": format!("pv-rig-{suffix}"),
                    "sample_id": sample, "parameters": params}),
        ),
    )
    .await?;
    Ok(run["id"].as_str().context("run id")?.to_string())
}

async fn agent_run_until(
    stack: &Stack,
    id: &str,
    what: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(what, Duration::from_secs(secs), || async {
        let v = agent(stack, "GET", &format!("/api/v1/runs/{id}"), None).await?;
        Ok(done(&v).then_some(v))
    })
    .await
    .with_context(|| stack.logs())
}

fn ended(v: &Value) -> bool {
    !matches!(v["state"].as_str(), Some("running" | "paused"))
}

/// Runs one protocol on both benches at once, to its end at the agent.
async fn on_both(stack: &Stack, protocol: &str, params: Value) -> Result<[String; 2]> {
    let a = start_run(stack, protocol, 0, params.clone()).await?;
    let b = start_run(stack, protocol, 1, params).await?;
    for id in [&a, &b] {
        let v = agent_run_until(stack, id, &format!("{protocol} to end"), 180, ended).await?;
        anyhow::ensure!(v["state"] == "completed", "{protocol}: {v}");
    }
    Ok([a, b])
}

/// The hub's view of a run once its evaluation has the wanted verdict.
async fn hub_verdict(stack: &Stack, token: &str, id: &str, want: &str) -> Result<Value> {
    let url = format!("{}/api/v1/runs/{id}", stack.hub_url());
    wait_for(
        &format!("run {id} to be {want} at the hub"),
        Duration::from_secs(60),
        || async {
            let (s, v) = hub_call(Method::GET, &url, Some(token), None).await?;
            Ok((s == 200 && v["evaluation"]["final_verdict"] == want).then_some(v))
        },
    )
    .await
    .with_context(|| stack.logs())
}

/// The QMS: non-conformance reports, signed (tests/src/webhook_receiver.rs).
async fn subscribe_qms(stack: &Stack, qms: &Receiver) -> Result<()> {
    let (s, v) = hub_call(
        Method::POST,
        &format!("{}/api/v1/webhooks", stack.hub_url()),
        Some(&admin_token(stack)),
        Some(&json!({"name": "QMS", "url": qms.url, "events": ["nonconformance.raised"]})),
    )
    .await?;
    anyhow::ensure!(s == 201, "subscribe: {s} {v}");
    qms.set_secret(v["secret"].as_str().context("secret")?);
    Ok(())
}

fn criterion<'a>(run: &'a Value, id: &str) -> Result<&'a Value> {
    run["evaluation"]["results"]
        .as_array()
        .and_then(|r| r.iter().find(|c| c["id"] == id))
        .with_context(|| format!("criterion {id} in {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_passing_and_a_failing_module_through_stc_tc_stc_with_verdicts_crash_and_hub_outage()
-> Result<()> {
    let mut stack = Stack::new().await?;
    let pki = IssuingPki::new(stack.dir.path(), "lab")?;
    stack.hub_after = format!(
        "{}\n[webhooks]\nallow_http = true\nallow_private_targets = true\n\
         backoff_base_ms = 200\nbackoff_max_ms = 1000\n",
        pki.hub_table("lab_name = \"PV Lab\"\nlab_country = \"DE\"")
    );
    stack.start_hub().await?;
    let qms = Receiver::start().await?;
    subscribe_qms(&stack, &qms).await?;
    let rig_a = RigSim::start(&stack.log_path("rig-a"), &["--time-scale", "1000"]).await?;
    let rig_b = RigSim::start(
        &stack.log_path("rig-b"),
        &[
            "--time-scale",
            "1000",
            "--degradation-per-thermal-cycle-pct",
            "4",
        ],
    )
    .await?;
    let devices = benches(&stack, &[&rig_a, &rig_b])?;
    let cfg = stack.agent_config_with(&devices)?;
    stack.start_agent(&cfg).await?;
    wait_for(
        "the rigs' devices online",
        Duration::from_secs(40),
        || async {
            let h = stack.agent_health().await?;
            let all = h["devices"]
                .as_array()
                .map(|d| d.len() == 12 && d.iter().all(|d| d["state"] == "online"));
            Ok((all == Some(true)).then_some(()))
        },
    )
    .await
    .with_context(|| stack.logs())?;

    // The lab: a service request with both samples, inspected at intake.
    let hub = stack.hub_url();
    let operator = new_key(&stack, Role::Operator, None).await?;
    let engineer = new_key(&stack, Role::Engineer, None).await?;
    let (s, sr) = hub_call(
        Method::POST,
        &format!("{hub}/api/v1/service-requests"),
        Some(&operator),
        Some(&json!({"customer": "Solar GmbH", "module_type": "SG-400M",
                     "protocols": ["stc-power", "tc2", "stc-power", "insulation-wet-leakage"]})),
    )
    .await?;
    anyhow::ensure!(s == 201, "{sr}");
    let sr_url = format!(
        "{hub}/api/v1/service-requests/{}",
        sr["request_id"].as_str().context("request id")?
    );
    let step = |to: &'static str| {
        let url = format!("{sr_url}/transitions");
        let token = operator.clone();
        async move {
            let (s, v) =
                hub_call(Method::POST, &url, Some(&token), Some(&json!({"to": to}))).await?;
            anyhow::ensure!(s == 200, "to {to}: {v}");
            Ok::<(), anyhow::Error>(())
        }
    };
    step("intake").await?;
    for (_, sample) in BENCHES {
        let serial = sample.trim_start_matches("sample:");
        let (s, v) = hub_call(
            Method::POST,
            &format!("{sr_url}/samples"),
            Some(&operator),
            Some(&json!({"serial_number": serial, "attributes": {"area_m2": 1.7}})),
        )
        .await?;
        anyhow::ensure!(s == 201, "{v}");
        let (s, v) = hub_call(
            Method::POST,
            &format!("{hub}/api/v1/samples/{sample}/inspections"),
            Some(&operator),
            Some(&json!({"stage": "intake"})),
        )
        .await?;
        anyhow::ensure!(s == 201, "{v}");
    }
    step("testing").await?;

    // STC before the stress: both modules pass at the hub.
    let stc = json!({"rated_pmax": 400});
    let before = on_both(&stack, "stc-power", stc.clone()).await?;
    for id in &before {
        hub_verdict(&stack, &engineer, id, "pass").await?;
    }

    // Thermal cycling with the hub down the whole time, and a kill -9 of
    // the agent in the middle: both runs resume (tc200: on_restart = resume).
    drop(stack.hub.take());
    let tc_params = json!({"area_m2": 1.7});
    let tc = [
        start_run(&stack, "tc2", 0, tc_params.clone()).await?,
        start_run(&stack, "tc2", 1, tc_params).await?,
    ];
    for id in &tc {
        agent_run_until(&stack, id, "the second cycle", 120, |v| {
            v["step"].as_str().is_some_and(|s| s.starts_with("3:2/"))
        })
        .await?;
    }
    stack.agent.take().context("agent")?.kill9()?;
    stack.start_agent(&cfg).await?;
    for id in &tc {
        let v = agent_run_until(&stack, id, "tc2 to end", 180, ended).await?;
        anyhow::ensure!(v["state"] == "completed", "{v}");
        let events: Vec<&str> = v["events"]
            .as_array()
            .context("events")?
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert!(events.contains(&"interrupted"), "{events:?}");
    }
    stack.start_hub().await?;

    // The lab lets the modules settle at 25 C before measuring again (the
    // STC template checks the cell temperature; measured cold, Pmax reads high
    // and the run fails on its conditions, as it should).
    for rig in [&rig_a, &rig_b] {
        wait_for("the module at 25 C", Duration::from_secs(60), || async {
            let t = rig.state().await?["module"]["temperature"]
                .as_f64()
                .unwrap_or(f64::NAN);
            Ok(((t - 25.0).abs() < 0.5).then_some(()))
        })
        .await?;
    }

    // STC after, then insulation and wet leakage (the tc's after.* values).
    let after = on_both(&stack, "stc-power", stc).await?;
    let insulation = on_both(&stack, "insulation-wet-leakage", json!({"area_m2": 1.7})).await?;

    // The final visual inspection: no major defect on either module.
    for (_, sample) in BENCHES {
        let (s, v) = hub_call(
            Method::POST,
            &format!("{hub}/api/v1/samples/{sample}/inspections"),
            Some(&operator),
            Some(&json!({"stage": "final", "findings": [
                {"defect": "light snail trails", "severity": "minor"}]})),
        )
        .await?;
        anyhow::ensure!(s == 201, "{v}");
    }

    // Module A: every verdict passes; the visual criterion waits for an
    // engineer, then the verdict is final.
    hub_verdict(&stack, &engineer, &after[0], "pass").await?;
    hub_verdict(&stack, &engineer, &insulation[0], "pass").await?;
    let tc_a = hub_verdict(&stack, &engineer, &tc[0], "provisional").await?;
    assert_eq!(tc_a["evaluation"]["computed"], "pass", "{tc_a}");
    let degradation = criterion(&tc_a, "pmax-degradation")?;
    let text = degradation.to_string();
    assert!(
        text.contains("before.pmax") && text.contains("after.pmax"),
        "explained with its inputs: {degradation}"
    );
    let (s, v) = hub_call(
        Method::POST,
        &format!("{hub}/api/v1/runs/{}/approval", tc[0]),
        Some(&engineer),
        Some(&json!({"decision": "approve", "comment": "EL images and visual fine"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    hub_verdict(&stack, &engineer, &tc[0], "pass").await?;

    // Module B: the thermal cycling fails on the degradation, explained,
    // and so does its STC after.
    let tc_b = hub_verdict(&stack, &engineer, &tc[1], "fail").await?;
    let degradation = criterion(&tc_b, "pmax-degradation")?;
    assert!(
        degradation.to_string().contains("FAIL"),
        "the failing criterion says so: {degradation}"
    );
    hub_verdict(&stack, &engineer, &after[1], "fail").await?;
    hub_verdict(&stack, &engineer, &before[1], "pass").await?;

    // The request shows where each sample stands.
    let (_, sr) = hub_call(Method::GET, &sr_url, Some(&operator), None).await?;
    assert_eq!(
        sr["runs"]["sample:MOD-B"]
            .as_array()
            .map(|r| r.iter().filter(|r| r["verdict"] == "fail").count()),
        Some(2),
        "{sr}"
    );
    let plan = &sr["plan"]["sample:MOD-A"];
    let protocols: Vec<&str> = plan
        .as_array()
        .context("plan")?
        .iter()
        .filter_map(|i| i["protocol"].as_str())
        .collect();
    assert_eq!(
        protocols,
        ["stc-power", "tc2", "stc-power", "insulation-wet-leakage"]
    );
    assert_eq!(plan[0]["run_id"], before[0].as_str());
    assert_eq!(plan[2]["run_id"], after[0].as_str());
    assert!(
        plan.as_array().is_some_and(|p| p
            .iter()
            .all(|i| i["due"] == false && i["verdict"] == "pass")),
        "every requested protocol done and passed for module A: {plan}"
    );

    // Issue #15: module A certified (and the certificate challenged);
    // module B's failed thermal cycling reported to the QMS, explained.
    certify_and_challenge(
        &stack,
        &pki,
        &engineer,
        "sample:MOD-A",
        &["MOD-A", "Solar GmbH"],
    )
    .await
    .with_context(|| stack.logs())?;
    let nc = qms
        .wait_accepted("nonconformance.raised", |b| {
            b["subject"]["run_id"] == tc[1].as_str()
        })
        .await?;
    assert!(nc.authentic, "signed with the subscription's secret");
    let failed = nc.body["data"]["failed_criteria"].to_string();
    assert!(
        failed.contains("pmax-degradation") && failed.contains("FAIL"),
        "the QMS learns what failed and why: {failed}"
    );
    assert!(
        qms.accepted()
            .iter()
            .all(|r| r.body["subject"]["sample"] == "sample:MOD-B"),
        "module A raised no non-conformance: {:?}",
        qms.summary()
    );

    // Exactly once: every sequence number of the gateway at most once at
    // the hub, each run started and ended once, and the agent holds
    // nothing the hub has not acknowledged.
    let db = pool(&stack).await?;
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
            SELECT seq FROM (
                SELECT x.seq FROM samples x JOIN series s USING (series_id) WHERE s.gateway_id = 'gw-acq'
                UNION ALL SELECT seq FROM run_events WHERE gateway_id = 'gw-acq'
                UNION ALL SELECT seq FROM gateway_audit_events WHERE gateway_id = 'gw-acq'
            ) all_seq GROUP BY seq HAVING count(*) > 1) d",
    )
    .fetch_one(&db)
    .await?;
    assert_eq!(dup, 0, "a sequence number stored twice");
    let ends: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT run_id::text, count(*) FILTER (WHERE kind = 'started'),
                count(*) FILTER (WHERE kind IN ('completed', 'aborted', 'failed'))
           FROM run_events GROUP BY run_id",
    )
    .fetch_all(&db)
    .await?;
    assert_eq!(ends.len(), 8, "{ends:?}");
    assert!(ends.iter().all(|(_, s, e)| (*s, *e) == (1, 1)), "{ends:?}");
    wait_for(
        "the agent's buffer drained",
        Duration::from_secs(30),
        || async {
            let h = stack.agent_health().await?;
            Ok((h["buffer"]["backlog"] == 0).then_some(()))
        },
    )
    .await
    .with_context(|| stack.logs())?;

    // Abort during high voltage: the safe state (hipot 0 V) is written.
    let id = start_run(&stack, "hipot-long", 0, json!({"area_m2": 1.7})).await?;
    wait_for("the hipot at voltage", Duration::from_secs(30), || async {
        let st = rig_a.state().await?;
        Ok((st["hipot"]["test_voltage_setpoint"].as_f64() > Some(1000.0)).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    agent(
        &stack,
        "POST",
        &format!("/api/v1/runs/{id}/abort"),
        Some(json!({"reason": "operator opened the enclosure"})),
    )
    .await?;
    let v = agent_run_until(&stack, &id, "the abort", 30, ended).await?;
    assert_eq!(v["state"], "aborted", "{v}");
    let st = rig_a.state().await?;
    assert_eq!(
        st["hipot"]["test_voltage_setpoint"].as_f64(),
        Some(0.0),
        "{st}"
    );
    let url = format!("{hub}/api/v1/runs/{id}");
    let (_, at_hub) = wait_for("the abort at the hub", Duration::from_secs(30), || async {
        let (s, v) = hub_call(Method::GET, &url, Some(&engineer), None).await?;
        Ok((s == 200 && v["run"]["state"] == "aborted").then_some((s, v)))
    })
    .await
    .with_context(|| stack.logs())?;
    assert_eq!(at_hub["run"]["state"], "aborted");
    let (s, v) = hub_call(
        Method::GET,
        &format!("{hub}/api/v1/runs/{id}/events"),
        Some(&engineer),
        None,
    )
    .await?;
    assert_eq!(s, 200);
    let text = v.to_string();
    assert!(
        text.contains("safe_state_applied") && text.contains("operator opened the enclosure"),
        "the safe state and the reason travel: {v}"
    );
    Ok(())
}
