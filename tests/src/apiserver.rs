//! The control-plane side of Kubernetes, reproduced without a cluster: how a Pod comes to
//! exist from a Deployment and what the API server does with mutating admission webhooks
//! before it stores the Pod. A faithful reproduction of documented Kubernetes behaviour,
//! not a mock of Aegis: it reads the webhook configuration the Helm chart renders and
//! applies it as the API server would.
//!
//! - The Pod: the ReplicaSet controller stamps the Deployment's pod template (labels plus
//!   `pod-template-hash`, `generateName`, owner reference), then the API server's defaulting
//!   and ServiceAccount admission fill in what the captured requests in
//!   `shared/fixtures/admission/` show (`kube-api-access-*` volume and mounts, tolerations,
//!   `terminationMessagePath`, ...). <https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/>
//! - Which webhooks are called (<https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#matching-requests-rules>):
//!   `rules`, then `namespaceSelector` against the namespace's labels (which always include
//!   `kubernetes.io/metadata.name`), `objectSelector` against the pod's labels, then
//!   `matchConditions` (CEL). The CEL evaluator here implements exactly the expression forms
//!   the chart renders (`has(...)`, `'k' in map`, `map['k'] == 'v'`, joined by `&&`) with
//!   CEL's commutative `&&` error semantics; any other form is a loud harness error.
//! - The call (<https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#contacting-the-webhook>):
//!   an `AdmissionReview` v1 POSTed to `https://<service>.<namespace>.svc:<port><path>`,
//!   the server certificate verified against `caBundle` for that name, within
//!   `timeoutSeconds`. Errors and timeouts follow `failurePolicy`: `Fail` rejects the pod,
//!   `Ignore` admits it unchanged. `allowed: false` rejects it with the webhook's message.
//! - The response's JSONPatch is applied to the object, then webhooks with
//!   `reinvocationPolicy: IfNeeded` are called once more if a later webhook changed the
//!   object (<https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#reinvocation-policy>).
//! - The API server then names the pod from `generateName`, gives it a `uid`, and validates
//!   it: here with `kubernetes-validate` against the Kubernetes schema (strict).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::helm;
use crate::tools::{self, ToolError};

/// Why the "API server" did not create the pod, or the harness could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// A webhook answered `allowed: false`: the message `kubectl` would print.
    #[error("admission webhook {webhook:?} denied the request: {message}")]
    Denied {
        /// Webhook name.
        webhook: String,
        /// The webhook's `status.message`.
        message: String,
    },
    /// Calling a webhook with `failurePolicy: Fail` failed (unreachable, timeout, bad answer).
    #[error("Internal error occurred: failed calling webhook {webhook:?}: {reason}")]
    WebhookFailed {
        /// Webhook name.
        webhook: String,
        /// What went wrong.
        reason: String,
    },
    /// The mutated pod is not a valid Pod.
    #[error("the mutated pod is invalid: {0}")]
    Invalid(String),
    /// The webhook configuration uses something this reproduction does not implement.
    #[error("the e2e API server cannot evaluate {0}; extend apiserver.rs")]
    Unsupported(String),
    /// An external tool (kubectl, kubernetes-validate) failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The rendered configuration or a document is not shaped as expected.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which document.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Writing a temporary file failed.
    #[error("cannot write a temporary file")]
    Io(#[source] std::io::Error),
}

fn malformed(what: &'static str, detail: impl Into<String>) -> ApiServerError {
    ApiServerError::Malformed {
        what,
        detail: detail.into(),
    }
}

/// `kubectl create deployment NAME --image=IMAGE --dry-run=client -o json [-- COMMAND...]`,
/// run with the real kubectl.
pub fn kubectl_create_deployment(
    name: &str,
    image: &str,
    command: &[&str],
) -> Result<Value, ApiServerError> {
    let kubectl = tools::find_tool(
        "kubectl",
        "apt-get install kubectl",
        tools::process_path().as_deref(),
    )?;
    let mut cmd = Command::new(kubectl);
    cmd.args([
        "create",
        "deployment",
        name,
        "--image",
        image,
        "--dry-run=client",
        "-o",
        "json",
    ]);
    if !command.is_empty() {
        cmd.arg("--").args(command);
    }
    let out = tools::run(&mut cmd)?;
    serde_json::from_slice(&out.stdout).map_err(|e| malformed("kubectl output", e.to_string()))
}

