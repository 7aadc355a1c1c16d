//! The hub's users (SQL of `users`).

use super::Role;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    #[serde(skip)]
    pub id: i64,
    pub username: String,
    #[sqlx(try_from = "String")]
    pub role: RoleText,
    pub sites: Option<Vec<String>>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A role read from the database (the CHECK constraint keeps it valid;
/// anything else reads as viewer, the least it could mean).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
pub struct RoleText(pub Role);

impl From<String> for RoleText {
    fn from(s: String) -> RoleText {
        RoleText(Role::parse(&s).unwrap_or(Role::Viewer))
    }
}

const COLUMNS: &str = "id, username, role, sites, disabled, created_at, updated_at";

pub const MAX_USERNAME_LEN: usize = 64;

/// Usernames: 1-64 characters of letters, digits and `._@-`.
pub fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_USERNAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

/// Site ids follow the gateway-id rule of the wire contract.
pub fn valid_sites(sites: &Option<Vec<String>>) -> bool {
    sites
        .as_ref()
        .is_none_or(|s| s.len() <= 1000 && s.iter().all(|x| qi_proto::limits::valid_id(x)))
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user named {0:?} already exists")]
    Exists(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn create(
    conn: &mut PgConnection,
    username: &str,
    password_hash: &str,
    role: Role,
    sites: &Option<Vec<String>>,
) -> Result<User, UserError> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (username, password_hash, role, sites) VALUES ($1, $2, $3, $4)
         ON CONFLICT (username) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(username)
    .bind(password_hash)
    .bind(role.as_str())
    .bind(sites)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| UserError::Exists(username.to_string()))
}

pub async fn get(pool: &PgPool, username: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE username = $1"
    )))
    .bind(username)
    .fetch_optional(pool)
    .await
}

pub async fn get_by_id(pool: &PgPool, id: i64) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The user and its password hash, for login.
pub async fn get_with_hash(
    pool: &PgPool,
    username: &str,
) -> Result<Option<(User, String)>, sqlx::Error> {
    let Some(u) = get(pool, username).await? else {
        return Ok(None);
    };
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(u.id)
        .fetch_one(pool)
        .await?;
    Ok(Some((u, hash)))
}

pub async fn list(pool: &PgPool, limit: i64, offset: i64) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users ORDER BY username LIMIT $1 OFFSET $2"
    )))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

/// A change to a user; `None` fields stay as they are.
#[derive(Debug, Default)]
pub struct Patch {
    pub role: Option<Role>,
    /// Some(None): every site.
    pub sites: Option<Option<Vec<String>>>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
}

/// Applies `patch`; returns the user before and after, or None if absent.
pub async fn update(
    conn: &mut PgConnection,
    username: &str,
    patch: &Patch,
) -> Result<Option<(User, User)>, sqlx::Error> {
    let before = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE username = $1 FOR UPDATE"
    )))
    .bind(username)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    let after = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "UPDATE users SET
             role = coalesce($2, role),
             sites = CASE WHEN $3 THEN $4 ELSE sites END,
             disabled = coalesce($5, disabled),
             password_hash = coalesce($6, password_hash),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(before.id)
    .bind(patch.role.map(Role::as_str))
    .bind(patch.sites.is_some())
    .bind(patch.sites.clone().flatten())
    .bind(patch.disabled)
    .bind(&patch.password_hash)
    .fetch_one(&mut *conn)
    .await?;
    // A disabled user, or one whose password changed, keeps no session.
    if patch.disabled == Some(true) || patch.password_hash.is_some() {
        super::sessions::revoke_user(&mut *conn, before.id).await?;
    }
    Ok(Some((before, after)))
}

pub async fn delete(conn: &mut PgConnection, username: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "DELETE FROM users WHERE username = $1 RETURNING {COLUMNS}"
    )))
    .bind(username)
    .fetch_optional(conn)
    .await
}
