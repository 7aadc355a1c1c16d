//! Searching the twin registry against a real hub and PostgreSQL: typed
//! attributes checked against a type, keyset pages that never repeat or
//! skip, sorting, attribute, text and location filters, and the rules of
//! types (optimistic concurrency, types in use, reserved profile ids).

use anyhow::{Context, Result, ensure};
use cloud_hub::identity::Role;
use e2e_tests::hub_auth::{call, call_if_match as if_match, hub, new_key};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_pages_sorts_and_finds_by_place_and_attribute() -> Result<()> {
    let stack = hub().await?;
    let api = format!("{}/api/v1", stack.hub_url());
    let eng = new_key(&stack, Role::Engineer, None).await?;
    // A type whose twins must say their area.
    let (s, v) = call(Method::POST, &format!("{api}/twin-types"), Some(&eng), Some(&json!({
        "type_id": "pv-module-60", "kind": "sample", "name": "60-cell PV module",
        "attributes": {"area_m2": {"type": "number", "required": true, "unit": "m2"}, "maker": {"type": "string"}}
    }))).await?;
    ensure!(s == 201, "{s} {v}");
    let (s, v) = call(
        Method::POST,
        &format!("{api}/twins"),
        Some(&eng),
        Some(&json!({
        "twin_id": "no-area", "kind": "sample", "serial_number": "NA", "type_id": "pv-module-60"})),
    )
    .await?;
    ensure!(
        s == 409 && v["message"].as_str().is_some_and(|m| m.contains("area_m2")),
        "{s} {v}"
    );
    for i in 0..25 {
        let (s, v) = call(Method::POST, &format!("{api}/twins"), Some(&eng), Some(&json!({
            "twin_id": format!("mod-{i:02}"), "kind": "sample", "serial_number": format!("SN-{i:02}"),
            "name": format!("module {}", 24 - i), "type_id": "pv-module-60",
            "attributes": {"area_m2": if i % 2 == 0 { 1.6 } else { 1.75 }, "maker": if i < 5 { "acme" } else { "other" }}
        }))).await?;
        ensure!(s == 201, "{s} {v}");
    }
    // Three pages of 10, none repeated, in order.
    let mut seen = Vec::new();
    let mut url = format!("{api}/twins?kind=sample&limit=10");
    loop {
        let (s, v) = call(Method::GET, &url, Some(&eng), None).await?;
        ensure!(s == 200, "{s} {v}");
        for t in v["twins"].as_array().context("twins")? {
            seen.push(t["twin_id"].as_str().context("id")?.to_string());
        }
        match v["next"].as_str() {
            Some(c) => url = format!("{api}/twins?kind=sample&limit=10&cursor={c}"),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("mod-{i:02}")).collect();
    ensure!(seen == want, "{seen:?}");
    let (_, v) = call(
        Method::GET,
        &format!("{api}/twins?kind=sample&sort=-name&limit=3"),
        Some(&eng),
        None,
    )
    .await?;
    let names: Vec<&str> = v["twins"]
        .as_array()
        .context("twins")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    ensure!(names == ["module 9", "module 8", "module 7"], "{names:?}");
    let (_, v) = call(
        Method::GET,
        &format!("{api}/twins?attr=maker:acme"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(v["count"] == 5, "{v}");
    let (_, v) = call(
        Method::GET,
        &format!("{api}/twins?attr=area_m2:1.75&type=pv-module-60"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(v["count"] == 12, "{v}");
    let (_, v) = call(
        Method::GET,
        &format!("{api}/twins?q=SN-2"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(v["count"] == 5, "text search: {v}");
    let (s, v) = call(
        Method::GET,
        &format!("{api}/twins?cursor=garbage!"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(s == 400, "{s} {v}");

    // Location: Berlin, Potsdam (27 km), Munich (504 km).
    for (id, lat, lon) in [
        ("berlin", 52.52, 13.405),
        ("potsdam", 52.39, 13.065),
        ("munich", 48.137, 11.575),
    ] {
        let (s, v) = call(
            Method::POST,
            &format!("{api}/twins"),
            Some(&eng),
            Some(&json!({
            "twin_id": id, "kind": "site", "latitude": lat, "longitude": lon})),
        )
        .await?;
        ensure!(s == 201, "{s} {v}");
    }
    let ids = |v: &Value| -> Vec<String> {
        v["twins"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["twin_id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, v) = call(
        Method::GET,
        &format!("{api}/twins?near=52.52,13.405&radius_m=30000"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(ids(&v) == ["berlin", "potsdam"], "{v}");
    let (_, v) = call(
        Method::GET,
        &format!("{api}/twins?near=52.52,13.405&radius_m=20000"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(ids(&v) == ["berlin"], "{v}");
    let (_, v) = call(
        Method::GET,
        &format!("{api}/twins?bbox=47,10,49,12"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(ids(&v) == ["munich"], "{v}");

    // Types: stale replace, deleting a used type, reserved profile ids.
    let (_, t) = call(
        Method::GET,
        &format!("{api}/twin-types/pv-module-60"),
        Some(&eng),
        None,
    )
    .await?;
    let body = json!({"type_id": "pv-module-60", "kind": "sample", "name": "60-cell module", "attributes": {}});
    let (s, _) = if_match(
        Method::PUT,
        &format!("{api}/twin-types/pv-module-60"),
        &eng,
        &format!("\"{}\"", t["version"]),
        Some(&body),
    )
    .await?;
    ensure!(s == 200);
    let (s, _) = if_match(
        Method::PUT,
        &format!("{api}/twin-types/pv-module-60"),
        &eng,
        &format!("\"{}\"", t["version"]),
        Some(&body),
    )
    .await?;
    ensure!(s == 412, "{s}");
    let (s, _) = call(
        Method::DELETE,
        &format!("{api}/twin-types/pv-module-60"),
        Some(&eng),
        None,
    )
    .await?;
    ensure!(s == 409, "{s}");
    let (s, _) = call(
        Method::POST,
        &format!("{api}/twin-types"),
        Some(&eng),
        Some(&json!({"type_id": "profile:x", "kind": "instrument"})),
    )
    .await?;
    ensure!(s == 422, "{s}");
    Ok(())
}
