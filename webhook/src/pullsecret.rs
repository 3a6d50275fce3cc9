//! Registry credentials from a pod's `imagePullSecrets`.
//!
//! The webhook reads the named Secrets (type `kubernetes.io/dockerconfigjson` or the legacy
//! `kubernetes.io/dockercfg`) in the pod's namespace through a [`PullSecretSource`]: the
//! Kubernetes API in a cluster ([`KubeSecrets`], needs `get` on `secrets`), anything else in
//! tests. Credentials are matched to an image the way the kubelet does: by registry host
//! (with `*.` wildcards) and optional repository path prefix, most specific first.
//!
//! Invariant: passwords are held only inside [`RegistryAuth`], whose `Debug` redacts them,
//! and are never logged.

use std::collections::HashMap;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    /// The API server refused or failed the Secret read.
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    Api {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The Secret exists but holds no usable docker configuration.
    #[error("Secret {namespace}/{name} is not a valid docker config: {reason}")]
    Malformed {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where pull Secrets come from. `Ok(None)` means the Secret does not exist (the kubelet
/// ignores missing pull secrets, and so does the webhook).
pub trait PullSecretSource: Send + Sync {
    /// Reads Secret `name` in `namespace`.
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>, PullSecretError>>;
}

/// Reads pull Secrets through the Kubernetes API (`get secrets` in the pod's namespace).
#[derive(Clone)]
pub struct KubeSecrets {
    client: kube::Client,
}

impl KubeSecrets {
    /// Uses an existing client (in-cluster or kubeconfig).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl PullSecretSource for KubeSecrets {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>, PullSecretError>> {
        Box::pin(async move {
            let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), namespace);
            api.get_opt(name)
                .await
                .map_err(|source| PullSecretError::Api {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source,
                })
        })
    }
}

/// Credentials for one registry entry of a docker config.
#[derive(Clone)]
pub struct Credential {
    /// Host pattern, lowercase, without scheme; may start with `*.`.
    host: String,
    /// Repository path prefix (empty: whole registry).
    path: String,
    auth: RegistryAuth,
}

/// All credentials found in a pod's pull Secrets, most specific entry first.
#[derive(Clone, Default)]
pub struct Credentials {
    entries: Vec<Credential>,
}

impl Credentials {
    /// Parses the Secrets in the order the pod lists them.
    pub fn from_secrets(
        namespace: &str,
        secrets: &[(String, Secret)],
    ) -> (Self, Vec<PullSecretError>) {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (name, secret) in secrets {
            match parse_secret(secret) {
                Ok(found) => entries.extend(found),
                Err(reason) => errors.push(PullSecretError::Malformed {
                    namespace: namespace.to_owned(),
                    name: name.clone(),
                    reason,
                }),
            }
        }
        // Stable: among equally specific entries the pod's order wins.
        entries.sort_by_key(|c: &Credential| std::cmp::Reverse(c.path.len()));
        (Self { entries }, errors)
    }

    /// Number of registry entries found.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry was found.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credential for `registry` (as in the image reference, e.g. `ghcr.io` or
    /// `127.0.0.1:5000`) and `repository`, or anonymous access.
    pub fn for_image(&self, registry: &str, repository: &str) -> RegistryAuth {
        let host = normalize_host(registry);
        self.entries
            .iter()
            .find(|c| {
                host_matches(&c.host, &host)
                    && (c.path.is_empty()
                        || repository == c.path
                        || repository.starts_with(&format!("{}/", c.path)))
            })
            .map_or(RegistryAuth::Anonymous, |c| c.auth.clone())
    }
}

/// `.dockerconfigjson`: `{"auths": {"host": {...}}}`.
#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

/// One registry entry. Not `Debug`: it holds a password.
#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// base64 of `user:password`.
    #[serde(default)]
    auth: Option<String>,
}

