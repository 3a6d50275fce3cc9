//! `aegis demo`: the whole path on one machine, no cluster, every part real.
//!
//! 1. a dev-mode Safe (generated root key, CA and token issuer) over HTTPS;
//! 2. a secret stored for `demo/app` through the admin API;
//! 3. the webhook, over HTTPS, mutating the pod of a sample annotated Deployment;
//! 4. the kubelet's part done by hand: volumes as directories, the projected token written,
//!    the init container run (the real shim installs itself), then the wrapped container
//!    run through the real `aegis-init-shim`, which fetches the secret and `execve`s the app;
//! 5. the app prints what it received; every file written is searched for the secret.
//!
//! Each step prints one line; any failure stops the demo with a non-zero exit.

use crate::args::DemoArgs;
use crate::client::SafeClient;
use crate::CliError;
use aegis_core::{names, SecretValue};
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The sample Deployment the demo admits (the same shape as `examples/deployment.yaml`).
pub const SAMPLE_DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: demo
spec:
  replicas: 1
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
      annotations:
        aegis.shieldworks.io/inject: "true"
    spec:
      serviceAccountName: app
      containers:
      - name: app
        image: busybox:1.36
        command: ["/bin/sh", "-c"]
        args: ["echo \"app (pid $$) received GREETING=$GREETING\""]
"#;

const NAMESPACE: &str = "demo";
const SERVICE_ACCOUNT: &str = "app";
const KEY: &str = "GREETING";

fn step(n: u8, text: &str) {
    println!("[{n}/6] {text}");
}

fn detail(text: impl std::fmt::Display) {
    println!("      {text}");
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let shim = locate_shim(args.shim_bin.as_deref())?;
    let tmp = tempfile::Builder::new()
        .prefix("aegis-demo-")
        .tempdir()
        .map_err(|e| CliError::io("creating a temporary directory", e))?;
    let result = run_in(tmp.path(), &shim);
    if args.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    result.map(|()| ExitCode::SUCCESS)
}

/// The shim binary: `--shim-bin`, or `aegis-init-shim` beside this executable.
pub fn locate_shim(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| CliError::io("finding this executable", e))?
            .with_file_name(names::SHIM_BINARY),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(CliError::Usage(format!(
            "the init-shim binary is not at {}; build it with `cargo build -p aegis-init-shim` or pass --shim-bin",
            path.display()
        )))
    }
}

