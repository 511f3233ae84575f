//! The shared cache tier as the other tiers use it: the bucket of [`crate::cache::shared`] behind
//! rules that keep it an optimisation, never a cause of a failed pull.
//!
//! Principal type: [`SharedTier`]. Every read waits a bounded time ([`WAIT`]); any failure
//! (unreachable, slow, full, forbidden, a missing bucket) is counted, logged at most once per
//! [`log_limit::INTERVAL`] per kind, and answered as a miss, so that the caller goes to the
//! upstreams. After a failure that says the bucket is unusable, reads skip it for [`BACKOFF`]
//! rather than paying a timeout on every request; uploads, which run in the background, keep
//! being tried, so that they resume as soon as the bucket is back.
//!
//! Objects found corrupt are remembered until they are replaced: they are not read again, and
//! the next upload of their digest overwrites them (the one overwrite mirrorgate makes).
//! Records (confirmations, tag answers) not sealed with our key are logged like a failure and
//! answered as absent, without backing off: the bucket works, the record is not ours.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{
    Kind, SharedConfig, SharedError, SharedRead, SharedStore, TagRecord, Timeouts, Uploaded,
};
use crate::cache::blobs::BlobFile;
use crate::log_limit;
use crate::reference::Digest;

/// The longest a request waits for the bucket to start answering (a read's first byte, a
/// confirmation's HEAD) before it goes to the upstreams instead.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long reads skip a bucket that failed as unusable (unreachable, timed out, forbidden,
/// missing).
pub const BACKOFF: Duration = Duration::from_secs(5);
/// Corrupt objects remembered at most (each until it is replaced).
const CORRUPT_CAPACITY: usize = 10_000;
/// Uploads under way at once. An upload of up to 8 MiB is read into memory (one conditional
/// `PUT`) and a larger one keeps parts in flight: a burst of fetched blobs (a release warm-up)
/// queues here instead of holding memory and connections for all of them at once.
const UPLOADS_AT_ONCE: usize = 4;

/// Rate-limited lines about the shared store, by kind of failure.
static FAILED: std::sync::LazyLock<log_limit::LogLimit> =
    std::sync::LazyLock::new(log_limit::LogLimit::default);

/// The shared tier: the bucket, when it is not backing off, and the corrupt objects to replace.
/// Cheap to clone: clones share the bucket's clients and what the tier remembers.
#[derive(Clone)]
pub struct SharedTier {
    store: SharedStore,
    /// Reads skip the bucket until then.
    skip_until: Arc<Mutex<Option<Instant>>>,
    /// Keys (`kind digest`) of objects found corrupt, not yet replaced.
    corrupt: Arc<Mutex<HashMap<String, Instant>>>,
    /// Permits for uploads ([`UPLOADS_AT_ONCE`]).
    uploads: Arc<tokio::sync::Semaphore>,
}

impl SharedTier {
    /// Opens the tier for `config`; logs an error and returns `None` when the configuration
    /// cannot be used at all (an unreadable credentials or CA file): the local cache then works
    /// alone, and `mirrorgate check` reports the same error.
    pub fn open(config: &SharedConfig) -> Option<SharedTier> {
        match SharedStore::open(config, Timeouts::default()) {
            Ok(store) => Some(SharedTier {
                store,
                skip_until: Arc::default(),
                corrupt: Arc::default(),
                uploads: Arc::new(tokio::sync::Semaphore::new(UPLOADS_AT_ONCE)),
            }),
            Err(error) => {
                tracing::error!(store = %config.s3.describe(), %error, "the shared cache cannot be used; serving from the local cache and upstreams only");
                None
            }
        }
    }

    /// The bucket.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Checks the bucket once at start, in the background: wrong credentials or a missing
    /// bucket are an error in the log (pulls are served either way).
    pub fn check_in_background(&self) {
        let store = self.store.clone();
        if store.record_keys() == 0 {
            tracing::warn!(store = %store.config().describe(), "cache.shared.key_file is not set: confirmations and tag answers are neither shared nor trusted from the bucket (content still is, verified by digest)");
        }
        tokio::spawn(async move {
            let described = store.config().describe();
            match tokio::time::timeout(WAIT * 2, store.check()).await {
                Ok(Ok(())) => tracing::info!(store = %described, "shared cache reachable"),
                Ok(Err(error)) => {
                    tracing::error!(store = %described, %error, kind = error.kind(), "the shared cache cannot be used; pulls are served from the local cache and upstreams");
                }
                Err(_) => {
                    tracing::error!(store = %described, "the shared cache did not answer in time; pulls are served from the local cache and upstreams");
                }
            }
        });
    }

