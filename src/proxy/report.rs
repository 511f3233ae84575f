//! The proxy's state as `/status` reports it ([`Proxy::status`]): the rules, each registry, the
//! cache tiers, the fetches under way and the withdrawn digests.

use std::time::{Duration, Instant, SystemTime};

use super::open::Proxy;
use crate::cache::stats::CacheStats;
use crate::status_report::{
    CacheStatus, DownloadStatus, ErrorStatus, FetchesStatus, RegistryStatus, ReloadStatus,
    RulesStatus, Status, WithdrawnStatus,
};

impl Proxy {
    /// A snapshot of the proxy's state, for `/status`.
    pub fn status(&self) -> Status {
        let rules = self.rules();
        let summary = rules.summary();
        let reloads = self.reloads.state().clone();
        let stats = self.tiers.stats();
        let occupancy = self.tiers.occupancy();
        let count = |counter| CacheStats::get(counter);
        let hits = count(&stats.manifest_hits) + count(&stats.tag_hits);
        let misses = count(&stats.manifest_misses);
        let (blob_hits, blob_misses) = (count(&stats.blob_hits), count(&stats.blob_misses));
        let mut downloads: Vec<DownloadStatus> = self
            .downloads
            .list()
            .into_iter()
            .map(|(digest, repository)| DownloadStatus { digest, repository })
            .collect();
        downloads.sort_by(|a, b| a.digest.cmp(&b.digest));
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: timestamp(self.reloads.started_at),
            rules: RulesStatus {
                config: reloads.config.clone(),
                files: summary
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect(),
                objects: summary.objects.clone(),
                scopes: summary.scopes,
                blocked_scopes: summary.blocked_scopes.clone(),
                warnings: summary.warnings.iter().map(ToString::to_string).collect(),
                refused: summary.errors.iter().map(ToString::to_string).collect(),
                loaded_at: timestamp(reloads.loaded_at),
                last_reload: reloads.last.as_ref().map(|(at, result)| ReloadStatus {
                    at: timestamp(*at),
                    result: if result.is_ok() { "success" } else { "failure" }.to_owned(),
                    error: result.as_ref().err().cloned(),
                }),
                incomplete: self.incomplete().map(|why| why.to_string()),
            },
            registries: self.registry_statuses(),
            cache: CacheStatus {
                manifest_entries: occupancy.manifest_entries,
                manifest_memory_bytes: count(&stats.manifest_memory_bytes),
                tag_entries: occupancy.tag_entries,
                blob_entries: occupancy.blob_entries,
                blob_bytes: occupancy.blob_bytes,
                blob_max_bytes: occupancy.blob_max_bytes,
                manifest_hits: hits,
                manifest_misses: misses,
                blob_hits,
                blob_misses,
                hit_ratio: CacheStatus::ratio(hits + blob_hits, misses + blob_misses),
            },
            fetches: FetchesStatus {
                in_flight: self.sources.fetch_slots.in_flight(),
                queued: self.sources.fetch_slots.queued(),
                max: self.sources.fetch_slots.size(),
                refused: self.sources.fetch_slots.refused(),
                downloads,
            },
            withdrawn: self
                .withdrawn()
                .iter()
                .map(|(digest, withdrawal)| WithdrawnStatus {
                    digest: digest.clone(),
                    reason: withdrawal.reason.clone(),
                    at: timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(withdrawal.at)),
                })
                .collect(),
        }
    }

    /// Every registry that may be contacted (or was), with how it has been answering.
    fn registry_statuses(&self) -> Vec<RegistryStatus> {
        let mut health = self.sources.health.snapshot();
        for registry in self.in_force.reachable.load().listed() {
            health.entry(registry).or_default();
        }
        let backoff = self.sources.backoff.skipped();
        let now = Instant::now();
        let mut statuses: Vec<RegistryStatus> = health
            .into_iter()
            .map(|(registry, h)| {
                let until = backoff
                    .get(&registry)
                    .and_then(|until| until.checked_duration_since(now))
                    .map(|left| timestamp(SystemTime::now() + left));
                let state = if until.is_some() {
                    "backing_off"
                } else if h.attempts == 0 {
                    "unused"
                } else if h.failing {
                    "failing"
                } else if h.refusing {
                    "refusing"
                } else {
                    "ok"
                };
                RegistryStatus {
                    state: state.to_owned(),
                    backing_off_until: until,
                    last_success: h.last_success.map(timestamp),
                    last_error: h.last_error.map(|(at, message)| ErrorStatus {
                        at: timestamp(at),
                        message,
                    }),
                    attempts: h.attempts,
                    failures: h.failures,
                    refusals: h.refusals,
                    registry,
                }
            })
            .collect();
        statuses.sort_by(|a, b| a.registry.cmp(&b.registry));
        statuses
    }
}

/// RFC 3339 in UTC, to the second.
fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}
