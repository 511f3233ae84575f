//! Rule sets built from members that stand or fail on their own.
//!
//! A live cluster holds the objects of many owners: the management cluster's mirror sets, each
//! HostedCluster with the ConfigMap it names, each NodePool with its `spec.config` ConfigMaps.
//! Built as one set, one owner's invalid object, or two owners' conflicting policies, would make
//! the whole set unbuildable and freeze every owner's rules (and, with no set in force yet, every
//! pull). So each of them is a [`Member`], validated alone. A member that fails keeps the version
//! last in force (its last good one), or, with none, is left out; the rule set is built from the
//! rule files and every other member, and names each failure ([`MemberError`]). The memory of
//! earlier builds this needs is a [`MemberHistory`]; a build without one (`check`, a restart)
//! has no last good versions.
//!
//! A member is invalid when one of its objects does not decode (a field, an embedded YAML key),
//! when it gives one source string two policies itself, or when a NodePool of it names a
//! ConfigMap that neither it nor the rule files hold: HyperShift does not roll out a NodePool
//! config whose ConfigMap is missing, so its nodes keep what they had. (A HostedCluster's
//! `imageContentSources` apply without its ConfigMap, whose mirrors apply once it exists.)
//!
//! Conflicts between members (one source string, different `mirrorSourcePolicy`, which the MCO
//! rejects for the whole set) are settled per source string, for the members involved only: the
//! rule files' policy wins; else the policy in force before wins, and the members whose change
//! brings another one are refused; with no policy in force for it (both new, as after a restart)
//! every member involved is left out, so that the outcome does not depend on names. A refused
//! member keeps its last good version, unless that conflicts as well. Settling repeats until no
//! conflict is left; each round takes a version away from some member, so it ends.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use super::load::decode_files;
use super::objects::{Decoded, decode_documents};
use super::ruleset::check_policies;
use super::{Policy, Problem, RuleError, RuleSet};

/// One object of a member: a single rule document, and the origin messages name it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberObject {
    /// Where it comes from, e.g. `cluster: ConfigMap clusters/guest-mirrors`.
    pub origin: String,
    /// The object as a rule document.
    pub document: Value,
}

/// A part of a rule set that is taken or refused as a whole: a mirror set, or a HostedCluster or
/// NodePool with the ConfigMaps it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// What it is, as messages name it, e.g. `HostedCluster clusters/guest`; unique in a build.
    pub name: String,
    /// Its objects, the one it is named after first.
    pub objects: Vec<MemberObject>,
}

/// What of a refused member is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InForce {
    /// The version that was in force before: its last good one.
    LastGood,
    /// Nothing: it never had a good version (new, or since a restart), or that one conflicts too.
    Nothing,
}

impl InForce {
    /// `last_good` or `left_out`, as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            InForce::LastGood => "last_good",
            InForce::Nothing => "left_out",
        }
    }
}

/// A member that could not be taken as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberError {
    /// The member, e.g. `NodePool clusters/workers`.
    pub member: String,
    /// What is wrong, each naming the object and field: the error of its current version, and
    /// each conflict with the entry on the other side.
    pub problems: Vec<String>,
    /// What of it is in force instead.
    pub in_force: InForce,
}

impl fmt::Display for MemberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let in_force = match self.in_force {
            InForce::LastGood => "its last good version stays in force",
            InForce::Nothing => "left out (it has no good version to keep)",
        };
        write!(
            f,
            "{}: {}; {in_force}",
            self.member,
            self.problems.join("; ")
        )
    }
}

/// What a build with members leaves for the next one: each member's version in force (or last
/// good), and the policy in force for each source string.
#[derive(Debug, Clone, Default)]
pub struct MemberHistory {
    accepted: HashMap<String, Arc<Member>>,
    policies: HashMap<String, Policy>,
}

/// Source string → its policy in one version, and where that entry is (`origin: field`).
type Policies = BTreeMap<String, (Policy, String)>;

