//! Field-trial findings (issue #10): writes that do not fit, configs that
//! cannot work, the local API's Host check, and refused registers inside a
//! coalesced read. Real binaries, real sockets, real peers.
// qi-test: tier-independent (edge configuration and polling findings; the hub is only a sink): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::{Proc, Stack, bin, free_port, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes `profile` (TOML text) as `<id>.toml` in a private profiles folder and
/// returns an agent config whose `profiles_dir` points there.
fn private_profile(stack: &Stack, id: &str, profile: &str, devices: &str) -> Result<PathBuf> {
    let dir = stack.dir.path().join("profiles");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{id}.toml")), profile)?;
    let cfg = stack.agent_config_with(devices)?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        &format!("profiles_dir = \"{}\"", e2e_tests::profiles_dir().display()),
        &format!("profiles_dir = \"{}\"", dir.display()),
    );
    std::fs::write(&cfg, text)?;
    Ok(cfg)
}

/// `instrument-sim --constant` serving a profile file on `port`.
async fn sim(stack: &Stack, profile: &Path, port: u16) -> Result<Proc> {
    let listen = format!("127.0.0.1:{port}");
    let p = Proc::spawn(
        "instrument-sim",
        &bin("instrument-sim")?,
        &[
            "--profile".as_ref(),
            profile.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--constant".as_ref(),
        ],
        &stack.log_path("sim"),
    )?;
    wait_for("simulator port", Duration::from_secs(10), || {
        let listen = listen.clone();
        async move {
            Ok(tokio::net::TcpStream::connect(listen)
                .await
                .ok()
                .map(|_| ()))
        }
    })
    .await?;
    Ok(p)
}

/// Holding registers straight from the simulator, as a second master sees them.
async fn holding(port: u16, addr: u16, count: u16) -> Result<Vec<u16>> {
    use tokio_modbus::client::Reader;
    let mut ctx = tokio_modbus::client::tcp::connect_slave(
        format!("127.0.0.1:{port}").parse()?,
        tokio_modbus::Slave(1),
    )
    .await?;
    let regs = ctx
        .read_holding_registers(addr, count)
        .await?
        .map_err(|e| anyhow::anyhow!("exception {e}"))?;
    Ok(regs)
}

const WRITABLE_PROFILE: &str = r#"format_version = 1
[model]
id = "writes"
manufacturer = "test"
name = "integer setpoints"
device_type = "test"
[modbus]
unit_id = 1
[[points]]
name = "mode"
register = "holding"
address = 10
type = "u16"
writable = true
sim = { base = 1.0 }
[[points]]
name = "limit"
register = "holding"
address = 12
type = "u32"
writable = true
sim = { base = 7.0 }
[[points]]
name = "setpoint"
unit = "Cel"
register = "holding"
address = 14
type = "i16"
scale = 0.1
writable = true
sim = { base = 20.0 }
"#;

