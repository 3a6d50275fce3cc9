//! One "cluster" for an end-to-end test: the Helm chart rendered with the real Helm, the
//! Safe, webhook and Sentinel pods of that render started by the [`Kubelet`] with the real
//! binaries, and the [`ApiServer`] configured from the rendered
//! `MutatingWebhookConfiguration`. Tests then create Deployments and run their pods.
//!
//! The only changes made to what the chart renders are the translations a single machine
//! needs, listed in [`Cluster::translations`] and in docs/e2e.md:
//! - `0.0.0.0:<port>` in a container's arguments becomes `<pod IP>:<port>`: each pod gets
//!   its own loopback address (`127.x.y.z`), as each pod has its own IP in a cluster, so the
//!   chart's ports are used unchanged and parallel tests do not collide.
//! - `--root-key-secret=NAME` becomes `--root-key-file=<dir>/NAME`: there is no API server
//!   to hold the root-key Secret, so its content (32 random bytes, as the Safe would create
//!   on first boot) is a file.
//! - Service DNS names (`aegis-safe.aegis-system.svc`, ...) resolve to the pod IP through
//!   the hosts file every container sees as `/etc/hosts` (cluster DNS plus kube-proxy).
//! - Token verification: the chart is rendered with `safe.tokenAuth=jwks` and
//!   `safe.jwks.configMap` holding the dev issuer's JWKS (the chart's supported
//!   alternative to TokenReview); the kubelet signs projected tokens with that issuer.
//!
//! Invariant: every process started here is killed by its own PID when the [`Cluster`]
//! (or the pod run holding it) is dropped.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aegis_auth::DevIssuer;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::apiserver::{self, AdmissionTrace, ApiServer, ApiServerError, Webhook};
use crate::helm::{self, Chart, HelmError, Rendered};
use crate::kubelet::{Container, Exited, Image, Kubelet, KubeletError, Objects, Sandbox};
use crate::tools::ToolError;
use crate::{bins, registry};

/// Why the test cluster could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// Rendering the chart failed.
    #[error(transparent)]
    Helm(#[from] HelmError),
    /// A tool or binary is missing.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The "kubelet" failed.
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    /// The "API server" refused or failed.
    #[error(transparent)]
    ApiServer(#[from] ApiServerError),
    /// The local registry failed.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// A file operation failed.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// The render or a component did not behave as the suite expects.
    #[error("{0}")]
    Setup(String),
}

fn setup(msg: impl Into<String>) -> E2eError {
    E2eError::Setup(msg.into())
}

/// `n` random bytes from the system generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; n];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Only uniqueness matters to the harness; fall back to the clock.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    bytes
}

/// A random version-4 UUID, as the API server assigns to objects.
pub fn random_uuid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random lower-case hex string of `n` bytes.
pub fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|x| format!("{x:02x}")).collect()
}

/// A random loopback address outside `127.0.0.0/16` (where other tests bind), as a pod IP.
pub fn random_pod_ip() -> Ipv4Addr {
    let b = random_bytes(3);
    Ipv4Addr::new(127, 1 + b[0] % 250, 1 + b[1] % 250, 1 + b[2] % 250)
}

/// In-image path of each Aegis image's binary (the `ENTRYPOINT` of its Dockerfile target).
const IMAGE_BINARIES: [(&str, &str); 4] = [
    ("safe", bins::SAFE),
    ("webhook", bins::WEBHOOK),
    ("sentinel", bins::CLI),
    ("shim", bins::INIT_SHIM),
];

/// Namespace of the sample workloads.
pub const DEMO_NS: &str = "demo";

/// A chart pod the cluster runs (Safe, webhook or Sentinel).
#[derive(Debug)]
pub struct Running {
    /// Its one container (declared first: fields drop in order, processes before mounts).
    pub container: Container,
    /// Its volumes.
    pub sandbox: Sandbox,
}

