//! `jwks` mode with keys from OIDC discovery, served over real TLS on 127.0.0.1:0 by a
//! small fake issuer. The discovery document is the captured one with `jwks_uri` pointed
//! at the fake (the only change, made here in the test; the fixture is untouched).

mod common;

use aegis_auth::{AuthError, DevIssuer, HttpOptions, JwksError, JwksVerifier};
use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const AUD: &str = "aegis-safe";

/// The captured discovery document with `jwks_uri` rewritten to `base/openid/v1/jwks`.
fn discovery_doc(base: &str) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("tokens/openid-configuration.json")).unwrap();
    doc["jwks_uri"] = format!("{base}/openid/v1/jwks").into();
    doc.to_string()
}

/// A fake issuer serving discovery and whatever JWKS `jwks` currently holds.
async fn fake_issuer(
    jwks: Arc<Mutex<String>>,
    pki: &TestPki,
    required_bearer: Option<&'static str>,
) -> TestServer {
    let base = Arc::new(Mutex::new(String::new()));
    let base_for_handler = Arc::clone(&base);
    let handler: Handler = Arc::new(move |req: &Request| {
        if let Some(token) = required_bearer {
            if req.authorization.as_deref() != Some(&format!("Bearer {token}")) {
                return (401, r#"{"kind":"Status","code":401}"#.to_string());
            }
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => {
                (200, discovery_doc(&base_for_handler.lock().unwrap()))
            }
            ("GET", "/openid/v1/jwks") => (200, jwks.lock().unwrap().clone()),
            _ => (404, "{}".to_string()),
        }
    });
    let server = serve(handler, Some(Arc::clone(&pki.server))).await;
    *base.lock().unwrap() = server.base_url(true);
    server
}

fn options(server: &TestServer, pki: &TestPki) -> HttpOptions {
    HttpOptions {
        discovery_base_url: Some(server.base_url(true)),
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        ..HttpOptions::default()
    }
}

#[tokio::test]
async fn discovery_over_tls_verifies_the_real_token() {
    let pki = test_pki();
    let jwks = Arc::new(Mutex::new(
        String::from_utf8(fixture("tokens/jwks.json")).unwrap(),
    ));
    let server = fake_issuer(jwks, &pki, None).await;
    let verifier = JwksVerifier::from_discovery(REAL_ISSUER, AUD, options(&server, &pki))
        .await
        .unwrap();
    let id = verifier
        .verify(&fixture_token("demo-app.aegis-safe.jwt"), REAL_NOW)
        .unwrap();
    assert_eq!(id.workload.to_string(), "demo/app");
    assert_eq!(server.count(), 2, "discovery document, then JWKS");
    let err = verifier.verify(&fixture_token("demo-app.other-audience.jwt"), REAL_NOW);
    assert_eq!(err.unwrap_err(), AuthError::AudienceMismatch(AUD.into()));
}

#[tokio::test]
async fn discovery_for_another_issuer_is_refused() {
    let pki = test_pki();
    let jwks = Arc::new(Mutex::new(
        String::from_utf8(fixture("tokens/jwks.json")).unwrap(),
    ));
    let server = fake_issuer(jwks, &pki, None).await;
    let err = JwksVerifier::from_discovery("https://not-the-issuer", AUD, options(&server, &pki))
        .await
        .err()
        .expect("issuer mismatch must fail");
    assert!(matches!(err, JwksError::Discovery { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("kubernetes.default.svc.cluster.local"),
        "{err}"
    );
}

#[tokio::test]
async fn issuer_certificate_from_another_ca_is_refused() {
    let pki = test_pki();
    let other = test_pki();
    let jwks = Arc::new(Mutex::new(
        String::from_utf8(fixture("tokens/jwks.json")).unwrap(),
    ));
    let server = fake_issuer(jwks, &pki, None).await;
    let err = JwksVerifier::from_discovery(REAL_ISSUER, AUD, options(&server, &other))
        .await
        .err()
        .expect("untrusted certificate must fail");
    assert!(matches!(err, JwksError::Fetch { .. }), "{err}");
    assert_eq!(
        server.count(),
        0,
        "no request completed over the untrusted connection"
    );
}

#[tokio::test]
async fn bearer_token_file_is_sent_to_the_issuer() {
    let pki = test_pki();
    let jwks = Arc::new(Mutex::new(
        String::from_utf8(fixture("tokens/jwks.json")).unwrap(),
    ));
    let server = fake_issuer(jwks, &pki, Some("in-cluster-sa-token")).await;
    let without = JwksVerifier::from_discovery(REAL_ISSUER, AUD, options(&server, &pki)).await;
    assert!(
        matches!(without.err(), Some(JwksError::Fetch { .. })),
        "401 without the token"
    );

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "in-cluster-sa-token\n").unwrap();
    let opts = HttpOptions {
        bearer_token_file: Some(token_file),
        ..options(&server, &pki)
    };
    let verifier = JwksVerifier::from_discovery(REAL_ISSUER, AUD, opts)
        .await
        .unwrap();
    assert!(verifier
        .verify(&fixture_token("demo-app.aegis-safe.jwt"), REAL_NOW)
        .is_ok());
}

#[tokio::test]
async fn bearer_token_is_never_sent_over_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "secret").unwrap();
    let opts = HttpOptions {
        bearer_token_file: Some(token_file),
        ..HttpOptions::default()
    };
    let err = JwksVerifier::from_jwks_url("http://127.0.0.1:9/jwks", REAL_ISSUER, AUD, opts)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, JwksError::InsecureBearer(_)), "{err}");
}

