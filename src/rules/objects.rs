//! Decoding rule documents into [`MirrorSet`]s.
//!
//! A document is any of the inputs users hand to OpenShift or HyperShift: ICSP, IDMS, ITMS, a
//! `v1 List` or typed list of those, a ConfigMap with `idms.yaml` / `itms.yaml` (HostedCluster
//! image mirror config) or `config` (NodePool `spec.config`) keys, or a HostedCluster whose
//! `spec.imageContentSources` become digest rules. Documents are decoded from a generic tree rather
//! than with derived structs so that every error can name the exact field (`spec.imageDigestMirrors
//! [0].mirrors[1]`), and so that unknown fields become warnings, as the API server prunes them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::scope::{RepoScope, Scope};
use super::{MirrorSet, ObjectKind, Origin, Policy, Problem, RuleError, Serves, Warning};

/// What decoding a set of documents produced.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// Every source entry, in file and document order.
    pub sets: Vec<MirrorSet>,
    /// How many objects of each kind were read (containers such as List and ConfigMap included).
    pub objects: BTreeMap<String, usize>,
    /// Accepted oddities worth telling the user.
    pub warnings: Vec<Warning>,
    /// Every ConfigMap read, by namespace and name, for the references below.
    pub config_maps: Vec<ConfigMapSeen>,
    /// HostedCluster and NodePool references to ConfigMaps, resolved when the set is built.
    pub references: Vec<ConfigMapReference>,
}

/// A ConfigMap as the references see it.
#[derive(Debug, Clone)]
pub(crate) struct ConfigMapSeen {
    pub namespace: String,
    pub name: String,
    /// `file: location`.
    pub at: String,
    /// Whether it has `idms.yaml` / `itms.yaml` (what a HostedCluster reads).
    pub has_mirror_config_keys: bool,
    /// Whether it has `config` (what a NodePool reads).
    pub has_config_key: bool,
}

/// One `spec.imageMirrorConfigRef` of a HostedCluster or `spec.config[i]` of a NodePool.
#[derive(Debug, Clone)]
pub(crate) struct ConfigMapReference {
    /// `HostedCluster` or `NodePool`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `file: location: field` of the reference.
    pub at: String,
    /// The ConfigMap named.
    pub config_map: String,
}

impl ConfigMapReference {
    /// Whether `config_map` is the one named: same name, and same namespace unless one of them
    /// leaves it unset (rule files often omit it).
    pub fn finds(&self, config_map: &ConfigMapSeen) -> bool {
        config_map.name == self.config_map
            && (config_map.namespace == self.namespace
                || config_map.namespace.is_empty()
                || self.namespace.is_empty())
    }
}

/// Where a document sits, which decides the kinds it may have.
#[derive(Debug, Clone, Copy)]
enum Context {
    /// A document of a rule file, or an item of a `v1 List`.
    TopLevel,
    /// An item of a typed list such as `ImageDigestMirrorSetList`, whose items may omit kind.
    TypedListItem(ObjectKind),
    /// A document of a NodePool `spec.config` ConfigMap (`config` key): ICSP, IDMS and ITMS are
    /// applied, the other MCO kinds are skipped, anything HyperShift would refuse is skipped with
    /// a warning.
    NodePoolConfig,
    /// The `idms.yaml` or `itms.yaml` key of a HostedCluster image mirror ConfigMap.
    MirrorConfigKey(ObjectKind, &'static str),
}

const ICSP_API: &str = "operator.openshift.io/v1alpha1";
const CONFIG_API: &str = "config.openshift.io/v1";
const HYPERSHIFT_API_GROUP: &str = "hypershift.openshift.io/";
const CORE_API: &str = "v1";
/// Kinds a NodePool config may hold that carry no mirror rules (HyperShift accepts them).
const NODEPOOL_MCO_KINDS: [&str; 4] = [
    "MachineConfig",
    "KubeletConfig",
    "ContainerRuntimeConfig",
    "ClusterImagePolicy",
];
/// The fields of `metadata` (ObjectMeta).
const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "namespace",
    "generateName",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// The top-level fields of an object of `kind`.
fn top_level_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "ConfigMap" => &[
            "apiVersion",
            "kind",
            "metadata",
            "data",
            "binaryData",
            "immutable",
        ],
        k if k == "List" || k.ends_with("List") => &["apiVersion", "kind", "metadata", "items"],
        _ => &["apiVersion", "kind", "metadata", "spec", "status"],
    }
}