/// A workload pod started by [`Cluster::run_pod`].
#[derive(Debug)]
pub struct PodRun {
    /// Its regular containers, running, in spec order (declared first: fields drop in
    /// order, so processes are killed before their volumes are unmounted).
    pub containers: Vec<Container>,
    /// How each init container ended, in order.
    pub init: Vec<Exited>,
    /// Its volumes (unmounted on drop).
    pub sandbox: Sandbox,
}

/// Options of one cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Extra `helm template --set` values (e.g. `webhook.failurePolicy=Ignore`).
    pub set: Vec<String>,
}

/// The chart's components running on this machine, plus the API server.
#[derive(Debug)]
pub struct Cluster {
    /// Everything this cluster writes lives here.
    pub dir: tempfile::TempDir,
    /// When setup began (for the plaintext scan).
    pub started: SystemTime,
    /// The cluster's ServiceAccount token issuer.
    pub issuer: Arc<DevIssuer>,
    /// The chart as rendered for this cluster.
    pub rendered: Rendered,
    /// The node.
    pub kubelet: Kubelet,
    /// The control plane.
    pub api: ApiServer,
    /// `(in the chart, here)` for every translated value.
    pub translations: Vec<(String, String)>,
    safe_pod: Value,
    webhook_pod: Value,
    sentinel_pod: Value,
    safe_ip: Ipv4Addr,
    webhook_ip: Ipv4Addr,
    /// The Safe's TLS CA (PEM) from the rendered Secret.
    pub safe_ca: Vec<u8>,
    safe: Option<Running>,
    webhook: Option<Running>,
    sentinel: Option<Running>,
    past_safe_logs: Vec<u8>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Chart pods before the temporary directory that holds their volumes.
        drop(self.sentinel.take());
        drop(self.webhook.take());
        drop(self.safe.take());
    }
}

fn component_of(doc: &Value) -> &str {
    doc["metadata"]["labels"]["app.kubernetes.io/component"]
        .as_str()
        .unwrap_or_default()
}