/// A fake issuer publishing one key (`known`), a verifier built by discovery from it, and
/// an issuer whose key it does not publish (`stranger`).
struct Rotation {
    server: TestServer,
    jwks: Arc<Mutex<String>>,
    verifier: JwksVerifier,
    known: DevIssuer,
    stranger: DevIssuer,
}

async fn rotation(refresh_interval: Option<Duration>) -> Rotation {
    let pki = test_pki();
    let known = DevIssuer::generate().with_issuer_url(REAL_ISSUER);
    let stranger = DevIssuer::generate().with_issuer_url(REAL_ISSUER);
    let jwks = Arc::new(Mutex::new(known.jwks_json()));
    let server = fake_issuer(Arc::clone(&jwks), &pki, None).await;
    let mut verifier = JwksVerifier::from_discovery(REAL_ISSUER, AUD, options(&server, &pki))
        .await
        .unwrap();
    if let Some(interval) = refresh_interval {
        verifier = verifier.with_refresh_interval(interval);
    }
    Rotation {
        server,
        jwks,
        verifier,
        known,
        stranger,
    }
}

fn token_from(issuer: &DevIssuer, now: i64) -> String {
    issuer
        .issue("demo", "app", AUD, Duration::from_secs(600), now)
        .unwrap()
}

#[tokio::test]
async fn unknown_kid_refreshes_keys_once_rotation_happened() {
    let r = rotation(Some(Duration::ZERO)).await;
    let now = aegis_auth::unix_now();
    let token = token_from(&r.stranger, now);
    assert!(matches!(
        r.verifier.verify(&token, now),
        Err(AuthError::UnknownKeyId(_))
    ));

    *r.jwks.lock().unwrap() = r.stranger.jwks_json(); // the issuer rotates its key
    let id = r.verifier.authenticate_at(&token, now).await.unwrap();
    assert_eq!(id.workload.to_string(), "demo/app");
    assert_eq!(r.server.count(), 3, "discovery, JWKS, one refresh");
}

#[tokio::test]
async fn unknown_kid_refresh_is_rate_limited() {
    // Default interval: the keys fetched at construction count as fresh for a minute.
    let r = rotation(None).await;
    let now = aegis_auth::unix_now();
    for _ in 0..20 {
        let token = token_from(&r.stranger, now);
        let err = r.verifier.authenticate_at(&token, now).await.unwrap_err();
        assert!(matches!(err, AuthError::UnknownKeyId(_)), "{err}");
    }
    assert_eq!(r.server.count(), 2, "made-up kids cause no extra fetches");
}

