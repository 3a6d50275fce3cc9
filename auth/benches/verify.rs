//! Token verification throughput on one core, printed as a table (not a timed test).
//!
//! `cargo bench -p aegis-auth --bench verify`
//! Reads the captured RS256 token from `<workspace>/../shared/fixtures/tokens/`.

use aegis_auth::{DevIssuer, JwksVerifier};
use std::time::{Duration, Instant};

const AUD: &str = "aegis-safe";

fn rate(label: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f(); // warm-up
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let elapsed = start.elapsed();
    let per = elapsed / iterations;
    let per_sec = f64::from(iterations) / elapsed.as_secs_f64();
    println!("| {label:<46} | {per:>10.2?} | {per_sec:>12.0} |");
}

fn main() {
    let shared =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tokens");
    let jwks =
        std::fs::read(shared.join("jwks.json")).expect("read shared/fixtures/tokens/jwks.json");
    let real = std::fs::read_to_string(shared.join("demo-app.aegis-safe.jwt")).expect("read token");
    let real = real.trim().to_string();
    let rsa =
        JwksVerifier::from_jwks_json(&jwks, "https://kubernetes.default.svc.cluster.local", AUD)
            .expect("real JWKS");
    let now = 1_800_000_000;

    let issuer = DevIssuer::generate();
    let es = issuer.verifier(AUD).expect("dev verifier");
    let es_token = issuer
        .issue("demo", "app", AUD, Duration::from_secs(600), now)
        .expect("issue");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    println!("| operation (one thread)                         | per op     | per second   |");
    println!("|------------------------------------------------|------------|--------------|");
    rate(
        "RS256 verify, real 2048-bit token, uncached",
        20_000,
        || {
            rsa.verify(&real, now).expect("valid");
        },
    );
    rate("ES256 verify, dev token, uncached", 5_000, || {
        es.verify(&es_token, now).expect("valid");
    });
    rate(
        "ES256 authenticate, cache hit (SHA-256 + map)",
        200_000,
        || {
            runtime
                .block_on(es.authenticate_at(&es_token, now))
                .expect("valid");
        },
    );
    rate("ES256 issue (dev issuer sign)", 5_000, || {
        issuer
            .issue("demo", "app", AUD, Duration::from_secs(600), now)
            .expect("issue");
    });
}
