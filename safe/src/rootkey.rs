//! Where the root key comes from: a file (local use) or a Kubernetes Secret.
//!
//! The Secret path: `get`; if it does not exist, `create` it with 32 fresh random bytes; if
//! the create loses a race (409 AlreadyExists, another replica or a restart won), read the
//! winner's key. An existing Secret is never overwritten: a different key would make every
//! file in the data directory unreadable. The key is never logged.

use crate::crypto::{CryptoError, RootKey};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Data key inside the Kubernetes Secret.
pub const SECRET_DATA_KEY: &str = "root-key";

/// Where to load the root key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKeySource {
    /// A file holding 32 raw bytes or their base64.
    File(PathBuf),
    /// A Kubernetes Secret (created if absent) in `namespace` (default: the client's).
    Secret {
        /// Secret name.
        name: String,
        /// Namespace; `None` uses the kube client's default (the pod's namespace).
        namespace: Option<String>,
    },
}

/// Why the root key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    /// The file could not be read.
    #[error("reading root key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written (dev mode creates it).
    #[error("writing root key file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key material is malformed.
    #[error("root key from {origin}: {source}")]
    Invalid {
        /// File path or Secret name.
        origin: String,
        /// Why.
        #[source]
        source: CryptoError,
    },
    /// The Secret exists but has no `root-key` entry.
    #[error("Secret {namespace}/{name} exists but has no data key {SECRET_DATA_KEY:?}; it is not overwritten. Delete it only if the data directory is empty, or add the original key")]
    SecretWithoutKey {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Talking to the Kubernetes API failed.
    #[error("Kubernetes API ({action} Secret {namespace}/{name}): {source}")]
    Kube {
        /// get or create.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The client error (boxed: it is large and this path is cold).
        #[source]
        source: Box<kube::Error>,
    },
    /// No Kubernetes client configuration was found.
    #[error("no Kubernetes client configuration (in-cluster or kubeconfig): {0}")]
    NoClient(#[source] Box<kube::Error>),
}

/// Reads a root key file.
pub fn load_file(path: &Path) -> Result<RootKey, RootKeyError> {
    let bytes =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| RootKeyError::Read {
            path: path.into(),
            source,
        })?);
    RootKey::from_file_contents(&bytes).map_err(|source| RootKeyError::Invalid {
        origin: path.display().to_string(),
        source,
    })
}

/// Loads the key from a file, creating the file with a fresh key (mode 0600) if it is
/// missing. Used by dev mode only.
pub fn load_or_create_file(path: &Path) -> Result<RootKey, RootKeyError> {
    if path.exists() {
        return load_file(path);
    }
    let key = RootKey::generate().map_err(|source| RootKeyError::Invalid {
        origin: path.display().to_string(),
        source,
    })?;
    write_private(path, key.expose()).map_err(|source| RootKeyError::Write {
        path: path.into(),
        source,
    })?;
    Ok(key)
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Gets the key from Secret `namespace/name`, creating the Secret if it does not exist.
pub async fn load_or_create_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<RootKey, RootKeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let kube_err = |action, source| RootKeyError::Kube {
        action,
        namespace: namespace.into(),
        name: name.into(),
        source: Box::new(source),
    };
    if let Some(s) = api.get_opt(name).await.map_err(|e| kube_err("get", e))? {
        tracing::info!(secret = %format!("{namespace}/{name}"), "root key loaded from Kubernetes Secret");
        return key_of(&s, namespace, name);
    }
    let key = RootKey::generate().map_err(|source| RootKeyError::Invalid {
        origin: format!("Secret {namespace}/{name}"),
        source,
    })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "aegis".to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "aegis.shieldworks.io/warning".to_string(),
                "Root key of the Aegis Safe. Never edit or delete: the data directory cannot be read without it.".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            SECRET_DATA_KEY.to_string(),
            ByteString(key.expose().to_vec()),
        )])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "created Kubernetes Secret with a new random root key");
            Ok(key)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Lost the race: another instance created it first. Use theirs.
            tracing::info!(secret = %format!("{namespace}/{name}"), "root key Secret was created concurrently; using it");
            let s = api.get(name).await.map_err(|e| kube_err("get", e))?;
            key_of(&s, namespace, name)
        }
        Err(e) => Err(kube_err("create", e)),
    }
}

fn key_of(s: &Secret, namespace: &str, name: &str) -> Result<RootKey, RootKeyError> {
    let data = s
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_DATA_KEY))
        .ok_or_else(|| RootKeyError::SecretWithoutKey {
            namespace: namespace.into(),
            name: name.into(),
        })?;
    RootKey::from_file_contents(&data.0).map_err(|source| RootKeyError::Invalid {
        origin: format!("Secret {namespace}/{name}"),
        source,
    })
}

/// Loads the key from its configured source.
pub async fn load(source: &RootKeySource) -> Result<RootKey, RootKeyError> {
    match source {
        RootKeySource::File(p) => load_file(p),
        RootKeySource::Secret { name, namespace } => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| RootKeyError::NoClient(Box::new(e)))?;
            let ns = namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            load_or_create_secret(client, &ns, name).await
        }
    }
}
