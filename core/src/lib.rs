//! The contract between Aegis components: the Safe's wire types, workload identity,
//! annotation and environment names, and the validation rules every part agrees on.
//!
//! This crate does no I/O, so the init-shim can depend on it without growing.

pub mod api;
pub mod duration;
pub mod names;
pub mod secret;
pub mod validate;
pub mod workload;

pub use api::{
    Audience, ErrorBody, ErrorCode, ErrorDetail, KeyMeta, KubernetesClaim, NamedRef,
    PutSecretRequest, PutSecretResponse, SecretsResponse, TokenClaims, WorkloadEntry, WorkloadList,
};
pub use duration::parse_duration;
pub use secret::SecretValue;
pub use validate::{Limits, ValidationError};
pub use workload::{Workload, WorkloadError};
