//! The override map: one [`Rule`] per source scope, built once from every object and then
//! immutable, with an index that finds the rule for a repository name by scope rather than by
//! scanning every rule.
//!
//! Building applies the Machine Config Operator's checks across objects (one policy per source
//! string), drops entries without a real mirror, and merges the mirror lists of each scope
//! separately for digest and tag mirrors (see `merge`), each at most [`MAX_MIRRORS_PER_SCOPE`]
//! long (mirrorgate's own bound: every mirror is a request of a pull they all fail).

use std::collections::{BTreeMap, HashMap, HashSet};

use rustc_hash::{FxHashMap, FxHashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::members::MemberError;
use super::merge::merge_mirror_lists;
use super::objects::{ConfigMapReference, ConfigMapSeen, Decoded};
use super::scope::{RepoScope, Scope, prefix_ends, wildcard_suffixes};
use super::self_names::{SelfMirror, SelfNames};
use super::{MAX_MIRRORS_PER_SCOPE, MirrorSet, Policy, Problem, RuleError, Serves, Warning};

/// The merged rule of one source scope: what a `[[registry]]` entry of `registries.conf` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The source scope.
    pub scope: Scope,
    /// The source must never be contacted (some entry of this scope says NeverContactSource).
    /// This blocks the scope for tag and digest pulls alike.
    pub blocked: bool,
    /// Merged IDMS and ICSP mirrors, tried for digest references.
    pub digest_mirrors: Vec<RepoScope>,
    /// Merged ITMS mirrors, tried for tag references.
    pub tag_mirrors: Vec<RepoScope>,
    /// The object entries this rule was merged from, as `file: location: field`.
    pub defined_by: Vec<String>,
    /// The entries that set NeverContactSource, as `file: location: field`.
    pub blocked_by: Vec<String>,
    /// The objects the rule was merged from (`file: location`, `; `-separated).
    pub origin: Arc<str>,
    /// The objects that route the source of a digest reference: those with digest mirrors
    /// (IDMS, ICSP), else the whole rule.
    pub digest_source_origin: Arc<str>,
    /// The objects that route the source of a tag reference: those with tag mirrors (ITMS),
    /// else the whole rule.
    pub tag_source_origin: Arc<str>,
    /// For each of `digest_mirrors`, the objects that list it.
    pub digest_origins: Vec<Arc<str>>,
    /// For each of `tag_mirrors`, the objects that list it.
    pub tag_origins: Vec<Arc<str>>,
}

impl Rule {
    /// The mirrors tried for a reference of the given kind, in order.
    pub fn mirrors(&self, serves: Serves) -> &[RepoScope] {
        match serves {
            Serves::Digest => &self.digest_mirrors,
            Serves::Tag => &self.tag_mirrors,
        }
    }

    /// The objects that route the source of a reference of the given kind.
    pub fn source_origin(&self, serves: Serves) -> &Arc<str> {
        match serves {
            Serves::Digest => &self.digest_source_origin,
            Serves::Tag => &self.tag_source_origin,
        }
    }

    /// For each of [`Rule::mirrors`], the objects that list it.
    pub fn mirror_origins(&self, serves: Serves) -> &[Arc<str>] {
        match serves {
            Serves::Digest => &self.digest_origins,
            Serves::Tag => &self.tag_origins,
        }
    }
}

/// A found rule and where, in the matched reference string, the part after the scope begins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Match<'a> {
    pub rule: &'a Rule,
    /// For a wildcard this is the end of the host name, so a `:port` is carried to the mirror.
    pub rewrite_from: usize,
}

/// An immutable, validated set of mirror rules. Build it once, share it behind an `Arc`, and
/// replace it whole on reload.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Sorted by scope string, as containers/image sorts its registries.
    rules: Vec<Rule>,
    /// Repository scope → index into `rules`. FxHash: the keys come from the trusted rule files,
    /// so lookups of client-chosen names cannot lengthen probe sequences, and resolve does several
    /// lookups per attempt.
    by_scope: FxHashMap<Box<str>, usize>,
    /// Wildcard suffix (`.example.com`) → index into `rules`.
    by_wildcard: FxHashMap<Box<str>, usize>,
    /// Mirror locations under which a rewritten reference could fall in a blocked scope; only
    /// those need the blocked check of every attempt (usually none do).
    exposed_mirrors: FxHashSet<Box<str>>,
    objects: BTreeMap<String, usize>,
    warnings: Vec<Warning>,
    /// Where the documents came from (file paths, object names), in order.
    origins: Vec<Arc<str>>,
    /// mirrorgate's own addresses: mirrors on them are skipped by `resolve`.
    self_names: SelfNames,
    config_map_uses: Vec<ConfigMapUse>,
    /// The members refused, and what of each is in force instead.
    errors: Vec<MemberError>,
}

