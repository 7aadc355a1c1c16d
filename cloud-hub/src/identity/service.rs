//! Turns a bearer token into a [`Principal`]: an API key (`qik_...`), a token
//! the hub signed (its `iss`), or, when `[auth.oidc]` is set, a token of
//! the configured OpenID Connect issuer. Owns the signing keys and the
//! brute-force limiter.

use super::limiter::Limiter;
use super::oidc::OidcVerifier;
use super::sessions::Sessions;
use super::signing::Signer;
use super::{AuthError, Principal, Role, api_keys};
use crate::audit::ActorKind;
use crate::config::AuthConfig;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

pub struct Identity {
    pub pool: PgPool,
    pub signer: Signer,
    pub refresh_ttl: Duration,
    /// Login, refresh and logout attempts per source address.
    pub limiter: Limiter,
    /// `[auth.oidc]`: tokens of the configured OpenID Connect provider.
    pub oidc: Option<Arc<OidcVerifier>>,
}

impl Identity {
    pub async fn open(pool: PgPool, cfg: &AuthConfig) -> Result<Identity, AuthError> {
        let signer = Signer::load(
            pool.clone(),
            cfg.issuer.clone(),
            cfg.audience.clone(),
            Duration::from_secs(cfg.access_token_ttl_s),
            Duration::from_secs(cfg.signing_key_rotation_days.saturating_mul(86_400)),
        )
        .await?;
        // No I/O here: the provider may be down while the hub starts; the
        // keys are fetched in the background and on first use.
        let oidc = match &cfg.oidc {
            Some(c) => {
                let v = Arc::new(
                    OidcVerifier::new(c.clone()).map_err(|e| AuthError::Internal(e.to_string()))?,
                );
                v.spawn_refresh();
                Some(v)
            }
            None => None,
        };
        Ok(Identity {
            pool,
            signer,
            refresh_ttl: Duration::from_secs(cfg.refresh_token_ttl_s),
            limiter: Limiter::new(cfg.login_attempts_per_minute, Duration::from_secs(60)),
            oidc,
        })
    }

    pub fn sessions(&self) -> Sessions<'_> {
        Sessions {
            pool: &self.pool,
            signer: &self.signer,
            refresh_ttl: self.refresh_ttl,
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if token.starts_with(api_keys::PREFIX) {
            return api_keys::authenticate(&self.pool, token).await;
        }
        if token.len() > 16 * 1024 {
            return Err(AuthError::unauthenticated(
                "malformed_token",
                "token too long",
            ));
        }
        if self.signer.is_ours(token) {
            let c = self.signer.verify(token).await?;
            return Ok(Principal {
                kind: ActorKind::User,
                id: c.sub,
                role: c.role,
                sites: c.sites,
            });
        }
        if let Some(oidc) = &self.oidc {
            return oidc_principal(oidc, token).await;
        }
        Err(AuthError::unauthenticated(
            "unknown_issuer",
            "not a token of this hub nor an API key",
        ))
    }

    /// Rotates the signing key when due; checks hourly.
    pub async fn run_rotation(self: Arc<Self>, mut stop: qi_common::shutdown::Stop) {
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
            if let Err(e) = self.signer.rotate_if_due().await {
                tracing::warn!(error = %e, "signing key rotation check failed; retried in an hour");
            }
        }
    }
}

/// A provider's token as a principal with the highest of its mapped roles.
async fn oidc_principal(oidc: &OidcVerifier, token: &str) -> Result<Principal, AuthError> {
    let id = oidc
        .verify(token)
        .await
        .map_err(|e| AuthError::unauthenticated(e.reason(), e.to_string()))?;
    let role = id
        .roles
        .iter()
        .filter_map(|r| Role::parse(r))
        .max()
        .ok_or_else(|| AuthError::unauthenticated("no_role", "token maps to no hub role"))?;
    Ok(Principal {
        kind: ActorKind::Oidc,
        id: format!("oidc:{}", id.subject),
        role,
        sites: id.sites,
    })
}
