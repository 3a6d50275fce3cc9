//! Aegis end to end without a cluster: `kubectl create deployment` of an annotated
//! Deployment ends in a running process that has its secrets in its environment.
//!
//! Each test renders the Helm chart with the real Helm, runs the chart's Safe, webhook and
//! Sentinel pods with the real binaries (see `aegis_e2e::e2e_support`), admits pods through
//! the reproduced API server (`aegis_e2e::apiserver`) and starts them with the reproduced
//! kubelet (`aegis_e2e::kubelet`). docs/e2e.md describes the harness and its translations.
//! Needs root (mount namespaces), helm, kubectl, kubernetes-validate and docker-registry,
//! and the workspace binaries (`cargo build --workspace --bins`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aegis_e2e::apiserver::{kubectl_create_deployment, ApiServerError};
use aegis_e2e::e2e_support::{
    files_containing, parse_probe, random_hex, Cluster, ClusterOptions, E2eError, Probe, DEMO_NS,
    PROBE_SCRIPT, PROBE_SCRIPT_IN_MANIFEST,
};
use aegis_e2e::kubelet::{expand, Exited};
use aegis_e2e::registry::Registry;
use aegis_e2e::tools;
use serde_json::{json, Value};

type Result<T = ()> = std::result::Result<T, E2eError>;

const WEBHOOK: &str = "pods.aegis.shieldworks.io";
const INJECT: &str = "aegis.shieldworks.io/inject";
/// The init-shim's documented exit codes (docs/init-shim.md).
const EXIT_MISSING_KEY: i32 = 65;
const EXIT_UNREACHABLE: i32 = 69;

/// A fresh secret value: random, so finding it anywhere means it leaked from this test.
fn secret_value() -> String {
    format!("e2e-secret-{}", random_hex(16))
}

/// The probe's command as a user would write it after `kubectl create deployment ... --`.
fn probe_command(extra: &[&str]) -> Vec<String> {
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        PROBE_SCRIPT_IN_MANIFEST.into(),
        "web".into(),
    ];
    cmd.extend(extra.iter().map(|s| s.to_string()));
    cmd
}

/// `kubectl create deployment NAME --image IMAGE --dry-run=client -o json -- COMMAND`,
/// then the edits a user makes: the inject annotation, the ServiceAccount, env.
fn deployment(
    name: &str,
    image: &str,
    command: &[String],
    service_account: &str,
    env: Value,
) -> Result<Value> {
    let refs: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut d = kubectl_create_deployment(name, image, &refs)?;
    let template = &mut d["spec"]["template"];
    template["metadata"]["annotations"] = json!({ INJECT: "true" });
    template["spec"]["serviceAccountName"] = json!(service_account);
    if env.as_array().is_some_and(|e| !e.is_empty()) {
        template["spec"]["containers"][0]["env"] = env;
    }
    Ok(d)
}

/// The probe Deployment (image `registry.example/web:1.4`, never pulled) for `service_account`.
fn probe_deployment(name: &str, service_account: &str, env: Value) -> Result<Value> {
    let image = "registry.example/web:1.4";
    deployment(name, image, &probe_command(&[]), service_account, env)
}

/// A cluster with the chart's defaults and one secret, `DB_PASSWORD`, stored for `demo/app`.
fn cluster_with_secret() -> Result<(Cluster, String)> {
    let cluster = Cluster::start(ClusterOptions::default())?;
    let password = secret_value();
    cluster.put_secret("demo/app", "DB_PASSWORD", &password)?;
    Ok((cluster, password))
}

/// Waits for the container to exit and parses what the probe printed.
fn probe_result(
    container: &mut aegis_e2e::kubelet::Container,
    timeout: Duration,
) -> (Exited, Option<Probe>) {
    let exited = container.wait_timeout(timeout);
    let exited = exited.unwrap_or_else(|| {
        panic!(
            "container {} still running after {timeout:?}",
            container.name
        )
    });
    let probe = parse_probe(&exited.stdout);
    (exited, probe)
}

