//! The second listener, of `metrics_listen`: the operator endpoints alone (`/metrics`,
//! `/status`, `/healthz`, `/readyz`, the warm-up and withdrawal admin APIs; which answers what is
//! [`operator`](super::operator)'s), so that scraping, probes, the status view and operations
//! can stay off the address clients pull from.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;

use super::Body;
use super::operator::{self, Listener};
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
    let path = request.uri().path();
    Ok(
        match operator::route(Listener::Operations, path, &proxy, warm.as_ref()) {
            Some(endpoint) => {
                operator::answer(Listener::Operations, endpoint, &proxy, request, local, peer).await
            }
            None => operator::not_found(),
        },
    )
}
