//! A blob served straight from an upstream, without storing it: `HEAD`, `Range` requests on
//! blobs not stored, and a store that cannot take the blob. A whole blob is verified on the way.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderValue, Method, StatusCode, header};

use super::{blob_request, served_blob};
use crate::cache::size_mismatch;
use crate::cache::stats::CacheStats;
use crate::proxy::admission::FetchSlot;
use crate::proxy::attempt::{AttemptFailure, Failure, exhausted, summary};
use crate::proxy::cached::answer_confirms;
use crate::proxy::error::{Error, Missing};
use crate::proxy::open::Proxy;
use crate::proxy::route::Route;
use crate::proxy::served::{BlobRange, BlobStream, ServedBlob};
use crate::proxy::verify::{Outcome, Verified};
use crate::reference::{Digest, Reference};
use crate::rules::Role;

impl Proxy {
    /// Serves a blob straight from the first candidate that has it, without storing it: HEAD,
    /// `Range` requests on blobs not stored, and a store that cannot take the blob.
    pub(super) async fn blob_passthrough(
        self: &Arc<Self>,
        logical: &Reference,
        digest: &Digest,
        candidates: Vec<(Reference, Role)>,
        head: bool,
        range: Option<&HeaderValue>,
    ) -> Result<ServedBlob, Error> {
        let method = if head { Method::HEAD } else { Method::GET };
        let slot = self.sources.fetch_slots.acquire(logical.as_str()).await?;
        let expected = self.tiers.declared_size(logical.name(), digest);
        let mut failures = Vec::new();
        for (physical, role) in candidates {
            self.note_attempt(role, &failures, Route::Blob);
            let request = blob_request(&physical, digest, method.clone(), range);
            match self.attempt(request, role, Route::Blob).await {
                Ok(upstream)
                    if upstream.status() == StatusCode::OK
                        && let Some(reason) =
                            size_mismatch(expected, announced_length(&upstream)) =>
                {
                    self.count_attempt(physical.domain(), role, Route::Blob, "size_mismatch");
                    failures.push(Failure {
                        reference: physical,
                        role,
                        reason: AttemptFailure::SizeMismatch(reason),
                    });
                }
                Ok(upstream) => {
                    // An answer passed through confirms the pair only where it vouches for the
                    // content: a whole blob once its bytes are verified (as it ends), a HEAD or a
                    // part by the digest and total length it announces.
                    let partial = upstream.status() == StatusCode::PARTIAL_CONTENT;
                    let known = expected.or_else(|| self.tiers.blob_size(digest));
                    if (head || partial) && vouches(&upstream, digest, known) {
                        self.remember_content(logical.name(), digest.as_str());
                    }
                    if !failures.is_empty() {
                        self.metrics.proxy.fallback(Route::Blob.as_str());
                    }
                    tracing::info!(
                        method = %method,
                        reference = %logical,
                        served_by = %physical,
                        %role,
                        failed = %summary(&failures),
                        "blob served"
                    );
                    return Ok(self.passthrough_response(
                        upstream, slot, expected, logical, digest, physical, head,
                    ));
                }
                Err(error) => failures.push(Failure {
                    reference: physical,
                    role,
                    reason: AttemptFailure::Upstream(error),
                }),
            }
        }
        let error = exhausted("blob", logical.as_str(), &failures, Missing::Blob);
        Err(error)
    }

    /// A blob streamed straight from an upstream, holding `slot` until its body is done; a whole
    /// blob is verified on the way, and bounded by the `expected` size if its length is not
    /// announced.
    #[allow(clippy::too_many_arguments)]
    fn passthrough_response(
        self: &Arc<Self>,
        upstream: reqwest::Response,
        slot: FetchSlot,
        expected: Option<u64>,
        logical: &Reference,
        digest: &Digest,
        physical: Reference,
        head: bool,
    ) -> ServedBlob {
        let stats = self.tiers.stats().clone();
        let confirm = {
            let (this, repository, digest) =
                (self.clone(), logical.name().to_owned(), digest.clone());
            move || this.remember_content(&repository, digest.as_str())
        };
        let on_corrupt = self.sources.corrupt_recorder();
        let status = upstream.status();
        let partial = status == StatusCode::PARTIAL_CONTENT;
        let announced = announced_length(&upstream);
        // A whole blob without a length announced is bounded by its manifest's size.
        let length = if partial {
            announced
        } else {
            announced.or(expected)
        };
        let content_range = upstream.headers().get(header::CONTENT_RANGE).cloned();
        // The slot is held until the body is consumed or dropped.
        let bytes = upstream.bytes_stream().map(move |chunk| {
            let _held = &slot;
            chunk
        });
        let body: Option<BlobStream> = if head {
            None
        } else if partial {
            // A part cannot be checked against the digest of the whole blob; it is passed through.
            Some(bytes.map_err(std::io::Error::other).boxed())
        } else {
            let verified = Verified::new(
                bytes,
                digest.clone(),
                length,
                move |outcome| match outcome {
                    Outcome::Complete(_) => confirm(),
                    Outcome::Corrupt(reason) => {
                        tracing::warn!(served_by = %physical, %reason, "blob aborted: corrupt; the source is skipped for this blob for a while");
                        on_corrupt(&physical);
                    }
                    Outcome::Broken(reason) => {
                        tracing::warn!(served_by = %physical, %reason, "blob aborted");
                    }
                },
            );
            Some(
                verified
                    .inspect_ok(move |chunk| {
                        CacheStats::add(&stats.bytes_from_upstream, chunk.len() as u64);
                    })
                    .boxed(),
            )
        };
        let range = if partial {
            BlobRange::Part
        } else {
            BlobRange::Whole
        };
        served_blob(range, length, digest, content_range, body)
    }
}

/// Whether a `HEAD` or `Range` answer passed through vouches that its upstream holds `digest`
/// of the `known` length: the length it announces for the whole blob (`Content-Length` of a
/// 200, the total of a 206's `Content-Range`) is that length, and it names the digest (as a
/// confirming HEAD must). Without a length known here, nothing can be checked: no vouch.
fn vouches(upstream: &reqwest::Response, digest: &Digest, known: Option<u64>) -> bool {
    let whole = match upstream.status() {
        StatusCode::OK => announced_length(upstream),
        StatusCode::PARTIAL_CONTENT => upstream
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|range| range.to_str().ok())
            .and_then(|range| range.rsplit_once('/'))
            .and_then(|(_, total)| total.trim().parse().ok()),
        _ => None,
    };
    let from_registry = upstream.url().path().starts_with("/v2/");
    known.is_some()
        && answer_confirms(
            upstream.headers(),
            from_registry,
            digest.as_str(),
            whole,
            known,
        )
        .is_ok()
}

/// The length an upstream announces (`Content-Length`), also for a `HEAD` answer, whose body is
/// empty whatever the header says.
fn announced_length(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}
