//! Which mirror kinds the cluster serves, found through API discovery per group/version.
//!
//! [`Kind`] names the five watched resources with their group, version and plural;
//! [`detect`] asks `/apis/GROUP/VERSION` for each group/version once and answers with
//! [`Capabilities`]. A group/version the server does not have (404) serves none of its kinds: an
//! OpenShift 4.12 cluster has `config.openshift.io/v1` without `imagetagmirrorsets`, a cluster
//! without HyperShift has no `hypershift.openshift.io` at all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kube::core::{ApiResource, GroupVersionKind};

use super::Error;

/// A resource watched for mirror rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `operator.openshift.io/v1alpha1` `imagecontentsourcepolicies` (cluster-scoped).
    ImageContentSourcePolicy,
    /// `config.openshift.io/v1` `imagedigestmirrorsets` (cluster-scoped).
    ImageDigestMirrorSet,
    /// `config.openshift.io/v1` `imagetagmirrorsets` (cluster-scoped).
    ImageTagMirrorSet,
    /// `hypershift.openshift.io/v1beta1` `hostedclusters` (namespaced).
    HostedCluster,
    /// `hypershift.openshift.io/v1beta1` `nodepools` (namespaced).
    NodePool,
    /// `v1` `configmaps`: only those referenced by HostedClusters and NodePools are read.
    ConfigMap,
}

impl Kind {
    /// The kinds whose presence discovery decides (ConfigMaps are always served).
    pub const DETECTED: [Kind; 5] = [
        Kind::ImageContentSourcePolicy,
        Kind::ImageDigestMirrorSet,
        Kind::ImageTagMirrorSet,
        Kind::HostedCluster,
        Kind::NodePool,
    ];

    /// The kind as written in objects.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ImageContentSourcePolicy => "ImageContentSourcePolicy",
            Kind::ImageDigestMirrorSet => "ImageDigestMirrorSet",
            Kind::ImageTagMirrorSet => "ImageTagMirrorSet",
            Kind::HostedCluster => "HostedCluster",
            Kind::NodePool => "NodePool",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::ImageContentSourcePolicy => "operator.openshift.io",
            Kind::ImageDigestMirrorSet | Kind::ImageTagMirrorSet => "config.openshift.io",
            Kind::HostedCluster | Kind::NodePool => "hypershift.openshift.io",
            Kind::ConfigMap => "",
        }
    }

    /// The API version within the group.
    pub fn version(self) -> &'static str {
        match self {
            Kind::ImageContentSourcePolicy => "v1alpha1",
            Kind::ImageDigestMirrorSet | Kind::ImageTagMirrorSet | Kind::ConfigMap => "v1",
            Kind::HostedCluster | Kind::NodePool => "v1beta1",
        }
    }

    /// `group/version`, or `v1` for the core group.
    pub fn api_version(self) -> String {
        if self.group().is_empty() {
            self.version().to_owned()
        } else {
            format!("{}/{}", self.group(), self.version())
        }
    }

    /// The resource name in URLs and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::ImageContentSourcePolicy => "imagecontentsourcepolicies",
            Kind::ImageDigestMirrorSet => "imagedigestmirrorsets",
            Kind::ImageTagMirrorSet => "imagetagmirrorsets",
            Kind::HostedCluster => "hostedclusters",
            Kind::NodePool => "nodepools",
            Kind::ConfigMap => "configmaps",
        }
    }

    /// Whether objects of the kind live in namespaces.
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::HostedCluster | Kind::NodePool | Kind::ConfigMap)
    }

    /// `plural.group` (`configmaps` for the core group), as RBAC errors name resources.
    pub fn resource(self) -> String {
        if self.group().is_empty() {
            self.plural().to_owned()
        } else {
            format!("{}.{}", self.plural(), self.group())
        }
    }

    /// What kube-rs needs to list and watch the kind as `DynamicObject`s.
    pub fn api_resource(self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(self.group(), self.version(), self.as_str());
        ApiResource::from_gvk_with_plural(&gvk, self.plural())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// For each detected kind, whether the cluster serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    served: BTreeSet<Kind>,
}

impl Capabilities {
    /// Capabilities with exactly these kinds served.
    pub fn with(kinds: impl IntoIterator<Item = Kind>) -> Capabilities {
        Capabilities {
            served: kinds.into_iter().collect(),
        }
    }

    /// Whether the cluster serves `kind` (ConfigMaps always are).
    pub fn serves(&self, kind: Kind) -> bool {
        kind == Kind::ConfigMap || self.served.contains(&kind)
    }

    /// Every detected kind with whether it is served, in [`Kind`] order.
    pub fn by_kind(&self) -> BTreeMap<Kind, bool> {
        Kind::DETECTED
            .into_iter()
            .map(|kind| (kind, self.served.contains(&kind)))
            .collect()
    }
}

/// Asks the API server which of `kinds` it serves: one discovery request per group/version.
/// A 404 means the group/version (and so each of its kinds) is absent; any other failure is an
/// error, so that a flaky connection never looks like a cluster without mirror kinds.
pub async fn detect(client: &kube::Client, kinds: &[Kind]) -> Result<Capabilities, Error> {
    let mut by_group_version: BTreeMap<String, Vec<Kind>> = BTreeMap::new();
    for &kind in kinds.iter().filter(|k| **k != Kind::ConfigMap) {
        by_group_version
            .entry(kind.api_version())
            .or_default()
            .push(kind);
    }
    let mut served = BTreeSet::new();
    for (group_version, wanted) in by_group_version {
        match client.list_api_group_resources(&group_version).await {
            Ok(list) => {
                for kind in wanted {
                    // Subresources (`hostedclusters/status`) are listed by their own names.
                    if list.resources.iter().any(|r| r.name == kind.plural()) {
                        served.insert(kind);
                    }
                }
            }
            // By code: servers word the reason differently.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(cause) => {
                return Err(Error::from_kube(
                    cause,
                    &format!("/apis/{group_version}"),
                    "get",
                    None,
                ));
            }
        }
    }
    Ok(Capabilities { served })
}