/// FNV-1a 32-bit, the hash the ReplicaSet controller uses for `pod-template-hash`.
fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// `rand.SafeEncodeString` of the API machinery: digits and consonants only.
fn safe_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// A `len`-character suffix as the API server appends to `generateName`.
pub fn random_suffix(len: usize) -> String {
    crate::e2e_support::random_bytes(len)
        .iter()
        .map(|b| b"bcdfghjklmnpqrstvwxz2456789"[usize::from(*b) % 27] as char)
        .collect()
}

/// The Pod the ReplicaSet controller creates for `deployment` in `namespace`, with the
/// fields the API server defaults before admission (as in the captured fixtures). The
/// pod has `generateName` and no `name`, like the real request.
pub fn pod_from_deployment(deployment: &Value, namespace: &str) -> Result<Value, ApiServerError> {
    let deploy_name = deployment["metadata"]["name"]
        .as_str()
        .ok_or_else(|| malformed("Deployment", "no metadata.name"))?;
    let template = &deployment["spec"]["template"];
    let hash = safe_encode(&fnv32a(template.to_string().as_bytes()).to_string());
    let rs_name = format!("{deploy_name}-{hash}");
    let mut metadata = template["metadata"].clone();
    let meta = metadata
        .as_object_mut()
        .ok_or_else(|| malformed("Deployment", "template metadata is not an object"))?;
    meta.remove("creationTimestamp");
    let mut labels = meta.get("labels").cloned().unwrap_or_else(|| json!({}));
    labels["pod-template-hash"] = json!(hash);
    meta.insert("labels".into(), labels);
    meta.insert("generateName".into(), json!(format!("{rs_name}-")));
    meta.insert("namespace".into(), json!(namespace));
    meta.insert(
        "ownerReferences".into(),
        json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
            "uid": crate::e2e_support::random_uuid(), "controller": true, "blockOwnerDeletion": true,
        }]),
    );
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"].clone(),
        "status": {},
    });
    apply_pod_defaults(&mut pod)?;
    Ok(pod)
}

/// The Pod the StatefulSet controller creates for ordinal `ordinal` (named
/// `<sts>-<ordinal>`, with one `persistentVolumeClaim` volume per claim template).
pub fn pod_from_statefulset(
    sts: &Value,
    namespace: &str,
    ordinal: u32,
) -> Result<Value, ApiServerError> {
    let sts_name = sts["metadata"]["name"]
        .as_str()
        .ok_or_else(|| malformed("StatefulSet", "no metadata.name"))?;
    let pod_name = format!("{sts_name}-{ordinal}");
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": sts["spec"]["template"]["metadata"].clone(),
        "spec": sts["spec"]["template"]["spec"].clone(),
        "status": {},
    });
    pod["metadata"]["name"] = json!(pod_name);
    pod["metadata"]["namespace"] = json!(namespace);
    pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    let empty = Vec::new();
    for claim in sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .unwrap_or(&empty)
    {
        let claim_name = claim["metadata"]["name"].as_str().unwrap_or_default();
        let volumes = pod["spec"]
            .as_object_mut()
            .ok_or_else(|| malformed("StatefulSet", "template spec is not an object"))?
            .entry("volumes")
            .or_insert_with(|| json!([]));
        if let Some(list) = volumes.as_array_mut() {
            list.push(json!({
                "name": claim_name,
                "persistentVolumeClaim": {"claimName": format!("{claim_name}-{pod_name}")},
            }));
        }
    }
    apply_pod_defaults(&mut pod)?;
    Ok(pod)
}

