//! A minimal HTTPS client for the Safe's API (HTTP/1.1 over rustls, trusting only a given
//! CA). The benchmark and the tests use it; it supports kept-alive connections and one
//! fresh connection per request (the pod start storm).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `https://HOST:PORT`.
    #[error("URL must look like https://HOST:PORT, got {0:?}")]
    Url(String),
    /// The CA is not usable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Connecting, the handshake, or the exchange failed.
    #[error("{0}")]
    Io(String),
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl std::fmt::Debug for SafeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Connection factory for one Safe.
#[derive(Clone)]
pub struct SafeClient {
    addr: SocketAddr,
    authority: String,
    server_name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl SafeClient {
    /// A client for `url` trusting only `ca_pem`.
    pub fn new(url: &str, ca_pem: &str) -> Result<Self, ClientError> {
        Self::with_config(url, crate::tls::client_config(ca_pem)?)
    }

    /// A client for `url` with a given TLS configuration (e.g. with session resumption
    /// disabled, to measure full handshakes as a fresh process would make them).
    pub fn with_config(url: &str, config: Arc<rustls::ClientConfig>) -> Result<Self, ClientError> {
        let authority = url
            .strip_prefix("https://")
            .map(|s| s.trim_end_matches('/'))
            .filter(|s| !s.contains('/'))
            .ok_or_else(|| ClientError::Url(url.into()))?;
        let addr: SocketAddr = authority
            .parse()
            .map_err(|_| ClientError::Url(url.into()))?;
        let server_name = ServerName::from(addr.ip());
        Ok(Self {
            addr,
            authority: authority.to_string(),
            server_name,
            connector: tokio_rustls::TlsConnector::from(config),
        })
    }

    /// Opens a kept-alive connection.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        let io = |e: &dyn std::fmt::Display| ClientError::Io(e.to_string());
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| io(&e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| io(&e))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| io(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            authority: self.authority.clone(),
        })
    }

    /// One request on a fresh connection (full TLS handshake).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ClientError> {
        self.connect()
            .await?
            .request(method, path, token, body)
            .await
    }
}

/// A kept-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Connection {
    /// Sends one request and reads the whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ClientError> {
        let io = |e: &dyn std::fmt::Display| ClientError::Io(e.to_string());
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if let Some(t) = token {
            b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| io(&e))?;
        self.sender.ready().await.map_err(|e| io(&e))?;
        let resp = self.sender.send_request(req).await.map_err(|e| io(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| io(&e))?
            .to_bytes();
        Ok(Reply { status, body })
    }
}
