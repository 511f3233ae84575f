//! Where rule sets come from, behind one interface, so that a static source and a discovered one
//! are interchangeable.
//!
//! Principal types: [`RuleSource`] (what produces rule sets: rule files and directories, and
//! with feature `kubernetes` those files merged with a live cluster's objects) and [`RuleFeed`] (the stream of complete rule sets
//! a source produces, `watch`-style: a subscriber sees the rule set in force at once and then
//! every later one; a change that fails to load publishes nothing, so the last good set stays).
//!
//! A source builds each rule set whole, through [`RuleSet::from_documents`],
//! [`rules::load`] or [`rules::load_with_members`] (where a cluster object that fails is refused
//! on its own and the rest is built); a source that has not completed its first load never
//! yields a partial set.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::rules::{self, MemberHistory, RuleError, RuleSet};

/// What produces rule sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// Files and directories of mirror objects, read in sorted order, watched for changes by
    /// whoever drives the reloads (`crate::reload`).
    Files(Vec<PathBuf>),
    /// Rule files merged with the mirror objects of a live cluster into one rule set (the cluster
    /// part as last listed completely; `crate::reload` follows its changes).
    #[cfg(feature = "kubernetes")]
    FilesAndCluster {
        /// Files and directories of mirror objects, as for [`RuleSource::Files`].
        files: Vec<PathBuf>,
        /// The cluster's objects.
        cluster: Arc<crate::kubernetes::Snapshot>,
    },
}

impl RuleSource {
    /// Loads one complete rule set now, as a first load (no member has a last good version).
    /// Blocking: file reads and parsing.
    pub fn load(&self) -> Result<RuleSet, RuleError> {
        self.load_after(&MemberHistory::default())
            .map(|(rules, _)| rules)
    }

    /// Loads one complete rule set now, after the loads `history` remembers: a cluster object
    /// that is invalid or conflicts keeps the version it had in force then (see
    /// [`rules::load_with_members`]). Returns the history for the next load. Rule files fail
    /// the whole load, as always. Blocking: file reads and parsing.
    pub fn load_after(
        &self,
        history: &MemberHistory,
    ) -> Result<(RuleSet, MemberHistory), RuleError> {
        match self {
            RuleSource::Files(paths) => {
                let _ = history;
                Ok((rules::load(paths)?, MemberHistory::default()))
            }
            #[cfg(feature = "kubernetes")]
            RuleSource::FilesAndCluster { files, cluster } => {
                cluster.merged_with_files(files, history)
            }
        }
    }

    /// The paths whose changes mean a new rule set (none for a source that tells its own
    /// changes).
    pub fn watched_paths(&self) -> &[PathBuf] {
        match self {
            RuleSource::Files(paths) => paths,
            #[cfg(feature = "kubernetes")]
            RuleSource::FilesAndCluster { files, .. } => files,
        }
    }
}

/// A rule source that tells its own changes, run beside the files while serving: with feature
/// `kubernetes`, the watch of a live cluster (its snapshots merge with the rule files through
/// [`RuleSource::FilesAndCluster`]); without it, a type that cannot exist.
#[cfg(feature = "kubernetes")]
pub type ClusterSource = crate::kubernetes::ClusterWatch;
/// A rule source that tells its own changes (none without feature `kubernetes`).
#[cfg(not(feature = "kubernetes"))]
pub type ClusterSource = std::convert::Infallible;

/// The stream of rule sets in force: one producer publishes complete sets, any number of
/// subscribers follow.
#[derive(Debug)]
pub struct RuleFeed {
    sender: watch::Sender<Arc<RuleSet>>,
}

impl RuleFeed {
    /// A feed whose first rule set is `initial` (a source's first complete load).
    pub fn new(initial: Arc<RuleSet>) -> RuleFeed {
        RuleFeed {
            sender: watch::Sender::new(initial),
        }
    }

    /// Loads `source` and publishes the result if it is good; on error nothing is published
    /// and the rule set in force stays.
    pub fn reload_from(&self, source: &RuleSource) -> Result<Arc<RuleSet>, RuleError> {
        let rules = Arc::new(source.load()?);
        self.publish(rules.clone());
        Ok(rules)
    }

    /// Publishes a complete rule set; subscribers see it as the next change.
    pub fn publish(&self, rules: Arc<RuleSet>) {
        self.sender.send_replace(rules);
    }

    /// The rule set in force.
    pub fn current(&self) -> Arc<RuleSet> {
        self.sender.borrow().clone()
    }

    /// A subscriber: it sees the current rule set, then every later one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RuleSet>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDMS: &str = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.example.com/ns]\n";

    #[tokio::test]
    async fn a_subscriber_sees_the_rule_set_in_force_then_each_published_one() {
        let feed = RuleFeed::new(Arc::new(RuleSet::empty()));
        let mut subscriber = feed.subscribe();
        let before = subscriber.borrow_and_update().rules().len();
        feed.publish(Arc::new(rules::load_str(IDMS, "idms.yaml").unwrap()));
        subscriber.changed().await.expect("the feed is open");
        let after = subscriber.borrow_and_update().rules().len();
        assert_eq!((before, after), (0, 1));
    }

    #[test]
    fn a_source_that_fails_to_load_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, IDMS).unwrap();
        let feed = RuleFeed::new(Arc::new(RuleSet::empty()));
        let loaded = feed
            .reload_from(&RuleSource::Files(vec![good.clone()]))
            .map(|r| r.rules().len());
        std::fs::write(&good, "kind: [").unwrap();
        let failed = feed.reload_from(&RuleSource::Files(vec![good])).is_err();
        assert_eq!(
            (loaded.ok(), failed, feed.current().rules().len()),
            (Some(1), true, 1)
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
