//! The Aegis Safe: an in-memory secret store with verified workload identity and
//! encrypted, durable persistence (docs/safe.md, docs/api.md, docs/file-format.md,
//! docs/security.md).
//!
//! Layout: `store` (the map), `commit` (group-commit writer, the only mutator),
//! `journal`/`format`/`recovery`/`crypto` (the encrypted files), `api` (HTTP)
//! (token verification is `aegis-auth`), `server` (wiring; the accept loops are `aegis-net`), `rootkey`,
//! `hardening`, `tls`, `metrics`, `dev` (local mode) and `cli`.

pub mod api;
pub mod cli;
pub mod client;
pub mod commit;
pub mod crypto;
pub mod dev;
pub mod format;
pub mod hardening;
pub mod journal;
pub mod metrics;
pub mod recovery;
pub mod rootkey;
pub mod server;
pub mod store;
pub mod tls;

pub use dev::DevSafe;
pub use server::{serve, serve_notify, AuthConfig, Config, JwksSource, Listening, Server};

use std::net::SocketAddr;

/// Errors of the Safe as a whole. Messages say what to do next; none contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum SafeError {
    /// TLS material is missing or invalid.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The root key could not be loaded.
    #[error(transparent)]
    RootKey(#[from] rootkey::RootKeyError),
    /// The data directory could not be recovered.
    #[error(transparent)]
    Recovery(#[from] recovery::RecoveryError),
    /// Token verification could not be set up.
    #[error("token verification setup failed: {0}")]
    Auth(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Dev-mode material could not be created or read.
    #[error("dev mode: {0}")]
    Dev(String),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An unexpected internal failure (a task panicked, a runtime could not start).
    #[error("internal error: {0}")]
    Internal(String),
}
