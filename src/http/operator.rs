//! The operator endpoints, and the one table of which listener serves each: `/metrics`,
//! `/healthz`, `/readyz` ([`Plain`]), `/status` ([`status_endpoint`]), the warm-up admin API
//! ([`warm_endpoint`]) and the withdrawal API ([`withdrawn_endpoint`]); and who may use the
//! ones that are not for anyone (`operator_client`).
//!
//! `metrics_listen` ([`Listener::Operations`]) serves all of them and nothing else: any other
//! path is `404 not found`. `listen` ([`Listener::Registry`]) serves the registry API, the
//! probes, and the rest too unless `metrics_listen` is set; a path no endpoint there takes goes
//! to the registry API's routing ([`route`](super::route)). On `listen`, `/metrics` and the
//! probes are answered within the registry API (`answer`: the `Via` loop check, `?ns=`,
//! counted by route like any registry request); every other endpoint answers on its own, under
//! its own access rules.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::error::{ApiError, ErrorCode};
use super::{
    API_VERSION_HEADER, Body, full_body, status_endpoint, warm_endpoint, withdrawn_endpoint,
};
use crate::proxy::{Proxy, bytes_response};
use crate::warm::Warmer;

/// The listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    /// `listen`: the registry API, and the operator endpoints `metrics_listen` does not take.
    Registry,
    /// `metrics_listen`: the operator endpoints alone.
    Operations,
}

/// An operator endpoint.
#[derive(Clone, Copy)]
pub(super) enum Endpoint<'a> {
    /// `/metrics`, `/healthz` or `/readyz`: text, for anyone.
    Plain(Plain),
    /// `/status`.
    Status,
    /// `/warm/…`, with the warmer that runs the jobs.
    Warm(&'a Arc<Warmer>),
    /// `/withdrawn…`, with the warmer that holds who the admins are.
    Withdrawn(&'a Arc<Warmer>),
}

/// The operator endpoints that answer anyone with a line of text or the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plain {
    /// `/metrics`: Prometheus metrics.
    Metrics,
    /// `/healthz`: the process is alive.
    Healthz,
    /// `/readyz`: rules loaded and cache writable.
    Readyz,
}

impl<'a> Endpoint<'a> {
    /// The endpoint at `path`; the admin APIs only when there is a `warmer`.
    fn at(path: &str, warmer: Option<&'a Arc<Warmer>>) -> Option<Self> {
        Some(match path {
            "/metrics" => Endpoint::Plain(Plain::Metrics),
            "/healthz" => Endpoint::Plain(Plain::Healthz),
            "/readyz" => Endpoint::Plain(Plain::Readyz),
            status_endpoint::PATH => Endpoint::Status,
            _ => {
                let warmer = warmer?;
                if path.starts_with(warm_endpoint::PREFIX) {
                    Endpoint::Warm(warmer)
                } else if withdrawn_endpoint::is_for(path) {
                    Endpoint::Withdrawn(warmer)
                } else {
                    return None;
                }
            }
        })
    }

    /// How `listener` serves it; `separate`: whether `metrics_listen` is set.
    fn served_on(self, listener: Listener, separate: bool) -> Served {
        match (listener, self) {
            (Listener::Operations, _) => Served::OnItsOwn,
            // Probes go to the port clients pull from: that is the one they are about.
            (Listener::Registry, Endpoint::Plain(Plain::Healthz | Plain::Readyz)) => {
                Served::WithinRegistryApi
            }
            (Listener::Registry, _) if separate => Served::NotHere,
            (Listener::Registry, Endpoint::Plain(Plain::Metrics)) => Served::WithinRegistryApi,
            (Listener::Registry, _) => Served::OnItsOwn,
        }
    }
}

/// How a listener serves an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// Answered by the endpoint itself, under its own access rules.
    OnItsOwn,
    /// Answered within the registry API on `listen` (see [`within_registry_api`]).
    WithinRegistryApi,
    /// Not on this listener: the path is the registry API's to answer (on `listen`).
    NotHere,
}

/// The endpoint that answers `path` on `listener` on its own, with the `warmer` of the admin
/// APIs if any. `None`: on `listen`, the registry API answers it (`/metrics` and the probes
/// included, see [`within_registry_api`]); on `metrics_listen`, it is [`not_found`].
pub(super) fn route<'a>(
    listener: Listener,
    path: &str,
    proxy: &Proxy,
    warmer: Option<&'a Arc<Warmer>>,
) -> Option<Endpoint<'a>> {
    let endpoint = Endpoint::at(path, warmer)?;
    let served = endpoint.served_on(listener, proxy.metrics_elsewhere());
    (served == Served::OnItsOwn).then_some(endpoint)
}

