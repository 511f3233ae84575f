//! The complete set of mirror objects in the cluster at one moment, ready for the rules engine.
//!
//! Each [`ClusterObject`] is reduced to what carries rules (`apiVersion`, `kind`,
//! `metadata.name`/`namespace`, and `spec` or `data`): status, managed fields and annotations
//! change often and carry no rules, so dropping them keeps memory small and lets a status-only
//! update leave the snapshot unchanged. A HostedCluster keeps only its mirror fields
//! (`imageContentSources`, `imageMirrorConfigRef`, `imageMirrorConfig`), a NodePool its
//! `config` and `clusterName`; each also keeps a key that looks like a misspelling of one, so
//! that it is warned about as in a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::Kind;
use crate::rules::{self, Problem, RuleError, RuleSet};

/// The name [`Snapshot::to_rule_set`] gives the cluster in rule messages.
const CLUSTER: &str = "cluster";

/// One object of the cluster, as the rules engine reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterObject {
    /// The object's kind.
    pub kind: Kind,
    /// Its namespace (namespaced kinds only).
    pub namespace: Option<String>,
    /// Its `metadata.name`.
    pub name: String,
    /// The object as a rule document: `apiVersion`, `kind`, `metadata` (name, namespace) and
    /// the fields that carry rules.
    pub value: Value,
}

