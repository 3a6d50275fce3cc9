//! `tokenreview` mode: the Kubernetes API server decides whether a token is valid.
//!
//! Each unknown token becomes one `authentication.k8s.io/v1` TokenReview with
//! `spec.audiences = [audience]`. The answer must be `authenticated: true`, for a
//! `system:serviceaccount:NS:SA` user, and (when the server lists them) for our audience.
//! Positive answers are cached by the token's SHA-256 until the earlier of the token's
//! `exp` (read from its payload without verification: the API server has just vouched for
//! the token, and the value only shortens the cache) and now + TTL. Negative answers are
//! not cached. An API server that cannot be reached, times out, throttles or fails (5xx),
//! or refuses our own request (401/403: the Safe's RBAC) yields [`AuthError::Unavailable`]:
//! the workload's token was not judged, so it must not be told it is invalid.

use crate::cache::{digest_token, IdentityCache, DEFAULT_CACHE_CAPACITY};
use crate::error::{quote, quote_max, redact, AuthError};
use crate::jwks::error_chain;
use crate::jwt::{self, MAX_TOKEN_LEN};
use crate::Identity;
use aegis_core::Workload;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use std::time::Duration;

/// Default bound on one TokenReview round trip.
pub const DEFAULT_REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Verifies tokens with TokenReview through the Kubernetes API.
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    cache: IdentityCache,
    timeout: Duration,
}

impl TokenReviewer {
    /// A reviewer asking for `audience`, caching positive results for up to `cache_ttl`
    /// (zero disables the cache) in at most [`DEFAULT_CACHE_CAPACITY`] entries.
    pub fn new(client: kube::Client, audience: String, cache_ttl: Duration) -> Self {
        Self {
            client,
            audience,
            cache: IdentityCache::new(cache_ttl, DEFAULT_CACHE_CAPACITY),
            timeout: DEFAULT_REVIEW_TIMEOUT,
        }
    }

    /// Sets the cache capacity (entries), keeping the TTL; zero disables the cache.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        let ttl = Duration::from_secs(self.cache.ttl_secs().max(0).unsigned_abs());
        self.cache = IdentityCache::new(ttl, capacity);
        self
    }

    /// Sets the bound on one TokenReview round trip (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The audience asked for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Authenticates `token` at time `now` (seconds since the epoch; used for the cache).
    pub async fn authenticate_at(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let digest = digest_token(token);
        if let Some(hit) = self.cache.get(&digest, now) {
            return Ok(hit);
        }
        let workload = self.review(token).await?;
        // Legacy (Secret-based) tokens have no exp: they live as long as the cache allows.
        let ttl_end = now.saturating_add(self.cache.ttl_secs());
        let expires_at = jwt::unverified_exp(token).unwrap_or(ttl_end);
        let identity = Identity {
            workload,
            expires_at,
        };
        self.cache.insert(digest, identity.clone(), now);
        Ok(identity)
    }

    /// One TokenReview round trip; the workload on success.
    async fn review(&self, token: &str) -> Result<Workload, AuthError> {
        let request = TokenReview {
            metadata: Default::default(),
            spec: TokenReviewSpec {
                audiences: Some(vec![self.audience.clone()]),
                token: Some(token.to_string()),
            },
            status: None,
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer =
            match tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &request))
                .await
            {
                Err(_) => {
                    return Err(AuthError::Unavailable(format!(
                        "TokenReview did not answer within {} ms",
                        self.timeout.as_millis()
                    )))
                }
                Ok(Err(kube::Error::Api(status))) => {
                    return Err(AuthError::Unavailable(redact(
                        &format!(
                            "TokenReview was refused with HTTP {}: {} (check the Safe's RBAC for tokenreviews.create and the API server's health)",
                            status.code, status.message
                        ),
                        token,
                    )))
                }
                Ok(Err(e)) => {
                    return Err(AuthError::Unavailable(redact(
                        &format!("TokenReview failed: {}", error_chain(&e)),
                        token,
                    )))
                }
                Ok(Ok(answer)) => answer,
            };
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .unwrap_or_else(|| "not authenticated".to_string());
            return Err(AuthError::Rejected(quote_max(&redact(&why, token), 256)));
        }
        if let Some(audiences) = &status.audiences {
            if !audiences.iter().any(|a| a == &self.audience) {
                return Err(AuthError::ReviewAudienceMismatch(self.audience.clone()));
            }
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        Workload::from_username(&username)
            .ok_or_else(|| AuthError::NotAServiceAccount(quote(&redact(&username, token))))
    }
}
