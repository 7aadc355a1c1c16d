//! Commands from the hub down the gateway's stream: durable at the hub until
//! the gateway reports a result, refused by the gateway when not allowed,
//! expired when their deadline passes.

use anyhow::{Context, Result};
use e2e_tests::peers::mbpoll_holding;
use e2e_tests::{Stack, get_json, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

async fn post(stack: &Stack, body: Value) -> Result<(u16, Value)> {
    let r = e2e_tests::http::Client::new()
        .post(format!(
            "{}/api/v1/gateways/gw-cmd/commands",
            stack.hub_url()
        ))
        .json(&body)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

async fn final_state(stack: &Stack, id: i64) -> Result<Value> {
    wait_for(
        &format!("command {id} to finish"),
        Duration::from_secs(20),
        || async {
            let (_, c) = get_json(&format!("{}/api/v1/commands/{id}", stack.hub_url())).await?;
            let done = matches!(
                c["state"].as_str(),
                Some("succeeded" | "failed" | "expired")
            );
            Ok(done.then_some(c))
        },
    )
    .await
    .with_context(|| stack.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_durable_checked_and_answered() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    // A Binder-style chamber (writable setpoint) on the simulator.
    stack.start_sim_with("binder-mk53", &[]).await?;
    let listen = format!("127.0.0.1:{}", stack.sim_port);
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"chamber\"\nprofile = \"binder-mk53\"\ntransport = {{ tcp = \"{listen}\" }}\npoll_interval_ms = 200\n"
    ))?;
    let text = std::fs::read_to_string(&cfg)?
        .replace("gateway_id = \"gw-acq\"", "gateway_id = \"gw-cmd\"")
        .replace("reconnect_min_ms = 1000", "reconnect_min_ms = 100");
    std::fs::write(&cfg, text)?;

    // Queued while the gateway is not connected, then the hub restarts: still delivered.
    let (s, c) = post(&stack, json!({"write_point": {"device": "chamber", "point": "temperature_setpoint", "value": 31.5}})).await?;
    assert_eq!(s, 202, "{c}");
    assert_eq!(c["state"], "pending");
    let id = c["id"].as_i64().context("id")?;
    stack.hub.take().context("hub")?.kill9()?;
    stack.start_hub().await?;
    stack.start_agent(&cfg).await?;
    let done = final_state(&stack, id).await?;
    assert_eq!(done["state"], "succeeded", "{done}");
    // The write reached the device, encoded as the profile says (CDAB float).
    let port = stack.sim_port;
    assert_eq!(
        mbpoll_holding(port, "4:float", 0x1077)?,
        vec![(0x1077, 31.5)]
    );

    // The gateway's rules apply to hub commands too.
    let (_, c) = post(
        &stack,
        json!({"write_point": {"device": "chamber", "point": "temperature", "value": 20}}),
    )
    .await?;
    let done = final_state(&stack, c["id"].as_i64().context("id")?).await?;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["result"]
            .as_str()
            .unwrap_or("")
            .contains("not writable"),
        "{done}"
    );
    let (_, c) = post(
        &stack,
        json!({"write_point": {"device": "ghost", "point": "x", "value": 1}}),
    )
    .await?;
    let done = final_state(&stack, c["id"].as_i64().context("id")?).await?;
    assert_eq!(done["state"], "failed", "{done}");

    // Reload: a device added to the file starts polling; the others keep going.
    let mut text = std::fs::read_to_string(&cfg)?;
    text.push_str(&format!(
        "\n[[devices]]\nid = \"chamber-2\"\nprofile = \"binder-mk53\"\ntransport = {{ tcp = \"{listen}\" }}\npoll_interval_ms = 200\n"
    ));
    std::fs::write(&cfg, &text)?;
    let (_, c) = post(&stack, json!({"reload_config": {}})).await?;
    let done = final_state(&stack, c["id"].as_i64().context("id")?).await?;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        done["result"].as_str().unwrap_or("").contains("2 devices"),
        "{done}"
    );
    wait_for(
        "the added device online",
        Duration::from_secs(10),
        || async {
            let d = stack.device("chamber-2").await.ok();
            Ok(d.filter(|d| d["state"] == "online").map(|_| ()))
        },
    )
    .await?;
    // A section a reload cannot apply says so in the result (and the log).
    let mut with_bus = text.clone();
    with_bus.push_str(&format!(
        "\n[mqtt]\nlisten = \"127.0.0.1:{}\"\n",
        e2e_tests::free_port()
    ));
    std::fs::write(&cfg, &with_bus)?;
    let (_, c) = post(&stack, json!({"reload_config": {}})).await?;
    let done = final_state(&stack, c["id"].as_i64().context("id")?).await?;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        done["result"]
            .as_str()
            .unwrap_or("")
            .contains("mqtt take effect after a restart"),
        "{done}"
    );
    // A broken file is refused with its line; nothing changes.
    std::fs::write(
        &cfg,
        text.replace("poll_interval_ms = 200", "poll_interval_ms = 0"),
    )?;
    let (_, c) = post(&stack, json!({"reload_config": {}})).await?;
    let done = final_state(&stack, c["id"].as_i64().context("id")?).await?;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["result"].as_str().unwrap_or("").contains("line"),
        "{done}"
    );
    let (_, devs) = get_json(&format!("{}/api/v1/devices", stack.agent_url())).await?;
    assert_eq!(devs.as_array().map(Vec::len), Some(2), "{devs}");

    // A command nobody picks up before its deadline expires.
    stack.agent.take().context("agent")?.kill9()?;
    let (_, c) = post(&stack, json!({"write_point": {"device": "chamber", "point": "temperature_setpoint", "value": 20}, "timeout_s": 1})).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let done = final_state(&stack, c["id"].as_i64().context("id")?).await?;
    assert_eq!(done["state"], "expired", "{done}");

    // Bad requests.
    for body in [
        json!({}),
        json!({"write_point": {"device": "chamber", "point": "p"}}),
        json!({"write_point": {"device": "", "point": "p", "value": 1}}),
        json!({"write_point": {"device": "d", "point": "p", "value": 1}, "timeout_s": 0}),
        json!({"reboot": true}),
    ] {
        let (s, b) = post(&stack, body.clone()).await?;
        assert_eq!(s, 400, "{body} -> {b}");
        assert_eq!(b["error"], "bad_request");
    }
    let (s, _) = get_json(&format!("{}/api/v1/commands/999999", stack.hub_url())).await?;
    assert_eq!(s, 404);
    Ok(())
}
