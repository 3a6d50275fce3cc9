//! The node side of Kubernetes, reproduced for one machine without a cluster: what the
//! kubelet and the container runtime do to start a pod. It is a faithful reproduction of
//! documented Kubernetes behaviour, not a mock of Aegis: nothing here knows about Aegis
//! beyond the image table the test hands it.
//!
//! What it does, with the documentation it follows:
//! - Volumes (<https://kubernetes.io/docs/concepts/storage/volumes/>): `emptyDir` is a
//!   directory of the pod, and with `medium: Memory` a tmpfs mounted in the host mount
//!   namespace (as the kubelet does under `/var/lib/kubelet/pods/<uid>/volumes`), sized by
//!   `sizeLimit`. `secret` and `projected` volumes are tmpfs too (the kubelet never puts
//!   their content on the node's disk). `configMap` volumes are plain directories.
//!   `persistentVolumeClaim` is a directory that outlives the pod (given by the test).
//! - Projected ServiceAccount tokens
//!   (<https://kubernetes.io/docs/concepts/storage/projected-volumes/#serviceaccounttoken>):
//!   signed by the cluster's issuer (here the dev issuer the Safe trusts) for the pod's
//!   namespace and ServiceAccount, bound to the pod's name and uid, with the volume's
//!   `audience` (default: the API server's audience) and `expirationSeconds` (default 1 h).
//! - Containers run in their own mount namespace (`unshare(CLONE_NEWNS)`) in which every
//!   `volumeMount` is bind-mounted at its exact `mountPath` (read-only when asked), so a
//!   process sees `/aegis/bin` and `/var/run/secrets/aegis` as in a real pod. The cluster
//!   DNS is the `hosts` file the test supplies, mounted over `/etc/hosts` in that namespace.
//! - Init containers run one after the other, each to successful completion, before the
//!   regular containers start (<https://kubernetes.io/docs/concepts/workloads/pods/init-containers/>).
//! - The process's argv follows "Define a Command and Arguments for a Container"
//!   (<https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/>):
//!   `command` replaces the image ENTRYPOINT (and drops its CMD), `args` replaces CMD, and
//!   `$(VAR)` references are expanded from the container's environment (`$$` escapes `$`).
//! - The environment (<https://kubernetes.io/docs/tasks/inject-data-application/define-environment-variable-container/>):
//!   the image's `PATH`, `HOSTNAME` = pod name, the `KUBERNETES_SERVICE_*` variables of
//!   the `kubernetes` Service, then `env` in order, with `$(VAR)` expansion and `valueFrom`
//!   (`fieldRef`, `secretKeyRef`, `configMapKeyRef`). Nothing of the test's own environment.
//!
//! Where a single machine differs from a node (documented in docs/e2e.md): there is no
//! image pull or container root filesystem, so a container runs its argv on the host's
//! root filesystem; an [`Image`] maps the paths of the Aegis images (`/aegis-init-shim`,
//! `/aegis-safe`, ...) to the binaries built in this workspace. Mountpoints that do not
//! exist on the host are created there (empty directories, never written to; the runtime
//! creates them in the container's root filesystem). `securityContext` user and
//! capability settings are not applied (processes run as the test's user): they are checked
//! by schema validation only. The pod shares the host's network namespace; the test gives
//! each pod its own loopback address as "pod IP".
//!
//! Invariant: this needs root (mount namespaces and tmpfs); without it every entry point
//! returns [`KubeletError::NotRoot`], so a run never passes without the real mounts.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aegis_auth::{DevIssuer, PodRef};
use serde_json::Value;

/// A container's environment, in definition order.
pub type Env = Vec<(String, String)>;

/// Default `PATH` of a container whose image sets none (the runtime's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// ClusterIP of the `kubernetes` Service, as the kubelet advertises it to every container.
pub const KUBERNETES_SERVICE_HOST: &str = "10.96.0.1";

