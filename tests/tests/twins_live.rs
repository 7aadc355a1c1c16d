//! The live stream of twins (issue #13), end to end: simulated instrument
//! (Modbus TCP) -> edge-agent -> gRPC -> hub -> PostgreSQL -> fan-out -> an
//! SSE client (reqwest, reading the stream as it arrives). Also gateway
//! health, resume with Last-Event-ID, site scoping, and the `[live]` limits.

use anyhow::{Context, Result};
use cloud_hub::identity::Role;
use e2e_tests::grpc::{Client, batch, exchange, hello};
use e2e_tests::hub_auth::{admin_token, new_key};
use e2e_tests::sse::{self, Event};
use e2e_tests::{Stack, wait_for};
use qi_proto::v1::Reading;
use std::collections::BTreeMap;
use std::time::Duration;

const INSTRUMENT: &str = "instrument:gw-live:meter-1";

/// What `instrument-sim --constant` serves: each point's `sim.base` as it
/// survives its register type (as in walking_skeleton.rs).
fn expected_values() -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(e2e_tests::profiles_dir().join("eastron-sdm630.toml"))?;
    let v: toml::Value = toml::from_str(&text)?;
    let mut out = BTreeMap::new();
    for p in v["points"].as_array().context("points")? {
        let base = p["sim"]["base"].as_float().context("sim.base")?;
        let value = match p["type"].as_str() {
            Some("f32") => f64::from(base as f32),
            _ => base.round(),
        };
        out.insert(p["name"].as_str().context("name")?.to_string(), value);
    }
    Ok(out)
}

fn stream_url(stack: &Stack, query: &str) -> String {
    format!("{}/api/v1/twins/stream?{query}", stack.hub_url())
}

async fn open(stack: &Stack, query: &str, token: &str, last: Option<u64>) -> Result<sse::Stream> {
    let (status, s) = sse::open(&stream_url(stack, query), Some(token), last).await?;
    anyhow::ensure!(status == 200, "stream {query}: {status}");
    s.context("stream")
}