/// The pod's first container runs to completion with `DB_PASSWORD` = `password`.
fn assert_gets_secret(run: &mut aegis_e2e::e2e_support::PodRun, password: &str) {
    let (exited, probe) = probe_result(&mut run.containers[0], Duration::from_secs(40));
    assert_eq!(exited.code, Some(0), "{exited}");
    let got = probe.and_then(|p| p.env.get("DB_PASSWORD").cloned());
    assert_eq!(got.as_deref(), Some(password));
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Every place a test run could have written a file: the cluster's own directory, the
/// temporary and runtime directories, the mountpoints the kubelet created, the repository.
fn scan_roots(cluster: &Cluster) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = [
        "/tmp",
        "/var/tmp",
        "/run",
        "/aegis",
        "/etc/aegis",
        "/var/lib/aegis",
        "/root",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    roots.push(cluster.path().to_path_buf());
    roots.push(tools::repo_root());
    roots
}

#[test]
fn annotated_deployment_starts_with_its_secrets_in_the_environment() -> Result {
    let cluster = Cluster::start(ClusterOptions::default())?;
    // Step 3: the admin stores secrets through the Sentinel with the real CLI.
    let password = secret_value();
    let api_key = secret_value();
    cluster.put_secret("demo/app", "DB_PASSWORD", &password)?;
    cluster.put_secret("demo/app", "API_KEY", &api_key)?;

    // Step 4: the Deployment as kubectl makes it; argv with spaces and an empty string.
    let command = probe_command(&["--port", "8080", "two words", ""]);
    let env = json!([
        {"name": "RENAMED", "value": "aegis:API_KEY"},
        {"name": "PLAIN", "value": "kept"},
    ]);
    let d = deployment("web", "registry.example/web:1.4", &command, "app", env)?;
    let (pod, trace) = cluster.create_deployment(&d, DEMO_NS)?;
    assert_eq!(
        trace.called,
        [WEBHOOK],
        "the annotated pod goes through the webhook once"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["aegis.shieldworks.io/status"],
        "injected"
    );
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "aegis-init");

    // Step 6: the kubelet runs it.
    let mut run = cluster.run_pod(&pod, Duration::from_secs(30))?;
    assert_eq!(run.init.len(), 1);
    let web = &mut run.containers[0];
    let pid = web.pid;
    let (exited, probe) = probe_result(web, Duration::from_secs(30));
    assert_eq!(
        exited.code,
        Some(0),
        "the app must run to completion: {exited}"
    );
    let probe = probe.unwrap_or_else(|| panic!("probe printed nothing parseable: {exited}"));

    // Step 7: secrets in the environment, original argv, same PID.
    assert_eq!(probe.env.get("DB_PASSWORD"), Some(&password));
    assert_eq!(probe.env.get("API_KEY"), Some(&api_key));
    assert_eq!(
        probe.env.get("RENAMED"),
        Some(&api_key),
        "aegis:KEY references are replaced"
    );
    assert_eq!(probe.env.get("PLAIN").map(String::as_str), Some("kept"));
    assert_eq!(
        probe.env.get("HOSTNAME"),
        pod["metadata"]["name"]
            .as_str()
            .map(str::to_string)
            .as_ref()
    );
    let leaked: Vec<&String> = probe
        .env
        .keys()
        .filter(|k| k.starts_with("AEGIS_"))
        .collect();
    assert!(
        leaked.is_empty(),
        "AEGIS_* must not reach the app: {leaked:?}"
    );
    let expected_argv: Vec<String> = command.iter().map(|a| expand(a, &[])).collect();
    assert_eq!(probe.argv, expected_argv, "the app sees its original argv");
    assert_eq!(
        probe.pid, pid,
        "the app keeps the PID the kubelet started (the shim exec'd it)"
    );

    // No plaintext anywhere on disk (scanned while the pod's tmpfs volumes are still
    // mounted, so they are covered too), and the Safe audited the fetch by the workload.
    for secret in [&password, &api_key] {
        let hits = files_containing(&scan_roots(&cluster), cluster.started, secret.as_bytes());
        assert!(hits.is_empty(), "secret bytes found in files: {hits:?}");
    }
    drop(run);
    let events = cluster.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "read" && e["caller"] == "demo/app" && e["outcome"] == "ok"),
        "no audit event for the fetch by demo/app: {events:?}"
    );
    let logs = cluster.safe_logs();
    assert!(
        !logs.contains(&password) && !logs.contains(&api_key),
        "the Safe logged a value"
    );
    Ok(())
}

