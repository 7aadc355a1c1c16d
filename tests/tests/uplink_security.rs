//! Who may deliver readings: mutual TLS (the gateway id comes from the client
//! certificate) and bearer tokens. Certificates are generated at test time.
// qi-test: tier-independent (who may connect to the uplink): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::grpc::{Client, batch, exchange, hello, reading};
use e2e_tests::pki::TestCa;
use e2e_tests::{Stack, wait_for};
use qi_proto::v1::hub_message;
use sha2::{Digest, Sha256};
use std::time::Duration;

async fn stored_for(stack: &Stack, gw: &str) -> Result<i64> {
    let pool = stack.db().await?;
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM readings WHERE gateway_id = $1")
            .bind(gw)
            .fetch_one(&pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_the_gateway_and_refuses_strangers_and_forgers() -> Result<()> {
    let mut stack = Stack::new().await?;
    let dir = stack.dir.path().to_path_buf();
    let hub_ca = TestCa::new(&dir, "hub")?;
    let gw_ca = TestCa::new(&dir, "gateways")?;
    let rogue_ca = TestCa::new(&dir, "rogue")?;
    let hub_cert = hub_ca.issue(&dir, "hub", &["localhost", "127.0.0.1"])?;
    let gw = gw_ca.issue(&dir, "gw-tls", &[])?;
    let other = gw_ca.issue(&dir, "gw-other", &[])?;
    let rogue_dir = dir.join("rogue");
    std::fs::create_dir_all(&rogue_dir)?;
    let rogue = rogue_ca.issue(&rogue_dir, "gw-tls", &[])?;
    stack.hub_grpc_extra = format!(
        "auth = \"mtls\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\n",
        hub_cert.cert.display(),
        hub_cert.key.display(),
        gw_ca.cert_path.display()
    );
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config(
        "gw-tls",
        100,
        &format!(
            "ca_cert = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            hub_ca.cert_path.display(),
            gw.cert.display(),
            gw.key.display()
        ),
    )?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        "hub_url = \"http://127.0.0.1:",
        "hub_url = \"https://localhost:",
    );
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;
    wait_for(
        "readings over mutual TLS",
        Duration::from_secs(20),
        || async { Ok((stored_for(&stack, "gw-tls").await? > 20).then_some(())) },
    )
    .await
    .with_context(|| stack.logs())?;

    let url = format!("https://localhost:{}", stack.grpc_port);
    let msgs = || vec![hello("gw-tls"), batch(vec![reading(1_000_000, 1.0)])];
    // No client certificate.
    let (got, err) = exchange(&Client::tls(&url, &hub_ca.cert_path, None)?, msgs()).await?;
    assert!(
        err.is_some() && got.is_empty(),
        "no certificate: {got:?} {err:?}"
    );
    // A certificate from a CA the hub does not trust, even with the right name.
    let (got, err) = exchange(
        &Client::tls(&url, &hub_ca.cert_path, Some((&rogue.cert, &rogue.key)))?,
        msgs(),
    )
    .await?;
    assert!(err.is_some() && got.is_empty(), "rogue CA: {got:?} {err:?}");
    // A valid certificate for another gateway, claiming gw-tls: forged id.
    let (got, err) = exchange(
        &Client::tls(&url, &hub_ca.cert_path, Some((&other.cert, &other.key)))?,
        msgs(),
    )
    .await?;
    assert!(got.is_empty(), "{got:?}");
    let err = err.context("forged id should be refused")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("gw-other"), "{err:?}");
    // Plain gRPC against the TLS port.
    let (got, err) = exchange(
        &Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port)),
        msgs(),
    )
    .await?;
    assert!(
        err.is_some() && got.is_empty(),
        "plaintext: {got:?} {err:?}"
    );
    // None of them stored anything: the probe reading (seq 1,000,000) is absent.
    let pool = stack.db().await?;
    let probes: i64 = sqlx::query_scalar("SELECT count(*) FROM readings WHERE seq = 1000000")
        .fetch_one(&pool)
        .await?;
    assert_eq!(probes, 0);
    let metrics = e2e_tests::http::get(format!("{}/metrics", stack.hub_url()))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("hub_auth_failures_total{reason=\"forged_gateway_id\"}"),
        "{metrics}"
    );
    // The real gateway is still delivering.
    let n = stored_for(&stack, "gw-tls").await?;
    wait_for("more readings", Duration::from_secs(10), || async {
        Ok((stored_for(&stack, "gw-tls").await? > n).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_admit_their_gateway_only() -> Result<()> {
    let mut stack = Stack::new().await?;
    let hash = |t: &str| {
        Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    stack.hub_grpc_extra = format!(
        "auth = \"token\"\n[grpc.tokens]\ngw-tok = \"{}\"\n",
        hash("s3cret-token")
    );
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let token_file = stack.dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n")?;
    let cfg = stack.write_agent_config(
        "gw-tok",
        100,
        &format!("token_file = \"{}\"\n", token_file.display()),
    )?;
    stack.start_agent(&cfg).await?;
    wait_for("readings with a token", Duration::from_secs(20), || async {
        Ok((stored_for(&stack, "gw-tok").await? > 20).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    let url = format!("http://127.0.0.1:{}", stack.grpc_port);
    for (client, claim) in [
        (Client::plain(&url), "gw-tok"),
        (Client::plain(&url).with_token("wrong"), "gw-tok"),
        (
            Client::plain(&url).with_token("s3cret-token"),
            "gw-someone-else",
        ),
    ] {
        let (got, err) = exchange(
            &client,
            vec![hello(claim), batch(vec![reading(2_000_000, 1.0)])],
        )
        .await?;
        assert!(
            !got.iter().any(|k| matches!(k, hub_message::Kind::Ack(_))),
            "{got:?}"
        );
        assert_eq!(err.map(|e| e.code()), Some(tonic::Code::Unauthenticated));
    }
    Ok(())
}
