//! Mirror rules from a live cluster: the ImageContentSourcePolicy, ImageDigestMirrorSet and
//! ImageTagMirrorSet objects of an OpenShift cluster, and on a HyperShift management cluster the
//! HostedClusters, NodePools and the ConfigMaps they reference, watched through the Kubernetes API.
//!
//! Principal types:
//! - [`Config`]: the `kubernetes:` section of the configuration file;
//! - [`Kind`] and [`Capabilities`]: the watched resources, and which of them the cluster serves
//!   (API discovery per group/version, [`detect`]);
//! - [`ClusterWatch`]: the running watch. It publishes a [`Snapshot`] — the complete set of
//!   mirror objects in the cluster, each a [`ClusterObject`] with its origin — through a
//!   `tokio::sync::watch` channel, only once every detected kind has been listed completely, then
//!   after every change (debounced). [`Health`] tells whether and when it last synced, what it
//!   watches and what failed;
//! - [`Snapshot::to_rule_set`] turns a snapshot into a [`RuleSet`](crate::rules::RuleSet) with the
//!   rules engine of [`crate::rules`]; [`Snapshot::merged_with_files`] merges it with the rule
//!   files, the cluster's objects grouped into [`Snapshot::members`] that are each refused on
//!   their own when invalid or conflicting (one tenant's bad object is that tenant's error);
//! - [`enum@Error`]: why the cluster could not be read, naming the resource and verb (a 403 names the
//!   permission to grant).
//!
//! How the pieces fit: [`connect`] builds a client from [`Config::kubeconfig`];
//! [`ClusterWatch::start`] detects the kinds, starts one kube-runtime watcher per kind (per
//! namespace when `namespaces` is set) and one per referenced ConfigMap, and merges their events
//! into one state. [`list_once`] does the same for a one-shot answer (`check`, `resolve`).

mod config;
mod discovery;
pub mod metrics;
mod snapshot;
mod watch;

use thiserror::Error;

pub use config::{Config, ConfigError};
pub use discovery::{Capabilities, Kind, detect};
pub use snapshot::{ClusterObject, Snapshot};
pub use watch::{ClusterWatch, Health, Options, list_once};

/// Why the cluster could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// No client configuration: no kubeconfig file, or not running in a pod.
    #[error("cannot configure the Kubernetes client: {0}")]
    ClientConfig(String),
    /// The API server refused the request: the service account lacks a permission.
    #[error(
        "the API server refused to {verb} {resource}{scope} (403 Forbidden: {message}); grant \
         \"{verb}\" on \"{resource}\" to mirrorgate's service account (deploy/kubernetes/base/rbac.yaml)",
        scope = in_namespace(namespace)
    )]
    Forbidden {
        /// `get`, `list` or `watch`.
        verb: &'static str,
        /// The resource as RBAC names it, e.g. `imagedigestmirrorsets.config.openshift.io`.
        resource: String,
        /// The namespace, for a namespaced request.
        namespace: Option<String>,
        /// The API server's message.
        message: String,
    },
    /// The API server answered with another error status.
    #[error("{verb} {resource}{scope}: the API server answered {code}: {message}", scope = in_namespace(namespace))]
    Api {
        /// `get`, `list` or `watch`.
        verb: &'static str,
        /// The resource as RBAC names it.
        resource: String,
        /// The namespace, for a namespaced request.
        namespace: Option<String>,
        /// The HTTP status.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// The API server could not be reached, or its answer could not be read.
    #[error("{verb} {resource}{scope}: {cause}", scope = in_namespace(namespace))]
    Connection {
        /// `get`, `list` or `watch`.
        verb: &'static str,
        /// The resource as RBAC names it.
        resource: String,
        /// The namespace, for a namespaced request.
        namespace: Option<String>,
        /// What failed.
        cause: String,
        /// Whether the connection was refused: nothing listens at the API server's address.
        refused: bool,
    },
    /// No complete list of the cluster's mirror objects within the time given.
    #[error("no complete list of the cluster's mirror objects after {waited:?}{}", last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotSynced {
        /// How long [`list_once`] waited.
        waited: std::time::Duration,
        /// The last failure seen, if any.
        last_error: Option<String>,
    },
}

fn in_namespace(namespace: &Option<String>) -> String {
    namespace
        .as_ref()
        .map(|ns| format!(" in namespace {ns}"))
        .unwrap_or_default()
}

impl Error {
    /// Classifies a kube-rs error of a `verb` request on `resource`.
    pub(crate) fn from_kube(
        error: kube::Error,
        resource: &str,
        verb: &'static str,
        namespace: Option<&str>,
    ) -> Error {
        let namespace = namespace.map(str::to_owned);
        let resource = resource.to_owned();
        match error {
            kube::Error::Api(status) if status.is_forbidden() || status.code == 403 => {
                Error::Forbidden {
                    verb,
                    resource,
                    namespace,
                    message: status.message,
                }
            }
            kube::Error::Api(status) => Error::Api {
                verb,
                resource,
                namespace,
                code: status.code,
                message: status.message,
            },
            other => Error::Connection {
                verb,
                resource,
                namespace,
                cause: other.to_string(),
                refused: is_refused(&other),
            },
        }
    }

    /// Whether the API server said the resource does not exist (a kind uninstalled).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { code: 404, .. })
    }

    /// Whether the connection to the API server was refused.
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Connection { refused: true, .. })
    }
}

/// Whether a refused TCP connection lies behind `error` (its text says only "client error
/// (Connect)").
fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Builds a client the way [`Config::kubeconfig`] says: a named kubeconfig file; or, when it is
/// `None`, the in-cluster service account inside a pod and `$KUBECONFIG` or `~/.kube/config`
/// elsewhere.
pub async fn connect(config: &Config) -> Result<kube::Client, Error> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let client_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::ClientConfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::ClientConfig(format!("{}: {e}", path.display())))?
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => kube::Config::incluster()
            .map_err(|e| Error::ClientConfig(format!("in-cluster service account: {e}")))?,
        None => kube::Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|e| {
                Error::ClientConfig(format!(
                    "not in a pod, and no usable $KUBECONFIG or ~/.kube/config: {e}"
                ))
            })?,
    };
    // kube's rustls connector takes the process-wide provider: ring, as everywhere in mirrorgate
    // (a build that also links aws-lc-rs, like the tests, could not choose on its own).
    let _ = rustls::crypto::ring::default_provider().install_default();
    kube::Client::try_from(client_config).map_err(|e| Error::ClientConfig(e.to_string()))
}

#[cfg(test)]
mod mock;