#[tokio::test]
async fn refresh_failure_is_unavailable_not_unauthorized() {
    let r = rotation(Some(Duration::ZERO)).await;
    drop(r.server); // the issuer goes away
    let now = aegis_auth::unix_now();
    let token = token_from(&r.stranger, now);
    let err = r.verifier.authenticate_at(&token, now).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert_no_token_in(&err, &token);
    // Known keys keep working while the issuer is down.
    assert!(r
        .verifier
        .authenticate_at(&token_from(&r.known, now), now)
        .await
        .is_ok());
}

#[tokio::test]
async fn jwks_url_without_discovery_works_over_plain_http() {
    let issuer = DevIssuer::generate();
    let jwks = issuer.jwks_json();
    let handler: Handler = Arc::new(move |_req: &Request| (200, jwks.clone()));
    let server = serve(handler, None).await;
    let url = format!("{}/keys", server.base_url(false));
    let verifier =
        JwksVerifier::from_jwks_url(&url, issuer.issuer_url(), AUD, HttpOptions::default())
            .await
            .unwrap();
    let now = aegis_auth::unix_now();
    let token = issuer
        .issue("demo", "app", AUD, Duration::from_secs(600), now)
        .unwrap();
    assert!(verifier.verify(&token, now).is_ok());
}

#[test]
fn jwks_file_is_read() {
    let path = fixtures_dir().join("tokens/jwks.json");
    let verifier = JwksVerifier::from_file(&path, REAL_ISSUER, AUD).unwrap();
    assert!(verifier
        .verify(&fixture_token("demo-app.aegis-safe.jwt"), REAL_NOW)
        .is_ok());
    let missing = JwksVerifier::from_file(&path.with_file_name("nope.json"), REAL_ISSUER, AUD);
    assert!(matches!(missing.err(), Some(JwksError::Read { .. })));
}

#[tokio::test]
async fn bearer_token_is_not_sent_to_another_origin_named_by_discovery() {
    let pki = test_pki();
    // The JWKS host demands the token; the discovery host is a different origin.
    let jwks = Arc::new(Mutex::new(
        String::from_utf8(fixture("tokens/jwks.json")).unwrap(),
    ));
    let jwks_host = fake_issuer(jwks, &pki, Some("in-cluster-sa-token")).await;
    let jwks_base = jwks_host.base_url(true);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_handler = Arc::clone(&seen);
    let handler: Handler = Arc::new(move |req: &Request| {
        seen_by_handler
            .lock()
            .unwrap()
            .push(req.authorization.clone());
        (200, discovery_doc(&jwks_base))
    });
    let discovery_host = serve(handler, Some(Arc::clone(&pki.server))).await;

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "in-cluster-sa-token").unwrap();
    let opts = HttpOptions {
        discovery_base_url: Some(discovery_host.base_url(true)),
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        bearer_token_file: Some(token_file),
        ..HttpOptions::default()
    };
    let err = JwksVerifier::from_discovery(REAL_ISSUER, AUD, opts)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("the bearer token is sent only to"),
        "{err}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("Bearer in-cluster-sa-token".to_string())],
        "the configured origin got the token"
    );
    assert_eq!(
        jwks_host.count(),
        1,
        "the other origin was asked once, without the token"
    );
}

#[tokio::test]
async fn withdrawn_key_stops_verifying_once_keys_are_stale() {
    let r = rotation(None).await;
    let verifier = r.verifier.with_max_key_age(Duration::ZERO);
    let now = aegis_auth::unix_now();
    let token = token_from(&r.known, now);
    assert!(verifier.verify(&token, now).is_ok());
    *r.jwks.lock().unwrap() = r.stranger.jwks_json(); // the issuer withdraws the key
    let err = verifier.authenticate_at(&token, now).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKeyId(_)), "{err}");
    assert_eq!(
        r.server.count(),
        3,
        "discovery, JWKS, one age-triggered refresh"
    );
}