/// Why the "kubelet" could not create a pod's volumes or run one of its containers.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// Mount namespaces and tmpfs mounts need root; the suite refuses to fake them.
    #[error("the e2e kubelet needs root for mount namespaces and tmpfs volumes (CI runs as root)")]
    NotRoot,
    /// The pod spec uses something this reproduction does not implement.
    #[error("pod {pod}: unsupported by the e2e kubelet: {what}")]
    Unsupported {
        /// Pod name.
        pod: String,
        /// What is not implemented.
        what: String,
    },
    /// The pod spec is not what the API server would have stored.
    #[error("pod {pod}: invalid spec: {what}")]
    Invalid {
        /// Pod name.
        pod: String,
        /// What is wrong.
        what: String,
    },
    /// A Secret or ConfigMap the pod references does not exist (a real pod stays pending).
    #[error("pod {pod}: {kind} {name} not found")]
    MissingObject {
        /// Pod name.
        pod: String,
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// `namespace/name` (and key, when a key is missing).
        name: String,
    },
    /// Signing the projected token failed.
    #[error("pod {pod}: cannot issue the projected token")]
    Token {
        /// Pod name.
        pod: String,
        /// The issuer's error.
        #[source]
        source: aegis_auth::IssuerError,
    },
    /// A filesystem or mount operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An init container exited unsuccessfully or did not finish in time.
    #[error("pod {pod}: init container {container} failed: {outcome}")]
    InitFailed {
        /// Pod name.
        pod: String,
        /// Init container name.
        container: String,
        /// How it ended (with its stderr).
        outcome: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KubeletError {
    let what = what.into();
    move |source| KubeletError::Io { what, source }
}

/// Secrets and ConfigMaps pods may reference, keyed by `namespace/name`.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// `namespace/name` → key → bytes.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// `namespace/name` → key → bytes.
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// What running a container of one image means on this machine: the image config's
/// `Entrypoint`/`Cmd`/`PATH`, and files of the image's root filesystem mapped to host files.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// Image config `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// Image config `Cmd`.
    pub cmd: Vec<String>,
    /// Image `PATH` (default [`DEFAULT_PATH`]).
    pub path: Option<String>,
    /// In-image path → host file (e.g. `/aegis-init-shim` → `target/debug/aegis-init-shim`).
    pub files: BTreeMap<String, PathBuf>,
}

/// The node: its issuer, images, cluster objects, DNS and persistent volumes.
#[derive(Debug)]
pub struct Kubelet {
    /// Where pod directories live (`<root>/pods/<uid>`).
    pub root: PathBuf,
    /// The cluster's ServiceAccount token issuer.
    pub issuer: Arc<DevIssuer>,
    /// Audience of tokens whose projection names none (the API server's `--api-audiences`).
    pub api_audience: String,
    /// Images this node can run, by reference; others run their argv on the host.
    pub images: BTreeMap<String, Image>,
    /// Secrets and ConfigMaps.
    pub objects: Objects,
    /// The cluster DNS as a hosts file, mounted over `/etc/hosts` in every container.
    pub hosts_file: PathBuf,
    /// PersistentVolumeClaim name (`namespace/claim`) → host directory (created if missing).
    pub pvcs: BTreeMap<String, PathBuf>,
}

/// A pod whose volumes exist: the "sandbox". Dropping it unmounts its tmpfs volumes.
#[derive(Debug)]
pub struct Sandbox {
    /// The pod as stored by the API server.
    pub pod: Value,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The pod's IP (a loopback address on this machine).
    pub ip: Ipv4Addr,
    /// Host directory of each volume, by volume name.
    pub volumes: BTreeMap<String, PathBuf>,
    tmpfs: Vec<PathBuf>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for dir in self.tmpfs.iter().rev() {
            // Best effort on teardown: a failure leaves a mount under the test's temp dir.
            let _ = sys::unmount(dir);
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone)]
pub struct Exited {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when one killed it.
    pub signal: Option<i32>,
    /// Everything it wrote to stdout (kept in memory only: container logs never hit disk here).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}")?,
            (None, Some(s)) => write!(f, "killed by signal {s}")?,
            _ => write!(f, "unknown status")?,
        }
        write!(
            f,
            "; stderr: {}",
            String::from_utf8_lossy(&self.stderr).trim_end()
        )
    }
}

