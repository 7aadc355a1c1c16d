//! Single sign-on: the hub's verifier (`cloud_hub::identity::oidc`) against
//! a real OpenID Connect issuer nobody here wrote (npm's `oidc-provider`,
//! run as a child process), over real HTTP. Valid tokens come from the
//! issuer's client-credentials grant; the bad ones are either issued by it
//! with a bad claim (expired, wrong audience...) or forged here with keys
//! this test generates.
// qi-test: tier-independent (the identity provider and the hub's token checks; no database): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use cloud_hub::identity::oidc::{MappedRole, OidcConfig, OidcError, OidcVerifier};
use e2e_tests::free_port;
use e2e_tests::oidc::{
    HUB_AUDIENCE, Issuer, OTHER_AUDIENCE, forgeable_claims as claims, kid_of, unsigned,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Clients of the test issuer: `roles` and `sites` claims as a provider's
/// groups would carry them, some with a time claim moved (`shift`, seconds
/// from now) or a standard claim replaced (`override`).
fn clients() -> Vec<Value> {
    let viewer = json!({"roles": ["qi-viewer", "printer-users"], "sites": ["s1", "s2"]});
    let with = |id: &str, extra: Value| {
        let mut c = json!({"client_id": id, "claims": viewer});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        c
    };
    vec![
        with(
            "viewer",
            json!({"claims": {"roles": ["qi-viewer", "printer-users"], "sites": ["s1", "s2"], "name": "Vera Viewer"}}),
        ),
        with(
            "eng-es",
            json!({"alg": "ES256", "claims": {"roles": ["qi-operator", "qi-engineer"], "sites": ["*"]}}),
        ),
        with(
            "admin-ed",
            json!({"alg": "EdDSA", "claims": {"roles": "qi-admin", "realm_access": {"roles": ["qi-admin"]}, "sites": ["*"]}}),
        ),
        with(
            "nobody",
            json!({"claims": {"roles": ["printer-users"], "sites": ["s1"]}}),
        ),
        with("no-sites", json!({"claims": {"roles": ["qi-viewer"]}})),
        with("expired", json!({"shift": {"exp": -120}})),
        with("just-expired", json!({"shift": {"exp": -30}})),
        with("future", json!({"shift": {"nbf": 600}})),
        with("nearly-valid", json!({"shift": {"nbf": 30}})),
        with("iat-future", json!({"shift": {"iat": 600}})),
        with(
            "wrong-iss",
            json!({"override": {"iss": "http://127.0.0.1:9/other"}}),
        ),
    ]
}

async fn issuer(dir: &tempfile::TempDir) -> Result<Issuer> {
    Issuer::start(dir.path(), "issuer", free_port(), &clients()).await
}

fn config(issuer: &str) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_string(),
        audience: HUB_AUDIENCE.to_string(),
        roles_claim: "roles".into(),
        role_map: BTreeMap::from([
            ("qi-admin".to_string(), MappedRole::Admin),
            ("qi-engineer".to_string(), MappedRole::Engineer),
            ("qi-operator".to_string(), MappedRole::Operator),
            ("qi-viewer".to_string(), MappedRole::Viewer),
        ]),
        sites_claim: Some("sites".into()),
        clock_skew_s: 60,
        jwks_min_refresh_s: 10,
        jwks_max_age_s: 3600,
        http_timeout_s: 5,
    }
}

/// The reason a token is refused (or "accepted").
async fn outcome(v: &OidcVerifier, token: &str) -> String {
    match v.verify(token).await {
        Ok(_) => "accepted".into(),
        Err(e) => e.reason().into(),
    }
}

