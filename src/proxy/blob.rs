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

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio::sync::{mpsc, watch};

use super::admission::FetchSlot;
use super::attempt::{AttemptFailure, Failure, exhausted, summary};
use super::cached::{Stored, answer_confirms};
use super::error::{Error, Missing};
use super::open::Proxy;
use super::repository::Repository;
use super::route::Route;
use super::served::{BlobRange, BlobStream, Served, ServedBlob};
use super::verify::{Outcome, Verified};
use crate::cache::stats::CacheStats;
use crate::cache::{BlobFile, DownloadState, Piece, follow, read_range};
use crate::cache::{Filled, LEADER_QUEUE, lead, size_mismatch};
use crate::reference::{Digest, Reference};
use crate::rules::Role;
use crate::upstream::UpstreamRequest;

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

    /// Downloads a blob into the store, from the shared tier when it holds the blob and may
    /// serve it to `logical`'s repository, else from the first candidate that has it,
    /// publishing the progress; returns the final state. A blob fetched from an upstream is
    /// uploaded to the shared tier once stored.
    async fn download(
        &self,
        logical: &Reference,
        digest: &Digest,
        candidates: Vec<(Reference, Role)>,
        state: &watch::Sender<DownloadState>,
        leader: mpsc::Sender<Piece>,
    ) -> DownloadState {
        let mut leader = Some(leader);
        let expected = self.tiers.declared_size(logical.name(), digest);
        // A full disk must cost the cache, not the pull: the readers fetch it for themselves.
        if let Some(uncached) = self.tiers.room_for(digest, expected) {
            return uncached;
        }
        // The bucket is asked here, in the download's own task, so that waiting for it never
        // widens the moment between a request's look at the store and its start of a download.
        if let Some(done) = self
            .tiers
            .download_shared(
                logical.name(),
                logical.as_str(),
                digest,
                expected,
                state,
                &mut leader,
            )
            .await
        {
            return done;
        }
        let mut failures = Vec::new();
        for (physical, role) in candidates {
            self.note_attempt(role, &failures, Route::Blob);
            let response = match self
                .attempt(
                    blob_request(&physical, digest, Method::GET, None),
                    role,
                    Route::Blob,
                )
                .await
            {
                Ok(response) if response.status() == StatusCode::OK => response,
                Ok(response) => {
                    let status = response.status().as_u16();
                    failures.push(Failure {
                        reference: physical,
                        role,
                        reason: AttemptFailure::Upstream(crate::upstream::AttemptError::Status {
                            status,
                        }),
                    });
                    continue;
                }
                Err(error) => {
                    failures.push(Failure {
                        reference: physical,
                        role,
                        reason: AttemptFailure::Upstream(error),
                    });
                    continue;
                }
            };
            if let Some(reason) = size_mismatch(expected, response.content_length()) {
                self.count_attempt(physical.domain(), role, Route::Blob, "size_mismatch");
                failures.push(Failure {
                    reference: physical,
                    role,
                    reason: AttemptFailure::SizeMismatch(reason),
                });
                continue;
            }
            // Without a length announced, the manifest's size bounds the body.
            let len = response.content_length().or(expected);
            // One verification for every download path (verify.rs): the last chunk is held
            // back until the bytes hash to the digest and their length is the one announced.
            let verdict: Arc<Mutex<Option<Outcome>>> = Arc::default();
            let record = verdict.clone();
            // Told apart from a failure of the store, which is not the source's.
            let source_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let failed = source_failed.clone();
            let body = Verified::new(response.bytes_stream(), digest.clone(), len, move |o| {
                *record.lock().unwrap_or_else(|e| e.into_inner()) = Some(o);
            })
            .map(move |item| {
                item.map_err(|_| {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    verdict
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .unwrap_or_else(|| {
                            Outcome::Broken("the download ended without a verdict".to_owned())
                        })
                })
            });
            let (filled, temp) = match self
                .tiers
                .fill_blob(digest, len, body, state, &mut leader)
                .await
            {
                Ok(filled) => filled,
                Err(uncached) => return uncached,
            };
            let committed = match filled {
                Filled::Complete { size, in_file } => {
                    if in_file {
                        self.sources.note_blob_body(&physical, true);
                    }
                    Ok((size, in_file))
                }
                Filled::Unstored(reason) => {
                    self.sources.note_blob_body(&physical, true);
                    Err(reason)
                }
                Filled::Corrupt(reason) => {
                    tracing::warn!(served_by = %physical, %reason, "blob aborted: corrupt; the source is skipped for this blob for a while");
                    self.sources.corrupt_recorder()(&physical);
                    self.count_attempt(physical.domain(), role, Route::Blob, "digest_mismatch");
                    Err(reason)
                }
                Filled::Broken(reason) => {
                    if source_failed.load(std::sync::atomic::Ordering::Relaxed) {
                        self.sources.note_blob_body(&physical, false);
                    }
                    Err(reason)
                }
            };
            return match committed {
                Ok((size, in_file)) => {
                    CacheStats::add(&self.tiers.stats().bytes_fetched, size);
                    self.remember_content(logical.name(), digest.as_str());
                    if !failures.is_empty() {
                        self.metrics.fallback(Route::Blob.as_str());
                    }
                    tracing::info!(reference = %logical, served_by = %physical, %role, size, failed = %summary(&failures), "blob fetched");
                    // Verified and stored: now other replicas may have it too.
                    self.tiers.share_blob(digest);
                    if !in_file {
                        return DownloadState::Uncacheable;
                    }
                    DownloadState::Complete {
                        len: size,
                        temp: temp.clone(),
                    }
                }
                Err(reason) => {
                    tracing::warn!(reference = %logical, served_by = %physical, %reason, "blob download failed");
                    DownloadState::Failed {
                        reason: format!("blob {logical} from {physical}: {reason}").into(),
                        not_found: false,
                    }
                }
            };
        }
        let error = exhausted("blob", logical.as_str(), &failures, Missing::Blob);
        let not_found = matches!(
            error,
            Error::Exhausted {
                all_not_found: true,
                ..
            }
        );
        DownloadState::Failed {
            reason: error.to_string().into(),
            not_found,
        }
    }

    /// Serves a blob straight from the first candidate that has it, without storing it: HEAD,
    /// `Range` requests on blobs not stored, and a store that cannot take the blob.
    async fn blob_passthrough(
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
                        self.metrics.fallback(Route::Blob.as_str());
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

/// `GET|HEAD /v2/<path>/blobs/<digest>` for a physical reference, following redirects (blob
/// storage).
/// Whether `range` asks for the blob from its first byte (`bytes=0-`, `bytes=0-N`).
fn from_first_byte(range: &HeaderValue) -> bool {
    range
        .to_str()
        .ok()
        .and_then(|range| range.trim().strip_prefix("bytes="))
        .is_some_and(|spec| {
            !spec.contains(',')
                && spec
                    .trim()
                    .strip_prefix('0')
                    .is_some_and(|rest| rest.trim_start().starts_with('-'))
        })
}

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

/// A stored blob, whole or the part a single `Range` asks for.
fn stored_blob_response(
    blob: BlobFile,
    digest: &Digest,
    range: Option<&HeaderValue>,
    head: bool,
    stats: &Arc<crate::cache::stats::CacheStats>,
) -> ServedBlob {
    let size = blob.size;
    let (answer, start, len, content_range) = match range.map(|r| parse_range(r, size)) {
        None | Some(RangeAnswer::Whole) => (BlobRange::Whole, 0, size, None),
        Some(RangeAnswer::Part { start, end }) => (
            BlobRange::Part,
            start,
            end - start + 1,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).ok(),
        ),
        Some(RangeAnswer::Unsatisfiable) => return ServedBlob::unsatisfiable(digest, Some(size)),
    };
    if head {
        return served_blob(answer, Some(len), digest, content_range, None);
    }
    let BlobFile { file, guard, .. } = blob;
    let stats = stats.clone();
    let body = read_range(file, start, len).map(move |chunk| {
        // The guard lives as long as the body: the blob cannot be evicted under a reader.
        let _ = &guard;
        if let Ok(chunk) = &chunk {
            CacheStats::add(&stats.bytes_from_cache, chunk.len() as u64);
        }
        chunk
    });
    served_blob(answer, Some(len), digest, content_range, Some(body.boxed()))
}

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAnswer {
    /// Serve it whole (no usable range, or several ranges: the whole is a valid answer).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// The range lies outside the blob.
    Unsatisfiable,
}