/// The distinct objects of `sets`, in order, as one `; `-separated text.
fn origins_of<'a>(sets: impl Iterator<Item = &'a MirrorSet>) -> Arc<str> {
    let mut seen: Vec<String> = Vec::new();
    for set in sets {
        let described = set.origin.describe();
        if !seen.contains(&described) {
            seen.push(described);
        }
    }
    Arc::from(seen.join("; "))
}

/// The ConfigMaps a HostedCluster (`spec.imageMirrorConfigRef`) or NodePool (`spec.config`) of
/// the rule files names, and which of them the rule set holds. Every ConfigMap read is applied,
/// named or not (it may be loaded on its own); this says what each cluster object draws on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapUse {
    /// `HostedCluster` or `NodePool`.
    pub kind: &'static str,
    /// `namespace/name`, or `name` when the object has no namespace.
    pub object: String,
    /// The named ConfigMaps found, as `namespace/name (file: location)`.
    pub applied: Vec<String>,
    /// The named ConfigMaps that no rule file holds.
    pub missing: Vec<String>,
}

/// What a rule set holds, for `mirrorgate check` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Where the documents came from, in order: the files read, for a file source.
    pub files: Vec<PathBuf>,
    /// Objects read per kind (containers such as List and ConfigMap included).
    pub objects: BTreeMap<String, usize>,
    /// Number of scopes with rules.
    pub scopes: usize,
    /// Scopes whose source is never contacted.
    pub blocked_scopes: Vec<String>,
    /// Accepted oddities.
    pub warnings: Vec<Warning>,
    /// What each HostedCluster and NodePool draws from ConfigMaps.
    pub config_map_uses: Vec<ConfigMapUse>,
    /// The members refused (see [`RuleSet::errors`]).
    pub errors: Vec<MemberError>,
}

impl RuleSet {
    /// Validates the decoded entries across objects and merges them into rules.
    pub(crate) fn build(
        mut decoded: Decoded,
        origins: Vec<Arc<str>>,
    ) -> Result<RuleSet, RuleError> {
        check_policies(&decoded.sets)?;
        let config_map_uses = resolve_references(
            &decoded.references,
            &decoded.config_maps,
            &mut decoded.warnings,
        );

        // One group per exact source string; parents and children stay separate rules.
        let mut groups: BTreeMap<&str, Vec<&MirrorSet>> = BTreeMap::new();
        for set in decoded.sets.iter().filter(|s| s.has_real_mirror()) {
            groups.entry(set.source.as_str()).or_default().push(set);
        }

        let mut rules = Vec::with_capacity(groups.len());
        for (source, sets) in groups {
            let merged = |serves: Serves| -> Vec<RepoScope> {
                let lists: Vec<Vec<&str>> = sets
                    .iter()
                    .filter(|s| s.serves == serves)
                    .map(|s| s.mirrors.iter().map(RepoScope::as_str).collect())
                    .collect();
                let by_name: HashMap<&str, &RepoScope> = sets
                    .iter()
                    .flat_map(|s| &s.mirrors)
                    .map(|m| (m.as_str(), m))
                    .collect();
                // A broken cycle can leave the source itself inside the list (runtime-utils
                // keeps it there too): it is then tried as a mirror, where it stands. A wildcard
                // source names no location and is left out.
                let source_location = match &sets[0].source {
                    Scope::Repo(location) => Some(location),
                    Scope::Wildcard(_) => None,
                };
                merge_mirror_lists(source, lists.iter().map(Vec::as_slice))
                    .into_iter()
                    .filter_map(|name| {
                        by_name
                            .get(name)
                            .copied()
                            .or(source_location.filter(|s| s.as_str() == name))
                            .cloned()
                    })
                    .collect()
            };
            let entry_name = |s: &&MirrorSet| format!("{}: {}", s.origin, s.field);
            let (digest_mirrors, tag_mirrors) = (merged(Serves::Digest), merged(Serves::Tag));
            let origin = origins_of(sets.iter().copied());
            // A mirror comes from the objects that list it; the source itself, where a broken
            // cycle leaves it in the list, from the rule.
            let mirror_origins = |serves: Serves, mirrors: &[RepoScope]| -> Vec<Arc<str>> {
                mirrors
                    .iter()
                    .map(|mirror| {
                        let listing = sets
                            .iter()
                            .copied()
                            .filter(|s| s.serves == serves && s.mirrors.contains(mirror));
                        match origins_of(listing) {
                            none if none.is_empty() => origin.clone(),
                            some => some,
                        }
                    })
                    .collect()
            };
            let source_origin = |serves: Serves| match origins_of(
                sets.iter().copied().filter(|s| s.serves == serves),
            ) {
                none if none.is_empty() => origin.clone(),
                some => some,
            };
            let (digest_source_origin, tag_source_origin) =
                (source_origin(Serves::Digest), source_origin(Serves::Tag));
            let digest_origins = mirror_origins(Serves::Digest, &digest_mirrors);
            let tag_origins = mirror_origins(Serves::Tag, &tag_mirrors);
            check_mirror_count(&sets, Serves::Digest, digest_mirrors.len())?;
            check_mirror_count(&sets, Serves::Tag, tag_mirrors.len())?;
            rules.push(Rule {
                scope: sets[0].source.clone(),
                blocked: sets.iter().any(|s| s.policy == Policy::NeverContactSource),
                digest_mirrors,
                tag_mirrors,
                defined_by: sets.iter().map(entry_name).collect(),
                blocked_by: sets
                    .iter()
                    .filter(|s| s.policy == Policy::NeverContactSource)
                    .map(entry_name)
                    .collect(),
                origin,
                digest_source_origin,
                tag_source_origin,
                digest_origins,
                tag_origins,
            });
        }

        let mut by_scope = FxHashMap::default();
        let mut by_wildcard = FxHashMap::default();
        for (index, rule) in rules.iter().enumerate() {
            match &rule.scope {
                Scope::Repo(scope) => by_scope.insert(scope.as_str().into(), index),
                Scope::Wildcard(pattern) => by_wildcard.insert(pattern[1..].into(), index),
            };
        }
        let mut rule_set = RuleSet {
            exposed_mirrors: FxHashSet::default(),
            rules,
            by_scope,
            by_wildcard,
            objects: decoded.objects,
            warnings: decoded.warnings,
            origins,
            self_names: SelfNames::default(),
            config_map_uses,
            errors: Vec::new(),
        };
        rule_set.exposed_mirrors = rule_set.find_exposed_mirrors();
        Ok(rule_set)
    }

