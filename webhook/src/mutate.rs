//! The admission decision: which pods Aegis injects, and the JSON Patch that injects them.
//!
//! Everything here is pure (no I/O, no clock): [`plan`] reads the annotations and says
//! which containers will be wrapped and which need their image's entrypoint; [`mutate`]
//! turns a pod plus the resolved entrypoints into a patch or a [`Deny`].
//!
//! Invariants of every patch produced here:
//! - pointers are built from tokens (`jsonptr`), so `/` and `~` in keys are escaped;
//! - a parent (`/spec/volumes`, `/spec/initContainers`, a container's `env`, ...) is added
//!   as a whole array when absent, and appended to when present, never both;
//! - the pod gets `aegis.shieldworks.io/status: injected`, and a pod that carries it gets no
//!   patch, so admission is idempotent;
//! - a selected container whose original entrypoint is unknown denies the whole pod: a pod
//!   that would start without its secrets is never admitted.

use std::collections::HashMap;

use aegis_core::names::{
    ANNOTATION_CONTAINERS, ANNOTATION_INJECT, ANNOTATION_STATUS, BIN_DIR, ENV_SAFE_CA,
    ENV_SAFE_CA_FILE, ENV_SAFE_URL, ENV_TOKEN_FILE, INIT_CONTAINER_NAME, SHIM_PATH,
    STATUS_INJECTED, TOKEN_DIR, TOKEN_FILE_NAME, TOKEN_PATH, VOLUME_BIN, VOLUME_TOKEN,
};
use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde_json::{json, Value};

use crate::entrypoint::ImageEntrypoint;

/// Where the shim binary lives inside the shim image (`FROM scratch`, `ENTRYPOINT
/// ["/aegis-init-shim"]`). The injected init container runs it to copy itself into
/// [`BIN_DIR`].
pub const SHIM_IMAGE_BINARY: &str = "/aegis-init-shim";

/// Node selector label that pins a pod to one CPU architecture.
pub const ARCH_NODE_SELECTOR: &str = "kubernetes.io/arch";

/// Architecture assumed for image indexes when the pod does not pin one.
pub const DEFAULT_ARCH: &str = "amd64";

/// Environment variables the webhook sets from its own configuration; a pod may not set them.
const RESERVED_ENV: [&str; 4] = [ENV_SAFE_URL, ENV_SAFE_CA, ENV_SAFE_CA_FILE, ENV_TOKEN_FILE];

/// What the operator configured: the only source of images, addresses and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    /// Image of the init-shim (`FROM scratch`, binary at [`SHIM_IMAGE_BINARY`]).
    pub shim_image: String,
    /// Base URL of the Safe, given to the shim as `AEGIS_SAFE_URL`.
    pub safe_url: String,
    /// PEM of the CA that signs the Safe's certificate, given inline as `AEGIS_SAFE_CA`.
    pub safe_ca_pem: String,
    /// Audience of the projected ServiceAccount token.
    pub token_audience: String,
    /// Lifetime of the projected token; the kubelet refreshes it before it expires.
    pub token_expiration_seconds: i64,
    /// `sizeLimit` of the memory-backed `aegis-bin` volume (a Kubernetes quantity).
    pub bin_volume_size_limit: String,
    /// `imagePullPolicy` of the injected init container.
    pub shim_image_pull_policy: String,
}

impl InjectConfig {
    /// A configuration with the documented defaults for everything but the three
    /// operator-specific values.
    pub fn new(
        shim_image: impl Into<String>,
        safe_url: impl Into<String>,
        safe_ca_pem: impl Into<String>,
    ) -> Self {
        Self {
            shim_image: shim_image.into(),
            safe_url: safe_url.into(),
            safe_ca_pem: safe_ca_pem.into(),
            token_audience: aegis_core::names::DEFAULT_AUDIENCE.to_owned(),
            token_expiration_seconds: aegis_core::names::DEFAULT_TOKEN_EXPIRATION_SECONDS,
            bin_volume_size_limit: "8Mi".to_owned(),
            shim_image_pull_policy: "IfNotPresent".to_owned(),
        }
    }
}