/// The known name `key` is most likely a misspelling of: the nearest by edit distance, if it is
/// close (at most a third of its length away).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), *k))
        .filter(|(distance, k)| *distance > 0 && *distance * 3 <= k.len().max(3))
        .min()
        .map(|(_, k)| k)
}

/// The HostedCluster `spec` fields mirrorgate reads.
pub(crate) const HOSTED_CLUSTER_MIRROR_FIELDS: [&str; 3] = [
    "imageContentSources",
    "imageMirrorConfigRef",
    "imageMirrorConfig",
];
/// The NodePool `spec` fields mirrorgate reads.
pub(crate) const NODE_POOL_MIRROR_FIELDS: [&str; 2] = ["config", "clusterName"];
/// The other fields of HyperShift's HostedClusterSpec (v1beta1): never a misspelling, however
/// close to a mirror field they are.
const HOSTED_CLUSTER_OTHER_FIELDS: [&str; 32] = [
    "release",
    "controlPlaneRelease",
    "clusterID",
    "infraID",
    "updateService",
    "channel",
    "platform",
    "controllerAvailabilityPolicy",
    "infrastructureAvailabilityPolicy",
    "dns",
    "networking",
    "autoscaling",
    "autoNode",
    "etcd",
    "services",
    "pullSecret",
    "sshKey",
    "issuerURL",
    "serviceAccountSigningKey",
    "configuration",
    "auditWebhook",
    "additionalTrustBundle",
    "secretEncryption",
    "fips",
    "pausedUntil",
    "olmCatalogPlacement",
    "nodeSelector",
    "tolerations",
    "labels",
    "capabilities",
    "operatorConfiguration",
    "kubeAPIServerDNSName",
];
/// The other fields of HyperShift's NodePoolSpec (v1beta1).
const NODE_POOL_OTHER_FIELDS: [&str; 12] = [
    "release",
    "platform",
    "replicas",
    "management",
    "autoScaling",
    "nodeDrainTimeout",
    "nodeVolumeDetachTimeout",
    "nodeLabels",
    "taints",
    "pausedUntil",
    "tuningConfig",
    "arch",
];

/// The mirror field a HostedCluster or NodePool `spec` key is most likely a misspelling of, if
/// it is close to one and is no other HyperShift field: a HostedCluster spec has dozens of
/// legitimate fields, so only a near miss of a field that carries mirrors is worth a warning.
pub(crate) fn near_mirror_field(kind: &str, key: &str) -> Option<&'static str> {
    let (mirror, other): (&[&'static str], &[&str]) = match kind {
        "HostedCluster" => (&HOSTED_CLUSTER_MIRROR_FIELDS, &HOSTED_CLUSTER_OTHER_FIELDS),
        "NodePool" => (&NODE_POOL_MIRROR_FIELDS, &NODE_POOL_OTHER_FIELDS),
        _ => return None,
    };
    if mirror.contains(&key) || other.contains(&key) {
        return None;
    }
    closest(key, mirror)
}

/// Limits of HostedCluster `spec.imageContentSources`.
const HOSTED_CLUSTER_MAX: usize = 255;

/// Decodes the top-level documents of one file.
pub(crate) fn decode_documents(
    file: &Arc<str>,
    documents: Vec<Value>,
    out: &mut Decoded,
) -> Result<(), RuleError> {
    let decoder = Decoder { file };
    for (index, document) in documents.iter().enumerate() {
        decoder.object(
            document,
            format!("document {}", index + 1),
            Context::TopLevel,
            out,
        )?;
    }
    Ok(())
}

/// Parses YAML text that may hold several documents into generic trees. Empty documents are
/// skipped, so indices count the documents that have content.
pub(crate) fn parse_yaml_documents(text: &str, name: &str) -> Result<Vec<Value>, String> {
    // The snippet header names the file (and ConfigMap key) rather than the parser's `<input>`.
    serde_saphyr::from_multiple::<Value>(text).map_err(|e| {
        e.render_with_options(serde_saphyr::render_options! {
            source_name: Some(name),
        })
    })
}

