//! The root key from a Kubernetes Secret, against a local fake API server that speaks the
//! real Secret and Status JSON: create when absent, read when present, handle the create
//! race, never overwrite.

use aegis_safe::rootkey::{load_or_create_secret, RootKeyError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Fake {
    /// The Secret the API server holds.
    secret: Option<Value>,
    /// If set, a POST fails with 409 and this Secret appears (another replica won).
    race_winner: Option<Value>,
    /// "METHOD path" of every request.
    log: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn status(code: u16, reason: &str, name: &str) -> (StatusCode, Json<Value>) {
    let message = match reason {
        "NotFound" => format!("secrets \"{name}\" not found"),
        _ => format!("secrets \"{name}\" already exists"),
    };
    (
        StatusCode::from_u16(code).unwrap(),
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason,
            "details": {"name": name, "kind": "secrets"}, "code": code
        })),
    )
}

fn secret_json(ns: &str, name: &str, key: &[u8]) -> Value {
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": "0b8c1a4e-1111-2222-3333-444455556666",
                     "resourceVersion": "4711", "creationTimestamp": "2026-12-04T20:00:00Z"},
        "data": {"root-key": base64::engine::general_purpose::STANDARD.encode(key)},
        "type": "Opaque"
    })
}

async fn get_secret(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let mut f = s.lock().unwrap();
    f.log
        .push(format!("GET /api/v1/namespaces/{ns}/secrets/{name}"));
    match &f.secret {
        Some(v) => (StatusCode::OK, Json(v.clone())),
        None => status(404, "NotFound", &name),
    }
}

async fn create_secret(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut f = s.lock().unwrap();
    f.log.push(format!("POST /api/v1/namespaces/{ns}/secrets"));
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(w) = f.race_winner.take() {
        f.secret = Some(w);
        return status(409, "AlreadyExists", &name);
    }
    if f.secret.is_some() {
        return status(409, "AlreadyExists", &name);
    }
    let mut stored = body.clone();
    stored["metadata"]["uid"] = json!("9f0e");
    stored["metadata"]["resourceVersion"] = json!("1");
    f.secret = Some(stored.clone());
    (StatusCode::CREATED, Json(stored))
}

async fn fake_api(state: Fake) -> (kube::Client, Shared) {
    let shared = Arc::new(Mutex::new(state));
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret))
        .route(
            "/api/v1/namespaces/{ns}/secrets",
            axum::routing::post(create_secret),
        )
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), shared)
}

#[tokio::test]
async fn creates_the_secret_with_a_random_key_when_absent() {
    let (client, fake) = fake_api(Fake::default()).await;
    let key = load_or_create_secret(client, "aegis-system", "aegis-root-key")
        .await
        .unwrap();
    let f = fake.lock().unwrap();
    assert_eq!(
        f.log,
        [
            "GET /api/v1/namespaces/aegis-system/secrets/aegis-root-key",
            "POST /api/v1/namespaces/aegis-system/secrets"
        ]
    );
    let stored = f.secret.as_ref().unwrap();
    assert_eq!(stored["immutable"], true);
    assert_eq!(stored["type"], "Opaque");
    let b64 = stored["data"]["root-key"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(&bytes[..], &key.expose()[..]);
    assert_ne!(bytes, vec![0u8; 32]);
}

#[tokio::test]
async fn reads_an_existing_secret_without_writing() {
    let existing = secret_json("aegis-system", "aegis-root-key", &[9u8; 32]);
    let (client, fake) = fake_api(Fake {
        secret: Some(existing),
        ..Default::default()
    })
    .await;
    let key = load_or_create_secret(client, "aegis-system", "aegis-root-key")
        .await
        .unwrap();
    assert_eq!(key.expose(), &[9u8; 32]);
    assert_eq!(
        fake.lock().unwrap().log,
        ["GET /api/v1/namespaces/aegis-system/secrets/aegis-root-key"]
    );
}

#[tokio::test]
async fn losing_the_create_race_uses_the_winners_key() {
    let winner = secret_json("aegis-system", "aegis-root-key", &[7u8; 32]);
    let (client, fake) = fake_api(Fake {
        race_winner: Some(winner),
        ..Default::default()
    })
    .await;
    let key = load_or_create_secret(client, "aegis-system", "aegis-root-key")
        .await
        .unwrap();
    assert_eq!(key.expose(), &[7u8; 32]);
    assert_eq!(
        fake.lock().unwrap().log,
        [
            "GET /api/v1/namespaces/aegis-system/secrets/aegis-root-key",
            "POST /api/v1/namespaces/aegis-system/secrets",
            "GET /api/v1/namespaces/aegis-system/secrets/aegis-root-key",
        ]
    );
}

#[tokio::test]
async fn a_secret_without_the_key_is_an_error_and_is_never_overwritten() {
    let mut odd = secret_json("aegis-system", "aegis-root-key", &[1u8; 32]);
    odd["data"] = json!({"something-else": "eA=="});
    let (client, fake) = fake_api(Fake {
        secret: Some(odd.clone()),
        ..Default::default()
    })
    .await;
    let err = load_or_create_secret(client, "aegis-system", "aegis-root-key")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RootKeyError::SecretWithoutKey { .. }),
        "{err}"
    );
    let f = fake.lock().unwrap();
    assert_eq!(f.log.len(), 1, "only a GET: {:?}", f.log);
    assert_eq!(f.secret.as_ref(), Some(&odd));
}

#[tokio::test]
async fn a_secret_with_a_wrong_sized_key_is_refused() {
    let short = secret_json("aegis-system", "aegis-root-key", &[1u8; 16]);
    let (client, _fake) = fake_api(Fake {
        secret: Some(short),
        ..Default::default()
    })
    .await;
    let err = load_or_create_secret(client, "aegis-system", "aegis-root-key")
        .await
        .unwrap_err();
    assert!(matches!(err, RootKeyError::Invalid { .. }), "{err}");
    assert!(
        !err.to_string().contains("AQEBAQEB"),
        "the key must not be printed"
    );
}
