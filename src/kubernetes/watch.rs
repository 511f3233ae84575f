//! Watching the cluster: one kube-runtime watcher per detected kind (per namespace when
//! `namespaces` is set) and one per referenced ConfigMap, merged into one state by a single task
//! that publishes complete [`Snapshot`]s.
//!
//! The rules for publishing:
//! - nothing until discovery has answered and every watch has completed its first list (a
//!   partial set could lack a NeverContactSource rule and let a pull reach a forbidden source);
//! - after that, a change is published once the burst it belongs to is over (`Options::debounce`),
//!   and only when the snapshot differs from the last one published;
//! - a watch that re-lists (after an error or a `410 Gone`) keeps its previous objects until the
//!   new list is complete, and a watch added later (a kind installed, a ConfigMap newly
//!   referenced) holds publishing back until its own first list is complete;
//! - a lost API server changes nothing: the last snapshot stays, the watchers retry with back-off.
//!
//! Referenced ConfigMaps: each is watched on its own with the field selector
//! `metadata.name=NAME` in its namespace, so memory holds exactly the ConfigMaps HostedClusters
//! and NodePools name (never the thousands of other ConfigMaps of a cluster), a ConfigMap created
//! after the object that names it is seen at once, and each one has a first list like every other
//! watch. The cost is one watch connection per referenced ConfigMap. Events for other names are
//! dropped in any case, so a server that ignores the selector cannot widen what is read.
//!
//! Discovery runs at start, every `Options::rediscovery`, and whenever a watch answers 404 (a
//! CRD removed); a kind that appears is watched from then on, one that disappears is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::discovery::{Capabilities, Kind, detect};
use super::snapshot::{ClusterObject, Snapshot};
use super::{Config, Error};

/// Timing of the watch.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long after a change more changes are gathered into the same snapshot.
    pub debounce: Duration,
    /// How often discovery is repeated to notice kinds installed or removed.
    pub rediscovery: Duration,
    /// The first delay before retrying a failed discovery (doubling up to `rediscovery`).
    pub discovery_retry: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            // As the file reload's debounce.
            debounce: Duration::from_millis(300),
            rediscovery: Duration::from_secs(60),
            discovery_retry: Duration::from_secs(1),
        }
    }
}

/// The state of the watch, as plain data for readiness and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// A complete snapshot has been published at least once.
    pub synced: bool,
    /// When the published state was last known to be current: a snapshot published, or an event
    /// or a discovery answer while every watch was complete.
    pub last_sync: Option<SystemTime>,
    /// For each detected kind, whether the cluster serves it (empty before the first discovery).
    pub capabilities: BTreeMap<Kind, bool>,
    /// Objects per kind in the last published snapshot.
    pub objects: BTreeMap<Kind, usize>,
    /// Watches currently running (kinds per namespace, and referenced ConfigMaps).
    pub watches: usize,
    /// Re-lists of a watch after its first complete list (after errors or expiry).
    pub watch_restarts: u64,
    /// Failed list or watch requests, per kind.
    pub failures: BTreeMap<Kind, u64>,
    /// Failed discovery requests.
    pub discovery_failures: u64,
    /// The last failure, for logs and status pages.
    pub last_error: Option<String>,
    /// Whether the last failure was a refused connection.
    pub last_error_refused: bool,
}

