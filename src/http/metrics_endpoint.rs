//! The second listener of `metrics_listen`: `/metrics`, `/status`, `/healthz`, `/readyz` and
//! the warm-up admin API (`/warm/…`) only, so that scraping, probes, the status view and
//! operations can stay off the address clients pull from.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;

use super::{Body, full_body, status_endpoint, warm_endpoint, withdrawn_endpoint};
use crate::proxy::Proxy;
use crate::warm::Warmer;

/// Serves the metrics endpoints (and with `warm`, the warm-up admin API) on `listener` until
/// the process ends.
pub async fn serve_metrics(listener: TcpListener, proxy: Arc<Proxy>, warm: Option<Arc<Warmer>>) {
    let builder = Builder::new(TokioExecutor::new());
    let Ok(local) = listener.local_addr() else {
        tracing::error!("the metrics listener has no address; not serving metrics");
        return;
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        let warm = warm.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                answer(proxy.clone(), warm.clone(), request, local, peer)
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    proxy: Arc<Proxy>,
    warm: Option<Arc<Warmer>>,
    request: Request<Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if let Some(warmer) = &warm
        && request.uri().path().starts_with(warm_endpoint::PREFIX)
    {
        return Ok(warm_endpoint::answer(&proxy, warmer, request, local, peer).await);
    }
    if let Some(warmer) = &warm
        && withdrawn_endpoint::is_for(request.uri().path())
    {
        return Ok(withdrawn_endpoint::answer(&proxy, warmer, request, local, peer).await);
    }
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok());
            let (content_type, text) = proxy.metrics().exposition(accept);
            (StatusCode::OK, content_type, text)
        }
        status_endpoint::PATH => {
            return Ok(status_endpoint::answer(
                &proxy,
                request.method(),
                request.headers(),
                local,
                peer,
            )
            .await);
        }
        "/healthz" => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        "/readyz" => match proxy.readiness() {
            Ok(()) => (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ready\n".to_owned(),
            ),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("not ready: {reason}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(full_body(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(response)
}
