//! What a reload swaps, whole and atomically ([`InForce`]): the rule set, the registries that
//! may be contacted, who may pull, and the upstream client; and whether the rule set is complete
//! yet. A request keeps what was in force when it started.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::access::Access;
use crate::reference::Reference;
use crate::rules::{Role, RuleSet, ViewName, Views};
use crate::upstream::Upstream;

use super::error::Error;
use super::open::{Proxy, ProxySettings};
use super::reach::Reachable;

/// What the configuration and the rule sources put in force.
pub(super) struct InForce {
    /// The rule set of each view (replaced whole by a reload); every request today is routed
    /// by the management view's.
    pub(super) rules: ArcSwap<Views>,
    /// The registries that may be contacted, from the rules and configuration in force.
    pub(super) reachable: ArcSwap<Reachable>,
    /// Replaced whole when the upstream settings are reloaded.
    pub(super) upstream: ArcSwap<Upstream>,
    /// Who may pull what (the `clients` section and its files).
    pub(super) access: ArcSwap<Access>,
    /// Why the rule set in force is not complete yet (a rule source still on its first load):
    /// pulls are refused and `/readyz` fails while it is set.
    pub(super) incomplete: ArcSwapOption<String>,
    /// Woken when the rule set becomes complete, for in-process work that waits for it.
    pub(super) completed: tokio::sync::Notify,
}

impl InForce {
    pub(super) fn new(
        rules: Arc<RuleSet>,
        upstream: Upstream,
        access: Access,
        settings: &ProxySettings<'_>,
    ) -> InForce {
        InForce {
            reachable: ArcSwap::from_pointee(Reachable::new(&rules, settings)),
            rules: ArcSwap::from_pointee(Views::new(rules)),
            upstream: ArcSwap::from_pointee(upstream),
            access: ArcSwap::from_pointee(access),
            incomplete: ArcSwapOption::empty(),
            completed: tokio::sync::Notify::new(),
        }
    }
}

/// What clients are told while the rule set is incomplete. Why it is names cluster objects
/// (another tenant's ConfigMap, its content, a permission to grant): that is for operators, in
/// `/status` (`rules.incomplete`) and the logs, not for whoever pulls or probes.
pub const RULES_INCOMPLETE: &str =
    "the mirror rules are not complete yet (an operator finds why in /status and the logs)";

impl Proxy {
    /// Replaces the management view's rule set, keeping the other views; requests already
    /// routed keep the set they started with. `settings` gives the registries the configuration
    /// names (they stay reachable).
    pub fn replace_rules<'a>(&self, rules: Arc<RuleSet>, settings: impl Into<ProxySettings<'a>>) {
        let views = self
            .in_force
            .rules
            .load()
            .replacing(ViewName::Management, rules);
        self.replace_views(Arc::new(views), settings);
    }

    /// Replaces the rules of every view at once. The reachable registries and the rule metrics
    /// follow the management view (the only view until views per tenant are served).
    pub fn replace_views<'a>(&self, views: Arc<Views>, settings: impl Into<ProxySettings<'a>>) {
        let settings: ProxySettings<'a> = settings.into();
        let management = views.management();
        self.metrics
            .rules_loaded(management, settings.configured_registries());
        self.in_force
            .reachable
            .store(Arc::new(Reachable::new(management, &settings)));
        self.in_force.rules.store(views);
    }

    /// Replaces who may pull; requests already authenticated keep the access they started with.
    pub fn replace_access(&self, access: Access) {
        self.in_force.access.store(Arc::new(access));
    }

    /// Keeps the pull sources mirrorgate may contact; refuses (before any connection) a
    /// request none of whose sources may be contacted.
    pub(super) fn reachable_only<T>(
        &self,
        logical: &Reference,
        sources: &mut Vec<T>,
        source: impl Fn(&T) -> (&str, Role),
    ) -> Result<(), Error> {
        let reachable = self.in_force.reachable.load();
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
        self.in_force.upstream.store(Arc::new(upstream));
    }

    /// The rule set in force for the management view, which routes every request today.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.in_force.rules.load().management().clone()
    }

    /// The rules in force, per view.
    pub fn views(&self) -> Arc<Views> {
        self.in_force.rules.load_full()
    }

    /// The `Via` name of this mirrorgate in force (a request carrying it is a loop).
    pub fn via_token(&self) -> crate::upstream::ViaToken {
        self.in_force.upstream.load().via_token().clone()
    }

    /// Who may pull, as loaded last.
    pub fn access(&self) -> Arc<Access> {
        self.in_force.access.load_full()
    }

    /// Marks the rule set in force as incomplete (`Some(why)`: a source has not completed its
    /// first load, e.g. the cluster's objects are not listed yet) or complete (`None`). While it
    /// is incomplete, pulls are answered 503 and `/readyz` fails: serving without a missing
    /// NeverContactSource rule could contact a source the rules forbid.
    pub fn set_incomplete(&self, why: Option<String>) {
        let complete = why.is_none();
        self.in_force.incomplete.store(why.map(Arc::new));
        if complete {
            self.in_force.completed.notify_waiters();
        }
    }

    /// Completes once the rule set in force is complete: in-process work (release warm-up)
    /// follows the same rule as pulls, which are refused until then.
    pub async fn rules_complete(&self) {
        loop {
            let notified = self.in_force.completed.notified();
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
        self.in_force
            .incomplete
            .rcu(|current| current.as_ref().map(|_| why.clone()));
    }

    /// Why the rule set in force is incomplete, if it is.
    pub fn incomplete(&self) -> Option<Arc<String>> {
        self.in_force.incomplete.load_full()
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
}

/// Writes and removes a probe file: the only sure test that a directory is writable.
fn tempfile_probe(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".ready-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}
