//! Tier `none` (plain PostgreSQL): `samples` as native range partitions, one
//! per UTC day, created ahead by the hub; retention drops whole partitions.
//!
//! The first start on an existing database turns the plain table into a
//! partition covering everything before tomorrow (no data is copied); new
//! days get their own partitions from then on. A `samples_default` partition
//! catches timestamps beyond the days created (a device clock far ahead);
//! when their day's partition is created, those rows move into it; rows
//! there older than the raw retention are deleted (the partition itself stays).

use sqlx::{AssertSqlSafe, PgPool};

/// Only digits, so safe to splice into DDL.
fn day_name(day: chrono::NaiveDate) -> String {
    format!("samples_{}", day.format("%Y%m%d"))
}

pub(super) async fn is_partitioned(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
                        WHERE c.relname = 'samples' AND c.relnamespace = 'public'::regnamespace)",
    )
    .fetch_one(pool)
    .await
}

/// Converts a plain `samples` table into a partitioned one (once).
pub async fn ensure_partitioned(pool: &PgPool) -> Result<(), sqlx::Error> {
    if is_partitioned(pool).await? {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7261002)")
        .execute(&mut *tx)
        .await?;
    let done: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
                        WHERE c.relname = 'samples' AND c.relnamespace = 'public'::regnamespace)",
    )
    .fetch_one(&mut *tx)
    .await?;
    if done {
        return Ok(());
    }
    let boundary: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT date_trunc('day', greatest(coalesce(max(ts), now()), now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day' FROM samples",
    )
    .fetch_one(&mut *tx)
    .await?;
    // The table, its indexes and the `readings` view are defined once, by the
    // migrations; the partitioned table copies them from the old one.
    let view: String = sqlx::query_scalar("SELECT pg_get_viewdef('readings'::regclass, true)")
        .fetch_one(&mut *tx)
        .await?;
    for stmt in [
        "DROP VIEW readings".to_string(),
        "ALTER TABLE samples RENAME TO samples_before".into(),
        "ALTER INDEX samples_series_ts_seq RENAME TO samples_before_series_ts_seq".into(),
        "ALTER INDEX samples_received_brin RENAME TO samples_before_received_brin".into(),
        "CREATE TABLE samples (LIKE samples_before INCLUDING DEFAULTS INCLUDING INDEXES)
         PARTITION BY RANGE (ts)"
            .into(),
        // LIKE names the copied indexes after their columns; keep the migrations' names.
        "ALTER INDEX samples_series_id_ts_seq_idx RENAME TO samples_series_ts_seq".into(),
        "ALTER INDEX samples_received_at_idx RENAME TO samples_received_brin".into(),
        "CREATE TABLE samples_default PARTITION OF samples DEFAULT".into(),
        format!("CREATE VIEW readings AS {view}"),
    ] {
        sqlx::query(AssertSqlSafe(stmt)).execute(&mut *tx).await?;
    }
    // The old table becomes the partition of everything before `boundary`
    // (its rows all are: the boundary is past its newest sample).
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE samples ATTACH PARTITION samples_before FOR VALUES FROM (MINVALUE) TO ('{}')",
        boundary.to_rfc3339()
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(%boundary, "samples is now partitioned by day (tier none)");
    Ok(())
}

