//! A blob download into the cache tiers: from the shared tier when it may serve the blob, else
//! from the first candidate that has it, every byte verified while the readers follow it.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use http::{Method, StatusCode};
use tokio::sync::{mpsc, watch};

use super::blob_request;
use crate::cache::stats::CacheStats;
use crate::cache::{DownloadState, Filled, Piece, size_mismatch};
use crate::proxy::attempt::{AttemptFailure, Failure, exhausted, summary};
use crate::proxy::error::{Error, Missing};
use crate::proxy::open::Proxy;
use crate::proxy::route::Route;
use crate::proxy::verify::{Outcome, Verified};
use crate::reference::{Digest, Reference};
use crate::rules::Role;

impl Proxy {
    /// Downloads a blob into the store, from the shared tier when it holds the blob and may
    /// serve it to `logical`'s repository, else from the first candidate that has it,
    /// publishing the progress; returns the final state. A blob fetched from an upstream is
    /// uploaded to the shared tier once stored.
    pub(super) async fn download(
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
                        self.metrics.proxy.fallback(Route::Blob.as_str());
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
}
