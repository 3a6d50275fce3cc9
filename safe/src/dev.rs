//! Local mode: everything a Safe needs, generated into one directory, and a Safe that runs
//! in a background thread of the calling process ([`DevSafe`]) for tests, `aegis demo` and
//! the end-to-end suite. It is the same code as production with `jwks` authentication
//! against a locally generated ES256 issuer.
//!
//! Directory layout (created when missing, never overwritten):
//! `root.key` (0600), `ca.crt`, `ca.key` (0600), `tls.crt`, `tls.key` (0600),
//! `issuer.key` (the token signing key), `jwks.json`, and `data/` (journal and snapshots).

use crate::rootkey::{write_private, RootKeySource};
use crate::server::{AuthConfig, Config, JwksSource, Listening};
use crate::SafeError;
use aegis_core::names::{DEFAULT_ADMIN, DEFAULT_AUDIENCE};
use aegis_core::{Limits, Workload};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Lifetime of tokens from [`DevSafe::token`], like a projected token's.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(600);

/// Paths of the dev material inside a directory.
#[derive(Debug, Clone)]
pub struct DevPaths {
    /// The directory.
    pub dir: PathBuf,
}

impl DevPaths {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// `root.key`
    pub fn root_key(&self) -> PathBuf {
        self.p("root.key")
    }
    /// `ca.crt`: the certificate clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.p("ca.crt")
    }
    /// `ca.key`
    pub fn ca_key(&self) -> PathBuf {
        self.p("ca.key")
    }
    /// `tls.crt`
    pub fn tls_cert(&self) -> PathBuf {
        self.p("tls.crt")
    }
    /// `tls.key`
    pub fn tls_key(&self) -> PathBuf {
        self.p("tls.key")
    }
    /// `issuer.key`
    pub fn issuer_key(&self) -> PathBuf {
        self.p("issuer.key")
    }
    /// `jwks.json`
    pub fn jwks(&self) -> PathBuf {
        self.p("jwks.json")
    }
    /// `data/`
    pub fn data(&self) -> PathBuf {
        self.p("data")
    }
}

fn dev_err(what: &str, path: &Path, e: impl std::fmt::Display) -> SafeError {
    SafeError::Dev(format!("{what} {}: {e}", path.display()))
}

/// Loads the dev token issuer of `dir`, creating it (and `jwks.json`) if missing.
fn ensure_issuer(paths: &DevPaths) -> Result<aegis_auth::DevIssuer, SafeError> {
    std::fs::create_dir_all(&paths.dir).map_err(|e| dev_err("creating", &paths.dir, e))?;
    let key = paths.issuer_key();
    let issuer = if key.exists() {
        aegis_auth::DevIssuer::load(&key).map_err(|e| dev_err("loading issuer key", &key, e))?
    } else {
        let i = aegis_auth::DevIssuer::try_generate()
            .map_err(|e| dev_err("generating issuer key", &key, e))?;
        i.save(&key)
            .map_err(|e| dev_err("writing issuer key", &key, e))?;
        i
    };
    let jwks = paths.jwks();
    let text = issuer.jwks_json();
    if std::fs::read(&jwks).ok().as_deref() != Some(text.as_bytes()) {
        std::fs::write(&jwks, text.as_bytes()).map_err(|e| dev_err("writing", &jwks, e))?;
    }
    Ok(issuer)
}

/// Creates whatever dev material is missing in `dir`. Returns the CA certificate (PEM).
pub fn ensure_material(dir: &Path) -> Result<(DevPaths, String, aegis_auth::DevIssuer), SafeError> {
    let paths = DevPaths {
        dir: dir.to_path_buf(),
    };
    let issuer = ensure_issuer(&paths)?;
    crate::rootkey::load_or_create_file(&paths.root_key())?;
    let have_certs = [paths.ca_cert(), paths.tls_cert(), paths.tls_key()]
        .iter()
        .all(|p| p.exists());
    if !have_certs {
        let c = crate::tls::generate_dev_certs()?;
        for (path, text, private) in [
            (paths.ca_key(), &c.ca_key, true),
            (paths.tls_key(), &c.server_key, true),
            (paths.tls_cert(), &c.server_cert, false),
            (paths.ca_cert(), &c.ca_cert, false),
        ] {
            let r = if private {
                write_private(&path, text.as_bytes())
            } else {
                std::fs::write(&path, text)
            };
            r.map_err(|e| dev_err("writing", &path, e))?;
        }
    }
    let ca = std::fs::read_to_string(paths.ca_cert())
        .map_err(|e| dev_err("reading", &paths.ca_cert(), e))?;
    Ok((paths, ca, issuer))
}

