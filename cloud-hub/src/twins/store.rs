//! Twins: create, read, change and soft-delete, each in the caller's
//! transaction together with its audit entry.

use super::model::{self, Kind};
use super::{Actor, TwinError, audit_target, unique_conflict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;

/// The columns every read returns, in `Twin`'s order.
pub const COLUMNS: &str = "twin_id, kind, type_id, name, serial_number, attributes, metadata, \
     latitude, longitude, gateway_id, device_id, discovered, version, created_at, updated_at, deleted_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Twin {
    pub twin_id: String,
    pub kind: String,
    pub type_id: Option<String>,
    pub name: String,
    pub serial_number: Option<String>,
    pub attributes: Value,
    pub metadata: Value,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub gateway_id: Option<String>,
    pub device_id: Option<String>,
    pub discovered: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Twin {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// What the audit trail keeps of it (before / after a change).
    fn audited(&self) -> Value {
        json!({
            "kind": self.kind, "type_id": self.type_id, "name": self.name,
            "serial_number": self.serial_number, "attributes": self.attributes,
            "metadata": self.metadata, "latitude": self.latitude, "longitude": self.longitude,
            "gateway_id": self.gateway_id, "device_id": self.device_id,
            "discovered": self.discovered, "version": self.version,
        })
    }
}

pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<Twin>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM twins WHERE twin_id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A live (not deleted) twin, locked for a change.
async fn get_for_update(conn: &mut PgConnection, id: &str) -> Result<Twin, TwinError> {
    let t: Option<Twin> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM twins WHERE twin_id = $1 AND deleted_at IS NULL FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    t.ok_or_else(|| TwinError::NotFound(format!("no twin {id:?}")))
}

/// A new twin as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTwin {
    pub twin_id: String,
    pub kind: String,
    pub type_id: Option<String>,
    #[serde(default)]
    pub name: String,
    pub serial_number: Option<String>,
    #[serde(default = "empty_object")]
    pub attributes: Value,
    #[serde(default = "empty_object")]
    pub metadata: Value,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub gateway_id: Option<String>,
    pub device_id: Option<String>,
    /// Placed at once: the twin that contains it.
    pub parent: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

fn parse_kind(k: &str) -> Result<Kind, TwinError> {
    Kind::parse(k).ok_or_else(|| {
        TwinError::Invalid(model::Invalid::Field(format!(
            "unknown kind {:?}; kinds are site, area, bench, gateway, instrument, sample",
            k.chars().take(40).collect::<String>()
        )))
    })
}

/// Everything a twin's fields must satisfy, new or changed. A rule that
/// depends on what is stored (the twin's kind on a change, its type's
/// definition) is a conflict (409); one the request breaks on its own is
/// invalid (422).
async fn check_fields(
    conn: &mut PgConnection,
    t: &Twin,
    kind: Kind,
    kind_is_stored: bool,
) -> Result<(), TwinError> {
    let by_kind = |msg: String| {
        if kind_is_stored {
            TwinError::Conflict(format!(
                "twin {:?} is a {}: {msg}",
                t.twin_id,
                kind.as_str()
            ))
        } else {
            invalid(msg)
        }
    };
    model::check_text("name", &t.name)?;
    if let Some(s) = &t.serial_number {
        model::check_text("serial_number", s)?;
        if s.is_empty() {
            return Err(invalid("`serial_number` must not be empty"));
        }
    }
    if kind == Kind::Sample && t.serial_number.is_none() {
        return Err(by_kind("a sample needs a `serial_number`".into()));
    }
    model::check_object("metadata", &t.metadata)?;
    model::check_location(t.latitude, t.longitude).map_err(|e| {
        if kind_is_stored {
            // A change of one coordinate meets the stored other one.
            TwinError::Conflict(format!("twin {:?}: {e}", t.twin_id))
        } else {
            TwinError::Invalid(e)
        }
    })?;
    for (what, v) in [("gateway_id", &t.gateway_id), ("device_id", &t.device_id)] {
        if let Some(v) = v
            && !qi_proto::limits::valid_id(v)
        {
            return Err(invalid(format!(
                "`{what}` must be 1-{} printable characters",
                qi_proto::limits::MAX_ID_LEN
            )));
        }
    }
    match kind {
        Kind::Gateway if t.device_id.is_some() => {
            return Err(by_kind("a gateway twin binds `gateway_id` only".into()));
        }
        Kind::Instrument if t.device_id.is_some() != t.gateway_id.is_some() => {
            return Err(by_kind(
                "an instrument binds both `gateway_id` and `device_id`, or neither".into(),
            ));
        }
        Kind::Site | Kind::Area | Kind::Bench | Kind::Sample
            if t.gateway_id.is_some() || t.device_id.is_some() =>
        {
            return Err(by_kind(format!(
                "a {} is not bound to ingest data (`gateway_id`, `device_id`)",
                kind.as_str()
            )));
        }
        _ => {}
    }
    let specs = match &t.type_id {
        None => Vec::new(),
        Some(type_id) => {
            let ty = super::types::get(conn, type_id)
                .await?
                .ok_or_else(|| TwinError::NotFound(format!("no twin type {type_id:?}")))?;
            if ty.kind != kind.as_str() {
                return Err(TwinError::Conflict(format!(
                    "type {type_id:?} is for {}s, not {}s",
                    ty.kind,
                    kind.as_str()
                )));
            }
            model::parse_specs(&ty.attributes)?
        }
    };
    // The type's definition is stored state: what it refuses is a conflict.
    model::check_attributes(&t.attributes, &specs).map_err(|e| {
        TwinError::Conflict(format!(
            "type {:?}: {e}",
            t.type_id.as_deref().unwrap_or("")
        ))
    })?;
    Ok(())
}

fn invalid(msg: impl Into<String>) -> TwinError {
    TwinError::Invalid(model::Invalid::Field(msg.into()))
}

fn binding_conflict(t: &Twin) -> impl FnOnce(&str) -> String + '_ {
    move |constraint| match constraint {
        "twins_pkey" => format!(
            "twin id {:?} is taken (ids of deleted twins stay taken: history refers to them)",
            t.twin_id
        ),
        "twins_sample_serial" => format!(
            "a sample with serial number {:?} exists already",
            t.serial_number.as_deref().unwrap_or("")
        ),
        "twins_gateway_binding" | "twins_instrument_binding" => format!(
            "another twin is bound to gateway {:?} device {:?} already (a discovered twin? place or delete that one)",
            t.gateway_id.as_deref().unwrap_or(""),
            t.device_id.as_deref().unwrap_or("")
        ),
        other => format!("conflicts with an existing twin ({other})"),
    }
}

