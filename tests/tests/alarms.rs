//! Alarms end to end (issue #13): a rule on a simulated instrument's metric,
//! driven across its threshold and back through the real command path
//! (hub -> agent -> Modbus write to instrument-sim -> next poll -> ingest),
//! evaluated as the readings arrive: exactly one alarm, raised, acknowledged
//! by an operator (not by a viewer), kept across a hub restart without a
//! second raise, cleared; on the SSE stream, in the audit trail, and at a
//! real HTTP webhook receiver that checks the signature and fails the first
//! delivery.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::hub_auth::{admin_token, call, new_key};
use e2e_tests::{Stack, free_port, sse, wait_for};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TWIN: &str = "instrument:gw-alarm:chamber";
const SECRET: &str = "webhook-secret-0123456789";

/// What the receiver got: (timestamp header, signature header, body, status answered).
type Received = Arc<Mutex<Vec<(String, String, String, u16)>>>;

/// A real HTTP server on a loopback port that answers the first delivery
/// with 500 and every later one with 204.
async fn webhook_receiver() -> Result<(u16, Received)> {
    let got: Received = Arc::default();
    let port = free_port();
    let g = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let g = Arc::clone(&g);
            async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let mut v = g.lock().unwrap_or_else(|p| p.into_inner());
                let status = if v.is_empty() { 500 } else { 204 };
                v.push((h("x-qi-timestamp"), h("x-qi-signature"), body, status));
                axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, got))
}

