//! Every cache tier behind one entry point, [`Tiers`]: memory and disk (the local [`Cache`]),
//! then the bucket shared with other replicas ([`SharedTier`], optional), together with what
//! decides whether cached content may be served for a repository: the confirmations an upstream
//! gave ([`Confirmations`]) and the sizes its manifests declare ([`DescriptorSizes`]).
//!
//! The order of the tiers is written here: a manifest is looked up in memory and on disk
//! ([`Tiers::manifest`]), then in the shared tier ([`Tiers::shared_manifest`]); a blob on disk
//! ([`Tiers::blob_size`]), then filled from the shared tier ([`Tiers::download_shared`]) before
//! any upstream is asked. What is fetched is kept in every tier ([`Tiers::keep_fetched_manifest`],
//! [`Tiers::fill_blob`] and [`Tiers::share_blob`]). The proxy only decides *whether* a tier may
//! answer a request (the rules, the confirmations) and asks the upstreams when none does; a new
//! tier (a peer tier, pinning) is added here.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::blobs::{BlobFile, DownloadState, Piece, Spool};
use super::confirmed::Confirmations;
use super::manifests::{MAX_MANIFEST_BYTES, StoredManifest};
use super::shared::{Kind, SharedError, SharedStore, SharedTier, TagRecord};
use super::sizes::DescriptorSizes;
use super::spool::{self, Filled};
use super::stats::CacheStats;
use super::tags::TagAnswer;
use super::verify::Outcome;
use super::withdrawn::{Withdrawal, WithdrawnError};
use super::{Cache, CacheConfig};
use crate::reference::Digest;

/// How often a tag answer that holds is recorded again in the shared tier, so that its age
/// there stays close to the age of the answer here.
const SHARED_TAG_REFRESH: Duration = Duration::from_secs(600);

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The cache tiers, in order, and what may be served from them for which repository.
pub struct Tiers {
    /// Memory and disk.
    local: Cache,
    /// The tier shared with other replicas (`cache.shared`), if configured and usable.
    shared: Option<SharedTier>,
    /// `repository@digest` pairs an upstream served or confirmed. The stores are
    /// content-addressed; this is what keeps a digest cached for one repository from being
    /// served for another that does not hold it (an upstream would answer 404 there).
    known: Confirmations,
    /// The sizes the manifests fetched declare for the content they reference.
    sizes: DescriptorSizes,
}

/// How full the local tiers are, for `/status`.
#[derive(Debug, Clone, Copy)]
pub struct Occupancy {
    /// Manifests in memory.
    pub manifest_entries: usize,
    /// Tag answers.
    pub tag_entries: usize,
    /// Blobs on disk.
    pub blob_entries: usize,
    /// Their bytes.
    pub blob_bytes: u64,
    /// The blob store's bound (`cache.max_size`).
    pub blob_max_bytes: u64,
}

