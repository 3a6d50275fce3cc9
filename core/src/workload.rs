//! Workload identity: a Kubernetes ServiceAccount `(namespace, serviceAccountName)`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a workload name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The text is not of the form `NAMESPACE/SERVICEACCOUNT`.
    #[error("workload must be NAMESPACE/SERVICEACCOUNT, got {0:?}")]
    Shape(String),
    /// The namespace is not a DNS-1123 label.
    #[error("namespace {0:?} is not a valid Kubernetes namespace (lowercase letters, digits and '-', at most 63, starting and ending alphanumeric)")]
    Namespace(String),
    /// The ServiceAccount name is not a DNS-1123 subdomain.
    #[error("service account {0:?} is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', at most 253)")]
    ServiceAccount(String),
}

/// A workload: the ServiceAccount whose pods share a set of secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    /// Kubernetes namespace.
    pub namespace: String,
    /// ServiceAccount name.
    #[serde(rename = "serviceAccount")]
    pub service_account: String,
}

impl Workload {
    /// Builds a workload after validating both names.
    pub fn new(namespace: &str, service_account: &str) -> Result<Self, WorkloadError> {
        if !is_dns1123_label(namespace) {
            return Err(WorkloadError::Namespace(namespace.to_string()));
        }
        if !is_dns1123_subdomain(service_account) {
            return Err(WorkloadError::ServiceAccount(service_account.to_string()));
        }
        Ok(Self {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// Parses a Kubernetes username `system:serviceaccount:NS:SA` (TokenReview's answer).
    pub fn from_username(username: &str) -> Option<Self> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (ns, sa) = rest.split_once(':')?;
        Self::new(ns, sa).ok()
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

impl FromStr for Workload {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ns, sa) = s
            .split_once('/')
            .ok_or_else(|| WorkloadError::Shape(s.to_string()))?;
        if sa.contains('/') {
            return Err(WorkloadError::Shape(s.to_string()));
        }
        Self::new(ns, sa)
    }
}

/// DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_slash_service_account() {
        let w: Workload = "demo/app".parse().unwrap();
        assert_eq!(w, Workload::new("demo", "app").unwrap());
        assert_eq!(w.to_string(), "demo/app");
    }

    #[test]
    fn rejects_bad_shapes_and_names() {
        assert!(matches!(
            "demo".parse::<Workload>(),
            Err(WorkloadError::Shape(_))
        ));
        assert!(matches!(
            "a/b/c".parse::<Workload>(),
            Err(WorkloadError::Shape(_))
        ));
        assert!(matches!(
            "Demo/app".parse::<Workload>(),
            Err(WorkloadError::Namespace(_))
        ));
        assert!(matches!(
            "demo/".parse::<Workload>(),
            Err(WorkloadError::ServiceAccount(_))
        ));
        assert!(matches!(
            "-x/app".parse::<Workload>(),
            Err(WorkloadError::Namespace(_))
        ));
        assert!("demo/app.v2".parse::<Workload>().is_ok());
    }

    #[test]
    fn parses_token_review_usernames() {
        assert_eq!(
            Workload::from_username("system:serviceaccount:demo:app"),
            Some(Workload::new("demo", "app").unwrap())
        );
        assert_eq!(Workload::from_username("kubernetes-admin"), None);
    }

    #[test]
    fn serialises_with_camel_case_service_account() {
        let w = Workload::new("demo", "app").unwrap();
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"namespace":"demo","serviceAccount":"app"}"#
        );
    }
}
