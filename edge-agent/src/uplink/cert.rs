//! Checks this gateway's client certificate when the config is loaded, so a
//! certificate the hub will refuse is named at start (and by `--check`)
//! instead of surfacing later as an opaque "transport error".

use super::UplinkError;
use crate::config::UplinkConfig;
use x509_parser::prelude::*;

const REISSUE: &str =
    "reissue it with scripts/gateway-cert.sh (README: \"Gateway identity and certificates\")";

/// Refuses a client certificate the hub's TLS stack (rustls/webpki) cannot
/// accept: not X.509 v3, or an extendedKeyUsage without clientAuth.
pub fn check_client_certificate(cfg: &UplinkConfig) -> Result<(), UplinkError> {
    let Some(path) = &cfg.client_cert else {
        return Ok(());
    };
    let bad = |why: String| {
        UplinkError::Certificate(format!("uplink.client_cert {}: {why}", path.display()))
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let (_, pem) = parse_x509_pem(&pem).map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    if cert.version() != X509Version::V3 {
        return Err(bad(format!(
            "X.509 v{} certificate; the hub accepts only v3 certificates (extendedKeyUsage clientAuth): {REISSUE}",
            cert.version().0 + 1
        )));
    }
    match cert.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.client_auth || eku.value.any) => Err(bad(format!(
            "its extendedKeyUsage does not include clientAuth, so the hub refuses it: {REISSUE}"
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(bad(format!("unreadable extendedKeyUsage: {e}"))),
    }
}

/// An error and its sources on one line, each cause said once: tonic's
/// transport errors say only "transport error" and keep the reason below.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    qi_common::error_chain(e)
}
