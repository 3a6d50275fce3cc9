//! The pure decision over many pod shapes. Each test applies the patch to the pod's JSON
//! (as the API server does) and checks the resulting pod, not only the patch text.

use super::*;
use serde_json::json;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

fn config() -> InjectConfig {
    InjectConfig::new(
        "registry.example/aegis-init-shim:0.1.0",
        "https://aegis-safe.aegis-system.svc:8443",
        CA,
    )
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("test pod is a valid Pod")
}

/// Runs `mutate` and applies its patch to `value`; `None` when there is no patch.
fn injected_with(value: &Value, resolved: &ResolvedEntrypoints) -> Result<Option<Value>, Deny> {
    let Some(patch) = mutate(&pod(value.clone()), &config(), resolved)? else {
        return Ok(None);
    };
    let mut doc = value.clone();
    json_patch::patch(&mut doc, &patch).expect("the patch applies to the pod it was made for");
    Ok(Some(doc))
}

fn injected(value: &Value) -> Value {
    injected_with(value, &ResolvedEntrypoints::new())
        .expect("allowed")
        .expect("patched")
}

fn denied(value: &Value) -> Deny {
    match injected_with(value, &ResolvedEntrypoints::new()) {
        Err(deny) => deny,
        Ok(result) => panic!("expected a denial, got {result:?}"),
    }
}

fn annotated(spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "demo",
                     "annotations": {"aegis.shieldworks.io/inject": "true"}},
        "spec": spec,
    })
}

/// Entrypoints as if `container`'s image had this ENTRYPOINT and CMD.
fn image_entrypoint(container: &str, entrypoint: &[&str], cmd: &[&str]) -> ResolvedEntrypoints {
    let mut resolved = ResolvedEntrypoints::new();
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    resolved.insert(
        container,
        Ok(ImageEntrypoint {
            entrypoint: owned(entrypoint),
            cmd: owned(cmd),
        }),
    );
    resolved
}

fn expected_env() -> Value {
    json!([
        {"name": "AEGIS_SAFE_URL", "value": "https://aegis-safe.aegis-system.svc:8443"},
        {"name": "AEGIS_SAFE_CA", "value": CA},
        {"name": "AEGIS_TOKEN_FILE", "value": "/var/run/secrets/aegis/token"},
    ])
}

fn expected_mounts() -> Value {
    json!([
        {"name": "aegis-bin", "mountPath": "/aegis/bin", "readOnly": true},
        {"name": "aegis-token", "mountPath": "/var/run/secrets/aegis", "readOnly": true},
    ])
}

#[test]
fn bare_pod_gets_every_piece_and_parents_are_created() {
    let before = annotated(json!({
        "containers": [{"name": "app", "image": "app:1", "command": ["/app"], "args": ["--port", "80"]}],
    }));
    let after = injected(&before);
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "demo", "annotations": {
            "aegis.shieldworks.io/inject": "true",
            "aegis.shieldworks.io/status": "injected",
        }},
        "spec": {
            "volumes": [
                {"name": "aegis-bin", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                {"name": "aegis-token", "projected": {"defaultMode": 292, "sources": [
                    {"serviceAccountToken": {"audience": "aegis-safe", "expirationSeconds": 600, "path": "token"}},
                ]}},
            ],
            "initContainers": [{
                "name": "aegis-init",
                "image": "registry.example/aegis-init-shim:0.1.0",
                "imagePullPolicy": "IfNotPresent",
                "command": ["/aegis-init-shim", "install", "/aegis/bin"],
                "volumeMounts": [{"name": "aegis-bin", "mountPath": "/aegis/bin"}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                              "limits": {"cpu": "100m", "memory": "32Mi"}},
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
            "containers": [{
                "name": "app",
                "image": "app:1",
                "command": ["/aegis/bin/aegis-init-shim"],
                "args": ["--", "/app", "--port", "80"],
                "env": expected_env(),
                "volumeMounts": expected_mounts(),
            }],
        },
    });
    assert_eq!(after, expected);
}

#[test]
fn injected_pod_still_deserializes_as_a_pod() {
    let before = annotated(json!({"containers": [{"name": "app", "command": ["/app"]}]}));
    let after: Pod = serde_json::from_value(injected(&before)).expect("typed Pod");
    let spec = after.spec.expect("spec");
    assert_eq!(
        spec.init_containers.expect("init")[0].name,
        INIT_CONTAINER_NAME
    );
}

