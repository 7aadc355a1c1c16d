//! Bad input at this stage: broken config files, an instrument that is down,
//! REST parameters that make no sense, and gRPC clients that break the contract.

use anyhow::{Context, Result};
use e2e_tests::grpc::{Client, batch, exchange, hello, reading};
use e2e_tests::{Stack, bin, get_json, wait_for};
use qi_proto::v1::hub_message;
use std::process::Command;
use std::time::Duration;

/// Runs `edge-agent --check` on a config text; returns (exit success, stderr).
/// (`--check` so that a config that loads does not start a daemon.)
fn run_agent_with(config: &str) -> Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config)?;
    let out = Command::new(bin("edge-agent")?)
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

const GOOD_HEAD: &str = r#"gateway_id = "gw"

[buffer]
path = "/tmp/never-created-by-this-test"
"#;

#[test]
fn malformed_config_is_refused_with_key_and_line() -> Result<()> {
    // A type error: toml reports line and key.
    let (ok, err) = run_agent_with(&format!(
        "{GOOD_HEAD}\n[uplink]\nhub_url = \"http://127.0.0.1:1\"\nbatch_max = \"lots\"\n"
    ))?;
    assert!(!ok);
    assert!(err.contains("line 8") && err.contains("batch_max"), "{err}");

    // A typo in a key name is an error, not a silent default.
    let (ok, err) = run_agent_with(&format!(
        "{GOOD_HEAD}\n[uplink]\nhub_ulr = \"http://127.0.0.1:1\"\n"
    ))?;
    assert!(!ok);
    assert!(err.contains("hub_ulr") && err.contains("line 7"), "{err}");

    // A value that parses but cannot work: our validation names key and line.
    let (ok, err) = run_agent_with(&format!(
        "{GOOD_HEAD}\n[uplink]\nhub_url = \"http://127.0.0.1:1\"\n\n[[devices]]\nid = \"m\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:502\" }}\npoll_interval_ms = 0\n"
    ))?;
    assert!(!ok);
    assert!(
        err.contains("devices[0].poll_interval_ms") && err.contains("line 13"),
        "{err}"
    );

    // Not TOML at all.
    let (ok, err) = run_agent_with("this is [not toml")?;
    assert!(!ok);
    assert!(err.contains("line 1"), "{err}");

    // A missing file.
    let out = Command::new(bin("edge-agent")?)
        .args(["--config", "/nonexistent/agent.toml"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
    Ok(())
}

#[test]
fn unknown_profile_fails_the_check_naming_the_device() -> Result<()> {
    let (ok, err) = run_agent_with(&format!(
        "profiles_dir = \"{}\"\n{GOOD_HEAD}\n[uplink]\nhub_url = \"http://127.0.0.1:1\"\n\n[[devices]]\nid = \"m\"\nprofile = \"no-such-meter\"\ntransport = {{ tcp = \"127.0.0.1:502\" }}\n",
        e2e_tests::profiles_dir().display()
    ))?;
    assert!(!ok);
    assert!(
        err.contains("devices[0] (m)") && err.contains("no-such-meter.toml"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_down_agent_keeps_running_and_retries_with_backoff() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    // No simulator yet: the device's port refuses connections.
    let cfg = stack.write_agent_config("gw-down", 100, "")?;
    stack.start_agent(&cfg).await?;
    let health = wait_for(
        "device reported offline after retries",
        Duration::from_secs(15),
        || async {
            let h = stack.agent_health().await?;
            let d = &h["devices"][0];
            Ok(
                (d["state"] == "offline" && d["consecutive_failures"].as_u64() >= Some(4))
                    .then_some(h),
            )
        },
    )
    .await
    .with_context(|| stack.logs())?;
    let d = &health["devices"][0];
    assert!(
        d["last_error"].as_str().unwrap_or("").contains("connect"),
        "{health}"
    );
    assert!(d["next_retry_ms"].as_u64().is_some(), "{health}");
    assert_eq!(health["status"], "degraded");
    // Still alive, still serving, still connected upstream.
    assert_eq!(health["uplink"]["state"], "connected", "{health}");
    let log = stack.agent.as_ref().context("agent")?.log_text();
    assert!(log.contains("retrying with backoff"), "{log}");

    // The instrument comes back: the agent reconnects by itself and data flows.
    stack.start_sim(false).await?;
    wait_for(
        "device back online with readings at the hub",
        Duration::from_secs(15),
        || async {
            let (_, body) = get_json(&format!(
                "{}/api/v1/readings?device=meter-1",
                stack.hub_url()
            ))
            .await?;
            let h = stack.agent_health().await?;
            Ok(
                (h["devices"][0]["state"] == "online" && body["count"].as_u64() > Some(0))
                    .then_some(()),
            )
        },
    )
    .await
    .with_context(|| stack.logs())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_bad_parameters_get_400_with_a_message() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.hub_args = vec!["--log-format".into(), "json".into()];
    stack.start_hub().await?;
    let base = format!("{}/api/v1/readings", stack.hub_url());
    let cases = [
        ("from=yesterday", "from"),
        ("to=2026-13-45T00:00:00Z", "to"),
        (
            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "before",
        ),
        (
            "from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "before",
        ),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=-5", "limit"),
        ("limit=1000000", "limit"),
        ("order=sideways", "order"),
        ("devcie=meter-1", "devcie"),
    ];
    for (query, mentions) in cases {
        let (status, body) = get_json(&format!("{base}?{query}")).await?;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "bad_request", "{query}: {body}");
        let msg = body["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(mentions),
            "{query}: message {msg:?} should mention {mentions}"
        );
    }
    let long = "x".repeat(200);
    let (status, _) = get_json(&format!("{base}?device={long}")).await?;
    assert_eq!(status, 400);
    let (status, body) = get_json(&format!("{}/api/v1/devices?offset=-1", stack.hub_url())).await?;
    assert_eq!(status, 400, "{body}");

    // Injection attempts are just strings that match nothing.
    for evil in ["'%20OR%201=1%20--", "meter-1';DROP%20TABLE%20readings;--"] {
        let (status, body) = get_json(&format!("{base}?device={evil}")).await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["count"], 0);
    }
    let pool = stack.db().await?;
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&pool)
        .await?;

    let (status, body) = get_json(&format!("{}/api/v1/nothing", stack.hub_url())).await?;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");

    // With --log-format json every log line is a JSON object with a message.
    let log = stack.hub.as_ref().context("hub")?.log_text();
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        assert!(v["message"].is_string() && v["level"].is_string(), "{line}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_deduplicates_redelivered_batches_and_refuses_broken_streams() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let url = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let pool = stack.db().await?;

    // First delivery, then the same batch again (as after a lost ack).
    let b = || batch((1..=5).map(|s| reading(s, 230.0 + s as f64)).collect());
    let (got, err) = exchange(&url, vec![hello("gw-dup"), b(), b()]).await?;
    assert!(err.is_none(), "{err:?}");
    assert!(matches!(&got[0], hub_message::Kind::Welcome(w) if w.highest_committed_seq == 0));
    // The hub writes two batches of a stream at once, so either copy may be
    // the one stored; the acks say 5 new readings between them, in order.
    let acks: Vec<(u64, u32)> = got[1..]
        .iter()
        .filter_map(|m| match m {
            hub_message::Kind::Ack(a) => Some((a.committed_up_to, a.inserted)),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 2, "{got:?}");
    assert!(acks.iter().all(|a| a.0 == 5), "{acks:?}");
    assert_eq!(acks[0].1 + acks[1].1, 5, "{acks:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings WHERE gateway_id = 'gw-dup'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(n, 5);

    // A reconnecting gateway learns what the hub already holds.
    let (got, _) = exchange(&url, vec![hello("gw-dup")]).await?;
    assert!(
        matches!(&got[0], hub_message::Kind::Welcome(w) if w.highest_committed_seq == 5),
        "{got:?}"
    );

    // No Hello first: refused.
    let (_, err) = exchange(&url, vec![b()]).await?;
    assert_eq!(err.map(|s| s.code()), Some(tonic::Code::InvalidArgument));

    // A batch with NaN, or out of order: refused whole, nothing stored, earlier data intact.
    let (_, err) = exchange(
        &url,
        vec![
            hello("gw-dup"),
            batch(vec![reading(6, 1.0), reading(7, f64::NAN)]),
        ],
    )
    .await?;
    let err = err.context("NaN batch should be refused")?;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("finite"), "{err:?}");
    let (_, err) = exchange(
        &url,
        vec![
            hello("gw-dup"),
            batch(vec![reading(9, 1.0), reading(8, 1.0)]),
        ],
    )
    .await?;
    assert_eq!(err.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
    let (_, err) = exchange(&url, vec![hello("")]).await?;
    assert_eq!(err.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&pool)
        .await?;
    assert_eq!(n, 5);

    // The refusals are counted.
    let metrics = e2e_tests::http::get(format!("{}/metrics", stack.hub_url()))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("hub_ingest_rejected_total"), "{metrics}");
    assert!(
        metrics.contains("hub_ingest_duplicates_total 5"),
        "{metrics}"
    );
    Ok(())
}

/// A second agent on the same buffer (a service started twice, or restarted
/// while the old process still exits) waits for sled's lock, then gives up
/// with a clear message; the first keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_buffer_is_refused_clearly() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    stack.start_sim(false).await?;
    let cfg = stack.write_agent_config("gw-twice", 200, "")?;
    stack.start_agent(&cfg).await?;
    let text = std::fs::read_to_string(&cfg)?;
    let second_cfg = stack.dir.path().join("agent2.toml");
    let second_port = e2e_tests::free_port();
    std::fs::write(
        &second_cfg,
        text.replace(
            &format!("127.0.0.1:{}", stack.agent_http_port),
            &format!("127.0.0.1:{second_port}"),
        ),
    )?;
    let second = e2e_tests::Proc::spawn(
        "edge-agent-2",
        &e2e_tests::bin("edge-agent")?,
        &["--config".as_ref(), second_cfg.as_os_str()],
        &stack.log_path("agent2"),
    )?;
    let started = std::time::Instant::now();
    let log = stack.log_path("agent2");
    let status = second.wait(Duration::from_secs(20))?;
    assert!(!status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "gave up at once"
    );
    let text = std::fs::read_to_string(log)?;
    assert!(text.contains("in use by another process"), "{text}");
    // The first agent is unaffected (no hub here, so it is "degraded", but polling).
    let h = stack.agent_health().await?;
    assert_eq!(h["devices"][0]["state"], "online", "{h}");
    Ok(())
}
