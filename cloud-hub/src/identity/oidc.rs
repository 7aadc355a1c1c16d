//! Single sign-on: access tokens issued by one configured OpenID Connect
//! provider (`[auth.oidc]`), verified against the keys it publishes.
//!
//! The verifier learns the provider's key set URL from its discovery document
//! and caches the keys. A token signed by a key it does not know makes it
//! fetch the set again (the provider rotated its key), but at most once per
//! `jwks_min_refresh_s`, so a flood of tokens with made-up key ids cannot
//! turn the hub into a load generator against the provider. The provider
//! being down never stops the hub: [`OidcVerifier::new`] does no I/O, the
//! keys are fetched on first use or by [`OidcVerifier::spawn_refresh`], and
//! until then tokens are refused with a message that says why.

mod claims;
mod fetch;

pub use crate::config::oidc::{MappedRole, OidcConfig};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    pub issuer: String,
    pub subject: String,
    pub name: Option<String>,
    /// Hub roles (`admin`, `engineer`, `operator`, `viewer`), highest first.
    pub roles: Vec<String>,
    /// `None`: every site.
    pub sites: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("[auth.oidc] {key}: {message}")]
    Config { key: &'static str, message: String },
    #[error("identity provider {issuer} unreachable: {detail}")]
    IssuerUnreachable { issuer: String, detail: String },
    #[error("identity provider {issuer} answered wrongly: {detail}")]
    IssuerInvalid { issuer: String, detail: String },
    #[error("not a signed JWT: {0}")]
    Malformed(String),
    #[error("token algorithm {0} not accepted (only RS256, ES256 and EdDSA)")]
    AlgNotAllowed(String),
    #[error("token signed by key {kid}, which the identity provider does not publish")]
    UnknownKey { kid: String },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("token issuer is not {expected}")]
    WrongIssuer { expected: String },
    #[error("token audience is not {expected}")]
    WrongAudience { expected: String },
    #[error("token lacks the claim {claim}")]
    MissingClaim { claim: String },
    #[error("token claim {claim} ({values}) maps to no hub role")]
    NoRole { claim: String, values: String },
}

impl OidcError {
    /// A short stable word for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::Config { .. } => "config",
            OidcError::IssuerUnreachable { .. } => "issuer_unreachable",
            OidcError::IssuerInvalid { .. } => "issuer_invalid",
            OidcError::Malformed(_) => "malformed",
            OidcError::AlgNotAllowed(_) => "alg_not_allowed",
            OidcError::UnknownKey { .. } => "unknown_key",
            OidcError::BadSignature => "bad_signature",
            OidcError::Expired => "expired",
            OidcError::NotYetValid => "not_yet_valid",
            OidcError::IssuedInFuture => "issued_in_future",
            OidcError::WrongIssuer { .. } => "wrong_issuer",
            OidcError::WrongAudience { .. } => "wrong_audience",
            OidcError::MissingClaim { .. } => "missing_claim",
            OidcError::NoRole { .. } => "no_role",
        }
    }
}

/// One usable public key.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

/// The provider's keys as last fetched.
struct KeySet {
    jwks_uri: String,
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys published without a `kid` (a token without one may use them).
    unnamed: Vec<Arc<Key>>,
    fetched_at: Instant,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

pub struct OidcVerifier {
    cfg: OidcConfig,
    fetcher: fetch::Fetcher,
    state: RwLock<State>,
    /// One fetch at a time: requests arriving meanwhile wait for its result.
    fetching: tokio::sync::Mutex<()>,
    jwks_fetches: AtomicU64,
}

impl OidcVerifier {
    /// Checks the settings and prepares the HTTP client; no network I/O.
    pub fn new(cfg: OidcConfig) -> Result<OidcVerifier, OidcError> {
        cfg.validate()
            .map_err(|(key, message)| OidcError::Config { key, message })?;
        let fetcher =
            fetch::Fetcher::new(Duration::from_secs(cfg.http_timeout_s)).map_err(|message| {
                OidcError::Config {
                    key: "issuer",
                    message,
                }
            })?;
        Ok(OidcVerifier {
            cfg,
            fetcher,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
            jwks_fetches: AtomicU64::new(0),
        })
    }

