//! What the caches did, counted for the metrics endpoint and the logs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of cache activity; all monotonic.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Manifests served from memory or disk.
    pub manifest_hits: AtomicU64,
    /// Manifests that had to be fetched.
    pub manifest_misses: AtomicU64,
    /// Tag answers reused within their TTL.
    pub tag_hits: AtomicU64,
    /// Tag answers checked again upstream after their TTL.
    pub tag_revalidations: AtomicU64,
    /// Expired tag answers served because every source failed.
    pub stale_served: AtomicU64,
    /// Blobs served from the store.
    pub blob_hits: AtomicU64,
    /// Blobs that had to be fetched.
    pub blob_misses: AtomicU64,
    /// Requests that joined a fetch already under way instead of starting their own.
    pub coalesced: AtomicU64,
    /// Entries evicted from memory or disk.
    pub evictions: AtomicU64,
    /// Bytes served from the blob store.
    pub bytes_from_cache: AtomicU64,
    /// Bytes of blobs fetched from upstreams into the store.
    pub bytes_fetched: AtomicU64,
    /// Blob bytes served to clients as they arrived from an upstream (downloads and pass-through).
    pub bytes_from_upstream: AtomicU64,
    /// Blobs or manifests that could not be stored (disk full or not writable) and were served
    /// without caching.
    pub store_failures: AtomicU64,
    /// Bytes held in the blob store now (a gauge).
    pub blob_bytes: AtomicU64,
    /// Bytes of manifests held in memory now (a gauge).
    pub manifest_memory_bytes: AtomicU64,
}

impl CacheStats {
    /// Adds one to `counter`.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// The current value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
