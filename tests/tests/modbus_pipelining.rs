//! Modbus TCP pipelining (`modbus.max_in_flight`, docs/scaling.md): the real
//! agent against the real `fleet-sim modbus` (answering pipelined requests,
//! and one at a time), and against a hostile server written here that
//! answers with ids, units and sizes no request asked for.
// qi-test: tier-independent (polling at the edge; no hub): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result};
use e2e_tests::peers::{mbpoll_holding, pymodbus};
use e2e_tests::{Proc, Stack, bin, free_port, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Three f32 points far enough apart to be three reads per cycle (no gap
/// tolerance): an answer given to the wrong read shows as a wrong value.
const POINTS: [(&str, u16, f64); 3] = [("a", 0, 1.5), ("b", 10, 2.5), ("c", 20, 3.5)];
/// `fleet-sim --unit-step`: unit u serves base + u x STEP.
const STEP: f64 = 1000.0;
const UNITS: u8 = 6;

fn profile(id: &str, max_in_flight: Option<u8>) -> String {
    let mut t = format!(
        "format_version = 1\n[model]\nid = \"{id}\"\nmanufacturer = \"test\"\nname = \"pipelined\"\ndevice_type = \"test\"\n[modbus]\ntimeout_ms = 3000\n"
    );
    if let Some(n) = max_in_flight {
        t.push_str(&format!("max_in_flight = {n}\n"));
    }
    for (name, addr, base) in POINTS {
        t.push_str(&format!(
            "[[points]]\nname = \"{name}\"\nunit = \"V\"\nregister = \"input\"\naddress = {addr}\ntype = \"f32\"\nsim = {{ base = {base} }}\n"
        ));
    }
    t
}

/// An agent config whose profiles come from the test's own directory.
fn config(stack: &Stack, devices: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = stack.dir.path().join("profiles");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("pipe4.toml"), profile("pipe4", Some(4)))?;
    std::fs::write(dir.join("serial1.toml"), profile("serial1", None))?;
    let cfg = stack.agent_config_with(devices)?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        &format!("profiles_dir = \"{}\"", e2e_tests::profiles_dir().display()),
        &format!("profiles_dir = \"{}\"", dir.display()),
    );
    std::fs::write(&cfg, text)?;
    Ok((cfg, dir))
}

fn devices(port: u16, profile: &str, units: impl Iterator<Item = u8>) -> String {
    units
        .map(|u| {
            format!(
                "[[devices]]\nid = \"u{u}\"\nprofile = \"{profile}\"\ntransport = {{ tcp = \"127.0.0.1:{port}\" }}\nunit_id = {u}\npoll_interval_ms = 200\n"
            )
        })
        .collect()
}

async fn fleet_sim(stack: &Stack, dir: &Path, port: u16, concurrent: bool) -> Result<Proc> {
    let profile = dir.join("pipe4.toml");
    let (p, units, step) = (port.to_string(), format!("1-{UNITS}"), STEP.to_string());
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "modbus".as_ref(),
        "--profile".as_ref(),
        profile.as_os_str(),
        "--first-port".as_ref(),
        p.as_ref(),
        "--unit-ids".as_ref(),
        units.as_ref(),
        "--unit-step".as_ref(),
        step.as_ref(),
        "--delay-ms".as_ref(),
        "20".as_ref(),
    ];
    if concurrent {
        args.push("--concurrent".as_ref());
    }
    let sim = Proc::spawn(
        "fleet-sim",
        &bin("fleet-sim")?,
        &args,
        &stack.log_path("fleet-sim"),
    )?;
    wait_for("fleet-sim port", Duration::from_secs(20), || async move {
        Ok(TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    Ok(sim)
}

/// Waits until device `id` has a value for every point, then checks each.
async fn assert_unit_values(stack: &Stack, id: &str, unit: u8) -> Result<()> {
    let dev = stack
        .device_with_values(id, POINTS.len(), Duration::from_secs(60))
        .await?;
    for (name, _, base) in POINTS {
        let want = base + f64::from(unit) * STEP;
        let got = dev["values"][name]["value"].as_f64();
        assert_eq!(got, Some(want), "{id}.{name}: {dev}");
    }
    Ok(())
}

async fn every_unit_reads_its_own_values(concurrent: bool) -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let port = free_port();
    let (cfg, dir) = config(&stack, &devices(port, "pipe4", 1..=UNITS))?;
    let _sim = fleet_sim(&stack, &dir, port, concurrent).await?;
    stack.start_agent(&cfg).await?;
    for u in 1..=UNITS {
        assert_unit_values(&stack, &format!("u{u}"), u).await?;
    }
    let endpoint = format!("endpoint=\"tcp://127.0.0.1:{port}\"");
    // The pipelined path carried the polls, and nothing was dropped or mismatched.
    let sent = stack
        .agent_metric("edge_modbus_pipeline_requests_total", &[&endpoint])
        .await?;
    assert!(sent >= f64::from(UNITS) * 3.0, "{sent} requests");
    let bad = stack
        .agent_metric("edge_modbus_pipeline_bad_frames_total", &[&endpoint])
        .await?;
    assert_eq!(bad, 0.0, "{}", stack.logs());
    let agent_log = stack.agent.as_ref().context("agent")?.log_text();
    assert!(
        agent_log.contains("pipelined Modbus TCP address"),
        "{agent_log}"
    );
    Ok(())
}

/// (a) Several requests in flight, answered in whatever order their delays end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_polls_of_a_concurrent_device_read_every_units_own_values() -> Result<()> {
    every_unit_reads_its_own_values(true).await
}

