//! `tokenreview` mode against a fake Kubernetes API server over real TLS on 127.0.0.1:0.
//! The fake answers `POST /apis/authentication.k8s.io/v1/tokenreviews` with the JSON a real
//! API server (v1.32) returns, counts requests, and records the last request body.

mod common;

use aegis_auth::{AuthError, Authenticator, DevIssuer, TokenReviewer};
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const AUD: &str = "aegis-safe";
const NOW: i64 = 1_900_000_000;
const TTL: Duration = Duration::from_secs(300);

/// What the fake API server says about a token.
#[derive(Clone)]
enum Verdict {
    /// authenticated, as this username, for these audiences (None: field omitted)
    Ok(&'static str, Option<Vec<&'static str>>),
    /// authenticated: false with this error
    No(&'static str),
    /// an HTTP error status (a Status object body)
    Status(u16),
}

struct FakeApi {
    server: TestServer,
    last_body: Arc<Mutex<Value>>,
    ca_der: Vec<u8>,
}

/// The body a real API server returns for a TokenReview create.
fn review_response(request: &Value, verdict: &Verdict) -> (u16, String) {
    let status = match verdict {
        Verdict::Ok(user, audiences) => {
            let mut s = json!({
                "authenticated": true,
                "user": {
                    "username": user,
                    "uid": "ac6ea4b5-2e69-4fcc-aab0-202aeda13dac",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:demo", "system:authenticated"],
                    "extra": {
                        "authentication.kubernetes.io/credential-id": ["JTI=4b8c36f3-0f65-4ab7-a45a-07f342972e1a"]
                    }
                }
            });
            if let Some(a) = audiences {
                s["audiences"] = json!(a);
            }
            s
        }
        Verdict::No(error) => json!({"user": {}, "error": error}),
        Verdict::Status(code) => {
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("fake failure {code}"), "reason": "InternalError", "code": code
            });
            return (*code, body.to_string());
        }
    };
    let body = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": request["spec"].clone(),
        "status": status,
    });
    (201, body.to_string())
}

async fn fake_api(verdict: Verdict) -> FakeApi {
    let pki = test_pki();
    let last_body = Arc::new(Mutex::new(Value::Null));
    let recorded = Arc::clone(&last_body);
    let handler: Handler = Arc::new(move |req: &Request| {
        if req.method != "POST" || req.path != "/apis/authentication.k8s.io/v1/tokenreviews" {
            return (404, json!({"kind": "Status", "code": 404}).to_string());
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        *recorded.lock().unwrap() = body.clone();
        review_response(&body, &verdict)
    });
    let server = serve(handler, Some(Arc::clone(&pki.server))).await;
    FakeApi {
        server,
        last_body,
        ca_der: pki.ca_der,
    }
}

fn client_for(url: &str, ca_der: &[u8]) -> kube::Client {
    // kube builds its TLS config from the process-wide provider; tests install ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = kube::Config::new(url.parse().unwrap());
    config.root_cert = Some(vec![ca_der.to_vec()]);
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn reviewer(api: &FakeApi) -> TokenReviewer {
    TokenReviewer::new(
        client_for(&api.server.base_url(true), &api.ca_der),
        AUD.to_string(),
        TTL,
    )
}

fn dev_token(exp_in: u64) -> String {
    DevIssuer::generate()
        .with_issuer_url(REAL_ISSUER)
        .issue("demo", "app", AUD, Duration::from_secs(exp_in), NOW)
        .unwrap()
}

#[tokio::test]
async fn authenticated_service_account_is_accepted() {
    let api = fake_api(Verdict::Ok(
        "system:serviceaccount:demo:app",
        Some(vec![AUD]),
    ))
    .await;
    let auth = Authenticator::TokenReview(reviewer(&api));
    assert_eq!(auth.mode(), "tokenreview");
    let token = fixture_token("demo-app.aegis-safe.jwt");
    let id = auth.authenticate_at(&token, NOW).await.unwrap();
    assert_eq!(id.workload.to_string(), "demo/app");
    assert_eq!(id.expires_at, 2_111_774_535, "exp read from the token");

    let sent = api.last_body.lock().unwrap().clone();
    assert_eq!(sent["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(sent["kind"], "TokenReview");
    assert_eq!(sent["spec"]["audiences"], json!([AUD]));
    assert_eq!(sent["spec"]["token"], json!(token));
}

#[tokio::test]
async fn unauthenticated_token_is_rejected_with_the_server_reason() {
    let api = fake_api(Verdict::No(
        "[invalid bearer token, token has been invalidated]",
    ))
    .await;
    let token = fixture_token("demo-app.other-audience.jwt");
    let err = reviewer(&api)
        .authenticate_at(&token, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Rejected(_)), "{err}");
    assert!(!err.is_unavailable());
    assert!(
        err.to_string().contains("token has been invalidated"),
        "{err}"
    );
    assert_no_token_in(&err, &token);
}

#[tokio::test]
async fn rejection_is_not_cached() {
    let api = fake_api(Verdict::No("token expired")).await;
    let r = reviewer(&api);
    let token = dev_token(600);
    assert!(r.authenticate_at(&token, NOW).await.is_err());
    assert!(r.authenticate_at(&token, NOW).await.is_err());
    assert_eq!(api.server.count(), 2);
}

#[tokio::test]
async fn user_that_is_not_a_service_account_is_rejected() {
    let api = fake_api(Verdict::Ok("kubernetes-admin", None)).await;
    let err = reviewer(&api)
        .authenticate_at(&dev_token(600), NOW)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::NotAServiceAccount("\"kubernetes-admin\"".into())
    );
}

#[tokio::test]
async fn answer_for_other_audiences_is_rejected() {
    let api = fake_api(Verdict::Ok(
        "system:serviceaccount:demo:app",
        Some(vec!["other"]),
    ))
    .await;
    let err = reviewer(&api)
        .authenticate_at(&dev_token(600), NOW)
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::ReviewAudienceMismatch(AUD.into()));
    assert!(err
        .to_string()
        .starts_with("token audience does not include aegis-safe"));
}

#[tokio::test]
async fn positive_result_is_cached_by_token_hash() {
    let api = fake_api(Verdict::Ok(
        "system:serviceaccount:demo:app",
        Some(vec![AUD]),
    ))
    .await;
    let r = reviewer(&api);
    let token = dev_token(600);
    let first = r.authenticate_at(&token, NOW).await.unwrap();
    let second = r.authenticate_at(&token, NOW + 10).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        api.server.count(),
        1,
        "the second call was served from the cache"
    );
    let other = dev_token(600);
    r.authenticate_at(&other, NOW).await.unwrap();
    assert_eq!(api.server.count(), 2, "a different token is reviewed");
}

