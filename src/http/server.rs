//! The server loop: HTTP/1.1 and HTTP/2 (hyper-util's auto builder) on a TCP listener, in plain
//! text or over TLS ([`ServerTls`]), each request parsed by [`route`](super::route) and answered
//! by the [`Proxy`], with a graceful stop.
//!
//! What a client can hold is bounded (`limits`): connections (beyond the bound, new ones wait
//! in the kernel's listen backlog, which is how a server under load should push back), the
//! time to send request headers, and their size.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::LimitsConfig;
use super::{API_VERSION_HEADER, Body, ServerTls, status_endpoint};
use crate::proxy::Proxy;

/// How long in-flight requests may take to finish once a stop is asked for.
const GRACE_PERIOD: Duration = Duration::from_secs(30);

/// How long a client may take over the TLS handshake, so that a connection that never finishes it
/// does not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the registry API on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (up to a grace period), within `limits` (connections, header time and size).
///
/// With `tls`, every connection first completes a TLS handshake (within 10 s; a failed one is
/// logged at debug level and the connection dropped), and is then served as HTTP/2 or HTTP/1.1,
/// whichever the client speaks (the one it negotiated by ALPN). Handshakes still in progress when
/// the server stops are abandoned.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<ServerTls>>,
    limits: LimitsConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    let max_header = usize::try_from(limits.max_header_size.bytes()).unwrap_or(usize::MAX);
    // A client that does not finish its request headers in time is disconnected (slowloris),
    // and one whose head outgrows the bound is answered 431.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_header);
    builder
        .http2()
        .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let open = proxy.metrics().connections();
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr()?;
    // Dropped when the server stops, which ends every handshake still in progress.
    let (stop_handshakes, handshakes_stopped) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the bound, accept nothing until a connection closes.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Running out of file descriptors must not end the server.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                open.inc();
                let held = OpenConnection { _permit: permit, open: open.clone() };
                let proxy = proxy.clone();
                let service = service_fn(move |request| handle(proxy.clone(), request, local, peer));
                match &tls {
                    None => {
                        let connection = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned();
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            if let Err(error) = connection.await {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                            drop(held);
                        });
                    }
                    Some(tls) => {
                        let acceptor = tls.acceptor().clone();
                        let builder = builder.clone();
                        // Taken now, before any stop: a connection watched after the stop began
                        // is told at once to finish, and the stop waits for this watcher.
                        let watcher = graceful.watcher();
                        let mut stopped = handshakes_stopped.clone();
                        tokio::spawn(async move {
                            let _held = held;
                            let handshake =
                                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                            let stream = tokio::select! {
                                result = handshake => match result {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(error)) => {
                                        tracing::debug!(%peer, %error, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return;
                                    }
                                },
                                _ = stopped.changed() => return,
                            };
                            let connection = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .into_owned();
                            if let Err(error) = watcher.watch(connection).await {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(stop_handshakes);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE_PERIOD) => {
            tracing::warn!("grace period over; closing the remaining connections");
        }
    }
    Ok(())
}

/// A connection's place under `limits.max_connections`, counted in the open-connections gauge.
struct OpenConnection {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

async fn handle(
    proxy: Arc<Proxy>,
    request: Request<Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    // `/status` depends on who is asking from where, which only this layer knows.
    if request.uri().path() == status_endpoint::PATH && !proxy.metrics_elsewhere() {
        let mut response =
            status_endpoint::answer(&proxy, request.method(), request.headers(), local, peer).await;
        response
            .headers_mut()
            .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
        return Ok(response);
    }
    // Routing, serving and counting are the proxy's; this layer only speaks HTTP.
    let mut response = super::answer::respond(
        &proxy,
        request.method(),
        request.uri().path(),
        request.uri().query(),
        request.headers(),
        !request.body().is_end_stream(),
    )
    .await;
    response
        .headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    Ok(response)
}
