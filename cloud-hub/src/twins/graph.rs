//! The graph between twins: relations that start and end (never deleted),
//! and the queries over it: ancestors, subtrees, relations of a twin, each
//! as of a time.

use super::model::{self, Kind, RelationKind};
use super::{Actor, TwinError, audit_target};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

/// Deepest containment walked (site > area > ... > instrument is ~5).
pub const MAX_DEPTH: i32 = 64;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Relation {
    pub relation_id: i64,
    pub kind: String,
    pub source_id: String,
    pub target_id: Option<String>,
    pub target_ref: Option<String>,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
}

const REL_COLUMNS: &str =
    "relation_id, kind, source_id, target_id, target_ref, valid_from, valid_to";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelation {
    pub kind: String,
    pub source: String,
    pub target: Option<String>,
    /// For calibrated_by: the certificate's id.
    pub target_ref: Option<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_to: Option<DateTime<Utc>>,
}

fn invalid(msg: impl Into<String>) -> TwinError {
    TwinError::Invalid(model::Invalid::Field(msg.into()))
}

async fn live_kind(conn: &mut PgConnection, id: &str) -> Result<Kind, TwinError> {
    let k: Option<String> =
        sqlx::query_scalar("SELECT kind FROM twins WHERE twin_id = $1 AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    k.as_deref()
        .and_then(Kind::parse)
        .ok_or_else(|| TwinError::NotFound(format!("no twin {id:?}")))
}

/// Starts a relation. A contains or connected_to relation replaces the
/// child's current parent (gateway) from `valid_from` on: that is how a
/// twin moves. Placing a discovered twin marks it as placed.
pub async fn relate(
    conn: &mut PgConnection,
    r: NewRelation,
    by: &Actor<'_>,
) -> Result<Relation, TwinError> {
    let kind = RelationKind::parse(&r.kind).ok_or_else(|| {
        invalid(format!(
            "unknown relation kind {:?}; kinds are contains, connected_to, measures, calibrated_by",
            r.kind.chars().take(40).collect::<String>()
        ))
    })?;
    // Containment changes one at a time: two concurrent moves could
    // otherwise close a cycle that neither saw.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('twin_relations.contains'))")
        .execute(&mut *conn)
        .await?;
    let source_kind = live_kind(conn, &r.source).await?;
    // Existence first: a relation to nothing is a 404 whatever else is wrong.
    let target_kind = match &r.target {
        Some(t) => Some(live_kind(conn, t).await?),
        None => None,
    };
    match (&r.target, &r.target_ref) {
        (Some(_), None) if kind != RelationKind::CalibratedBy => {}
        (None, Some(c)) if kind == RelationKind::CalibratedBy => {
            model::check_text("target_ref", c)?;
            if c.is_empty() {
                return Err(invalid("`target_ref` must not be empty"));
            }
        }
        _ => {
            return Err(invalid(
                "give `target` (a twin id), or for calibrated_by `target_ref` (a certificate id)",
            ));
        }
    }
    let now = Utc::now();
    let from = r.valid_from.unwrap_or(now);
    if from > now + chrono::Duration::seconds(5) {
        return Err(invalid("`valid_from` is in the future"));
    }
    if let Some(to) = r.valid_to
        && to <= from
    {
        return Err(invalid("`valid_to` must be after `valid_from`"));
    }
    if r.valid_to.is_some() && matches!(kind, RelationKind::Contains | RelationKind::ConnectedTo) {
        return Err(invalid(
            "contains and connected_to last until ended (DELETE the relation, or place the twin elsewhere)",
        ));
    }
    // The twins' kinds are stored state: a pair they do not allow conflicts with it.
    if !kind.allows(source_kind, target_kind) {
        let verb = match kind {
            RelationKind::Contains => "contain",
            RelationKind::ConnectedTo => "be connected to",
            RelationKind::Measures => "measure",
            RelationKind::CalibratedBy => "be calibrated by",
        };
        return Err(TwinError::Conflict(format!(
            "a {} cannot {verb} a {}",
            source_kind.as_str(),
            target_kind.map_or("certificate", Kind::as_str)
        )));
    }
    if kind == RelationKind::Contains {
        let (parent, child) = (&r.source, r.target.as_deref().unwrap_or_default());
        if parent == child
            || ancestors_ids(conn, parent)
                .await?
                .iter()
                .any(|a| a == child)
        {
            return Err(TwinError::Conflict(format!(
                "{child:?} contains {parent:?} already: the relation would close a cycle"
            )));
        }
    }
    // The child's current parent (or an instrument's gateway) ends where the new one starts.
    let replaced: Vec<Relation> = match kind {
        RelationKind::Contains => {
            end_current(
                conn,
                "target_id",
                "contains",
                r.target.as_deref().unwrap_or_default(),
                from,
            )
            .await?
        }
        RelationKind::ConnectedTo => {
            end_current(conn, "source_id", "connected_to", &r.source, from).await?
        }
        _ => Vec::new(),
    };
    let rel: Relation = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO twin_relations (kind, source_id, target_id, target_ref, valid_from, valid_to)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {REL_COLUMNS}"
    )))
    .bind(kind.as_str())
    .bind(&r.source)
    .bind(&r.target)
    .bind(&r.target_ref)
    .bind(from)
    .bind(r.valid_to)
    .fetch_one(&mut *conn)
    .await?;
    if kind == RelationKind::Contains {
        sqlx::query(
            "UPDATE twins SET discovered = false, version = version + 1, updated_at = now()
             WHERE twin_id = $1 AND discovered",
        )
        .bind(&r.target)
        .execute(&mut *conn)
        .await?;
    }
    let before = (!replaced.is_empty()).then(|| json!({"ended": replaced}));
    audit_both_ends(
        conn,
        by,
        "relation.create",
        &rel,
        before,
        json!({"relation": rel}),
    )
    .await?;
    Ok(rel)
}

