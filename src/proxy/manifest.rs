//! Manifests: tried along the route of the reference's kind (digest or tag), read whole (they are
//! small and bounded), and verified against the digest asked for before a byte is sent. By digest
//! they are cached for good; by tag the answer (tag → digest) is reused for `cache.tag_ttl`, then
//! revalidated with a HEAD. A manifest is served as the type it names itself (see
//! [`media_type_of`](crate::cache::manifests::media_type_of)), whichever upstream served it, and
//! only to a client whose `Accept` takes that type ([`ManifestAccept`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, GetAll};

use super::accept::ManifestAccept;
use http::{HeaderMap, HeaderValue, Method};

use super::admission::Admission;
use super::attempt::{AttemptFailure, Failure, exhausted, summary};
use super::cached::Stored;
use super::error::{Error, Missing};
use super::open::Proxy;
use super::route::Route;
use super::served::Served;
use crate::cache::StoredManifest;
use crate::cache::TagAnswer;
use crate::cache::stats::CacheStats;
use crate::cache::{MAX_MANIFEST_BYTES, size_mismatch};
use crate::reference::{Algorithm, Digest, Reference, manifest_digest};
use crate::rules::{PullSource, Resolution, Role};
use crate::upstream::UpstreamRequest;

/// What the upstreams are asked for on behalf of one client, and under which keys its answers
/// are shared: a client that takes every standard type shares them with every other such client
/// (and with mirrorgate's own requests); one that takes fewer, only with clients taking the same
/// types, so that no answer of a type one client refused (a 404, or an upstream's conversion)
/// reaches another.
struct Asked {
    /// The upstream `Accept`.
    accept: HeaderValue,
    /// Appended to the fetch and tag-answer keys; `None` for a client taking every standard type.
    variant: Option<String>,
}

impl Asked {
    fn new(accept: &ManifestAccept) -> Option<Asked> {
        let upstream = accept.upstream()?;
        let variant = (!accept.takes_every_standard_type())
            .then(|| format!(" accept {}", upstream.to_str().unwrap_or_default()));
        Some(Asked {
            accept: upstream,
            variant,
        })
    }

    fn key(&self, base: &str) -> String {
        format!("{base}{}", self.variant.as_deref().unwrap_or_default())
    }
}

impl Proxy {
    /// `GET|HEAD /v2/<name>/manifests/<reference>`.
    pub async fn manifest(
        self: &Arc<Self>,
        logical: &Reference,
        head: bool,
        accept: GetAll<'_, HeaderValue>,
    ) -> Result<Served, Error> {
        let accept = ManifestAccept::from_headers(accept);
        let manifest = self.stored_manifest(logical, &accept).await?;
        // Cached, joined, or an upstream that ignored the Accept: never a type the client
        // refused. Distribution answers such a client 404 `MANIFEST_UNKNOWN` too.
        if !accept.accepts(&manifest.media_type) {
            tracing::info!(reference = %logical, media_type = %manifest.media_type, "manifest not of a type the client accepts");
            return Err(Error::NotFound {
                missing: Missing::Manifest,
                message: format!(
                    "{logical}: the manifest is {}, which the request's Accept header does not include",
                    manifest.media_type
                ),
            });
        }
        Ok(Served::Manifest { manifest, head })
    }

