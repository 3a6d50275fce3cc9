//! Serving plumbing shared by the Safe and the webhook: accept loops for HTTPS
//! (tokio-rustls) and plain HTTP (metrics), both HTTP/1.1 with keep-alive, a TLS handshake
//! timeout, a header-read timeout (slow-loris protection) and graceful draining on shutdown,
//! plus the shutdown signal both binaries stop on.

pub mod tls;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TLS handshake must finish within this, so idle sockets cannot pin tasks.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this (slow-loris protection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections still open this long after shutdown began are closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    b
}

/// Accepts connections until `stop` turns true, handing each to `handle` with the
/// shutdown tracker; then closes the listener and drains.
async fn accept_loop(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    mut handle: impl FnMut(TcpStream, SocketAddr, &GracefulShutdown),
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => handle(tcp, peer, &graceful),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    drain(graceful).await;
}

/// Serves `router` over TLS until `stop` turns true, then drains.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    accept_loop(listener, stop, |tcp, peer, graceful| {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        // Watch before the handshake so a shutdown during it is seen too.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = http1().serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    })
    .await;
}

/// Serves `router` over plain HTTP until `stop` turns true, then drains.
pub async fn serve_plain(listener: TcpListener, router: Router, stop: watch::Receiver<bool>) {
    accept_loop(listener, stop, |tcp, _, graceful| {
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http1().serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            let _ = conn.await;
        });
    })
    .await;
}

async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the drain timeout");
    }
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler, Ctrl-C still stops the process.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