    /// The mirrors `M` for which some blocked scope could govern `M` + the rest of a name: a
    /// blocked scope that contains `M`, one nested under `M`, or a blocked wildcard on `M`'s host.
    fn find_exposed_mirrors(&self) -> FxHashSet<Box<str>> {
        let blocked = || self.rules.iter().filter(|r| r.blocked);
        if blocked().next().is_none() {
            return FxHashSet::default();
        }
        let mut under_blocked: FxHashSet<&str> = FxHashSet::default();
        for rule in blocked() {
            if let Scope::Repo(scope) = &rule.scope {
                let scope = scope.as_str();
                under_blocked.extend(prefix_ends(scope).map(|end| &scope[..end]));
            }
        }
        let is_blocked = |index: &usize| self.rules[*index].blocked;
        self.rules
            .iter()
            .flat_map(|r| r.digest_mirrors.iter().chain(&r.tag_mirrors))
            .map(RepoScope::as_str)
            .filter(|&mirror| {
                under_blocked.contains(mirror)
                    || prefix_ends(mirror)
                        .any(|end| self.by_scope.get(&mirror[..end]).is_some_and(is_blocked))
                    || wildcard_suffixes(mirror)
                        .any(|(suffix, _)| self.by_wildcard.get(suffix).is_some_and(is_blocked))
            })
            .map(Box::from)
            .collect()
    }

    /// An empty rule set: every reference is pulled from its source.
    pub fn empty() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            by_scope: FxHashMap::default(),
            by_wildcard: FxHashMap::default(),
            exposed_mirrors: FxHashSet::default(),
            objects: BTreeMap::new(),
            warnings: Vec::new(),
            origins: Vec::new(),
            self_names: SelfNames::default(),
            config_map_uses: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The same rules, routed by mirrorgate reachable under `names`: a mirror on one of them is
    /// mirrorgate itself, and `resolve` skips it (see [`SelfNames`]). Applies to rules from any
    /// source; the rules themselves (and `registries-conf`) are unchanged.
    pub fn with_self_names(mut self, names: SelfNames) -> RuleSet {
        self.self_names = names;
        self
    }

    /// mirrorgate's own names in force.
    pub fn self_names(&self) -> &SelfNames {
        &self.self_names
    }

