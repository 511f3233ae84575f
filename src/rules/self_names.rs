//! mirrorgate's own addresses ([`SelfNames`]), and the mirrors that name it ([`SelfMirror`]).
//!
//! A management cluster whose ImageDigestMirrorSet sends `quay.io/x` to
//! `mirrorgate.mirrorgate.svc:5000/quay.io/x` tells its nodes "pull through mirrorgate". When
//! mirrorgate reads that same object (or two mirrorgates name each other), the mirror is
//! mirrorgate itself: the rest of its location is a path-prefix address ("this proxy, for
//! quay.io/x"), and mirrorgate is already the one routing the pull. So `resolve` skips such a
//! mirror, with the reason, and goes on with the next pull source; `check` reports it once per
//! rule. The rules themselves are left as written (`registries-conf` still renders the mirror,
//! which is what the nodes should use).

use std::fmt;

use rustc_hash::FxHashSet;

use super::{RepoScope, Scope, Serves};

/// The `host[:port]` names under which mirrorgate is reached. A name with a port matches that
/// host and port exactly; a name without a port matches the host on any port (it is our host,
/// whichever port a rule writes). Hosts compare without regard to ASCII case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfNames {
    /// `host:port`, lower case.
    with_port: FxHashSet<Box<str>>,
    /// `host`, lower case.
    any_port: FxHashSet<Box<str>>,
}

impl SelfNames {
    /// The set of `names` (`host` or `host:port`, IPv6 literals in brackets).
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> SelfNames {
        let mut set = SelfNames::default();
        for name in names {
            let name = name.as_ref().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if host_of(&name).len() == name.len() {
                set.any_port.insert(name.into());
            } else {
                set.with_port.insert(name.into());
            }
        }
        set
    }

    /// Whether no name is known.
    pub fn is_empty(&self) -> bool {
        self.with_port.is_empty() && self.any_port.is_empty()
    }

    /// The self name that `registry` (`host[:port]` as in a reference) matches, if any.
    pub fn matching(&self, registry: &str) -> Option<&str> {
        if self.is_empty() {
            return None;
        }
        let lower = registry.to_ascii_lowercase();
        if let Some(name) = self.with_port.get(lower.as_str()) {
            return Some(name);
        }
        self.any_port.get(host_of(&lower)).map(|name| &**name)
    }

    /// The self name that the host of repository scope `location` matches, if any.
    pub(crate) fn matching_location(&self, location: &str) -> Option<&str> {
        let registry = location.split('/').next().unwrap_or(location);
        self.matching(registry)
    }

    /// The names, sorted (ports first written as given).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .with_port
            .iter()
            .chain(&self.any_port)
            .map(|n| &**n)
            .collect();
        names.sort_unstable();
        names
    }
}

/// The host of `host[:port]`, brackets of an IPv6 literal kept.
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return match registry.find(']') {
            Some(end) => &registry[..=end],
            None => registry,
        };
    }
    registry.split(':').next().unwrap_or(registry)
}

/// A mirror of a rule that is mirrorgate itself, for `check`: reported once per rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfMirror {
    /// The rule's source scope.
    pub scope: Scope,
    /// The mirror as written.
    pub mirror: RepoScope,
    /// The kinds of reference it is listed for (digest, tag or both).
    pub serves: Vec<Serves>,
    /// The self name it matched.
    pub self_name: String,
}

impl SelfMirror {
    /// What the mirror addresses through mirrorgate: the location after its host (a
    /// path-prefix address such as `quay.io/x`), or empty for a host-only mirror.
    pub fn addresses(&self) -> &str {
        self.mirror
            .as_str()
            .split_once('/')
            .map_or("", |(_, path)| path)
    }
}