/// HMAC-SHA256 over `<timestamp>.<body>`, as the receiver checks it.
fn signature(ts: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{ts}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn set_point(stack: &Stack, value: f64) -> Result<()> {
    let (s, c) = call(
        Method::POST,
        &format!("{}/api/v1/gateways/gw-alarm/commands", stack.hub_url()),
        Some(&admin_token(stack)),
        Some(&json!({"write_point": {"device": "chamber", "point": "temperature_setpoint", "value": value}})),
    )
    .await?;
    anyhow::ensure!(s == 202, "command: {s} {c}");
    let id = c["id"].as_i64().context("command id")?;
    let url = format!("{}/api/v1/commands/{id}", stack.hub_url());
    wait_for("the write to succeed", Duration::from_secs(20), || async {
        let (_, c) = call(Method::GET, &url, Some(&admin_token(stack)), None).await?;
        Ok((c["state"] == "succeeded").then_some(()))
    })
    .await
    .with_context(|| stack.logs())
}

/// The newest reading of the set point at the hub (reported state).
async fn reported(pool: &sqlx::PgPool) -> Result<Option<f64>> {
    Ok(sqlx::query_scalar(
        "SELECT l.value FROM series_latest l JOIN series s USING (series_id)
         WHERE s.gateway_id = 'gw-alarm' AND s.device_id = 'chamber'
           AND s.metric = 'temperature_setpoint'",
    )
    .fetch_optional(pool)
    .await?)
}

/// Writes the set point and waits until the hub has its readings (the
/// evaluator saw the batch before that: it is committed first).
async fn drive(stack: &Stack, pool: &sqlx::PgPool, value: f64) -> Result<()> {
    set_point(stack, value).await?;
    wait_for("the value at the hub", Duration::from_secs(20), || async {
        Ok((reported(pool).await? == Some(value)).then_some(()))
    })
    .await?;
    // A few more polls of the same value.
    tokio::time::sleep(Duration::from_millis(800)).await;
    Ok(())
}

async fn alarms(stack: &Stack) -> Result<Vec<Value>> {
    let (s, v) = call(
        Method::GET,
        &format!("{}/api/v1/alarms?twin={TWIN}", stack.hub_url()),
        Some(&admin_token(stack)),
        None,
    )
    .await?;
    anyhow::ensure!(s == 200, "{s} {v}");
    Ok(v["alarms"].as_array().cloned().unwrap_or_default())
}

fn alarm_events(events: &[sse::Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "alarm")
        .map(|e| e.data["change"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_crossed_and_recrossed_makes_one_alarm_raised_acknowledged_cleared()
-> Result<()> {
    let (hook_port, received) = webhook_receiver().await?;
    let mut stack = Stack::new().await?;
    stack.hub_after = format!(
        "[alarms]\nwebhook_retry_ms = 200\n[[alarms.webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret = \"{SECRET}\"\n"
    );
    stack.start_hub().await?;
    stack.start_sim_with("binder-mk53", &[]).await?;
    let listen = format!("127.0.0.1:{}", stack.sim_port);
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"chamber\"\nprofile = \"binder-mk53\"\ntransport = {{ tcp = \"{listen}\" }}\npoll_interval_ms = 200\n"
    ))?;
    let text = std::fs::read_to_string(&cfg)?
        .replace("gateway_id = \"gw-acq\"", "gateway_id = \"gw-alarm\"")
        .replace("reconnect_min_ms = 1000", "reconnect_min_ms = 100");
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;
    wait_for(
        "the set point at the hub",
        Duration::from_secs(20),
        || async { Ok(reported(&pool).await?.map(|_| ())) },
    )
    .await
    .with_context(|| stack.logs())?;

    let url = stack.hub_url();
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let operator = new_key(&stack, Role::Operator, None).await?;
    let engineer = new_key(&stack, Role::Engineer, None).await?;
    let rule = json!({"name": "set point high", "twin_id": TWIN, "metric": "temperature_setpoint",
        "kind": "above", "params": {"threshold": 30.0, "hysteresis": 2.0}, "severity": "major"});
    let rules_url = format!("{url}/api/v1/alarm-rules");
    for who in [&viewer, &operator] {
        let (s, _) = call(Method::POST, &rules_url, Some(who), Some(&rule)).await?;
        assert_eq!(s, 403);
    }
    let (s, r) = call(Method::POST, &rules_url, Some(&engineer), Some(&rule)).await?;
    assert_eq!(s, 201, "{r}");
    let rule_id = r["rule_id"].as_i64().context("rule id")?;
    let mut bad = rule.clone();
    bad["params"] = json!({"threshold": 30.0, "per_s": 1});
    let (s, _) = call(Method::POST, &rules_url, Some(&engineer), Some(&bad)).await?;
    assert_eq!(s, 400);
    let mut ghost = rule.clone();
    ghost["twin_id"] = json!("instrument:nowhere:none");
    let (s, _) = call(Method::POST, &rules_url, Some(&engineer), Some(&ghost)).await?;
    assert_eq!(s, 404);

    let stream_url = format!("{url}/api/v1/twins/stream?twin={TWIN}");
    let (_, live) = sse::open(&stream_url, Some(&viewer), None).await?;
    let mut live = live.context("stream")?;
    // Let the evaluator load the rule, then cross: 25 -> 31.5.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drive(&stack, &pool, 31.5).await?;
    let raised = wait_for("one active alarm", Duration::from_secs(10), || async {
        let a = alarms(&stack).await?;
        Ok((a.len() == 1 && a[0]["state"] == "active_unack").then(|| a[0].clone()))
    })
    .await
    .with_context(|| stack.logs())?;
    assert_eq!(raised["rule_id"], rule_id);
    assert_eq!(raised["severity"], "major");
    assert_eq!(raised["details"]["value"], 31.5);
    let alarm_id = raised["alarm_id"].as_i64().context("alarm id")?;

    // Acknowledge: a viewer may not, an operator may (and it says who).
    let ack_url = format!("{url}/api/v1/alarms/{alarm_id}/acknowledge");
    let (s, _) = call(Method::POST, &ack_url, Some(&viewer), None).await?;
    assert_eq!(s, 403);
    let (s, acked) = call(Method::POST, &ack_url, Some(&operator), None).await?;
    assert_eq!(s, 200, "{acked}");
    assert_eq!(acked["state"], "active_ack");
    assert!(
        acked["acknowledged_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("key:")),
        "{acked}"
    );

    // Back inside the hysteresis band and over again: still the one alarm.
    drive(&stack, &pool, 29.0).await?;
    drive(&stack, &pool, 31.0).await?;
    let mut seen = live.drain(Duration::from_millis(500)).await?;
    assert_eq!(alarm_events(&seen), ["raised", "acknowledged"], "{seen:?}");

    // The hub restarts while the alarm is active: no second raise.
    stack.hub.take().context("hub")?.kill9()?;
    stack.start_hub().await?;
    let (_, live) = sse::open(&stream_url, Some(&viewer), None).await?;
    let mut live = live.context("stream after restart")?;
    wait_for("the agent back", Duration::from_secs(20), || async {
        let h = cloud_hub::live::health::of_gateways(&pool, &["gw-alarm".into()]).await?;
        Ok(h.get("gw-alarm").filter(|h| h.online).map(|_| ()))
    })
    .await?;
    drive(&stack, &pool, 32.0).await?;
    assert_eq!(alarms(&stack).await?.len(), 1);

    // Below threshold - hysteresis: cleared.
    drive(&stack, &pool, 27.0).await?;
    let cleared = wait_for("the alarm cleared", Duration::from_secs(10), || async {
        let a = alarms(&stack).await?;
        Ok((a.len() == 1 && a[0]["state"] == "cleared_ack").then(|| a[0].clone()))
    })
    .await
    .with_context(|| stack.logs())?;
    assert_eq!(cleared["alarm_id"], alarm_id);
    assert_eq!(cleared["details"]["cleared"]["value"], 27.0);
    seen = live.drain(Duration::from_millis(500)).await?;
    assert_eq!(alarm_events(&seen), ["cleared"], "{seen:?}");

    // Audited: raised and cleared by the system, acknowledged by the operator.
    let (_, audit) = call(
        Method::GET,
        &format!("{url}/api/v1/audit?target=alarm:{alarm_id}"),
        Some(&admin_token(&stack)),
        None,
    )
    .await?;
    let entries: Vec<(String, String)> = audit["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_string(),
                e["actor_kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("alarm.clear".to_string(), "system".to_string()),
            ("alarm.acknowledge".to_string(), "api_key".to_string()),
            ("alarm.raise".to_string(), "system".to_string()),
        ],
        "{audit}"
    );

    // The webhook: every delivery signed; the first answered 500 and sent
    // again; then acknowledged and cleared.
    let got = wait_for(
        "three webhook notifications",
        Duration::from_secs(10),
        || async {
            let g = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Ok((g.iter().filter(|r| r.3 == 204).count() >= 3).then_some(g))
        },
    )
    .await?;
    for (ts, sig, body, _) in &got {
        assert_eq!(sig, &signature(ts, body), "signature of {body}");
    }
    let changes: Vec<(String, u16)> = got
        .iter()
        .map(|(_, _, b, s)| {
            let v: Value = serde_json::from_str(b).unwrap_or_default();
            (v["change"].as_str().unwrap_or("").to_string(), *s)
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("raised".to_string(), 500),
            ("raised".to_string(), 204),
            ("acknowledged".to_string(), 204),
            ("cleared".to_string(), 204),
        ]
    );
    assert_eq!(
        got[0].2, got[1].2,
        "the retry carries the same notification"
    );

    // A deleted rule is gone from the list.
    let (s, _) = call(
        Method::DELETE,
        &format!("{rules_url}/{rule_id}"),
        Some(&engineer),
        None,
    )
    .await?;
    assert_eq!(s, 204);
    let (_, list) = call(Method::GET, &rules_url, Some(&engineer), None).await?;
    assert_eq!(list["count"], 0, "{list}");
    Ok(())
}
