//! The hub's analytics API against real PostgreSQL: known data in through
//! the real gRPC ingest, numbers out checked by hand; rollups kept current
//! by the hub; bad and hostile parameters refused.

use anyhow::{Context, Result};
use e2e_tests::grpc::{Client, batch, exchange, hello};
use e2e_tests::{Stack, get_json, wait_for};
use qi_proto::v1::Reading;
use serde_json::Value;
use std::time::Duration;

/// 2026-01-01T00:00:00Z, hour-aligned.
const T0_US: i64 = 1_767_225_600_000_000;

fn r(seq: u64, metric: &str, t_s: i64, value: f64) -> Reading {
    Reading {
        seq,
        device_id: "rig-1".into(),
        metric: metric.into(),
        timestamp_us: T0_US + t_s * 1_000_000,
        value,
        unit: "V".into(),
        quality: 1,
        ..Default::default()
    }
}

/// Two hours of data every 10 s: `ramp` = t/10 (a straight line), and
/// `noise` around 20 with one spike at t = 3000 s.
async fn seeded() -> Result<(Stack, i64, i64)> {
    let mut stack = Stack::new().await?;
    stack.hub_grpc_extra = "[analytics]\nrollup_interval_s = 1\nmax_scan_rows = 100000\n".into();
    stack.start_hub().await?;
    let mut seq = 0;
    let mut readings = Vec::new();
    for i in 0..720i64 {
        let t = i * 10;
        seq += 1;
        readings.push(r(seq, "ramp", t, i as f64));
        seq += 1;
        let noise = 20.0 + ((i * 37) % 11) as f64 * 0.1;
        readings.push(r(seq, "noise", t, if t == 3000 { 35.0 } else { noise }));
    }
    let mut msgs = vec![hello("gw-an")];
    msgs.extend(readings.chunks(500).map(|c| batch(c.to_vec())));
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let (_, err) = exchange(&client, msgs).await?;
    anyhow::ensure!(err.is_none(), "ingest: {err:?}\n{}", stack.logs());
    let api = format!("{}/api/v1", stack.hub_url());
    let (_, list) = get_json(&format!("{api}/series?device=rig-1")).await?;
    let id = |m: &str| -> Result<i64> {
        list["series"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["metric"] == m))
            .and_then(|s| s["series_id"].as_i64())
            .with_context(|| format!("no series {m}: {list}"))
    };
    let (ramp, noise) = (id("ramp")?, id("noise")?);
    Ok((stack, ramp, noise))
}

