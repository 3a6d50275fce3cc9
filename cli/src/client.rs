//! A small HTTPS client for the Safe's admin API. It trusts only the configured CA and
//! turns the Safe's JSON errors into messages with a hint (who we were, what is missing).

use crate::args::Connection;
use crate::CliError;
use aegis_core::{
    ErrorBody, PutSecretRequest, PutSecretResponse, SecretValue, TokenClaims, Workload,
    WorkloadList,
};
use base64::Engine;
use zeroize::Zeroizing;

/// An authenticated connection to the Safe.
pub struct SafeClient {
    http: reqwest::Client,
    base: String,
    token: Zeroizing<String>,
    /// Where the token came from, for hints.
    token_source: String,
}

/// The result of a PUT: the stored metadata and whether the key is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// What the Safe stored.
    pub response: PutSecretResponse,
    /// `true` for 201 (new key), `false` for 200 (new version).
    pub created: bool,
}

impl SafeClient {
    /// Reads the CA and token files named by the connection settings.
    pub fn connect(conn: &Connection) -> Result<Self, CliError> {
        let ca = std::fs::read_to_string(&conn.safe_ca_file).map_err(|e| {
            CliError::io(
                format!(
                    "reading the Safe's CA from {} (set --safe-ca-file or AEGIS_SAFE_CA_FILE)",
                    conn.safe_ca_file.display()
                ),
                e,
            )
        })?;
        let token = std::fs::read_to_string(&conn.token_file).map_err(|e| {
            CliError::io(
                format!(
                    "reading the token from {} (set --token-file or AEGIS_TOKEN_FILE)",
                    conn.token_file.display()
                ),
                e,
            )
        })?;
        Self::new(
            &conn.safe_url,
            &ca,
            token,
            conn.token_file.display().to_string(),
        )
    }

    /// Builds a client from the Safe's URL, its CA (PEM) and a bearer token.
    pub fn new(
        safe_url: &str,
        ca_pem: &str,
        token: String,
        token_source: String,
    ) -> Result<Self, CliError> {
        let tls = tls_config(ca_pem)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Usage(format!("building the HTTPS client: {e}")))?;
        let token = Zeroizing::new(token.trim().to_string());
        Ok(Self {
            http,
            base: safe_url.trim_end_matches('/').to_string(),
            token,
            token_source,
        })
    }

    /// `PUT /v1/workloads/{ns}/{sa}/secrets/{key}`.
    pub async fn put(
        &self,
        workload: &Workload,
        key: &str,
        value: SecretValue,
    ) -> Result<PutOutcome, CliError> {
        let body = serde_json::to_vec(&PutSecretRequest { value })
            .map(Zeroizing::new)
            .map_err(|e| CliError::Usage(format!("encoding the request: {e}")))?;
        let req = self
            .http
            .put(self.key_url(workload, key))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        let resp = self.send(req, &[200, 201]).await?;
        let created = resp.status().as_u16() == 201;
        let response = resp.json().await.map_err(|e| self.bad_reply(e))?;
        Ok(PutOutcome { response, created })
    }

    /// `GET /v1/workloads`.
    pub async fn list(&self) -> Result<WorkloadList, CliError> {
        let req = self.http.get(format!("{}/v1/workloads", self.base));
        let resp = self.send(req, &[200]).await?;
        resp.json().await.map_err(|e| self.bad_reply(e))
    }

    /// `DELETE /v1/workloads/{ns}/{sa}/secrets/{key}`.
    pub async fn delete(&self, workload: &Workload, key: &str) -> Result<(), CliError> {
        self.send(self.http.delete(self.key_url(workload, key)), &[204])
            .await?;
        Ok(())
    }

    /// Sends with the bearer token; any status outside `ok` becomes [`CliError::Safe`].
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        ok: &[u16],
    ) -> Result<reqwest::Response, CliError> {
        let resp = req
            .bearer_auth(self.token.as_str())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if ok.contains(&resp.status().as_u16()) {
            Ok(resp)
        } else {
            Err(self.refused(resp).await)
        }
    }

    fn key_url(&self, w: &Workload, key: &str) -> String {
        // Workload names and keys are validated to URL-safe alphabets before we get here.
        format!(
            "{}/v1/workloads/{}/{}/secrets/{}",
            self.base, w.namespace, w.service_account, key
        )
    }

    fn unreachable(&self, e: reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        }
    }

    fn bad_reply(&self, e: reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.base.clone(),
            reason: format!("unexpected reply: {}", error_chain(&e)),
        }
    }

    async fn refused(&self, resp: reqwest::Response) -> CliError {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => (Some(b.error.code), b.error.message),
            Err(_) => (None, format!("HTTP {status} without an Aegis error body")),
        };
        let hint = hint_for(status, &self.identity(), &self.token_source);
        CliError::Safe {
            status,
            code,
            message,
            hint,
        }
    }

    /// Who the token says we are (unverified; only for hints).
    pub fn identity(&self) -> String {
        token_identity(&self.token).unwrap_or_else(|| "an unreadable token".to_string())
    }
}