fn run_in(root: &Path, shim: &Path) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the async runtime", e))?;

    step(
        1,
        "Starting a Safe in dev mode (generated root key, CA and token issuer)",
    );
    let safe =
        aegis_safe::DevSafe::start(&root.join("safe")).map_err(|e| CliError::demo("safe", e))?;
    detail(format_args!("listening on {}", safe.url));

    step(
        2,
        "Storing a secret for workload demo/app as the admin aegis-system/aegis-sentinel",
    );
    let value = random_secret()?;
    let admin = SafeClient::new(
        &safe.url,
        &safe.ca_pem,
        safe.admin_token()
            .map_err(|e| CliError::demo("admin token", e))?,
        "the dev issuer".into(),
    )?;
    let workload = aegis_core::Workload::new(NAMESPACE, SERVICE_ACCOUNT)
        .map_err(|e| CliError::demo("workload", e))?;
    let put = rt.block_on(admin.put(&workload, KEY, SecretValue::new(value.clone())))?;
    detail(format_args!(
        "{KEY} stored, version {}, {}",
        put.response.version, put.response.fingerprint
    ));

    step(
        3,
        "Starting the admission webhook over HTTPS and admitting the sample Deployment's pod",
    );
    let hook = rt.block_on(WebhookUnderTest::start(root, &safe.url, &safe.ca_pem))?;
    let pod = pod_from_deployment(SAMPLE_DEPLOYMENT)?;
    let mutated = rt.block_on(hook.admit(&pod))?;
    print_mutation(&pod, &mutated);

    step(
        4,
        "Starting the pod as the kubelet would: volumes, projected token, init container",
    );
    let token = safe
        .token(NAMESPACE, SERVICE_ACCOUNT)
        .map_err(|e| CliError::demo("pod token", e))?;
    let kubelet = Kubelet::prepare(root, shim, &token)?;
    for init in array(&mutated, "/spec/initContainers") {
        let out = kubelet.run_container(init)?;
        detail(format_args!(
            "init container {} exited 0{}",
            str_at(init, "/name"),
            if out.stdout.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", out.stdout.trim())
            }
        ));
    }

    step(
        5,
        "Running the app container through the real aegis-init-shim",
    );
    let app = array(&mutated, "/spec/containers")
        .first()
        .cloned()
        .ok_or_else(|| CliError::demo("app", "the mutated pod has no container"))?;
    let out = kubelet.run_container(&app)?;
    for line in out.stdout.lines() {
        detail(format_args!("app> {line}"));
    }
    if !out.stdout.contains(&format!("GREETING={value}")) {
        return Err(CliError::demo(
            "app",
            "the app did not receive the secret in its environment",
        ));
    }
    if !out.stdout.contains(&format!("(pid {})", out.pid)) {
        return Err(CliError::demo(
            "app",
            "the app did not keep the PID the kubelet started (no execve?)",
        ));
    }
    detail(format_args!(
        "the app received the secret and kept PID {} (the shim exec'd it)",
        out.pid
    ));

    hook.stop(&rt);
    safe.stop();

    step(
        6,
        "Searching every file the demo wrote for the secret's bytes",
    );
    let scan = scan_for(root, value.as_bytes()).map_err(|e| CliError::io("scanning", e))?;
    if !scan.hits.is_empty() {
        return Err(CliError::demo(
            "scan",
            format!("the secret's bytes were found in {:?}", scan.hits),
        ));
    }
    detail(format_args!(
        "{} files, {} bytes searched: the secret is in none of them",
        scan.files, scan.bytes
    ));
    println!("demo passed: the secret went from the Safe to the app's environment and never touched disk");
    Ok(())
}

fn random_secret() -> Result<String, CliError> {
    let mut b = [0u8; 9];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| CliError::io("reading /dev/urandom", e))?;
    Ok(format!(
        "hello-from-aegis-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

/// The Pod a ReplicaSet controller creates from a Deployment's template.
pub fn pod_from_deployment(yaml: &str) -> Result<Value, CliError> {
    let d: Value = serde_yaml::from_str(yaml).map_err(|e| CliError::demo("sample", e))?;
    let name = str_at(&d, "/metadata/name");
    let mut metadata = d
        .pointer("/spec/template/metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    metadata["generateName"] = json!(format!("{name}-5d8f7c9b4-"));
    metadata["namespace"] = d
        .pointer("/metadata/namespace")
        .cloned()
        .unwrap_or(json!("default"));
    metadata["labels"]["pod-template-hash"] = json!("5d8f7c9b4");
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": d.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
    }))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn array<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn print_mutation(before: &Value, after: &Value) {
    let names_of = |v: &Value, p: &str| -> Vec<String> {
        array(v, p)
            .iter()
            .map(|x| str_at(x, "/name").to_string())
            .collect()
    };
    let old_volumes = names_of(before, "/spec/volumes");
    for v in array(after, "/spec/volumes") {
        let n = str_at(v, "/name");
        if !old_volumes.iter().any(|o| o == n) {
            let what = if v.get("emptyDir").is_some() {
                format!("emptyDir {}", v["emptyDir"])
            } else if v.get("projected").is_some() {
                "projected ServiceAccount token".to_string()
            } else {
                "volume".to_string()
            };
            detail(format_args!("+ volume {n}: {what}"));
        }
    }
    let old_inits = names_of(before, "/spec/initContainers");
    for c in array(after, "/spec/initContainers") {
        if !old_inits.iter().any(|o| o == str_at(c, "/name")) {
            detail(format_args!(
                "+ init container {} ({}): {}",
                str_at(c, "/name"),
                str_at(c, "/image"),
                argv(c).join(" ")
            ));
        }
    }
    for c in array(after, "/spec/containers") {
        let env: Vec<&str> = array(c, "/env")
            .iter()
            .map(|e| str_at(e, "/name"))
            .collect();
        detail(format_args!(
            "~ container {}: {}",
            str_at(c, "/name"),
            argv(c).join(" ")
        ));
        detail(format_args!("    env: {}", env.join(", ")));
    }
    if let Some(s) = after
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(names::ANNOTATION_STATUS))
    {
        detail(format_args!(
            "~ annotation {}: {}",
            names::ANNOTATION_STATUS,
            s
        ));
    }
}

