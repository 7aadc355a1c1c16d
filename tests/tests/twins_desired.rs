//! Desired state: an engineer sets a writable point of an instrument twin;
//! the hub carries it to the device as a durable command, shows it beside
//! the reported value with a drift flag, and re-sends it after the gateway
//! was away. Against instrument-sim (a Binder chamber), read back with mbpoll.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::hub_auth::{admin_token, call, new_key};
use e2e_tests::peers::mbpoll_holding;
use e2e_tests::{Stack, wait_for};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const TWIN: &str = "instrument:gw-desired:chamber";

struct Ctx {
    url: String,
    engineer: String,
}

impl Ctx {
    async fn put(&self, token: &str, point: &str, body: Value) -> Result<(u16, Value)> {
        call(
            Method::PUT,
            &format!("{}/api/v1/twins/{TWIN}/desired/{point}", self.url),
            Some(token),
            Some(&body),
        )
        .await
    }

    async fn points(&self, token: &str) -> Result<Value> {
        let (s, v) = call(
            Method::GET,
            &format!("{}/api/v1/twins/{TWIN}/desired", self.url),
            Some(token),
            None,
        )
        .await?;
        anyhow::ensure!(s == 200, "GET desired: {s} {v}");
        Ok(v["points"].clone())
    }

    /// Waits until the point's entry satisfies `ok`.
    async fn until(&self, what: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        wait_for(what, Duration::from_secs(secs), || async {
            let pts = self.points(&self.engineer).await?;
            Ok(pts
                .as_array()
                .and_then(|a| a.iter().find(|p| p["point"] == "temperature_setpoint"))
                .filter(|p| ok(p))
                .cloned())
        })
        .await
    }
}

