//! Entrypoint resolution against a real local registry (`docker-registry`), with images
//! pushed through the distribution HTTP API.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_webhook::entrypoint::ImageEntrypoint;
use aegis_webhook::pullsecret::{PullSecretError, PullSecretSource};
use aegis_webhook::{
    inject_pod, plan, Deny, EntrypointResolver, InjectConfig, KubeSecrets, ResolverConfig,
};
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::ByteString;
use serde_json::json;
use support::Registry;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

fn resolver(registry: &Registry, timeout: Duration) -> EntrypointResolver {
    EntrypointResolver::new(ResolverConfig {
        timeout,
        insecure_registries: vec![registry.host()],
        ..ResolverConfig::default()
    })
    .expect("resolver")
}

fn inject_config() -> InjectConfig {
    InjectConfig::new(
        support::SHIM_IMAGE,
        support::SAFE_URL,
        "-----BEGIN CERTIFICATE-----\n",
    )
}

fn pod(image: &str, extra_spec: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "app", "image": image}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "demo",
                     "annotations": {"aegis.shieldworks.io/inject": "true"}},
        "spec": spec,
    }))
    .expect("pod")
}

async fn wrapped_args(pod: &Pod, resolver: &EntrypointResolver) -> Result<Vec<String>, Deny> {
    let injected = inject_pod(pod, &inject_config(), resolver)
        .await?
        .expect("selected pod is injected");
    let spec = injected.spec.expect("spec");
    Ok(spec.containers[0].args.clone().unwrap_or_default())
}

#[tokio::test]
async fn single_arch_image_entrypoint_and_cmd_are_used() {
    let registry = Registry::start(None).await;
    registry
        .push_image(
            "team/app",
            "1.0",
            "amd64",
            Some(&["/bin/app"]),
            Some(&["serve", "--port=80"]),
        )
        .await;
    let image = format!("{}/team/app:1.0", registry.host());
    let args = wrapped_args(
        &pod(&image, json!({})),
        &resolver(&registry, DEFAULT_TIMEOUT),
    )
    .await
    .expect("resolved");
    assert_eq!(args, ["--", "/bin/app", "serve", "--port=80"]);
}

#[tokio::test]
async fn multi_arch_index_picks_amd64_unless_the_pod_pins_arm64() {
    let registry = Registry::start(None).await;
    let (amd, amd_size) = registry
        .push_image("multi", "amd64", "amd64", Some(&["/amd64/app"]), None)
        .await;
    let (arm, arm_size) = registry
        .push_image("multi", "arm64", "arm64", Some(&["/arm64/app"]), None)
        .await;
    registry
        .push_index(
            "multi",
            "2",
            &[(arm, arm_size, "arm64"), (amd, amd_size, "amd64")],
        )
        .await;
    let image = format!("{}/multi:2", registry.host());
    let resolver = resolver(&registry, DEFAULT_TIMEOUT);

    let default = wrapped_args(&pod(&image, json!({})), &resolver)
        .await
        .expect("amd64");
    assert_eq!(default, ["--", "/amd64/app"]);
    let pinned = pod(
        &image,
        json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}}),
    );
    assert_eq!(
        wrapped_args(&pinned, &resolver).await.expect("arm64"),
        ["--", "/arm64/app"]
    );

    let missing = pod(
        &image,
        json!({"nodeSelector": {"kubernetes.io/arch": "s390x"}}),
    );
    let deny = wrapped_args(&missing, &resolver)
        .await
        .expect_err("no s390x image");
    assert!(deny.to_string().contains("no linux/s390x image"), "{deny}");
}

#[tokio::test]
async fn args_replace_the_image_cmd() {
    let registry = Registry::start(None).await;
    registry
        .push_image("app", "1", "amd64", Some(&["/entry"]), Some(&["default"]))
        .await;
    let image = format!("{}/app:1", registry.host());
    let mut pod = pod(&image, json!({}));
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers[0].args = Some(vec!["custom".into()]);
    }
    let args = wrapped_args(&pod, &resolver(&registry, DEFAULT_TIMEOUT))
        .await
        .expect("resolved");
    assert_eq!(args, ["--", "/entry", "custom"]);
}

/// Pull Secrets served from memory, counting reads.
struct FakeSecrets {
    secrets: BTreeMap<(String, String), Secret>,
    reads: std::sync::atomic::AtomicUsize,
}