#[tokio::test]
async fn cache_entry_ends_at_token_expiry() {
    let api = fake_api(Verdict::Ok(
        "system:serviceaccount:demo:app",
        Some(vec![AUD]),
    ))
    .await;
    let r = reviewer(&api); // TTL 300 s, token lives 60 s
    let token = dev_token(60);
    r.authenticate_at(&token, NOW).await.unwrap();
    r.authenticate_at(&token, NOW + 59).await.unwrap();
    assert_eq!(api.server.count(), 1);
    r.authenticate_at(&token, NOW + 60).await.unwrap();
    assert_eq!(
        api.server.count(),
        2,
        "past exp the API server is asked again"
    );
}

#[tokio::test]
async fn cache_entry_ends_at_ttl() {
    let api = fake_api(Verdict::Ok(
        "system:serviceaccount:demo:app",
        Some(vec![AUD]),
    ))
    .await;
    let r = reviewer(&api);
    let token = dev_token(3600);
    r.authenticate_at(&token, NOW).await.unwrap();
    r.authenticate_at(&token, NOW + 299).await.unwrap();
    assert_eq!(api.server.count(), 1);
    r.authenticate_at(&token, NOW + 300).await.unwrap();
    assert_eq!(api.server.count(), 2);
}

#[tokio::test]
async fn api_server_down_is_unavailable() {
    let pki = test_pki();
    let addr = dead_addr().await;
    let r = TokenReviewer::new(
        client_for(&format!("https://{addr}"), &pki.ca_der),
        AUD.into(),
        TTL,
    );
    let token = dev_token(600);
    let err = r.authenticate_at(&token, NOW).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string()
            .starts_with("could not reach the token verifier"),
        "{err}"
    );
    assert_no_token_in(&err, &token);
}

#[tokio::test]
async fn api_server_errors_are_unavailable() {
    for code in [500, 403, 429] {
        let api = fake_api(Verdict::Status(code)).await;
        let token = dev_token(600);
        let err = reviewer(&api)
            .authenticate_at(&token, NOW)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{code}: {err}");
        assert!(err.to_string().contains(&format!("HTTP {code}")), "{err}");
        assert_no_token_in(&err, &token);
    }
}

#[tokio::test]
async fn oversize_token_is_not_sent() {
    let api = fake_api(Verdict::Ok("system:serviceaccount:demo:app", None)).await;
    let token = "a".repeat(aegis_auth::MAX_TOKEN_LEN + 1);
    let err = reviewer(&api)
        .authenticate_at(&token, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::TooLong { .. }));
    assert_eq!(api.server.count(), 0);
}

#[tokio::test]
async fn legacy_token_without_exp_is_cached_for_the_ttl_only() {
    let api = fake_api(Verdict::Ok("system:serviceaccount:demo:app", None)).await;
    let r = reviewer(&api);
    let id = r
        .authenticate_at("legacy-opaque-secret-token", NOW)
        .await
        .unwrap();
    assert_eq!(id.expires_at, NOW + 300);
    r.authenticate_at("legacy-opaque-secret-token", NOW + 299)
        .await
        .unwrap();
    assert_eq!(api.server.count(), 1);
    r.authenticate_at("legacy-opaque-secret-token", NOW + 300)
        .await
        .unwrap();
    assert_eq!(api.server.count(), 2);
}

#[test]
fn authenticator_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: T) {}
    let auth = Authenticator::Jwks(DevIssuer::generate().verifier(AUD).unwrap());
    assert_send_sync(&auth);
    // Axum handlers need the authentication future to be Send.
    assert_send(auth.authenticate("x"));
}
