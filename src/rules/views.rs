//! The rules in force as a map of views: each view is one complete [`RuleSet`], and the proxy
//! routes a pull by the rule set of the view it belongs to.
//!
//! Principal types: [`ViewName`] (which view: the management cluster's, a HostedCluster's or a
//! NodePool's, written `management`, `hostedcluster/<namespace>/<name>`,
//! `nodepool/<namespace>/<name>`) and [`Views`] (view name → rule set; the `management` view is
//! always there). Replacing one view shares every other view's `Arc`, so that a change of one
//! tenant costs only its own rebuild and requests routed by another view keep their set.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

use super::RuleSet;

/// Which view a rule set is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViewName {
    /// The management cluster's mirror sets and the plain mirror sets of the rule files: what a
    /// puller that names no view gets.
    Management,
    /// What one HostedCluster's guest nodes get.
    HostedCluster {
        /// The HostedCluster's namespace.
        namespace: String,
        /// The HostedCluster's name.
        name: String,
    },
    /// What the nodes of one NodePool get: its HostedCluster's view and its own `spec.config`.
    NodePool {
        /// The NodePool's namespace.
        namespace: String,
        /// The NodePool's name.
        name: String,
    },
}

/// Why a text is not a view name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{text:?} is not a view: {problem} (a view is `management`, `hostedcluster/<namespace>/<name>` or `nodepool/<namespace>/<name>`)"
)]
pub struct ViewNameError {
    text: String,
    problem: &'static str,
}

impl ViewName {
    const MANAGEMENT: &'static str = "management";
    const HOSTED_CLUSTER: &'static str = "hostedcluster";
    const NODE_POOL: &'static str = "nodepool";
}

impl fmt::Display for ViewName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewName::Management => f.write_str(ViewName::MANAGEMENT),
            ViewName::HostedCluster { namespace, name } => {
                write!(f, "{}/{namespace}/{name}", ViewName::HOSTED_CLUSTER)
            }
            ViewName::NodePool { namespace, name } => {
                write!(f, "{}/{namespace}/{name}", ViewName::NODE_POOL)
            }
        }
    }
}

impl FromStr for ViewName {
    type Err = ViewNameError;

    fn from_str(text: &str) -> Result<ViewName, ViewNameError> {
        let error = |problem| ViewNameError {
            text: text.to_owned(),
            problem,
        };
        let mut parts = text.split('/');
        let kind = parts.next().unwrap_or_default();
        if kind == ViewName::MANAGEMENT {
            return match parts.next() {
                None => Ok(ViewName::Management),
                Some(_) => Err(error("the management view has no namespace or name")),
            };
        }
        if kind != ViewName::HOSTED_CLUSTER && kind != ViewName::NODE_POOL {
            return Err(error("unknown kind of view"));
        }
        let (Some(namespace), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(error("expected <kind>/<namespace>/<name>"));
        };
        if !is_namespace(namespace) {
            return Err(error(
                "the namespace is not a DNS label (lowercase letters, digits and '-', at most 63)",
            ));
        }
        if !is_object_name(name) {
            return Err(error(
                "the name is not a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)",
            ));
        }
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        Ok(if kind == ViewName::HOSTED_CLUSTER {
            ViewName::HostedCluster { namespace, name }
        } else {
            ViewName::NodePool { namespace, name }
        })
    }
}

/// A DNS-1123 label, what Kubernetes requires of a namespace.
fn is_namespace(text: &str) -> bool {
    text.len() <= 63 && !text.contains('.') && is_object_name(text)
}

/// A DNS-1123 subdomain, what Kubernetes requires of most object names.
fn is_object_name(text: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !text.is_empty()
        && text.len() <= 253
        && text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric)
        && text
            .chars()
            .all(|c| alphanumeric(c) || c == '-' || c == '.')
}

/// The rules in force: one complete rule set per view. The management view is a field of its own,
/// not a key among the others, so that it cannot be missing and the lookup every request makes
/// for it is no lookup at all.
#[derive(Debug, Clone)]
pub struct Views {
    management: Arc<RuleSet>,
    /// The HostedCluster and NodePool views, by name (never `management`).
    tenants: BTreeMap<ViewName, Arc<RuleSet>>,
}

/// The management view's name, for [`Views::iter`].
static MANAGEMENT: ViewName = ViewName::Management;

impl Views {
    /// Only the management view, with `management`.
    pub fn new(management: Arc<RuleSet>) -> Views {
        Views {
            management,
            tenants: BTreeMap::new(),
        }
    }