/// Why a pod is refused. The message is shown to the user by `kubectl` (through the
/// AdmissionResponse) and by `aegis inject`, so each one says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Deny {
    /// The opt-in annotation has a value other than `"true"` or `"false"`.
    #[error("annotation {ANNOTATION_INJECT} must be \"true\" or \"false\", got {value:?}")]
    BadInjectValue {
        /// The value found.
        value: String,
    },
    /// The status annotation is present with a value the webhook never writes.
    #[error(
        "annotation {ANNOTATION_STATUS} is written by Aegis and must be absent or \
         \"{STATUS_INJECTED}\", got {value:?}; remove it from the pod template"
    )]
    BadStatusValue {
        /// The value found.
        value: String,
    },
    /// The container list annotation is empty or has an empty entry.
    #[error(
        "annotation {ANNOTATION_CONTAINERS} must be a comma-separated list of container \
         names, got {value:?}"
    )]
    BadContainerList {
        /// The value found.
        value: String,
    },
    /// The container list names a container that is not a regular container of the pod.
    #[error(
        "annotation {ANNOTATION_CONTAINERS} names `{name}`, which is not a container of this \
         pod (containers: {known}); fix the name or remove it"
    )]
    UnknownContainer {
        /// The unknown name.
        name: String,
        /// The pod's regular containers, comma-separated.
        known: String,
    },
    /// The pod has no spec or no regular containers.
    #[error("the pod has no containers to inject")]
    NoContainers,
    /// Something in the pod already uses a name or path Aegis needs.
    #[error("{what} is reserved for Aegis; rename or remove it")]
    Conflict {
        /// What collides, e.g. "volume `aegis-bin`".
        what: String,
    },
    /// A selected container sets a variable the webhook owns.
    #[error(
        "container `{container}` sets {var}, which Aegis sets from the webhook's \
         configuration; remove it from the container's env"
    )]
    ReservedEnv {
        /// The container.
        container: String,
        /// The variable.
        var: String,
    },
    /// The original entrypoint of a selected container could not be determined.
    #[error(
        "cannot determine the entrypoint of container `{container}` (image {image}): \
         {reason}; set `command` in container `{container}` explicitly"
    )]
    EntrypointUnknown {
        /// The container.
        container: String,
        /// Its image reference.
        image: String,
        /// Why, e.g. "registry did not answer within 3s".
        reason: String,
    },
    /// The pod could not be converted to or from JSON (only `inject_pod` can hit this).
    #[error("the pod cannot be processed: {0}")]
    InvalidPod(String),
}

/// One container whose entrypoint must come from its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLookup {
    /// Container name.
    pub container: String,
    /// Image reference as written in the pod.
    pub image: String,
    /// CPU architecture to pick from a multi-arch index.
    pub arch: String,
}

/// What [`plan`] decided for a pod that will be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indexes into `spec.containers` of the containers to wrap, in pod order.
    pub selected: Vec<usize>,
    /// Selected containers without `command`, whose image must be consulted.
    pub lookups: Vec<ImageLookup>,
}

/// Entrypoints found in images, by container name; a failure keeps its reason so
/// [`mutate`] can deny with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedEntrypoints {
    by_container: HashMap<String, Result<ImageEntrypoint, String>>,
}

impl ResolvedEntrypoints {
    /// An empty set: enough for pods whose selected containers all have `command`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the outcome for one container.
    pub fn insert(
        &mut self,
        container: impl Into<String>,
        outcome: Result<ImageEntrypoint, String>,
    ) {
        self.by_container.insert(container.into(), outcome);
    }

    /// The outcome for one container, if it was looked up.
    pub fn get(&self, container: &str) -> Option<&Result<ImageEntrypoint, String>> {
        self.by_container.get(container)
    }
}

/// Decides whether the pod is injected and which containers are wrapped.
///
/// `Ok(None)`: not opted in, or already injected. Annotation values are validated strictly.
pub fn plan(pod: &Pod) -> Result<Option<Plan>, Deny> {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);

    match annotation(ANNOTATION_INJECT) {
        None | Some("false") => return Ok(None),
        Some("true") => {}
        Some(other) => {
            return Err(Deny::BadInjectValue {
                value: other.to_owned(),
            })
        }
    }
    match annotation(ANNOTATION_STATUS) {
        None => {}
        Some(STATUS_INJECTED) => return Ok(None),
        Some(other) => {
            return Err(Deny::BadStatusValue {
                value: other.to_owned(),
            })
        }
    }

    let spec = pod.spec.as_ref().ok_or(Deny::NoContainers)?;
    if spec.containers.is_empty() {
        return Err(Deny::NoContainers);
    }
    let selected = select_containers(spec, annotation(ANNOTATION_CONTAINERS))?;
    let arch = spec
        .node_selector
        .as_ref()
        .and_then(|s| s.get(ARCH_NODE_SELECTOR))
        .map_or(DEFAULT_ARCH, String::as_str);
    let lookups = selected
        .iter()
        .map(|&i| &spec.containers[i])
        .filter(|c| !has_items(&c.command))
        .map(|c| ImageLookup {
            container: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            arch: arch.to_owned(),
        })
        .collect();
    Ok(Some(Plan { selected, lookups }))
}

