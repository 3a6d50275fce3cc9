//! Aegis's mutating admission webhook, and the library behind `aegis inject`.
//!
//! A pod annotated `aegis.shieldworks.io/inject: "true"` gets the init-shim: a memory-backed
//! volume the shim copies itself into, a projected token, and each selected container's
//! entrypoint wrapped so the shim fetches the workload's secrets and `execve`s the original
//! command. [`mutate::mutate`] is the pure decision; [`entrypoint`] finds entrypoints that
//! pods leave to their images; [`admission`] and [`server`] are the HTTP wiring.
//!
//! [`inject_pod`] runs exactly the webhook's path (plan, resolve, mutate, apply) for callers
//! that hold a pod rather than an AdmissionReview.

pub mod admission;
pub mod config;
pub mod entrypoint;
pub mod mutate;
pub mod pullsecret;
pub mod server;
pub mod tls;

use k8s_openapi::api::core::v1::Pod;

pub use config::{Cli, Command, Config, LogFormat};
pub use entrypoint::{EntrypointResolver, ImageEntrypoint, ResolverConfig, ResolverError};
pub use mutate::{mutate, plan, Deny, InjectConfig, ResolvedEntrypoints, SHIM_IMAGE_BINARY};
pub use pullsecret::{KubeSecrets, PullSecretSource};
pub use server::{serve, Server, WebhookError};

/// The decision the webhook makes for one pod: which containers, their entrypoints (from
/// registries when needed), and the patch. `Ok(None)`: allowed unchanged.
pub async fn decide(
    pod: &Pod,
    config: &InjectConfig,
    resolver: &EntrypointResolver,
) -> Result<Option<json_patch::Patch>, Deny> {
    let Some(plan) = mutate::plan(pod)? else {
        return Ok(None);
    };
    let resolved = resolver.resolve(pod, &plan.lookups).await;
    mutate::mutate(pod, config, &resolved)
}

/// Same code path the webhook uses: resolves entrypoints, runs [`mutate()`], applies the
/// patch. `Ok(None)`: not selected, or already injected.
pub async fn inject_pod(
    pod: &Pod,
    config: &InjectConfig,
    resolver: &EntrypointResolver,
) -> Result<Option<Pod>, Deny> {
    let Some(patch) = decide(pod, config, resolver).await? else {
        return Ok(None);
    };
    let mut doc = serde_json::to_value(pod).map_err(|e| Deny::InvalidPod(e.to_string()))?;
    json_patch::patch(&mut doc, &patch).map_err(|e| Deny::InvalidPod(e.to_string()))?;
    serde_json::from_value(doc)
        .map(Some)
        .map_err(|e| Deny::InvalidPod(e.to_string()))
}

/// Makes `ring` the process's rustls provider (the workspace builds rustls without a
/// default). Idempotent; a provider installed earlier by the embedding program is kept.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only means another provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Sets up `tracing` output for the binary.
pub fn init_tracing(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| e.to_string())
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
pub use aegis_net::shutdown_signal;
