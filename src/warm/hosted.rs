//! HostedClusters warmed without a command: with `kubernetes:` and `warm.hosted_clusters`, each
//! HostedCluster's `spec.release.image` is warmed when the cluster is created (or first seen)
//! and whenever the image changes (an upgrade warms the new release).
//!
//! A kube-runtime watcher of its own on `hypershift.openshift.io/v1beta1` `hostedclusters`
//! (every namespace, or those of `kubernetes.namespaces`), independent of the rule watch: it
//! restarts with back-off when the API server is lost, and after a relist it starts jobs only
//! for images it has not warmed for that cluster yet.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};

use super::Warmer;
use crate::kubernetes::{self, Kind};
use crate::reference::Reference;

/// Watches the HostedClusters of the cluster `config` reaches and warms their releases through
/// `warmer`, until the returned task is aborted. A cluster that cannot be reached is logged and
/// retried.
pub fn spawn(warmer: Arc<Warmer>, config: kubernetes::Config) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match kubernetes::connect(&config).await {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "warm: cannot watch HostedClusters");
                return;
            }
        };
        let resource = Kind::HostedCluster.api_resource();
        let apis: Vec<Api<DynamicObject>> = if config.namespaces.is_empty() {
            vec![Api::all_with(client, &resource)]
        } else {
            config
                .namespaces
                .iter()
                .map(|namespace| Api::namespaced_with(client.clone(), namespace, &resource))
                .collect()
        };
        let watches = apis.into_iter().map(|api| {
            let warmer = warmer.clone();
            async move { watch(warmer, api).await }
        });
        futures_util::future::join_all(watches).await;
    })
}

/// One watcher: starts a job for each HostedCluster whose release image is new to it.
async fn watch(warmer: Arc<Warmer>, api: Api<DynamicObject>) {
    // namespace/name → the release image last warmed for it.
    let mut warmed: HashMap<String, String> = HashMap::new();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let namespace = object.metadata.namespace.clone().unwrap_or_default();
                let name = object.metadata.name.clone().unwrap_or_default();
                let key = format!("{namespace}/{name}");
                let Some(image) = release_image(&object) else {
                    continue;
                };
                if warmed.get(&key) == Some(&image) {
                    continue;
                }
                match Reference::parse_normalized(&image) {
                    Ok(release) => {
                        tracing::info!(hosted_cluster = %key, release = %release, "warm: HostedCluster release");
                        warmer.start(release, &format!("hostedcluster {key}"));
                        warmed.insert(key, image);
                    }
                    Err(error) => {
                        tracing::warn!(hosted_cluster = %key, image, %error, "warm: spec.release.image is not an image reference");
                        warmed.insert(key, image);
                    }
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let namespace = object.metadata.namespace.clone().unwrap_or_default();
                let name = object.metadata.name.clone().unwrap_or_default();
                warmed.remove(&format!("{namespace}/{name}"));
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(error) => {
                tracing::warn!(%error, "warm: HostedCluster watch failed; retrying");
            }
        }
    }
}

/// `spec.release.image`, when set.
fn release_image(object: &DynamicObject) -> Option<String> {
    object.data["spec"]["release"]["image"]
        .as_str()
        .map(str::trim)
        .filter(|image| !image.is_empty())
        .map(str::to_owned)
}

impl Warmer {
    /// With a `kubernetes:` section and `warm.hosted_clusters`, starts the HostedCluster watch
    /// ([`spawn`]); otherwise nothing. `serve` calls it with the configuration's section.
    pub fn watch_hosted_clusters(
        self: &Arc<Self>,
        kubernetes: Option<&kubernetes::Config>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let kubernetes = kubernetes?;
        if !self.config().hosted_clusters {
            return None;
        }
        tracing::info!("warm: watching HostedClusters for their release images");
        Some(spawn(self.clone(), kubernetes.clone()))
    }
}
