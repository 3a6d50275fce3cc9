//! `aegis inject`: run manifests through the webhook's own mutation, offline.
//!
//! Every pod template (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
//! ReplicationController, and `*List` items) is turned into the Pod the API server would
//! see, given to [`aegis_webhook::decide`] (the code path the webhook serves), and the
//! webhook's JSON Patch is applied to the template itself, so fields the Pod type does not
//! model survive untouched. Other documents pass through unchanged.

use crate::args::{InjectArgs, ManifestFormat};
use crate::CliError;
use aegis_core::names;
use aegis_webhook::{EntrypointResolver, InjectConfig};
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Read;
use std::process::ExitCode;

/// What happened to one pod template, for the summary on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `kind/name` of the document (and the template's path inside it).
    pub object: String,
    /// What was done.
    pub action: &'static str,
}

/// Runs `aegis inject`.
pub async fn run(args: InjectArgs) -> Result<ExitCode, CliError> {
    let input = read_input(&args.file)?;
    let ca = std::fs::read_to_string(&args.safe_ca_file).map_err(|e| {
        CliError::io(
            format!(
                "reading the Safe's CA from {} (set --safe-ca-file; the chart keeps it in the Safe's TLS Secret as ca.crt)",
                args.safe_ca_file.display()
            ),
            e,
        )
    })?;
    crate::client::tls_config(&ca)?;
    let mut config = InjectConfig::new(args.shim_image.clone(), args.safe_url.clone(), ca);
    config.token_audience = args.token_audience.clone();
    let resolver = EntrypointResolver::new(Default::default())
        .map_err(|e| CliError::Inject(format!("setting up registry lookups: {e}")))?;
    let format = args.output.unwrap_or_else(|| detect_format(&input));
    let (out, outcomes) = inject_text(
        &input,
        format,
        &config,
        &resolver,
        &args.namespace,
        args.annotate,
    )
    .await?;
    for o in &outcomes {
        eprintln!("{}: {}", o.object, o.action);
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn read_input(path: &std::path::Path) -> Result<String, CliError> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::io("reading stdin", e))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::io(format!("reading {}", path.display()), e))
    }
}

/// JSON when the text starts with `{` or `[`, YAML otherwise.
pub fn detect_format(text: &str) -> ManifestFormat {
    match text.trim_start().chars().next() {
        Some('{') | Some('[') => ManifestFormat::Json,
        _ => ManifestFormat::Yaml,
    }
}

/// Parses YAML (multi-document) or JSON into documents. Empty YAML documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, CliError> {
    if detect_format(text) == ManifestFormat::Json {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| CliError::Inject(format!("input is not valid JSON: {e}")))?;
        return Ok(vec![v]);
    }
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de)
            .map_err(|e| CliError::Inject(format!("document {} is not valid YAML: {e}", i + 1)))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Renders documents in the chosen format.
pub fn render_documents(docs: &[Value], format: ManifestFormat) -> Result<String, CliError> {
    let enc = |e: &dyn std::fmt::Display| CliError::Inject(format!("encoding output: {e}"));
    match format {
        ManifestFormat::Json => {
            let v = match docs {
                [one] => one.clone(),
                many => json!({"apiVersion": "v1", "kind": "List", "items": many}),
            };
            serde_json::to_string_pretty(&v)
                .map(|s| s + "\n")
                .map_err(|e| enc(&e))
        }
        ManifestFormat::Yaml => {
            let mut out = String::new();
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&serde_yaml::to_string(d).map_err(|e| enc(&e))?);
            }
            Ok(out)
        }
    }
}

/// Injects every pod template in `text`; returns the new text and what happened.
pub async fn inject_text(
    text: &str,
    format: ManifestFormat,
    config: &InjectConfig,
    resolver: &EntrypointResolver,
    default_namespace: &str,
    annotate: bool,
) -> Result<(String, Vec<Outcome>), CliError> {
    let mut docs = parse_documents(text)?;
    let mut outcomes = Vec::new();
    for doc in &mut docs {
        inject_document(
            doc,
            config,
            resolver,
            default_namespace,
            annotate,
            &mut outcomes,
        )
        .await?;
    }
    Ok((render_documents(&docs, format)?, outcomes))
}

