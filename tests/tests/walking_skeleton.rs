//! One reading's whole path: simulator (Modbus TCP) -> edge-agent -> sled ->
//! gRPC -> cloud-hub -> PostgreSQL -> REST. Real processes, real sockets.

use anyhow::{Context, Result};
use device_values::expected_values;
use e2e_tests::{Stack, get_json, wait_for};
use std::time::Duration;

mod device_values {
    use std::collections::BTreeMap;

    /// What the simulator serves in `--constant` mode: each point's `sim.base`,
    /// as it survives the trip through the point's register type.
    pub fn expected_values() -> BTreeMap<String, (f64, String)> {
        let text = std::fs::read_to_string(e2e_tests::profiles_dir().join("eastron-sdm630.toml"))
            .expect("profile readable");
        let v: toml::Value = toml::from_str(&text).expect("profile parses");
        let mut out = BTreeMap::new();
        for p in v["points"].as_array().expect("points") {
            let base = p["sim"]["base"].as_float().expect("sim.base");
            let value = match p["type"].as_str() {
                Some("f32") => f64::from(base as f32),
                _ => base.round(),
            };
            out.insert(
                p["name"].as_str().expect("name").to_string(),
                (value, p["unit"].as_str().expect("unit").to_string()),
            );
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_travel_from_simulator_to_rest_api() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(true).await?;
    let before = chrono::Utc::now();
    let cfg = stack.write_agent_config("gw-e2e", 200, "")?;
    stack.start_agent(&cfg).await?;

    let expected = expected_values();
    let url = format!(
        "{}/api/v1/readings?device=meter-1&limit=1000&from={}",
        stack.hub_url(),
        before
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .replace('+', "%2B")
    );
    // Every point of the profile must show up.
    let rows = wait_for(
        "a reading of every SDM630 point at the hub",
        Duration::from_secs(20),
        || async {
            let (status, body) = get_json(&url).await?;
            anyhow::ensure!(status == 200, "status {status}: {body}");
            let rows = body["readings"].as_array().cloned().unwrap_or_default();
            let metrics: std::collections::BTreeSet<String> = rows
                .iter()
                .filter_map(|r| r["metric"].as_str().map(String::from))
                .collect();
            Ok((metrics.len() == expected.len()).then_some(rows))
        },
    )
    .await
    .with_context(|| stack.logs())?;

    let now = chrono::Utc::now();
    for r in &rows {
        let metric = r["metric"].as_str().context("metric")?;
        let (value, unit) = &expected[metric];
        assert_eq!(r["gateway_id"], "gw-e2e");
        assert_eq!(r["device_id"], "meter-1");
        assert_eq!(r["value"].as_f64(), Some(*value), "value of {metric}");
        assert_eq!(r["unit"].as_str(), Some(unit.as_str()), "unit of {metric}");
        assert_eq!(r["quality"], "good");
        let ts: chrono::DateTime<chrono::Utc> = r["ts"].as_str().context("ts")?.parse()?;
        assert!(
            ts >= before && ts <= now,
            "timestamp {ts} of {metric} outside [{before}, {now}]"
        );
    }

    // Devices list shows the meter with a recent last-seen time.
    let (status, body) = get_json(&format!("{}/api/v1/devices", stack.hub_url())).await?;
    assert_eq!(status, 200);
    let devices = body["devices"].as_array().context("devices")?;
    assert_eq!(devices.len(), 1, "{body}");
    assert_eq!(devices[0]["device_id"], "meter-1");
    assert_eq!(devices[0]["gateway_id"], "gw-e2e");
    let last_seen: chrono::DateTime<chrono::Utc> = devices[0]["last_seen"]
        .as_str()
        .context("last_seen")?
        .parse()?;
    assert!(last_seen >= before);

    // Readiness names the storage tier; the agent reports itself healthy.
    let (status, ready) = get_json(&format!("{}/ready", stack.hub_url())).await?;
    assert_eq!(status, 200);
    assert_eq!(ready["storage_tier"], e2e_tests::pg::test_tier().as_str());
    let health = stack.agent_health().await?;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["uplink"]["state"], "connected");
    assert_eq!(health["devices"][0]["state"], "online");

    // Clean shutdown on SIGTERM: both exit 0, and the agent flushed its buffer.
    let agent = stack.agent.take().context("agent")?;
    let st = agent.terminate(Duration::from_secs(10))?;
    assert!(st.success(), "edge-agent exit status {st}");
    let hub = stack.hub.take().context("hub")?;
    let st = hub.terminate(Duration::from_secs(10))?;
    assert!(st.success(), "cloud-hub exit status {st}");
    Ok(())
}