/// (b) The same profile against a device that answers one request at a time:
/// slower, never wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_polls_of_a_one_at_a_time_device_still_read_correct_values() -> Result<()> {
    every_unit_reads_its_own_values(false).await
}

/// A device that does not take pipelined requests keeps its address serial,
/// and the key is refused where it cannot work (RTU) or is out of range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_serial_device_keeps_its_address_serial_and_rtu_refuses_the_key() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let port = free_port();
    let mixed = devices(port, "pipe4", 1..=2) + &devices(port, "serial1", 3..=3);
    let (cfg, dir) = config(&stack, &mixed)?;
    let _sim = fleet_sim(&stack, &dir, port, true).await?;
    stack.start_agent(&cfg).await?;
    for u in 1..=3 {
        assert_unit_values(&stack, &format!("u{u}"), u).await?;
    }
    let endpoint = format!("endpoint=\"tcp://127.0.0.1:{port}\"");
    assert_eq!(
        stack
            .agent_metric("edge_modbus_pipeline_requests_total", &[&endpoint])
            .await?,
        0.0
    );
    let agent_log = stack.agent.as_ref().context("agent")?.log_text();
    assert!(agent_log.contains("address stays serial"), "{agent_log}");

    let check = |cfg: &Path| -> Result<(bool, String)> {
        let out = std::process::Command::new(bin("edge-agent")?)
            .args(["--check", "--config"])
            .arg(cfg)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    for transport in [
        "{ serial = { device = \"/dev/ttyUSB0\" } }",
        "{ rtu_over_tcp = \"127.0.0.1:502\" }",
    ] {
        let (cfg, _) = config(
            &stack,
            &format!(
                "[[devices]]\nid = \"rtu\"\nprofile = \"pipe4\"\ntransport = {transport}\nunit_id = 1\n"
            ),
        )?;
        let (ok, err) = check(&cfg)?;
        assert!(!ok, "max_in_flight over {transport} passed --check");
        assert!(
            err.contains("modbus.max_in_flight") && err.contains("devices[0]"),
            "{err}"
        );
    }
    let (cfg, dir) = config(&stack, &devices(port, "pipe4", 1..=1))?;
    std::fs::write(
        dir.join("pipe4.toml"),
        profile("pipe4", Some(4)).replace("max_in_flight = 4", "max_in_flight = 17"),
    )?;
    let (ok, err) = check(&cfg)?;
    assert!(!ok, "max_in_flight = 17 passed --check");
    assert!(
        err.contains("modbus.max_in_flight") && err.contains("1..=16"),
        "{err}"
    );
    Ok(())
}

/// How the hostile server answers the first request of one connection.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Another transaction id (one never sent).
    WrongTid,
    /// The right id, a byte count for the registers asked, half the data.
    Short,
    /// The right id, another unit's answer.
    WrongUnit,
}

