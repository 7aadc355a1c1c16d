//! Acquisition against peers nobody here wrote: pymodbus (TCP, RTU over a
//! pseudo-terminal, RTU over TCP), libmodbus's fault-injecting unit-test-server,
//! mbpoll as a second master, and a line-protocol responder over a pty.
// qi-test: tier-independent (polling against independent Modbus and line peers; the hub is only a sink): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::peers::{
    mbpoll_holding, mbpoll_read, pty_pair, pymodbus, scpi_responder, unit_test_server,
};
use e2e_tests::{Stack, bin, free_port, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

fn assert_values(dev: &Value, want: &BTreeMap<String, f64>) {
    for (name, v) in want {
        let got = dev["values"][name]["value"].as_f64();
        let ok = got.is_some_and(|g| (g - v).abs() <= v.abs() * 1e-9 + 1e-9);
        assert!(ok, "{name}: want {v}, got {got:?} in {dev}");
    }
}

async fn sdm630_via(
    transport: &str,
    pymodbus_args: &[&str],
    sim_port: u16,
    pty: Option<&std::path::Path>,
) -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    let _peer = pymodbus(&dir, "pymodbus", "eastron-sdm630", pymodbus_args).await?;
    let transport = match pty {
        Some(p) => format!(
            "{{ serial = {{ device = \"{}\", baud = 19200 }} }}",
            p.display()
        ),
        None => format!("{{ {transport} = \"127.0.0.1:{sim_port}\" }}"),
    };
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"meter\"\nprofile = \"eastron-sdm630\"\ntransport = {transport}\npoll_interval_ms = 200\n"
    ))?;
    stack.start_agent(&cfg).await?;
    let dev = stack
        .device_with_values("meter", 13, Duration::from_secs(20))
        .await?;
    assert_values(&dev, &e2e_tests::util::profile_sim_bases("eastron-sdm630"));
    assert_eq!(dev["state"], "online", "{dev}");
    // Gap tolerance 40 bridges the SDM630's holes: 3 requests instead of 13.
    assert_eq!(dev["requests_per_cycle"], 3, "{dev}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_tcp_values_match_and_mbpoll_agrees() -> Result<()> {
    let port = free_port();
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    let ps = port.to_string();
    let _peer = pymodbus(
        &dir,
        "pymodbus",
        "eastron-sdm630",
        &["--port", &ps, "--fill-gaps", "40"],
    )
    .await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"meter\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{port}\" }}\npoll_interval_ms = 200\n"
    ))?;
    stack.start_agent(&cfg).await?;
    let dev = stack
        .device_with_values("meter", 13, Duration::from_secs(20))
        .await?;
    assert_values(&dev, &e2e_tests::util::profile_sim_bases("eastron-sdm630"));
    assert_eq!(dev["requests_per_cycle"], 3, "{dev}");
    // A second master reads the same registers: same numbers.
    let vals = mbpoll_read(port, "3:float", 0, 7, true)?;
    let names = [
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "current_l1",
        "current_l2",
        "current_l3",
        "active_power_l1",
    ];
    assert_eq!(vals.len(), 7, "{vals:?}");
    for ((addr, v), name) in vals.iter().zip(names) {
        let agent = dev["values"][name]["value"].as_f64().unwrap_or(f64::NAN);
        assert_eq!(
            *addr as usize,
            names.iter().position(|n| *n == name).unwrap() * 2
        );
        assert!(
            (agent - v).abs() < 1e-3,
            "{name}: agent {agent}, mbpoll {v}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_rtu_over_a_pseudo_terminal() -> Result<()> {
    let stack = Stack::edge_only()?;
    let pty = pty_pair(stack.dir.path(), "rs485").await?;
    let dev_a = pty.a.display().to_string();
    let r = sdm630_via(
        "serial",
        &[
            "--transport",
            "serial",
            "--device",
            &dev_a,
            "--baud",
            "19200",
            "--fill-gaps",
            "40",
        ],
        0,
        Some(&pty.b),
    )
    .await;
    drop(stack);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_rtu_over_tcp() -> Result<()> {
    let port = free_port();
    let ps = port.to_string();
    sdm630_via(
        "rtu_over_tcp",
        &[
            "--transport",
            "rtu-over-tcp",
            "--port",
            &ps,
            "--fill-gaps",
            "40",
        ],
        port,
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_address_costs_only_its_point() -> Result<()> {
    let port = free_port();
    let ps = port.to_string();
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    // Registers 8-9 (current_l2) answer exception 2: the 76-register block fails as a whole.
    let _peer = pymodbus(
        &dir,
        "pymodbus",
        "eastron-sdm630",
        &["--port", &ps, "--fill-gaps", "40", "--invalid", "8,9"],
    )
    .await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"meter\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{port}\" }}\npoll_interval_ms = 200\n"
    ))?;
    stack.start_agent(&cfg).await?;
    let dev = stack
        .device_with_values("meter", 12, Duration::from_secs(20))
        .await?;
    let mut want = e2e_tests::util::profile_sim_bases("eastron-sdm630");
    want.remove("current_l2");
    assert_values(&dev, &want);
    assert_eq!(dev["state"], "degraded", "{dev}");
    let bad = dev["bad_points"].as_array().context("bad_points")?;
    assert_eq!(bad.len(), 1, "{dev}");
    assert_eq!(bad[0]["point"], "current_l2");
    assert!(
        bad[0]["error"].as_str().unwrap_or("").contains("exception"),
        "{dev}"
    );
    assert!(dev["values"].get("current_l2").is_none());
    // Later cycles skip the bad point without bisecting again, and log it once.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let dev = stack.device("meter").await?;
    assert!(dev["requests_per_cycle"].as_u64() <= Some(5), "{dev}");
    let log = stack.agent.as_ref().context("agent")?.log_text();
    assert_eq!(log.matches("device refuses this point").count(), 1, "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmodbus_fault_injection() -> Result<()> {
    // Points at libmodbus unit-test-server's special addresses (holding, unit any):
    // 0x160 plain register, 0x170 "server busy" exception, 0x172 answers after 500 ms.
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    let profile_dir = dir.join("profiles");
    std::fs::create_dir_all(&profile_dir)?;
    let profile = |id: &str, points: &str| -> Result<()> {
        std::fs::write(
            profile_dir.join(format!("{id}.toml")),
            format!(
                "format_version = 1\n[model]\nid = \"{id}\"\nmanufacturer = \"libmodbus\"\nname = \"unit-test-server\"\ndevice_type = \"test\"\n[modbus]\nunit_id = 1\ntimeout_ms = 2000\n{points}"
            ),
        )?;
        Ok(())
    };
    let reg = |name: &str, addr: u16| {
        format!(
            "[[points]]\nname = \"{name}\"\nregister = \"holding\"\naddress = {addr}\ntype = \"u16\"\n"
        )
    };
    profile(
        "uts-a",
        &format!(
            "{}{}{}",
            reg("plain", 0x160),
            reg("busy", 0x170),
            reg("slow", 0x172)
        ),
    )?;
    profile("uts-b", &reg("slow", 0x172))?;
    profile("uts-c", &reg("bad_tid", 0x171))?;
    profile("uts-d", &reg("byte_by_byte", 0x173))?;
    let (pa, pb, pc, pd) = (free_port(), free_port(), free_port(), free_port());
    let _a = unit_test_server(&dir, pa).await?;
    let _b = unit_test_server(&dir, pb).await?;
    let _c = unit_test_server(&dir, pc).await?;
    let _d = unit_test_server(&dir, pd).await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"faults\"\nprofile = \"uts-a\"\ntransport = {{ tcp = \"127.0.0.1:{pa}\" }}\npoll_interval_ms = 300\n\n\
         [[devices]]\nid = \"too-slow\"\nprofile = \"uts-b\"\ntransport = {{ tcp = \"127.0.0.1:{pb}\" }}\ntimeout_ms = 200\nretry_min_ms = 200\n\n\
         [[devices]]\nid = \"wrong-tid\"\nprofile = \"uts-c\"\ntransport = {{ tcp = \"127.0.0.1:{pc}\" }}\ntimeout_ms = 500\nretry_min_ms = 200\n\n\
         [[devices]]\nid = \"byte-by-byte\"\nprofile = \"uts-d\"\ntransport = {{ tcp = \"127.0.0.1:{pd}\" }}\nretry_min_ms = 200\n"
    ))?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        &format!("profiles_dir = \"{}\"", e2e_tests::profiles_dir().display()),
        &format!("profiles_dir = \"{}\"", profile_dir.display()),
    );
    std::fs::write(&cfg, text)?;
    stack.start_agent(&cfg).await?;

    // Busy exception: that point only is skipped; the slow one is read (500 ms < 2 s timeout).
    let dev = stack
        .device_with_values("faults", 2, Duration::from_secs(20))
        .await?;
    assert_eq!(dev["state"], "degraded", "{dev}");
    assert_eq!(dev["bad_points"][0]["point"], "busy", "{dev}");
    assert!(
        dev["bad_points"][0]["error"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("busy"),
        "{dev}"
    );
    assert_eq!(dev["values"]["plain"]["value"], 0.0);
    assert_eq!(dev["values"]["slow"]["value"], 0.0);
    assert!(dev["last_round_trip_ms"].as_f64().is_some());

    // A reply later than the timeout: offline with a clear error, retried with backoff.
    let slow = wait_for("too-slow offline", Duration::from_secs(10), || async {
        let d = stack.device("too-slow").await?;
        Ok((d["state"] == "offline").then_some(d))
    })
    .await?;
    // (unit-test-server exits when the agent drops the timed-out connection, so later
    // errors are "refused"; the timeout itself is counted and logged.)
    assert!(slow["errors"]["timeouts"].as_u64() >= Some(1), "{slow}");
    let log = stack.agent.as_ref().context("agent")?.log_text();
    assert!(log.contains("no response within 200 ms"), "{log}");

    // A reply with the wrong transaction id: not taken as an answer; the device is offline, not crashed.
    let bad = wait_for("wrong-tid offline", Duration::from_secs(10), || async {
        let d = stack.device("wrong-tid").await?;
        Ok((d["state"] == "offline").then_some(d))
    })
    .await?;
    assert!(bad["values"].get("bad_tid").is_none(), "{bad}");

    // A reply dribbled out a byte every 5 ms is reassembled, then refused because it
    // claims to come from unit 255, not the unit asked (libmodbus's own client takes it).
    let log = wait_for(
        "byte-by-byte reply judged",
        Duration::from_secs(10),
        || async {
            let log = stack.agent.as_ref().context("agent")?.log_text();
            Ok(log.contains("mismatching headers").then_some(log))
        },
    )
    .await?;
    assert!(log.contains("unit_id: 255"), "{log}");
    let d = stack.device("byte-by-byte").await?;
    assert!(d["values"].get("byte_by_byte").is_none(), "{d}");
    // The agent itself is fine.
    assert!(
        stack
            .agent
            .as_ref()
            .context("agent")?
            .exit_status()?
            .is_none()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scpi_over_a_pty_survives_noise_and_garbage() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    let pty = pty_pair(&dir, "rs232").await?;
    let a = pty.a.display().to_string();
    let _smu = scpi_responder(
        &dir,
        "smu",
        &["--device", &a, "--noise-every", "3", "--garble-every", "11"],
    )
    .await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"smu\"\nprofile = \"keithley-2450\"\ntransport = {{ serial = {{ device = \"{}\" }} }}\npoll_interval_ms = 100\ntimeout_ms = 500\n",
        pty.b.display()
    ))?;
    stack.start_agent(&cfg).await?;
    let dev = wait_for(
        "SMU values and several resyncs",
        Duration::from_secs(20),
        || async {
            let d = stack.device("smu").await?;
            let ok = d["values"]["current"]["value"].as_f64() == Some(1.234567e-3)
                && d["values"]["voltage"]["value"].as_f64() == Some(1.5)
                && d["values"]["identity"]["text"].is_string()
                && d["errors"]["resyncs"].as_u64() >= Some(3)
                && d["polls_ok"].as_u64() >= Some(10);
            Ok(ok.then_some(d))
        },
    )
    .await
    .with_context(|| stack.logs())?;
    assert_eq!(
        dev["values"]["identity"]["text"],
        "KEITHLEY INSTRUMENTS INC.,MODEL 2450,04412345,1.7.3"
    );
    assert_eq!(dev["values"]["error_count"]["value"], 0.0);
    // Values stay right: noise never shifted a reply onto the wrong query.
    for _ in 0..5 {
        let d = stack.device("smu").await?;
        assert_eq!(d["values"]["voltage"]["value"].as_f64(), Some(1.5), "{d}");
        assert_eq!(
            d["values"]["current"]["value"].as_f64(),
            Some(1.234567e-3),
            "{d}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Writes go out as SCPI commands and read back.
    let client = e2e_tests::http::Client::new();
    let url = format!("{}/api/v1/devices/smu/write", stack.agent_url());
    let r = client
        .post(&url)
        .json(&serde_json::json!({"point": "source_voltage", "value": 0.75}))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    wait_for(
        "new source voltage read back",
        Duration::from_secs(5),
        || async {
            let d = stack.device("smu").await?;
            Ok((d["values"]["voltage"]["value"].as_f64() == Some(0.75)).then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ascii_chamber_error_replies_and_writes() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    let port = free_port();
    let ps = port.to_string();
    let _chamber = scpi_responder(&dir, "chamber", &["--port", &ps, "--crlf"]).await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"chamber\"\nprofile = \"espec-sh641\"\ntransport = {{ tcp = \"127.0.0.1:{port}\" }}\npoll_interval_ms = 200\n"
    ))?;
    stack.start_agent(&cfg).await?;
    let dev = stack
        .device_with_values("chamber", 5, Duration::from_secs(20))
        .await?;
    assert_eq!(dev["values"]["temperature"]["value"], 23.5);
    assert_eq!(dev["values"]["temperature_setpoint"]["value"], 25.0);
    assert_eq!(dev["values"]["humidity"]["value"], 45.0);
    assert_eq!(dev["values"]["model"]["text"], "SH-641,S,F");
    // 5 points, 3 queries: TEMP? and HUMI? each answer two fields and are asked once per cycle.
    assert_eq!(dev["requests_per_cycle"], 3, "{dev}");
    let client = e2e_tests::http::Client::new();
    let url = format!("{}/api/v1/devices/chamber/write", stack.agent_url());
    let ok = client
        .post(&url)
        .json(&serde_json::json!({"point": "temperature_setpoint", "value": 30}))
        .send()
        .await?;
    assert_eq!(ok.status(), 200);
    // Out of the chamber's range: its "NA:..." reply comes back as a device error.
    let na = client
        .post(&url)
        .json(&serde_json::json!({"point": "temperature_setpoint", "value": 150}))
        .send()
        .await?;
    assert_eq!(na.status(), 502);
    let body: Value = na.json().await?;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("NA:OUT OF RANGE"),
        "{body}"
    );
    let ro = client
        .post(&url)
        .json(&serde_json::json!({"point": "humidity", "value": 50}))
        .send()
        .await?;
    assert_eq!(ro.status(), 403);
    wait_for("setpoint read back", Duration::from_secs(5), || async {
        let d = stack.device("chamber").await?;
        Ok((d["values"]["temperature_setpoint"]["value"].as_f64() == Some(30.0)).then_some(()))
    })
    .await?;
    // Every write the poller answers is counted, SCPI like Modbus: one done,
    // two refused (the device's NA reply, the read-only point).
    assert_eq!(
        stack
            .agent_metric(
                "edge_writes_total",
                &["device=\"chamber\"", "result=\"ok\""]
            )
            .await?,
        1.0
    );
    assert_eq!(
        stack
            .agent_metric(
                "edge_writes_total",
                &["device=\"chamber\"", "result=\"error\""]
            )
            .await?,
        2.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_writes_honour_type_scale_and_word_order() -> Result<()> {
    let port = free_port();
    let ps = port.to_string();
    let mut stack = Stack::edge_only()?;
    let dir = stack.dir.path().to_path_buf();
    let _peer = pymodbus(&dir, "pymodbus", "binder-mk53", &["--port", &ps]).await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"chamber\"\nprofile = \"binder-mk53\"\ntransport = {{ tcp = \"127.0.0.1:{port}\" }}\npoll_interval_ms = 200\n"
    ))?;
    stack.start_agent(&cfg).await?;
    stack
        .device_with_values("chamber", 3, Duration::from_secs(20))
        .await?;
    let client = e2e_tests::http::Client::new();
    let url = format!("{}/api/v1/devices/chamber/write", stack.agent_url());
    let post = |body: Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.post(&url).json(&body).send().await?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let (s, b) = post(serde_json::json!({"point": "temperature_setpoint", "value": 30.5})).await?;
    assert_eq!(s, 200, "{b}");
    // mbpoll without -B reads float32 low word first (CDAB), as the Binder profile says it is.
    assert_eq!(
        mbpoll_holding(port, "4:float", 0x1077)?,
        vec![(0x1077, 30.5)]
    );
    let (s, _) = post(serde_json::json!({"point": "operating_mode", "value": 3})).await?;
    assert_eq!(s, 200);
    assert_eq!(mbpoll_holding(port, "4", 0x1A22)?, vec![(0x1A22, 3.0)]);
    // Refusals: read-only point, out of range for the type, unknown point and device, bad body.
    let (s, b) = post(serde_json::json!({"point": "temperature", "value": 20})).await?;
    assert_eq!((s, b["error"].as_str()), (403, Some("not_writable")));
    let (s, b) = post(serde_json::json!({"point": "operating_mode", "value": 70000})).await?;
    assert_eq!((s, b["error"].as_str()), (422, Some("bad_value")), "{b}");
    let (s, _) = post(serde_json::json!({"point": "operating_mode", "value": -1})).await?;
    assert_eq!(s, 422);
    let (s, _) = post(serde_json::json!({"point": "temperature_setpoint", "value": 1e300})).await?;
    assert_eq!(s, 422);
    let (s, _) = post(serde_json::json!({"point": "nope", "value": 1})).await?;
    assert_eq!(s, 404);
    let (s, _) = post(serde_json::json!({"point": "temperature_setpoint", "value": "hot"})).await?;
    assert_eq!(s, 400);
    let r = client
        .post(format!("{}/api/v1/devices/ghost/write", stack.agent_url()))
        .json(&serde_json::json!({"point": "x", "value": 1}))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    // Nothing refused reached the device.
    assert_eq!(mbpoll_holding(port, "4", 0x1A22)?, vec![(0x1A22, 3.0)]);
    // Two writes done; five refused by the poller (the bad body and the
    // unknown device never reach it).
    assert_eq!(
        stack
            .agent_metric(
                "edge_writes_total",
                &["device=\"chamber\"", "result=\"ok\""]
            )
            .await?,
        2.0
    );
    assert_eq!(
        stack
            .agent_metric(
                "edge_writes_total",
                &["device=\"chamber\"", "result=\"error\""]
            )
            .await?,
        5.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_device_does_not_slow_the_others_and_units_share_a_connection() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    // A black hole: accepts connections, never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hole_port = hole.local_addr()?.port();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let sim_port = stack.sim_port;
    // Spawned by hand: the harness's readiness probe would be a second connection,
    // and this test counts connections.
    let profile = e2e_tests::profiles_dir().join("eastron-sdm630.toml");
    let listen = format!("127.0.0.1:{sim_port}");
    stack.sim = Some(e2e_tests::Proc::spawn(
        "instrument-sim",
        &bin("instrument-sim")?,
        &[
            "--profile".as_ref(),
            profile.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--unit-id".as_ref(),
            "1,2".as_ref(),
        ],
        &stack.log_path("sim"),
    )?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"dead\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{hole_port}\" }}\ntimeout_ms = 1000\n\n\
         [[devices]]\nid = \"unit1\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{sim_port}\" }}\nunit_id = 1\npoll_interval_ms = 100\n\n\
         [[devices]]\nid = \"unit2\"\nprofile = \"eastron-sdm630\"\ntransport = {{ tcp = \"127.0.0.1:{sim_port}\" }}\nunit_id = 2\npoll_interval_ms = 100\n\n\
         [[devices]]\nid = \"misconfigured\"\nprofile = \"no-such-profile\"\ntransport = {{ tcp = \"127.0.0.1:{sim_port}\" }}\n"
    ))?;
    stack.start_agent(&cfg).await?;
    let start = stack.device("unit1").await?["polls_ok"]
        .as_u64()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let u1 = stack.device("unit1").await?;
    let u2 = stack.device("unit2").await?;
    let dead = stack.device("dead").await?;
    let polls = u1["polls_ok"].as_u64().unwrap_or(0) - start;
    // 100 ms interval over 3 s: ~30 polls, whatever the dead device does. A
    // device held up by the dead one's 1 s timeouts would get ~3; the margin is
    // for a loaded machine (21 seen with four suites on two cores).
    assert!(polls >= 12, "unit1 polled only {polls} times in 3 s: {u1}");
    assert_eq!(u2["state"], "online", "{u2}");
    assert_eq!(dead["state"], "offline", "{dead}");
    assert!(dead["errors"]["timeouts"].as_u64() >= Some(1), "{dead}");
    let bad = stack.device("misconfigured").await?;
    assert_eq!(bad["state"], "error");
    assert!(
        bad["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-profile"),
        "{bad}"
    );
    // Units 1 and 2 share one TCP connection to the gateway.
    let sim_log = stack.sim.as_ref().context("sim")?.log_text();
    assert_eq!(sim_log.matches("client connected").count(), 1, "{sim_log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadband_reports_by_exception() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let sim_port = stack.sim_port;
    stack.start_sim_with("binder-mk53", &["--constant"]).await?;
    let cfg = stack.agent_config_with(&format!(
        "[[devices]]\nid = \"chamber\"\nprofile = \"binder-mk53\"\ntransport = {{ tcp = \"127.0.0.1:{sim_port}\" }}\npoll_interval_ms = 50\n"
    ))?;
    stack.start_agent(&cfg).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = stack.device("chamber").await?;
    // Constant values: temperature (dead-band 0.05, max interval 30 s) is reported once;
    // the settings group (10 s interval, no dead-band) once too; yet ~40 polls ran.
    assert!(d["polls_ok"].as_u64() >= Some(20), "{d}");
    assert_eq!(d["readings"], 3, "{d}");
    assert_eq!(
        d["values"]["temperature"]["value"].as_f64(),
        Some(f64::from(23.5f32))
    );
    Ok(())
}