/// Builds ONE rule set from the rule files under `paths` and `members`, with the node semantics
/// of the rules engine, where each member fails on its own (see the module documentation):
/// the set's [`RuleSet::errors`] name the members refused, and the returned history is what the
/// next build of the same source needs. A rule file that fails, or two files that conflict, fail
/// the whole build, as [`super::load`] does.
pub fn load_with_members(
    paths: &[PathBuf],
    members: Vec<Member>,
    history: &MemberHistory,
) -> Result<(RuleSet, MemberHistory), RuleError> {
    let (mut decoded, mut origins) = decode_files(paths)?;
    check_policies(&decoded.sets)?;
    let file_policies = policies(&decoded, &[]);
    let mut states: Vec<State> = members
        .into_iter()
        .map(|member| State::new(Arc::new(member), history, &decoded))
        .collect();
    settle_conflicts(&mut states, &file_policies, &history.policies);

    // An object two members share (a ConfigMap named by a HostedCluster and a NodePool) is read
    // once when both hold the same version of it.
    let mut taken: HashMap<&str, Vec<&Value>> = HashMap::new();
    for version in states.iter().filter_map(State::in_force) {
        for object in &version.objects {
            let versions = taken.entry(&object.origin).or_default();
            if versions.contains(&&object.document) {
                continue;
            }
            versions.push(&object.document);
            let origin: Arc<str> = Arc::from(object.origin.as_str());
            decode_documents(&origin, vec![object.document.clone()], &mut decoded)?;
            origins.push(origin);
        }
    }
    let mut policies_in_force = HashMap::with_capacity(decoded.sets.len());
    for set in &decoded.sets {
        policies_in_force
            .entry(set.source.as_str().to_owned())
            .or_insert(set.policy);
    }
    let errors = states.iter().filter_map(State::error).collect();
    let accepted = states
        .into_iter()
        .filter_map(|state| state.into_accepted(history))
        .map(|member| (member.name.clone(), member))
        .collect();
    let rule_set = RuleSet::build(decoded, origins)?.with_member_errors(errors);
    Ok((
        rule_set,
        MemberHistory {
            accepted,
            policies: policies_in_force,
        },
    ))
}

/// Which version of a member goes into the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Current,
    Previous,
    Nothing,
}

/// One member during a build.
struct State {
    current: Arc<Member>,
    /// The current version's policies, when it is valid.
    valid: Option<Policies>,
    /// The version in force before, when it differs from the current one, with its policies.
    previous: Option<(Arc<Member>, Policies)>,
    choice: Choice,
    problems: Vec<String>,
}

impl State {
    fn new(current: Arc<Member>, history: &MemberHistory, files: &Decoded) -> State {
        let previous = history
            .accepted
            .get(&current.name)
            .filter(|previous| **previous != current)
            .and_then(|previous| {
                let policies = validate(previous, files).ok()?;
                Some((previous.clone(), policies))
            });
        match validate(&current, files) {
            Ok(policies) => State {
                current,
                valid: Some(policies),
                previous,
                choice: Choice::Current,
                problems: Vec::new(),
            },
            Err(error) => State {
                problems: vec![without_document_labels(
                    &error.to_string(),
                    &current.objects,
                )],
                current,
                valid: None,
                choice: if previous.is_some() {
                    Choice::Previous
                } else {
                    Choice::Nothing
                },
                previous,
            },
        }
    }

    fn policies(&self) -> Option<&Policies> {
        match self.choice {
            Choice::Current => self.valid.as_ref(),
            Choice::Previous => self.previous.as_ref().map(|(_, policies)| policies),
            Choice::Nothing => None,
        }
    }

    fn in_force(&self) -> Option<&Member> {
        match self.choice {
            Choice::Current => Some(&self.current),
            Choice::Previous => self.previous.as_ref().map(|(member, _)| &**member),
            Choice::Nothing => None,
        }
    }

    /// Takes the version in force away: the current one gives way to the previous one, which
    /// gives way to nothing.
    fn refuse(&mut self, problems: Vec<String>) {
        self.problems.extend(problems);
        self.choice = match self.choice {
            Choice::Current if self.previous.is_some() => Choice::Previous,
            _ => Choice::Nothing,
        };
    }

    fn error(&self) -> Option<MemberError> {
        (!self.problems.is_empty()).then(|| MemberError {
            member: self.current.name.clone(),
            problems: self.problems.clone(),
            in_force: match self.choice {
                Choice::Previous => InForce::LastGood,
                Choice::Current | Choice::Nothing => InForce::Nothing,
            },
        })
    }

    /// The version to remember: the one in force, else the last good one kept for later.
    fn into_accepted(self, history: &MemberHistory) -> Option<Arc<Member>> {
        match self.choice {
            Choice::Current => Some(self.current),
            Choice::Previous => self.previous.map(|(member, _)| member),
            Choice::Nothing => history.accepted.get(&self.current.name).cloned(),
        }
    }
}