fn decode_data(doc: &Value) -> Result<BTreeMap<String, Vec<u8>>, E2eError> {
    let mut out = BTreeMap::new();
    if let Some(data) = doc["data"].as_object() {
        for (k, v) in data {
            let bytes = if doc["kind"] == "Secret" {
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or_default())
                    .map_err(|e| setup(format!("rendered Secret data {k}: {e}")))?
            } else {
                v.as_str().unwrap_or_default().as_bytes().to_vec()
            };
            out.insert(k.clone(), bytes);
        }
    }
    if let Some(data) = doc["stringData"].as_object() {
        for (k, v) in data {
            out.insert(
                k.clone(),
                v.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
    }
    Ok(out)
}

impl Cluster {
    /// Renders the chart and starts the Safe, the webhook and the Sentinel, ready.
    pub fn start(options: ClusterOptions) -> Result<Cluster, E2eError> {
        let started = SystemTime::now() - Duration::from_secs(1);
        // Fail first, and clearly, when a binary is not built.
        bins::all()?;
        let dir = tempfile::Builder::new()
            .prefix("aegis-e2e-")
            .tempdir()
            .map_err(|e| E2eError::Io("create temp dir".into(), e))?;
        let issuer =
            Arc::new(DevIssuer::try_generate().map_err(|e| setup(format!("dev issuer: {e}")))?);
        let chart = Chart::new()?;
        let mut set = vec![
            "safe.tokenAuth=jwks".to_string(),
            format!("safe.jwks.issuer={}", issuer.issuer_url()),
            "safe.jwks.configMap=aegis-jwks".to_string(),
        ];
        set.extend(options.set);
        let args: Vec<String> = set
            .iter()
            .flat_map(|s| ["--set".to_string(), s.clone()])
            .collect();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let rendered = chart.template(&arg_refs)?;

        // Cluster objects: the rendered Secrets and ConfigMaps, the JWKS ConfigMap the
        // values name, and `kube-root-ca.crt` in every namespace used (its CA stands in for
        // the cluster CA; nothing in the test trusts it).
        let mut objects = Objects::default();
        for doc in rendered
            .of_kind("Secret")
            .into_iter()
            .chain(rendered.of_kind("ConfigMap"))
        {
            let key = format!(
                "{}/{}",
                doc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(helm::NAMESPACE),
                helm::name_of(doc)
            );
            let data = decode_data(doc)?;
            if doc["kind"] == "Secret" {
                objects.secrets.insert(key, data);
            } else {
                objects.config_maps.insert(key, data);
            }
        }
        objects.config_maps.insert(
            format!("{}/aegis-jwks", helm::NAMESPACE),
            BTreeMap::from([("jwks.json".to_string(), issuer.jwks_json().into_bytes())]),
        );
        let webhooks = Webhook::from_rendered(&rendered)?;
        let cluster_ca = webhooks
            .first()
            .map(|w| w.ca_bundle.clone())
            .ok_or_else(|| setup("the chart rendered no MutatingWebhookConfiguration"))?;
        for ns in [helm::NAMESPACE, DEMO_NS, "kube-system"] {
            objects.config_maps.insert(
                format!("{ns}/kube-root-ca.crt"),
                BTreeMap::from([("ca.crt".to_string(), cluster_ca.clone())]),
            );
        }

        // The chart's pods, as their controllers create them.
        let safe_sts = rendered
            .of_kind("StatefulSet")
            .into_iter()
            .find(|d| component_of(d) == "safe")
            .ok_or_else(|| setup("no Safe StatefulSet rendered"))?;
        let deployment = |component: &str| {
            rendered
                .of_kind("Deployment")
                .into_iter()
                .find(|d| component_of(d) == component)
                .ok_or_else(|| setup(format!("no {component} Deployment rendered")))
        };
        let mut safe_pod = apiserver::pod_from_statefulset(safe_sts, helm::NAMESPACE, 0)?;
        let mut webhook_pod =
            apiserver::pod_from_deployment(deployment("webhook")?, helm::NAMESPACE)?;
        let mut sentinel_pod =
            apiserver::pod_from_deployment(deployment("sentinel")?, helm::NAMESPACE)?;
        for pod in [&mut safe_pod, &mut webhook_pod, &mut sentinel_pod] {
            if pod["metadata"]["name"].is_null() {
                let base = pod["metadata"]["generateName"]
                    .as_str()
                    .unwrap_or("pod-")
                    .to_string();
                pod["metadata"]["name"] = json!(format!("{base}{}", apiserver::random_suffix(5)));
            }
            pod["metadata"]["uid"] = json!(random_uuid());
        }

        // Images: each Aegis image runs its workspace binary.
        let mut images = BTreeMap::new();
        let webhook_args = container_args(&webhook_pod);
        let shim_image = helm::flag_value(&webhook_args, "--shim-image")
            .ok_or_else(|| setup("the webhook has no --shim-image"))?
            .to_string();
        for (component, binary) in IMAGE_BINARIES {
            let image_ref = match component {
                "safe" => first_image(&safe_pod),
                "webhook" => first_image(&webhook_pod),
                "sentinel" => first_image(&sentinel_pod),
                _ => shim_image.clone(),
            };
            let mut host = bins::binary(binary)?;
            if component == "shim" {
                host = stripped_copy(&host, dir.path())?;
            }
            let in_image = format!("/{binary}");
            images.insert(
                image_ref,
                Image {
                    entrypoint: vec![in_image.clone()],
                    cmd: Vec::new(),
                    path: None,
                    files: BTreeMap::from([(in_image, host)]),
                },
            );
        }

        // Addresses: a pod IP each; Service names resolve to them.
        let safe_ip = random_pod_ip();
        let webhook_ip = random_pod_ip();
        let sentinel_ip = random_pod_ip();
        let mut translations = Vec::new();
        let root_keys = dir.path().join("root-key-secrets");
        std::fs::create_dir_all(&root_keys)
            .map_err(|e| E2eError::Io("create root-key dir".into(), e))?;
        translate_args(&mut safe_pod, safe_ip, &root_keys, &mut translations)?;
        translate_args(&mut webhook_pod, webhook_ip, &root_keys, &mut translations)?;
        let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        let mut endpoints = BTreeMap::new();
        for svc in rendered.of_kind("Service") {
            let ip = match svc["spec"]["selector"]["app.kubernetes.io/component"].as_str() {
                Some("safe") => safe_ip,
                Some("webhook") => webhook_ip,
                _ => continue,
            };
            let (name, ns) = (helm::name_of(svc), helm::NAMESPACE);
            hosts.push_str(&format!(
                "{ip}\t{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}\n"
            ));
            let empty = Vec::new();
            for port in svc["spec"]["ports"].as_array().unwrap_or(&empty) {
                let p = port["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(443);
                endpoints.insert(format!("{name}.{ns}.svc"), SocketAddr::from((ip, p)));
                if port["name"] == "https" {
                    break;
                }
            }
            translations.push((format!("{name}.{ns}.svc"), format!("{ip} (hosts file)")));
        }
        let hosts_file = dir.path().join("hosts");
        std::fs::write(&hosts_file, hosts).map_err(|e| E2eError::Io("write hosts".into(), e))?;

        let safe_ca = objects
            .secrets
            .get(&format!(
                "{}/{}",
                helm::NAMESPACE,
                secret_of_volume(&safe_pod, "tls")
            ))
            .and_then(|d| d.get("ca.crt"))
            .cloned()
            .ok_or_else(|| setup("the Safe's TLS Secret has no ca.crt"))?;

        let mut pvcs = BTreeMap::new();
        let empty = Vec::new();
        for v in safe_pod["spec"]["volumes"].as_array().unwrap_or(&empty) {
            if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                pvcs.insert(
                    format!("{}/{claim}", helm::NAMESPACE),
                    dir.path().join("pv").join(claim),
                );
            }
        }
        let kubelet = Kubelet {
            root: dir.path().join("kubelet"),
            issuer: issuer.clone(),
            api_audience: issuer.issuer_url().to_string(),
            images,
            objects,
            hosts_file,
            pvcs,
        };
        let api = ApiServer {
            webhooks,
            namespaces: BTreeMap::new(),
            endpoints,
            scratch: dir.path().join("apiserver"),
        };
        let mut cluster = Cluster {
            dir,
            started,
            issuer,
            rendered,
            kubelet,
            api,
            translations,
            safe_pod,
            webhook_pod,
            sentinel_pod,
            safe_ip,
            webhook_ip,
            safe_ca,
            safe: None,
            webhook: None,
            sentinel: None,
            past_safe_logs: Vec::new(),
        };
        cluster.start_safe()?;
        cluster.start_webhook()?;
        let sentinel_sb = cluster
            .kubelet
            .sandbox(&cluster.sentinel_pod, sentinel_ip)?;
        let container = cluster.kubelet.start(&sentinel_sb, "sentinel")?;
        cluster.sentinel = Some(Running {
            sandbox: sentinel_sb,
            container,
        });
        Ok(cluster)
    }

    fn start_component(
        &self,
        pod: &Value,
        ip: Ipv4Addr,
        container: &str,
    ) -> Result<Running, E2eError> {
        let sandbox = self.kubelet.sandbox(pod, ip)?;
        let container = self.kubelet.start(&sandbox, container)?;
        Ok(Running { sandbox, container })
    }

    /// Starts the Safe pod without waiting for it to be ready.
    pub fn start_safe_unready(&mut self) -> Result<(), E2eError> {
        let name = first_container(&self.safe_pod);
        self.safe = Some(self.start_component(&self.safe_pod, self.safe_ip, &name)?);
        Ok(())
    }

    /// Starts the Safe pod and waits for its readiness probe.
    pub fn start_safe(&mut self) -> Result<(), E2eError> {
        self.start_safe_unready()?;
        self.wait_ready("aegis-safe", &self.safe_ca.clone(), |c| c.safe.as_mut())
    }

    /// Starts the webhook pod and waits for its readiness probe.
    pub fn start_webhook(&mut self) -> Result<(), E2eError> {
        let name = first_container(&self.webhook_pod);
        self.webhook = Some(self.start_component(&self.webhook_pod, self.webhook_ip, &name)?);
        let ca = self
            .api
            .webhooks
            .first()
            .map(|w| w.ca_bundle.clone())
            .unwrap_or_default();
        self.wait_ready("aegis-webhook", &ca, |c| c.webhook.as_mut())
    }

    /// SIGKILLs the Safe (its data volume stays).
    pub fn kill_safe(&mut self) {
        if let Some(mut running) = self.safe.take() {
            running.container.kill();
            self.past_safe_logs.extend(running.container.stderr());
        }
    }

    /// Stops every webhook replica (SIGKILL).
    pub fn kill_webhook(&mut self) {
        if let Some(mut running) = self.webhook.take() {
            running.container.kill();
        }
    }

    /// The readiness probe (`httpGet /readyz`, HTTPS) of a chart pod through its Service
    /// name, verifying the certificate (stricter than the kubelet, which does not).
    fn wait_ready(
        &mut self,
        service: &str,
        ca: &[u8],
        running: impl Fn(&mut Cluster) -> Option<&mut Running>,
    ) -> Result<(), E2eError> {
        let host = format!("{service}.{}.svc", helm::NAMESPACE);
        let addr = self
            .api
            .endpoints
            .get(&host)
            .copied()
            .ok_or_else(|| setup(format!("no endpoint for {host}")))?;
        let client = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(apiserver::tls_client(ca).map_err(setup)?)
            .resolve(&host, addr)
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            match client
                .get(format!("https://{host}:{}/readyz", addr.port()))
                .send()
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = r.status().to_string(),
                Err(e) => last = e.to_string(),
            }
            if let Some(r) = running(self) {
                if !r.container.running() {
                    let logs = String::from_utf8_lossy(&r.container.stderr()).into_owned();
                    return Err(setup(format!("{service} exited before ready:\n{logs}")));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs = running(self)
            .map(|r| String::from_utf8_lossy(&r.container.stderr()).into_owned())
            .unwrap_or_default();
        Err(setup(format!(
            "{service} not ready in 30 s ({last}):\n{logs}"
        )))
    }

    /// `kubectl exec -i deploy/aegis-sentinel -- /aegis secret put WORKLOAD KEY` with the
    /// value on stdin: the real CLI, as the Sentinel, with the Sentinel's env and mounts.
    pub fn put_secret(&self, workload: &str, key: &str, value: &str) -> Result<Exited, E2eError> {
        let sentinel = self
            .sentinel
            .as_ref()
            .ok_or_else(|| setup("the Sentinel is not running"))?;
        let cli = format!("/{}", bins::CLI);
        let exited = self
            .kubelet
            .exec(
                &sentinel.sandbox,
                "sentinel",
                &[&cli, "secret", "put", workload, key],
                value.as_bytes(),
                Duration::from_secs(20),
            )?
            .ok_or_else(|| setup("`aegis secret put` did not finish in 20 s"))?;
        if exited.code != Some(0) {
            return Err(setup(format!(
                "`aegis secret put {workload} {key}` failed: {exited}"
            )));
        }
        Ok(exited)
    }

    /// What the Sentinel container would run for `argv` (for other CLI calls).
    pub fn sentinel_exec(&self, argv: &[&str], stdin: &[u8]) -> Result<Option<Exited>, E2eError> {
        let sentinel = self
            .sentinel
            .as_ref()
            .ok_or_else(|| setup("the Sentinel is not running"))?;
        Ok(self.kubelet.exec(
            &sentinel.sandbox,
            "sentinel",
            argv,
            stdin,
            Duration::from_secs(20),
        )?)
    }

    /// The Deployment controller, ReplicaSet controller and API server: the pod that
    /// `kubectl apply` of `deployment` in `namespace` leads to, admitted and stored.
    pub fn create_deployment(
        &self,
        deployment: &Value,
        namespace: &str,
    ) -> Result<(Value, AdmissionTrace), E2eError> {
        let pod = apiserver::pod_from_deployment(deployment, namespace)?;
        Ok(self.api.create_pod(pod)?)
    }

    /// The kubelet: volumes, init containers (each within `init_timeout`), then every
    /// regular container started.
    pub fn run_pod(&self, pod: &Value, init_timeout: Duration) -> Result<PodRun, E2eError> {
        let sandbox = self.kubelet.sandbox(pod, random_pod_ip())?;
        let init = self.kubelet.run_init_containers(&sandbox, init_timeout)?;
        let mut containers = Vec::new();
        let empty = Vec::new();
        for c in pod["spec"]["containers"].as_array().unwrap_or(&empty) {
            containers.push(
                self.kubelet
                    .start(&sandbox, c["name"].as_str().unwrap_or_default())?,
            );
        }
        Ok(PodRun {
            sandbox,
            init,
            containers,
        })
    }

    /// Everything the Safe has logged (all its runs), as text.
    pub fn safe_logs(&self) -> String {
        let mut logs = self.past_safe_logs.clone();
        if let Some(r) = &self.safe {
            logs.extend(r.container.stderr());
            logs.extend(r.container.stdout());
        }
        String::from_utf8_lossy(&logs).into_owned()
    }

    /// The Safe's audit events (`target: aegis::audit`), fields flattened into one object.
    pub fn audit_events(&self) -> Vec<Value> {
        self.safe_logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "aegis::audit")
            .map(|mut v| {
                if let Some(fields) = v.get("fields").and_then(Value::as_object).cloned() {
                    for (k, f) in fields {
                        v[k] = f;
                    }
                }
                v
            })
            .collect()
    }

    /// The Safe pod as run (after the translations).
    pub fn safe_pod(&self) -> &Value {
        &self.safe_pod
    }

    /// The webhook pod as run (after the translations).
    pub fn webhook_pod(&self) -> &Value {
        &self.webhook_pod
    }

    /// Directory of this cluster's files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The shim image holds a stripped binary (release profile `strip = true`); the debug
/// build is several times larger than the `aegis-bin` volume's `sizeLimit`, which the
/// kubelet enforces as the tmpfs size. So the "image" gets a stripped copy of the build.
fn stripped_copy(binary: &Path, dir: &Path) -> Result<PathBuf, E2eError> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).map_err(|e| E2eError::Io("create images dir".into(), e))?;
    let copy = images.join(binary.file_name().unwrap_or_default());
    std::fs::copy(binary, &copy)
        .map_err(|e| E2eError::Io(format!("copy {}", binary.display()), e))?;
    let strip = crate::tools::find_tool(
        "strip",
        "apt-get install binutils",
        crate::tools::process_path().as_deref(),
    )?;
    crate::tools::run(std::process::Command::new(strip).arg(&copy))?;
    Ok(copy)
}