#[test]
fn existing_init_containers_run_after_ours() {
    let before = annotated(json!({
        "initContainers": [{"name": "migrate", "image": "m:1", "command": ["/migrate"]}],
        "containers": [{"name": "app", "command": ["/app"]}],
    }));
    let after = injected(&before);
    let init = after["spec"]["initContainers"].as_array().expect("array");
    assert_eq!(init.len(), 2);
    assert_eq!(init[0]["name"], "aegis-init");
    assert_eq!(
        init[1], before["spec"]["initContainers"][0],
        "theirs untouched"
    );
}

#[test]
fn empty_arrays_are_appended_to_not_replaced() {
    let before = annotated(json!({
        "initContainers": [],
        "volumes": [],
        "containers": [{"name": "app", "command": ["/app"], "env": [], "volumeMounts": []}],
    }));
    let after = injected(&before);
    assert_eq!(
        after["spec"]["initContainers"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(after["spec"]["volumes"].as_array().map(Vec::len), Some(2));
    assert_eq!(after["spec"]["containers"][0]["env"], expected_env());
    assert_eq!(
        after["spec"]["containers"][0]["volumeMounts"],
        expected_mounts()
    );
}

#[test]
fn existing_volumes_env_and_mounts_are_kept_and_ours_appended() {
    let before = annotated(json!({
        "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{
            "name": "app", "command": ["/app"],
            "env": [{"name": "MODE", "value": "prod"}, {"name": "DB_PASSWORD", "value": "aegis:db"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }],
    }));
    let after = injected(&before);
    let volumes = after["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(
        volumes
            .iter()
            .map(|v| v["name"].as_str())
            .collect::<Vec<_>>(),
        [Some("data"), Some("aegis-bin"), Some("aegis-token")]
    );
    let container = &after["spec"]["containers"][0];
    let mut env = vec![
        json!({"name": "MODE", "value": "prod"}),
        json!({"name": "DB_PASSWORD", "value": "aegis:db"}),
    ];
    env.extend(expected_env().as_array().cloned().unwrap_or_default());
    assert_eq!(container["env"], Value::Array(env));
    let mut mounts = vec![json!({"name": "data", "mountPath": "/data"})];
    mounts.extend(expected_mounts().as_array().cloned().unwrap_or_default());
    assert_eq!(container["volumeMounts"], Value::Array(mounts));
}

#[test]
fn containers_annotation_wraps_only_the_named_containers() {
    let mut before = annotated(json!({"containers": [
        {"name": "app", "command": ["/app"]},
        {"name": "proxy", "image": "envoy:1"},
        {"name": "worker", "command": ["/work"], "env": [{"name": "X", "value": "1"}]},
    ]}));
    before["metadata"]["annotations"]["aegis.shieldworks.io/containers"] = json!(" worker,app ");
    let after = injected(&before);
    let containers = &after["spec"]["containers"];
    assert_eq!(containers[0]["args"], json!(["--", "/app"]));
    assert_eq!(
        containers[1], before["spec"]["containers"][1],
        "unselected container untouched"
    );
    assert_eq!(containers[2]["command"], json!([SHIM_PATH]));
    assert_eq!(containers[2]["args"], json!(["--", "/work"]));
    assert_eq!(containers[2]["env"][0], json!({"name": "X", "value": "1"}));
    assert_eq!(containers[2]["env"].as_array().map(Vec::len), Some(4));
}

#[test]
fn annotation_keys_with_slash_and_tilde_are_escaped_in_pointers() {
    let mut before = annotated(json!({"containers": [{"name": "app", "command": ["/app"]}]}));
    before["metadata"]["annotations"]["example.com/a~b"] = json!("keep");
    let patch = mutate(&pod(before.clone()), &config(), &ResolvedEntrypoints::new())
        .expect("allowed")
        .expect("patched");
    assert_eq!(
        patch.0[0].path().as_str(),
        "/metadata/annotations/aegis.shieldworks.io~1status"
    );
    let after = injected(&before);
    let annotations = after["metadata"]["annotations"].as_object().expect("map");
    assert_eq!(annotations.len(), 3);
    assert_eq!(annotations["example.com/a~b"], "keep");
    assert_eq!(annotations["aegis.shieldworks.io/status"], "injected");
}

#[test]
fn second_pass_over_an_injected_pod_produces_no_patch() {
    let before = annotated(json!({"containers": [{"name": "app", "command": ["/app"]}]}));
    let after = injected(&before);
    assert_eq!(
        injected_with(&after, &ResolvedEntrypoints::new()).expect("allowed"),
        None
    );
}

#[test]
fn pods_without_the_annotation_or_with_false_are_left_alone() {
    let mut plain = annotated(json!({"containers": [{"name": "app"}]}));
    plain["metadata"]["annotations"] = json!({"other": "x"});
    assert_eq!(injected_with(&plain, &ResolvedEntrypoints::new()), Ok(None));
    plain["metadata"]
        .as_object_mut()
        .map(|m| m.remove("annotations"));
    assert_eq!(injected_with(&plain, &ResolvedEntrypoints::new()), Ok(None));
    plain["metadata"]["annotations"] = json!({"aegis.shieldworks.io/inject": "false"});
    assert_eq!(injected_with(&plain, &ResolvedEntrypoints::new()), Ok(None));
}

#[test]
fn bad_inject_value_is_denied() {
    let mut before = annotated(json!({"containers": [{"name": "app", "command": ["/app"]}]}));
    before["metadata"]["annotations"]["aegis.shieldworks.io/inject"] = json!("yes");
    let deny = denied(&before);
    assert_eq!(
        deny,
        Deny::BadInjectValue {
            value: "yes".into()
        }
    );
    assert!(
        deny.to_string().contains("must be \"true\" or \"false\""),
        "{deny}"
    );
}

#[test]
fn foreign_status_value_is_denied() {
    let mut before = annotated(json!({"containers": [{"name": "app", "command": ["/app"]}]}));
    before["metadata"]["annotations"]["aegis.shieldworks.io/status"] = json!("pending");
    assert!(matches!(denied(&before), Deny::BadStatusValue { .. }));
}

#[test]
fn unknown_container_name_is_denied_with_the_known_names() {
    let mut before = annotated(json!({
        "initContainers": [{"name": "setup", "command": ["/s"]}],
        "containers": [{"name": "app", "command": ["/app"]}, {"name": "web", "command": ["/w"]}],
    }));
    before["metadata"]["annotations"]["aegis.shieldworks.io/containers"] = json!("app,setup");
    let deny = denied(&before);
    assert_eq!(
        deny,
        Deny::UnknownContainer {
            name: "setup".into(),
            known: "app, web".into()
        }
    );
    assert!(deny.to_string().contains("`setup`"), "{deny}");
}

#[test]
fn empty_entries_in_the_container_list_are_denied() {
    for value in ["", "app,", " , app", ",,"] {
        let mut before = annotated(json!({"containers": [{"name": "app", "command": ["/app"]}]}));
        before["metadata"]["annotations"]["aegis.shieldworks.io/containers"] = json!(value);
        assert!(
            matches!(denied(&before), Deny::BadContainerList { .. }),
            "value {value:?}"
        );
    }
}

#[test]
fn reserved_names_in_the_pod_are_denied() {
    let cases = [
        json!({"volumes": [{"name": "aegis-bin", "emptyDir": {}}],
               "containers": [{"name": "app", "command": ["/a"]}]}),
        json!({"initContainers": [{"name": "aegis-init"}],
               "containers": [{"name": "app", "command": ["/a"]}]}),
        json!({"volumes": [{"name": "x", "emptyDir": {}}],
               "containers": [{"name": "app", "command": ["/a"],
                               "volumeMounts": [{"name": "x", "mountPath": "/aegis/bin/"}]}]}),
    ];
    for spec in cases {
        assert!(
            matches!(denied(&annotated(spec.clone())), Deny::Conflict { .. }),
            "{spec}"
        );
    }
}

#[test]
fn a_container_that_sets_the_safe_address_itself_is_denied() {
    let before = annotated(json!({"containers": [{"name": "app", "command": ["/a"],
        "env": [{"name": "AEGIS_SAFE_URL", "value": "https://evil.example"}]}]}));
    let deny = denied(&before);
    assert_eq!(
        deny,
        Deny::ReservedEnv {
            container: "app".into(),
            var: "AEGIS_SAFE_URL".into()
        }
    );
}

#[test]
fn missing_command_uses_image_entrypoint_and_cmd() {
    let before = annotated(json!({"containers": [{"name": "app", "image": "app:1"}]}));
    let resolved = image_entrypoint("app", &["/entry"], &["serve", "--all"]);
    let after = injected_with(&before, &resolved)
        .expect("allowed")
        .expect("patched");
    assert_eq!(
        after["spec"]["containers"][0]["args"],
        json!(["--", "/entry", "serve", "--all"])
    );
}

#[test]
fn args_without_command_replace_the_image_cmd() {
    let before = annotated(
        json!({"containers": [{"name": "app", "image": "app:1", "args": ["sleep", "5"]}]}),
    );
    let resolved = image_entrypoint("app", &["/entry"], &["serve"]);
    let after = injected_with(&before, &resolved)
        .expect("allowed")
        .expect("patched");
    assert_eq!(
        after["spec"]["containers"][0]["args"],
        json!(["--", "/entry", "sleep", "5"])
    );
}

#[test]
fn image_strings_are_escaped_against_kubelet_expansion_but_pod_strings_are_not() {
    let before = annotated(json!({"containers": [
        {"name": "img", "image": "a:1"},
        {"name": "own", "command": ["/bin/sh", "-c", "echo $(HOME)"]},
    ]}));
    let resolved = image_entrypoint("img", &["/bin/sh", "-c"], &["echo $(HOME) $$"]);
    let after = injected_with(&before, &resolved)
        .expect("allowed")
        .expect("patched");
    assert_eq!(
        after["spec"]["containers"][0]["args"],
        json!(["--", "/bin/sh", "-c", "echo $$(HOME) $$$$"])
    );
    assert_eq!(
        after["spec"]["containers"][1]["args"],
        json!(["--", "/bin/sh", "-c", "echo $(HOME)"])
    );
}

#[test]
fn unresolved_entrypoint_denies_naming_container_image_reason_and_fix() {
    let before =
        annotated(json!({"containers": [{"name": "app", "image": "registry.example/noentry:2"}]}));
    let mut resolved = ResolvedEntrypoints::new();
    resolved.insert("app", Err("the registry did not answer within 3s".into()));
    let deny = injected_with(&before, &resolved).expect_err("denied");
    let message = deny.to_string();
    for part in [
        "`app`",
        "registry.example/noentry:2",
        "did not answer within 3s",
        "set `command`",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    // Not looked up at all (a caller that skipped resolution) is a denial too, never an admit.
    assert!(matches!(denied(&before), Deny::EntrypointUnknown { .. }));
}

#[test]
fn image_without_entrypoint_or_cmd_is_denied() {
    let before = annotated(json!({"containers": [{"name": "app", "image": "scratch:1"}]}));
    let mut resolved = ResolvedEntrypoints::new();
    resolved.insert("app", Ok(ImageEntrypoint::default()));
    let deny = injected_with(&before, &resolved).expect_err("denied");
    assert!(
        deny.to_string().contains("neither ENTRYPOINT nor CMD"),
        "{deny}"
    );
}

#[test]
fn empty_command_counts_as_absent() {
    let before = annotated(json!({"containers": [{"name": "app", "image": "a:1", "command": []}]}));
    let plan = plan(&pod(before)).expect("ok").expect("selected");
    assert_eq!(plan.lookups.len(), 1);
}

#[test]
fn plan_asks_for_the_pinned_architecture_and_only_for_containers_without_command() {
    let before = annotated(json!({
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1", "command": ["/b"]}],
    }));
    let plan = plan(&pod(before)).expect("ok").expect("selected");
    assert_eq!(plan.selected, [0, 1]);
    assert_eq!(
        plan.lookups,
        [ImageLookup {
            container: "a".into(),
            image: "a:1".into(),
            arch: "arm64".into()
        }]
    );
    let default = annotated(json!({"containers": [{"name": "a", "image": "a:1"}]}));
    let plan = super::plan(&pod(default)).expect("ok").expect("selected");
    assert_eq!(plan.lookups[0].arch, "amd64");
}

#[test]
fn audience_and_lifetime_come_from_the_configuration() {
    let before = annotated(json!({"containers": [{"name": "app", "command": ["/app"]}]}));
    let mut cfg = config();
    cfg.token_audience = "custom".into();
    cfg.token_expiration_seconds = 900;
    let patch = mutate(&pod(before.clone()), &cfg, &ResolvedEntrypoints::new())
        .expect("allowed")
        .expect("patched");
    let mut after = before;
    json_patch::patch(&mut after, &patch).expect("applies");
    assert_eq!(
        after["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "custom", "expirationSeconds": 900, "path": "token"})
    );
}

#[test]
fn pod_without_containers_is_denied() {
    assert_eq!(
        denied(&annotated(json!({"containers": []}))),
        Deny::NoContainers
    );
}