async fn get(url: &str) -> Result<Value> {
    let (status, body) = get_json(url).await?;
    anyhow::ensure!(status == 200, "{url}: {status} {body}");
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_from_raw_and_rollups_agree_with_the_data() -> Result<()> {
    let (stack, ramp, _) = seeded().await?;
    let api = format!("{}/api/v1", stack.hub_url());
    let range = "from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z";
    let raw = get(&format!(
        "{api}/aggregates?series={ramp}&{range}&bucket=1h&functions=avg,min,max,count,sum,first,last,p50&source=raw"
    ))
    .await?;
    let v = &raw["series"][0]["values"];
    // First hour: values 0..=359 -> avg 179.5, count 360; second 360..=719.
    assert_eq!(v["count"], serde_json::json!([360.0, 360.0]), "{raw}");
    assert_eq!(v["avg"], serde_json::json!([179.5, 539.5]));
    assert_eq!(v["min"], serde_json::json!([0.0, 360.0]));
    assert_eq!(v["max"], serde_json::json!([359.0, 719.0]));
    assert_eq!(v["first"], serde_json::json!([0.0, 360.0]));
    assert_eq!(v["last"], serde_json::json!([359.0, 719.0]));
    assert_eq!(v["p50"], serde_json::json!([179.5, 539.5]));
    assert_eq!(raw["source"], "raw");
    // The same from the hour rollup once the hub has rolled up.
    let rolled = wait_for("rollups", Duration::from_secs(20), || async {
        let b = get(&format!(
            "{api}/aggregates?series={ramp}&{range}&bucket=1h&functions=avg,count,stddev"
        ))
        .await?;
        Ok((b["source"] == "1h"
            && b["series"][0]["values"]["count"] == serde_json::json!([360.0, 360.0]))
        .then_some(b))
    })
    .await
    .with_context(|| stack.logs())?;
    assert_eq!(
        rolled["series"][0]["values"]["avg"],
        serde_json::json!([179.5, 539.5])
    );
    let sd = rolled["series"][0]["values"]["stddev"][0]
        .as_f64()
        .unwrap_or(0.0);
    // stddev of 0..=359 (sample): sqrt(360*361/12) = 104.067...
    assert!((sd - 104.067_286).abs() < 1e-3, "{sd}");
    // 10-minute buckets come from the minute rollup and cover the range.
    let m = get(&format!(
        "{api}/aggregates?series={ramp}&{range}&bucket=10m&functions=avg"
    ))
    .await?;
    assert_eq!(m["source"], "1m");
    assert_eq!(m["series"][0]["ts"].as_array().map(Vec::len), Some(12));
    assert_eq!(m["series"][0]["values"]["avg"][0], 29.5);
    // Gap fill over a range that runs past the data.
    let g = get(&format!(
        "{api}/aggregates?series={ramp}&from=2026-01-01T00:00:00Z&to=2026-01-01T04:00:00Z&bucket=1h&functions=avg&fill=previous"
    ))
    .await?;
    assert_eq!(
        g["series"][0]["values"]["avg"],
        serde_json::json!([179.5, 539.5, 539.5, 539.5])
    );
    let g = get(&format!(
        "{api}/aggregates?series={ramp}&from=2026-01-01T00:00:00Z&to=2026-01-01T04:00:00Z&bucket=1h&functions=avg"
    ))
    .await?;
    assert_eq!(
        g["series"][0]["values"]["avg"],
        serde_json::json!([179.5, 539.5, null, null])
    );
    // Live state.
    let l = get(&format!("{api}/latest?device=rig-1")).await?;
    let ramp_latest = l["latest"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["metric"] == "ramp"))
        .cloned();
    assert_eq!(
        ramp_latest.map(|x| x["value"].clone()),
        Some(serde_json::json!(719.0))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downsampling_statistics_trend_and_anomalies() -> Result<()> {
    let (stack, ramp, noise) = seeded().await?;
    let api = format!("{}/api/v1", stack.hub_url());
    let range = "from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z";
    let d = get(&format!(
        "{api}/series/{ramp}/downsample?{range}&points=100"
    ))
    .await?;
    assert_eq!(d["points"].as_array().map(Vec::len), Some(100));
    assert_eq!(d["source_points"], 720);
    let s = get(&format!("{api}/series/{ramp}/stats?{range}")).await?;
    assert_eq!(s["stats"]["count"], 720);
    assert_eq!(s["stats"]["mean"], 359.5);
    // 1 per 10 s = 360 per hour, exactly linear.
    let slope = s["trend"]["slope_per_hour"].as_f64().unwrap_or(0.0);
    assert!((slope - 360.0).abs() < 1e-6, "{s}");
    assert!((s["trend"]["r_squared"].as_f64().unwrap_or(0.0) - 1.0).abs() < 1e-9);
    for method in ["zscore", "ewma"] {
        let a = get(&format!(
            "{api}/series/{noise}/anomalies?{range}&method={method}&threshold=5"
        ))
        .await?;
        let found = a["anomalies"].as_array().cloned().unwrap_or_default();
        assert_eq!(found.len(), 1, "{method}: {a}");
        assert_eq!(found[0]["ts"], "2026-01-01T00:50:00Z");
        assert_eq!(found[0]["value"], 35.0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_hostile_parameters_get_400_with_a_message() -> Result<()> {
    let (stack, ramp, _) = seeded().await?;
    let api = format!("{}/api/v1", stack.hub_url());
    let cases = [
        (
            format!("aggregates?series={ramp}&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
            "before",
        ),
        (format!("aggregates?series={ramp}&bucket=0s"), "bucket"),
        (
            format!(
                "aggregates?series={ramp}&bucket=1s&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"
            ),
            "buckets",
        ),
        (
            format!("aggregates?series={ramp}&functions=avg,median"),
            "unknown function",
        ),
        (format!("aggregates?series={ramp}&fill=magic"), "fill"),
        (
            format!("aggregates?series={ramp}&source=1h&bucket=90s"),
            "aligned",
        ),
        (
            "aggregates?series=1;DROP TABLE samples".to_string(),
            "integers",
        ),
        ("aggregates".to_string(), "required"),
        (format!("series/{ramp}/downsample?points=1"), "points"),
        ("series/abc/stats".to_string(), "integer"),
        (
            format!("series/{ramp}/anomalies?method=astrology"),
            "method",
        ),
        ("latest".to_string(), "gateway"),
        (
            "series?device=x%27%3B%20DROP%20TABLE%20series%3B--&after=zz".to_string(),
            "after",
        ),
    ];
    for (path, want) in cases {
        let (status, body) = get_json(&format!("{api}/{path}")).await?;
        assert_eq!(status, 400, "{path}: {body}");
        let msg = body["message"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{path}: {msg}");
    }
    // A well-formed id that names no series is 404, not the client's syntax error.
    let (status, body) = get_json(&format!("{api}/aggregates?series=999999")).await?;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown series")
    );
    // Injection attempts in filters are just strings that match nothing.
    let hostile = get(&format!("{api}/series?device=x%27%20OR%20%271%27%3D%271")).await?;
    assert_eq!(hostile["count"], 0);
    // A raw read over the scan limit (100,000 here) is refused with advice.
    let mut readings = Vec::new();
    for i in 0..120_000u64 {
        readings.push(r(10_000 + i, "dense", i as i64 / 100, i as f64));
    }
    let mut msgs = vec![hello("gw-an")];
    msgs.extend(readings.chunks(10_000).map(|c| batch(c.to_vec())));
    let client = Client::plain(&format!("http://127.0.0.1:{}", stack.grpc_port));
    let (_, err) = exchange(&client, msgs).await?;
    anyhow::ensure!(err.is_none(), "dense ingest: {err:?}\n{}", stack.logs());
    let (_, list) = get_json(&format!("{api}/series?metric=dense")).await?;
    let dense = list["series"][0]["series_id"]
        .as_i64()
        .context("dense series")?;
    let url = format!(
        "{api}/aggregates?series={dense}&from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z&bucket=7s"
    );
    let (status, body) = wait_for(
        "the estimate to see the rows",
        Duration::from_secs(20),
        || async {
            let (s, b) = get_json(&url).await?;
            Ok((s == 400).then_some((s, b)))
        },
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap_or("").contains("narrow"),
        "{body}"
    );
    // The same range from the minute rollup is fine.
    get(&format!("{api}/aggregates?series={dense}&from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z&bucket=1m")).await?;
    // And the OpenAPI document is served.
    let doc = get(&format!("{api}/openapi.json")).await?;
    assert!(doc["paths"]["/api/v1/aggregates"].is_object());
    Ok(())
}