/// Answers a request to `endpoint` on `listener` (bound to `local`) for a client at `peer`.
pub(super) async fn answer(
    listener: Listener,
    endpoint: Endpoint<'_>,
    proxy: &Proxy,
    request: Request<Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Response<Body> {
    match endpoint {
        Endpoint::Plain(plain) => {
            let (status, content_type, text) = plain.answer(proxy, request.headers());
            let mut response = Response::new(full_body(Bytes::from(text)));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Endpoint::Status => {
            let mut response =
                status_endpoint::answer(proxy, request.method(), request.headers(), local, peer)
                    .await;
            // On `listen`, `/status` answers as the registry API does; the admin APIs' answers
            // are not registry answers.
            if listener == Listener::Registry {
                response
                    .headers_mut()
                    .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
            }
            response
        }
        Endpoint::Warm(warmer) => warm_endpoint::answer(proxy, warmer, request, local, peer).await,
        Endpoint::Withdrawn(warmer) => {
            withdrawn_endpoint::answer(proxy, warmer, request, local, peer).await
        }
    }
}

/// What `metrics_listen` answers to a path no endpoint takes.
pub(super) fn not_found() -> Response<Body> {
    let mut response = Response::new(full_body(Bytes::from_static(b"not found\n")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers `plain` on `listen`, within the registry API (which has authenticated and will count
/// the request): `404 NAME_UNKNOWN` when the table puts it on `metrics_listen`.
pub(super) fn within_registry_api(
    plain: Plain,
    proxy: &Proxy,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let served = Endpoint::Plain(plain).served_on(Listener::Registry, proxy.metrics_elsewhere());
    if served == Served::NotHere {
        // The probes are on every listener: only the metrics can be elsewhere.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            "metrics are served on metrics_listen",
        ));
    }
    let (status, content_type, text) = plain.answer(proxy, headers);
    Ok(bytes_response(
        status,
        content_type,
        Bytes::from(text),
        head,
    ))
}

impl Plain {
    /// The status, content type and text it answers with, whichever listener renders them.
    fn answer(self, proxy: &Proxy, headers: &HeaderMap) -> (StatusCode, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match self {
            Plain::Metrics => {
                let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
                let (content_type, text) = proxy.metrics().exposition(accept);
                (StatusCode::OK, content_type, text)
            }
            Plain::Healthz => (StatusCode::OK, TEXT, "ok\n".to_owned()),
            Plain::Readyz => match proxy.readiness() {
                Ok(()) => (StatusCode::OK, TEXT, "ready\n".to_owned()),
                Err(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("not ready: {reason}\n"),
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How the endpoint at `path` (no warm-up: no admin APIs) is served on `listen` without and
    /// with `metrics_listen`, and on `metrics_listen`.
    fn placement(path: &str) -> Option<[Served; 3]> {
        let endpoint = Endpoint::at(path, None)?;
        Some([
            endpoint.served_on(Listener::Registry, false),
            endpoint.served_on(Listener::Registry, true),
            endpoint.served_on(Listener::Operations, true),
        ])
    }

    #[test]
    fn metrics_and_status_move_to_metrics_listen_and_the_probes_stay_on_listen_too() {
        use Served::{NotHere, OnItsOwn, WithinRegistryApi};
        assert_eq!(
            placement("/metrics"),
            Some([WithinRegistryApi, NotHere, OnItsOwn])
        );
        assert_eq!(
            placement("/healthz"),
            Some([WithinRegistryApi, WithinRegistryApi, OnItsOwn])
        );
        assert_eq!(
            placement("/readyz"),
            Some([WithinRegistryApi, WithinRegistryApi, OnItsOwn])
        );
        assert_eq!(placement("/status"), Some([OnItsOwn, NotHere, OnItsOwn]));
    }

    #[test]
    fn without_a_warmer_the_admin_apis_and_other_paths_are_no_operator_endpoint() {
        let paths = [
            "/warm/jobs",
            "/withdrawn",
            "/withdrawn/allow",
            "/v2/",
            "/statusx",
        ];
        assert_eq!(paths.map(placement), [None, None, None, None, None]);
    }
}