/// Why a withdrawal (or its lifting) was not made.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawError {
    /// The local list could not be written.
    #[error(transparent)]
    Local(#[from] WithdrawnError),
    /// The shared store could not record it; nothing changed.
    #[error("the shared store could not record it, so no replica's list changed: {0}")]
    Shared(#[from] SharedError),
}

impl Tiers {
    /// Opens every tier of `config`: the local cache under `config.dir` (removing leftover
    /// temporary files, indexing the stored blobs), its confirmations, and the shared tier when
    /// one is configured and usable.
    pub fn open(config: &CacheConfig) -> io::Result<Tiers> {
        let local = Cache::open(config)?;
        let known = Confirmations::open(local.dir());
        let shared = config.shared.as_ref().and_then(SharedTier::open);
        Ok(Tiers {
            local,
            shared,
            known,
            sizes: DescriptorSizes::new(),
        })
    }

    /// What the caches did so far.
    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.local.stats
    }

    /// The shared bucket, when there is one (for its metrics).
    pub fn shared_store(&self) -> Option<&SharedStore> {
        self.shared.as_ref().map(SharedTier::store)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        self.local.dir()
    }

    /// How long a tag answer is reused without asking upstream.
    pub fn tag_ttl(&self) -> Duration {
        self.local.tag_ttl
    }

    /// How long an expired tag answer may be served when every source fails.
    pub fn stale_if_error(&self) -> Duration {
        self.local.stale_if_error
    }

    /// How full the local tiers are.
    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            manifest_entries: self.local.manifests.len(),
            tag_entries: self.local.tags.len(),
            blob_entries: self.local.blobs.len(),
            blob_bytes: self.local.blobs.stored_bytes(),
            blob_max_bytes: self.local.max_size,
        }
    }

    /// Checks the shared cache, if configured, in the background: wrong credentials or a
    /// missing bucket are logged as errors; pulls are served either way.
    pub fn check_shared_in_background(&self) {
        if let Some(tier) = &self.shared {
            tier.check_in_background();
        }
    }

    // -----------------------------------------------------------------------------------------
    // What may be served for which repository

    /// Whether the logical `repository` holds `digest` (`len` bytes, when known), as far as
    /// this replica knows without asking: an upstream served or confirmed the pair, or a
    /// manifest it served or confirmed there names it.
    pub fn holds(&self, repository: &str, digest: &str, len: Option<u64>) -> bool {
        self.known.contains(repository, digest) || self.sizes.vouches(repository, digest, len)
    }

    /// [`Tiers::holds`], or another replica's confirmation recorded in the shared store (as
    /// good as ours, and remembered as one).
    pub async fn confirmed(&self, repository: &str, digest: &str, len: Option<u64>) -> bool {
        if self.holds(repository, digest, len) {
            return true;
        }
        match digest.parse() {
            Ok(parsed) => self.shared_confirms(repository, &parsed).await,
            Err(_) => false,
        }
    }

    /// Whether the shared store records a confirmation of `digest` for `repository`.
    async fn shared_confirms(&self, repository: &str, digest: &Digest) -> bool {
        let Some(tier) = &self.shared else {
            return false;
        };
        if tier.is_confirmed(repository, digest).await {
            self.known.insert(repository, digest.as_str());
            return true;
        }
        false
    }

    /// Records that an upstream served or confirmed `digest` in the logical `repository` (and,
    /// when new, tells the other replicas).
    pub fn confirm(&self, repository: &str, digest: &str) {
        let new = self.known.insert(repository, digest);
        if new
            && let Some(tier) = &self.shared
            && let Ok(digest) = digest.parse()
        {
            tier.confirm_in_background(repository, &digest);
        }
    }

    /// The size `repository`'s manifests declare for `digest`, if one was fetched.
    pub fn declared_size(&self, repository: &str, digest: &Digest) -> Option<u64> {
        self.sizes.get(repository, digest)
    }

    // -----------------------------------------------------------------------------------------
    // Manifests and tag answers

    /// Manifest `digest` from memory or disk.
    pub fn manifest(&self, digest: &Digest) -> Option<Arc<StoredManifest>> {
        self.local.manifests.get(digest)
    }

    /// [`Tiers::manifest`] by a digest as written (`None` when it does not parse).
    pub fn manifest_by_str(&self, digest: &str) -> Option<Arc<StoredManifest>> {
        self.manifest(&digest.parse().ok()?)
    }

    /// Manifest `digest` from the shared tier (verified), not kept anywhere yet: the caller
    /// decides whether it may be served ([`Tiers::keep_shared_manifest`] once it may).
    pub async fn shared_manifest(&self, digest: &Digest) -> Option<Arc<StoredManifest>> {
        let bytes = self
            .shared
            .as_ref()?
            .read_manifest(digest, MAX_MANIFEST_BYTES)
            .await?;
        Some(Arc::new(StoredManifest::new(bytes, digest.to_string())))
    }

    /// Keeps a manifest read from the shared tier for `repository` in memory, and learns what
    /// it declares.
    pub fn keep_shared_manifest(&self, repository: &str, manifest: &Arc<StoredManifest>) {
        self.sizes.learn(repository, &manifest.bytes);
        self.local.manifests.put(manifest.clone());
    }

    /// Keeps a manifest an upstream served for `repository` (verified) in every tier: memory,
    /// and the shared tier when this replica did not have it; learns what it declares.
    pub fn keep_fetched_manifest(&self, repository: &str, manifest: &Arc<StoredManifest>) {
        self.sizes.learn(repository, &manifest.bytes);
        // Verified (by digest, or against the digest the upstream announced): other replicas
        // may have it, once per manifest this replica did not have.
        if let Some(tier) = &self.shared
            && let Ok(digest) = manifest.digest.parse::<Digest>()
            && self.local.manifests.get(&digest).is_none()
        {
            tier.upload_manifest_in_background(&digest, manifest.bytes.clone());
        }
        self.local.manifests.put(manifest.clone());
    }

    /// The tag answer kept under `key`.
    pub fn tag_answer(&self, key: &str) -> Option<TagAnswer> {
        self.local.tags.get(key)
    }

    /// Forgets the tag answer kept under `key`.
    pub fn forget_tag(&self, key: &str) {
        self.local.tags.remove(key);
    }

    /// Keeps the answer `source` gave on `route` (tag → `digest`) under `key`. With `shared`
    /// (`repository`, `tag`) — only the answers every client taking the standard types would
    /// get: the record is keyed by the tag alone — other replicas learn it too (for when every
    /// upstream fails them): when it is new or changed here, and now and then while it holds.
    pub fn record_tag(
        &self,
        key: &str,
        shared: Option<(&str, &str)>,
        digest: &str,
        source: &str,
        route: u64,
    ) {
        if let Some(tier) = &self.shared
            && let Some((repository, tag)) = shared
            && let Ok(parsed) = digest.parse::<Digest>()
        {
            let stale = self.local.tags.get(key).is_none_or(|previous| {
                previous.digest != digest
                    || previous.route != route
                    || previous.confirmed_at.elapsed() > SHARED_TAG_REFRESH
            });
            if stale {
                tier.record_tag_in_background(
                    repository,
                    tag,
                    TagRecord {
                        digest: parsed,
                        route,
                        recorded_at: unix_now(),
                    },
                );
            }
        }
        self.local.tags.put(
            key,
            TagAnswer {
                digest: digest.to_owned(),
                source: source.to_owned(),
                route,
                confirmed_at: Instant::now(),
            },
        );
    }

    /// The manifest of the tag answer a replica recorded in the shared tier for
    /// `repository:tag`, on the same `route` and younger than `stale_if_error`: what a replica
    /// that never saw the tag serves when every upstream fails, as one that saw it serves its
    /// own last answer.
    pub async fn shared_tag_answer(
        &self,
        repository: &str,
        tag: &str,
        route: u64,
    ) -> Option<Arc<StoredManifest>> {
        let tier = self.shared.as_ref()?;
        let record = tier.tag(repository, tag).await?;
        let age = unix_now().saturating_sub(record.recorded_at);
        if record.route != route || age >= self.local.stale_if_error.as_secs() {
            return None;
        }
        let manifest = match self.local.manifests.get(&record.digest) {
            Some(manifest) => manifest,
            None => {
                let bytes = tier
                    .read_manifest(&record.digest, MAX_MANIFEST_BYTES)
                    .await?;
                let manifest = Arc::new(StoredManifest::new(bytes, record.digest.to_string()));
                self.local.manifests.put(manifest.clone());
                manifest
            }
        };
        // An upstream served this manifest for this repository (that is what the record says).
        self.known.insert(repository, &manifest.digest);
        self.sizes.learn(repository, &manifest.bytes);
        CacheStats::count(&self.local.stats.stale_served);
        Some(manifest)
    }

    // -----------------------------------------------------------------------------------------
    // Blobs

    /// The size of blob `digest` when it is on disk (counting as a use).
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.local.blobs.stat(digest)
    }

    /// Opens blob `digest` on disk for reading, if it is there; the file stays protected from
    /// eviction while the returned value lives.
    pub fn open_blob(&self, digest: &Digest) -> Option<BlobFile> {
        self.local.blobs.open_blob(digest)
    }

    /// `None` when the disk has room for blob `digest` of `len` bytes (when known); otherwise
    /// the outcome of its download: served uncached.
    pub fn room_for(&self, digest: &Digest, len: Option<u64>) -> Option<DownloadState> {
        spool::room_for(&self.local.blobs, &self.local.stats, digest, len)
    }

    /// Fills the disk with the verified `body` of blob `digest` (`len` bytes when known) while
    /// the readers of `state` (and `leader`, while it keeps up) follow it. A fill that did not
    /// complete leaves nothing behind. `Err`: the download's outcome when the disk cannot take
    /// the blob (it is served uncached).
    pub async fn fill_blob(
        &self,
        digest: &Digest,
        len: Option<u64>,
        body: impl futures_util::Stream<Item = Result<Bytes, Outcome>> + Unpin,
        state: &watch::Sender<DownloadState>,
        leader: &mut Option<mpsc::Sender<Piece>>,
    ) -> Result<(Filled, Spool), DownloadState> {
        let (filled, temp) = spool::fill(
            &self.local.blobs,
            &self.local.stats,
            digest,
            len,
            body,
            state,
            leader,
        )
        .await?;
        if !matches!(filled, Filled::Complete { .. }) {
            self.local.blobs.discard(&temp).await;
        }
        Ok((filled, temp))
    }

    /// Uploads blob `digest`, verified and on disk, to the shared tier in the background: other
    /// replicas may have it too.
    pub fn share_blob(&self, digest: &Digest) {
        if let Some(tier) = &self.shared
            && let Some(blob) = self.local.blobs.open_blob(digest)
        {
            tier.upload_blob_in_background(digest, blob);
        }
    }

    /// Downloads blob `digest` (`expected` bytes, when a manifest declares it) from the shared
    /// tier onto disk, if the tier holds it and may serve it to `repository` (an upstream
    /// served or confirmed it there, here or on another replica; otherwise the upstreams are
    /// asked, which confirms), streaming it to the readers as an upstream download does
    /// (verified, the last chunk held back). `None` when there is no shared tier, or it does not
    /// hold the blob or fails, before or during the read: the caller goes on to the upstreams,
    /// and readers that were following this attempt fail rather than take a broken blob.
    pub async fn download_shared(
        &self,
        repository: &str,
        reference: &str,
        digest: &Digest,
        expected: Option<u64>,
        state: &watch::Sender<DownloadState>,
        leader: &mut Option<mpsc::Sender<Piece>>,
    ) -> Option<DownloadState> {
        let tier = self.shared.as_ref()?;
        // The confirmation and the read are asked at once: a blob read from the bucket costs
        // one round trip before its first byte, not two. A read without a confirmation is
        // dropped unread.
        let (confirmed, read) = if self.holds(repository, digest.as_str(), expected) {
            (true, tier.read_blob(digest, expected).await)
        } else {
            tokio::join!(
                self.shared_confirms(repository, digest),
                tier.read_blob(digest, expected)
            )
        };
        let read = read.filter(|_| confirmed)?;
        let len = read.size;
        let body = read.stream.map(|item| {
            item.map_err(|error| match error {
                SharedError::Corrupt { reason, .. } => Outcome::Corrupt(reason),
                other => Outcome::Broken(other.to_string()),
            })
        });
        let (filled, temp) = match spool::fill(
            &self.local.blobs,
            &self.local.stats,
            digest,
            Some(len),
            body,
            state,
            leader,
        )
        .await
        {
            Ok(filled) => filled,
            Err(uncached) => return Some(uncached),
        };
        match filled {
            Filled::Complete { size, in_file } => {
                tracing::info!(reference, served_by = "shared cache", size, "blob fetched");
                if !in_file {
                    return Some(DownloadState::Uncacheable);
                }
                return Some(DownloadState::Complete { len: size, temp });
            }
            Filled::Unstored(_) => {}
            Filled::Corrupt(reason) => tier.mark_corrupt(Kind::Blob, digest, &reason),
            Filled::Broken(reason) => {
                tracing::warn!(reference, %reason, "reading the blob from the shared cache broke off; fetching it from upstream");
            }
        }
        // Readers of this attempt fail (their spool is gone); the leader reads the file from
        // now on, and fails the same way. The download starts over upstream.
        state.send_replace(DownloadState::Connecting);
        *leader = None;
        self.local.blobs.discard(&temp).await;
        None
    }

    // -----------------------------------------------------------------------------------------
    // Withdrawn content

    /// Whether `digest` is withdrawn, and why.
    pub fn withdrawal(&self, digest: &str) -> Option<Withdrawal> {
        self.local.withdrawn.get(digest)
    }

    /// Every withdrawn digest, with why and when.
    pub fn withdrawn(&self) -> Arc<BTreeMap<String, Withdrawal>> {
        self.local.withdrawn.list()
    }

    /// How many digests are withdrawn.
    pub fn withdrawn_len(&self) -> usize {
        self.local.withdrawn.len()
    }

    /// Whether withdrawals are shared with other replicas (a shared tier is configured).
    pub fn shares_withdrawals(&self) -> bool {
        self.shared.is_some()
    }

    /// Withdraws `digests`: in the shared store first (a record is whole lines: the seal is the
    /// line after them), so that nothing changes here if that fails, then here, deleting them
    /// from the local tiers; the digests newly withdrawn here.
    pub async fn withdraw(
        &self,
        digests: &[Digest],
        withdrawal: &Withdrawal,
    ) -> Result<Vec<Digest>, WithdrawError> {
        if let Some(tier) = &self.shared {
            let record = serde_json::to_string(withdrawal).expect("a withdrawal serialises") + "\n";
            for digest in digests {
                tier.store().withdraw(digest, &record).await?;
            }
        }
        Ok(self.local.withdraw(digests, withdrawal)?)
    }

    /// Lifts the withdrawal of `digests` (in the shared store too); those that were withdrawn
    /// here.
    pub async fn allow(&self, digests: &[Digest]) -> Result<Vec<Digest>, WithdrawError> {
        if let Some(tier) = &self.shared {
            for digest in digests {
                tier.store().allow(digest).await?;
            }
        }
        Ok(self.local.withdrawn.allow(digests)?)
    }

    /// Takes the shared record of withdrawals as this replica's set, and deletes what it newly
    /// withdraws from the local tiers; how many were deleted when the set changed. Nothing
    /// without a shared store and its key; a record that cannot be read leaves the set as it is
    /// (logged).
    pub async fn refresh_withdrawn(&self) -> Option<usize> {
        let tier = self.shared.as_ref()?;
        let records = match tier.store().withdrawals().await {
            Ok(Some(records)) => records,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(%error, "cannot read the shared list of withdrawn digests; the local one stays in force");
                return None;
            }
        };
        let mut entries = BTreeMap::new();
        for (digest, content) in records {
            match serde_json::from_str::<Withdrawal>(&content) {
                Ok(withdrawal) => {
                    entries.insert(digest.as_str().to_owned(), withdrawal);
                }
                // Sealed by a replica with the key, so ours: a withdrawal even if its details
                // do not parse (a newer version's format).
                Err(_) => {
                    entries.insert(
                        digest.as_str().to_owned(),
                        Withdrawal {
                            reason: String::new(),
                            at: 0,
                        },
                    );
                }
            }
        }
        match self.local.withdrawn.replace(entries) {
            Ok(true) => Some(self.local.purge_withdrawn()),
            Ok(false) => None,
            Err(error) => {
                tracing::warn!(%error, "cannot keep the shared list of withdrawn digests on disk");
                None
            }
        }
    }
}
