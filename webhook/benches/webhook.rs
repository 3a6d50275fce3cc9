//! Load generator for the webhook; prints a table. Run with
//! `cargo bench -p aegis-webhook --bench webhook` (release profile).
//!
//! 1. Throughput: admissions/s over several kept-alive HTTPS connections for a typical
//!    2-container pod with explicit commands, client on the same machine.
//! 2. Latency at a fixed 1,000 requests/s: p99 measured server-side (the webhook's own
//!    latency histogram, read from /metrics) and, for reference, client-side.
//! 3. The cost of a cached entrypoint lookup (image in a real local registry, looked up
//!    once, then timed from the cache).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::json;
use support::{fixture, Files, Registry, RunningServer};

const CONNECTIONS: usize = 8;
const THROUGHPUT_SECONDS: u64 = 5;
const FIXED_RATE: u64 = 1_000;
const FIXED_RATE_SECONDS: u64 = 10;
const CACHED_LOOKUPS: usize = 100_000;
const DECISIONS: u32 = 20_000;

fn main() {
    aegis_webhook::install_crypto_provider();
    // The server gets its own 2-thread runtime, like a 2-core pod; the load generator
    // another. Both share the machine's 2 cores.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");

    let files = Files::new();
    let review = Bytes::from(typical_review().to_string());

    let server = server_rt.block_on(RunningServer::start(files.config()));
    let rate = client_rt.block_on(throughput(&files, server.addr, review.clone()));
    server_rt.block_on(server.stop());

    // A fresh server, so its histogram holds only the fixed-rate phase.
    let server = server_rt.block_on(RunningServer::start(files.config()));
    let client_p99 = client_rt.block_on(fixed_rate(&files, server.addr, review));
    let metrics = server_rt.block_on(server.metrics_text());
    server_rt.block_on(server.stop());
    let (server_p99, count) = histogram_quantile(&metrics, 0.99);

    let (cached_mean, cached_p99) = client_rt.block_on(cached_lookup());
    let decision = client_rt.block_on(decision_only(typical_review()));

    println!();
    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!(
        "| admissions/s, 2-container pod with commands, {CONNECTIONS} kept-alive HTTPS connections, {THROUGHPUT_SECONDS} s | {rate:.0} | ≥ 10,000 |"
    );
    println!(
        "| p99 server-side latency at {FIXED_RATE} req/s ({count} reviews, histogram bucket bound) | ≤ {:.0} µs | < 1 ms |",
        server_p99 * 1e6
    );
    println!(
        "| p99 client-side round trip at {FIXED_RATE} req/s (TLS + HTTP + loopback, for reference) | {:.0} µs | |",
        client_p99.as_secs_f64() * 1e6
    );
    println!(
        "| one review without network or TLS (parse, decide, encode), mean of {DECISIONS} on one thread | {:.1} µs | |",
        decision.as_secs_f64() * 1e6
    );
    println!(
        "| cached entrypoint lookup (resolve one image from cache), mean / p99 over {CACHED_LOOKUPS} | {:.2} µs / {:.2} µs | < 50 µs |",
        cached_mean.as_secs_f64() * 1e6,
        cached_p99.as_secs_f64() * 1e6
    );
}

/// The captured Deployment pod with a second container (a typical app + sidecar), both
/// with explicit commands.
fn typical_review() -> serde_json::Value {
    let mut review = fixture("pod-from-deployment-with-command.json");
    let containers = &mut review["request"]["object"]["spec"]["containers"];
    let mut sidecar = containers[0].clone();
    sidecar["name"] = json!("metrics-agent");
    sidecar["image"] = json!("registry.example/agent:3.2");
    sidecar["command"] = json!(["/agent", "--scrape", "localhost:8080"]);
    if let Some(list) = containers.as_array_mut() {
        list.push(sidecar);
    }
    review
}

async fn connect(files: &Files, addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    let ca =
        rustls_pki_types::pem::PemObject::from_pem_slice(files.ca.pem.as_bytes()).expect("CA pem");
    roots.add(ca).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    sender
}

