//! Workload identity for Aegis: who is calling the Safe.
//!
//! A workload proves its identity with a Kubernetes ServiceAccount token. Two modes:
//! [`JwksVerifier`] checks the signature and claims locally against the issuer's keys
//! ([`jwt`] holds the strict JWS code), [`TokenReviewer`] asks the API server.
//! [`Authenticator`] is the one entry point the Safe uses; [`DevIssuer`] signs tokens shaped
//! like real ones for local use and tests.
//!
//! Invariants: a bearer token is never logged, stored (caches key on its SHA-256), or put
//! into an error; [`AuthError::is_unavailable`] separates "could not ask" (503) from
//! "does not prove an identity" (401).

mod cache;
pub mod error;
pub mod issuer;
pub mod jwks;
pub mod jwt;
pub mod tokenreview;

pub use cache::DEFAULT_CACHE_CAPACITY;
pub use error::AuthError;
pub use issuer::{DevIssuer, IssuerError, PodRef, DEV_ISSUER_URL};
pub use jwks::{HttpOptions, JwksError, JwksVerifier};
pub use jwt::{Expectations, KeySet, KeySetError, DEFAULT_LEEWAY, MAX_TOKEN_LEN};
pub use tokenreview::TokenReviewer;

use aegis_core::Workload;

/// A caller whose token was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The ServiceAccount the token was issued for.
    pub workload: Workload,
    /// When the token stops being valid (its `exp`), seconds since the epoch.
    pub expires_at: i64,
}

/// How the Safe verifies bearer tokens.
pub enum Authenticator {
    /// Locally, against the issuer's JWKS.
    Jwks(JwksVerifier),
    /// By asking the Kubernetes API server (TokenReview).
    TokenReview(TokenReviewer),
}

impl Authenticator {
    /// Authenticates a bearer token (without the `Bearer ` prefix) now.
    pub async fn authenticate(&self, bearer_token: &str) -> Result<Identity, AuthError> {
        self.authenticate_at(bearer_token, unix_now()).await
    }

    /// Authenticates at `now` (seconds since the epoch): for tests of expiry and caching.
    pub async fn authenticate_at(
        &self,
        bearer_token: &str,
        now: i64,
    ) -> Result<Identity, AuthError> {
        if bearer_token.is_empty() {
            return Err(AuthError::Missing);
        }
        match self {
            Self::Jwks(v) => v.authenticate_at(bearer_token, now).await,
            Self::TokenReview(r) => r.authenticate_at(bearer_token, now).await,
        }
    }

    /// The mode's name, for logs: `jwks` or `tokenreview`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Jwks(_) => "jwks",
            Self::TokenReview(_) => "tokenreview",
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
