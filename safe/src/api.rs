//! The v1 HTTP API (docs/api.md): routing, authentication and authorization, request
//! validation, JSON errors, and one audit event per request.
//!
//! Invariants: a value never appears in a log line, an error message or a metric; admins
//! never receive values; a workload only ever receives its own secrets; every response to
//! an API route is JSON (errors use `aegis_core::ErrorBody`).

use crate::commit::{CommitError, Committed, Mutation};
use crate::server::AppState;
use aegis_core::{ErrorBody, ErrorCode, PutSecretRequest, Workload, WorkloadList};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use http_body_util::BodyExt;
use serde::ser::{SerializeMap, Serializer};
use std::sync::Arc;
use std::time::Instant;
use zeroize::Zeroize;

/// An API error: a code (which fixes the status) and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&ErrorBody::new(self.code, self.message)).unwrap_or_default();
        let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if self.code == ErrorCode::Unauthenticated {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

fn outcome_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::NotFound => "not_found",
        ErrorCode::MethodNotAllowed => "method_not_allowed",
        ErrorCode::Conflict => "conflict",
        ErrorCode::PayloadTooLarge => "payload_too_large",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
    }
}

/// Collects who did what; emitted once when the request finishes.
struct Audit {
    action: &'static str,
    caller: Option<Workload>,
    workload: Option<String>,
    key: Option<String>,
    started: Instant,
}

impl Audit {
    fn new(action: &'static str) -> Self {
        Self {
            action,
            caller: None,
            workload: None,
            key: None,
            started: Instant::now(),
        }
    }

    fn finish(self, state: &AppState, result: Result<Response, ApiError>) -> Response {
        let (response, outcome) = match result {
            Ok(r) => (r, "ok"),
            Err(e) => {
                let o = outcome_label(e.code);
                (e.into_response(), o)
            }
        };
        let status = response.status().as_u16();
        let caller = self
            .caller
            .as_ref()
            .map_or_else(|| "-".to_string(), |w| w.to_string());
        tracing::info!(
            target: "aegis::audit",
            caller = %caller,
            workload = self.workload.as_deref().unwrap_or("-"),
            key = self.key.as_deref().unwrap_or("-"),
            action = self.action,
            outcome,
            status,
            "request"
        );
        state
            .metrics
            .requests
            .get_or_create(&crate::metrics::RequestLabels {
                action: self.action,
                outcome,
            })
            .inc();
        state
            .metrics
            .request_seconds
            .get_or_create(&crate::metrics::ActionLabels {
                action: self.action,
            })
            .observe(self.started.elapsed().as_secs_f64());
        response
    }
}

/// The API router (also serves `/healthz` and `/readyz`).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/secrets", get(get_secrets))
        .route("/v1/workloads", get(list_workloads))
        .route(
            "/v1/workloads/{ns}/{sa}/secrets/{key}",
            put(put_secret).delete(delete_secret),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The metrics router (plain HTTP): `/metrics`, `/healthz`, `/readyz`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.ready().is_some() {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response()
    } else {
        ApiError::new(ErrorCode::Unavailable, "not ready: recovering state").into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn not_found(State(s): State<Arc<AppState>>) -> Response {
    Audit::new("unknown").finish(
        &s,
        Err(ApiError::new(
            ErrorCode::NotFound,
            "no such route; see docs/api.md",
        )),
    )
}

async fn method_not_allowed(State(s): State<Arc<AppState>>) -> Response {
    Audit::new("unknown").finish(
        &s,
        Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed for this route; see docs/api.md",
        )),
    )
}

fn not_ready() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the Safe is starting (recovering state); retry shortly",
    )
}

/// Verifies the bearer token and records the caller.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    audit: &mut Audit,
) -> Result<Workload, ApiError> {
    let ready = state.ready().ok_or_else(not_ready)?;
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "missing Authorization: Bearer token",
        )
    })?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "Authorization header must be `Bearer <token>`",
            )
        })?;
    match ready.auth.authenticate(token).await {
        Ok(id) => {
            audit.caller = Some(id.workload.clone());
            Ok(id.workload)
        }
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, "token verification unavailable");
            Err(ApiError::new(ErrorCode::Unavailable, e.to_string()))
        }
        Err(e) => Err(ApiError::new(ErrorCode::Unauthenticated, e.to_string())),
    }
}

async fn authenticate_admin(
    state: &AppState,
    headers: &HeaderMap,
    audit: &mut Audit,
) -> Result<(), ApiError> {
    let caller = authenticate(state, headers, audit).await?;
    if state.admins.contains(&caller) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{caller} is not an administrator of this Safe; workloads may only GET /v1/secrets"
            ),
        ))
    }
}

/// A `Vec` that is zeroed when the response body is dropped (it holds plaintext).
struct ZeroizingBuf(Vec<u8>);

impl AsRef<[u8]> for ZeroizingBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for ZeroizingBuf {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Serialises `GET /v1/secrets` straight from the stored state, without copying values.
struct SecretsView<'a> {
    workload: &'a Workload,
    state: Option<&'a crate::store::WorkloadState>,
}

