//! The dev issuer: tokens shaped like the API server's, keys saved privately and reloaded.

mod common;

use aegis_auth::{DevIssuer, IssuerError, PodRef, DEV_ISSUER_URL};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const AUD: &str = "aegis-safe";
const NOW: i64 = 1_900_000_000;
const TTL: Duration = Duration::from_secs(600);

fn decode_part(token: &str, i: usize) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(i).unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn token_has_the_shape_of_a_real_kubernetes_token() {
    let real = fixture_token("demo-app.aegis-safe.jwt");
    let dev = DevIssuer::generate()
        .issue("demo", "app", AUD, TTL, NOW)
        .unwrap();
    let (real_h, dev_h) = (decode_part(&real, 0), decode_part(&dev, 0));
    let (real_c, dev_c) = (decode_part(&real, 1), decode_part(&dev, 1));
    assert_eq!(keys(&real_h), keys(&dev_h), "same header fields (alg, kid)");
    assert_eq!(keys(&real_c), keys(&dev_c), "same claim names");
    assert_eq!(
        keys(&real_c["kubernetes.io"]),
        keys(&dev_c["kubernetes.io"])
    );
    assert_eq!(
        keys(&real_c["kubernetes.io"]["serviceaccount"]),
        keys(&dev_c["kubernetes.io"]["serviceaccount"])
    );
    // Same key order in the encoded JSON as the API server's encoder.
    let order = |t: &str| {
        let raw = String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(t.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        [
            "\"aud\"",
            "\"exp\"",
            "\"iat\"",
            "\"iss\"",
            "\"jti\"",
            "\"kubernetes.io\"",
            "\"nbf\"",
            "\"sub\"",
        ]
        .map(|k| raw.find(k).unwrap())
    };
    assert!(order(&dev).windows(2).all(|w| w[0] < w[1]));
    assert!(order(&real).windows(2).all(|w| w[0] < w[1]));

    assert_eq!(dev_h["alg"], "ES256");
    assert_eq!(dev_c["iss"], DEV_ISSUER_URL);
    assert_eq!(dev_c["sub"], "system:serviceaccount:demo:app");
    assert_eq!(dev_c["aud"], serde_json::json!([AUD]));
    assert_eq!(dev_c["iat"], NOW);
    assert_eq!(dev_c["nbf"], NOW);
    assert_eq!(dev_c["exp"], NOW + 600);
    assert_eq!(dev_c["kubernetes.io"]["namespace"], "demo");
    assert_eq!(dev_c["kubernetes.io"]["serviceaccount"]["name"], "app");
    let jti = dev_c["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 36);
    assert_eq!(&jti[14..15], "4", "jti is a version-4 UUID");
}

#[test]
fn pod_bound_token_names_the_pod() {
    let issuer = DevIssuer::generate();
    let pod = PodRef {
        name: "app-7d9f8-abcde".into(),
        uid: None,
    };
    let token = issuer
        .issue_for_pod("demo", "app", &pod, AUD, TTL, NOW)
        .unwrap();
    let c = decode_part(&token, 1);
    assert_eq!(c["kubernetes.io"]["pod"]["name"], "app-7d9f8-abcde");
    assert_eq!(c["kubernetes.io"]["pod"]["uid"].as_str().unwrap().len(), 36);
    let pod = PodRef {
        name: "p".into(),
        uid: Some("0000-given".into()),
    };
    let token = issuer
        .issue_for_pod("demo", "app", &pod, AUD, TTL, NOW)
        .unwrap();
    assert_eq!(
        decode_part(&token, 1)["kubernetes.io"]["pod"]["uid"],
        "0000-given"
    );
    let id = issuer.verifier(AUD).unwrap().verify(&token, NOW).unwrap();
    assert_eq!(id.workload.to_string(), "demo/app");
    let bad = PodRef {
        name: "Bad Pod".into(),
        uid: None,
    };
    assert!(matches!(
        issuer.issue_for_pod("demo", "app", &bad, AUD, TTL, NOW),
        Err(IssuerError::BadPodName(_))
    ));
}

#[test]
fn service_account_uid_is_stable_and_jti_is_fresh() {
    let issuer = DevIssuer::generate();
    let a = decode_part(&issuer.issue("demo", "app", AUD, TTL, NOW).unwrap(), 1);
    let b = decode_part(&issuer.issue("demo", "app", AUD, TTL, NOW).unwrap(), 1);
    assert_eq!(
        a["kubernetes.io"]["serviceaccount"]["uid"],
        b["kubernetes.io"]["serviceaccount"]["uid"]
    );
    assert_ne!(a["jti"], b["jti"]);
}

#[test]
fn kid_is_the_sha256_of_the_public_point() {
    let issuer = DevIssuer::generate();
    let jwks: Value = serde_json::from_str(&issuer.jwks_json()).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    let mut point = vec![0x04];
    point.extend(URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap());
    let digest = ring::digest::digest(&ring::digest::SHA256, &point);
    assert_eq!(key["kid"], URL_SAFE_NO_PAD.encode(digest.as_ref()));
    assert_eq!(issuer.kid(), key["kid"]);
}

#[test]
fn saved_key_is_private_and_reloads_to_the_same_issuer() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.pk8");
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let issuer = DevIssuer::generate();
    issuer.save(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let loaded = DevIssuer::load(&path).unwrap();
    assert_eq!(loaded.kid(), issuer.kid());
    assert_eq!(loaded.jwks_json(), issuer.jwks_json());
    let token = loaded.issue("demo", "app", AUD, TTL, NOW).unwrap();
    assert!(issuer.verifier(AUD).unwrap().verify(&token, NOW).is_ok());
}

#[test]
fn garbage_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.pk8");
    std::fs::write(&path, b"not a key").unwrap();
    assert!(matches!(
        DevIssuer::load(&path),
        Err(IssuerError::BadKey(_))
    ));
    assert!(matches!(
        DevIssuer::load(&dir.path().join("missing")),
        Err(IssuerError::Io { .. })
    ));
}

#[test]
fn debug_shows_no_key_material() {
    let issuer = DevIssuer::generate();
    let text = format!("{issuer:?}");
    assert!(text.contains(issuer.kid()));
    assert!(
        !text.contains("pkcs8") && !text.contains("key_pair"),
        "{text}"
    );
}

#[test]
fn configurable_issuer_url_is_used_and_checked() {
    let issuer = DevIssuer::generate().with_issuer_url("https://issuer.test");
    assert_eq!(issuer.issuer_url(), "https://issuer.test");
    let token = issuer.issue("demo", "app", AUD, TTL, NOW).unwrap();
    assert_eq!(decode_part(&token, 1)["iss"], "https://issuer.test");
    assert!(issuer.verifier(AUD).unwrap().verify(&token, NOW).is_ok());
}

#[test]
fn invalid_requests_are_refused() {
    let issuer = DevIssuer::generate();
    assert!(matches!(
        issuer.issue("Demo", "app", AUD, TTL, NOW),
        Err(IssuerError::Workload(_))
    ));
    assert!(matches!(
        issuer.issue("demo", "", AUD, TTL, NOW),
        Err(IssuerError::Workload(_))
    ));
    assert!(matches!(
        issuer.issue("demo", "app", "", TTL, NOW),
        Err(IssuerError::EmptyAudience)
    ));
    assert!(matches!(
        issuer.issue("demo", "app", AUD, Duration::ZERO, NOW),
        Err(IssuerError::BadTtl)
    ));
    assert!(matches!(
        issuer.issue("demo", "app", AUD, Duration::from_secs(u64::MAX), NOW),
        Err(IssuerError::BadTtl)
    ));
}
