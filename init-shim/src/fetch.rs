//! Fetching `GET /v1/secrets` from the Safe, with retries until a deadline.
//!
//! What is retried, and why:
//! - connection failures (refused, reset, DNS, timeouts) and 5xx/429/408: the Safe is
//!   starting, restarting or overloaded; it will heal.
//! - not 401/403: a bad token or a forbidden workload will not heal by retrying; the
//!   shim exits at once naming the workload the token claims and the Safe's message.
//! - not TLS failures (the certificate does not chain to the configured CA, or does not
//!   name the host): a configuration error, and retrying it from every pod at once would
//!   be a retry storm against the Safe. Exit at once.
//! - not malformed responses: a version mismatch, not a transient fault.
//!
//! Backoff is exponential with full jitter (a uniform delay in `[0, min(cap, base·2ⁿ)]`),
//! so pods restarted together do not retry together. Every attempt (connect, handshake,
//! request, response) is bounded by the overall deadline and by [`ATTEMPT_TIMEOUT`], so a
//! Safe that accepts and then hangs cannot hold the shim past its deadline.

use crate::config::SafeUrl;
use crate::http::{self, HttpError, Request};
use crate::log::{Level, Logger};
use crate::token::Token;
use aegis_core::{ErrorBody, SecretsResponse};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest single attempt (connect, handshake, request and response).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest TCP connect to one address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body: the Safe's per-workload limit (1 MiB) with room for JSON
/// escaping of every byte (up to 6×) and the metadata.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// First backoff ceiling.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Largest backoff ceiling.
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Why no secrets were fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 401 or 403: the token or the workload was refused (exit 77).
    #[error("the Safe denied access for workload {workload} (HTTP {status}): {message}")]
    Denied {
        /// 401 or 403.
        status: u16,
        /// `namespace/serviceaccount` from the token's *unverified* claims.
        workload: String,
        /// The Safe's error message.
        message: String,
    },
    /// No success before the deadline (exit 69).
    #[error("no secrets from the Safe at {url} within {after_ms} ms ({attempts} attempts); last error: {last}")]
    Unreachable {
        /// The Safe's URL.
        url: String,
        /// Time spent.
        after_ms: u128,
        /// Attempts made.
        attempts: u32,
        /// Why the last attempt failed.
        last: String,
    },
    /// The TLS handshake failed; not retried (exit 79).
    #[error("TLS handshake with the Safe at {url} failed: {reason}; check that AEGIS_SAFE_CA holds the CA that signed the Safe's certificate and that the certificate names the URL's host")]
    Tls {
        /// The Safe's URL.
        url: String,
        /// The rustls error.
        reason: String,
    },
    /// The Safe answered something unusable (exit 76).
    #[error("unusable response from the Safe at {url}: {reason}")]
    BadResponse {
        /// The Safe's URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// One fetch: where, with what trust and token, until when.
pub struct Fetch<'a> {
    /// TLS client configuration trusting only the Safe's CA.
    pub tls: Arc<ClientConfig>,
    /// The Safe.
    pub safe: &'a SafeUrl,
    /// The bearer token.
    pub token: &'a Token,
    /// Overall deadline, retries included.
    pub timeout: Duration,
    /// Where retries are logged (debug).
    pub log: &'a Logger,
}

/// The result of one attempt that did not succeed.
enum Failure {
    /// Try again after a backoff.
    Retry(String),
    /// Give up now.
    Fatal(FetchError),
}

