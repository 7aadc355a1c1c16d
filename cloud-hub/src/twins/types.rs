//! Twin types (models): the attributes a twin of the type must carry and
//! the metrics an instrument of the type reports. Types made from firmware
//! profiles (`source = 'profile'`, named `profile:<id>`) follow what the
//! gateways report and are not edited here.

use super::model::{self, Kind};
use super::{Actor, TwinError, unique_conflict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

const COLUMNS: &str = "type_id, kind, name, attributes, metrics, manufacturer, device_type, \
     description, source, version, created_at, updated_at";

/// Most metrics a type declares.
pub const MAX_METRICS: usize = 1000;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TwinType {
    pub type_id: String,
    pub kind: String,
    pub name: String,
    pub attributes: Value,
    pub metrics: Value,
    pub manufacturer: String,
    pub device_type: String,
    pub description: String,
    pub source: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TwinType {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// One metric of a type.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub name: String,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub writable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<TwinType>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM twin_types WHERE type_id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A page of types by id, after `after`.
pub async fn list(
    pool: &PgPool,
    kind: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<TwinType>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM twin_types
         WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR type_id > $2)
         ORDER BY type_id LIMIT $3"
    )))
    .bind(kind)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewType {
    pub type_id: String,
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "empty_object")]
    pub attributes: Value,
    #[serde(default = "empty_array")]
    pub metrics: Value,
    #[serde(default)]
    pub manufacturer: String,
    #[serde(default)]
    pub device_type: String,
    #[serde(default)]
    pub description: String,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}
fn empty_array() -> Value {
    Value::Array(Vec::new())
}

fn invalid(msg: impl Into<String>) -> TwinError {
    TwinError::Invalid(model::Invalid::Field(msg.into()))
}

fn check(t: &NewType) -> Result<(), TwinError> {
    model::check_id("type_id", &t.type_id)?;
    if t.type_id.starts_with("profile:") {
        return Err(invalid(
            "type ids starting with `profile:` are made from firmware profiles the gateways report",
        ));
    }
    if Kind::parse(&t.kind).is_none() {
        return Err(invalid(format!(
            "unknown kind {:?}",
            t.kind.chars().take(40).collect::<String>()
        )));
    }
    for (what, s) in [
        ("name", &t.name),
        ("manufacturer", &t.manufacturer),
        ("device_type", &t.device_type),
        ("description", &t.description),
    ] {
        model::check_text(what, s)?;
    }
    model::parse_specs(&t.attributes)?;
    let metrics: Vec<MetricSpec> = serde_json::from_value(t.metrics.clone()).map_err(|e| {
        invalid(format!(
            "`metrics` must be a list of {{\"name\", \"unit\", \"description\", \"writable\", \"min\", \"max\"}}: {e}"
        ))
    })?;
    if metrics.len() > MAX_METRICS {
        return Err(invalid(format!("at most {MAX_METRICS} metrics per type")));
    }
    let mut seen = std::collections::HashSet::new();
    for m in &metrics {
        if !qi_proto::limits::valid_id(&m.name) || !seen.insert(m.name.as_str()) {
            return Err(invalid(format!(
                "metric names must be unique, 1-{} printable characters; got {:?}",
                qi_proto::limits::MAX_ID_LEN,
                m.name.chars().take(40).collect::<String>()
            )));
        }
        model::check_text("metric unit", &m.unit)?;
        model::check_text("metric description", &m.description)?;
        if let (Some(a), Some(b)) = (m.min, m.max)
            && a > b
        {
            return Err(invalid(format!("metric {:?}: min > max", m.name)));
        }
    }
    Ok(())
}

pub async fn create(
    conn: &mut PgConnection,
    t: NewType,
    by: &Actor<'_>,
) -> Result<TwinType, TwinError> {
    check(&t)?;
    let row: TwinType = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO twin_types (type_id, kind, name, attributes, metrics, manufacturer, device_type, description)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    )))
    .bind(&t.type_id)
    .bind(&t.kind)
    .bind(&t.name)
    .bind(&t.attributes)
    .bind(&t.metrics)
    .bind(&t.manufacturer)
    .bind(&t.device_type)
    .bind(&t.description)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| unique_conflict(e, |_| format!("type {:?} exists already", t.type_id)))?;
    crate::audit::append_in(
        conn,
        by.entry(
            "twin_type.create",
            format!("twin_type:{}", row.type_id),
            None,
            Some(json!(row)),
        ),
    )
    .await?;
    Ok(row)
}

/// Replaces a user type's definition (kind and id stay). Twins of the type
/// keep their attributes; new writes to them are checked against the new
/// definition.
pub async fn replace(
    conn: &mut PgConnection,
    t: NewType,
    expected_version: Option<i64>,
    by: &Actor<'_>,
) -> Result<TwinType, TwinError> {
    // The definition's own checks first: an invalid one is refused as such
    // whatever version it names.
    check(&t)?;
    let before = locked(conn, &t.type_id).await?;
    if let Some(v) = expected_version
        && v != before.version
    {
        return Err(TwinError::Stale {
            what: format!("type {:?}", t.type_id),
            current: before.version,
            expected: v,
        });
    }
    if t.kind != before.kind {
        return Err(TwinError::Conflict(format!(
            "type {:?} is for {}s; a type's kind does not change",
            t.type_id, before.kind
        )));
    }
    let row: TwinType = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE twin_types SET name = $2, attributes = $3, metrics = $4, manufacturer = $5,
                device_type = $6, description = $7, version = version + 1, updated_at = now()
         WHERE type_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(&t.type_id)
    .bind(&t.name)
    .bind(&t.attributes)
    .bind(&t.metrics)
    .bind(&t.manufacturer)
    .bind(&t.device_type)
    .bind(&t.description)
    .fetch_one(&mut *conn)
    .await?;
    crate::audit::append_in(
        conn,
        by.entry(
            "twin_type.update",
            format!("twin_type:{}", row.type_id),
            Some(json!(before)),
            Some(json!(row)),
        ),
    )
    .await?;
    Ok(row)
}

/// A user type no live twin uses.
pub async fn delete(conn: &mut PgConnection, id: &str, by: &Actor<'_>) -> Result<(), TwinError> {
    let before = locked(conn, id).await?;
    let used: i64 = sqlx::query_scalar("SELECT count(*) FROM twins WHERE type_id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    if used > 0 {
        return Err(TwinError::Conflict(format!(
            "{used} twin(s) (deleted ones included: their history names it) use type {id:?}"
        )));
    }
    sqlx::query("DELETE FROM twin_types WHERE type_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    crate::audit::append_in(
        conn,
        by.entry(
            "twin_type.delete",
            format!("twin_type:{id}"),
            Some(json!(before)),
            None,
        ),
    )
    .await?;
    Ok(())
}

/// A user type, locked for a change (profile types are not edited here).
async fn locked(conn: &mut PgConnection, id: &str) -> Result<TwinType, TwinError> {
    let t: Option<TwinType> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM twin_types WHERE type_id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let t = t.ok_or_else(|| TwinError::NotFound(format!("no twin type {id:?}")))?;
    if t.source == "profile" {
        return Err(TwinError::Conflict(format!(
            "type {id:?} is made from a firmware profile; change the profile on the gateway"
        )));
    }
    Ok(t)
}