fn parse_range(header: &HeaderValue, size: u64) -> RangeAnswer {
    let Some(spec) = header
        .to_str()
        .ok()
        .and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => last.parse::<u64>().ok().map(|n| {
            if n == 0 {
                None
            } else {
                Some((size.saturating_sub(n), size.saturating_sub(1)))
            }
        }),
        (false, true) => first
            .parse::<u64>()
            .ok()
            .map(|a| Some((a, size.saturating_sub(1)))),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(a), Ok(b)) if a <= b => Some(Some((a, b.min(size.saturating_sub(1))))),
            // An inverted range (`bytes=500-0`) can be satisfied by no byte: 416, as Go's
            // `http.ServeContent` (Distribution) answers, not the whole blob.
            (Ok(_), Ok(_)) => Some(None),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeAnswer::Whole,
        Some(None) => RangeAnswer::Unsatisfiable,
        Some(Some((start, end))) if size == 0 || start >= size || start > end => {
            RangeAnswer::Unsatisfiable
        }
        Some(Some((start, end))) => RangeAnswer::Part { start, end },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(spec: &str, size: u64) -> RangeAnswer {
        parse_range(&HeaderValue::from_str(spec).unwrap(), size)
    }

    #[test]
    fn closed_range_is_a_part() {
        assert_eq!(
            range("bytes=10-19", 100),
            RangeAnswer::Part { start: 10, end: 19 }
        );
    }

    #[test]
    fn open_range_runs_to_the_end() {
        assert_eq!(
            range("bytes=90-", 100),
            RangeAnswer::Part { start: 90, end: 99 }
        );
    }

    #[test]
    fn suffix_range_is_the_last_bytes() {
        assert_eq!(
            range("bytes=-10", 100),
            RangeAnswer::Part { start: 90, end: 99 }
        );
    }

    #[test]
    fn range_past_the_end_is_clamped() {
        assert_eq!(
            range("bytes=95-200", 100),
            RangeAnswer::Part { start: 95, end: 99 }
        );
    }

    #[test]
    fn an_inverted_range_is_unsatisfiable_whatever_the_size() {
        assert_eq!(
            [range("bytes=500-0", 1000), range("bytes=500-0", u64::MAX)],
            [RangeAnswer::Unsatisfiable, RangeAnswer::Unsatisfiable]
        );
    }

    #[test]
    fn range_starting_past_the_end_is_unsatisfiable() {
        assert_eq!(range("bytes=100-", 100), RangeAnswer::Unsatisfiable);
    }

    #[test]
    fn several_ranges_get_the_whole_blob() {
        assert_eq!(range("bytes=0-1,5-6", 100), RangeAnswer::Whole);
    }

    #[test]
    fn garbage_range_gets_the_whole_blob() {
        assert_eq!(range("items=1-2", 100), RangeAnswer::Whole);
    }
}
