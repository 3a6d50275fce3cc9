//! The Helm chart, rendered by a real Helm v3 and checked the way a platform engineer
//! would check it before `helm install`: valid Kubernetes 1.32 manifests in every TLS
//! mode and option combination, a webhook registration that only sees annotated pods,
//! hardened pods, no secret material in templates except generated TLS, conflicting
//! values refused with a clear message, and container arguments the real binaries accept.
//!
//! Needs: helm (`scripts/install-helm.sh`), kubernetes-validate (PyPI), and the workspace
//! binaries (`cargo build --workspace --bins`) for the flag checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aegis_e2e::helm::{
    self, flag_value, flag_values, name_of, Chart, HelmError, Rendered, NAMESPACE,
};
use aegis_e2e::tools::{self, Outcome};
use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

const WEBHOOK: &str = "aegis-webhook";
const SAFE: &str = "aegis-safe";
const SENTINEL: &str = "aegis-sentinel";
const INJECT_CONDITION: &str = "has(object.metadata.annotations) && \
'aegis.shieldworks.io/inject' in object.metadata.annotations && \
object.metadata.annotations['aegis.shieldworks.io/inject'] != 'false'";

/// A named set of `helm template` arguments.
struct Combo {
    label: &'static str,
    args: Vec<String>,
}

fn combo(label: &'static str, sets: &[&str]) -> Combo {
    let mut args = Vec::new();
    for set in sets {
        if let Some(json) = set.strip_prefix("json:") {
            args.push("--set-json".to_string());
            args.push(json.to_string());
        } else if let Some(file) = set.strip_prefix("file:") {
            args.push("--set-file".to_string());
            args.push(file.to_string());
        } else {
            args.push("--set".to_string());
            args.push((*set).to_string());
        }
    }
    Combo { label, args }
}

/// A CA certificate PEM on disk, for `webhook.tls.caBundle` in secret mode.
fn ca_bundle_file(dir: &Path) -> Result<PathBuf> {
    let rendered = Chart::new()?.template(&[])?;
    let secret = rendered
        .find("Secret", "aegis-webhook-tls")
        .context("default render has no webhook TLS Secret")?;
    let path = dir.join("ca.pem");
    std::fs::write(&path, secret_data(secret, "ca.crt")?)?;
    Ok(path)
}

/// Every TLS mode and option combination the chart supports.
fn combos(ca_file: &Path) -> Vec<Combo> {
    let ca = format!("file:webhook.tls.caBundle={}", ca_file.display());
    vec![
        combo("defaults", &[]),
        combo(
            "cert-manager with the chart's CA issuer",
            &["safe.tls.mode=certManager", "webhook.tls.mode=certManager"],
        ),
        combo(
            "cert-manager with an external cluster issuer",
            &[
                "safe.tls.mode=certManager",
                "safe.tls.certManager.issuerRef.name=corp-ca",
                "safe.tls.certManager.issuerRef.kind=ClusterIssuer",
                "webhook.tls.mode=certManager",
                "webhook.tls.certManager.issuerRef.name=corp-ca",
                "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
            ],
        ),
        combo(
            "existing secrets",
            &[
                "safe.tls.mode=secret",
                "safe.tls.secretName=corp-safe-tls",
                "webhook.tls.mode=secret",
                "webhook.tls.secretName=corp-webhook-tls",
                &ca,
            ],
        ),
        combo(
            "mixed: safe from a secret, webhook from cert-manager",
            &[
                "safe.tls.mode=secret",
                "safe.tls.secretName=corp-safe-tls",
                "webhook.tls.mode=certManager",
            ],
        ),
        combo(
            "network policy, pull secrets, insecure registry, Ignore",
            &[
                "networkPolicy.enabled=true",
                "networkPolicy.apiServerCIDRs={172.18.0.0/16,10.0.0.1/32}",
                r#"json:networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#,
                "webhook.registry.pullSecrets=true",
                "webhook.registry.insecure={registry.local:5000}",
                "webhook.registry.timeoutSeconds=4",
                "webhook.timeoutSeconds=10",
                "webhook.failurePolicy=Ignore",
                "webhook.excludeNamespaces={monitoring,istio-system}",
                "logFormat=text",
            ],
        ),
        combo(
            "jwks from the issuer's URL",
            &[
                "safe.tokenAuth=jwks",
                "safe.jwks.issuer=https://kubernetes.default.svc.cluster.local",
                "safe.jwks.url=https://kubernetes.default.svc/openid/v1/jwks",
            ],
        ),
        combo(
            "jwks from a ConfigMap, no sentinel, extra admin",
            &[
                "safe.tokenAuth=jwks",
                "safe.jwks.issuer=https://kubernetes.default.svc.cluster.local",
                "safe.jwks.configMap=cluster-jwks",
                "sentinel.enabled=false",
                "safe.admins={ops/secret-admin}",
            ],
        ),
        combo(
            "one webhook replica, no PDB, root key pre-created, custom images",
            &[
                "webhook.replicas=1",
                "webhook.pdb.enabled=false",
                "safe.rootKey.allowCreate=false",
                "safe.rootKey.secretName=corp-root-key",
                "image.repositoryPrefix=registry.example.com/aegis",
                "image.tag=1.2.3",
                "webhook.shimImage.tag=1.2.4",
                "safe.persistence.storageClass=fast",
                "safe.persistence.size=5Gi",
            ],
        ),
    ]
}

