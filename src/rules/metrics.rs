//! What the rule set in force holds (objects per kind, warnings, blocked scopes), and the
//! reloads that put it in force.
//!
//! Principal type: [`RulesMetrics`], a part of [`crate::metrics::Metrics`], which registers it.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::RuleSet;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The families of the rules in force: `rules_loaded`, `rule_warnings`, `blocked_scopes`,
/// `reloads`, `last_reload_success_timestamp_seconds` and `last_reload_successful`.
#[derive(Debug, Default)]
pub struct RulesMetrics {
    rules_loaded: Family<KindLabels, Gauge>,
    rule_warnings: Gauge,
    blocked_scopes: Gauge,
    reloads: Family<ResultLabels, Counter>,
    last_reload: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_reload_successful: Gauge,
}

impl RulesMetrics {
    /// Registers the families in `registry` (the exporter's root).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rules_loaded",
            "Objects in the rule set in force, by kind",
            self.rules_loaded.clone(),
        );
        registry.register(
            "rule_warnings",
            "Warnings of the rule set in force (unknown fields, ConfigMaps named but not loaded)",
            self.rule_warnings.clone(),
        );
        registry.register(
            "blocked_scopes",
            "Scopes of the rule set in force whose source is never contacted (NeverContactSource)",
            self.blocked_scopes.clone(),
        );
        registry.register(
            "reloads",
            "Rule and configuration reloads by result (success, failure)",
            self.reloads.clone(),
        );
        registry.register(
            "last_reload_success_timestamp_seconds",
            "When the rules in force were loaded (Unix time)",
            self.last_reload.clone(),
        );
        registry.register(
            "last_reload_successful",
            "Whether the last reload attempt succeeded (1) or failed and the last good rules stay in force (0)",
            self.last_reload_successful.clone(),
        );
        // Both results exist from the start at 0, so that increase() and rate() see the first
        // event; the rules loaded at start are the last good ones until a reload fails.
        for result in ["success", "failure"] {
            let _ = self.reloads.get_or_create(&ResultLabels { result });
        }
        self.last_reload_successful.set(1);
    }

    /// Records the rule set in force: objects per kind, its warnings and blocked scopes, and the
    /// load time.
    pub fn loaded(&self, rules: &RuleSet) {
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
    }

    /// Counts a reload attempt.
    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.last_reload_successful.set(i64::from(success));
    }
}
