//! What release warm-up jobs ([`crate::warm`]) did: jobs by outcome and under way, images made
//! warm, blobs and bytes by where they came from, and what could not be fetched.
//!
//! Principal type: [`WarmMetrics`], a part of [`crate::metrics::Metrics`], which registers it
//! under the `warm` prefix; each job holds a clone.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarmSourceLabels {
    source: &'static str,
}

/// The families of release warm-up jobs: `jobs`, `jobs_running`, `images`, `blobs`, `bytes` and
/// `failures`, under the prefix the exporter gives (`warm`).
#[derive(Debug, Clone, Default)]
pub struct WarmMetrics {
    jobs: Family<OutcomeLabels, Counter>,
    running: Gauge,
    images: Counter,
    blobs: Family<WarmSourceLabels, Counter>,
    bytes: Family<WarmSourceLabels, Counter>,
    failures: Counter,
}

impl WarmMetrics {
    /// A job started.
    pub fn job_started(&self) {
        self.running.inc();
    }

    /// A job ended, `succeeded` or `failed`.
    pub fn job_finished(&self, succeeded: bool) {
        self.running.dec();
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.jobs.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// An image (all of its blobs) is warm.
    pub fn image_warmed(&self) {
        self.images.inc();
    }

    /// A blob of `size` bytes is warm: `fetched` from an upstream by the job, or found cached.
    pub fn blob_warmed(&self, size: u64, fetched: bool) {
        let source = if fetched { "fetched" } else { "cached" };
        let labels = WarmSourceLabels { source };
        self.blobs.get_or_create(&labels).inc();
        self.bytes.get_or_create(&labels).inc_by(size);
    }

    /// A component, manifest or blob could not be warmed.
    pub fn failure(&self) {
        self.failures.inc();
    }

    /// Registers the families in `registry` (the exporter's `warm` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        for outcome in ["succeeded", "failed"] {
            let _ = self.jobs.get_or_create(&OutcomeLabels { outcome });
        }
        for source in ["fetched", "cached"] {
            let _ = self.blobs.get_or_create(&WarmSourceLabels { source });
            let _ = self.bytes.get_or_create(&WarmSourceLabels { source });
        }
        registry.register(
            "jobs",
            "Release warm-up jobs ended, by outcome (succeeded, failed)",
            self.jobs.clone(),
        );
        registry.register(
            "jobs_running",
            "Release warm-up jobs under way",
            self.running.clone(),
        );
        registry.register(
            "images",
            "Images (manifests with all their blobs) made warm by warm-up jobs",
            self.images.clone(),
        );
        registry.register(
            "blobs",
            "Blobs of warm-up jobs, by source (fetched from an upstream, or already cached)",
            self.blobs.clone(),
        );
        registry.register(
            "bytes",
            "Blob bytes of warm-up jobs, by source (fetched from an upstream, or already cached)",
            self.bytes.clone(),
        );
        registry.register(
            "failures",
            "Components, manifests and blobs warm-up jobs could not fetch",
            self.failures.clone(),
        );
    }
}
