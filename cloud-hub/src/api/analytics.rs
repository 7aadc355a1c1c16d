//! The analytics endpoints: series, live state, bucketed aggregates (raw or
//! rollups, chosen automatically), LTTB downsampling, window statistics with
//! a linear trend, and anomaly detection. The computations are in
//! `crate::analytics`; this is their HTTP face.

use super::replica::ReadState;
use super::{ApiError, ApiState, filter, parse_limit, parse_time};
use crate::analytics::math;
use crate::analytics::math::Fill;
use crate::storage::{BucketRow, SeriesRow, Source};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/series", get(series))
        .route("/api/v1/latest", get(latest))
        .route("/api/v1/aggregates", get(aggregates))
        .route("/api/v1/series/{id}/downsample", get(downsample))
        .route("/api/v1/series/{id}/stats", get(stats))
        .route("/api/v1/series/{id}/anomalies", get(anomalies))
        .route_layer(axum::middleware::from_fn(super::replica::headers))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    gateway: Option<String>,
    device: Option<String>,
    metric: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

async fn series(
    ReadState(s): ReadState,
    q: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q?;
    let after = match p.after.as_deref() {
        None => 0,
        Some(a) => a.parse::<i32>().map_err(|_| {
            ApiError::bad_request(format!(
                "`after` must be a series id (the previous page's next_after); got {a:?}"
            ))
        })?,
    };
    let limit = parse_limit(&p.limit, 100, s.max_page_size)?;
    let rows = s
        .store
        .list_series(
            filter("gateway", p.gateway)?.as_deref(),
            filter("device", p.device)?.as_deref(),
            filter("metric", p.metric)?.as_deref(),
            after,
            limit,
        )
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.series_id))
        .flatten();
    Ok(Json(
        json!({"count": rows.len(), "next_after": next, "series": rows}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatestParams {
    gateway: Option<String>,
    device: Option<String>,
    limit: Option<String>,
}

async fn latest(
    ReadState(s): ReadState,
    q: Result<Query<LatestParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q?;
    let gateway = filter("gateway", p.gateway)?;
    let device = filter("device", p.device)?;
    if gateway.is_none() && device.is_none() {
        return Err(ApiError::bad_request(
            "give `gateway` and/or `device`: the live state of one site or device",
        ));
    }
    let limit = parse_limit(&p.limit, 1000, s.max_page_size)?;
    let rows = s
        .store
        .latest(gateway.as_deref(), device.as_deref(), limit)
        .await?;
    Ok(Json(json!({"count": rows.len(), "latest": rows})))
}

/// A time range: `to` defaults to now, `from` to 24 h before `to`.
fn range(
    from: &Option<String>,
    to: &Option<String>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = parse_time("to", to)?.unwrap_or_else(Utc::now);
    let from = parse_time("from", from)?.unwrap_or(to - Duration::hours(24));
    if from >= to {
        return Err(ApiError::bad_request(format!(
            "`from` ({from}) must be before `to` ({to})"
        )));
    }
    Ok((from, to))
}

/// Widest bucket: 10 years of 365 days. PostgreSQL's interval (and the
/// time arithmetic on it) overflows far above this, and wider buckets make no
/// sense for measurements; refusing here makes it the client's 400 instead of
/// a database error.
pub const MAX_BUCKET_S: i64 = 3650 * 86_400;

/// `30s`, `5m`, `1h`, `1d` or plain seconds, at most [`MAX_BUCKET_S`].
fn parse_bucket(v: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "`bucket` must be a positive width of at most 3650d such as 30s, 5m, 1h or 1d; got {v:?}"
        ))
    };
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(mult) {
        Some(w) if w > 0 && w <= MAX_BUCKET_S => Ok(w),
        _ => Err(bad()),
    }
}

