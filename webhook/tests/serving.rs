//! Serving behaviour: certificate rotation without dropped requests, probes, the metrics
//! listener, clean shutdown.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_webhook::config::OptionalAddr;
use support::{fixture, https_client, post_review, Files, RunningServer, TestCa};

#[tokio::test]
async fn rotated_certificate_is_served_without_dropping_requests() {
    let files = Files::new();
    let mut config = files.config();
    config.tls_reload_interval = Duration::from_millis(100);
    let server = RunningServer::start(config).await;
    let next_ca = TestCa::new("rotated CA");
    let only_next = https_client(&[&next_ca.pem], server.addr);
    assert!(
        only_next.get(server.url("/healthz")).send().await.is_err(),
        "before rotation the server presents the first certificate"
    );

    // A client trusting both CAs keeps reviewing pods throughout the rotation, over
    // kept-alive connections and new ones.
    let both = https_client(&[&files.ca.pem, &next_ca.pem], server.addr);
    let review = fixture("pod-from-deployment-with-command.json");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = server.url("/mutate");
    let load = tokio::spawn({
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                match both.post(&url).json(&review).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Written in place, key first: for a moment the pair does not match, which the
    // reloader must ride out on the old certificate.
    let (cert_pem, key_pem) = next_ca.issue();
    std::fs::write(&files.key, key_pem).expect("write key");
    tokio::time::sleep(Duration::from_millis(250)).await;
    std::fs::write(&files.cert, cert_pem).expect("write cert");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A fresh client: a new connection and handshake.
        let fresh = https_client(&[&next_ca.pem], server.addr);
        if fresh.get(server.url("/healthz")).send().await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during rotation"
    );
    assert!(ok.load(Ordering::Relaxed) > 10, "the load actually ran");
    server.stop().await;
}

#[tokio::test]
async fn metrics_listener_serves_prometheus_text_and_probes_over_plain_http() {
    let files = Files::new();
    let mut config = files.config();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    config.metrics_listen = OptionalAddr(Some(metrics_addr));
    let server = RunningServer::start(config).await;
    let client = https_client(&[&files.ca.pem], server.addr);
    post_review(&client, &server, &fixture("pod-not-annotated.json")).await;

    let plain = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        match plain
            .get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
        {
            Ok(r) => break r.text().await.expect("metrics text"),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("metrics listener not reachable: {e}"),
        }
    };
    assert!(
        text.contains("aegis_webhook_admissions_total{outcome=\"skipped\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("aegis_webhook_admission_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("aegis_webhook_registry_fetches_total 0"),
        "{text}"
    );
    for path in ["/healthz", "/readyz"] {
        let status = plain
            .get(format!("http://{metrics_addr}{path}"))
            .send()
            .await
            .expect("probe")
            .status();
        assert_eq!(status, 200, "{path}");
        let status = client
            .get(server.url(path))
            .send()
            .await
            .expect("probe")
            .status();
        assert_eq!(status, 200, "{path} over HTTPS");
    }
    server.stop().await;
    assert!(
        plain
            .get(format!("http://{metrics_addr}/healthz"))
            .send()
            .await
            .is_err(),
        "the metrics listener stops with the server"
    );
}

#[tokio::test]
async fn server_refuses_to_start_without_a_usable_certificate_or_safe_ca() {
    let files = Files::new();
    let mut config = files.config();
    config.tls_key = files.dir.path().join("missing.key");
    let error = aegis_webhook::Server::from_config(config)
        .await
        .err()
        .expect("missing key is fatal");
    assert!(error.to_string().contains("missing.key"), "{error}");

    let mut config = files.config();
    std::fs::write(&files.safe_ca, "not a certificate").expect("write");
    config.safe_ca_file = files.safe_ca.clone();
    let error = aegis_webhook::Server::from_config(config)
        .await
        .err()
        .expect("empty CA is fatal");
    assert!(
        error.to_string().contains("holds no PEM certificate"),
        "{error}"
    );
}