/// Computes the patch that injects `pod`, or `Ok(None)` when the pod is not selected or
/// already injected.
pub fn mutate(
    pod: &Pod,
    config: &InjectConfig,
    entrypoints: &ResolvedEntrypoints,
) -> Result<Option<Patch>, Deny> {
    let Some(plan) = plan(pod)? else {
        return Ok(None);
    };
    // `plan` returned a plan, so the spec exists.
    let spec = pod.spec.as_ref().ok_or(Deny::NoContainers)?;
    check_conflicts(spec, &plan.selected)?;

    let mut ops = Vec::new();
    // The pod is annotated (that is how it was selected), so the annotations map exists.
    ops.push(add(
        pointer(["metadata", "annotations", ANNOTATION_STATUS]),
        json!(STATUS_INJECTED),
    ));
    add_items(
        &mut ops,
        pointer(["spec", "volumes"]),
        spec.volumes.is_some(),
        vec![bin_volume(config), token_volume(config)],
    );
    let init = init_container(config);
    match spec.init_containers {
        Some(_) => ops.push(add(
            pointer_index(["spec", "initContainers"], 0, None),
            init,
        )),
        None => ops.push(add(pointer(["spec", "initContainers"]), json!([init]))),
    }

    for &index in &plan.selected {
        let container = &spec.containers[index];
        let argv = original_argv(container, entrypoints)?;
        let field = |name: &str| pointer_index(["spec", "containers"], index, Some(name));
        let mut args = Vec::with_capacity(argv.len() + 1);
        args.push("--".to_owned());
        args.extend(argv);
        ops.push(add(field("command"), json!([SHIM_PATH])));
        ops.push(add(field("args"), json!(args)));
        add_items(
            &mut ops,
            field("env"),
            container.env.is_some(),
            vec![
                json!({"name": ENV_SAFE_URL, "value": config.safe_url}),
                json!({"name": ENV_SAFE_CA, "value": config.safe_ca_pem}),
                json!({"name": ENV_TOKEN_FILE, "value": TOKEN_PATH}),
            ],
        );
        add_items(
            &mut ops,
            field("volumeMounts"),
            container.volume_mounts.is_some(),
            vec![
                json!({"name": VOLUME_BIN, "mountPath": BIN_DIR, "readOnly": true}),
                json!({"name": VOLUME_TOKEN, "mountPath": TOKEN_DIR, "readOnly": true}),
            ],
        );
    }
    Ok(Some(Patch(ops)))
}

/// The containers to wrap: every regular container, or those the annotation names.
fn select_containers(spec: &PodSpec, list: Option<&str>) -> Result<Vec<usize>, Deny> {
    let Some(list) = list else {
        return Ok((0..spec.containers.len()).collect());
    };
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(Deny::BadContainerList {
            value: list.to_owned(),
        });
    }
    let mut selected = Vec::with_capacity(names.len());
    for name in names {
        let index = spec
            .containers
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| Deny::UnknownContainer {
                name: name.to_owned(),
                known: spec
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        selected.push(index);
    }
    // Pod order, each once, so a repeated name does not wrap a container twice.
    selected.sort_unstable();
    selected.dedup();
    Ok(selected)
}

