//! Where content comes from, as the proxy remembers it between requests ([`Sources`]): the
//! bounded upstream fetch slots, the registries backing off, how each has been answering, the
//! source that served each repository's manifest (its blobs are tried there first), and the
//! sources that served corrupt or broken blob bodies (tried later, or not at all, for a while).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::reference::Reference;

use super::admission::FetchSlots;
use super::backoff::Backoff;
use super::health::Health;
use super::open::ProxySettings;

/// How long a repository keeps pulling its blobs from the source that served its manifest.
const AFFINITY_TTL: Duration = Duration::from_secs(600);
/// At most this many repositories remember their serving source.
const AFFINITY_CAPACITY: usize = 10_000;
/// How long a source that served corrupt bytes for a blob is skipped for that blob.
const CORRUPT_TTL: Duration = Duration::from_secs(600);
/// At most this many (source, blob) pairs are remembered as corrupt, or as breaking off.
const CORRUPT_CAPACITY: usize = 10_000;
/// After this many bodies of one blob from one source broke off in a row, that source is tried
/// last for the blob (for `CORRUPT_TTL`): a mirror truncating every body must not be retried
/// forever while another source could serve.
pub(super) const BROKEN_BODIES: u32 = 2;

/// What the proxy knows of the sources it fetches from.
pub(super) struct Sources {
    /// Upstream fetches under way, bounded (`limits.max_upstream_fetches`).
    pub(super) fetch_slots: FetchSlots,
    /// Registries that look down, skipped for a moment.
    pub(super) backoff: Backoff,
    /// How each upstream registry has been answering, for `/status`.
    pub(super) health: Health,
    /// Logical repository name → the physical repository that last served one of its manifests.
    affinity: Mutex<HashMap<String, Affinity>>,
    /// Physical blob references (`repo@digest`) whose source served bytes that did not match the
    /// digest; they are skipped for a while, so the next pull goes to the next source. Shared
    /// with the streams that discover the corruption.
    corrupt: Arc<Mutex<HashMap<String, Instant>>>,
    /// Physical blob references whose bodies broke off in a row: how many, and the last time.
    broken: Mutex<HashMap<String, (u32, Instant)>>,
}

#[derive(Debug, Clone)]
struct Affinity {
    /// The physical repository that served (the reference it was fetched by).
    repository: Reference,
    at: Instant,
}

impl Sources {
    pub(super) fn new(settings: &ProxySettings<'_>, metrics: &Arc<Metrics>) -> Sources {
        Sources {
            fetch_slots: FetchSlots::new(
                settings.max_upstream_fetches,
                settings.upstream_queue_timeout,
                metrics,
            ),
            backoff: Backoff::default(),
            health: Health::default(),
            affinity: Mutex::new(HashMap::new()),
            corrupt: Arc::new(Mutex::new(HashMap::new())),
            broken: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn remember_source(&self, logical: &Reference, physical: &Reference) {
        let Ok(mut affinity) = self.affinity.lock() else {
            return;
        };
        if affinity.len() >= AFFINITY_CAPACITY {
            affinity.retain(|_, a| a.at.elapsed() < AFFINITY_TTL);
            if affinity.len() >= AFFINITY_CAPACITY {
                affinity.clear();
            }
        }
        affinity.insert(
            logical.name().to_owned(),
            Affinity {
                repository: physical.clone(),
                at: Instant::now(),
            },
        );
    }

    /// Records that `physical` (a blob reference) served corrupt bytes.
    pub(super) fn corrupt_recorder(&self) -> impl Fn(&Reference) + Send + 'static {
        let corrupt = self.corrupt.clone();
        move |physical: &Reference| {
            let Ok(mut corrupt) = corrupt.lock() else {
                return;
            };
            if corrupt.len() >= CORRUPT_CAPACITY {
                corrupt.retain(|_, at| at.elapsed() < CORRUPT_TTL);
                if corrupt.len() >= CORRUPT_CAPACITY {
                    corrupt.clear();
                }
            }
            corrupt.insert(physical.as_str().to_owned(), Instant::now());
        }
    }

    /// Whether `physical` (a blob reference) recently served corrupt bytes.
    pub(super) fn is_corrupt(&self, physical: &Reference) -> bool {
        self.corrupt.lock().is_ok_and(|corrupt| {
            corrupt
                .get(physical.as_str())
                .is_some_and(|at| at.elapsed() < CORRUPT_TTL)
        })
    }

    /// Records whether the body of the blob `physical` came whole or broke off.
    pub(super) fn note_blob_body(&self, physical: &Reference, whole: bool) {
        let Ok(mut broken) = self.broken.lock() else {
            return;
        };
        if whole {
            broken.remove(physical.as_str());
            return;
        }
        if broken.len() >= CORRUPT_CAPACITY {
            broken.retain(|_, (_, at)| at.elapsed() < CORRUPT_TTL);
            if broken.len() >= CORRUPT_CAPACITY {
                broken.clear();
            }
        }
        let entry = broken
            .entry(physical.as_str().to_owned())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= CORRUPT_TTL {
            entry.0 = 0;
        }
        *entry = (entry.0.saturating_add(1), Instant::now());
    }

    /// Whether the bodies of the blob `physical` recently broke off [`BROKEN_BODIES`] times in
    /// a row: it is tried after every other source.
    pub(super) fn breaks_off(&self, physical: &Reference) -> bool {
        self.broken.lock().is_ok_and(|broken| {
            broken
                .get(physical.as_str())
                .is_some_and(|(count, at)| *count >= BROKEN_BODIES && at.elapsed() < CORRUPT_TTL)
        })
    }

    pub(super) fn remembered_source(&self, logical_name: &str) -> Option<Reference> {
        let affinity = self.affinity.lock().ok()?;
        affinity
            .get(logical_name)
            .filter(|a| a.at.elapsed() < AFFINITY_TTL)
            .map(|a| a.repository.clone())
    }
}