/// JSON pointer of the pod template inside a document of this kind, if it has one.
pub fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "PodTemplate" => Some("/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn describe(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("unknown");
    let name = doc
        .pointer("/metadata/name")
        .or_else(|| doc.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    format!("{}/{}", kind.to_lowercase(), name)
}

async fn inject_document(
    doc: &mut Value,
    config: &InjectConfig,
    resolver: &EntrypointResolver,
    default_namespace: &str,
    annotate: bool,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), CliError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.ends_with("List") {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                Box::pin(inject_document(
                    item,
                    config,
                    resolver,
                    default_namespace,
                    annotate,
                    outcomes,
                ))
                .await?;
            }
        }
        return Ok(());
    }
    let object = describe(doc);
    let Some(ptr) = template_pointer(&kind) else {
        outcomes.push(Outcome {
            object,
            action: "passed through (no pod template)",
        });
        return Ok(());
    };
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_namespace)
        .to_string();
    let Some(template) = doc.pointer_mut(ptr) else {
        outcomes.push(Outcome {
            object,
            action: "passed through (no pod template)",
        });
        return Ok(());
    };
    let action = inject_template(template, &namespace, config, resolver, annotate)
        .await
        .map_err(|e| CliError::Inject(format!("{object}: {e}")))?;
    outcomes.push(Outcome { object, action });
    Ok(())
}

/// Injects one pod template (an object with `metadata` and `spec`) in place.
pub async fn inject_template(
    template: &mut Value,
    namespace: &str,
    config: &InjectConfig,
    resolver: &EntrypointResolver,
    annotate: bool,
) -> Result<&'static str, String> {
    if annotate {
        if let Some(ann) = child_object(template, "metadata")
            .and_then(|m| child_object(m, "annotations"))
            .and_then(Value::as_object_mut)
        {
            ann.insert(
                names::ANNOTATION_INJECT.to_string(),
                Value::String("true".into()),
            );
        }
    }
    let annotated = template
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(names::ANNOTATION_INJECT))
        .and_then(Value::as_str)
        == Some("true");
    if !annotated {
        return Ok("unchanged (not annotated; add --annotate to opt in)");
    }
    // The Pod the API server would see: the template's metadata and spec, in its namespace.
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(m) = metadata.as_object_mut() {
        m.entry("namespace")
            .or_insert_with(|| Value::String(namespace.to_string()));
    }
    let pod_json = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod_json)
        .map_err(|e| format!("the pod template is not a valid pod: {e}"))?;
    // The webhook's own decision; its patch addresses `/metadata` and `/spec`, which the
    // template has at the same places, so fields the Pod type does not model survive.
    let Some(patch) = aegis_webhook::decide(&pod, config, resolver)
        .await
        .map_err(|deny| deny.to_string())?
    else {
        return Ok("unchanged (already injected)");
    };
    json_patch::patch(template, &patch).map_err(|e| format!("applying the injection: {e}"))?;
    Ok("injected")
}

/// The object under `key`, created (or replaced, if it is not an object) when needed.
fn child_object<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let e = v.as_object_mut()?.entry(key).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_where_each_kind_keeps_its_pod_template() {
        assert_eq!(template_pointer("Pod"), Some(""));
        assert_eq!(template_pointer("Deployment"), Some("/spec/template"));
        assert_eq!(
            template_pointer("CronJob"),
            Some("/spec/jobTemplate/spec/template")
        );
        assert_eq!(template_pointer("PodTemplate"), Some("/template"));
        assert_eq!(template_pointer("ConfigMap"), None);
    }

    #[test]
    fn parses_multi_document_yaml_and_skips_empty_documents() {
        let docs = parse_documents("a: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": 2})]);
        assert!(parse_documents("a: [").is_err());
        assert_eq!(detect_format("  {\"a\":1}"), ManifestFormat::Json);
    }

    #[test]
    fn json_output_wraps_several_documents_in_a_list() {
        let out =
            render_documents(&[json!({"a":1}), json!({"b":2})], ManifestFormat::Json).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kind"], "List");
        assert_eq!(v["items"].as_array().unwrap().len(), 2);
    }
}
