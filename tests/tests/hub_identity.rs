//! The hub's REST API as an attacker and as each role sees it: a real hub,
//! real PostgreSQL, real HTTP. Role matrix over every operation of the
//! OpenAPI document, forged tokens, refresh-token reuse, brute force, site
//! scoping, role escalation, injection strings, hostile bodies. The audit
//! chain and the secure defaults: hub_audit.rs.

use anyhow::{Context, Result};
use base64::Engine;
use cloud_hub::identity::Role;
use cloud_hub::identity::permissions::{self, Permission};
use e2e_tests::hub_command;
use reqwest::Method;
use serde_json::{Value, json};

use e2e_tests::hub_auth::{B64, admin_token, call, counts, hub, new_key, pool, sign};

/// Every operation of the document, with path parameters filled in.
fn operations(doc: &Value) -> Vec<(Method, String, String)> {
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (m, _) in ops.as_object().into_iter().flatten() {
            let concrete = path
                .replace("{gateway}", "gw-matrix")
                .replace("{id}", "999999")
                .replace("{username}", "nobody-here");
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap_or(Method::GET);
            out.push((method, path.clone(), concrete));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_over_every_operation_of_the_openapi_document() -> Result<()> {
    let stack = hub().await?;
    let url = stack.hub_url();
    let (_, doc) = call(
        Method::GET,
        &format!("{url}/api/v1/openapi.json"),
        None,
        None,
    )
    .await?;
    let mut tokens = vec![(None, None)];
    for role in Role::ALL {
        tokens.push((Some(role), Some(new_key(&stack, role, None).await?)));
    }
    let ops = operations(&doc);
    assert_eq!(
        ops.len() + 1,
        permissions::RULES.len(),
        "every rule but the document's own is an operation of it"
    );
    let mut checked = 0;
    for (method, path, concrete) in &ops {
        let rule = permissions::required(method.as_str(), path)
            .with_context(|| format!("{method} {path}: no rule"))?;
        // A body that is valid JSON but not valid for the operation: an
        // allowed caller gets 400, never a change.
        let body = (*method != Method::GET && *method != Method::DELETE).then(|| json!({}));
        for (role, token) in &tokens {
            let (status, v) = call(
                method.clone(),
                &format!("{url}{concrete}"),
                token.as_deref(),
                body.as_ref(),
            )
            .await?;
            let allowed = match (rule.permission, role) {
                (Permission::Public, _) => true,
                (_, None) => false,
                (p, Some(r)) => p.allows(*r),
            };
            let who = role.map_or("no credential".to_string(), |r| r.to_string());
            if allowed {
                assert!(
                    status != 401 && status != 403 && status < 500,
                    "{method} {path} as {who}: expected to be allowed, got {status} {v}"
                );
            } else {
                let want = if role.is_none() { 401 } else { 403 };
                assert_eq!(status, want, "{method} {path} as {who}: {v}");
                assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
            }
            checked += 1;
        }
    }
    println!(
        "role matrix: {} operations x {} callers = {checked} requests",
        ops.len(),
        tokens.len()
    );
    // The same seen from the other side: what /auth/me says each may do.
    let (_, me) = call(
        Method::GET,
        &format!("{url}/api/v1/auth/me"),
        tokens[1].1.as_deref(),
        None,
    )
    .await?;
    assert_eq!(me["role"], "viewer");
    assert!(
        !me["permissions"]
            .to_string()
            .contains("POST /api/v1/gateways")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_tokens_are_refused_and_refresh_tokens_rotate() -> Result<()> {
    let stack = hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/users"),
        Some(&admin),
        Some(&json!({"username": "olga", "password": "operator password 1", "role": "operator"})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let login = |pw: &'static str| {
        let url = url.clone();
        async move {
            call(
                Method::POST,
                &format!("{url}/api/v1/auth/login"),
                None,
                Some(&json!({"username": "olga", "password": pw})),
            )
            .await
        }
    };
    let (s, pair) = login("operator password 1").await?;
    assert_eq!(s, 200, "{pair}");
    let access = pair["access_token"].as_str().context("access")?.to_string();
    let me = format!("{url}/api/v1/auth/me");
    let (s, v) = call(Method::GET, &me, Some(&access), None).await?;
    assert_eq!((s, v["role"].as_str()), (200, Some("operator")), "{v}");

    // Forgeries, each alone.
    let pool = pool(&stack).await?;
    let now = chrono::Utc::now().timestamp();
    let good = json!({"iss": "cloud-hub", "aud": "cloud-hub-api", "sub": "olga", "role": "operator", "iat": now, "nbf": now, "exp": now + 600});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let cases = [
        (
            "expired",
            sign(&pool, &with("exp", json!(now - 3600)), "EdDSA").await?,
        ),
        (
            "not yet valid",
            sign(&pool, &with("nbf", json!(now + 3600)), "EdDSA").await?,
        ),
        (
            "wrong audience",
            sign(&pool, &with("aud", json!("someone-else")), "EdDSA").await?,
        ),
        (
            "alg none",
            sign(&pool, &with("role", json!("admin")), "none").await?,
        ),
        ("tampered payload", {
            let parts: Vec<&str> = access.split('.').collect();
            let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1])?)?;
            claims["role"] = json!("admin");
            format!(
                "{}.{}.{}",
                parts[0],
                B64.encode(claims.to_string()),
                parts[2]
            )
        }),
        ("other key, same kid", {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("keygen"))?;
            let kid = jsonwebtoken::decode_header(&access)?.kid;
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
            h.kid = kid;
            jsonwebtoken::encode(
                &h,
                &with("role", json!("admin")),
                &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
            )?
        }),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, token) in &cases {
        let (s, v) = call(Method::GET, &me, Some(token), None).await?;
        assert_eq!(s, 401, "{what}: {v}");
        assert!(v["message"].is_string(), "{what}: {v}");
    }
    // The valid control token signed the same way passes, so each refusal
    // above is for its one defect.
    let (s, _) = call(
        Method::GET,
        &me,
        Some(&sign(&pool, &good, "EdDSA").await?),
        None,
    )
    .await?;
    assert_eq!(s, 200);

    // Refresh rotates; a spent token presented again revokes the family.
    let r1 = pair["refresh_token"]
        .as_str()
        .context("refresh")?
        .to_string();
    let refresh = format!("{url}/api/v1/auth/refresh");
    let (s, pair2) = call(
        Method::POST,
        &refresh,
        None,
        Some(&json!({"refresh_token": r1})),
    )
    .await?;
    assert_eq!(s, 200, "{pair2}");
    let r2 = pair2["refresh_token"].as_str().context("r2")?.to_string();
    assert_ne!(r1, r2);
    let (s, v) = call(
        Method::POST,
        &refresh,
        None,
        Some(&json!({"refresh_token": r1})),
    )
    .await?;
    assert_eq!(s, 401, "reuse: {v}");
    let (s, v) = call(
        Method::POST,
        &refresh,
        None,
        Some(&json!({"refresh_token": r2})),
    )
    .await?;
    assert_eq!(s, 401, "the family is revoked after reuse: {v}");

    // Logout revokes.
    let (_, p3) = login("operator password 1").await?;
    let r3 = p3["refresh_token"].as_str().context("r3")?.to_string();
    let (s, _) = call(
        Method::POST,
        &format!("{url}/api/v1/auth/logout"),
        None,
        Some(&json!({"refresh_token": r3})),
    )
    .await?;
    assert_eq!(s, 204);
    let (s, _) = call(
        Method::POST,
        &refresh,
        None,
        Some(&json!({"refresh_token": r3})),
    )
    .await?;
    assert_eq!(s, 401);

    // Key rotation logs nobody out: the old token keeps working.
    hub_command(
        &e2e_tests::bin("cloud-hub")?,
        &stack.dir.path().join("hub.toml"),
        &["signing-key", "rotate"],
        "",
    )?;
    let (s, _) = call(Method::GET, &me, Some(&access), None).await?;
    assert_eq!(s, 200, "a token of the previous key after rotation");
    let (s, p4) = login("operator password 1").await?;
    assert_eq!(s, 200);
    let new_kid = jsonwebtoken::decode_header(p4["access_token"].as_str().context("a4")?)?.kid;
    assert_ne!(
        new_kid,
        jsonwebtoken::decode_header(&access)?.kid,
        "new logins use the new key"
    );
    let (s, _) = call(Method::GET, &me, p4["access_token"].as_str(), None).await?;
    assert_eq!(s, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_scope_escalation_injection_and_hostile_bodies() -> Result<()> {
    let stack = hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let pool = pool(&stack).await?;

    // Brute force: 10 attempts a minute from one address, then 429.
    let login = format!("{url}/api/v1/auth/login");
    let body = json!({"username": "admin", "password": "guess guess guess"});
    for i in 0..10 {
        let (s, v) = call(Method::POST, &login, None, Some(&body)).await?;
        assert_eq!(s, 401, "attempt {i}: {v}");
    }
    let r = e2e_tests::http::Client::bare()
        .post(&login)
        .json(&body)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    // Other requests are not affected.
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/devices"),
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(s, 200);

    // Site scope: gw-a in site-a, gw-b in site-b; an operator limited to site-a.
    for (gw, site) in [("gw-a", "site-a"), ("gw-b", "site-b")] {
        let (s, v) = call(
            Method::PUT,
            &format!("{url}/api/v1/gateways/{gw}/site"),
            Some(&admin),
            Some(&json!({"site": site})),
        )
        .await?;
        assert_eq!(s, 200, "{v}");
    }
    let scoped = new_key(&stack, Role::Operator, Some(vec!["site-a"])).await?;
    let before = counts(&pool).await?;
    let get = |q: &str| format!("{url}{q}");
    assert_eq!(
        call(
            Method::GET,
            &get("/api/v1/readings?gateway=gw-a"),
            Some(&scoped),
            None
        )
        .await?
        .0,
        200
    );
    for q in [
        "/api/v1/readings?gateway=gw-b",
        "/api/v1/readings",
        "/api/v1/readings?gateway=gw-a&gateway=gw-b",
        "/api/v1/devices",
        "/api/v1/latest?gateway=gw-b",
        "/metrics",
        "/api/v1/audit",
    ] {
        let (s, v) = call(Method::GET, &get(q), Some(&scoped), None).await?;
        assert_eq!(s, 403, "{q}: {v}");
    }
    let cmd = json!({"write_point": {"device": "m", "point": "p", "value": 1.0}});
    let (s, v) = call(
        Method::POST,
        &get("/api/v1/gateways/gw-b/commands"),
        Some(&scoped),
        Some(&cmd),
    )
    .await?;
    assert_eq!(s, 403, "command to another site: {v}");

    // Escalation: an operator cannot make keys, users, or move gateways.
    assert_eq!(
        counts(&pool).await?,
        before,
        "refused scoped requests changed nothing"
    );
    let op = new_key(&stack, Role::Operator, None).await?;
    // The key just made changed the counts: refusals from here on must not.
    let before = counts(&pool).await?;
    for (m, p, b) in [
        (
            Method::POST,
            "/api/v1/keys",
            json!({"name": "mine", "role": "admin"}),
        ),
        (
            Method::POST,
            "/api/v1/users",
            json!({"username": "eve", "password": "eve password 123", "role": "admin"}),
        ),
        (
            Method::PATCH,
            "/api/v1/users/admin",
            json!({"role": "admin"}),
        ),
        (
            Method::PUT,
            "/api/v1/gateways/gw-b/site",
            json!({"site": "site-a"}),
        ),
    ] {
        let (s, v) = call(m.clone(), &get(p), Some(&op), Some(&b)).await?;
        assert_eq!(s, 403, "{m} {p}: {v}");
    }
    assert_eq!(
        counts(&pool).await?,
        before,
        "refused requests changed nothing"
    );

    // Injection strings in every parameter: no 5xx, tables intact.
    let evil = [
        "' OR '1'='1",
        "1; DROP TABLE users; --",
        "\") OR 1=1 --",
        "%00",
        "../../etc/passwd",
    ];
    for e in evil {
        let enc: String = e.bytes().map(|b| format!("%{b:02X}")).collect();
        for q in [
            "readings?gateway=",
            "readings?device=",
            "readings?metric=",
            "devices?gateway=",
            "latest?gateway=",
            "series?metric=",
            "audit?actor=",
            "audit?target=",
            "users/",
            "keys/",
            "commands/",
            "series/",
        ] {
            let (s, v) = call(
                Method::GET,
                &get(&format!("/api/v1/{q}{enc}")),
                Some(&admin),
                None,
            )
            .await?;
            assert!(s < 500, "{q}{e}: {s} {v}");
        }
    }
    assert_eq!(counts(&pool).await?, before);

    // Hostile bodies: oversized, malformed, wrong types.
    // Over the 64 KiB limit: 413 with a JSON message, from a signed-in admin
    // (the login endpoint would first be rate-limited after the loop above).
    let big = json!({"username": "x", "password": "y".repeat(100_000), "role": "viewer"});
    let (s, v) = call(
        Method::POST,
        &get("/api/v1/users"),
        Some(&admin),
        Some(&big),
    )
    .await?;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"], "too_large", "{v}");
    for raw in ["{", "[]", "{\"username\": 1}", "null"] {
        let r = e2e_tests::http::Client::bare()
            .post(get("/api/v1/users"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 400, "{raw}");
        let v: Value = r.json().await?;
        assert!(v["message"].is_string());
    }
    assert_eq!(counts(&pool).await?, before);
    Ok(())
}

/// An API key revoked through the API stops working at once, whoever revokes
/// it (here: itself, as a leaked key's owner would); other keys are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_api_key_is_refused_from_the_next_request() -> Result<()> {
    let stack = hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let (s, k) = call(
        Method::POST,
        &format!("{url}/api/v1/keys"),
        Some(&admin),
        Some(&json!({"name": "script", "role": "admin"})),
    )
    .await?;
    assert_eq!(s, 201, "{k}");
    let (id, secret) = (
        k["id"].as_str().context("id")?,
        k["key"].as_str().context("key")?,
    );
    let twins = format!("{url}/api/v1/twins");
    let (s, _) = call(Method::GET, &twins, Some(secret), None).await?;
    assert_eq!(s, 200, "the new key works");
    let (s, v) = call(
        Method::DELETE,
        &format!("{url}/api/v1/keys/{id}"),
        Some(secret),
        None,
    )
    .await?;
    assert_eq!(s, 204, "a key revokes itself: {v}");
    let (s, v) = call(Method::GET, &twins, Some(secret), None).await?;
    assert_eq!(s, 401, "{v}");
    assert!(v.to_string().contains("revoked"), "says why: {v}");
    let (s, _) = call(Method::GET, &twins, Some(&admin), None).await?;
    assert_eq!(s, 200, "the other keys still work");
    Ok(())
}