fn parse_ids(v: &Option<String>, max: usize) -> Result<Vec<i32>, ApiError> {
    let raw = v.as_deref().unwrap_or("");
    if raw.is_empty() {
        return Err(ApiError::bad_request(
            "`series` is required: comma-separated series ids from /api/v1/series",
        ));
    }
    let ids: Vec<i32> = raw
        .split(',')
        .map(|p| {
            p.trim().parse::<i32>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`series` must be comma-separated integers; got {p:?}"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    if ids.len() > max {
        return Err(ApiError::bad_request(format!(
            "at most {max} series per request; got {}",
            ids.len()
        )));
    }
    Ok(ids)
}

async fn known_series(s: &ApiState, ids: &[i32]) -> Result<Vec<SeriesRow>, ApiError> {
    let rows = s.store.series_by_ids(ids).await?;
    if let Some(missing) = ids
        .iter()
        .find(|id| !rows.iter().any(|r| r.series_id == **id))
    {
        return Err(ApiError::not_found(format!(
            "unknown series {missing}; /api/v1/series lists the ids"
        )));
    }
    Ok(rows)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Avg,
    Min,
    Max,
    Count,
    Sum,
    Stddev,
    First,
    Last,
    Pct(f64),
}

fn parse_functions(v: &Option<String>) -> Result<Vec<(String, Func)>, ApiError> {
    let raw = v.as_deref().unwrap_or("avg,min,max,count");
    raw.split(',')
        .map(|f| {
            let f = f.trim();
            let func = match f {
                "avg" => Func::Avg,
                "min" => Func::Min,
                "max" => Func::Max,
                "count" => Func::Count,
                "sum" => Func::Sum,
                "stddev" => Func::Stddev,
                "first" => Func::First,
                "last" => Func::Last,
                p if p.starts_with('p') => match p[1..].parse::<f64>() {
                    Ok(x) if (0.0..=100.0).contains(&x) => Func::Pct(x / 100.0),
                    _ => return Err(ApiError::bad_request(format!("percentile {p:?} must be p0..p100, e.g. p95 or p99.9"))),
                },
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown function {other:?}; use avg, min, max, count, sum, stddev, first, last or pNN"
                    )));
                }
            };
            Ok((f.to_string(), func))
        })
        .collect()
}