    /// The manifest `logical` names, from the cache or fetched along the rules (and cached).
    pub(super) async fn stored_manifest(
        self: &Arc<Self>,
        logical: &Reference,
        accept: &ManifestAccept,
    ) -> Result<Arc<StoredManifest>, Error> {
        // The rules decide first: cached content is only served where they allow a pull.
        let mut resolution = self.rules().resolve(logical).map_err(|e| {
            tracing::info!(reference = %logical, error = %e, "manifest refused");
            self.refuse(Route::Manifest, e)
        })?;
        self.reachable_only(logical, &mut resolution.sources, |s| {
            (s.reference.domain(), s.role)
        })?;
        let asked = Asked::new(accept).ok_or_else(|| Error::NotFound {
            missing: Missing::Manifest,
            message: format!("{logical}: the request's Accept header refuses every manifest type"),
        })?;
        match logical.digest() {
            Some(digest) => {
                self.refuse_withdrawn(digest.as_str(), Missing::Manifest, Route::Manifest)?;
                self.manifest_by_digest(logical, &digest, resolution, asked)
                    .await
            }
            None => {
                let manifest = self.manifest_by_tag(logical, resolution, asked).await?;
                // A tag is only known to lead to a withdrawn digest once it is answered.
                self.refuse_withdrawn(&manifest.digest, Missing::Manifest, Route::Manifest)?;
                Ok(manifest)
            }
        }
    }

    /// A manifest by digest: from the cache, else fetched along the digest route (one fetch
    /// for any number of concurrent requests).
    async fn manifest_by_digest(
        self: &Arc<Self>,
        logical: &Reference,
        digest: &Digest,
        resolution: Resolution,
        asked: Asked,
    ) -> Result<Arc<StoredManifest>, Error> {
        if let Some(manifest) = self.tiers.manifest(digest) {
            let sources: Vec<(Reference, Role)> = resolution
                .sources
                .iter()
                .map(|s| (s.reference.clone(), s.role))
                .collect();
            self.may_serve_cached(
                logical,
                &sources,
                Stored::Manifest,
                Some(manifest.bytes.len() as u64),
            )
            .await?;
            CacheStats::count(&self.tiers.stats().manifest_hits);
            tracing::info!(reference = %logical, served_by = "cache", "manifest served");
            return Ok(manifest);
        }
        let this = self.clone();
        let owned = logical.clone();
        // The fetch runs in a task of its own, in the class of whoever started it.
        let class = Admission::current();
        let key = asked.key(logical.as_str());
        let (result, joined) = self
            .manifest_flights
            .run(&key, move || {
                crate::upstream::via::carried(class.scope(async move {
                    // One miss per fetch; requests joining it are counted as coalesced.
                    CacheStats::count(&this.tiers.stats().manifest_misses);
                    if let Some(shared) = this.shared_manifest(&owned, &resolution).await {
                        return shared;
                    }
                    this.fetch_along(&owned, &resolution.sources, &asked.accept)
                        .await
                }))
            })
            .await;
        if joined {
            CacheStats::count(&self.tiers.stats().coalesced);
        }
        result.unwrap_or_else(|| Err(interrupted()))
    }

    /// The manifest `logical` names by digest from the shared tier, if it holds it (verified)
    /// and may serve it for this repository (`None`: ask the upstreams).
    async fn shared_manifest(
        &self,
        logical: &Reference,
        resolution: &Resolution,
    ) -> Option<Result<Arc<StoredManifest>, Error>> {
        let digest = logical.digest()?;
        let manifest = self.tiers.shared_manifest(&digest).await?;
        let sources: Vec<(Reference, Role)> = resolution
            .sources
            .iter()
            .map(|s| (s.reference.clone(), s.role))
            .collect();
        if let Err(error) = self
            .may_serve_cached(
                logical,
                &sources,
                Stored::Manifest,
                Some(manifest.bytes.len() as u64),
            )
            .await
        {
            return Some(Err(error));
        }
        self.tiers.keep_shared_manifest(logical.name(), &manifest);
        tracing::info!(reference = %logical, served_by = "shared cache", "manifest served");
        Some(Ok(manifest))
    }

