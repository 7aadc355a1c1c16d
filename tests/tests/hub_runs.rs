//! Protocol runs at the hub (issue #14): a gateway's run events and
//! run-tagged readings are stored exactly once whatever the order and
//! repetition of their batches; bad ones are refused with nothing written;
//! completed runs are evaluated from the stored data (stc-power pass and
//! fail; a tc200 run whose before/after values come from the sample's other
//! runs and an inspection's observation), re-evaluation is reproducible, and
//! a provisional verdict is approved by a second engineer only.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::grpc::{Client, exchange, hello};
use e2e_tests::hub_auth::{admin_token, call, new_key};
use e2e_tests::runs::{Run, stc};
use e2e_tests::{Stack, wait_for};
use qi_proto::v1::{RunEventKind, hub_message};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const T0: i64 = 1_780_000_000_000_000;

/// What a bad-input case does to an otherwise good run.
type Spoil = Box<dyn Fn(&mut Run)>;

fn uuid(n: u32) -> String {
    format!("0b7c2a4e-9f1d-4c3b-8a2e-{n:012x}")
}

async fn send(
    stack: &Stack,
    gw: &str,
    msgs: Vec<qi_proto::v1::EdgeMessage>,
) -> Result<(usize, Option<tonic::Status>)> {
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let mut all = vec![hello(gw)];
    all.extend(msgs);
    let (got, err) = exchange(&client, all).await?;
    let acks = got
        .iter()
        .filter(|m| matches!(m, hub_message::Kind::Ack(_)))
        .count();
    Ok((acks, err))
}

async fn counts(pool: &sqlx::PgPool) -> Result<(i64, i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM run_events), (SELECT count(*) FROM runs),
                (SELECT count(*) FROM samples x JOIN series s USING (series_id) WHERE s.run_id IS NOT NULL)",
    )
    .fetch_one(pool)
    .await?)
}

async fn get(url: &str, token: &str) -> Result<Value> {
    let (s, v) = call(Method::GET, url, Some(token), None).await?;
    anyhow::ensure!(s == 200, "GET {url}: {s} {v}");
    Ok(v)
}

