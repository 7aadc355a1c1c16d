//! Who may manage the lab's webhooks and where they may point (issue #15):
//! only admins subscribe, read subscriptions and dead letters; plain http and
//! loopback, private and link-local targets are refused unless the config
//! allows them (SSRF); the secret is shown once and never again; and the
//! test suite's receiver refuses wrong signatures and stale timestamps.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::Stack;
use e2e_tests::hub_auth::{admin_token, call, new_key};
use e2e_tests::webhook_receiver::{Receiver, verify};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_subscribe_and_only_to_public_https_targets_by_default() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let url = stack.hub_url();
    let hooks = format!("{url}/api/v1/webhooks");
    let admin = admin_token(&stack);
    let body = |u: &str| json!({"name": "LIMS", "url": u, "events": ["run.evaluated"]});
    for role in [Role::Viewer, Role::Operator, Role::Engineer] {
        let t = new_key(&stack, role, None).await?;
        let (s, _) = call(
            Method::POST,
            &hooks,
            Some(&t),
            Some(&body("https://93.184.215.14/hook")),
        )
        .await?;
        assert_eq!(s, 403, "{role}");
        let (s, _) = call(Method::GET, &hooks, Some(&t), None).await?;
        assert_eq!(s, 403, "{role}");
        let (s, _) = call(
            Method::GET,
            &format!("{hooks}/dead-letters"),
            Some(&t),
            None,
        )
        .await?;
        assert_eq!(s, 403, "{role}");
    }
    // SSRF: loopback, private, link-local (cloud metadata) and plain http
    // are refused without the config keys that allow them.
    for (u, why) in [
        ("http://93.184.215.14/hook", "allow_http"),
        ("https://127.0.0.1:8443/hook", "allow_private_targets"),
        ("https://localhost/hook", "allow_private_targets"),
        ("https://10.0.0.7/hook", "allow_private_targets"),
        (
            "https://169.254.169.254/latest/meta-data",
            "allow_private_targets",
        ),
        ("https://[::1]/hook", "allow_private_targets"),
    ] {
        let (s, v) = call(Method::POST, &hooks, Some(&admin), Some(&body(u))).await?;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("target_refused")),
            "{u}: {v}"
        );
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains(why)),
            "{u}: {v}"
        );
    }
    let (s, v) = call(
        Method::POST,
        &hooks,
        Some(&admin),
        Some(&json!({"name": "LIMS", "url": "https://93.184.215.14/hook", "events": ["run.exploded"]})),
    )
    .await?;
    assert_eq!(s, 422, "{v}");
    let (s, v) = call(
        Method::POST,
        &hooks,
        Some(&admin),
        Some(&body("https://93.184.215.14/hook")),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let secret = v["secret"].as_str().context("secret")?.to_string();
    assert!(secret.starts_with("qiwh_") && secret.len() > 40, "{secret}");
    let id = v["subscription"]["subscription_id"]
        .as_i64()
        .context("id")?;
    // Shown once: neither the listing nor the audit trail has it.
    let (_, list) = call(Method::GET, &hooks, Some(&admin), None).await?;
    assert_eq!(list["count"], 1);
    assert!(!list.to_string().contains(&secret));
    let pool = stack.db().await?;
    let trail: Vec<String> =
        sqlx::query_scalar("SELECT after::text FROM audit_log WHERE action = 'webhook.create'")
            .fetch_all(&pool)
            .await?;
    assert_eq!(trail.len(), 1);
    assert!(trail[0].contains("93.184.215.14") && !trail[0].contains(&secret));
    let (s, _) = call(Method::DELETE, &format!("{hooks}/{id}"), Some(&admin), None).await?;
    assert_eq!(s, 204);
    let (s, _) = call(Method::DELETE, &format!("{hooks}/{id}"), Some(&admin), None).await?;
    assert_eq!(s, 404);
    let (s, _) = call(Method::DELETE, &format!("{hooks}/0"), Some(&admin), None).await?;
    assert_eq!(s, 400);
    Ok(())
}

/// The receiver itself refuses what a LIMS must refuse: another secret, a
/// changed body, an old timestamp.
#[tokio::test]
async fn the_test_receiver_refuses_wrong_signatures_and_stale_timestamps() -> Result<()> {
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"id":"x","type":"run.evaluated"}"#;
    let sig = cloud_hub::webhooks::signature::sign(b"right secret", now, body);
    assert!(verify(b"right secret", &now.to_string(), &sig, body, now).is_ok());
    assert!(verify(b"wrong secret", &now.to_string(), &sig, body, now).is_err());
    assert!(
        verify(
            b"right secret",
            &now.to_string(),
            &sig,
            b"{\"id\":\"y\"}",
            now
        )
        .is_err()
    );
    let old = now - 3600;
    let old_sig = cloud_hub::webhooks::signature::sign(b"right secret", old, body);
    assert!(verify(b"right secret", &old.to_string(), &old_sig, body, now).is_err());
    // Over the wire: a request signed with another secret gets 401.
    let r = Receiver::start().await?;
    r.set_secret("right secret");
    let bad = cloud_hub::webhooks::signature::sign(b"wrong secret", now, body);
    let resp = reqwest::Client::new()
        .post(&r.url)
        .header("x-qi-timestamp", now.to_string())
        .header("x-qi-signature", bad)
        .header("idempotency-key", "k1")
        .header("x-qi-event", "run.evaluated")
        .body(body.to_vec())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    let resp = reqwest::Client::new()
        .post(&r.url)
        .header("x-qi-timestamp", now.to_string())
        .header("x-qi-signature", sig)
        .header("idempotency-key", "k1")
        .header("x-qi-event", "run.evaluated")
        .body(body.to_vec())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(r.accepted().len(), 1);
    assert_eq!(r.attempts_of("k1").len(), 2);
    Ok(())
}
