//! Rendering a rule set as the `registries.conf` (containers-registries.conf(5), v2) that the
//! Machine Config Operator writes to nodes from the same objects.
//!
//! The entries follow openshift/runtime-utils `EditRegistriesConfig`: digest sources first, sorted,
//! then tag sources, sorted, each appended to the entry of its scope; a wildcard scope is written as
//! `prefix` with no `location`; every mirror carries its own `pull-from-mirror`. The header is the
//! one of the MCO's worker template. Reading this file back with containers/image gives the pull
//! sources that [`RuleSet::resolve`] gives.

use serde::Serialize;

use super::{RuleSet, Scope, Serves};

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct RegistriesConf {
    unqualified_search_registries: Vec<&'static str>,
    short_name_mode: &'static str,
    additional_layer_store_auth_helper: &'static str,
    registry: Vec<Registry>,
}

#[derive(Serialize)]
struct Registry {
    prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    blocked: bool,
    mirror: Vec<Mirror>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Mirror {
    location: String,
    pull_from_mirror: &'static str,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RuleSet {
    /// The rule set as the TOML `registries.conf` the MCO renders.
    pub fn to_registries_conf(&self) -> Result<String, toml::ser::Error> {
        let mut registries: Vec<Registry> = Vec::new();
        // Rules are sorted by scope already; digest entries are created first, as the MCO does.
        for serves in [Serves::Digest, Serves::Tag] {
            for rule in self
                .rules()
                .iter()
                .filter(|r| !r.mirrors(serves).is_empty())
            {
                let scope = rule.scope.as_str();
                let index = match registries.iter().position(|r| r.scope() == scope) {
                    Some(index) => index,
                    None => {
                        registries.push(match &rule.scope {
                            Scope::Wildcard(pattern) => Registry {
                                prefix: pattern.to_string(),
                                location: None,
                                blocked: false,
                                mirror: Vec::new(),
                            },
                            Scope::Repo(location) => Registry {
                                prefix: String::new(),
                                location: Some(location.to_string()),
                                blocked: false,
                                mirror: Vec::new(),
                            },
                        });
                        registries.len() - 1
                    }
                };
                let registry = &mut registries[index];
                registry.blocked |= rule.blocked;
                registry
                    .mirror
                    .extend(rule.mirrors(serves).iter().map(|m| Mirror {
                        location: m.to_string(),
                        pull_from_mirror: match serves {
                            Serves::Digest => "digest-only",
                            Serves::Tag => "tag-only",
                        },
                    }));
            }
        }
        let conf = RegistriesConf {
            unqualified_search_registries: vec!["registry.access.redhat.com", "docker.io"],
            short_name_mode: "",
            additional_layer_store_auth_helper: "",
            registry: registries,
        };
        toml::to_string(&conf)
    }
}

impl Registry {
    fn scope(&self) -> &str {
        self.location.as_deref().unwrap_or(&self.prefix)
    }
}
