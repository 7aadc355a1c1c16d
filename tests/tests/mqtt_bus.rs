//! The site MQTT bus with clients nobody here wrote: Debian's
//! mosquitto_pub / mosquitto_sub and Python's paho-mqtt, against the real
//! agent (embedded rumqttd behind the agent's front door) and the real hub.
// qi-test: tier-independent (the site MQTT bus; the hub is only a sink): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::peers::python;
use e2e_tests::pki::TestCa;
use e2e_tests::{Stack, free_port, wait_for};
use std::process::Output;
use std::time::Duration;

const PW: &str = "s3cret-pw";

struct Bus {
    stack: Stack,
    port: u16,
}

/// Hub + simulator + agent with an `[mqtt]` section; `extra` is appended to it.
async fn bus(gateway: &str, extra: &str) -> Result<Bus> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    stack.start_sim(false).await?;
    let (port, cfg) = stack.write_bus_config(
        gateway,
        extra,
        &[
            (
                "sensor",
                "publish = [\"site/s1/+/+/telemetry\"]\nsubscribe = [\"site/s1/+/+/errors\"]",
            ),
            ("hmi", "subscribe = [\"site/#\"]"),
        ],
        PW,
    )?;
    stack.start_agent(&cfg).await?;
    Ok(Bus { stack, port })
}

fn mosquitto(tool: &str, args: &[&str]) -> Result<Output> {
    std::process::Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("{tool} not installed? run scripts/setup-test-peers.sh"))
}

fn publish(port: u16, user: &str, pw: &str, qos: &str, topic: &str, msg: &str) -> Result<Output> {
    let port = port.to_string();
    mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            user,
            "-P",
            pw,
            "-q",
            qos,
            "-t",
            topic,
            "-m",
            msg,
        ],
    )
}

