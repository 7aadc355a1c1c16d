//! The hub's audit trail (who, what, before/after, paging; verified, then
//! tampered with and caught) and its secure defaults: a real hub, real
//! PostgreSQL, real HTTP.

use anyhow::{Context, Result};
use base64::Engine;
use e2e_tests::hub_auth::{B64, admin_token, call, hub, pool, sign};
use e2e_tests::{Stack, hub_command};
use reqwest::Method;
use serde_json::{Value, json};

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
