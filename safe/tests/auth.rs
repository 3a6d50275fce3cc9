//! Authentication end to end: a token captured from a real Kubernetes API server works
//! against a Safe in `jwks` mode with that server's JWKS; variations of it do not.

mod common;

use aegis_safe::{AuthConfig, DevSafe, JwksSource};
use base64::Engine as _;
use common::{fixture, Env};
use std::net::{Ipv4Addr, SocketAddr};

const REAL_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Stores secrets for demo/app with the dev admin, then restarts the same data directory
/// with the captured cluster's JWKS as the only trusted issuer.
async fn safe_trusting_the_real_cluster() -> Env {
    let e = Env::start();
    assert_eq!(
        e.put("demo", "app", "DB_PASSWORD", "s3cr3t").await.status,
        201
    );
    let Env { safe, dir, .. } = e;
    safe.stop();
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (mut config, ca) = aegis_safe::dev::dev_config(dir.path(), any, any).unwrap();
    config.auth = AuthConfig::Jwks {
        source: JwksSource::File(fixture("jwks.json")),
        issuer: REAL_ISSUER.into(),
        audience: "aegis-safe".into(),
    };
    let safe = DevSafe::start_with(config, ca, dir.path()).unwrap();
    let client = aegis_safe::client::SafeClient::new(&safe.url, &safe.ca_pem).unwrap();
    Env {
        safe,
        client,
        admin: String::new(),
        dir,
    }
}

fn captured(name: &str) -> String {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn captured_kubernetes_token_reads_its_workloads_secrets() {
    let e = safe_trusting_the_real_cluster().await;
    let token = captured("demo-app.aegis-safe.jwt");
    let r = e.req("GET", "/v1/secrets", Some(&token), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let j = r.json();
    assert_eq!(
        j["workload"],
        serde_json::json!({"namespace":"demo","serviceAccount":"app"})
    );
    assert_eq!(j["secrets"]["DB_PASSWORD"], "s3cr3t");
}

#[tokio::test]
async fn captured_token_for_another_audience_is_401() {
    let e = safe_trusting_the_real_cluster().await;
    let token = captured("demo-app.other-audience.jwt");
    let r = e.req("GET", "/v1/secrets", Some(&token), None).await;
    assert_eq!(r.status, 401);
    assert!(
        !common::contains(&r.body, token.as_bytes()),
        "the error must not echo the token"
    );
}

#[tokio::test]
async fn captured_token_with_a_modified_signature_is_401() {
    let e = safe_trusting_the_real_cluster().await;
    let token = captured("demo-app.aegis-safe.jwt");
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged = format!("{head}.{}", String::from_utf8(sig).unwrap());
    assert_eq!(e.read_status(&forged).await, 401);
}

#[tokio::test]
async fn captured_claims_re_labelled_alg_none_are_401() {
    let e = safe_trusting_the_real_cluster().await;
    let token = captured("demo-app.aegis-safe.jwt");
    let payload = token.split('.').nth(1).unwrap();
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    for forged in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert_eq!(e.read_status(&forged).await, 401);
    }
}

#[tokio::test]
async fn dev_tokens_are_rejected_by_a_safe_trusting_only_the_real_cluster() {
    let e = safe_trusting_the_real_cluster().await;
    let dev = aegis_safe::dev::issue_token(
        e.dir.path(),
        "demo",
        "app",
        "aegis-safe",
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    assert_eq!(e.read_status(&dev).await, 401);
}
