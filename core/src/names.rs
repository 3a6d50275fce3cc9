//! Names that cross component boundaries: annotations, environment variables, paths,
//! defaults. Changing one of these is a breaking change for users' manifests.

/// Pod annotation that opts a pod in: value must be exactly `"true"`.
pub const ANNOTATION_INJECT: &str = "aegis.shieldworks.io/inject";
/// Optional pod annotation: comma-separated names of the containers to wrap.
pub const ANNOTATION_CONTAINERS: &str = "aegis.shieldworks.io/containers";
/// Annotation the webhook writes on pods it mutated.
pub const ANNOTATION_STATUS: &str = "aegis.shieldworks.io/status";
/// Value of [`ANNOTATION_STATUS`] after injection.
pub const STATUS_INJECTED: &str = "injected";

/// Base URL of the Safe, e.g. `https://aegis-safe.aegis-system.svc:8443`.
pub const ENV_SAFE_URL: &str = "AEGIS_SAFE_URL";
/// The Safe's CA certificate(s), PEM, inline.
pub const ENV_SAFE_CA: &str = "AEGIS_SAFE_CA";
/// The Safe's CA certificate(s), PEM, as a file path.
pub const ENV_SAFE_CA_FILE: &str = "AEGIS_SAFE_CA_FILE";
/// Path of the projected ServiceAccount token.
pub const ENV_TOKEN_FILE: &str = "AEGIS_TOKEN_FILE";
/// Fetch deadline of the shim, a duration such as `30s`.
pub const ENV_FETCH_TIMEOUT: &str = "AEGIS_FETCH_TIMEOUT";
/// Log filter of the shim (`error`, `warn`, `info`, `debug`).
pub const ENV_LOG: &str = "AEGIS_LOG";
/// Every variable with this prefix is configuration for Aegis and is removed before exec.
pub const ENV_PREFIX: &str = "AEGIS_";

/// A pod variable whose value is exactly `aegis:KEY` is replaced by the secret `KEY`.
pub const SECRET_REF_PREFIX: &str = "aegis:";

/// Default token audience the Safe expects and the webhook requests.
pub const DEFAULT_AUDIENCE: &str = "aegis-safe";
/// Default lifetime of the projected token, seconds.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// Default admin ServiceAccount.
pub const DEFAULT_ADMIN: &str = "aegis-system/aegis-sentinel";

/// Name of the memory-backed volume holding the shim.
pub const VOLUME_BIN: &str = "aegis-bin";
/// Name of the projected token volume.
pub const VOLUME_TOKEN: &str = "aegis-token";
/// Mount path of [`VOLUME_BIN`].
pub const BIN_DIR: &str = "/aegis/bin";
/// Path of the shim inside injected containers.
pub const SHIM_PATH: &str = "/aegis/bin/aegis-init-shim";
/// Mount path of [`VOLUME_TOKEN`].
pub const TOKEN_DIR: &str = "/var/run/secrets/aegis";
/// File name of the token inside [`TOKEN_DIR`].
pub const TOKEN_FILE_NAME: &str = "token";
/// Full token path inside injected containers.
pub const TOKEN_PATH: &str = "/var/run/secrets/aegis/token";
/// Name of the injected init container.
pub const INIT_CONTAINER_NAME: &str = "aegis-init";
/// Binary name of the shim.
pub const SHIM_BINARY: &str = "aegis-init-shim";