fn first_image(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn first_container(pod: &Value) -> String {
    pod["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn container_args(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"][0]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn secret_of_volume(pod: &Value, volume: &str) -> String {
    pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == volume))
        .and_then(|v| v["secret"]["secretName"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Applies the documented translations to the first container's arguments.
fn translate_args(
    pod: &mut Value,
    ip: Ipv4Addr,
    root_keys: &Path,
    table: &mut Vec<(String, String)>,
) -> Result<(), E2eError> {
    let Some(args) = pod["spec"]["containers"][0]["args"].as_array_mut() else {
        return Ok(());
    };
    for arg in args {
        let Some(original) = arg.as_str().map(str::to_string) else {
            continue;
        };
        let mut new = original.replace("0.0.0.0:", &format!("{ip}:"));
        if let Some(name) = original.strip_prefix("--root-key-secret=") {
            let file = root_keys.join(name);
            if !file.exists() {
                std::fs::write(&file, random_bytes(32))
                    .map_err(|e| E2eError::Io("write root key".into(), e))?;
            }
            new = format!("--root-key-file={}", file.display());
        }
        if new != original {
            table.push((original, new.clone()));
            *arg = json!(new);
        }
    }
    Ok(())
}

/// What the probe program (`/bin/sh -c PROBE_SCRIPT ...`) reported about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Its PID.
    pub pid: u32,
    /// Its full argv (`/proc/<pid>/cmdline`).
    pub argv: Vec<String>,
    /// Its environment.
    pub env: BTreeMap<String, String>,
}

/// A shell script that prints its PID, its argv and its environment, NUL-separated, as
/// written in a pod manifest (`$$` escaped as `$$$$` for the kubelet's `$(VAR)` expansion).
pub const PROBE_SCRIPT_IN_MANIFEST: &str =
    "printf '%s\\0' \"$$$$\"; cat /proc/$$$$/cmdline; printf 'END-OF-ARGV\\0'; env -0";
/// The same script as the shell receives it (in an image config, where nothing is expanded).
pub const PROBE_SCRIPT: &str =
    "printf '%s\\0' \"$$\"; cat /proc/$$/cmdline; printf 'END-OF-ARGV\\0'; env -0";

/// Parses the probe's output.
pub fn parse_probe(stdout: &[u8]) -> Option<Probe> {
    let text = String::from_utf8_lossy(stdout);
    let mut fields = text.split('\0');
    let pid = fields.next()?.parse().ok()?;
    let mut argv = Vec::new();
    for f in fields.by_ref() {
        if f == "END-OF-ARGV" {
            break;
        }
        argv.push(f.to_string());
    }
    let env = fields
        .filter(|f| !f.is_empty())
        .filter_map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Some(Probe { pid, argv, env })
}

/// Files modified since `since` under `roots` whose content contains `needle`. Never
/// follows symlinks or crosses into `/proc`/`/sys`; skips files over 256 MiB.
pub fn files_containing(roots: &[PathBuf], since: SystemTime, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(path) = stack.pop() {
        if path.starts_with("/proc") || path.starts_with("/sys") || path.starts_with("/dev") {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if path.ends_with("target") || path.ends_with(".git") {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file()
            && meta.len() <= 256 << 20
            && meta.modified().is_ok_and(|m| m >= since)
            && std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_scan_finds_a_planted_secret_and_only_in_recent_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let needle = format!("planted-{}", random_hex(8));
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).expect("mkdir");
        std::fs::write(nested.join("leak.log"), format!("x{needle}y")).expect("write");
        std::fs::write(dir.path().join("clean"), "nothing").expect("write");
        let roots = [dir.path().to_path_buf()];
        let since = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(
            files_containing(&roots, since, needle.as_bytes()),
            [nested.join("leak.log")]
        );
        let future = SystemTime::now() + Duration::from_secs(60);
        assert!(files_containing(&roots, future, needle.as_bytes()).is_empty());
    }

    #[test]
    fn parses_the_probe_output() {
        let out = b"42\0/bin/sh\0-c\0script\0\0two words\0END-OF-ARGV\0A=1\0B=x=y\0";
        let probe = parse_probe(out).expect("parse");
        assert_eq!(probe.pid, 42);
        assert_eq!(probe.argv, ["/bin/sh", "-c", "script", "", "two words"]);
        assert_eq!(probe.env.get("B").map(String::as_str), Some("x=y"));
    }
}
