//! Calibration records: recording one for an instrument twin (checked,
//! audited in its transaction), an instrument's calibrations, the one that
//! stands now or stood at a time, and the status the twin shows.

use super::{CalibrationError, MAX_VALUES, Status};
use crate::audit::{NewEntry, Origin};
use crate::identity::Principal;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

/// A measured value as a calibration records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// Expanded uncertainty, in `unit`.
    pub expanded_uncertainty: f64,
    /// Coverage factor k of the expanded uncertainty.
    #[serde(default = "two")]
    pub coverage_factor: f64,
}

fn two() -> f64 {
    2.0
}

/// A condition of the calibration (ambient temperature, humidity, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// What `POST /api/v1/twins/{id}/calibrations` asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCalibration {
    pub calibrated_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// The laboratory that calibrated; absent: ours (`certificates.lab_name`).
    #[serde(default)]
    pub laboratory: Option<String>,
    /// Calibrated by another laboratory: `external_certificate` names its
    /// certificate, and this hub issues none for it.
    #[serde(default)]
    pub external: bool,
    #[serde(default)]
    pub external_certificate: Option<String>,
    #[serde(default)]
    pub method: String,
    pub measured: Vec<Measured>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A calibration as stored and served.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Calibration {
    pub calibration_id: i64,
    pub twin_id: String,
    pub gateway_id: String,
    pub device_id: String,
    pub calibrated_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub laboratory: String,
    pub external: bool,
    pub external_certificate: Option<String>,
    pub measured: Value,
    pub conditions: Value,
    pub method: String,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
    pub certificate_id: Option<String>,
}

pub const COLUMNS: &str = "calibration_id, twin_id, gateway_id, device_id, calibrated_at, due_at, \
    laboratory, external, external_certificate, measured, conditions, method, recorded_by, \
    recorded_at, certificate_id";

impl Calibration {
    pub fn measured(&self) -> Vec<Measured> {
        serde_json::from_value(self.measured.clone()).unwrap_or_default()
    }
    pub fn conditions(&self) -> Vec<Condition> {
        serde_json::from_value(self.conditions.clone()).unwrap_or_default()
    }
}

