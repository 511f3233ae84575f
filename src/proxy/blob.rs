//! Blobs: digest-addressed and tag-less, so any source holding the bytes is right. They are tried
//! from the source that served this repository's manifest recently (as containers/image keeps
//! pulling from the endpoint that gave it the manifest), then the digest route, then the tag
//! route's mirrors. The body streams to the client as it arrives and is hashed on the way; if it
//! does not match the digest, the response is aborted rather than completed.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};

use super::verify::{Outcome, Verified};
use super::{AttemptFailure, Failure, Proxy, exhausted, resolve_error, summary};
use crate::http::{ApiError, Body, ErrorCode, Repository, empty_body};
use crate::reference::{Digest, Reference};
use crate::rules::Role;
use crate::upstream::UpstreamRequest;

impl Proxy {
    /// `GET|HEAD /v2/<name>/blobs/<digest>`, with `Range` passed through.
    pub(super) async fn blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        head: bool,
        range: Option<&HeaderValue>,
    ) -> Result<Response<Body>, ApiError> {
        let logical = repository.with_digest(digest);
        let candidates = self.blob_candidates(repository, &logical)?;
        if candidates.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unknown,
                format!(
                    "no source can serve blob {logical}: every source recently served bytes that do not match the digest"
                ),
            ));
        }
        let mut failures = Vec::new();
        for (physical, role) in candidates {
            let mut headers = HeaderMap::new();
            if let Some(range) = range {
                headers.insert(header::RANGE, range.clone());
            }
            let request = UpstreamRequest {
                method: if head { Method::HEAD } else { Method::GET },
                registry: physical.domain().to_owned(),
                repository: physical.path().to_owned(),
                path: format!("/v2/{}/blobs/{digest}", physical.path()),
                query: None,
                headers,
                follow_redirects: true,
            };
            match self.upstream.send(request).await {
                Ok(upstream) => {
                    tracing::info!(
                        method = if head { "HEAD" } else { "GET" },
                        reference = %logical,
                        served_by = %physical,
                        %role,
                        failed = %summary(&failures),
                        "blob served"
                    );
                    let on_corrupt = self.corrupt_recorder();
                    return Ok(blob_response(upstream, digest, physical, head, on_corrupt));
                }
                Err(error) => failures.push(Failure {
                    reference: physical,
                    role,
                    reason: AttemptFailure::Upstream(error),
                }),
            }
        }
        let error = exhausted("blob", logical.as_str(), &failures, ErrorCode::BlobUnknown);
        tracing::info!(reference = %logical, status = error.status.as_u16(), failed = %summary(&failures), "blob not served");
        Err(error)
    }

    /// The physical blob references to try, in order, without repeats: the digest route, then
    /// the tag route's mirrors, with the source that recently served this repository's manifest
    /// moved to the front — if the current rules still route there at all.
    fn blob_candidates(
        &self,
        repository: &Repository,
        logical: &Reference,
    ) -> Result<Vec<(Reference, Role)>, ApiError> {
        let digest = logical.digest();
        let rules = self.rules();
        let mut candidates: Vec<(Reference, Role)> = Vec::new();
        let digest_route = rules.resolve(logical);
        if let Ok(resolution) = &digest_route {
            candidates.extend(
                resolution
                    .sources
                    .iter()
                    .map(|s| (s.reference.clone(), s.role)),
            );
        }
        if let Ok(tag_route) = rules.resolve(&repository.reference) {
            let mirrors = tag_route.sources.iter().filter(|s| s.role == Role::Mirror);
            for mirror in mirrors {
                let physical = Reference::from_parts(
                    mirror.reference.domain(),
                    mirror.reference.path(),
                    None,
                    digest.as_ref(),
                );
                if let Ok(physical) = physical {
                    candidates.push((physical, Role::Mirror));
                }
            }
        }
        let mut seen = HashSet::new();
        candidates.retain(|(physical, _)| {
            seen.insert(physical.name().to_owned()) && !self.is_corrupt(physical)
        });
        if let Some(remembered) = self.remembered_source(repository.name())
            && let Some(position) = candidates
                .iter()
                .position(|(physical, _)| physical.name() == remembered.name())
        {
            let preferred = candidates.remove(position);
            candidates.insert(0, preferred);
        }
        match (candidates.is_empty(), digest_route) {
            (true, Err(error)) => Err(resolve_error(error)),
            _ => Ok(candidates),
        }
    }
}

fn blob_response(
    upstream: reqwest::Response,
    digest: &Digest,
    physical: Reference,
    head: bool,
    on_corrupt: impl Fn(&Reference) + Send + 'static,
) -> Response<Body> {
    let status = upstream.status();
    let length = upstream.content_length();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Ok(value) = HeaderValue::from_str(digest.as_str()) {
        headers.insert("docker-content-digest", value);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(range) = upstream.headers().get(header::CONTENT_RANGE) {
        headers.insert(header::CONTENT_RANGE, range.clone());
    }

    let body = if head {
        empty_body()
    } else if status == StatusCode::PARTIAL_CONTENT {
        // A range cannot be checked against the digest of the whole blob; it is passed through.
        StreamBody::new(
            upstream
                .bytes_stream()
                .map_ok(hyper::body::Frame::data)
                .map_err(std::io::Error::other),
        )
        .boxed_unsync()
    } else {
        let verified = Verified::new(
            upstream.bytes_stream(),
            digest.clone(),
            length,
            move |outcome| match outcome {
                Outcome::Complete(_) => {}
                Outcome::Corrupt(reason) => {
                    tracing::warn!(served_by = %physical, %reason, "blob aborted: corrupt; the source is skipped for this blob for a while");
                    on_corrupt(&physical);
                }
                Outcome::Broken(reason) => {
                    tracing::warn!(served_by = %physical, %reason, "blob aborted");
                }
            },
        );
        StreamBody::new(verified.map_ok(hyper::body::Frame::data)).boxed_unsync()
    };
    let mut response = Response::new(body);
    *response.status_mut() = if status == StatusCode::PARTIAL_CONTENT {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    *response.headers_mut() = headers;
    response
}