/// A poisoned value: if it ever shows on a point, a lie was believed.
const POISON: f32 = 9999.0;

fn answer(req: &[u8; 12], tid: u16, unit: u8, value: f32, keep: usize) -> Vec<u8> {
    let count = u16::from_be_bytes([req[10], req[11]]);
    let mut data = Vec::new();
    for _ in 0..count / 2 {
        data.extend_from_slice(&value.to_be_bytes());
    }
    data.truncate(keep);
    let mut out = tid.to_be_bytes().to_vec();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(3 + data.len() as u16).to_be_bytes());
    out.extend_from_slice(&[unit, req[7], (count * 2) as u8]);
    out.extend_from_slice(&data);
    out
}

/// The honest answer: the f32 at address A of unit u is u x STEP + A + 0.25.
fn honest(req: &[u8; 12]) -> Vec<u8> {
    let (unit, start) = (req[6], u16::from_be_bytes([req[8], req[9]]));
    let v = (f64::from(unit) * STEP + f64::from(start) + 0.25) as f32;
    answer(
        req,
        u16::from_be_bytes([req[0], req[1]]),
        unit,
        v,
        usize::MAX,
    )
}

/// One lie per connection, in order, each on that connection's first request;
/// after each, waits for the agent to close the connection, reports it and
/// waits for the test's go before accepting the next. Then honest for good.
async fn hostile(l: TcpListener, lies: Vec<(Lie, oneshot::Sender<()>, oneshot::Receiver<()>)>) {
    for (lie, closed, go) in lies {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut req = [0u8; 12];
        if s.read_exact(&mut req).await.is_err() {
            return;
        }
        let (tid, unit) = (u16::from_be_bytes([req[0], req[1]]), req[6]);
        let frame = match lie {
            Lie::WrongTid => answer(&req, tid ^ 0x8000, unit, POISON, usize::MAX),
            Lie::Short => answer(&req, tid, unit, POISON, 2),
            Lie::WrongUnit => answer(&req, tid, unit.wrapping_add(100), POISON, usize::MAX),
        };
        let _ = s.write_all(&frame).await;
        // The agent must hang up; whatever else it sends meanwhile goes unanswered.
        let mut sink = [0u8; 512];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        let _ = closed.send(());
        let _ = go.await;
    }
    while let Ok((mut s, _)) = l.accept().await {
        tokio::spawn(async move {
            let mut req = [0u8; 12];
            while s.read_exact(&mut req).await.is_ok() {
                if s.write_all(&honest(&req)).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// (c) Lies are counted, never delivered, the connection is dropped, and
/// polling recovers on the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_match_no_request_are_counted_and_never_delivered() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    let order = [Lie::WrongTid, Lie::Short, Lie::WrongUnit];
    let mut lies = Vec::new();
    let mut waits = Vec::new();
    for lie in order {
        let (closed_tx, closed_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        lies.push((lie, closed_tx, go_rx));
        waits.push((lie, closed_rx, go_tx));
    }
    let server = tokio::spawn(hostile(l, lies));
    let (cfg, _) = config(&stack, &devices(port, "pipe4", 1..=2))?;
    stack.start_agent(&cfg).await?;
    let endpoint = format!("endpoint=\"tcp://127.0.0.1:{port}\"");
    for (lie, closed, go) in waits {
        tokio::time::timeout(Duration::from_secs(60), closed)
            .await
            .with_context(|| {
                format!(
                    "the agent kept the connection after {lie:?}: {}",
                    stack.logs()
                )
            })??;
        // No honest answer has been sent yet: any value shown came from a lie.
        for u in 1..=2 {
            let d = stack.device(&format!("u{u}")).await?;
            assert!(
                d["values"].as_object().is_none_or(|m| m.is_empty()),
                "after {lie:?}: {d}"
            );
        }
        let reason = match lie {
            Lie::WrongTid => "unknown_transaction",
            Lie::Short => "short",
            Lie::WrongUnit => "mismatch",
        };
        let counted = stack
            .agent_metric(
                "edge_modbus_pipeline_bad_frames_total",
                &[&endpoint, &format!("reason=\"{reason}\"")],
            )
            .await?;
        assert_eq!(counted, 1.0, "{lie:?}");
        let _ = go.send(());
    }
    // Honest from now on: both devices recover with their own registers' values.
    for u in 1..=2u8 {
        let id = format!("u{u}");
        let dev = wait_for(
            &format!("{id} recovered"),
            Duration::from_secs(90),
            || async {
                let d = stack.device(&id).await?;
                let n = d["values"].as_object().map(|m| m.len()).unwrap_or(0);
                Ok((n >= POINTS.len() && d["state"] == "online").then_some(d))
            },
        )
        .await
        .with_context(|| stack.logs())?;
        for (name, addr, _) in POINTS {
            let want = f64::from((f64::from(u) * STEP + f64::from(addr) + 0.25) as f32);
            assert_eq!(dev["values"][name]["value"].as_f64(), Some(want), "{dev}");
        }
    }
    server.abort();
    Ok(())
}

/// Writes over a pipelined link (`max_in_flight = 4`) reach a device nobody
/// here wrote (pymodbus) with type, scale and word order intact, read back
/// by another master (mbpoll); a refused write reaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_a_pipelined_link_reach_a_pymodbus_device() -> Result<()> {
    let mut stack = Stack::edge_only()?;
    let port = free_port();
    let ps = port.to_string();
    let (cfg, dir) = config(
        &stack,
        &format!(
            "[[devices]]\nid = \"chamber\"\nprofile = \"binder-mk53\"\ntransport = {{ tcp = \"127.0.0.1:{port}\" }}\npoll_interval_ms = 200\n"
        ),
    )?;
    // The shipped Binder profile with the key set: pymodbus answers in
    // order, which a pipelining client must take as well.
    let binder = std::fs::read_to_string(e2e_tests::profiles_dir().join("binder-mk53.toml"))?;
    anyhow::ensure!(
        binder.contains("\n[modbus]\n"),
        "binder-mk53 has no [modbus]"
    );
    std::fs::write(
        dir.join("binder-mk53.toml"),
        binder.replacen("\n[modbus]\n", "\n[modbus]\nmax_in_flight = 4\n", 1),
    )?;
    let _peer = pymodbus(
        stack.dir.path(),
        "pymodbus",
        "binder-mk53",
        &["--port", &ps],
    )
    .await?;
    stack.start_agent(&cfg).await?;
    wait_for("the chamber's values", Duration::from_secs(60), || async {
        let d = stack.device("chamber").await?;
        let n = d["values"].as_object().map(|m| m.len()).unwrap_or(0);
        Ok((n >= 3).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    let url = format!("{}/api/v1/devices/chamber/write", stack.agent_url());
    let post = |body: Value| {
        let url = url.clone();
        async move {
            let r = e2e_tests::http::Client::new()
                .post(&url)
                .json(&body)
                .send()
                .await?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let (s, b) = post(serde_json::json!({"point": "temperature_setpoint", "value": 30.5})).await?;
    assert_eq!(s, 200, "{b}");
    // float32 low word first (CDAB), as the Binder profile says.
    assert_eq!(
        mbpoll_holding(port, "4:float", 0x1077)?,
        vec![(0x1077, 30.5)]
    );
    let (s, b) = post(serde_json::json!({"point": "operating_mode", "value": 3})).await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(mbpoll_holding(port, "4", 0x1A22)?, vec![(0x1A22, 3.0)]);
    let (s, _) = post(serde_json::json!({"point": "operating_mode", "value": 70000})).await?;
    assert_eq!(s, 422);
    assert_eq!(mbpoll_holding(port, "4", 0x1A22)?, vec![(0x1A22, 3.0)]);
    // The writes and the polls went over the pipelined link, and no answer
    // was taken for another request.
    let endpoint = format!("endpoint=\"tcp://127.0.0.1:{port}\"");
    let sent = stack
        .agent_metric("edge_modbus_pipeline_requests_total", &[&endpoint])
        .await?;
    assert!(sent >= 2.0, "{sent} pipelined requests");
    let bad = stack
        .agent_metric("edge_modbus_pipeline_bad_frames_total", &[&endpoint])
        .await?;
    assert_eq!(bad, 0.0, "{}", stack.logs());
    Ok(())
}
