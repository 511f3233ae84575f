//! Caching that makes repeated pulls free: manifests in memory and on disk ([`manifests`]), tag
//! answers with a TTL ([`tags`]), blobs in a content-addressed disk store ([`blobs`]), one
//! upstream fetch per key however many clients ask at once ([`flights`]), and the digests an
//! operator withdrew ([`withdrawn`]).
//!
//! Principal types: [`Tiers`] (the one entry point: every tier in order, with the confirmations
//! and declared sizes that decide what may be served for which repository), [`Cache`] (the local
//! tiers, opened from [`CacheConfig`]), [`ManifestStore`], [`TagStore`], [`BlobStore`],
//! [`shared::SharedTier`] and [`flights::Flights`].
//!
//! Only verified content is ever stored: manifests after their digest is checked, blobs renamed
//! into the store only once the bytes hash to their digest. The cache knows nothing of routing;
//! the proxy decides what may be served and from where.

pub mod blobs;
mod config;
mod confirmed;
mod content_key;
pub mod flights;
pub mod lru;
pub mod manifests;
pub mod metrics;
pub mod shared;
mod sizes;
mod spool;
pub mod stats;
pub mod tags;
mod tiers;
pub mod verify;
pub mod withdrawn;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use blobs::BlobStore;
pub use blobs::{BlobFile, DownloadState, Piece, follow, read_range};
pub use config::CacheConfig;
use manifests::ManifestStore;
pub use manifests::{MAX_MANIFEST_BYTES, StoredManifest};
pub(crate) use sizes::size_mismatch;
pub use spool::{Filled, LEADER_QUEUE, lead};
use stats::CacheStats;
pub use tags::TagAnswer;
use tags::TagStore;
pub use tiers::{Occupancy, Tiers, WithdrawError};
pub use withdrawn::Withdrawal;
use withdrawn::Withdrawn;

/// The local cache tiers (memory and disk), opened from the `cache` configuration.
pub struct Cache {
    /// Manifests by digest.
    pub manifests: ManifestStore,
    /// Tag answers.
    pub tags: TagStore,
    /// Blobs.
    pub blobs: BlobStore,
    /// What the caches did.
    pub stats: Arc<CacheStats>,
    /// How long a tag answer is reused without asking upstream.
    pub tag_ttl: Duration,
    /// How long an expired tag answer may be served when every source fails.
    pub stale_if_error: Duration,
    /// The blob store's bound (`cache.max_size`).
    pub max_size: u64,
    /// Digests an operator has withdrawn: refused whatever tier or upstream holds them.
    pub withdrawn: Withdrawn,
    dir: PathBuf,
}

impl Cache {
    /// Opens (creating) the cache under `config.dir`: removes leftover temporary files and
    /// indexes the stored blobs.
    pub fn open(config: &CacheConfig) -> io::Result<Cache> {
        let stats = Arc::new(CacheStats::default());
        let tmp = config.dir.join("tmp");
        let blobs = BlobStore::open(
            config.dir.join("blobs"),
            tmp.clone(),
            config.max_size.bytes(),
            config.min_free_space.bytes(),
            stats.clone(),
        )?;
        let manifests = ManifestStore::open(
            config.dir.join("manifests"),
            tmp.clone(),
            config.memory.bytes(),
            stats.clone(),
        )?;
        let withdrawn = Withdrawn::open(&config.dir, &tmp).map_err(io::Error::other)?;
        let cache = Cache {
            manifests,
            tags: TagStore::default(),
            blobs,
            stats,
            tag_ttl: config.tag_ttl,
            stale_if_error: config.stale_if_error,
            max_size: config.max_size.bytes(),
            withdrawn,
            dir: config.dir.clone(),
        };
        // What was withdrawn while a reader held it, or by a replica while this one was down.
        cache.purge_withdrawn();
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Withdraws `digests` (see [`withdrawn`]) and deletes them from the local tiers; a blob
    /// being read at that moment is deleted once its readers are gone, at the latest at the
    /// next withdrawal or start (the request that reads it was admitted before).
    pub fn withdraw(
        &self,
        digests: &[crate::reference::Digest],
        withdrawal: &withdrawn::Withdrawal,
    ) -> Result<Vec<crate::reference::Digest>, withdrawn::WithdrawnError> {
        let added = self.withdrawn.withdraw(digests, withdrawal)?;
        self.purge_withdrawn();
        Ok(added)
    }

    /// Deletes every withdrawn digest still held by a local tier; how many were.
    pub fn purge_withdrawn(&self) -> usize {
        let mut purged = 0;
        for key in self.withdrawn.list().keys() {
            let Ok(digest) = key.parse::<crate::reference::Digest>() else {
                continue;
            };
            let manifest = self.manifests.remove(&digest);
            let blob = self.blobs.evict(&digest);
            purged += usize::from(manifest || blob);
        }
        purged
    }
}

/// Writes `bytes` to `path` through a temporary file in `tmp`, so the file appears whole or not
/// at all.
pub(crate) fn write_atomically(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temp = tmp.join(format!(
        "write-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