/// A running container process. Dropping it SIGKILLs the process (by its own PID).
#[derive(Debug)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// PID the "kubelet" started (the container's PID 1 in a real pod).
    pub pid: u32,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Container {
    /// What it has written to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until it exits; after `timeout` it is killed and `None` is returned.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Exited> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    for reader in self.readers.drain(..) {
                        // A reader thread only copies bytes; if it panicked the logs are short.
                        let _ = reader.join();
                    }
                    return Some(Exited {
                        code: status.code(),
                        signal: status.signal(),
                        stdout: self.stdout(),
                        stderr: self.stderr(),
                    });
                }
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    /// SIGKILL, as `kubectl delete pod --grace-period=0 --force` or a node crash would.
    pub fn kill(&mut self) {
        // The process may have exited already; then there is nothing to kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pod_field<'a>(pod: &'a Value, pointer: &str) -> Option<&'a str> {
    pod.pointer(pointer).and_then(Value::as_str)
}

impl Kubelet {
    /// Creates the pod's volumes (the sandbox). `ip` is the pod IP to advertise.
    pub fn sandbox(&self, pod: &Value, ip: Ipv4Addr) -> Result<Sandbox, KubeletError> {
        if !sys::is_root() {
            return Err(KubeletError::NotRoot);
        }
        let name = pod_field(pod, "/metadata/name")
            .unwrap_or_default()
            .to_string();
        let pod_name = name.clone();
        let invalid = |what: &str| KubeletError::Invalid {
            pod: pod_name.clone(),
            what: what.to_string(),
        };
        if name.is_empty() {
            return Err(invalid(
                "metadata.name is empty (the API server names pods)",
            ));
        }
        let namespace = pod_field(pod, "/metadata/namespace")
            .ok_or_else(|| invalid("metadata.namespace missing"))?
            .to_string();
        let uid = pod_field(pod, "/metadata/uid")
            .ok_or_else(|| invalid("metadata.uid missing"))?
            .to_string();
        let dir = self.root.join("pods").join(&uid);
        let mut sandbox = Sandbox {
            pod: pod.clone(),
            name,
            namespace,
            uid,
            ip,
            volumes: BTreeMap::new(),
            tmpfs: Vec::new(),
        };
        let empty = Vec::new();
        let volumes = pod["spec"]["volumes"].as_array().unwrap_or(&empty);
        for volume in volumes {
            let vname = volume["name"]
                .as_str()
                .ok_or_else(|| invalid("volume without name"))?;
            let path = dir.join("volumes").join(vname);
            std::fs::create_dir_all(&path).map_err(io_err(format!("create {}", path.display())))?;
            self.populate(&mut sandbox, volume, &path)?;
            sandbox.volumes.insert(vname.to_string(), path);
        }
        Ok(sandbox)
    }

