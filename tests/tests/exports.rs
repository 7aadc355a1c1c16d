//! Data exports and the LIMS's inbound API (issue #15): a run of 10,000
//! readings sent over gRPC comes out as CSV (parsed by Python's csv module),
//! xlsx (read back by openpyxl: sheets, headers, numbers as numbers, dates
//! as dates, frozen header, row counts) and JSON, each compared with the
//! readings API; `exports.max_xlsx_rows` refuses a larger run before the
//! first byte; a service request whose customer is a formula comes out
//! defused. (The LIMS's inbound creates: tests/tests/lab_inbound.rs.)

use anyhow::{Context, Result, bail, ensure};
use cloud_hub::identity::Role;
use e2e_tests::grpc::{Client, exchange, hello};
use e2e_tests::hub_auth::{call, new_key};
use e2e_tests::peers::{peer_script, python};
use e2e_tests::runs::Run;
use e2e_tests::{Stack, wait_for};
use qi_proto::v1::{RunEventKind, hub_message};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const T0: i64 = 1_780_000_000_000_000;
const HOSTILE: &str = "=HYPERLINK(\"http://evil.example\",\"click\")";

fn uuid(n: u32) -> String {
    format!("0b7c2a4e-9f1d-4c3b-8a2e-{n:012x}")
}

/// An STC run of exactly `total` readings: conditions, a long IV curve, the
/// curve's figures.
fn big_run(id: &str, first_seq: u64, sample: &str, total: usize) -> Result<Run> {
    let mut run = Run::new(id, first_seq, T0);
    run.start("stc-power", sample, "olga", &[("rated_pmax", 400.0)], 1.0)?;
    run.event(RunEventKind::StepStarted, "0")
        .reading(
            "conditions.irradiance",
            "refcell",
            "irradiance",
            "W/m2",
            1001.0,
        )
        .reading(
            "conditions.cell_temperature",
            "module",
            "temperature",
            "Cel",
            25.3,
        )
        .event(RunEventKind::StepFinished, "0")
        .event(RunEventKind::StepStarted, "1");
    let curve = total - 8;
    for i in 0..curve {
        let v = i as f64 * 48.0 / curve as f64;
        if i % 2 == 0 {
            run.reading("stc.curve", "smu", "voltage", "V", v);
        } else {
            run.reading("stc.curve", "smu", "current", "A", -9.8 + v / 100.0);
        }
    }
    for (m, unit, v) in [
        ("isc", "A", 9.8),
        ("voc", "V", 48.0),
        ("imp", "A", 9.3),
        ("vmp", "V", 43.0),
        ("pmax", "W", 399.9),
        ("ff", "%", 80.0),
    ] {
        run.reading(&format!("stc.{m}"), "smu", m, unit, v);
    }
    run.event(RunEventKind::StepFinished, "1")
        .event(RunEventKind::Completed, "");
    ensure!(run.readings.len() == total);
    Ok(run)
}

async fn send(stack: &Stack, run: &Run) -> Result<()> {
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let mut msgs = vec![hello("gw-exports")];
    let (first, last) = (run.events[0].seq, run.seq - 1);
    let mut at = first;
    while at <= last {
        msgs.push(run.batch(at..=(at + 999).min(last)));
        at += 1000;
    }
    let n = msgs.len() - 1;
    let (got, err) = exchange(&client, msgs).await?;
    let acks = got
        .iter()
        .filter(|m| matches!(m, hub_message::Kind::Ack(_)))
        .count();
    ensure!(err.is_none() && acks == n, "{acks}/{n} acks: {err:?}");
    Ok(())
}

/// (status, headers, body) of a GET.
async fn fetch(url: &str, token: &str) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await?;
    let s = r.status().as_u16();
    let h = r.headers().clone();
    Ok((s, h, r.bytes().await?.to_vec()))
}

async fn download(url: &str, token: &str, ty: &str, path: &Path) -> Result<Vec<u8>> {
    let (s, h, b) = fetch(url, token).await?;
    ensure!(s == 200, "GET {url}: {s} {}", String::from_utf8_lossy(&b));
    let ct = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ensure!(ct.starts_with(ty), "{url}: content-type {ct}");
    let cd = h
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ensure!(cd.starts_with("attachment; filename=\""), "{url}: {cd}");
    std::fs::write(path, &b)?;
    Ok(b)
}