/// Parses JSON text holding one or more concatenated values.
pub(crate) fn parse_json_documents(text: &str) -> Result<Vec<Value>, String> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

struct Decoder<'a> {
    file: &'a Arc<str>,
}

impl Decoder<'_> {
    fn invalid(&self, location: &str, field: &str, problem: Problem) -> RuleError {
        RuleError::Invalid {
            at: self.at(location, field),
            problem,
        }
    }

    fn warn(&self, out: &mut Decoded, location: &str, field: &str, message: String) {
        out.warnings.push(Warning {
            at: self.at(location, field),
            message,
        });
    }

    fn at(&self, location: &str, field: &str) -> String {
        if field.is_empty() {
            format!("{}: {location}", self.file)
        } else {
            format!("{}: {location}: {field}", self.file)
        }
    }

    /// Decodes one object at `location` (e.g. `document 2`), recursing into containers.
    fn object(
        &self,
        value: &Value,
        location: String,
        context: Context,
        out: &mut Decoded,
    ) -> Result<(), RuleError> {
        let object = as_map(value).map_err(|p| self.invalid(&location, "", p))?;
        let field_str = |key: &str| -> Result<Option<&str>, RuleError> {
            optional_str(object, key).map_err(|p| self.invalid(&location, key, p))
        };
        let api_version = field_str("apiVersion")?.unwrap_or_default();
        let written_kind = field_str("kind")?.unwrap_or_default();
        let metadata = match object.get("metadata") {
            None | Some(Value::Null) => None,
            Some(metadata) => {
                Some(as_map(metadata).map_err(|p| self.invalid(&location, "metadata", p))?)
            }
        };
        let metadata_str = |key: &str| -> Result<&str, RuleError> {
            match metadata {
                Some(m) => optional_str(m, key)
                    .map(Option::unwrap_or_default)
                    .map_err(|p| self.invalid(&location, &format!("metadata.{key}"), p)),
                None => Ok(""),
            }
        };
        let name = metadata_str("name")?;
        let namespace = metadata_str("namespace")?;
        let kind = match (written_kind, context) {
            ("", Context::TypedListItem(kind)) | ("", Context::MirrorConfigKey(kind, _)) => {
                kind.as_str()
            }
            ("", _) => return Err(self.invalid(&location, "kind", Problem::Required)),
            (kind, _) => kind,
        };
        let labelled = if name.is_empty() {
            format!("{location} ({kind})")
        } else {
            format!("{location} ({kind}/{name})")
        };

        if let Context::MirrorConfigKey(expected, key) = context
            && kind != expected.as_str()
        {
            return Err(self.invalid(
                &location,
                "kind",
                Problem::ConfigMapKind {
                    key,
                    expected: expected.as_str(),
                    found: kind.to_owned(),
                },
            ));
        }
        if let Context::NodePoolConfig = context {
            let skip = match kind {
                // HyperShift's image registry mirror documentation lists ImageTagMirrorSet among
                // the NodePool config kinds; the MCO renders it for that pool's nodes.
                "ImageContentSourcePolicy" | "ImageDigestMirrorSet" | "ImageTagMirrorSet" => None,
                k if NODEPOOL_MCO_KINDS.contains(&k) => {
                    Some(format!("{kind} carries no mirror rules; skipped"))
                }
                _ => Some(format!(
                    "unsupported NodePool config kind \"{kind}\" (HyperShift refuses it); skipped"
                )),
            };
            if let Some(message) = skip {
                self.warn(out, &labelled, "", message);
                return Ok(());
            }
        }

        // Items of typed lists and ConfigMap keys may omit apiVersion; elsewhere a wrong one is a
        // sign of a different resource with the same kind name.
        let check_api = |expected: &'static str| -> Result<(), RuleError> {
            let lenient = api_version.is_empty()
                && matches!(
                    context,
                    Context::TypedListItem(_) | Context::MirrorConfigKey(..)
                );
            let matches = if expected == HYPERSHIFT_API_GROUP {
                api_version.starts_with(HYPERSHIFT_API_GROUP)
            } else {
                api_version == expected
            };
            if lenient || matches || matches!(context, Context::MirrorConfigKey(..)) {
                Ok(())
            } else {
                Err(self.invalid(
                    &labelled,
                    "apiVersion",
                    Problem::ApiVersion {
                        kind: kind.to_owned(),
                        found: api_version.to_owned(),
                        expected,
                    },
                ))
            }
        };
        self.unknown_fields(out, &labelled, "", object, top_level_fields(kind));
        if let Some(metadata) = metadata {
            self.unknown_fields(out, &labelled, "metadata", metadata, &OBJECT_META_FIELDS);
        }
        let mirror_kind = match kind {
            "ImageContentSourcePolicy" => Some(MirrorObject::ICSP),
            "ImageDigestMirrorSet" => Some(MirrorObject::IDMS),
            "ImageTagMirrorSet" => Some(MirrorObject::ITMS),
            _ => None,
        };
        if let Some(shape) = mirror_kind {
            check_api(shape.api_version)?;
            count(out, kind);
            let origin = self.origin(&labelled, shape.kind, name);
            return self.mirror_object(object, shape, &origin, out);
        }
        match kind {
            "List"
            | "ImageContentSourcePolicyList"
            | "ImageDigestMirrorSetList"
            | "ImageTagMirrorSetList" => {
                let (api, item_context) = match kind {
                    "List" => (CORE_API, Context::TopLevel),
                    "ImageContentSourcePolicyList" => (
                        ICSP_API,
                        Context::TypedListItem(ObjectKind::ImageContentSourcePolicy),
                    ),
                    "ImageDigestMirrorSetList" => (
                        CONFIG_API,
                        Context::TypedListItem(ObjectKind::ImageDigestMirrorSet),
                    ),
                    _ => (
                        CONFIG_API,
                        Context::TypedListItem(ObjectKind::ImageTagMirrorSet),
                    ),
                };
                check_api(api)?;
                count(out, kind);
                let items = match object.get("items") {
                    None | Some(Value::Null) => return Ok(()),
                    Some(items) => {
                        as_array(items).map_err(|p| self.invalid(&labelled, "items", p))?
                    }
                };
                for (i, item) in items.iter().enumerate() {
                    self.object(item, format!("{labelled} items[{i}]"), item_context, out)?;
                }
                Ok(())
            }
            "ConfigMap" => {
                check_api(CORE_API)?;
                count(out, kind);
                self.config_map(object, &labelled, namespace, name, out)
            }
            "HostedCluster" => {
                check_api(HYPERSHIFT_API_GROUP)?;
                count(out, kind);
                let origin = self.origin(&labelled, ObjectKind::HostedCluster, name);
                self.hosted_cluster(object, &origin, namespace, out)
            }
            "NodePool" => {
                check_api(HYPERSHIFT_API_GROUP)?;
                count(out, kind);
                self.node_pool(object, &labelled, namespace, name, out)
            }
            _ => Err(self.invalid(
                &location,
                "kind",
                Problem::UnsupportedKind {
                    kind: kind.to_owned(),
                    api_version: api_version.to_owned(),
                },
            )),
        }
    }

    fn origin(&self, labelled: &str, kind: ObjectKind, name: &str) -> Arc<Origin> {
        Arc::new(Origin {
            file: self.file.clone(),
            location: labelled.to_owned(),
            kind,
            name: name.to_owned(),
        })
    }

    /// ICSP `spec.repositoryDigestMirrors`, IDMS `spec.imageDigestMirrors`, ITMS
    /// `spec.imageTagMirrors`.
    fn mirror_object(
        &self,
        object: &Map<String, Value>,
        shape: MirrorObject,
        origin: &Arc<Origin>,
        out: &mut Decoded,
    ) -> Result<(), RuleError> {
        let list_field = shape.list_field;
        let spec = match object.get("spec") {
            Some(spec) => as_map(spec).map_err(|p| self.invalid(&origin.location, "spec", p))?,
            None => return Err(self.invalid(&origin.location, "spec", Problem::Required)),
        };
        self.unknown_fields(out, &origin.location, "spec", spec, &[list_field]);
        let entries = match spec.get(list_field) {
            None | Some(Value::Null) => return Ok(()),
            Some(list) => as_array(list)
                .map_err(|p| self.invalid(&origin.location, &format!("spec.{list_field}"), p))?,
        };
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("spec.{list_field}[{i}]");
            let set = self.entry(entry, &field, shape.serves, shape.rules, origin, out)?;
            out.sets.push(set);
        }
        Ok(())
    }

    /// HostedCluster `spec.imageContentSources`: what HyperShift turns into the guest's IDMS named
    /// `cluster`, with no policy.
    fn hosted_cluster(
        &self,
        object: &Map<String, Value>,
        origin: &Arc<Origin>,
        namespace: &str,
        out: &mut Decoded,
    ) -> Result<(), RuleError> {
        let Some(spec) = object.get("spec") else {
            return Err(self.invalid(&origin.location, "spec", Problem::Required));
        };
        let spec = as_map(spec).map_err(|p| self.invalid(&origin.location, "spec", p))?;
        self.near_mirror_fields(out, &origin.location, "HostedCluster", spec);
        // `imageMirrorConfigRef` is the field's name in the API; an earlier revision called it
        // `imageMirrorConfig`.
        for field in ["imageMirrorConfigRef", "imageMirrorConfig"] {
            let Some(reference) = spec.get(field) else {
                continue;
            };
            let field = format!("spec.{field}");
            let config_map = self.local_object_reference(reference, &origin.location, &field)?;
            out.references.push(ConfigMapReference {
                kind: "HostedCluster",
                namespace: namespace.to_owned(),
                name: origin.name.clone(),
                at: self.at(&origin.location, &field),
                config_map: config_map.to_owned(),
            });
        }
        let entries = match spec.get("imageContentSources") {
            None | Some(Value::Null) => return Ok(()),
            Some(list) => as_array(list)
                .map_err(|p| self.invalid(&origin.location, "spec.imageContentSources", p))?,
        };
        if entries.len() > HOSTED_CLUSTER_MAX {
            return Err(self.invalid(
                &origin.location,
                "spec.imageContentSources",
                Problem::TooLong {
                    max: HOSTED_CLUSTER_MAX,
                    what: "items",
                },
            ));
        }
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("spec.imageContentSources[{i}]");
            let set = self.entry(
                entry,
                &field,
                Serves::Digest,
                EntryRules::HOSTED_CLUSTER,
                origin,
                out,
            )?;
            out.sets.push(set);
        }
        Ok(())
    }

    /// A NodePool: its `spec.config[].name` ConfigMaps, applied when the rule set holds them.
    /// The rest of the NodePool (platform, replicas, …) is not mirrorgate's business.
    fn node_pool(
        &self,
        object: &Map<String, Value>,
        labelled: &str,
        namespace: &str,
        name: &str,
        out: &mut Decoded,
    ) -> Result<(), RuleError> {
        let spec = match object.get("spec") {
            None | Some(Value::Null) => return Ok(()),
            Some(spec) => as_map(spec).map_err(|p| self.invalid(labelled, "spec", p))?,
        };
        self.near_mirror_fields(out, labelled, "NodePool", spec);
        let configs = match spec.get("config") {
            None | Some(Value::Null) => return Ok(()),
            Some(list) => as_array(list).map_err(|p| self.invalid(labelled, "spec.config", p))?,
        };
        for (i, reference) in configs.iter().enumerate() {
            let field = format!("spec.config[{i}]");
            let config_map = self.local_object_reference(reference, labelled, &field)?;
            out.references.push(ConfigMapReference {
                kind: "NodePool",
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                at: self.at(labelled, &field),
                config_map: config_map.to_owned(),
            });
        }
        Ok(())
    }

    /// A `{name: …}` LocalObjectReference.
    fn local_object_reference<'v>(
        &self,
        value: &'v Value,
        location: &str,
        field: &str,
    ) -> Result<&'v str, RuleError> {
        let reference = as_map(value).map_err(|p| self.invalid(location, field, p))?;
        let name_field = format!("{field}.name");
        match optional_str(reference, "name").map_err(|p| self.invalid(location, &name_field, p))? {
            Some(name) if !name.is_empty() => Ok(name),
            _ => Err(self.invalid(location, &name_field, Problem::Required)),
        }
    }

    /// Warns about each key of `map` (at `prefix`) that is not in `known`: the API server prunes
    /// unknown fields, so a misspelt one silently means "not set".
    fn unknown_fields(
        &self,
        out: &mut Decoded,
        location: &str,
        prefix: &str,
        map: &Map<String, Value>,
        known: &[&str],
    ) {
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            let field = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            let hint = closest(key, known)
                .map(|k| format!(" (did you mean \"{k}\"?)"))
                .unwrap_or_default();
            self.warn(
                out,
                location,
                &field,
                format!("unknown field; ignored (the API server would prune it){hint}"),
            );
        }
    }

    /// Warns about each key of a HostedCluster or NodePool `spec` that looks like a misspelt
    /// mirror field: the API server prunes it, and the cluster's mirrors silently vanish.
    fn near_mirror_fields(
        &self,
        out: &mut Decoded,
        location: &str,
        kind: &str,
        spec: &Map<String, Value>,
    ) {
        for key in spec.keys() {
            if let Some(meant) = near_mirror_field(kind, key) {
                self.warn(
                    out,
                    location,
                    &format!("spec.{key}"),
                    format!(
                        "unknown field; ignored (the API server would prune it) (did you mean \"{meant}\"?)"
                    ),
                );
            }
        }
    }

    /// A ConfigMap: `idms.yaml` / `itms.yaml` (one object each) and `config` (NodePool config,
    /// several documents).
    fn config_map(
        &self,
        object: &Map<String, Value>,
        labelled: &str,
        namespace: &str,
        name: &str,
        out: &mut Decoded,
    ) -> Result<(), RuleError> {
        let empty = Map::new();
        let data = match object.get("data") {
            None | Some(Value::Null) => &empty,
            Some(data) => as_map(data).map_err(|p| self.invalid(labelled, "data", p))?,
        };
        out.config_maps.push(ConfigMapSeen {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            at: self.at(labelled, ""),
            has_mirror_config_keys: ["idms.yaml", "itms.yaml"]
                .iter()
                .any(|key| data.contains_key(*key)),
            has_config_key: data.contains_key("config"),
        });
        let mut found = false;
        for (key, kind) in [
            ("idms.yaml", ObjectKind::ImageDigestMirrorSet),
            ("itms.yaml", ObjectKind::ImageTagMirrorSet),
        ] {
            let Some(text) = self.data_key(data, key, labelled)? else {
                continue;
            };
            found = true;
            let field = format!("data.{key}");
            let documents =
                parse_yaml_documents(text, &format!("{} {labelled} {field}", self.file))
                    .map_err(|e| self.invalid(labelled, &field, Problem::EmbeddedSyntax(e)))?;
            if documents.len() > 1 {
                self.warn(
                    out,
                    labelled,
                    &field,
                    format!(
                        "holds {} documents; only the first is used, as HyperShift reads only one",
                        documents.len()
                    ),
                );
            }
            if let Some(document) = documents.first() {
                self.object(
                    document,
                    format!("{labelled} {field}"),
                    Context::MirrorConfigKey(kind, key),
                    out,
                )?;
            }
        }
        if let Some(text) = self.data_key(data, "config", labelled)? {
            found = true;
            let documents =
                parse_yaml_documents(text, &format!("{} {labelled} data.config", self.file))
                    .map_err(|e| {
                        self.invalid(labelled, "data.config", Problem::EmbeddedSyntax(e))
                    })?;
            for (i, document) in documents.iter().enumerate() {
                self.object(
                    document,
                    format!("{labelled} data.config document {}", i + 1),
                    Context::NodePoolConfig,
                    out,
                )?;
            }
        }
        if !found {
            self.warn(
                out,
                labelled,
                "data",
                "has none of the keys idms.yaml, itms.yaml, config; no rules read".to_owned(),
            );
        }
        Ok(())
    }

    fn data_key<'v>(
        &self,
        data: &'v Map<String, Value>,
        key: &str,
        labelled: &str,
    ) -> Result<Option<&'v str>, RuleError> {
        optional_str(data, key)
            .map(|text| text.filter(|t| !t.trim().is_empty()))
            .map_err(|p| self.invalid(labelled, &format!("data.{key}"), p))
    }

    /// One `{source, mirrors, mirrorSourcePolicy}` entry.
    fn entry(
        &self,
        value: &Value,
        field: &str,
        serves: Serves,
        rules: EntryRules,
        origin: &Arc<Origin>,
        out: &mut Decoded,
    ) -> Result<MirrorSet, RuleError> {
        let location = &origin.location;
        let entry = as_map(value).map_err(|p| self.invalid(location, field, p))?;
        let known: &[&str] = if rules.has_policy {
            &["source", "mirrors", "mirrorSourcePolicy"]
        } else {
            &["source", "mirrors"]
        };
        self.unknown_fields(out, location, field, entry, known);

        let source_field = format!("{field}.source");
        let source = optional_str(entry, "source")
            .map_err(|p| self.invalid(location, &source_field, p))?
            .ok_or_else(|| self.invalid(location, &source_field, Problem::Required))?;
        if let Some(problem) = rules.too_long(source.len(), "characters") {
            return Err(self.invalid(location, &source_field, problem));
        }
        let source_scope = Scope::parse(source).map_err(|reason| {
            self.invalid(
                location,
                &source_field,
                Problem::InvalidSource {
                    value: source.to_owned(),
                    reason,
                },
            )
        })?;

        let mirrors_field = format!("{field}.mirrors");
        let mirror_values: &[Value] = match entry.get("mirrors") {
            None | Some(Value::Null) => &[],
            Some(list) => as_array(list).map_err(|p| self.invalid(location, &mirrors_field, p))?,
        };
        if let Some(problem) = rules.too_long(mirror_values.len(), "items") {
            return Err(self.invalid(location, &mirrors_field, problem));
        }
        let mut mirrors = Vec::with_capacity(mirror_values.len());
        let mut seen = HashSet::with_capacity(mirror_values.len());
        for (j, mirror) in mirror_values.iter().enumerate() {
            let mirror_field = format!("{mirrors_field}[{j}]");
            let text = mirror.as_str().ok_or_else(|| {
                self.invalid(location, &mirror_field, wrong_type("a string", mirror))
            })?;
            if let Some(problem) = rules.too_long(text.len(), "characters") {
                return Err(self.invalid(location, &mirror_field, problem));
            }
            let scope = RepoScope::parse(text).map_err(|reason| {
                self.invalid(
                    location,
                    &mirror_field,
                    Problem::InvalidMirror {
                        value: text.to_owned(),
                        reason,
                    },
                )
            })?;
            if !seen.insert(text) && rules.mirrors_are_a_set {
                return Err(self.invalid(
                    location,
                    &mirror_field,
                    Problem::DuplicateMirror(text.to_owned()),
                ));
            }
            mirrors.push(scope);
        }

        let policy_field = format!("{field}.mirrorSourcePolicy");
        let policy = if rules.has_policy {
            match optional_str(entry, "mirrorSourcePolicy")
                .map_err(|p| self.invalid(location, &policy_field, p))?
            {
                None => Policy::AllowContactingSource,
                Some("AllowContactingSource") => Policy::AllowContactingSource,
                Some("NeverContactSource") => Policy::NeverContactSource,
                Some(other) => {
                    return Err(self.invalid(
                        location,
                        &policy_field,
                        Problem::UnsupportedPolicy(other.to_owned()),
                    ));
                }
            }
        } else {
            Policy::AllowContactingSource
        };
        if policy == Policy::NeverContactSource && mirrors.iter().any(|m| m.as_str() == source) {
            return Err(self.invalid(
                location,
                &policy_field,
                Problem::SourceIsMirror(source.to_owned()),
            ));
        }

        Ok(MirrorSet {
            source: source_scope,
            mirrors,
            policy,
            serves,
            origin: origin.clone(),
            field: field.to_owned(),
        })
    }
}