async fn end_current(
    conn: &mut PgConnection,
    column: &str,
    kind: &str,
    id: &str,
    at: DateTime<Utc>,
) -> Result<Vec<Relation>, TwinError> {
    let current: Vec<Relation> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REL_COLUMNS} FROM twin_relations
         WHERE {column} = $1 AND kind = $2 AND valid_to IS NULL FOR UPDATE"
    )))
    .bind(id)
    .bind(kind)
    .fetch_all(&mut *conn)
    .await?;
    for c in &current {
        if c.valid_from >= at {
            return Err(TwinError::Conflict(format!(
                "{id:?} has had its current {kind} relation since {}; a new one must start later",
                c.valid_from
            )));
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE twin_relations SET valid_to = $3
         WHERE {column} = $1 AND kind = $2 AND valid_to IS NULL"
    )))
    .bind(id)
    .bind(kind)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(current)
}

/// Ends a relation now.
pub async fn end(
    conn: &mut PgConnection,
    relation_id: i64,
    by: &Actor<'_>,
) -> Result<Relation, TwinError> {
    let before: Option<Relation> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REL_COLUMNS} FROM twin_relations WHERE relation_id = $1 FOR UPDATE"
    )))
    .bind(relation_id)
    .fetch_optional(&mut *conn)
    .await?;
    let before = before.ok_or_else(|| TwinError::NotFound(format!("no relation {relation_id}")))?;
    if before.valid_to.is_some_and(|t| t <= Utc::now()) {
        return Err(TwinError::Conflict(format!(
            "relation {relation_id} ended already"
        )));
    }
    let rel: Relation = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE twin_relations SET valid_to = greatest(now(), valid_from + interval '1 microsecond')
         WHERE relation_id = $1 RETURNING {REL_COLUMNS}"
    )))
    .bind(relation_id)
    .fetch_one(&mut *conn)
    .await?;
    let before = Some(json!({"relation": before}));
    audit_both_ends(
        conn,
        by,
        "relation.end",
        &rel,
        before,
        json!({"relation": rel}),
    )
    .await?;
    Ok(rel)
}

/// A relation change belongs to the history of both twins it joins.
async fn audit_both_ends(
    conn: &mut PgConnection,
    by: &Actor<'_>,
    action: &str,
    rel: &Relation,
    before: Option<serde_json::Value>,
    after: serde_json::Value,
) -> Result<(), TwinError> {
    for end in std::iter::once(&rel.source_id).chain(rel.target_id.as_ref()) {
        crate::audit::append_in(
            conn,
            by.entry(
                action,
                audit_target(end),
                before.clone(),
                Some(after.clone()),
            ),
        )
        .await?;
    }
    Ok(())
}

/// Ends every current relation of a twin (it is being deleted).
pub async fn end_all(conn: &mut PgConnection, id: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE twin_relations SET valid_to = greatest(now(), valid_from + interval '1 microsecond')
         WHERE (source_id = $1 OR target_id = $1) AND (valid_to IS NULL OR valid_to > now())",
    )
    .bind(id)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// Ids of a twin's current containers, nearest first.
async fn ancestors_ids(conn: &mut PgConnection, id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE up(id, depth) AS (
             SELECT $1::text, 0
             UNION
             SELECT r.source_id, up.depth + 1 FROM up JOIN twin_relations r
               ON r.target_id = up.id AND r.kind = 'contains' AND r.valid_to IS NULL
             WHERE up.depth < $2)
         SELECT id FROM up WHERE depth > 0 ORDER BY depth",
    )
    .bind(id)
    .bind(MAX_DEPTH)
    .fetch_all(conn)
    .await
}