    fn populate(&self, sb: &mut Sandbox, volume: &Value, path: &Path) -> Result<(), KubeletError> {
        let pod_name = sb.name.clone();
        let unsupported = |what: String| KubeletError::Unsupported {
            pod: pod_name.clone(),
            what,
        };
        if let Some(empty_dir) = volume.get("emptyDir") {
            if empty_dir["medium"] == "Memory" {
                let size = match empty_dir["sizeLimit"].as_str() {
                    Some(q) => Some(
                        parse_quantity(q).ok_or_else(|| unsupported(format!("sizeLimit {q}")))?,
                    ),
                    None => None,
                };
                mount_tmpfs(sb, path, size)?;
            }
            return Ok(());
        }
        if let Some(secret) = volume.get("secret") {
            mount_tmpfs(sb, path, None)?;
            let name = secret["secretName"].as_str().unwrap_or_default();
            let data = self.object(sb, "Secret", name)?;
            return write_items(sb, path, &data, secret, mode_of(secret));
        }
        if let Some(cm) = volume.get("configMap") {
            let name = cm["name"].as_str().unwrap_or_default();
            let data = self.object(sb, "ConfigMap", name)?;
            return write_items(sb, path, &data, cm, mode_of(cm));
        }
        if let Some(projected) = volume.get("projected") {
            mount_tmpfs(sb, path, None)?;
            let mode = mode_of(projected);
            let empty = Vec::new();
            for source in projected["sources"].as_array().unwrap_or(&empty) {
                if let Some(sat) = source.get("serviceAccountToken") {
                    let token = self.token(sb, sat)?;
                    let file = sat["path"].as_str().unwrap_or("token");
                    write_file(&path.join(file), token.as_bytes(), mode)?;
                } else if let Some(cm) = source.get("configMap") {
                    let data =
                        self.object(sb, "ConfigMap", cm["name"].as_str().unwrap_or_default())?;
                    write_items(sb, path, &data, cm, mode)?;
                } else if let Some(secret) = source.get("secret") {
                    let data =
                        self.object(sb, "Secret", secret["name"].as_str().unwrap_or_default())?;
                    write_items(sb, path, &data, secret, mode)?;
                } else if let Some(downward) = source.get("downwardAPI") {
                    for item in downward["items"].as_array().unwrap_or(&empty) {
                        let field = item["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
                        let value = field_ref(sb, field)?;
                        let file = item["path"].as_str().unwrap_or_default();
                        write_file(&path.join(file), value.as_bytes(), mode)?;
                    }
                } else {
                    return Err(unsupported(format!("projected source {source}")));
                }
            }
            return Ok(());
        }
        if let Some(pvc) = volume.get("persistentVolumeClaim") {
            let claim = format!(
                "{}/{}",
                sb.namespace,
                pvc["claimName"].as_str().unwrap_or_default()
            );
            let host = self.pvcs.get(&claim).ok_or_else(|| {
                unsupported(format!("persistentVolumeClaim {claim} has no volume"))
            })?;
            std::fs::create_dir_all(host).map_err(io_err(format!("create {}", host.display())))?;
            // The claim's directory is bound onto the volume path so it outlives the pod.
            sys::bind(host, path, false).map_err(io_err(format!("bind {}", host.display())))?;
            sb.tmpfs.push(path.to_path_buf());
            return Ok(());
        }
        Err(unsupported(format!("volume {volume}")))
    }

    fn object(
        &self,
        sb: &Sandbox,
        kind: &'static str,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, KubeletError> {
        let key = format!("{}/{name}", sb.namespace);
        let map = if kind == "Secret" {
            &self.objects.secrets
        } else {
            &self.objects.config_maps
        };
        map.get(&key).cloned().ok_or(KubeletError::MissingObject {
            pod: sb.name.clone(),
            kind,
            name: key,
        })
    }

    fn token(&self, sb: &Sandbox, projection: &Value) -> Result<String, KubeletError> {
        let audience = projection["audience"]
            .as_str()
            .unwrap_or(&self.api_audience);
        let seconds = projection["expirationSeconds"].as_u64().unwrap_or(3600);
        let sa = pod_field(&sb.pod, "/spec/serviceAccountName").unwrap_or("default");
        let pod = PodRef {
            name: sb.name.clone(),
            uid: Some(sb.uid.clone()),
        };
        self.issuer
            .issue_for_pod(
                &sb.namespace,
                sa,
                &pod,
                audience,
                Duration::from_secs(seconds),
                aegis_auth::unix_now(),
            )
            .map_err(|source| KubeletError::Token {
                pod: sb.name.clone(),
                source,
            })
    }

    /// Runs the init containers in order, each to exit 0 within `timeout`.
    pub fn run_init_containers(
        &self,
        sb: &Sandbox,
        timeout: Duration,
    ) -> Result<Vec<Exited>, KubeletError> {
        let mut done = Vec::new();
        let empty = Vec::new();
        for init in sb.pod["spec"]["initContainers"]
            .as_array()
            .unwrap_or(&empty)
        {
            let name = init["name"].as_str().unwrap_or_default().to_string();
            let mut container = self.start_spec(sb, init, None, false)?;
            let failed = |outcome: String| KubeletError::InitFailed {
                pod: sb.name.clone(),
                container: name.clone(),
                outcome,
            };
            match container.wait_timeout(timeout) {
                Some(exited) if exited.code == Some(0) => done.push(exited),
                Some(exited) => return Err(failed(exited.to_string())),
                None => return Err(failed(format!("still running after {timeout:?}"))),
            }
        }
        Ok(done)
    }

    /// Starts the regular container `name` of the sandbox's pod.
    pub fn start(&self, sb: &Sandbox, name: &str) -> Result<Container, KubeletError> {
        self.start_spec(sb, container_spec(sb, name)?, None, false)
    }

    /// `kubectl exec -i POD -c CONTAINER -- ARGV...`: runs `argv` with the container's
    /// environment and mounts, feeds it `stdin`, and waits up to `timeout` for it.
    pub fn exec(
        &self,
        sb: &Sandbox,
        container: &str,
        argv: &[&str],
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Option<Exited>, KubeletError> {
        let spec = container_spec(sb, container)?;
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let mut process = self.start_spec(sb, spec, Some(argv), true)?;
        if let Some(mut input) = process.child.stdin.take() {
            use std::io::Write as _;
            input
                .write_all(stdin)
                .map_err(io_err(format!("write stdin of exec in {container}")))?;
        }
        Ok(process.wait_timeout(timeout))
    }

    /// What [`Kubelet::start`] would execute: argv and environment of container `spec`.
    pub fn process_of(
        &self,
        sb: &Sandbox,
        spec: &Value,
    ) -> Result<(Vec<String>, Env), KubeletError> {
        let image_ref = spec["image"].as_str().unwrap_or_default();
        let image = self.images.get(image_ref).cloned().unwrap_or_default();
        let env = self.environment(sb, spec, &image)?;
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
        };
        let command = strings(&spec["command"]).filter(|c| !c.is_empty());
        let args = strings(&spec["args"]).filter(|a| !a.is_empty());
        let mut argv: Vec<String> = match (command, args) {
            (Some(command), args) => command
                .iter()
                .chain(args.iter().flatten())
                .map(|s| expand(s, &env))
                .collect(),
            (None, Some(args)) => image
                .entrypoint
                .iter()
                .cloned()
                .chain(args.iter().map(|s| expand(s, &env)))
                .collect(),
            (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        };
        let Some(first) = argv.first_mut() else {
            return Err(KubeletError::Invalid {
                pod: sb.name.clone(),
                what: format!(
                    "container {} has no command and image {image_ref} none",
                    spec["name"]
                ),
            });
        };
        if let Some(host) = image.files.get(first.as_str()) {
            *first = host.to_string_lossy().into_owned();
        }
        Ok((argv, env))
    }

    fn environment(
        &self,
        sb: &Sandbox,
        spec: &Value,
        image: &Image,
    ) -> Result<Vec<(String, String)>, KubeletError> {
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                image.path.clone().unwrap_or_else(|| DEFAULT_PATH.into()),
            ),
            ("HOSTNAME".into(), sb.name.clone()),
        ];
        // The master Service's variables are added to every container, whatever
        // enableServiceLinks says (that flag governs the namespace's other Services).
        for (k, v) in [
            (
                "KUBERNETES_SERVICE_HOST",
                KUBERNETES_SERVICE_HOST.to_string(),
            ),
            ("KUBERNETES_SERVICE_PORT", "443".into()),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443".into()),
            (
                "KUBERNETES_PORT",
                format!("tcp://{KUBERNETES_SERVICE_HOST}:443"),
            ),
        ] {
            env.push((k.into(), v));
        }
        if spec.get("envFrom").is_some() {
            return Err(KubeletError::Unsupported {
                pod: sb.name.clone(),
                what: "envFrom".into(),
            });
        }
        let empty = Vec::new();
        for var in spec["env"].as_array().unwrap_or(&empty) {
            let name = var["name"].as_str().unwrap_or_default().to_string();
            let value = if let Some(v) = var.get("value") {
                expand(v.as_str().unwrap_or_default(), &env)
            } else if let Some(from) = var.get("valueFrom") {
                self.value_from(sb, from)?
            } else {
                String::new()
            };
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        }
        Ok(env)
    }