/// Readings of `events` as (metric, ts, value), in order.
fn readings(events: &[Event]) -> Vec<(String, String, f64)> {
    events
        .iter()
        .filter(|e| e.event == "reading")
        .map(|e| {
            (
                e.data["metric"].as_str().unwrap_or("").to_string(),
                e.data["ts"].as_str().unwrap_or("").to_string(),
                e.data["value"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// The events of `all` up to and including the one carrying id `id`.
fn through(all: &[Event], id: u64) -> Option<&[Event]> {
    all.iter()
        .position(|e| e.id == Some(id))
        .map(|p| &all[..=p])
}

/// The events of `all` after the one carrying id `id`.
fn after(all: &[Event], id: u64) -> Option<&[Event]> {
    all.iter()
        .position(|e| e.id == Some(id))
        .map(|p| &all[p + 1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instruments_live_readings_and_its_gateways_health_reach_an_sse_client() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.hub_after = "[live]\nkeepalive_s = 1\n".into();
    stack.start_hub().await?;
    let admin = admin_token(&stack);
    let viewer = new_key(&stack, Role::Viewer, None).await?;

    // No credential: 401; a viewer may watch.
    let (status, _) = sse::open(&stream_url(&stack, ""), None, None).await?;
    assert_eq!(status, 401);
    let (status, _) = sse::open(&stream_url(&stack, "kind=bogus"), Some(&viewer), None).await?;
    assert_eq!(status, 400);

    let mut gateways = open(&stack, "kind=gateway", &viewer, None).await?;
    let mut inst = open(&stack, &format!("twin={INSTRUMENT}"), &viewer, None).await?;
    // A second client with the same filter that never disconnects: what the
    // first one should have seen.
    let mut reference = open(&stack, &format!("twin={INSTRUMENT}"), &admin, None).await?;

    stack.start_sim(true).await?;
    let cfg = stack.write_agent_config("gw-live", 200, "")?;
    stack.start_agent(&cfg).await?;

    let online = gateways
        .until(Duration::from_secs(20), |e| e.event == "health")
        .await
        .with_context(|| stack.logs())?;
    assert_eq!(online.data["twin_id"], "gateway:gw-live", "{online:?}");
    assert_eq!(online.data["online"], true);
    assert!(online.id.is_some());
    let pool = stack.db().await?;
    let health = cloud_hub::live::health::of_gateways(&pool, &["gw-live".to_string()]).await?;
    assert!(health["gw-live"].online, "{health:?}");

    // Live readings of the instrument twin, with the simulator's values.
    let expected = expected_values()?;
    let mut seen = Vec::new();
    while seen.len() < 3 * expected.len() {
        let e = inst
            .next(Duration::from_secs(20))
            .await?
            .with_context(|| format!("no reading after {}\n{}", seen.len(), stack.logs()))?;
        // The twin's own changes (its model from the gateway's Hello) come too.
        if e.event == "twin" {
            assert_eq!(e.data["twin_id"], INSTRUMENT, "{e:?}");
            continue;
        }
        seen.push(e);
    }
    for e in &seen {
        assert_eq!(e.event, "reading", "{e:?}");
        assert_eq!(e.data["twin_id"], INSTRUMENT, "{e:?}");
        let metric = e.data["metric"].as_str().context("metric")?;
        assert_eq!(
            e.data["value"].as_f64(),
            expected.get(metric).copied(),
            "{e:?}"
        );
        assert!(e.data["series_id"].as_i64().is_some() && e.data["committed_at"].is_string());
    }

    // Disconnect, miss a few batches, resume with Last-Event-ID.
    let last = inst.last_id.context("an id")?;
    drop(inst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut resumed = open(&stack, &format!("twin={INSTRUMENT}"), &viewer, Some(last)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = resumed.drain(Duration::from_millis(1500)).await?;
    let mut all_ref = seen_by(&mut reference).await?;
    all_ref.extend(reference.drain(Duration::from_millis(500)).await?);
    let cutoff = resumed.last_id.context("resumed stream sent nothing")?;
    let missed = after(&all_ref, last).context("reference lacks the last id")?;
    let missed = through(missed, cutoff).context("reference lacks the cutoff")?;
    let got_upto = through(&got, cutoff).context("cutoff")?;
    assert!(
        readings(missed).len() >= expected.len(),
        "missed too little to show anything: {missed:?}"
    );
    assert_eq!(
        readings(got_upto),
        readings(missed),
        "the resumed stream must carry exactly the events after Last-Event-ID"
    );
    assert_eq!(
        got_upto.iter().map(|e| e.id).collect::<Vec<_>>(),
        missed.iter().map(|e| e.id).collect::<Vec<_>>()
    );

    // An id no longer kept (or from before this hub started): reset first.
    let mut old = open(&stack, &format!("twin={INSTRUMENT}"), &viewer, Some(1)).await?;
    let first = old.next(Duration::from_secs(5)).await?.context("reset")?;
    assert_eq!(first.event, "reset", "{first:?}");

    // Keep-alive comments (live.keepalive_s = 1) on the quiet gateway stream.
    let quiet = gateways.drain(Duration::from_millis(2500)).await?;
    assert!(quiet.is_empty(), "{quiet:?}");
    assert!(gateways.comments >= 1, "no keep-alive comment in 2.5 s");

    // The agent goes away: its gateway goes offline, on the stream and in the table.
    if let Some(agent) = stack.agent.take() {
        agent.kill9()?;
    }
    let offline = gateways
        .until(Duration::from_secs(20), |e| e.event == "health")
        .await
        .with_context(|| stack.logs())?;
    assert_eq!(offline.data["online"], false, "{offline:?}");
    let health = cloud_hub::live::health::of_gateways(&pool, &["gw-live".to_string()]).await?;
    assert!(!health["gw-live"].online, "{health:?}");
    assert!(health["gw-live"].disconnected_at.is_some());

    // Back online, then the hub stops: it marks the gateway offline on its way out.
    stack.start_agent(&cfg).await?;
    let back = gateways
        .until(Duration::from_secs(20), |e| e.event == "health")
        .await?;
    assert_eq!(back.data["online"], true, "{back:?}");
    stack
        .hub
        .take()
        .context("hub")?
        .interrupt(Duration::from_secs(15))?;
    let health = cloud_hub::live::health::of_gateways(&pool, &["gw-live".to_string()]).await?;
    assert!(!health["gw-live"].online, "{health:?}");
    Ok(())
}

/// What `s` has received so far (without waiting for more).
async fn seen_by(s: &mut sse::Stream) -> Result<Vec<Event>> {
    s.drain(Duration::from_millis(200)).await
}

fn one(seq: u64, value: f64) -> Reading {
    Reading {
        seq,
        device_id: "d1".into(),
        metric: "temp".into(),
        timestamp_us: chrono::Utc::now().timestamp_micros(),
        value,
        unit: "Cel".into(),
        quality: 1,
        ..Default::default()
    }
}

/// Sends `n` one-reading batches for `gw` on one stream.
async fn ingest(stack: &Stack, gw: &str, from_seq: u64, n: u64) -> Result<()> {
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let mut msgs = vec![hello(gw)];
    for i in 0..n {
        msgs.push(batch(vec![one(from_seq + i, (from_seq + i) as f64)]));
    }
    let (_, err) = exchange(&client, msgs).await?;
    anyhow::ensure!(err.is_none(), "ingest {gw}: {err:?}\n{}", stack.logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_limited_key_sees_only_its_sites_and_streams_are_bounded() -> Result<()> {
    let mut stack = Stack::new().await?;
    stack.hub_after = "[live]\nmax_subscribers = 3\nresume_events = 4\n".into();
    stack.start_hub().await?;
    let admin = admin_token(&stack);
    // Both gateways and their instruments exist, each gateway in its site.
    ingest(&stack, "gw-a", 1, 1).await?;
    ingest(&stack, "gw-b", 1, 1).await?;
    let http = e2e_tests::http::Client::new();
    for (gw, site) in [("gw-a", "site-a"), ("gw-b", "site-b")] {
        let r = http
            .put(format!("{}/api/v1/gateways/{gw}/site", stack.hub_url()))
            .json(&serde_json::json!({"site": site}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 200, "place {gw}: {r:?}");
    }
    let site_a = new_key(&stack, Role::Viewer, Some(vec!["site-a"])).await?;
    let mut limited = open(&stack, "", &site_a, None).await?;
    // Naming a twin of another site changes nothing: it is filtered out.
    let mut named = open(&stack, "twin=instrument:gw-b:d1", &site_a, None).await?;
    let mut everything = open(&stack, "", &admin, None).await?;

    // live.max_subscribers = 3: the fourth is refused, until one closes.
    let (status, _) = sse::open(&stream_url(&stack, ""), Some(&admin), None).await?;
    assert_eq!(status, 503);

    ingest(&stack, "gw-a", 2, 3).await?;
    ingest(&stack, "gw-b", 2, 3).await?;
    let all = everything.drain(Duration::from_secs(2)).await?;
    let twins = |evs: &[Event]| {
        evs.iter()
            .filter(|e| e.event == "reading")
            .map(|e| e.data["twin_id"].as_str().unwrap_or("").to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        twins(&all),
        ["instrument:gw-a:d1", "instrument:gw-b:d1"]
            .map(String::from)
            .into(),
        "{all:?}"
    );
    let mine = limited.drain(Duration::from_millis(500)).await?;
    assert_eq!(
        twins(&mine),
        ["instrument:gw-a:d1".to_string()].into(),
        "{mine:?}"
    );
    assert_eq!(readings(&mine).len(), 3, "{mine:?}");
    // Health of gw-b's gateway twin is not for site-a either.
    assert!(
        mine.iter()
            .filter(|e| e.event == "health")
            .all(|e| e.data["gateway"] == "gw-a"),
        "{mine:?}"
    );
    let other = named.drain(Duration::from_millis(300)).await?;
    assert!(readings(&other).is_empty(), "{other:?}");

    // A subtree: site-a, its gateway and the instrument connected to it.
    drop(named);
    drop(limited);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut subtree = open(&stack, "subtree=site-a", &admin, None).await?;
    ingest(&stack, "gw-a", 5, 2).await?;
    ingest(&stack, "gw-b", 5, 2).await?;
    let sub = subtree.drain(Duration::from_secs(1)).await?;
    assert_eq!(
        twins(&sub),
        ["instrument:gw-a:d1".to_string()].into(),
        "{sub:?}"
    );
    assert!(
        sub.iter()
            .any(|e| e.event == "health" && e.data["twin_id"] == "gateway:gw-a"),
        "{sub:?}"
    );
    drop(subtree);
    wait_for("a free stream slot", Duration::from_secs(5), || async {
        let (status, s) = sse::open(&stream_url(&stack, ""), Some(&admin), None).await?;
        Ok((status == 200).then_some(s))
    })
    .await?;

    // live.resume_events = 4: the last four hub events can be resumed, older ones reset.
    let mut all = all;
    all.extend(everything.drain(Duration::from_millis(500)).await?);
    let ids: Vec<u64> = all.iter().filter_map(|e| e.id).collect();
    anyhow::ensure!(ids.len() >= 6, "{ids:?}");
    let newest = *ids.last().context("ids")?;
    let (_, s) = sse::open(&stream_url(&stack, ""), Some(&admin), Some(newest - 2)).await?;
    let mut s = s.context("resume")?;
    let back = s.drain(Duration::from_millis(500)).await?;
    let back_ids: Vec<u64> = back.iter().filter_map(|e| e.id).collect();
    // (Events after `newest` may follow: the stream is live.)
    assert!(
        back_ids.starts_with(&[newest - 1, newest]),
        "{back_ids:?} after {newest}"
    );
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, s) = sse::open(&stream_url(&stack, ""), Some(&admin), Some(ids[0])).await?;
    let first = s.context("resume")?.next(Duration::from_secs(5)).await?;
    assert_eq!(first.map(|e| e.event), Some("reset".to_string()));
    Ok(())
}