impl serde::Serialize for SecretsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Values<'a>(Option<&'a crate::store::WorkloadState>);
        impl serde::Serialize for Values<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(self.0.map(|st| st.secrets.len()))?;
                if let Some(st) = self.0 {
                    for (k, e) in &st.secrets {
                        m.serialize_entry(k, e.value.expose())?;
                    }
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("workload", self.workload)?;
        m.serialize_entry("revision", &self.state.map_or(0, |st| st.revision))?;
        m.serialize_entry("secrets", &Values(self.state))?;
        m.end()
    }
}

async fn get_secrets(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let mut audit = Audit::new("read");
    let r = async {
        let caller = authenticate(&s, &headers, &mut audit).await?;
        audit.workload = Some(caller.to_string());
        let ready = s.ready().ok_or_else(not_ready)?;
        let state = ready.store.get(&caller);
        let view = SecretsView {
            workload: &caller,
            state: state.as_deref(),
        };
        let mut buf = ZeroizingBuf(Vec::with_capacity(256));
        serde_json::to_writer(&mut buf.0, &view)
            .map_err(|_| ApiError::new(ErrorCode::Internal, "could not encode the response"))?;
        let mut r = Response::new(Body::from(bytes::Bytes::from_owner(buf)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }
    .await;
    audit.finish(&s, r)
}

async fn list_workloads(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let mut audit = Audit::new("list");
    let r = async {
        authenticate_admin(&s, &headers, &mut audit).await?;
        let ready = s.ready().ok_or_else(not_ready)?;
        let list = WorkloadList {
            workloads: ready.store.list(),
        };
        Ok(axum::Json(list).into_response())
    }
    .await;
    audit.finish(&s, r)
}

type KeyPath = Result<Path<(String, String, String)>, axum::extract::rejection::PathRejection>;

/// Records the target of a per-key route in the audit event, before anything can fail.
fn note_target(path: &KeyPath, audit: &mut Audit) {
    if let Ok(Path((ns, sa, key))) = path {
        audit.workload = Some(format!("{ns}/{sa}"));
        audit.key = Some(key.clone());
    }
}

/// Validates path parameters of the per-key routes.
fn target(state: &AppState, path: KeyPath) -> Result<(Workload, String), ApiError> {
    let Path((ns, sa, key)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let workload =
        Workload::new(&ns, &sa).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    state
        .limits
        .check_key(&key)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    Ok((workload, key))
}

async fn put_secret(
    State(s): State<Arc<AppState>>,
    path: KeyPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut audit = Audit::new("put");
    let r = async {
        note_target(&path, &mut audit);
        authenticate_admin(&s, &headers, &mut audit).await?;
        let (workload, key) = target(&s, path)?;
        let value = read_value(&s, body).await?;
        let ready = s.ready().ok_or_else(not_ready)?;
        match ready
            .committer
            .commit(Mutation::Put {
                workload,
                key,
                value,
            })
            .await
        {
            Ok(Committed::Put { response, created }) => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok((status, axum::Json(response)).into_response())
            }
            Ok(Committed::Deleted) => Err(ApiError::new(ErrorCode::Internal, "internal error")),
            Err(e) => Err(commit_error(e)),
        }
    }
    .await;
    audit.finish(&s, r)
}

async fn delete_secret(
    State(s): State<Arc<AppState>>,
    path: KeyPath,
    headers: HeaderMap,
) -> Response {
    let mut audit = Audit::new("delete");
    let r = async {
        note_target(&path, &mut audit);
        authenticate_admin(&s, &headers, &mut audit).await?;
        let (workload, key) = target(&s, path)?;
        let ready = s.ready().ok_or_else(not_ready)?;
        match ready
            .committer
            .commit(Mutation::Delete { workload, key })
            .await
        {
            Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(e) => Err(commit_error(e)),
        }
    }
    .await;
    audit.finish(&s, r)
}

fn commit_error(e: CommitError) -> ApiError {
    let code = match &e {
        CommitError::NotFound { .. } => ErrorCode::NotFound,
        CommitError::Quota(_) => ErrorCode::Conflict,
        CommitError::Unavailable(_) => ErrorCode::Unavailable,
    };
    ApiError::new(code, e.to_string())
}

/// Reads and validates the `{"value":"..."}` body. Errors never echo the body.
async fn read_value(state: &AppState, body: Body) -> Result<aegis_core::SecretValue, ApiError> {
    let limit = state.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let collected = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::new(ErrorCode::BadRequest, "could not read the request body")
            }
        })?;
    let bytes = collected.to_bytes();
    let parsed = serde_json::from_slice::<PutSecretRequest>(&bytes);
    // The body held the plaintext; wipe it when we are its only owner (the usual case).
    if let Ok(mut m) = bytes.try_into_mut() {
        m[..].zeroize();
    }
    let req = parsed.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "request body must be JSON {{\"value\":\"...\"}} with a string value (error at line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    state.limits.check_value(req.value.expose()).map_err(|e| {
        let code = match e {
            aegis_core::ValidationError::ValueTooLarge { .. } => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::BadRequest,
        };
        ApiError::new(code, e.to_string())
    })?;
    Ok(req.value)
}