/// Renders every combination; the tempdir keeps the CA file alive.
fn render_all() -> Result<(tempfile::TempDir, Vec<(&'static str, Rendered)>)> {
    let dir = tempfile::tempdir()?;
    let chart = Chart::new()?;
    let mut out = Vec::new();
    for c in combos(&ca_bundle_file(dir.path())?) {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let rendered = chart
            .template(&args)
            .with_context(|| format!("render `{}`", c.label))?;
        out.push((c.label, rendered));
    }
    Ok((dir, out))
}

fn defaults() -> Result<Rendered> {
    Ok(Chart::new()?.template(&[])?)
}

fn template(sets: &[&str]) -> Result<Rendered> {
    let c = combo("adhoc", sets);
    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    Ok(Chart::new()?.template(&args)?)
}

fn secret_data(secret: &Value, key: &str) -> Result<String> {
    let b64 = secret["data"][key]
        .as_str()
        .with_context(|| format!("Secret {} has no data.{key}", name_of(secret)))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(String::from_utf8(bytes)?)
}

fn webhook_entry(rendered: &Rendered) -> Result<&Value> {
    let mwc = rendered
        .find("MutatingWebhookConfiguration", WEBHOOK)
        .context("no MutatingWebhookConfiguration rendered")?;
    let hooks = mwc["webhooks"].as_array().context("no webhooks")?;
    ensure!(
        hooks.len() == 1,
        "expected one webhook, got {}",
        hooks.len()
    );
    Ok(&hooks[0])
}

fn excluded_namespaces(hook: &Value) -> Result<Vec<String>> {
    let exprs = hook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .context("namespaceSelector has no matchExpressions")?;
    let expr = exprs
        .iter()
        .find(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        .context("no NotIn on kubernetes.io/metadata.name")?;
    Ok(expr["values"]
        .as_array()
        .context("no values")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

// ---------------------------------------------------------------------------------------
// Lint and schema validation
// ---------------------------------------------------------------------------------------

#[test]
fn helm_lint_passes_strictly_for_every_combination() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let chart = Chart::new()?;
    for c in combos(&ca_bundle_file(dir.path())?) {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = chart
            .lint(&args)
            .with_context(|| format!("helm lint `{}`", c.label))?;
        ensure!(
            out.contains("0 chart(s) failed"),
            "lint `{}`: {out}",
            c.label
        );
    }
    Ok(())
}

/// Fields of the cert-manager v1 kinds the chart renders (kubernetes-validate has no
/// schema for CRDs, so these documents get this structural check instead).
fn check_cert_manager_doc(doc: &Value) -> Result<()> {
    let spec = doc["spec"].as_object().context("no spec")?;
    let allowed: &[&str] = match doc["kind"].as_str() {
        Some("Certificate") => &[
            "secretName",
            "duration",
            "renewBefore",
            "commonName",
            "dnsNames",
            "privateKey",
            "usages",
            "issuerRef",
            "isCA",
        ],
        Some("Issuer") => &["selfSigned", "ca"],
        other => bail!("unexpected cert-manager kind {other:?}"),
    };
    for key in spec.keys() {
        ensure!(
            allowed.contains(&key.as_str()),
            "{} {}: unknown spec.{key}",
            doc["kind"],
            name_of(doc)
        );
    }
    if doc["kind"] == "Certificate" {
        ensure!(
            spec["secretName"].is_string(),
            "Certificate without secretName"
        );
        ensure!(
            spec["issuerRef"]["name"].is_string(),
            "Certificate without issuerRef.name"
        );
    }
    Ok(())
}

#[test]
fn every_combination_renders_manifests_valid_for_kubernetes_1_32() -> Result<()> {
    let (_ca, renders) = render_all()?;
    let dir = tempfile::tempdir()?;
    let refs: Vec<(&str, &Rendered)> = renders.iter().map(|(l, r)| (*l, r)).collect();
    let validation = helm::validate_renders(dir.path(), &refs)?;
    // Only cert-manager's CRDs lack a bundled schema; every core kind was validated.
    for (api, kind) in &validation.unknown_kinds {
        ensure!(
            api == "cert-manager.io/v1" && (kind == "Certificate" || kind == "Issuer"),
            "no schema for {api} {kind}: {}",
            validation.output
        );
    }
    let mut cert_manager_docs = 0;
    for (label, rendered) in &renders {
        ensure!(!rendered.docs.is_empty(), "`{label}` rendered nothing");
        for doc in &rendered.docs {
            if doc["apiVersion"] == "cert-manager.io/v1" {
                cert_manager_docs += 1;
                check_cert_manager_doc(doc).with_context(|| label.to_string())?;
            }
        }
    }
    ensure!(
        cert_manager_docs > 0,
        "no cert-manager combination was rendered"
    );
    Ok(())
}

#[test]
fn schema_rejects_unknown_values_and_bad_enums() -> Result<()> {
    let chart = Chart::new()?;
    for (set, expected) in [
        ("safe.tls.mode=vault", "safe.tls.mode"),
        ("webhook.failurePolicy=Sometimes", "webhook.failurePolicy"),
        ("webhook.timeoutSeconds=31", "webhook.timeoutSeconds"),
        ("safe.tokenAuth=oidc", "safe.tokenAuth"),
        ("safe.tlz.mode=generate", "tlz"),
    ] {
        match chart.template(&["--set", set]) {
            Err(HelmError::RenderFailed { stderr }) => ensure!(
                stderr.contains(expected),
                "`{set}`: message does not name {expected}: {stderr}"
            ),
            other => bail!("`{set}` should be refused, got {other:?}"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The webhook registration
// ---------------------------------------------------------------------------------------

#[test]
fn webhook_is_called_only_for_pods_annotated_inject_true() -> Result<()> {
    let rendered = defaults()?;
    let hook = webhook_entry(&rendered)?;
    let conditions = hook["matchConditions"]
        .as_array()
        .context("no matchConditions")?;
    ensure!(conditions.len() == 1, "one matchCondition expected");
    let expression = conditions[0]["expression"]
        .as_str()
        .context("no expression")?;
    ensure!(
        expression == INJECT_CONDITION,
        "matchCondition is {expression:?}"
    );
    ensure!(
        expression.contains(aegis_core::names::ANNOTATION_INJECT),
        "condition must test the annotation aegis-core defines"
    );
    let rules = hook["rules"].as_array().context("no rules")?;
    ensure!(rules.len() == 1, "one rule expected");
    let rule = &rules[0];
    ensure!(
        rule["operations"] == serde_json::json!(["CREATE"]),
        "{rule}"
    );
    ensure!(rule["apiGroups"] == serde_json::json!([""]), "{rule}");
    ensure!(rule["resources"] == serde_json::json!(["pods"]), "{rule}");
    ensure!(rule["apiVersions"] == serde_json::json!(["v1"]), "{rule}");
    Ok(())
}

#[test]
fn webhook_registration_is_fail_closed_idempotent_and_side_effect_free() -> Result<()> {
    let rendered = defaults()?;
    let hook = webhook_entry(&rendered)?;
    ensure!(hook["failurePolicy"] == "Fail", "{hook}");
    let timeout = hook["timeoutSeconds"]
        .as_i64()
        .context("no timeoutSeconds")?;
    ensure!(
        timeout > 0 && timeout < 10,
        "timeout {timeout} not well under 10"
    );
    ensure!(hook["sideEffects"] == "None", "{hook}");
    ensure!(hook["reinvocationPolicy"] == "IfNeeded", "{hook}");
    ensure!(
        hook["admissionReviewVersions"] == serde_json::json!(["v1"]),
        "{hook}"
    );
    ensure!(
        hook["name"].as_str().unwrap_or("").split('.').count() >= 3,
        "webhook name must be fully qualified"
    );
    // The API server calls the webhook Service on its HTTPS port, path /mutate.
    let target = &hook["clientConfig"]["service"];
    ensure!(
        target["name"] == WEBHOOK && target["namespace"] == NAMESPACE,
        "{target}"
    );
    ensure!(
        target["path"] == "/mutate" && target["port"] == 8443,
        "{target}"
    );
    let svc = rendered
        .find("Service", WEBHOOK)
        .context("no webhook Service")?;
    ensure!(
        svc["spec"]["ports"]
            .as_array()
            .is_some_and(|ports| ports.iter().any(|p| p["port"] == 8443)),
        "webhook Service does not expose 8443"
    );
    // The registry lookup must give up before the API server gives up on the webhook.
    let args = rendered.container_args("Deployment", WEBHOOK, "webhook");
    let registry = flag_value(&args, "--registry-timeout").context("no --registry-timeout")?;
    let registry: i64 = registry.trim_end_matches('s').parse()?;
    ensure!(
        registry < timeout,
        "registry timeout {registry}s >= webhook {timeout}s"
    );
    Ok(())
}

#[test]
fn failure_policy_and_timeout_come_from_values() -> Result<()> {
    let rendered = template(&[
        "webhook.failurePolicy=Ignore",
        "webhook.timeoutSeconds=8",
        "webhook.registry.timeoutSeconds=6",
    ])?;
    let hook = webhook_entry(&rendered)?;
    ensure!(hook["failurePolicy"] == "Ignore", "{hook}");
    ensure!(hook["timeoutSeconds"] == 8, "{hook}");
    let args = rendered.container_args("Deployment", WEBHOOK, "webhook");
    ensure!(
        flag_value(&args, "--registry-timeout") == Some("6s"),
        "{args:?}"
    );
    Ok(())
}

#[test]
fn webhook_never_mutates_pods_in_the_release_namespace_or_kube_system() -> Result<()> {
    let hook_ns = |ns: &str, extra: &[&str]| -> Result<Vec<String>> {
        let c = combo("ns", extra);
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let rendered = Chart::new()?.template_in(ns, &args)?;
        excluded_namespaces(webhook_entry(&rendered)?)
    };
    ensure!(hook_ns(NAMESPACE, &[])? == ["aegis-system", "kube-system"]);
    ensure!(hook_ns("security", &[])? == ["security", "kube-system"]);
    ensure!(
        hook_ns(
            "security",
            &["webhook.excludeNamespaces={monitoring,kube-system}"]
        )? == ["security", "kube-system", "monitoring"]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Hardening
// ---------------------------------------------------------------------------------------

fn check_pod_hardening(owner: &str, spec: &Value) -> Result<()> {
    let psc = &spec["securityContext"];
    ensure!(psc["runAsNonRoot"] == true, "{owner}: pod runAsNonRoot");
    ensure!(
        psc["runAsUser"].as_i64().is_some_and(|u| u > 0),
        "{owner}: numeric non-root pod runAsUser"
    );
    ensure!(
        psc["seccompProfile"]["type"] == "RuntimeDefault",
        "{owner}: pod seccomp"
    );
    ensure!(
        spec["automountServiceAccountToken"].is_boolean(),
        "{owner}: automountServiceAccountToken must be explicit"
    );
    ensure!(
        spec["serviceAccountName"]
            .as_str()
            .is_some_and(|sa| sa != "default"),
        "{owner}: own ServiceAccount"
    );
    ensure!(
        spec["hostNetwork"].is_null() && spec["hostPID"].is_null(),
        "{owner}: host namespaces"
    );
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten();
    for c in containers {
        let name = format!("{owner} container {}", c["name"]);
        let sc = &c["securityContext"];
        ensure!(sc["runAsNonRoot"] == true, "{name}: runAsNonRoot");
        ensure!(
            sc["runAsUser"].as_i64().is_some_and(|u| u > 0),
            "{name}: numeric runAsUser"
        );
        ensure!(
            sc["allowPrivilegeEscalation"] == false,
            "{name}: privilege escalation"
        );
        ensure!(
            sc["readOnlyRootFilesystem"] == true,
            "{name}: read-only root"
        );
        ensure!(sc["privileged"] != true, "{name}: privileged");
        ensure!(
            sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
            "{name}: drop ALL"
        );
        ensure!(
            sc["capabilities"]["add"].is_null(),
            "{name}: adds capabilities"
        );
        ensure!(
            sc["seccompProfile"]["type"] == "RuntimeDefault",
            "{name}: seccomp"
        );
        let res = &c["resources"];
        ensure!(
            res["requests"]["cpu"].is_string() && res["requests"]["memory"].is_string(),
            "{name}: cpu and memory requests"
        );
        ensure!(res["limits"]["memory"].is_string(), "{name}: memory limit");
        ensure!(
            c["livenessProbe"].is_object() && c["readinessProbe"].is_object(),
            "{name}: liveness and readiness probes"
        );
        ensure!(
            c["image"]
                .as_str()
                .is_some_and(|i| i.contains(':') && !i.ends_with(":latest")),
            "{name}: image pinned by tag"
        );
        for mount in c["volumeMounts"].as_array().into_iter().flatten() {
            let path = mount["mountPath"].as_str().unwrap_or("");
            let writable = mount["readOnly"] != true;
            ensure!(
                !writable || path == "/var/lib/aegis" || path == "/tmp",
                "{name}: writable mount {path} (only the data dir and /tmp may be)"
            );
        }
    }
    Ok(())
}

#[test]
fn every_pod_and_container_is_hardened_in_every_combination() -> Result<()> {
    let (_ca, renders) = render_all()?;
    for (label, rendered) in &renders {
        let pods = rendered.pod_specs();
        ensure!(pods.len() >= 2, "`{label}`: expected Safe and webhook pods");
        for (owner, spec) in pods {
            check_pod_hardening(&owner, spec).with_context(|| label.to_string())?;
        }
    }
    Ok(())
}

#[test]
fn api_server_tokens_are_mounted_only_where_needed() -> Result<()> {
    let automount = |r: &Rendered, kind: &str, name: &str| -> Result<bool> {
        let doc = r
            .find(kind, name)
            .with_context(|| format!("no {kind} {name}"))?;
        doc["spec"]["template"]["spec"]["automountServiceAccountToken"]
            .as_bool()
            .context("automount not explicit")
    };
    let rendered = defaults()?;
    for sa in rendered.of_kind("ServiceAccount") {
        ensure!(
            sa["automountServiceAccountToken"] == false,
            "ServiceAccount {} automounts",
            name_of(sa)
        );
    }
    // The Safe needs TokenReviews and its root-key Secret.
    ensure!(automount(&rendered, "StatefulSet", SAFE)?);
    ensure!(!automount(&rendered, "Deployment", WEBHOOK)?);
    ensure!(!automount(&rendered, "Deployment", SENTINEL)?);
    // Reading imagePullSecrets needs the API.
    let with_pull = template(&["webhook.registry.pullSecrets=true"])?;
    ensure!(automount(&with_pull, "Deployment", WEBHOOK)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Secrets and TLS
// ---------------------------------------------------------------------------------------

#[test]
fn rendered_secrets_hold_only_generated_tls_material() -> Result<()> {
    let (_ca, renders) = render_all()?;
    for (label, rendered) in &renders {
        for doc in &rendered.docs {
            ensure!(
                doc["kind"] != "ConfigMap",
                "`{label}`: ConfigMap {} rendered; the chart ships no data",
                name_of(doc)
            );
            if doc["kind"] != "Secret" {
                continue;
            }
            let name = name_of(doc);
            ensure!(
                doc["type"] == "kubernetes.io/tls",
                "`{label}`: Secret {name} is not a TLS Secret"
            );
            ensure!(
                doc["stringData"].is_null(),
                "`{label}`: {name} has stringData"
            );
            let keys: BTreeSet<&str> = doc["data"]
                .as_object()
                .context("no data")?
                .keys()
                .map(String::as_str)
                .collect();
            ensure!(
                keys == BTreeSet::from(["ca.crt", "tls.crt", "tls.key"]),
                "`{label}`: Secret {name} has keys {keys:?}"
            );
            // Each is PEM the chart generated in this render: a CA, a certificate, its key.
            let ca = secret_data(doc, "ca.crt")?;
            let crt = secret_data(doc, "tls.crt")?;
            let key = secret_data(doc, "tls.key")?;
            ensure!(
                ca.starts_with("-----BEGIN CERTIFICATE-----"),
                "{name} ca.crt"
            );
            ensure!(
                crt.starts_with("-----BEGIN CERTIFICATE-----"),
                "{name} tls.crt"
            );
            ensure!(key.contains("PRIVATE KEY-----"), "{name} tls.key");
            ensure!(ca != crt, "{name}: certificate is its own CA");
        }
        // The root key is created by the Safe at run time, never by the chart.
        ensure!(
            !rendered
                .yaml
                .contains("kind: Secret\nmetadata:\n  name: aegis-safe-root-key"),
            "`{label}`: the root-key Secret is rendered"
        );
    }
    Ok(())
}

/// Completes a real TLS handshake (rustls, in memory) between a server holding
/// `cert`/`key` and a client that trusts only `ca` and connects to `server_name`.
fn tls_handshake(ca: &str, cert: &str, key: &str, server_name: &str) -> Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(ca?)?;
    }
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string())?;
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), name)?;
    let mut server = rustls::ServerConnection::new(Arc::new(server_config))?;
    for _ in 0..16 {
        pump(&mut client, &mut server)?;
        pump(&mut server, &mut client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    bail!("TLS handshake with {server_name} did not complete")
}

fn pump<A, B, DA, DB>(from: &mut A, to: &mut B) -> Result<()>
where
    A: std::ops::DerefMut<Target = rustls::ConnectionCommon<DA>>,
    B: std::ops::DerefMut<Target = rustls::ConnectionCommon<DB>>,
    DA: rustls::SideData,
    DB: rustls::SideData,
{
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf)?;
    }
    let mut rest = &buf[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest)?;
        to.process_new_packets()?;
    }
    Ok(())
}

#[test]
fn generated_ca_bundle_verifies_the_webhook_serving_certificate() -> Result<()> {
    let rendered = defaults()?;
    let hook = webhook_entry(&rendered)?;
    let bundle = base64::engine::general_purpose::STANDARD.decode(
        hook["clientConfig"]["caBundle"]
            .as_str()
            .context("no caBundle")?,
    )?;
    let secret = rendered
        .find("Secret", "aegis-webhook-tls")
        .context("no webhook TLS Secret")?;
    let ca = secret_data(secret, "ca.crt")?;
    ensure!(bundle == ca.as_bytes(), "caBundle is not the generated CA");
    // The name the API server dials: <service>.<namespace>.svc.
    let host = format!("{WEBHOOK}.{NAMESPACE}.svc");
    tls_handshake(
        &ca,
        &secret_data(secret, "tls.crt")?,
        &secret_data(secret, "tls.key")?,
        &host,
    )?;
    // The Deployment serves exactly that Secret.
    let deployment = rendered.find("Deployment", WEBHOOK).context("no webhook")?;
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    ensure!(
        volumes.as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["secret"]["secretName"] == "aegis-webhook-tls")),
        "webhook does not mount aegis-webhook-tls"
    );
    // And trusting the Safe's CA instead must fail: the check above is not vacuous.
    let safe = rendered
        .find("Secret", "aegis-safe-tls")
        .context("no Safe TLS")?;
    let wrong = tls_handshake(
        &secret_data(safe, "ca.crt")?,
        &secret_data(secret, "tls.crt")?,
        &secret_data(secret, "tls.key")?,
        &host,
    );
    ensure!(
        wrong.is_err(),
        "a foreign CA verified the webhook certificate"
    );
    Ok(())
}

#[test]
fn safe_certificate_is_valid_for_the_url_its_clients_are_given() -> Result<()> {
    let rendered = defaults()?;
    let secret = rendered
        .find("Secret", "aegis-safe-tls")
        .context("no Safe TLS")?;
    let webhook_args = rendered.container_args("Deployment", WEBHOOK, "webhook");
    let url = flag_value(&webhook_args, "--safe-url").context("no --safe-url")?;
    ensure!(
        url == format!("https://{SAFE}.{NAMESPACE}.svc:8443"),
        "{url}"
    );
    let sentinel = rendered
        .container("Deployment", SENTINEL, "sentinel")
        .context("no sentinel")?;
    let env: BTreeMap<&str, &str> = sentinel["env"]
        .as_array()
        .context("no env")?
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    ensure!(
        env.get("AEGIS_SAFE_URL") == Some(&url),
        "sentinel URL {env:?}"
    );
    let host = url
        .trim_start_matches("https://")
        .split(':')
        .next()
        .context("no host")?;
    tls_handshake(
        &secret_data(secret, "ca.crt")?,
        &secret_data(secret, "tls.crt")?,
        &secret_data(secret, "tls.key")?,
        host,
    )?;
    // Clients mount only ca.crt of that Secret, at the path they are told.
    let ca_file = flag_value(&webhook_args, "--safe-ca-file").context("no --safe-ca-file")?;
    ensure!(env.get("AEGIS_SAFE_CA_FILE") == Some(&ca_file), "{env:?}");
    for name in [WEBHOOK, SENTINEL] {
        let spec =
            &rendered.find("Deployment", name).context("deployment")?["spec"]["template"]["spec"];
        let volume = spec["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == "safe-ca"))
            .with_context(|| format!("{name}: no safe-ca volume"))?;
        ensure!(
            volume["secret"]["secretName"] == "aegis-safe-tls",
            "{name}: {volume}"
        );
        ensure!(
            volume["secret"]["items"] == serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]),
            "{name}: mounts more than ca.crt: {volume}"
        );
        let mount = spec["containers"][0]["volumeMounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "safe-ca"))
            .with_context(|| format!("{name}: safe-ca not mounted"))?;
        let dir = mount["mountPath"].as_str().context("mountPath")?;
        ensure!(format!("{dir}/ca.crt") == ca_file, "{name}: CA at {dir}");
    }
    Ok(())
}

#[test]
fn cert_manager_mode_issues_certificates_and_injects_the_ca_bundle() -> Result<()> {
    let rendered = template(&["safe.tls.mode=certManager", "webhook.tls.mode=certManager"])?;
    ensure!(
        rendered.of_kind("Secret").is_empty(),
        "no Secret is rendered in certManager mode"
    );
    for (name, svc) in [("aegis-safe-tls", SAFE), ("aegis-webhook-tls", WEBHOOK)] {
        let cert = rendered.find("Certificate", name).context(name)?;
        ensure!(cert["spec"]["secretName"] == name, "{cert}");
        ensure!(cert["spec"]["issuerRef"]["name"] == "aegis-ca", "{cert}");
        let host = format!("{svc}.{NAMESPACE}.svc");
        ensure!(
            cert["spec"]["dnsNames"]
                .as_array()
                .is_some_and(|d| d.iter().any(|n| n == host.as_str())),
            "{name} lacks {host}"
        );
    }
    ensure!(rendered.find("Issuer", "aegis-selfsigned").is_some());
    let ca = rendered
        .find("Certificate", "aegis-ca")
        .context("no CA Certificate")?;
    ensure!(ca["spec"]["isCA"] == true);
    let issuer = rendered
        .find("Issuer", "aegis-ca")
        .context("no CA Issuer")?;
    ensure!(issuer["spec"]["ca"]["secretName"] == "aegis-ca");
    let mwc = rendered
        .find("MutatingWebhookConfiguration", WEBHOOK)
        .context("no MWC")?;
    ensure!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == "aegis-system/aegis-webhook-tls",
        "{mwc}"
    );
    ensure!(webhook_entry(&rendered)?["clientConfig"]["caBundle"].is_null());

    // With an issuer of the user's, the chart creates none of its own.
    let external = template(&[
        "webhook.tls.mode=certManager",
        "webhook.tls.certManager.issuerRef.name=corp",
        "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
    ])?;
    ensure!(external.of_kind("Issuer").is_empty());
    let cert = external
        .find("Certificate", "aegis-webhook-tls")
        .context("cert")?;
    ensure!(
        cert["spec"]["issuerRef"]["kind"] == "ClusterIssuer",
        "{cert}"
    );
    Ok(())
}

#[test]
fn secret_mode_uses_the_named_secrets_and_the_given_ca_bundle() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_file = ca_bundle_file(dir.path())?;
    let ca = std::fs::read(&ca_file)?;
    let file = format!("file:webhook.tls.caBundle={}", ca_file.display());
    let rendered = template(&[
        "safe.tls.mode=secret",
        "safe.tls.secretName=corp-safe-tls",
        "webhook.tls.mode=secret",
        "webhook.tls.secretName=corp-webhook-tls",
        &file,
    ])?;
    ensure!(
        rendered.of_kind("Secret").is_empty(),
        "chart must not render TLS Secrets"
    );
    let bundle = base64::engine::general_purpose::STANDARD.decode(
        webhook_entry(&rendered)?["clientConfig"]["caBundle"]
            .as_str()
            .context("no caBundle")?,
    )?;
    ensure!(bundle == ca, "caBundle is not webhook.tls.caBundle");
    let volumes = |kind: &str, name: &str| -> Result<String> {
        let doc = rendered.find(kind, name).context("workload")?;
        Ok(doc["spec"]["template"]["spec"]["volumes"].to_string())
    };
    ensure!(volumes("StatefulSet", SAFE)?.contains("corp-safe-tls"));
    ensure!(volumes("Deployment", WEBHOOK)?.contains("corp-webhook-tls"));
    ensure!(volumes("Deployment", WEBHOOK)?.contains("corp-safe-tls"));
    ensure!(volumes("Deployment", SENTINEL)?.contains("corp-safe-tls"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------------------

fn rules_of<'a>(rendered: &'a Rendered, kind: &str, name: &str) -> Result<&'a Vec<Value>> {
    rendered
        .find(kind, name)
        .with_context(|| format!("no {kind} {name}"))?["rules"]
        .as_array()
        .context("no rules")
}

#[test]
fn safe_may_read_only_its_root_key_secret() -> Result<()> {
    let rendered = defaults()?;
    let rules = rules_of(&rendered, "Role", "aegis-safe-root-key")?;
    let safe_args = rendered.container_args("StatefulSet", SAFE, "safe");
    let secret = flag_value(&safe_args, "--root-key-secret").context("no --root-key-secret")?;
    for rule in rules {
        ensure!(
            rule["resources"] == serde_json::json!(["secrets"]),
            "{rule}"
        );
        let verbs = rule["verbs"].as_array().context("verbs")?;
        for verb in verbs {
            ensure!(verb == "get" || verb == "create", "Safe may {verb} Secrets");
            // create cannot carry resourceNames in RBAC; every other verb is pinned.
            if verb == "get" {
                ensure!(
                    rule["resourceNames"] == serde_json::json!([secret]),
                    "{rule}"
                );
            }
        }
    }
    ensure!(rules
        .iter()
        .any(|r| r["verbs"] == serde_json::json!(["create"])));
    let binding = rendered
        .find(
            "ClusterRoleBinding",
            "aegis-safe-aegis-system-auth-delegator",
        )
        .context("no auth-delegator binding")?;
    ensure!(binding["roleRef"]["name"] == "system:auth-delegator");
    ensure!(binding["subjects"][0]["name"] == SAFE);

    // Pre-created root key: no create at all. jwks mode: no TokenReviews.
    let locked = template(&[
        "safe.rootKey.allowCreate=false",
        "safe.tokenAuth=jwks",
        "safe.jwks.issuer=https://k",
        "safe.jwks.url=https://k/keys",
    ])?;
    let rules = rules_of(&locked, "Role", "aegis-safe-root-key")?;
    ensure!(
        rules.len() == 1 && rules[0]["verbs"] == serde_json::json!(["get"]),
        "{rules:?}"
    );
    ensure!(locked.of_kind("ClusterRoleBinding").is_empty());
    ensure!(locked.of_kind("ClusterRole").is_empty());
    Ok(())
}

#[test]
fn pull_secret_rbac_exists_only_when_registry_credentials_are_enabled() -> Result<()> {
    let rendered = defaults()?;
    ensure!(
        rendered.of_kind("ClusterRole").is_empty(),
        "ClusterRole without pullSecrets"
    );
    let enabled = template(&["webhook.registry.pullSecrets=true"])?;
    let rules = rules_of(
        &enabled,
        "ClusterRole",
        "aegis-webhook-aegis-system-pull-secrets",
    )?;
    ensure!(
        rules
            == &vec![
                serde_json::json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
            ],
        "{rules:?}"
    );
    let args = enabled.container_args("Deployment", WEBHOOK, "webhook");
    ensure!(args.iter().any(|a| a == "--pull-secrets"), "{args:?}");
    ensure!(!rendered
        .container_args("Deployment", WEBHOOK, "webhook")
        .iter()
        .any(|a| a.starts_with("--pull-secrets")));
    Ok(())
}

#[test]
fn sentinel_is_an_administrator_of_the_safe() -> Result<()> {
    let rendered = defaults()?;
    let safe_args = rendered.container_args("StatefulSet", SAFE, "safe");
    ensure!(
        flag_values(&safe_args, "--admin") == [aegis_core::names::DEFAULT_ADMIN],
        "{safe_args:?}"
    );
    let deployment = rendered
        .find("Deployment", SENTINEL)
        .context("no sentinel")?;
    let spec = &deployment["spec"]["template"]["spec"];
    ensure!(spec["serviceAccountName"] == SENTINEL);
    let audience = flag_value(&safe_args, "--audience").context("no --audience")?;
    let projected = spec["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "aegis-token"))
        .context("no aegis-token volume")?;
    let token = &projected["projected"]["sources"][0]["serviceAccountToken"];
    ensure!(token["audience"] == audience, "{token}");
    ensure!(token["expirationSeconds"] == 600, "{token}");
    let webhook_args = rendered.container_args("Deployment", WEBHOOK, "webhook");
    ensure!(flag_value(&webhook_args, "--token-audience") == Some(audience));
    let container = &spec["containers"][0];
    ensure!(
        container["args"] == serde_json::json!(["idle"]),
        "{container}"
    );
    ensure!(
        container["env"]
            .to_string()
            .contains(aegis_core::names::TOKEN_PATH),
        "sentinel token path"
    );
    // Without the sentinel, only the listed admins.
    let without = template(&["sentinel.enabled=false", "safe.admins={ops/admin}"])?;
    ensure!(without.find("Deployment", SENTINEL).is_none());
    let args = without.container_args("StatefulSet", SAFE, "safe");
    ensure!(flag_values(&args, "--admin") == ["ops/admin"], "{args:?}");
    Ok(())
}

#[test]
fn network_policies_render_only_when_enabled() -> Result<()> {
    ensure!(defaults()?.of_kind("NetworkPolicy").is_empty());
    let rendered = template(&[
        "networkPolicy.enabled=true",
        "networkPolicy.apiServerCIDRs={172.18.0.0/16}",
    ])?;
    let webhook = rendered
        .find("NetworkPolicy", WEBHOOK)
        .context("webhook policy")?;
    ensure!(
        webhook["spec"]["ingress"]
            == serde_json::json!([{"from": [{"ipBlock": {"cidr": "172.18.0.0/16"}}],
                                   "ports": [{"port": 8443, "protocol": "TCP"}]}]),
        "{webhook}"
    );
    let sentinel = rendered
        .find("NetworkPolicy", SENTINEL)
        .context("sentinel policy")?;
    ensure!(
        sentinel["spec"]["ingress"].is_null(),
        "sentinel must accept nothing"
    );
    let safe = rendered
        .find("NetworkPolicy", SAFE)
        .context("safe policy")?;
    ensure!(
        safe["spec"]["ingress"][0]["ports"][0]["port"] == 8443,
        "{safe}"
    );
    ensure!(
        safe["spec"]["ingress"]
            .as_array()
            .is_some_and(|i| i.len() == 1),
        "metrics closed"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Conflicting values
// ---------------------------------------------------------------------------------------

#[test]
fn conflicting_values_fail_the_render_with_what_to_change() -> Result<()> {
    let chart = Chart::new()?;
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let pem_set = format!("webhook.tls.caBundle={pem}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["safe.tls.secretName=x"],
            "safe.tls.secretName is set but safe.tls.mode is \"generate\"",
        ),
        (
            vec!["webhook.tls.mode=secret"],
            "webhook.tls.mode=secret needs webhook.tls.secretName",
        ),
        (
            vec!["webhook.tls.mode=secret", "webhook.tls.secretName=x"],
            "needs webhook.tls.caBundle",
        ),
        (
            vec![
                "webhook.tls.mode=secret",
                "webhook.tls.secretName=x",
                "webhook.tls.caBundle=TUlJQg==",
            ],
            "must be PEM",
        ),
        (
            vec!["safe.tls.certManager.issuerRef.name=corp"],
            "safe.tls.certManager.issuerRef.name is set but",
        ),
        (
            vec!["safe.tokenAuth=jwks", "safe.jwks.url=https://k"],
            "needs safe.jwks.issuer",
        ),
        (
            vec!["safe.tokenAuth=jwks", "safe.jwks.issuer=https://k"],
            "needs safe.jwks.url or safe.jwks.configMap",
        ),
        (
            vec![
                "safe.tokenAuth=jwks",
                "safe.jwks.issuer=https://k",
                "safe.jwks.url=https://k",
                "safe.jwks.configMap=c",
            ],
            "both set",
        ),
        (
            vec!["safe.jwks.url=https://k"],
            "safe.jwks.* is set but safe.tokenAuth is \"tokenreview\"",
        ),
        (
            vec!["webhook.registry.timeoutSeconds=5"],
            "must be less than webhook.timeoutSeconds",
        ),
        (
            vec!["webhook.replicas=1"],
            "webhook.pdb.enabled needs webhook.replicas >= 2",
        ),
        (
            vec!["networkPolicy.enabled=true"],
            "networkPolicy.enabled needs networkPolicy.apiServerCIDRs",
        ),
        (
            vec!["safe.admins={not-an-identity}"],
            "is not namespace/serviceaccount",
        ),
        (vec!["sentinel.enabled=false"], "no administrator"),
    ];
    for (sets, expected) in cases {
        let mut args = Vec::new();
        for set in &sets {
            args.push("--set");
            args.push(*set);
        }
        match chart.template(&args) {
            Err(HelmError::RenderFailed { stderr }) => ensure!(
                stderr.contains(expected),
                "{sets:?}: expected message containing {expected:?}, got: {stderr}"
            ),
            Ok(_) => bail!("{sets:?} rendered; it must fail with {expected:?}"),
            Err(other) => return Err(other.into()),
        }
    }
    // caBundle given where the chart computes it itself.
    match chart.template(&["--set-string", &pem_set]) {
        Err(HelmError::RenderFailed { stderr }) => ensure!(
            stderr.contains("webhook.tls.caBundle is set but webhook.tls.mode is \"generate\""),
            "{stderr}"
        ),
        other => bail!("caBundle in generate mode must fail, got {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Container arguments versus the real binaries
// ---------------------------------------------------------------------------------------

/// Every `--flag` a binary's `<subcommand> --help` mentions.
fn help_flags(binary: &str, subcommand: &[&str]) -> Result<BTreeSet<String>> {
    let path = tools::workspace_binary(binary)?;
    let out = tools::run(Command::new(&path).args(subcommand).arg("--help"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let flags: BTreeSet<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect();
    ensure!(
        !flags.is_empty(),
        "`{binary} {subcommand:?} --help` lists no flags:\n{text}"
    );
    Ok(flags)
}

fn rendered_flags(args: &[String]) -> Vec<String> {
    args.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect()
}

fn check_flags_exist(binary: &str, kind: &str, name: &str, container: &str) -> Result<()> {
    let known = help_flags(binary, &["serve"])?;
    let (_ca, renders) = render_all()?;
    let mut seen = BTreeSet::new();
    for (label, rendered) in &renders {
        let args = rendered.container_args(kind, name, container);
        ensure!(
            args.first().map(String::as_str) == Some("serve"),
            "`{label}`: {args:?}"
        );
        for flag in rendered_flags(&args) {
            ensure!(
                known.contains(&flag),
                "`{label}`: the chart passes {flag} but `{binary} serve --help` has no such flag \
                 (known: {known:?})"
            );
            seen.insert(flag);
        }
    }
    ensure!(seen.len() >= 8, "too few flags rendered: {seen:?}");
    Ok(())
}

#[test]
fn safe_container_args_are_flags_of_aegis_safe_serve() -> Result<()> {
    check_flags_exist(SAFE, "StatefulSet", SAFE, "safe")
}

#[test]
fn webhook_container_args_are_flags_of_aegis_webhook_serve() -> Result<()> {
    check_flags_exist(WEBHOOK, "Deployment", WEBHOOK, "webhook")
}

/// Runs the real binary with the rendered arguments, pointed at loopback and a scratch
/// directory. Argument parsing must succeed: clap exits 2 on a bad flag or value; any
/// later failure (no cluster, no certificate files here) or still running is fine.
fn check_args_accepted(binary: &str, args: &[String], scratch: &Path) -> Result<()> {
    let path = tools::workspace_binary(binary)?;
    let missing = scratch.join("absent.pem").display().to_string();
    let data = scratch.join("data").display().to_string();
    let args: Vec<String> = args
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--listen" | "--metrics-listen", _)) => {
                format!("{}=127.0.0.1:0", arg.split('=').next().unwrap_or(""))
            }
            Some(("--data-dir", _)) => format!("--data-dir={data}"),
            Some((flag @ ("--tls-cert" | "--tls-key" | "--safe-ca-file" | "--jwks-file"), _)) => {
                format!("{flag}={missing}")
            }
            _ => arg.clone(),
        })
        .collect();
    let mut cmd = Command::new(&path);
    cmd.args(&args).env_clear().env("PATH", "/usr/bin:/bin");
    match tools::run_with_deadline(&mut cmd, Duration::from_secs(5))? {
        Outcome::Exited(status, stderr) => ensure!(
            status.code() != Some(2),
            "`{binary} {}` was rejected by argument parsing:\n{stderr}",
            args.join(" ")
        ),
        Outcome::StillRunning(_) => {}
    }
    Ok(())
}

#[test]
fn rendered_args_are_accepted_by_the_real_binaries() -> Result<()> {
    let (_ca, renders) = render_all()?;
    let scratch = tempfile::tempdir()?;
    // The check is not vacuous: a flag the binaries do not have is rejected.
    for binary in [SAFE, WEBHOOK] {
        let bogus = ["serve".to_string(), "--no-such-flag=1".to_string()];
        ensure!(
            check_args_accepted(binary, &bogus, scratch.path()).is_err(),
            "{binary} accepted --no-such-flag"
        );
    }
    for (label, rendered) in &renders {
        check_args_accepted(
            SAFE,
            &rendered.container_args("StatefulSet", SAFE, "safe"),
            scratch.path(),
        )
        .with_context(|| label.to_string())?;
        check_args_accepted(
            WEBHOOK,
            &rendered.container_args("Deployment", WEBHOOK, "webhook"),
            scratch.path(),
        )
        .with_context(|| label.to_string())?;
    }
    Ok(())
}

#[test]
fn sentinel_command_and_probe_exist_in_the_aegis_cli() -> Result<()> {
    let rendered = defaults()?;
    let container = rendered
        .container("Deployment", SENTINEL, "sentinel")
        .context("no sentinel")?;
    let aegis = tools::workspace_binary("aegis")?;
    // `aegis idle` waits for `kubectl exec`; it must not exit by itself.
    let args: Vec<String> = container["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let mut idle = Command::new(&aegis);
    idle.args(&args).env_clear();
    match tools::run_with_deadline(&mut idle, Duration::from_secs(2))? {
        Outcome::StillRunning(_) => {}
        Outcome::Exited(status, stderr) => {
            bail!(
                "`aegis {}` exited ({status}) instead of idling:\n{stderr}",
                args.join(" ")
            )
        }
    }
    // The probe runs `/aegis version` in the image; here the same binary.
    let probe = container["livenessProbe"]["exec"]["command"]
        .as_array()
        .context("exec probe")?;
    ensure!(probe[0] == "/aegis", "{probe:?}");
    let probe_args: Vec<&str> = probe[1..].iter().filter_map(Value::as_str).collect();
    tools::run(Command::new(&aegis).args(&probe_args).env_clear())?;
    // The command NOTES.txt and docs/install.md tell administrators to run.
    tools::run(
        Command::new(&aegis)
            .args(["secret", "put", "--help"])
            .env_clear(),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Documentation that ships with the chart
// ---------------------------------------------------------------------------------------

#[test]
fn notes_give_the_next_three_commands() -> Result<()> {
    // Helm renders NOTES.txt only on install; render it as a template of a chart copy.
    let chart = Chart::new()?;
    let copy = tempfile::tempdir()?;
    copy_dir(chart.dir(), copy.path())?;
    let notes = std::fs::read_to_string(chart.dir().join("templates/NOTES.txt"))?;
    std::fs::write(
        copy.path().join("templates/_notes_probe.tpl"),
        format!("{{{{- define \"notes.probe\" -}}}}\n{notes}\n{{{{- end }}}}\n"),
    )?;
    std::fs::write(
        copy.path().join("templates/notes-probe.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include \"notes.probe\" . | quote }}\n",
    )?;
    let rendered = chart.at(copy.path()).template(&[])?;
    let text = rendered
        .find("ConfigMap", "notes")
        .and_then(|c| c["data"]["notes"].as_str())
        .context("NOTES did not render")?;
    for expected in [
        "kubectl exec -i -n aegis-system deploy/aegis-sentinel -- aegis secret put NS/APP GREETING",
        "\"aegis.shieldworks.io/inject\":\"true\"",
        "aegis\\.shieldworks\\.io/status",
        "kubectl logs -n NS deploy/DEPLOYMENT",
        "https://aegis-safe.aegis-system.svc:8443",
    ] {
        ensure!(text.contains(expected), "NOTES lacks {expected:?}:\n{text}");
    }
    let steps = ["\n1. ", "\n2. ", "\n3. "];
    ensure!(
        steps.iter().all(|s| text.contains(s)),
        "three numbered steps:\n{text}"
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Dotted paths of the keys in values.yaml, each with whether a `# --` comment
/// documents it (the helm-docs convention: the comment block right above the key).
fn documented_values(text: &str) -> Vec<(String, bool)> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    let mut doc_pending = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            doc_pending = false;
            continue;
        }
        if trimmed.starts_with('#') {
            if trimmed.starts_with("# --") {
                doc_pending = true;
            }
            continue;
        }
        if trimmed.starts_with('-') {
            doc_pending = false;
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        // Keys inside a documented block value (securityContext fields) belong to it.
        let inside_documented_value = stack
            .iter()
            .any(|(_, p)| out.iter().any(|(q, d): &(String, bool)| q == p && *d));
        let path = stack
            .last()
            .map(|(_, p)| format!("{p}.{key}"))
            .unwrap_or_else(|| key.to_string());
        if !inside_documented_value {
            out.push((path.clone(), doc_pending));
        }
        stack.push((indent, path));
        doc_pending = false;
    }
    out
}

fn table_has(readme: &str, path: &str) -> bool {
    readme.contains(&format!("| `{path}` |"))
}

#[test]
fn every_value_is_documented_in_values_yaml_and_the_chart_readme() -> Result<()> {
    let dir = tools::repo_root().join("helm/aegis");
    let values = std::fs::read_to_string(dir.join("values.yaml"))?;
    let readme = std::fs::read_to_string(dir.join("README.md"))?;
    let parsed: Value = serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&values)?)?;
    let keys = documented_values(&values);
    ensure!(keys.len() > 40, "parsed only {} keys", keys.len());
    for (path, documented) in &keys {
        // A parent map is documented through its leaves.
        let value = path.split('.').fold(&parsed, |v, k| &v[k]);
        let is_group =
            value.is_object() && keys.iter().any(|(p, _)| p.starts_with(&format!("{path}.")));
        if is_group {
            continue;
        }
        ensure!(*documented, "values.yaml: `{path}` has no `# --` comment");
        ensure!(
            table_has(&readme, path),
            "helm/aegis/README.md: no row for `{path}`"
        );
    }
    // And the README lists nothing that values.yaml does not have.
    let table = readme
        .split("<!-- VALUES:BEGIN -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- VALUES:END -->").next())
        .context("README has no VALUES:BEGIN/END markers")?;
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let key = line
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or("");
        ensure!(
            keys.iter().any(|(p, _)| p == key),
            "README row `{key}` is not in values.yaml"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// kind and the example
// ---------------------------------------------------------------------------------------

#[test]
fn kind_config_runs_a_kubernetes_version_with_match_conditions() -> Result<()> {
    let text = std::fs::read_to_string(tools::repo_root().join("kind-config.yaml"))?;
    let config: Value = serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&text)?)?;
    ensure!(config["kind"] == "Cluster" && config["apiVersion"] == "kind.x-k8s.io/v1alpha4");
    let nodes = config["nodes"].as_array().context("no nodes")?;
    ensure!(nodes.iter().any(|n| n["role"] == "control-plane"));
    for node in nodes {
        let image = node["image"].as_str().context("node image not pinned")?;
        let tag = image
            .strip_prefix("kindest/node:v")
            .context("not a kindest/node image")?;
        let tag = tag.split('@').next().unwrap_or(tag);
        let mut parts = tag.split('.').map(|p| p.parse::<u32>());
        let (major, minor) = (parts.next(), parts.next());
        ensure!(
            matches!((major, minor), (Some(Ok(1)), Some(Ok(m))) if m >= 30),
            "{image}: matchConditions need Kubernetes 1.30+"
        );
        ensure!(
            image.contains('@'),
            "{image}: pin the node image by digest too"
        );
    }
    Ok(())
}

#[test]
fn example_deployment_is_valid_annotated_and_prints_its_secret() -> Result<()> {
    let path = tools::repo_root().join("examples/deployment.yaml");
    let validation = helm::validate_files(std::slice::from_ref(&path))?;
    ensure!(validation.unknown_kinds.is_empty(), "{}", validation.output);
    let example = Rendered::parse(&std::fs::read_to_string(&path)?)?;
    let deployment = example.of_kind("Deployment");
    ensure!(deployment.len() == 1, "one Deployment expected");
    let template = &deployment[0]["spec"]["template"];
    ensure!(template["metadata"]["annotations"][aegis_core::names::ANNOTATION_INJECT] == "true");
    ensure!(template["spec"]["serviceAccountName"] == "app");
    let sa = example
        .find("ServiceAccount", "app")
        .context("no ServiceAccount app")?;
    let ns = sa["metadata"]["namespace"].as_str().context("namespace")?;
    ensure!(deployment[0]["metadata"]["namespace"] == ns);
    ensure!(
        example.find("Namespace", ns).is_some(),
        "creates its namespace"
    );
    let container = &template["spec"]["containers"][0];
    // An explicit command: no registry lookup needed; it prints the secret variable.
    ensure!(container["command"].is_array(), "{container}");
    ensure!(container.to_string().contains("GREETING"), "{container}");
    check_pod_hardening_of_example(&template["spec"])?;
    // The docs store the secret for exactly this workload.
    let install = std::fs::read_to_string(tools::repo_root().join("docs/install.md"))?;
    ensure!(install.contains(&format!("aegis secret put {ns}/app GREETING")));
    Ok(())
}

/// The example runs under the `restricted` Pod Security Standard, like injected pods.
fn check_pod_hardening_of_example(spec: &Value) -> Result<()> {
    ensure!(spec["securityContext"]["runAsNonRoot"] == true);
    ensure!(spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
    for c in spec["containers"].as_array().context("containers")? {
        let sc = &c["securityContext"];
        ensure!(sc["allowPrivilegeEscalation"] == false, "{c}");
        ensure!(
            sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
            "{c}"
        );
        ensure!(c["resources"]["requests"].is_object(), "{c}");
    }
    Ok(())
}

#[test]
fn validate_reports_schema_errors() -> Result<()> {
    // The validator really validates: a Service with an unknown field fails.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  portz: [1]\n",
    )?;
    match helm::validate_files(&[bad]) {
        Err(HelmError::Tool(tools::ToolError::Failed { stdout, .. })) => {
            ensure!(stdout.contains("portz"), "{stdout}");
            Ok(())
        }
        other => Err(anyhow!("invalid manifest passed validation: {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// Generated TLS stays stable across upgrades (lookup against an API server)
// ---------------------------------------------------------------------------------------

/// The two API server endpoints Helm's `lookup` uses: discovery of `v1` and GET of a
/// Secret in the release namespace. Serves `secrets` (name → Secret JSON), 404 otherwise,
/// on plain HTTP at 127.0.0.1 until dropped.
struct FakeApiServer {
    addr: std::net::SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    fn start(secrets: BTreeMap<String, Value>) -> Result<Self> {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                // Ignoring I/O errors: a failed exchange shows up as a failed render.
                let _ = stream.set_nonblocking(false);
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = request_line.split(' ').nth(1).unwrap_or("");
                let path = path.split('?').next().unwrap_or("");
                let prefix = format!("/api/v1/namespaces/{NAMESPACE}/secrets/");
                let (status, body) = if path == "/api/v1" {
                    (
                        "200 OK",
                        serde_json::json!({
                            "kind": "APIResourceList", "groupVersion": "v1",
                            "resources": [{"name": "secrets", "singularName": "secret",
                                           "namespaced": true, "kind": "Secret", "verbs": ["get"]}]
                        }),
                    )
                } else if let Some(secret) = path.strip_prefix(&prefix).and_then(|n| secrets.get(n))
                {
                    ("200 OK", secret.clone())
                } else {
                    (
                        "404 Not Found",
                        serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404
                        }),
                    )
                };
                let body = body.to_string();
                let _ = write!(
                    &stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// A kubeconfig pointing at this server.
    fn kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
                 users:\n- name: u\n  user:\n    token: test\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n\
                 current-context: c\n",
                self.addr
            ),
        )?;
        Ok(path)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // Ignoring a panic of the server thread: the test's own assertions decide.
            let _ = thread.join();
        }
    }
}

/// Renders like `helm upgrade` would: `lookup` reads from the API server at `kubeconfig`.
fn render_against(kubeconfig: &Path, helm_home: &Path) -> Result<Rendered> {
    let chart = Chart::new()?;
    let out = tools::run(
        Command::new(chart.helm())
            .args(["template", helm::RELEASE])
            .arg(chart.dir())
            .args(["--namespace", NAMESPACE, "--dry-run=server", "--kubeconfig"])
            .arg(kubeconfig)
            .env("HELM_CONFIG_HOME", helm_home)
            .env("HELM_CACHE_HOME", helm_home)
            .env("HELM_DATA_HOME", helm_home),
    )?;
    Ok(Rendered::parse(&String::from_utf8_lossy(&out.stdout))?)
}

#[test]
fn generated_tls_is_kept_across_upgrades() -> Result<()> {
    let first = defaults()?;
    let installed: BTreeMap<String, Value> = first
        .of_kind("Secret")
        .into_iter()
        .map(|s| (name_of(s).to_string(), s.clone()))
        .collect();
    ensure!(
        installed.len() == 2,
        "two TLS Secrets expected: {:?}",
        installed.keys()
    );
    let dir = tempfile::tempdir()?;

    // Upgrade: the Secrets exist, so the same CA, certificate and key are rendered again,
    // and caBundle still names the webhook's CA.
    let api = FakeApiServer::start(installed.clone())?;
    let upgrade = render_against(&api.kubeconfig(dir.path())?, dir.path())?;
    for (name, before) in &installed {
        let after = upgrade
            .find("Secret", name)
            .with_context(|| format!("{name} missing"))?;
        ensure!(after["data"] == before["data"], "{name} changed on upgrade");
    }
    let bundle = webhook_entry(&upgrade)?["clientConfig"]["caBundle"].clone();
    ensure!(
        bundle == installed["aegis-webhook-tls"]["data"]["ca.crt"],
        "caBundle changed"
    );
    drop(api);

    // Fresh install against the same API server without the Secrets: new material.
    let empty = FakeApiServer::start(BTreeMap::new())?;
    let fresh = render_against(&empty.kubeconfig(dir.path())?, dir.path())?;
    let fresh_ca = &fresh
        .find("Secret", "aegis-webhook-tls")
        .context("secret")?["data"]["ca.crt"];
    ensure!(
        *fresh_ca != installed["aegis-webhook-tls"]["data"]["ca.crt"],
        "CA reused without lookup"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The real binaries serve the chart's generated certificates
// ---------------------------------------------------------------------------------------

/// A child process killed (by its own PID) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        // Ignoring errors: the process may already have exited, which the test reports.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Connects to `127.0.0.1:port` as `server_name`, trusting only `ca`, sends a GET and
/// returns the HTTP status line. Retries the connection until `deadline`.
fn https_status(port: u16, server_name: &str, ca: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut sock = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(sock) => break sock,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(anyhow!("port {port} never opened: {e}")),
        }
    };
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from(server_name.to_string())?;
    let mut conn = rustls::ClientConnection::new(config, name)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    // A close without close_notify is fine here: only the status line matters.
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or("").to_string())
}

#[test]
fn real_binaries_serve_the_chart_generated_certificates() -> Result<()> {
    let rendered = defaults()?;
    let dir = tempfile::tempdir()?;
    let write = |secret: &str, key: &str| -> Result<PathBuf> {
        let doc = rendered
            .find("Secret", secret)
            .with_context(|| secret.to_string())?;
        let path = dir.path().join(format!("{secret}-{key}"));
        std::fs::write(&path, secret_data(doc, key)?)?;
        Ok(path)
    };
    let (safe_crt, safe_key, safe_ca) = (
        write("aegis-safe-tls", "tls.crt")?,
        write("aegis-safe-tls", "tls.key")?,
        write("aegis-safe-tls", "ca.crt")?,
    );
    let (hook_crt, hook_key) = (
        write("aegis-webhook-tls", "tls.crt")?,
        write("aegis-webhook-tls", "tls.key")?,
    );
    // The JWKS captured from a real API server (shared/ sits beside the repository).
    let jwks = tools::repo_root().join("../shared/fixtures/tokens/jwks.json");
    ensure!(jwks.is_file(), "fixture {} missing", jwks.display());
    let root_key = dir.path().join("root-key");
    std::fs::write(&root_key, [7u8; 32])?;
    let (safe_port, safe_metrics, hook_port) = (free_port()?, free_port()?, free_port()?);
    let webhook_args = rendered.container_args("Deployment", WEBHOOK, "webhook");
    let safe_url = flag_value(&webhook_args, "--safe-url").context("--safe-url")?;

    let _safe = Running(
        Command::new(tools::workspace_binary(SAFE)?)
            .arg("serve")
            .arg(format!("--listen=127.0.0.1:{safe_port}"))
            .arg(format!("--metrics-listen=127.0.0.1:{safe_metrics}"))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--tls-cert={}", safe_crt.display()))
            .arg(format!("--tls-key={}", safe_key.display()))
            .arg(format!("--root-key-file={}", root_key.display()))
            .arg("--token-auth=jwks")
            .arg(format!("--jwks-file={}", jwks.display()))
            .env_clear()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    let _webhook = Running(
        Command::new(tools::workspace_binary(WEBHOOK)?)
            .arg("serve")
            .arg(format!("--listen=127.0.0.1:{hook_port}"))
            .arg("--metrics-listen=off")
            .arg(format!("--tls-cert={}", hook_crt.display()))
            .arg(format!("--tls-key={}", hook_key.display()))
            .arg(format!("--safe-url={safe_url}"))
            .arg(format!("--safe-ca-file={}", safe_ca.display()))
            .arg("--shim-image=registry.invalid/aegis-init-shim:0")
            .env_clear()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    // The Safe, reached by the host name of the URL the chart gives its clients, with the
    // CA the clients mount: an unauthenticated fetch is refused by the Safe, over TLS.
    let safe_host = format!("{SAFE}.{NAMESPACE}.svc");
    let status = https_status(
        safe_port,
        &safe_host,
        &std::fs::read_to_string(&safe_ca)?,
        "/v1/secrets",
    )?;
    ensure!(
        status.starts_with("HTTP/1.1 401"),
        "Safe answered {status:?}"
    );
    // The webhook, as the API server reaches it: its Service name and the caBundle.
    let bundle = base64::engine::general_purpose::STANDARD.decode(
        webhook_entry(&rendered)?["clientConfig"]["caBundle"]
            .as_str()
            .context("caBundle")?,
    )?;
    let status = https_status(
        hook_port,
        &format!("{WEBHOOK}.{NAMESPACE}.svc"),
        &String::from_utf8(bundle)?,
        "/healthz",
    )?;
    ensure!(
        status.starts_with("HTTP/1.1 "),
        "webhook answered {status:?}"
    );
    Ok(())
}

#[test]
fn install_guide_matches_the_chart_the_makefile_and_kind_config() -> Result<()> {
    let root = tools::repo_root();
    let guide = std::fs::read_to_string(root.join("docs/install.md"))?;
    // The cluster name the guide loads images into is the one kind-config.yaml creates.
    let kind: Value = serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(
        &std::fs::read_to_string(root.join("kind-config.yaml"))?,
    )?)?;
    let cluster = kind["name"]
        .as_str()
        .context("kind-config.yaml has no name")?;
    ensure!(
        guide.contains(&format!("--name {cluster}")),
        "guide uses another cluster name"
    );
    // Every image the chart runs or injects is one the guide builds and loads.
    let rendered = defaults()?;
    let mut images: BTreeSet<String> = rendered
        .pod_specs()
        .iter()
        .flat_map(|(_, spec)| spec["containers"].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect();
    let webhook_args = rendered.container_args("Deployment", WEBHOOK, "webhook");
    images.insert(
        flag_value(&webhook_args, "--shim-image")
            .context("shim")?
            .to_string(),
    );
    ensure!(images.len() == 4, "{images:?}");
    let loaded: Vec<&str> = guide
        .split("for image in ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .context("guide has no `for image in ...; do kind load` loop")?
        .split_whitespace()
        .collect();
    for image in &images {
        let (repo, tag) = image.rsplit_once(':').context("untagged image")?;
        let (prefix, name) = repo.rsplit_once('/').context("no registry prefix")?;
        ensure!(
            loaded.contains(&name),
            "guide does not load {name}: {loaded:?}"
        );
        ensure!(
            guide.contains(&format!("\"{prefix}/$image:{tag}\"")),
            "guide loads another tag or registry than {image}"
        );
    }
    // Every `make TARGET` the guide mentions exists (make -n: print, do not run).
    let make = tools::find_tool(
        "make",
        "apt-get install make",
        tools::process_path().as_deref(),
    )?;
    // `make ...` as a command: at the start of a line, or opening inline code.
    let invocations = guide
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("make "))
        .chain(guide.split("`make ").skip(1));
    let targets: BTreeSet<&str> = invocations
        .flat_map(|rest| {
            rest.split(['`', '\n', '#'])
                .next()
                .unwrap_or("")
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        })
        .collect();
    ensure!(
        targets.contains("images") && targets.contains("docker-images"),
        "{targets:?}"
    );
    for target in targets {
        tools::run(Command::new(&make).current_dir(&root).args(["-n", target]))
            .with_context(|| format!("docs/install.md says `make {target}`"))?;
    }
    Ok(())
}