    fn value_from(&self, sb: &Sandbox, from: &Value) -> Result<String, KubeletError> {
        if let Some(field) = from["fieldRef"]["fieldPath"].as_str() {
            return field_ref(sb, field);
        }
        for (key, kind) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
            if let Some(r) = from.get(key) {
                let data = self.object(sb, kind, r["name"].as_str().unwrap_or_default())?;
                let k = r["key"].as_str().unwrap_or_default();
                let bytes = data.get(k).ok_or_else(|| KubeletError::MissingObject {
                    pod: sb.name.clone(),
                    kind,
                    name: format!("{}/{} key {k}", sb.namespace, r["name"]),
                })?;
                return Ok(String::from_utf8_lossy(bytes).into_owned());
            }
        }
        Err(KubeletError::Unsupported {
            pod: sb.name.clone(),
            what: format!("valueFrom {from}"),
        })
    }

    fn start_spec(
        &self,
        sb: &Sandbox,
        spec: &Value,
        exec_argv: Option<Vec<String>>,
        with_stdin: bool,
    ) -> Result<Container, KubeletError> {
        let name = spec["name"].as_str().unwrap_or_default().to_string();
        let (mut argv, env) = self.process_of(sb, spec)?;
        if let Some(mut exec) = exec_argv {
            let image = self.images.get(spec["image"].as_str().unwrap_or_default());
            if let Some(host) = exec.first().and_then(|a| image?.files.get(a)) {
                exec[0] = host.to_string_lossy().into_owned();
            }
            argv = exec;
        }
        if argv.is_empty() {
            return Err(KubeletError::Invalid {
                pod: sb.name.clone(),
                what: format!("empty argv for container {name}"),
            });
        }
        let mut mounts = Vec::new();
        let empty = Vec::new();
        for m in spec["volumeMounts"].as_array().unwrap_or(&empty) {
            if m.get("subPath").is_some() || m.get("subPathExpr").is_some() {
                return Err(KubeletError::Unsupported {
                    pod: sb.name.clone(),
                    what: "volumeMounts.subPath".into(),
                });
            }
            let vol = m["name"].as_str().unwrap_or_default();
            let host = sb.volumes.get(vol).ok_or_else(|| KubeletError::Invalid {
                pod: sb.name.clone(),
                what: format!("container {name} mounts unknown volume {vol}"),
            })?;
            let target = PathBuf::from(m["mountPath"].as_str().unwrap_or_default());
            if !target.is_absolute() {
                return Err(KubeletError::Invalid {
                    pod: sb.name.clone(),
                    what: format!("mountPath {} is not absolute", target.display()),
                });
            }
            // The runtime creates missing mountpoints in the container's rootfs; here the
            // rootfs is the host's, so an empty directory is left behind.
            std::fs::create_dir_all(&target)
                .map_err(io_err(format!("create mountpoint {}", target.display())))?;
            mounts.push(sys::Mount::new(host, &target, m["readOnly"] == true)?);
        }
        mounts.push(sys::Mount::new(
            &self.hosts_file,
            Path::new("/etc/hosts"),
            true,
        )?);
        let workdir = match spec["workingDir"].as_str() {
            Some(w) => Some(CString::new(w).map_err(|_| KubeletError::Invalid {
                pod: sb.name.clone(),
                what: "workingDir contains NUL".into(),
            })?),
            None => None,
        };
        // An image's file runs from the host (e.g. target/debug/aegis). Open it now and
        // exec it through /proc/self/fd: a container volume over one of its parent
        // directories (the Sentinel's /tmp, say, when the repository lives under /tmp)
        // must not hide it, as it would not hide a file of a real image's root filesystem.
        let image = self.images.get(spec["image"].as_str().unwrap_or_default());
        let image_file = match image.filter(|i| i.files.values().any(|h| *h == Path::new(&argv[0])))
        {
            Some(_) => Some(
                std::fs::File::open(&argv[0])
                    .map_err(io_err(format!("open image file {}", argv[0])))?,
            ),
            None => None,
        };
        let mut cmd = match &image_file {
            Some(f) => {
                let mut c = Command::new(format!("/proc/self/fd/{}", f.as_raw_fd()));
                c.arg0(&argv[0]);
                c
            }
            None => Command::new(&argv[0]),
        };
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        sys::enter_namespace_on_exec(&mut cmd, mounts, workdir)?;
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("start container {name}: {}", argv[0])))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(copy_to(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(copy_to(err, stderr.clone()));
        }
        Ok(Container {
            name,
            pid: child.id(),
            child,
            stdout,
            stderr,
            readers,
        })
    }
}