/// Item 12: 2.7 to a u16 went out as 3 and 1.5 to a u32 was sent; now both are
/// refused (422) and the device's registers stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractional_writes_to_integer_points_are_refused() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let port = free_port();
    let cfg = private_profile(
        &stack,
        "writes",
        WRITABLE_PROFILE,
        &format!(
            "[[devices]]\nid = \"dev\"\nprofile = \"writes\"\ntransport = {{ tcp = \"127.0.0.1:{port}\" }}\npoll_interval_ms = 200\n"
        ),
    )?;
    let profile = stack.dir.path().join("profiles/writes.toml");
    let _sim = sim(&stack, &profile, port).await?;
    stack.start_agent(&cfg).await?;
    wait_for("device online", Duration::from_secs(20), || async {
        let d = stack.device("dev").await?;
        Ok((d["state"] == "online").then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    let before = holding(port, 10, 5).await?;
    assert_eq!(before, vec![1, 0, 0, 7, 200]);

    let client = e2e_tests::http::Client::new();
    let url = format!("{}/api/v1/devices/dev/write", stack.agent_url());
    let post = |point: &str, value: f64| {
        let (client, url) = (client.clone(), url.clone());
        let body = serde_json::json!({"point": point, "value": value});
        async move {
            let r = client.post(&url).json(&body).send().await?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    for (point, value) in [("mode", 2.7), ("limit", 1.5), ("setpoint", 23.45)] {
        let (s, b) = post(point, value).await?;
        assert_eq!((s, b["error"].as_str()), (422, Some("bad_value")), "{b}");
        assert!(
            b["message"]
                .as_str()
                .unwrap_or("")
                .contains("not a whole number"),
            "{b}"
        );
    }
    assert_eq!(
        holding(port, 10, 5).await?,
        before,
        "a refused write reached the device"
    );

    // Whole counts still go through, including scaled ones (23.5 / 0.1 = 235).
    let (s, b) = post("mode", 2.0).await?;
    assert_eq!(s, 200, "{b}");
    let (s, b) = post("setpoint", 23.5).await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(holding(port, 10, 5).await?, vec![2, 0, 0, 7, 235]);
    Ok(())
}

/// `edge-agent --config FILE --check`: exit status and stderr.
fn check(cfg: &Path) -> Result<(bool, String)> {
    let out = std::process::Command::new(bin("edge-agent")?)
        .arg("--check")
        .arg("--config")
        .arg(cfg)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Item 13: configs that cannot work no longer pass `--check`.
#[test]
fn check_refuses_configs_that_cannot_work() -> Result<()> {
    let stack = Stack::edge_only()?;
    let serial = "transport = { serial = { device = \"/dev/ttyUSB0\" } }";
    let dev = |extra: &str, transport: &str| {
        format!("[[devices]]\nid = \"meter\"\nprofile = \"eastron-sdm630\"\n{transport}\n{extra}\n")
    };
    let tcp = "transport = { tcp = \"127.0.0.1:502\" }";

    let cfg = stack.agent_config_with(&dev("timeout_ms = 0", tcp))?;
    let (ok, err) = check(&cfg)?;
    assert!(!ok, "timeout_ms = 0 passed --check");
    assert!(
        err.contains("agent.toml")
            && err.contains("devices[0].timeout_ms")
            && err.contains("line ")
            && err.contains("never come online"),
        "{err}"
    );

    let cfg = stack.agent_config_with(&dev("unit_id = 0", serial))?;
    let (ok, err) = check(&cfg)?;
    assert!(!ok, "unit 0 on a serial line passed --check");
    assert!(
        err.contains("devices[0].unit_id") && err.contains("broadcast"),
        "{err}"
    );

    // sled cannot open without a cache; the agent took that for a damaged
    // buffer and moved a healthy one aside before crashing.
    let cfg = stack.agent_config_with(&dev("", tcp))?;
    let text = std::fs::read_to_string(&cfg)?.replace("[buffer]\n", "[buffer]\ncache_mib = 0\n");
    std::fs::write(&cfg, text)?;
    let (ok, err) = check(&cfg)?;
    assert!(!ok, "buffer.cache_mib = 0 passed --check");
    assert!(err.contains("buffer.cache_mib"), "{err}");

    // Unit 0 inherited from the profile: caught once the profile is read.
    let profile = WRITABLE_PROFILE.replace("unit_id = 1", "unit_id = 0");
    let on_serial = dev("", serial).replace("eastron-sdm630", "writes");
    let cfg = private_profile(&stack, "writes", &profile, &on_serial)?;
    let (ok, err) = check(&cfg)?;
    assert!(!ok, "profile unit 0 on a serial line passed --check");
    assert!(
        err.contains("agent.toml")
            && err.contains("modbus.unit_id")
            && err.contains("broadcast")
            && err.contains("devices[0].unit_id"),
        "{err}"
    );
    // The same profile over TCP is fine (unit 0 is common there).
    let cfg = private_profile(
        &stack,
        "writes",
        &profile,
        &dev("", tcp).replace("eastron-sdm630", "writes"),
    )?;
    let (ok, err) = check(&cfg)?;
    assert!(ok, "{err}");
    Ok(())
}

/// Item 15: the local API answers only Host values that name the gateway, so a
/// DNS-rebinding page (`Host: evil.example`) cannot drive it from a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_api_refuses_foreign_host_headers() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let cfg = stack.agent_config_with("")?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        "[http]\n",
        "[http]\nallowed_hosts = [\"gw-7.plant.local\"]\n",
    );
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;
    let port = stack.agent_http_port;
    let client = e2e_tests::http::Client::new();
    let get = |host: String, path: &'static str| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .header(reqwest::header::HOST, host)
                .send()
                .await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            anyhow::Ok((status, body))
        }
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("gw-7.plant.local:{port}"),
    ] {
        let (s, b) = get(host.clone(), "/health").await?;
        assert_eq!(s, 200, "{host}: {b}");
    }
    for (host, path) in [
        (format!("evil.example:{port}"), "/health"),
        ("evil.example".to_string(), "/api/v1/devices"),
    ] {
        let (s, b) = get(host.clone(), path).await?;
        assert_eq!(s, 421, "{host}: {b}");
        let v: Value = serde_json::from_str(&b)?;
        assert_eq!(v["error"], "bad_host", "{b}");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("http.allowed_hosts"),
            "{b}"
        );
    }
    // Writes are refused before they reach any device.
    let r = client
        .post(format!("http://127.0.0.1:{port}/api/v1/devices/x/write"))
        .header(reqwest::header::HOST, "evil.example")
        .json(&serde_json::json!({"point": "p", "value": 1}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 421);
    let (_, metrics) = get(format!("127.0.0.1:{port}"), "/metrics").await?;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("edge_http_errors_total") && l.contains("kind=\"bad_host\""))
        .with_context(|| metrics.clone())?;
    assert!(line.ends_with(" 3"), "{line}");
    let log = stack.agent.as_ref().context("agent")?.log_text();
    assert!(log.contains("evil.example"), "{log}");
    Ok(())
}

