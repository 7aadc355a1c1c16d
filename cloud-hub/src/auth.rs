//! Who is on the other end of a gateway stream.
//!
//! In `mtls` mode the TLS layer has already verified the client certificate
//! against `client_ca`; here we take the gateway id from its subject common
//! name and refuse a Hello that claims another id. In `token` mode the
//! bearer token must hash to the value configured for the claimed gateway.

use crate::config::{GatewayAuth, GrpcConfig};
use crate::identity::constant_time_eq;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tonic::Status;

/// What the transport told us about the peer, captured before the stream starts.
#[derive(Debug, Clone)]
pub enum Credential {
    None,
    /// Subject common name of a verified client certificate.
    Certificate(Option<String>),
    BearerToken(Option<String>),
}

pub struct Authenticator {
    mode: GatewayAuth,
    /// gateway id -> lower-case hex SHA-256 of its token
    tokens: BTreeMap<String, String>,
}

fn refused(reason: &'static str, status: Status) -> Status {
    metrics::counter!(crate::metric_names::HUB_AUTH_FAILURES_TOTAL, "reason" => reason)
        .increment(1);
    tracing::warn!(reason, message = status.message(), "gateway refused");
    status
}

impl Authenticator {
    pub fn new(cfg: &GrpcConfig) -> Authenticator {
        Authenticator {
            mode: cfg.auth,
            tokens: cfg
                .tokens
                .iter()
                .map(|(k, v)| (k.clone(), v.to_ascii_lowercase()))
                .collect(),
        }
    }

    /// Reads the credential from a request before its body is consumed.
    pub fn credential<T>(&self, req: &tonic::Request<T>) -> Credential {
        match self.mode {
            GatewayAuth::None => Credential::None,
            GatewayAuth::Mtls => Credential::Certificate(
                req.peer_certs()
                    .and_then(|certs| certs.first().and_then(|c| common_name(c.as_ref()))),
            ),
            GatewayAuth::Token => Credential::BearerToken(
                req.metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string),
            ),
        }
    }

    /// Decides whether `credential` may speak for `gateway_id`.
    pub fn check(&self, credential: &Credential, gateway_id: &str) -> Result<(), Status> {
        match (self.mode, credential) {
            (GatewayAuth::None, _) => Ok(()),
            (GatewayAuth::Mtls, Credential::Certificate(Some(cn))) if cn == gateway_id => Ok(()),
            (GatewayAuth::Mtls, Credential::Certificate(Some(cn))) => Err(refused(
                "forged_gateway_id",
                Status::permission_denied(format!(
                    "the client certificate is for gateway {cn:?}; it cannot speak for {gateway_id:?}"
                )),
            )),
            (GatewayAuth::Mtls, _) => Err(refused(
                "no_certificate",
                Status::unauthenticated("a client certificate with a common name is required"),
            )),
            (GatewayAuth::Token, Credential::BearerToken(Some(token))) => {
                let presented = hex(&Sha256::digest(token.as_bytes()));
                match self.tokens.get(gateway_id) {
                    Some(want) if constant_time_eq(want.as_bytes(), presented.as_bytes()) => Ok(()),
                    _ => Err(refused(
                        "bad_token",
                        Status::unauthenticated(format!(
                            "token not valid for gateway {gateway_id:?}"
                        )),
                    )),
                }
            }
            (GatewayAuth::Token, _) => Err(refused(
                "no_token",
                Status::unauthenticated("an `authorization: Bearer <token>` header is required"),
            )),
        }
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_auth() -> Authenticator {
        let mut cfg = GrpcConfig {
            auth: GatewayAuth::Token,
            ..Default::default()
        };
        // sha256("s3cret")
        cfg.tokens
            .insert("gw-1".into(), hex(&Sha256::digest(b"s3cret")));
        Authenticator::new(&cfg)
    }

    #[test]
    fn tokens_are_per_gateway() {
        let a = token_auth();
        assert!(
            a.check(&Credential::BearerToken(Some("s3cret".into())), "gw-1")
                .is_ok()
        );
        assert_eq!(
            a.check(&Credential::BearerToken(Some("s3cret".into())), "gw-2")
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(
            a.check(&Credential::BearerToken(Some("wrong".into())), "gw-1")
                .is_err()
        );
        assert!(a.check(&Credential::BearerToken(None), "gw-1").is_err());
    }

    #[test]
    fn a_certificate_speaks_only_for_its_own_gateway() {
        let cfg = GrpcConfig {
            auth: GatewayAuth::Mtls,
            ..Default::default()
        };
        let a = Authenticator::new(&cfg);
        assert!(
            a.check(&Credential::Certificate(Some("gw-1".into())), "gw-1")
                .is_ok()
        );
        assert_eq!(
            a.check(&Credential::Certificate(Some("gw-1".into())), "gw-2")
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert!(a.check(&Credential::Certificate(None), "gw-1").is_err());
    }
}