#[test]
fn pod_without_command_gets_its_entrypoint_from_a_real_registry() -> Result {
    let dir = tempfile::tempdir().map_err(|e| E2eError::Io("tempdir".into(), e))?;
    let registry = Registry::start(dir.path())?;
    let entrypoint = ["/bin/sh", "-c", PROBE_SCRIPT];
    let cmd = ["noentry", "--flag", "$(NOT_EXPANDED)"];
    let image = registry.push_image("noentry", "2", &entrypoint, &cmd)?;
    let cluster = Cluster::start(ClusterOptions {
        set: vec![format!("webhook.registry.insecure={{{}}}", registry.addr)],
    })?;
    let password = secret_value();
    cluster.put_secret("demo/app", "DB_PASSWORD", &password)?;

    let d = deployment("noentry", &image, &[], "app", json!([]))?;
    assert!(d["spec"]["template"]["spec"]["containers"][0]
        .get("command")
        .is_none());
    let (pod, trace) = cluster.create_deployment(&d, DEMO_NS)?;
    assert_eq!(trace.called, [WEBHOOK]);
    let mut run = cluster.run_pod(&pod, Duration::from_secs(30))?;
    let pid = run.containers[0].pid;
    let (exited, probe) = probe_result(&mut run.containers[0], Duration::from_secs(30));
    assert_eq!(exited.code, Some(0), "{exited}");
    let probe = probe.unwrap_or_else(|| panic!("no probe output: {exited}"));
    let expected: Vec<&str> = entrypoint.iter().chain(&cmd).copied().collect();
    assert_eq!(
        probe.argv, expected,
        "ENTRYPOINT + CMD from the image, unexpanded"
    );
    assert_eq!(probe.pid, pid);
    assert_eq!(probe.env.get("DB_PASSWORD"), Some(&password));
    Ok(())
}

#[test]
fn only_the_selected_container_of_two_is_wrapped() -> Result {
    let (cluster, password) = cluster_with_secret()?;
    let mut d = probe_deployment("pair", "app", json!([]))?;
    let template = &mut d["spec"]["template"];
    template["metadata"]["annotations"]["aegis.shieldworks.io/containers"] = json!("web");
    let mut side = template["spec"]["containers"][0].clone();
    side["name"] = json!("sidecar");
    side["image"] = json!("registry.example/sidecar:1");
    if let Some(cs) = template["spec"]["containers"].as_array_mut() {
        cs[0]["name"] = json!("web");
        cs.push(side);
    }
    let (pod, _) = cluster.create_deployment(&d, DEMO_NS)?;
    assert_eq!(
        container(&pod, "web")["command"][0],
        "/aegis/bin/aegis-init-shim"
    );
    assert_eq!(
        container(&pod, "sidecar")["command"][0],
        "/bin/sh",
        "the sidecar is untouched"
    );

    let mut run = cluster.run_pod(&pod, Duration::from_secs(30))?;
    let mut probes = BTreeMap::new();
    for c in &mut run.containers {
        let name = c.name.clone();
        let (exited, probe) = probe_result(c, Duration::from_secs(30));
        assert_eq!(exited.code, Some(0), "{name}: {exited}");
        probes.insert(name, probe.unwrap_or_else(|| panic!("no probe output")));
    }
    assert_eq!(probes["web"].env.get("DB_PASSWORD"), Some(&password));
    assert_eq!(
        probes["sidecar"].env.get("DB_PASSWORD"),
        None,
        "the unselected container gets nothing"
    );
    Ok(())
}