/// At most `max` characters (as the API's schema counts them: the hub and
/// schema-driven clients agree on what fits), none of them control characters.
fn fits(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

fn text(what: &str, s: &str, required: bool) -> Result<(), CalibrationError> {
    if !fits(s, qi_proto::limits::MAX_TEXT_LEN) {
        return Err(CalibrationError::Invalid(format!(
            "`{what}` must be at most {} characters without control characters",
            qi_proto::limits::MAX_TEXT_LEN
        )));
    }
    if required && s.trim().is_empty() {
        return Err(CalibrationError::Refused(format!(
            "`{what}` must be given (not blank)"
        )));
    }
    Ok(())
}

fn number(what: &str, v: f64, positive: bool) -> Result<(), CalibrationError> {
    let ok = v.is_finite() && (!positive || v >= 0.0);
    if ok {
        Ok(())
    } else {
        Err(CalibrationError::Invalid(format!(
            "`{what}` must be a finite number{}",
            if positive { " >= 0" } else { "" }
        )))
    }
}

fn quantity(what: &str, name: &str, unit: &str) -> Result<(), CalibrationError> {
    if name.is_empty() || !fits(name, qi_proto::limits::MAX_ID_LEN) {
        return Err(CalibrationError::Invalid(format!(
            "`{what}.name` must be 1 to {} characters without control characters",
            qi_proto::limits::MAX_ID_LEN
        )));
    }
    if unit.is_empty() || !fits(unit, qi_proto::limits::MAX_UNIT_LEN) {
        return Err(CalibrationError::Invalid(format!(
            "`{what}.unit` of {name:?} must be 1 to {} characters (W, V, A, Cel, ...)",
            qi_proto::limits::MAX_UNIT_LEN
        )));
    }
    Ok(())
}

/// Why a calibration cannot be recorded as asked, if it cannot.
pub fn check(c: &NewCalibration, now: DateTime<Utc>) -> Result<(), CalibrationError> {
    if c.calibrated_at > now + chrono::Duration::minutes(5) {
        return Err(CalibrationError::Refused(
            "`calibrated_at` is in the future: record a calibration once it is done".into(),
        ));
    }
    if c.due_at <= c.calibrated_at {
        return Err(CalibrationError::Refused(
            "`due_at` must be after `calibrated_at`".into(),
        ));
    }
    if let Some(l) = &c.laboratory {
        text("laboratory", l, true)?;
    }
    text("method", &c.method, false)?;
    match (&c.external, &c.external_certificate) {
        (true, Some(r)) => text("external_certificate", r, true)?,
        (true, None) => {
            return Err(CalibrationError::Refused(
                "an external calibration names the external laboratory's certificate \
                 (`external_certificate`) and the laboratory (`laboratory`)"
                    .into(),
            ));
        }
        (false, Some(_)) => {
            return Err(CalibrationError::Refused(
                "`external_certificate` is for calibrations by another laboratory \
                 (`external`: true)"
                    .into(),
            ));
        }
        (false, None) => {}
    }
    if c.external && c.laboratory.is_none() {
        return Err(CalibrationError::Refused(
            "an external calibration names its `laboratory`".into(),
        ));
    }
    if c.measured.is_empty() || c.measured.len() > MAX_VALUES {
        return Err(CalibrationError::Invalid(format!(
            "`measured` lists 1 to {MAX_VALUES} values"
        )));
    }
    if c.conditions.len() > MAX_VALUES {
        return Err(CalibrationError::Invalid(format!(
            "`conditions` lists at most {MAX_VALUES} values"
        )));
    }
    for m in &c.measured {
        quantity("measured", &m.name, &m.unit)?;
        number("measured.value", m.value, false)?;
        number(
            "measured.expanded_uncertainty",
            m.expanded_uncertainty,
            true,
        )?;
        if !(m.coverage_factor.is_finite() && m.coverage_factor > 0.0) {
            return Err(CalibrationError::Invalid(
                "`measured.coverage_factor` must be a finite number > 0 (k, usually 2)".into(),
            ));
        }
    }
    for k in &c.conditions {
        quantity("conditions", &k.name, &k.unit)?;
        number("conditions.value", k.value, false)?;
    }
    Ok(())
}

/// The instrument twin's gateway and device; refused unless it is a live
/// instrument twin bound to a device.
async fn instrument(
    conn: &mut PgConnection,
    twin: &str,
) -> Result<(String, String), CalibrationError> {
    let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT kind, gateway_id, device_id FROM twins WHERE twin_id = $1 AND deleted_at IS NULL",
    )
    .bind(twin)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Err(CalibrationError::NotFound(format!("no twin {twin:?}"))),
        Some((kind, Some(gw), Some(dev))) if kind == "instrument" => Ok((gw, dev)),
        Some((kind, _, _)) => Err(CalibrationError::Refused(format!(
            "{twin} is a {kind} twin not bound to a device: calibrations are of instrument \
             twins bound to a gateway's device (`instrument:<gateway>:<device>`)"
        ))),
    }
}

/// Records a calibration (audited); the instrument's alarms and its
/// gateway hear of it once committed.
pub async fn record(
    pool: &PgPool,
    twin: &str,
    c: &NewCalibration,
    our_lab: &str,
    who: &Principal,
    origin: &Origin,
) -> Result<Calibration, CalibrationError> {
    let mut tx = pool.begin().await?;
    let (gw, dev) = instrument(&mut tx, twin).await?;
    check(c, Utc::now())?;
    let lab = match &c.laboratory {
        Some(l) => l.clone(),
        None if our_lab.is_empty() => "this laboratory".into(),
        None => our_lab.to_string(),
    };
    let stored: Calibration = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO calibrations (twin_id, gateway_id, device_id, calibrated_at, due_at,
            laboratory, external, external_certificate, measured, conditions, method, recorded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}"
    )))
    .bind(twin)
    .bind(&gw)
    .bind(&dev)
    .bind(c.calibrated_at)
    .bind(c.due_at)
    .bind(&lab)
    .bind(c.external)
    .bind(&c.external_certificate)
    .bind(json!(c.measured))
    .bind(json!(c.conditions))
    .bind(&c.method)
    .bind(&who.id)
    .fetch_one(&mut *tx)
    .await?;
    let entry = NewEntry::new(
        who.kind,
        &who.id,
        "calibration.record",
        crate::twins::audit_target(twin),
    )
    .origin(origin)
    .after(json!(stored));
    crate::audit::append_in(&mut tx, entry).await?;
    tx.commit().await?;
    metrics::counter!(crate::metric_names::HUB_CALIBRATIONS_RECORDED_TOTAL).increment(1);
    tracing::info!(twin, calibration = stored.calibration_id, due_at = %stored.due_at,
        by = %who.id, "calibration recorded");
    super::push::changed();
    Ok(stored)
}