async fn review_once(sender: &mut SendRequest<Full<Bytes>>, body: &Bytes) {
    let request = http::Request::post("/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    // Every review must really be injected, or the figure measures the wrong path.
    assert!(
        bytes.windows(9).any(|w| w == b"JSONPatch"),
        "unexpected response: {}",
        String::from_utf8_lossy(&bytes)
    );
}

async fn throughput(files: &Files, addr: SocketAddr, body: Bytes) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(THROUGHPUT_SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut sender = connect(files, addr).await;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                review_once(&mut sender, &body).await;
                done += 1;
            }
            done
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn fixed_rate(files: &Files, addr: SocketAddr, body: Bytes) -> Duration {
    // 4 connections, each at a quarter of the rate.
    let per_connection = FIXED_RATE / 4;
    let period = Duration::from_micros(1_000_000 / per_connection);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut sender = connect(files, addr).await;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut samples = Vec::new();
            for _ in 0..per_connection * FIXED_RATE_SECONDS {
                tick.tick().await;
                let started = Instant::now();
                review_once(&mut sender, &body).await;
                samples.push(started.elapsed());
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("client task"));
    }
    percentile(&mut samples, 0.99)
}

async fn cached_lookup() -> (Duration, Duration) {
    let registry = Registry::start(None).await;
    registry
        .push_image("bench/app", "1", "amd64", Some(&["/app"]), Some(&["serve"]))
        .await;
    let resolver = aegis_webhook::EntrypointResolver::new(aegis_webhook::ResolverConfig {
        insecure_registries: vec![registry.host()],
        ..aegis_webhook::ResolverConfig::default()
    })
    .expect("resolver");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "demo",
                     "annotations": {"aegis.shieldworks.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": format!("{}/bench/app:1", registry.host())}]},
    }))
    .expect("pod");
    let lookups = aegis_webhook::plan(&pod)
        .expect("plan")
        .expect("selected")
        .lookups;
    let first = resolver.resolve(&pod, &lookups).await;
    assert!(matches!(first.get("app"), Some(Ok(_))), "{first:?}");
    let mut samples = Vec::with_capacity(CACHED_LOOKUPS);
    for _ in 0..CACHED_LOOKUPS {
        let started = Instant::now();
        let resolved = resolver.resolve(&pod, &lookups).await;
        samples.push(started.elapsed());
        assert!(matches!(resolved.get("app"), Some(Ok(_))));
    }
    let stats = resolver.stats();
    assert_eq!(
        stats.cached as usize, CACHED_LOOKUPS,
        "every timed lookup was a cache hit"
    );
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    (mean, percentile(&mut samples, 0.99))
}

/// CPU cost of the decision itself: `admission::review` on the bytes of a review.
async fn decision_only(review: serde_json::Value) -> Duration {
    let body = serde_json::to_vec(&review).expect("json");
    let files = Files::new();
    let safe_ca = std::fs::read_to_string(&files.safe_ca).expect("ca");
    let config = aegis_webhook::InjectConfig::new(support::SHIM_IMAGE, support::SAFE_URL, safe_ca);
    let resolver = aegis_webhook::EntrypointResolver::new(aegis_webhook::ResolverConfig::default())
        .expect("resolver");
    let started = Instant::now();
    for _ in 0..DECISIONS {
        let (out, outcome) = aegis_webhook::admission::review(&body, &config, &resolver).await;
        assert_eq!(outcome, aegis_webhook::admission::Outcome::Injected);
        std::hint::black_box(out);
    }
    started.elapsed() / DECISIONS
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 * q).ceil() as usize).saturating_sub(1);
    samples.get(index).copied().unwrap_or_default()
}

/// The upper bound of the histogram bucket holding quantile `q`, and the sample count,
/// from Prometheus text.
fn histogram_quantile(metrics: &str, q: f64) -> (f64, u64) {
    let name = "aegis_webhook_admission_duration_seconds_bucket{le=\"";
    let buckets: Vec<(f64, u64)> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix(name))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0, |b| b.1);
    let wanted = (total as f64 * q).ceil() as u64;
    let bound = buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= wanted)
        .map_or(f64::INFINITY, |b| b.0);
    (bound, total)
}
