//! Blobs: digest-addressed and tag-less, so any source holding the bytes is right. They are
//! served from the store when present; otherwise they are tried from the source that served this
//! repository's manifest recently (as containers/image keeps pulling from the endpoint that gave
//! it the manifest), then the digest route, then the tag route's mirrors.
//!
//! A miss starts one download per digest, however many clients ask: it writes a temporary file
//! while hashing, and every client — the first included — streams from that file as it grows.
//! The last byte is only released once the digest is verified, and the file only enters the store
//! then; a mismatch aborts every response and marks the source as corrupt for that blob.
//!
//! The download is by digest, but its outcome is its repository's: a client of another
//! repository that joins it is served only once that repository is known to hold the blob, and
//! fetches along its own route when the download fails.

mod download;
mod passthrough;
mod range;

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method, header};
use tokio::sync::{mpsc, watch};

use super::cached::Stored;
use super::error::{Error, Missing};
use super::open::Proxy;
use super::repository::Repository;
use super::route::Route;
use super::served::{BlobRange, BlobStream, Served, ServedBlob};
use crate::cache::stats::CacheStats;
use crate::cache::{DownloadState, Piece, follow};
use crate::cache::{LEADER_QUEUE, lead};
use crate::reference::{Digest, Reference};
use crate::rules::Role;
use crate::upstream::UpstreamRequest;
use range::{RangeAnswer, from_first_byte, parse_range, stored_blob_response};

/// How many downloads started for other repositories a request follows, when each ends without
/// the blob, before it gives up (each time it tries to start one of its own).
const JOIN_ROUNDS: usize = 4;

impl Proxy {
    /// `GET|HEAD /v2/<name>/blobs/<digest>`, with `Range`.
    pub async fn blob(
        self: &Arc<Self>,
        repository: &Repository,
        digest: &Digest,
        head: bool,
        range: Option<&HeaderValue>,
    ) -> Result<Served, Error> {
        self.blob_answer(repository, digest, head, range)
            .await
            .map(Served::Blob)
    }

