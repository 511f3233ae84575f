//! What the caches did, read from their counters at scrape time: hits and misses per kind, the
//! bytes served and fetched, and the shared cache tier's reads, uploads and refusals.
//!
//! Principal type: [`CacheMetrics`], a part of [`crate::metrics::Metrics`], which registers it.
//! The caches count into [`CacheStats`] and the shared tier into its own counters; collectors
//! turn both into families when scraped, so counting costs an atomic add and nothing more.

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::shared::SharedStore;
use super::stats::CacheStats;

/// The families of the caches (`cache_*`, `bytes_*`) and of the shared cache tier (`shared_*`).
#[derive(Debug)]
pub struct CacheMetrics {
    stats: Arc<CacheStats>,
    /// The shared cache tier whose counters are exported, once there is one.
    shared: Arc<OnceLock<SharedStore>>,
}

impl CacheMetrics {
    /// The families of caches that count into `stats`, without a shared tier until
    /// [`set_shared`](CacheMetrics::set_shared).
    pub fn new(stats: Arc<CacheStats>) -> CacheMetrics {
        CacheMetrics {
            stats,
            shared: Arc::default(),
        }
    }

    /// Exports the counters of the shared cache tier `store` (the first one set).
    pub fn set_shared(&self, store: SharedStore) {
        let _ = self.shared.set(store);
    }

    /// Registers the collectors in `registry` (the exporter's root), the shared tier's under
    /// its `shared` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(CacheCollector(self.stats.clone())));
        registry
            .sub_registry_with_prefix("shared")
            .register_collector(Box::new(SharedCollector(self.shared.clone())));
    }
}

/// Reads the cache counters at scrape time.
#[derive(Debug)]
struct CacheCollector(Arc<CacheStats>);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 13] = [
            (
                "cache_manifest_hits",
                "Manifests served from the cache.",
                &s.manifest_hits,
            ),
            (
                "cache_manifest_misses",
                "Manifest fetches from upstreams because the cache could not answer.",
                &s.manifest_misses,
            ),
            (
                "cache_tag_hits",
                "Tag answers reused within their TTL.",
                &s.tag_hits,
            ),
            (
                "cache_tag_revalidations",
                "Tag answers checked upstream after their TTL.",
                &s.tag_revalidations,
            ),
            (
                "cache_stale_answers",
                "Expired tag answers served because every source failed.",
                &s.stale_served,
            ),
            (
                "cache_blob_hits",
                "Blobs served from the store.",
                &s.blob_hits,
            ),
            (
                "cache_blob_misses",
                "Blobs that had to be fetched.",
                &s.blob_misses,
            ),
            (
                "cache_coalesced",
                "Requests that joined a fetch already under way.",
                &s.coalesced,
            ),
            (
                "cache_evictions",
                "Entries evicted from memory or disk.",
                &s.evictions,
            ),
            (
                "bytes_served_from_cache",
                "Blob bytes served from the store.",
                &s.bytes_from_cache,
            ),
            (
                "bytes_fetched",
                "Blob bytes fetched from upstreams into the store.",
                &s.bytes_fetched,
            ),
            (
                "cache_store_failures",
                "Blobs or manifests that could not be stored and were served without caching.",
                &s.store_failures,
            ),
            (
                "bytes_served_from_upstream",
                "Blob bytes served as they arrived from upstreams.",
                &s.bytes_from_upstream,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(CacheStats::get(value));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let gauges: [(&str, &str, &std::sync::atomic::AtomicU64); 2] = [
            (
                "cache_blob_bytes",
                "Bytes held in the blob store.",
                &s.blob_bytes,
            ),
            (
                "cache_manifest_memory_bytes",
                "Bytes of manifests held in memory.",
                &s.manifest_memory_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(CacheStats::get(value)).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Reads the shared cache tier's counters at scrape time (all zero without a shared tier, so
/// that dashboards and alerts find the series either way).
#[derive(Debug)]
struct SharedCollector(Arc<OnceLock<SharedStore>>);

impl Collector for SharedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self
            .0
            .get()
            .map(|store| store.stats().snapshot())
            .unwrap_or_default();
        let counters: [(&str, &str, u64); 10] = [
            (
                "hits",
                "Reads from the shared cache that found the object.",
                c.hits,
            ),
            (
                "misses",
                "Reads from the shared cache that did not find the object.",
                c.misses,
            ),
            (
                "uploads",
                "Objects this replica stored in the shared cache.",
                c.uploads,
            ),
            (
                "uploads_already_present",
                "Uploads that found the object stored already (by another replica).",
                c.already_present,
            ),
            (
                "upload_failures",
                "Uploads to the shared cache that failed (nothing became visible).",
                c.upload_failures,
            ),
            (
                "corrupt_objects",
                "Objects in the shared cache found corrupt (never served).",
                c.corrupt,
            ),
            (
                "replaced_objects",
                "Corrupt objects in the shared cache replaced with verified bytes.",
                c.replaced,
            ),
            (
                "errors",
                "Operations on the shared cache that failed (unreachable, slow, denied, full); the pull went on without it.",
                c.errors,
            ),
            (
                "bytes_read",
                "Object bytes read from the shared cache.",
                c.bytes_read,
            ),
            (
                "bytes_written",
                "Object bytes sent to the shared cache.",
                c.bytes_written,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "rejected_records",
            "Confirmation markers, tag answers and withdrawals in the shared cache not sealed with this replica's key (cache.shared.key_file); treated as absent.",
            None,
            MetricType::Counter,
        )?;
        for (kind, value) in [
            ("marker", c.rejected_markers),
            ("tag", c.rejected_tags),
            ("withdrawal", c.rejected_withdrawals),
        ] {
            let labels = [("kind", kind)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