/// `command` + `args` of a container, as strings (shell-quoted when they contain spaces).
fn argv(c: &Value) -> Vec<String> {
    array(c, "/command")
        .iter()
        .chain(array(c, "/args"))
        .map(|a| {
            let s = a.as_str().unwrap_or_default();
            if s.is_empty() || s.contains(char::is_whitespace) {
                format!("{s:?}")
            } else {
                s.to_string()
            }
        })
        .collect()
}

/// The webhook served on loopback over HTTPS with a certificate from a throwaway CA.
struct WebhookUnderTest {
    url: String,
    client: reqwest::Client,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookUnderTest {
    async fn start(root: &Path, safe_url: &str, safe_ca_pem: &str) -> Result<Self, CliError> {
        let dir = root.join("webhook");
        std::fs::create_dir_all(&dir).map_err(|e| CliError::io("creating the webhook dir", e))?;
        let ca_pem = write_tls_pair(&dir)?;
        let safe_ca_file = dir.join("safe-ca.crt");
        std::fs::write(&safe_ca_file, safe_ca_pem)
            .map_err(|e| CliError::io("writing the Safe CA", e))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| CliError::io("binding the webhook port", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::io("webhook address", e))?;
        let config = aegis_webhook::Config::new(
            dir.join("tls.crt"),
            dir.join("tls.key"),
            safe_url.to_string(),
            safe_ca_file,
            "aegis-init-shim:demo".to_string(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            if let Err(e) = aegis_webhook::serve(config, listener, async {
                let _ = rx.await;
            })
            .await
            {
                eprintln!("webhook stopped: {e}");
            }
        });
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::client::tls_config(&ca_pem)?)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::demo("webhook client", e))?;
        Ok(Self {
            url: format!("https://localhost:{}/mutate", addr.port()),
            client,
            shutdown: tx,
            task,
        })
    }

    /// Sends an AdmissionReview as the API server would and applies the returned patch.
    async fn admit(&self, pod: &Value) -> Result<Value, CliError> {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7b5c3c5e-0d6f-4a52-9a57-demo00000001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": pod.pointer("/metadata/namespace").cloned().unwrap_or(json!("default")),
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        });
        let resp: Value = self
            .client
            .post(&self.url)
            .json(&review)
            .send()
            .await
            .map_err(|e| CliError::demo("admission", e))?
            .json()
            .await
            .map_err(|e| CliError::demo("admission reply", e))?;
        let response = &resp["response"];
        if response["allowed"] != json!(true) {
            return Err(CliError::demo(
                "admission",
                format!("denied: {}", str_at(response, "/status/message")),
            ));
        }
        let patch_b64 = str_at(response, "/patch");
        let patch: json_patch::Patch = base64::engine::general_purpose::STANDARD
            .decode(patch_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                CliError::demo("admission", "the webhook returned no usable JSON patch")
            })?;
        let mut mutated = pod.clone();
        json_patch::patch(&mut mutated, &patch).map_err(|e| CliError::demo("patch", e))?;
        Ok(mutated)
    }

    fn stop(self, rt: &tokio::runtime::Runtime) {
        let _ = self.shutdown.send(());
        let _ =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), self.task).await });
    }
}

/// Writes `tls.crt`/`tls.key` for localhost signed by a new CA; returns the CA's PEM.
fn write_tls_pair(dir: &Path) -> Result<String, CliError> {
    let certs = aegis_safe::tls::generate_dev_certs()
        .map_err(|e| CliError::demo("webhook certificate", e))?;
    for (name, body) in [
        ("tls.crt", &certs.server_cert),
        ("tls.key", &certs.server_key),
    ] {
        std::fs::write(dir.join(name), body)
            .map_err(|e| CliError::io(format!("writing {name}"), e))?;
    }
    Ok(certs.ca_cert)
}