    /// [`OidcVerifier::new`], then fetches the discovery document and keys now.
    pub async fn discover(cfg: OidcConfig) -> Result<OidcVerifier, OidcError> {
        let v = OidcVerifier::new(cfg)?;
        v.fetch(true).await?;
        Ok(v)
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// Key set fetches so far (discovery included), for tests and diagnostics.
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(Ordering::Relaxed)
    }

    /// Whether the keys have been fetched at least once.
    pub fn is_ready(&self) -> bool {
        self.read_state().keys.is_some()
    }

    /// Keeps the keys fresh in the background: until the provider has been
    /// reached, retries with backoff (1 s doubling to 60 s); then fetches the
    /// key set every `jwks_max_age_s`, so requests rarely wait for a fetch.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let wait = match me.fetch(true).await {
                    Ok(_) => {
                        backoff = Duration::from_secs(1);
                        Duration::from_secs(me.cfg.jwks_max_age_s)
                    }
                    Err(e) if me.is_ready() => {
                        tracing::warn!(issuer = %me.cfg.issuer, error = %e, retry_in_s = backoff.as_secs(),
                            "could not refresh the identity provider's keys; the cached ones stay in use");
                        let w = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        w
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %me.cfg.issuer, error = %e, retry_in_s = backoff.as_secs(),
                            "identity provider not reachable; its tokens are refused until it is");
                        let w = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        w
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }

