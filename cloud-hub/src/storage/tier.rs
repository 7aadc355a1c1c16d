//! Which time-series features the database offers, detected at start, and
//! the layout each tier gets:
//!
//! - `timescale`: `samples` is a hypertable (1-day chunks) with compression
//!   (segment by series, order by time) and a compression policy; the rollups
//!   `rollup_1m` / `rollup_1h` are continuous aggregates (the hour one built on
//!   the minute one) with refresh policies; retention by retention policies.
//! - `apache`: hypertable; rollup tables kept by the hub; retention by
//!   `drop_chunks` (run by the hub).
//! - `none`: native day partitions (see `partitions`), rollup tables kept by
//!   the hub, retention by dropping partitions.
//! - `citus`: tier none's layout, with `samples` and the rollups distributed
//!   by series over Citus workers (see `citus`).
//!
//! Every tier keeps the same relation names and columns (`samples`,
//! `rollup_1m`, `rollup_1h`, the `readings` view), so the queries and the
//! tests are one set for all tiers.

use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageTier {
    /// TimescaleDB with the community (TSL) licence.
    Timescale,
    /// TimescaleDB, Apache-2 build: hypertables without compression or continuous aggregates.
    Apache,
    /// Plain PostgreSQL.
    None,
    /// Citus: day partitions distributed by series over the workers.
    Citus,
}

impl std::fmt::Display for StorageTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageTier::Timescale => "timescale",
            StorageTier::Apache => "apache",
            StorageTier::None => "none",
            StorageTier::Citus => "citus",
        })
    }
}

/// `database.tier`: what the operator allows the hub to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierChoice {
    /// The best the database offers.
    #[default]
    Auto,
    /// Plain PostgreSQL features only, even where TimescaleDB is installed.
    None,
    /// Citus, required: start fails when the database has no `citus` extension.
    Citus,
}

async fn is_hypertable(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let loaded: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
    )
    .fetch_one(pool)
    .await?;
    if !loaded {
        return Ok(false);
    }
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                        WHERE hypertable_schema = 'public' AND hypertable_name = 'samples')",
    )
    .fetch_one(pool)
    .await
}

/// Detects the tier and brings the schema to it. Falls back to `none` (which
/// always works) when TimescaleDB is missing or cannot be loaded, saying why.
pub async fn setup(pool: &PgPool, choice: TierChoice) -> Result<StorageTier, sqlx::Error> {
    // A database laid out for one tier stays in it: moving data between
    // layouts is a migration for an operator, not something to do at start.
    if super::citus::is_distributed(pool).await? {
        super::citus::setup(pool).await?;
        return Ok(StorageTier::Citus);
    }
    if choice == TierChoice::Citus {
        return citus_or_refuse(pool).await;
    }
    if super::partitions::is_partitioned(pool).await? {
        tracing::info!(
            tier = "none",
            "samples is partitioned by day (tier none); TimescaleDB, if installed, is not used for it"
        );
        return Ok(StorageTier::None);
    }
    if is_hypertable(pool).await? {
        return timescale_flavour(pool).await;
    }
    if choice == TierChoice::None {
        tracing::info!(tier = "none", "database.tier = none: plain PostgreSQL");
        return Ok(StorageTier::None);
    }
    // The operator created the extension in this database: that is the ask.
    if super::citus::installed(pool).await? {
        super::citus::setup(pool).await?;
        return Ok(StorageTier::Citus);
    }
    let available: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
    )
    .fetch_one(pool)
    .await?;
    if !available {
        tracing::info!(tier = "none", "timescaledb not available; plain PostgreSQL");
        return Ok(StorageTier::None);
    }
    if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, tier = "none",
            "timescaledb is installed but cannot be loaded (is it in shared_preload_libraries?); using plain PostgreSQL");
        return Ok(StorageTier::None);
    }
    // Day chunks: the indexes of the chunk being written stay small.
    if let Err(e) = sqlx::query(
        "SELECT create_hypertable('samples', 'ts', chunk_time_interval => interval '1 day',
                                  if_not_exists => TRUE, migrate_data => TRUE)",
    )
    .execute(pool)
    .await
    {
        tracing::warn!(error = %e, tier = "none", "create_hypertable failed; using plain PostgreSQL");
        return Ok(StorageTier::None);
    }
    timescale_flavour(pool).await
}

/// Tier citus on a database not laid out yet. A database already laid out
/// for tier none is not redistributed behind the operator's back.
async fn citus_or_refuse(pool: &PgPool) -> Result<StorageTier, sqlx::Error> {
    if !super::citus::installed(pool).await? {
        return Err(sqlx::Error::Configuration(
            "database.tier = citus but this database has no citus extension: CREATE EXTENSION citus (with citus in shared_preload_libraries) and register the workers (citus_add_node) first".into(),
        ));
    }
    if super::partitions::is_partitioned(pool).await? {
        return Err(sqlx::Error::Configuration(
            "the citus extension is installed, but samples is laid out for tier none (local day partitions); distribute it by hand (create_distributed_table('samples', 'series_id') and the rollups colocated with it) or set database.tier = none".into(),
        ));
    }
    super::citus::setup(pool).await?;
    Ok(StorageTier::Citus)
}

