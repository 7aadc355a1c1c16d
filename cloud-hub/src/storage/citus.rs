//! Tier `citus` (Citus, distributed PostgreSQL): for write rates one primary
//! cannot take. The volume tables are spread over the workers, everything
//! else stays an ordinary table on the coordinator:
//!
//! - `samples`: day partitions exactly as tier `none` lays them out (see
//!   `partitions`: `samples_before`, `samples_YYYYMMDD`, `samples_default`,
//!   the same upkeep and retention by dropping partitions), distributed by
//!   `series_id`. Its unique index (series_id, ts, seq) holds the
//!   distribution column, which Citus requires of a unique index: the
//!   uplink's dedupe (COPY, then INSERT .. ON CONFLICT DO NOTHING) is unchanged.
//! - `rollup_1m`, `rollup_1h`: distributed by `series_id`, co-located with
//!   `samples` (the same shard of every table holds the same series), so the
//!   hub's per-series rollup (INSERT .. SELECT .. ON CONFLICT) runs on one
//!   worker without moving rows.
//! - `series`, `devices`, `gateways`, `series_latest` and the rest: local to
//!   the coordinator. The ingest transaction upserts them next to its COPY
//!   (one transaction, two-phase commit to the workers); joins of `samples`
//!   with `series` (the `readings` view, the API's queries) are planned by
//!   Citus by sending the filtered local rows to the workers. Making `series`
//!   a reference table would drag every table with a foreign key to it into
//!   Citus' metadata; not needed at the series counts measured here.
//!
//! The operator creates the `citus` extension in the hub's database and
//! registers the workers (`citus_add_node`); the hub only lays out its tables.

use sqlx::PgPool;

/// True when this database has the `citus` extension (created by the operator).
pub(super) async fn installed(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
        .fetch_one(pool)
        .await
}

/// True when `samples` is already a distributed table.
pub(super) async fn is_distributed(pool: &PgPool) -> Result<bool, sqlx::Error> {
    if !installed(pool).await? {
        return Ok(false);
    }
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'public.samples'::regclass)",
    )
    .fetch_one(pool)
    .await
}

/// Lays out tier citus (once; a restart finds it in place and does nothing).
pub(super) async fn setup(pool: &PgPool) -> Result<(), sqlx::Error> {
    super::partitions::ensure_partitioned(pool).await?;
    // The distributed tables, `samples` first: the rollups co-locate with it.
    for (table, colocate) in [
        ("samples", "default"),
        ("rollup_1m", "samples"),
        ("rollup_1h", "samples"),
    ] {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = $1::regclass)",
        )
        .bind(table)
        .fetch_one(pool)
        .await?;
        if done {
            continue;
        }
        sqlx::query("SELECT create_distributed_table($1, 'series_id', colocate_with => $2)")
            .bind(table)
            .bind(colocate)
            .execute(pool)
            .await?;
        // Rows already there were copied into the shards; the coordinator's
        // local copies are dead weight (Citus leaves them for the operator).
        sqlx::query("SELECT truncate_local_data_after_distributing_table($1)")
            .bind(table)
            .execute(pool)
            .await?;
        tracing::info!(table, colocate_with = colocate, "distributed by series_id");
    }
    let workers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND isactive AND groupid <> 0",
    )
    .fetch_one(pool)
    .await?;
    tracing::info!(
        tier = "citus",
        workers,
        "samples partitioned by day and distributed by series_id; rollups co-located"
    );
    Ok(())
}
