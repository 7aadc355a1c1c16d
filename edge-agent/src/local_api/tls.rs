//! HTTPS for the local API: rustls (ring provider) with the configured
//! certificate and key, behind axum's `Listener` so the same router serves
//! plain HTTP and HTTPS.
//!
//! Handshakes run on their own tasks (at most `MAX_HANDSHAKES` at once, each
//! within `HANDSHAKE_TIMEOUT`): a client that opens a socket and stays silent
//! must not hold up everyone else's accept.

use qi_common::shutdown::Stop;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HANDSHAKES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("http.{key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("http.{key} {path}: {message}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("http.tls_cert / http.tls_key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS acceptor for the certificate chain and key in these PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    let read = |p: &Path, key: &'static str| {
        std::fs::read(p).map_err(|source| TlsSetupError::Read {
            key,
            path: p.to_path_buf(),
            source,
        })
    };
    let pem = |p: &Path, key: &'static str, message: String| TlsSetupError::Pem {
        key,
        path: p.to_path_buf(),
        message,
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut &read(cert, "tls_cert")?[..])
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, "tls_cert", format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(pem(cert, "tls_cert", "no certificate in the file".into()));
    }
    let private = rustls_pemfile::private_key(&mut &read(key, "tls_key")?[..])
        .map_err(|e| pem(key, "tls_key", format!("not a PEM key: {e}")))?
        .ok_or_else(|| pem(key, "tls_key", "no private key in the file".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, private)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepted, handshaken TLS connections with their peer address.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` until `stop` fires.
    pub fn new(
        tcp: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        mut stop: Stop,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (sock, peer) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of descriptors and the like: wait, do not spin.
                            tracing::warn!(error = %e, "local API accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = stop.wait() => return,
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    metrics::counter!(crate::metric_names::EDGE_HTTP_TLS_HANDSHAKE_FAILURES_TOTAL)
                        .increment(1);
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        outcome => {
                            metrics::counter!(
                                crate::metric_names::EDGE_HTTP_TLS_HANDSHAKE_FAILURES_TOTAL
                            )
                            .increment(1);
                            let why = match outcome {
                                Ok(Err(e)) => e.to_string(),
                                _ => "timed out".into(),
                            };
                            tracing::debug!(%peer, error = %why, "local API TLS handshake failed");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
