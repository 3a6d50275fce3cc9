//! Wire types of the Safe's v1 HTTP API (see docs/api.md). Field names are the JSON
//! names of the design contract; the Safe, the shim and the CLI all use these types.

use crate::{SecretValue, Workload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `GET /v1/secrets`: the caller's own secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretsResponse {
    /// The workload the token identified.
    pub workload: Workload,
    /// Monotonic revision of this workload's secrets (bumps on every change).
    pub revision: u64,
    /// Key → value.
    pub secrets: BTreeMap<String, SecretValue>,
}

/// Body of `PUT /v1/workloads/{ns}/{sa}/secrets/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    /// The new value.
    pub value: SecretValue,
}

/// Reply to a PUT: metadata of the stored entry, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutSecretResponse {
    /// The key.
    pub key: String,
    /// Version of this key, 1 on creation, +1 on every update.
    pub version: u64,
    /// `sha256:<hex>` of the value's bytes.
    pub fingerprint: String,
    /// RFC 3339 UTC time of this version.
    pub updated_at: String,
}

/// Metadata of one stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMeta {
    /// The key.
    pub key: String,
    /// Version, as in [`PutSecretResponse`].
    pub version: u64,
    /// `sha256:<hex>` of the value.
    pub fingerprint: String,
    /// RFC 3339 UTC time the key was first created.
    pub created_at: String,
    /// RFC 3339 UTC time of the current version.
    pub updated_at: String,
}

/// One workload in `GET /v1/workloads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadEntry {
    /// The workload.
    pub workload: Workload,
    /// Its revision.
    pub revision: u64,
    /// Its keys, sorted by name.
    pub secrets: Vec<KeyMeta>,
}

/// `GET /v1/workloads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadList {
    /// Every workload that holds at least one secret, sorted.
    pub workloads: Vec<WorkloadEntry>,
}

/// Machine-readable error codes; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed (bad JSON, bad key, bad workload name).
    BadRequest,
    /// 401: no token, or the token is not valid.
    Unauthenticated,
    /// 403: the token is valid but the identity may not do this.
    Forbidden,
    /// 404: no such key or route.
    NotFound,
    /// 405: wrong method for the route.
    MethodNotAllowed,
    /// 409: the change conflicts with the current state (e.g. per-workload quota).
    Conflict,
    /// 413: the body or a value is larger than the documented limit.
    PayloadTooLarge,
    /// 503: not ready (recovering) or persistence failed.
    Unavailable,
    /// 500: an internal error; details are in the Safe's log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

/// `{"error":{"code":"...","message":"..."}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message; never contains a secret value.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// The claims of a Kubernetes projected ServiceAccount token that Aegis reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer.
    pub iss: String,
    /// `system:serviceaccount:NS:SA`.
    #[serde(default)]
    pub sub: String,
    /// Audience: Kubernetes always writes an array.
    pub aud: Audience,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Issued at.
    #[serde(default)]
    pub iat: Option<i64>,
    /// The `kubernetes.io` claim.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// A JWT audience: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "x"`
    One(String),
    /// `"aud": ["x", "y"]`
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` is among the audiences.
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Self::One(a) => a == aud,
            Self::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

/// `kubernetes.io` claim of a ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    /// Namespace of the ServiceAccount.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: NamedRef,
    /// The pod the token is bound to (projected tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<NamedRef>,
    /// The node (projected tokens on recent clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NamedRef>,
}

/// `{name, uid}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedRef {
    /// Object name.
    pub name: String,
    /// Object uid.
    #[serde(default)]
    pub uid: String,
}

impl TokenClaims {
    /// The workload named by the `kubernetes.io` claim.
    pub fn workload(&self) -> Result<Workload, crate::WorkloadError> {
        Workload::new(
            &self.kubernetes.namespace,
            &self.kubernetes.serviceaccount.name,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_contract_shape() {
        let b = ErrorBody::new(ErrorCode::PayloadTooLarge, "too big");
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"error":{"code":"payload_too_large","message":"too big"}}"#
        );
        assert_eq!(ErrorCode::PayloadTooLarge.status(), 413);
    }

    #[test]
    fn put_response_uses_camel_case() {
        let r = PutSecretResponse {
            key: "K".into(),
            version: 1,
            fingerprint: "sha256:00".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let j = serde_json::to_value(&r).unwrap();
        assert!(j.get("updatedAt").is_some());
    }

    #[test]
    fn put_request_rejects_unknown_fields() {
        assert!(serde_json::from_str::<PutSecretRequest>(r#"{"value":"x","extra":1}"#).is_err());
    }

    #[test]
    fn reads_kubernetes_token_claims() {
        let j = r#"{"aud":["aegis-safe"],"exp":2,"iat":1,"iss":"https://k","nbf":1,
          "kubernetes.io":{"namespace":"demo","serviceaccount":{"name":"app","uid":"u"}},
          "sub":"system:serviceaccount:demo:app"}"#;
        let c: TokenClaims = serde_json::from_str(j).unwrap();
        assert!(c.aud.contains("aegis-safe"));
        assert_eq!(c.workload().unwrap().to_string(), "demo/app");
    }
}