impl fmt::Display for SelfMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self
            .serves
            .iter()
            .map(|s| match s {
                Serves::Digest => "digest",
                Serves::Tag => "tag",
            })
            .collect();
        write!(
            f,
            "{}: mirror {} ({}) is mirrorgate itself (self name {}); skipped when routing",
            self.scope,
            self.mirror,
            kinds.join(", "),
            self.self_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;
    use crate::rules::{ResolveError, Role, RuleSet, load_str};

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// An IDMS and an ITMS for `quay.io/ns` whose first mirror is mirrorgate's Service.
    fn management_rules(policy: &str) -> RuleSet {
        let yaml = format!(
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: through-mirrorgate\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors:\n    - mirrorgate.mirrorgate.svc:5000/quay.io/ns\n    - mirror.corp.com/ns\n    mirrorSourcePolicy: {policy}\n---\napiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: through-mirrorgate\nspec:\n  imageTagMirrors:\n  - source: quay.io/ns\n    mirrors:\n    - mirrorgate.mirrorgate.svc:5000/quay.io/ns\n    mirrorSourcePolicy: {policy}\n"
        );
        load_str(&yaml, "rules.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn sources(rules: &RuleSet, image: &str) -> (Vec<(Role, String)>, Vec<String>) {
        let resolution = rules
            .resolve(&Reference::parse_normalized(image).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        (
            resolution
                .sources
                .iter()
                .map(|s| (s.role, s.reference.to_string()))
                .collect(),
            resolution
                .skipped
                .iter()
                .map(|s| format!("{} ({})", s.reference, s.self_name))
                .collect(),
        )
    }

    #[test]
    fn a_mirror_on_a_self_name_is_skipped_and_the_next_pull_source_follows() {
        let rules = management_rules("AllowContactingSource")
            .with_self_names(SelfNames::new(["mirrorgate.mirrorgate.svc:5000"]));
        assert_eq!(
            sources(&rules, &format!("quay.io/ns/app@{DIGEST}")),
            (
                vec![
                    (Role::Mirror, format!("mirror.corp.com/ns/app@{DIGEST}")),
                    (Role::Source, format!("quay.io/ns/app@{DIGEST}")),
                ],
                vec![format!(
                    "mirrorgate.mirrorgate.svc:5000/quay.io/ns/app@{DIGEST} (mirrorgate.mirrorgate.svc:5000)"
                )]
            )
        );
    }

    #[test]
    fn without_self_names_the_same_mirror_is_an_upstream() {
        let rules = management_rules("AllowContactingSource");
        assert_eq!(
            sources(&rules, "quay.io/ns/app:v1"),
            (
                vec![
                    (
                        Role::Mirror,
                        "mirrorgate.mirrorgate.svc:5000/quay.io/ns/app:v1".to_owned()
                    ),
                    (Role::Source, "quay.io/ns/app:v1".to_owned()),
                ],
                vec![]
            )
        );
    }

    #[test]
    fn a_blocked_scope_whose_only_mirror_is_mirrorgate_names_the_skipped_mirror() {
        let rules = management_rules("NeverContactSource")
            .with_self_names(SelfNames::new(["mirrorgate.mirrorgate.svc"]));
        let error = rules
            .resolve(&Reference::parse_normalized("quay.io/ns/app:v1").unwrap())
            .unwrap_err();
        let ResolveError::Blocked { skipped, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(
            (skipped.len(), error.to_string().ends_with(
                "no usable mirror serves tag references (skipped: mirror mirrorgate.mirrorgate.svc:5000/quay.io/ns/app:v1 is mirrorgate itself (self name mirrorgate.mirrorgate.svc): already routing it)"
            )),
            (1, true),
            "{error}"
        );
    }

    #[test]
    fn self_mirrors_are_reported_once_per_rule() {
        let rules = management_rules("AllowContactingSource")
            .with_self_names(SelfNames::new(["mirrorgate.mirrorgate.svc:5000"]));
        let reported: Vec<String> = rules
            .self_mirrors()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            reported,
            vec![
                "quay.io/ns: mirror mirrorgate.mirrorgate.svc:5000/quay.io/ns (digest, tag) is mirrorgate itself (self name mirrorgate.mirrorgate.svc:5000); skipped when routing"
            ]
        );
    }

    #[test]
    fn a_name_with_a_port_matches_only_that_port() {
        let names = SelfNames::new(["mirrorgate.mirrorgate.svc:5000"]);
        assert_eq!(
            (
                names.matching("mirrorgate.mirrorgate.svc:5000"),
                names.matching("mirrorgate.mirrorgate.svc:5001"),
                names.matching("mirrorgate.mirrorgate.svc"),
            ),
            (Some("mirrorgate.mirrorgate.svc:5000"), None, None)
        );
    }

    #[test]
    fn a_name_without_a_port_matches_the_host_on_any_port() {
        let names = SelfNames::new(["mirrorgate.example.com"]);
        assert_eq!(
            (
                names.matching("mirrorgate.example.com"),
                names.matching("mirrorgate.example.com:5000"),
                names.matching("other.example.com:5000"),
            ),
            (
                Some("mirrorgate.example.com"),
                Some("mirrorgate.example.com"),
                None
            )
        );
    }

    #[test]
    fn hosts_compare_without_case_and_ipv6_literals_keep_their_brackets() {
        let names = SelfNames::new(["MirrorGate.Example.com:5000", "[::1]"]);
        assert_eq!(
            (
                names.matching("mirrorgate.example.COM:5000"),
                names.matching("[::1]:5000"),
            ),
            (Some("mirrorgate.example.com:5000"), Some("[::1]"))
        );
    }

    #[test]
    fn a_location_is_matched_by_its_host() {
        let names = SelfNames::new(["127.0.0.1:5000"]);
        assert_eq!(
            (
                names.matching_location("127.0.0.1:5000/quay.io/ns"),
                names.matching_location("127.0.0.1:5001/quay.io/ns"),
            ),
            (Some("127.0.0.1:5000"), None)
        );
    }
}