/// A running watch of the cluster. Dropping it stops every watcher.
#[derive(Debug)]
pub struct ClusterWatch {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    health: watch::Receiver<Health>,
    task: AbortHandle,
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ClusterWatch {
    /// Starts discovery and the watches on the current tokio runtime.
    pub fn start(client: kube::Client, config: &Config, options: Options) -> ClusterWatch {
        let (snapshot_tx, snapshots) = watch::channel(None);
        let (health_tx, health) = watch::channel(Health::default());
        let (events_tx, events) = mpsc::unbounded_channel();
        let syncer = Syncer {
            client,
            config: config.clone(),
            options,
            events_tx,
            capabilities: None,
            announced: BTreeMap::new(),
            watches: BTreeMap::new(),
            generation: 0,
            snapshot_tx,
            health_tx,
            health: Health::default(),
            published: None,
            changed_at: None,
            detecting: false,
            next_discovery: Instant::now(),
            discovery_backoff: None,
        };
        let task = tokio::spawn(syncer.run(events)).abort_handle();
        ClusterWatch {
            snapshots,
            health,
            task,
        }
    }

    /// The published snapshots: `None` until the first complete one.
    pub fn snapshots(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.snapshots.clone()
    }

    /// The last published snapshot, if any.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }

    /// The watch's health now.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Health updates, for whoever exports them.
    pub fn health_updates(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }

    /// Waits for the first complete snapshot (returns at once when there is one).
    pub async fn first_snapshot(&self) -> Arc<Snapshot> {
        let mut snapshots = self.snapshots.clone();
        let first = snapshots
            .wait_for(Option::is_some)
            .await
            .expect("the watch task lives as long as its handle");
        first.clone().expect("waited for Some")
    }
}

/// Lists the cluster's mirror objects once (discovery, then a complete list of every kind and
/// referenced ConfigMap): what `check` and `resolve` need. Fails when no complete list succeeded
/// within `timeout`, with the last failure (a 403 names the missing permission). A 403 or a
/// refused connection ends it at once.
pub async fn list_once(
    client: kube::Client,
    config: &Config,
    timeout: Duration,
) -> Result<Snapshot, Error> {
    let watch = ClusterWatch::start(
        client,
        config,
        Options {
            debounce: Duration::ZERO,
            ..Options::default()
        },
    );
    let started = Instant::now();
    let mut health = watch.health_updates();
    let hopeless = async {
        // A 403 does not heal by retrying, and a refused connection is no slow server: answer at
        // once rather than at the deadline.
        loop {
            let hopeless = {
                let now = health.borrow_and_update();
                let refused = now.last_error_refused;
                now.last_error
                    .clone()
                    .filter(|error| refused || error.contains("403 Forbidden"))
            };
            if let Some(error) = hopeless {
                return error;
            }
            if health.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        snapshot = tokio::time::timeout(timeout, watch.first_snapshot()) => match snapshot {
            Ok(snapshot) => Ok((*snapshot).clone()),
            Err(_) => Err(Error::NotSynced { waited: timeout, last_error: watch.health().last_error }),
        },
        error = hopeless => Err(Error::NotSynced { waited: started.elapsed(), last_error: Some(error) }),
    }
}

/// What one watcher task watches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum WatchKey {
    /// All objects of a kind, cluster-wide or in one namespace.
    Kind {
        kind: Kind,
        namespace: Option<String>,
    },
    /// One referenced ConfigMap.
    ConfigMap { namespace: String, name: String },
}

impl WatchKey {
    fn kind(&self) -> Kind {
        match self {
            WatchKey::Kind { kind, .. } => *kind,
            WatchKey::ConfigMap { .. } => Kind::ConfigMap,
        }
    }

