//! Manifests: tried along the route of the reference's kind (digest or tag), read whole (they are
//! small and bounded), and verified against the digest asked for before a byte is sent.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, GetAll};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::verify::digest_of;
use super::{AttemptFailure, Failure, Proxy, bytes_response, exhausted, resolve_error, summary};
use crate::http::{ApiError, Body, ErrorCode};
use crate::reference::{Algorithm, Reference};
use crate::upstream::UpstreamRequest;

/// The largest manifest accepted, as the Distribution registry bounds them.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The manifest types every upstream request accepts, whatever the client listed: an upstream
/// answers with the type it has, and the client gets exactly those bytes.
const STANDARD_MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A manifest as an upstream served it, verified.
pub(super) struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: String,
}

impl Proxy {
    /// `GET|HEAD /v2/<name>/manifests/<reference>`.
    pub(super) async fn manifest(
        &self,
        logical: &Reference,
        head: bool,
        accept: GetAll<'_, HeaderValue>,
    ) -> Result<Response<Body>, ApiError> {
        let resolution = self.rules().resolve(logical).map_err(|e| {
            tracing::info!(reference = %logical, error = %e, "manifest refused");
            resolve_error(e)
        })?;
        let accept = accept_header(accept);
        let mut failures = Vec::new();
        for source in &resolution.sources {
            match self.fetch_manifest(&source.reference, &accept).await {
                Ok(manifest) => {
                    tracing::info!(
                        method = if head { "HEAD" } else { "GET" },
                        reference = %logical,
                        served_by = %source.reference,
                        role = %source.role,
                        digest = %manifest.digest,
                        failed = %summary(&failures),
                        "manifest served"
                    );
                    self.remember_source(logical, &source.reference);
                    return Ok(manifest_response(manifest, head));
                }
                Err(reason) => {
                    tracing::debug!(reference = %source.reference, %reason, "pull source failed");
                    failures.push(Failure {
                        reference: source.reference.clone(),
                        role: source.role,
                        reason,
                    });
                }
            }
        }
        let error = exhausted(
            "manifest",
            logical.as_str(),
            &failures,
            ErrorCode::ManifestUnknown,
        );
        tracing::info!(reference = %logical, status = error.status.as_u16(), failed = %summary(&failures), "manifest not served");
        Err(error)
    }

    /// Fetches one manifest from one pull source. HEAD requests are answered from a GET too:
    /// manifests are small, and only the bytes prove the digest a HEAD would report.
    async fn fetch_manifest(
        &self,
        physical: &Reference,
        accept: &HeaderValue,
    ) -> Result<Manifest, AttemptFailure> {
        let target = physical
            .digest_str()
            .or(physical.tag())
            .unwrap_or(crate::reference::DEFAULT_TAG);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, accept.clone());
        let response = self
            .upstream
            .send(UpstreamRequest {
                method: Method::GET,
                registry: physical.domain().to_owned(),
                repository: physical.path().to_owned(),
                path: format!("/v2/{}/manifests/{target}", physical.path()),
                query: None,
                headers,
                follow_redirects: false,
            })
            .await?;
        if response
            .content_length()
            .is_some_and(|len| len > MAX_MANIFEST_BYTES as u64)
        {
            return Err(AttemptFailure::TooLarge(MAX_MANIFEST_BYTES));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let announced_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_bounded(response, MAX_MANIFEST_BYTES).await?;

        let algorithm = physical
            .digest()
            .map_or(Algorithm::Sha256, |d| d.algorithm());
        let digest = digest_of(algorithm, &bytes);
        // By digest the bytes must be that digest; by tag they must at least be what the upstream
        // says they are, or they were damaged on the way.
        let expected = physical
            .digest_str()
            .map(str::to_owned)
            .or(announced_digest.filter(|d| d.starts_with(algorithm.name())));
        if let Some(expected) = expected
            && expected != digest
        {
            tracing::warn!(reference = %physical, expected, actual = digest, "manifest digest mismatch");
            return Err(AttemptFailure::DigestMismatch { actual: digest });
        }
        let media_type = content_type
            .filter(|t| !t.is_empty() && t != "application/octet-stream")
            .or_else(|| media_type_field(&bytes))
            .unwrap_or_else(|| STANDARD_MANIFEST_TYPES[0].to_owned());
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }
}

/// The client's `Accept` values, plus every standard manifest type they lack.
fn accept_header(client: GetAll<'_, HeaderValue>) -> HeaderValue {
    let mut types: Vec<String> = client
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    for standard in STANDARD_MANIFEST_TYPES {
        if !types.iter().any(|t| t.split(';').next() == Some(standard)) {
            types.push(standard.to_owned());
        }
    }
    HeaderValue::from_str(&types.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static(STANDARD_MANIFEST_TYPES[0]))
}

/// The `mediaType` field of a manifest, for upstreams that send no usable `Content-Type`.
fn media_type_field(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct MediaType {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<MediaType>(bytes).ok()?.media_type
}

/// Reads a whole response body, failing as soon as it passes `limit` bytes.
pub(super) async fn read_bounded(
    response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, AttemptFailure> {
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AttemptFailure::Body(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(AttemptFailure::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn manifest_response(manifest: Manifest, head: bool) -> Response<Body> {
    let mut response = bytes_response(StatusCode::OK, &manifest.media_type, manifest.bytes, head);
    if let Ok(digest) = HeaderValue::from_str(&manifest.digest) {
        response
            .headers_mut()
            .insert("docker-content-digest", digest);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_keeps_the_clients_types_and_adds_the_standard_ones() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.docker.distribution.manifest.v2+json"),
        );
        let accept = accept_header(headers.get_all(header::ACCEPT));
        assert_eq!(
            accept.to_str().unwrap(),
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"
        );
    }

    #[test]
    fn media_type_is_read_from_the_manifest_when_the_header_lacks_it() {
        assert_eq!(
            media_type_field(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            ),
            Some("application/vnd.oci.image.index.v1+json".to_owned())
        );
    }
}
