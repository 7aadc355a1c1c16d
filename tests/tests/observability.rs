//! Issue #17, operability: JSON logs under journald with the fields an SRE
//! filters on, request ids from the hub's REST and gRPC into its logs, and
//! OpenTelemetry traces over OTLP (off by default) that follow one batch
//! from the gateway through the hub into the database.
//!
//! journald itself does not run here: the daemons are started the way
//! systemd starts them, with `JOURNAL_STREAM` naming the device and inode of
//! their stderr (here a log file instead of the journal's socket), and their
//! output is parsed as JSON. Traces go to a receiver in this suite that
//! decodes them with the official opentelemetry-proto definitions.
// qi-test: tier-independent (log lines and traces; the hub stores nothing tier-specific here): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, ensure};
use e2e_tests::otlp::{Received, Receiver, hex};
use e2e_tests::{Stack, wait_for};
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// `JOURNAL_STREAM` as systemd would set it for a process whose stderr is `log`.
fn journal_stream_for(log: &Path) -> Result<(String, String)> {
    std::fs::File::create(log)?;
    let m = std::fs::metadata(log)?;
    Ok(("JOURNAL_STREAM".into(), format!("{}:{}", m.dev(), m.ino())))
}

/// Every line of `log` parsed as JSON; a line that is not JSON is an error.
fn json_lines(log: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(log)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l}")))
        .collect()
}

fn find(lines: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    lines.iter().find(|v| pred(v))
}

async fn post_command(stack: &Stack, gateway: &str, id: &[u8]) -> Result<reqwest::Response> {
    Ok(e2e_tests::http::Client::new()
        .post(format!(
            "{}/api/v1/gateways/{gateway}/commands",
            stack.hub_url()
        ))
        .header(
            "x-request-id",
            reqwest::header::HeaderValue::from_bytes(id).context("header value")?,
        )
        .json(&json!({"write_point": {"device": "meter-1", "point": "nope", "value": 1.0}}))
        .send()
        .await?)
}

/// Opens an uplink stream with `id` as its `x-request-id` and returns the
/// id the hub answers with (response metadata).
async fn grpc_stream_id(stack: &Stack, id: &str) -> Result<String> {
    use qi_proto::v1::uplink_client::UplinkClient;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", stack.grpc_port))?
            .connect()
            .await?;
    let value: tonic::metadata::MetadataValue<_> = id.parse()?;
    let mut client = UplinkClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("x-request-id", value.clone());
        Ok(req)
    });
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(e2e_tests::grpc::hello("gw-grpc-id")).await?;
    let response = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    Ok(response
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string())
}