/// The pod fields the API server fills in before admission (defaulting and the
/// ServiceAccount admission plugin), copied from the captured v1.32 requests.
fn apply_pod_defaults(pod: &mut Value) -> Result<(), ApiServerError> {
    let spec = pod["spec"]
        .as_object_mut()
        .ok_or_else(|| malformed("Pod", "spec is not an object"))?;
    let defaults = [
        ("dnsPolicy", json!("ClusterFirst")),
        ("enableServiceLinks", json!(true)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
        ("priority", json!(0)),
        ("restartPolicy", json!("Always")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("serviceAccountName", json!("default")),
        ("terminationGracePeriodSeconds", json!(30)),
    ];
    for (k, v) in defaults {
        spec.entry(k).or_insert(v);
    }
    let sa = spec["serviceAccountName"].clone();
    spec.insert("serviceAccount".into(), sa);
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if let Some(list) = tolerations.as_array_mut() {
            if !list.iter().any(|t| t["key"] == key) {
                list.push(json!({"effect": "NoExecute", "key": key, "operator": "Exists", "tolerationSeconds": 300}));
            }
        }
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        != Some(false);
    let api_access = format!("kube-api-access-{}", random_suffix(5));
    if automount {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(list) = volumes.as_array_mut() {
            list.push(json!({
                "name": api_access,
                "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
                    {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}},
                ]},
            }));
        }
    }
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let Some(c) = c.as_object_mut() else { continue };
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let last = image.rsplit('/').next().unwrap_or_default();
            let latest = !last.contains(':') && !image.contains('@') || last.ends_with(":latest");
            c.entry("imagePullPolicy")
                .or_insert_with(|| json!(if latest { "Always" } else { "IfNotPresent" }));
            c.entry("resources").or_insert_with(|| json!({}));
            c.entry("terminationMessagePath")
                .or_insert_with(|| json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy")
                .or_insert_with(|| json!("File"));
            if automount {
                let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
                if let Some(m) = mounts.as_array_mut() {
                    m.push(json!({"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": api_access, "readOnly": true}));
                }
            }
        }
    }
    Ok(())
}

/// One webhook of a rendered `MutatingWebhookConfiguration`.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `name`.
    pub name: String,
    /// `clientConfig.service`: `(name, namespace, path, port)`.
    pub service: (String, String, String, u16),
    /// `clientConfig.caBundle`, decoded PEM.
    pub ca_bundle: Vec<u8>,
    /// `rules`.
    pub rules: Vec<Value>,
    /// `matchConditions`: `(name, expression)`.
    pub match_conditions: Vec<(String, String)>,
    /// `namespaceSelector` (`{}` matches everything).
    pub namespace_selector: Value,
    /// `objectSelector` (`{}` matches everything).
    pub object_selector: Value,
    /// `failurePolicy` (default `Fail`).
    pub failure_policy: String,
    /// `timeoutSeconds` (default 10).
    pub timeout: Duration,
    /// `reinvocationPolicy` (default `Never`).
    pub reinvocation: String,
}

impl Webhook {
    /// Every webhook of every `MutatingWebhookConfiguration` in a render.
    pub fn from_rendered(rendered: &helm::Rendered) -> Result<Vec<Webhook>, ApiServerError> {
        let mut out = Vec::new();
        for doc in rendered.of_kind("MutatingWebhookConfiguration") {
            let empty = Vec::new();
            for w in doc["webhooks"].as_array().unwrap_or(&empty) {
                out.push(Self::parse(w)?);
            }
        }
        Ok(out)
    }

