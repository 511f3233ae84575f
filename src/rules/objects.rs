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
}

/// Where a document sits, which decides the kinds it may have.
#[derive(Debug, Clone, Copy)]
enum Context {
    /// A document of a rule file, or an item of a `v1 List`.
    TopLevel,
    /// An item of a typed list such as `ImageDigestMirrorSetList`, whose items may omit kind.
    TypedListItem(ObjectKind),
    /// A document of a NodePool `spec.config` ConfigMap (`config` key): MCO kinds are allowed and
    /// skipped, anything HyperShift would refuse is skipped with a warning.
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
pub(crate) fn parse_yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple::<Value>(text).map_err(|e| e.to_string())
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
        let name = match object.get("metadata") {
            Some(metadata) => as_map(metadata)
                .and_then(|m| optional_str(m, "name"))
                .map_err(|p| self.invalid(&location, "metadata.name", p))?
                .unwrap_or_default(),
            None => "",
        };
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
                "ImageContentSourcePolicy" | "ImageDigestMirrorSet" => None,
                k if NODEPOOL_MCO_KINDS.contains(&k) => {
                    Some(format!("{kind} carries no mirror rules; skipped"))
                }
                "ImageTagMirrorSet" => Some(
                    "HyperShift does not accept ImageTagMirrorSet in a NodePool config (nodes never get it); skipped"
                        .to_owned(),
                ),
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
                self.config_map(object, &labelled, out)
            }
            "HostedCluster" => {
                check_api(HYPERSHIFT_API_GROUP)?;
                count(out, kind);
                let origin = self.origin(&labelled, ObjectKind::HostedCluster, name);
                self.hosted_cluster(object, &origin, out)
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
        out: &mut Decoded,
    ) -> Result<(), RuleError> {
        let Some(spec) = object.get("spec") else {
            return Err(self.invalid(&origin.location, "spec", Problem::Required));
        };
        let spec = as_map(spec).map_err(|p| self.invalid(&origin.location, "spec", p))?;
        if let Some(reference) = spec.get("imageMirrorConfig") {
            let name = reference
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>");
            self.warn(
                out,
                &origin.location,
                "spec.imageMirrorConfig",
                format!(
                    "refers to ConfigMap \"{name}\"; load that ConfigMap as a rule file for its idms.yaml/itms.yaml rules"
                ),
            );
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

    /// A ConfigMap: `idms.yaml` / `itms.yaml` (one object each) and `config` (NodePool config,
    /// several documents).
    fn config_map(
        &self,
        object: &Map<String, Value>,
        labelled: &str,
        out: &mut Decoded,
    ) -> Result<(), RuleError> {
        let empty = Map::new();
        let data = match object.get("data") {
            None | Some(Value::Null) => &empty,
            Some(data) => as_map(data).map_err(|p| self.invalid(labelled, "data", p))?,
        };
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
            let documents = parse_yaml_documents(text)
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
            let documents = parse_yaml_documents(text)
                .map_err(|e| self.invalid(labelled, "data.config", Problem::EmbeddedSyntax(e)))?;
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
        for key in entry.keys() {
            let known = key == "source"
                || key == "mirrors"
                || (rules.has_policy && key == "mirrorSourcePolicy");
            if !known {
                self.warn(
                    out,
                    location,
                    &format!("{field}.{key}"),
                    "unknown field; ignored (the API server would prune it)".to_owned(),
                );
            }
        }

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
