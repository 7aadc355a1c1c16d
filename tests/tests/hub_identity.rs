//! The hub's REST API as an attacker and as each role sees it: a real hub,
//! real PostgreSQL, real HTTP. Role matrix over every operation of the
//! OpenAPI document, forged tokens, refresh-token reuse, brute force, site
//! scoping, role escalation, injection strings, hostile bodies, and the
//! audit chain (verified, then tampered with and caught).

use anyhow::{Context, Result};
use base64::Engine;
use cloud_hub::identity::Role;
use cloud_hub::identity::permissions::{self, Permission};
use e2e_tests::{Stack, hub_command};
use reqwest::Method;
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

async fn hub() -> Result<Stack> {
    let mut s = Stack::new().await?;
    s.start_hub().await?;
    Ok(s)
}

/// One request with an explicit credential (or none), as a stranger sends it.
async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let mut rb = e2e_tests::http::Client::bare().request(method.clone(), url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await.with_context(|| format!("{method} {url}"))?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    let v = if text.is_empty() {
        Value::Null
    } else if status == 200 && url.ends_with("/metrics") {
        Value::String(text)
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: {status} not JSON: {text}"))?
    };
    Ok((status, v))
}

/// The harness's admin key (what `Stack::start_hub` registered).
fn admin_token(stack: &Stack) -> String {
    e2e_tests::http::headers_for(&stack.hub_url())
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.trim_start_matches("Bearer ").to_string())
        .unwrap_or_default()
}

async fn new_key(stack: &Stack, role: Role, sites: Option<Vec<&str>>) -> Result<String> {
    let (s, v) = call(
        Method::POST,
        &format!("{}/api/v1/keys", stack.hub_url()),
        Some(&admin_token(stack)),
        Some(&json!({"name": format!("{role}-key"), "role": role, "sites": sites})),
    )
    .await?;
    anyhow::ensure!(s == 201, "key create: {s} {v}");
    Ok(v["key"].as_str().context("key")?.to_string())
}

async fn pool(stack: &Stack) -> Result<sqlx::PgPool> {
    Ok(sqlx::PgPool::connect(&stack.pg_url()?).await?)
}

/// Rows of the tables a refused request must leave alone.
async fn counts(pool: &sqlx::PgPool) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for t in [
        "users",
        "api_keys",
        "commands",
        "gateway_sites",
        "refresh_tokens",
    ] {
        out.push(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
                .fetch_one(pool)
                .await?,
        );
    }
    Ok(out)
}

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
                (p, Some(r)) => r.has(p),
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

