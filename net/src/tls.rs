//! A serving certificate reloaded from its files when they change (the Safe and the
//! webhook both use it, so cert-manager or chart rotations need no restart).
//!
//! Kubernetes rotates a mounted Secret by swapping a symlink, so the files are polled
//! (size and mtime, following links). A new pair is loaded and checked (key matches
//! certificate) before it replaces the old one in an `RwLock<Arc<_>>`; handshakes in flight
//! keep the key they started with, so no request is dropped. A half-written or mismatched
//! pair is ignored with a warning and retried at the next poll.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM did not contain what was expected.
    #[error("{path} does not hold a PEM {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// rustls rejected the pair (unsupported key, or key does not match the certificate).
    #[error("certificate {cert} and key {key} are not a usable pair: {source}")]
    Pair {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
}

type Stamp = Option<(SystemTime, u64)>;

/// Serves the current certificate; call [`ReloadingCert::reload_if_changed`] periodically.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Stamp, Stamp)>,
}

impl ReloadingCert {
    /// Loads the pair once; fails if it is unusable (a server cannot start without it).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let stamps = (stamp(cert_path), stamp(key_path));
        let key = load_pair(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            stamps: Mutex::new(stamps),
        })
    }

    /// Reloads when either file changed. `Ok(true)` when a new pair is now served.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        if *stamps == now {
            return Ok(false);
        }
        let key = load_pair(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        *stamps = now;
        Ok(true)
    }

    /// The pair served to new handshakes.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Polls the files every `interval` until the returned task is aborted.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match this.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %this.cert_path.display(), "reloaded TLS certificate")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but cannot be loaded; still serving the previous certificate")
                    }
                }
            }
        })
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, HTTP/1.1) serving this certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem {
            path: cert_path.to_owned(),
            what: "certificate",
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path.to_owned(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        path: key_path.to_owned(),
        what: "private key",
    })?;
    CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider()).map_err(
        |source| TlsError::Pair {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        },
    )
}