pub async fn create(
    conn: &mut PgConnection,
    n: NewTwin,
    by: &Actor<'_>,
) -> Result<Twin, TwinError> {
    model::check_id("twin_id", &n.twin_id)?;
    let kind = parse_kind(&n.kind)?;
    let now = Utc::now();
    let draft = Twin {
        twin_id: n.twin_id,
        kind: kind.as_str().to_string(),
        type_id: n.type_id,
        name: n.name,
        serial_number: n.serial_number,
        attributes: n.attributes,
        metadata: n.metadata,
        latitude: n.latitude,
        longitude: n.longitude,
        gateway_id: n.gateway_id,
        device_id: n.device_id,
        discovered: false,
        version: 1,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    check_fields(conn, &draft, kind, false).await?;
    let t: Twin = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO twins (twin_id, kind, type_id, name, serial_number, attributes, metadata,
                            latitude, longitude, gateway_id, device_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         RETURNING {COLUMNS}"
    )))
    .bind(&draft.twin_id)
    .bind(&draft.kind)
    .bind(&draft.type_id)
    .bind(&draft.name)
    .bind(&draft.serial_number)
    .bind(&draft.attributes)
    .bind(&draft.metadata)
    .bind(draft.latitude)
    .bind(draft.longitude)
    .bind(&draft.gateway_id)
    .bind(&draft.device_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| unique_conflict(e, binding_conflict(&draft)))?;
    crate::audit::append_in(
        conn,
        by.entry(
            "twin.create",
            audit_target(&t.twin_id),
            None,
            Some(t.audited()),
        ),
    )
    .await?;
    if let Some(parent) = n.parent {
        super::graph::relate(
            conn,
            super::graph::NewRelation {
                kind: "contains".into(),
                source: parent,
                target: Some(t.twin_id.clone()),
                target_ref: None,
                valid_from: None,
                valid_to: None,
            },
            by,
        )
        .await?;
    }
    Ok(t)
}

/// A change as the API takes it: absent fields stay; `null` clears the
/// optional ones; `attributes` and `metadata` are JSON merge patches
/// (RFC 7386: a key set to null is removed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "qi_common::json_fields::present")]
    pub type_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "qi_common::json_fields::present")]
    pub serial_number: Option<Option<String>>,
    pub attributes: Option<Value>,
    pub metadata: Option<Value>,
    #[serde(default, deserialize_with = "qi_common::json_fields::present")]
    pub latitude: Option<Option<f64>>,
    #[serde(default, deserialize_with = "qi_common::json_fields::present")]
    pub longitude: Option<Option<f64>>,
    #[serde(default, deserialize_with = "qi_common::json_fields::present")]
    pub gateway_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "qi_common::json_fields::present")]
    pub device_id: Option<Option<String>>,
    /// Set false once an engineer has looked at a discovered twin.
    pub discovered: Option<bool>,
}