    fn skipping(&self) -> bool {
        let skip = self.skip_until.lock().unwrap_or_else(|e| e.into_inner());
        skip.is_some_and(|until| Instant::now() < until)
    }

    /// Counts and logs (rate-limited) a failure of `what`; an unusable bucket is skipped by
    /// reads for a while.
    fn failed(&self, what: &str, error: &SharedError) {
        if matches!(
            error,
            SharedError::Unavailable(_)
                | SharedError::Timeout(_)
                | SharedError::Denied(_)
                | SharedError::MissingBucket { .. }
        ) {
            *self.skip_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + BACKOFF);
        }
        let Some(held_back) = FAILED.admit(error.kind(), Instant::now()) else {
            return;
        };
        if let SharedError::Untrusted { key, reason } = error {
            tracing::warn!(
                store = %self.store.config().describe(),
                operation = what,
                key = %key,
                %reason,
                similar_held_back = held_back,
                "a record in the shared cache is not sealed with our key: not trusted, treated as absent (one line every {}s)",
                log_limit::INTERVAL.as_secs()
            );
        } else {
            tracing::warn!(
                store = %self.store.config().describe(),
                operation = what,
                kind = error.kind(),
                %error,
                similar_held_back = held_back,
                "shared cache failed; carrying on without it (one line per kind every {}s)",
                log_limit::INTERVAL.as_secs()
            );
        }
    }

    fn timed_out(&self, what: &str) -> SharedError {
        self.store.stats().count_error();
        SharedError::Timeout(format!("{what}: no answer within {}s", WAIT.as_secs()))
    }

    /// `call`'s answer if the bucket gives it within [`WAIT`]; otherwise `None`, the failure or
    /// the timeout counted and logged as `what`.
    async fn within_wait<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, SharedError>>,
    ) -> Option<T> {
        match tokio::time::timeout(WAIT, call).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(error)) => {
                self.failed(what, &error);
                None
            }
            Err(_) => {
                self.failed(what, &self.timed_out(what));
                None
            }
        }
    }

    fn corrupt_key(kind: Kind, digest: &Digest) -> String {
        format!("{kind:?} {digest}")
    }

    /// Whether `digest`'s object was found corrupt and not replaced yet.
    pub fn is_corrupt(&self, kind: Kind, digest: &Digest) -> bool {
        self.corrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&Self::corrupt_key(kind, digest))
    }

    /// Remembers that `digest`'s object is corrupt: it is not read again, and the next upload
    /// replaces it.
    pub fn mark_corrupt(&self, kind: Kind, digest: &Digest, reason: &str) {
        tracing::warn!(digest = %digest, key = %self.store.key(kind, digest), %reason, "corrupt object in the shared cache: not served; it is refetched from upstream and replaced");
        let mut corrupt = self.corrupt.lock().unwrap_or_else(|e| e.into_inner());
        if corrupt.len() >= CORRUPT_CAPACITY {
            corrupt.clear();
        }
        corrupt.insert(Self::corrupt_key(kind, digest), Instant::now());
    }

    fn replaced(&self, kind: Kind, digest: &Digest) {
        self.corrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::corrupt_key(kind, digest));
    }

    /// A verified read of blob `digest`, or `None` (a miss, a failure, a corrupt object known,
    /// or an object whose size is not the `expected` one, which is then marked corrupt).
    pub async fn read_blob(&self, digest: &Digest, expected: Option<u64>) -> Option<SharedRead> {
        if self.skipping() || self.is_corrupt(Kind::Blob, digest) {
            return None;
        }
        let read = self
            .within_wait("read", self.store.get(Kind::Blob, digest, None))
            .await??;
        if let Some(expected) = expected
            && expected != read.size
        {
            self.store.stats().count_corrupt();
            let reason = format!("{} bytes, the manifest says {expected}", read.size);
            self.mark_corrupt(Kind::Blob, digest, &reason);
            return None;
        }
        Some(read)
    }

    /// The verified bytes of manifest `digest`, or `None` (a miss, a failure, a corrupt object
    /// or one larger than `limit`).
    pub async fn read_manifest(&self, digest: &Digest, limit: usize) -> Option<Bytes> {
        if self.skipping() || self.is_corrupt(Kind::Manifest, digest) {
            return None;
        }
        let read = async {
            let Some(read) = self.store.get(Kind::Manifest, digest, None).await? else {
                return Ok(None);
            };
            if read.size > limit as u64 {
                return Ok(None);
            }
            let mut bytes = BytesMut::with_capacity(read.size as usize);
            let mut stream = read.stream;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    // A corrupt object is not a failure of the bucket: it is replaced, not skipped.
                    Err(SharedError::Corrupt { reason, .. }) => {
                        self.mark_corrupt(Kind::Manifest, digest, &reason);
                        return Ok(None);
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(Some(bytes.freeze()))
        };
        self.within_wait("read", read).await?
    }

    /// Whether a replica with the key recorded (in a sealed marker) that an upstream served or
    /// confirmed `digest` for `repository`; `false` when the bucket cannot say, the marker is not
    /// sealed with our key, or there is no key.
    pub async fn is_confirmed(&self, repository: &str, digest: &Digest) -> bool {
        if self.skipping() {
            return false;
        }
        self.within_wait(
            "confirmation lookup",
            self.store.is_confirmed(repository, digest),
        )
        .await
        .unwrap_or(false)
    }

    /// The tag answer another replica (or this one) recorded for `repository:tag`, if the
    /// bucket has one sealed with our key and answers in time.
    pub async fn tag(&self, repository: &str, tag: &str) -> Option<TagRecord> {
        if self.skipping() {
            return None;
        }
        self.within_wait("tag lookup", self.store.tag(repository, tag))
            .await
            .flatten()
    }

    /// Records, in the background, what an upstream answered for `repository:tag`.
    pub fn record_tag_in_background(&self, repository: &str, tag: &str, record: TagRecord) {
        let (repository, tag) = (repository.to_owned(), tag.to_owned());
        let tier = self.clone();
        tokio::spawn(async move {
            if let Err(error) = tier.store.record_tag(&repository, &tag, &record).await {
                tier.failed("tag record", &error);
            }
        });
    }

    /// Records, in the background, that an upstream served or confirmed `digest` for
    /// `repository`.
    pub fn confirm_in_background(&self, repository: &str, digest: &Digest) {
        let store = self.store.clone();
        let (repository, digest) = (repository.to_owned(), digest.clone());
        let tier = self.clone();
        tokio::spawn(async move {
            if let Err(error) = store.confirm(&repository, &digest).await {
                tier.failed("confirmation", &error);
            }
        });
    }

    /// Uploads the verified, stored blob `blob` in the background (replacing the object if it
    /// was found corrupt); the blob cannot be evicted while it is read.
    pub fn upload_blob_in_background(&self, digest: &Digest, blob: BlobFile) {
        let store = self.store.clone();
        let digest = digest.clone();
        let replace = self.is_corrupt(Kind::Blob, &digest);
        let tier = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = tier.uploads.clone().acquire_owned().await else {
                return;
            };
            let BlobFile { file, size, guard } = blob;
            let reader = tokio::fs::File::from_std(file);
            let result = if replace {
                store
                    .replace_corrupt_reader(Kind::Blob, &digest, size, reader)
                    .await
                    .map(|()| Uploaded::Created)
            } else {
                store.upload_reader(Kind::Blob, &digest, size, reader).await
            };
            drop(guard);
            tier.uploaded(Kind::Blob, &digest, size, replace, result);
        });
    }

    /// Uploads the verified manifest `bytes` in the background (replacing a corrupt object).
    pub fn upload_manifest_in_background(&self, digest: &Digest, bytes: Bytes) {
        let store = self.store.clone();
        let digest = digest.clone();
        let replace = self.is_corrupt(Kind::Manifest, &digest);
        let tier = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = tier.uploads.clone().acquire_owned().await else {
                return;
            };
            let size = bytes.len() as u64;
            let reader = std::io::Cursor::new(bytes);
            let result = if replace {
                store
                    .replace_corrupt_reader(Kind::Manifest, &digest, size, reader)
                    .await
                    .map(|()| Uploaded::Created)
            } else {
                store
                    .upload_reader(Kind::Manifest, &digest, size, reader)
                    .await
            };
            tier.uploaded(Kind::Manifest, &digest, size, replace, result);
        });
    }

    /// Counts and logs a background write that failed; a corrupt object it replaced is
    /// forgotten.
    fn uploaded(
        &self,
        kind: Kind,
        digest: &Digest,
        size: u64,
        replace: bool,
        result: Result<Uploaded, SharedError>,
    ) {
        match result {
            Ok(uploaded) => {
                if replace {
                    self.replaced(kind, digest);
                }
                tracing::debug!(digest = %digest, size, ?uploaded, replaced = replace, "stored in the shared cache");
            }
            Err(error) => self.failed("upload", &error),
        }
    }
}
