//! Fleet at reduced size (issue #18): `fleet-sim` publishes 2,000 devices
//! over MQTT (QoS 1, 100 devices per connection) to two agents (two sites)
//! for 10 s; every message an agent acknowledged must be at the real hub
//! (real PostgreSQL) exactly once. The full-size run (100k devices, 10
//! agents) is scripts/bench-fleet.sh.
// qi-test: tier-independent (the fleet simulator and MQTT at the agents (exactly-once ingest per tier: hub_ingest, store_and_forward)): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::{Stack, bin, free_port, wait_for};
use std::collections::HashMap;
use std::time::Duration;

const SITES: usize = 2;
const DEVICES: u32 = 2000;
const SECONDS: u64 = 10;
const PW: &str = "fleet-pw";
/// Readings in one fleet message (three metrics and the state).
const PER_MESSAGE: i64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_fleet_message_is_at_the_hub_once() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let hash = edge_agent::mqtt::auth::hash_password(PW, 1000);
    let mut agents = Vec::new();
    let mut site_args = Vec::new();
    for i in 0..SITES {
        let mqtt = free_port();
        let extra = format!(
            "[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\nsite = \"site-{i}\"\naccept_unknown_devices = true\npublish_polled = false\nmax_connections_per_address = 1000\n\n[[mqtt.users]]\nname = \"fleet\"\npassword_hash = \"{hash}\"\npublish = [\"site/site-{i}/+/+/telemetry\"]\n"
        );
        agents.push(
            stack
                .spawn_agent(
                    &format!("agent-{i}"),
                    &format!("gw-site-{i}"),
                    free_port(),
                    &extra,
                )
                .await?,
        );
        site_args.push(format!("site-{i}=127.0.0.1:{mqtt}"));
    }
    let report = stack.dir.path().join("fleet.json");
    let mut cmd = std::process::Command::new(bin("fleet-sim")?);
    cmd.arg("mqtt");
    for s in &site_args {
        cmd.args(["--site", s]);
    }
    cmd.args(["--devices", &DEVICES.to_string(), "--per-connection", "100"])
        .args(["--seconds", &SECONDS.to_string(), "--drain-s", "60"])
        .args(["--username", "fleet", "--report"])
        .arg(&report)
        .env("FLEET_SIM_PASSWORD", PW);
    let out = cmd.output().context("running fleet-sim")?;
    anyhow::ensure!(
        out.status.success(),
        "fleet-sim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    let acked = r["acked"].as_i64().context("acked")?;
    // No connection may have been refused or lost in this small run, and
    // every device must have had its say.
    for key in [
        "unacked",
        "skipped",
        "connect_failures",
        "connection_drops",
        "refused_connacks",
    ] {
        anyhow::ensure!(r[key] == 0, "{key} = {} in {}", r[key], brief(&r));
    }
    anyhow::ensure!(
        acked >= i64::from(DEVICES) * (SECONDS as i64 - 1),
        "too few acknowledged: {}",
        brief(&r)
    );
    let per_device: HashMap<String, [i64; 2]> = serde_json::from_value(r["per_device"].clone())?;

    let pool = stack.db().await?;
    let expected = acked * PER_MESSAGE;
    wait_for(
        "every acknowledged reading at the hub",
        Duration::from_secs(180),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM readings WHERE gateway_id LIKE 'gw-site-%'",
            )
            .fetch_one(&pool)
            .await?;
            Ok((n >= expected).then_some(()))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    // A late duplicate would still be on its way: give it a moment to land.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT gateway_id, device_id, count(*), count(DISTINCT (metric, ts)), count(DISTINCT ts)
         FROM readings WHERE gateway_id LIKE 'gw-site-%' GROUP BY gateway_id, device_id",
    )
    .fetch_all(&pool)
    .await?;
    anyhow::ensure!(
        rows.len() == DEVICES as usize,
        "{} devices at the hub, {DEVICES} published",
        rows.len()
    );
    let mut total = 0;
    for (gateway, device, count, distinct, messages) in rows {
        let [_, dev_acked] = per_device
            .get(&device)
            .with_context(|| format!("device {device} at the hub was never published"))?;
        let index: usize = device.rsplit('-').next().context("index")?.parse()?;
        anyhow::ensure!(
            gateway == format!("gw-site-{}", index % SITES),
            "{device} stored under {gateway}"
        );
        anyhow::ensure!(
            count == distinct,
            "{device}: {count} rows, {distinct} distinct: duplicates"
        );
        anyhow::ensure!(
            messages == *dev_acked && count == dev_acked * PER_MESSAGE,
            "{device}: {messages} messages ({count} rows) at the hub, {dev_acked} acknowledged"
        );
        total += count;
    }
    anyhow::ensure!(
        total == expected,
        "{total} rows at the hub, {expected} acknowledged"
    );
    for a in agents {
        a.terminate(Duration::from_secs(20))?;
    }
    Ok(())
}

/// The report without its per-device table.
fn brief(r: &serde_json::Value) -> String {
    let mut r = r.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("per_device");
    }
    r.to_string()
}