#[tokio::test]
async fn valid_tokens_map_to_the_hubs_roles_and_sites() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let iss = issuer(&dir).await?;
    let v = OidcVerifier::discover(config(&iss.url)).await?;

    // RS256; an unmapped group is ignored; the sites claim limits the user.
    let id = v.verify(&iss.token("viewer", HUB_AUDIENCE).await?).await?;
    assert_eq!(id.issuer, iss.url);
    assert_eq!(id.subject, "viewer");
    assert_eq!(id.name.as_deref(), Some("Vera Viewer"));
    assert_eq!(id.roles, ["viewer"]);
    assert_eq!(id.sites, Some(vec!["s1".to_string(), "s2".to_string()]));

    // ES256; two mapped groups, highest first; "*" means every site.
    let id = v.verify(&iss.token("eng-es", HUB_AUDIENCE).await?).await?;
    assert_eq!(id.roles, ["engineer", "operator"]);
    assert_eq!(id.sites, None);

    // EdDSA; a role claim written as one string.
    let id = v
        .verify(&iss.token("admin-ed", HUB_AUDIENCE).await?)
        .await?;
    assert_eq!(id.roles, ["admin"]);

    // No group maps to a hub role: refused.
    let e = v.verify(&iss.token("nobody", HUB_AUDIENCE).await?).await;
    assert!(matches!(e, Err(OidcError::NoRole { .. })), "{e:?}");
    // sites_claim is set, so a token without it is refused (not given every site).
    let no_sites = iss.token("no-sites", HUB_AUDIENCE).await?;
    assert_eq!(outcome(&v, &no_sites).await, "missing_claim");

    // Without sites_claim, the same token is accepted for every site.
    let mut cfg = config(&iss.url);
    cfg.sites_claim = None;
    let unscoped = OidcVerifier::discover(cfg).await?;
    assert_eq!(unscoped.verify(&no_sites).await?.sites, None);

    // roles_claim as a dotted path into a nested claim (Keycloak's layout).
    let mut cfg = config(&iss.url);
    cfg.roles_claim = "realm_access.roles".into();
    let nested = OidcVerifier::discover(cfg).await?;
    let id = nested
        .verify(&iss.token("admin-ed", HUB_AUDIENCE).await?)
        .await?;
    assert_eq!(id.roles, ["admin"]);
    assert_eq!(
        outcome(&nested, &iss.token("viewer", HUB_AUDIENCE).await?).await,
        "missing_claim"
    );

    // role_map decides: map the printer group to operator and "nobody" gets in.
    let mut cfg = config(&iss.url);
    cfg.role_map
        .insert("printer-users".into(), MappedRole::Operator);
    let wider = OidcVerifier::discover(cfg).await?;
    let id = wider
        .verify(&iss.token("nobody", HUB_AUDIENCE).await?)
        .await?;
    assert_eq!(id.roles, ["operator"]);
    Ok(())
}

#[tokio::test]
async fn the_issuers_key_rotation_is_followed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let iss = issuer(&dir).await?;
    let mut cfg = config(&iss.url);
    cfg.jwks_min_refresh_s = 1;
    cfg.jwks_max_age_s = 2;
    let v = OidcVerifier::discover(cfg).await?;

    let old = iss.token("viewer", HUB_AUDIENCE).await?;
    assert_eq!(outcome(&v, &old).await, "accepted");
    let fetches = v.jwks_fetches();

    // The issuer rotates: a new key signs, the old one is still published.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new_kid = iss.rotate("RS256").await?;
    let new = iss.token("viewer", HUB_AUDIENCE).await?;
    ensure!(kid_of(&new)? == new_kid && new_kid != kid_of(&old)?);
    assert_eq!(outcome(&v, &new).await, "accepted", "{}", iss.log_tail());
    assert_eq!(v.jwks_fetches(), fetches + 1, "one refetch for the new kid");
    assert_eq!(
        outcome(&v, &old).await,
        "accepted",
        "old key still published"
    );
    assert_eq!(v.jwks_fetches(), fetches + 1, "known kids fetch nothing");

    // The old key is retired; once the cached set is older than
    // jwks_max_age_s it is fetched again and the old tokens stop working.
    iss.retire(&kid_of(&old)?).await?;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(outcome(&v, &old).await, "unknown_key");
    assert_eq!(outcome(&v, &new).await, "accepted");
    Ok(())
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_clock_skew() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let iss = issuer(&dir).await?;
    let v = OidcVerifier::discover(config(&iss.url)).await?;
    let mut strict = config(&iss.url);
    strict.clock_skew_s = 0;
    let strict = OidcVerifier::discover(strict).await?;

    for (client, skew_60, skew_0) in [
        ("expired", "expired", "expired"),
        ("just-expired", "accepted", "expired"),
        ("future", "not_yet_valid", "not_yet_valid"),
        ("nearly-valid", "accepted", "not_yet_valid"),
        ("iat-future", "issued_in_future", "issued_in_future"),
    ] {
        let t = iss.token(client, HUB_AUDIENCE).await?;
        assert_eq!(outcome(&v, &t).await, skew_60, "{client}, skew 60 s");
        assert_eq!(outcome(&strict, &t).await, skew_0, "{client}, skew 0");
    }
    Ok(())
}