impl PullSecretSource for FakeSecrets {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>, PullSecretError>> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = self
            .secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// One `kubernetes.io/dockerconfigjson` Secret `demo/regcred` for `registry`.
fn regcred(registry: &Registry, user: &str, password: &str) -> Arc<FakeSecrets> {
    Arc::new(FakeSecrets {
        secrets: BTreeMap::from([(
            ("demo".to_owned(), "regcred".to_owned()),
            dockerconfig_secret(&registry.host(), user, password),
        )]),
        reads: Default::default(),
    })
}

fn dockerconfig_secret(registry: &str, user: &str, password: &str) -> Secret {
    Secret {
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(support::docker_config_json(registry, user, password)),
        )])),
        ..Secret::default()
    }
}

#[tokio::test]
async fn private_repository_is_read_with_the_pods_pull_secret() {
    let registry = Registry::start(Some(("puller", "s3cret-pw"))).await;
    registry
        .push_image(
            "private/app",
            "1",
            "amd64",
            Some(&["/private"]),
            Some(&["run"]),
        )
        .await;
    let image = format!("{}/private/app:1", registry.host());
    let secrets = regcred(&registry, "puller", "s3cret-pw");
    let with_secrets = resolver(&registry, DEFAULT_TIMEOUT).with_pull_secrets(secrets.clone());

    let private = pod(&image, json!({"imagePullSecrets": [{"name": "regcred"}]}));
    let args = wrapped_args(&private, &with_secrets)
        .await
        .expect("resolved with credentials");
    assert_eq!(args, ["--", "/private", "run"]);
    // A second pod: the Secret read and the lookup are both served from caches.
    let again = wrapped_args(&private, &with_secrets).await.expect("cached");
    assert_eq!(again, args);
    assert_eq!(secrets.reads.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(with_secrets.stats().cached, 1, "{:?}", with_secrets.stats());

    // The same image without the pull secret is denied, and the message says why.
    let anonymous = pod(&image, json!({}));
    let deny = wrapped_args(&anonymous, &with_secrets)
        .await
        .expect_err("no credentials");
    let message = deny.to_string();
    assert!(message.contains("refused access"), "{message}");
    assert!(message.contains("set `command`"), "{message}");
    assert!(
        !message.contains("s3cret-pw"),
        "never echo a password: {message}"
    );
}

#[tokio::test]
async fn wrong_password_in_the_pull_secret_is_denied() {
    let registry = Registry::start(Some(("puller", "right"))).await;
    registry
        .push_image("p", "1", "amd64", Some(&["/p"]), None)
        .await;
    let secrets = regcred(&registry, "puller", "wrong");
    let resolver = resolver(&registry, DEFAULT_TIMEOUT).with_pull_secrets(secrets);
    let image = format!("{}/p:1", registry.host());
    let deny = wrapped_args(
        &pod(&image, json!({"imagePullSecrets": [{"name": "regcred"}]})),
        &resolver,
    )
    .await
    .expect_err("bad credentials");
    assert!(
        deny.to_string()
            .contains("refused access with the pod's imagePullSecrets"),
        "{deny}"
    );
}

#[tokio::test]
async fn unknown_image_is_denied_with_container_image_and_fix() {
    let registry = Registry::start(None).await;
    let image = format!("{}/does-not/exist:1", registry.host());
    let deny = wrapped_args(
        &pod(&image, json!({})),
        &resolver(&registry, DEFAULT_TIMEOUT),
    )
    .await
    .expect_err("unknown image");
    let message = deny.to_string();
    for part in [
        "`app`",
        image.as_str(),
        "image not found",
        "set `command` in container `app`",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[tokio::test]
async fn registry_down_is_denied_quickly_with_a_clear_message() {
    // A port nothing listens on: connection refused.
    let port = support::free_port();
    let resolver = EntrypointResolver::new(ResolverConfig {
        timeout: Duration::from_secs(2),
        insecure_registries: vec![format!("127.0.0.1:{port}")],
        ..ResolverConfig::default()
    })
    .expect("resolver");
    let started = Instant::now();
    let deny = wrapped_args(
        &pod(&format!("127.0.0.1:{port}/app:1"), json!({})),
        &resolver,
    )
    .await
    .expect_err("registry down");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        deny.to_string()
            .contains(&format!("cannot connect to registry 127.0.0.1:{port}")),
        "{deny}"
    );
}

#[tokio::test]
async fn registry_that_never_answers_is_denied_within_the_timeout() {
    // Accepts connections and never replies: only the deadline can end the lookup.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let timeout = Duration::from_millis(700);
    let resolver = EntrypointResolver::new(ResolverConfig {
        timeout,
        insecure_registries: vec![host.clone()],
        ..ResolverConfig::default()
    })
    .expect("resolver");
    let started = Instant::now();
    let deny = wrapped_args(&pod(&format!("{host}/app:1"), json!({})), &resolver)
        .await
        .expect_err("timed out");
    let elapsed = started.elapsed();
    hold.abort();
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_millis(500),
        "{elapsed:?}"
    );
    assert!(
        deny.to_string().contains("did not answer within 700ms"),
        "{deny}"
    );
}

#[tokio::test]
async fn second_lookup_is_served_from_the_cache_without_network() {
    let registry = Registry::start(None).await;
    registry
        .push_image("cached", "1", "amd64", Some(&["/c"]), None)
        .await;
    let resolver = resolver(&registry, DEFAULT_TIMEOUT);
    let pod = pod(&format!("{}/cached:1", registry.host()), json!({}));
    let lookups = plan(&pod).expect("ok").expect("selected").lookups;

    let first = resolver.resolve(&pod, &lookups).await;
    let after_first = resolver.stats();
    assert_eq!(after_first.resolved, 1);
    assert_eq!(after_first.registry_fetches, 2, "manifest + config");

    // Kill the registry: a cached answer must not need it.
    drop(registry);
    let second = resolver.resolve(&pod, &lookups).await;
    let after_second = resolver.stats();
    assert_eq!(first, second);
    assert_eq!(
        second.get("app"),
        Some(&Ok(ImageEntrypoint {
            entrypoint: vec!["/c".into()],
            cmd: vec![]
        }))
    );
    assert_eq!(after_second.cached, 1);
    assert_eq!(after_second.registry_fetches, after_first.registry_fetches);
}

#[tokio::test]
async fn concurrent_identical_lookups_share_one_registry_round_trip() {
    let registry = Registry::start(None).await;
    registry
        .push_image("burst", "1", "amd64", Some(&["/b"]), None)
        .await;
    let resolver = resolver(&registry, DEFAULT_TIMEOUT);
    let pod = pod(&format!("{}/burst:1", registry.host()), json!({}));
    let lookups = plan(&pod).expect("ok").expect("selected").lookups;
    let results =
        futures_util::future::join_all((0..8).map(|_| resolver.resolve(&pod, &lookups))).await;
    assert!(results.iter().all(|r| matches!(r.get("app"), Some(Ok(_)))));
    let stats = resolver.stats();
    assert_eq!(stats.resolved, 1);
    assert_eq!(stats.shared, 7);
    assert_eq!(
        stats.registry_fetches, 2,
        "one manifest and one config fetch for 8 pods"
    );
}

#[tokio::test]
async fn pull_secret_is_read_through_the_kubernetes_api() {
    // A minimal API server answering the Secret GET the real kube client sends.
    let registry = Registry::start(Some(("kubeuser", "kubepw"))).await;
    registry
        .push_image("k", "1", "amd64", Some(&["/k"]), None)
        .await;
    let secret = dockerconfig_secret(&registry.host(), "kubeuser", "kubepw");
    let mut body = serde_json::to_value(&secret).expect("secret json");
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("Secret");
    body["metadata"] = json!({"name": "regcred", "namespace": "demo"});
    let app = axum::Router::new().route(
        "/api/v1/namespaces/{ns}/secrets/{name}",
        axum::routing::get(move |axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>| {
            let body = body.clone();
            async move {
                if ns == "demo" && name == "regcred" {
                    (axum::http::StatusCode::OK, axum::Json(body))
                } else {
                    (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "reason": "NotFound", "code": 404, "message": "not found"})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    let api = tokio::spawn(async move { axum::serve(listener, app).await });

    let uri: http::Uri = format!("http://{api_addr}").parse().expect("uri");
    let client = kube::Client::try_from(kube::Config::new(uri)).expect("kube client");
    let resolver =
        resolver(&registry, DEFAULT_TIMEOUT).with_pull_secrets(Arc::new(KubeSecrets::new(client)));
    let image = format!("{}/k:1", registry.host());
    let pod = pod(
        &image,
        json!({"imagePullSecrets": [{"name": "missing"}, {"name": "regcred"}]}),
    );
    let args = wrapped_args(&pod, &resolver)
        .await
        .expect("resolved via the API");
    api.abort();
    assert_eq!(args, ["--", "/k"]);
}