/// An instrument's calibrations, latest first.
pub async fn list(
    pool: &PgPool,
    twin: &str,
    limit: i64,
) -> Result<Vec<Calibration>, CalibrationError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT kind FROM twins WHERE twin_id = $1")
        .bind(twin)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(CalibrationError::NotFound(format!("no twin {twin:?}")));
    }
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM calibrations WHERE twin_id = $1
          ORDER BY calibrated_at DESC, calibration_id DESC LIMIT $2"
    )))
    .bind(twin)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<Calibration>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM calibrations WHERE calibration_id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The calibration of a gateway's device that stood at `at`: the latest
/// done by then (None: none was).
pub async fn standing_at(
    conn: &mut PgConnection,
    gateway: &str,
    device: &str,
    at: DateTime<Utc>,
) -> Result<Option<Calibration>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM calibrations
          WHERE gateway_id = $1 AND device_id = $2 AND calibrated_at <= $3
          ORDER BY calibrated_at DESC, calibration_id DESC LIMIT 1"
    )))
    .bind(gateway)
    .bind(device)
    .bind(at)
    .fetch_optional(conn)
    .await
}

/// What a twin's state shows as `calibration`: an instrument's status,
/// null for other kinds.
pub async fn of_twin(
    pool: &PgPool,
    twin: &str,
    kind: &str,
    warn_days: u32,
) -> Result<Value, sqlx::Error> {
    if kind == "instrument" {
        twin_status(pool, twin, warn_days).await
    } else {
        Ok(Value::Null)
    }
}

/// What an instrument twin's state shows of its calibration: status, due
/// date, the record and its certificate.
pub async fn twin_status(pool: &PgPool, twin: &str, warn_days: u32) -> Result<Value, sqlx::Error> {
    let c: Option<(i64, DateTime<Utc>, Option<String>)> = sqlx::query_as(
        "SELECT calibration_id, due_at, certificate_id FROM calibrations WHERE twin_id = $1
          ORDER BY calibrated_at DESC, calibration_id DESC LIMIT 1",
    )
    .bind(twin)
    .fetch_optional(pool)
    .await?;
    Ok(match c {
        None => json!({"status": Status::None, "due_at": null, "calibration_id": null,
                       "certificate_id": null}),
        Some((id, due, cert)) => json!({
            "status": Status::of(due, Utc::now(), warn_days),
            "due_at": due,
            "calibration_id": id,
            "certificate_id": cert,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(now: DateTime<Utc>) -> NewCalibration {
        NewCalibration {
            calibrated_at: now - chrono::Duration::days(1),
            due_at: now + chrono::Duration::days(364),
            laboratory: None,
            external: false,
            external_certificate: None,
            method: "DIN EN 60904-2".into(),
            measured: vec![Measured {
                name: "Isc".into(),
                value: 9.81,
                unit: "A".into(),
                expanded_uncertainty: 0.05,
                coverage_factor: 2.0,
            }],
            conditions: vec![Condition {
                name: "ambient temperature".into(),
                value: 23.1,
                unit: "Cel".into(),
            }],
        }
    }

    #[test]
    fn a_calibration_is_checked_before_it_is_stored() {
        let now = Utc::now();
        assert!(check(&good(now), now).is_ok());
        let refused = |f: &dyn Fn(&mut NewCalibration), what: &str| {
            let mut c = good(now);
            f(&mut c);
            let e = check(&c, now).expect_err(what).to_string();
            assert!(e.contains(what), "{e}");
        };
        refused(&|c| c.due_at = c.calibrated_at, "`due_at` must be after");
        refused(
            &|c| c.calibrated_at = now + chrono::Duration::days(2),
            "in the future",
        );
        refused(&|c| c.measured.clear(), "`measured` lists 1 to");
        refused(&|c| c.measured[0].value = f64::NAN, "finite");
        refused(
            &|c| c.measured[0].expanded_uncertainty = -1.0,
            "expanded_uncertainty",
        );
        refused(&|c| c.measured[0].coverage_factor = 0.0, "coverage_factor");
        refused(&|c| c.measured[0].unit = String::new(), "unit");
        refused(&|c| c.external = true, "external laboratory's certificate");
        refused(
            &|c| c.external_certificate = Some("X-1".into()),
            "`external`: true",
        );
        refused(&|c| c.method = "a\u{1b}[31m".into(), "`method`");
    }
}