#[test]
fn safe_killed_between_store_and_pod_start_still_serves_the_secret() -> Result {
    let (mut cluster, password) = cluster_with_secret()?;
    cluster.kill_safe();
    cluster.start_safe()?;
    let d = probe_deployment("web", "app", json!([]))?;
    let (pod, _) = cluster.create_deployment(&d, DEMO_NS)?;
    let mut run = cluster.run_pod(&pod, Duration::from_secs(30))?;
    assert_gets_secret(&mut run, &password);
    Ok(())
}

#[test]
fn safe_down_at_pod_start_and_back_within_the_deadline_starts_late_with_secrets() -> Result {
    let (mut cluster, password) = cluster_with_secret()?;
    let env = json!([{"name": "AEGIS_FETCH_TIMEOUT", "value": "30s"}]);
    let d = probe_deployment("web", "app", env)?;
    let (pod, _) = cluster.create_deployment(&d, DEMO_NS)?;
    cluster.kill_safe();
    let mut run = cluster.run_pod(&pod, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        run.containers[0].running(),
        "the shim must wait for the Safe"
    );
    assert!(
        run.containers[0].stdout().is_empty(),
        "the app must not have started yet"
    );
    let restarted = Instant::now();
    cluster.start_safe_unready()?;
    assert_gets_secret(&mut run, &password);
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "within the shim's 30 s deadline"
    );
    Ok(())
}

#[test]
fn safe_down_past_the_deadline_exits_with_the_documented_code_and_never_starts_the_app() -> Result {
    let mut cluster = Cluster::start(ClusterOptions::default())?;
    cluster.put_secret("demo/app", "DB_PASSWORD", &secret_value())?;
    let env = json!([{"name": "AEGIS_FETCH_TIMEOUT", "value": "3s"}]);
    let d = probe_deployment("web", "app", env)?;
    let (pod, _) = cluster.create_deployment(&d, DEMO_NS)?;
    cluster.kill_safe();
    let mut run = cluster.run_pod(&pod, Duration::from_secs(30))?;
    let exited = run.containers[0]
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the shim did not give up after its deadline"));
    assert_eq!(exited.code, Some(EXIT_UNREACHABLE), "{exited}");
    assert!(
        exited.stdout.is_empty(),
        "the app must not have started: {:?}",
        String::from_utf8_lossy(&exited.stdout)
    );
    Ok(())
}

#[test]
fn a_workload_cannot_read_another_workloads_secrets() -> Result {
    let (cluster, password) = cluster_with_secret()?;
    // A pod running as demo/other that asks for app's key by reference.
    let env = json!([{"name": "STOLEN", "value": "aegis:DB_PASSWORD"}]);
    let d = probe_deployment("thief", "other", env)?;
    let (pod, _) = cluster.create_deployment(&d, DEMO_NS)?;
    let mut run = cluster.run_pod(&pod, Duration::from_secs(30))?;
    let exited = run.containers[0]
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the shim did not exit"));
    assert_eq!(exited.code, Some(EXIT_MISSING_KEY), "{exited}");
    assert!(exited.stdout.is_empty(), "the app must not start");
    assert!(!String::from_utf8_lossy(&exited.stderr).contains(&password));

    // With its own token, demo/other is refused the admin API for app's secrets.
    let token = std::fs::read_to_string(run.sandbox.volumes["aegis-token"].join("token"))
        .map_err(|e| E2eError::Io("read token".into(), e))?;
    let addr = cluster.api.endpoints["aegis-safe.aegis-system.svc"];
    let client = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(
            aegis_e2e::apiserver::tls_client(&cluster.safe_ca).map_err(E2eError::Setup)?,
        )
        .resolve("aegis-safe.aegis-system.svc", addr)
        .build()
        .map_err(|e| E2eError::Setup(e.to_string()))?;
    let base = format!("https://aegis-safe.aegis-system.svc:{}", addr.port());
    let list = client
        .get(format!("{base}/v1/workloads"))
        .bearer_auth(token.trim())
        .send();
    assert_eq!(list.map(|r| r.status().as_u16()).ok(), Some(403));
    let put = client
        .put(format!("{base}/v1/workloads/demo/app/secrets/DB_PASSWORD"))
        .bearer_auth(token.trim())
        .json(&json!({"value": "overwritten"}))
        .send();
    assert_eq!(put.map(|r| r.status().as_u16()).ok(), Some(403));
    let own = client
        .get(format!("{base}/v1/secrets"))
        .bearer_auth(token.trim())
        .send();
    let body: Value = own.and_then(|r| r.json()).unwrap_or(Value::Null);
    assert_eq!(
        body["secrets"],
        json!({}),
        "demo/other sees only its own (empty) secrets"
    );
    Ok(())
}