    /// Verifies an access token and maps its claims to the hub's roles.
    pub async fn verify(&self, token: &str) -> Result<OidcIdentity, OidcError> {
        let (alg, kid) = header(token)?;
        let key = self.key_for(alg, kid.as_deref()).await?;
        if key.alg != alg {
            return Err(OidcError::AlgNotAllowed(format!(
                "{alg:?} with a key published for {:?}",
                key.alg
            )));
        }
        let cfg = &self.cfg;
        let mut v = Validation::new(alg);
        v.leeway = cfg.clock_skew_s;
        v.validate_nbf = true;
        v.set_audience(&[&cfg.audience]);
        v.set_issuer(&[&cfg.issuer]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Value>(token, &key.key, &v).map_err(|e| self.claim_error(e))?;
        let claims = data.claims;
        // jsonwebtoken leaves `iat` alone; a token from the future means a
        // provider clock far off, or a forgery made to live longer.
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_u64()
                .ok_or_else(|| OidcError::Malformed("iat is not a number".into()))?;
            if iat > jsonwebtoken::get_current_timestamp() + cfg.clock_skew_s {
                return Err(OidcError::IssuedInFuture);
            }
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::MissingClaim {
                claim: "sub".into(),
            })?
            .to_string();
        let roles = claims::roles(&claims, &cfg.roles_claim, &cfg.role_map)?;
        let sites = match &cfg.sites_claim {
            Some(path) => claims::sites(&claims, path)?,
            None => None,
        };
        let name = ["name", "preferred_username"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .map(str::to_string);
        Ok(OidcIdentity {
            issuer: cfg.issuer.clone(),
            subject,
            name,
            roles,
            sites,
        })
    }

    fn claim_error(&self, e: jsonwebtoken::errors::Error) -> OidcError {
        match e.kind() {
            ErrorKind::InvalidSignature => OidcError::BadSignature,
            ErrorKind::ExpiredSignature => OidcError::Expired,
            ErrorKind::ImmatureSignature => OidcError::NotYetValid,
            ErrorKind::InvalidIssuer => OidcError::WrongIssuer {
                expected: self.cfg.issuer.clone(),
            },
            ErrorKind::InvalidAudience => OidcError::WrongAudience {
                expected: self.cfg.audience.clone(),
            },
            ErrorKind::MissingRequiredClaim(c) => OidcError::MissingClaim { claim: c.clone() },
            ErrorKind::InvalidAlgorithm => OidcError::AlgNotAllowed("for this key".into()),
            _ => OidcError::Malformed(e.to_string()),
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // data; the data is still consistent enough to read.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The key for a token's `kid`, fetching the key set if it is missing,
    /// stale, or lacks that key (each at most once per `jwks_min_refresh_s`).
    async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<Arc<Key>, OidcError> {
        let max_age = Duration::from_secs(self.cfg.jwks_max_age_s);
        let current = self.read_state().keys.clone();
        let set = match current {
            None => self.fetch(false).await?,
            // While another request's fetch is under way (the provider may be
            // slow or down), the cached keys answer instead of waiting for it.
            Some(set) if set.fetched_at.elapsed() > max_age => match self.fetching.try_lock() {
                Ok(one) => match self.fetch_locked(false, one).await {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        tracing::warn!(issuer = %self.cfg.issuer, error = %e,
                            "could not refresh the identity provider's keys; using the ones cached");
                        set
                    }
                },
                Err(_) => set,
            },
            Some(set) => set,
        };
        if let Some(k) = find(&set, alg, kid) {
            return Ok(k);
        }
        // Perhaps the provider rotated its key: look again (rate-limited).
        match self.fetch(false).await {
            Ok(fresh) => find(&fresh, alg, kid),
            Err(e) => {
                tracing::debug!(error = %e, "no key set refetch for an unknown key id");
                None
            }
        }
        .ok_or_else(|| OidcError::UnknownKey {
            kid: kid.unwrap_or("(none)").to_string(),
        })
    }

    /// Fetches the discovery document (first time) and the key set. Unless
    /// `force`, does nothing when the last attempt is under
    /// `jwks_min_refresh_s` old: then returns the cached keys, or, if there
    /// are none, the error of that attempt.
    async fn fetch(&self, force: bool) -> Result<Arc<KeySet>, OidcError> {
        let one = self.fetching.lock().await;
        self.fetch_locked(force, one).await
    }

    /// [`OidcVerifier::fetch`] holding the fetch lock (`_one`).
    async fn fetch_locked(
        &self,
        force: bool,
        _one: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<Arc<KeySet>, OidcError> {
        let min = Duration::from_secs(self.cfg.jwks_min_refresh_s);
        {
            let st = self.read_state();
            if !force && st.last_attempt.is_some_and(|t| t.elapsed() < min) {
                return match (&st.keys, &st.last_error) {
                    (Some(k), _) => Ok(Arc::clone(k)),
                    (None, e) => Err(OidcError::IssuerUnreachable {
                        issuer: self.cfg.issuer.clone(),
                        detail: format!(
                            "{} (next attempt within {}s)",
                            e.as_deref().unwrap_or("not reached yet"),
                            self.cfg.jwks_min_refresh_s
                        ),
                    }),
                };
            }
        }
        let known_uri = self.read_state().keys.as_ref().map(|k| k.jwks_uri.clone());
        let result = self.fetch_now(known_uri).await;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.last_attempt = Some(Instant::now());
        match result {
            Ok(set) => {
                let set = Arc::new(set);
                if st.keys.is_none() {
                    tracing::info!(issuer = %self.cfg.issuer, keys = set.by_kid.len() + set.unnamed.len(),
                        "identity provider reached");
                }
                st.keys = Some(Arc::clone(&set));
                st.last_error = None;
                Ok(set)
            }
            Err(e) => {
                st.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn fetch_now(&self, jwks_uri: Option<String>) -> Result<KeySet, OidcError> {
        let issuer = &self.cfg.issuer;
        let unreachable = |detail| OidcError::IssuerUnreachable {
            issuer: issuer.clone(),
            detail,
        };
        let invalid = |detail| OidcError::IssuerInvalid {
            issuer: issuer.clone(),
            detail,
        };
        let jwks_uri = match jwks_uri {
            Some(u) => u,
            None => {
                let doc = self
                    .fetcher
                    .get_json(&discovery_url(&self.cfg.issuer))
                    .await
                    .map_err(unreachable)?;
                // OpenID Connect Discovery 1.0, 4.3: the document must name
                // exactly the issuer it was fetched for.
                let named = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
                if named != issuer {
                    return Err(invalid(format!(
                        "its discovery document names issuer `{named}`, not `{issuer}`"
                    )));
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("its discovery document has no jwks_uri".into()))?;
                crate::config::oidc::check_url(uri).map_err(invalid)?;
                uri.to_string()
            }
        };
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let jwks = self
            .fetcher
            .get_json(&jwks_uri)
            .await
            .map_err(unreachable)?;
        let set = key_set(&jwks, jwks_uri).map_err(invalid)?;
        tracing::debug!(issuer = %issuer, keys = set.by_kid.len() + set.unnamed.len(), "identity provider keys fetched");
        Ok(set)
    }
}

fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

fn find(set: &KeySet, alg: Algorithm, kid: Option<&str>) -> Option<Arc<Key>> {
    match kid {
        Some(k) => set.by_kid.get(k).cloned(),
        None => {
            // Without a kid, only an unambiguous key will do.
            let mut fitting = set
                .unnamed
                .iter()
                .chain(set.by_kid.values())
                .filter(|k| k.alg == alg);
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Some(Arc::clone(k)),
                _ => None,
            }
        }
    }
}

/// The token header's `alg` (refused unless RS256, ES256 or EdDSA) and `kid`.
/// Read by hand so that `none` and HS* get their own answer instead of a
/// parse error, before any key is looked at.
fn header(token: &str) -> Result<(Algorithm, Option<String>), OidcError> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|e| OidcError::Malformed(format!("header: {e}")))?;
    let header: Value =
        serde_json::from_slice(&bytes).map_err(|e| OidcError::Malformed(format!("header: {e}")))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("(missing)");
    let alg = match alg {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        other => return Err(OidcError::AlgNotAllowed(other.chars().take(20).collect())),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(OidcError::Malformed("kid is not a string".into())),
    };
    Ok((alg, kid))
}

/// The usable signing keys of a JWKS document. Keys for encryption, of
/// other algorithms, or that do not parse are skipped: a provider may
/// publish more than the hub needs.
fn key_set(jwks: &Value, jwks_uri: String) -> Result<KeySet, String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("its key set has no `keys` list")?;
    let mut set = KeySet {
        jwks_uri,
        by_kid: HashMap::new(),
        unnamed: Vec::new(),
        fetched_at: Instant::now(),
    };
    for raw in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(alg) = signing_alg(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let key = Arc::new(Key { alg, key });
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.unnamed.push(key),
        }
    }
    Ok(set)
}

/// The one algorithm a key may verify: from its type and curve, and its
/// `alg` if it names one (which must then agree).
fn decoded_len(b64: &str) -> Option<usize> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .ok()
        .map(|b| b.len())
}