/// Creates the daily partitions up to `days_ahead` days from now, then drops
/// partitions entirely older than `retention_days` (0: keep everything).
/// `distributed`: `samples` is a Citus distributed table (tier citus).
/// Returns (created, dropped).
pub async fn maintain(
    pool: &PgPool,
    days_ahead: i64,
    retention_days: i64,
    distributed: bool,
) -> Result<(usize, usize), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7261002)")
        .execute(&mut *tx)
        .await?;
    if distributed {
        // Citus refuses DDL on a table after a parallel multi-shard write to
        // it in the same transaction; one connection per worker allows both.
        sqlx::query("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
            .execute(&mut *tx)
            .await?;
    }
    // Upper bounds of the existing range partitions.
    let bounds: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT c.relname::text,
                substring(pg_get_expr(c.relpartbound, c.oid) from 'TO \\(''([^'']+)''\\)')::timestamptz
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'samples'::regclass",
    )
    .fetch_all(&mut *tx)
    .await?;
    let highest = bounds.iter().filter_map(|b| b.1).max();
    let today = chrono::Utc::now().date_naive();
    let mut day = highest.map_or(today, |h| h.date_naive());
    let mut created = 0;
    while day <= today + chrono::Duration::days(days_ahead) {
        let next = day + chrono::Duration::days(1);
        let name = day_name(day);
        let (lo, hi) = (format!("{day}T00:00:00Z"), format!("{next}T00:00:00Z"));
        if distributed {
            create_distributed_day(&mut tx, &name, &lo, &hi).await?;
            created += 1;
            day = next;
            continue;
        }
        // Rows that went to the default partition for this day move in first.
        for stmt in [
            format!("CREATE TABLE {name} (LIKE samples INCLUDING DEFAULTS)"),
            format!(
                "WITH moved AS (DELETE FROM samples_default WHERE ts >= '{lo}' AND ts < '{hi}' RETURNING *)
                 INSERT INTO {name} SELECT * FROM moved"
            ),
            format!("ALTER TABLE samples ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"),
        ] {
            sqlx::query(AssertSqlSafe(stmt)).execute(&mut *tx).await?;
        }
        created += 1;
        day = next;
    }
    let mut dropped = 0;
    if retention_days > 0 {
        let cutoff = chrono::Utc::now() - chrono::Duration::days(retention_days);
        for (name, hi) in &bounds {
            let Some(hi) = hi else { continue };
            let droppable = name == "samples_before"
                || (name.starts_with("samples_") && name[8..].chars().all(|c| c.is_ascii_digit()));
            if *hi <= cutoff && droppable {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
                    .execute(&mut *tx)
                    .await?;
                dropped += 1;
            }
        }
        // A reading older than every partition left (a backlog arriving after
        // retention dropped its day) lands in the default partition, which is
        // never dropped: its old rows go one by one, or they would stay forever.
        let expired = sqlx::query("DELETE FROM samples_default WHERE ts < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if expired > 0 {
            tracing::info!(
                rows = expired,
                days = retention_days,
                "raw retention: old rows deleted from samples_default"
            );
        }
    }
    tx.commit().await?;
    if created > 0 || dropped > 0 {
        tracing::info!(created, dropped, "samples partitions maintained");
    }
    Ok((created, dropped))
}

/// Tier citus: a new day partition of the distributed `samples` (Citus
/// creates its shards, co-located). Attaching a local table, as tier none
/// does, would make Citus copy it into shards; creating the partition in
/// place is cheaper. Rows of that day in the default partition are set
/// aside first (PostgreSQL refuses the new partition while they are there)
/// and written back through the parent, which routes them into it.
async fn create_distributed_day(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
    lo: &str,
    hi: &str,
) -> Result<(), sqlx::Error> {
    let range = format!("ts >= '{lo}' AND ts < '{hi}'");
    let waiting: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM samples_default WHERE {range})"
    )))
    .fetch_one(&mut **tx)
    .await?;
    let create =
        format!("CREATE TABLE {name} PARTITION OF samples FOR VALUES FROM ('{lo}') TO ('{hi}')");
    let stmts = if waiting {
        vec![
            format!(
                "CREATE TEMP TABLE samples_moving ON COMMIT DROP AS SELECT * FROM samples_default WHERE {range}"
            ),
            format!("DELETE FROM samples_default WHERE {range}"),
            create,
            "INSERT INTO samples SELECT * FROM samples_moving".into(),
            "DROP TABLE samples_moving".into(),
        ]
    } else {
        vec![create]
    };
    // Only digits and fixed names are spliced in above.
    for stmt in stmts {
        sqlx::query(AssertSqlSafe(stmt)).execute(&mut **tx).await?;
    }
    Ok(())
}
