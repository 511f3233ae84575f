//! Where the rules in force come from, behind one seam, so that a fixed source and a discovered
//! one are interchangeable.
//!
//! Principal types: [`Config`] (which source the configuration names: `Fixed` rule files and
//! directories, or with feature `kubernetes` `Discover`, those files merged with a live cluster's
//! objects), whose one [`Config::build`] gives the [`Source`] that `crate::reload` follows while
//! serving ([`Config::load_once`] is the one-shot load of a command); [`Loader`] (what a load reads:
//! the source's state at one moment, to load from on a blocking thread); [`RuleFeed`] (the stream
//! of complete [`Views`] a source produces, `watch`-style: a subscriber sees the views in force at
//! once and then every later change; a change that fails to load publishes nothing, so the last
//! good views stay).
//!
//! A source builds each view's rule set whole, through [`rules::load`] or
//! [`rules::load_with_members`] (where a cluster object that fails is refused on its own and the
//! rest is built); a source that has not completed its first load never yields a partial set.
//! A source may replace one view and leave the others as they are ([`RuleFeed::replace_view`]).
//! Today every source yields one view, `management`.
//!
//! The discovered part lives in `cluster` (feature `kubernetes`).

#[cfg(feature = "kubernetes")]
mod cluster;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::proxy::Proxy;
use crate::rules::{
    self, MemberError, MemberHistory, RuleError, RuleSet, SelfNames, ViewName, Views,
};

/// Which rule source the configuration names, and how to build it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Config {
    /// Files and directories of mirror objects, read in sorted order, watched for changes by
    /// whoever drives the reloads (`crate::reload`).
    Fixed {
        /// The rule files and directories.
        files: Vec<PathBuf>,
    },
    /// Rule files merged with the mirror objects of a live cluster (the cluster part as last
    /// listed completely), followed by a watch while serving.
    #[cfg(feature = "kubernetes")]
    Discover {
        /// The rule files and directories, as for [`Config::Fixed`].
        files: Vec<PathBuf>,
        /// How to reach the cluster and what to read from it (the `kubernetes` section).
        cluster: crate::kubernetes::Config,
    },
}

impl Config {
    /// The source `config` names: its `rules`, with its `kubernetes` section's cluster if any.
    pub fn from_config(config: &crate::config::Config) -> Config {
        let files = config.rules.clone();
        #[cfg(feature = "kubernetes")]
        if let Some(cluster) = &config.kubernetes {
            return Config::Discover {
                files,
                cluster: cluster.clone(),
            };
        }
        Config::Fixed { files }
    }

    /// This source with other rule files (e.g. the `--rules` of a command).
    pub fn with_files(self, files: Vec<PathBuf>) -> Config {
        match self {
            Config::Fixed { .. } => Config::Fixed { files },
            #[cfg(feature = "kubernetes")]
            Config::Discover { cluster, .. } => Config::Discover { files, cluster },
        }
    }

    /// Only the rule files of this source, without the cluster.
    pub fn files_only(self) -> Config {
        Config::Fixed {
            files: self.files().to_vec(),
        }
    }

    /// The rule files and directories.
    pub fn files(&self) -> &[PathBuf] {
        match self {
            Config::Fixed { files } => files,
            #[cfg(feature = "kubernetes")]
            Config::Discover { files, .. } => files,
        }
    }

    /// Loads complete views now, once, as a first load (`check`, `resolve`): a cluster is listed
    /// once. Each view's mirrors that are mirrorgate itself are `self_names`. Blocking.
    pub fn load_once(&self, self_names: &SelfNames) -> anyhow::Result<Views> {
        let loader = match self {
            Config::Fixed { .. } => Loader::default(),
            #[cfg(feature = "kubernetes")]
            Config::Discover { cluster, .. } => Loader {
                cluster: Some(Arc::new(cluster::list(cluster)?)),
                ..Loader::default()
            },
        };
        let loaded = loader
            .load(self.files(), self_names)
            .context("the rule set is invalid")?;
        Ok(loaded.views)
    }

    /// Builds the source `serve` follows. A discovered source connects to the cluster and starts
    /// watching it; `proxy` is held incomplete until the first complete list, and follows the
    /// watch's health.
    pub async fn build(self, proxy: &Arc<Proxy>) -> anyhow::Result<Source> {
        #[cfg(not(feature = "kubernetes"))]
        let _ = proxy;
        let source = Source {
            #[cfg(feature = "kubernetes")]
            cluster: None,
            history: Arc::default(),
            refused: Vec::new(),
        };
        match self {
            Config::Fixed { .. } => Ok(source),
            #[cfg(feature = "kubernetes")]
            Config::Discover { cluster, .. } => Ok(Source {
                cluster: Some(cluster::Cluster::start(&cluster, proxy).await?),
                ..source
            }),
        }
    }
}

