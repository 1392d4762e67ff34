//! Serving the router on a listener, the same way for the binary and the
//! tests: HTTP/1.1 with a header-read timeout, a request timeout and a
//! body timeout, a cap on connections, the peer address for the handlers,
//! and graceful shutdown within a grace period.
//!
//! `axum::serve` sets no timer, so hyper's header-read timeout never fires
//! there and a client that sends half a request holds its connection for
//! ever. HTTP/2 is not offered: gitbroker sits behind a TLS proxy that
//! speaks HTTP/1.1 to it, and h2c would bypass the header timeout.

use super::error::{ApiError, PageError};
use crate::config::ServerSettings;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish for at most
/// `settings.shutdown_grace`, and returns. Handlers can read the peer as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = router
        .layer(RequestBodyTimeoutLayer::new(settings.body_timeout))
        .layer(axum::middleware::from_fn_with_state(
            settings.request_timeout,
            request_timeout,
        ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // over the limit, connections wait in the kernel's backlog
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = app
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no longer accepting connections, finishing requests in flight"
    );
    match tokio::time::timeout(settings.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all requests finished"),
        Err(_) => tracing::warn!(
            grace_secs = settings.shutdown_grace.as_secs(),
            "grace period over; closing the connections still open"
        ),
    }
    Ok(())
}

/// Errors of one connection (reset before accept) are that client's; the
/// others (out of file descriptors) pass with time, so back off briefly
/// instead of spinning.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Whether `path` belongs to an API (problem+json) rather than a page.
pub(crate) fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Answers 503 when the handler takes longer than the configured request
/// timeout (reading the body included).
async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let api = is_api(req.uri().path());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(
                timeout_secs = limit.as_secs(),
                "request timed out; answered 503"
            );
            if api {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "Request timed out",
                    "the request took too long to answer; try again shortly",
                )
                .into_response()
            } else {
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Request timed out",
                    "gitbroker took too long to answer. Try again in a moment.",
                )
                .into_response()
            }
        }
    }
}