    fn namespace(&self) -> Option<&str> {
        match self {
            WatchKey::Kind { namespace, .. } => namespace.as_deref(),
            WatchKey::ConfigMap { namespace, .. } => Some(namespace),
        }
    }
}

/// (namespace, name) of an object within one watch.
type ObjectKey = (Option<String>, String);

struct WatchState {
    generation: u64,
    task: AbortHandle,
    /// The first complete list has arrived.
    synced: bool,
    /// The objects as of the last complete list plus the events since.
    objects: BTreeMap<ObjectKey, ClusterObject>,
    /// A re-list under way: it replaces `objects` once complete.
    relist: Option<BTreeMap<ObjectKey, ClusterObject>>,
    /// Whether the last request of this watch failed (to log a failure once, not per retry).
    failing: bool,
}

impl Drop for WatchState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Message {
    Event {
        key: WatchKey,
        generation: u64,
        event: Box<Result<watcher::Event<DynamicObject>, watcher::Error>>,
    },
    Discovered(Result<Capabilities, Error>),
}

struct Syncer {
    client: kube::Client,
    config: Config,
    options: Options,
    events_tx: mpsc::UnboundedSender<Message>,
    capabilities: Option<Capabilities>,
    /// What was last logged about each kind's presence, so each change is logged once.
    announced: BTreeMap<Kind, bool>,
    watches: BTreeMap<WatchKey, WatchState>,
    generation: u64,
    snapshot_tx: watch::Sender<Option<Arc<Snapshot>>>,
    health_tx: watch::Sender<Health>,
    health: Health,
    published: Option<Arc<Snapshot>>,
    /// When the first unpublished change arrived.
    changed_at: Option<Instant>,
    detecting: bool,
    next_discovery: Instant,
    discovery_backoff: Option<Duration>,
}

impl Syncer {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Message>) {
        loop {
            if !self.detecting && Instant::now() >= self.next_discovery {
                self.start_discovery();
            }
            let publish_at = self
                .changed_at
                .filter(|_| self.complete())
                .map(|at| at + self.options.debounce);
            let wake_at = match publish_at {
                Some(at) if self.detecting || at < self.next_discovery => at,
                _ if self.detecting => Instant::now() + self.options.rediscovery,
                _ => self.next_discovery,
            };
            tokio::select! {
                message = events.recv() => match message {
                    Some(Message::Event { key, generation, event }) => self.on_event(key, generation, *event),
                    Some(Message::Discovered(result)) => self.on_discovery(result),
                    // The syncer holds a sender itself.
                    None => unreachable!("the syncer holds a sender"),
                },
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
            if let Some(at) = self
                .changed_at
                .filter(|_| self.complete())
                .map(|at| at + self.options.debounce)
                && Instant::now() >= at
            {
                self.publish();
            }
            self.send_health();
        }
    }

    fn send_health(&self) {
        self.health_tx.send_if_modified(|health| {
            let changed = *health != self.health;
            if changed {
                *health = self.health.clone();
            }
            changed
        });
    }

    /// Discovery has answered and every watch has completed its first list.
    fn complete(&self) -> bool {
        self.capabilities.is_some() && self.watches.values().all(|w| w.synced)
    }

    fn start_discovery(&mut self) {
        self.detecting = true;
        let client = self.client.clone();
        let tx = self.events_tx.clone();
        let kinds = self.wanted_kinds();
        tokio::spawn(async move {
            let _ = tx.send(Message::Discovered(detect(&client, &kinds).await));
        });
    }

    /// The kinds the configuration asks for.
    fn wanted_kinds(&self) -> Vec<Kind> {
        let mut kinds = Vec::new();
        if self.config.mirror_sets {
            kinds.extend([
                Kind::ImageContentSourcePolicy,
                Kind::ImageDigestMirrorSet,
                Kind::ImageTagMirrorSet,
            ]);
        }
        if self.config.hosted_clusters {
            kinds.extend([Kind::HostedCluster, Kind::NodePool]);
        }
        kinds
    }

    fn on_discovery(&mut self, result: Result<Capabilities, Error>) {
        self.detecting = false;
        match result {
            Ok(capabilities) => {
                self.discovery_backoff = None;
                self.next_discovery = Instant::now() + self.options.rediscovery;
                for kind in self.wanted_kinds() {
                    let served = capabilities.serves(kind);
                    if self.announced.insert(kind, served) != Some(served) {
                        if served {
                            tracing::info!(kind = %kind, resource = %kind.resource(), "the cluster serves {kind}; watching it");
                        } else {
                            tracing::info!(kind = %kind, resource = %kind.resource(), "the cluster does not serve {kind}; not watched");
                        }
                    }
                }
                self.health.capabilities = capabilities.by_kind();
                if self.capabilities.is_none() {
                    // A cluster that serves none of the kinds has nothing to list: its (empty)
                    // snapshot is complete now.
                    self.changed();
                }
                self.capabilities = Some(capabilities);
                self.reconcile_kind_watches();
                if self.complete() {
                    self.health.last_sync = Some(SystemTime::now());
                }
            }
            Err(error) => {
                let delay = self
                    .discovery_backoff
                    .map_or(self.options.discovery_retry, |d| d * 2)
                    .min(self.options.rediscovery);
                self.discovery_backoff = Some(delay);
                self.next_discovery = Instant::now() + delay;
                self.health.discovery_failures += 1;
                tracing::warn!(%error, retry_in = ?delay, "API discovery failed");
                self.health.last_error = Some(error.to_string());
                self.health.last_error_refused = error.is_refused();
            }
        }
    }

