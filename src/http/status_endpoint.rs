//! `GET /status`: the proxy's [`Status`](crate::status::Status) as JSON, for `mirrorgate
//! status`. Served where `/metrics` is (on `metrics_listen` when that is set, else on `listen`).
//!
//! It tells whoever reads it the rules, the registries and their errors, so it is never open
//! to anonymous clients from elsewhere: a client on the same host (a loopback listener, or a
//! loopback peer such as `kubectl exec … mirrorgate status`) needs nothing; any other needs
//! the credentials of `clients` (and is refused when `clients.mode` is `anonymous`).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::error::{ApiError, ErrorCode};
use super::{Body, empty_body, full_body};
use crate::proxy::Proxy;

/// The path.
pub const PATH: &str = "/status";

/// Answers `/status` on a listener bound to `local`, for a client at `peer`.
pub async fn answer(
    proxy: &Proxy,
    method: &Method,
    headers: &HeaderMap,
    local: SocketAddr,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let head = method == Method::HEAD;
    let response = match allowed(proxy, method, headers, local, peer).await {
        Ok(()) => {
            let body = serde_json::to_vec_pretty(&proxy.status()).unwrap_or_default();
            json(Bytes::from(body), head)
        }
        Err(refusal) => refusal,
    };
    let method = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    };
    proxy.metrics().request(
        "status",
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn allowed(
    proxy: &Proxy,
    method: &Method,
    headers: &HeaderMap,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<(), Response<Body>> {
    let head = method == Method::HEAD;
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::unsupported(method).into_response(head));
    }
    if local.ip().is_loopback() || peer.ip().is_loopback() {
        return Ok(());
    }
    let access = proxy.access();
    if access.is_anonymous() {
        tracing::info!(%peer, "refused: /status to an anonymous client from elsewhere");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            "/status is served to clients on this host, or with the credentials of `clients` (clients.mode is anonymous)",
        )
        .into_response(head));
    }
    match access.authenticate(PATH, headers).await {
        Ok(_) => Ok(()),
        Err(refusal) => Err(refusal.into_response(head)),
    }
}

fn json(body: Bytes, head: bool) -> Response<Body> {
    let length = body.len();
    let mut response = Response::new(if head { empty_body() } else { full_body(body) });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}
