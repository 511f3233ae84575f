//! Prometheus metrics, served as OpenMetrics text on `/metrics`.
//!
//! Principal type: [`Metrics`], one per proxy: the registry, composed of each part's families
//! (each part owns its metrics struct beside its code and registers it here), and the
//! exposition of the whole registry for `/metrics` as OpenMetrics or Prometheus text.
//!
//! The parts: [`HttpMetrics`] (client requests, connections), [`ProxyMetrics`] (upstream
//! attempts, fallbacks, refusals, fetch slots), [`RulesMetrics`] (the rules in force, reloads),
//! [`ClusterMetrics`] (the cluster rule source, under `cluster_`), [`WarmMetrics`] (warm-up jobs,
//! under `warm_`) and [`CacheMetrics`] (the caches, and the shared tier under `shared_`).
//! A part below this module keeps its families beside it (`cache/metrics.rs`,
//! `kubernetes/metrics.rs`, `rules/metrics.rs`); a part above it (`http`, `proxy`, `warm`), which
//! reaches its families through [`crate::proxy::Proxy::metrics`], keeps them in a submodule named
//! after it here, since this module cannot import upwards without a cycle.
//!
//! `prometheus-client` (the Prometheus organisation's crate, typed label sets) rather than the
//! older `prometheus` crate: label sets are structs, so a label can only take the values the code
//! gives it. Every registry label is bounded: it names a registry known from the configuration or
//! the rules, and `other` for anything else, so a client cannot grow the series count by naming
//! hosts.

use std::collections::HashSet;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use self::http::HttpMetrics;
use self::proxy::ProxyMetrics;
use self::warm::WarmMetrics;
use crate::cache::metrics::CacheMetrics;
use crate::cache::shared::SharedStore;
use crate::cache::stats::CacheStats;
use crate::kubernetes::metrics::ClusterMetrics;
use crate::rules::RuleSet;
use crate::rules::metrics::RulesMetrics;

pub mod http;
pub mod proxy;
pub mod warm;

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

/// A histogram of latencies in [`BUCKETS`], for the parts that time something.
fn latency() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Every metric mirrorgate exports: each part's families, and the registry they are
/// registered in.
pub struct Metrics {
    registry: Registry,
    /// Client requests, connections and loops ([`crate::http`]).
    pub http: HttpMetrics,
    /// Upstream attempts, fallbacks, refusals and fetch slots ([`crate::proxy`]).
    pub proxy: ProxyMetrics,
    /// The rules in force and their reloads ([`crate::rules`]).
    pub rules: RulesMetrics,
    /// The cluster rule source (the `kubernetes` section).
    pub cluster: ClusterMetrics,
    /// Release warm-up jobs ([`crate::warm`]).
    pub warm: WarmMetrics,
    /// The caches and the shared cache tier, read at scrape time ([`crate::cache`]).
    cache: CacheMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// These metrics and the counters of the shared cache tier `store`.
    pub fn with_shared(self, store: SharedStore) -> Metrics {
        self.cache.set_shared(store);
        self
    }

    /// The metrics of a proxy whose caches count into `cache`.
    pub fn new(cache: Arc<CacheStats>) -> Metrics {
        let http = HttpMetrics::new(latency);
        let proxy = ProxyMetrics::new(latency);
        let rules = RulesMetrics::default();
        let cluster = ClusterMetrics::default();
        let warm = WarmMetrics::default();
        let cache = CacheMetrics::new(cache);
        // Parts whose families share a prefix get a sub-registry with it (linkerd's pattern);
        // the others name their families in full under `mirrorgate_`.
        let mut root = Registry::with_prefix("mirrorgate");
        http.register(&mut root);
        proxy.register(&mut root);
        rules.register(&mut root);
        cluster.register(root.sub_registry_with_prefix("cluster"));
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        root.register("build_info", "The running version (value 1)", build);
        warm.register(root.sub_registry_with_prefix("warm"));
        cache.register(&mut root);
        Metrics {
            registry: root,
            http,
            proxy,
            rules,
            cluster,
            warm,
            cache,
        }
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

    /// Records the rule set in force (objects per kind, warnings, blocked scopes, load time) and
    /// the registries that may appear as label values: those of the rules and those the
    /// configuration names (`configured`).
    pub fn rules_loaded<'a>(&self, rules: &RuleSet, configured: impl Iterator<Item = &'a str>) {
        self.rules.loaded(rules);
        self.proxy.label_registries_of(rules, configured);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::kubernetes::metrics::ClusterSync;

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
        metrics.cluster.cluster_sync(&sync(1, 2, 3));
        metrics.cluster.cluster_sync(&sync(3, 2, 0));
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
        metrics.proxy.upstream(
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
        metrics.proxy.upstream(
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
        metrics.proxy.upstream(
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
        metrics.rules.reload(false);
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
