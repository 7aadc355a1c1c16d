//! Inspections of a sample (visual inspection, IEC 61215-2 MQT 01): who
//! looked, when, what they found. Records are never changed: a correction
//! is a new inspection. Each inspection's defect counts become sample
//! observations (`major_visual_defects`, `minor_visual_defects`), the
//! values a template's `source = { observation = ... }` reads.

use super::{LabError, MAX_FINDINGS, check_text};
use crate::twins::Actor;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

/// The observation names an inspection records.
pub const MAJOR_DEFECTS: &str = "major_visual_defects";
pub const MINOR_DEFECTS: &str = "minor_visual_defects";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// When the sample arrives, before any test.
    Intake,
    /// Between stresses.
    Intermediate,
    /// After the last test.
    Final,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Intake => "intake",
            Stage::Intermediate => "intermediate",
            Stage::Final => "final",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A major visual defect (MQT 01 list): fails the gate.
    Major,
    Minor,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// What was seen ("broken cell", "delamination", "bubble").
    pub defect: String,
    pub severity: Severity,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInspection {
    pub stage: Stage,
    /// Empty: nothing found (the inspection still counts, with 0 defects).
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// When the sample was looked at; default now. Not in the future.
    pub performed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub notes: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Inspection {
    pub inspection_id: i64,
    pub sample_id: String,
    pub stage: String,
    pub performed_at: DateTime<Utc>,
    pub inspector: String,
    pub findings: sqlx::types::Json<Vec<Finding>>,
    pub major_defects: i32,
    pub minor_defects: i32,
    pub notes: String,
    pub recorded_at: DateTime<Utc>,
}

const COLUMNS: &str = "inspection_id, sample_id, stage, performed_at, inspector, findings, major_defects, minor_defects, notes, recorded_at";

pub fn target(id: i64) -> String {
    format!("inspection:{id}")
}

/// The sample twin must exist, be a sample and not be deleted.
pub async fn require_sample(conn: &mut PgConnection, sample_id: &str) -> Result<(), LabError> {
    let kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM twins WHERE twin_id = $1 AND deleted_at IS NULL")
            .bind(sample_id)
            .fetch_optional(conn)
            .await?;
    match kind.as_deref() {
        Some("sample") => Ok(()),
        // Not found as a sample: the id names something else.
        Some(k) => Err(LabError::NotFound(format!(
            "no sample {sample_id:?}: that twin is a {k}"
        ))),
        None => Err(LabError::NotFound(format!(
            "no sample {sample_id:?}; register it with its service request first"
        ))),
    }
}

pub async fn create(
    conn: &mut PgConnection,
    sample_id: &str,
    n: NewInspection,
    by: &Actor<'_>,
) -> Result<Inspection, LabError> {
    require_sample(conn, sample_id).await?;
    check_text("notes", &n.notes, false)?;
    if n.findings.len() > MAX_FINDINGS {
        return Err(LabError::Invalid(format!(
            "an inspection holds at most {MAX_FINDINGS} findings; got {}",
            n.findings.len()
        )));
    }
    for (i, f) in n.findings.iter().enumerate() {
        check_text(&format!("findings[{i}].defect"), &f.defect, true)?;
        check_text(&format!("findings[{i}].location"), &f.location, false)?;
        check_text(&format!("findings[{i}].note"), &f.note, false)?;
    }
    let now = Utc::now();
    let performed_at = n.performed_at.unwrap_or(now);
    // A little slack for clocks; an inspection in the future is a typo.
    if performed_at > now + chrono::Duration::minutes(5) {
        return Err(LabError::Invalid(format!(
            "`performed_at` {performed_at} is in the future"
        )));
    }
    let major = n
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Major)
        .count() as i32;
    let minor = n.findings.len() as i32 - major;
    let i: Inspection = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO inspections (sample_id, stage, performed_at, inspector, findings, major_defects, minor_defects, notes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    )))
    .bind(sample_id)
    .bind(n.stage.as_str())
    .bind(performed_at)
    .bind(&by.principal.id)
    .bind(sqlx::types::Json(&n.findings))
    .bind(major)
    .bind(minor)
    .bind(&n.notes)
    .fetch_one(&mut *conn)
    .await?;
    for (name, value) in [(MAJOR_DEFECTS, major), (MINOR_DEFECTS, minor)] {
        sqlx::query(
            "INSERT INTO sample_observations (sample_id, name, value, unit, observed_at, source, recorded_by)
             VALUES ($1, $2, $3, '1', $4, $5, $6)",
        )
        .bind(sample_id)
        .bind(name)
        .bind(f64::from(value))
        .bind(performed_at)
        .bind(target(i.inspection_id))
        .bind(&by.principal.id)
        .execute(&mut *conn)
        .await?;
    }
    crate::audit::append_in(
        conn,
        by.entry(
            "inspection.create",
            target(i.inspection_id),
            None,
            Some(json!(i)),
        ),
    )
    .await?;
    Ok(i)
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Inspection>, LabError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM inspections WHERE inspection_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn of_sample(pool: &PgPool, sample_id: &str) -> Result<Vec<Inspection>, LabError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM inspections WHERE sample_id = $1 ORDER BY performed_at, inspection_id"
    )))
    .bind(sample_id)
    .fetch_all(pool)
    .await?)
}
