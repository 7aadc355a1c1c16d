//! Helpers of the hub identity tests (hub_identity.rs, hub_audit.rs): requests
//! with an explicit credential, keys of each role, tokens signed with the
//! hub's own key as a thief with database access could.

use crate::Stack;
use anyhow::{Context, Result};
use base64::Engine;
use cloud_hub::identity::Role;
use reqwest::Method;
use serde_json::{Value, json};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub async fn hub() -> Result<Stack> {
    let mut s = Stack::new().await?;
    s.start_hub().await?;
    Ok(s)
}

/// One request with an explicit credential (or none), as a stranger sends it.
pub async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let mut rb = crate::http::Client::bare().request(method.clone(), url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await.with_context(|| format!("{method} {url}"))?;
    let status = r.status().as_u16();
    // A live stream does not end: its status is the answer.
    let sse = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if sse {
        return Ok((status, Value::Null));
    }
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

/// A request with an `If-Match` header (optimistic concurrency).
pub async fn call_if_match(
    method: Method,
    url: &str,
    token: &str,
    etag: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let mut rb = crate::http::Client::bare()
        .request(method, url)
        .bearer_auth(token)
        .header("If-Match", etag);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}

/// The harness's admin key (what `Stack::start_hub` registered).
pub fn admin_token(stack: &Stack) -> String {
    crate::http::headers_for(&stack.hub_url())
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.trim_start_matches("Bearer ").to_string())
        .unwrap_or_default()
}

pub async fn new_key(stack: &Stack, role: Role, sites: Option<Vec<&str>>) -> Result<String> {
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

pub async fn pool(stack: &Stack) -> Result<sqlx::PgPool> {
    Ok(sqlx::PgPool::connect(&stack.pg_url()?).await?)
}

/// Rows of the tables a refused request must leave alone.
pub async fn counts(pool: &sqlx::PgPool) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for t in [
        "users",
        "api_keys",
        "commands",
        "twin_relations",
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

/// Signs a hub-shaped token with the hub's own current key, read from the
/// database as a thief with database access would, to test each check alone.
pub async fn sign(pool: &sqlx::PgPool, claims: &Value, alg: &str) -> Result<String> {
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
