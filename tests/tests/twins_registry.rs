//! The twin registry against a real hub and PostgreSQL: discovery at
//! ingest, placing twins in a site > area > bench tree, graph queries as of
//! a time, live state from ingest, search with pagination and location,
//! optimistic concurrency, soft delete with history, and every kind of bad
//! input refused with nothing half-written.

use anyhow::{Context, Result, ensure};
use cloud_hub::identity::Role;
use e2e_tests::grpc::{Client, batch, exchange, hello, reading};
use e2e_tests::hub_auth::{admin_token, call, call_if_match as if_match, hub, new_key, pool};
use reqwest::Method;
use serde_json::{Value, json};

/// Rows of the registry's tables: a refused write must leave them alone.
async fn registry_rows(pool: &sqlx::PgPool) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for t in ["twins", "twin_types", "twin_relations", "audit_log"] {
        out.push(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
                .fetch_one(pool)
                .await?,
        );
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_instruments_are_placed_queried_and_kept_consistent() -> Result<()> {
    let stack = hub().await?;
    let api = format!("{}/api/v1", stack.hub_url());
    let eng = new_key(&stack, Role::Engineer, None).await?;
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let operator = new_key(&stack, Role::Operator, None).await?;

    // Discovery: a gateway and its device appear at ingest.
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let readings: Vec<_> = (1..=5).map(|i| reading(i, 229.0 + i as f64)).collect();
    let (_, err) = exchange(&client, vec![hello("gw-t"), batch(readings)]).await?;
    ensure!(err.is_none(), "ingest: {err:?}");
    let inst = "instrument:gw-t:meter-x";
    let (s, t) = call(
        Method::GET,
        &format!("{api}/twins/{inst}"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(s == 200, "discovered twin: {s} {t}");
    ensure!(t["discovered"] == true && t["kind"] == "instrument", "{t}");
    let m = &t["state"]["metrics"][0];
    ensure!(
        m["metric"] == "voltage_l1" && m["value"] == 234.0 && m["unit"] == "V",
        "live state is the latest reading: {m}"
    );
    ensure!(
        m["history"]["aggregates"]
            .as_str()
            .is_some_and(|a| a.contains("series=")),
        "{m}"
    );
    // The test's uplink stream has ended: the gateway is offline.
    ensure!(
        t["state"]["health"]["gateway"] == "gw-t" && t["state"]["health"]["online"] == false,
        "{t}"
    );
    let (s, rels) = call(
        Method::GET,
        &format!("{api}/twins/{inst}/relations?kind=connected_to"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(
        s == 200 && rels["relations"][0]["target_id"] == "gateway:gw-t",
        "{rels}"
    );

    // An engineer builds the lab: site > area > bench, and places the
    // gateway in the site and the instrument on the bench.
    let post = |body: Value| {
        let (api, eng) = (api.clone(), eng.clone());
        async move {
            call(
                Method::POST,
                &format!("{api}/twins"),
                Some(&eng),
                Some(&body),
            )
            .await
        }
    };
    let (s, v) = post(
        json!({"twin_id": "lab-berlin", "kind": "site", "name": "Berlin lab",
        "latitude": 52.52, "longitude": 13.405}),
    )
    .await?;
    ensure!(s == 201, "{s} {v}");
    let (s, v) = post(
        json!({"twin_id": "lab-munich", "kind": "site", "latitude": 48.137, "longitude": 11.575}),
    )
    .await?;
    ensure!(s == 201, "{s} {v}");
    let (s, v) = post(json!({"twin_id": "hall-1", "kind": "area", "parent": "lab-berlin"})).await?;
    ensure!(s == 201, "{s} {v}");
    let (s, v) = post(
        json!({"twin_id": "bench-3", "kind": "bench", "parent": "hall-1",
        "metadata": {"max_temperature_c": 90}}),
    )
    .await?;
    ensure!(s == 201, "{s} {v}");
    let before_placing = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for (parent, child) in [("lab-berlin", "gateway:gw-t"), ("bench-3", inst)] {
        let (s, v) = call(
            Method::POST,
            &format!("{api}/relations"),
            Some(&eng),
            Some(&json!({"kind": "contains", "source": parent, "target": child})),
        )
        .await?;
        ensure!(s == 201, "place {child}: {s} {v}");
    }
    let (_, t) = call(
        Method::GET,
        &format!("{api}/twins/{inst}"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(
        t["discovered"] == false && t["site"] == "lab-berlin",
        "placed: {t}"
    );
    let (_, a) = call(
        Method::GET,
        &format!("{api}/twins/{inst}/ancestors"),
        Some(&viewer),
        None,
    )
    .await?;
    let chain: Vec<&str> = a["ancestors"]
        .as_array()
        .context("ancestors")?
        .iter()
        .filter_map(|n| n["twin_id"].as_str())
        .collect();
    ensure!(chain == ["bench-3", "hall-1", "lab-berlin"], "{a}");
    let at = before_placing.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, a) = call(
        Method::GET,
        &format!("{api}/twins/{inst}/ancestors?at={}", urlencode(&at)),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(
        a["ancestors"].as_array().is_some_and(Vec::is_empty),
        "as of before placing: {a}"
    );
    let (_, d) = call(
        Method::GET,
        &format!("{api}/twins/lab-berlin/descendants"),
        Some(&viewer),
        None,
    )
    .await?;
    let mut below: Vec<&str> = d["descendants"]
        .as_array()
        .context("descendants")?
        .iter()
        .filter_map(|n| n["twin_id"].as_str())
        .collect();
    below.sort_unstable();
    ensure!(below == ["bench-3", "gateway:gw-t", "hall-1", inst], "{d}");
    let (_, d) = call(
        Method::GET,
        &format!("{api}/twins/lab-berlin/descendants?kind=instrument"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(d["count"] == 1, "{d}");

    // Bad input: each a clear 4xx, nothing written.
    let pg = pool(&stack).await?;
    let rows = registry_rows(&pg).await?;
    let refusals: Vec<(Value, &str, u16)> = vec![
        (
            json!({"kind": "contains", "source": "bench-3", "target": "lab-berlin"}),
            "relations",
            409,
        ),
        (
            json!({"kind": "contains", "source": "hall-1", "target": "hall-1"}),
            "relations",
            409,
        ),
        (
            json!({"kind": "contains", "source": "bench-3", "target": "no-such-twin"}),
            "relations",
            404,
        ),
        (
            json!({"kind": "measures", "source": inst, "target": "hall-1"}),
            "relations",
            409,
        ),
        (json!({"twin_id": "x1", "kind": "robot"}), "twins", 422),
        // serde would take a struct's fields by position from an array.
        (json!(["x1", "site"]), "twins", 400),
        (
            json!(["relations-by-position", "hall-1", "bench-3"]),
            "relations",
            400,
        ),
        (json!({"twin_id": "bad id/", "kind": "site"}), "twins", 422),
        (json!({"twin_id": "s-1", "kind": "sample"}), "twins", 422),
        (
            json!({"twin_id": "x2", "kind": "site", "latitude": 91, "longitude": 0}),
            "twins",
            422,
        ),
        (
            json!({"twin_id": "x3", "kind": "site", "gateway_id": "gw-t"}),
            "twins",
            422,
        ),
        (
            json!({"twin_id": "x4", "kind": "bench", "parent": "nowhere"}),
            "twins",
            404,
        ),
        (
            json!({"twin_id": "x5", "kind": "bench", "metadata": {"blob": "x".repeat(20_000)}}),
            "twins",
            422,
        ),
        (
            json!({"twin_id": "x6", "kind": "instrument", "type_id": "no-such-type"}),
            "twins",
            404,
        ),
        (json!({"twin_id": "hall-1", "kind": "area"}), "twins", 409),
        (
            json!({"twin_id": "x7", "kind": "instrument", "gateway_id": "gw-t", "device_id": "meter-x"}),
            "twins",
            409,
        ),
    ];
    for (body, path, want) in &refusals {
        let (s, v) = call(
            Method::POST,
            &format!("{api}/{path}"),
            Some(&eng),
            Some(body),
        )
        .await?;
        ensure!(
            s == *want && v["message"].is_string(),
            "{body}: {s} {v}, wanted {want}"
        );
    }
    // A cycle through a longer path: the site into its own bench.
    let (s, v) = call(
        Method::POST,
        &format!("{api}/relations"),
        Some(&eng),
        Some(&json!({"kind": "contains", "source": "hall-1", "target": "lab-berlin"})),
    )
    .await?;
    ensure!(s == 409, "{s} {v}");
    ensure!(
        registry_rows(&pg).await? == rows,
        "refused writes changed the registry"
    );

    // Samples: duplicate serial numbers refused.
    let (s, _) = post(json!({"twin_id": "pv-001", "kind": "sample", "serial_number": "SN-001", "parent": "bench-3"})).await?;
    ensure!(s == 201);
    let (s, v) =
        post(json!({"twin_id": "pv-001b", "kind": "sample", "serial_number": "SN-001"})).await?;
    ensure!(
        s == 409 && v["message"].as_str().is_some_and(|m| m.contains("SN-001")),
        "{s} {v}"
    );

    // Roles: viewers and operators read, only engineers write.
    for who in [&viewer, &operator] {
        let (s, _) = call(
            Method::POST,
            &format!("{api}/twins"),
            Some(who),
            Some(&json!({"twin_id": "r1", "kind": "site"})),
        )
        .await?;
        ensure!(s == 403, "{s}");
    }
    let (s, _) = call(Method::GET, &format!("{api}/twins"), None, None).await?;
    ensure!(s == 401);

    // Optimistic concurrency: a write on top of an old version is 412.
    let (_, b) = call(
        Method::GET,
        &format!("{api}/twins/bench-3"),
        Some(&viewer),
        None,
    )
    .await?;
    let v1 = b["version"].as_i64().context("version")?;
    let (s, b2) = if_match(
        Method::PATCH,
        &format!("{api}/twins/bench-3"),
        &eng,
        &format!("\"{v1}\""),
        Some(&json!({"name": "Bench 3", "metadata": {"max_temperature_c": 85, "owner": "pv"}})),
    )
    .await?;
    ensure!(s == 200 && b2["version"] == v1 + 1, "{s} {b2}");
    ensure!(
        b2["metadata"] == json!({"max_temperature_c": 85, "owner": "pv"}),
        "{b2}"
    );
    let (s, v) = if_match(
        Method::PATCH,
        &format!("{api}/twins/bench-3"),
        &eng,
        &format!("\"{v1}\""),
        Some(&json!({"name": "lost update"})),
    )
    .await?;
    ensure!(s == 412, "stale write: {s} {v}");
    // A patch invalid in itself is refused as invalid, whatever version it
    // names (schemathesis found 412 here for an out-of-range latitude).
    let (s, v) = if_match(
        Method::PATCH,
        &format!("{api}/twins/bench-3"),
        &eng,
        &format!("\"{v1}\""),
        Some(&json!({"latitude": -1.0e308, "longitude": 0.0})),
    )
    .await?;
    ensure!(
        s == 409
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("latitude")),
        "invalid and stale: {s} {v}"
    );
    let (_, b3) = call(
        Method::GET,
        &format!("{api}/twins/bench-3"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(b3["name"] == "Bench 3", "{b3}");

    // Soft delete: refused while it contains twins; then the history stays.
    let (s, v) = call(
        Method::DELETE,
        &format!("{api}/twins/bench-3"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(s == 409, "delete a bench with an instrument on it: {s} {v}");
    let before_delete = chrono::Utc::now();
    let (s, v) = call(
        Method::DELETE,
        &format!("{api}/twins/pv-001"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(s == 200 && v["deleted_at"].is_string(), "{s} {v}");
    let (s, v) = call(
        Method::GET,
        &format!("{api}/twins?q=pv-001"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(
        s == 200 && v["count"] == 0,
        "deleted twins are not listed: {v}"
    );
    let (_, v) = call(
        Method::GET,
        &format!("{api}/twins?q=pv-001&deleted=true"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(v["count"] == 1, "unless asked for: {v}");
    // The twin itself is gone (an API client must not act on it), its
    // record is not: the 404 says when and where that record is.
    let (s, v) = call(
        Method::GET,
        &format!("{api}/twins/pv-001"),
        Some(&viewer),
        None,
    )
    .await?;
    let msg = v["message"].as_str().unwrap_or_default();
    ensure!(
        s == 404 && msg.contains("was deleted at") && msg.contains("/api/v1/twins/pv-001/history"),
        "a deleted twin: {s} {v}"
    );
    let (s, v) = call(
        Method::GET,
        &format!("{api}/twins/never-created/history"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(s == 404, "history of an id never created: {s} {v}");
    let (_, h) = call(
        Method::GET,
        &format!("{api}/twins/pv-001/history"),
        Some(&viewer),
        None,
    )
    .await?;
    let actions: Vec<&str> = h["changes"]
        .as_array()
        .context("changes")?
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    ensure!(
        actions.first() == Some(&"twin.delete")
            && actions.contains(&"twin.create")
            && actions.contains(&"relation.create"),
        "{actions:?}"
    );
    // Its current views are gone with it; its records and its dated past stay.
    for (path, want) in [("desired", 404), ("ancestors", 404), ("calibrations", 200)] {
        let (s, v) = call(
            Method::GET,
            &format!("{api}/twins/pv-001/{path}"),
            Some(&viewer),
            None,
        )
        .await?;
        ensure!(s == want, "{path} of a deleted twin: {s} {v}");
    }
    let at = before_delete.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (s, a) = call(
        Method::GET,
        &format!("{api}/twins/pv-001/ancestors?at={}", urlencode(&at)),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(
        s == 200 && a["ancestors"][0]["twin_id"] == "bench-3",
        "a deleted twin's place before its deletion: {s} {a}"
    );
    // The serial number is free again once its sample is deleted.
    let (s, v) =
        post(json!({"twin_id": "pv-001-retest", "kind": "sample", "serial_number": "SN-001"}))
            .await?;
    ensure!(s == 201, "{s} {v}");

    // A twin whose device has a command pending cannot be deleted.
    let (s, v) = call(Method::POST, &format!("{api}/gateways/gw-t/commands"), Some(&operator),
        Some(&json!({"write_point": {"device": "meter-x", "point": "relay", "value": 1}, "timeout_s": 600}))).await?;
    ensure!(s == 202, "{s} {v}");
    let (s, v) = call(
        Method::POST,
        &format!("{api}/relations"),
        Some(&eng),
        Some(&json!({"kind": "contains", "source": "hall-1", "target": inst})),
    )
    .await?;
    ensure!(s == 201, "move the instrument off the bench: {s} {v}");
    let (s, v) = call(
        Method::DELETE,
        &format!("{api}/twins/{inst}"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(
        s == 409 && v["message"].as_str().is_some_and(|m| m.contains("pending")),
        "{s} {v}"
    );
    let (_, a) = call(
        Method::GET,
        &format!("{api}/twins/{inst}/ancestors"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(a["ancestors"][0]["twin_id"] == "hall-1", "moved: {a}");
    let (_, r) = call(
        Method::GET,
        &format!("{api}/twins/{inst}/relations?kind=contains&direction=in"),
        Some(&viewer),
        None,
    )
    .await?;
    ensure!(
        r["count"] == 2,
        "the old placement stays in the graph, ended: {r}"
    );

    // Site-limited callers see and touch only their sites.
    let munich = new_key(&stack, Role::Engineer, Some(vec!["lab-munich"])).await?;
    let (s, _) = call(
        Method::GET,
        &format!("{api}/twins/bench-3"),
        Some(&munich),
        None,
    )
    .await?;
    ensure!(s == 403, "{s}");
    let (s, v) = call(Method::GET, &format!("{api}/twins"), Some(&munich), None).await?;
    let ids: Vec<&str> = v["twins"]
        .as_array()
        .context("twins")?
        .iter()
        .filter_map(|t| t["twin_id"].as_str())
        .collect();
    ensure!(s == 200 && ids == ["lab-munich"], "{ids:?}");
    let (s, _) = call(
        Method::POST,
        &format!("{api}/twins"),
        Some(&munich),
        Some(&json!({"twin_id": "m-area", "kind": "area"})),
    )
    .await?;
    ensure!(
        s == 403,
        "an unplaced twin from a site-limited engineer: {s}"
    );
    let (s, v) = call(
        Method::POST,
        &format!("{api}/twins"),
        Some(&munich),
        Some(&json!({"twin_id": "m-area", "kind": "area", "parent": "lab-munich"})),
    )
    .await?;
    ensure!(s == 201, "{s} {v}");
    let (s, _) = call(
        Method::POST,
        &format!("{api}/relations"),
        Some(&munich),
        Some(&json!({"kind": "contains", "source": "m-area", "target": "bench-3"})),
    )
    .await?;
    ensure!(s == 403, "pulling another site's bench: {s}");
    let _ = admin_token(&stack);
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