/// Checks a member alone; answers the policy of each source string it gives.
fn validate(member: &Member, files: &Decoded) -> Result<Policies, RuleError> {
    let mut decoded = Decoded::default();
    for object in &member.objects {
        let origin: Arc<str> = Arc::from(object.origin.as_str());
        decode_documents(&origin, vec![object.document.clone()], &mut decoded)?;
    }
    check_policies(&decoded.sets)?;
    for reference in decoded.references.iter().filter(|r| r.kind == "NodePool") {
        let found = decoded
            .config_maps
            .iter()
            .chain(&files.config_maps)
            .any(|config_map| reference.finds(config_map));
        if !found {
            let wanted = if reference.namespace.is_empty() {
                reference.config_map.clone()
            } else {
                format!("{}/{}", reference.namespace, reference.config_map)
            };
            return Err(RuleError::Invalid {
                at: reference.at.clone(),
                problem: Problem::MissingConfigMap(wanted),
            });
        }
    }
    Ok(policies(&decoded, &member.objects))
}

/// The policy of each source string in `decoded`, located; `objects` are the member's, whose
/// labels the locations drop.
fn policies(decoded: &Decoded, objects: &[MemberObject]) -> Policies {
    let mut policies = Policies::new();
    for set in &decoded.sets {
        policies
            .entry(set.source.as_str().to_owned())
            .or_insert_with(|| {
                let at = format!("{}: {}", set.origin, set.field);
                (set.policy, without_document_labels(&at, objects))
            });
    }
    policies
}

/// One entry for a source string: the member's index (`None`: the rule files), its policy, and
/// where it is.
type Party<'a> = (Option<usize>, Policy, &'a str);

/// Refuses members until no source string has two policies (see the module documentation).
fn settle_conflicts(states: &mut [State], files: &Policies, in_force: &HashMap<String, Policy>) {
    loop {
        let mut parties: BTreeMap<&str, Vec<Party>> = BTreeMap::new();
        for (source, (policy, at)) in files {
            parties.entry(source).or_default().push((None, *policy, at));
        }
        for (index, state) in states.iter().enumerate() {
            for (source, (policy, at)) in state.policies().into_iter().flatten() {
                parties
                    .entry(source)
                    .or_default()
                    .push((Some(index), *policy, at));
            }
        }
        let mut refused: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (source, parties) in &parties {
            let Some(&(_, other_policy, other_at)) =
                parties.iter().find(|party| party.1 != parties[0].1)
            else {
                continue;
            };
            let winner = parties
                .iter()
                .find(|(index, _, _)| index.is_none())
                .map(|party| party.1)
                .or_else(|| in_force.get(*source).copied());
            for &(index, policy, at) in parties {
                let Some(index) = index else { continue };
                if winner == Some(policy) {
                    continue;
                }
                let (other_policy, other_at) = if policy == other_policy {
                    (parties[0].1, parties[0].2)
                } else {
                    (other_policy, other_at)
                };
                let conflict = RuleError::Invalid {
                    at: format!("{at}.mirrorSourcePolicy"),
                    problem: Problem::ConflictingPolicy {
                        source_name: (*source).to_owned(),
                        policy: policy.as_str(),
                        other_policy: other_policy.as_str(),
                        other: other_at.to_owned(),
                    },
                };
                refused.entry(index).or_default().push(conflict.to_string());
            }
        }
        if refused.is_empty() {
            return;
        }
        for (index, problems) in refused {
            states[index].refuse(problems);
        }
    }
}

