//! Strict verification of Kubernetes ServiceAccount tokens (compact JWS) with `ring`.
//!
//! Order of checks, each before the next: length bound, exactly three non-empty base64url
//! parts (no padding), header JSON, `alg` in {RS256, ES256}, key by `kid`, signature over
//! `header.payload`; only then is the payload decoded and the claims checked (`iss`, `aud`,
//! `exp`, `nbf`, `sub`, `kubernetes.io`). Nothing the signature does not cover is trusted,
//! and the key decides the algorithm family (an RSA key never verifies ES256 and vice versa).
//! [`verify`] is pure: the time is a parameter.

use crate::error::{quote, AuthError};
use aegis_core::{TokenClaims, Workload};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use std::time::Duration;

/// No ServiceAccount token comes near this; longer input is rejected before decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Why a JWKS document was not usable.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// The document is not JSON of the shape `{"keys":[...]}`.
    #[error("JWKS is not valid JSON of the form {{\"keys\":[...]}}: {0}")]
    Json(#[source] serde_json::Error),
    /// A key of a supported type (RSA, EC P-256) has missing or invalid parameters.
    #[error("JWKS key {kid} is invalid: {reason}")]
    BadKey {
        /// The key's `kid` (or `(none)`).
        kid: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No key in the set can verify RS256 or ES256 signatures.
    #[error("JWKS holds no usable signing key (RSA 2048-8192 bit or EC P-256)")]
    NoUsableKeys,
    /// Two keys share a `kid`, so a token's `kid` would not name one key.
    #[error("JWKS has two keys with kid {0}")]
    DuplicateKid(String),
}

/// A verification key from a JWKS.
#[derive(Clone)]
pub struct PublicKey {
    kid: Option<String>,
    material: KeyMaterial,
}

#[derive(Clone)]
enum KeyMaterial {
    /// Big-endian modulus (no leading zeros) and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed P-256 point `0x04 || x || y`.
    P256 { point: Vec<u8> },
}

impl KeyMaterial {
    fn kind(&self) -> &'static str {
        match self {
            Self::Rsa { .. } => "RSA",
            Self::P256 { .. } => "EC P-256",
        }
    }
}

impl PublicKey {
    /// The key id, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
}

/// The issuer's keys, as parsed from a JWKS document.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl KeySet {
    /// Parses a JWKS. Keys for encryption (`use: enc`), of other types (`oct`, `OKP`) or
    /// with an `alg` other than RS256/ES256 are skipped with a warning; a malformed RSA or
    /// P-256 key is an error, as is a set with no usable key.
    pub fn from_jwks_json(bytes: &[u8]) -> Result<Self, KeySetError> {
        let doc: JwksDoc = serde_json::from_slice(bytes).map_err(KeySetError::Json)?;
        let mut keys: Vec<PublicKey> = Vec::with_capacity(doc.keys.len());
        for jwk in doc.keys {
            let Some(key) = parse_jwk(&jwk)? else {
                continue;
            };
            if let Some(kid) = &key.kid {
                if keys.iter().any(|k| k.kid.as_ref() == Some(kid)) {
                    return Err(KeySetError::DuplicateKid(quote(kid)));
                }
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKeys);
        }
        Ok(Self { keys })
    }

    /// The keys, in document order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The key a token header names: by `kid`, or the only key when the token has none.
    fn find(&self, kid: Option<&str>) -> Result<&PublicKey, AuthError> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| AuthError::UnknownKeyId(quote(kid))),
            None => match self.keys.as_slice() {
                [only] => Ok(only),
                _ => Err(AuthError::MissingKeyId),
            },
        }
    }
}

impl Jwk {
    /// The error for this key, naming it by `kid`.
    fn bad(&self, reason: &'static str) -> KeySetError {
        let kid = self
            .kid
            .as_deref()
            .map_or_else(|| "(none)".to_string(), quote);
        KeySetError::BadKey { kid, reason }
    }

    /// A required base64url parameter (`n`, `e`, `x`, `y`).
    fn param(&self, value: &Option<String>, what: &'static str) -> Result<Vec<u8>, KeySetError> {
        let text = value.as_deref().ok_or_else(|| self.bad(what))?;
        URL_SAFE_NO_PAD.decode(text).map_err(|_| self.bad(what))
    }
}