    /// A manifest by tag: the cached answer within its TTL, else revalidated (one revalidation
    /// for any number of concurrent requests).
    async fn manifest_by_tag(
        self: &Arc<Self>,
        logical: &Reference,
        resolution: Resolution,
        asked: Asked,
    ) -> Result<Arc<StoredManifest>, Error> {
        let route = route_fingerprint(&resolution);
        let tag_key = asked.key(logical.as_str());
        // An answer found on another route is not an answer for this one.
        let answer = self
            .tiers
            .tag_answer(&tag_key)
            .filter(|answer| answer.route == route);
        if let Some(answer) = &answer
            && answer.confirmed_at.elapsed() < self.tiers.tag_ttl()
            && let Some(manifest) = self.cached_manifest(&answer.digest)
        {
            CacheStats::count(&self.tiers.stats().tag_hits);
            tracing::info!(reference = %logical, served_by = "cache", digest = %answer.digest, "manifest served");
            return Ok(manifest);
        }
        let this = self.clone();
        let owned = logical.clone();
        let key = format!("tag {tag_key}");
        let class = Admission::current();
        let (result, joined) = self
            .manifest_flights
            .run(&key, move || {
                crate::upstream::via::carried(class.scope(async move {
                    this.refresh_tag(&owned, resolution, route, answer, asked)
                        .await
                }))
            })
            .await;
        if joined {
            CacheStats::count(&self.tiers.stats().coalesced);
        }
        result.unwrap_or_else(|| Err(interrupted()))
    }

    /// Asks the route what a tag points to now. With an earlier answer whose manifest is still
    /// cached, a HEAD suffices unless the tag moved; when every source fails, an earlier answer
    /// younger than `stale_if_error` is served.
    async fn refresh_tag(
        &self,
        logical: &Reference,
        resolution: Resolution,
        route: u64,
        answer: Option<TagAnswer>,
        asked: Asked,
    ) -> Result<Arc<StoredManifest>, Error> {
        let accept = &asked.accept;
        let known = answer
            .as_ref()
            .and_then(|a| Some((a, self.cached_manifest(&a.digest)?)));
        let _slot = match self.sources.fetch_slots.acquire(logical.as_str()).await {
            Ok(slot) => slot,
            // Too busy to ask: like an upstream failure, a recent enough answer is served.
            Err(busy) => {
                return match known {
                    Some((answer, cached))
                        if answer.confirmed_at.elapsed() < self.tiers.stale_if_error() =>
                    {
                        CacheStats::count(&self.tiers.stats().stale_served);
                        tracing::warn!(reference = %logical, digest = %answer.digest, "no upstream fetch slot free; serving the last known answer");
                        Ok(cached)
                    }
                    _ => Err(busy),
                };
            }
        };
        if known.is_some() {
            CacheStats::count(&self.tiers.stats().tag_revalidations);
        }
        let mut failures = Vec::new();
        let mut missed = false;
        for source in &resolution.sources {
            self.note_attempt(source.role, &failures, Route::Manifest);
            if let Some((answer, cached)) = &known {
                match self
                    .head_digest(&source.reference, source.role, accept)
                    .await
                {
                    Ok(Some(digest)) if digest == answer.digest => {
                        self.record_tag(logical, &asked, &digest, source, route);
                        if !failures.is_empty() {
                            self.metrics.proxy.fallback(Route::Manifest.as_str());
                        }
                        tracing::info!(reference = %logical, served_by = "cache", confirmed_by = %source.reference, "manifest served");
                        return Ok(cached.clone());
                    }
                    // Moved, or no digest announced: fetch it from this source.
                    Ok(_) => {}
                    Err(reason) => {
                        failures.push(Failure {
                            reference: source.reference.clone(),
                            role: source.role,
                            reason,
                        });
                        continue;
                    }
                }
            }
            // The tag is unknown, moved, or its manifest left the cache: a manifest fetch, as
            // for a digest the cache does not hold (once per lookup, whatever it costs).
            if !missed {
                missed = true;
                CacheStats::count(&self.tiers.stats().manifest_misses);
            }
            match self
                .fetch_manifest(&source.reference, source.role, accept, None)
                .await
            {
                Ok(manifest) => {
                    let manifest = self.fetched(logical, source, manifest, &failures);
                    self.record_tag(logical, &asked, &manifest.digest, source, route);
                    return Ok(manifest);
                }
                Err(reason) => failures.push(Failure {
                    reference: source.reference.clone(),
                    role: source.role,
                    reason,
                }),
            }
        }
        let all_not_found = failures.iter().all(|f| f.reason.is_not_found());
        if let Some((answer, cached)) = known
            && !all_not_found
            && answer.confirmed_at.elapsed() < self.tiers.stale_if_error()
        {
            CacheStats::count(&self.tiers.stats().stale_served);
            tracing::warn!(reference = %logical, digest = %answer.digest, failed = %summary(&failures), "every source failed; serving the last known answer");
            return Ok(cached);
        }
        // The shared tier holds the answers of clients taking every standard type (the check of
        // the client's Accept applies to them all the same).
        if !all_not_found
            && let Some(tag) = logical.tag()
            && let Some(manifest) = self
                .tiers
                .shared_tag_answer(logical.name(), tag, route)
                .await
        {
            tracing::warn!(reference = %logical, digest = %manifest.digest, failed = %summary(&failures), "every source failed; serving the answer recorded in the shared cache");
            return Ok(manifest);
        }
        if all_not_found {
            self.tiers.forget_tag(&asked.key(logical.as_str()));
        }
        let error = exhausted("manifest", logical.as_str(), &failures, Missing::Manifest);
        Err(error)
    }

