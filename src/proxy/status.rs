//! What the proxy remembers for `/status` ([`crate::status`]): how each upstream registry has
//! been answering ([`Health`]), the reloads ([`Reloads`]), and the snapshot built from them and
//! the rest of the proxy's state ([`Proxy::status`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::Proxy;
use crate::cache::stats::CacheStats;
use crate::status::{
    CacheStatus, DownloadStatus, ErrorStatus, FetchesStatus, RegistryStatus, ReloadStatus,
    RulesStatus, Status, WithdrawnStatus,
};
use crate::upstream::AttemptError;

/// At most this many registries are tracked (they are bounded by the rules and `registries`
/// already; this bounds `allow_any_registry`).
const HEALTH_CAPACITY: usize = 10_000;

/// How each registry contacted has been answering.
#[derive(Debug, Default)]
pub(super) struct Health {
    registries: Mutex<HashMap<String, RegistryHealth>>,
}

#[derive(Debug, Default, Clone)]
struct RegistryHealth {
    attempts: u64,
    failures: u64,
    last_success: Option<SystemTime>,
    refusals: u64,
    last_error: Option<(SystemTime, String)>,
    /// Whether the last attempt failed.
    failing: bool,
    /// Whether the last attempt was answered with a refusal.
    refusing: bool,
}

impl Health {
    /// Records one attempt at `registry`. Any answer a registry gives about the content (found
    /// or not found) is a success; a refusal (401, 403, 429, 400…) is an answer too, but kept
    /// apart, since it is why nothing was served; no answer, a 5xx or a broken protocol is a
    /// failure.
    pub(super) fn record(&self, registry: &str, result: Result<(), &AttemptError>) {
        let Ok(mut registries) = self.registries.lock() else {
            return;
        };
        if registries.len() >= HEALTH_CAPACITY && !registries.contains_key(registry) {
            return;
        }
        let entry = registries.entry(registry.to_owned()).or_default();
        entry.attempts += 1;
        match result {
            Ok(()) | Err(AttemptError::NotFound) => {
                entry.last_success = Some(SystemTime::now());
                entry.failing = false;
                entry.refusing = false;
            }
            Err(error) if error.is_refusal() => {
                let now = SystemTime::now();
                entry.refusals += 1;
                entry.last_success = Some(now);
                entry.last_error = Some((now, error.to_string()));
                entry.failing = false;
                entry.refusing = true;
            }
            Err(error) => {
                entry.failures += 1;
                entry.last_error = Some((SystemTime::now(), error.to_string()));
                entry.failing = true;
                entry.refusing = false;
            }
        }
    }

    fn snapshot(&self) -> HashMap<String, RegistryHealth> {
        self.registries
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// When the process started, when the rules in force were loaded, and the last reload.
#[derive(Debug)]
pub(super) struct Reloads {
    started_at: SystemTime,
    state: Mutex<ReloadState>,
}

#[derive(Debug, Clone)]
struct ReloadState {
    config: Option<String>,
    loaded_at: SystemTime,
    last: Option<(SystemTime, Result<(), String>)>,
}

impl Reloads {
    pub(super) fn new() -> Reloads {
        let now = SystemTime::now();
        Reloads {
            started_at: now,
            state: Mutex::new(ReloadState {
                config: None,
                loaded_at: now,
                last: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReloadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Proxy {
    /// Names the configuration file the proxy was started from (`None`: built-in defaults),
    /// for `/status`.
    pub fn set_config_path(&self, path: Option<&std::path::Path>) {
        self.reloads.state().config = path.map(|p| p.display().to_string());
    }

    /// Records the result of a reload: counted, and kept for `/status`. A failed reload keeps
    /// the last good rules, so their load time stays.
    pub fn record_reload(&self, result: Result<(), String>) {
        self.metrics.reload(result.is_ok());
        let now = SystemTime::now();
        let mut state = self.reloads.state();
        if result.is_ok() {
            state.loaded_at = now;
        }
        state.last = Some((now, result));
    }

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
                in_flight: self.fetch_slots.in_flight(),
                queued: self.fetch_slots.queued(),
                max: self.fetch_slots.size(),
                refused: self.fetch_slots.refused(),
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
        let mut health = self.health.snapshot();
        for registry in self.reachable.load().listed() {
            health.entry(registry).or_default();
        }
        let backoff = self.backoff.skipped();
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