    /// [`Proxy::blob`]'s answer.
    pub(super) async fn blob_answer(
        self: &Arc<Self>,
        repository: &Repository,
        digest: &Digest,
        head: bool,
        range: Option<&HeaderValue>,
    ) -> Result<ServedBlob, Error> {
        self.refuse_withdrawn(digest.as_str(), Missing::Blob, Route::Blob)?;
        let logical = repository.with_digest(digest);
        // The rules decide first: a stored blob is only served where they allow a pull.
        let candidates = self.blob_candidates(repository, &logical)?;
        // A hit costs one look at the index; only a miss checks for a commit under way.
        if self.tiers.blob_size(digest).is_none() {
            self.wait_for_commit(digest).await;
        }
        if let Some(response) = self
            .serve_stored(&logical, &candidates, range, head)
            .await?
        {
            return Ok(response);
        }
        if candidates.is_empty() {
            return Err(Error::Upstream(format!(
                "no source can serve blob {logical}: every source recently served bytes that do not match the digest"
            )));
        }
        // A range from the first byte is what a client asks for a whole blob it may stop
        // reading: it is answered from the verified download, whole (RFC 9110 lets a server
        // ignore Range). Other ranges of an uncached blob pass through unverified, as in the
        // Distribution registry: their bytes cannot be checked without the rest of the blob.
        let range = range.filter(|range| !from_first_byte(range));
        // A range no byte of any blob satisfies (`bytes=500-0`) is 416; a HEAD of the pull
        // sources says whether the blob is there at all, and its size for `Content-Range`.
        if let Some(range) = range
            && matches!(parse_range(range, u64::MAX), RangeAnswer::Unsatisfiable)
        {
            let found = self
                .blob_passthrough(&logical, digest, candidates, true, None)
                .await?;
            return Ok(ServedBlob::unsatisfiable(digest, found.len));
        }
        if head || range.is_some() {
            return self
                .blob_passthrough(&logical, digest, candidates, head, range)
                .await;
        }
        CacheStats::count(&self.tiers.stats().blob_misses);
        'rounds: for _ in 0..JOIN_ROUNDS {
            let Some((mut state, leader, origin)) =
                self.join_download(&logical, digest, &candidates).await?
            else {
                // A download that ended meanwhile stored the blob.
                if let Some(response) = self
                    .serve_stored(&logical, &candidates, None, false)
                    .await?
                {
                    return Ok(response);
                }
                continue;
            };
            // A download started for another repository may only be shared once this
            // repository is known to hold the blob too. That is checked after the join, whoever
            // started the download and however long this request waited for its slot: a client
            // queued for one may find a download started meanwhile (by a warm job, say).
            // The confirmation checks the length the download has (or announced), like a
            // stored blob's: a HEAD that claims the blob with another length confirms nothing.
            let foreign = origin != logical.name();
            if foreign {
                let len = match &*state.borrow() {
                    DownloadState::Complete { len, .. } => Some(*len),
                    DownloadState::Streaming { len, .. } => *len,
                    _ => None,
                };
                self.may_serve_cached(&logical, &candidates, Stored::Blob, len)
                    .await?;
            }
            loop {
                let current = state.borrow_and_update().clone();
                match current {
                    DownloadState::Connecting => {
                        if state.changed().await.is_err() {
                            return Err(download_lost());
                        }
                    }
                    DownloadState::Streaming { temp, len, .. } => {
                        let stats = self.tiers.stats().clone();
                        let bytes = match leader {
                            Some(leader) => lead(leader, temp, state).boxed(),
                            None => follow(temp, state, 0).boxed(),
                        };
                        let body = bytes.inspect_ok(move |chunk| {
                            CacheStats::add(&stats.bytes_from_upstream, chunk.len() as u64);
                        });
                        return Ok(served_blob(
                            BlobRange::Whole,
                            len,
                            digest,
                            None,
                            Some(body.boxed()),
                        ));
                    }
                    DownloadState::Complete { len, temp } => {
                        if let Some(blob) = self.tiers.open_blob(digest) {
                            return Ok(stored_blob_response(
                                blob,
                                digest,
                                None,
                                false,
                                self.tiers.stats(),
                            ));
                        }
                        // Verified but not yet in the store: read it where it is.
                        let stats = self.tiers.stats().clone();
                        let body = follow(temp, state, 0).inspect_ok(move |chunk| {
                            CacheStats::add(&stats.bytes_from_upstream, chunk.len() as u64);
                        });
                        return Ok(served_blob(
                            BlobRange::Whole,
                            Some(len),
                            digest,
                            None,
                            Some(body.boxed()),
                        ));
                    }
                    // Another repository's failure is its route's (its 404 names it): this
                    // repository's route is asked in a download of its own.
                    DownloadState::Failed { .. } if foreign => continue 'rounds,
                    DownloadState::Failed { reason, not_found } => {
                        return Err(if not_found {
                            Error::NotFound {
                                missing: Missing::Blob,
                                message: reason.to_string(),
                            }
                        } else {
                            Error::Upstream(reason.to_string())
                        });
                    }
                    // The download lost its file and goes on for one reader only.
                    DownloadState::Uncacheable | DownloadState::Relayed { .. } => {
                        return self
                            .blob_passthrough(&logical, digest, candidates, false, None)
                            .await;
                    }
                }
            }
        }
        Err(Error::Upstream(format!(
            "blob {logical}: downloads of it for other repositories kept failing; try again"
        )))
    }

    /// Waits while a download of `digest` whose bytes are all verified is being made durable
    /// and moved into the store (a moment), so that a request right after a pull — a `Range`
    /// or `HEAD` especially, which would otherwise go upstream — finds the blob stored. Returns
    /// whether it waited.
    pub(super) async fn wait_for_commit(&self, digest: &Digest) -> bool {
        let state = self.downloads.get(digest.as_str()).map(|(state, _)| state);
        let Some(mut state) = state else {
            return false;
        };
        if !matches!(*state.borrow_and_update(), DownloadState::Complete { .. }) {
            return false;
        }
        // The download's sender is dropped once the blob is stored (or could not be).
        while state.changed().await.is_ok() {}
        true
    }

    /// Blob `logical` from the store, whole or the part `range` asks, once the pair is
    /// confirmed for its repository; `None` when it is not stored.
    async fn serve_stored(
        &self,
        logical: &Reference,
        candidates: &[(Reference, Role)],
        range: Option<&HeaderValue>,
        head: bool,
    ) -> Result<Option<ServedBlob>, Error> {
        let Some(digest) = logical.digest() else {
            return Ok(None);
        };
        let Some(stored_len) = self.tiers.blob_size(&digest) else {
            return Ok(None);
        };
        self.may_serve_cached(logical, candidates, Stored::Blob, Some(stored_len))
            .await?;
        let Some(blob) = self.tiers.open_blob(&digest) else {
            return Ok(None);
        };
        CacheStats::count(&self.tiers.stats().blob_hits);
        tracing::info!(reference = %logical, served_by = "cache", "blob served");
        Ok(Some(stored_blob_response(
            blob,
            &digest,
            range,
            head,
            self.tiers.stats(),
        )))
    }

    /// Joins the download of `digest` under way (taking no slot), or starts one holding a fetch
    /// slot until it ends; with the repository whose download it is, and for the client that
    /// started it, the bytes as they arrive. `None` when the blob is stored by now (a download
    /// that ended meanwhile): no other is started.
    async fn join_download(
        self: &Arc<Self>,
        logical: &Reference,
        digest: &Digest,
        candidates: &[(Reference, Role)],
    ) -> Result<
        Option<(
            watch::Receiver<DownloadState>,
            Option<mpsc::Receiver<Piece>>,
            String,
        )>,
        Error,
    > {
        if let Some((state, origin)) = self.downloads.get(digest.as_str()) {
            CacheStats::count(&self.tiers.stats().coalesced);
            return Ok(Some((state, None, origin)));
        }
        if self.tiers.blob_size(digest).is_some() {
            return Ok(None);
        }
        // The slot is taken before the download starts, so that a refusal reaches this client
        // alone. A download started while it waited is joined instead (the slot goes back).
        let slot = self.sources.fetch_slots.acquire(logical.as_str()).await?;
        if self.tiers.blob_size(digest).is_some() {
            return Ok(None);
        }
        let (leader, leader_receiver) = mpsc::channel(LEADER_QUEUE);
        let this = self.clone();
        let owned = (logical.clone(), digest.clone(), candidates.to_vec());
        let (state, joined) = self.downloads.join_or_start(
            digest.as_str(),
            logical.name(),
            DownloadState::Connecting,
            move |progress| {
                crate::upstream::via::carried(async move {
                    let (logical, digest, candidates) = owned;
                    let outcome = this
                        .download(&logical, &digest, candidates, &progress, leader)
                        .await;
                    drop(slot);
                    outcome
                })
            },
        );
        if let Some(origin) = joined {
            CacheStats::count(&self.tiers.stats().coalesced);
            return Ok(Some((state, None, origin)));
        }
        Ok(Some((
            state,
            Some(leader_receiver),
            logical.name().to_owned(),
        )))
    }

    /// The physical blob references to try, in order, without repeats: the digest route, then
    /// the tag route's mirrors, with the source that recently served this repository's manifest
    /// moved to the front — if the current rules still route there at all. Sources that recently
    /// served corrupt bytes for this blob are left out; those whose bodies of it broke off
    /// [`BROKEN_BODIES`](super::sources::BROKEN_BODIES) times in a row go last.
    fn blob_candidates(
        &self,
        repository: &Repository,
        logical: &Reference,
    ) -> Result<Vec<(Reference, Role)>, Error> {
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
        if candidates.is_empty()
            && let Err(error) = digest_route
        {
            return Err(self.refuse(Route::Blob, error));
        }
        self.reachable_only(logical, &mut candidates, |(physical, role)| {
            (physical.domain(), *role)
        })?;
        let mut seen = HashSet::new();
        candidates.retain(|(physical, _)| {
            seen.insert(physical.name().to_owned()) && !self.sources.is_corrupt(physical)
        });
        if let Some(remembered) = self.sources.remembered_source(repository.name())
            && let Some(position) = candidates
                .iter()
                .position(|(physical, _)| physical.name() == remembered.name())
        {
            let preferred = candidates.remove(position);
            candidates.insert(0, preferred);
        }
        // Sources whose bodies of this blob keep breaking off go last (stable: the rest keep
        // their order), so the next pull tries the others.
        candidates.sort_by_key(|(physical, _)| self.sources.breaks_off(physical));
        Ok(candidates)
    }
}

/// `GET|HEAD /v2/<path>/blobs/<digest>` for a physical reference, following redirects (blob
/// storage).
pub(super) fn blob_request(
    physical: &Reference,
    digest: &Digest,
    method: Method,
    range: Option<&HeaderValue>,
) -> UpstreamRequest {
    let mut headers = HeaderMap::new();
    if let Some(range) = range {
        headers.insert(header::RANGE, range.clone());
    }
    UpstreamRequest {
        method,
        registry: physical.domain().to_owned(),
        repository: physical.path().to_owned(),
        path: format!("/v2/{}/blobs/{digest}", physical.path()),
        query: None,
        headers,
        follow_redirects: true,
    }
}

fn download_lost() -> Error {
    Error::Upstream("the blob download ended without an outcome; try again".to_owned())
}

/// A blob answer of `len` bytes (when known), with the stream given (`None`: a `HEAD`).
fn served_blob(
    range: BlobRange,
    len: Option<u64>,
    digest: &Digest,
    content_range: Option<HeaderValue>,
    stream: Option<BlobStream>,
) -> ServedBlob {
    ServedBlob {
        digest: digest.clone(),
        range,
        len,
        content_range,
        stream,
    }
}