    /// Starts and stops kind watches to match the capabilities and the configuration.
    fn reconcile_kind_watches(&mut self) {
        let Some(capabilities) = &self.capabilities else {
            return;
        };
        let mut wanted = BTreeSet::new();
        for kind in self.wanted_kinds() {
            if !capabilities.serves(kind) {
                continue;
            }
            if kind.namespaced() && !self.config.namespaces.is_empty() {
                for namespace in &self.config.namespaces {
                    wanted.insert(WatchKey::Kind {
                        kind,
                        namespace: Some(namespace.clone()),
                    });
                }
            } else {
                wanted.insert(WatchKey::Kind {
                    kind,
                    namespace: None,
                });
            }
        }
        self.reconcile(|key| matches!(key, WatchKey::Kind { .. }), wanted);
        self.reconcile_config_map_watches();
    }

    /// Starts and stops ConfigMap watches to match the references of HostedClusters and
    /// NodePools.
    fn reconcile_config_map_watches(&mut self) {
        let wanted: BTreeSet<WatchKey> = self
            .watches
            .iter()
            .filter(|(key, _)| matches!(key.kind(), Kind::HostedCluster | Kind::NodePool))
            .flat_map(|(_, state)| state.objects.values())
            .flat_map(ClusterObject::referenced_config_maps)
            .map(|(namespace, name)| WatchKey::ConfigMap { namespace, name })
            .collect();
        self.reconcile(|key| matches!(key, WatchKey::ConfigMap { .. }), wanted);
    }

    fn reconcile(&mut self, of_this_sort: impl Fn(&WatchKey) -> bool, wanted: BTreeSet<WatchKey>) {
        let stale: Vec<WatchKey> = self
            .watches
            .keys()
            .filter(|key| of_this_sort(key) && !wanted.contains(key))
            .cloned()
            .collect();
        for key in stale {
            if let Some(state) = self.watches.remove(&key)
                && !state.objects.is_empty()
            {
                self.changed();
            }
        }
        for key in wanted {
            if !self.watches.contains_key(&key) {
                self.start_watch(key);
            }
        }
        self.health.watches = self.watches.len();
    }