fn returned_id(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_journald_logs_are_json_with_gateway_device_and_request_id_and_no_traces_leave()
-> Result<()> {
    let mut stack = Stack::new().await?;
    // Listening, and named by the standard OpenTelemetry variable: with
    // `[telemetry]` unset the daemons must still not send it anything.
    let receiver = Receiver::start().await?;
    let otel_env = (
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
        receiver.endpoint(),
    );
    stack.hub_env = vec![
        journal_stream_for(&stack.log_path("hub"))?,
        otel_env.clone(),
    ];
    stack.agent_env = vec![journal_stream_for(&stack.log_path("agent"))?, otel_env];
    stack.start_hub().await?;
    stack.start_sim(true).await?;
    let cfg = stack.write_agent_config("gw-obs", 200, "")?;
    stack.start_agent(&cfg).await?;
    let pool = stack.db().await?;
    wait_for("readings at the hub", Duration::from_secs(60), || async {
        Ok((e2e_tests::hub_count(&pool).await? > 0).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;

    // A client's well-formed id is used and returned ...
    let r = post_command(&stack, "gw-obs", b"e2e-obs-1").await?;
    ensure!(r.status() == 202, "command: {}", r.status());
    assert_eq!(returned_id(&r), "e2e-obs-1");
    // ... on refusals too (no credentials: 401).
    let r = e2e_tests::http::Client::bare()
        .request(
            reqwest::Method::GET,
            format!("{}/api/v1/devices", stack.hub_url()),
        )
        .header("x-request-id", "e2e-obs-401")
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    assert_eq!(returned_id(&r), "e2e-obs-401");
    // Hostile ids are replaced by a fresh UUID, never echoed.
    let long = "a".repeat(300);
    for bad in [
        long.as_bytes(),
        b"tab\there",
        b"\"quoted\" id",
        b"bytes\xff\xfe",
    ] {
        let r = post_command(&stack, "gw-obs", bad).await?;
        let got = returned_id(&r);
        assert_eq!(
            got.len(),
            36,
            "{got:?} for {:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(qi_common::request_id::well_formed(&got));
    }
    // A request without one gets one.
    let r = e2e_tests::http::Client::new()
        .request(reqwest::Method::GET, format!("{}/live", stack.hub_url()))
        .send()
        .await?;
    assert_eq!(returned_id(&r).len(), 36);

    // gRPC: a stream's well-formed id is kept, a hostile one replaced.
    assert_eq!(grpc_stream_id(&stack, "grpc-e2e-1").await?, "grpc-e2e-1");
    let got = grpc_stream_id(&stack, &"g".repeat(200)).await?;
    assert_eq!(got.len(), 36, "{got}");
    // The agent's local API answers with the id too.
    let r = e2e_tests::http::Client::new()
        .request(
            reqwest::Method::GET,
            format!("{}/health", stack.agent_url()),
        )
        .header("x-request-id", "agent-e2e-1")
        .send()
        .await?;
    assert_eq!(returned_id(&r), "agent-e2e-1");

    let hub_log = stack.log_path("hub");
    let agent_log = stack.log_path("agent");
    let (hub, agent) = wait_for("the log lines", Duration::from_secs(30), || async {
        let hub = json_lines(&hub_log)?;
        let agent = json_lines(&agent_log)?;
        let ready = find(&hub, |v| v["request_id"] == "e2e-obs-1").is_some()
            && find(&hub, |v| v["request_id"] == "grpc-e2e-1").is_some()
            && find(&agent, |v| v["message"] == "uplink stream open").is_some();
        Ok(ready.then_some((hub, agent)))
    })
    .await
    .with_context(|| stack.logs())?;

    // The REST request's log line carries its id and route.
    let queued = find(&hub, |v| {
        v["message"] == "command queued" && v["request_id"] == "e2e-obs-1"
    })
    .with_context(|| format!("no 'command queued' line with the request id:\n{hub:#?}"))?;
    assert_eq!(queued["http.route"], "/api/v1/gateways/{gateway}/commands");
    assert_eq!(queued["http.request.method"], "POST");
    assert_eq!(queued["gateway"], "gw-obs");
    ensure!(
        find(&hub, |v| v["request_id"] == "grpc-e2e-1"
            && v["gateway"] == "gw-grpc-id")
        .is_some(),
        "no hub line of the hand-made stream with its id and gateway"
    );
    // The gRPC stream's id: the agent names it, the hub logs it with the gateway.
    let open = find(&agent, |v| v["message"] == "uplink stream open").context("agent line")?;
    let stream_id = open["request_id"].as_str().context("agent's request_id")?;
    assert!(qi_common::request_id::well_formed(stream_id));
    let connected = find(&hub, |v| v["message"] == "gateway connected")
        .context("no 'gateway connected' line")?;
    assert_eq!(connected["gateway"], "gw-obs");
    assert_eq!(connected["request_id"], stream_id);
    assert_eq!(connected["level"], "INFO");
    assert!(connected["timestamp"].is_string());
    // Every agent line names its gateway (tasks outside any span too).
    for l in &agent {
        assert_eq!(l["gateway"], "gw-obs", "{l}");
    }
    // The agent's lines name the device they are about.
    ensure!(
        find(&agent, |v| v["device"] == "meter-1").is_some(),
        "no agent line with device = meter-1:\n{agent:#?}"
    );

    // Traces off (the default): nothing was sent, nothing even connected.
    assert_eq!(receiver.connections(), 0);
    assert!(receiver.spans().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_stream_of_another_file_or_log_format_human_keeps_human_lines() -> Result<()> {
    for (env_for_other_file, args) in [(true, &[][..]), (false, &["--log-format", "human"][..])] {
        let mut stack = Stack::edge_only()?;
        let log = stack.log_path("agent");
        let (k, mut v) = journal_stream_for(&log)?;
        if env_for_other_file {
            // Inherited from a parent whose stderr was the journal.
            v = format!("{v}1");
        }
        stack.agent_env = vec![(k, v)];
        let cfg = stack.write_agent_config("gw-human", 1000, "")?;
        let text = std::fs::read_to_string(&cfg)?;
        // `--log-format` goes on the command line: start the agent by hand.
        let mut cmd = std::process::Command::new(e2e_tests::bin("edge-agent")?);
        cmd.arg("--config")
            .arg(&cfg)
            .args(args)
            .envs(stack.agent_env.clone());
        let proc = e2e_tests::process::Proc::spawn_cmd("edge-agent", &mut cmd, &log)?;
        let url = format!("{}/live", stack.agent_url());
        wait_for("agent /live", Duration::from_secs(20), || async {
            Ok(e2e_tests::get_json(&url).await.ok().map(|_| ()))
        })
        .await?;
        let out = std::fs::read_to_string(&log)?;
        let first = out.lines().next().context("no log line")?;
        ensure!(
            serde_json::from_str::<Value>(first).is_err() && first.contains("INFO"),
            "expected a human line ({args:?}, config {text}): {first}"
        );
        proc.terminate(Duration::from_secs(10))?;
    }
    Ok(())
}

/// Spans of one service with one name.
fn named<'a>(spans: &'a [Received], service: &str, name: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.service == service && s.span.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_batch_from_the_gateway_through_the_hub_into_the_database() -> Result<()>
{
    let receiver = Receiver::start().await?;
    let telemetry = format!(
        "\n[telemetry]\notlp_endpoint = \"{}\"\n",
        receiver.endpoint()
    );
    let mut stack = Stack::new().await?;
    stack.hub_after = telemetry.clone();
    stack.hub_args = vec!["--log-format".into(), "json".into()];
    stack.start_hub().await?;
    stack.start_sim(true).await?;
    let cfg = stack.write_agent_config("gw-trace", 200, &telemetry)?;
    stack.start_agent(&cfg).await?;
    // A REST request whose span must carry method, route and status, and
    // whose log line names the span's trace.
    let r = post_command(&stack, "gw-trace", b"trace-e2e-1").await?;
    assert_eq!(r.status(), 202);

    let (agent_batch, hub_batch, db_write) = wait_for(
        "a batch's spans from both daemons",
        Duration::from_secs(90),
        || async {
            let spans = receiver.spans();
            for a in named(&spans, "edge-agent", "uplink batch") {
                let Some(h) = named(&spans, "cloud-hub", "ingest batch")
                    .into_iter()
                    .find(|h| h.span.parent_span_id == a.span.span_id)
                else {
                    continue;
                };
                if let Some(d) = named(&spans, "cloud-hub", "db_write")
                    .into_iter()
                    .find(|d| d.span.parent_span_id == h.span.span_id)
                {
                    return Ok(Some((a.clone(), h.clone(), d.clone())));
                }
            }
            Ok(None)
        },
    )
    .await
    .with_context(|| {
        let names: Vec<_> = receiver
            .spans()
            .iter()
            .map(|s| format!("{}/{}", s.service, s.span.name))
            .collect();
        format!("received: {names:?}{}", stack.logs())
    })?;
    let trace = &agent_batch.span.trace_id;
    assert_eq!(trace.len(), 16);
    assert_eq!(
        &hub_batch.span.trace_id,
        trace,
        "hub batch in trace {}",
        hex(trace)
    );
    assert_eq!(&db_write.span.trace_id, trace);
    // The agent's batch span is the trace's root; the ack is the batch's child.
    assert!(agent_batch.span.parent_span_id.is_empty());
    let spans = receiver.spans();
    ensure!(
        named(&spans, "cloud-hub", "ack")
            .iter()
            .any(|a| a.span.parent_span_id == hub_batch.span.span_id),
        "no ack span under the hub's batch span"
    );
    assert!(agent_batch.attr("readings").is_some());

    let route = "/api/v1/gateways/{gateway}/commands";
    let rest = wait_for(
        "the REST request's span",
        Duration::from_secs(30),
        || async {
            Ok(
                named(&receiver.spans(), "cloud-hub", &format!("POST {route}"))
                    .first()
                    .map(|s| (*s).clone()),
            )
        },
    )
    .await?;
    assert_eq!(rest.attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(rest.attr("http.route").as_deref(), Some(route));
    assert_eq!(
        rest.attr("http.response.status_code").as_deref(),
        Some("202")
    );
    assert_eq!(rest.attr("request_id").as_deref(), Some("trace-e2e-1"));
    // The request's log line carries the trace and span ids of its span.
    let hub = json_lines(&stack.log_path("hub"))?;
    let queued = find(&hub, |v| v["request_id"] == "trace-e2e-1")
        .context("no hub line of the REST request")?;
    assert_eq!(queued["trace_id"], hex(&rest.span.trace_id));
    assert_eq!(queued["span_id"], hex(&rest.span.span_id));
    Ok(())
}
