//! `AdmissionReview` in, `AdmissionReview` out: the conversion around the decision.
//!
//! Invariants: every input gets a well-formed response (a malformed review is answered
//! `allowed: false` with a message, never an HTTP error the API server would turn into an
//! opaque failure); the response echoes the request's `uid`, `apiVersion` and `kind`;
//! `dryRun` requests get the same patch as real ones (lookups have no side effects).

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::entrypoint::EntrypointResolver;
use crate::mutate::{Deny, InjectConfig};

const DEFAULT_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

/// How a review ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Allowed without a patch (not opted in, already injected, not a CREATE).
    Skipped,
    /// Allowed with the injection patch.
    Injected,
    /// Refused with a message.
    Denied,
    /// The review itself could not be understood.
    Malformed,
}

impl Outcome {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Skipped => "skipped",
            Outcome::Injected => "injected",
            Outcome::Denied => "denied",
            Outcome::Malformed => "malformed",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: Option<String>,
    request: Option<RequestIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    uid: String,
    kind: Option<GroupVersionKind>,
    namespace: Option<String>,
    operation: Option<String>,
    object: Option<Pod>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
}

#[derive(Serialize)]
struct StatusOut {
    code: u16,
    message: String,
}

/// Reviews one request body and returns the response body and the outcome.
pub async fn review(
    body: &[u8],
    config: &InjectConfig,
    resolver: &EntrypointResolver,
) -> (Vec<u8>, Outcome) {
    let parsed: ReviewIn = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => return malformed(body, &format!("the AdmissionReview is malformed: {e}")),
    };
    let api_version = parsed.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION);
    let Some(request) = parsed.request else {
        return respond(
            api_version,
            "",
            Err((400, "the AdmissionReview has no request".to_owned())),
            Outcome::Malformed,
        );
    };
    let uid = request.uid.as_str();
    if let Some(kind) = &request.kind {
        if !kind.group.is_empty() || kind.kind != "Pod" {
            let message = format!(
                "aegis-webhook only reviews Pods, got {}/{}; check the MutatingWebhookConfiguration rules",
                kind.group, kind.kind
            );
            return respond(api_version, uid, Err((400, message)), Outcome::Malformed);
        }
    }
    if request
        .operation
        .as_deref()
        .is_some_and(|op| op != "CREATE")
    {
        return respond(api_version, uid, Ok(None), Outcome::Skipped);
    }
    let Some(mut pod) = request.object else {
        return respond(
            api_version,
            uid,
            Err((400, "the AdmissionReview has no object".to_owned())),
            Outcome::Malformed,
        );
    };
    // Pods created in the request's namespace often carry no namespace of their own yet;
    // pull Secrets are read from it.
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace = request.namespace.clone();
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or("");

    match crate::decide(&pod, config, resolver).await {
        Ok(None) => {
            tracing::debug!(%uid, %namespace, pod = %name, "not selected for injection");
            respond(api_version, uid, Ok(None), Outcome::Skipped)
        }
        Ok(Some(patch)) => match serde_json::to_vec(&patch) {
            Ok(json) => {
                tracing::info!(%uid, %namespace, pod = %name, operations = patch.0.len(), "injected");
                tracing::trace!(%uid, patch = %String::from_utf8_lossy(&json), "patch");
                let encoded = base64::engine::general_purpose::STANDARD.encode(json);
                respond(api_version, uid, Ok(Some(encoded)), Outcome::Injected)
            }
            Err(e) => {
                let message = format!("internal error encoding the patch: {e}");
                respond(api_version, uid, Err((500, message)), Outcome::Denied)
            }
        },
        Err(deny) => {
            tracing::info!(%uid, %namespace, pod = %name, reason = %deny, "denied");
            respond(
                api_version,
                uid,
                Err((403, deny_message(&deny))),
                Outcome::Denied,
            )
        }
    }
}

fn deny_message(deny: &Deny) -> String {
    format!("aegis: {deny}")
}

/// Answers a body that did not parse, echoing whatever `uid` and `apiVersion` can be found.
fn malformed(body: &[u8], message: &str) -> (Vec<u8>, Outcome) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_API_VERSION);
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    tracing::warn!(%uid, %message, "malformed AdmissionReview");
    respond(
        api_version,
        uid,
        Err((400, message.to_owned())),
        Outcome::Malformed,
    )
}

fn respond(
    api_version: &str,
    uid: &str,
    result: Result<Option<String>, (u16, String)>,
    outcome: Outcome,
) -> (Vec<u8>, Outcome) {
    let response = match result {
        Ok(patch) => ResponseOut {
            uid,
            allowed: true,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status: None,
        },
        Err((code, message)) => ResponseOut {
            uid,
            allowed: false,
            patch_type: None,
            patch: None,
            status: Some(StatusOut { code, message }),
        },
    };
    let review = ReviewOut {
        api_version,
        kind: REVIEW_KIND,
        response,
    };
    // Serializing these plain structs cannot fail; fall back to a minimal denial anyway.
    let body = serde_json::to_vec(&review).unwrap_or_else(|_| {
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":false}}"#
            .to_vec()
    });
    (body, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entrypoint::ResolverConfig;
    use serde_json::json;

    fn review_of(dry_run: bool) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "demo",
                "operation": "CREATE",
                "dryRun": dry_run,
                "object": {"metadata": {"generateName": "web-",
                                        "annotations": {"aegis.shieldworks.io/inject": "true"}},
                           "spec": {"containers": [{"name": "web", "command": ["/web"]}]}},
            },
        })
        .to_string()
        .into_bytes()
    }

    async fn run(body: &[u8]) -> (Value, Outcome) {
        let config = InjectConfig::new("shim:1", "https://safe", "PEM");
        let resolver = EntrypointResolver::new(ResolverConfig::default()).expect("resolver");
        let (out, outcome) = review(body, &config, &resolver).await;
        (
            serde_json::from_slice(&out).expect("JSON response"),
            outcome,
        )
    }

    #[tokio::test]
    async fn dry_run_reviews_get_the_same_patch() {
        let (real, outcome) = run(&review_of(false)).await;
        assert_eq!(outcome, Outcome::Injected);
        let (dry, _) = run(&review_of(true)).await;
        assert!(real["response"]["patch"].is_string());
        assert_eq!(real["response"]["patch"], dry["response"]["patch"]);
    }

    #[tokio::test]
    async fn review_without_request_is_malformed_and_echoes_the_api_version() {
        let (out, outcome) =
            run(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#).await;
        assert_eq!(outcome, Outcome::Malformed);
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(out["response"]["allowed"], false);
        assert_eq!(out["response"]["status"]["code"], 400);
    }

    #[tokio::test]
    async fn uid_is_echoed_even_when_the_object_is_not_a_pod() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u-9","object":{"spec":{"containers":7}}}}"#;
        let (out, outcome) = run(body).await;
        assert_eq!(outcome, Outcome::Malformed);
        assert_eq!(out["response"]["uid"], "u-9");
        assert_eq!(out["response"]["allowed"], false);
    }
}