    fn start_watch(&mut self, key: WatchKey) {
        self.generation += 1;
        let generation = self.generation;
        let resource = key.kind().api_resource();
        let client = self.client.clone();
        let (api, config, only_name): (Api<DynamicObject>, _, _) = match &key {
            WatchKey::Kind {
                namespace: Some(namespace),
                ..
            } => (
                Api::namespaced_with(client, namespace, &resource),
                watcher::Config::default(),
                None,
            ),
            WatchKey::Kind {
                namespace: None, ..
            } => (
                Api::all_with(client, &resource),
                watcher::Config::default(),
                None,
            ),
            WatchKey::ConfigMap { namespace, name } => (
                Api::namespaced_with(client, namespace, &resource),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                Some(name.clone()),
            ),
        };
        let tx = self.events_tx.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                let event = match (event, &only_name) {
                    (
                        Ok(
                            watcher::Event::Apply(o)
                            | watcher::Event::InitApply(o)
                            | watcher::Event::Delete(o),
                        ),
                        Some(name),
                    ) if o.metadata.name.as_ref() != Some(name) => {
                        continue;
                    }
                    (event, _) => event,
                };
                let message = Message::Event {
                    key: task_key.clone(),
                    generation,
                    event: Box::new(event),
                };
                if tx.send(message).is_err() {
                    break;
                }
            }
        })
        .abort_handle();
        self.watches.insert(
            key,
            WatchState {
                generation,
                task,
                synced: false,
                objects: BTreeMap::new(),
                relist: None,
                failing: false,
            },
        );
    }

    fn changed(&mut self) {
        self.changed_at.get_or_insert_with(Instant::now);
    }

    fn on_event(
        &mut self,
        key: WatchKey,
        generation: u64,
        event: Result<watcher::Event<DynamicObject>, watcher::Error>,
    ) {
        let kind = key.kind();
        let Some(state) = self.watches.get_mut(&key) else {
            return;
        };
        if state.generation != generation {
            return; // from a watch already replaced
        }
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                let error = watch_error(error, kind, key.namespace());
                *self.health.failures.entry(kind).or_default() += 1;
                self.health.last_error = Some(error.to_string());
                self.health.last_error_refused = error.is_refused();
                if !state.failing {
                    state.failing = true;
                    tracing::warn!(%error, "watch of {kind} failed; retrying with back-off (the last complete rules stay in force)");
                }
                if error.is_not_found() && !self.detecting {
                    // The kind may have been uninstalled: ask discovery now.
                    self.next_discovery = Instant::now();
                }
                return;
            }
        };
        if state.failing {
            state.failing = false;
            tracing::info!("watch of {kind} is back");
        }
        let object = |o: &DynamicObject| -> (ObjectKey, ClusterObject) {
            let value = serde_json::to_value(o).unwrap_or(Value::Null);
            let object = ClusterObject::new(kind, &value);
            ((object.namespace.clone(), object.name.clone()), object)
        };
        let mut changed = false;
        match event {
            watcher::Event::Init => {
                if state.synced {
                    self.health.watch_restarts += 1;
                }
                state.relist = Some(BTreeMap::new());
            }
            watcher::Event::InitApply(o) => {
                let (k, v) = object(&o);
                state.relist.get_or_insert_with(BTreeMap::new).insert(k, v);
            }
            watcher::Event::InitDone => {
                let listed = state.relist.take().unwrap_or_default();
                changed = listed != state.objects || !state.synced;
                state.objects = listed;
                state.synced = true;
            }
            watcher::Event::Apply(o) => {
                let (k, v) = object(&o);
                changed = state.objects.get(&k) != Some(&v);
                state.objects.insert(k, v);
            }
            watcher::Event::Delete(o) => {
                let (k, _) = object(&o);
                changed = state.objects.remove(&k).is_some();
            }
        }
        if changed {
            self.changed();
            if matches!(kind, Kind::HostedCluster | Kind::NodePool) {
                self.reconcile_config_map_watches();
            }
        }
        if self.complete() && self.changed_at.is_none() {
            self.health.last_sync = Some(SystemTime::now());
        }
    }

    fn publish(&mut self) {
        self.changed_at = None;
        let snapshot = Snapshot::new(
            self.watches
                .values()
                .flat_map(|w| w.objects.values().cloned())
                .collect(),
        );
        self.health.synced = true;
        self.health.last_sync = Some(SystemTime::now());
        if self.published.as_deref() == Some(&snapshot) {
            return;
        }
        self.health.objects = snapshot.counts();
        let snapshot = Arc::new(snapshot);
        tracing::info!(
            objects = snapshot.objects().len(),
            "cluster mirror objects changed"
        );
        self.published = Some(snapshot.clone());
        // Health first: whoever sees the snapshot sees it counted.
        self.send_health();
        self.snapshot_tx.send_replace(Some(snapshot));
    }
}

fn watch_error(error: watcher::Error, kind: Kind, namespace: Option<&str>) -> Error {
    let resource = kind.resource();
    match error {
        watcher::Error::InitialListFailed(e) => Error::from_kube(e, &resource, "list", namespace),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            Error::from_kube(e, &resource, "watch", namespace)
        }
        watcher::Error::WatchError(status) => {
            Error::from_kube(kube::Error::Api(status), &resource, "watch", namespace)
        }
        watcher::Error::NoResourceVersion => Error::Api {
            verb: "watch",
            resource,
            namespace: namespace.map(str::to_owned),
            code: 0,
            message: "the API server sent an object without metadata.resourceVersion".to_owned(),
        },
    }
}