/// The kubelet's part for one pod: volume directories, the projected token, containers run
/// with the pod spec's command, args and env, with in-container paths mapped to the volumes.
struct Kubelet {
    bin_dir: PathBuf,
    token_dir: PathBuf,
    shim: PathBuf,
    work: PathBuf,
}

struct ContainerOutput {
    pid: u32,
    stdout: String,
}

impl Kubelet {
    fn prepare(root: &Path, shim: &Path, token: &str) -> Result<Self, CliError> {
        let pod = root.join("pod");
        let k = Self {
            bin_dir: pod.join("volumes/aegis-bin"),
            token_dir: pod.join("volumes/aegis-token"),
            shim: shim.to_path_buf(),
            work: pod.join("rootfs"),
        };
        for d in [&k.bin_dir, &k.token_dir, &k.work] {
            std::fs::create_dir_all(d)
                .map_err(|e| CliError::io(format!("creating {}", d.display()), e))?;
        }
        let token_file = k.token_dir.join(names::TOKEN_FILE_NAME);
        std::fs::write(&token_file, token)
            .map_err(|e| CliError::io("writing the projected token", e))?;
        Ok(k)
    }

    /// Maps an in-container path to where the demo keeps that volume.
    fn map(&self, s: &str) -> String {
        if let Some(rest) = s.strip_prefix(names::BIN_DIR) {
            format!("{}{rest}", self.bin_dir.display())
        } else if let Some(rest) = s.strip_prefix(names::TOKEN_DIR) {
            format!("{}{rest}", self.token_dir.display())
        } else {
            s.to_string()
        }
    }

    fn run_container(&self, c: &Value) -> Result<ContainerOutput, CliError> {
        let name = str_at(c, "/name").to_string();
        let mut argv: Vec<String> = array(c, "/command")
            .iter()
            .chain(array(c, "/args"))
            .map(|a| self.map(a.as_str().unwrap_or_default()))
            .collect();
        if argv.is_empty() {
            return Err(CliError::demo(&name, "container has no command"));
        }
        // The shim image's entrypoint is the shim itself: that image maps to the built binary.
        if argv[0] == format!("/{}", names::SHIM_BINARY) {
            argv[0] = self.shim.display().to_string();
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", &self.work)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for e in array(c, "/env") {
            cmd.env(str_at(e, "/name"), self.map(str_at(e, "/value")));
        }
        let child = cmd
            .spawn()
            .map_err(|e| CliError::demo(&name, format!("cannot start {}: {e}", argv[0])))?;
        let pid = child.id();
        let out = child
            .wait_with_output()
            .map_err(|e| CliError::demo(&name, e))?;
        if !out.status.success() {
            return Err(CliError::demo(
                &name,
                format!(
                    "exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(ContainerOutput {
            pid,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }
}

/// What a search of a directory tree found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Regular files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Files containing the needle.
    pub hits: Vec<PathBuf>,
}

/// Searches every regular file under `root` for `needle`.
pub fn scan_for(root: &Path, needle: &[u8]) -> std::io::Result<Scan> {
    let mut scan = Scan::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                let data = std::fs::read(entry.path())?;
                scan.files += 1;
                scan.bytes += data.len() as u64;
                if !needle.is_empty() && data.windows(needle.len()).any(|w| w == needle) {
                    scan.hits.push(entry.path());
                }
            }
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_pod_looks_like_a_replicaset_controllers_pod() {
        let pod = pod_from_deployment(SAMPLE_DEPLOYMENT).unwrap();
        assert_eq!(pod["metadata"]["namespace"], "demo");
        assert!(pod["metadata"]["generateName"]
            .as_str()
            .unwrap()
            .starts_with("app-"));
        assert_eq!(
            pod["metadata"]["annotations"][names::ANNOTATION_INJECT],
            "true"
        );
        assert_eq!(pod["spec"]["serviceAccountName"], "app");
    }

    #[test]
    fn scan_finds_a_needle_in_nested_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"xxneedlexx").unwrap();
        std::fs::write(d.path().join("g"), b"nothing").unwrap();
        let s = scan_for(d.path(), b"needle").unwrap();
        assert_eq!(s.files, 2);
        assert_eq!(s.hits, vec![d.path().join("a/b/f")]);
    }
}