impl ClusterObject {
    /// Reduces an object read from the API server to its rule document. `value` is the object
    /// as the API server sent it (any `apiVersion`/`kind` in it are replaced by `kind`'s).
    pub fn new(kind: Kind, value: &Value) -> ClusterObject {
        let metadata = value.get("metadata");
        let text = |key: &str| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let name = text("name").unwrap_or_default();
        let namespace = if kind.namespaced() {
            text("namespace")
        } else {
            None
        };
        let mut reduced = Map::new();
        reduced.insert("apiVersion".into(), Value::String(kind.api_version()));
        reduced.insert("kind".into(), Value::String(kind.as_str().to_owned()));
        let mut meta = Map::new();
        meta.insert("name".into(), Value::String(name.clone()));
        if let Some(namespace) = &namespace {
            meta.insert("namespace".into(), Value::String(namespace.clone()));
        }
        reduced.insert("metadata".into(), Value::Object(meta));
        let keep = |field: &str, keys: Option<&[&str]>| -> Option<Value> {
            let found = value.get(field)?;
            Some(match (keys, found) {
                (Some(keys), Value::Object(map)) => Value::Object(
                    map.iter()
                        // A near miss of a mirror field is kept so that `check` and the
                        // rules engine can warn about it, as they do for a file.
                        .filter(|(k, _)| {
                            keys.contains(&k.as_str())
                                || rules::near_mirror_field(kind.as_str(), k).is_some()
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                _ => found.clone(),
            })
        };
        let (field, keys): (&str, Option<&[&str]>) = match kind {
            Kind::ConfigMap => ("data", None),
            Kind::HostedCluster => ("spec", Some(&rules::HOSTED_CLUSTER_MIRROR_FIELDS)),
            Kind::NodePool => ("spec", Some(&rules::NODE_POOL_MIRROR_FIELDS)),
            _ => ("spec", None),
        };
        if let Some(kept) = keep(field, keys) {
            reduced.insert(field.into(), kept);
        }
        ClusterObject {
            kind,
            namespace,
            name,
            value: Value::Object(reduced),
        }
    }

    /// Where the object came from, as rule messages and `check` show it:
    /// `cluster: ImageDigestMirrorSet/foo`, `cluster: ConfigMap clusters/foo`.
    pub fn origin(&self) -> String {
        format!("{CLUSTER}: {}", self.name_in_messages())
    }

    /// The object as errors and logs name it: `ImageDigestMirrorSet/foo`,
    /// `NodePool clusters/workers`.
    pub fn name_in_messages(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// The ConfigMaps (namespace, name) this object references: a HostedCluster's
    /// `spec.imageMirrorConfigRef.name` (or `spec.imageMirrorConfig.name`), a NodePool's
    /// `spec.config[].name`; always in the object's own namespace.
    pub fn referenced_config_maps(&self) -> Vec<(String, String)> {
        let Some(namespace) = &self.namespace else {
            return Vec::new();
        };
        let spec = self.value.get("spec");
        let name_of = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_owned);
        let names: Vec<String> = match self.kind {
            Kind::HostedCluster => ["imageMirrorConfigRef", "imageMirrorConfig"]
                .iter()
                .filter_map(|field| spec.and_then(|s| s.get(*field)).and_then(name_of))
                .collect(),
            Kind::NodePool => spec
                .and_then(|s| s.get("config"))
                .and_then(Value::as_array)
                .map(|refs| refs.iter().filter_map(name_of).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        names
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(|n| (namespace.clone(), n))
            .collect()
    }
}

/// The complete set of mirror objects in the cluster, in a stable order (kind, namespace, name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    objects: Vec<ClusterObject>,
}

impl Snapshot {
    /// A snapshot of these objects (sorted; the order they come in does not matter).
    pub fn new(mut objects: Vec<ClusterObject>) -> Snapshot {
        objects
            .sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        Snapshot { objects }
    }

    /// Every object, in order.
    pub fn objects(&self) -> &[ClusterObject] {
        &self.objects
    }

    /// How many objects of each kind.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for object in &self.objects {
            *counts.entry(object.kind).or_default() += 1;
        }
        counts
    }

    /// The rule documents with their origins: the form a rules constructor from decoded
    /// documents takes.
    pub fn documents(&self) -> impl Iterator<Item = (String, &Value)> {
        self.objects.iter().map(|o| (o.origin(), &o.value))
    }

    /// The snapshot as one multi-document YAML stream (each document in JSON form), in the order
    /// of [`Snapshot::objects`].
    pub fn to_yaml(&self) -> String {
        let mut text = String::new();
        for object in &self.objects {
            text.push_str("---\n");
            text.push_str(&object.value.to_string());
            text.push('\n');
        }
        text
    }

    /// Builds the rule set of the cluster alone, with the rules engine's validation and node
    /// semantics. Errors name the objects by their origin (`cluster: ImageDigestMirrorSet/foo:
    /// spec.imageDigestMirrors[0].source: ...`).
    pub fn to_rule_set(&self) -> Result<RuleSet, RuleError> {
        let origins: Vec<String> = self.objects.iter().map(ClusterObject::origin).collect();
        rules::load_str(&self.to_yaml(), CLUSTER).map_err(|e| name_objects(e, &origins))
    }
}

impl Snapshot {
    /// The cluster's objects as the members of a rule set, each taken or refused on its own
    /// ([`rules::load_with_members`]): every ImageContentSourcePolicy, ImageDigestMirrorSet and
    /// ImageTagMirrorSet alone; every HostedCluster and NodePool with the ConfigMaps it names
    /// (what HyperShift applies to that hosted cluster or pool, and what a view of it will
    /// hold); a ConfigMap that nothing names, alone. In snapshot order.
    pub fn members(&self) -> Vec<rules::Member> {
        let object = |o: &ClusterObject| rules::MemberObject {
            origin: o.origin(),
            document: o.value.clone(),
        };
        let config_maps: BTreeMap<(&str, &str), &ClusterObject> = self
            .objects
            .iter()
            .filter(|o| o.kind == Kind::ConfigMap)
            .map(|o| ((o.namespace.as_deref().unwrap_or_default(), &*o.name), o))
            .collect();
        let mut named = BTreeSet::new();
        let mut members = Vec::with_capacity(self.objects.len());
        for owner in self.objects.iter().filter(|o| o.kind != Kind::ConfigMap) {
            let mut objects = vec![object(owner)];
            for (namespace, name) in owner.referenced_config_maps() {
                let Some(config_map) = config_maps.get(&(&*namespace, &*name)) else {
                    continue;
                };
                let config_map = object(config_map);
                // An owner may name one ConfigMap twice.
                if !objects.iter().any(|o| o.origin == config_map.origin) {
                    objects.push(config_map);
                }
                named.insert((namespace, name));
            }
            members.push(rules::Member {
                name: owner.name_in_messages(),
                objects,
            });
        }
        for config_map in config_maps.values() {
            let key = (
                config_map.namespace.clone().unwrap_or_default(),
                config_map.name.clone(),
            );
            if !named.contains(&key) {
                members.push(rules::Member {
                    name: config_map.name_in_messages(),
                    objects: vec![object(config_map)],
                });
            }
        }
        members
    }

    /// Builds ONE rule set from the rule files under `paths` and the cluster's [`members`]
    /// (Snapshot::members), with the node semantics of the rules engine: a member that is
    /// invalid or conflicts is refused on its own, keeping its version in `history` (its last
    /// good one) or left out, and named in [`RuleSet::errors`]; the returned history is for the
    /// next snapshot. Each object keeps its origin (`cluster: ImageDigestMirrorSet/foo`) in
    /// `check`'s list and in messages, which name both objects of a conflict. Fails only for
    /// the rule files, as they fail alone.
    ///
    /// [`members`]: Snapshot::members
    pub fn merged_with_files(
        &self,
        paths: &[PathBuf],
        history: &rules::MemberHistory,
    ) -> Result<(RuleSet, rules::MemberHistory), RuleError> {
        rules::load_with_members(paths, self.members(), history)
    }
}

/// Replaces the loader's `cluster: document N (Kind/name)` with the origin of object N.
fn name_objects(error: RuleError, origins: &[String]) -> RuleError {
    rewrite_locations(error, |text| rename_documents(text, origins))
}

/// `error` with `rewrite` applied to every place it names (where, and the other object of a
/// conflict); the problem itself unchanged.
fn rewrite_locations(error: RuleError, rewrite: impl Fn(&str) -> String) -> RuleError {
    match error {
        RuleError::Invalid { at, problem } => RuleError::Invalid {
            at: rewrite(&at),
            problem: match problem {
                Problem::ConflictingPolicy {
                    source_name,
                    policy,
                    other_policy,
                    other,
                } => Problem::ConflictingPolicy {
                    source_name,
                    policy,
                    other_policy,
                    other: rewrite(&other),
                },
                other => other,
            },
        },
        RuleError::Syntax { file, message } => RuleError::Syntax {
            file: rewrite(&file),
            message,
        },
        other => other,
    }
}

fn rename_documents(text: &str, origins: &[String]) -> String {
    const MARK: &str = "cluster: document ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let origin = after[..digits]
            .parse::<usize>()
            .ok()
            .and_then(|n| origins.get(n.checked_sub(1)?));
        match origin {
            Some(origin) => {
                out.push_str(origin);
                let mut tail = &after[digits..];
                // The loader's own label, ` (Kind/name)`, repeats what the origin says.
                if let Some(label) = tail.strip_prefix(" (")
                    && let Some(end) = label.find(')')
                {
                    tail = &label[end + 1..];
                }
                rest = tail;
            }
            None => {
                out.push_str(MARK);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reference::Reference;

    fn idms(name: &str, source: &str, mirror: &str, policy: Option<&str>) -> ClusterObject {
        let mut entry = json!({"source": source, "mirrors": [mirror]});
        if let Some(policy) = policy {
            entry["mirrorSourcePolicy"] = json!(policy);
        }
        ClusterObject::new(
            Kind::ImageDigestMirrorSet,
            &json!({
                "apiVersion": "config.openshift.io/v1",
                "kind": "ImageDigestMirrorSet",
                "metadata": {"name": name, "resourceVersion": "7", "uid": "x",
                             "managedFields": [{"manager": "kubectl"}]},
                "spec": {"imageDigestMirrors": [entry]},
                "status": {}
            }),
        )
    }

    #[test]
    fn an_object_keeps_only_what_carries_rules() {
        let object = idms("foo", "quay.io/a", "mirror.example.com/a", None);
        assert_eq!(
            (object.origin(), object.value.clone()),
            (
                "cluster: ImageDigestMirrorSet/foo".to_owned(),
                json!({
                    "apiVersion": "config.openshift.io/v1",
                    "kind": "ImageDigestMirrorSet",
                    "metadata": {"name": "foo"},
                    "spec": {"imageDigestMirrors": [{"source": "quay.io/a", "mirrors": ["mirror.example.com/a"]}]}
                })
            )
        );
    }

    #[test]
    fn hosted_clusters_and_node_pools_name_their_config_maps() {
        let hosted = ClusterObject::new(
            Kind::HostedCluster,
            &json!({
                "metadata": {"name": "hc", "namespace": "clusters"},
                "spec": {"imageMirrorConfigRef": {"name": "mirrors"}, "pullSecret": {"name": "ps"},
                         "release": {"image": "quay.io/x"}}
            }),
        );
        let pool = ClusterObject::new(
            Kind::NodePool,
            &json!({
                "metadata": {"name": "np", "namespace": "clusters"},
                "spec": {"config": [{"name": "a"}, {"name": "b"}], "replicas": 2}
            }),
        );
        assert_eq!(
            (
                hosted.origin(),
                hosted.value["spec"].clone(),
                hosted.referenced_config_maps(),
                pool.referenced_config_maps(),
            ),
            (
                "cluster: HostedCluster clusters/hc".to_owned(),
                json!({"imageMirrorConfigRef": {"name": "mirrors"}}),
                vec![("clusters".to_owned(), "mirrors".to_owned())],
                vec![
                    ("clusters".to_owned(), "a".to_owned()),
                    ("clusters".to_owned(), "b".to_owned())
                ],
            )
        );
    }

    #[test]
    fn a_misspelt_hosted_cluster_mirror_field_is_kept_and_warned_about() {
        let hosted = ClusterObject::new(
            Kind::HostedCluster,
            &json!({
                "metadata": {"name": "hc", "namespace": "clusters"},
                "spec": {"imageContentSource": [{"source": "quay.io/a", "mirrors": ["mirror.example.com/a"]}],
                         "pullSecret": {"name": "ps"}}
            }),
        );
        let snapshot = Snapshot::new(vec![hosted]);
        let warnings = |rule_set: RuleSet| -> Vec<String> {
            rule_set
                .warnings()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        // Alone (`to_rule_set`), and as serve, check and resolve read it (merged with files).
        let (merged, _) = snapshot
            .merged_with_files(&[], &rules::MemberHistory::default())
            .unwrap();
        assert_eq!(
            (warnings(snapshot.to_rule_set().unwrap()), warnings(merged)),
            (
                vec!["cluster: document 1 (HostedCluster/hc): spec.imageContentSource: unknown field; ignored (the API server would prune it) (did you mean \"imageContentSources\"?)".to_owned()],
                vec!["cluster: HostedCluster clusters/hc: document 1 (HostedCluster/hc): spec.imageContentSource: unknown field; ignored (the API server would prune it) (did you mean \"imageContentSources\"?)".to_owned()],
            )
        );
    }

    #[test]
    fn a_snapshot_resolves_through_the_rules_engine() {
        let snapshot = Snapshot::new(vec![idms(
            "release",
            "quay.io/openshift-release-dev",
            "mirror.example.com/ocp",
            None,
        )]);
        let rules = snapshot.to_rule_set().unwrap();
        let reference: Reference = format!(
            "quay.io/openshift-release-dev/ocp-release@sha256:{}",
            "a".repeat(64)
        )
        .parse()
        .unwrap();
        let sources: Vec<String> = rules
            .resolve(&reference)
            .unwrap()
            .sources
            .iter()
            .map(|s| s.reference.to_string())
            .collect();
        assert_eq!(
            sources,
            vec![
                format!(
                    "mirror.example.com/ocp/ocp-release@sha256:{}",
                    "a".repeat(64)
                ),
                format!(
                    "quay.io/openshift-release-dev/ocp-release@sha256:{}",
                    "a".repeat(64)
                ),
            ]
        );
    }

    #[test]
    fn conflicting_objects_are_named_by_origin() {
        let snapshot = Snapshot::new(vec![
            idms("allow", "quay.io/a", "mirror.example.com/a", None),
            idms(
                "never",
                "quay.io/a",
                "mirror.example.com/a",
                Some("NeverContactSource"),
            ),
        ]);
        let error = snapshot.to_rule_set().unwrap_err().to_string();
        assert_eq!(
            (
                error.contains("cluster: ImageDigestMirrorSet/allow"),
                error.contains("cluster: ImageDigestMirrorSet/never"),
                error.contains("document"),
            ),
            (true, true, false),
            "{error}"
        );
    }

    #[test]
    fn files_and_objects_merge_into_one_rule_set_and_an_object_conflicting_with_a_file_is_refused_naming_both()
     {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("idms.yaml");
        std::fs::write(
            &file,
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: from-file\nspec:\n  imageDigestMirrors:\n  - source: quay.io/b\n    mirrors: [mirror.example.com/b]\n",
        )
        .unwrap();
        let history = rules::MemberHistory::default();
        let (merged, _) = Snapshot::new(vec![idms(
            "allow",
            "quay.io/a",
            "mirror.example.com/a",
            None,
        )])
        .merged_with_files(std::slice::from_ref(&file), &history)
        .unwrap();
        let (refusing, _) = Snapshot::new(vec![
            idms("allow", "quay.io/a", "mirror.example.com/a", None),
            idms(
                "never",
                "quay.io/b",
                "mirror.example.com/b",
                Some("NeverContactSource"),
            ),
        ])
        .merged_with_files(&[file], &history)
        .unwrap();
        let error = refusing.errors()[0].to_string();
        assert_eq!(
            (
                (merged.rules().len(), merged.summary().files.len()),
                (refusing.rules().len(), refusing.summary().files.len()),
                refusing.errors().len(),
                error.starts_with("ImageDigestMirrorSet/never: cluster: ImageDigestMirrorSet/never: spec.imageDigestMirrors[0].mirrorSourcePolicy: conflicting"),
                error.contains("idms.yaml: document 1 (ImageDigestMirrorSet/from-file)"),
                error.contains("document 1 (ImageDigestMirrorSet/never)"),
            ),
            ((2, 2), (2, 2), 1, true, true, false),
            "{error}"
        );
    }

    fn namespaced(kind: Kind, name: &str, field: &str, value: serde_json::Value) -> ClusterObject {
        ClusterObject::new(
            kind,
            &json!({"metadata": {"name": name, "namespace": "clusters"}, field: value}),
        )
    }

    fn idms_config_map(name: &str, key: &str, source: &str) -> ClusterObject {
        let text = format!(
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: {name}\nspec:\n  imageDigestMirrors:\n  - source: {source}\n    mirrors: [mirror.example.com/{name}]\n"
        );
        namespaced(Kind::ConfigMap, name, "data", json!({ key: text }))
    }

    #[test]
    fn hosted_clusters_and_node_pools_are_members_with_the_config_maps_they_name() {
        let snapshot = Snapshot::new(vec![
            idms("release", "quay.io/a", "mirror.example.com/a", None),
            namespaced(
                Kind::HostedCluster,
                "guest",
                "spec",
                json!({"imageMirrorConfigRef": {"name": "guest-mirrors"}}),
            ),
            namespaced(
                Kind::NodePool,
                "workers",
                "spec",
                json!({"config": [{"name": "pool-mirrors"}, {"name": "pool-mirrors"}, {"name": "absent"}]}),
            ),
            idms_config_map("guest-mirrors", "idms.yaml", "quay.io/guest"),
            idms_config_map("pool-mirrors", "config", "quay.io/pool"),
            idms_config_map("named-by-nobody", "idms.yaml", "quay.io/other"),
        ]);
        let members: Vec<(String, Vec<String>)> = snapshot
            .members()
            .into_iter()
            .map(|m| (m.name, m.objects.into_iter().map(|o| o.origin).collect()))
            .collect();
        let owned = |name: &str, origins: &[&str]| {
            (
                name.to_owned(),
                origins.iter().map(|o| format!("cluster: {o}")).collect(),
            )
        };
        assert_eq!(
            members,
            vec![
                owned(
                    "ImageDigestMirrorSet/release",
                    &["ImageDigestMirrorSet/release"]
                ),
                owned(
                    "HostedCluster clusters/guest",
                    &[
                        "HostedCluster clusters/guest",
                        "ConfigMap clusters/guest-mirrors"
                    ]
                ),
                owned(
                    "NodePool clusters/workers",
                    &[
                        "NodePool clusters/workers",
                        "ConfigMap clusters/pool-mirrors"
                    ]
                ),
                owned(
                    "ConfigMap clusters/named-by-nobody",
                    &["ConfigMap clusters/named-by-nobody"]
                ),
            ]
        );
    }

    #[test]
    fn a_bad_config_map_a_bad_hosted_cluster_field_and_an_empty_node_pool_config_name_are_refused_on_their_own_at_a_first_load()
     {
        let snapshot = Snapshot::new(vec![
            namespaced(
                Kind::HostedCluster,
                "tenant-a",
                "spec",
                json!({"imageContentSources": [{"source": "quay.io/a", "mirrors": ["mirror.example.com/a"]}],
                       "imageMirrorConfigRef": {"name": "a-mirrors"}}),
            ),
            namespaced(
                Kind::ConfigMap,
                "a-mirrors",
                "data",
                json!({"idms.yaml": "kind: [unclosed"}),
            ),
            namespaced(
                Kind::NodePool,
                "tenant-b",
                "spec",
                json!({"config": [{"name": ""}]}),
            ),
            namespaced(
                Kind::HostedCluster,
                "tenant-c",
                "spec",
                json!({"imageMirrorConfigRef": {"name": "c-mirrors"}}),
            ),
            idms_config_map("c-mirrors", "idms.yaml", "quay.io/c"),
            namespaced(
                Kind::HostedCluster,
                "tenant-d",
                "spec",
                json!({"imageContentSources": "quay.io/d"}),
            ),
        ]);
        let (rules, _) = snapshot
            .merged_with_files(&[], &rules::MemberHistory::default())
            .unwrap();
        let errors: Vec<String> = rules.errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            (
                rules.rule("quay.io/a").is_some(),
                rules.rule("quay.io/c").is_some(),
                errors.len(),
                errors[0].starts_with("HostedCluster clusters/tenant-a: cluster: ConfigMap clusters/a-mirrors: data.idms.yaml: invalid YAML"),
                errors[1].as_str(),
                errors[2].as_str(),
            ),
            (
                false,
                true,
                3,
                true,
                "HostedCluster clusters/tenant-d: cluster: HostedCluster clusters/tenant-d: spec.imageContentSources: expected a list, found a string; left out (it has no good version to keep)",
                "NodePool clusters/tenant-b: cluster: NodePool clusters/tenant-b: spec.config[0].name: required field is missing; left out (it has no good version to keep)",
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn an_invalid_object_is_named_by_origin() {
        let snapshot = Snapshot::new(vec![idms(
            "bad",
            "https://quay.io/a",
            "m.example.com/a",
            None,
        )]);
        let error = snapshot.to_rule_set().unwrap_err().to_string();
        assert!(
            error.starts_with(
                "cluster: ImageDigestMirrorSet/bad: spec.imageDigestMirrors[0].source"
            ),
            "{error}"
        );
    }
}
