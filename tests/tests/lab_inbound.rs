//! A LIMS's inbound API (issue #15): an operator API key creates service
//! requests and samples; `Idempotency-Key` makes a retry answer the first
//! answer (one object), a reused key with another body is refused, two
//! attempts at once create one; `external_ref` is unique per customer and
//! searchable; a viewer's key cannot create.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::Stack;
use e2e_tests::hub_auth::{call, new_key};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lims_creates_requests_and_samples_idempotently_with_an_api_key() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let url = stack.hub_url();
    let lims = new_key(&stack, Role::Operator, None).await?;
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let pool = e2e_tests::hub_auth::pool(&stack).await?;
    let requests = format!("{url}/api/v1/service-requests");
    let body = json!({"customer": "Solar GmbH", "module_type": "SG-400M",
                      "protocols": ["stc-power"], "external_ref": "ORD-77"});
    let post = |url: String, token: String, key: Option<&'static str>, body: Value| async move {
        let mut rb = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .json(&body);
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        let r = rb.send().await?;
        let s = r.status().as_u16();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        anyhow::Ok((
            s,
            replayed,
            etag,
            r.json::<Value>().await.unwrap_or(Value::Null),
        ))
    };
    let count = || async {
        anyhow::Ok(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM service_requests")
                .fetch_one(&pool)
                .await?,
        )
    };

    // A viewer's key cannot create, with or without a key.
    let (s, _, _, v) = post(requests.clone(), viewer.clone(), Some("k-1"), body.clone()).await?;
    assert_eq!(s, 403, "{v}");

    // The same key and body twice: one request, the first answer again.
    let (s, replayed, etag, first) =
        post(requests.clone(), lims.clone(), Some("k-1"), body.clone()).await?;
    assert_eq!((s, replayed), (201, false), "{first}");
    // The same body with its fields in another order and a default spelled out.
    let same = json!({"protocols": ["stc-power"], "external_ref": "ORD-77", "notes": "",
                      "module_type": "SG-400M", "customer": "Solar GmbH"});
    let (s, replayed, etag2, again) =
        post(requests.clone(), lims.clone(), Some("k-1"), same).await?;
    assert_eq!((s, replayed), (201, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(etag, etag2);
    assert_eq!(count().await?, 1);

    // The same key with another body: refused, nothing created.
    let mut other = body.clone();
    other["module_type"] = json!("SG-500M");
    let (s, _, _, v) = post(requests.clone(), lims.clone(), Some("k-1"), other.clone()).await?;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("idempotency_key_reused")),
        "{v}"
    );
    assert_eq!(count().await?, 1);
    // Another key but the same external_ref and customer: 409 naming it.
    let (s, _, _, v) = post(requests.clone(), lims.clone(), Some("k-2"), other.clone()).await?;
    let id = first["request_id"].as_str().context("id")?;
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains(id), "{v}");
    // A bad key is refused before anything.
    let long: &'static str = Box::leak("k".repeat(129).into_boxed_str());
    let (s, _, _, v) = post(requests.clone(), lims.clone(), Some(long), body.clone()).await?;
    assert_eq!(s, 400, "{v}");
    assert_eq!(count().await?, 1);
    // A refused create keeps no key: fixed and retried with the same key, it is created.
    let (s, _, _, v) = post(
        requests.clone(),
        lims.clone(),
        Some("k-3"),
        json!({"customer": "", "module_type": "m", "protocols": ["stc-power"]}),
    )
    .await?;
    assert_eq!(s, 422, "{v}");
    let (s, replayed, _, v) = post(requests.clone(), lims.clone(), Some("k-3"),
        json!({"customer": "Other AG", "module_type": "m", "protocols": ["stc-power"], "external_ref": "ORD-77"})).await?;
    assert_eq!(
        (s, replayed),
        (201, false),
        "another customer may use the same reference: {v}"
    );
    assert_eq!(count().await?, 2);

    // Found by its reference.
    let (s, v) = call(
        Method::GET,
        &format!("{requests}?external_ref=ORD-77&customer=Solar%20GmbH"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], 1);
    assert_eq!(v["service_requests"][0]["request_id"], id);

    // Samples: the same key twice, one twin; a concurrent pair, one twin.
    let samples = format!("{requests}/{id}/samples");
    let (s, _, _, t1) = post(
        samples.clone(),
        lims.clone(),
        Some("s-1"),
        json!({"serial_number": "MOD-0001"}),
    )
    .await?;
    assert_eq!(s, 201, "{t1}");
    let (s, replayed, _, t2) = post(
        samples.clone(),
        lims.clone(),
        Some("s-1"),
        json!({"serial_number": "MOD-0001"}),
    )
    .await?;
    assert_eq!(
        (s, replayed, &t2["twin_id"]),
        (201, true, &t1["twin_id"]),
        "{t2}"
    );
    let b = json!({"serial_number": "MOD-0002"});
    let (a, c) = tokio::join!(
        post(samples.clone(), lims.clone(), Some("s-2"), b.clone()),
        post(samples.clone(), lims.clone(), Some("s-2"), b.clone())
    );
    let (a, c) = (a?, c?);
    assert_eq!((a.0, c.0), (201, 201), "{a:?} {c:?}");
    assert!(
        a.1 != c.1,
        "exactly one of the two is a replay: {a:?} {c:?}"
    );
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM service_request_samples WHERE request_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await?;
    assert_eq!(n, 2);
    // Keys are the caller's: another operator's same key is a new request.
    let other_lims = new_key(&stack, Role::Operator, None).await?;
    let (s, replayed, _, v) = post(
        requests.clone(),
        other_lims,
        Some("k-1"),
        json!({"customer": "Third", "module_type": "m", "protocols": ["stc-power"]}),
    )
    .await?;
    assert_eq!((s, replayed), (201, false), "{v}");
    Ok(())
}