/// A twin in a graph answer: who it is and where it sits.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Node {
    pub twin_id: String,
    pub kind: String,
    pub name: String,
    pub type_id: Option<String>,
    pub depth: i32,
    pub deleted: bool,
}

/// The containers of a twin at `at`, nearest first.
pub async fn ancestors(
    pool: &PgPool,
    id: &str,
    at: DateTime<Utc>,
) -> Result<Vec<Node>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE up(id, depth) AS (
             SELECT $1::text, 0
             UNION
             SELECT r.source_id, up.depth + 1 FROM up JOIN twin_relations r
               ON r.target_id = up.id AND r.kind = 'contains'
              AND r.valid_from <= $2 AND (r.valid_to IS NULL OR r.valid_to > $2)
             WHERE up.depth < $3)
         SELECT t.twin_id, t.kind, t.name, t.type_id, up.depth, t.deleted_at IS NOT NULL AS deleted
         FROM up JOIN twins t ON t.twin_id = up.id
         WHERE up.depth > 0 ORDER BY up.depth",
    )
    .bind(id)
    .bind(at)
    .bind(MAX_DEPTH)
    .fetch_all(pool)
    .await
}

/// The subtree under a twin (the twin itself excluded), by depth then id,
/// optionally one kind and a depth limit; at most `limit` nodes. Now: one
/// range of the paths index; as of an earlier time: the dated relations.
pub async fn descendants(
    pool: &PgPool,
    id: &str,
    at: Option<DateTime<Utc>>,
    kind: Option<&str>,
    max_depth: Option<i32>,
    limit: i64,
) -> Result<Vec<Node>, sqlx::Error> {
    let Some(at) = at else {
        let root: Option<String> =
            sqlx::query_scalar("SELECT path FROM twins WHERE twin_id = $1 AND deleted_at IS NULL")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        let Some(root) = root else {
            return Ok(Vec::new());
        };
        let (lo, hi) = super::search::subtree_range(&root);
        let base = i32::try_from(root.matches('\u{1f}').count()).unwrap_or(i32::MAX);
        return sqlx::query_as(
            "SELECT * FROM (
                 SELECT twin_id, kind, name, type_id,
                        length(path) - length(replace(path, chr(31), '')) - $3 AS depth,
                        false AS deleted
                 FROM twins
                 WHERE deleted_at IS NULL AND path >= $1 AND path < $2) d
             WHERE depth > 0 AND ($4::text IS NULL OR kind = $4) AND ($5::int IS NULL OR depth <= $5)
             ORDER BY depth, twin_id LIMIT $6",
        )
        .bind(lo)
        .bind(hi)
        .bind(base)
        .bind(kind)
        .bind(max_depth)
        .bind(limit)
        .fetch_all(pool)
        .await;
    };
    sqlx::query_as(
        "SELECT t.twin_id, t.kind, t.name, t.type_id, d.depth, t.deleted_at IS NOT NULL AS deleted
         FROM twin_descendants($1, $2) d JOIN twins t ON t.twin_id = d.twin_id
         WHERE d.depth > 0 AND ($3::text IS NULL OR t.kind = $3)
           AND ($4::int IS NULL OR d.depth <= $4)
           AND (t.deleted_at IS NULL OR t.deleted_at > $2)
         ORDER BY d.depth, t.twin_id LIMIT $5",
    )
    .bind(id)
    .bind(at)
    .bind(kind)
    .bind(max_depth)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Relations of a twin: `direction` out (it is the source), in (target) or
/// both; valid at `at`, or every one it ever had when `at` is None.
pub async fn relations_of(
    pool: &PgPool,
    id: &str,
    kind: Option<&str>,
    direction: Direction,
    at: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Relation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REL_COLUMNS} FROM twin_relations
         WHERE (($2 AND source_id = $1) OR ($3 AND target_id = $1))
           AND ($4::text IS NULL OR kind = $4)
           AND ($5::timestamptz IS NULL OR (valid_from <= $5 AND (valid_to IS NULL OR valid_to > $5)))
         ORDER BY valid_from DESC, relation_id DESC LIMIT $6"
    )))
    .bind(id)
    .bind(matches!(direction, Direction::Out | Direction::Both))
    .bind(matches!(direction, Direction::In | Direction::Both))
    .bind(kind)
    .bind(at)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Out,
    In,
    Both,
}

/// Whether the twin exists now (not deleted), or existed at `at`: a
/// deleted twin's past stays readable.
pub async fn existed(
    pool: &PgPool,
    id: &str,
    at: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM twins WHERE twin_id = $1
            AND created_at <= coalesce($2, now())
            AND (deleted_at IS NULL OR deleted_at > coalesce($2, now())))",
    )
    .bind(id)
    .bind(at)
    .fetch_one(pool)
    .await
}
