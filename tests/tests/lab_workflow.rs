//! The lab's work flow at the hub (issue #14): a service request registered
//! by an operator, its samples as twins, intake inspections whose defect
//! counts become sample observations, photos checked by their bytes and
//! bounded by `[lab]`, and the request's explicit states, each change
//! audited; viewers read, and hostile bodies are refused and counted.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::Stack;
use e2e_tests::hub_auth::{admin_token, call, call_if_match, new_key, pool};
use reqwest::Method;
use serde_json::{Value, json};

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

async fn upload(url: &str, token: &str, ty: &str, bytes: Vec<u8>) -> Result<(u16, Value)> {
    let r = e2e_tests::http::Client::bare()
        .post(url)
        .bearer_auth(token)
        .header("content-type", ty)
        .body(bytes)
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_request_goes_from_intake_to_completion_with_inspected_samples() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.hub_after = "[lab]\nmax_photo_bytes = 1000\nmax_photos_per_inspection = 2\n".into();
    stack.start_hub().await?;
    let hub = stack.hub_url();
    let operator = new_key(&stack, Role::Operator, None).await?;
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let sited = new_key(&stack, Role::Operator, Some(vec!["site:x"])).await?;
    let requests = format!("{hub}/api/v1/service-requests");
    let body = json!({"customer": "Solar GmbH", "module_type": "SG-400M", "protocols": ["stc-power", "tc200", "stc-power"]});

    // Who may register: operators, not viewers, not callers limited to sites.
    for (token, want) in [(&viewer, 403), (&sited, 403)] {
        let (s, v) = call(Method::POST, &requests, Some(token), Some(&body)).await?;
        assert_eq!(s, want, "{v}");
    }
    // Hostile bodies: nothing is registered.
    for (bad, want) in [
        (json!([1, 2]), 400),
        (
            json!({"customer": "", "module_type": "m", "protocols": ["x"]}),
            422,
        ),
        (
            json!({"customer": "c", "module_type": "m", "protocols": []}),
            422,
        ),
        (
            json!({"customer": "c", "module_type": "m", "protocols": ["../etc"]}),
            422,
        ),
        (
            json!({"customer": "c\u{0}", "module_type": "m", "protocols": ["x"]}),
            422,
        ),
        (
            json!({"customer": "c", "module_type": "m", "protocols": ["x"], "admin": true}),
            422,
        ),
    ] {
        let (s, v) = call(Method::POST, &requests, Some(&operator), Some(&bad)).await?;
        assert!(s == want || (want == 422 && s == 400), "{bad}: {s} {v}");
    }
    let (s, sr) = call(Method::POST, &requests, Some(&operator), Some(&body)).await?;
    assert_eq!(s, 201, "{sr}");
    let id = sr["request_id"].as_str().context("id")?.to_string();
    assert!(id.starts_with("SR-"), "{id}");
    assert_eq!(sr["state"], "received");
    let url = format!("{requests}/{id}");

    // Samples are twins; a serial number is registered once.
    let samples = format!("{url}/samples");
    let (s, t) = call(
        Method::POST,
        &samples,
        Some(&operator),
        Some(&json!({"serial_number": "MOD-0001", "attributes": {"area_m2": 1.7}})),
    )
    .await?;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["twin_id"], "sample:MOD-0001");
    assert_eq!(t["kind"], "sample");
    assert_eq!(t["attributes"]["service_request"], id.as_str());
    let (s, v) = call(
        Method::POST,
        &samples,
        Some(&operator),
        Some(&json!({"serial_number": "MOD-0001"})),
    )
    .await?;
    assert_eq!(s, 409, "{v}");
    let (s, v) = call(
        Method::POST,
        &samples,
        Some(&operator),
        Some(&json!({"serial_number": "has space"})),
    )
    .await?;
    assert_eq!(s, 422, "{v}");

    // States: one step at a time, with optimistic concurrency.
    let transitions = format!("{url}/transitions");
    let (s, v) = call(
        Method::POST,
        &transitions,
        Some(&operator),
        Some(&json!({"to": "testing"})),
    )
    .await?;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("intake"),
        "{v}"
    );
    let (_, now) = call(Method::GET, &url, Some(&viewer), None).await?;
    let etag = format!("\"{}\"", now["version"]);
    let (s, v) = call_if_match(
        Method::POST,
        &transitions,
        &operator,
        "\"1\"",
        Some(&json!({"to": "intake"})),
    )
    .await?;
    assert_eq!(s, 412, "a stale version: {v}");
    let (s, v) = call_if_match(
        Method::POST,
        &transitions,
        &operator,
        &etag,
        Some(&json!({"to": "intake", "comment": "pallet arrived"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "intake");
    let (s, v) = call(
        Method::POST,
        &transitions,
        Some(&operator),
        Some(&json!({"to": "testing"})),
    )
    .await?;
    assert_eq!(s, 409, "samples not inspected at intake: {v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("sample:MOD-0001"),
        "{v}"
    );

    // An intake inspection: its counts become observations the criteria read.
    let inspections = format!("{hub}/api/v1/samples/sample:MOD-0001/inspections");
    let (s, i) = call(
        Method::POST,
        &inspections,
        Some(&operator),
        Some(&json!({"stage": "intake", "findings": [
            {"defect": "scratch on frame", "severity": "minor", "location": "top left"}
        ]})),
    )
    .await?;
    assert_eq!(s, 201, "{i}");
    assert_eq!(
        (i["major_defects"].clone(), i["minor_defects"].clone()),
        (json!(0), json!(1))
    );
    let iid = i["inspection_id"].as_i64().context("inspection id")?;
    let db = pool(&stack).await?;
    let obs: Vec<(String, f64, String)> = sqlx::query_as(
        "SELECT name, value, source FROM sample_observations WHERE sample_id = 'sample:MOD-0001' ORDER BY name",
    )
    .fetch_all(&db)
    .await?;
    assert_eq!(
        obs,
        vec![
            (
                "major_visual_defects".into(),
                0.0,
                format!("inspection:{iid}")
            ),
            (
                "minor_visual_defects".into(),
                1.0,
                format!("inspection:{iid}")
            ),
        ]
    );
    for (path, want) in [
        ("sample:NOPE/inspections", 404),
        ("gateway:none/inspections", 404),
    ] {
        let (s, v) = call(
            Method::POST,
            &format!("{hub}/api/v1/samples/{path}"),
            Some(&operator),
            Some(&json!({"stage": "intake"})),
        )
        .await?;
        assert_eq!(s, want, "{path}: {v}");
    }
    let (s, v) = call(
        Method::POST,
        &inspections,
        Some(&operator),
        Some(&json!({"stage": "intake", "performed_at": "2999-01-01T00:00:00Z"})),
    )
    .await?;
    assert_eq!(s, 422, "an inspection in the future: {v}");

    // Photos: the bytes decide the type; size and count bounded by [lab].
    let photos = format!("{hub}/api/v1/inspections/{iid}/photos");
    let (s, p) = upload(
        &format!("{photos}?caption=front"),
        &operator,
        "image/png",
        PNG.to_vec(),
    )
    .await?;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["size_bytes"], PNG.len());
    let got = e2e_tests::http::Client::bare()
        .get(format!("{photos}/1"))
        .bearer_auth(&viewer)
        .send()
        .await?;
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await?.as_ref(), PNG);
    for (ty, bytes, want) in [
        ("image/svg+xml", b"<svg onload=alert(1)/>".to_vec(), 415),
        ("image/jpeg", PNG.to_vec(), 415),
        ("image/png", [PNG, &[0u8; 1000][..]].concat(), 413),
        ("image/png", Vec::new(), 422),
    ] {
        let (s, v) = upload(&photos, &operator, ty, bytes).await?;
        assert_eq!(s, want, "{ty}: {v}");
    }
    let (s, v) = upload(&photos, &viewer, "image/png", PNG.to_vec()).await?;
    assert_eq!(s, 403, "{v}");
    let (s, _) = upload(&photos, &operator, "image/png", PNG.to_vec()).await?;
    assert_eq!(s, 201);
    let (s, v) = upload(&photos, &operator, "image/png", PNG.to_vec()).await?;
    assert_eq!(
        s, 409,
        "a third photo over max_photos_per_inspection = 2: {v}"
    );
    let (s, i) = call(
        Method::GET,
        &format!("{hub}/api/v1/inspections/{iid}"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 200);
    assert_eq!(i["photos"].as_array().map(Vec::len), Some(2), "{i}");

    // Then through to the end; closed stays closed.
    for to in [
        "testing",
        "evaluation",
        "testing",
        "evaluation",
        "completed",
    ] {
        let (s, v) = call(
            Method::POST,
            &transitions,
            Some(&operator),
            Some(&json!({"to": to})),
        )
        .await?;
        assert_eq!(s, 200, "{to}: {v}");
    }
    let (s, v) = call(
        Method::POST,
        &transitions,
        Some(&operator),
        Some(&json!({"to": "cancelled"})),
    )
    .await?;
    assert_eq!(s, 409, "{v}");
    let (s, v) = call(
        Method::POST,
        &samples,
        Some(&operator),
        Some(&json!({"serial_number": "MOD-0002"})),
    )
    .await?;
    assert_eq!(s, 409, "no samples after intake: {v}");
    let (_, sr) = call(Method::GET, &url, Some(&viewer), None).await?;
    assert_eq!(sr["state"], "completed");
    assert_eq!(sr["samples"], json!(["sample:MOD-0001"]));
    assert_eq!(sr["transitions"].as_array().map(Vec::len), Some(6), "{sr}");
    assert_eq!(sr["transitions"][0]["comment"], "pallet arrived");

    // Audited.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE target = $1 OR target LIKE 'inspection:%' ORDER BY id",
    )
    .bind(format!("service_request:{id}"))
    .fetch_all(&db)
    .await?;
    for a in [
        "service_request.create",
        "service_request.add_sample",
        "service_request.transition",
        "inspection.create",
        "inspection.add_photo",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }

    // Listing: paginated and filtered.
    for c in ["A", "B", "C"] {
        let (s, _) = call(
            Method::POST,
            &requests,
            Some(&operator),
            Some(&json!({"customer": c, "module_type": "m", "protocols": ["pid96"]})),
        )
        .await?;
        assert_eq!(s, 201);
    }
    let (s, page) = call(
        Method::GET,
        &format!("{requests}?limit=2"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 200);
    assert_eq!(page["count"], 2);
    let next = page["next_after"].as_str().context("next page")?;
    let (_, rest) = call(
        Method::GET,
        &format!("{requests}?limit=2&after={next}"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(rest["count"], 2);
    let (_, done) = call(
        Method::GET,
        &format!("{requests}?state=completed"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(done["count"], 1);
    let (s, _) = call(
        Method::GET,
        &format!("{requests}?state=lost"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 400);

    let (_, m) = call(
        Method::GET,
        &format!("{hub}/metrics"),
        Some(&admin_token(&stack)),
        None,
    )
    .await?;
    let m = m.as_str().unwrap_or("");
    assert!(
        m.contains("hub_lab_refused_total{reason=\"too_large\"}"),
        "refusals counted"
    );
    assert!(
        m.contains("hub_lab_writes_total{action=\"inspection.add_photo\"} 2"),
        "writes counted"
    );
    Ok(())
}
