//! API keys for machines (SQL of `api_keys`). A key reads
//! `qik_<id>_<secret>`: the id finds the row, the secret is compared by its
//! SHA-256 in constant time. A 256-bit random secret needs no slow hash: it
//! cannot be guessed from its digest the way a password can.

use super::{AuthError, Principal, Role, constant_time_eq, random_token, sha256};
use crate::audit::ActorKind;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// secret_hash, role, sites, expires_at, revoked_at
type KeyRow = (
    Vec<u8>,
    String,
    Option<Vec<String>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

pub const PREFIX: &str = "qik_";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: super::users::RoleText,
    pub sites: Option<Vec<String>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, name, role, sites, created_by, created_at, expires_at, revoked_at, last_used_at";

/// Creates a key; returns it and the only copy of its secret form.
pub async fn create(
    conn: &mut PgConnection,
    name: &str,
    role: Role,
    sites: &Option<Vec<String>>,
    expires_at: Option<DateTime<Utc>>,
    created_by: &str,
) -> Result<(ApiKey, String), sqlx::Error> {
    let id: String = random_token()
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .take(12)
        .map(|b| (b as char).to_ascii_lowercase())
        .collect();
    let secret = random_token();
    let key = sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, secret_hash, name, role, sites, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(&id)
    .bind(sha256(&secret))
    .bind(name)
    .bind(role.as_str())
    .bind(sites)
    .bind(created_by)
    .bind(expires_at)
    .fetch_one(conn)
    .await?;
    Ok((key, format!("{PREFIX}{id}_{secret}")))
}

/// The principal of a presented key.
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Principal, AuthError> {
    let bad = || AuthError::unauthenticated("bad_api_key", "API key not valid");
    let (id, secret) = presented
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .ok_or_else(bad)?;
    if id.len() > 64 || secret.len() > 128 {
        return Err(bad());
    }
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT secret_hash, role, sites, expires_at, revoked_at FROM api_keys WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    // Hash even when the id is unknown: the time taken says nothing.
    let presented_hash = sha256(secret);
    let Some((hash, role, sites, expires_at, revoked_at)) = row else {
        return Err(bad());
    };
    if !constant_time_eq(&hash, &presented_hash) {
        return Err(bad());
    }
    if revoked_at.is_some() {
        return Err(AuthError::unauthenticated(
            "revoked_api_key",
            "API key revoked",
        ));
    }
    if expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(AuthError::unauthenticated(
            "expired_api_key",
            "API key expired",
        ));
    }
    // Last use, at most once a minute per key, off the request's path.
    let pool = pool.clone();
    let key_id = id.to_string();
    tokio::spawn(async move {
        let _ = sqlx::query(
            "UPDATE api_keys SET last_used_at = now()
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')",
        )
        .bind(key_id)
        .execute(&pool)
        .await;
    });
    Ok(Principal {
        kind: ActorKind::ApiKey,
        id: format!("key:{id}"),
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        sites,
    })
}

pub async fn list(pool: &PgPool) -> Result<Vec<ApiKey>, sqlx::Error> {
    sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys ORDER BY created_at"
    )))
    .fetch_all(pool)
    .await
}

/// Revokes a key; returns it as it was, or None if there is no such key.
pub async fn revoke(conn: &mut PgConnection, id: &str) -> Result<Option<ApiKey>, sqlx::Error> {
    let before = sqlx::query_as::<_, ApiKey>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if before.is_some() {
        sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(before)
}
