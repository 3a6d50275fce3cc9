//! Every endpoint and error path of the v1 API, over real HTTPS against a dev Safe.

mod common;

use aegis_core::Limits;
use aegis_safe::crypto::{fingerprint_string, sha256};
use aegis_safe::DevSafe;
use common::Env;
use std::net::{Ipv4Addr, SocketAddr};

fn error_code(r: &aegis_safe::client::Reply) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn put_creates_with_201_then_updates_with_200_and_new_version() {
    let e = Env::start();
    let r = e.put("demo", "app", "DB_PASSWORD", "hunter2").await;
    assert_eq!(r.status, 201);
    let j = r.json();
    assert_eq!(j["key"], "DB_PASSWORD");
    assert_eq!(j["version"], 1);
    assert_eq!(j["fingerprint"], fingerprint_string(&sha256(b"hunter2")));
    let updated = j["updatedAt"].as_str().unwrap();
    assert!(
        updated.ends_with('Z') && updated.parse::<jiff::Timestamp>().is_ok(),
        "{updated}"
    );
    let r = e.put("demo", "app", "DB_PASSWORD", "hunter3").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], 2);
}

#[tokio::test]
async fn workload_reads_exactly_its_own_secrets_with_revision() {
    let e = Env::start();
    e.put("demo", "app", "A", "1").await;
    e.put("demo", "app", "B", "2").await;
    e.put("demo", "other", "C", "3").await;
    let j = e.secrets("demo", "app").await;
    assert_eq!(
        j["workload"],
        serde_json::json!({"namespace":"demo","serviceAccount":"app"})
    );
    assert_eq!(j["revision"], 2);
    assert_eq!(j["secrets"], serde_json::json!({"A":"1","B":"2"}));
    let j = e.secrets("other", "app").await;
    assert_eq!(j["revision"], 0);
    assert_eq!(j["secrets"], serde_json::json!({}));
}

#[tokio::test]
async fn admin_lists_metadata_but_never_values() {
    let e = Env::start();
    e.put("demo", "app", "TOKEN", "value-that-must-not-leak")
        .await;
    let r = e.req("GET", "/v1/workloads", Some(&e.admin), None).await;
    assert_eq!(r.status, 200);
    assert!(!common::contains(&r.body, b"value-that-must-not-leak"));
    let j = r.json();
    let w = &j["workloads"][0];
    assert_eq!(w["workload"]["serviceAccount"], "app");
    assert_eq!(w["secrets"][0]["key"], "TOKEN");
    assert_eq!(w["secrets"][0]["version"], 1);
    assert!(w["secrets"][0]["createdAt"].is_string());
    assert_eq!(
        w["secrets"][0]["fingerprint"],
        fingerprint_string(&sha256(b"value-that-must-not-leak"))
    );
    // The admin's own GET /v1/secrets is its own (empty) set, not anyone else's values.
    let r = e.req("GET", "/v1/secrets", Some(&e.admin), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["secrets"], serde_json::json!({}));
}