/// A built rule source, as the reload loop follows it: it gives a [`Loader`] for each load,
/// learns which load was swapped in, and tells when a part it watches itself changed.
pub struct Source {
    #[cfg(feature = "kubernetes")]
    cluster: Option<cluster::Cluster>,
    /// What the views in force remember for the next load: each cluster object's last good
    /// version.
    history: Arc<MemberHistory>,
    /// The refused cluster objects of the views in force, so that each change is logged once.
    refused: Vec<MemberError>,
}

impl Source {
    /// What a load reads now: the cluster part as last listed and the history of the views in
    /// force.
    pub fn loader(&self) -> Loader {
        Loader {
            #[cfg(feature = "kubernetes")]
            cluster: self
                .cluster
                .as_ref()
                .and_then(|cluster| cluster.current().cloned()),
            history: self.history.clone(),
        }
    }

    /// Whether the views lack a part the source is still waiting for (the cluster's first list).
    pub fn waiting(&self) -> bool {
        #[cfg(feature = "kubernetes")]
        return self.cluster.as_ref().is_some_and(cluster::Cluster::waiting);
        #[cfg(not(feature = "kubernetes"))]
        false
    }

    /// Completes when a part the source watches itself changed (never for files alone, whose
    /// changes the reload loop watches).
    pub async fn changed(&mut self) {
        #[cfg(feature = "kubernetes")]
        if let Some(cluster) = &mut self.cluster {
            return cluster.changed().await;
        }
        std::future::pending::<()>().await;
    }

    /// Takes `loaded` as the views in force: keeps its history, logs the cluster objects it
    /// refuses that were not refused before (and those no longer refused), and counts them.
    /// Returns the views and the new refusals.
    pub fn swapped_in(&mut self, loaded: Loaded, proxy: &Proxy) -> (Views, Vec<String>) {
        self.history = Arc::new(loaded.history);
        let mut refused: Vec<MemberError> = Vec::new();
        for (_, rule_set) in loaded.views.iter() {
            for error in rule_set.errors() {
                if !refused.contains(error) {
                    refused.push(error.clone());
                }
            }
        }
        for gone in &self.refused {
            if !refused.iter().any(|e| e.member == gone.member) {
                tracing::info!(member = %gone.member, "a cluster object is no longer refused (fixed or deleted)");
            }
        }
        let new: Vec<String> = refused
            .iter()
            .filter(|e| !self.refused.contains(e))
            .inspect(|error| {
                tracing::error!(
                    member = %error.member,
                    in_force = error.in_force.as_str(),
                    %error,
                    "a cluster object is refused; the rest of the rules are in force"
                );
            })
            .map(ToString::to_string)
            .collect();
        proxy.metrics().cluster.cluster_refused(&refused);
        self.refused = refused;
        (loaded.views, new)
    }
}

/// The state of a source at one moment, to load complete views from (on a blocking thread).
#[derive(Debug, Clone, Default)]
pub struct Loader {
    #[cfg(feature = "kubernetes")]
    cluster: Option<Arc<crate::kubernetes::Snapshot>>,
    /// Read by the cluster part only: rule files have no members.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    history: Arc<MemberHistory>,
}

/// Complete views, loaded, and what the next load must remember if they are swapped in.
#[derive(Debug)]
pub struct Loaded {
    /// Every view's rule set.
    pub views: Views,
    history: MemberHistory,
}

impl Loader {
    /// Loads complete views with the rule files `files`: a cluster object that is invalid or
    /// conflicts keeps the version it had in force (see [`rules::load_with_members`]); rule
    /// files fail the whole load, as always. Each view's mirrors that are mirrorgate itself are
    /// `self_names`. Blocking: file reads and parsing.
    pub fn load(&self, files: &[PathBuf], self_names: &SelfNames) -> Result<Loaded, RuleError> {
        let (management, history) = self.management(files)?;
        Ok(Loaded {
            views: Views::new(Arc::new(management.with_self_names(self_names.clone()))),
            history,
        })
    }

    fn management(&self, files: &[PathBuf]) -> Result<(RuleSet, MemberHistory), RuleError> {
        #[cfg(feature = "kubernetes")]
        if let Some(cluster) = &self.cluster {
            return cluster.merged_with_files(files, &self.history);
        }
        Ok((rules::load(files)?, MemberHistory::default()))
    }
}

/// The stream of the views in force: one producer publishes complete views, or replaces one
/// view; any number of subscribers follow.
#[derive(Debug)]
pub struct RuleFeed {
    sender: watch::Sender<Arc<Views>>,
}

impl RuleFeed {
    /// A feed whose first views are `initial` (a source's first complete load).
    pub fn new(initial: Arc<Views>) -> RuleFeed {
        RuleFeed {
            sender: watch::Sender::new(initial),
        }
    }

