//! Serving each request from the pull sources the rules give.
//!
//! Principal types: [`Proxy`] (built from [`ProxySettings`]), [`Error`] (why a request was not
//! served; `http::error` maps it to HTTP), [`Route`], [`Repository`] and [`Body`].
//!
//! Every request names a *logical* image (what the client asked for). The rule set turns it into
//! ordered pull sources (`RuleSet::resolve`), and the proxy tries them in order until one
//! answers: a manifest by digest along the digest route, by tag along the tag route (`manifest`);
//! a blob from the source that recently served this repository's manifest, then the digest route,
//! then the tag route's mirrors, since content addressing makes each of them safe (`blob`); tag
//! lists along the tag route and referrers along the digest route (`listing`). A blocked source is
//! never contacted. Everything fetched by digest is verified (`verify`).

mod accept;
mod admission;
mod backoff;
mod blob;
mod body;
mod ensure;
mod error;
mod listing;
mod manifest;
mod reach;
mod repository;
mod route;
mod status;
mod withdraw;
/// Content verification lives with the stores that only ever take verified bytes.
pub use crate::cache::verify;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderMap;

use crate::access::{Access, AccessError, ClientsConfig};
use crate::cache::blobs::DownloadState;
use crate::cache::flights::Flights;
use crate::cache::manifests::StoredManifest;
use crate::cache::stats::CacheStats;
use crate::cache::{CacheConfig, Tiers};
use crate::metrics::Metrics;
use admission::FetchSlots;

pub use crate::cache::WithdrawError;
use crate::reference::Reference;
use crate::rules::{ResolveError, Role, RuleSet};
use crate::upstream::{AttemptError, RegistrySettings, Upstream};
pub use admission::Admission;
pub use body::{Body, bytes_response, empty_body, full_body};
pub use error::{Error, Missing, Tried};
pub use reach::Reachable;
pub use repository::Repository;
pub use route::Route;

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
const BROKEN_BODIES: u32 = 2;

/// The proxy: the current rules, the upstream client, the caches and what it remembers between
/// requests.
pub struct Proxy {
    rules: ArcSwap<RuleSet>,
    /// The registries that may be contacted, from the rules and configuration in force.
    reachable: ArcSwap<Reachable>,
    /// Replaced whole when the upstream settings are reloaded.
    upstream: ArcSwap<Upstream>,
    default_registry: String,
    /// The cache tiers, in order, and what each may serve for which repository.
    tiers: Tiers,
    /// Manifest fetches and tag revalidations under way.
    manifest_flights: Flights<Option<Result<Arc<StoredManifest>, Error>>>,
    /// Blob downloads under way, by digest, started by a logical repository: every client of
    /// a digest follows the one spool.
    downloads: Flights<DownloadState>,
    metrics: Arc<Metrics>,
    /// `/metrics` is served on `metrics_listen`, not on the API address.
    metrics_elsewhere: bool,
    /// Logical repository name → the physical repository that last served one of its manifests.
    affinity: Mutex<HashMap<String, Affinity>>,
    /// Physical blob references (`repo@digest`) whose source served bytes that did not match the
    /// digest; they are skipped for a while, so the next pull goes to the next source. Shared
    /// with the streams that discover the corruption.
    corrupt: Arc<Mutex<HashMap<String, Instant>>>,
    /// Physical blob references whose bodies broke off in a row: how many, and the last time.
    broken: Mutex<HashMap<String, (u32, Instant)>>,
    /// Registries that look down, skipped for a moment.
    backoff: backoff::Backoff,
    /// Who may pull what (the `clients` section and its files).
    access: ArcSwap<Access>,
    /// Upstream fetches under way, bounded (`limits.max_upstream_fetches`).
    fetch_slots: FetchSlots,
    /// How each upstream registry has been answering, for `/status`.
    health: status::Health,
    /// The start, the rules' load time and the last reload, for `/status`.
    reloads: status::Reloads,
    /// Why the rule set in force is not complete yet (a rule source still on its first load):
    /// pulls are refused and `/readyz` fails while it is set.
    incomplete: ArcSwapOption<String>,
    /// Woken when the rule set becomes complete, for in-process work that waits for it.
    completed: tokio::sync::Notify,
}

