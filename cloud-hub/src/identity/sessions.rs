//! Password login, refresh-token families and logout (SQL of
//! `refresh_tokens`). A refresh token is used once: each use marks it used
//! and hands out a new one of the same family; a used token presented again
//! means two parties hold it, so the whole family is revoked and both must
//! log in again. Logout revokes the family.

use super::signing::Signer;
use super::{AuthError, Role, random_token, sha256, users};
use crate::audit::{self, ActorKind, NewEntry, Origin};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// family, user_id, expires_at, used_at, revoked_at
type RefreshRow = (
    String,
    i64,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

pub const REFRESH_PREFIX: &str = "qir_";

/// What login and refresh answer.
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

pub struct Sessions<'a> {
    pub pool: &'a PgPool,
    pub signer: &'a Signer,
    pub refresh_ttl: Duration,
}

impl Sessions<'_> {
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        origin: &Origin,
    ) -> Result<TokenPair, AuthError> {
        let found = if users::valid_username(username) {
            users::get_with_hash(self.pool, username).await?
        } else {
            None
        };
        let (user, hash) = match found {
            Some((u, h)) => (Some(u), Some(h)),
            None => (None, None),
        };
        let ok = super::passwords::verify(password, hash).await;
        let user = match user {
            Some(u) if ok && !u.disabled => u,
            other => {
                let why = match other {
                    Some(u) if u.disabled && ok => "disabled",
                    _ => "bad_credentials",
                };
                // The name only when it is a valid one: the audit trail is no
                // place for an attacker's megabyte.
                let who = if users::valid_username(username) {
                    username
                } else {
                    "?"
                };
                audit::append(
                    self.pool,
                    NewEntry::new(
                        ActorKind::User,
                        who,
                        "auth.login_failed",
                        format!("user:{who}"),
                    )
                    .origin(origin)
                    .after(serde_json::json!({"reason": why})),
                )
                .await
                .map_err(|e| AuthError::Internal(e.to_string()))?;
                return Err(AuthError::unauthenticated(
                    "bad_credentials",
                    "wrong username or password, or the user is disabled",
                ));
            }
        };
        let mut tx = self.pool.begin().await?;
        let family = random_token();
        let pair = self
            .issue(
                &mut tx,
                user.id,
                &user.username,
                user.role.0,
                user.sites.clone(),
                &family,
            )
            .await?;
        audit::append_in(
            &mut tx,
            NewEntry::new(
                ActorKind::User,
                &user.username,
                "auth.login",
                format!("user:{}", user.username),
            )
            .origin(origin),
        )
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
        tx.commit().await?;
        Ok(pair)
    }

    async fn issue(
        &self,
        conn: &mut PgConnection,
        user_id: i64,
        username: &str,
        role: Role,
        sites: Option<Vec<String>>,
        family: &str,
    ) -> Result<TokenPair, AuthError> {
        // Only a successful login or refresh gets here (one small query next
        // to an argon2 hash): a rotation by another replica or the command
        // line signs this token.
        self.signer.reload().await?;
        let refresh = format!("{REFRESH_PREFIX}{}", random_token());
        let expires = Utc::now()
            + chrono::Duration::from_std(self.refresh_ttl).unwrap_or(chrono::Duration::days(30));
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(sha256(&refresh))
        .bind(family)
        .bind(user_id)
        .bind(expires)
        .execute(&mut *conn)
        .await?;
        Ok(TokenPair {
            access_token: self.signer.issue(username, role, sites)?,
            token_type: "Bearer",
            expires_in: self.signer.access_ttl().as_secs(),
            refresh_token: refresh,
            refresh_expires_at: expires,
        })
    }

    /// Trades a refresh token for a new pair.
    pub async fn refresh(&self, token: &str, origin: &Origin) -> Result<TokenPair, AuthError> {
        let refused = |reason, msg: &str| AuthError::unauthenticated(reason, msg.to_string());
        if !token.starts_with(REFRESH_PREFIX) || token.len() > 128 {
            return Err(refused("bad_refresh_token", "refresh token not valid"));
        }
        let mut tx = self.pool.begin().await?;
        let row: Option<RefreshRow> = sqlx::query_as(
            "SELECT family, user_id, expires_at, used_at, revoked_at FROM refresh_tokens
                 WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(sha256(token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((family, user_id, expires_at, used_at, revoked_at)) = row else {
            return Err(refused("bad_refresh_token", "refresh token not valid"));
        };
        if revoked_at.is_some() {
            return Err(refused(
                "revoked_refresh_token",
                "refresh token revoked; log in again",
            ));
        }
        let user = users::get_by_id(self.pool, user_id).await?;
        let name = user
            .as_ref()
            .map_or("?".to_string(), |u| u.username.clone());
        if used_at.is_some() {
            revoke_family(&mut tx, &family).await?;
            audit::append_in(
                &mut tx,
                NewEntry::new(
                    ActorKind::User,
                    &name,
                    "auth.refresh_reused",
                    format!("user:{name}"),
                )
                .origin(origin)
                .after(serde_json::json!({"revoked": "token family"})),
            )
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
            tx.commit().await?;
            tracing::warn!(user = %name, "a used refresh token was presented again; its family is revoked");
            return Err(refused(
                "reused_refresh_token",
                "refresh token already used; every session of this login is revoked, log in again",
            ));
        }
        if expires_at <= Utc::now() {
            return Err(refused(
                "expired_refresh_token",
                "refresh token expired; log in again",
            ));
        }
        let Some(user) = user.filter(|u| !u.disabled) else {
            return Err(refused("disabled", "the user is disabled or gone"));
        };
        sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
            .bind(sha256(token))
            .execute(&mut *tx)
            .await?;
        let pair = self
            .issue(
                &mut tx,
                user.id,
                &user.username,
                user.role.0,
                user.sites.clone(),
                &family,
            )
            .await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Revokes the family of `token`. Unknown tokens are not an error (the
    /// answer says nothing about which tokens exist).
    pub async fn logout(&self, token: &str, origin: &Origin) -> Result<(), AuthError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT family, user_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(sha256(token))
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((family, user_id)) = row {
            revoke_family(&mut tx, &family).await?;
            let name = users::get_by_id(self.pool, user_id)
                .await?
                .map_or("?".to_string(), |u| u.username);
            audit::append_in(
                &mut tx,
                NewEntry::new(
                    ActorKind::User,
                    &name,
                    "auth.logout",
                    format!("user:{name}"),
                )
                .origin(origin),
            )
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn revoke_family(conn: &mut PgConnection, family: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every refresh token of a user (disabled, password changed).
pub async fn revoke_user(conn: &mut PgConnection, user_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}