fn parse_secret(secret: &Secret) -> Result<Vec<Credential>, String> {
    let data = secret.data.as_ref();
    let field = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.as_slice());
    let auths = if let Some(json) = field(".dockerconfigjson") {
        serde_json::from_slice::<DockerConfigJson>(json)
            .map_err(|e| format!(".dockerconfigjson is not valid JSON: {e}"))?
            .auths
    } else if let Some(json) = field(".dockercfg") {
        serde_json::from_slice::<HashMap<String, DockerAuth>>(json)
            .map_err(|e| format!(".dockercfg is not valid JSON: {e}"))?
    } else {
        return Err("it has neither .dockerconfigjson nor .dockercfg".to_owned());
    };
    let mut out = Vec::with_capacity(auths.len());
    for (key, entry) in auths {
        let (username, password) = match (entry.username, entry.password, entry.auth) {
            (Some(u), Some(p), _) if !u.is_empty() => (u, p),
            (_, _, Some(auth)) if !auth.is_empty() => decode_auth(&auth).ok_or_else(|| {
                format!("the `auth` of entry {key:?} is not base64 of user:password")
            })?,
            _ => continue,
        };
        let (host, path) = split_key(&key);
        out.push(Credential {
            host,
            path,
            auth: RegistryAuth::Basic(username, password),
        });
    }
    Ok(out)
}

fn decode_auth(auth: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `https://host:port/path/` → (`host:port`, `path`), Docker Hub aliases unified.
fn split_key(key: &str) -> (String, String) {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    let host = normalize_host(host);
    let path = path.trim_matches('/');
    // Keys like `https://index.docker.io/v1/` or `https://host/v2/` name the registry API
    // version, not a repository prefix.
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    (host, path.to_owned())
}

/// Docker Hub's canonical registry host.
const DOCKER_HUB: &str = "index.docker.io";

fn normalize_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        // `*.example.com` matches exactly one more label, like the kubelet's glob.
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|h| h.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(key: &str, json: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(json.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn basic(auth: RegistryAuth) -> Option<(String, String)> {
        match auth {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn auth_field_and_username_password_are_both_understood() {
        let json = r#"{"auths":{
            "https://a.example:5000/v2/":{"auth":"dTE6cDE="},
            "b.example":{"username":"u2","password":"p2"}}}"#;
        let (creds, errors) =
            Credentials::from_secrets("ns", &[("s".into(), secret(".dockerconfigjson", json))]);
        assert!(errors.is_empty());
        assert_eq!(
            basic(creds.for_image("a.example:5000", "x/y")),
            Some(("u1".into(), "p1".into()))
        );
        assert_eq!(
            basic(creds.for_image("B.example", "z")),
            Some(("u2".into(), "p2".into()))
        );
        assert!(basic(creds.for_image("c.example", "z")).is_none());
    }

    #[test]
    fn docker_hub_aliases_and_wildcards_and_path_prefixes_match() {
        let json = r#"{"https://index.docker.io/v1/":{"auth":"aHViOnB3"},
            "*.corp.example":{"username":"w","password":"x"},
            "reg.example/team":{"username":"team","password":"t"},
            "reg.example":{"username":"all","password":"a"}}"#;
        let (creds, _) =
            Credentials::from_secrets("ns", &[("s".into(), secret(".dockercfg", json))]);
        assert_eq!(
            basic(creds.for_image("docker.io", "library/nginx")).map(|c| c.0),
            Some("hub".into())
        );
        assert_eq!(
            basic(creds.for_image("eu.corp.example", "a")).map(|c| c.0),
            Some("w".into())
        );
        assert!(basic(creds.for_image("a.b.corp.example", "a")).is_none());
        assert_eq!(
            basic(creds.for_image("reg.example", "team/app")).map(|c| c.0),
            Some("team".into())
        );
        assert_eq!(
            basic(creds.for_image("reg.example", "teamx/app")).map(|c| c.0),
            Some("all".into())
        );
    }

    #[test]
    fn malformed_secret_is_reported_with_its_name() {
        let (creds, errors) =
            Credentials::from_secrets("ns", &[("bad".into(), secret("other", "{}"))]);
        assert!(creds.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("ns/bad"), "{}", errors[0]);
    }
}
