//! TLS on weir's own listeners (NDJSON over TCP, HTTP): rustls with the
//! ring provider, the certificate and key read from PEM files, optionally
//! requiring client certificates signed by a CA (mTLS). Certificates are
//! read again on SIGHUP without dropping a connection; a failed reload
//! keeps the ones in use and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// `tls = { cert = …, key = … }` on a TCP or HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (the server's first).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM file of the CA client certificates must chain to; none: no
    /// client certificate asked for.
    pub client_ca: Option<PathBuf>,
}

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's TLS acceptor, which SIGHUP reloads.
#[derive(Clone)]
pub struct Acceptor {
    config: TlsConfig,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl Acceptor {
    /// Reads the certificate, key and client CA of `config`.
    pub fn load(config: &TlsConfig) -> Result<Acceptor, String> {
        let acceptor = Acceptor {
            config: config.clone(),
            current: Arc::new(RwLock::new(build(config)?)),
        };
        reload_on_sighup(acceptor.clone());
        Ok(acceptor)
    }

    /// Reads the files again; the acceptor in use stays on failure.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = build(&self.config)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Runs the server side of a handshake on `stream`, within a timeout.
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })?
    }
}

fn pem_error(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> String + '_ {
    move |error| format!("{}: {error}", path.display())
}

fn build(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(&config.cert)
        .map_err(pem_error(&config.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(&config.cert))?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate", config.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(pem_error(&config.key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(path).map_err(pem_error(path))? {
                roots
                    .add(certificate.map_err(pem_error(path))?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} / {}: {e}", config.cert.display(), config.key.display()))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Reloads `acceptor` on every SIGHUP, on the current runtime.
fn reload_on_sighup(acceptor: Acceptor) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot watch SIGHUP: TLS certificates are read at start only");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match acceptor.reload() {
                Ok(()) => {
                    tracing::info!(cert = %acceptor.config.cert.display(), "TLS certificate reloaded")
                }
                Err(error) => {
                    tracing::error!(%error, "TLS certificate reload failed; keeping the one in use")
                }
            }
        }
    });
}

/// An HTTP listener over TLS for `axum::serve`: connections are accepted
/// and their handshakes run concurrently, so a slow client holds up
/// nobody; failed handshakes are logged at debug and dropped.
pub struct TlsListener {
    local: std::net::SocketAddr,
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, std::net::SocketAddr)>,
}

impl TlsListener {
    /// Serves TLS on `socket` with `acceptor`.
    pub fn new(socket: TcpListener, acceptor: Acceptor) -> std::io::Result<TlsListener> {
        let local = socket.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match socket.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "https accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small writes (a live feed's messages) go out at once.
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Err(error) => {
                            crate::metrics::TLS_FAILURES
                                .with_label_values(&["http"])
                                .inc();
                            tracing::debug!(%peer, %error, "TLS handshake failed")
                        }
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
