//! Which site each gateway belongs to (SQL of `gateway_sites`): what limits
//! principals scoped to sites. The twin registry will own sites later; this
//! table is its seed.

use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;

/// Site of each of `gateways` that has one.
pub async fn of_gateways(
    pool: &PgPool,
    gateways: &[String],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT gateway_id, site_id FROM gateway_sites WHERE gateway_id = ANY($1)")
            .bind(gateways)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Places a gateway in a site; returns the site it was in before.
pub async fn set(
    conn: &mut PgConnection,
    gateway: &str,
    site: &str,
) -> Result<Option<String>, sqlx::Error> {
    let before: Option<String> =
        sqlx::query_scalar("SELECT site_id FROM gateway_sites WHERE gateway_id = $1 FOR UPDATE")
            .bind(gateway)
            .fetch_optional(&mut *conn)
            .await?;
    sqlx::query(
        "INSERT INTO gateway_sites (gateway_id, site_id) VALUES ($1, $2)
         ON CONFLICT (gateway_id) DO UPDATE SET site_id = $2, updated_at = now()",
    )
    .bind(gateway)
    .bind(site)
    .execute(&mut *conn)
    .await?;
    Ok(before)
}

/// Gateways of the series with these ids.
pub async fn gateways_of_series(pool: &PgPool, ids: &[i32]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT gateway_id FROM series WHERE series_id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Gateway of a command.
pub async fn gateway_of_command(pool: &PgPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT gateway_id FROM commands WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}