fn ok(o: &Output) -> Result<()> {
    anyhow::ensure!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// Waits until the hub holds `metric` of `device` with the values 0..n, each
/// exactly once (the publishers sent 0..n as QoS 1).
async fn values_0_to_n_once(stack: &Stack, device: &str, metric: &str, n: u32) -> Result<()> {
    let values = wait_for(
        &format!("{n} readings of {device}/{metric} at the hub"),
        Duration::from_secs(20),
        || async {
            let v = hub_values(stack, device, metric).await?;
            Ok((v.len() >= n as usize).then_some(v))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    let mut sorted = values;
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sorted, (0..n).map(f64::from).collect::<Vec<_>>());
    Ok(())
}

async fn hub_values(stack: &Stack, device: &str, metric: &str) -> Result<Vec<f64>> {
    let pool = stack.db().await?;
    Ok(sqlx::query_scalar(
        "SELECT value FROM readings WHERE device_id = $1 AND metric = $2 ORDER BY ts",
    )
    .bind(device)
    .bind(metric)
    .fetch_all(&pool)
    .await?)
}

async fn agent_metrics(stack: &Stack) -> Result<String> {
    Ok(
        e2e_tests::http::get(format!("{}/metrics", stack.agent_url()))
            .await?
            .text()
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_and_qos1_telemetry_reaches_the_hub_once() -> Result<()> {
    let b = bus("gw-mqtt-1", "").await?;
    let topic = "site/s1/thermo/th-1/telemetry";
    ok(&publish(
        b.port,
        "sensor",
        PW,
        "1",
        topic,
        r#"{"metric":"temp","value":21.5,"unit":"Cel"}"#,
    )?)?;
    ok(&publish(b.port, "sensor", PW, "0", topic, "hum=40.5")?)?;
    ok(&publish(
        b.port,
        "sensor",
        PW,
        "1",
        topic,
        r#"[{"metric":"temp","value":22.0,"ts":"2026-01-01T00:00:00Z"},{"metric":"door","value":true}]"#,
    )?)?;
    // paho-mqtt: a batch of QoS1 messages, each waited for.
    let script = format!(
        r#"
import paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-1")
c.username_pw_set("sensor", "{PW}")
c.connect("127.0.0.1", {port})
c.loop_start()
for i in range(50):
    c.publish("{topic}", '{{"metric":"count","value":%d}}' % i, qos=1).wait_for_publish(5)
c.disconnect()
c.loop_stop()
print("done")
"#,
        port = b.port
    );
    let out = std::process::Command::new(python()?)
        .arg("-c")
        .arg(&script)
        .output()?;
    ok(&out)?;
    let stack = &b.stack;
    values_0_to_n_once(stack, "th-1", "count", 50).await?;
    assert_eq!(hub_values(stack, "th-1", "temp").await?, vec![22.0, 21.5]);
    assert_eq!(hub_values(stack, "th-1", "hum").await?, vec![40.5]);
    assert_eq!(hub_values(stack, "th-1", "door").await?, vec![1.0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_polled_telemetry_and_retained_health() -> Result<()> {
    let b = bus("gw-mqtt-2", "").await?;
    // Let the meter be polled and its health published (retained) first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let port = b.port.to_string();
    let out = mosquitto(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "hmi",
            "-P",
            PW,
            "-t",
            "site/#",
            "-v",
            "-C",
            "3",
            "-W",
            "10",
        ],
    )?;
    ok(&out).with_context(|| b.stack.logs())?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("site/s1/eastron-sdm630/meter-1/health {"),
        "no retained health: {text}"
    );
    assert!(
        text.contains("site/s1/eastron-sdm630/meter-1/telemetry [{\"metric\":"),
        "no polled telemetry: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_topics_and_payloads_are_refused_and_counted() -> Result<()> {
    let b = bus("gw-mqtt-3", "").await?;
    let port = b.port;
    let topic = "site/s1/thermo/th-1/telemetry";
    // Wrong password, unknown user, anonymous: refused at CONNECT.
    let o = publish(port, "sensor", "wrong", "1", topic, "temp=1")?;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad user name or password"),
        "{o:?}"
    );
    assert!(
        !publish(port, "nobody", PW, "1", topic, "temp=1")?
            .status
            .success()
    );
    let anon = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-m",
            "temp=1",
        ],
    )?;
    assert!(!anon.status.success(), "{anon:?}");
    // A subscription outside the user's rules is refused.
    let denied = mosquitto(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            "sensor",
            "-P",
            PW,
            "-t",
            "#",
            "-W",
            "3",
        ],
    )?;
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("denied"),
        "{denied:?}"
    );
    // Listen for the rejection reasons the agent publishes.
    let errors = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            "sensor",
            "-P",
            PW,
            "-t",
            "site/s1/+/+/errors",
            "-v",
            "-C",
            "3",
            "-W",
            "15",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Bad payloads: each acknowledged (the client must not resend it), refused, counted.
    ok(&publish(port, "sensor", PW, "1", topic, "{not json")?)?;
    ok(&publish(
        port,
        "sensor",
        PW,
        "1",
        topic,
        r#"{"metric":"temp","value":"hot"}"#,
    )?)?;
    ok(&publish(
        port,
        "sensor",
        PW,
        "1",
        "site/s1/thermo/th-9/telemetry",
        "temp=1",
    )?)?;
    ok(&publish(port, "sensor", PW, "1", topic, "temp=NaN")?)?;
    let huge = format!("temp={}", "1".repeat(70_000));
    ok(&publish(port, "sensor", PW, "1", topic, &huge)?)?;
    // Publishing outside the rules: acknowledged and dropped (MQTT 3.1.1 has no negative ack).
    ok(&publish(
        port,
        "sensor",
        PW,
        "1",
        "site/s1/thermo/th-1/cmd",
        "x",
    )?)?;
    // ... and a good one after all that still arrives.
    ok(&publish(port, "sensor", PW, "1", topic, "temp=7.5")?)?;
    let stack = &b.stack;
    wait_for(
        "the good reading at the hub",
        Duration::from_secs(20),
        || async { Ok((hub_values(stack, "th-1", "temp").await? == vec![7.5]).then_some(())) },
    )
    .await
    .with_context(|| stack.logs())?;
    let errs = errors.wait_with_output().await?;
    let text = String::from_utf8_lossy(&errs.stdout);
    assert!(text.contains("site/s1/thermo/th-1/errors"), "{text}");
    assert!(text.contains("unparseable"), "{text}");
    let m = agent_metrics(stack).await?;
    for reason in [
        "unparseable",
        "invalid_reading",
        "unknown_device",
        "too_big",
    ] {
        assert!(
            m.contains(&format!("edge_mqtt_rejected_total{{reason=\"{reason}\"}}")),
            "{reason}: {m}"
        );
    }
    assert!(
        m.contains("edge_mqtt_denied_total{what=\"publish\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("edge_mqtt_denied_total{what=\"subscribe\"}"),
        "{m}"
    );
    assert!(
        m.contains("edge_mqtt_connections_total{result=\"bad_password\"}"),
        "{m}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_mid_stream_loses_nothing_it_had_acknowledged() -> Result<()> {
    let b = bus("gw-mqtt-4", "").await?;
    // paho publishes QoS1 as fast as it can and is killed partway; every
    // message it saw acknowledged must reach the hub.
    let script = format!(
        r#"
import paho.mqtt.client as mqtt, os, sys, threading
acked = []
def on_publish(c, u, mid, rc, props): acked.append(mid)
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-cut")
c.on_publish = on_publish
c.max_inflight_messages_set(100)
c.username_pw_set("sensor", "{PW}")
c.connect("127.0.0.1", {port})
c.loop_start()
mids = {{}}
for i in range(5000):
    info = c.publish("site/s1/thermo/th-1/telemetry", '{{"metric":"n","value":%d}}' % i, qos=1)
    mids[info.mid] = i
    if i == 3000:
        break
import time
# Killed partway: once a few hundred are acknowledged (however loaded the
# machine is), with the rest still in flight.
deadline = time.time() + 10
while len(acked) < 300 and time.time() < deadline: time.sleep(0.005)
got = sorted(mids[m] for m in list(acked) if m in mids)
print(",".join(map(str, got)), flush=True)
os._exit(0)
"#,
        port = b.port
    );
    let out = std::process::Command::new(python()?)
        .arg("-c")
        .arg(&script)
        .output()?;
    ok(&out)?;
    let acked: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>())
        .collect::<Result<_, _>>()?;
    assert!(acked.len() > 100, "too few acknowledged: {}", acked.len());
    // A client that sends garbage is dropped; the bus carries on.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", b.port)).await?;
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"\x10\xff\xff\xff\xff\x7fgarbage").await?;
    let mut sink = [0u8; 16];
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut raw, &mut sink),
    )
    .await?;
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "garbage was answered: {closed:?}"
    );
    let stack = &b.stack;
    // Wait for the acknowledged values themselves, not a count: the hub may
    // also get readings the agent buffered but never acknowledged, and
    // interleaved batches can bring those first.
    let stored = wait_for(
        "acknowledged readings at the hub",
        Duration::from_secs(20),
        || async {
            let v = hub_values(stack, "th-1", "n").await?;
            let have: std::collections::HashSet<u64> = v.iter().map(|x| *x as u64).collect();
            Ok(acked
                .iter()
                .all(|a| have.contains(&(*a as u64)))
                .then_some(v))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    let set: std::collections::HashSet<u64> = stored.iter().map(|v| *v as u64).collect();
    assert_eq!(set.len(), stored.len(), "duplicates at the hub");
    for a in &acked {
        assert!(set.contains(&(*a as u64)), "acknowledged {a} missing");
    }
    ok(&publish(
        b.port,
        "sensor",
        PW,
        "1",
        "site/s1/thermo/th-1/telemetry",
        "after=1",
    )?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_and_client_certificates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new(dir.path(), "mqtt")?;
    let server = ca.issue(dir.path(), "gateway", &["localhost", "127.0.0.1"])?;
    let client = ca.issue(dir.path(), "sensor", &[])?;
    let tls_port = free_port();
    let extra = format!(
        "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"",
        server.cert.display(),
        server.key.display(),
        ca.cert_path.display()
    );
    let b = bus("gw-mqtt-tls", &extra).await?;
    let tp = tls_port.to_string();
    let cafile = ca.cert_path.display().to_string();
    let topic = "site/s1/thermo/th-1/telemetry";
    // Password over TLS.
    ok(&mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &tp,
            "--cafile",
            &cafile,
            "-u",
            "sensor",
            "-P",
            PW,
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            "tls_pw=1",
        ],
    )?)?;
    // Client certificate (common name = user), no password.
    let (cert, key) = (
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    ok(&mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &tp,
            "--cafile",
            &cafile,
            "--cert",
            &cert,
            "--key",
            &key,
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            "tls_cert=1",
        ],
    )?)?;
    // Plain text on the TLS port is not MQTT to it.
    let plain = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &tp,
            "-u",
            "sensor",
            "-P",
            PW,
            "-t",
            topic,
            "-m",
            "x=1",
        ],
    )?;
    assert!(!plain.status.success());
    let stack = &b.stack;
    wait_for(
        "TLS readings at the hub",
        Duration::from_secs(20),
        || async {
            let a = hub_values(stack, "th-1", "tls_pw").await?;
            let c = hub_values(stack, "th-1", "tls_cert").await?;
            Ok((a.len() == 1 && c.len() == 1).then_some(()))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_get_the_same_logins_rules_and_durable_acks() -> Result<()> {
    let ws_port = free_port();
    let b = bus(
        "gw-mqtt-ws",
        &format!("ws_listen = \"127.0.0.1:{ws_port}\""),
    )
    .await?;
    let topic = "site/s1/climate/th-1/telemetry";
    // paho over WebSocket (path /mqtt, subprotocol mqtt): a wrong password is
    // refused, a publish for an unknown device is not stored, 30 QoS 1
    // messages are acknowledged and reach the hub once each, and a browser-like
    // subscriber sees polled telemetry.
    let script = format!(
        r#"
import sys, threading
import paho.mqtt.client as mqtt

def client(name, user, pw):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.username_pw_set(user, pw)
    return c

bad = client("ws-bad", "sensor", "wrong")
rc = []
bad.on_connect = lambda c, u, f, reason, p: rc.append(reason)
bad.connect("127.0.0.1", {ws_port})
bad.loop_start()
for _ in range(50):
    if rc: break
    threading.Event().wait(0.1)
bad.loop_stop()
assert rc and rc[0].is_failure, rc
print("wrong password refused:", rc[0])

got = threading.Event()
hmi = client("ws-hmi", "hmi", "{PW}")
hmi.on_message = lambda c, u, m: got.set()
hmi.on_connect = lambda c, u, f, reason, p: c.subscribe("site/s1/+/+/telemetry", qos=0)
hmi.connect("127.0.0.1", {ws_port})
hmi.loop_start()

c = client("ws-sensor", "sensor", "{PW}")
c.connect("127.0.0.1", {ws_port})
c.loop_start()
c.publish("site/s1/climate/other/telemetry", '{{"metric":"x","value":1}}', qos=1).wait_for_publish(5)
for i in range(30):
    c.publish("{topic}", '{{"metric":"ws","value":%d}}' % i, qos=1).wait_for_publish(5)
c.disconnect()
c.loop_stop()
assert got.wait(10), "no telemetry over the WebSocket subscription"
hmi.disconnect()
hmi.loop_stop()
print("done")
"#
    );
    let out = std::process::Command::new(python()?)
        .arg("-c")
        .arg(&script)
        .output()?;
    ok(&out)?;
    let stack = &b.stack;
    values_0_to_n_once(stack, "th-1", "ws", 30).await?;
    assert!(hub_values(stack, "other", "x").await?.is_empty());
    Ok(())
}