/// The configuration `aegis-safe dev` runs with.
pub fn dev_config(
    dir: &Path,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
) -> Result<(Config, String), SafeError> {
    let (paths, ca, issuer) = ensure_material(dir)?;
    let admin: Workload = DEFAULT_ADMIN
        .parse()
        .map_err(|e| SafeError::Config(format!("default admin: {e}")))?;
    let config = Config {
        listen,
        metrics_listen,
        data_dir: paths.data(),
        tls_cert: paths.tls_cert(),
        tls_key: paths.tls_key(),
        root_key: RootKeySource::File(paths.root_key()),
        auth: AuthConfig::Jwks {
            source: JwksSource::File(paths.jwks()),
            issuer: issuer.issuer_url().to_string(),
            audience: DEFAULT_AUDIENCE.to_string(),
        },
        admins: vec![admin],
        limits: Limits::default(),
        journal_rotate_bytes: crate::server::DEFAULT_JOURNAL_ROTATE_BYTES,
    };
    Ok((config, ca))
}

/// Signs a token for `namespace/service_account` with the dev issuer of `dir` (created if
/// missing), with the claims shape of a Kubernetes projected ServiceAccount token.
pub fn issue_token(
    dir: &Path,
    namespace: &str,
    service_account: &str,
    audience: &str,
    ttl: Duration,
) -> Result<String, SafeError> {
    let issuer = ensure_issuer(&DevPaths {
        dir: dir.to_path_buf(),
    })?;
    let now = jiff::Timestamp::now().as_second();
    issuer
        .issue(namespace, service_account, audience, ttl, now)
        .map_err(|e| SafeError::Dev(format!("issuing a token: {e}")))
}

/// `https://` URL for a bound address (loopback when bound to the unspecified address, so
/// it matches the dev certificate).
pub fn url_for(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        addr.ip()
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

/// A dev-mode Safe running on its own tokio runtime in a background thread.
#[derive(Debug)]
pub struct DevSafe {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// The CA certificate (PEM) that signs the server certificate.
    pub ca_pem: String,
    /// The dev directory.
    pub dir: PathBuf,
    /// API address.
    pub addr: SocketAddr,
    /// Metrics address (plain HTTP).
    pub metrics_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DevSafe {
    /// Starts on `127.0.0.1:0`; returns once the Safe is ready.
    pub fn start(dir: &Path) -> Result<DevSafe, SafeError> {
        Self::start_on(dir, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// Starts on `listen` (metrics on a random loopback port); returns once ready.
    pub fn start_on(dir: &Path, listen: SocketAddr) -> Result<DevSafe, SafeError> {
        let (config, ca_pem) = dev_config(dir, listen, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        Self::start_with(config, ca_pem, dir)
    }

    /// Starts a Safe with an explicit configuration (tests adjust limits or rotation).
    pub fn start_with(config: Config, ca_pem: String, dir: &Path) -> Result<DevSafe, SafeError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Listening, SafeError>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("aegis-dev-safe".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("aegis-dev-safe-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(SafeError::Internal(format!("tokio runtime: {e}"))));
                        return;
                    }
                };
                let tx = ready_tx.clone();
                let r = rt.block_on(crate::server::serve_notify(
                    config,
                    async {
                        let _ = stop_rx.await;
                    },
                    move |l| {
                        let _ = tx.send(Ok(l));
                    },
                ));
                if let Err(e) = r {
                    let _ = ready_tx.send(Err(e));
                }
                // Dropping the runtime closes every remaining socket before `stop` returns.
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(|e| SafeError::Internal(format!("spawning the dev Safe thread: {e}")))?;
        let listening = match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = stop_tx.send(());
                return Err(SafeError::Internal(
                    "the dev Safe did not become ready".into(),
                ));
            }
        };
        Ok(DevSafe {
            url: url_for(listening.api),
            ca_pem,
            dir: dir.to_path_buf(),
            addr: listening.api,
            metrics_addr: listening.metrics,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// A token for `namespace/service_account` (audience `aegis-safe`, 600 s).
    pub fn token(&self, namespace: &str, service_account: &str) -> Result<String, SafeError> {
        issue_token(
            &self.dir,
            namespace,
            service_account,
            DEFAULT_AUDIENCE,
            DEV_TOKEN_TTL,
        )
    }

    /// A token for the default admin `aegis-system/aegis-sentinel`.
    pub fn admin_token(&self) -> Result<String, SafeError> {
        let (ns, sa) = DEFAULT_ADMIN.split_once('/').unwrap_or((DEFAULT_ADMIN, ""));
        self.token(ns, sa)
    }

    /// Stops the Safe: drains connections, stops the journal writer, closes the ports.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DevSafe {
    fn drop(&mut self) {
        self.shutdown();
    }
}
