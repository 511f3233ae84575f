//! Manifests by digest: immutable, so kept in memory (bounded by `cache.memory`, least recently
//! used evicted) and on disk, where a restart finds them again. Only verified manifests are
//! stored, and a file read back is verified again before use.
//!
//! One stored manifest serves every repository that holds its digest, so what it is served as
//! comes from its own bytes ([`media_type_of`]), never from the `Content-Type` of the upstream
//! that happened to serve it first.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::lru::Lru;
use super::stats::CacheStats;
use super::write_atomically;
use crate::reference::{Digest, manifest_digest};

/// The largest manifest accepted, as the Distribution registry bounds them.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// A manifest as it is served: the exact bytes, their media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// The bytes the upstream served.
    pub bytes: Bytes,
    /// Its `Content-Type`: [`media_type_of`] the bytes.
    pub media_type: String,
    /// The digest of `bytes`, `algorithm:hex`.
    pub digest: String,
}

impl StoredManifest {
    /// Verified `bytes` of `digest`, typed by what they say they are.
    pub fn new(bytes: Bytes, digest: String) -> StoredManifest {
        StoredManifest {
            media_type: media_type_of(&bytes),
            bytes,
            digest,
        }
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The media type of a manifest, from its bytes: its `mediaType` field when it names a well-formed
/// type; else its shape, since OCI manifests may omit the field (Docker schema 2 manifests and
/// lists always carry it): schema 1 (signed or not), an index (it lists `manifests`), or an image
/// manifest. An upstream's `Content-Type` is not asked: the digest proves the bytes, not the
/// header, and the type is served to every repository that holds the digest.
pub fn media_type_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<serde_json::Value>,
        manifests: Option<serde::de::IgnoredAny>,
        signatures: Option<serde::de::IgnoredAny>,
    }
    let Ok(shape) = serde_json::from_slice::<Shape>(bytes) else {
        return OCI_MANIFEST.to_owned();
    };
    if let Some(named) = shape
        .media_type
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .filter(|t| is_media_type(t))
    {
        return named.to_owned();
    }
    let schema_1 = shape
        .schema_version
        .as_ref()
        .and_then(serde_json::Value::as_u64)
        == Some(1);
    match (
        schema_1,
        shape.signatures.is_some(),
        shape.manifests.is_some(),
    ) {
        (true, true, _) => DOCKER_V1_SIGNED,
        (true, false, _) => DOCKER_V1,
        (false, _, true) => OCI_INDEX,
        (false, _, false) => OCI_MANIFEST,
    }
    .to_owned()
}

/// Whether `value` is a `type/subtype` media type (RFC 6838 names, no parameters), so that it can
/// be a header as it stands.
fn is_media_type(value: &str) -> bool {
    let name = |part: &str| {
        (1..=127).contains(&part.len())
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value
        .split_once('/')
        .is_some_and(|(kind, subtype)| name(kind) && name(subtype))
}

/// Memory and disk store of manifests.
pub struct ManifestStore {
    memory: Mutex<Lru<String, Arc<StoredManifest>>>,
    /// `<cache.dir>/manifests`, holding `<algorithm>/<hex>` (the bytes, which give their type).
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
        let on_disk = std::fs::remove_file(self.path(digest)).is_ok();
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

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.algorithm().name()).join(digest.hex())
    }

    fn read_disk(&self, digest: &Digest) -> Option<StoredManifest> {
        let bytes_path = self.path(digest);
        let bytes = std::fs::read(&bytes_path).ok()?;
        if manifest_digest(digest.algorithm(), &bytes) != digest.as_str() {
            // Damaged on disk: forget it rather than serve it.
            tracing::warn!(path = %bytes_path.display(), "stored manifest does not match its digest; removed");
            let _ = std::fs::remove_file(&bytes_path);
            return None;
        }
        // The type is read from the bytes again, not from a `.type` file an earlier version
        // wrote beside them from an upstream's header.
        Some(StoredManifest::new(
            Bytes::from(bytes),
            digest.as_str().to_owned(),
        ))
    }

    fn write_disk(&self, digest: &Digest, manifest: &StoredManifest) -> io::Result<()> {
        let bytes_path = self.path(digest);
        if bytes_path.exists() {
            return Ok(());
        }
        if let Some(parent) = bytes_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomically(&self.tmp, &bytes_path, &manifest.bytes)
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_is_what_the_manifest_says_else_what_its_shape_is() {
        let cases: [(&str, &[u8]); 8] = [
            (
                "application/vnd.docker.distribution.manifest.list.v2+json",
                br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#,
            ),
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[]}"#,
            ),
            (OCI_INDEX, br#"{"schemaVersion":2,"manifests":[]}"#),
            (OCI_MANIFEST, br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            (DOCKER_V1_SIGNED, br#"{"schemaVersion":1,"fsLayers":[],"signatures":[]}"#),
            (DOCKER_V1, br#"{"schemaVersion":1,"fsLayers":[]}"#),
            // A type that could not be a header is no type: the shape decides.
            (OCI_INDEX, b"{\"mediaType\":\"a/b\\r\\nX-Evil: 1\",\"manifests\":[]}"),
            (OCI_MANIFEST, b"not json"),
        ];
        let typed: Vec<(&str, String)> = cases
            .iter()
            .map(|(expected, bytes)| (*expected, media_type_of(bytes)))
            .collect();
        let expected: Vec<(&str, String)> = cases
            .iter()
            .map(|(expected, _)| (*expected, (*expected).to_owned()))
            .collect();
        assert_eq!(typed, expected);
    }
}