    /// What follows a manifest fetched from `source` for `logical`: it is cached, the source is
    /// remembered for the repository's blobs, a fallback is counted, and the request is logged.
    fn fetched(
        &self,
        logical: &Reference,
        source: &PullSource,
        manifest: StoredManifest,
        failures: &[Failure],
    ) -> Arc<StoredManifest> {
        let manifest = Arc::new(manifest);
        self.tiers.keep_fetched_manifest(logical.name(), &manifest);
        self.sources.remember_source(logical, &source.reference);
        self.remember_content(logical.name(), &manifest.digest);
        if !failures.is_empty() {
            self.metrics.proxy.fallback(Route::Manifest.as_str());
        }
        tracing::info!(
            reference = %logical,
            served_by = %source.reference,
            role = %source.role,
            digest = %manifest.digest,
            failed = %summary(failures),
            "manifest served"
        );
        manifest
    }

    fn record_tag(
        &self,
        logical: &Reference,
        asked: &Asked,
        digest: &str,
        source: &PullSource,
        route: u64,
    ) {
        let key = asked.key(logical.as_str());
        // Only the answers every client taking the standard types would get are shared.
        let shared = logical
            .tag()
            .filter(|_| asked.variant.is_none())
            .map(|tag| (logical.name(), tag));
        self.tiers
            .record_tag(&key, shared, digest, source.reference.as_str(), route);
    }

    fn cached_manifest(&self, digest: &str) -> Option<Arc<StoredManifest>> {
        self.tiers.manifest_by_str(digest)
    }