    fn parse(w: &Value) -> Result<Webhook, ApiServerError> {
        let what = "MutatingWebhookConfiguration";
        let svc = &w["clientConfig"]["service"];
        if svc.is_null() {
            return Err(ApiServerError::Unsupported("clientConfig.url".into()));
        }
        let ca = w["clientConfig"]["caBundle"]
            .as_str()
            .ok_or_else(|| malformed(what, "no caBundle"))?;
        let ca_bundle = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .map_err(|e| malformed(what, format!("caBundle: {e}")))?;
        let empty = Vec::new();
        let match_conditions = w["matchConditions"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["expression"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        Ok(Webhook {
            name: w["name"].as_str().unwrap_or_default().to_string(),
            service: (
                svc["name"].as_str().unwrap_or_default().to_string(),
                svc["namespace"].as_str().unwrap_or_default().to_string(),
                svc["path"].as_str().unwrap_or("/").to_string(),
                svc["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(443),
            ),
            ca_bundle,
            rules: w["rules"].as_array().cloned().unwrap_or_default(),
            match_conditions,
            namespace_selector: w
                .get("namespaceSelector")
                .cloned()
                .unwrap_or_else(|| json!({})),
            object_selector: w
                .get("objectSelector")
                .cloned()
                .unwrap_or_else(|| json!({})),
            failure_policy: w["failurePolicy"].as_str().unwrap_or("Fail").to_string(),
            timeout: Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap_or(10)),
            reinvocation: w["reinvocationPolicy"]
                .as_str()
                .unwrap_or("Never")
                .to_string(),
        })
    }

    /// The DNS name the API server dials and verifies: `<service>.<namespace>.svc`.
    pub fn host(&self) -> String {
        format!("{}.{}.svc", self.service.0, self.service.1)
    }

    fn rules_match_pod_create(&self) -> bool {
        let has = |v: &Value, want: &str| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|x| x == want || x == "*" || x == "*/*"))
        };
        self.rules.iter().any(|r| {
            has(&r["operations"], "CREATE")
                && has(&r["apiGroups"], "")
                && has(&r["apiVersions"], "v1")
                && has(&r["resources"], "pods")
                && r["scope"]
                    .as_str()
                    .is_none_or(|s| s == "*" || s == "Namespaced")
        })
    }
}

