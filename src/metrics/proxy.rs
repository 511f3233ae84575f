//! What the proxy ([`crate::proxy`]) counts: attempts at upstream registries and their timings,
//! requests served by a later pull source or refused (blocked, withdrawn), and the upstream
//! fetch slots.
//!
//! Principal type: [`ProxyMetrics`], a part of [`crate::metrics::Metrics`], which registers it.
//! Every registry label is bounded: it names a registry known from the configuration or the
//! rules, the wildcard scope a host falls under, or `other`, so that a client cannot grow the
//! series count by naming hosts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::rules::RuleSet;

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

/// The families of the proxy: `upstream_requests`, `upstream_request_duration_seconds`,
/// `fallbacks`, `blocked`, `source_after_mirrors`, `upstream_fetches_*`, `withdrawn_refused` and
/// `withdrawn_digests`.
#[derive(Debug)]
pub struct ProxyMetrics {
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_duration: Family<UpstreamTimingLabels, Histogram>,
    fallbacks: Family<RouteLabels, Counter>,
    blocked: Family<RouteLabels, Counter>,
    source_after_mirrors: Family<RouteLabels, Counter>,
    fetches_in_flight: Gauge,
    fetches_queued: Gauge,
    fetches_refused: Counter,
    withdrawn_refused: Family<RouteLabels, Counter>,
    withdrawn_digests: Gauge,
    /// Registries that may appear as label values.
    known_registries: ArcSwap<HashSet<String>>,
    /// Wildcard suffixes (`.example.com`) of rule scopes, for hosts under them.
    known_wildcards: ArcSwap<Vec<String>>,
}

impl ProxyMetrics {
    /// The families, timing attempts in histograms made by `latency` (the buckets are the
    /// exposition's choice, shared with the client request timings).
    pub fn new(latency: fn() -> Histogram) -> ProxyMetrics {
        ProxyMetrics {
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(latency),
            fallbacks: Family::default(),
            blocked: Family::default(),
            source_after_mirrors: Family::default(),
            fetches_in_flight: Gauge::default(),
            fetches_queued: Gauge::default(),
            fetches_refused: Counter::default(),
            withdrawn_refused: Family::default(),
            withdrawn_digests: Gauge::default(),
            known_registries: ArcSwap::from_pointee(HashSet::new()),
            known_wildcards: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Registers the families in `registry` (the exporter's root).
    pub fn register(&self, registry: &mut Registry) {
        // The per-route counters of what alerts watch exist from the start at 0, so that
        // increase() and rate() see the first event.
        for route in ["manifest", "blob", "tags", "referrers"] {
            for family in [
                &self.fallbacks,
                &self.blocked,
                &self.source_after_mirrors,
                &self.withdrawn_refused,
            ] {
                let _ = family.get_or_create(&RouteLabels { route });
            }
        }
        registry.register(
            "upstream_requests",
            "Requests to upstream registries by registry, role (mirror/source), route and outcome",
            self.upstream_requests.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Time to an upstream's response headers, by registry, role and route",
            self.upstream_duration.clone(),
        );
        registry.register(
            "fallbacks",
            "Requests served by another than the first pull source, by route",
            self.fallbacks.clone(),
        );
        registry.register(
            "blocked",
            "Requests refused because the source is blocked and no mirror applies, by route",
            self.blocked.clone(),
        );
        registry.register(
            "source_after_mirrors",
            "Source attempts made because every mirror attempt before them failed, by route",
            self.source_after_mirrors.clone(),
        );
        registry.register(
            "upstream_fetches_in_flight",
            "Upstream fetches under way (bounded by limits.max_upstream_fetches)",
            self.fetches_in_flight.clone(),
        );
        registry.register(
            "upstream_fetches_queued",
            "Requests waiting for an upstream fetch slot",
            self.fetches_queued.clone(),
        );
        registry.register(
            "upstream_fetches_refused",
            "Requests answered 429 because no upstream fetch slot freed up in time",
            self.fetches_refused.clone(),
        );
        registry.register(
            "withdrawn_refused",
            "Requests answered 404 because an operator withdrew the digest (mirrorgate deny), by route",
            self.withdrawn_refused.clone(),
        );
        registry.register(
            "withdrawn_digests",
            "Digests an operator has withdrawn (mirrorgate deny) and mirrorgate refuses to serve",
            self.withdrawn_digests.clone(),
        );
    }

    /// Takes the registries that may appear as label values from the rule set in force and
    /// those the configuration names (`configured`).
    pub fn label_registries_of<'a>(
        &self,
        rules: &RuleSet,
        configured: impl Iterator<Item = &'a str>,
    ) {
        let (mut known, wildcards) = rules.registries();
        known.extend(configured.map(str::to_owned));
        self.known_registries.store(Arc::new(known));
        self.known_wildcards.store(Arc::new(wildcards));
    }

    /// The gauges of upstream fetches under way and waiting, and the counter of those refused.
    pub fn fetch_slots(&self) -> (Gauge, Gauge, Counter) {
        (
            self.fetches_in_flight.clone(),
            self.fetches_queued.clone(),
            self.fetches_refused.clone(),
        )
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
