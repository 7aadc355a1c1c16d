//! The SQL of `audit_log`: append (serialized by a transaction-scoped
//! advisory lock, so ids have no gaps and each entry chains to the one
//! before), filtered queries with keyset pagination, and the chain check.

use super::chain::{self, Fields, GENESIS};
use super::{AuditError, Entry, NewEntry};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};

/// Advisory lock key of the audit chain ("QIAUDIT" as a number); appends
/// take it for the rest of their transaction.
const CHAIN_LOCK: i64 = 0x0051_4941_5544_4954;

/// Appends in its own transaction.
pub async fn append(pool: &PgPool, e: NewEntry) -> Result<Entry, AuditError> {
    let mut tx = pool.begin().await?;
    let entry = append_in(&mut tx, e).await?;
    tx.commit().await?;
    Ok(entry)
}

/// Appends inside the caller's transaction, so the entry is stored if and
/// only if the change it describes is (call it with a `Transaction`, which
/// derefs to `PgConnection`). Holds the chain lock until that transaction
/// ends: keep the rest of it short.
pub async fn append_in(conn: &mut PgConnection, e: NewEntry) -> Result<Entry, AuditError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *conn)
        .await?;
    let last: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let (id, prev) = match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, GENESIS.to_vec()),
    };
    let recorded_at = chain::truncate(Utc::now());
    let occurred_at = chain::truncate(e.occurred_at.unwrap_or(recorded_at));
    let before = e.before.as_ref().map(|v| v.to_string());
    let after = e.after.as_ref().map(|v| v.to_string());
    let hash = chain::hash(
        &prev,
        &Fields {
            id,
            recorded_at,
            occurred_at,
            actor_kind: e.actor_kind.as_str(),
            actor: &e.actor,
            action: &e.action,
            target: &e.target,
            gateway_id: e.gateway_id.as_deref(),
            source_addr: e.source_addr.as_deref(),
            user_agent: e.user_agent.as_deref(),
            before: before.as_deref(),
            after: after.as_deref(),
        },
    );
    sqlx::query(
        "INSERT INTO audit_log (id, recorded_at, occurred_at, actor_kind, actor, action, target,
             gateway_id, source_addr, user_agent, before, after, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(id)
    .bind(recorded_at)
    .bind(occurred_at)
    .bind(e.actor_kind.as_str())
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.gateway_id)
    .bind(&e.source_addr)
    .bind(&e.user_agent)
    .bind(&before)
    .bind(&after)
    .bind(&prev)
    .bind(hash.as_slice())
    .execute(&mut *conn)
    .await?;
    metrics::counter!(crate::metric_names::HUB_AUDIT_ENTRIES_TOTAL, "actor_kind" => e.actor_kind.as_str())
        .increment(1);
    Ok(Entry {
        id,
        recorded_at,
        occurred_at,
        actor_kind: e.actor_kind.as_str().to_string(),
        actor: e.actor,
        action: e.action,
        target: e.target,
        gateway_id: e.gateway_id,
        source_addr: e.source_addr,
        user_agent: e.user_agent,
        before: e.before,
        after: e.after,
        hash: chain::hex(&hash),
    })
}

/// Filters of `GET /api/v1/audit`, already validated. Newest first; the
/// next page starts below `before_id`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub gateway: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

const COLUMNS: &str = "id, recorded_at, occurred_at, actor_kind, actor, action, target, gateway_id, \
                       source_addr, user_agent, before, after, prev_hash, hash";

pub async fn query(pool: &PgPool, q: &AuditQuery) -> Result<Vec<Entry>, AuditError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log
         WHERE ($1::text IS NULL OR actor = $1)
           AND ($2::text IS NULL OR action = $2)
           AND ($3::text IS NULL OR target = $3)
           AND ($4::text IS NULL OR gateway_id = $4)
           AND ($5::timestamptz IS NULL OR occurred_at >= $5)
           AND ($6::timestamptz IS NULL OR occurred_at < $6)
           AND ($7::bigint IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8"
    )))
    .bind(&q.actor)
    .bind(&q.action)
    .bind(&q.target)
    .bind(&q.gateway)
    .bind(q.from)
    .bind(q.to)
    .bind(q.before_id)
    .bind(q.limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(entry_of).collect()
}

