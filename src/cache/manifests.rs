//! Manifests by digest: immutable, so kept in memory (bounded by `cache.memory`, least recently
//! used evicted) and on disk, where a restart finds them again. Only verified manifests are
//! stored, and a file read back is verified again before use.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::lru::Lru;
use super::stats::CacheStats;
use super::write_atomically;
use crate::reference::{Digest, manifest_digest};

/// A manifest as it is served: the exact bytes, their media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// The bytes the upstream served.
    pub bytes: Bytes,
    /// Its `Content-Type`.
    pub media_type: String,
    /// The digest of `bytes`, `algorithm:hex`.
    pub digest: String,
}

/// Memory and disk store of manifests.
pub struct ManifestStore {
    memory: Mutex<Lru<String, Arc<StoredManifest>>>,
    /// `<cache.dir>/manifests`, holding `<algorithm>/<hex>` (bytes) and `<hex>.type` (media type).
    dir: PathBuf,
    tmp: PathBuf,
    stats: Arc<CacheStats>,
}

impl ManifestStore {
    /// A store under `dir`, holding at most `memory` bytes in memory.
    pub fn open(
        dir: PathBuf,
        tmp: PathBuf,
        memory: u64,
        stats: Arc<CacheStats>,
    ) -> io::Result<ManifestStore> {
        if let Err(error) = std::fs::create_dir_all(&dir) {
            // Memory still caches; only persistence across restarts is lost.
            tracing::warn!(dir = %dir.display(), %error, "manifests cannot be stored on disk");
        }
        Ok(ManifestStore {
            memory: Mutex::new(Lru::new(memory)),
            dir,
            tmp,
            stats,
        })
    }

    /// The manifest `digest`, from memory or else from disk.
    pub fn get(&self, digest: &Digest) -> Option<Arc<StoredManifest>> {
        if let Some(found) = self.lock().get(&digest.as_str().to_owned()) {
            return Some(found.clone());
        }
        let manifest = Arc::new(self.read_disk(digest)?);
        self.remember(manifest.clone());
        Some(manifest)
    }

    /// The number of manifests held in memory.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no manifest is held in memory.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Stores a verified manifest in memory and on disk. A disk failure costs only persistence.
    pub fn put(&self, manifest: Arc<StoredManifest>) {
        if let Ok(digest) = manifest.digest.parse::<Digest>()
            && let Err(error) = self.write_disk(&digest, &manifest)
        {
            tracing::warn!(digest = %digest, %error, "cannot store the manifest on disk");
            CacheStats::count(&self.stats.store_failures);
        }
        self.remember(manifest);
    }

    /// Forgets the manifest `digest`, in memory and on disk; whether it was held.
    pub fn remove(&self, digest: &Digest) -> bool {
        let in_memory = {
            let mut memory = self.lock();
            let removed = memory.remove(&digest.as_str().to_owned()).is_some();
            CacheStats::set(&self.stats.manifest_memory_bytes, memory.weight());
            removed
        };
        let (bytes_path, type_path) = self.paths(digest);
        let on_disk = std::fs::remove_file(&bytes_path).is_ok();
        let _ = std::fs::remove_file(&type_path);
        in_memory || on_disk
    }

    fn remember(&self, manifest: Arc<StoredManifest>) {
        let weight = manifest.bytes.len() as u64;
        let mut memory = self.lock();
        let evicted = memory.insert(manifest.digest.clone(), manifest, weight, |_, _| false);
        CacheStats::add(&self.stats.evictions, evicted.len() as u64);
        CacheStats::set(&self.stats.manifest_memory_bytes, memory.weight());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<String, Arc<StoredManifest>>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn paths(&self, digest: &Digest) -> (PathBuf, PathBuf) {
        let dir = self.dir.join(digest.algorithm().name());
        (
            dir.join(digest.hex()),
            dir.join(format!("{}.type", digest.hex())),
        )
    }

    fn read_disk(&self, digest: &Digest) -> Option<StoredManifest> {
        let (bytes_path, type_path) = self.paths(digest);
        let bytes = std::fs::read(&bytes_path).ok()?;
        let media_type = std::fs::read_to_string(&type_path).ok()?;
        if manifest_digest(digest.algorithm(), &bytes) != digest.as_str() {
            // Damaged on disk: forget it rather than serve it.
            tracing::warn!(path = %bytes_path.display(), "stored manifest does not match its digest; removed");
            let _ = std::fs::remove_file(&bytes_path);
            return None;
        }
        Some(StoredManifest {
            bytes: Bytes::from(bytes),
            media_type: media_type.trim().to_owned(),
            digest: digest.as_str().to_owned(),
        })
    }

    fn write_disk(&self, digest: &Digest, manifest: &StoredManifest) -> io::Result<()> {
        let (bytes_path, type_path) = self.paths(digest);
        if bytes_path.exists() {
            return Ok(());
        }
        if let Some(parent) = bytes_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // The type first: a manifest file present on disk always has its type beside it.
        write_atomically(&self.tmp, &type_path, manifest.media_type.as_bytes())?;
        write_atomically(&self.tmp, &bytes_path, &manifest.bytes)
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