#[test]
fn webhook_down_with_failure_policy_fail_refuses_the_pod() -> Result {
    let mut cluster = Cluster::start(ClusterOptions::default())?;
    assert_eq!(
        cluster.api.webhooks[0].failure_policy, "Fail",
        "the chart's default"
    );
    cluster.kill_webhook();
    let d = probe_deployment("web", "app", json!([]))?;
    match cluster.create_deployment(&d, DEMO_NS) {
        Err(E2eError::ApiServer(ApiServerError::WebhookFailed { webhook, .. })) => {
            assert_eq!(webhook, WEBHOOK)
        }
        other => panic!("the API server must refuse the pod, got {other:?}"),
    }
    // Pods that are not annotated never reach the webhook, so they are still created.
    let mut plain =
        kubectl_create_deployment("plain", "registry.example/plain:1", &["sleep", "3600"])?;
    plain["spec"]["template"]["spec"]["serviceAccountName"] = json!("app");
    let (pod, trace) = cluster.create_deployment(&plain, DEMO_NS)?;
    assert!(trace.called.is_empty() && trace.skipped == [WEBHOOK]);
    assert!(pod["spec"].get("initContainers").is_none());
    Ok(())
}

#[test]
fn webhook_down_with_failure_policy_ignore_admits_the_pod_unmutated() -> Result {
    let mut cluster = Cluster::start(ClusterOptions {
        set: vec!["webhook.failurePolicy=Ignore".into()],
    })?;
    cluster.kill_webhook();
    let d = probe_deployment("web", "app", json!([]))?;
    let (pod, trace) = cluster.create_deployment(&d, DEMO_NS)?;
    assert_eq!(trace.ignored_failures.len(), 1, "{trace:?}");
    assert!(
        pod["spec"].get("initContainers").is_none(),
        "admitted unchanged"
    );
    assert_eq!(pod["spec"]["containers"][0]["command"][0], "/bin/sh");
    Ok(())
}

#[test]
fn pods_in_the_release_namespace_are_not_sent_to_the_webhook() -> Result {
    let mut cluster = Cluster::start(ClusterOptions::default())?;
    cluster.kill_webhook();
    let d = probe_deployment("web", "app", json!([]))?;
    // Even annotated, and with the webhook down under failurePolicy Fail: the
    // namespaceSelector excludes the release namespace and kube-system.
    for ns in ["aegis-system", "kube-system"] {
        let (pod, trace) = cluster.create_deployment(&d, ns)?;
        assert!(trace.called.is_empty(), "{ns}: {trace:?}");
        assert!(pod["spec"].get("initContainers").is_none());
    }
    Ok(())
}

