//! What the cluster rule source (the `kubernetes` section) reports: whether and when it synced,
//! the objects and kinds it sees, its failures, and the cluster objects the rules refused.
//!
//! Principal types: [`ClusterSync`], the watch's state as plain data, and [`ClusterMetrics`], a
//! part of [`crate::metrics::Metrics`], which registers it under the `cluster` prefix. Built
//! without the `kubernetes` feature too, so that the series exist (at 0) either way.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::rules::{InForce, MemberError};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InForceLabels {
    in_force: &'static str,
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

/// The families of the cluster rule source: `synced`, `last_sync_timestamp_seconds`, `objects`,
/// `capability`, `watch_restarts`, `objects_refused` and `sync_failures`, under the prefix the
/// exporter gives (`cluster`).
#[derive(Debug, Default)]
pub struct ClusterMetrics {
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
    /// Registers the families in `registry` (the exporter's `cluster` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
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
        registry.register(
            "synced",
            "Whether the cluster's mirror objects have been listed completely and applied (1), or pulls wait for it (0); 0 without a kubernetes section",
            self.synced.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "When the cluster part of the rules was last known to be current (Unix time); its age is time() minus this",
            self.last_sync.clone(),
        );
        registry.register(
            "objects",
            "Mirror objects read from the cluster, by kind",
            self.objects.clone(),
        );
        registry.register(
            "capability",
            "Whether the cluster serves a kind (1) or not (0), by kind, from API discovery",
            self.capability.clone(),
        );
        registry.register(
            "watch_restarts",
            "Re-lists of a cluster watch after its first complete list (errors, expired versions)",
            self.watch_restarts.clone(),
        );
        registry.register(
            "objects_refused",
            "Cluster objects refused because they are invalid or conflict (a mirror set, or a HostedCluster or NodePool with its ConfigMaps), by what of them is in force: their last good version, or nothing (left out)",
            self.refused.clone(),
        );
        registry.register(
            "sync_failures",
            "Failed list, watch and discovery requests to the API server, by kind (discovery for discovery)",
            self.failures.clone(),
        );
    }

    /// Records the state of the cluster rule source: exported as `mirrorgate_cluster_*`.
    pub fn cluster_sync(&self, sync: &ClusterSync) {
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

    /// Records the cluster objects the rule set in force refused
    /// ([`RuleSet::errors`](crate::rules::RuleSet::errors)): exported as
    /// `mirrorgate_cluster_objects_refused`.
    pub fn cluster_refused(&self, errors: &[MemberError]) {
        for in_force in [InForce::LastGood, InForce::Nothing] {
            let count = errors.iter().filter(|e| e.in_force == in_force).count();
            self.refused
                .get_or_create(&InForceLabels {
                    in_force: in_force.as_str(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}