/// `text` without the loader's ` document 1 (Kind/name)` after the origin of each of `objects`:
/// each object is one document, and its origin already says what it is.
fn without_document_labels(text: &str, objects: &[MemberObject]) -> String {
    let mut text = text.to_owned();
    for origin in objects.iter().map(|o| &o.origin) {
        let mark = format!("{origin}: document 1 (");
        while let Some(at) = text.find(&mark) {
            let label = at + mark.len();
            let Some(end) = text[label..].find(')') else {
                break;
            };
            text.replace_range(at + origin.len()..label + end + 1, "");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mirror_set(name: &str, entries: &[(&str, &str, Option<&str>)]) -> Member {
        let entries: Vec<Value> = entries
            .iter()
            .map(|(source, mirror, policy)| {
                let mut entry = json!({"source": source, "mirrors": [mirror]});
                if let Some(policy) = policy {
                    entry["mirrorSourcePolicy"] = json!(policy);
                }
                entry
            })
            .collect();
        Member {
            name: format!("ImageDigestMirrorSet/{name}"),
            objects: vec![MemberObject {
                origin: format!("cluster: ImageDigestMirrorSet/{name}"),
                document: json!({
                    "apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
                    "metadata": {"name": name},
                    "spec": {"imageDigestMirrors": entries}
                }),
            }],
        }
    }

    fn build(members: Vec<Member>, history: &MemberHistory) -> (RuleSet, MemberHistory) {
        load_with_members(&[], members, history).expect("no rule files to fail")
    }

    /// The digest mirrors of `scope`, and whether its source is blocked.
    fn rule(rules: &RuleSet, scope: &str) -> Option<(Vec<String>, bool)> {
        rules.rule(scope).map(|rule| {
            let mirrors = rule.digest_mirrors.iter().map(|m| m.to_string()).collect();
            (mirrors, rule.blocked)
        })
    }

    fn mirrors(mirror: &str) -> Option<(Vec<String>, bool)> {
        Some((vec![mirror.to_owned()], false))
    }

    fn refused(rules: &RuleSet) -> Vec<(&str, InForce)> {
        rules
            .errors()
            .iter()
            .map(|e| (e.member.as_str(), e.in_force))
            .collect()
    }

    #[test]
    fn an_invalid_member_keeps_its_last_good_version_while_the_others_change_and_has_none_after_a_restart()
     {
        let (_, history) = build(
            vec![
                mirror_set("a", &[("quay.io/a", "m.example.com/a1", None)]),
                mirror_set("b", &[("quay.io/b", "m.example.com/b1", None)]),
            ],
            &MemberHistory::default(),
        );
        let now = || {
            vec![
                mirror_set("a", &[("https://quay.io/a", "m.example.com/a2", None)]),
                mirror_set("b", &[("quay.io/b", "m.example.com/b2", None)]),
            ]
        };
        let (changed, _) = build(now(), &history);
        let (restarted, _) = build(now(), &MemberHistory::default());
        assert_eq!(
            (
                rule(&changed, "quay.io/a"),
                rule(&changed, "quay.io/b"),
                refused(&changed),
                changed.errors()[0].to_string().starts_with(
                    "ImageDigestMirrorSet/a: cluster: ImageDigestMirrorSet/a: spec.imageDigestMirrors[0].source: invalid source \"https://quay.io/a\""
                ),
                changed.errors()[0]
                    .to_string()
                    .ends_with("; its last good version stays in force"),
                rule(&restarted, "quay.io/a"),
                rule(&restarted, "quay.io/b"),
                refused(&restarted),
            ),
            (
                mirrors("m.example.com/a1"),
                mirrors("m.example.com/b2"),
                vec![("ImageDigestMirrorSet/a", InForce::LastGood)],
                true,
                true,
                None,
                mirrors("m.example.com/b2"),
                vec![("ImageDigestMirrorSet/a", InForce::Nothing)],
            )
        );
    }

    #[test]
    fn the_change_that_brings_a_conflict_is_refused_and_the_other_side_keeps_taking_changes_until_it_is_gone()
     {
        let a = |mirror: &str| mirror_set("a", &[("quay.io/x", mirror, None)]);
        let b_before = mirror_set("b", &[("quay.io/y", "m.example.com/b1", None)]);
        let b_after = mirror_set(
            "b",
            &[
                ("quay.io/y", "m.example.com/b2", None),
                ("quay.io/x", "m.example.com/bx", Some("NeverContactSource")),
            ],
        );
        let (_, history) = build(
            vec![a("m.example.com/a1"), b_before],
            &MemberHistory::default(),
        );
        // b brings the conflict while a changes too: only b is refused.
        let (both_changed, history) = build(vec![a("m.example.com/a2"), b_after.clone()], &history);
        // b's refused change does not hold a's next one back either.
        let (a_again, history) = build(vec![a("m.example.com/a3"), b_after.clone()], &history);
        // With a gone, b's change has nothing to conflict with.
        let (a_gone, _) = build(vec![b_after], &history);
        let error = both_changed.errors()[0].to_string();
        assert_eq!(
            (
                (rule(&both_changed, "quay.io/x"), rule(&both_changed, "quay.io/y")),
                refused(&both_changed),
                error.contains("cluster: ImageDigestMirrorSet/b: spec.imageDigestMirrors[1].mirrorSourcePolicy: conflicting mirrorSourcePolicy is set for the same source \"quay.io/x\""),
                error.contains("(NeverContactSource here, AllowContactingSource at cluster: ImageDigestMirrorSet/a: spec.imageDigestMirrors[0])"),
                (rule(&a_again, "quay.io/x"), refused(&a_again)),
                (rule(&a_gone, "quay.io/x"), rule(&a_gone, "quay.io/y"), refused(&a_gone)),
            ),
            (
                (mirrors("m.example.com/a2"), mirrors("m.example.com/b1")),
                vec![("ImageDigestMirrorSet/b", InForce::LastGood)],
                true,
                true,
                (
                    mirrors("m.example.com/a3"),
                    vec![("ImageDigestMirrorSet/b", InForce::LastGood)]
                ),
                (
                    Some((vec!["m.example.com/bx".to_owned()], true)),
                    mirrors("m.example.com/b2"),
                    vec![]
                ),
            ),
            "{error}"
        );
    }

    #[test]
    fn members_new_together_in_a_conflict_are_all_left_out_and_named_and_the_rest_is_built() {
        let members = || {
            vec![
                mirror_set("a", &[("quay.io/x", "m.example.com/a", None)]),
                mirror_set(
                    "b",
                    &[("quay.io/x", "m.example.com/b", Some("NeverContactSource"))],
                ),
                mirror_set("c", &[("quay.io/z", "m.example.com/c", None)]),
            ]
        };
        let (rules, _) = build(members(), &MemberHistory::default());
        let names_the_other = |index: usize, other: &str| {
            rules.errors()[index]
                .to_string()
                .contains(&format!("at cluster: ImageDigestMirrorSet/{other}:"))
        };
        let (reversed, _) = build(
            members().into_iter().rev().collect(),
            &MemberHistory::default(),
        );
        assert_eq!(
            (
                rule(&rules, "quay.io/x"),
                rule(&rules, "quay.io/z"),
                refused(&rules),
                names_the_other(0, "b"),
                names_the_other(1, "a"),
                rule(&reversed, "quay.io/x"),
                rules.summary().files,
            ),
            (
                None,
                mirrors("m.example.com/c"),
                vec![
                    ("ImageDigestMirrorSet/a", InForce::Nothing),
                    ("ImageDigestMirrorSet/b", InForce::Nothing)
                ],
                true,
                true,
                None,
                vec![PathBuf::from("cluster: ImageDigestMirrorSet/c")],
            )
        );
    }

    #[test]
    fn a_node_pool_whose_config_map_is_missing_keeps_its_last_good_version_with_that_config_map() {
        let node_pool = MemberObject {
            origin: "cluster: NodePool clusters/workers".to_owned(),
            document: json!({
                "apiVersion": "hypershift.openshift.io/v1beta1", "kind": "NodePool",
                "metadata": {"name": "workers", "namespace": "clusters"},
                "spec": {"clusterName": "guest", "config": [{"name": "pool-mirrors"}]}
            }),
        };
        let config_map = MemberObject {
            origin: "cluster: ConfigMap clusters/pool-mirrors".to_owned(),
            document: json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "pool-mirrors", "namespace": "clusters"},
                "data": {"config": "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: pool\nspec:\n  imageDigestMirrors:\n  - source: quay.io/pool\n    mirrors: [m.example.com/pool]\n"}
            }),
        };
        let pool = |objects: Vec<MemberObject>| Member {
            name: "NodePool clusters/workers".to_owned(),
            objects,
        };
        let (_, history) = build(
            vec![pool(vec![node_pool.clone(), config_map])],
            &MemberHistory::default(),
        );
        let (deleted, _) = build(vec![pool(vec![node_pool.clone()])], &history);
        let (restarted, _) = build(vec![pool(vec![node_pool])], &MemberHistory::default());
        assert_eq!(
            (
                rule(&deleted, "quay.io/pool"),
                deleted.errors().iter().map(ToString::to_string).collect::<Vec<_>>(),
                rule(&restarted, "quay.io/pool"),
                refused(&restarted),
            ),
            (
                mirrors("m.example.com/pool"),
                vec!["NodePool clusters/workers: cluster: NodePool clusters/workers: spec.config[0]: names ConfigMap \"clusters/pool-mirrors\", which does not exist; its last good version stays in force".to_owned()],
                None,
                vec![("NodePool clusters/workers", InForce::Nothing)],
            )
        );
    }

    #[test]
    fn a_bad_rule_file_fails_the_whole_build_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.yaml");
        std::fs::write(&file, "kind: [").unwrap();
        let result = load_with_members(
            &[file],
            vec![mirror_set("a", &[("quay.io/a", "m.example.com/a", None)])],
            &MemberHistory::default(),
        );
        assert!(
            matches!(result, Err(RuleError::Syntax { .. })),
            "{:?}",
            result.map(|(rules, _)| rules.summary())
        );
    }
}
