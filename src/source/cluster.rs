//! The discovered part of a rule source: a live cluster's mirror objects (feature
//! `kubernetes`), listed once for a command or watched while serving.
//!
//! Principal type: [`Cluster`], the running watch and the last complete snapshot it published.
//! Until that first snapshot the proxy is held incomplete (pulls 503, `/readyz` 503), and the
//! watch's health is followed into the metrics and the reason pulls wait.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::kubernetes::{self, ClusterWatch, Snapshot};
use crate::proxy::Proxy;

/// How long `check` and `resolve` wait for a complete list of the cluster.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why pulls wait, until the cluster's first snapshot.
const WAITING: &str = "waiting for the first complete list of the cluster's mirror objects";

/// Lists the cluster's mirror objects once (`check`, `resolve`), on a runtime of its own:
/// blocking.
pub(super) fn list(config: &kubernetes::Config) -> Result<Snapshot> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime
        .block_on(async {
            let client = kubernetes::connect(config).await?;
            kubernetes::list_once(client, config, LIST_TIMEOUT).await
        })
        .context("cannot list the cluster's mirror objects (the kubernetes section)")
}

/// The cluster part of the rules while serving.
pub(super) struct Cluster {
    /// The running watch and its snapshots; `None` once it stopped.
    watch: Option<(ClusterWatch, watch::Receiver<Option<Arc<Snapshot>>>)>,
    /// The last complete snapshot.
    current: Option<Arc<Snapshot>>,
}

impl Cluster {
    /// Connects to the cluster and starts watching it; `proxy` is incomplete until the first
    /// snapshot, and follows the watch's health (metrics, why pulls wait).
    pub(super) async fn start(config: &kubernetes::Config, proxy: &Arc<Proxy>) -> Result<Cluster> {
        let client = kubernetes::connect(config)
            .await
            .context("cannot connect to the cluster (the kubernetes section)")?;
        let mut options = kubernetes::Options::default();
        // A tuning knob for tests and impatient upgrades: how soon a kind installed later is seen.
        if let Ok(text) = std::env::var("MIRRORGATE_KUBERNETES_REDISCOVERY") {
            options.rediscovery = humantime::parse_duration(&text).with_context(|| {
                format!("MIRRORGATE_KUBERNETES_REDISCOVERY={text:?} is not a duration (e.g. 60s)")
            })?;
        }
        tracing::info!(
            mirror_sets = config.mirror_sets,
            hosted_clusters = config.hosted_clusters,
            namespaces = ?config.namespaces,
            "watching the cluster's mirror objects; pulls wait for their first complete list"
        );
        let watch = ClusterWatch::start(client, config, options);
        proxy.set_incomplete(Some(WAITING.to_owned()));
        follow_health(&watch, proxy.clone());
        let snapshots = watch.snapshots();
        Ok(Cluster {
            watch: Some((watch, snapshots)),
            current: None,
        })
    }

    /// The last complete snapshot, if there was one.
    pub(super) fn current(&self) -> Option<&Arc<Snapshot>> {
        self.current.as_ref()
    }

    /// Whether the watch runs and has not published its first snapshot yet.
    pub(super) fn waiting(&self) -> bool {
        self.watch.is_some() && self.current.is_none()
    }

    /// Completes when the watch publishes a new snapshot (never once it stopped), and keeps it.
    pub(super) async fn changed(&mut self) {
        if let Some((_, snapshots)) = &mut self.watch {
            if snapshots.changed().await.is_ok() {
                self.current = snapshots.borrow_and_update().clone();
                return;
            }
            // The watch task ended (it does not on its own): keep the last snapshot.
            tracing::error!("the cluster watch stopped; the last cluster rules stay in force");
            self.watch = None;
        }
        std::future::pending::<()>().await;
    }
}

/// Follows the health of `watch` into the metrics and, before the first sync, into the reason
/// `proxy` gives for waiting; the task ends with the watch.
fn follow_health(watch: &ClusterWatch, proxy: Arc<Proxy>) {
    let metrics = proxy.metrics().clone();
    let mut health = watch.health_updates();
    tokio::spawn(async move {
        loop {
            let (sync, waiting) = {
                let health = health.borrow_and_update();
                let waiting = match (&health.last_error, health.synced) {
                    (Some(error), false) => Some(format!("{WAITING}; last error: {error}")),
                    _ => None,
                };
                (cluster_sync(&health), waiting)
            };
            metrics.cluster.cluster_sync(&sync);
            // Before the first sync, /readyz and refused pulls say what stands in the way
            // (a 403 names the permission to grant).
            if let Some(why) = waiting {
                proxy.explain_incomplete(why);
            }
            // Closed when the watch stops.
            if health.changed().await.is_err() {
                return;
            }
        }
    });
}

fn cluster_sync(health: &kubernetes::Health) -> crate::kubernetes::metrics::ClusterSync {
    let kind = |k: &kubernetes::Kind| k.as_str().to_owned();
    let mut failures: Vec<(String, u64)> =
        health.failures.iter().map(|(k, n)| (kind(k), *n)).collect();
    failures.push(("discovery".to_owned(), health.discovery_failures));
    crate::kubernetes::metrics::ClusterSync {
        synced: health.synced,
        last_sync: health.last_sync,
        capabilities: health
            .capabilities
            .iter()
            .map(|(k, served)| (kind(k), *served))
            .collect(),
        objects: health.objects.iter().map(|(k, n)| (kind(k), *n)).collect(),
        watch_restarts: health.watch_restarts,
        failures,
    }
}