/// Whether `selector` (a `metav1.LabelSelector`) matches `labels`.
pub fn selector_matches(
    selector: &Value,
    labels: &BTreeMap<String, String>,
) -> Result<bool, ApiServerError> {
    if let Some(ml) = selector["matchLabels"].as_object() {
        for (k, v) in ml {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return Ok(false);
            }
        }
    }
    let empty = Vec::new();
    for expr in selector["matchExpressions"].as_array().unwrap_or(&empty) {
        let key = expr["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expr["values"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let value = labels.get(key).map(String::as_str);
        let ok = match expr["operator"].as_str().unwrap_or_default() {
            "In" => value.is_some_and(|v| values.contains(&v)),
            "NotIn" => value.is_none_or(|v| !values.contains(&v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(ApiServerError::Unsupported(format!(
                    "selector operator {other}"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Evaluates a `matchConditions` expression against the request's `object`.
/// `Ok(Err(_))` is a CEL evaluation error (subject to `failurePolicy`); `Err(_)` is an
/// expression form this reproduction does not implement.
pub fn eval_match_condition(
    expr: &str,
    object: &Value,
) -> Result<Result<bool, String>, ApiServerError> {
    let mut any_error = None;
    let mut result = true;
    for term in expr.split("&&") {
        match eval_term(term.trim(), object)? {
            Ok(true) => {}
            Ok(false) => result = false,
            Err(e) => any_error = Some(e),
        }
    }
    // CEL's `&&` is commutative: false wins over an error, an error over true.
    Ok(match (result, any_error) {
        (false, _) => Ok(false),
        (true, Some(e)) => Err(e),
        (true, None) => Ok(true),
    })
}

/// `object.metadata.<field>` for the two map fields the chart's conditions use.
fn metadata_map<'a>(path: &str, object: &'a Value) -> Result<Option<&'a Value>, ApiServerError> {
    let field = path
        .strip_prefix("object.metadata.")
        .filter(|f| *f == "annotations" || *f == "labels")
        .ok_or_else(|| ApiServerError::Unsupported(format!("CEL path {path}")))?;
    Ok(object["metadata"].get(field))
}

fn quoted(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
        .filter(|inner| !inner.contains(['\'', '"', '\\']))
}

fn eval_term(term: &str, object: &Value) -> Result<Result<bool, String>, ApiServerError> {
    let unsupported = || ApiServerError::Unsupported(format!("CEL expression {term:?}"));
    if let Some(inner) = term.strip_prefix("has(").and_then(|t| t.strip_suffix(')')) {
        return Ok(Ok(metadata_map(inner.trim(), object)?.is_some()));
    }
    if let Some((key, map)) = term.split_once(" in ") {
        let key = quoted(key).ok_or_else(unsupported)?;
        return Ok(match metadata_map(map.trim(), object)? {
            Some(m) => Ok(m.get(key).is_some()),
            None => Err(format!("no such key: {}", map.trim())),
        });
    }
    // `!=` before `==`: the same comparison, negated (a missing key is still an error).
    let (comparison, negate) = match term.split_once("!=") {
        Some(parts) => (Some(parts), true),
        None => (term.split_once("=="), false),
    };
    if let Some((lhs, rhs)) = comparison {
        let want = quoted(rhs).ok_or_else(unsupported)?;
        let (path, key) = lhs.trim().split_once('[').ok_or_else(unsupported)?;
        let key = key
            .strip_suffix(']')
            .and_then(quoted)
            .ok_or_else(unsupported)?;
        return Ok(match metadata_map(path, object)? {
            None => Err(format!("no such key: {path}")),
            Some(m) => match m.get(key) {
                None => Err(format!("no such key: {key}")),
                Some(v) => Ok((v.as_str() == Some(want)) != negate),
            },
        });
    }
    Err(unsupported())
}

/// Which webhooks were called for a pod, and what happened.
#[derive(Debug, Clone, Default)]
pub struct AdmissionTrace {
    /// Webhook names, in call order (a reinvocation appears twice).
    pub called: Vec<String>,
    /// Webhooks skipped by rules, selectors or match conditions.
    pub skipped: Vec<String>,
    /// Webhooks whose failure was ignored (`failurePolicy: Ignore`), with the reason.
    pub ignored_failures: Vec<(String, String)>,
}

/// The API server: namespaces, the registered webhooks, and where Services are reachable.
#[derive(Debug, Clone, Default)]
pub struct ApiServer {
    /// Mutating webhooks, in registration order.
    pub webhooks: Vec<Webhook>,
    /// Namespace name → labels (`kubernetes.io/metadata.name` is added automatically).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Service DNS name (`svc.ns.svc`) → the address of its (single) endpoint.
    pub endpoints: BTreeMap<String, SocketAddr>,
    /// Where to write the pod for schema validation.
    pub scratch: std::path::PathBuf,
}

impl ApiServer {
    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespaces.get(ns).cloned().unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), ns.into());
        labels
    }

    /// `kubectl create` of `pod` (as the controller sends it): admission, naming,
    /// validation. Returns the stored pod and the admission trace.
    pub fn create_pod(&self, pod: Value) -> Result<(Value, AdmissionTrace), ApiServerError> {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .ok_or_else(|| malformed("Pod", "no namespace"))?
            .to_string();
        let mut trace = AdmissionTrace::default();
        let mut object = pod;
        // The webhooks that ran, and the object as each last left it.
        let mut ran: Vec<(usize, Value)> = Vec::new();
        for (i, webhook) in self.webhooks.iter().enumerate() {
            if self.call_if_matching(webhook, &ns, &mut object, &mut trace)? {
                ran.push((i, object.clone()));
            }
        }
        // Reinvocation: once, for IfNeeded webhooks whose output a later webhook changed.
        for (i, after) in ran {
            let webhook = &self.webhooks[i];
            if webhook.reinvocation == "IfNeeded" && after != object {
                self.call_if_matching(webhook, &ns, &mut object, &mut trace)?;
            }
        }
        let generate = object["metadata"]["generateName"]
            .as_str()
            .map(str::to_string);
        if object["metadata"]["name"].as_str().is_none() {
            let base = generate
                .ok_or_else(|| ApiServerError::Invalid("no name and no generateName".into()))?;
            object["metadata"]["name"] = json!(format!("{base}{}", random_suffix(5)));
        }
        object["metadata"]["uid"] = json!(crate::e2e_support::random_uuid());
        self.validate(&object)?;
        Ok((object, trace))
    }

    /// Validates a pod with `kubernetes-validate` (strict, the chart's Kubernetes version).
    pub fn validate(&self, pod: &Value) -> Result<(), ApiServerError> {
        std::fs::create_dir_all(&self.scratch).map_err(ApiServerError::Io)?;
        let path = self.scratch.join(format!("pod-{}.json", random_suffix(8)));
        let text = serde_json::to_vec_pretty(pod).map_err(|e| malformed("Pod", e.to_string()))?;
        std::fs::write(&path, text).map_err(ApiServerError::Io)?;
        let result = helm::validate_files(std::slice::from_ref(&path));
        // The file is the pod manifest (no secret values); removed to keep scratch small.
        let _ = std::fs::remove_file(&path);
        match result {
            Ok(v) if v.unknown_kinds.is_empty() => Ok(()),
            Ok(v) => Err(ApiServerError::Invalid(v.output)),
            Err(helm::HelmError::Tool(ToolError::Failed { stdout, stderr, .. })) => {
                Err(ApiServerError::Invalid(format!("{stdout}{stderr}")))
            }
            Err(helm::HelmError::Tool(e)) => Err(ApiServerError::Tool(e)),
            Err(e) => Err(ApiServerError::Invalid(e.to_string())),
        }
    }

    /// Calls `webhook` if it matches; returns whether it was called successfully.
    fn call_if_matching(
        &self,
        webhook: &Webhook,
        ns: &str,
        object: &mut Value,
        trace: &mut AdmissionTrace,
    ) -> Result<bool, ApiServerError> {
        let pod_labels: BTreeMap<String, String> = object["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let selected = webhook.rules_match_pod_create()
            && selector_matches(&webhook.namespace_selector, &self.namespace_labels(ns))?
            && selector_matches(&webhook.object_selector, &pod_labels)?;
        if !selected {
            trace.skipped.push(webhook.name.clone());
            return Ok(false);
        }
        for (name, expr) in &webhook.match_conditions {
            match eval_match_condition(expr, object)? {
                Ok(true) => {}
                Ok(false) => {
                    trace.skipped.push(webhook.name.clone());
                    return Ok(false);
                }
                Err(e) => {
                    return self.on_failure(webhook, format!("match condition {name}: {e}"), trace);
                }
            }
        }
        trace.called.push(webhook.name.clone());
        match self.call(webhook, ns, object) {
            Ok(Some(patch)) => {
                json_patch::patch(object, &patch).map_err(|e| {
                    ApiServerError::Invalid(format!("applying the webhook's patch: {e}"))
                })?;
                Ok(true)
            }
            Ok(None) => Ok(true),
            Err(CallError::Denied(message)) => Err(ApiServerError::Denied {
                webhook: webhook.name.clone(),
                message,
            }),
            Err(CallError::Failed(reason)) => self.on_failure(webhook, reason, trace),
        }
    }

    fn on_failure(
        &self,
        webhook: &Webhook,
        reason: String,
        trace: &mut AdmissionTrace,
    ) -> Result<bool, ApiServerError> {
        if webhook.failure_policy == "Ignore" {
            trace.ignored_failures.push((webhook.name.clone(), reason));
            Ok(false)
        } else {
            Err(ApiServerError::WebhookFailed {
                webhook: webhook.name.clone(),
                reason,
            })
        }
    }

    fn call(
        &self,
        webhook: &Webhook,
        ns: &str,
        object: &Value,
    ) -> Result<Option<json_patch::Patch>, CallError> {
        let failed = |e: String| CallError::Failed(e);
        let uid = crate::e2e_support::random_uuid();
        let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
        let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                "namespace": ns, "operation": "CREATE",
                "userInfo": {
                    "username": "system:serviceaccount:kube-system:replicaset-controller",
                    "uid": crate::e2e_support::random_uuid(),
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
                },
                "object": object, "oldObject": null, "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        });
        let host = webhook.host();
        let addr = self
            .endpoints
            .get(&host)
            .copied()
            .ok_or_else(|| failed(format!("service {host} has no endpoints")))?;
        let client = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls_client(&webhook.ca_bundle).map_err(failed)?)
            .resolve(&host, addr)
            .timeout(webhook.timeout)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let url = format!(
            "https://{host}:{}{}?timeout={}s",
            webhook.service.3,
            webhook.service.2,
            webhook.timeout.as_secs()
        );
        let response = client
            .post(&url)
            .json(&review)
            .send()
            .map_err(|e| failed(format!("Post \"{url}\": {}", error_chain(&e))))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("expected response code 200, got {status}")));
        }
        let body: Value = response
            .json()
            .map_err(|e| failed(format!("bad response: {e}")))?;
        let r = &body["response"];
        if body["apiVersion"] != "admission.k8s.io/v1" || body["kind"] != "AdmissionReview" {
            return Err(failed(
                "response is not an admission.k8s.io/v1 AdmissionReview".into(),
            ));
        }
        if r["uid"] != uid {
            return Err(failed(format!(
                "expected response.uid={uid:?}, got {:?}",
                r["uid"]
            )));
        }
        if r["allowed"] != true {
            return Err(CallError::Denied(
                r["status"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
        let Some(patch) = r["patch"].as_str() else {
            return Ok(None);
        };
        if r["patchType"] != "JSONPatch" {
            return Err(failed(format!("unsupported patchType {}", r["patchType"])));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .map_err(|e| failed(format!("patch is not base64: {e}")))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| failed(format!("patch is not a JSON Patch: {e}")))
    }
}

enum CallError {
    Denied(String),
    Failed(String),
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A rustls client trusting only the certificates in `ca_pem`.
pub fn tls_client(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("caBundle holds no certificate".into());
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| e.to_string())
}

/// Reads a pod from a JSON or YAML file (a captured fixture, for example).
pub fn read_pod(path: &Path) -> Result<Value, ApiServerError> {
    let text = std::fs::read_to_string(path).map_err(ApiServerError::Io)?;
    serde_yaml::from_str(&text).map_err(|e| malformed("pod file", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHART_EXPR: &str = "has(object.metadata.annotations) && \
        'aegis.shieldworks.io/inject' in object.metadata.annotations && \
        object.metadata.annotations['aegis.shieldworks.io/inject'] != 'false'";

    #[test]
    fn match_condition_follows_cel_semantics() {
        let cases = [
            (
                json!({"metadata": {"annotations": {"aegis.shieldworks.io/inject": "true"}}}),
                true,
            ),
            (
                json!({"metadata": {"annotations": {"aegis.shieldworks.io/inject": "false"}}}),
                false,
            ),
            // A misspelled opt-in reaches the webhook, which denies it with a clear message.
            (
                json!({"metadata": {"annotations": {"aegis.shieldworks.io/inject": "yes"}}}),
                true,
            ),
            (json!({"metadata": {"annotations": {"x": "y"}}}), false),
            (json!({"metadata": {}}), false),
        ];
        for (object, want) in &cases {
            assert_eq!(
                eval_match_condition(CHART_EXPR, object).ok(),
                Some(Ok(*want)),
                "{object}"
            );
        }
        let other = &cases[3].0;
        // Without the guards, a missing key is a CEL error (failurePolicy decides).
        let bare = "object.metadata.annotations['k'] == 'v'";
        assert!(matches!(eval_match_condition(bare, other), Ok(Err(_))));
        assert!(eval_match_condition("object.spec.containers.size() > 1", other).is_err());
    }

    #[test]
    fn selectors_follow_label_selector_semantics() {
        let sel = json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["aegis-system", "kube-system"]}]});
        let labels = |ns: &str| {
            BTreeMap::from([("kubernetes.io/metadata.name".to_string(), ns.to_string())])
        };
        assert!(selector_matches(&sel, &labels("demo")).unwrap_or(false));
        assert!(!selector_matches(&sel, &labels("kube-system")).unwrap_or(true));
        assert!(selector_matches(&json!({}), &labels("x")).unwrap_or(false));
        let ml = json!({"matchLabels": {"a": "b"}});
        assert!(!selector_matches(&ml, &labels("x")).unwrap_or(true));
    }
}