#[tokio::test]
async fn workloads_calling_admin_routes_get_403() {
    let e = Env::start();
    e.put("demo", "app", "K", "v").await;
    let t = e.token("demo", "app");
    let body = Some(r#"{"value":"x"}"#);
    for (m, p, b) in [
        ("GET", "/v1/workloads", None),
        ("PUT", "/v1/workloads/demo/app/secrets/K", body),
        ("DELETE", "/v1/workloads/demo/app/secrets/K", None),
    ] {
        let r = e.req(m, p, Some(&t), b).await;
        assert_eq!(r.status, 403, "{m} {p}");
        assert_eq!(error_code(&r), "forbidden");
    }
    assert_eq!(e.secrets("demo", "app").await["secrets"]["K"], "v");
}

#[tokio::test]
async fn delete_returns_204_then_404() {
    let e = Env::start();
    e.put("demo", "app", "K", "v").await;
    let p = "/v1/workloads/demo/app/secrets/K";
    assert_eq!(e.req("DELETE", p, Some(&e.admin), None).await.status, 204);
    let r = e.req("DELETE", p, Some(&e.admin), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "not_found");
    let r = e
        .req(
            "DELETE",
            "/v1/workloads/nobody/here/secrets/K",
            Some(&e.admin),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let j = e.secrets("demo", "app").await;
    assert_eq!(j["secrets"], serde_json::json!({}));
    assert_eq!(
        j["revision"], 2,
        "revision stays monotonic after the last key is deleted"
    );
}

#[tokio::test]
async fn missing_or_malformed_authorization_is_401_with_challenge() {
    let e = Env::start();
    for token in [None, Some(""), Some("not-a-jwt"), Some("a.b.c")] {
        let r = e.req("GET", "/v1/secrets", token, None).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(error_code(&r), "unauthenticated");
    }
}

#[tokio::test]
async fn expired_and_wrong_audience_tokens_are_401() {
    let e = Env::start();
    let issuer = aegis_auth::DevIssuer::load(&e.dir.path().join("issuer.key")).unwrap();
    let long_ago = jiff::Timestamp::now().as_second() - 7200;
    let expired = issuer
        .issue(
            "demo",
            "app",
            "aegis-safe",
            std::time::Duration::from_secs(600),
            long_ago,
        )
        .unwrap();
    let r = e.req("GET", "/v1/secrets", Some(&expired), None).await;
    assert_eq!(r.status, 401);
    let other = aegis_safe::dev::issue_token(
        e.dir.path(),
        "demo",
        "app",
        "other",
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    assert_eq!(e.read_status(&other).await, 401);
    // A token signed by a different key (another dev issuer) is rejected too.
    let stranger = aegis_auth::DevIssuer::try_generate().unwrap();
    let forged = stranger
        .issue(
            "aegis-system",
            "aegis-sentinel",
            "aegis-safe",
            std::time::Duration::from_secs(600),
            jiff::Timestamp::now().as_second(),
        )
        .unwrap();
    assert_eq!(
        e.req("GET", "/v1/workloads", Some(&forged), None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn invalid_keys_and_workload_names_are_400() {
    let e = Env::start();
    for p in [
        "/v1/workloads/demo/app/secrets/1BAD",
        "/v1/workloads/demo/app/secrets/BAD-KEY",
        "/v1/workloads/demo/app/secrets/AEGIS_SAFE_URL",
        "/v1/workloads/Demo/app/secrets/K",
        "/v1/workloads/demo/UPPER/secrets/K",
        "/v1/workloads/demo/app/secrets/A%00B",
    ] {
        let r = e
            .req("PUT", p, Some(&e.admin), Some(r#"{"value":"v"}"#))
            .await;
        assert_eq!(r.status, 400, "{p}: {:?}", r.body);
        assert_eq!(error_code(&r), "bad_request");
    }
    let long = format!("/v1/workloads/demo/app/secrets/{}", "K".repeat(129));
    assert_eq!(
        e.req("PUT", &long, Some(&e.admin), Some(r#"{"value":"v"}"#))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_and_never_echo_the_value() {
    let e = Env::start();
    let p = "/v1/workloads/demo/app/secrets/K";
    for body in [
        "",
        "not json",
        r#"{"value":12345678}"#,
        r#"{"value":"v","extra":"x"}"#,
        r#"{"other":"v"}"#,
        r#"{"value":"a\u0000b"}"#,
    ] {
        let r = e.req("PUT", p, Some(&e.admin), Some(body)).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(!common::contains(&r.body, b"12345678"));
    }
}

#[tokio::test]
async fn oversized_values_and_bodies_are_413() {
    let e = Env::start();
    let limits = Limits::default();
    let p = "/v1/workloads/demo/app/secrets/K";
    let value = "v".repeat(limits.max_value_bytes + 1);
    let r = e.put("demo", "app", "K", &value).await;
    assert_eq!(r.status, 413);
    assert_eq!(error_code(&r), "payload_too_large");
    let body = format!(r#"{{"value":"{}"}}"#, "v".repeat(limits.max_body_bytes));
    let r = e.req("PUT", p, Some(&e.admin), Some(&body)).await;
    assert_eq!(r.status, 413);
    // Exactly at the value limit is fine.
    assert_eq!(
        e.put("demo", "app", "K", &"v".repeat(limits.max_value_bytes))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn per_workload_quotas_are_409() {
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (mut config, ca) = aegis_safe::dev::dev_config(dir.path(), any, any).unwrap();
    config.limits = Limits {
        max_secrets_per_workload: 2,
        max_workload_bytes: 100,
        ..Limits::default()
    };
    let e = Env::wrap(DevSafe::start_with(config, ca, dir.path()).unwrap(), dir);
    assert_eq!(e.put("demo", "app", "A", "1").await.status, 201);
    assert_eq!(e.put("demo", "app", "B", "2").await.status, 201);
    let r = e.put("demo", "app", "C", "3").await;
    assert_eq!(r.status, 409);
    assert_eq!(error_code(&r), "conflict");
    // Updating an existing key is not a new secret.
    assert_eq!(e.put("demo", "app", "A", "11").await.status, 200);
    // Byte quota: key + value bytes over 100.
    let r = e.put("demo", "app", "B", &"x".repeat(98)).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        e.put("demo", "other", "C", "3").await.status,
        201,
        "quota is per workload"
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let e = Env::start();
    let r = e.req("GET", "/v2/nothing", Some(&e.admin), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "not_found");
    let r = e.req("POST", "/v1/secrets", Some(&e.admin), None).await;
    assert_eq!(r.status, 405);
    assert_eq!(error_code(&r), "method_not_allowed");
    let r = e
        .req(
            "GET",
            "/v1/workloads/demo/app/secrets/K",
            Some(&e.admin),
            None,
        )
        .await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn probes_answer_on_both_ports_and_metrics_are_prometheus_text() {
    let e = Env::start();
    e.put("demo", "app", "K", "v").await;
    assert_eq!(e.req("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(e.req("GET", "/readyz", None, None).await.status, 200);
    let m = plain_get(e.safe.metrics_addr, "/metrics").await;
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(
        m.contains("aegis_safe_requests_total{action=\"put\",outcome=\"ok\"} 1"),
        "{m}"
    );
    assert!(m.contains("aegis_safe_secrets 1"), "{m}");
    assert!(
        m.contains("aegis_safe_journal_commit_duration_seconds_count 1"),
        "{m}"
    );
    assert!(plain_get(e.safe.metrics_addr, "/readyz")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(plain_get(e.safe.metrics_addr, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
}

async fn plain_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn data_survives_a_restart() {
    let e = Env::start();
    e.put("demo", "app", "A", "1").await;
    e.put("demo", "app", "B", "2").await;
    assert_eq!(
        e.req(
            "DELETE",
            "/v1/workloads/demo/app/secrets/A",
            Some(&e.admin),
            None
        )
        .await
        .status,
        204
    );
    let Env { safe, dir, .. } = e;
    safe.stop();
    let e = Env::wrap(DevSafe::start(dir.path()).unwrap(), dir);
    let j = e.secrets("demo", "app").await;
    assert_eq!(j["secrets"], serde_json::json!({"B":"2"}));
    assert_eq!(j["revision"], 3);
    assert_eq!(e.put("demo", "app", "B", "3").await.json()["version"], 2);
}

#[tokio::test]
async fn stop_closes_the_port() {
    let e = Env::start();
    let addr = e.safe.addr;
    e.safe.stop();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn serves_tls_1_2_as_well_as_1_3() {
    let e = Env::start();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::pem::PemObject::pem_slice_iter(e.safe.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(aegis_safe::tls::provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(e.safe.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    }
}

#[tokio::test]
async fn router_serves_oneshot_requests_and_is_not_ready_before_recovery() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (config, _) = aegis_safe::dev::dev_config(dir.path(), any, any).unwrap();
    let server = aegis_safe::Server::new(config).unwrap();
    let get = |p: &str| {
        http::Request::get(p)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let r = server.router().oneshot(get("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let r = server.router().oneshot(get("/v1/secrets")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        server
            .router()
            .oneshot(get("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    server.initialize().await.unwrap();
    assert_eq!(
        server
            .router()
            .oneshot(get("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = server.router().oneshot(get("/v1/secrets")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    server.shutdown_persistence();
}
