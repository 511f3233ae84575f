//! Prometheus metrics, served as OpenMetrics text on `/metrics`.
//!
//! Principal type: [`Metrics`], one per proxy, which every part calls to count what it did and
//! which encodes the whole registry for `/metrics`.
//!
//! `prometheus-client` (the Prometheus organisation's crate, typed label sets) rather than the
//! older `prometheus` crate: label sets are structs, so a label can only take the values the code
//! gives it. Every registry label is bounded: it names a registry known from the configuration or
//! the rules, and `other` for anything else, so a client cannot grow the series count by naming
//! hosts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cache::stats::CacheStats;
use crate::rules::{InForce, MemberError, RuleSet};

/// The content type of OpenMetrics text.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as Prometheus text format 0.0.4: the formats differ, for what mirrorgate
/// exports, in a counter's `HELP`/`TYPE` lines naming the family (`x`) where 0.0.4 names the
/// sample (`x_total`), and in the `# UNIT` and `# EOF` lines, which 0.0.4 does not have.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Latency buckets, in seconds: from cache hits (tens of µs) to slow upstreams.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteMethodLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    registry: String,
    role: &'static str,
    route: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamTimingLabels {
    registry: String,
    role: &'static str,
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InForceLabels {
    in_force: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The state of the cluster rule source, as the watch reports it (counts are totals since
/// start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSync {
    /// A complete list of the cluster has been applied at least once.
    pub synced: bool,
    /// When the cluster part of the rules was last known to be current.
    pub last_sync: Option<SystemTime>,
    /// Per kind, whether the cluster serves it.
    pub capabilities: Vec<(String, bool)>,
    /// Objects per kind in the cluster part of the rules.
    pub objects: Vec<(String, usize)>,
    /// Re-lists of watches after their first complete list.
    pub watch_restarts: u64,
    /// Failed list, watch and discovery requests, per kind (`discovery` for discovery).
    pub failures: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
struct ClusterMetrics {
    synced: Gauge,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    objects: Family<KindLabels, Gauge>,
    capability: Family<KindLabels, Gauge>,
    watch_restarts: Counter,
    failures: Family<KindLabels, Counter>,
    refused: Family<InForceLabels, Gauge>,
    /// The totals already counted, to turn the watch's totals into increments.
    counted: std::sync::Mutex<ClusterSync>,
}

/// The kinds the cluster rule source reads (`kubernetes::Kind`), whose series exist from the
/// start at 0 (objects, failures), so that a family is listed before the first sync and
/// `increase()` sees the first failure. ConfigMaps are always served: no capability series.
const CLUSTER_KINDS: [&str; 6] = [
    "ImageContentSourcePolicy",
    "ImageDigestMirrorSet",
    "ImageTagMirrorSet",
    "HostedCluster",
    "NodePool",
    "ConfigMap",
];

impl ClusterMetrics {
    fn register(&self, root: &mut Registry) {
        for kind in CLUSTER_KINDS {
            let kind = KindLabels {
                kind: kind.to_owned(),
            };
            let _ = self.objects.get_or_create(&kind);
            let _ = self.failures.get_or_create(&kind);
            if kind.kind != "ConfigMap" {
                let _ = self.capability.get_or_create(&kind);
            }
        }
        let _ = self.failures.get_or_create(&KindLabels {
            kind: "discovery".to_owned(),
        });
        for in_force in [InForce::LastGood, InForce::Nothing] {
            let _ = self.refused.get_or_create(&InForceLabels {
                in_force: in_force.as_str(),
            });
        }
        root.register(
            "cluster_synced",
            "Whether the cluster's mirror objects have been listed completely and applied (1), or pulls wait for it (0); 0 without a kubernetes section",
            self.synced.clone(),
        );
        root.register(
            "cluster_last_sync_timestamp_seconds",
            "When the cluster part of the rules was last known to be current (Unix time); its age is time() minus this",
            self.last_sync.clone(),
        );
        root.register(
            "cluster_objects",
            "Mirror objects read from the cluster, by kind",
            self.objects.clone(),
        );
        root.register(
            "cluster_capability",
            "Whether the cluster serves a kind (1) or not (0), by kind, from API discovery",
            self.capability.clone(),
        );
        root.register(
            "cluster_watch_restarts",
            "Re-lists of a cluster watch after its first complete list (errors, expired versions)",
            self.watch_restarts.clone(),
        );
        root.register(
            "cluster_objects_refused",
            "Cluster objects refused because they are invalid or conflict (a mirror set, or a HostedCluster or NodePool with its ConfigMaps), by what of them is in force: their last good version, or nothing (left out)",
            self.refused.clone(),
        );
        root.register(
            "cluster_sync_failures",
            "Failed list, watch and discovery requests to the API server, by kind (discovery for discovery)",
            self.failures.clone(),
        );
    }

    fn record(&self, sync: &ClusterSync) {
        self.synced.set(i64::from(sync.synced));
        if let Some(at) = sync.last_sync {
            let at = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_sync.set(at.as_secs_f64());
        }
        let gauge = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        // A kind absent from the counts has no object (any more): 0, not a stale count.
        for kind in CLUSTER_KINDS {
            let count = sync
                .objects
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n);
            self.objects
                .get_or_create(&KindLabels {
                    kind: kind.to_owned(),
                })
                .set(gauge(count));
        }
        for (kind, count) in &sync.objects {
            self.objects
                .get_or_create(&KindLabels { kind: kind.clone() })
                .set(gauge(*count));
        }
        for (kind, served) in &sync.capabilities {
            self.capability
                .get_or_create(&KindLabels { kind: kind.clone() })
                .set(i64::from(*served));
        }
        let Ok(mut counted) = self.counted.lock() else {
            return;
        };
        self.watch_restarts
            .inc_by(sync.watch_restarts.saturating_sub(counted.watch_restarts));
        for (kind, total) in &sync.failures {
            let before = counted
                .failures
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n);
            self.failures
                .get_or_create(&KindLabels { kind: kind.clone() })
                .inc_by(total.saturating_sub(before));
        }
        *counted = sync.clone();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarmSourceLabels {
    source: &'static str,
}

/// What release warm-up jobs did (`crate::warm`).
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

    fn register(&self, root: &mut Registry) {
        for outcome in ["succeeded", "failed"] {
            let _ = self.jobs.get_or_create(&OutcomeLabels { outcome });
        }
        for source in ["fetched", "cached"] {
            let _ = self.blobs.get_or_create(&WarmSourceLabels { source });
            let _ = self.bytes.get_or_create(&WarmSourceLabels { source });
        }
        root.register(
            "warm_jobs",
            "Release warm-up jobs ended, by outcome (succeeded, failed)",
            self.jobs.clone(),
        );
        root.register(
            "warm_jobs_running",
            "Release warm-up jobs under way",
            self.running.clone(),
        );
        root.register(
            "warm_images",
            "Images (manifests with all their blobs) made warm by warm-up jobs",
            self.images.clone(),
        );
        root.register(
            "warm_blobs",
            "Blobs of warm-up jobs, by source (fetched from an upstream, or already cached)",
            self.blobs.clone(),
        );
        root.register(
            "warm_bytes",
            "Blob bytes of warm-up jobs, by source (fetched from an upstream, or already cached)",
            self.bytes.clone(),
        );
        root.register(
            "warm_failures",
            "Components, manifests and blobs warm-up jobs could not fetch",
            self.failures.clone(),
        );
    }
}

/// Every metric mirrorgate exports.
pub struct Metrics {
    registry: Registry,
    warm: WarmMetrics,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteMethodLabels, Histogram>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_duration: Family<UpstreamTimingLabels, Histogram>,
    fallbacks: Family<RouteLabels, Counter>,
    blocked: Family<RouteLabels, Counter>,
    source_after_mirrors: Family<RouteLabels, Counter>,
    rules_loaded: Family<KindLabels, Gauge>,
    rule_warnings: Gauge,
    blocked_scopes: Gauge,
    reloads: Family<ResultLabels, Counter>,
    last_reload: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_reload_successful: Gauge,
    connections: Gauge,
    connections_stalled: Counter,
    fetches_in_flight: Gauge,
    fetches_queued: Gauge,
    fetches_refused: Counter,
    loops_refused: Counter,
    withdrawn_refused: Family<RouteLabels, Counter>,
    withdrawn_digests: Gauge,
    cluster: ClusterMetrics,
    /// The shared cache tier whose counters are exported, once there is one.
    shared: Arc<std::sync::OnceLock<crate::cache::shared::SharedStore>>,
    /// Registries that may appear as label values.
    known_registries: ArcSwap<HashSet<String>>,
    /// Wildcard suffixes (`.example.com`) of rule scopes, for hosts under them.
    known_wildcards: ArcSwap<Vec<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
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
struct SharedCollector(Arc<std::sync::OnceLock<crate::cache::shared::SharedStore>>);

impl Collector for SharedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self
            .0
            .get()
            .map(|store| store.stats().snapshot())
            .unwrap_or_default();
        let counters: [(&str, &str, u64); 10] = [
            (
                "shared_hits",
                "Reads from the shared cache that found the object.",
                c.hits,
            ),
            (
                "shared_misses",
                "Reads from the shared cache that did not find the object.",
                c.misses,
            ),
            (
                "shared_uploads",
                "Objects this replica stored in the shared cache.",
                c.uploads,
            ),
            (
                "shared_uploads_already_present",
                "Uploads that found the object stored already (by another replica).",
                c.already_present,
            ),
            (
                "shared_upload_failures",
                "Uploads to the shared cache that failed (nothing became visible).",
                c.upload_failures,
            ),
            (
                "shared_corrupt_objects",
                "Objects in the shared cache found corrupt (never served).",
                c.corrupt,
            ),
            (
                "shared_replaced_objects",
                "Corrupt objects in the shared cache replaced with verified bytes.",
                c.replaced,
            ),
            (
                "shared_errors",
                "Operations on the shared cache that failed (unreachable, slow, denied, full); the pull went on without it.",
                c.errors,
            ),
            (
                "shared_bytes_read",
                "Object bytes read from the shared cache.",
                c.bytes_read,
            ),
            (
                "shared_bytes_written",
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
            "shared_rejected_records",
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

impl Metrics {
    /// These metrics and the counters of the shared cache tier `store`.
    pub fn with_shared(self, store: crate::cache::shared::SharedStore) -> Metrics {
        let _ = self.shared.set(store);
        self
    }

    /// The metrics of a proxy whose caches count into `cache`.
    pub fn new(cache: Arc<CacheStats>) -> Metrics {
        let mut root = Registry::with_prefix("mirrorgate");
        let histogram = || Histogram::new(BUCKETS);
        let metrics = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(histogram),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(histogram),
            fallbacks: Family::default(),
            blocked: Family::default(),
            source_after_mirrors: Family::default(),
            rules_loaded: Family::default(),
            rule_warnings: Gauge::default(),
            blocked_scopes: Gauge::default(),
            reloads: Family::default(),
            last_reload: Gauge::default(),
            last_reload_successful: Gauge::default(),
            connections: Gauge::default(),
            connections_stalled: Counter::default(),
            fetches_in_flight: Gauge::default(),
            fetches_queued: Gauge::default(),
            fetches_refused: Counter::default(),
            loops_refused: Counter::default(),
            withdrawn_refused: Family::default(),
            withdrawn_digests: Gauge::default(),
            cluster: ClusterMetrics::default(),
            shared: Arc::default(),
            known_registries: ArcSwap::from_pointee(HashSet::new()),
            known_wildcards: ArcSwap::from_pointee(Vec::new()),
            registry: Registry::default(),
            warm: WarmMetrics::default(),
        };
        root.register(
            "http_requests",
            "Client requests by route, method and status",
            metrics.requests.clone(),
        );
        root.register(
            "http_request_duration_seconds",
            "Time to the response headers, by route and method",
            metrics.request_duration.clone(),
        );
        root.register(
            "upstream_requests",
            "Requests to upstream registries by registry, role (mirror/source), route and outcome",
            metrics.upstream_requests.clone(),
        );
        root.register(
            "upstream_request_duration_seconds",
            "Time to an upstream's response headers, by registry, role and route",
            metrics.upstream_duration.clone(),
        );
        root.register(
            "fallbacks",
            "Requests served by another than the first pull source, by route",
            metrics.fallbacks.clone(),
        );
        root.register(
            "blocked",
            "Requests refused because the source is blocked and no mirror applies, by route",
            metrics.blocked.clone(),
        );
        root.register(
            "source_after_mirrors",
            "Source attempts made because every mirror attempt before them failed, by route",
            metrics.source_after_mirrors.clone(),
        );
        root.register(
            "rules_loaded",
            "Objects in the rule set in force, by kind",
            metrics.rules_loaded.clone(),
        );
        root.register(
            "rule_warnings",
            "Warnings of the rule set in force (unknown fields, ConfigMaps named but not loaded)",
            metrics.rule_warnings.clone(),
        );
        root.register(
            "blocked_scopes",
            "Scopes of the rule set in force whose source is never contacted (NeverContactSource)",
            metrics.blocked_scopes.clone(),
        );
        root.register(
            "reloads",
            "Rule and configuration reloads by result (success, failure)",
            metrics.reloads.clone(),
        );
        root.register(
            "last_reload_success_timestamp_seconds",
            "When the rules in force were loaded (Unix time)",
            metrics.last_reload.clone(),
        );
        root.register(
            "last_reload_successful",
            "Whether the last reload attempt succeeded (1) or failed and the last good rules stay in force (0)",
            metrics.last_reload_successful.clone(),
        );
        // Both results, and the per-route counters of what alerts watch, exist from the start
        // at 0, so that increase() and rate() see the first event.
        for result in ["success", "failure"] {
            let _ = metrics.reloads.get_or_create(&ResultLabels { result });
        }
        for route in ["manifest", "blob", "tags", "referrers"] {
            for family in [
                &metrics.fallbacks,
                &metrics.blocked,
                &metrics.source_after_mirrors,
                &metrics.withdrawn_refused,
            ] {
                let _ = family.get_or_create(&RouteLabels { route });
            }
        }
        metrics.last_reload_successful.set(1);
        root.register(
            "connections",
            "Client connections open on the API address",
            metrics.connections.clone(),
        );
        root.register(
            "connections_stalled",
            "Client connections closed because a response got no bytes out within limits.write_stall_timeout",
            metrics.connections_stalled.clone(),
        );
        root.register(
            "upstream_fetches_in_flight",
            "Upstream fetches under way (bounded by limits.max_upstream_fetches)",
            metrics.fetches_in_flight.clone(),
        );
        root.register(
            "upstream_fetches_queued",
            "Requests waiting for an upstream fetch slot",
            metrics.fetches_queued.clone(),
        );
        root.register(
            "upstream_fetches_refused",
            "Requests answered 429 because no upstream fetch slot freed up in time",
            metrics.fetches_refused.clone(),
        );
        root.register(
            "loops_refused",
            "Requests answered 508 Loop Detected because they carried this mirrorgate's own Via token",
            metrics.loops_refused.clone(),
        );
        root.register(
            "withdrawn_refused",
            "Requests answered 404 because an operator withdrew the digest (mirrorgate deny), by route",
            metrics.withdrawn_refused.clone(),
        );
        root.register(
            "withdrawn_digests",
            "Digests an operator has withdrawn (mirrorgate deny) and mirrorgate refuses to serve",
            metrics.withdrawn_digests.clone(),
        );
        metrics.cluster.register(&mut root);
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        root.register("build_info", "The running version (value 1)", build);
        root.register_collector(Box::new(CacheCollector(cache)));
        metrics.warm.register(&mut root);
        root.register_collector(Box::new(SharedCollector(metrics.shared.clone())));
        Metrics {
            registry: root,
            ..metrics
        }
    }

    /// The counters of release warm-up jobs.
    pub fn warm(&self) -> &WarmMetrics {
        &self.warm
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Every metric in the format a scraper asks for by its `Accept` header: OpenMetrics when it
    /// names it (Prometheus does), else the Prometheus text format 0.0.4, which `curl`,
    /// `promtool check metrics` and older scrapers read. Returns the content type and the text.
    pub fn exposition(&self, accept: Option<&str>) -> (&'static str, String) {
        let openmetrics = self.encode();
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            (OPENMETRICS_TYPE, openmetrics)
        } else {
            (PROMETHEUS_TEXT_TYPE, to_prometheus_text(&openmetrics))
        }
    }

    /// Records the rule set in force: objects per kind, its warnings and blocked scopes, the load
    /// time, and the registries that
    /// may appear as label values (with those of the configuration).
    pub fn rules_loaded<'a>(&self, rules: &RuleSet, configured: impl Iterator<Item = &'a str>) {
        self.rules_loaded.clear();
        let summary = rules.summary();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.rule_warnings.set(count(summary.warnings.len()));
        self.blocked_scopes.set(count(summary.blocked_scopes.len()));
        for (kind, count) in summary.objects {
            self.rules_loaded
                .get_or_create(&KindLabels { kind })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_reload.set(now.as_secs_f64());
        let (mut known, wildcards) = rules.registries();
        known.extend(configured.map(str::to_owned));
        self.known_registries.store(Arc::new(known));
        self.known_wildcards.store(Arc::new(wildcards));
    }

    /// The gauge of open client connections.
    pub fn connections(&self) -> Gauge {
        self.connections.clone()
    }

    /// The counter of client connections closed for a stalled response.
    pub fn connections_stalled(&self) -> Counter {
        self.connections_stalled.clone()
    }

    /// The gauges of upstream fetches under way and waiting, and the counter of those refused.
    pub fn fetch_slots(&self) -> (Gauge, Gauge, Counter) {
        (
            self.fetches_in_flight.clone(),
            self.fetches_queued.clone(),
            self.fetches_refused.clone(),
        )
    }

    /// Records the state of the cluster rule source (the `kubernetes` section): exported as
    /// `mirrorgate_cluster_*`.
    pub fn cluster_sync(&self, sync: &ClusterSync) {
        self.cluster.record(sync);
    }

    /// Records the cluster objects the rule set in force refused
    /// ([`RuleSet::errors`]): exported as `mirrorgate_cluster_objects_refused`.
    pub fn cluster_refused(&self, errors: &[MemberError]) {
        for in_force in [InForce::LastGood, InForce::Nothing] {
            let count = errors.iter().filter(|e| e.in_force == in_force).count();
            self.cluster
                .refused
                .get_or_create(&InForceLabels {
                    in_force: in_force.as_str(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Counts a reload attempt.
    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.last_reload_successful.set(i64::from(success));
    }

    /// Counts one answered client request.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteMethodLabels { route, method })
            .observe(took.as_secs_f64());
    }

    /// Counts one attempt at an upstream registry.
    pub fn upstream(
        &self,
        registry: &str,
        role: &'static str,
        route: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        let registry = self.registry_label(registry);
        self.upstream_duration
            .get_or_create(&UpstreamTimingLabels {
                registry: registry.clone(),
                role,
                route,
            })
            .observe(took.as_secs_f64());
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                registry,
                role,
                route,
                outcome,
            })
            .inc();
    }

    /// Counts a request served by another than the first pull source.
    pub fn fallback(&self, route: &'static str) {
        self.fallbacks.get_or_create(&RouteLabels { route }).inc();
    }

    /// Counts a source attempt made after mirror attempts failed.
    pub fn source_after_mirrors(&self, route: &'static str) {
        self.source_after_mirrors
            .get_or_create(&RouteLabels { route })
            .inc();
    }

    /// Counts a request refused as a loop (508).
    pub fn loop_refused(&self) {
        self.loops_refused.inc();
    }

    /// Counts a request refused because its digest is withdrawn.
    pub fn withdrawn_refused(&self, route: &'static str) {
        self.withdrawn_refused
            .get_or_create(&RouteLabels { route })
            .inc();
    }

    /// Sets how many digests are withdrawn.
    pub fn withdrawn_digests(&self, count: usize) {
        self.withdrawn_digests
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts a request refused because the source is blocked.
    pub fn blocked(&self, route: &'static str) {
        self.blocked.get_or_create(&RouteLabels { route }).inc();
    }

    /// The label value for a registry: itself if known, the wildcard scope it falls under, or
    /// `other`.
    fn registry_label(&self, registry: &str) -> String {
        if self.known_registries.load().contains(registry) {
            return registry.to_owned();
        }
        let host = registry.split(':').next().unwrap_or(registry);
        self.known_wildcards
            .load()
            .iter()
            .find(|suffix| host.ends_with(suffix.as_str()))
            .map_or_else(|| "other".to_owned(), |suffix| format!("*{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_totals_become_counter_increments_and_a_deleted_kind_counts_zero() {
        let metrics = Metrics::new(Arc::new(CacheStats::default()));
        let sync = |restarts: u64, failures: u64, objects: usize| ClusterSync {
            synced: true,
            last_sync: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            capabilities: vec![("ImageTagMirrorSet".to_owned(), false)],
            objects: if objects > 0 {
                vec![("ImageDigestMirrorSet".to_owned(), objects)]
            } else {
                Vec::new()
            },
            watch_restarts: restarts,
            failures: vec![("discovery".to_owned(), failures)],
        };
        metrics.cluster_sync(&sync(1, 2, 3));
        metrics.cluster_sync(&sync(3, 2, 0));
        let text = metrics.encode();
        let sample = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
        };
        assert_eq!(
            (
                sample("mirrorgate_cluster_watch_restarts_total"),
                sample("mirrorgate_cluster_sync_failures_total{kind=\"discovery\"}"),
                sample("mirrorgate_cluster_objects{kind=\"ImageDigestMirrorSet\"}"),
                sample("mirrorgate_cluster_capability{kind=\"ImageTagMirrorSet\"}"),
                sample("mirrorgate_cluster_synced"),
                sample("mirrorgate_cluster_last_sync_timestamp_seconds"),
            ),
            (
                Some("3".to_owned()),
                Some("2".to_owned()),
                Some("0".to_owned()),
                Some("0".to_owned()),
                Some("1".to_owned()),
                Some("1700000000.0".to_owned()),
            ),
            "{text}"
        );
    }

    fn metrics_with_rules() -> Metrics {
        let metrics = Metrics::new(Arc::new(CacheStats::default()));
        let rules = crate::rules::load_str(
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.example.com/ns]\n  - source: \"*.corp.example.com\"\n    mirrors: [mirror.example.com/corp]\n",
            "rules.yaml",
        )
        .unwrap();
        metrics.rules_loaded(&rules, ["docker.io"].into_iter());
        metrics
    }

    #[test]
    fn unknown_registries_are_labelled_other() {
        let metrics = metrics_with_rules();
        metrics.upstream(
            "evil.example.net",
            "mirror",
            "manifest",
            "ok",
            Duration::ZERO,
        );
        assert!(metrics.encode().contains("registry=\"other\""));
    }

    #[test]
    fn registries_of_the_rules_are_their_own_label() {
        let metrics = metrics_with_rules();
        metrics.upstream(
            "mirror.example.com",
            "mirror",
            "manifest",
            "ok",
            Duration::ZERO,
        );
        assert!(metrics.encode().contains(
            "mirrorgate_upstream_requests_total{registry=\"mirror.example.com\",role=\"mirror\",route=\"manifest\",outcome=\"ok\"} 1"
        ));
    }

    #[test]
    fn hosts_under_a_wildcard_scope_are_labelled_with_it() {
        let metrics = metrics_with_rules();
        metrics.upstream(
            "a.corp.example.com:5000",
            "source",
            "blob",
            "ok",
            Duration::ZERO,
        );
        assert!(metrics.encode().contains("registry=\"*.corp.example.com\""));
    }

    #[test]
    fn rules_loaded_counts_objects_per_kind() {
        assert!(
            metrics_with_rules()
                .encode()
                .contains("mirrorgate_rules_loaded{kind=\"ImageDigestMirrorSet\"} 1")
        );
    }

    #[test]
    fn rule_warnings_and_blocked_scopes_follow_the_rule_set_in_force() {
        let metrics = metrics_with_rules();
        let before = lines_of(
            &metrics,
            &["mirrorgate_rule_warnings ", "mirrorgate_blocked_scopes "],
        );
        let misspelt = crate::rules::load_str(
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.example.com/ns]\n    mirrorSourcePolcy: NeverContactSource\n  - source: quay.io/blocked\n    mirrors: [mirror.example.com/blocked]\n    mirrorSourcePolicy: NeverContactSource\n",
            "rules.yaml",
        )
        .unwrap();
        metrics.rules_loaded(&misspelt, std::iter::empty());
        let after = lines_of(
            &metrics,
            &["mirrorgate_rule_warnings ", "mirrorgate_blocked_scopes "],
        );
        assert_eq!(
            (before, after),
            (
                ["mirrorgate_rule_warnings 0", "mirrorgate_blocked_scopes 0"].map(String::from),
                ["mirrorgate_rule_warnings 1", "mirrorgate_blocked_scopes 1"].map(String::from)
            )
        );
    }

    /// The sample lines of `metrics` that start with each of `prefixes`, in that order.
    fn lines_of<const N: usize>(metrics: &Metrics, prefixes: &[&str; N]) -> [String; N] {
        let text = metrics.encode();
        prefixes.map(|p| {
            text.lines()
                .find(|l| l.starts_with(p))
                .unwrap_or_default()
                .to_owned()
        })
    }

    #[test]
    fn help_texts_end_in_one_period() {
        let text = Metrics::new(Arc::new(CacheStats::default())).encode();
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        let wrong: Vec<&&str> = helps
            .iter()
            .filter(|l| !l.ends_with('.') || l.ends_with(".."))
            .collect();
        assert_eq!((helps.len() > 20, wrong), (true, vec![]));
    }

    #[test]
    fn scrapers_that_ask_for_openmetrics_get_it_and_others_get_the_text_format() {
        let stats = Arc::new(CacheStats::default());
        CacheStats::count(&stats.blob_hits);
        let metrics = Metrics::new(stats);
        metrics.reload(false);
        let (om_type, om) =
            metrics.exposition(Some("application/openmetrics-text;version=1.0.0,*/*;q=0.1"));
        let (text_type, text) = metrics.exposition(Some("*/*"));
        let lines = |text: &str, name: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains(name) && !l.contains("\"success\""))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            (
                om_type,
                om.ends_with("# EOF\n"),
                lines(&om, "mirrorgate_reloads"),
                text_type,
                text.contains("# EOF"),
                lines(&text, "mirrorgate_reloads"),
                lines(&text, "mirrorgate_cache_blob_hits"),
            ),
            (
                OPENMETRICS_TYPE,
                true,
                vec![
                    "# HELP mirrorgate_reloads Rule and configuration reloads by result (success, failure).".to_owned(),
                    "# TYPE mirrorgate_reloads counter".to_owned(),
                    "mirrorgate_reloads_total{result=\"failure\"} 1".to_owned(),
                ],
                PROMETHEUS_TEXT_TYPE,
                false,
                vec![
                    "# HELP mirrorgate_reloads_total Rule and configuration reloads by result (success, failure).".to_owned(),
                    "# TYPE mirrorgate_reloads_total counter".to_owned(),
                    "mirrorgate_reloads_total{result=\"failure\"} 1".to_owned(),
                ],
                vec![
                    "# HELP mirrorgate_cache_blob_hits_total Blobs served from the store.".to_owned(),
                    "# TYPE mirrorgate_cache_blob_hits_total counter".to_owned(),
                    "mirrorgate_cache_blob_hits_total 1".to_owned(),
                ],
            )
        );
    }

    #[test]
    fn cache_counters_are_exported() {
        let stats = Arc::new(CacheStats::default());
        CacheStats::count(&stats.blob_hits);
        let metrics = Metrics::new(stats);
        assert!(
            metrics
                .encode()
                .contains("mirrorgate_cache_blob_hits_total 1")
        );
    }
}