/// The run's latest evaluation once it satisfies `pred`.
async fn evaluation_when(
    url: &str,
    token: &str,
    run: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(what, Duration::from_secs(30), || async {
        let v = get(&format!("{url}/api/v1/runs/{run}"), token).await?;
        Ok(Some(v["evaluation"].clone()).filter(|e| !e.is_null() && pred(e)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_stored_exactly_once_in_any_order_and_bad_runs_are_refused() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let pool = stack.db().await?;
    let url = stack.hub_url();
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let id = uuid(1);
    let mut run = Run::new(&id, 1, T0);
    stc(&mut run, "sample:MOD-A", 395.0, "olga")?;
    let last = run.seq - 1;
    // The second half first (readings before their run's STARTED), then the
    // first, then everything again.
    let (acks, err) = send(&stack, "gw-runs", vec![run.batch(8..=last)]).await?;
    assert!(err.is_none() && acks == 1, "{err:?}");
    let v = get(&format!("{url}/api/v1/runs/{id}"), &viewer).await?;
    assert_eq!(v["run"]["start_received"], false, "{v}");
    assert_eq!(v["run"]["state"], "completed", "{v}");
    let (acks, err) = send(&stack, "gw-runs", vec![run.batch(1..=7), run.all()]).await?;
    assert!(err.is_none() && acks == 2, "{err:?}");
    let (events, runs, samples) = counts(&pool).await?;
    assert_eq!(
        (events as usize, runs, samples as usize),
        (run.events.len(), 1, run.readings.len())
    );
    let v = get(&format!("{url}/api/v1/runs/{id}"), &viewer).await?;
    let r = &v["run"];
    assert_eq!(
        (
            r["state"].as_str(),
            r["start_received"].as_bool(),
            r["sample_id"].as_str(),
            r["operator"].as_str()
        ),
        (
            Some("completed"),
            Some(true),
            Some("sample:MOD-A"),
            Some("olga")
        ),
        "{v}"
    );
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["steps"][1]["step"], "1");
    // Raw data by run id, each reading with its step, paginated by seq.
    let page = get(&format!("{url}/api/v1/runs/{id}/readings?limit=3"), &viewer).await?;
    assert_eq!(page["count"], 3);
    assert_eq!(page["readings"][0]["series"], "conditions.irradiance");
    assert_eq!(page["readings"][0]["step"], "0");
    let next = page["next_after_seq"].as_i64().context("next")?;
    let rest = get(
        &format!("{url}/api/v1/runs/{id}/readings?after_seq={next}&limit=1000"),
        &viewer,
    )
    .await?;
    assert_eq!(rest["count"].as_u64(), Some(run.readings.len() as u64 - 3));
    let pmax = get(
        &format!("{url}/api/v1/runs/{id}/readings?series=stc.pmax"),
        &viewer,
    )
    .await?;
    assert_eq!(pmax["readings"][0]["value"], 395.0);
    assert_eq!(pmax["readings"][0]["step"], "1");
    // The run's series are series of the analytics API.
    let sid = pmax["readings"][0]["series_id"]
        .as_i64()
        .context("series id")?;
    let (s, stats) = call(
        Method::GET,
        &format!(
            "{url}/api/v1/series/{sid}/stats?from=2026-01-01T00:00:00Z&to=2026-12-31T00:00:00Z"
        ),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{stats}");
    let events = get(&format!("{url}/api/v1/runs/{id}/events?limit=2"), &viewer).await?;
    assert_eq!(events["events"][0]["kind"], "started");
    assert!(events["next_after_seq"].is_i64(), "{events}");

    // Bad run events: refused whole, nothing written.
    let before = counts(&pool).await?;
    let bad_id = uuid(2);
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "sha",
            Box::new(|r: &mut Run| {
                if let Some(s) = &mut r.events[0].start {
                    s.template_sha256 = "0".repeat(64);
                }
            }),
        ),
        (
            "template",
            Box::new(|r: &mut Run| {
                if let Some(s) = &mut r.events[0].start {
                    s.template_toml = s
                        .template_toml
                        .replace("kind = \"measure\"", "kind = \"measure_twice\"");
                    s.template_sha256 = e2e_tests::runs::sha256_hex(&s.template_toml);
                }
            }),
        ),
        ("kind", Box::new(|r: &mut Run| r.events[1].kind = 77)),
        (
            "run id",
            Box::new(|r: &mut Run| r.readings[0].run_id = "NOT-A-UUID".into()),
        ),
        (
            "parameter",
            Box::new(|r: &mut Run| {
                if let Some(s) = &mut r.events[0].start {
                    s.parameters.insert("rated_pmax".into(), f64::INFINITY);
                }
            }),
        ),
    ];
    for (what, spoil) in cases {
        let mut bad = Run::new(&bad_id, 100, T0);
        stc(&mut bad, "sample:MOD-B", 390.0, "olga")?;
        spoil(&mut bad);
        let (acks, err) = send(&stack, "gw-runs", vec![bad.all()]).await?;
        let err = err.with_context(|| format!("{what}: accepted"))?;
        assert_eq!(
            (acks, err.code()),
            (0, tonic::Code::InvalidArgument),
            "{what}: {err:?}"
        );
        assert_eq!(
            counts(&pool).await?,
            before,
            "{what}: something was written"
        );
    }
    // Another gateway cannot write into this gateway's run.
    let mut theft = Run::new(&id, 500, T0);
    theft.reading("stc.pmax", "smu", "pmax", "W", 999.0);
    let (_, err) = send(&stack, "gw-other", vec![theft.all()]).await?;
    let err = err.context("foreign run accepted")?;
    assert!(err.message().contains("belongs to gateway"), "{err:?}");
    assert_eq!(counts(&pool).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_evaluated_explained_reproduced_and_approved_by_a_second_engineer() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let pool = stack.db().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let viewer = new_key(&stack, Role::Viewer, None).await?;
    let mut tokens = std::collections::HashMap::new();
    for name in ["erin", "emil"] {
        let (s, v) = call(
            Method::POST,
            &format!("{url}/api/v1/users"),
            Some(&admin),
            Some(&json!({"username": name, "password": "engineer password 1", "role": "engineer"})),
        )
        .await?;
        assert_eq!(s, 201, "{v}");
        let (s, v) = call(
            Method::POST,
            &format!("{url}/api/v1/auth/login"),
            None,
            Some(&json!({"username": name, "password": "engineer password 1"})),
        )
        .await?;
        assert_eq!(s, 200, "{v}");
        tokens.insert(
            name,
            v["access_token"].as_str().context("token")?.to_string(),
        );
    }

    // A failing module: Pmax 350 W against 400 W rated less 3 %.
    let fail_id = uuid(10);
    let mut fail = Run::new(&fail_id, 1, T0);
    stc(&mut fail, "sample:MOD-F", 350.0, "erin")?;
    let mut seq = fail.seq;
    send(&stack, "gw-lab", vec![fail.all()]).await?;
    let e = evaluation_when(
        &url,
        &viewer,
        &fail_id,
        "the failing STC run evaluated",
        |_| true,
    )
    .await?;
    assert_eq!(
        (e["verdict"].as_str(), e["simulated"].as_bool()),
        (Some("fail"), Some(false)),
        "{e}"
    );
    let pr = e["results"]
        .as_array()
        .context("results")?
        .iter()
        .find(|r| r["id"] == "pmax-rated")
        .context("pmax-rated")?;
    assert_eq!(pr["verdict"], "fail");
    let x = pr["explanation"].as_str().unwrap_or_default();
    assert!(
        x.contains("stc.pmax=350") && x.contains("rated_pmax=400"),
        "{x}"
    );

    // Sample P: STC before, TC200 (simulated 1000x), STC after, insulation after.
    let sample = "sample:MOD-P";
    let stc1 = uuid(20);
    let mut r = Run::new(&stc1, seq, T0 + 3_600_000_000);
    stc(&mut r, sample, 400.0, "erin")?;
    seq = r.seq;
    send(&stack, "gw-lab", vec![r.all()]).await?;
    let e = evaluation_when(&url, &viewer, &stc1, "STC before evaluated", |_| true).await?;
    assert_eq!(e["verdict"], "pass", "{e}");

    let tc = uuid(21);
    let mut r = Run::new(&tc, seq, T0 + 7_200_000_000);
    r.start("tc200", sample, "erin", &[("area_m2", 1.6)], 1000.0)?;
    r.event(RunEventKind::StepStarted, "0");
    for i in 0..400 {
        let t = if i % 2 == 0 { -41.0 } else { 86.0 };
        r.reading("module_temperature", "module", "temperature", "Cel", t)
            .reading("open_circuit", "bias", "open_circuit", "1", 0.0);
    }
    r.event(RunEventKind::StepFinished, "0")
        .event(RunEventKind::Completed, "");
    seq = r.seq;
    let tc_ended = r.t_us;
    send(&stack, "gw-lab", vec![r.all()]).await?;
    let e = evaluation_when(&url, &viewer, &tc, "TC200 evaluated", |_| true).await?;
    assert_eq!(
        (e["verdict"].as_str(), e["simulated"].as_bool()),
        (Some("no_verdict"), Some(true)),
        "{e}"
    );
    assert!(
        e["inputs"]["missing"]["after.pmax"]
            .as_str()
            .unwrap_or_default()
            .contains("no completed stc-power run"),
        "{e}"
    );
    assert_eq!(e["inputs"]["values"]["module_temperature.max"], 86.0);

    let stc2 = uuid(22);
    let mut r = Run::new(&stc2, seq, tc_ended + 3_600_000_000);
    stc(&mut r, sample, 390.0, "erin")?;
    seq = r.seq;
    send(&stack, "gw-lab", vec![r.all()]).await?;
    // Its completion re-evaluates the TC200 run: after.pmax now comes from it.
    let e = evaluation_when(&url, &viewer, &tc, "TC200 sees the STC after it", |e| {
        e["inputs"]["values"]["after.pmax"].is_number()
    })
    .await?;
    assert_eq!(
        e["inputs"]["sources"]["after.pmax"]["run_id"],
        stc2.as_str(),
        "{e}"
    );
    assert_eq!(
        e["inputs"]["sources"]["before.pmax"]["run_id"],
        stc1.as_str(),
        "{e}"
    );
    assert_eq!(e["matches_previous"], false);

    let ins = uuid(23);
    let mut r = Run::new(&ins, seq, tc_ended + 7_200_000_000);
    r.start(
        "insulation-wet-leakage",
        sample,
        "erin",
        &[("area_m2", 1.6)],
        1.0,
    )?;
    r.event(RunEventKind::StepStarted, "1")
        .reading("dielectric.breakdown", "hipot", "breakdown", "1", 0.0)
        .reading("insulation.r_iso", "hipot", "r_iso", "MOhm", 500.0)
        .reading("wet.r_iso", "hipot", "r_iso", "MOhm", 450.0)
        .event(RunEventKind::Completed, "");
    send(&stack, "gw-lab", vec![r.all()]).await?;
    let e = evaluation_when(
        &url,
        &viewer,
        &tc,
        "TC200 sees the insulation after it",
        |e| e["inputs"]["values"]["after.wet_r_iso"].is_number(),
    )
    .await?;
    assert_eq!(
        e["verdict"], "no_verdict",
        "visual inspection still missing: {e}"
    );

    // The intake inspection after cycling: no major visual defect.
    let observed =
        chrono::DateTime::from_timestamp_micros(tc_ended + 60_000_000).context("time")?;
    sqlx::query(
        "INSERT INTO sample_observations (sample_id, name, value, unit, observed_at, source, recorded_by)
         VALUES ($1, 'major_visual_defects', 0, '1', $2, 'inspection:1', 'ivy')",
    )
    .bind(sample)
    .bind(observed)
    .execute(&pool)
    .await?;
    let changed =
        cloud_hub::runs::reevaluate_sample(&pool, sample, "observation recorded", None).await?;
    assert_eq!(changed.len(), 1, "only the TC200 run changes");
    let erin = &tokens["erin"];
    let emil = &tokens["emil"];
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/runs/{tc}/evaluate"),
        Some(emil),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let e = &v["evaluation"];
    assert_eq!(
        (e["verdict"].as_str(), e["computed"].as_str()),
        (Some("provisional"), Some("pass")),
        "{e}"
    );
    assert_eq!(
        v["matches_previous"], true,
        "re-evaluation is reproducible: {v}"
    );
    assert_eq!(
        e["inputs"]["sources"]["after.major_visual_defects"]["source"],
        "inspection:1"
    );
    let deg = e["results"]
        .as_array()
        .context("results")?
        .iter()
        .find(|r| r["id"] == "pmax-degradation")
        .context("criterion")?;
    assert_eq!(deg["verdict"], "pass");
    assert!(
        (deg["checks"][0]["value"].as_f64().unwrap_or(0.0) - 2.5).abs() < 1e-9,
        "{deg}"
    );

    // Approval: not a viewer, not the operator who started it, once.
    let approve = json!({"decision": "approve", "comment": "modules look fine"});
    let path = format!("{url}/api/v1/runs/{tc}/approval");
    let (s, v) = call(Method::POST, &path, Some(&viewer), Some(&approve)).await?;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(Method::POST, &path, Some(erin), Some(&approve)).await?;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("four eyes"),
        "{v}"
    );
    let (s, v) = call(
        Method::POST,
        &path,
        Some(emil),
        Some(&json!({"decision": "reject"})),
    )
    .await?;
    assert_eq!(s, 422, "a rejection needs a comment: {v}");
    let (s, v) = call(Method::POST, &path, Some(emil), Some(&approve)).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["evaluation"]["final_verdict"], "pass");
    assert_eq!(v["evaluation"]["approval"]["decided_by"], "emil");
    let (s, _) = call(Method::POST, &path, Some(emil), Some(&approve)).await?;
    assert_eq!(s, 409, "decided once");
    // An approval on a run that is not provisional is refused.
    let (s, _) = call(
        Method::POST,
        &format!("{url}/api/v1/runs/{stc1}/approval"),
        Some(emil),
        Some(&approve),
    )
    .await?;
    assert_eq!(s, 409);
    // The same outcome again keeps the approval.
    let (s, v) = call(
        Method::POST,
        &format!("{url}/api/v1/runs/{tc}/evaluate"),
        Some(emil),
        None,
    )
    .await?;
    assert_eq!(
        (s, v["evaluation"]["final_verdict"].as_str()),
        (200, Some("pass")),
        "{v}"
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'run.approve' AND target = $1 AND actor = 'emil'",
    )
    .bind(format!("run:{tc}"))
    .fetch_one(&pool)
    .await?;
    assert_eq!(audited, 1);

    // Listing: filters and pages.
    let all = get(&format!("{url}/api/v1/runs?sample={sample}"), &viewer).await?;
    assert_eq!(all["count"], 4, "{all}");
    let p1 = get(
        &format!("{url}/api/v1/runs?sample={sample}&limit=3"),
        &viewer,
    )
    .await?;
    let next = p1["next_before"].as_i64().context("next_before")?;
    let p2 = get(
        &format!("{url}/api/v1/runs?sample={sample}&limit=3&before={next}"),
        &viewer,
    )
    .await?;
    assert_eq!(
        (p1["count"].as_i64(), p2["count"].as_i64()),
        (Some(3), Some(1))
    );
    assert_eq!(p2["runs"][0]["run_id"], stc1.as_str(), "oldest last");
    let tcs = get(
        &format!("{url}/api/v1/runs?protocol=tc200&state=completed"),
        &viewer,
    )
    .await?;
    assert_eq!(
        (tcs["count"].as_i64(), tcs["runs"][0]["verdict"].as_str()),
        (Some(1), Some("pass")),
        "{tcs}"
    );
    // Hostile ids and parameters.
    for (path, want) in [
        ("/api/v1/runs/not-a-uuid", 400),
        (&format!("/api/v1/runs/{}", uuid(999)) as &str, 404),
        ("/api/v1/runs?state=exploded", 400),
        ("/api/v1/runs?limit=0", 400),
        ("/api/v1/runs?before=-1", 400),
    ] {
        let (s, v) = call(Method::GET, &format!("{url}{path}"), Some(&viewer), None).await?;
        assert_eq!(s, want, "{path}: {v}");
    }
    let (s, _) = call(
        Method::POST,
        &format!("{url}/api/v1/runs/{tc}/evaluate"),
        Some(&viewer),
        None,
    )
    .await?;
    assert_eq!(s, 403, "viewers read, engineers evaluate");
    let (s, _) = call(
        Method::POST,
        &path,
        Some(emil),
        Some(&json!({"decision": "maybe"})),
    )
    .await?;
    assert_eq!(s, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benches_in_the_hello_become_bench_twins_placed_like_their_gateway() -> Result<()> {
    use qi_proto::v1::{BenchInfo, BenchInstrument, BenchPoint, EdgeMessage, Hello, edge_message};
    let mut stack = Stack::new().await?;
    stack.start_hub().await?;
    let pool = stack.db().await?;
    let url = stack.hub_url();
    let admin = admin_token(&stack);
    let (s, v) = call(
        Method::PUT,
        &format!("{url}/api/v1/gateways/gw-rig/site"),
        Some(&admin),
        Some(&json!({"site": "lab-1"})),
    )
    .await?;
    assert!(s == 200 || s == 204, "{s} {v}");
    let bench = |min: f64| BenchInfo {
        bench_id: "rig-1".into(),
        description: "TC chamber with SMU".into(),
        points: vec![BenchPoint {
            name: "chamber.temperature".into(),
            device_id: "chamber".into(),
            read_point: "temperature".into(),
            write_point: "setpoint".into(),
            unit: "Cel".into(),
            min: Some(min),
            max: Some(90.0),
        }],
        instruments: vec![BenchInstrument {
            name: "smu".into(),
            device_id: "smu-1".into(),
        }],
    };
    let hello_with = |b: BenchInfo| EdgeMessage {
        kind: Some(edge_message::Kind::Hello(Hello {
            gateway_id: "gw-rig".into(),
            agent_version: "test".into(),
            devices: vec![],
            benches: vec![b],
            accepts_calibrations: false,
            accepts_run_verdicts: false,
        })),
    };
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    // Inverted limits: the stream is refused and no twin is written.
    let (_, err) = exchange(&client, vec![hello_with(bench(100.0))]).await?;
    let err = err.context("bad bench accepted")?;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM twins WHERE kind = 'bench'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(n, 0);
    let (_, err) = exchange(&client, vec![hello_with(bench(-45.0))]).await?;
    assert!(err.is_none(), "{err:?}");
    let (attrs, site): (Value, Option<String>) = wait_for("bench twin", Duration::from_secs(20), || async {
        Ok(sqlx::query_as(
            "SELECT attributes, twin_site(twin_id) FROM twins WHERE twin_id = 'bench:gw-rig:rig-1' AND kind = 'bench'",
        )
        .fetch_optional(&pool)
        .await?)
    })
    .await?;
    assert_eq!(
        site.as_deref(),
        Some("lab-1"),
        "placed where its gateway is"
    );
    assert_eq!(attrs["points"][0]["min"], -45.0, "{attrs}");
    assert_eq!(attrs["points"][0]["write_point"], "setpoint");
    assert_eq!(
        attrs["instruments"][0]["twin_id"],
        "instrument:gw-rig:smu-1"
    );
    Ok(())
}
