//! Which time-series features the database offers, detected at start.

use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageTier {
    /// TimescaleDB with the community (TSL) licence.
    Timescale,
    /// TimescaleDB, Apache-2 build: hypertables without compression or continuous aggregates.
    Apache,
    /// Plain PostgreSQL.
    None,
}

impl std::fmt::Display for StorageTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageTier::Timescale => "timescale",
            StorageTier::Apache => "apache",
            StorageTier::None => "none",
        })
    }
}

/// Turns `samples` into a hypertable when TimescaleDB can be loaded; falls
/// back to the plain table (which already works) on any failure, saying why.
pub async fn setup(pool: &PgPool) -> Result<StorageTier, sqlx::Error> {
    let available: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
    )
    .fetch_one(pool)
    .await?;
    if !available {
        tracing::info!(
            tier = "none",
            "timescaledb not available; samples stay a plain table"
        );
        return Ok(StorageTier::None);
    }
    if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, tier = "none",
            "timescaledb is installed but cannot be loaded (is it in shared_preload_libraries?); using a plain table");
        return Ok(StorageTier::None);
    }
    if let Err(e) = sqlx::query(
        "SELECT create_hypertable('samples', 'ts', if_not_exists => TRUE, migrate_data => TRUE)",
    )
    .execute(pool)
    .await
    {
        tracing::warn!(error = %e, tier = "none", "create_hypertable failed; using a plain table");
        return Ok(StorageTier::None);
    }
    let license: Option<String> =
        sqlx::query_scalar("SELECT current_setting('timescaledb.license', true)")
            .fetch_one(pool)
            .await?;
    let tier = if license.as_deref() == Some("timescale") {
        StorageTier::Timescale
    } else {
        StorageTier::Apache
    };
    tracing::info!(%tier, "samples is a TimescaleDB hypertable");
    Ok(tier)
}