    /// The mirrors that are mirrorgate itself, once per rule (a mirror listed for digest and tag
    /// references is one entry), in rule order.
    pub fn self_mirrors(&self) -> Vec<SelfMirror> {
        let mut found: Vec<SelfMirror> = Vec::new();
        if self.self_names.is_empty() {
            return found;
        }
        for rule in &self.rules {
            let first = found.len();
            let listed = [
                (Serves::Digest, &rule.digest_mirrors),
                (Serves::Tag, &rule.tag_mirrors),
            ];
            for (serves, mirrors) in listed {
                for mirror in mirrors {
                    let Some(name) = self.self_names.matching_location(mirror.as_str()) else {
                        continue;
                    };
                    match found[first..].iter_mut().find(|s| &s.mirror == mirror) {
                        Some(entry) => entry.serves.push(serves),
                        None => found.push(SelfMirror {
                            scope: rule.scope.clone(),
                            mirror: mirror.clone(),
                            serves: vec![serves],
                            self_name: name.to_owned(),
                        }),
                    }
                }
            }
        }
        found
    }

    /// The rules, sorted by scope string.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Warnings collected while loading.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The members ([`super::load_with_members`]) that could not be taken as they are: each
    /// named with what is wrong and what of it is in force instead. Empty for a set built from
    /// files and documents alone, which fails as a whole.
    pub fn errors(&self) -> &[MemberError] {
        &self.errors
    }

    pub(super) fn with_member_errors(mut self, errors: Vec<MemberError>) -> RuleSet {
        self.errors = errors;
        self
    }

    /// What the rule set holds.
    pub fn summary(&self) -> Summary {
        Summary {
            files: self
                .origins
                .iter()
                .map(|origin| PathBuf::from(&**origin))
                .collect(),
            objects: self.objects.clone(),
            scopes: self.rules.len(),
            blocked_scopes: self
                .rules
                .iter()
                .filter(|r| r.blocked)
                .map(|r| r.scope.to_string())
                .collect(),
            warnings: self.warnings.clone(),
            config_map_uses: self.config_map_uses.clone(),
            errors: self.errors.clone(),
        }
    }

    /// The one rule that applies to a repository name (`host[:port]/path`), as containers/image
    /// `FindRegistry` picks it: the longest matching scope; a wildcard wins a tie, since `*` sorts
    /// before every host character.
    pub(crate) fn find(&self, name: &str) -> Option<Match<'_>> {
        let exact = prefix_ends(name).find_map(|end| {
            self.by_scope.get(&name[..end]).map(|&index| {
                (
                    end,
                    Match {
                        rule: &self.rules[index],
                        rewrite_from: end,
                    },
                )
            })
        });
        let wildcard = if self.by_wildcard.is_empty() {
            None
        } else {
            wildcard_suffixes(name).find_map(|(suffix, host_end)| {
                self.by_wildcard.get(suffix).map(|&index| {
                    // The pattern is `*` plus the suffix.
                    let length = suffix.len() + 1;
                    (
                        length,
                        Match {
                            rule: &self.rules[index],
                            rewrite_from: host_end,
                        },
                    )
                })
            })
        };
        match (exact, wildcard) {
            (Some((exact_len, exact)), Some((wild_len, wild))) => {
                Some(if exact_len > wild_len { exact } else { wild })
            }
            (Some((_, m)), None) | (None, Some((_, m))) => Some(m),
            (None, None) => None,
        }
    }

    /// Whether an attempt on this mirror needs the blocked check (see `exposed_mirrors`).
    pub(crate) fn is_exposed(&self, mirror: &RepoScope) -> bool {
        !self.exposed_mirrors.is_empty() && self.exposed_mirrors.contains(mirror.as_str())
    }

    /// The registries the rules name: the hosts (`host[:port]` as written) of every repository
    /// source and every mirror, and the suffixes (`.example.com`) of wildcard sources.
    pub fn registries(&self) -> (HashSet<String>, Vec<String>) {
        let host = |scope: &str| scope.split('/').next().unwrap_or(scope).to_owned();
        let mut hosts = HashSet::new();
        let mut wildcards = Vec::new();
        for rule in &self.rules {
            match &rule.scope {
                Scope::Wildcard(pattern) => wildcards.push(pattern[1..].to_owned()),
                Scope::Repo(scope) => {
                    hosts.insert(host(scope.as_str()));
                }
            }
            for mirror in rule.digest_mirrors.iter().chain(&rule.tag_mirrors) {
                hosts.insert(host(mirror.as_str()));
            }
        }
        (hosts, wildcards)
    }

    /// The rule whose scope is exactly `scope`, if any.
    pub fn rule(&self, scope: &str) -> Option<&Rule> {
        match scope.strip_prefix('*') {
            Some(suffix) => self.by_wildcard.get(suffix),
            None => self.by_scope.get(scope),
        }
        .map(|&index| &self.rules[index])
    }
}

