//! Detached JWS (RFC 7515 section 7.2.x compact form, appendix F): the
//! protected header `{"alg":"ES256","kid":...,"x5c":[...]}`, the payload
//! (the certificate's JSON mirror, or a revocation list) sent separately,
//! `BASE64URL(header) + ".." + BASE64URL(signature)`. The signing input is
//! `BASE64URL(header) + "." + BASE64URL(payload)`, as any JOSE library
//! computes it for a detached payload.

use super::pki::{IssuingKey, KeyError};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    kid: String,
    x5c: Vec<String>,
}

/// The detached compact JWS of `payload`.
pub fn sign_detached(payload: &[u8], key: &IssuingKey) -> Result<String, KeyError> {
    let header = Header {
        alg: "ES256".into(),
        kid: key.kid().to_string(),
        x5c: key.chain().iter().map(|c| B64.encode(c)).collect(),
    };
    let h = B64URL.encode(serde_json::to_vec(&header).unwrap_or_default());
    let input = format!("{h}.{}", B64URL.encode(payload));
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{h}..{}", B64URL.encode(sig)))
}

/// Checks a detached JWS over `payload` with the header's first `x5c`
/// certificate; returns the header's chain (DER) for the chain check.
pub fn verify_detached(jws: &str, payload: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut parts = jws.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the JWS is not three dot-separated parts".into());
    };
    if !p.is_empty() {
        return Err("the JWS carries its payload: a detached JWS has an empty middle part".into());
    }
    let header: Header = B64URL
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the JWS header is not base64url JSON of alg, kid and x5c")?;
    if header.alg != "ES256" {
        return Err(format!(
            "JWS algorithm {:?}: only ES256 is accepted",
            header.alg
        ));
    }
    let chain: Vec<Vec<u8>> = header
        .x5c
        .iter()
        .map(|c| B64.decode(c))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("x5c is not base64: {e}"))?;
    let leaf = chain
        .first()
        .ok_or("the JWS header has no x5c certificate")?;
    let point = super::pki::public_key(leaf)?;
    let sig = B64URL
        .decode(s)
        .map_err(|e| format!("the JWS signature is not base64url: {e}"))?;
    let input = format!("{h}.{}", B64URL.encode(payload));
    if !super::pki::verify_p256(&point, input.as_bytes(), &sig) {
        return Err("the JWS signature does not verify over the JSON (changed after signing, or signed by another key)".into());
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::testkeys;

    #[test]
    fn a_detached_jws_has_an_es256_header_with_the_chain_and_verifies() {
        let (key, _) = testkeys::issuing_key();
        let payload = br#"{"id":"QI-CERT-2026-000001","value":395.0}"#;
        let jws = sign_detached(payload, &key).expect("sign");
        let (h, rest) = jws.split_once("..").expect("detached");
        let header: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(h).expect("b64")).expect("json");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], key.kid());
        assert_eq!(header["x5c"][0], B64.encode(&key.chain()[0]));
        assert_eq!(B64URL.decode(rest).expect("sig").len(), 64);
        assert_eq!(
            verify_detached(&jws, payload).expect("verifies"),
            key.chain()
        );
    }

    #[test]
    fn a_changed_payload_or_signature_or_algorithm_is_refused() {
        let (key, _) = testkeys::issuing_key();
        let payload = br#"{"value":395.0}"#;
        let jws = sign_detached(payload, &key).expect("sign");
        assert!(verify_detached(&jws, br#"{"value":396.0}"#).is_err());
        let (other, _) = testkeys::issuing_key();
        let theirs = sign_detached(payload, &other).expect("sign");
        let swapped = format!(
            "{}..{}",
            jws.split_once("..").expect("h").0,
            theirs.split_once("..").expect("s").1
        );
        assert!(verify_detached(&swapped, payload).is_err());
        let none = format!(
            "{}..{}",
            B64URL.encode(br#"{"alg":"none","kid":"x","x5c":[]}"#),
            jws.split_once("..").expect("s").1
        );
        assert!(
            verify_detached(&none, payload)
                .expect_err("none")
                .contains("only ES256")
        );
        let attached = jws.replacen("..", &format!(".{}.", B64URL.encode(payload)), 1);
        assert!(verify_detached(&attached, payload).is_err());
    }
}
