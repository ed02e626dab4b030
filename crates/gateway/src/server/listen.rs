//! The accept loop: what `axum::serve` does, plus the timeouts and the bounded shutdown it
//! lacks. A client that opens a connection and sends half a request, or nothing, is cut off
//! after `[limits] header_timeout_ms` instead of holding a socket (and a file descriptor) for
//! as long as it likes; SIGTERM waits at most `[limits] shutdown_grace_ms` for requests in
//! flight. The body timeout is a layer of the application (`server::app`), where the 408 is
//! written in the endpoint's error shape.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::AppState;
use super::parse_errors::ParseErrorBodies;

/// After a failed `accept` (out of file descriptors, mostly), wait this long before the next
/// one instead of spinning on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` resolves, then lets the requests in flight
/// finish for up to the grace period and returns.
pub async fn serve(
    listener: TcpListener,
    state: &Arc<AppState>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = &state.limits;
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                tracing::warn!("accept error: {error}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // SSE answers go out as many small writes, and Nagle's algorithm with delayed ACKs
        // would hold each back up to 40 ms.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {error}");
        }
        // hyper's header timer starts once it knows the protocol: a client that sends nothing,
        // or one byte of what could be an HTTP/2 preface, would be held until it spoke. The
        // connection gets the header timeout for its first request here.
        let served = Arc::new(AtomicBool::new(false));
        let flag = served.clone();
        let app = app.clone().map_request(move |request: Request<Incoming>| {
            flag.store(true, Ordering::Relaxed);
            request
        });
        let connection = builder
            .serve_connection(
                TokioIo::new(ParseErrorBodies::new(tcp)),
                TowerToHyperService::new(app),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let first_request = async {
                tokio::time::sleep(header_timeout).await;
                if served.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                result = connection => if let Err(error) = result {
                    tracing::debug!("connection ended: {error}");
                },
                () = first_request => tracing::debug!("no request within the header timeout"),
            }
        });
    }
    drop(listener);
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    let open = graceful.count();
    tracing::info!(open, "shutting down: no new connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.shutdown_grace_ms,
            "connections still open after the shutdown grace period: closing them"
        );
    }
    Ok(())
}