/// The shape of the three mirror kinds: where their entries live and what they may hold.
#[derive(Debug, Clone, Copy)]
struct MirrorObject {
    kind: ObjectKind,
    api_version: &'static str,
    list_field: &'static str,
    serves: Serves,
    rules: EntryRules,
}

impl MirrorObject {
    const ICSP: MirrorObject = MirrorObject {
        kind: ObjectKind::ImageContentSourcePolicy,
        api_version: ICSP_API,
        list_field: "repositoryDigestMirrors",
        serves: Serves::Digest,
        rules: EntryRules::ICSP,
    };
    const IDMS: MirrorObject = MirrorObject {
        kind: ObjectKind::ImageDigestMirrorSet,
        api_version: CONFIG_API,
        list_field: "imageDigestMirrors",
        serves: Serves::Digest,
        rules: EntryRules::MIRROR_SET,
    };
    const ITMS: MirrorObject = MirrorObject {
        kind: ObjectKind::ImageTagMirrorSet,
        api_version: CONFIG_API,
        list_field: "imageTagMirrors",
        serves: Serves::Tag,
        rules: EntryRules::MIRROR_SET,
    };
}

/// How strictly an entry is checked, per kind: the CRDs differ.
#[derive(Debug, Clone, Copy)]
struct EntryRules {
    /// `mirrorSourcePolicy` exists (IDMS, ITMS).
    has_policy: bool,
    /// `mirrors` is `listType=set` (IDMS, ITMS, HostedCluster); ICSP allows duplicates.
    mirrors_are_a_set: bool,
    /// HostedCluster's length limits on strings and lists.
    max_len: Option<usize>,
}

