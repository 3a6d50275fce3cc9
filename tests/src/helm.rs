//! Rendering the Aegis Helm chart with a real Helm v3 binary and reading the result.
//!
//! The chart is rendered as `helm template aegis helm/aegis -n aegis-system` against a
//! fixed Kubernetes version, so tests see exactly what `helm install` would send to an
//! API server of that version. Rendered documents are parsed into `serde_json::Value`
//! (the shape the API server sees) and can be validated offline with
//! `kubernetes-validate`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::tools::{self, ToolError};

/// Release name used by every render (the documented install command uses it too).
pub const RELEASE: &str = "aegis";
/// Namespace used by every render.
pub const NAMESPACE: &str = "aegis-system";
/// Kubernetes version renders and validation target: the kind node image's minor.
pub const KUBE_VERSION: &str = "1.32.0";

/// Why rendering or validating the chart failed.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// A tool is missing or could not be run.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// `helm template` refused to render; `stderr` holds Helm's message.
    #[error("helm template failed: {stderr}")]
    RenderFailed {
        /// Helm's error output.
        stderr: String,
    },
    /// Helm printed something that is not YAML.
    #[error("rendered output is not YAML")]
    Yaml(#[source] serde_yaml::Error),
    /// A rendered document could not be converted to JSON.
    #[error("rendered document is not representable as JSON")]
    Json(#[source] serde_json::Error),
    /// Writing a temporary file for a tool failed.
    #[error("cannot write temporary file")]
    Io(#[source] std::io::Error),
}

/// The chart in this repository plus the Helm binary that renders it.
#[derive(Debug, Clone)]
pub struct Chart {
    helm: PathBuf,
    dir: PathBuf,
}

impl Chart {
    /// The chart at `helm/aegis`, rendered by the Helm found by [`tools::helm`].
    pub fn new() -> Result<Self, HelmError> {
        Ok(Self {
            helm: tools::helm()?,
            dir: tools::repo_root().join("helm/aegis"),
        })
    }

    /// Same Helm, another chart directory (a modified copy, for example).
    pub fn at(&self, dir: &Path) -> Self {
        Self {
            helm: self.helm.clone(),
            dir: dir.to_path_buf(),
        }
    }

    /// Path of the chart directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the Helm binary.
    pub fn helm(&self) -> &Path {
        &self.helm
    }

    /// `helm lint --strict` with extra arguments (e.g. `--set k=v`); returns Helm's output.
    pub fn lint(&self, extra: &[&str]) -> Result<String, HelmError> {
        let out = tools::run(
            Command::new(&self.helm)
                .arg("lint")
                .arg("--strict")
                .arg(&self.dir)
                .args(["--kube-version", KUBE_VERSION])
                .args(extra),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `helm template` with extra arguments; a refused render is [`HelmError::RenderFailed`].
    pub fn template(&self, extra: &[&str]) -> Result<Rendered, HelmError> {
        self.template_in(NAMESPACE, extra)
    }

    /// Like [`Chart::template`], in another release namespace.
    pub fn template_in(&self, namespace: &str, extra: &[&str]) -> Result<Rendered, HelmError> {
        let out = tools::run_unchecked(
            Command::new(&self.helm)
                .arg("template")
                .arg(RELEASE)
                .arg(&self.dir)
                .args(["--namespace", namespace])
                .args(["--kube-version", KUBE_VERSION])
                .args(extra),
        )?;
        if !out.status.success() {
            return Err(HelmError::RenderFailed {
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Rendered::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

/// The manifests of one render.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Helm's output, as printed.
    pub yaml: String,
    /// Each non-empty document, as the JSON the API server would receive.
    pub docs: Vec<Value>,
}

impl Rendered {
    /// Splits and parses Helm's multi-document output.
    pub fn parse(yaml: &str) -> Result<Self, HelmError> {
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).map_err(HelmError::Yaml)?;
            if value.is_null() {
                continue;
            }
            docs.push(serde_json::to_value(value).map_err(HelmError::Json)?);
        }
        Ok(Self {
            yaml: yaml.to_string(),
            docs,
        })
    }

    /// Every document of this `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    /// The document of this `kind` and `metadata.name`, if rendered.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }

    /// `(kind/name, pod spec)` of every workload that runs pods.
    pub fn pod_specs(&self) -> Vec<(String, &Value)> {
        self.docs
            .iter()
            .filter_map(|d| {
                let spec = match d["kind"].as_str()? {
                    "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
                        &d["spec"]["template"]["spec"]
                    }
                    "Pod" => &d["spec"],
                    _ => return None,
                };
                Some((format!("{}/{}", d["kind"].as_str()?, name_of(d)), spec))
            })
            .collect()
    }

    /// The container called `container` in the pod template of `kind/name`.
    pub fn container(&self, kind: &str, name: &str, container: &str) -> Option<&Value> {
        let doc = self.find(kind, name)?;
        doc["spec"]["template"]["spec"]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == container)
    }

    /// The string arguments of a container.
    pub fn container_args(&self, kind: &str, name: &str, container: &str) -> Vec<String> {
        self.container(kind, name, container)
            .and_then(|c| c["args"].as_array())
            .map(|args| {
                args.iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `metadata.name` of a document, or `""`.
pub fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

/// Value of `--flag=value` (or `--flag value`) in `args`, for the first occurrence.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    flag_values(args, flag).into_iter().next()
}

/// Every value of a repeatable `--flag`.
pub fn flag_values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    let prefix = format!("{flag}=");
    let mut values = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        if let Some(v) = arg.strip_prefix(&prefix) {
            values.push(v);
        } else if arg == flag {
            if let Some(next) = iter.peek().filter(|n| !n.starts_with("--")) {
                values.push(next.as_str());
                iter.next();
            }
        }
    }
    values
}

/// What `kubernetes-validate` said about a set of files.
#[derive(Debug, Clone)]
pub struct Validation {
    /// `(apiVersion, kind)` pairs it has no schema for (CRDs): not validated.
    pub unknown_kinds: Vec<(String, String)>,
    /// Its full output.
    pub output: String,
}

/// Validates every file in `files` strictly (unknown fields rejected) against the
/// Kubernetes [`KUBE_VERSION`] schemas, in one `kubernetes-validate` process.
/// Documents of kinds without a bundled schema (CRDs) are reported, not failed.
pub fn validate_files(files: &[PathBuf]) -> Result<Validation, HelmError> {
    let tool = tools::kubernetes_validate()?;
    let out = tools::run(
        Command::new(tool)
            .args(["--kubernetes-version", KUBE_VERSION, "--strict", "--quiet"])
            .args(files),
    )?;
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let unknown_kinds = output
        .lines()
        .filter_map(|line| {
            let rest = line.split("Couldn't find schema for kind ").nth(1)?;
            let (kind, rest) = rest.split_once(" with api version ")?;
            let api = rest.split(' ').next()?;
            Some((api.to_string(), kind.to_string()))
        })
        .collect();
    Ok(Validation {
        unknown_kinds,
        output,
    })
}

/// Writes each render to `dir` and validates them all with [`validate_files`].
pub fn validate_renders(
    dir: &Path,
    renders: &[(&str, &Rendered)],
) -> Result<Validation, HelmError> {
    let mut files = Vec::new();
    for (label, rendered) in renders {
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = dir.join(format!("{}-{safe}.yaml", files.len()));
        std::fs::write(&path, &rendered.yaml).map_err(HelmError::Io)?;
        files.push(path);
    }
    validate_files(&files)
}
