//! The enveloped XML signature (XMLDSig 1.1): `ds:Signature` as the root's
//! last child, SignedInfo canonicalized with Exclusive C14N, ECDSA P-256 /
//! SHA-256 (`xmldsig-more#ecdsa-sha256`, r||s), one Reference to the whole
//! document (URI="") with the enveloped-signature and exc-c14n transforms,
//! SHA-256 digest, and KeyInfo/X509Data with the issuing chain.
//!
//! The document (`document::Certificate::to_xml`) is written canonical, so
//! the Reference's digest is the SHA-256 of its bytes. Verifying here is
//! strict: the signature must be exactly the form [`sign`] writes (any
//! other is refused, not interpreted); `xmlsec1 --verify` is the general
//! verifier the tests hold it to.

use super::pki::{IssuingKey, KeyError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::Digest;

pub const DS_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// SignedInfo as it stands in the document (its `ds` prefix declared by
/// the enclosing `ds:Signature`) or, with `declare`, canonicalized alone
/// (exc-c14n renders the declaration on its apex).
fn signed_info(digest_b64: &str, declare: bool) -> String {
    let ns = if declare {
        format!(" xmlns:ds=\"{DS_NS}\"")
    } else {
        String::new()
    };
    format!(
        "<ds:SignedInfo{ns}><ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"></ds:CanonicalizationMethod>\
<ds:SignatureMethod Algorithm=\"{ECDSA_SHA256}\"></ds:SignatureMethod>\
<ds:Reference URI=\"\"><ds:Transforms><ds:Transform Algorithm=\"{ENVELOPED}\"></ds:Transform>\
<ds:Transform Algorithm=\"{EXC_C14N}\"></ds:Transform></ds:Transforms>\
<ds:DigestMethod Algorithm=\"{SHA256}\"></ds:DigestMethod><ds:DigestValue>{digest_b64}</ds:DigestValue>\
</ds:Reference></ds:SignedInfo>"
    )
}

/// The whole `ds:Signature` element.
fn signature_element(digest_b64: &str, sig_b64: &str, chain: &[Vec<u8>]) -> String {
    let certs: String = chain
        .iter()
        .map(|c| format!("<ds:X509Certificate>{}</ds:X509Certificate>", B64.encode(c)))
        .collect();
    format!(
        "<ds:Signature xmlns:ds=\"{DS_NS}\">{}<ds:SignatureValue>{sig_b64}</ds:SignatureValue>\
<ds:KeyInfo><ds:X509Data>{certs}</ds:X509Data></ds:KeyInfo></ds:Signature>",
        signed_info(digest_b64, false)
    )
}

const ROOT_END: &str = "</dcc:digitalCalibrationCertificate>";

/// The signed document: XML declaration, then `root` (canonical, unsigned)
/// with the signature inserted before its end tag.
pub fn sign(root: &str, key: &IssuingKey) -> Result<String, KeyError> {
    let body = root
        .strip_suffix(ROOT_END)
        .ok_or_else(|| KeyError::Read("not a certificate root element".into()))?;
    let digest = B64.encode(sha2::Sha256::digest(root.as_bytes()));
    let sig = key.sign(signed_info(&digest, true).as_bytes())?;
    Ok(format!(
        "{XML_DECL}{body}{}{ROOT_END}",
        signature_element(&digest, &B64.encode(sig), key.chain())
    ))
}

/// What a signed document holds, once its signature checked out.
#[derive(Debug)]
pub struct Checked {
    /// The root element without its signature: canonical, what was signed.
    pub unsigned_root: String,
    pub chain: Vec<Vec<u8>>,
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

/// Splits a signed document into the unsigned root and the signature's
/// parts, and checks the digest and the signature value against the first
/// certificate of its X509Data. The chain is checked by the caller
/// (`pki::verify_chain`).
pub fn verify(doc: &str) -> Result<Checked, String> {
    let root = doc
        .strip_prefix(XML_DECL)
        .ok_or("the document does not begin with the XML declaration the hub writes")?;
    let open = format!("<ds:Signature xmlns:ds=\"{DS_NS}\">");
    let start = root
        .find(&open)
        .ok_or("no enveloped ds:Signature in the document")?;
    let after = &root[start + 1..];
    if after.contains("<ds:Signature ") || after.contains("<ds:Signature>") {
        return Err("more than one ds:Signature".into());
    }
    let end_tag = "</ds:Signature>";
    let end = root[start..]
        .find(end_tag)
        .map(|e| start + e + end_tag.len())
        .ok_or("the ds:Signature element is not closed")?;
    let sig_el = &root[start..end];
    let unsigned_root = format!("{}{}", &root[..start], &root[end..]);
    if !unsigned_root.ends_with(ROOT_END) || root[end..] != *ROOT_END {
        return Err("the signature is not the last child of the certificate root".into());
    }
    let digest = between(sig_el, "<ds:DigestValue>", "</ds:DigestValue>")
        .ok_or("no DigestValue")?
        .to_string();
    let sig_b64 = between(sig_el, "<ds:SignatureValue>", "</ds:SignatureValue>")
        .ok_or("no SignatureValue")?
        .to_string();
    let mut chain = Vec::new();
    let mut rest = sig_el;
    while let Some(c) = between(rest, "<ds:X509Certificate>", "</ds:X509Certificate>") {
        chain.push(
            B64.decode(c)
                .map_err(|e| format!("an X509Certificate is not base64: {e}"))?,
        );
        let at = rest.find("</ds:X509Certificate>").unwrap_or(rest.len());
        rest = &rest[at + 1..];
    }
    if signature_element(&digest, &sig_b64, &chain) != sig_el {
        return Err(
            "the ds:Signature is not in the form the hub writes (algorithms, transforms, \
             reference or key info differ); check it with xmlsec1"
                .into(),
        );
    }
    let want = B64.encode(sha2::Sha256::digest(unsigned_root.as_bytes()));
    if want != digest {
        return Err(format!(
            "the document's digest does not match the signed DigestValue: the content was changed \
             after signing (digest {want}, signed {digest})"
        ));
    }
    let sig = B64
        .decode(&sig_b64)
        .map_err(|e| format!("SignatureValue is not base64: {e}"))?;
    let leaf = chain.first().ok_or("no X509Certificate in the signature")?;
    let point = super::pki::public_key(leaf)?;
    if !super::pki::verify_p256(&point, signed_info(&digest, true).as_bytes(), &sig) {
        return Err(
            "the XML signature value does not verify with the certificate in KeyInfo".into(),
        );
    }
    Ok(Checked {
        unsigned_root,
        chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::testkeys;

    #[test]
    fn a_signed_document_has_the_xmldsig_structure_and_verifies() {
        let (key, _) = testkeys::issuing_key();
        let root = crate::certificates::document::tests::sample().to_xml();
        let doc = sign(&root, &key).expect("sign");
        assert!(doc.starts_with(XML_DECL));
        for part in [
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>",
            "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\">",
            "<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256\">",
            "<ds:Reference URI=\"\">",
            "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\">",
            "<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\">",
            "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>",
            "</ds:Signature></dcc:digitalCalibrationCertificate>",
        ] {
            assert!(doc.contains(part), "{part}");
        }
        let sig = between(&doc, "<ds:SignatureValue>", "</").expect("value");
        assert_eq!(B64.decode(sig).expect("b64").len(), 64, "r||s");
        let checked = verify(&doc).expect("verifies");
        assert_eq!(checked.unsigned_root, root);
        assert_eq!(checked.chain, key.chain());
    }

    #[test]
    fn a_changed_digit_a_swapped_value_or_another_key_is_refused() {
        let (key, _) = testkeys::issuing_key();
        let (other, _) = testkeys::issuing_key();
        let root = crate::certificates::document::tests::sample().to_xml();
        let doc = sign(&root, &key).expect("sign");
        let changed = doc.replacen("<si:value>395.0<", "<si:value>396.0<", 1);
        assert!(verify(&changed).expect_err("changed").contains("digest"));
        let theirs = sign(&root, &other).expect("sign");
        let swapped = format!(
            "{}{}{}",
            &doc[..doc.find("<ds:SignatureValue>").expect("sv")],
            &theirs[theirs.find("<ds:SignatureValue>").expect("sv")
                ..theirs.find("</ds:SignatureValue>").expect("sv")],
            &doc[doc.find("</ds:SignatureValue>").expect("sv")..]
        );
        assert!(
            verify(&swapped)
                .expect_err("swapped")
                .contains("does not verify")
        );
        // Re-signed by another key verifies as a signature: the chain check
        // (pki::verify_chain) is what refuses it.
        assert_eq!(
            verify(&theirs).expect("self-consistent").chain,
            other.chain()
        );
    }
}