/// The regular container `name` of the sandbox's pod.
fn container_spec<'a>(sb: &'a Sandbox, name: &str) -> Result<&'a Value, KubeletError> {
    sb.pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .ok_or_else(|| KubeletError::Invalid {
            pod: sb.name.clone(),
            what: format!("no container {name}"),
        })
}

fn copy_to(mut from: impl Read + Send + 'static, to: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut v) = to.lock() {
                v.extend_from_slice(&buf[..n]);
            }
        }
    })
}

fn mount_tmpfs(sb: &mut Sandbox, path: &Path, size: Option<u64>) -> Result<(), KubeletError> {
    sys::tmpfs(path, size).map_err(io_err(format!("mount tmpfs at {}", path.display())))?;
    sb.tmpfs.push(path.to_path_buf());
    Ok(())
}

/// `defaultMode` of a volume source (0644 when absent, as the API server defaults it).
fn mode_of(source: &Value) -> u32 {
    source["defaultMode"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0o644)
}

fn write_items(
    sb: &Sandbox,
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    source: &Value,
    mode: u32,
) -> Result<(), KubeletError> {
    match source["items"].as_array() {
        Some(items) => {
            for item in items {
                let key = item["key"].as_str().unwrap_or_default();
                let bytes = data.get(key).ok_or_else(|| KubeletError::MissingObject {
                    pod: sb.name.clone(),
                    kind: "key",
                    name: key.to_string(),
                })?;
                let m = item["mode"]
                    .as_u64()
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(mode);
                write_file(&dir.join(item["path"].as_str().unwrap_or(key)), bytes, m)?;
            }
        }
        None => {
            for (key, bytes) in data {
                write_file(&dir.join(key), bytes, mode)?;
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KubeletError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
    }
    std::fs::write(path, bytes).map_err(io_err(format!("write {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

/// The downward API fields the kubelet resolves.
fn field_ref(sb: &Sandbox, field: &str) -> Result<String, KubeletError> {
    Ok(match field {
        "metadata.name" => sb.name.clone(),
        "metadata.namespace" => sb.namespace.clone(),
        "metadata.uid" => sb.uid.clone(),
        "spec.serviceAccountName" => pod_field(&sb.pod, "/spec/serviceAccountName")
            .unwrap_or("default")
            .to_string(),
        "status.podIP" => sb.ip.to_string(),
        "spec.nodeName" | "status.hostIP" => "127.0.0.1".to_string(),
        other => {
            return Err(KubeletError::Unsupported {
                pod: sb.name.clone(),
                what: format!("fieldRef {other}"),
            })
        }
    })
}

/// Kubernetes `$(VAR)` expansion of `command`, `args` and `env` values: a defined
/// variable is replaced, an undefined reference is kept verbatim, `$$` becomes `$`.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A Kubernetes resource quantity in bytes (`8Mi`, `1G`, `512`).
pub fn parse_quantity(q: &str) -> Option<u64> {
    let units: [(&str, u64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
        ("", 1),
    ];
    units.iter().find_map(|(suffix, factor)| {
        let number = q.strip_suffix(suffix)?;
        number.parse::<u64>().ok()?.checked_mul(*factor)
    })
}

/// The system calls: tmpfs and bind mounts, and entering a private mount namespace in
/// the child between fork and exec.
#[allow(unsafe_code)] // mount(2), umount2(2), unshare(2), chdir(2), geteuid(2): no safe std API.
mod sys {
    use super::*;

    pub(super) fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    fn cpath(path: &Path) -> std::io::Result<CString> {
        CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
    }

    fn check(rc: libc::c_int) -> std::io::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Mounts a tmpfs at `path` in the current (host) mount namespace.
    pub(super) fn tmpfs(path: &Path, size: Option<u64>) -> std::io::Result<()> {
        let target = cpath(path)?;
        let opts = match size {
            Some(bytes) => format!("mode=0755,size={bytes}"),
            None => "mode=0755".to_string(),
        };
        let opts = CString::new(opts).map_err(|_| std::io::Error::other("NUL in options"))?;
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        check(unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        })
    }

    /// Bind-mounts `src` on `dst` in the current mount namespace.
    pub(super) fn bind(src: &Path, dst: &Path, read_only: bool) -> std::io::Result<()> {
        let (s, d) = (cpath(src)?, cpath(dst)?);
        bind_raw(&s, &d, read_only)
    }

    fn bind_raw(src: &CString, dst: &CString, read_only: bool) -> std::io::Result<()> {
        bind_ptr(src.as_ptr(), dst, read_only)
    }

    fn bind_ptr(src: *const libc::c_char, dst: &CString, read_only: bool) -> std::io::Result<()> {
        // SAFETY: `src` and `dst` are valid NUL-terminated strings that outlive the call;
        // null fstype/data are allowed for MS_BIND.
        check(unsafe {
            libc::mount(
                src,
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        })?;
        if read_only {
            // A bind mount is made read-only by a second, remounting call (mount(8) does the same).
            // SAFETY: as above.
            check(unsafe {
                libc::mount(
                    std::ptr::null(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                )
            })?;
        }
        Ok(())
    }

    /// Lazily unmounts `path` (teardown).
    pub(super) fn unmount(path: &Path) -> std::io::Result<()> {
        let p = cpath(path)?;
        // SAFETY: valid NUL-terminated string.
        check(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) })
    }

    /// One volume mount of a container, prepared before fork (no allocation after it).
    #[derive(Debug)]
    pub(super) struct Mount {
        src: CString,
        dst: CString,
        read_only: bool,
    }

    /// Most mounts one container may have (the child uses a fixed-size fd table).
    const MAX_MOUNTS: usize = 64;

    impl Mount {
        pub(super) fn new(src: &Path, dst: &Path, read_only: bool) -> Result<Self, KubeletError> {
            let err = |e| KubeletError::Io {
                what: format!("mount {} at {}", src.display(), dst.display()),
                source: e,
            };
            Ok(Self {
                src: cpath(src).map_err(err)?,
                dst: cpath(dst).map_err(err)?,
                read_only,
            })
        }
    }

    /// Writes `/proc/self/fd/<fd>` NUL-terminated into `buf` without allocating.
    fn fd_path(fd: libc::c_int, buf: &mut [u8; 32]) -> *const libc::c_char {
        const PREFIX: &[u8] = b"/proc/self/fd/";
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut digits = [0u8; 10];
        let mut n = fd.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[PREFIX.len() + i] = digits[len - 1 - i];
        }
        buf[PREFIX.len() + len] = 0;
        buf.as_ptr().cast()
    }

    /// Arranges for the child to enter a private mount namespace with `mounts` applied
    /// (and `workdir` as its directory) right before it executes.
    pub(super) fn enter_namespace_on_exec(
        cmd: &mut Command,
        mounts: Vec<Mount>,
        workdir: Option<CString>,
    ) -> Result<(), KubeletError> {
        if mounts.len() > MAX_MOUNTS {
            return Err(KubeletError::Io {
                what: format!("more than {MAX_MOUNTS} volume mounts"),
                source: std::io::Error::other("too many mounts"),
            });
        }
        let hook = move || -> std::io::Result<()> {
            // SAFETY: unshare only changes this (child) process's mount namespace.
            check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
            // Make every mount private so the binds below never propagate to the host.
            // SAFETY: valid static string; null fstype/data are allowed with MS_PRIVATE.
            check(unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            })?;
            // Open every source first, then mount through `/proc/self/fd/N`: a mount over
            // a parent of a later source (a volume at `/tmp`, say) must not hide it.
            let mut fds: [libc::c_int; MAX_MOUNTS] = [-1; MAX_MOUNTS];
            for (fd, m) in fds.iter_mut().zip(&mounts) {
                // SAFETY: valid NUL-terminated path; O_CLOEXEC closes it at exec.
                *fd = unsafe { libc::open(m.src.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
                if *fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (fd, m) in fds.iter().zip(&mounts) {
                let mut buf = [0u8; 32];
                let src = fd_path(*fd, &mut buf);
                bind_ptr(src, &m.dst, m.read_only)?;
            }
            if let Some(dir) = &workdir {
                // SAFETY: valid NUL-terminated string.
                check(unsafe { libc::chdir(dir.as_ptr()) })?;
            }
            Ok(())
        };
        // SAFETY: the hook runs between fork and exec; it only makes system calls
        // (unshare, mount, chdir) on data prepared before the fork, allocates nothing and
        // takes no locks, so it is async-signal-safe as pre_exec requires.
        unsafe {
            cmd.pre_exec(hook);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_the_kubelet() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
        assert_eq!(expand("a$(A", &env), "a$(A");
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity("8Mi"), Some(8 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("12"), Some(12));
        assert_eq!(parse_quantity("x"), None);
    }
}