fn entry_of(r: &sqlx::postgres::PgRow) -> Result<Entry, AuditError> {
    let json = |col: &str| -> Result<Option<serde_json::Value>, sqlx::Error> {
        let text: Option<String> = r.try_get(col)?;
        // Stored by `append_in` from a serde_json value; if someone wrote
        // other text, show it as a string rather than failing the page.
        Ok(text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))))
    };
    let hash: Vec<u8> = r.try_get("hash")?;
    Ok(Entry {
        id: r.try_get("id")?,
        recorded_at: r.try_get("recorded_at")?,
        occurred_at: r.try_get("occurred_at")?,
        actor_kind: r.try_get("actor_kind")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        gateway_id: r.try_get("gateway_id")?,
        source_addr: r.try_get("source_addr")?,
        user_agent: r.try_get("user_agent")?,
        before: json("before")?,
        after: json("after")?,
        hash: chain::hex(&hash),
    })
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub entries: i64,
    /// Hex hash of the last entry: keep it somewhere else to detect a
    /// truncated tail later.
    pub head: Option<String>,
    /// One line per problem (empty when the chain holds).
    pub problems: Vec<String>,
}

use serde::Serialize;

/// Walks the whole chain in id order, recomputing every hash. Reads in
/// pages so a long trail does not sit in memory.
pub async fn verify(pool: &PgPool) -> Result<VerifyReport, AuditError> {
    const PAGE: i64 = 5_000;
    let mut report = VerifyReport {
        entries: 0,
        head: None,
        problems: Vec::new(),
    };
    let mut prev = GENESIS.to_vec();
    let mut expect_id = 1i64;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_log WHERE id >= $1 ORDER BY id LIMIT $2"
        )))
        .bind(expect_id)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            if id != expect_id {
                report.problems.push(format!(
                    "entries {expect_id}..{} are missing (deleted rows)",
                    id - 1
                ));
            }
            let stored_prev: Vec<u8> = r.try_get("prev_hash")?;
            let stored: Vec<u8> = r.try_get("hash")?;
            if stored_prev != prev {
                report.problems.push(format!(
                    "entry {id}: prev_hash does not match the hash of the entry before it"
                ));
            }
            let actor_kind: String = r.try_get("actor_kind")?;
            let actor: String = r.try_get("actor")?;
            let action: String = r.try_get("action")?;
            let target: String = r.try_get("target")?;
            let gateway_id: Option<String> = r.try_get("gateway_id")?;
            let source_addr: Option<String> = r.try_get("source_addr")?;
            let user_agent: Option<String> = r.try_get("user_agent")?;
            let before: Option<String> = r.try_get("before")?;
            let after: Option<String> = r.try_get("after")?;
            let computed = chain::hash(
                &stored_prev,
                &Fields {
                    id,
                    recorded_at: r.try_get("recorded_at")?,
                    occurred_at: r.try_get("occurred_at")?,
                    actor_kind: &actor_kind,
                    actor: &actor,
                    action: &action,
                    target: &target,
                    gateway_id: gateway_id.as_deref(),
                    source_addr: source_addr.as_deref(),
                    user_agent: user_agent.as_deref(),
                    before: before.as_deref(),
                    after: after.as_deref(),
                },
            );
            if computed.as_slice() != stored.as_slice() {
                report.problems.push(format!(
                    "entry {id}: its fields do not hash to its stored hash (the row was changed)"
                ));
            }
            prev = stored;
            expect_id = id + 1;
            report.entries += 1;
        }
    }
    if report.entries > 0 {
        report.head = Some(chain::hex(&prev));
    }
    Ok(report)
}