/// A fresh Ed25519 key made here (PKCS#8) and its public half as a JWK `x`.
fn ed25519_key() -> Result<(EncodingKey, String)> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| anyhow::anyhow!("ed25519 key: {e}"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| anyhow::anyhow!("ed25519 key: {e}"))?;
    Ok((
        EncodingKey::from_ed_der(pkcs8.as_ref()),
        B64.encode(pair.public_key().as_ref()),
    ))
}

#[tokio::test]
async fn forged_and_misdirected_tokens_are_refused_with_their_reason() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let iss = issuer(&dir).await?;
    let v = OidcVerifier::discover(config(&iss.url)).await?;
    let good = iss.token("viewer", HUB_AUDIENCE).await?;
    let rs_kid = kid_of(&good)?;
    let ed_kid = kid_of(&iss.token("admin-ed", HUB_AUDIENCE).await?)?;

    // Issued by the real issuer, but for another resource, or naming another issuer.
    let other = iss.token("viewer", OTHER_AUDIENCE).await?;
    assert_eq!(outcome(&v, &other).await, "wrong_audience");
    let wrong_iss = iss.token("wrong-iss", HUB_AUDIENCE).await?;
    assert_eq!(outcome(&v, &wrong_iss).await, "wrong_issuer");

    // A real token with its payload changed (viewer -> admin).
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1])?)?;
    payload["roles"] = json!(["qi-admin"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(payload.to_string()),
        parts[2]
    );
    assert_eq!(outcome(&v, &tampered).await, "bad_signature");

    // alg none, with the real kid.
    let none = unsigned(&json!({"alg": "none", "kid": rs_kid}), &claims(&iss.url));
    assert_eq!(outcome(&v, &none).await, "alg_not_allowed");

    // HS256 keyed with the issuer's public key (the published JWK's bytes):
    // a verifier that let the header pick the algorithm would accept it.
    let jwks = iss.jwks().await?;
    let rsa_jwk = jwks["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == json!(rs_kid)))
        .context("RSA key in the JWKS")?;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(rs_kid.clone());
    let hs = jsonwebtoken::encode(
        &h,
        &claims(&iss.url),
        &EncodingKey::from_secret(rsa_jwk.to_string().as_bytes()),
    )?;
    assert_eq!(outcome(&v, &hs).await, "alg_not_allowed");

    // Signed by a key of this test's: under a made-up kid, and under the
    // issuer's real EdDSA kid.
    let (key, _) = ed25519_key()?;
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("forged-key".into());
    let unknown = jsonwebtoken::encode(&h, &claims(&iss.url), &key)?;
    let e = v.verify(&unknown).await;
    assert!(
        matches!(&e, Err(OidcError::UnknownKey { kid }) if kid == "forged-key"),
        "{e:?}"
    );
    h.kid = Some(ed_kid);
    let impostor = jsonwebtoken::encode(&h, &claims(&iss.url), &key)?;
    assert_eq!(outcome(&v, &impostor).await, "bad_signature");

    // Not a JWT at all.
    assert_eq!(outcome(&v, "not-a-token").await, "malformed");
    // Every refusal has a message to send back.
    let msg = v.verify(&other).await.err().context("refused")?.to_string();
    assert!(msg.contains(HUB_AUDIENCE), "{msg}");
    // The good token still passes after all that.
    assert_eq!(outcome(&v, &good).await, "accepted");
    Ok(())
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_fetches_the_key_set_at_most_once_per_interval() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let iss = issuer(&dir).await?;
    let mut cfg = config(&iss.url);
    cfg.jwks_min_refresh_s = 2;
    let v = Arc::new(OidcVerifier::discover(cfg).await?);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = iss.jwks_requests().await?;

    let (key, _) = ed25519_key()?;
    let mut forged = Vec::new();
    for i in 0..200 {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(format!("forged-{i}"));
        forged.push(jsonwebtoken::encode(&h, &claims(&iss.url), &key)?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = forged
        .into_iter()
        .map(|t| {
            let v = Arc::clone(&v);
            tokio::spawn(async move { v.verify(&t).await.map_err(|e| e.reason()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await?.err(), Some("unknown_key"));
    }
    let elapsed = started.elapsed();
    let fetched = iss.jwks_requests().await? - before;
    println!("200 forged kids in {elapsed:?}: {fetched} key set fetch(es) at the issuer");
    // 200 forged kids within one interval: one refetch (the first), not 200.
    ensure!(
        elapsed < Duration::from_secs(2) || fetched <= 2,
        "took {elapsed:?}, fetched {fetched}"
    );
    assert!(
        fetched <= 1 + elapsed.as_secs() / 2,
        "fetched {fetched} times in {elapsed:?}"
    );
    assert!(
        fetched >= 1,
        "an unknown kid after the interval refetches once"
    );
    Ok(())
}

#[tokio::test]
async fn the_verifier_waits_for_an_issuer_that_is_down_at_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut cfg = config(&format!("http://127.0.0.1:{port}"));
    cfg.jwks_min_refresh_s = 1;
    // As the hub starts it: no I/O, so an unreachable provider cannot stop it.
    let v = Arc::new(OidcVerifier::new(cfg)?);
    let refresh = v.spawn_refresh();
    let forged = unsigned(&json!({"alg": "RS256", "kid": "k"}), &json!({}));
    let e = v.verify(&forged).await.err().context("refused")?;
    assert_eq!(e.reason(), "issuer_unreachable", "{e}");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    assert!(!v.is_ready());

    let iss = Issuer::start(dir.path(), "late-issuer", port, &clients()).await?;
    let token = iss.token("viewer", HUB_AUDIENCE).await?;
    e2e_tests::wait_for(
        "the verifier to reach the issuer",
        Duration::from_secs(20),
        || {
            let (v, token) = (Arc::clone(&v), token.clone());
            async move { Ok(v.verify(&token).await.ok()) }
        },
    )
    .await?;
    refresh.abort();
    Ok(())
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let iss = issuer(&dir).await?;
    // Same server, other spelling: the document says 127.0.0.1.
    let cfg = config(&format!("http://localhost:{}", iss.port));
    match OidcVerifier::discover(cfg).await {
        Err(e @ OidcError::IssuerInvalid { .. }) => {
            assert!(e.to_string().contains(&iss.url), "{e}")
        }
        Err(e) => bail!("wrong refusal: {e}"),
        Ok(_) => bail!("an issuer that names another was accepted"),
    }
    Ok(())
}

#[tokio::test]
async fn an_issuer_that_accepts_but_never_answers_times_out() -> Result<()> {
    // A socket that accepts connections and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut cfg = config(&format!("http://127.0.0.1:{port}"));
    cfg.http_timeout_s = 1;
    let started = Instant::now();
    let e = OidcVerifier::discover(cfg).await.err().context("refused")?;
    let took = started.elapsed();
    assert_eq!(e.reason(), "issuer_unreachable", "{e}");
    assert!(e.to_string().contains("no answer within 1s"), "{e}");
    // Generous bound: only shows the timeout applies, not how fast anything is.
    assert!(took < Duration::from_secs(10), "{took:?}");
    hold.abort();
    Ok(())
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_provider_is_down() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut iss = issuer(&dir).await?;
    let mut cfg = config(&iss.url);
    cfg.jwks_min_refresh_s = 1;
    cfg.jwks_max_age_s = 1;
    let v = OidcVerifier::discover(cfg).await?;
    let token = iss.token("viewer", HUB_AUDIENCE).await?;
    assert_eq!(outcome(&v, &token).await, "accepted");

    iss.stop()?;
    // The cached set is now older than jwks_max_age_s and cannot be
    // refreshed: the failure is logged, the keys stay in use.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(outcome(&v, &token).await, "accepted");
    // A key it never saw cannot be fetched: refused as unknown, not as an outage.
    let (key, _) = ed25519_key()?;
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("new-kid".into());
    let t = jsonwebtoken::encode(&h, &claims(&iss.url), &key)?;
    assert_eq!(outcome(&v, &t).await, "unknown_key");
    Ok(())
}