fn signing_alg(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        // jsonwebtoken slices the first 32 bytes of an Ed25519 key when it
        // verifies: a shorter `x` from a broken key set would panic there.
        AlgorithmParameters::OctetKeyPair(p)
            if p.curve == EllipticCurve::Ed25519 && decoded_len(&p.x) == Some(32) =>
        {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let named = match jwk.common.key_algorithm {
        None => return Some(by_type),
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
    };
    (named == by_type).then_some(by_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn token_with_header(h: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.", e.encode(h), e.encode("{}"))
    }

    #[test]
    fn keys_of_other_kinds_or_broken_ones_are_skipped() {
        let x32 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        let jwks = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ok", "x": x32},
            {"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": x32},
            {"kty": "OKP", "crv": "Ed25519", "kid": "hs", "alg": "HS256", "x": x32},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "w"}
        ]});
        let set = key_set(&jwks, "https://id.example/jwks".into()).expect("parses");
        let mut kids: Vec<&String> = set.by_kid.keys().collect();
        kids.sort();
        assert_eq!(kids, ["ok"]);
    }

    #[test]
    fn only_asymmetric_algorithms_pass_the_header_check() {
        for alg in ["none", "HS256", "HS512", "RS384", "PS256", "ES384"] {
            let t = token_with_header(&format!(r#"{{"alg":"{alg}","kid":"k"}}"#));
            assert_eq!(
                header(&t).map_err(|e| e.reason()),
                Err("alg_not_allowed"),
                "{alg}"
            );
        }
        let t = token_with_header(r#"{"alg":"EdDSA","kid":"k"}"#);
        assert_eq!(header(&t).ok(), Some((Algorithm::EdDSA, Some("k".into()))));
        assert_eq!(header("a.b").map_err(|e| e.reason()), Err("malformed"));
    }
}
