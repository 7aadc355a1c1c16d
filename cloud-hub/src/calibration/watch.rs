//! The calibration watch: a background look, every
//! `[calibration] check_interval_s` and right after a calibration is
//! recorded, for instrument calibrations and valid certificates due within
//! `warn_days` or past. Each raises an alarm on its twin (the instrument,
//! or the certificate's subject): `warning` while due soon, `major` once
//! expired; the alarm clears when a new calibration (or a revocation, a
//! supersession) makes it no longer due. Alarms go through
//! `crate::alarms` (store, audit, live stream, webhooks) under a rule of
//! kind `calibration` per twin and metric, which the rule evaluator leaves
//! alone.

use super::Status;
use crate::alarms::{Alarms, store};
use crate::audit::ActorKind;
use crate::config::calibration::CalibrationConfig;
use crate::metric_names as m;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Metric of an instrument's calibration alarm.
pub const CALIBRATION_METRIC: &str = "calibration";
/// Metric of a certificate's expiry alarm: `certificate:<id>`.
pub fn certificate_metric(id: &str) -> String {
    format!("certificate:{id}")
}

/// An alarm the watch wants active: its severity and what it says.
#[derive(Debug, Clone)]
struct Wanted {
    severity: &'static str,
    details: Value,
}

fn severity(s: Status) -> &'static str {
    if s == Status::Expired {
        "major"
    } else {
        "warning"
    }
}

/// (twin, metric) -> the alarm that should be active now.
async fn wanted(
    pool: &PgPool,
    warn_days: u32,
) -> Result<BTreeMap<(String, String), Wanted>, sqlx::Error> {
    let now = Utc::now();
    let mut out = BTreeMap::new();
    let items = super::due::list(pool, warn_days, warn_days, 100_000).await?;
    for i in items {
        let status = Status::of(i.date, now, warn_days);
        let metric = match (&i.kind[..], &i.certificate_id) {
            ("certificate", Some(id)) => certificate_metric(id),
            _ => CALIBRATION_METRIC.to_string(),
        };
        let what = if i.kind == "certificate" {
            "certificate expiry"
        } else {
            "calibration due"
        };
        out.insert(
            (i.twin_id.clone(), metric),
            Wanted {
                severity: severity(status),
                details: json!({"kind": i.kind, "status": status, "date": i.date,
                    "calibration_id": i.calibration_id, "certificate_id": i.certificate_id,
                    "message": format!("{what} {}: {}", status.as_str(), fmt(i.date))}),
            },
        );
    }
    Ok(out)
}

fn fmt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The rule of kind `calibration` for (twin, metric), made on first use.
async fn rule_of(pool: &PgPool, twin: &str, metric: &str) -> Result<i64, sqlx::Error> {
    let name = if metric == CALIBRATION_METRIC {
        "calibration due (hub)".to_string()
    } else {
        format!("{metric} expiry (hub)")
    };
    sqlx::query(
        "INSERT INTO alarm_rules (name, twin_id, metric, kind, severity)
         VALUES ($1, $2, $3, 'calibration', 'warning')
         ON CONFLICT (twin_id, metric) WHERE kind = 'calibration' AND deleted_at IS NULL
         DO NOTHING",
    )
    .bind(&name)
    .bind(twin)
    .bind(metric)
    .execute(pool)
    .await?;
    sqlx::query_scalar(
        "SELECT rule_id FROM alarm_rules
          WHERE kind = 'calibration' AND deleted_at IS NULL AND twin_id = $1 AND metric = $2",
    )
    .bind(twin)
    .bind(metric)
    .fetch_one(pool)
    .await
}

/// One look: raises what is due and not raised (or raised at another
/// severity), clears what is no longer due. Returns (raised, cleared).
pub async fn check(
    pool: &PgPool,
    alarms: &Alarms,
    warn_days: u32,
) -> Result<(usize, usize), store::StoreError> {
    let wanted = wanted(pool, warn_days).await?;
    let mut by_status: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for w in wanted.values() {
        let kind = w.details["kind"].as_str().unwrap_or("calibration");
        let status = if w.severity == "major" {
            "expired"
        } else {
            "due_soon"
        };
        *by_status.entry((kind, status)).or_default() += 1.0;
    }
    for kind in ["calibration", "certificate"] {
        for status in ["due_soon", "expired"] {
            let n = by_status.get(&(kind, status)).copied().unwrap_or(0.0);
            metrics::gauge!(m::HUB_CALIBRATION_DUE, "kind" => kind, "status" => status).set(n);
        }
    }
    type Active = (i64, String, String, String);
    let active: Vec<Active> = sqlx::query_as(
        "SELECT r.rule_id, r.twin_id, r.metric, a.severity
           FROM alarms a JOIN alarm_rules r USING (rule_id)
          WHERE r.kind = 'calibration' AND a.cleared_at IS NULL",
    )
    .fetch_all(pool)
    .await?;
    let mut raised_now = BTreeMap::new();
    let mut cleared = 0;
    for (rule, twin, metric, sev) in active {
        let key = (twin, metric);
        match wanted.get(&key) {
            Some(w) if w.severity == sev => {
                raised_now.insert(key, ());
            }
            _ => {
                let mut tx = pool.begin().await?;
                let why = match wanted.get(&key) {
                    Some(w) => json!({"reason": "severity changed", "to": w.severity}),
                    None => json!({"reason": "no longer due"}),
                };
                let a = store::clear(&mut tx, rule, why, (ActorKind::System, "calibration"), None)
                    .await?;
                tx.commit().await?;
                if let Some(a) = a {
                    alarms.announce("cleared", &a);
                    cleared += 1;
                }
            }
        }
    }
    let mut raised = 0;
    for (key, w) in &wanted {
        if raised_now.contains_key(key) {
            continue;
        }
        let rule = rule_of(pool, &key.0, &key.1).await?;
        let r = store::Raising {
            rule_id: rule,
            twin_id: &key.0,
            metric: &key.1,
            severity: w.severity,
        };
        if let Some(a) = store::raise(pool, &r, w.details.clone()).await? {
            alarms.announce("raised", &a);
            raised += 1;
        }
    }
    Ok((raised, cleared))
}

/// Looks every `check_interval_s` and after each change, until `stop`.
pub async fn run(
    pool: PgPool,
    alarms: Arc<Alarms>,
    cfg: CalibrationConfig,
    mut stop: qi_common::shutdown::Stop,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.check_interval_s.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = super::push::notified() => {}
            () = stop.wait() => return,
        }
        match check(&pool, &alarms, cfg.warn_days).await {
            Ok((raised, cleared)) => {
                metrics::counter!(m::HUB_CALIBRATION_CHECKS_TOTAL, "result" => "ok").increment(1);
                if raised + cleared > 0 {
                    tracing::info!(raised, cleared, "calibration and certificate expiry alarms");
                }
            }
            Err(e) => {
                metrics::counter!(m::HUB_CALIBRATION_CHECKS_TOTAL, "result" => "error")
                    .increment(1);
                tracing::warn!(error = %e, "calibration watch: look failed; next one in check_interval_s");
            }
        }
    }
}
