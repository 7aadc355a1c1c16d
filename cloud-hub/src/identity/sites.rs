//! Which site each gateway belongs to: what limits principals scoped to
//! sites. Sites are twins; a gateway's site is the site twin that contains
//! its twin, directly or through areas and benches (SQL function
//! `twin_site`, migration 0008).

use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;

/// Site of each of `gateways` that has one.
pub async fn of_gateways(
    pool: &PgPool,
    gateways: &[String],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT gateway_id, twin_site(twin_id) FROM twins
         WHERE kind = 'gateway' AND deleted_at IS NULL AND gateway_id = ANY($1)",
    )
    .bind(gateways)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(g, s)| s.map(|s| (g, s)))
        .collect())
}

/// Site of a twin (None when it has none or does not exist).
pub async fn of_twin(pool: &PgPool, twin: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT twin_site(twin_id) FROM twins WHERE twin_id = $1")
        .bind(twin)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("twin {0} is a {1}, not a site")]
    NotASite(String, String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Places a gateway directly in a site (creating the site and gateway twins
/// when they do not exist yet); returns the site it was in before.
pub async fn set(
    conn: &mut PgConnection,
    gateway: &str,
    site: &str,
) -> Result<Option<String>, PlaceError> {
    let twin: String = sqlx::query_scalar("SELECT twin_discover_gateway($1)")
        .bind(gateway)
        .fetch_one(&mut *conn)
        .await?;
    // Lock the gateway twin: two placements of one gateway run one after the other.
    let before: Option<String> =
        sqlx::query_scalar("SELECT twin_site(twin_id) FROM twins WHERE twin_id = $1 FOR UPDATE")
            .bind(&twin)
            .fetch_one(&mut *conn)
            .await?;
    let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM twins WHERE twin_id = $1")
        .bind(site)
        .fetch_optional(&mut *conn)
        .await?;
    match kind.as_deref() {
        None => {
            sqlx::query("INSERT INTO twins (twin_id, kind, name) VALUES ($1, 'site', $1)")
                .bind(site)
                .execute(&mut *conn)
                .await?;
        }
        Some("site") => {}
        Some(other) => {
            return Err(PlaceError::NotASite(site.to_string(), other.to_string()));
        }
    }
    sqlx::query(
        "UPDATE twin_relations SET valid_to = now()
         WHERE kind = 'contains' AND target_id = $1 AND valid_to IS NULL",
    )
    .bind(&twin)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO twin_relations (kind, source_id, target_id) VALUES ('contains', $1, $2)",
    )
    .bind(site)
    .bind(&twin)
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