    /// Publishes complete views; subscribers see them as the next change.
    pub fn publish(&self, views: Arc<Views>) {
        self.sender.send_replace(views);
    }

    /// Publishes the views in force with `view`'s rule set replaced by `rules`; every other
    /// view keeps its `Arc`.
    pub fn replace_view(&self, view: ViewName, rules: Arc<RuleSet>) {
        self.sender
            .send_modify(|views| *views = Arc::new(views.replacing(view, rules)));
    }

    /// The views in force.
    pub fn current(&self) -> Arc<Views> {
        self.sender.borrow().clone()
    }

    /// A subscriber: it sees the current views, then every later change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Views>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDMS: &str = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.example.com/ns]\n";

    fn hosted(name: &str) -> ViewName {
        ViewName::HostedCluster {
            namespace: "clusters".to_owned(),
            name: name.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_subscriber_sees_the_views_in_force_then_each_published_change() {
        let feed = RuleFeed::new(Arc::new(Views::new(Arc::new(RuleSet::empty()))));
        let mut subscriber = feed.subscribe();
        let before = subscriber.borrow_and_update().management().rules().len();
        let idms = rules::load_str(IDMS, "idms.yaml").unwrap();
        feed.publish(Arc::new(Views::new(Arc::new(idms))));
        subscriber.changed().await.expect("the feed is open");
        let after = subscriber.borrow_and_update().management().rules().len();
        assert_eq!((before, after), (0, 1));
    }

    #[test]
    fn replacing_one_view_on_the_feed_leaves_the_other_views_rule_sets_the_same_arcs() {
        let management = Arc::new(RuleSet::empty());
        let tenant_b = Arc::new(RuleSet::empty());
        let feed = RuleFeed::new(Arc::new(
            Views::new(management.clone()).replacing(hosted("b"), tenant_b.clone()),
        ));
        let tenant_a = Arc::new(rules::load_str(IDMS, "idms.yaml").unwrap());
        feed.replace_view(hosted("a"), tenant_a.clone());
        let views = feed.current();
        assert_eq!(
            (
                Arc::ptr_eq(views.management(), &management),
                Arc::ptr_eq(views.get(&hosted("b")).unwrap(), &tenant_b),
                Arc::ptr_eq(views.get(&hosted("a")).unwrap(), &tenant_a),
            ),
            (true, true, true)
        );
    }

    #[test]
    fn a_load_of_rule_files_that_fails_names_the_file_and_a_good_one_gives_the_management_view() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, IDMS).unwrap();
        let loaded = Loader::default()
            .load(std::slice::from_ref(&good), &SelfNames::default())
            .map(|l| (l.views.len(), l.views.management().rules().len()));
        std::fs::write(&good, "kind: [").unwrap();
        let failed = Loader::default()
            .load(std::slice::from_ref(&good), &SelfNames::default())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(
            (loaded.ok(), failed.contains("good.yaml")),
            (Some((1, 1)), true)
        );
    }

    #[test]
    fn rule_files_given_to_a_command_replace_the_configured_ones() {
        let config = crate::config::Config {
            rules: vec![PathBuf::from("/etc/mirrorgate/rules")],
            ..crate::config::Config::default()
        };
        let source = Config::from_config(&config).with_files(vec![PathBuf::from("idms.yaml")]);
        assert_eq!(
            (source.files().to_vec(), source.clone().files_only()),
            (
                vec![PathBuf::from("idms.yaml")],
                Config::Fixed {
                    files: vec![PathBuf::from("idms.yaml")]
                }
            )
        );
    }

    #[test]
    fn documents_decoded_elsewhere_build_a_rule_set_naming_their_origin() {
        let value: serde_json::Value = serde_json::json!({
            "apiVersion": "config.openshift.io/v1",
            "kind": "ImageDigestMirrorSet",
            "metadata": {"name": "x"},
            "spec": {"imageDigestMirrors": [{"source": "quay.io/ns", "mirrors": [7]}]},
        });
        let error = RuleSet::from_documents([rules::Documents {
            origin: "kubernetes: imagedigestmirrorsets/x".to_owned(),
            documents: vec![value.clone()],
        }])
        .expect_err("a mirror that is not a string")
        .to_string();
        let mut fixed = value;
        fixed["spec"]["imageDigestMirrors"][0]["mirrors"][0] = "mirror.example.com/ns".into();
        let built = RuleSet::from_documents([rules::Documents {
            origin: "kubernetes: imagedigestmirrorsets/x".to_owned(),
            documents: vec![fixed],
        }])
        .map(|r| r.summary().files);
        assert_eq!(
            (
                error.starts_with("kubernetes: imagedigestmirrorsets/x"),
                built.ok()
            ),
            (
                true,
                Some(vec![PathBuf::from("kubernetes: imagedigestmirrorsets/x")])
            )
        );
    }
}
