//! `aegis inject` over real `kubectl create ... --dry-run=client` manifests (tests/fixtures).

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn inject(args: &[&str], stdin: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, aegis_safe::tls::generate_dev_certs().unwrap().ca_cert).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aegis"))
        .arg("inject")
        .args(args)
        .args([
            "--safe-ca-file",
            ca.to_str().unwrap(),
            "--safe-url",
            "https://safe.test:8443",
        ])
        .args(["--shim-image", "registry.test/aegis-init-shim:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            // The CLI may fail before reading all of stdin: EPIPE is fine then.
            if let Err(e) = si.write_all(s.as_bytes()) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
            }
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "inject failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn yaml_docs(s: &str) -> Vec<Value> {
    aegis_cli::inject::parse_documents(s).unwrap()
}

/// Asserts the pod template at `ptr` was injected around `entrypoint`.
fn assert_injected(doc: &Value, ptr: &str, entrypoint: &[&str]) {
    let t = doc
        .pointer(ptr)
        .unwrap_or_else(|| panic!("no template at {ptr}: {doc}"));
    assert_eq!(
        t["metadata"]["annotations"]["aegis.shieldworks.io/status"], "injected",
        "{t}"
    );
    assert_eq!(t["spec"]["initContainers"][0]["name"], "aegis-init");
    assert_eq!(
        t["spec"]["initContainers"][0]["image"],
        "registry.test/aegis-init-shim:1"
    );
    let c = &t["spec"]["containers"][0];
    assert_eq!(
        c["command"],
        serde_json::json!(["/aegis/bin/aegis-init-shim"])
    );
    let mut args = vec!["--"];
    args.extend_from_slice(entrypoint);
    assert_eq!(c["args"], serde_json::json!(args));
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in ["AEGIS_SAFE_URL", "AEGIS_SAFE_CA", "AEGIS_TOKEN_FILE"] {
        assert!(env.contains(&name), "{name} missing in {env:?}");
    }
    let vols: Vec<&str> = t["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        vols.contains(&"aegis-bin") && vols.contains(&"aegis-token"),
        "{vols:?}"
    );
}

#[test]
fn annotate_injects_a_kubectl_deployment_and_keeps_its_other_fields() {
    let out = ok(&inject(
        &[
            "-f",
            fixture("deployment-web.yaml").to_str().unwrap(),
            "--annotate",
        ],
        None,
    ));
    let docs = yaml_docs(&out);
    assert_eq!(docs.len(), 1);
    assert_injected(
        &docs[0],
        "/spec/template",
        &["/app/serve", "--port", "8080"],
    );
    assert_eq!(docs[0]["spec"]["strategy"], serde_json::json!({}));
    assert_eq!(
        docs[0]["spec"]["template"]["metadata"]["labels"]["app"],
        "web"
    );
    assert_eq!(
        docs[0]["spec"]["template"]["metadata"]["annotations"]["aegis.shieldworks.io/inject"],
        "true"
    );
}

#[test]
fn templates_without_the_annotation_are_left_alone() {
    let input = std::fs::read_to_string(fixture("deployment-web.yaml")).unwrap();
    let o = inject(&["-f", "-"], Some(&input));
    let out = ok(&o);
    assert_eq!(yaml_docs(&out), yaml_docs(&input));
    assert!(String::from_utf8_lossy(&o.stderr).contains("deployment/web: unchanged (not annotated"));
}

#[test]
fn multi_document_files_inject_every_pod_template_and_pass_the_rest_through() {
    let mut input = String::new();
    for f in [
        "deployment-web.yaml",
        "configmap-settings.yaml",
        "job-migrate.yaml",
        "cronjob-report.yaml",
    ] {
        input.push_str("---\n");
        input.push_str(&std::fs::read_to_string(fixture(f)).unwrap());
    }
    let o = inject(&["-f", "-", "--annotate"], Some(&input));
    let docs = yaml_docs(&ok(&o));
    assert_eq!(docs.len(), 4);
    assert_injected(
        &docs[0],
        "/spec/template",
        &["/app/serve", "--port", "8080"],
    );
    assert_eq!(
        docs[1],
        yaml_docs(&std::fs::read_to_string(fixture("configmap-settings.yaml")).unwrap())[0]
    );
    assert_injected(&docs[2], "/spec/template", &["/bin/migrate", "--up"]);
    assert_injected(
        &docs[3],
        "/spec/jobTemplate/spec/template",
        &["/bin/report", "--daily"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("configmap/settings: passed through"), "{err}");
    assert!(err.contains("cronjob/report: injected"), "{err}");
}

#[test]
fn injecting_its_own_output_again_changes_nothing() {
    let once = ok(&inject(
        &[
            "-f",
            fixture("cronjob-report.yaml").to_str().unwrap(),
            "--annotate",
        ],
        None,
    ));
    let twice = ok(&inject(&["-f", "-", "--annotate"], Some(&once)));
    assert_eq!(yaml_docs(&once), yaml_docs(&twice));
}

#[test]
fn json_in_gives_json_out() {
    let out = ok(&inject(
        &[
            "-f",
            fixture("deployment-worker.json").to_str().unwrap(),
            "--annotate",
        ],
        None,
    ));
    let v: Value = serde_json::from_str(&out).expect("output is JSON");
    assert_injected(&v, "/spec/template", &["/bin/worker"]);
}

#[test]
fn a_list_document_has_each_item_injected() {
    let dep: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("deployment-worker.json")).unwrap())
            .unwrap();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [dep.clone(), dep]});
    let out = ok(&inject(&["-f", "-", "--annotate"], Some(&list.to_string())));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_injected(&v, "/items/0/spec/template", &["/bin/worker"]);
    assert_injected(&v, "/items/1/spec/template", &["/bin/worker"]);
}

#[test]
fn a_container_without_command_whose_image_cannot_be_read_is_refused_with_the_fix() {
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"aegis.shieldworks.io/inject":"true"}},
      "spec":{"containers":[{"name":"app","image":"127.0.0.1:1/nothing:1"}]}}"#;
    let o = inject(&["-f", "-"], Some(pod));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pod/p") && err.contains("app") && err.contains("command"),
        "{err}"
    );
}

#[test]
fn malformed_input_is_a_clear_error() {
    let o = inject(&["-f", "-"], Some("kind: [unclosed"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not valid YAML"));
}

#[test]
fn a_safe_ca_file_without_a_certificate_is_refused() {
    let o = Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args([
            "inject",
            "-f",
            fixture("deployment-web.yaml").to_str().unwrap(),
        ])
        .args(["--safe-ca-file", fixture("README.md").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds no certificate"));
}