fn check_version(t: &Twin, expected: Option<i64>) -> Result<(), TwinError> {
    match expected {
        Some(v) if v != t.version => Err(TwinError::Stale {
            what: format!("twin {:?}", t.twin_id),
            current: t.version,
            expected: v,
        }),
        _ => Ok(()),
    }
}

pub async fn update(
    conn: &mut PgConnection,
    id: &str,
    p: TwinPatch,
    expected_version: Option<i64>,
    by: &Actor<'_>,
) -> Result<Twin, TwinError> {
    let before = get_for_update(conn, id).await?;
    let kind = parse_kind(&before.kind)?;
    let mut t = before.clone();
    if let Some(n) = p.name {
        t.name = n;
    }
    if let Some(v) = p.type_id {
        t.type_id = v;
    }
    if let Some(v) = p.serial_number {
        t.serial_number = v;
    }
    if let Some(a) = &p.attributes {
        if !a.is_object() {
            return Err(invalid(
                "`attributes` must be a JSON object (a merge patch)",
            ));
        }
        model::merge_patch(&mut t.attributes, a);
    }
    if let Some(m) = &p.metadata {
        if !m.is_object() {
            return Err(invalid("`metadata` must be a JSON object (a merge patch)"));
        }
        model::merge_patch(&mut t.metadata, m);
    }
    if let Some(v) = p.latitude {
        t.latitude = v;
    }
    if let Some(v) = p.longitude {
        t.longitude = v;
    }
    if let Some(v) = p.gateway_id {
        t.gateway_id = v;
    }
    if let Some(v) = p.device_id {
        t.device_id = v;
    }
    if let Some(d) = p.discovered {
        t.discovered = d;
    }
    check_fields(conn, &t, kind, true).await?;
    // After the body's checks: a patch invalid in itself is refused as such
    // (400/422) whatever version it names, and only a valid one can be stale.
    check_version(&before, expected_version)?;
    let after: Twin = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE twins SET type_id = $2, name = $3, serial_number = $4, attributes = $5,
                metadata = $6, latitude = $7, longitude = $8, gateway_id = $9, device_id = $10,
                discovered = $11, version = version + 1, updated_at = now()
         WHERE twin_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(&t.type_id)
    .bind(&t.name)
    .bind(&t.serial_number)
    .bind(&t.attributes)
    .bind(&t.metadata)
    .bind(t.latitude)
    .bind(t.longitude)
    .bind(&t.gateway_id)
    .bind(&t.device_id)
    .bind(t.discovered)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| unique_conflict(e, binding_conflict(&t)))?;
    crate::audit::append_in(
        conn,
        by.entry(
            "twin.update",
            audit_target(id),
            Some(before.audited()),
            Some(after.audited()),
        ),
    )
    .await?;
    Ok(after)
}

/// Soft delete: the row stays (history, ended relations refer to it), its
/// current relations end now. Refused while it contains twins (delete or
/// move them first) or while desired values wait on commands.
pub async fn delete(
    conn: &mut PgConnection,
    id: &str,
    expected_version: Option<i64>,
    by: &Actor<'_>,
) -> Result<Twin, TwinError> {
    let before = get_for_update(conn, id).await?;
    check_version(&before, expected_version)?;
    let children: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM twin_relations
         WHERE source_id = $1 AND kind = 'contains' AND valid_to IS NULL",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if children > 0 {
        return Err(TwinError::Conflict(format!(
            "twin {id:?} contains {children} twin(s): move or delete them first"
        )));
    }
    let pending = pending_commands(conn, &before).await?;
    if pending > 0 {
        return Err(TwinError::Conflict(format!(
            "twin {id:?} has {pending} command(s) to its device still pending: wait for them or let them expire"
        )));
    }
    super::graph::end_all(conn, id).await?;
    let after: Twin = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE twins SET deleted_at = now(), version = version + 1, updated_at = now()
         WHERE twin_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    crate::audit::append_in(
        conn,
        by.entry(
            "twin.delete",
            audit_target(id),
            Some(before.audited()),
            None,
        ),
    )
    .await?;
    Ok(after)
}

/// Commands still pending or sent to the device an instrument twin is bound to.
async fn pending_commands(conn: &mut PgConnection, t: &Twin) -> Result<i64, sqlx::Error> {
    let (Some(gw), Some(dev)) = (&t.gateway_id, &t.device_id) else {
        return Ok(0);
    };
    sqlx::query_scalar(
        "SELECT count(*) FROM commands
         WHERE gateway_id = $1 AND state IN ('pending', 'sent') AND deadline >= now()
           AND action -> 'write_point' ->> 'device' = $2",
    )
    .bind(gw)
    .bind(dev)
    .fetch_one(conn)
    .await
}