    /// The management view's rule set.
    pub fn management(&self) -> &Arc<RuleSet> {
        &self.management
    }

    /// The rule set of `view`, if the view exists.
    pub fn get(&self, view: &ViewName) -> Option<&Arc<RuleSet>> {
        match view {
            ViewName::Management => Some(&self.management),
            tenant => self.tenants.get(tenant),
        }
    }

    /// These views with `view`'s rule set replaced by `rules` (or added); every other view keeps
    /// its `Arc`.
    pub fn replacing(&self, view: ViewName, rules: Arc<RuleSet>) -> Views {
        let mut next = self.clone();
        match view {
            ViewName::Management => next.management = rules,
            tenant => {
                next.tenants.insert(tenant, rules);
            }
        }
        next
    }

    /// These views without `view`; the management view cannot be removed (it is what a puller
    /// naming no view gets), so removing it changes nothing.
    pub fn without(&self, view: &ViewName) -> Views {
        let mut next = self.clone();
        next.tenants.remove(view);
        next
    }

    /// Every view and its rule set: management first, then the others in the order of their names.
    pub fn iter(&self) -> impl Iterator<Item = (&ViewName, &Arc<RuleSet>)> {
        std::iter::once((&MANAGEMENT, &self.management)).chain(self.tenants.iter())
    }

    /// How many views there are (at least one: management).
    pub fn len(&self) -> usize {
        self.tenants.len() + 1
    }

    /// Never: the management view is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The management view's rule set, given up by these views.
    pub fn into_management(self) -> Arc<RuleSet> {
        self.management
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosted(name: &str) -> ViewName {
        ViewName::HostedCluster {
            namespace: "clusters".to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn view_names_read_back_as_they_are_written() {
        let written = [
            "management",
            "hostedcluster/clusters/tenant-a",
            "nodepool/clusters/tenant-a.workers",
        ];
        let read: Vec<String> = written
            .iter()
            .map(|text| text.parse::<ViewName>().unwrap().to_string())
            .collect();
        assert_eq!(read, written);
    }

    #[test]
    fn a_view_name_with_a_wrong_kind_or_part_count_or_name_is_refused_saying_why() {
        let refusals: Vec<String> = [
            "cluster/clusters/a",
            "hostedcluster/clusters",
            "nodepool/clusters/a/b",
            "management/x",
            "hostedcluster/Clusters/a",
            "hostedcluster/clu.sters/a",
            "nodepool/clusters/-a",
        ]
        .iter()
        .map(|text| text.parse::<ViewName>().unwrap_err().problem.to_owned())
        .collect();
        assert_eq!(
            refusals,
            [
                "unknown kind of view",
                "expected <kind>/<namespace>/<name>",
                "expected <kind>/<namespace>/<name>",
                "the management view has no namespace or name",
                "the namespace is not a DNS label (lowercase letters, digits and '-', at most 63)",
                "the namespace is not a DNS label (lowercase letters, digits and '-', at most 63)",
                "the name is not a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)",
            ]
        );
    }

    #[test]
    fn replacing_one_view_leaves_every_other_views_rule_set_the_same_arc() {
        let management = Arc::new(RuleSet::empty());
        let tenant_b = Arc::new(RuleSet::empty());
        let views = Views::new(management.clone()).replacing(hosted("b"), tenant_b.clone());
        let replaced = views.replacing(hosted("a"), Arc::new(RuleSet::empty()));
        assert_eq!(
            (
                Arc::ptr_eq(replaced.management(), &management),
                Arc::ptr_eq(replaced.get(&hosted("b")).unwrap(), &tenant_b),
                replaced.len(),
                views.get(&hosted("a")).is_some(),
            ),
            (true, true, 3, false)
        );
    }

    #[test]
    fn the_management_view_stays_when_asked_to_remove_it() {
        let views = Views::new(Arc::new(RuleSet::empty()))
            .replacing(hosted("a"), Arc::new(RuleSet::empty()));
        let names = |views: &Views| views.iter().map(|(v, _)| v.to_string()).collect::<Vec<_>>();
        assert_eq!(
            (
                names(&views.without(&ViewName::Management)),
                names(&views.without(&hosted("a")))
            ),
            (
                vec![
                    "management".to_owned(),
                    "hostedcluster/clusters/a".to_owned()
                ],
                vec!["management".to_owned()]
            )
        );
    }
}
