//! Why a bearer token was not accepted.
//!
//! Invariant: no variant holds the token, and no message is built from it. Values an
//! attacker controls (`alg`, `kid`, usernames from the verifier) are quoted with `{:?}`
//! and truncated by `quote`, so a message cannot forge log lines or grow without bound.

use aegis_core::WorkloadError;

/// A token was rejected, or could not be checked.
///
/// Every variant except [`AuthError::Unavailable`] means "this token does not prove an
/// identity" (HTTP 401); `Unavailable` means "the verifier could not be asked" (HTTP 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was presented.
    #[error("no bearer token: send `Authorization: Bearer <ServiceAccount token>`")]
    Missing,
    /// The token is longer than any ServiceAccount token; it was not decoded.
    #[error("token is {len} bytes, longer than the {max}-byte limit")]
    TooLong {
        /// Length of the presented token.
        len: usize,
        /// The limit ([`crate::jwt::MAX_TOKEN_LEN`]).
        max: usize,
    },
    /// The token is not a compact JWS (`header.payload.signature`, base64url, JSON).
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// The header names an algorithm other than RS256 or ES256 (`none`, `HS256`, ...).
    #[error("token algorithm {0} is not accepted (only RS256 and ES256)")]
    UnsupportedAlgorithm(String),
    /// The header's `kid` is not in the issuer's key set (even after a refresh, if allowed).
    #[error("unknown key id {0}: the token was not signed by a key of the configured issuer")]
    UnknownKeyId(String),
    /// The token has no `kid` and the key set holds more than one key.
    #[error("token has no key id (kid) and the issuer has several keys")]
    MissingKeyId,
    /// The header's `alg` does not fit the key its `kid` names (e.g. ES256 with an RSA key).
    #[error("token algorithm {alg} does not match the {key_kind} key it names")]
    AlgorithmMismatch {
        /// The token's `alg`.
        alg: &'static str,
        /// The kind of the key (`RSA` or `EC P-256`).
        key_kind: &'static str,
    },
    /// The signature is not valid for the header and payload under the named key.
    #[error("signature does not verify")]
    BadSignature,
    /// The signed claims are not those of a Kubernetes ServiceAccount token.
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
    /// `iss` is not the configured issuer.
    #[error("token issuer {found} is not the expected issuer {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The token's `iss`, quoted and truncated.
        found: String,
    },
    /// `aud` does not contain the configured audience.
    #[error("token audience does not include {0}")]
    AudienceMismatch(String),
    /// `exp` (plus leeway) has passed.
    #[error("token expired at {} (now {}, leeway {leeway} s)", rfc3339(*.exp), rfc3339(*.now))]
    Expired {
        /// The token's `exp`, seconds since the epoch.
        exp: i64,
        /// The time of the check.
        now: i64,
        /// Allowed clock skew, seconds.
        leeway: i64,
    },
    /// `nbf` (minus leeway) is still in the future.
    #[error("token is not valid before {} (now {}, leeway {leeway} s)", rfc3339(*.nbf), rfc3339(*.now))]
    NotYetValid {
        /// The token's `nbf`, seconds since the epoch.
        nbf: i64,
        /// The time of the check.
        now: i64,
        /// Allowed clock skew, seconds.
        leeway: i64,
    },
    /// The namespace or ServiceAccount in the token is not a valid Kubernetes name.
    #[error("token names an invalid workload: {0}")]
    InvalidWorkload(#[source] WorkloadError),
    /// `sub` disagrees with the `kubernetes.io` claim.
    #[error("token subject {found} does not match its kubernetes.io claim ({expected})")]
    SubjectMismatch {
        /// `system:serviceaccount:NS:SA` built from the `kubernetes.io` claim.
        expected: String,
        /// The token's `sub`, quoted and truncated.
        found: String,
    },
    /// The Kubernetes API server reviewed the token and did not authenticate it.
    #[error("the Kubernetes API server rejected the token: {0}")]
    Rejected(String),
    /// The token authenticated, but not as a ServiceAccount.
    #[error("token belongs to {0}, which is not a ServiceAccount (system:serviceaccount:NS:SA)")]
    NotAServiceAccount(String),
    /// The API server authenticated the token for audiences that exclude ours.
    #[error("token audience does not include {0} (TokenReview answered for other audiences)")]
    ReviewAudienceMismatch(String),
    /// The verifier (API server, JWKS endpoint) could not be reached or did not answer
    /// usably; the token may well be valid, so the caller should retry later (HTTP 503).
    #[error("could not reach the token verifier: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// True only when the token could not be checked because the verifier could not
    /// be reached: serve 503 (retry later), not 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Quotes attacker-controlled text for an error message: `{:?}` escaping (no control
/// characters reach a log line) and at most 64 characters.
pub(crate) fn quote(s: &str) -> String {
    quote_max(s, 64)
}

/// [`quote`] with another bound (API server explanations are longer than token fields).
pub(crate) fn quote_max(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
    }
}

/// Seconds since the epoch as RFC 3339, or the number itself when out of range.
fn rfc3339(secs: i64) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t.to_string(),
        Err(_) => format!("{secs} (epoch seconds)"),
    }
}

/// Removes every occurrence of `token` from a message that came from elsewhere (an API
/// server's error, a transport error), in case a peer echoes it back.
pub(crate) fn redact(message: &str, token: &str) -> String {
    if token.is_empty() {
        message.to_string()
    } else {
        message.replace(token, "[token]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(100);
        let q = quote(&long);
        assert!(q.len() < 80, "{q}");
        assert!(q.ends_with("..."));
    }

    #[test]
    fn only_unavailable_is_unavailable() {
        assert!(AuthError::Unavailable("down".into()).is_unavailable());
        assert!(!AuthError::BadSignature.is_unavailable());
        assert!(!AuthError::Rejected("no".into()).is_unavailable());
    }

    #[test]
    fn expiry_message_names_the_time() {
        let e = AuthError::Expired {
            exp: 0,
            now: 60,
            leeway: 30,
        };
        assert_eq!(
            e.to_string(),
            "token expired at 1970-01-01T00:00:00Z (now 1970-01-01T00:01:00Z, leeway 30 s)"
        );
    }

    #[test]
    fn redact_removes_the_token() {
        assert_eq!(redact("bad token abc.def", "abc.def"), "bad token [token]");
    }
}
