//! The gRPC listener's TLS, done here rather than by tonic so that a failed
//! handshake is visible: tonic drops it without a word, so a gateway with a
//! certificate the hub refuses left no trace at the hub. Each failure is
//! logged with the peer address and the reason, and counted in
//! `hub_grpc_tls_handshake_failures_total{reason}`; a handshake that does not
//! finish within [`HANDSHAKE_TIMEOUT`] is dropped and counted too.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls::{self, CertificateError};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Long enough for a gateway on a slow mobile link, short enough that
/// half-open connections do not pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of the gateways' TLS: the hub's certificate and, for
/// mTLS, the CA whose client certificates it accepts.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut &read(cert, "grpc.tls_cert")?[..])
        .collect::<Result<_, _>>()
        .with_context(|| format!("grpc.tls_cert {}: not PEM certificates", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "grpc.tls_cert {}: no certificate in the file",
        cert.display()
    );
    let key = rustls_pemfile::private_key(&mut &read(key, "grpc.tls_key")?[..])
        .with_context(|| format!("grpc.tls_key {}: not a PEM key", key.display()))?
        .with_context(|| format!("grpc.tls_key {}: no private key in the file", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut &read(ca, "grpc.client_ca")?[..]) {
                roots
                    .add(c.with_context(|| format!("grpc.client_ca {}: not PEM", ca.display()))?)
                    .with_context(|| {
                        format!("grpc.client_ca {}: unusable CA certificate", ca.display())
                    })?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "grpc.client_ca {}: no certificate in the file",
                ca.display()
            );
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("grpc.client_ca")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("grpc.tls_cert and grpc.tls_key do not belong together")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TCP connections, does each handshake in its own task, and yields
/// the connections that completed one; ends when `stop` fires.
pub fn incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    mut stop: qi_common::shutdown::Stop,
) -> ReceiverStream<std::io::Result<TlsStream<crate::wire::Counted>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving.
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.wait() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let tcp = crate::wire::Counted::new(tcp);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => handshake_failed(peer, &e),
                    Err(_) => {
                        metrics::counter!(crate::metric_names::HUB_GRPC_TLS_HANDSHAKE_FAILURES_TOTAL, "reason" => "timeout")
                            .increment(1);
                        tracing::warn!(%peer, reason = "timeout", timeout_s = HANDSHAKE_TIMEOUT.as_secs(), "TLS handshake failed: not finished in time");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn handshake_failed(peer: SocketAddr, e: &std::io::Error) {
    let (reason, detail) = classify(e);
    metrics::counter!(crate::metric_names::HUB_GRPC_TLS_HANDSHAKE_FAILURES_TOTAL, "reason" => reason).increment(1);
    tracing::warn!(%peer, reason, error = %detail, "TLS handshake failed");
}

/// A bounded metric label and a message for the log.
pub fn classify(e: &std::io::Error) -> (&'static str, String) {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => (
                "closed_by_peer",
                "the client closed the connection during the handshake".into(),
            ),
            _ => ("io", e.to_string()),
        };
    };
    let reissue =
        "reissue it with scripts/gateway-cert.sh (README: Gateway identity and certificates)";
    match tls {
        rustls::Error::NoCertificatesPresented => (
            "no_client_certificate",
            "the client sent no certificate; grpc.auth = \"mtls\" needs one signed by grpc.client_ca".into(),
        ),
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => (
                "client_certificate_unknown_issuer",
                "the client certificate is not signed by grpc.client_ca".into(),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                ("client_certificate_expired", format!("the client certificate has expired ({c}); {reissue}"))
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                ("client_certificate_not_valid_yet", format!("the client certificate is not valid yet ({c}); check the clocks"))
            }
            CertificateError::BadSignature => (
                "client_certificate_bad_signature",
                "the client certificate's signature does not verify against grpc.client_ca (signed by another CA of the same name?)".into(),
            ),
            CertificateError::Revoked => ("client_certificate_revoked", "the client certificate is revoked".into()),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => (
                "client_certificate_wrong_purpose",
                format!("the client certificate's extendedKeyUsage lacks clientAuth ({c}); {reissue}"),
            ),
            other => {
                let text = format!("{other:?}");
                if text.contains("UnsupportedCertVersion") {
                    (
                        "client_certificate_not_v3",
                        format!("the client certificate is not X.509 v3 (an old openssl recipe makes v1); {reissue}"),
                    )
                } else {
                    ("client_certificate_invalid", format!("the client certificate was refused: {other}"))
                }
            }
        },
        rustls::Error::AlertReceived(alert) => (
            "alert_from_client",
            format!("the client aborted the handshake ({alert:?}): it probably does not trust the hub's certificate (uplink.ca_cert) or its name (uplink.tls_domain)"),
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateHandshakeMessage { .. } | rustls::Error::InappropriateMessage { .. } => {
            ("not_tls", format!("the client does not speak TLS as expected ({tls}); is its hub_url http:// ?"))
        }
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
            ("incompatible", format!("no common TLS parameters: {tls}"))
        }
        other => ("other", other.to_string()),
    }
}