#[test]
fn a_misspelled_opt_in_reaches_the_webhook_and_the_pod_is_refused() -> Result {
    let mut cluster = Cluster::start(ClusterOptions::default())?;
    let mut d = probe_deployment("web", "app", json!([]))?;
    // "yes" is not an opt-in the webhook knows: the match condition (`!= 'false'`) still
    // sends it, so the user gets a clear denial instead of a pod without its secrets.
    d["spec"]["template"]["metadata"]["annotations"]["aegis.shieldworks.io/inject"] = json!("yes");
    match cluster.create_deployment(&d, DEMO_NS) {
        Err(E2eError::ApiServer(ApiServerError::Denied { message, .. })) => {
            assert!(message.contains("\"true\" or \"false\""), "{message}")
        }
        other => panic!("the API server must refuse the pod, got {other:?}"),
    }
    // An explicit "false" never reaches the webhook, so it does not depend on it being up.
    cluster.kill_webhook();
    d["spec"]["template"]["metadata"]["annotations"]["aegis.shieldworks.io/inject"] =
        json!("false");
    let (pod, trace) = cluster.create_deployment(&d, DEMO_NS)?;
    assert!(trace.called.is_empty(), "{trace:?}");
    assert!(pod["spec"].get("initContainers").is_none());
    Ok(())
}

