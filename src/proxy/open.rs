//! The proxy as a whole ([`Proxy`]): what a reload swaps ([`InForce`]), the cache tiers, where
//! content comes from ([`Sources`]) and the metrics, opened from [`ProxySettings`]. The request
//! handlers are `impl Proxy` blocks in their own rooms (`manifest`, `blob`, `listing`, `ensure`).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::access::{Access, AccessError, ClientsConfig};
use crate::cache::DownloadState;
use crate::cache::StoredManifest;
use crate::cache::flights::Flights;
use crate::cache::stats::CacheStats;
use crate::cache::{CacheConfig, Tiers};
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::upstream::{RegistrySettings, Upstream};

use super::error::Error;
use super::in_force::InForce;
use super::reloads::Reloads;
use super::sources::Sources;

/// The proxy: the rules and settings in force, the cache tiers, where content comes from and
/// what it remembers between requests.
pub struct Proxy {
    /// What a reload replaces: rules, reachability, access, the upstream client.
    pub(super) in_force: InForce,
    pub(super) default_registry: String,
    /// The cache tiers, in order, and what each may serve for which repository.
    pub(super) tiers: Tiers,
    /// Manifest fetches and tag revalidations under way.
    pub(super) manifest_flights: Flights<Option<Result<Arc<StoredManifest>, Error>>>,
    /// Blob downloads under way, by digest, started by a logical repository: every client of
    /// a digest follows the one spool.
    pub(super) downloads: Flights<DownloadState>,
    /// Where content comes from: fetch slots, back-off, health, and what the proxy remembers of
    /// each source.
    pub(super) sources: Sources,
    pub(super) metrics: Arc<Metrics>,
    /// `/metrics` is served on `metrics_listen`, not on the API address.
    pub(super) metrics_elsewhere: bool,
    /// The start, the rules' load time and the last reload, for `/status`.
    pub(super) reloads: Reloads,
}

/// What the proxy is built from: the parts of the configuration it uses (the configuration
/// converts into it).
#[derive(Debug, Clone, Copy)]
pub struct ProxySettings<'a> {
    /// Who may pull (the `clients` section).
    pub clients: &'a ClientsConfig,
    /// The `cache` section.
    pub cache: &'a CacheConfig,
    /// The registry of names that do not name one.
    pub default_registry: &'a str,
    /// The registries configured by host (they may be contacted).
    pub registries: &'a BTreeMap<String, RegistrySettings>,
    /// Contact any registry a client names.
    pub allow_any_registry: bool,
    /// `/metrics` is served on another listener, not on the API address.
    pub metrics_elsewhere: bool,
    /// Upstream fetches under way at once (`limits.max_upstream_fetches`).
    pub max_upstream_fetches: usize,
    /// How long a request waits for an upstream fetch slot (`limits.upstream_queue_timeout`).
    pub upstream_queue_timeout: Duration,
}

impl ProxySettings<'_> {
    /// The registries the configuration names: `registries` and `default_registry`.
    pub(super) fn configured_registries(&self) -> impl Iterator<Item = &str> {
        self.registries
            .keys()
            .map(String::as_str)
            .chain(std::iter::once(self.default_registry))
    }
}

/// Why a proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The files of the `clients` section are bad.
    #[error("the clients settings are invalid: {0}")]
    Access(#[from] AccessError),
    /// The cache directory cannot be opened.
    #[error("cannot open the cache in {}: {cause}", dir.display())]
    Cache {
        /// The `cache.dir`.
        dir: std::path::PathBuf,
        /// The underlying error.
        cause: io::Error,
    },
}

impl Proxy {
    /// A proxy serving `rules` through `upstream`, with the caches and default registry of
    /// `settings`. Opening the cache removes leftover temporary files and indexes stored blobs.
    pub fn new<'a>(
        rules: Arc<RuleSet>,
        upstream: Upstream,
        settings: impl Into<ProxySettings<'a>>,
    ) -> Result<Proxy, OpenError> {
        let settings: ProxySettings<'a> = settings.into();
        let access = Access::load(settings.clients)?;
        let tiers = Tiers::open(settings.cache).map_err(|cause| OpenError::Cache {
            dir: settings.cache.dir.clone(),
            cause,
        })?;
        let mut metrics = Metrics::new(tiers.stats().clone());
        if let Some(store) = tiers.shared_store() {
            metrics = metrics.with_shared(store.clone());
        }
        let metrics = Arc::new(metrics);
        metrics.rules_loaded(&rules, settings.configured_registries());
        metrics.proxy.withdrawn_digests(tiers.withdrawn_len());
        Ok(Proxy {
            in_force: InForce::new(rules, upstream, access, &settings),
            default_registry: settings.default_registry.to_owned(),
            tiers,
            metrics_elsewhere: settings.metrics_elsewhere,
            manifest_flights: Flights::default(),
            downloads: Flights::default(),
            sources: Sources::new(&settings, &metrics),
            metrics,
            reloads: Reloads::new(),
        })
    }

    /// What the caches did so far.
    pub fn cache_stats(&self) -> &CacheStats {
        self.tiers.stats()
    }

    /// The registry of names that do not name one.
    pub fn default_registry(&self) -> &str {
        &self.default_registry
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether `/metrics` is served on another listener rather than the API address.
    pub fn metrics_elsewhere(&self) -> bool {
        self.metrics_elsewhere
    }

    /// Checks the shared cache (`cache.shared`), if configured, in the background: wrong
    /// credentials or a missing bucket are logged as errors; pulls are served either way.
    pub fn check_shared_cache(&self) {
        self.tiers.check_shared_in_background();
    }

    /// Records that an upstream served or confirmed `digest` in the logical `repository`.
    pub(super) fn remember_content(&self, repository: &str, digest: &str) {
        self.tiers.confirm(repository, digest);
    }
}