/// Refuses pods that already use a name or path the injection needs.
fn check_conflicts(spec: &PodSpec, selected: &[usize]) -> Result<(), Deny> {
    let conflict = |what: String| Err(Deny::Conflict { what });
    for volume in spec.volumes.iter().flatten() {
        if volume.name == VOLUME_BIN || volume.name == VOLUME_TOKEN {
            return conflict(format!("volume name `{}`", volume.name));
        }
    }
    let all_containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in all_containers {
        if container.name == INIT_CONTAINER_NAME {
            return conflict(format!("container name `{INIT_CONTAINER_NAME}`"));
        }
    }
    for &index in selected {
        let container = &spec.containers[index];
        for mount in container.volume_mounts.iter().flatten() {
            let path = mount.mount_path.trim_end_matches('/');
            if path == BIN_DIR || path == TOKEN_DIR {
                return conflict(format!(
                    "mount path {path} in container `{}`",
                    container.name
                ));
            }
        }
        for var in container.env.iter().flatten() {
            if RESERVED_ENV.contains(&var.name.as_str()) {
                return Err(Deny::ReservedEnv {
                    container: container.name.clone(),
                    var: var.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The argv the container would have run without Aegis (Docker semantics): its own
/// `command` + `args`; else the image's ENTRYPOINT + (`args` if given, else CMD).
fn original_argv(
    container: &Container,
    entrypoints: &ResolvedEntrypoints,
) -> Result<Vec<String>, Deny> {
    let args = container.args.as_deref().unwrap_or_default();
    if let Some(command) = container.command.as_deref().filter(|c| !c.is_empty()) {
        // The kubelet expands `$(VAR)` in these; it still will, in `args`, as before.
        return Ok(command.iter().chain(args).cloned().collect());
    }
    let unknown = |reason: String| Deny::EntrypointUnknown {
        container: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        reason,
    };
    let image = match entrypoints.get(&container.name) {
        Some(Ok(image)) => image,
        Some(Err(reason)) => return Err(unknown(reason.clone())),
        None => {
            return Err(unknown(
                "the image's entrypoint was not looked up".to_owned(),
            ))
        }
    };
    // Image strings were never subject to `$(VAR)` expansion; now that they move into
    // `args` they would be, so `$` is escaped as `$$` to keep them literal.
    let mut argv: Vec<String> = image
        .entrypoint
        .iter()
        .map(|s| escape_expansion(s))
        .collect();
    if args.is_empty() {
        argv.extend(image.cmd.iter().map(|s| escape_expansion(s)));
    } else {
        argv.extend(args.iter().cloned());
    }
    if argv.is_empty() {
        return Err(unknown(
            "the image defines neither ENTRYPOINT nor CMD".to_owned(),
        ));
    }
    Ok(argv)
}

/// Escapes a literal string for a container's `command`/`args`, where the kubelet reduces
/// `$$` to `$` and expands `$(VAR)`.
fn escape_expansion(s: &str) -> String {
    s.replace('$', "$$")
}

fn has_items(list: &Option<Vec<String>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

/// `emptyDir` in memory: the shim never lands on a node's disk.
fn bin_volume(config: &InjectConfig) -> Value {
    json!({
        "name": VOLUME_BIN,
        "emptyDir": {"medium": "Memory", "sizeLimit": config.bin_volume_size_limit},
    })
}

/// The bound token the shim presents to the Safe.
fn token_volume(config: &InjectConfig) -> Value {
    json!({
        "name": VOLUME_TOKEN,
        "projected": {
            // Read-only for every user: wrapped containers run as arbitrary UIDs, and the
            // API server's own `kube-api-access` volume is no stricter (0644).
            "defaultMode": 0o444,
            "sources": [{
                "serviceAccountToken": {
                    "audience": config.token_audience,
                    "expirationSeconds": config.token_expiration_seconds,
                    "path": TOKEN_FILE_NAME,
                },
            }],
        },
    })
}

/// The first init container: the shim copies itself into the `aegis-bin` volume.
fn init_container(config: &InjectConfig) -> Value {
    json!({
        "name": INIT_CONTAINER_NAME,
        "image": config.shim_image,
        "imagePullPolicy": config.shim_image_pull_policy,
        "command": [SHIM_IMAGE_BINARY, "install", BIN_DIR],
        "volumeMounts": [{"name": VOLUME_BIN, "mountPath": BIN_DIR}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "32Mi"},
        },
        // `restricted` Pod Security Standard; the numeric user works with `FROM scratch`.
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// Adds `items` to the array at `path`: appended one by one when the array exists,
/// created whole when it does not (adding into a missing parent fails).
fn add_items(ops: &mut Vec<PatchOperation>, path: PointerBuf, exists: bool, items: Vec<Value>) {
    if exists {
        for item in items {
            let mut end = path.clone();
            end.push_back(Token::new("-"));
            ops.push(add(end, item));
        }
    } else {
        ops.push(add(path, Value::Array(items)));
    }
}

fn pointer<'a>(tokens: impl IntoIterator<Item = &'a str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens.into_iter().map(Token::new))
}

fn pointer_index<'a>(
    prefix: impl IntoIterator<Item = &'a str>,
    index: usize,
    field: Option<&str>,
) -> PointerBuf {
    let mut p = pointer(prefix);
    p.push_back(Token::from(index));
    if let Some(field) = field {
        p.push_back(Token::new(field));
    }
    p
}

#[cfg(test)]
mod tests;
