//! Single sign-on through the hub binary: `[auth.oidc]` pointing at a real
//! OpenID Connect issuer (npm's `oidc-provider`, `e2e_tests::oidc`); the
//! provider's tokens pass the same guard and permission table as the hub's
//! own. The verifier's checks one by one are in `oidc.rs`.

use anyhow::{Context, Result};
use e2e_tests::free_port;
use e2e_tests::oidc::{HUB_AUDIENCE, Issuer, OTHER_AUDIENCE, forgeable_claims, unsigned};
use serde_json::{Value, json};
use std::time::Duration;

fn clients() -> Vec<Value> {
    vec![
        json!({"client_id": "ops-viewer", "claims": {"roles": ["qi-viewer"], "sites": ["*"]}}),
        json!({"client_id": "ops-operator", "claims": {"roles": ["qi-operator", "qi-viewer"], "sites": ["*"]}}),
    ]
}

/// Starts the hub binary with `[auth.oidc]` pointing at `issuer`.
async fn start_hub(stack: &mut e2e_tests::Stack, issuer: &str) -> Result<()> {
    let after = format!(
        "\n[auth.oidc]\nissuer = \"{issuer}\"\naudience = \"{HUB_AUDIENCE}\"\nsites_claim = \"sites\"\n\
         jwks_min_refresh_s = 1\n[auth.oidc.role_map]\nqi-viewer = \"viewer\"\nqi-operator = \"operator\"\n"
    );
    let hub = e2e_tests::HubLaunch {
        binary: e2e_tests::bin("cloud-hub")?,
        pg_url: &stack.pg_url()?,
        grpc_port: stack.grpc_port,
        http_port: stack.hub_http_port,
        database: "",
        grpc: "",
        after: &after,
        args: &[],
        dir: stack.dir.path(),
        log: &stack.log_path("hub"),
    }
    .start()
    .await?;
    stack.hub = Some(hub);
    Ok(())
}

/// The hub itself, with `[auth.oidc]` pointing at the test issuer: the
/// provider's tokens go through the same guard as the hub's own.
#[tokio::test]
async fn the_hub_serves_a_provider_token_by_its_mapped_role() -> Result<()> {
    let mut stack = e2e_tests::Stack::new().await?;
    let iss = Issuer::start(stack.dir.path(), "issuer", free_port(), &clients()).await?;
    start_hub(&mut stack, &iss.url).await?;
    let http = reqwest::Client::new();
    let base = stack.hub_url();
    let command = json!({"write_point": {"device": "meter-1", "point": "setpoint", "value": 1.5}, "timeout_s": 60});

    let viewer = iss.token("ops-viewer", HUB_AUDIENCE).await?;
    let resp = http
        .get(format!("{base}/api/v1/devices"))
        .bearer_auth(&viewer)
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{}{}", resp.text().await?, stack.logs());
    let me: Value = http
        .get(format!("{base}/api/v1/auth/me"))
        .bearer_auth(&viewer)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(me["role"], "viewer", "{me}");
    assert_eq!(me["id"], "oidc:ops-viewer", "{me}");

    let resp = http
        .post(format!("{base}/api/v1/gateways/gw-1/commands"))
        .bearer_auth(&viewer)
        .json(&command)
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("operator"), "{body}");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM commands")
        .fetch_one(&stack.db().await?)
        .await?;
    assert_eq!(queued, 0, "a refused command left a row");

    // The operator's token passes the guard (whatever the handler then says).
    let operator = iss.token("ops-operator", HUB_AUDIENCE).await?;
    let resp = http
        .post(format!("{base}/api/v1/gateways/gw-1/commands"))
        .bearer_auth(&operator)
        .json(&command)
        .send()
        .await?;
    let status = resp.status().as_u16();
    assert!(
        status != 401 && status != 403,
        "{status} {}",
        resp.text().await?
    );

    // A token for another audience: 401 with the verifier's message.
    let other = iss.token("ops-viewer", OTHER_AUDIENCE).await?;
    let resp = http
        .get(format!("{base}/api/v1/devices"))
        .bearer_auth(&other)
        .send()
        .await?;
    let status = resp.status();
    let body = resp.text().await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("audience"), "{body}");
    Ok(())
}

#[tokio::test]
async fn the_hub_starts_while_the_provider_is_down_and_takes_its_tokens_once_it_is_up() -> Result<()>
{
    let mut stack = e2e_tests::Stack::new().await?;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // Nothing listens on the provider's port: the hub still comes up (/ready).
    start_hub(&mut stack, &url).await?;
    let http = reqwest::Client::new();
    let devices = format!("{}/api/v1/devices", stack.hub_url());

    // A well-formed token the hub cannot check yet: refused, saying why.
    let forged = unsigned(
        &json!({"alg": "RS256", "kid": "k"}),
        &forgeable_claims(&url),
    );
    let resp = http.get(&devices).bearer_auth(&forged).send().await?;
    let status = resp.status();
    let body = resp.text().await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unreachable"), "{body}");

    let iss = Issuer::start(stack.dir.path(), "issuer", port, &clients()).await?;
    let token = iss.token("ops-viewer", HUB_AUDIENCE).await?;
    e2e_tests::wait_for(
        "the hub to accept the provider's token",
        Duration::from_secs(20),
        || {
            let (http, devices, token) = (http.clone(), devices.clone(), token.clone());
            async move {
                let s = http
                    .get(&devices)
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .status();
                Ok((s == 200).then_some(()))
            }
        },
    )
    .await
    .with_context(|| stack.logs())?;
    let log = stack.hub.as_ref().map(|h| h.log_text()).unwrap_or_default();
    assert!(log.contains("identity provider not reachable"), "{log}");
    assert!(log.contains("identity provider reached"), "{log}");
    Ok(())
}