async fn timescale_flavour(pool: &PgPool) -> Result<StorageTier, sqlx::Error> {
    let license: Option<String> =
        sqlx::query_scalar("SELECT current_setting('timescaledb.license', true)")
            .fetch_one(pool)
            .await?;
    let version: Option<String> = sqlx::query_scalar(
        "SELECT extversion::text FROM pg_extension WHERE extname = 'timescaledb'",
    )
    .fetch_optional(pool)
    .await?;
    if license.as_deref() == Some("timescale") {
        full_timescale(pool).await?;
        tracing::info!(tier = "timescale", version = ?version,
            "samples is a compressed hypertable; rollups are continuous aggregates");
        Ok(StorageTier::Timescale)
    } else {
        tracing::info!(tier = "apache", version = ?version, license = ?license,
            "samples is a hypertable; rollups kept by the hub, retention by drop_chunks");
        Ok(StorageTier::Apache)
    }
}

/// Compression and continuous aggregates (idempotent: a restart changes nothing).
async fn full_timescale(pool: &PgPool) -> Result<(), sqlx::Error> {
    let compressed: bool = sqlx::query_scalar(
        "SELECT compression_enabled FROM timescaledb_information.hypertables
         WHERE hypertable_schema = 'public' AND hypertable_name = 'samples'",
    )
    .fetch_one(pool)
    .await?;
    if !compressed {
        // The unique index (series_id, ts, seq) must be covered by segmentby
        // + orderby for dedupe to keep working on compressed chunks.
        sqlx::query(
            "ALTER TABLE samples SET (timescaledb.compress,
                 timescaledb.compress_segmentby = 'series_id',
                 timescaledb.compress_orderby = 'ts, seq')",
        )
        .execute(pool)
        .await?;
    }
    for (name, sql) in [
        (
            "rollup_1m",
            // Same columns as the rollup tables of the other tiers.
            "CREATE MATERIALIZED VIEW rollup_1m
             WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
             SELECT series_id, time_bucket(interval '1 minute', ts) AS bucket,
                    count(*) AS n, sum(value) AS sum, sum(value * value) AS sum_sq,
                    min(value) AS min, max(value) AS max,
                    min(ts) AS first_ts, first(value, ts) AS first,
                    max(ts) AS last_ts, last(value, ts) AS last
             FROM samples GROUP BY series_id, time_bucket(interval '1 minute', ts)
             WITH NO DATA",
        ),
        (
            "rollup_1h",
            // Hierarchical: hours from the minutes, never from raw samples.
            "CREATE MATERIALIZED VIEW rollup_1h
             WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
             SELECT series_id, time_bucket(interval '1 hour', bucket) AS bucket,
                    sum(n)::bigint AS n, sum(sum) AS sum, sum(sum_sq) AS sum_sq,
                    min(min) AS min, max(max) AS max,
                    min(first_ts) AS first_ts, first(first, first_ts) AS first,
                    max(last_ts) AS last_ts, last(last, last_ts) AS last
             FROM rollup_1m GROUP BY series_id, time_bucket(interval '1 hour', bucket)
             WITH NO DATA",
        ),
    ] {
        let is_cagg: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                            WHERE view_schema = 'public' AND view_name = $1)",
        )
        .bind(name)
        .fetch_one(pool)
        .await?;
        if is_cagg {
            continue;
        }
        // The tables of migration 0004; the aggregates recompute them from raw.
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
            .execute(pool)
            .await?;
        sqlx::query(AssertSqlSafe(sql)).execute(pool).await?;
        tracing::info!(view = name, "continuous aggregate created");
    }
    Ok(())
}

/// `[retention]` as TimescaleDB policies (tier `timescale`): replaced at every
/// start so a changed config takes effect. The database's job scheduler runs
/// them. The hub refreshes the aggregates itself every rollup interval (its
/// lag bound); the hourly refresh policies are the safety net for rows
/// written by anything else while the hub is down.
pub async fn apply_policies(pool: &PgPool, r: &super::Retention) -> Result<(), sqlx::Error> {
    let days = |d: i64| format!("{} days", d.max(1));
    let mut stmts: Vec<String> = vec![
        "SELECT remove_compression_policy('samples', if_exists => true)".into(),
        format!(
            "SELECT add_compression_policy('samples', compress_after => interval '{}')",
            days(r.compress_after_days)
        ),
    ];
    for (rel, keep) in [
        ("samples", r.raw_days),
        ("rollup_1m", r.minute_days),
        ("rollup_1h", r.hour_days),
    ] {
        stmts.push(format!(
            "SELECT remove_retention_policy('{rel}', if_exists => true)"
        ));
        if keep > 0 {
            stmts.push(format!(
                "SELECT add_retention_policy('{rel}', drop_after => interval '{}')",
                days(keep)
            ));
        }
    }
    // A refresh must not reach back past what retention dropped from the
    // aggregate's source (it would empty those buckets): minutes are built
    // from raw samples, hours from minutes.
    let start = |keep: i64| {
        if keep > 0 {
            format!("interval '{}'", days(keep))
        } else {
            "NULL".into()
        }
    };
    for (cagg, source_days, end_offset) in [
        ("rollup_1m", r.raw_days, "1 minute"),
        ("rollup_1h", r.minute_days, "1 hour"),
    ] {
        stmts.push(format!(
            "SELECT remove_continuous_aggregate_policy('{cagg}', if_exists => true)"
        ));
        stmts.push(format!(
            "SELECT add_continuous_aggregate_policy('{cagg}', start_offset => {},
                    end_offset => interval '{end_offset}', schedule_interval => interval '1 hour')",
            start(source_days)
        ));
    }
    // Only integers and fixed names are spliced in above.
    for s in stmts {
        sqlx::query(AssertSqlSafe(s)).execute(pool).await?;
    }
    tracing::info!(
        raw_days = r.raw_days,
        minute_days = r.minute_days,
        hour_days = r.hour_days,
        compress_after_days = r.compress_after_days,
        "timescaledb policies set"
    );
    Ok(())
}
