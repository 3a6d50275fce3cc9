//! The auth matrix for `jwks` mode: the real captured RS256 token and JWKS, ES256 tokens
//! from the dev issuer, and every way a token must be rejected. Each rejection also
//! asserts that the error text carries no part of the token.

mod common;

use aegis_auth::{AuthError, Authenticator, DevIssuer, JwksVerifier, MAX_TOKEN_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use std::time::Duration;

const AUD: &str = "aegis-safe";
const NOW: i64 = 1_900_000_000;

fn real_verifier() -> JwksVerifier {
    JwksVerifier::from_jwks_json(&fixture("tokens/jwks.json"), REAL_ISSUER, AUD).unwrap()
}

fn real_token() -> String {
    fixture_token("demo-app.aegis-safe.jwt")
}

fn dev() -> (DevIssuer, JwksVerifier) {
    let issuer = DevIssuer::generate();
    let verifier = issuer.verifier(AUD).unwrap();
    (issuer, verifier)
}

/// A dev issuer, its verifier, and a `demo/app` token valid for [NOW, NOW + 600).
fn dev_token() -> (DevIssuer, JwksVerifier, String) {
    let (issuer, verifier) = dev();
    let token = issuer
        .issue("demo", "app", AUD, Duration::from_secs(600), NOW)
        .unwrap();
    (issuer, verifier, token)
}

/// Verifies and returns the error, checking it does not leak the token.
fn reject(verifier: &JwksVerifier, token: &str, now: i64) -> AuthError {
    let err = verifier
        .verify(token, now)
        .expect_err("token must be rejected");
    assert_no_token_in(&err, token);
    assert!(!err.is_unavailable(), "{err} is a rejection, not an outage");
    err
}

fn replace_part(token: &str, index: usize, new: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = new;
    parts.join(".")
}

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn real_rs256_token_verifies_as_demo_app() {
    let id = real_verifier().verify(&real_token(), REAL_NOW).unwrap();
    assert_eq!(id.workload.to_string(), "demo/app");
    assert_eq!(id.expires_at, 2_111_774_535);
}

#[tokio::test]
async fn real_token_authenticates_through_the_authenticator_now() {
    let auth = Authenticator::Jwks(real_verifier());
    assert_eq!(auth.mode(), "jwks");
    let id = auth.authenticate(&real_token()).await.unwrap();
    assert_eq!(id.workload.to_string(), "demo/app");
}

#[test]
fn real_token_for_other_audience_is_rejected() {
    let token = fixture_token("demo-app.other-audience.jwt");
    let err = reject(&real_verifier(), &token, REAL_NOW);
    assert_eq!(err, AuthError::AudienceMismatch(AUD.into()));
    assert_eq!(
        err.to_string(),
        "token audience does not include aegis-safe"
    );
}

#[test]
fn wrong_audience_is_rejected() {
    let (issuer, verifier) = dev();
    let token = issuer
        .issue("demo", "app", "vault", Duration::from_secs(600), NOW)
        .unwrap();
    assert_eq!(
        reject(&verifier, &token, NOW),
        AuthError::AudienceMismatch(AUD.into())
    );
}

#[test]
fn audience_as_single_string_or_among_several_is_accepted() {
    let signer = RawSigner::new();
    let jwks = serde_json::json!({"keys": [signer.jwk(Some("k1"))]}).to_string();
    let verifier = JwksVerifier::from_jwks_json(jwks.as_bytes(), "https://i", AUD).unwrap();
    let header = br#"{"alg":"ES256","kid":"k1"}"#;
    for aud in [
        serde_json::json!("aegis-safe"),
        serde_json::json!(["other", "aegis-safe"]),
    ] {
        let mut c = claims("https://i", NOW);
        c["aud"] = aud;
        let token = signer.sign(header, c.to_string().as_bytes());
        assert!(verifier.verify(&token, NOW).is_ok());
    }
}

#[test]
fn issuer_mismatch_is_rejected() {
    let verifier =
        JwksVerifier::from_jwks_json(&fixture("tokens/jwks.json"), "https://elsewhere", AUD)
            .unwrap();
    let err = reject(&verifier, &real_token(), REAL_NOW);
    assert!(matches!(err, AuthError::IssuerMismatch { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("https://kubernetes.default.svc.cluster.local"));
}

#[test]
fn expired_token_is_rejected_with_its_expiry() {
    let (_, verifier, token) = dev_token();
    let err = reject(&verifier, &token, NOW + 3600);
    assert_eq!(
        err,
        AuthError::Expired {
            exp: NOW + 600,
            now: NOW + 3600,
            leeway: 30
        }
    );
    assert!(
        err.to_string().starts_with("token expired at 2030-03-17T"),
        "{err}"
    );
}

#[test]
fn not_yet_valid_token_is_rejected() {
    let (_, verifier, token) = dev_token();
    let err = reject(&verifier, &token, NOW - 3600);
    assert!(
        matches!(err, AuthError::NotYetValid { nbf: NOW, .. }),
        "{err}"
    );
}

#[test]
fn expiry_leeway_boundary_is_exclusive() {
    let (_, verifier, token) = dev_token();
    let exp = NOW + 600;
    assert!(
        verifier.verify(&token, exp + 29).is_ok(),
        "inside the 30 s leeway"
    );
    assert!(matches!(
        reject(&verifier, &token, exp + 30),
        AuthError::Expired { .. }
    ));
}

#[test]
fn not_before_leeway_boundary_is_inclusive() {
    let (_, verifier, token) = dev_token();
    assert!(
        verifier.verify(&token, NOW - 30).is_ok(),
        "30 s early is within leeway"
    );
    assert!(matches!(
        reject(&verifier, &token, NOW - 31),
        AuthError::NotYetValid { .. }
    ));
}

#[test]
fn leeway_is_configurable() {
    let (issuer, verifier) = dev();
    let verifier = verifier.with_leeway(Duration::ZERO);
    let token = issuer
        .issue("demo", "app", AUD, Duration::from_secs(600), NOW)
        .unwrap();
    assert!(verifier.verify(&token, NOW + 599).is_ok());
    assert!(matches!(
        reject(&verifier, &token, NOW + 600),
        AuthError::Expired { .. }
    ));
    assert!(matches!(
        reject(&verifier, &token, NOW - 1),
        AuthError::NotYetValid { .. }
    ));
}

#[test]
fn flipped_signature_byte_is_rejected() {
    let token = real_token();
    let mut sig = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(2).unwrap())
        .unwrap();
    sig[10] ^= 0x01;
    let bad = replace_part(&token, 2, &URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        reject(&real_verifier(), &bad, REAL_NOW),
        AuthError::BadSignature
    );
}

#[test]
fn flipped_payload_byte_is_rejected() {
    let token = real_token();
    let mut payload = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    // "app" -> "apq": still valid claims, only the signature can tell.
    let at = payload.windows(5).position(|w| w == b"\"app\"").unwrap();
    payload[at + 3] ^= 0x01;
    let bad = replace_part(&token, 1, &URL_SAFE_NO_PAD.encode(&payload));
    assert_eq!(
        reject(&real_verifier(), &bad, REAL_NOW),
        AuthError::BadSignature
    );
}

#[test]
fn flipped_es256_signature_byte_is_rejected() {
    let (_, verifier, token) = dev_token();
    let mut sig = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(2).unwrap())
        .unwrap();
    sig[40] ^= 0x80;
    let bad = replace_part(&token, 2, &URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(reject(&verifier, &bad, NOW), AuthError::BadSignature);
}

#[test]
fn es256_dev_token_is_accepted() {
    let (_, verifier, token) = dev_token();
    let id = verifier.verify(&token, NOW).unwrap();
    assert_eq!(id.workload.to_string(), "demo/app");
    assert_eq!(id.expires_at, NOW + 600);
}

#[test]
fn unknown_kid_is_rejected() {
    let (issuer, _) = dev();
    let token = issuer
        .with_issuer_url(REAL_ISSUER)
        .issue("demo", "app", AUD, Duration::from_secs(600), REAL_NOW)
        .unwrap();
    let err = reject(&real_verifier(), &token, REAL_NOW);
    assert!(matches!(err, AuthError::UnknownKeyId(_)), "{err}");
    assert!(err.to_string().starts_with("unknown key id \""), "{err}");
}

#[test]
fn token_without_kid_uses_the_only_key() {
    let signer = RawSigner::new();
    let jwks = serde_json::json!({"keys": [signer.jwk(Some("k1"))]}).to_string();
    let verifier = JwksVerifier::from_jwks_json(jwks.as_bytes(), "https://i", AUD).unwrap();
    let token = signer.sign(
        br#"{"alg":"ES256"}"#,
        claims("https://i", NOW).to_string().as_bytes(),
    );
    assert!(verifier.verify(&token, NOW).is_ok());
}

#[test]
fn token_without_kid_is_rejected_when_there_are_several_keys() {
    let (a, b) = (RawSigner::new(), RawSigner::new());
    let jwks = serde_json::json!({"keys": [a.jwk(Some("a")), b.jwk(Some("b"))]}).to_string();
    let verifier = JwksVerifier::from_jwks_json(jwks.as_bytes(), "https://i", AUD).unwrap();
    let token = a.sign(
        br#"{"alg":"ES256"}"#,
        claims("https://i", NOW).to_string().as_bytes(),
    );
    assert_eq!(reject(&verifier, &token, NOW), AuthError::MissingKeyId);
    let token = b.sign(
        br#"{"alg":"ES256","kid":"b"}"#,
        claims("https://i", NOW).to_string().as_bytes(),
    );
    assert!(
        verifier.verify(&token, NOW).is_ok(),
        "kid picks the right one of two keys"
    );
}

#[test]
fn alg_none_is_rejected() {
    let token = real_token();
    let payload = token.split('.').nth(1).unwrap();
    for alg in ["none", "None", "NONE"] {
        let header = b64(&format!(
            r#"{{"alg":"{alg}","kid":"S1qeLmMN7havVq-rojjZ4EmYUQlcBZQkRj3k7Z0p3tE"}}"#
        ));
        for sig in ["", "AAAA"] {
            let forged = format!("{header}.{payload}.{sig}");
            let err = reject(&real_verifier(), &forged, REAL_NOW);
            assert_eq!(err, AuthError::UnsupportedAlgorithm(format!("{alg:?}")));
        }
    }
}

#[test]
fn alg_hs256_signed_with_the_public_key_is_rejected() {
    // The classic confusion attack: HMAC keyed with the RSA public key the verifier holds.
    let jwks: serde_json::Value = serde_json::from_slice(&fixture("tokens/jwks.json")).unwrap();
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    let token = real_token();
    let payload = token.split('.').nth(1).unwrap();
    let header = b64(r#"{"alg":"HS256","kid":"S1qeLmMN7havVq-rojjZ4EmYUQlcBZQkRj3k7Z0p3tE"}"#);
    let input = format!("{header}.{payload}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, n.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    let err = reject(&real_verifier(), &forged, REAL_NOW);
    assert_eq!(err, AuthError::UnsupportedAlgorithm("\"HS256\"".into()));
    assert_eq!(
        err.to_string(),
        "token algorithm \"HS256\" is not accepted (only RS256 and ES256)"
    );
}

#[test]
fn es256_header_on_rsa_key_is_rejected() {
    let token = real_token();
    let header = b64(r#"{"alg":"ES256","kid":"S1qeLmMN7havVq-rojjZ4EmYUQlcBZQkRj3k7Z0p3tE"}"#);
    let forged = replace_part(&token, 0, &header);
    let err = reject(&real_verifier(), &forged, REAL_NOW);
    assert_eq!(
        err,
        AuthError::AlgorithmMismatch {
            alg: "ES256",
            key_kind: "RSA"
        }
    );
}

#[test]
fn other_algorithms_are_rejected() {
    let token = real_token();
    for alg in ["RS384", "RS512", "PS256", "ES384", "EdDSA", "rs256", ""] {
        let forged = replace_part(&token, 0, &b64(&format!(r#"{{"alg":"{alg}"}}"#)));
        assert!(
            matches!(
                reject(&real_verifier(), &forged, REAL_NOW),
                AuthError::UnsupportedAlgorithm(_)
            ),
            "{alg}"
        );
    }
}

#[test]
fn crit_header_is_rejected() {
    let signer = RawSigner::new();
    let jwks = serde_json::json!({"keys": [signer.jwk(None)]}).to_string();
    let verifier = JwksVerifier::from_jwks_json(jwks.as_bytes(), "https://i", AUD).unwrap();
    let token = signer.sign(
        br#"{"alg":"ES256","crit":["exp"],"exp":1}"#,
        claims("https://i", NOW).to_string().as_bytes(),
    );
    assert!(matches!(
        reject(&verifier, &token, NOW),
        AuthError::Malformed(_)
    ));
}

#[test]
fn malformed_two_parts_is_rejected() {
    let token = real_token();
    let two = token.rsplit_once('.').unwrap().0;
    let err = reject(&real_verifier(), two, REAL_NOW);
    assert_eq!(
        err.to_string(),
        "token is malformed: expected 3 dot-separated parts (header.payload.signature), found 2"
    );
    let four = format!("{token}.x");
    assert!(matches!(
        reject(&real_verifier(), &four, REAL_NOW),
        AuthError::Malformed(_)
    ));
    assert!(matches!(
        reject(&real_verifier(), "..", REAL_NOW),
        AuthError::Malformed(_)
    ));
}

#[test]
fn malformed_base64_is_rejected() {
    let token = real_token();
    let parts: Vec<&str> = token.split('.').collect();
    // Invalid characters in the header and signature (standard-alphabet `+` and `/`).
    for (i, bad) in [(0, "e!J"), (2, "a+b/")] {
        let forged = replace_part(&token, i, bad);
        assert!(matches!(
            reject(&real_verifier(), &forged, REAL_NOW),
            AuthError::Malformed(_)
        ));
    }
    // The payload is decoded only after the signature verified, so a garbled payload
    // fails there: nothing unsigned is parsed.
    let forged = replace_part(&token, 1, "e!J");
    assert_eq!(
        reject(&real_verifier(), &forged, REAL_NOW),
        AuthError::BadSignature
    );
    let padded = replace_part(&token, 2, &format!("{}==", parts[2]));
    assert!(matches!(
        reject(&real_verifier(), &padded, REAL_NOW),
        AuthError::Malformed(_)
    ));
    let with_space = format!(" {token}");
    assert!(matches!(
        reject(&real_verifier(), &with_space, REAL_NOW),
        AuthError::Malformed(_)
    ));
}

#[test]
fn malformed_header_json_is_rejected() {
    let token = real_token();
    for header in ["not json", "[]", r#"{"kid":"x"}"#, r#"{"alg":256}"#] {
        let forged = replace_part(&token, 0, &b64(header));
        let err = reject(&real_verifier(), &forged, REAL_NOW);
        assert!(matches!(err, AuthError::Malformed(_)), "{header}: {err}");
    }
}

#[test]
fn signed_payload_that_is_not_json_is_rejected() {
    let signer = RawSigner::new();
    let jwks = serde_json::json!({"keys": [signer.jwk(None)]}).to_string();
    let verifier = JwksVerifier::from_jwks_json(jwks.as_bytes(), "https://i", AUD).unwrap();
    let token = signer.sign(
        br#"{"alg":"ES256"}"#,
        b"{\"iss\": \"https://i\", secret-ish",
    );
    let err = reject(&verifier, &token, NOW);
    assert!(matches!(err, AuthError::InvalidClaims(_)), "{err}");
    assert!(
        !err.to_string().contains("secret-ish"),
        "claims text is not echoed: {err}"
    );
}

#[test]
fn missing_kubernetes_io_claim_is_rejected() {
    let (issuer, verifier) = dev();
    let mut c = claims(issuer.issuer_url(), NOW);
    c.as_object_mut().unwrap().remove("kubernetes.io");
    let token = issuer.sign_claims(&c).unwrap();
    let err = reject(&verifier, &token, NOW);
    assert_eq!(
        err.to_string(),
        "token claims are invalid: not a Kubernetes ServiceAccount token: missing field `kubernetes.io`"
    );
}

#[test]
fn claim_of_wrong_type_is_rejected_without_echoing_it() {
    let (issuer, verifier) = dev();
    let mut c = claims(issuer.issuer_url(), NOW);
    c["exp"] = "tomorrow-ish".into();
    let token = issuer.sign_claims(&c).unwrap();
    let err = reject(&verifier, &token, NOW);
    assert!(matches!(err, AuthError::InvalidClaims(_)));
    assert!(!err.to_string().contains("tomorrow-ish"), "{err}");
}

#[test]
fn invalid_namespace_in_claims_is_rejected() {
    let (issuer, verifier) = dev();
    let mut c = claims(issuer.issuer_url(), NOW);
    c["kubernetes.io"]["namespace"] = "Not_A_Namespace".into();
    c["sub"] = "system:serviceaccount:Not_A_Namespace:app".into();
    let token = issuer.sign_claims(&c).unwrap();
    assert!(matches!(
        reject(&verifier, &token, NOW),
        AuthError::InvalidWorkload(_)
    ));
}

#[test]
fn subject_disagreeing_with_kubernetes_claim_is_rejected() {
    let (issuer, verifier) = dev();
    for sub in ["system:serviceaccount:demo:admin", ""] {
        let mut c = claims(issuer.issuer_url(), NOW);
        c["sub"] = sub.into();
        let token = issuer.sign_claims(&c).unwrap();
        assert!(matches!(
            reject(&verifier, &token, NOW),
            AuthError::SubjectMismatch { .. }
        ));
    }
}

#[test]
fn oversize_token_is_rejected_before_decoding() {
    let token = format!("{}.{}.{}", "a".repeat(MAX_TOKEN_LEN), "b", "c");
    let err = reject(&real_verifier(), &token, REAL_NOW);
    assert_eq!(
        err,
        AuthError::TooLong {
            len: MAX_TOKEN_LEN + 4,
            max: MAX_TOKEN_LEN
        }
    );
}

#[tokio::test]
async fn empty_token_is_missing() {
    let auth = Authenticator::Jwks(real_verifier());
    assert_eq!(auth.authenticate("").await.unwrap_err(), AuthError::Missing);
}

#[tokio::test]
async fn cached_result_is_not_served_after_expiry() {
    let (issuer, verifier) = dev();
    let verifier = verifier.with_cache(Duration::from_secs(3600), 100);
    let token = issuer
        .issue("demo", "app", AUD, Duration::from_secs(60), NOW)
        .unwrap();
    assert!(verifier.authenticate_at(&token, NOW).await.is_ok());
    assert!(verifier.authenticate_at(&token, NOW + 59).await.is_ok());
    let err = verifier
        .authenticate_at(&token, NOW + 60 + 30)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Expired { .. }), "{err}");
}

#[tokio::test]
async fn cache_never_accepts_a_different_token() {
    let (_, verifier, token) = dev_token();
    assert!(verifier.authenticate_at(&token, NOW).await.is_ok());
    let mut sig = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(2).unwrap())
        .unwrap();
    sig[0] ^= 1;
    let bad = replace_part(&token, 2, &URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        verifier.authenticate_at(&bad, NOW).await.unwrap_err(),
        AuthError::BadSignature
    );
}

#[test]
fn jwks_with_unusable_keys_is_refused_and_skips_others() {
    use aegis_auth::{JwksError, KeySetError};
    let only_enc = br#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#;
    assert!(matches!(
        JwksVerifier::from_jwks_json(only_enc, "i", AUD),
        Err(JwksError::KeySet(KeySetError::NoUsableKeys))
    ));
    let short_rsa = br#"{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]}"#;
    assert!(matches!(
        JwksVerifier::from_jwks_json(short_rsa, "i", AUD),
        Err(JwksError::KeySet(KeySetError::BadKey { .. }))
    ));
    assert!(matches!(
        JwksVerifier::from_jwks_json(b"{}", "i", AUD),
        Err(JwksError::KeySet(KeySetError::Json(_)))
    ));
    // An Ed25519 key beside the real RSA key is skipped; the RSA key still works.
    let mut jwks: serde_json::Value = serde_json::from_slice(&fixture("tokens/jwks.json")).unwrap();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"AA"}));
    let v = JwksVerifier::from_jwks_json(jwks.to_string().as_bytes(), REAL_ISSUER, AUD).unwrap();
    assert!(v.verify(&real_token(), REAL_NOW).is_ok());
}
