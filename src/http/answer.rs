//! One request, answered: authenticate, parse, authorise, hand to the proxy, and turn its
//! answer or error into the response, counted by route.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};

use super::Body;
use super::error::{ApiError, ErrorCode};
use super::operator::{Plain, within_registry_api};
use super::route::{self, ApiRequest, Route};
use crate::proxy::bytes_response;
use crate::proxy::{BlobRange, Proxy, Served, ServedBlob};

/// One request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The path, undecoded.
    pub path: &'a str,
    /// The query, if any.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// Whether the request has a body: a read carries none, and one that does is refused
    /// unread.
    pub carries_body: bool,
    /// The client's address, when known.
    pub peer: Option<std::net::IpAddr>,
}

/// Answers one request: routes it, serves it, and counts it.
///
/// A request scoped by `?ns=` gets `OCI-Namespace: <ns>` on every answer, success or error, as
/// the distribution-spec's "Registry Proxying" section asks of a proxy.
pub async fn respond(proxy: &Arc<Proxy>, request: Incoming<'_>) -> Response<Body> {
    let mut response = answer_in_chain(proxy, request).await;
    if let Some(namespace) = route::oci_namespace(request.query) {
        response
            .headers_mut()
            .insert(route::OCI_NAMESPACE, namespace);
    }
    response
}

/// Refuses a request that has been round a loop; otherwise answers it with the upstream
/// requests it causes extending the `Via` chain it arrived with.
async fn answer_in_chain(proxy: &Arc<Proxy>, request: Incoming<'_>) -> Response<Body> {
    let Incoming {
        method,
        path,
        query,
        headers,
        ..
    } = request;
    let started = Instant::now();
    let head = method == http::Method::HEAD;
    let via = proxy.via_token();
    if via.is_received_in(headers) {
        let route = route::parse(method, path, query, proxy.default_registry())
            .map_or(Route::Invalid, |request| request.route());
        let chain = crate::upstream::via::received(headers).unwrap_or_default();
        tracing::warn!(%method, path, via = %chain, token = via.as_str(), "loop refused: the request carries this mirrorgate's own Via token");
        let response = ApiError::loop_detected(via.as_str(), &chain).into_response(head);
        proxy.metrics().http.loop_refused();
        proxy.metrics().http.request(
            route.as_str(),
            method_label(method),
            response.status().as_u16(),
            started.elapsed(),
        );
        return response;
    }
    // The upstream requests this one causes extend the `Via` chain it arrived with.
    crate::upstream::via::serving(
        crate::upstream::via::received(headers),
        respond_in_chain(proxy, started, request),
    )
    .await
}

async fn respond_in_chain(
    proxy: &Arc<Proxy>,
    started: Instant,
    request: Incoming<'_>,
) -> Response<Body> {
    let Incoming {
        method,
        path,
        query,
        headers,
        carries_body,
        peer,
    } = request;
    let head = method == http::Method::HEAD;
    let access = proxy.access();
    let client = match access.authenticate(path, headers, peer).await {
        Ok(client) => client,
        Err(refusal) => {
            let status = StatusCode::UNAUTHORIZED.as_u16();
            proxy.metrics().http.request(
                Route::Unauthorized.as_str(),
                method_label(method),
                status,
                started.elapsed(),
            );
            return ApiError::unauthorized(refusal).into_response(head);
        }
    };
    let parsed = route::parse(method, path, query, proxy.default_registry()).and_then(|request| {
        let read = matches!(*method, http::Method::GET | http::Method::HEAD);
        if read && carries_body {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::Unsupported,
                format!("{method} requests carry no body: mirrorgate accepts none"),
            ));
        }
        Ok(request)
    });
    let (route, response) = match parsed {
        Ok(request) => {
            let route = request.route();
            let result = match client.authorize(request.repository().map(|r| r.name())) {
                Ok(()) => {
                    crate::proxy::serving_client(
                        client.is_scoped(),
                        handle(proxy, request, head, headers),
                    )
                    .await
                }
                Err(denied) => Err(ApiError::from(denied)),
            };
            match result {
                Ok(response) => (route, super::conditional::apply(headers, response)),
                Err(error) => (route, error.into_response(head)),
            }
        }
        Err(error) => {
            tracing::info!(%method, path, status = error.status.as_u16(), code = error.code.as_str(), "refused");
            (Route::Invalid, error.into_response(head))
        }
    };
    proxy.metrics().http.request(
        route.as_str(),
        method_label(method),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The `Retry-After` of a pull refused while the rules are incomplete: a first list of the
/// cluster takes a few seconds.
const INCOMPLETE_RETRY_AFTER_SECONDS: u64 = 5;

/// Answers one parsed request.
async fn handle(
    proxy: &Arc<Proxy>,
    request: ApiRequest,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    if proxy.incomplete().is_some()
        && matches!(
            request,
            ApiRequest::Manifest { .. }
                | ApiRequest::Blob { .. }
                | ApiRequest::TagsList { .. }
                | ApiRequest::Referrers { .. }
        )
    {
        return Err(ApiError::unavailable(
            format!(
                "not ready: {}; try again later",
                crate::proxy::RULES_INCOMPLETE
            ),
            INCOMPLETE_RETRY_AFTER_SECONDS,
        ));
    }
    Ok(match request {
        ApiRequest::Base => json_response(Bytes::from_static(b"{}"), head),
        ApiRequest::BaseWithoutSlash => {
            let mut response =
                text_response(StatusCode::MOVED_PERMANENTLY, "moved to /v2/\n", head);
            response
                .headers_mut()
                .insert(header::LOCATION, http::HeaderValue::from_static("/v2/"));
            response
        }
        // What Distribution answers: the base endpoint as to `GET`, any other path its methods.
        ApiRequest::Options { path } if matches!(*path, ApiRequest::Base) => {
            json_response(Bytes::from_static(b"{}"), false)
        }
        ApiRequest::Options { .. } => {
            let mut response = bytes_response(StatusCode::OK, "text/plain", Bytes::new(), false);
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static(READ_METHODS));
            response
        }
        ApiRequest::Catalog => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::Unsupported,
                "mirrorgate keeps no catalog: /v2/_catalog is not part of the OCI distribution spec, and an upstream's catalog is not a mirror's to give; list a repository's tags with /v2/<name>/tags/list",
            ));
        }
        // Where the operator endpoints are served is the operator router's to say.
        ApiRequest::Metrics => within_registry_api(Plain::Metrics, proxy, headers, head)?,
        ApiRequest::Healthz => within_registry_api(Plain::Healthz, proxy, headers, head)?,
        ApiRequest::Readyz => within_registry_api(Plain::Readyz, proxy, headers, head)?,
        // The proxy's futures are boxed: they hold every upstream path inline (many KiB), and
        // each layer above that takes a future by value (task-locals, hyper's per-request and
        // per-stream state) would otherwise copy all of it at every request.
        ApiRequest::Manifest { reference, .. } => render(
            Box::pin(proxy.manifest(&reference, head, headers.get_all(header::ACCEPT))).await?,
        ),
        ApiRequest::Blob { repository, digest } => render(
            Box::pin(proxy.blob(&repository, &digest, head, headers.get(header::RANGE))).await?,
        ),
        ApiRequest::TagsList {
            repository,
            n,
            last,
        } => render(Box::pin(proxy.tags_list(&repository, n, last.as_deref(), head)).await?),
        ApiRequest::Referrers {
            repository,
            digest,
            artifact_type,
            page,
        } => render(
            Box::pin(proxy.referrers(&repository, &digest, artifact_type.as_deref(), &page, head))
                .await?,
        ),
    })
}