/// At most [`MAX_MIRRORS_PER_SCOPE`] mirrors of one kind for the scope of `sets` (`count` after
/// merging); over it, the error names the last entry of that kind.
fn check_mirror_count(sets: &[&MirrorSet], serves: Serves, count: usize) -> Result<(), RuleError> {
    if count <= MAX_MIRRORS_PER_SCOPE {
        return Ok(());
    }
    let of_kind: Vec<&&MirrorSet> = sets.iter().filter(|s| s.serves == serves).collect();
    let Some(last) = of_kind.last() else {
        return Ok(());
    };
    Err(RuleError::Invalid {
        at: format!("{}: {}.mirrors", last.origin, last.field),
        problem: Problem::TooManyMirrors {
            scope: last.source.to_string(),
            serves: match serves {
                Serves::Digest => "digest",
                Serves::Tag => "tag",
            },
            count,
            entries: of_kind.len(),
            max: MAX_MIRRORS_PER_SCOPE,
        },
    })
}

/// The MCO's rule: every entry for one source string, of any kind and whether or not it has
/// mirrors, must have the same policy (ICSP and a missing policy count as AllowContactingSource).
pub(super) fn check_policies(sets: &[MirrorSet]) -> Result<(), RuleError> {
    let mut first: HashMap<&str, &MirrorSet> = HashMap::new();
    for set in sets {
        let earlier = *first.entry(set.source.as_str()).or_insert(set);
        if earlier.policy != set.policy {
            return Err(RuleError::Invalid {
                at: format!("{}: {}.mirrorSourcePolicy", set.origin, set.field),
                problem: Problem::ConflictingPolicy {
                    source_name: set.source.to_string(),
                    policy: set.policy.as_str(),
                    other_policy: earlier.policy.as_str(),
                    other: format!("{}: {}", earlier.origin, earlier.field),
                },
            });
        }
    }
    Ok(())
}

/// Matches each HostedCluster and NodePool reference with the ConfigMaps read
/// ([`ConfigMapReference::finds`]). A missing ConfigMap is a warning, not an error: it may arrive
/// in another file later.
fn resolve_references(
    references: &[ConfigMapReference],
    config_maps: &[ConfigMapSeen],
    warnings: &mut Vec<Warning>,
) -> Vec<ConfigMapUse> {
    let qualified = |namespace: &str, name: &str| {
        if namespace.is_empty() {
            name.to_owned()
        } else {
            format!("{namespace}/{name}")
        }
    };
    let mut uses: Vec<ConfigMapUse> = Vec::new();
    for reference in references {
        let object = qualified(&reference.namespace, &reference.name);
        let index = match uses
            .iter()
            .position(|u| u.kind == reference.kind && u.object == object)
        {
            Some(index) => index,
            None => {
                uses.push(ConfigMapUse {
                    kind: reference.kind,
                    object: object.clone(),
                    applied: Vec::new(),
                    missing: Vec::new(),
                });
                uses.len() - 1
            }
        };
        let found: Vec<&ConfigMapSeen> =
            config_maps.iter().filter(|c| reference.finds(c)).collect();
        if found.is_empty() {
            let wanted = qualified(&reference.namespace, &reference.config_map);
            warnings.push(Warning {
                at: reference.at.clone(),
                message: format!(
                    "{} {object} names ConfigMap \"{wanted}\", which no rule file holds; its mirrors apply once it is loaded",
                    reference.kind
                ),
            });
            uses[index].missing.push(wanted);
            continue;
        }
        for config_map in found {
            let (keys_read, has_them) = match reference.kind {
                "HostedCluster" => ("idms.yaml or itms.yaml", config_map.has_mirror_config_keys),
                _ => ("config", config_map.has_config_key),
            };
            if !has_them {
                warnings.push(Warning {
                    at: reference.at.clone(),
                    message: format!(
                        "ConfigMap \"{}\" ({}) has no {keys_read} key, which is what a {} reads from it",
                        config_map.name, config_map.at, reference.kind
                    ),
                });
            }
            uses[index].applied.push(format!(
                "{} ({})",
                qualified(&config_map.namespace, &config_map.name),
                config_map.at
            ));
        }
    }
    uses
}