/// What openpyxl or Python's csv module reads in `path`.
fn read_back(kind: &str, path: &Path) -> Result<Value> {
    let out = std::process::Command::new(python()?)
        .arg(peer_script("read_export.py"))
        .arg(kind)
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!(
            "read_export.py {kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The run's readings from the readings API, by seq.
async fn api_readings(url: &str, token: &str, run: &str) -> Result<HashMap<i64, Value>> {
    let mut out = HashMap::new();
    let mut after = 0;
    loop {
        let (s, v) = call(
            Method::GET,
            &format!("{url}/api/v1/runs/{run}/readings?limit=5000&after_seq={after}"),
            Some(token),
            None,
        )
        .await?;
        ensure!(s == 200, "{v}");
        for r in v["readings"].as_array().context("readings")? {
            out.insert(r["seq"].as_i64().context("seq")?, r.clone());
        }
        match v["next_after_seq"].as_i64() {
            Some(n) => after = n,
            None => return Ok(out),
        }
    }
}

fn micros(rfc3339: &str) -> Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(rfc3339)?.timestamp_micros())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_of_a_run_and_a_service_request_read_back_in_independent_tools() -> Result<()> {
    let mut stack = Stack::new().await?;
    // The big run has exactly this many readings: at the cap, allowed.
    stack.hub_after = "[exports]\nmax_xlsx_rows = 10000\n".into();
    stack.start_hub().await?;
    let url = stack.hub_url();
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let lims = new_key(&stack, Role::Operator, None).await?;
    let dir = stack.dir.path().to_path_buf();

    // A request whose customer is a formula, with a sample.
    let (s, sr) = call(
        Method::POST,
        &format!("{url}/api/v1/service-requests"),
        Some(&lims),
        Some(&json!({"customer": HOSTILE, "module_type": "SG-400M",
                     "protocols": ["stc-power"], "external_ref": "LIMS-1"})),
    )
    .await?;
    ensure!(s == 201, "{sr}");
    let sr_id = sr["request_id"].as_str().context("id")?.to_string();
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/service-requests/{sr_id}/samples"),
        Some(&lims),
        Some(&json!({"serial_number": "MOD-X1"})),
    )
    .await?;
    ensure!(s == 201, "{v}");

    let id = uuid(1);
    let run = big_run(&id, 1, "sample:MOD-X1", 10_000)?;
    send(&stack, &run).await?;
    wait_for("the run's evaluation", Duration::from_secs(60), || async {
        let (_, v) = call(
            Method::GET,
            &format!("{url}/api/v1/runs/{id}"),
            Some(&viewer),
            None,
        )
        .await?;
        Ok((!v["evaluation"].is_null()).then_some(()))
    })
    .await?;
    let api = api_readings(&url, &viewer, &id).await?;
    assert_eq!(api.len(), 10_000);

    // CSV: one RFC 4180 table, no BOM, every reading as the API has it.
    let path = dir.join("readings.csv");
    let bytes = download(
        &format!("{url}/api/v1/runs/{id}/export.csv"),
        &viewer,
        "text/csv",
        &path,
    )
    .await?;
    assert!(bytes.starts_with(b"time,run_series,device,metric,unit,value,quality,seq,step\r\n"));
    let rows = read_back("csv", &path)?;
    let rows = rows.as_array().context("rows")?;
    assert_eq!(rows.len(), 10_001, "header + readings");
    for r in &rows[1..] {
        let seq: i64 = r[7].as_str().context("seq")?.parse()?;
        let a = api
            .get(&seq)
            .with_context(|| format!("seq {seq} not in the API"))?;
        assert_eq!(
            micros(r[0].as_str().context("time")?)?,
            micros(a["ts"].as_str().context("ts")?)?
        );
        assert_eq!(r[1], a["series"]);
        assert_eq!(
            (&r[2], &r[3], &r[4]),
            (&a["device_id"], &a["metric"], &a["unit"])
        );
        let value: f64 = r[5].as_str().context("value")?.parse()?;
        assert_eq!(Some(value), a["value"].as_f64(), "seq {seq}");
        assert_eq!(r[6].as_str(), Some(a["quality"].to_string().as_str()));
        assert_eq!(r[8], a["step"], "seq {seq}");
    }
    // A negative number is a number, not defused text.
    assert!(
        rows.iter()
            .any(|r| r[5].as_str().is_some_and(|v| v.starts_with('-')))
    );
    let path = dir.join("criteria.csv");
    download(
        &format!("{url}/api/v1/runs/{id}/export.csv?table=criteria"),
        &viewer,
        "text/csv",
        &path,
    )
    .await?;
    let crit = read_back("csv", &path)?;
    assert_eq!(crit[0][0], "criterion");
    assert!(crit.as_array().map_or(0, Vec::len) > 1, "{crit}");
    let (s, _, b) = fetch(
        &format!("{url}/api/v1/runs/{id}/export.csv?table=nope"),
        &viewer,
    )
    .await?;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));

    // JSON: one document, the same readings.
    let path = dir.join("run.json");
    let doc: Value = serde_json::from_slice(
        &download(
            &format!("{url}/api/v1/runs/{id}/export.json"),
            &viewer,
            "application/json",
            &path,
        )
        .await?,
    )?;
    assert_eq!(doc["format"], "qi-run-export/1");
    assert_eq!(doc["run"]["run_id"], id.as_str());
    assert_eq!(doc["run"]["sample_id"], "sample:MOD-X1");
    assert!(
        doc["evaluation"]["results"].is_array(),
        "{}",
        doc["evaluation"]
    );
    assert_eq!(
        doc["criteria"].as_array().map(Vec::len),
        doc["evaluation"]["results"].as_array().map(Vec::len)
    );
    let readings = doc["readings"].as_array().context("readings")?;
    assert_eq!(readings.len(), 10_000);
    for r in readings {
        let a = &api[&r["seq"].as_i64().context("seq")?];
        assert_eq!(
            (&r["time"], &r["value"], &r["run_series"]),
            (&a["ts"], &a["value"], &a["series"])
        );
    }

    // xlsx: openpyxl reads three sheets with typed cells.
    let path = dir.join("run.xlsx");
    download(
        &format!("{url}/api/v1/runs/{id}/export.xlsx"),
        &viewer,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        &path,
    )
    .await?;
    let wb = read_back("xlsx", &path)?;
    let names: Vec<&str> = wb
        .as_array()
        .context("sheets")?
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["run", "criteria", "readings"]);
    let sheet = &wb[2];
    assert_eq!(sheet["max_row"], 10_001);
    assert_eq!(sheet["freeze_panes"], "A2");
    assert_eq!(sheet["widths"]["A"], 24.0);
    let header: Vec<&str> = sheet["rows"][0]
        .as_array()
        .context("header")?
        .iter()
        .filter_map(|c| c["v"].as_str())
        .collect();
    assert_eq!(
        header,
        [
            "time (UTC)",
            "run_series",
            "device",
            "metric",
            "unit",
            "value (see unit)",
            "quality",
            "seq",
            "step"
        ]
    );
    assert_eq!(sheet["rows"][0][0]["bold"], true);
    for row in sheet["rows"].as_array().context("rows")?.iter().skip(1) {
        let (time, value, seq) = (&row[0], &row[5], &row[7]);
        assert_eq!(
            (time["t"].as_str(), time["date"].as_bool()),
            (Some("d"), Some(true)),
            "{time}"
        );
        assert_eq!(value["t"], "n", "{value}");
        assert_eq!(seq["t"], "n");
        let a = &api[&seq["v"].as_i64().context("seq")?];
        assert_eq!(value["v"].as_f64(), a["value"].as_f64());
        // openpyxl gives a naive datetime in UTC (to the millisecond).
        let t = chrono::NaiveDateTime::parse_from_str(
            time["v"].as_str().context("time")?,
            "%Y-%m-%dT%H:%M:%S%.f",
        )?;
        let diff = t.and_utc().timestamp_micros() - micros(a["ts"].as_str().context("ts")?)?;
        assert!(diff.abs() < 1000, "{time} vs {}", a["ts"]);
    }
    let run_sheet = &wb[0];
    let field = |name: &str| -> Option<Value> {
        run_sheet["rows"]
            .as_array()?
            .iter()
            .find(|r| r[0]["v"] == name)
            .map(|r| r[1].clone())
    };
    assert_eq!(field("run_id").context("run_id")?["v"], id.as_str());
    assert_eq!(field("started_at").context("started_at")?["date"], true);
    assert_eq!(field("time_scale").context("time_scale")?["t"], "n");

    // One reading more than `exports.max_xlsx_rows`: refused before the
    // first byte, CSV still fine.
    let big = uuid(2);
    let run2 = big_run(&big, run.seq, "sample:MOD-X2", 10_001)?;
    send(&stack, &run2).await?;
    wait_for("the second run stored", Duration::from_secs(60), || async {
        let (_, v) = call(
            Method::GET,
            &format!("{url}/api/v1/runs/{big}"),
            Some(&viewer),
            None,
        )
        .await?;
        Ok((v["run"]["state"] == "completed").then_some(()))
    })
    .await?;
    let (s, _, b) = fetch(&format!("{url}/api/v1/runs/{big}/export.xlsx"), &viewer).await?;
    let v: Value = serde_json::from_slice(&b)?;
    assert_eq!((s, v["error"].as_str()), (409, Some("too_large")), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("exports.max_xlsx_rows"),
        "{v}"
    );
    let (s, _, _) = fetch(&format!("{url}/api/v1/runs/{big}/export.csv"), &viewer).await?;
    assert_eq!(s, 200);
    let (s, _, _) = fetch(
        &format!("{url}/api/v1/runs/{}/export.json", uuid(99)),
        &viewer,
    )
    .await?;
    assert_eq!(s, 404);

    // The service request: the formula comes out as text in both formats.
    let path = dir.join("request.csv");
    download(
        &format!("{url}/api/v1/service-requests/{sr_id}/export.csv?table=request"),
        &viewer,
        "text/csv",
        &path,
    )
    .await?;
    let rows = read_back("csv", &path)?;
    let customer = rows
        .as_array()
        .context("rows")?
        .iter()
        .find(|r| r[0] == "customer")
        .context("customer row")?;
    assert_eq!(customer[1].as_str(), Some(format!("'{HOSTILE}").as_str()));
    let path = dir.join("runs.csv");
    download(
        &format!("{url}/api/v1/service-requests/{sr_id}/export.csv"),
        &viewer,
        "text/csv",
        &path,
    )
    .await?;
    let rows = read_back("csv", &path)?;
    assert_eq!(rows[0][1], "run_id");
    assert_eq!(rows[1][1], id.as_str());
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    let path = dir.join("request.xlsx");
    download(
        &format!("{url}/api/v1/service-requests/{sr_id}/export.xlsx"),
        &viewer,
        "application/vnd.openxml",
        &path,
    )
    .await?;
    let wb = read_back("xlsx", &path)?;
    let names: Vec<&str> = wb
        .as_array()
        .context("sheets")?
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "request",
            "transitions",
            "samples",
            "inspections",
            "observations",
            "runs",
            "certificates"
        ]
    );
    let c = wb[0]["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .find(|r| r[0]["v"] == "customer")
        .context("customer")?[1]
        .clone();
    assert_eq!(
        (c["t"].as_str(), c["v"].as_str(), c["q"].as_bool()),
        (Some("s"), Some(HOSTILE), Some(true)),
        "{c}"
    );
    assert_eq!(wb[5]["max_row"], 2, "one run");
    let doc: Value = serde_json::from_slice(
        &download(
            &format!("{url}/api/v1/service-requests/{sr_id}/export.json"),
            &viewer,
            "application/json",
            &dir.join("r.json"),
        )
        .await?,
    )?;
    assert_eq!(doc["request"]["customer"], HOSTILE);
    assert_eq!(doc["request"]["external_ref"], "LIMS-1");
    assert_eq!(doc["samples"][0]["sample_id"], "sample:MOD-X1");
    assert_eq!(doc["runs"][0]["run_id"], id.as_str());
    assert!(doc["runs"][0]["final_verdict"].is_string(), "{doc}");
    let (s, _, _) = fetch(
        &format!("{url}/api/v1/service-requests/SR-999999/export.xlsx"),
        &viewer,
    )
    .await?;
    assert_eq!(s, 404);
    Ok(())
}