/// Signs a hub-shaped token with the hub's own current key, read from the
/// database as a thief with database access would, to test each check alone.
async fn sign(pool: &sqlx::PgPool, claims: &Value, alg: &str) -> Result<String> {
    let (kid, pkcs8): (String, Vec<u8>) = sqlx::query_as(
        "SELECT kid, private_pkcs8 FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.clone());
    if alg == "EdDSA" {
        return Ok(jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&pkcs8),
        )?);
    }
    // alg none: no signature at all.
    let h = B64.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string());
    let p = B64.encode(claims.to_string());
    Ok(format!("{h}.{p}."))
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
    let op = new_key(&stack, Role::Operator, None).await?;
    let before = {
        let _ = before;
        counts(&pool).await?
    };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_verifies_and_a_tampered_row_is_caught() -> Result<()> {
    let stack = hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    for u in ["ann", "ben"] {
        let (s, v) = call(
            Method::POST,
            &format!("{url}/api/v1/users"),
            Some(&admin),
            Some(&json!({"username": u, "password": "a long password 1", "role": "viewer"})),
        )
        .await?;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = call(
        Method::PATCH,
        &format!("{url}/api/v1/users/ben"),
        Some(&admin),
        Some(&json!({"role": "engineer"})),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/gateways/gw-x/commands"),
        Some(&admin),
        Some(&json!({"reload_config": {}})),
    )
    .await?;
    assert_eq!(s, 202, "{v}");
    // The trail shows who, what, before and after, with paging.
    let (s, page) = call(
        Method::GET,
        &format!("{url}/api/v1/audit?limit=2"),
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["entries"][0]["action"], "command.create");
    assert_eq!(page["entries"][1]["action"], "user.update");
    assert_eq!(page["entries"][1]["before"]["role"], "viewer");
    assert_eq!(page["entries"][1]["after"]["role"], "engineer");
    assert_eq!(page["entries"][1]["source_addr"], "127.0.0.1");
    let next = page["next_before_id"].as_i64().context("next page")?;
    let (_, p2) = call(
        Method::GET,
        &format!("{url}/api/v1/audit?limit=2&before_id={next}"),
        Some(&admin),
        None,
    )
    .await?;
    assert!(p2["entries"][0]["id"].as_i64() < Some(next));
    let (_, f) = call(
        Method::GET,
        &format!("{url}/api/v1/audit?target=user:ann"),
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(f["count"], 1, "{f}");

    let bin = e2e_tests::bin("cloud-hub")?;
    let cfg = stack.dir.path().join("hub.toml");
    let out = hub_command(&bin, &cfg, &["audit", "verify"], "")?;
    assert!(out.contains("intact"), "{out}");

    // The application's own connection cannot change or delete a row.
    let pool = pool(&stack).await?;
    for sql in [
        "UPDATE audit_log SET actor = 'mallory' WHERE id = 2",
        "DELETE FROM audit_log WHERE id = 2",
        "TRUNCATE audit_log",
    ] {
        let e = sqlx::query(sql).execute(&pool).await.expect_err(sql);
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    // A superuser who switches triggers off can; the chain shows it.
    let mut c = pool.acquire().await?;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *c)
        .await?;
    sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
        .execute(&mut *c)
        .await?;
    drop(c);
    let err = hub_command(&bin, &cfg, &["audit", "verify"], "").expect_err("verify must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("entry 2") && msg.contains("BROKEN"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_refuses_unauthenticated_grpc_on_a_routable_address() -> Result<()> {
    let stack = Stack::new().await?;
    let cfg = stack.dir.path().join("open.toml");
    std::fs::write(
        &cfg,
        format!(
            "[database]\nurl = \"{}\"\n[grpc]\nlisten = \"0.0.0.0:{}\"\n",
            stack.pg_url()?,
            stack.grpc_port
        ),
    )?;
    let out = std::process::Command::new(e2e_tests::bin("cloud-hub")?)
        .arg("--config")
        .arg(&cfg)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("grpc.auth") && err.contains("mtls") && err.contains("token"),
        "{err}"
    );
    Ok(())
}

/// Each `[auth]` key changes what it says (docs/configuration.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_keys_take_effect() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.hub_grpc_extra = "[auth]\nissuer = \"hub-x\"\naudience = \"ops-x\"\naccess_token_ttl_s = 120\nrefresh_token_ttl_s = 150\nsigning_key_rotation_days = 1\nlogin_attempts_per_minute = 3\n".into();
    stack.start_hub().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/users"),
        Some(&admin),
        Some(&json!({"username": "kim", "password": "kim's long password", "role": "viewer"})),
    )
    .await?;
    assert_eq!(s, 201, "{v}");
    let login = format!("{url}/api/v1/auth/login");
    let (s, pair) = call(
        Method::POST,
        &login,
        None,
        Some(&json!({"username": "kim", "password": "kim's long password"})),
    )
    .await?;
    assert_eq!(s, 200, "{pair}");
    // issuer, audience, access_token_ttl_s
    let token = pair["access_token"].as_str().context("token")?;
    let claims: Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).context("payload")?)?)?;
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some("hub-x"), Some("ops-x"))
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0),
        120
    );
    assert_eq!(pair["expires_in"], 120);
    // refresh_token_ttl_s
    let refresh_exp =
        chrono::DateTime::parse_from_rfc3339(pair["refresh_expires_at"].as_str().context("r")?)?;
    let left = (refresh_exp.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    assert!((140..=150).contains(&left), "refresh token lives {left} s");
    // A token for the default issuer is not one of this hub's.
    let pool = pool(&stack).await?;
    let now = chrono::Utc::now().timestamp();
    let foreign = sign(&pool, &json!({"iss": "cloud-hub", "aud": "ops-x", "sub": "kim", "role": "admin", "iat": now, "nbf": now, "exp": now + 60}), "EdDSA").await?;
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/auth/me"),
        Some(&foreign),
        None,
    )
    .await?;
    assert_eq!(s, 401);
    // login_attempts_per_minute = 3: the login above was one.
    let wrong = json!({"username": "kim", "password": "wrong wrong wrong"});
    for _ in 0..2 {
        assert_eq!(call(Method::POST, &login, None, Some(&wrong)).await?.0, 401);
    }
    assert_eq!(call(Method::POST, &login, None, Some(&wrong)).await?.0, 429);
    // signing_key_rotation_days = 1: a key 2 days old is replaced at start.
    let old_kid: String =
        sqlx::query_scalar("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
            .fetch_one(&pool)
            .await?;
    sqlx::query("UPDATE signing_keys SET created_at = now() - interval '2 days'")
        .execute(&pool)
        .await?;
    stack.hub.take().context("hub")?.kill9()?;
    stack.start_hub().await?;
    let (_, jwks) = call(
        Method::GET,
        &format!("{url}/api/v1/auth/jwks.json"),
        None,
        None,
    )
    .await?;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(
        kids.len(),
        2,
        "the new key and the old one (still verifying): {jwks}"
    );
    assert!(kids.contains(&old_kid.as_str()));
    let current: String =
        sqlx::query_scalar("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
            .fetch_one(&pool)
            .await?;
    assert_ne!(current, old_kid, "rotated at start");
    // The token of the old key still works.
    let (s, _) = call(
        Method::GET,
        &format!("{url}/api/v1/auth/me"),
        Some(token),
        None,
    )
    .await?;
    assert_eq!(s, 200);
    Ok(())
}
