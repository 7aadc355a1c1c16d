//! `uplink.compression` does what it says: the same readings cross the wire
//! in far fewer bytes with gzip or zstd than without, counted by the hub
//! below TLS and HTTP/2 (`hub_grpc_wire_bytes_received_total`) against the
//! batches' protobuf size (`hub_grpc_message_bytes_received_total`).
// qi-test: tier-independent (bytes on the wire between agent and hub): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::Stack;

async fn hub_metric(stack: &Stack, name: &str) -> Result<f64> {
    let text = e2e_tests::http::get(format!("{}/metrics", stack.hub_url()))
        .await?
        .text()
        .await?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{name} not in the hub's metrics"))
}

/// Runs an agent with `compression` until it has delivered a few seconds of
/// polling; returns (wire bytes, message bytes, readings) seen by the hub.
async fn deliver(compression: &str) -> Result<(f64, f64, i64)> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config(
        &format!("gw-compress-{compression}"),
        100,
        &format!("compression = \"{compression}\"\nbatch_linger_ms = 1000\n"),
    )?;
    stack.start_agent(&cfg).await?;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let last = stack.drain().await?;
    let wire = hub_metric(&stack, "hub_grpc_wire_bytes_received_total").await?;
    let message = hub_metric(&stack, "hub_grpc_message_bytes_received_total").await?;
    Ok((wire, message, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_shrinks_what_crosses_the_wire() -> Result<()> {
    let mut ratio = std::collections::BTreeMap::new();
    for c in ["none", "gzip", "zstd"] {
        let (wire, message, readings) = deliver(c).await?;
        println!(
            "{c}: {readings} readings, {message} protobuf bytes, {wire} wire bytes, {:.1} wire bytes/reading, wire/protobuf {:.2}",
            wire / readings as f64,
            wire / message
        );
        ratio.insert(c, wire / message);
    }
    // Uncompressed, the wire carries the protobuf plus gRPC/HTTP2 framing
    // (and the hello, pings); compressed, a fraction of it.
    assert!(ratio["none"] > 0.9, "{ratio:?}");
    assert!(ratio["gzip"] < ratio["none"] / 3.0, "{ratio:?}");
    assert!(ratio["zstd"] < ratio["none"] / 3.0, "{ratio:?}");
    Ok(())
}