/// One JWK to a key, `None` when it is of a kind we skip on purpose.
fn parse_jwk(jwk: &Jwk) -> Result<Option<PublicKey>, KeySetError> {
    let kid_for_log = jwk.kid.as_deref().unwrap_or("(none)");
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        tracing::warn!(kid = %kid_for_log, "skipping JWKS key not meant for signatures");
        return Ok(None);
    }
    let material = match jwk.kty.as_str() {
        "RSA" => {
            if jwk.alg.as_deref().is_some_and(|a| a != "RS256") {
                tracing::warn!(kid = %kid_for_log, "skipping RSA key whose alg is not RS256");
                return Ok(None);
            }
            let n = jwk.param(&jwk.n, "missing or invalid modulus n")?;
            let e = jwk.param(&jwk.e, "missing or invalid exponent e")?;
            let n = strip_leading_zeros(n);
            let e = strip_leading_zeros(e);
            // ring enforces the same bounds at verification; checking here names the key.
            if !(256..=1024).contains(&n.len()) {
                return Err(jwk.bad("RSA modulus must be 2048 to 8192 bits"));
            }
            if e.is_empty() || e.len() > 4 {
                return Err(jwk.bad("RSA exponent out of range"));
            }
            KeyMaterial::Rsa { n, e }
        }
        "EC" => {
            if jwk.crv.as_deref() != Some("P-256")
                || jwk.alg.as_deref().is_some_and(|a| a != "ES256")
            {
                tracing::warn!(kid = %kid_for_log, "skipping EC key that is not P-256/ES256");
                return Ok(None);
            }
            let x = jwk.param(&jwk.x, "missing or invalid coordinate x")?;
            let y = jwk.param(&jwk.y, "missing or invalid coordinate y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err(jwk.bad("P-256 coordinates must be 32 bytes each"));
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            KeyMaterial::P256 { point }
        }
        _ => {
            tracing::warn!(kid = %kid_for_log, kty = %quote(&jwk.kty), "skipping JWKS key of unsupported type");
            return Ok(None);
        }
    };
    Ok(Some(PublicKey {
        kid: jwk.kid.clone(),
        material,
    }))
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

/// What a token must say to be accepted.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// Required `iss`, compared exactly.
    pub issuer: String,
    /// An entry `aud` must contain.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: i64,
}

impl Expectations {
    /// Expectations with the default leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_secs: DEFAULT_LEEWAY.as_secs() as i64,
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// RFC 7515 §4.1.11: a `crit` we do not understand must be rejected; we understand none.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Clone, Copy)]
enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

/// Verifies `token` against `keys` and `expect` at time `now` (seconds since the epoch)
/// and returns its claims and workload.
pub fn verify(
    token: &str,
    keys: &KeySet,
    expect: &Expectations,
    now: i64,
) -> Result<(TokenClaims, Workload), AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        let n = token.split('.').count();
        return Err(AuthError::Malformed(format!(
            "expected 3 dot-separated parts (header.payload.signature), found {n}"
        )));
    };
    if h.is_empty() || p.is_empty() {
        return Err(AuthError::Malformed("header or payload is empty".into()));
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthError::Malformed("header is not base64url without padding".into()))?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|e| {
        AuthError::Malformed(format!(
            "header is not a JSON object with a string alg ({})",
            json_category(&e)
        ))
    })?;
    // The algorithm is judged before the signature's shape, so `alg: none` tokens (which
    // carry an empty signature) are reported as what they are.
    let alg = match header.alg.as_str() {
        "RS256" => Alg::Rs256,
        "ES256" => Alg::Es256,
        other => return Err(AuthError::UnsupportedAlgorithm(quote(other))),
    };
    if header.crit.is_some() {
        return Err(AuthError::Malformed(
            "header has a crit parameter, which is not supported".into(),
        ));
    }
    if s.is_empty() {
        return Err(AuthError::Malformed("signature is empty".into()));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::Malformed("signature is not base64url without padding".into()))?;
    let key = keys.find(header.kid.as_deref())?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    check_signature(alg, key, signing_input.as_bytes(), &signature)?;

    // Only signed bytes from here on.
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| AuthError::Malformed("payload is not base64url without padding".into()))?;
    let claims: TokenClaims = serde_json::from_slice(&payload).map_err(describe_claims_error)?;
    let workload = check_claims(&claims, expect, now)?;
    Ok((claims, workload))
}

fn json_category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O",
        serde_json::error::Category::Syntax => "invalid JSON syntax",
        serde_json::error::Category::Data => "wrong field types",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

/// Describes a claims parse error without echoing claim values: serde's "missing field"
/// message names only the field; other messages may quote input, so only the category
/// and position are kept.
fn describe_claims_error(e: serde_json::Error) -> AuthError {
    let text = e.to_string();
    let reason = if text.starts_with("missing field") {
        text.split(" at line")
            .next()
            .unwrap_or("missing field")
            .to_string()
    } else {
        format!("{} at column {}", json_category(&e), e.column())
    };
    AuthError::InvalidClaims(format!("not a Kubernetes ServiceAccount token: {reason}"))
}