/// What clients are told while the rule set is incomplete. Why it is names cluster objects
/// (another tenant's ConfigMap, its content, a permission to grant): that is for operators, in
/// `/status` (`rules.incomplete`) and the logs, not for whoever pulls or probes.
pub const RULES_INCOMPLETE: &str =
    "the mirror rules are not complete yet (an operator finds why in /status and the logs)";

/// What kind of stored content a HEAD upstream confirms before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Manifest,
    Blob,
}

impl Stored {
    fn route(self) -> Route {
        match self {
            Stored::Manifest => Route::Manifest,
            Stored::Blob => Route::Blob,
        }
    }
}

#[derive(Debug, Clone)]
struct Affinity {
    /// The physical repository that served (the reference it was fetched by).
    repository: Reference,
    at: Instant,
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
    fn configured_registries(&self) -> impl Iterator<Item = &str> {
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
        metrics.withdrawn_digests(tiers.withdrawn_len());
        Ok(Proxy {
            reachable: ArcSwap::from_pointee(Reachable::new(&rules, &settings)),
            rules: ArcSwap::new(rules),
            upstream: ArcSwap::from_pointee(upstream),
            default_registry: settings.default_registry.to_owned(),
            tiers,
            metrics_elsewhere: settings.metrics_elsewhere,
            manifest_flights: Flights::default(),
            downloads: Flights::default(),
            affinity: Mutex::new(HashMap::new()),
            corrupt: Arc::new(Mutex::new(HashMap::new())),
            broken: Mutex::new(HashMap::new()),
            backoff: backoff::Backoff::default(),
            access: ArcSwap::from_pointee(access),
            fetch_slots: FetchSlots::new(
                settings.max_upstream_fetches,
                settings.upstream_queue_timeout,
                &metrics,
            ),
            metrics,
            health: status::Health::default(),
            reloads: status::Reloads::new(),
            incomplete: ArcSwapOption::empty(),
            completed: tokio::sync::Notify::new(),
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

    /// Replaces the rule set; requests already routed keep the set they started with.
    /// `settings` gives the registries the configuration names (they stay reachable).
    pub fn replace_rules<'a>(&self, rules: Arc<RuleSet>, settings: impl Into<ProxySettings<'a>>) {
        let settings: ProxySettings<'a> = settings.into();
        self.metrics
            .rules_loaded(&rules, settings.configured_registries());
        self.reachable
            .store(Arc::new(Reachable::new(&rules, &settings)));
        self.rules.store(rules);
    }

    /// Replaces who may pull; requests already authenticated keep the access they started with.
    pub fn replace_access(&self, access: Access) {
        self.access.store(Arc::new(access));
    }

    /// Keeps the pull sources mirrorgate may contact; refuses (before any connection) a
    /// request none of whose sources may be contacted.
    fn reachable_only<T>(
        &self,
        logical: &Reference,
        sources: &mut Vec<T>,
        source: impl Fn(&T) -> (&str, Role),
    ) -> Result<(), Error> {
        let reachable = self.reachable.load();
        let before = sources.len();
        sources.retain(|pull_source| {
            let (registry, role) = source(pull_source);
            reachable.allows(registry, role)
        });
        if before > 0 && sources.is_empty() {
            tracing::info!(reference = %logical, "refused: registry not configured");
            return Err(Error::NotConfigured {
                message: Reachable::refusal(logical.domain()),
            });
        }
        Ok(())
    }

    /// Replaces the upstream client (new endpoints, TLS settings or credentials); attempts
    /// under way finish with the client they started with.
    pub fn replace_upstream(&self, upstream: Upstream) {
        self.upstream.store(Arc::new(upstream));
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The rule set in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    /// The `Via` name of this mirrorgate in force (a request carrying it is a loop).
    pub fn via_token(&self) -> crate::upstream::ViaToken {
        self.upstream.load().via_token().clone()
    }

    /// Who may pull, as loaded last.
    pub fn access(&self) -> Arc<Access> {
        self.access.load_full()
    }

    /// Whether `/metrics` is served on another listener rather than the API address.
    pub fn metrics_elsewhere(&self) -> bool {
        self.metrics_elsewhere
    }

    /// Marks the rule set in force as incomplete (`Some(why)`: a source has not completed its
    /// first load, e.g. the cluster's objects are not listed yet) or complete (`None`). While it
    /// is incomplete, pulls are answered 503 and `/readyz` fails: serving without a missing
    /// NeverContactSource rule could contact a source the rules forbid.
    pub fn set_incomplete(&self, why: Option<String>) {
        let complete = why.is_none();
        self.incomplete.store(why.map(Arc::new));
        if complete {
            self.completed.notify_waiters();
        }
    }

    /// Completes once the rule set in force is complete: in-process work (release warm-up)
    /// follows the same rule as pulls, which are refused until then.
    pub async fn rules_complete(&self) {
        loop {
            let notified = self.completed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a completion between the two is not missed.
            notified.as_mut().enable();
            if self.incomplete().is_none() {
                return;
            }
            notified.await;
        }
    }

    /// Replaces the reason the rule set is incomplete, only while it is (a complete rule set
    /// published meanwhile stays complete).
    pub fn explain_incomplete(&self, why: String) {
        let why = Arc::new(why);
        self.incomplete
            .rcu(|current| current.as_ref().map(|_| why.clone()));
    }

    /// Why the rule set in force is incomplete, if it is.
    pub fn incomplete(&self) -> Option<Arc<String>> {
        self.incomplete.load_full()
    }

    /// Ready means the rule set is complete ([`Proxy::set_incomplete`]) and the cache directory
    /// can be written (a failed reload keeps the last good rules). An incomplete rule set is
    /// [`RULES_INCOMPLETE`], whatever the reason: that names cluster objects.
    pub fn readiness(&self) -> Result<(), String> {
        if self.incomplete().is_some() {
            return Err(RULES_INCOMPLETE.to_owned());
        }
        let dir = self.tiers.dir();
        std::fs::create_dir_all(dir)
            .and_then(|()| tempfile_probe(dir))
            .map_err(|e| format!("cache directory {}: {e}", dir.display()))
    }

    fn remember_source(&self, logical: &Reference, physical: &Reference) {
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

    /// Records that an upstream served or confirmed `digest` in the logical `repository`.
    fn remember_content(&self, repository: &str, digest: &str) {
        self.tiers.confirm(repository, digest);
    }

    /// Checks the shared cache (`cache.shared`), if configured, in the background: wrong
    /// credentials or a missing bucket are logged as errors; pulls are served either way.
    pub fn check_shared_cache(&self) {
        self.tiers.check_shared_in_background();
    }

    /// Whether cached content `digest` (`stored_len` bytes, when known) may be served for
    /// `logical` (a reference by digest): an upstream served or confirmed it there before, or a
    /// HEAD along `sources` confirms it now (its `Content-Length` and `Docker-Content-Digest`
    /// match the stored object).
    ///
    /// Otherwise it is refused: with 404 as soon as one source says not found (the content is
    /// not this repository's), and with the reasons when sources refused (401, 403) or answered
    /// a HEAD that proves nothing. Only when every source *failed* (unreachable, timed out, 5xx)
    /// does the cache answer, as it would for a repository it knows, and then only to a client
    /// without repository scopes: a scoped client gets only what was confirmed for it.
    async fn may_serve_cached(
        &self,
        logical: &Reference,
        sources: &[(Reference, Role)],
        stored: Stored,
        stored_len: Option<u64>,
    ) -> Result<(), Error> {
        let Some(digest) = logical.digest_str() else {
            return Ok(());
        };
        // Confirmed here, or by another replica in the shared store (as good as ours).
        if self
            .tiers
            .confirmed(logical.name(), digest, stored_len)
            .await
        {
            return Ok(());
        }
        let _slot = self.fetch_slots.acquire(logical.as_str()).await?;
        let mut failures = Vec::new();
        for (physical, role) in sources {
            let mut request = match stored {
                Stored::Blob => blob::blob_request(
                    physical,
                    &digest
                        .parse()
                        .map_err(|_| Error::InvalidDigest(format!("invalid digest {digest}")))?,
                    http::Method::HEAD,
                    None,
                ),
                Stored::Manifest => {
                    manifest::manifest_request(physical, &manifest::standard_accept_header())
                }
            };
            request.method = http::Method::HEAD;
            let reason = match self.attempt(request, *role, stored.route()).await {
                Ok(response) => match confirms(&response, digest, stored_len) {
                    Ok(()) => {
                        self.remember_content(logical.name(), digest);
                        return Ok(());
                    }
                    Err(why) => AttemptFailure::Unconfirmed(why),
                },
                Err(error) => AttemptFailure::Upstream(error),
            };
            failures.push(Failure {
                reference: physical.clone(),
                role: *role,
                reason,
            });
        }
        let (route, missing) = match stored {
            Stored::Blob => (Route::Blob, Missing::Blob),
            Stored::Manifest => (Route::Manifest, Missing::Manifest),
        };
        let outage = !failures.is_empty() && failures.iter().all(|f| f.reason.is_failure());
        if outage && !scoped_client() {
            return Ok(());
        }
        let what = route.as_str();
        if failures.iter().any(|f| f.reason.is_not_found()) {
            tracing::info!(reference = %logical, failed = %summary(&failures), "cached content refused: not found on the route");
            // Not found on the route: the content is not this repository's, whatever else failed.
            return Err(
                match exhausted(what, logical.as_str(), &failures, missing) {
                    Error::Exhausted { tried, .. } => Error::Exhausted {
                        missing,
                        all_not_found: true,
                        message: format!(
                            "{what} {logical} not found; tried {}",
                            summary(&failures)
                        ),
                        tried,
                    },
                    other => other,
                },
            );
        }
        Err(exhausted(what, logical.as_str(), &failures, missing))
    }

    /// Records that `physical` (a blob reference) served corrupt bytes.
    fn corrupt_recorder(&self) -> impl Fn(&Reference) + Send + 'static {
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
    fn is_corrupt(&self, physical: &Reference) -> bool {
        self.corrupt.lock().is_ok_and(|corrupt| {
            corrupt
                .get(physical.as_str())
                .is_some_and(|at| at.elapsed() < CORRUPT_TTL)
        })
    }

    /// Records whether the body of the blob `physical` came whole or broke off.
    fn note_blob_body(&self, physical: &Reference, whole: bool) {
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
    fn breaks_off(&self, physical: &Reference) -> bool {
        self.broken.lock().is_ok_and(|broken| {
            broken
                .get(physical.as_str())
                .is_some_and(|(count, at)| *count >= BROKEN_BODIES && at.elapsed() < CORRUPT_TTL)
        })
    }

    fn remembered_source(&self, logical_name: &str) -> Option<Reference> {
        let affinity = self.affinity.lock().ok()?;
        affinity
            .get(logical_name)
            .filter(|a| a.at.elapsed() < AFFINITY_TTL)
            .map(|a| a.repository.clone())
    }
}

/// Writes and removes a probe file: the only sure test that a directory is writable.
fn tempfile_probe(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".ready-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// One pull source tried without success, and why.
#[derive(Debug)]
struct Failure {
    reference: Reference,
    role: Role,
    reason: AttemptFailure,
}

/// Why one pull source did not serve.
#[derive(Debug, thiserror::Error)]
enum AttemptFailure {
    /// The upstream request failed.
    #[error(transparent)]
    Upstream(#[from] AttemptError),
    /// The bytes do not match the digest asked for.
    #[error("served wrong content (digest {actual})")]
    DigestMismatch {
        /// The digest of what was served.
        actual: String,
    },
    /// The response is larger than the bound for its kind.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The response's length is not the size the manifest declares for the content.
    #[error("{0}")]
    SizeMismatch(String),
    /// The response body could not be read or parsed.
    #[error("{0}")]
    Body(String),
    /// A HEAD answered 200 without proving the content is there.
    #[error("{0}")]
    Unconfirmed(String),
}

impl AttemptFailure {
    fn is_not_found(&self) -> bool {
        matches!(self, AttemptFailure::Upstream(AttemptError::NotFound))
    }

    /// A failure to answer (unreachable, timed out, 5xx, broken protocol), as opposed to an
    /// answer: not found, refused (401, 403, 429, 400…), or content that is not what was asked
    /// for. Only failures are an outage, during which cached content may be served unconfirmed.
    fn is_failure(&self) -> bool {
        match self {
            // A refusal (401, 403, 429, 400…) is an answer: the registry is up.
            AttemptFailure::Upstream(error) => {
                !error.is_refusal()
                    && matches!(
                        error,
                        AttemptError::Status { .. }
                            | AttemptError::Timeout { .. }
                            | AttemptError::Unreachable { .. }
                            | AttemptError::Connect(_)
                            | AttemptError::Protocol(_)
                    )
            }
            AttemptFailure::Body(_) => true,
            AttemptFailure::DigestMismatch { .. }
            | AttemptFailure::TooLarge(_)
            | AttemptFailure::SizeMismatch(_)
            | AttemptFailure::Unconfirmed(_) => false,
        }
    }
}

tokio::task_local! {
    /// Whether the client of the request this task serves is limited to some repositories
    /// (set by [`Proxy::respond`]; unset, as for in-process callers, means not limited).
    static SCOPED_CLIENT: bool;
}

/// Runs `work` (answering one request) for a client limited (`scoped`) or not to some
/// repositories: during an outage, cached content no upstream confirmed for the repository is
/// served only to a client without scopes.
pub async fn serving_client<F: std::future::Future>(scoped: bool, work: F) -> F::Output {
    SCOPED_CLIENT.scope(scoped, work).await
}

fn scoped_client() -> bool {
    SCOPED_CLIENT.try_with(|scoped| *scoped).unwrap_or(false)
}

/// Whether a HEAD `response` proves that the upstream holds `digest` of `stored_len` bytes: its
/// `Content-Length` must be that length, and its `Docker-Content-Digest` that digest (blob
/// storage that a registry redirected the HEAD to sends no such header; its length must match).
fn confirms(
    response: &reqwest::Response,
    digest: &str,
    stored_len: Option<u64>,
) -> Result<(), String> {
    let from_registry = response.url().path().starts_with("/v2/");
    head_confirms(response.headers(), from_registry, digest, stored_len)
}

/// [`confirms`] on the headers of a HEAD answered by the registry (`from_registry`) or by the
/// storage it redirected to.
fn head_confirms(
    headers: &HeaderMap,
    from_registry: bool,
    digest: &str,
    stored_len: Option<u64>,
) -> Result<(), String> {
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
    answer_confirms(headers, from_registry, digest, length, stored_len)
}

/// [`head_confirms`] for an answer announcing `length` bytes for the whole content (a part's
/// total, say).
fn answer_confirms(
    headers: &HeaderMap,
    from_registry: bool,
    digest: &str,
    length: Option<u64>,
    stored_len: Option<u64>,
) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    match header("docker-content-digest") {
        Some(announced) if announced != digest => {
            return Err(format!("HEAD announced digest {announced}"));
        }
        None if from_registry => {
            return Err("HEAD answered without Docker-Content-Digest".to_owned());
        }
        _ => {}
    }
    match (length, stored_len) {
        (None, _) => Err("HEAD answered without Content-Length".to_owned()),
        (Some(length), Some(stored)) if length != stored => Err(format!(
            "HEAD announced {length} bytes, the content has {stored}"
        )),
        _ => Ok(()),
    }
}

impl Proxy {
    /// Sends one attempt to an upstream, counting it by registry, role, route and outcome. A
    /// success is counted `ok` when the answer arrives; what its body turns out to be is counted
    /// by the caller (`count_attempt`).
    async fn attempt(
        &self,
        request: crate::upstream::UpstreamRequest,
        role: Role,
        route: Route,
    ) -> Result<reqwest::Response, AttemptError> {
        let route = route.as_str();
        let registry = request.registry.clone();
        let started = Instant::now();
        if let Some((remaining, cause)) = self.backoff.skipping(&registry, started) {
            self.metrics
                .upstream(&registry, role.as_str(), route, "skipped", Duration::ZERO);
            return Err(AttemptError::Connect(format!(
                "not contacted: {cause}, retried in {}s",
                remaining.as_secs() + 1
            )));
        }
        let upstream = self.upstream.load_full();
        let result = upstream.send(request).await;
        self.backoff
            .record(&registry, started, Instant::now(), &result);
        self.health.record(&registry, result.as_ref().map(|_| ()));
        if let Err(error) = &result
            && !matches!(error, AttemptError::NotFound)
            && let Some(held_back) =
                crate::log_limit::ATTEMPT_FAILED.admit(&registry, Instant::now())
        {
            tracing::warn!(
                registry,
                role = role.as_str(),
                %error,
                similar_held_back = held_back,
                "upstream registry failed (one line per registry every {}s)",
                crate::log_limit::INTERVAL.as_secs()
            );
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.outcome(),
        };
        self.metrics
            .upstream(&registry, role.as_str(), route, outcome, started.elapsed());
        result
    }

    /// Counts a source attempt that only happens because mirror attempts failed.
    fn note_attempt(&self, role: Role, failures: &[Failure], route: Route) {
        if role == Role::Source && failures.iter().any(|f| f.role == Role::Mirror) {
            self.metrics.source_after_mirrors(route.as_str());
        }
    }

    /// Counts an attempt whose outcome is known only after its body was read.
    fn count_attempt(&self, registry: &str, role: Role, route: Route, outcome: &'static str) {
        self.metrics.upstream(
            registry,
            role.as_str(),
            route.as_str(),
            outcome,
            Duration::ZERO,
        );
    }

    /// The refusal of a request whose reference the rules give no pull source; blocked ones are
    /// counted.
    fn refuse(&self, route: Route, error: ResolveError) -> Error {
        if matches!(error, ResolveError::Blocked { .. }) {
            self.metrics.blocked(route.as_str());
        }
        Error::Resolve(error)
    }
}

/// The answer when no pull source served: not found when every one said so, a failure
/// otherwise; the message lists the sources tried and why each failed (the first
/// [`error::MAX_LISTED_FAILURES`]; the detail has every one). Logged here, once.
fn exhausted(what: &str, logical: &str, failures: &[Failure], missing: Missing) -> Error {
    let tried: Vec<Tried> = failures
        .iter()
        .map(|f| Tried {
            reference: f.reference.to_string(),
            role: f.role,
            error: f.reason.to_string(),
        })
        .collect();
    let listed = error::listing(&tried);
    let all_not_found = !failures.is_empty() && failures.iter().all(|f| f.reason.is_not_found());
    let message = if all_not_found {
        format!("{what} {logical} not found; tried {listed}")
    } else {
        format!("no source served {what} {logical}; tried {listed}")
    };
    // Not found is an answer; every source failing is a fault to look at: WARN, one line per
    // registry per interval.
    if all_not_found {
        tracing::info!(reference = logical, not_found = true, failed = %listed, "{what} not served");
    } else {
        let registry = logical.split('/').next().unwrap_or(logical);
        if let Some(held_back) = crate::log_limit::NOT_SERVED.admit(registry, Instant::now()) {
            tracing::warn!(
                reference = logical,
                failed = %listed,
                similar_held_back = held_back,
                "{what} not served: every source failed (one line per registry every {}s)",
                crate::log_limit::INTERVAL.as_secs()
            );
        }
    }
    Error::Exhausted {
        missing,
        all_not_found,
        message,
        tried,
    }
}

fn summary(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| format!("{} {}: {}", f.role, f.reference, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_refusal_is_an_answer_not_an_outage() {
        let failures = [
            AttemptError::Status { status: 429 },
            AttemptError::Status { status: 400 },
            AttemptError::Unauthorized { status: 403 },
            AttemptError::Status { status: 503 },
            AttemptError::Connect("connection reset (mirror.test)".to_owned()),
            AttemptError::Unreachable {
                reason: "connection refused (mirror.test)".to_owned(),
                timed_out: false,
            },
        ]
        .map(|error| AttemptFailure::Upstream(error).is_failure());
        assert_eq!(failures, [false, false, false, true, true, true]);
    }

    #[test]
    fn a_head_confirms_only_with_the_stored_length_and_digest() {
        let checks = [
            head_confirms(
                &headers(&[("content-length", "42"), ("docker-content-digest", DIGEST)]),
                true,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[("content-length", "41"), ("docker-content-digest", DIGEST)]),
                true,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[("content-length", "42")]),
                true,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[("docker-content-digest", DIGEST)]),
                true,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[
                    ("content-length", "42"),
                    ("docker-content-digest", "sha256:00"),
                ]),
                true,
                DIGEST,
                Some(42),
            ),
            // Blob storage a registry redirected to sends no digest header; the length decides.
            head_confirms(
                &headers(&[("content-length", "42")]),
                false,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[("content-length", "7")]),
                false,
                DIGEST,
                Some(42),
            ),
        ];
        assert_eq!(
            checks.map(|check| check.is_ok()),
            [true, false, false, false, false, true, false]
        );
    }
}
