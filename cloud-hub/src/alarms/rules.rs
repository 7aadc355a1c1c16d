//! Alarm rules: what they say, how a request's rule is checked, and their
//! table (`alarm_rules`, migration 0009).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

/// Severities, most urgent first (ThingsBoard's).
pub const SEVERITIES: [&str; 5] = ["critical", "major", "minor", "warning", "info"];

/// A rule's condition, from its `kind` and `params`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Raised when the value stays beyond `threshold` for `for_s` (reading
    /// times); cleared when it comes back past `threshold` by `hysteresis`.
    Threshold {
        above: bool,
        threshold: f64,
        hysteresis: f64,
        for_s: f64,
    },
    /// Raised when the value changes faster than `per_s` (units per second,
    /// either way) between two readings; cleared at the next slower change.
    RateOfChange { per_s: f64 },
    /// Raised when no reading arrived for `stale_s`; cleared by the next one.
    Stale { stale_s: f64 },
    /// Raised when the value is anomalous against the `window` readings
    /// before it (the analytics detectors); cleared by a normal one.
    Anomaly {
        detector: Detector,
        window: usize,
        z: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// `analytics::math::rolling_zscore`.
    Zscore,
    /// `analytics::math::ewma` (alpha 0.3, warm-up half the window).
    Ewma,
}

/// Largest anomaly window (readings held in memory per rule).
pub const MAX_WINDOW: usize = 1000;

/// A rule as stored and served.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Rule {
    pub rule_id: i64,
    pub name: String,
    pub twin_id: String,
    pub metric: String,
    pub kind: String,
    pub params: Value,
    pub severity: String,
    pub enabled: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A rule as a request states it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub name: String,
    pub twin_id: String,
    pub metric: String,
    pub kind: String,
    #[serde(default = "empty_object")]
    pub params: Value,
    pub severity: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn empty_object() -> Value {
    json!({})
}
fn yes() -> bool {
    true
}

/// Parses a rule's condition; Err says what to change.
pub fn condition(kind: &str, params: &Value) -> Result<Condition, String> {
    let obj = params
        .as_object()
        .ok_or_else(|| "`params` must be an object".to_string())?;
    let allowed: &[&str] = match kind {
        "above" | "below" => &["threshold", "hysteresis", "for_s"],
        "rate_of_change" => &["per_s"],
        "stale" => &["stale_s"],
        "anomaly" => &["detector", "window", "z"],
        other => {
            return Err(format!(
                "`kind` must be above, below, rate_of_change, stale or anomaly; got {other:?}"
            ));
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "`params.{k}` is not a parameter of kind {kind}; it takes {allowed:?}"
        ));
    }
    let num = |k: &str, default: Option<f64>| -> Result<f64, String> {
        match obj.get(k) {
            None => default.ok_or_else(|| format!("kind {kind} needs `params.{k}`")),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("`params.{k}` must be a finite number")),
        }
    };
    let non_negative = |k: &str, v: f64| {
        if v < 0.0 {
            Err(format!("`params.{k}` must be >= 0"))
        } else {
            Ok(v)
        }
    };
    let positive = |k: &str, v: f64| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err(format!("`params.{k}` must be > 0"))
        }
    };
    Ok(match kind {
        "above" | "below" => Condition::Threshold {
            above: kind == "above",
            threshold: num("threshold", None)?,
            hysteresis: non_negative("hysteresis", num("hysteresis", Some(0.0))?)?,
            for_s: non_negative("for_s", num("for_s", Some(0.0))?)?,
        },
        "rate_of_change" => Condition::RateOfChange {
            per_s: positive("per_s", num("per_s", None)?)?,
        },
        "stale" => Condition::Stale {
            stale_s: positive("stale_s", num("stale_s", None)?)?,
        },
        _ => {
            let detector = match obj.get("detector") {
                None => Detector::Zscore,
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|_| "`params.detector` must be zscore or ewma".to_string())?,
            };
            let window = num("window", Some(30.0))?;
            if window.fract() != 0.0 || !(5.0..=MAX_WINDOW as f64).contains(&window) {
                return Err(format!(
                    "`params.window` must be an integer from 5 to {MAX_WINDOW}"
                ));
            }
            Condition::Anomaly {
                detector,
                window: window as usize,
                z: positive("z", num("z", Some(3.0))?)?,
            }
        }
    })
}