fn check_signature(alg: Alg, key: &PublicKey, input: &[u8], sig: &[u8]) -> Result<(), AuthError> {
    let result = match (&key.material, alg) {
        (KeyMaterial::Rsa { n, e }, Alg::Rs256) => RsaPublicKeyComponents { n, e }.verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            input,
            sig,
        ),
        (KeyMaterial::P256 { point }, Alg::Es256) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(input, sig)
        }
        (material, alg) => {
            return Err(AuthError::AlgorithmMismatch {
                alg: alg.name(),
                key_kind: material.kind(),
            })
        }
    };
    result.map_err(|_| AuthError::BadSignature)
}

fn check_claims(c: &TokenClaims, expect: &Expectations, now: i64) -> Result<Workload, AuthError> {
    if c.iss != expect.issuer {
        return Err(AuthError::IssuerMismatch {
            expected: expect.issuer.clone(),
            found: quote(&c.iss),
        });
    }
    if !c.aud.contains(&expect.audience) {
        return Err(AuthError::AudienceMismatch(expect.audience.clone()));
    }
    let leeway = expect.leeway_secs;
    // Valid while now < exp + leeway; saturating so a huge exp cannot overflow.
    if now >= c.exp.saturating_add(leeway) {
        return Err(AuthError::Expired {
            exp: c.exp,
            now,
            leeway,
        });
    }
    if let Some(nbf) = c.nbf {
        if now < nbf.saturating_sub(leeway) {
            return Err(AuthError::NotYetValid { nbf, now, leeway });
        }
    }
    let workload = c.workload().map_err(AuthError::InvalidWorkload)?;
    let expected_sub = format!(
        "system:serviceaccount:{}:{}",
        workload.namespace, workload.service_account
    );
    if c.sub != expected_sub {
        return Err(AuthError::SubjectMismatch {
            expected: expected_sub,
            found: quote(&c.sub),
        });
    }
    Ok(workload)
}

/// Reads `exp` from a token's payload WITHOUT verifying anything. Only for bounding how
/// long a result obtained elsewhere (TokenReview) may be cached; never for a decision.
pub(crate) fn unverified_exp(token: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Exp {
        exp: i64,
    }
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Exp>(&bytes).ok().map(|e| e.exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn unverified_exp_reads_only_a_numeric_exp() {
        let t = format!("{}.{}.sig", b64("{}"), b64(r#"{"exp":1700000000,"x":1}"#));
        assert_eq!(unverified_exp(&t), Some(1_700_000_000));
        let t = format!("{}.{}.sig", b64("{}"), b64(r#"{"exp":"soon"}"#));
        assert_eq!(unverified_exp(&t), None);
        assert_eq!(unverified_exp("opaque-legacy-token"), None);
        assert_eq!(unverified_exp(&"a.".repeat(MAX_TOKEN_LEN)), None);
    }

    #[test]
    fn rsa_modulus_with_leading_zero_is_normalised() {
        let jwks: serde_json::Value = serde_json::json!({"keys": [{
            "kty": "RSA", "kid": "k",
            "n": URL_SAFE_NO_PAD.encode([&[0u8][..], &[0xc5; 256][..]].concat()),
            "e": "AQAB"
        }]});
        let set = KeySet::from_jwks_json(jwks.to_string().as_bytes()).unwrap();
        match &set.keys()[0].material {
            KeyMaterial::Rsa { n, e } => {
                assert_eq!(n.len(), 256);
                assert_eq!(e, &vec![1, 0, 1]);
            }
            KeyMaterial::P256 { .. } => panic!("expected an RSA key"),
        }
    }

    #[test]
    fn duplicate_kids_are_refused() {
        let key = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "same",
            "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])
        });
        let jwks = serde_json::json!({"keys": [key.clone(), key]}).to_string();
        assert!(matches!(
            KeySet::from_jwks_json(jwks.as_bytes()),
            Err(KeySetError::DuplicateKid(_))
        ));
    }

    #[test]
    fn short_ec_coordinates_are_refused() {
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k",
            "x": URL_SAFE_NO_PAD.encode([1u8; 31]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])
        }]})
        .to_string();
        assert!(matches!(
            KeySet::from_jwks_json(jwks.as_bytes()),
            Err(KeySetError::BadKey { .. })
        ));
    }
}