impl Fetch<'_> {
    /// Fetches the workload's secrets; returns them with the number of attempts made.
    pub fn run(&self) -> Result<(SecretsResponse, u32), FetchError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let until = deadline.min(Instant::now() + ATTEMPT_TIMEOUT);
            let reason = match self.attempt(until) {
                Ok(response) => return Ok((response, attempts)),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(reason)) => reason,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let delay = full_jitter(backoff_ceiling(attempts), random_u64()).min(left);
            self.log.log(
                Level::Debug,
                "fetch attempt failed; retrying",
                &[
                    ("attempt", &attempts),
                    ("reason", &reason),
                    ("retry_in_ms", &delay.as_millis()),
                ],
            );
            std::thread::sleep(delay);
            if Instant::now() >= deadline {
                return Err(FetchError::Unreachable {
                    url: self.safe.url.clone(),
                    after_ms: started.elapsed().as_millis(),
                    attempts,
                    last: reason,
                });
            }
        }
    }

    fn attempt(&self, until: Instant) -> Result<SecretsResponse, Failure> {
        let tcp = connect(self.safe, until).map_err(Failure::Retry)?;
        let conn = ClientConnection::new(self.tls.clone(), self.safe.server_name.clone())
            .map_err(|e| self.tls_error(&e))?;
        let mut stream = StreamOwned::new(conn, Deadline { tcp, until });
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| match rustls_error(&e) {
                    Some(tls) => self.tls_error(tls),
                    None => Failure::Retry(format!("TLS handshake: {e}")),
                })?;
        }
        let path = self.safe.secrets_path();
        let host = self.safe.host_header();
        let request = Request {
            host: &host,
            path: &path,
            bearer: self.token.expose(),
        };
        let response = http::get(&mut stream, &request, MAX_BODY_BYTES).map_err(|e| match e {
            HttpError::Io(_) | HttpError::Closed => {
                Failure::Retry(format!("reading the response: {e}"))
            }
            HttpError::Malformed(_) | HttpError::TooLarge { .. } => self.bad(e.to_string()),
        })?;
        match response.status {
            200 => serde_json::from_slice::<SecretsResponse>(&response.body).map_err(|e| {
                // serde's message can quote the offending input, which may be a value.
                self.bad(format!(
                    "the body is not a v1 secrets response ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            }),
            status @ (401 | 403) => Err(Failure::Fatal(FetchError::Denied {
                status,
                workload: self.token.unverified_workload().map_or_else(
                    || "(unknown: the token has no readable ServiceAccount claims)".into(),
                    |w| w.to_string(),
                ),
                message: error_message(&response.body),
            })),
            status @ (408 | 429 | 500..=599) => Err(Failure::Retry(format!(
                "HTTP {status}: {}",
                error_message(&response.body)
            ))),
            status => Err(self.bad(format!(
                "unexpected HTTP {status} for GET {path}: {}",
                error_message(&response.body)
            ))),
        }
    }

    fn tls_error(&self, e: &rustls::Error) -> Failure {
        Failure::Fatal(FetchError::Tls {
            url: self.safe.url.clone(),
            reason: e.to_string(),
        })
    }

    fn bad(&self, reason: String) -> Failure {
        Failure::Fatal(FetchError::BadResponse {
            url: self.safe.url.clone(),
            reason,
        })
    }
}

/// The rustls error inside an I/O error, if that is what it is.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// The Safe's `{"error":{"message"}}`, cleaned for a one-line log.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b
            .error
            .message
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect(),
        Err(_) if body.is_empty() => "no error message".into(),
        Err(_) => "no error message (body is not the v1 error shape)".into(),
    }
}

/// Connects to the first address of the Safe's host that accepts.
fn connect(safe: &SafeUrl, until: Instant) -> Result<TcpStream, String> {
    let target = format!("{}:{}", safe.host, safe.port);
    let addrs = (safe.host.as_str(), safe.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {target}: {e}"))?;
    let mut last = format!("resolving {target}: no addresses");
    for addr in addrs {
        let left = until
            .saturating_duration_since(Instant::now())
            .min(CONNECT_TIMEOUT);
        if left.is_zero() {
            return Err(format!("connecting to {target}: timed out"));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => {
                // One small request: do not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

/// A TCP stream whose every read and write ends by a fixed instant.
struct Deadline {
    tcp: TcpStream,
    until: Instant,
}

impl Deadline {
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out: the attempt's deadline passed",
            ))
        } else {
            Ok(left)
        }
    }
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` expiry surfaces as `WouldBlock`; call it what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the Safe")
    } else {
        e
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        self.tcp.read(buf).map_err(timed_out)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        self.tcp.write(buf).map_err(timed_out)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// Ceiling of the `attempt`-th backoff (1-based): `min(cap, base·2^(attempt-1))`.
pub fn backoff_ceiling(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP)
}

/// Full jitter: a uniform delay in `[0, ceiling]` drawn from `random`.
pub fn full_jitter(ceiling: Duration, random: u64) -> Duration {
    let span = u64::try_from(ceiling.as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    Duration::from_nanos(random % span)
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        // No randomness (should not happen on Linux): the middle of the range.
        Err(_) => u64::MAX / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let ms: Vec<u128> = (1..=8).map(|a| backoff_ceiling(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(backoff_ceiling(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling() {
        let c = Duration::from_millis(400);
        assert_eq!(full_jitter(c, 0), Duration::ZERO);
        assert_eq!(full_jitter(c, 400_000_000), c);
        for r in [1, 12345, u64::MAX, random_u64()] {
            assert!(full_jitter(c, r) <= c);
        }
    }

    #[test]
    fn random_draws_differ() {
        let draws: std::collections::BTreeSet<u64> = (0..8).map(|_| random_u64()).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn error_messages_are_extracted_and_cleaned() {
        let body = br#"{"error":{"code":"forbidden","message":"workload demo/app\nmay not read"}}"#;
        assert_eq!(error_message(body), "workload demo/appmay not read");
        assert_eq!(error_message(b""), "no error message");
        assert!(error_message(b"<html>").contains("not the v1 error shape"));
    }
}
