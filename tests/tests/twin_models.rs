//! Instrument models from firmware profiles: the agent's Hello names each
//! device's profile, and the hub turns it into a twin type the instrument's
//! twin gets, without overriding a type an engineer chose.

use anyhow::{Context, Result};
use e2e_tests::grpc::{Client, exchange, hello};
use e2e_tests::{Stack, wait_for};
use qi_proto::v1::{DeviceInfo, PointInfo, edge_message};
use serde_json::Value;
use std::time::Duration;

async fn twin_type(
    pool: &sqlx::PgPool,
    gw: &str,
    dev: &str,
) -> Result<Option<(String, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT twin_id, type_id FROM twins
          WHERE kind = 'instrument' AND gateway_id = $1 AND device_id = $2 AND deleted_at IS NULL",
    )
    .bind(gw)
    .bind(dev)
    .fetch_optional(pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instrument_gets_its_model_from_its_firmware_profile() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(true).await?;
    let cfg = stack.write_agent_config("gw-models", 500, "")?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;

    let (twin, ty) = wait_for(
        "the meter's twin typed",
        Duration::from_secs(20),
        || async {
            Ok(twin_type(&pool, "gw-models", "meter-1")
                .await?
                .filter(|(_, t)| t.is_some()))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    assert_eq!(ty.as_deref(), Some("profile:eastron-sdm630"), "{twin}");

    let (kind, source, name, manufacturer, device_type, version, metrics): (
        String,
        String,
        String,
        String,
        String,
        i64,
        Value,
    ) = sqlx::query_as(
        "SELECT kind, source, name, manufacturer, device_type, version, metrics
           FROM twin_types WHERE type_id = 'profile:eastron-sdm630'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        (kind.as_str(), source.as_str(), name.as_str()),
        ("instrument", "profile", "SDM630 Modbus V2")
    );
    assert_eq!(
        (manufacturer.as_str(), device_type.as_str()),
        ("Eastron", "energy-meter")
    );
    let profile =
        device_profile::Profile::load_by_id(&e2e_tests::profiles_dir(), "eastron-sdm630")?;
    let listed: Vec<&str> = metrics
        .as_array()
        .context("metrics array")?
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    let reported: Vec<&str> = profile
        .points
        .iter()
        .filter(|p| p.report)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(listed, reported, "{metrics}");
    let v1 = metrics
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == "voltage_l1"))
        .context("voltage_l1")?;
    assert_eq!(v1["unit"], "V");
    assert_eq!(v1["writable"], false);
    println!(
        "type profile:eastron-sdm630: {} metrics, version {version}",
        listed.len()
    );

    // The same profile again (agent restart): no new version.
    stack.agent.take().context("agent")?.kill9()?;
    stack.start_agent(&cfg).await?;
    wait_for("the agent reconnected", Duration::from_secs(20), || async {
        let h = stack.agent_health().await?;
        Ok((h["uplink"]["connects"].as_u64() >= Some(1)).then_some(()))
    })
    .await?;
    let v: i64 = sqlx::query_scalar(
        "SELECT version FROM twin_types WHERE type_id = 'profile:eastron-sdm630'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(v, version, "unchanged content keeps its version");

    // A type an engineer chose is never overridden by the profile's.
    sqlx::query("INSERT INTO twin_types (type_id, kind, name, source) VALUES ('user:meter', 'instrument', 'ours', 'user')")
        .execute(&pool)
        .await?;
    sqlx::query("UPDATE twins SET type_id = 'user:meter' WHERE twin_id = $1")
        .bind(&twin)
        .execute(&pool)
        .await?;
    let url = format!("http://127.0.0.1:{}", stack.grpc_port);
    let info = |dev: &str, desc: &str| DeviceInfo {
        device_id: dev.into(),
        profile_id: "eastron-sdm630".into(),
        manufacturer: "Eastron".into(),
        model: "SDM630 Modbus V2".into(),
        device_type: "energy-meter".into(),
        description: desc.into(),
        points: vec![PointInfo {
            name: "voltage_l1".into(),
            unit: "V".into(),
            ..Default::default()
        }],
    };
    let with_devices = |gw: &str, devices: Vec<DeviceInfo>| {
        let mut m = hello(gw);
        if let Some(edge_message::Kind::Hello(h)) = &mut m.kind {
            h.devices = devices;
        }
        m
    };
    let (_, err) = exchange(
        &Client::plain(&url),
        vec![with_devices("gw-models", vec![info("meter-1", "changed")])],
    )
    .await?;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        twin_type(&pool, "gw-models", "meter-1")
            .await?
            .and_then(|t| t.1)
            .as_deref(),
        Some("user:meter")
    );
    // Changed content: a new version of the profile's type.
    let v: i64 = sqlx::query_scalar(
        "SELECT version FROM twin_types WHERE type_id = 'profile:eastron-sdm630'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(v, version + 1);

    // Bad device info is refused with a clear status, and nothing is written.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM twins")
        .fetch_one(&pool)
        .await?;
    let mut bad = info("meter-new", "x");
    bad.points[0].min = Some(10.0);
    bad.points[0].max = Some(1.0);
    let (_, err) = exchange(
        &Client::plain(&url),
        vec![with_devices("gw-bad", vec![info("meter-ok", "fine"), bad])],
    )
    .await?;
    let err = err.context("refused")?;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("above max"), "{}", err.message());
    let long = info(
        "meter-long",
        &"x".repeat(qi_proto::limits::MAX_TEXT_LEN + 1),
    );
    let (_, err) = exchange(
        &Client::plain(&url),
        vec![with_devices("gw-bad", vec![long])],
    )
    .await?;
    assert!(err.context("refused")?.message().contains("description"));
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM twins")
        .fetch_one(&pool)
        .await?;
    assert_eq!(before, after, "a refused Hello writes nothing");
    let gws: i64 = sqlx::query_scalar("SELECT count(*) FROM gateways WHERE gateway_id = 'gw-bad'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(gws, 0);
    let text = e2e_tests::http::get(format!("{}/metrics", stack.hub_url()))
        .await?
        .text()
        .await?;
    assert!(
        text.contains("hub_ingest_rejected_total{reason=\"bad_device_info\"} 2"),
        "{text}"
    );
    Ok(())
}
