//! Which registries mirrorgate may contact: those the rules name (sources and mirrors, hosts
//! under a wildcard source included), those of `registries`, and `default_registry`. Anything else
//! a client names is refused before a connection is made — otherwise the proxy would lend its
//! pull secret and its network position to anyone (an open proxy, an SSRF gadget). IP literals and
//! `localhost` are reachable only when `registries` names them explicitly.
//!
//! A registry is matched as `host:port` exactly as written: a client naming another port on a
//! host the rules name (`quay.io:6200`) is refused. Only mirrors, which the rules produce, keep
//! the port-agnostic match of a host-only rule (a wildcard rewrite keeps the client's port).

use std::collections::HashSet;
use std::net::IpAddr;

use super::open::ProxySettings;
use crate::rules::{Role, RuleSet};

/// The registries mirrorgate may contact.
#[derive(Debug, Default)]
pub struct Reachable {
    any: bool,
    /// `registries` keys and `default_registry`: always reachable, IP literals included.
    explicit: HashSet<String>,
    /// Hosts (with their port, if written) of rule sources and mirrors.
    named: HashSet<String>,
    /// Wildcard suffixes (`.example.com`) of rule sources.
    wildcards: Vec<String>,
}

impl Reachable {
    /// What `rules` and `settings` allow.
    pub fn new(rules: &RuleSet, settings: &ProxySettings<'_>) -> Reachable {
        let explicit: HashSet<String> = settings
            .configured_registries()
            .map(str::to_owned)
            .collect();
        let (named, wildcards) = rules.registries();
        Reachable {
            any: settings.allow_any_registry,
            explicit,
            named,
            wildcards,
        }
    }

    /// The registries named one by one (not those under a wildcard), sorted.
    pub(crate) fn listed(&self) -> Vec<String> {
        let mut listed: Vec<String> = self.explicit.union(&self.named).cloned().collect();
        listed.sort();
        listed
    }

    /// Why `registry` is refused: the message of the 403 `serve` answers, which `resolve` prints
    /// too.
    pub fn refusal(registry: &str) -> String {
        format!(
            "mirrorgate does not contact {registry}: it is not named by the rules, `registries` or `default_registry`"
        )
    }

    /// The `registries` entries that nothing else names: no rule source or mirror, not
    /// `default_registry`. Such an entry only serves clients that name its host directly, and is
    /// often a typo (`mirror.internl`).
    pub fn unused_registries(rules: &RuleSet, settings: &ProxySettings<'_>) -> Vec<String> {
        let (named, wildcards) = rules.registries();
        let mut unused: Vec<String> = settings
            .registries
            .keys()
            .filter(|registry| {
                let host = host_of(registry);
                registry.as_str() != settings.default_registry
                    && !named.contains(registry.as_str())
                    && !named.contains(host)
                    && !wildcards
                        .iter()
                        .any(|suffix| host.ends_with(suffix.as_str()))
            })
            .cloned()
            .collect();
        unused.sort();
        unused
    }

    /// The warning for a `registries` entry [`Reachable::unused_registries`] found.
    pub fn unused_registry_warning(registry: &str) -> String {
        format!(
            "registries.{registry}: no rule source or mirror and not default_registry names this registry; only clients naming it directly reach it (a typo?)"
        )
    }

    /// Whether `registry` (`host[:port]` as in a reference), as a pull source in `role`, may
    /// be contacted.
    pub fn allows(&self, registry: &str, role: Role) -> bool {
        if self.any || self.explicit.contains(registry) {
            return true;
        }
        let host = host_of(registry);
        if host == "localhost" || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            return false;
        }
        if self.named.contains(registry) {
            return true;
        }
        let under_wildcard = self
            .wildcards
            .iter()
            .any(|suffix| host.ends_with(suffix.as_str()));
        match role {
            // Produced by the rules: a host-only rule covers its host on any port
            // (containers/image's prefix match), and a wildcard rewrite keeps the port.
            Role::Mirror => (host != registry && self.named.contains(host)) || under_wildcard,
            // Named by the client: only a port written in the rules (none, under a wildcard).
            Role::Source => host == registry && under_wildcard,
        }
    }
}

/// The host of `host[:port]`, brackets of an IPv6 literal kept.
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    registry.split(':').next().unwrap_or(registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    impl Reachable {
        fn allows_source(&self, registry: &str) -> bool {
            self.allows(registry, Role::Source)
        }
    }

    fn reachable(allow_any: bool) -> Reachable {
        let rules = crate::rules::load_str(
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.example.com/ns, 10.0.0.5:5000/ns]\n  - source: \"*.corp.example.com\"\n    mirrors: [mirror.example.com/corp]\n",
            "rules.yaml",
        )
        .unwrap();
        let mut config = Config {
            allow_any_registry: allow_any,
            ..Config::default()
        };
        config
            .registries
            .insert("127.0.0.1:5001".to_owned(), Default::default());
        Reachable::new(&rules, &(&config).into())
    }

    #[test]
    fn rule_sources_and_mirrors_are_reachable() {
        let r = reachable(false);
        assert!(r.allows_source("quay.io") && r.allows_source("mirror.example.com"));
    }

    #[test]
    fn another_port_on_a_rule_named_host_is_reachable_only_as_a_mirror() {
        let r = reachable(false);
        assert_eq!(
            (
                r.allows_source("quay.io:6200"),
                r.allows_source("mirror.example.com:6200"),
                r.allows("mirror.example.com:6200", Role::Mirror),
                r.allows_source("a.corp.example.com:6200"),
            ),
            (false, false, true, false)
        );
    }

    #[test]
    fn hosts_under_a_wildcard_source_are_reachable() {
        assert!(reachable(false).allows_source("a.corp.example.com"));
    }

    #[test]
    fn the_default_registry_is_reachable() {
        assert!(reachable(false).allows_source("docker.io"));
    }

    #[test]
    fn an_unnamed_host_is_not_reachable() {
        assert!(!reachable(false).allows_source("evil.example.net"));
    }

    #[test]
    fn an_ip_literal_named_only_by_the_rules_is_not_reachable() {
        assert!(!reachable(false).allows_source("10.0.0.5:5000"));
    }

    #[test]
    fn an_ip_literal_of_registries_is_reachable() {
        assert!(reachable(false).allows_source("127.0.0.1:5001"));
    }

    #[test]
    fn localhost_is_not_reachable_unless_configured() {
        assert!(!reachable(false).allows_source("localhost:5000"));
    }

    #[test]
    fn a_registries_entry_no_rule_names_is_unused() {
        let rules = crate::rules::load_str(
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.internal/ns]\n  - source: \"*.corp.example.com\"\n    mirrors: [mirror.internal/corp]\n",
            "rules.yaml",
        )
        .unwrap();
        let mut config = Config::default();
        for host in [
            "mirror.internal",
            "mirror.internl",
            "quay.io:443",
            "a.corp.example.com",
            "docker.io",
        ] {
            config
                .registries
                .insert(host.to_owned(), Default::default());
        }
        assert_eq!(
            Reachable::unused_registries(&rules, &(&config).into()),
            ["mirror.internl"]
        );
    }

    #[test]
    fn allow_any_registry_lifts_the_limit() {
        assert!(reachable(true).allows_source("evil.example.net"));
    }
}
