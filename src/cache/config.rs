//! The `cache` section: where and how much the caches keep.
//!
//! Principal type: [`CacheConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::section::values::{ByteSize, HumanDuration, Invalid};
use crate::section::{Written, section};

/// The `cache` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Directory holding cached blobs and manifests.
    pub dir: PathBuf,
    /// Disk bound; least recently used entries are evicted first.
    pub max_size: ByteSize,
    /// Bound of the in-memory manifest cache.
    pub memory: ByteSize,
    /// How long a tag → digest answer is reused without asking upstream (`0s`: always ask).
    pub tag_ttl: Duration,
    /// How long past its TTL a tag answer may still be served when every upstream fails.
    pub stale_if_error: Duration,
    /// Free space the blob store leaves on its filesystem: a blob that would eat into it is
    /// served straight from the upstream, uncached, rather than failing half-way on a full disk.
    pub min_free_space: ByteSize,
    /// The shared tier in S3-compatible object storage (`cache.shared.s3`); `None`: local only.
    pub shared: Option<super::shared::SharedConfig>,
}

section!(CacheConfig {
    dir,
    max_size,
    memory,
    tag_ttl as HumanDuration,
    stale_if_error as HumanDuration,
    min_free_space,
    shared as Written<super::shared::SharedConfig>,
});

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: PathBuf::from("var/cache"),
            max_size: ByteSize::gib(10),
            memory: ByteSize::mib(256),
            tag_ttl: Duration::from_secs(5 * 60),
            stale_if_error: Duration::from_secs(24 * 60 * 60),
            min_free_space: ByteSize::mib(512),
            shared: None,
        }
    }
}

impl CacheConfig {
    /// Checks the section; keys are relative to it.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.dir.as_os_str().is_empty() {
            return Err(Invalid::new("dir", "empty path"));
        }
        // A zero bound would make every insertion an eviction: a cache that never hits.
        if self.max_size.0 == 0 {
            return Err(Invalid::new("max_size", "must be greater than 0"));
        }
        if self.memory.0 == 0 {
            return Err(Invalid::new("memory", "must be greater than 0"));
        }
        if let Some(shared) = &self.shared {
            shared
                .validate()
                .map_err(|(key, message)| Invalid::new(format!("shared.{key}"), message))?;
        }
        Ok(())
    }
}