/// The response for what the proxy served.
fn render(served: Served) -> Response<Body> {
    match served {
        Served::Manifest { manifest, head } => {
            let mut response = bytes_response(
                StatusCode::OK,
                &manifest.media_type,
                manifest.bytes.clone(),
                head,
            );
            if let Ok(digest) = http::HeaderValue::from_str(&manifest.digest) {
                response
                    .headers_mut()
                    .insert("docker-content-digest", digest);
            }
            response
        }
        Served::Blob(blob) => blob_response(blob),
        Served::List {
            content_type,
            body,
            head,
            link,
            filters,
        } => {
            let mut response = bytes_response(StatusCode::OK, &content_type, body, head);
            if let Some(filters) = filters {
                response
                    .headers_mut()
                    .insert(crate::proxy::OCI_FILTERS_APPLIED, filters);
            }
            if let Some(link) = link {
                response.headers_mut().insert(header::LINK, link);
            }
            response
        }
    }
}

/// A blob answer: its headers, and its bytes as they stream (none for a `HEAD`). A range no
/// byte satisfies is 416 with `Content-Range: bytes */SIZE` when the size is known, and no
/// digest: no content is served.
fn blob_response(blob: ServedBlob) -> Response<Body> {
    use futures_util::TryStreamExt;
    use http_body_util::BodyExt;
    let ServedBlob {
        digest,
        range,
        len,
        content_range,
        stream,
    } = blob;
    let body = match stream {
        Some(stream) => {
            http_body_util::StreamBody::new(stream.map_ok(hyper::body::Frame::data)).boxed_unsync()
        }
        None => super::empty_body(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = match range {
        BlobRange::Whole => StatusCode::OK,
        BlobRange::Part => StatusCode::PARTIAL_CONTENT,
        BlobRange::Unsatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    if range != BlobRange::Unsatisfiable
        && let Ok(value) = http::HeaderValue::from_str(digest.as_str())
    {
        headers.insert("docker-content-digest", value);
    }
    headers.insert(
        header::ACCEPT_RANGES,
        http::HeaderValue::from_static("bytes"),
    );
    if let Some(range) = content_range {
        headers.insert(header::CONTENT_RANGE, range);
    }
    response
}

/// The methods every API path takes: mirrorgate is read-only.
const READ_METHODS: &str = "GET, HEAD, OPTIONS";

/// A bounded label value for a request method.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn json_response(body: Bytes, head: bool) -> Response<Body> {
    bytes_response(StatusCode::OK, "application/json", body, head)
}

fn text_response(status: StatusCode, text: &str, head: bool) -> Response<Body> {
    bytes_response(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(text.as_bytes()),
        head,
    )
}