/// Requests and exception replies a traced pymodbus peer has logged so far.
fn peer_counts(peer: &Proc) -> (usize, usize) {
    let log = peer.log_text();
    (
        log.matches("request fc=").count(),
        log.matches("exception fc=").count(),
    )
}

/// Item 11: an SDM630 that refuses input registers 32-33, which lie in the gap
/// the 0..0x4B read bridges. The agent used to bisect that read on every cycle
/// (11 requests, 4 exceptions) without ever naming the address; now it learns
/// the two registers, plans around them (4 requests, the fewest that avoid
/// them), names them on the API, and tries them again after `bad_point_retry_s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_registers_in_a_bridged_gap_are_learnt_named_and_retried() -> Result<()> {
    let (pa, pb) = (free_port(), free_port());
    let (sa, sb) = (pa.to_string(), pb.to_string());
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    let faults = ["--fill-gaps", "40", "--invalid", "32,33", "--trace"];
    let (mut aa, mut ab) = (vec!["--port", &sa], vec!["--port", &sb]);
    aa.extend(faults);
    ab.extend(faults);
    let peer = e2e_tests::peers::pymodbus(&dir, "meter-peer", "eastron-sdm630", &aa).await?;
    let _retry_peer = e2e_tests::peers::pymodbus(&dir, "retry-peer", "eastron-sdm630", &ab).await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"meter\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{pa}\" }}\npoll_interval_ms = 200\nbad_point_retry_s = 3600\n\n\
         [[devices]]\nid = \"retrying\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{pb}\" }}\npoll_interval_ms = 200\nbad_point_retry_s = 1\n"
    ))?;
    stack.start_agent(&cfg).await?;

    let dev = wait_for("meter settled", Duration::from_secs(20), || async {
        let d = stack.device("meter").await?;
        let settled =
            d["requests_per_cycle"] == 4 && d["values"].as_object().is_some_and(|v| v.len() == 13);
        Ok(settled.then_some(d))
    })
    .await
    .with_context(|| stack.logs())?;
    // Every point is read; the refused registers are named by address.
    assert_eq!(dev["state"], "online", "{dev}");
    assert_eq!(dev["bad_points"], serde_json::json!([]), "{dev}");
    let refused = &dev["refused_registers"];
    assert_eq!(refused.as_array().map(Vec::len), Some(1), "{dev}");
    assert_eq!(
        (
            &refused[0]["register"],
            &refused[0]["first"],
            &refused[0]["last"]
        ),
        (&Value::from("input"), &Value::from(32), &Value::from(33)),
        "{dev}"
    );
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("exception"),
        "{dev}"
    );
    let health = stack.agent_health().await?;
    let named = health["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["device_id"] == "meter"))
        .map(|d| d["refused_registers"].clone());
    assert_eq!(named.as_ref(), Some(refused), "{health}");

    // What the device sees: 4 requests per cycle and no more exceptions.
    let polls = |d: &Value| d["polls_ok"].as_u64().unwrap_or(0);
    let (r1, e1) = peer_counts(&peer);
    let p1 = polls(&stack.device("meter").await?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r2, e2) = peer_counts(&peer);
    let p2 = polls(&stack.device("meter").await?);
    let (requests, cycles) = ((r2 - r1) as i64, (p2 - p1) as i64);
    assert!(cycles >= 5, "only {cycles} polls in 2 s");
    assert!(
        (requests - 4 * cycles).abs() <= 4,
        "{requests} requests in {cycles} cycles"
    );
    assert_eq!(
        e2, e1,
        "the device still answers with exceptions every cycle"
    );
    eprintln!("settled: {requests} requests in {cycles} cycles, {e1} exceptions while learning");

    // With bad_point_retry_s = 1 the registers are tried again (and refused again).
    let retried = wait_for(
        "refused registers retried",
        Duration::from_secs(20),
        || async {
            let d = stack.device("retrying").await?;
            let failures = d["refused_registers"][0]["failures"].as_u64().unwrap_or(0);
            Ok((failures >= 3).then_some(d))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    assert_eq!(retried["refused_registers"][0]["first"], 32, "{retried}");
    assert_eq!(retried["values"].as_object().map(|v| v.len()), Some(13));
    // Logged once per device as one range, not per register or retry.
    let log = stack.agent.as_ref().context("agent")?.log_text();
    assert_eq!(
        log.matches("device refuses registers between points")
            .count(),
        2,
        "{log}"
    );
    assert!(log.contains("first=32 last=33"), "{log}");
    Ok(())
}