impl EntryRules {
    const ICSP: EntryRules = EntryRules {
        has_policy: false,
        mirrors_are_a_set: false,
        max_len: None,
    };
    const MIRROR_SET: EntryRules = EntryRules {
        has_policy: true,
        mirrors_are_a_set: true,
        max_len: None,
    };
    const HOSTED_CLUSTER: EntryRules = EntryRules {
        has_policy: false,
        mirrors_are_a_set: true,
        max_len: Some(HOSTED_CLUSTER_MAX),
    };

    /// The problem with a string or list of `len` characters or items, if it is over the limit.
    fn too_long(self, len: usize, what: &'static str) -> Option<Problem> {
        self.max_len
            .filter(|&max| len > max)
            .map(|max| Problem::TooLong { max, what })
    }
}

fn count(out: &mut Decoded, kind: &str) {
    *out.objects.entry(kind.to_owned()).or_default() += 1;
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(expected: &'static str, found: &Value) -> Problem {
    Problem::WrongType {
        expected,
        found: type_name(found),
    }
}

fn as_map(value: &Value) -> Result<&Map<String, Value>, Problem> {
    value
        .as_object()
        .ok_or_else(|| wrong_type("an object", value))
}

fn as_array(value: &Value) -> Result<&[Value], Problem> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| wrong_type("a list", value))
}