fn value_of(r: &BucketRow, f: Func, pcts: &[f64]) -> Option<f64> {
    let n = r.n as f64;
    match f {
        Func::Avg => Some(r.sum / n),
        Func::Min => Some(r.min),
        Func::Max => Some(r.max),
        Func::Count => Some(n),
        Func::Sum => Some(r.sum),
        Func::Stddev => {
            (r.n > 1).then(|| ((r.sum_sq - r.sum * r.sum / n).max(0.0) / (n - 1.0)).sqrt())
        }
        Func::First => Some(r.first),
        Func::Last => Some(r.last),
        Func::Pct(p) => {
            let i = pcts.iter().position(|x| *x == p)?;
            r.percentiles.as_ref()?.get(i).copied()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AggParams {
    series: Option<String>,
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    functions: Option<String>,
    fill: Option<String>,
    source: Option<String>,
}

async fn aggregates(
    ReadState(s): ReadState,
    q: Result<Query<AggParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = q?;
    let a = &s.analytics;
    let ids = parse_ids(&p.series, a.max_series)?;
    let (from, to) = range(&p.from, &p.to)?;
    let width = parse_bucket(p.bucket.as_deref().unwrap_or("1h"))?;
    let span = (to - from).num_seconds();
    let buckets = (span + width - 1) / width;
    if buckets > a.max_points {
        return Err(ApiError::bad_request(format!(
            "{buckets} buckets of {width} s per series exceed the limit of {}; use a wider bucket or a shorter range",
            a.max_points
        )));
    }
    let funcs = parse_functions(&p.functions)?;
    let fill = match p.fill.as_deref() {
        None | Some("null") => Fill::Null,
        Some("previous") => Fill::Previous,
        Some("linear") => Fill::Linear,
        Some(f) => {
            return Err(ApiError::bad_request(format!(
                "`fill` must be null, previous or linear; got {f:?}"
            )));
        }
    };
    let pcts: Vec<f64> = funcs
        .iter()
        .filter_map(|(_, f)| if let Func::Pct(p) = f { Some(*p) } else { None })
        .collect();
    let series = known_series(&s, &ids).await?;
    let aligned = |unit: i64| width % unit == 0 && from.timestamp() % unit == 0;
    let rollup = if aligned(3600) {
        Some(Source::Hour)
    } else if aligned(60) {
        Some(Source::Minute)
    } else {
        None
    };
    let source = match p.source.as_deref() {
        None | Some("auto") => {
            if pcts.is_empty() {
                rollup.unwrap_or(Source::Raw)
            } else {
                Source::Raw
            }
        }
        Some("raw") => Source::Raw,
        Some("1m") if aligned(60) && pcts.is_empty() => Source::Minute,
        Some("1h") if aligned(3600) && pcts.is_empty() => Source::Hour,
        Some(x @ ("1m" | "1h")) => {
            return Err(ApiError::bad_request(format!(
                "source {x} needs a bucket and `from` aligned to {x} and no percentiles (rollups keep none)"
            )));
        }
        Some(x) => {
            return Err(ApiError::bad_request(format!(
                "`source` must be auto, raw, 1m or 1h; got {x:?}"
            )));
        }
    };
    // Rollups cover samples up to their watermark; newer buckets come from raw.
    let split = match source {
        Source::Raw => from,
        _ => {
            let wm = s.store.rollup_watermark().await?.unwrap_or(from);
            let whole = ((wm - from).num_seconds().max(0) / width) * width;
            (from + Duration::seconds(whole)).min(to)
        }
    };
    let raw_from = split;
    if raw_from < to {
        let est = s.store.estimate_rows(&ids, raw_from, to).await?;
        if est > a.max_scan_rows {
            return Err(ApiError::bad_request(format!(
                "this would read about {est} raw samples (limit {}); narrow the range, ask for fewer series, drop percentiles, or use a bucket of 1m or more aligned to the minute so rollups are used",
                a.max_scan_rows
            )));
        }
    }
    let mut rows = Vec::new();
    if split > from {
        rows.extend(
            s.store
                .aggregate(source, &ids, from, split, width, &[])
                .await?,
        );
    }
    if raw_from < to {
        rows.extend(
            s.store
                .aggregate(Source::Raw, &ids, raw_from, to, width, &pcts)
                .await?,
        );
    }
    let mut out = Vec::new();
    for sr in &series {
        let mine: Vec<&BucketRow> = rows
            .iter()
            .filter(|r| r.series_id == sr.series_id)
            .collect();
        let times: Vec<DateTime<Utc>> = (0..buckets)
            .map(|i| from + Duration::seconds(i * width))
            .collect();
        let mut cols = serde_json::Map::new();
        for (name, f) in &funcs {
            let mut vals: Vec<Option<f64>> = times
                .iter()
                .map(|t| {
                    mine.iter()
                        .find(|r| r.bucket == *t)
                        .and_then(|r| value_of(r, *f, &pcts))
                })
                .collect();
            if *f != Func::Count {
                math::fill(&mut vals, fill);
            }
            cols.insert(name.clone(), json!(vals));
        }
        out.push(json!({
            "series_id": sr.series_id, "gateway_id": sr.gateway_id, "device_id": sr.device_id,
            "metric": sr.metric, "unit": sr.unit,
            "ts": times.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
            "values": cols,
        }));
    }
    metrics::counter!(crate::metric_names::HUB_ANALYTICS_QUERIES_TOTAL, "kind" => "aggregates")
        .increment(1);
    Ok(Json(json!({
        "from": from, "to": to, "bucket_s": width, "fill": format!("{fill:?}").to_lowercase(),
        "source": source, "rollup_until": if source == Source::Raw { None } else { Some(split) },
        "series": out,
    })))
}

fn series_id(p: Result<Path<i32>, PathRejection>) -> Result<i32, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|_| ApiError::bad_request("the series id in the path must be an integer"))
}

/// Raw points of one series, refused when over the scan limit.
async fn window(
    s: &ApiState,
    id: i32,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(SeriesRow, Vec<(DateTime<Utc>, f64)>), ApiError> {
    let sr = known_series(s, &[id]).await?.remove(0);
    let limit = s.analytics.max_scan_rows;
    let pts = s.store.points(id, from, to, limit + 1).await?;
    if pts.len() as i64 > limit {
        return Err(ApiError::bad_request(format!(
            "more than {limit} samples in this range; narrow it or use /api/v1/aggregates"
        )));
    }
    Ok((sr, pts))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownsampleParams {
    from: Option<String>,
    to: Option<String>,
    points: Option<String>,
}

async fn downsample(
    ReadState(s): ReadState,
    id: Result<Path<i32>, PathRejection>,
    q: Result<Query<DownsampleParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = series_id(id)?;
    let Query(p) = q?;
    let (from, to) = range(&p.from, &p.to)?;
    let n = match p.points.as_deref() {
        None => 500,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (3..=s.analytics.max_points).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`points` must be an integer from 3 to {}; got {v:?}",
                    s.analytics.max_points
                )));
            }
        },
    };
    let (sr, pts) = window(&s, id, from, to).await?;
    let xy: Vec<(f64, f64)> = pts
        .iter()
        .map(|(t, v)| (t.timestamp_micros() as f64, *v))
        .collect();
    let d = math::lttb(&xy, n as usize);
    let points: Vec<Value> = d
        .iter()
        .map(|(x, y)| {
            json!([
                DateTime::<Utc>::from_timestamp_micros(*x as i64).map(|t| t.to_rfc3339()),
                y
            ])
        })
        .collect();
    Ok(Json(
        json!({"series": sr, "from": from, "to": to, "source_points": pts.len(), "points": points}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowParams {
    from: Option<String>,
    to: Option<String>,
}

async fn stats(
    ReadState(s): ReadState,
    id: Result<Path<i32>, PathRejection>,
    q: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = series_id(id)?;
    let Query(p) = q?;
    let (from, to) = range(&p.from, &p.to)?;
    let (sr, pts) = window(&s, id, from, to).await?;
    let values: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let xy: Vec<(f64, f64)> = pts
        .iter()
        .map(|(t, v)| ((*t - from).num_milliseconds() as f64 / 1000.0, *v))
        .collect();
    Ok(Json(json!({
        "series": sr, "from": from, "to": to,
        "stats": math::stats(&values),
        "trend": math::trend(&xy),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnomalyParams {
    from: Option<String>,
    to: Option<String>,
    method: Option<String>,
    window: Option<String>,
    threshold: Option<String>,
    alpha: Option<String>,
}

fn num<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    name: &str,
    v: &Option<String>,
    default: T,
    lo: T,
    hi: T,
) -> Result<T, ApiError> {
    match v.as_deref() {
        None => Ok(default),
        Some(s) => match s.parse::<T>() {
            Ok(x) if x >= lo && x <= hi => Ok(x),
            _ => Err(ApiError::bad_request(format!(
                "`{name}` must be a number from {lo} to {hi}; got {s:?}"
            ))),
        },
    }
}

async fn anomalies(
    ReadState(s): ReadState,
    id: Result<Path<i32>, PathRejection>,
    q: Result<Query<AnomalyParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = series_id(id)?;
    let Query(p) = q?;
    let (from, to) = range(&p.from, &p.to)?;
    let window_n = num("window", &p.window, 30usize, 2, 100_000)?;
    let threshold = num("threshold", &p.threshold, 4.0f64, 0.1, 1000.0)?;
    let alpha = num("alpha", &p.alpha, 0.1f64, 0.001, 1.0)?;
    let method = p.method.as_deref().unwrap_or("zscore");
    let (sr, pts) = window(&s, id, from, to).await?;
    let values: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let found = match method {
        "zscore" => math::rolling_zscore(&values, window_n, threshold),
        "ewma" => math::ewma(&values, alpha, threshold, window_n),
        m => {
            return Err(ApiError::bad_request(format!(
                "`method` must be zscore or ewma; got {m:?}"
            )));
        }
    };
    let items: Vec<Value> = found
        .iter()
        .map(|a| json!({"ts": pts[a.index].0, "value": a.value, "expected": a.expected, "score": a.score}))
        .collect();
    Ok(Json(json!({
        "series": sr, "from": from, "to": to, "method": method, "window": window_n,
        "threshold": threshold, "points_examined": values.len(), "anomalies": items,
    })))
}