    /// Tries `sources` in order for the manifest `logical` names.
    async fn fetch_along(
        &self,
        logical: &Reference,
        sources: &[PullSource],
        accept: &HeaderValue,
    ) -> Result<Arc<StoredManifest>, Error> {
        let _slot = self.sources.fetch_slots.acquire(logical.as_str()).await?;
        // A child of an index fetched before has a declared size.
        let expected = logical
            .digest()
            .and_then(|digest| self.tiers.declared_size(logical.name(), &digest));
        let mut failures = Vec::new();
        for source in sources {
            self.note_attempt(source.role, &failures, Route::Manifest);
            match self
                .fetch_manifest(&source.reference, source.role, accept, expected)
                .await
            {
                Ok(manifest) => return Ok(self.fetched(logical, source, manifest, &failures)),
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
        let error = exhausted("manifest", logical.as_str(), &failures, Missing::Manifest);
        Err(error)
    }

    /// The digest a source announces for a manifest, from a HEAD.
    async fn head_digest(
        &self,
        physical: &Reference,
        role: Role,
        accept: &HeaderValue,
    ) -> Result<Option<String>, AttemptFailure> {
        let mut request = manifest_request(physical, accept);
        request.method = Method::HEAD;
        let response = self.attempt(request, role, Route::Manifest).await?;
        Ok(response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// Fetches one manifest from one pull source, of the `expected` size if a descriptor gave
    /// one. HEAD requests are answered from a GET too: manifests are small, and only the bytes
    /// prove the digest a HEAD would report.
    async fn fetch_manifest(
        &self,
        physical: &Reference,
        role: Role,
        accept: &HeaderValue,
        expected: Option<u64>,
    ) -> Result<StoredManifest, AttemptFailure> {
        let response = self
            .attempt(manifest_request(physical, accept), role, Route::Manifest)
            .await?;
        if let Some(reason) = size_mismatch(expected, response.content_length()) {
            self.count_attempt(physical.domain(), role, Route::Manifest, "size_mismatch");
            return Err(AttemptFailure::SizeMismatch(reason));
        }
        let limit = expected.map_or(MAX_MANIFEST_BYTES, |size| {
            usize::try_from(size).map_or(MAX_MANIFEST_BYTES, |size| size.min(MAX_MANIFEST_BYTES))
        });
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(AttemptFailure::TooLarge(limit));
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
        let bytes = read_bounded(response, limit).await?;

        let algorithm = physical
            .digest()
            .map_or(Algorithm::Sha256, |d| d.algorithm());
        // A signed schema-1 manifest's digest is over its payload (Distribution re-signs it on
        // every GET): `manifest_digest` knows.
        let digest = manifest_digest(algorithm, &bytes);
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
            self.count_attempt(physical.domain(), role, Route::Manifest, "digest_mismatch");
            return Err(AttemptFailure::DigestMismatch { actual: digest });
        }
        let manifest = StoredManifest::new(bytes, digest);
        // This upstream's header is not what other repositories holding the digest are told.
        if let Some(header) = content_type
            && header.split(';').next().map(str::trim) != Some(manifest.media_type.as_str())
        {
            tracing::debug!(reference = %physical, content_type = header, media_type = %manifest.media_type, "the upstream's Content-Type is not what the manifest says it is; served as the manifest says");
        }
        Ok(manifest)
    }
}

/// `GET /v2/<path>/manifests/<digest or tag>` for a physical reference.
pub(super) fn manifest_request(physical: &Reference, accept: &HeaderValue) -> UpstreamRequest {
    let target = physical
        .digest_str()
        .or(physical.tag())
        .unwrap_or(crate::reference::DEFAULT_TAG);
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, accept.clone());
    UpstreamRequest {
        method: Method::GET,
        registry: physical.domain().to_owned(),
        repository: physical.path().to_owned(),
        path: format!("/v2/{}/manifests/{target}", physical.path()),
        query: None,
        headers,
        follow_redirects: false,
    }
}

/// What identifies a route: the pull sources in order. A tag answer is only reused on the
/// route it was found on.
fn route_fingerprint(resolution: &Resolution) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for source in &resolution.sources {
        source.role.as_str().hash(&mut hasher);
        source.reference.as_str().hash(&mut hasher);
    }
    hasher.finish()
}

/// The answer for waiters of a fetch that ended without a result (its task died).
fn interrupted() -> Error {
    Error::Upstream("the upstream fetch was interrupted; try again".to_owned())
}

/// An `Accept` of the standard manifest types alone (for requests no client asked for).
pub(super) fn standard_accept() -> ManifestAccept {
    ManifestAccept::standard()
}

/// The upstream `Accept` of [`standard_accept`].
pub(super) fn standard_accept_header() -> HeaderValue {
    standard_accept()
        .upstream()
        .unwrap_or_else(|| HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"))
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