fn optional_str<'v>(map: &'v Map<String, Value>, key: &str) -> Result<Option<&'v str>, Problem> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type("a string", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_near_miss_of_a_mirror_field_that_is_no_hypershift_field_is_suspect() {
        let judged: Vec<(&str, &str, Option<&str>)> = [
            ("HostedCluster", "imageContentSource"),
            ("HostedCluster", "imageMirorConfigRef"),
            ("HostedCluster", "imageContentSources"),
            ("HostedCluster", "imageMirrorConfig"),
            ("HostedCluster", "pullSecret"),
            ("HostedCluster", "configuration"),
            ("NodePool", "configs"),
            ("NodePool", "clustername"),
            ("NodePool", "tuningConfig"),
            ("NodePool", "replicas"),
            ("ImageDigestMirrorSet", "configs"),
        ]
        .into_iter()
        .map(|(kind, key)| (kind, key, near_mirror_field(kind, key)))
        .collect();
        assert_eq!(
            judged,
            [
                (
                    "HostedCluster",
                    "imageContentSource",
                    Some("imageContentSources")
                ),
                (
                    "HostedCluster",
                    "imageMirorConfigRef",
                    Some("imageMirrorConfigRef")
                ),
                ("HostedCluster", "imageContentSources", None),
                ("HostedCluster", "imageMirrorConfig", None),
                ("HostedCluster", "pullSecret", None),
                ("HostedCluster", "configuration", None),
                ("NodePool", "configs", Some("config")),
                ("NodePool", "clustername", Some("clusterName")),
                ("NodePool", "tuningConfig", None),
                ("NodePool", "replicas", None),
                ("ImageDigestMirrorSet", "configs", None),
            ]
        );
    }
}