#[test]
fn the_pod_built_from_kubectl_output_has_the_shape_of_the_captured_request() -> Result {
    // The captured request came from `kubectl create deployment web --image=registry.example/web:1.4
    // -- /app/serve --port 8080` plus the annotation and ServiceAccount; rebuild it the same way.
    let fixture_path = tools::repo_root()
        .join("../shared/fixtures/admission/pod-from-deployment-with-command.json");
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(&fixture_path)
            .map_err(|e| E2eError::Io(format!("read {}", fixture_path.display()), e))?,
    )
    .map_err(|e| E2eError::Setup(e.to_string()))?;
    let captured = &fixture["request"]["object"];
    let command: Vec<String> = ["/app/serve", "--port", "8080"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let d = deployment(
        "web",
        "registry.example/web:1.4",
        &command,
        "app",
        json!([]),
    )?;
    let ours = aegis_e2e::apiserver::pod_from_deployment(&d, DEMO_NS)?;
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&ours["spec"]),
        keys(&captured["spec"]),
        "pod spec fields"
    );
    assert_eq!(
        keys(&ours["spec"]["containers"][0]),
        keys(&captured["spec"]["containers"][0])
    );
    let mut meta = keys(&captured["metadata"]);
    meta.retain(|k| k != "managedFields" && k != "creationTimestamp");
    assert_eq!(
        keys(&ours["metadata"]),
        meta,
        "metadata fields (managedFields aside)"
    );
    // Identical once the random names (ReplicaSet hash, kube-api-access suffix, uids) are set aside.
    let normalise = |pod: &Value| {
        let mut spec = pod["spec"].clone();
        spec["volumes"][0]["name"] = json!("kube-api-access");
        spec["containers"][0]["volumeMounts"][0]["name"] = json!("kube-api-access");
        spec
    };
    assert_eq!(normalise(&ours), normalise(captured));
    assert_eq!(
        ours["metadata"]["annotations"],
        captured["metadata"]["annotations"]
    );
    assert_eq!(ours["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    Ok(())
}

#[test]
fn the_api_server_rejects_a_pod_the_schema_does_not_allow() -> Result {
    // Proves the schema validation applied to every mutated pod can fail.
    let dir = tempfile::tempdir().map_err(|e| E2eError::Io("tempdir".into(), e))?;
    let api = aegis_e2e::apiserver::ApiServer {
        scratch: dir.path().to_path_buf(),
        ..Default::default()
    };
    let d = probe_deployment("web", "app", json!([]))?;
    let mut pod = aegis_e2e::apiserver::pod_from_deployment(&d, DEMO_NS)?;
    pod["metadata"]["name"] = json!("web-x");
    api.validate(&pod)?;
    pod["spec"]["containers"][0]["command"] = json!("/bin/sh -c not-a-list");
    assert!(matches!(
        api.validate(&pod),
        Err(ApiServerError::Invalid(_))
    ));
    Ok(())
}

#[test]
fn a_reinvoked_webhook_leaves_an_injected_pod_unchanged() -> Result {
    // With reinvocationPolicy IfNeeded the API server calls the webhook again with its own
    // output when a later webhook changed the pod; the second pass must change nothing.
    let cluster = Cluster::start(ClusterOptions::default())?;
    assert_eq!(cluster.api.webhooks[0].reinvocation, "IfNeeded");
    let d = probe_deployment("web", "app", json!([]))?;
    let (first, _) = cluster.create_deployment(&d, DEMO_NS)?;
    let mut again = first.clone();
    if let Some(meta) = again["metadata"].as_object_mut() {
        meta.remove("name");
        meta.remove("uid");
    }
    let (second, trace) = cluster.api.create_pod(again)?;
    assert_eq!(trace.called, [WEBHOOK]);
    assert_eq!(second["spec"], first["spec"], "idempotent on re-invocation");
    assert_eq!(
        second["metadata"]["annotations"],
        first["metadata"]["annotations"]
    );
    Ok(())
}

#[test]
fn a_webhook_that_never_answers_is_cut_off_at_timeout_seconds_and_the_pod_refused() -> Result {
    let mut cluster = Cluster::start(ClusterOptions {
        set: vec!["webhook.timeoutSeconds=3".into()],
    })?;
    assert_eq!(cluster.api.webhooks[0].timeout, Duration::from_secs(3));
    // The webhook's address now accepts connections and never answers (a hung replica).
    cluster.kill_webhook();
    let addr = cluster.api.endpoints["aegis-webhook.aegis-system.svc"];
    let hung =
        std::net::TcpListener::bind(addr).map_err(|e| E2eError::Io(format!("bind {addr}"), e))?;
    let d = probe_deployment("web", "app", json!([]))?;
    let started = Instant::now();
    let result = cluster.create_deployment(&d, DEMO_NS);
    let took = started.elapsed();
    drop(hung);
    assert!(
        matches!(
            result,
            Err(E2eError::ApiServer(ApiServerError::WebhookFailed { .. }))
        ),
        "failurePolicy Fail refuses the pod on timeout: {result:?}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "cut off at timeoutSeconds, took {took:?}"
    );
    Ok(())
}

#[test]
fn the_chart_arguments_run_with_only_the_documented_translations() -> Result {
    let cluster = Cluster::start(ClusterOptions::default())?;
    let documented = [
        "--listen=0.0.0.0:",
        "--metrics-listen=0.0.0.0:",
        "--root-key-secret=",
    ];
    for (kind, component, pod) in [
        ("StatefulSet", "safe", cluster.safe_pod()),
        ("Deployment", "webhook", cluster.webhook_pod()),
    ] {
        let rendered = cluster
            .rendered
            .of_kind(kind)
            .into_iter()
            .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
            .map(|d| d["spec"]["template"]["spec"]["containers"][0]["args"].clone())
            .unwrap_or(Value::Null);
        let run = &pod["spec"]["containers"][0]["args"];
        let (rendered, run) = (
            rendered.as_array().cloned().unwrap_or_default(),
            run.as_array().cloned().unwrap_or_default(),
        );
        assert!(
            !rendered.is_empty() && rendered.len() == run.len(),
            "{component}: {rendered:?} vs {run:?}"
        );
        for (chart_arg, run_arg) in rendered.iter().zip(&run) {
            let chart_arg = chart_arg.as_str().unwrap_or_default();
            if chart_arg != run_arg.as_str().unwrap_or_default() {
                assert!(
                    documented.iter().any(|p| chart_arg.starts_with(p)),
                    "{component}: undocumented translation of {chart_arg} to {run_arg}"
                );
                assert!(cluster
                    .translations
                    .iter()
                    .any(|(from, _)| from == chart_arg));
            }
        }
    }
    Ok(())
}
