//! The captured AdmissionReviews (`../shared/fixtures/admission/`), driven over real HTTPS
//! through the real router; patched pods validated against the Kubernetes schema.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{
    fixture, https_client, kubernetes_validate, patch_of, post_review, Files, Registry,
    RunningServer,
};

/// The pod of a review after applying the response's patch, as the API server would.
fn patched_pod(review: &Value, response: &Value) -> Value {
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(response)).expect("patch applies to the captured pod");
    pod
}

/// `kubernetes-validate` needs a name; controller-created pods only have `generateName`
/// at admission (the API server assigns the name afterwards), so the test gives one.
fn named(mut pod: Value) -> Value {
    if pod["metadata"]["name"].is_null() {
        let generated = format!(
            "{}test1",
            pod["metadata"]["generateName"].as_str().unwrap_or("pod-")
        );
        pod["metadata"]["name"] = json!(generated);
    }
    pod
}

fn assert_echoes(review: &Value, response: &Value) {
    assert_eq!(response["apiVersion"], review["apiVersion"]);
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], review["request"]["uid"]);
}

#[tokio::test]
async fn captured_pod_with_command_is_injected_and_still_valid() {
    let files = Files::new();
    let server = RunningServer::start(files.config()).await;
    let client = https_client(&[&files.ca.pem], server.addr);
    let review = fixture("pod-from-deployment-with-command.json");

    let response = post_review(&client, &server, &review).await;
    assert_echoes(&review, &response);
    assert_eq!(response["response"]["allowed"], true);
    let pod = patched_pod(&review, &response);

    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["/aegis/bin/aegis-init-shim"]));
    assert_eq!(
        container["args"],
        json!(["--", "/app/serve", "--port", "8080"])
    );
    assert_eq!(container["env"][1]["value"], files.safe_ca_pem.as_str());
    // The API server's own projected volume and mount are kept, ours appended.
    assert_eq!(
        container["volumeMounts"][0]["name"],
        "kube-api-access-4856x"
    );
    assert_eq!(pod["spec"]["volumes"][0]["name"], "kube-api-access-4856x");
    assert_eq!(
        pod["spec"]["initContainers"][0]["image"],
        support::SHIM_IMAGE
    );
    assert_eq!(
        pod["metadata"]["annotations"]["aegis.shieldworks.io/status"],
        "injected"
    );
    kubernetes_validate(&named(pod.clone()));

    // Re-invocation (reinvocationPolicy: IfNeeded) over the patched pod: no second patch.
    let mut again = review.clone();
    again["request"]["object"] = pod;
    let response = post_review(&client, &server, &again).await;
    assert_eq!(response["response"]["allowed"], true);
    assert!(response["response"].get("patch").is_none(), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn captured_pod_without_annotation_is_allowed_without_patch() {
    let files = Files::new();
    let server = RunningServer::start(files.config()).await;
    let client = https_client(&[&files.ca.pem], server.addr);
    let review = fixture("pod-not-annotated.json");
    let response = post_review(&client, &server, &review).await;
    assert_echoes(&review, &response);
    assert_eq!(response["response"]["allowed"], true);
    assert!(response["response"].get("patch").is_none());
    assert!(response["response"].get("patchType").is_none());
}

#[tokio::test]
async fn captured_pod_without_command_is_denied_when_its_registry_is_unreachable() {
    let files = Files::new();
    let mut config = files.config();
    config.registry_timeout = Duration::from_millis(800);
    let server = RunningServer::start(config).await;
    let client = https_client(&[&files.ca.pem], server.addr);
    let review = fixture("pod-from-deployment-without-command.json");
    let response = post_review(&client, &server, &review).await;
    assert_echoes(&review, &response);
    assert_eq!(response["response"]["allowed"], false);
    assert_eq!(response["response"]["status"]["code"], 403);
    let message = response["response"]["status"]["message"]
        .as_str()
        .unwrap_or("");
    for part in ["`noentry`", "registry.example/noentry:2", "set `command`"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[tokio::test]
async fn captured_pod_without_command_gets_the_entrypoint_of_its_image() {
    // Variation of the fixture: the image points at a local registry (modified in the test,
    // the fixture file is untouched).
    let registry = Registry::start(None).await;
    registry
        .push_image(
            "noentry",
            "2",
            "amd64",
            Some(&["/usr/bin/noentry"]),
            Some(&["--listen", ":80"]),
        )
        .await;
    let files = Files::new();
    let mut config = files.config();
    config.insecure_registry = vec![registry.host()];
    let server = RunningServer::start(config).await;
    let client = https_client(&[&files.ca.pem], server.addr);
    let mut review = fixture("pod-from-deployment-without-command.json");
    review["request"]["object"]["spec"]["containers"][0]["image"] =
        json!(format!("{}/noentry:2", registry.host()));

    let response = post_review(&client, &server, &review).await;
    assert_eq!(response["response"]["allowed"], true, "{response}");
    let pod = patched_pod(&review, &response);
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        json!(["--", "/usr/bin/noentry", "--listen", ":80"])
    );
    kubernetes_validate(&named(pod));

    // dryRun gets exactly the same patch.
    let mut dry = review.clone();
    dry["request"]["dryRun"] = json!(true);
    let dry_response = post_review(&client, &server, &dry).await;
    assert_eq!(
        dry_response["response"]["patch"],
        response["response"]["patch"]
    );

    // Metrics: two injected admissions, one registry resolution, one cache hit.
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("aegis_webhook_admissions_total{outcome=\"injected\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aegis_webhook_registry_lookups_total{outcome=\"cached\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn malformed_reviews_are_answered_200_not_allowed_with_the_uid_echoed() {
    let files = Files::new();
    let server = RunningServer::start(files.config()).await;
    let client = https_client(&[&files.ca.pem], server.addr);

    // Not JSON at all.
    let response = client
        .post(server.url("/mutate"))
        .body("this is not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert!(body["response"]["status"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("malformed")));

    // A pod object of the wrong shape: uid and apiVersion are still echoed.
    let mut review = fixture("pod-from-deployment-with-command.json");
    review["request"]["object"]["spec"]["containers"] = json!("not a list");
    let body = post_review(&client, &server, &review).await;
    assert_echoes(&review, &body);
    assert_eq!(body["response"]["allowed"], false);

    // No object.
    let mut review = fixture("pod-from-deployment-with-command.json");
    review["request"]
        .as_object_mut()
        .map(|r| r.remove("object"));
    let body = post_review(&client, &server, &review).await;
    assert_echoes(&review, &body);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(
        body["response"]["status"]["message"],
        "the AdmissionReview has no object"
    );

    // Not a pod.
    let mut review = fixture("pod-from-deployment-with-command.json");
    review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let body = post_review(&client, &server, &review).await;
    assert_eq!(body["response"]["allowed"], false);
}

#[tokio::test]
async fn bad_annotation_is_denied_with_its_message() {
    let files = Files::new();
    let server = RunningServer::start(files.config()).await;
    let client = https_client(&[&files.ca.pem], server.addr);
    let mut review = fixture("pod-from-deployment-with-command.json");
    review["request"]["object"]["metadata"]["annotations"]["aegis.shieldworks.io/containers"] =
        json!("web,sidecar");
    let body = post_review(&client, &server, &review).await;
    assert_echoes(&review, &body);
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("`sidecar`") && message.contains("containers: web"),
        "{message}"
    );
}

#[tokio::test]
async fn update_operations_are_allowed_unchanged() {
    let files = Files::new();
    let server = RunningServer::start(files.config()).await;
    let client = https_client(&[&files.ca.pem], server.addr);
    let mut review = fixture("pod-from-deployment-with-command.json");
    review["request"]["operation"] = json!("UPDATE");
    let body = post_review(&client, &server, &review).await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());
}