/// Checks a request's rule (fields other than the twin's existence).
pub fn check(r: &RuleInput) -> Result<Condition, String> {
    // Characters, not bytes: what the OpenAPI document's maxLength counts.
    let printable = |v: &str| {
        !v.is_empty()
            && v.chars().count() <= qi_proto::limits::MAX_ID_LEN
            && !v.chars().any(char::is_control)
    };
    for (field, v) in [
        ("name", &r.name),
        ("twin_id", &r.twin_id),
        ("metric", &r.metric),
    ] {
        if !printable(v) {
            return Err(format!(
                "`{field}` must be 1 to {} printable characters",
                qi_proto::limits::MAX_ID_LEN
            ));
        }
    }
    if !SEVERITIES.contains(&r.severity.as_str()) {
        return Err(format!("`severity` must be one of {SEVERITIES:?}"));
    }
    condition(&r.kind, &r.params)
}

const COLUMNS: &str = "rule_id, name, twin_id, metric, kind, params, severity, enabled, version, created_at, updated_at";

/// Rules not deleted, optionally of one twin and within sites.
pub async fn list(
    pool: &PgPool,
    twin: Option<&str>,
    sites: Option<&[String]>,
) -> Result<Vec<Rule>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alarm_rules
         WHERE deleted_at IS NULL AND ($1::text IS NULL OR twin_id = $1)
           AND ($2::text[] IS NULL OR twin_site(twin_id) = ANY($2))
         ORDER BY rule_id"
    )))
    .bind(twin)
    .bind(sites)
    .fetch_all(pool)
    .await
}

/// Every enabled rule the evaluator runs: not those of kind `calibration`
/// (the calibration watch raises and clears their alarms, migration 0015).
pub async fn enabled(pool: &PgPool) -> Result<Vec<Rule>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alarm_rules WHERE deleted_at IS NULL AND enabled
            AND kind <> 'calibration' ORDER BY rule_id"
    )))
    .fetch_all(pool)
    .await
}

/// One rule, locked for a change when `lock`.
pub async fn get(
    conn: &mut PgConnection,
    id: i64,
    lock: bool,
) -> Result<Option<Rule>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alarm_rules WHERE rule_id = $1 AND deleted_at IS NULL{lock}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn create(conn: &mut PgConnection, r: &RuleInput) -> Result<Rule, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO alarm_rules (name, twin_id, metric, kind, params, severity, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(&r.name)
    .bind(&r.twin_id)
    .bind(&r.metric)
    .bind(&r.kind)
    .bind(&r.params)
    .bind(&r.severity)
    .bind(r.enabled)
    .fetch_one(conn)
    .await
}

pub async fn update(conn: &mut PgConnection, id: i64, r: &RuleInput) -> Result<Rule, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE alarm_rules SET name = $2, twin_id = $3, metric = $4, kind = $5, params = $6,
                severity = $7, enabled = $8, version = version + 1, updated_at = now()
         WHERE rule_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(&r.name)
    .bind(&r.twin_id)
    .bind(&r.metric)
    .bind(&r.kind)
    .bind(&r.params)
    .bind(&r.severity)
    .bind(r.enabled)
    .fetch_one(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE alarm_rules SET deleted_at = now(), enabled = false WHERE rule_id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_checked_per_kind() {
        assert_eq!(
            condition("above", &json!({"threshold": 5, "hysteresis": 1})),
            Ok(Condition::Threshold {
                above: true,
                threshold: 5.0,
                hysteresis: 1.0,
                for_s: 0.0
            })
        );
        assert!(condition("above", &json!({})).is_err());
        assert!(condition("below", &json!({"threshold": 1, "hysteresis": -1})).is_err());
        assert!(condition("above", &json!({"threshold": 1, "per_s": 2})).is_err());
        assert!(condition("rate_of_change", &json!({"per_s": 0})).is_err());
        assert!(condition("stale", &json!({"stale_s": 10})).is_ok());
        assert!(condition("anomaly", &json!({"window": 4})).is_err());
        assert!(condition("anomaly", &json!({"detector": "ewma", "window": 20})).is_ok());
        assert!(condition("anomaly", &json!({"detector": "magic"})).is_err());
        assert!(condition("sometimes", &json!({})).is_err());
    }
}