async fn stored(pool: &sqlx::PgPool) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM desired_points), (SELECT count(*) FROM commands)",
    )
    .fetch_one(pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_values_reach_the_register_and_are_reconciled_after_an_outage() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim_with("binder-mk53", &[]).await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"chamber\"\nprofile = \"binder-mk53\"\ntransport = {{ tcp = \"127.0.0.1:{}\" }}\npoll_interval_ms = 200\n",
        stack.sim_port
    ))?;
    let text = std::fs::read_to_string(&cfg)?
        .replace("gateway_id = \"gw-acq\"", "gateway_id = \"gw-desired\"")
        .replace("reconnect_min_ms = 1000", "reconnect_min_ms = 100");
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;
    wait_for(
        "the chamber's twin typed from its profile",
        Duration::from_secs(20),
        || async {
            let t: Option<Option<String>> =
                sqlx::query_scalar("SELECT type_id FROM twins WHERE twin_id = $1")
                    .bind(TWIN)
                    .fetch_optional(&pool)
                    .await?;
            Ok(t.flatten()
                .filter(|t| t == "profile:binder-mk53")
                .map(|_| ()))
        },
    )
    .await
    .with_context(|| stack.logs())?;

    let ctx = Ctx {
        url: stack.hub_url(),
        engineer: new_key(&stack, Role::Engineer, None).await?,
    };
    let operator = new_key(&stack, Role::Operator, None).await?;
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let elsewhere = new_key(&stack, Role::Engineer, Some(vec!["site-elsewhere"])).await?;

    // Refusals change nothing.
    let nothing = stored(&pool).await?;
    for (who, token) in [
        ("operator", &operator),
        ("viewer", &viewer),
        ("other site", &elsewhere),
    ] {
        let (s, v) = ctx
            .put(token, "temperature_setpoint", json!({"value": 30}))
            .await?;
        assert_eq!(s, 403, "{who}: {v}");
    }
    for (point, body, why) in [
        ("temperature", json!({"value": 20}), "not writable"),
        ("operating_mode", json!({"value": 70000}), "outside"),
        ("operating_mode", json!({"value": -1}), "outside"),
        ("no_such_point", json!({"value": 1}), "not a metric"),
    ] {
        let (s, v) = ctx.put(&ctx.engineer, point, body.clone()).await?;
        assert_eq!(s, 422, "{point} {body}: {v}");
        assert!(v["message"].as_str().unwrap_or("").contains(why), "{v}");
    }
    for body in [
        json!({}),
        json!({"value": 1, "deadline_s": 0}),
        json!({"value": 1, "extra": 1}),
        json!({"value": null}),
    ] {
        let (s, v) = ctx
            .put(&ctx.engineer, "temperature_setpoint", body.clone())
            .await?;
        assert_eq!(s, 400, "{body}: {v}");
    }
    let (s, v) = call(
        Method::PUT,
        &format!("{}/api/v1/twins/gateway:gw-desired/desired/x", ctx.url),
        Some(&ctx.engineer),
        Some(&json!({"value": 1})),
    )
    .await?;
    assert_eq!(s, 409, "a gateway twin has no desired state: {v}");
    assert_eq!(
        stored(&pool).await?,
        nothing,
        "refused requests store nothing"
    );

    // Set: the command is queued, the register gets the value, the reported
    // value comes back through ingest and drift turns false.
    let (s, v) = ctx
        .put(
            &ctx.engineer,
            "temperature_setpoint",
            json!({"value": 31.5}),
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["attempts"].as_i64()),
        (Some("pending"), Some(1)),
        "{v}"
    );
    let applied = ctx
        .until("the setpoint applied and reported", 40, |p| {
            p["state"] == "applied" && p["drift"] == false && p["reported"] == 31.5
        })
        .await
        .with_context(|| stack.logs())?;
    assert_eq!(applied["unit"], "Cel", "{applied}");
    assert_eq!(
        mbpoll_holding(stack.sim_port, "4:float", 0x1077)?,
        vec![(0x1077, 31.5)]
    );
    let viewer_sees = ctx.points(&viewer).await?;
    assert_eq!(viewer_sees[0]["desired"], 31.5, "{viewer_sees}");

    // The gateway goes away; a value set meanwhile expires, then is re-sent
    // when the gateway is back, and applied.
    stack.agent.take().context("agent")?.kill9()?;
    let (s, v) = ctx
        .put(
            &ctx.engineer,
            "temperature_setpoint",
            json!({"value": 27.25, "deadline_s": 1}),
        )
        .await?;
    assert_eq!(s, 202, "{v}");
    // A twin whose device a command is still on its way to cannot be deleted.
    let (s, v) = call(
        Method::DELETE,
        &format!("{}/api/v1/twins/{TWIN}", stack.hub_url()),
        Some(&ctx.engineer),
        None,
    )
    .await?;
    assert!(
        s == 409 && v["message"].as_str().is_some_and(|m| m.contains("pending")),
        "{s} {v}"
    );
    let expired = ctx
        .until("the command expired", 10, |p| p["state"] == "expired")
        .await?;
    assert_eq!(expired["drift"], true, "{expired}");
    stack.start_agent(&cfg).await?;
    let again = ctx
        .until("the value re-sent and applied", 40, |p| {
            p["state"] == "applied" && p["drift"] == false && p["reported"] == 27.25
        })
        .await
        .with_context(|| stack.logs())?;
    assert_eq!(again["attempts"], 2, "{again}");
    assert_eq!(
        mbpoll_holding(stack.sim_port, "4:float", 0x1077)?,
        vec![(0x1077, 27.25)]
    );

    // A reconnect with nothing drifting re-sends nothing.
    let commands_before = stored(&pool).await?.1;
    stack.agent.take().context("agent")?.kill9()?;
    stack.start_agent(&cfg).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored(&pool).await?.1, commands_before);

    // Every step is in the audit trail.
    let (_, audit) = call(
        Method::GET,
        &format!(
            "{}/api/v1/audit?target=twin:{TWIN}/point:temperature_setpoint",
            ctx.url
        ),
        Some(&admin_token(&stack)),
        None,
    )
    .await?;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        vec!["desired.resend", "desired.set", "desired.set"],
        "{audit}"
    );

    // Stop reconciling.
    let url = format!(
        "{}/api/v1/twins/{TWIN}/desired/temperature_setpoint",
        ctx.url
    );
    let (s, _) = call(Method::DELETE, &url, Some(&viewer), None).await?;
    assert_eq!(s, 403);
    let (s, v) = call(Method::DELETE, &url, Some(&ctx.engineer), None).await?;
    assert_eq!(s, 204, "{v}");
    assert_eq!(ctx.points(&ctx.engineer).await?, json!([]));
    let (s, _) = call(Method::DELETE, &url, Some(&ctx.engineer), None).await?;
    assert_eq!(s, 404);
    let (s, _) = call(
        Method::GET,
        &format!("{}/api/v1/twins/nope/desired", ctx.url),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 404);
    Ok(())
}