/// The workload named in a token's claims, without verifying it (for messages only).
pub fn token_identity(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: TokenClaims = serde_json::from_slice(&bytes).ok()?;
    claims.workload().ok().map(|w| w.to_string())
}

/// The hint for a refused request: pure, so every branch has a test.
pub fn hint_for(status: u16, identity: &str, token_source: &str) -> Option<String> {
    match status {
        401 => Some(format!(
            "the Safe did not accept the token in {token_source} (it names {identity}). Tokens are short-lived and must have the Safe's audience: \
             inside the sentinel pod the kubelet refreshes it; elsewhere mint one with \
             `kubectl create token aegis-sentinel -n aegis-system --audience aegis-safe`"
        )),
        403 => Some(format!(
            "{identity} is not allowed to do this. Only the Safe's admins (flag `aegis-safe serve --admin NS/SA`, default \
             aegis-system/aegis-sentinel) may write, list and delete; run the command in the sentinel pod: \
             `kubectl exec -n aegis-system deploy/aegis-sentinel -- aegis secret ...`"
        )),
        404 => Some("check the workload (NAMESPACE/SERVICEACCOUNT) and key; `aegis secret list` shows what exists".into()),
        409 => Some("the workload is at its quota; delete keys it no longer needs".into()),
        413 => Some(format!(
            "values are limited to {} bytes",
            aegis_core::Limits::default().max_value_bytes
        )),
        503 => Some("the Safe is starting up or cannot persist; retry shortly and check its logs".into()),
        _ => None,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

/// A rustls client configuration that trusts only the CA(s) in `ca_pem` (the Safe's own
/// client configuration: TLS 1.3/1.2, ring, HTTP/1.1).
pub fn tls_config(ca_pem: &str) -> Result<rustls::ClientConfig, CliError> {
    aegis_safe::tls::client_config(ca_pem)
        .map(|c| (*c).clone())
        .map_err(|e| CliError::Usage(format!("the Safe's CA is not usable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_comes_from_the_kubernetes_claim() {
        let claims = r#"{"iss":"x","aud":["aegis-safe"],"exp":1,"kubernetes.io":{"namespace":"demo","serviceaccount":{"name":"app","uid":""}}}"#;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!("{}.{}.sig", b64.encode("{}"), b64.encode(claims));
        assert_eq!(token_identity(&token).as_deref(), Some("demo/app"));
        assert_eq!(token_identity("garbage"), None);
    }

    #[test]
    fn hints_name_the_identity_and_the_fix() {
        let h401 = hint_for(401, "demo/app", "/tok").unwrap();
        assert!(h401.contains("/tok") && h401.contains("demo/app") && h401.contains("audience"));
        let h403 = hint_for(403, "demo/app", "/tok").unwrap();
        assert!(h403.contains("demo/app") && h403.contains("--admin"));
        assert!(hint_for(413, "", "").unwrap().contains("65536"));
        assert!(hint_for(404, "", "").is_some());
        assert!(hint_for(409, "", "").is_some());
        assert!(hint_for(503, "", "").is_some());
        assert_eq!(hint_for(418, "", ""), None);
    }

    #[test]
    fn ca_without_certificates_is_refused() {
        assert!(matches!(tls_config("not pem"), Err(CliError::Usage(_))));
    }
}
