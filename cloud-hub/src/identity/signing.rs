//! The hub's access tokens: JWTs signed with Ed25519 (`alg` EdDSA), each
//! naming its key in `kid`. Keys live in `signing_keys` so every replica
//! signs and verifies alike; the newest unretired key signs, and a retired
//! key keeps verifying until the last token it signed has expired, so a
//! rotation (scheduled, or `cloud-hub signing-key rotate`) logs nobody out.
//! The public keys are served as a JWKS for other verifiers.

use super::{AuthError, Role};
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// kid, private_pkcs8, public_key, created_at, retired_at
type KeyRow = (
    String,
    Vec<u8>,
    Vec<u8>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// Tokens within this much of their `exp`/`nbf` are still taken (clocks of
/// hub replicas differ a little).
pub const LEEWAY_S: u64 = 30;
/// An unknown `kid` reloads the keys from the database at most this often
/// (another replica may have rotated; a flood of forged kids must not turn
/// into a flood of queries).
const RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Advisory lock key taken while creating a signing key, so replicas
/// starting together create one, not several.
const KEYGEN_LOCK: i64 = 0x5149_4b45_5947_454e;

/// What a hub access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The username.
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<Vec<String>>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

struct Keys {
    /// kid and key of the newest unretired key.
    current: Option<(String, EncodingKey, DateTime<Utc>)>,
    verify: HashMap<String, DecodingKey>,
    /// kid -> raw 32-byte public key, for the JWKS.
    public: Vec<(String, Vec<u8>)>,
}

pub struct Signer {
    pool: PgPool,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    rotation: Duration,
    keys: RwLock<Keys>,
    last_reload: std::sync::Mutex<Instant>,
}

impl Signer {
    /// Loads the keys, creating the first (or a due replacement) if needed.
    pub async fn load(
        pool: PgPool,
        issuer: String,
        audience: String,
        access_ttl: Duration,
        rotation: Duration,
    ) -> Result<Signer, AuthError> {
        let s = Signer {
            pool,
            issuer,
            audience,
            access_ttl,
            rotation,
            keys: RwLock::new(Keys {
                current: None,
                verify: HashMap::new(),
                public: Vec::new(),
            }),
            last_reload: std::sync::Mutex::new(Instant::now()),
        };
        s.rotate_if_due().await?;
        Ok(s)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Creates a key when there is none or the current one is older than the
    /// rotation period; then reloads.
    pub async fn rotate_if_due(&self) -> Result<(), AuthError> {
        let newest: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(created_at) FROM signing_keys WHERE retired_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        let due = match newest {
            None => true,
            Some(t) => (Utc::now() - t).to_std().unwrap_or_default() >= self.rotation,
        };
        if due {
            self.rotate(false).await?;
        } else {
            self.reload().await?;
        }
        Ok(())
    }

    /// Makes a new signing key and retires the others (they keep verifying
    /// for one token lifetime). With `force` false, does nothing if another
    /// replica rotated a moment ago.
    pub async fn rotate(&self, force: bool) -> Result<String, AuthError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEYGEN_LOCK)
            .execute(&mut *tx)
            .await?;
        let newest: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT kid, created_at FROM signing_keys WHERE retired_at IS NULL
             ORDER BY created_at DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((kid, t)) = &newest
            && !force
            && (Utc::now() - *t).to_std().unwrap_or_default() < self.rotation
        {
            let kid = kid.clone();
            tx.commit().await?;
            self.reload().await?;
            return Ok(kid);
        }
        let (kid, pkcs8, public) = generate()?;
        sqlx::query("UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_pkcs8, public_key) VALUES ($1, $2, $3)",
        )
        .bind(&kid)
        .bind(&pkcs8)
        .bind(&public)
        .execute(&mut *tx)
        .await?;
        // Keys retired longer ago than any token they signed can live.
        let keep_s = self.access_ttl.as_secs() as f64 + LEEWAY_S as f64 + 60.0;
        sqlx::query(
            "DELETE FROM signing_keys WHERE retired_at < now() - make_interval(secs => $1)",
        )
        .bind(keep_s)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(kid, "new token signing key");
        self.reload().await?;
        Ok(kid)
    }

    /// Reads the keys that may verify tokens now.
    pub async fn reload(&self) -> Result<(), AuthError> {
        let keep_s = self.access_ttl.as_secs() as f64 + LEEWAY_S as f64;
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, private_pkcs8, public_key, created_at, retired_at FROM signing_keys
                 WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
                 ORDER BY created_at",
        )
        .bind(keep_s)
        .fetch_all(&self.pool)
        .await?;
        let mut keys = Keys {
            current: None,
            verify: HashMap::new(),
            public: Vec::new(),
        };
        for (kid, pkcs8, public, created, retired) in rows {
            if retired.is_none() {
                keys.current = Some((kid.clone(), EncodingKey::from_ed_der(&pkcs8), created));
            }
            keys.verify
                .insert(kid.clone(), DecodingKey::from_ed_der(&public));
            keys.public.push((kid, public));
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    /// Signs an access token for `sub`; returns it with its lifetime.
    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        sites: Option<Vec<String>>,
    ) -> Result<String, AuthError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let Some((kid, key, _)) = &keys.current else {
            return Err(AuthError::Internal("no token signing key loaded".into()));
        };
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_string(),
            role,
            sites,
            iat: now,
            nbf: now,
            exp: now + self.access_ttl.as_secs() as i64,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| AuthError::Internal(format!("cannot sign a token: {e}")))
    }

    /// Whether `token` looks like one of ours (its `iss`), without trusting it.
    pub fn is_ours(&self, token: &str) -> bool {
        unverified_issuer(token).as_deref() == Some(self.issuer.as_str())
    }

    /// Checks signature, issuer, audience and times.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            AuthError::unauthenticated("malformed_token", format!("malformed token: {e}"))
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::unauthenticated(
                "wrong_algorithm",
                format!("hub tokens are signed with EdDSA, not {:?}", header.alg),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::unauthenticated("no_kid", "the token names no key (kid)"))?;
        if self.key(&kid).is_none() && self.may_reload() {
            self.reload().await?;
        }
        let key = self.key(&kid).ok_or_else(|| {
            AuthError::unauthenticated("unknown_key", format!("unknown signing key {kid:?}"))
        })?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_S;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                let reason = match e.kind() {
                    K::ExpiredSignature => "expired",
                    K::ImmatureSignature => "not_yet_valid",
                    K::InvalidAudience => "wrong_audience",
                    K::InvalidIssuer => "wrong_issuer",
                    K::InvalidSignature => "bad_signature",
                    _ => "invalid_token",
                };
                AuthError::unauthenticated(reason, format!("token refused: {e}"))
            })
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .verify
            .get(kid)
            .cloned()
    }

    fn may_reload(&self) -> bool {
        self.last_reload
            .lock()
            .map(|t| t.elapsed() >= RELOAD_MIN_INTERVAL)
            .unwrap_or(false)
    }

    /// The public keys as a JSON Web Key Set (RFC 8037 OKP keys).
    pub fn jwks(&self) -> serde_json::Value {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        serde_json::json!({
            "keys": keys.public.iter().map(|(kid, x)| serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                "kid": kid, "x": b64.encode(x),
            })).collect::<Vec<_>>()
        })
    }

    /// When the current key was made (for `/ready` and the rotation loop).
    pub fn current_key_created(&self) -> Option<DateTime<Utc>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current
            .as_ref()
            .map(|c| c.2)
    }
}

/// The `iss` of a JWT's payload, read without checking anything.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// A new Ed25519 key: (kid, PKCS#8 DER, raw public key).
fn generate() -> Result<(String, Vec<u8>, Vec<u8>), AuthError> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| AuthError::Internal("cannot generate an Ed25519 key".into()))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| AuthError::Internal("cannot read the new Ed25519 key".into()))?;
    let public = pair.public_key().as_ref().to_vec();
    let digest = super::sha256(&base64::engine::general_purpose::STANDARD.encode(&public));
    let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]);
    Ok((kid, pkcs8.as_ref().to_vec(), public))
}
