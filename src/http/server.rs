//! The server loop: HTTP/1.1 and HTTP/2 (hyper-util's auto builder) on a TCP listener, each
//! request parsed by [`route`](super::route) and answered by the [`Proxy`], with a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::{API_VERSION_HEADER, Body, route};
use crate::proxy::Proxy;

/// How long in-flight requests may take to finish once a stop is asked for.
const GRACE_PERIOD: Duration = Duration::from_secs(30);

/// Serves the registry API on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (up to a grace period).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
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
                let proxy = proxy.clone();
                let service = service_fn(move |request| handle(proxy.clone(), request));
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE_PERIOD) => {
            tracing::warn!("grace period over; closing the remaining connections");
        }
    }
    Ok(())
}

async fn handle(
    proxy: Arc<Proxy>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let head = request.method() == Method::HEAD;
    let parsed = route::parse(
        request.method(),
        request.uri().path(),
        request.uri().query(),
        proxy.default_registry(),
    );
    let mut response = match parsed {
        Ok(api) => match proxy.handle(api, head, request.headers()).await {
            Ok(response) => response,
            Err(error) => error.into_response(head),
        },
        Err(error) => {
            tracing::info!(
                method = %request.method(),
                path = request.uri().path(),
                status = error.status.as_u16(),
                code = error.code.as_str(),
                "refused"
            );
            error.into_response(head)
        }
    };
    response
        .headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    Ok(response)
}
