//! Mirror rules: the OpenShift objects that describe registry mirrors, validated and merged into
//! one immutable override map, and the question every pull starts from — for this reference,
//! which registries are tried, in what order, and may the source be contacted?
//!
//! Principal types: [`RuleSet`] (the override map, built by [`load`], [`load_str`] or
//! [`RuleSet::from_documents`]), [`Rule`], [`Scope`], [`Resolution`] and [`PullSource`] (what
//! `resolve` answers), [`ResolveError`] and [`RuleError`].
//!
//! The answers are those of a node: the Machine Config Operator renders ICSP, IDMS and ITMS into
//! `registries.conf` (openshift/runtime-utils), and containers/image reads it. HyperShift's
//! management-side lookups behave differently and are deliberately not copied.
//!
//! The flow is: [`load`] reads files and directories, `objects` decodes each YAML/JSON document
//! into [`MirrorSet`]s (one per source entry, every field checked and every error located by file,
//! document, object and field), `RuleSet::build` validates across objects and merges per scope,
//! and [`RuleSet::resolve`] answers for a reference, skipping the mirrors that are mirrorgate
//! itself ([`SelfNames`], set with [`RuleSet::with_self_names`]). [`RuleSet::to_registries_conf`] renders the same rule set
//! as the TOML a node would get.
//!
//! Objects of many owners (a live cluster's tenants) are given as [`Member`]s to
//! [`load_with_members`]: each stands or fails on its own ([`MemberError`]), keeping its last good
//! version ([`MemberHistory`]) while the rest of the set is built.
//!
//! The rules in force are [`Views`]: one complete rule set per [`ViewName`] (today only
//! `management`), each replaced on its own.

mod load;
mod members;
mod merge;
pub mod metrics;
mod objects;
mod registries_conf;
mod resolve;
mod ruleset;
mod scope;
mod self_names;
pub mod views;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

pub use load::{Documents, load, load_str, load_with_documents};
pub use members::{InForce, Member, MemberError, MemberHistory, MemberObject, load_with_members};
// Read by the cluster's objects (`crate::kubernetes`) only.
#[cfg(feature = "kubernetes")]
pub(crate) use objects::{
    HOSTED_CLUSTER_MIRROR_FIELDS, NODE_POOL_MIRROR_FIELDS, near_mirror_field,
};
pub use resolve::{BlockedSource, PullSource, Resolution, ResolveError, Role, SkippedSource};
pub use ruleset::{ConfigMapUse, Rule, RuleSet, Summary};
pub use scope::{RepoScope, Scope, ScopeError};
pub use self_names::{SelfMirror, SelfNames};
pub use views::{ViewName, Views};

/// The most mirrors one scope may have for one kind of reference (digest or tag), after its
/// objects are merged: each is an upstream request of a pull that they all fail, and a line of
/// the error that pull gets. More is a configuration error naming the entries.
pub const MAX_MIRRORS_PER_SCOPE: usize = 64;

/// Whether a source may be contacted when its mirrors fail (`mirrorSourcePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Policy {
    /// Fall back to the source after the mirrors (the default, and ICSP's only behaviour).
    #[default]
    AllowContactingSource,
    /// Never contact the source: the whole scope is blocked, for tag and digest pulls alike.
    NeverContactSource,
}

impl Policy {
    /// The policy's name as written in objects.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::AllowContactingSource => "AllowContactingSource",
            Policy::NeverContactSource => "NeverContactSource",
        }
    }
}

/// Which references a mirror serves: IDMS and ICSP mirrors serve digest references, ITMS mirrors
/// tag references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Serves {
    /// `@sha256:…` references (also `:tag@sha256:…`).
    Digest,
    /// `:tag` references, including the implicit `:latest`.
    Tag,
}

/// The kinds of object that carry mirror rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `operator.openshift.io/v1alpha1 ImageContentSourcePolicy` (deprecated; digest mirrors).
    ImageContentSourcePolicy,
    /// `config.openshift.io/v1 ImageDigestMirrorSet`.
    ImageDigestMirrorSet,
    /// `config.openshift.io/v1 ImageTagMirrorSet`.
    ImageTagMirrorSet,
    /// `hypershift.openshift.io/v1beta1 HostedCluster` (`spec.imageContentSources`, digest mirrors).
    HostedCluster,
}

impl ObjectKind {
    /// The kind's name as written in objects.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::ImageContentSourcePolicy => "ImageContentSourcePolicy",
            ObjectKind::ImageDigestMirrorSet => "ImageDigestMirrorSet",
            ObjectKind::ImageTagMirrorSet => "ImageTagMirrorSet",
            ObjectKind::HostedCluster => "HostedCluster",
        }
    }
}

/// Where an object was read: the file, the document in it, any container object it sits in
/// (a List, a ConfigMap key), and the object's kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file as it was named to the loader.
    pub file: Arc<str>,
    /// The rest of the location, e.g. `document 2 (ImageDigestMirrorSet/quay-mirror)` or
    /// `document 1 (List) items[0] (ImageDigestMirrorSet/one)`.
    pub location: String,
    /// The object's kind.
    pub kind: ObjectKind,
    /// The object's `metadata.name` (empty when it has none).
    pub name: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.location)
    }
}

impl Origin {
    /// The object as `resolve` names it: `file: location`, without the loader's `document 1
    /// (Kind/name)` where the origin is a cluster object's (`cluster: ImageDigestMirrorSet/foo`),
    /// which is one document and already says what it is.
    pub fn describe(&self) -> String {
        if self.file.starts_with("cluster: ")
            && let Some(label) = self.location.strip_prefix("document 1 (")
            && let Some(end) = label.find(')')
        {
            return format!("{}{}", self.file, &label[end + 1..]);
        }
        self.to_string()
    }
}

/// One `source → mirrors` entry of one object, validated: the unit the override map is built
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSet {
    /// The scope the entry applies to.
    pub source: Scope,
    /// The mirrors in the object's order (duplicates are possible only in ICSP).
    pub mirrors: Vec<RepoScope>,
    /// The entry's `mirrorSourcePolicy` (ICSP and HostedCluster entries always allow the source).
    pub policy: Policy,
    /// Whether the mirrors serve digest or tag references.
    pub serves: Serves,
    /// The object the entry came from.
    pub origin: Arc<Origin>,
    /// The entry's field path in the object, e.g. `spec.imageDigestMirrors[0]`.
    pub field: String,
}

impl MirrorSet {
    /// Whether at least one mirror differs from the source. Entries without one are ignored
    /// entirely, policy included, as runtime-utils does.
    pub fn has_real_mirror(&self) -> bool {
        self.mirrors
            .iter()
            .any(|m| m.as_str() != self.source.as_str())
    }
}

/// Something in the rule files that is accepted but deserves the user's attention (an unknown
/// field, a skipped NodePool config kind, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where: file, document, object and field.
    pub at: String,
    /// What.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why a rule set could not be loaded. Any error fails the whole set, as the MCO refuses to render
/// a `registries.conf` from an invalid one; only a [`Member`] fails on its own.
#[derive(Debug, Error)]
pub enum RuleError {
    /// A rule path could not be read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// A file is not valid YAML or JSON.
    #[error("{file}: {message}")]
    Syntax {
        /// The file, and the document or ConfigMap key when known.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value breaks the rules of the API server or the Machine Config Operator.
    #[error("{at}: {problem}")]
    Invalid {
        /// File, document, object and field.
        at: String,
        /// What is wrong.
        problem: Problem,
    },
}

/// What is wrong with a value in a rule object.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    /// A required field is missing.
    #[error("required field is missing")]
    Required,
    /// A field has the wrong JSON type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the schema wants.
        expected: &'static str,
        /// What the document has.
        found: &'static str,
    },
    /// A document of a kind that carries no mirror rules and is not a container of them.
    #[error(
        "unsupported kind \"{kind}\" (apiVersion \"{api_version}\"): expected ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet, List, ConfigMap, HostedCluster or NodePool"
    )]
    UnsupportedKind {
        /// The document's `kind`.
        kind: String,
        /// The document's `apiVersion`.
        api_version: String,
    },
    /// A known kind with an API group/version it does not belong to.
    #[error("unsupported apiVersion \"{found}\" for {kind}: expected \"{expected}\"")]
    ApiVersion {
        /// The kind.
        kind: String,
        /// The `apiVersion` written.
        found: String,
        /// The `apiVersion` the kind is served under.
        expected: &'static str,
    },
    /// A ConfigMap key holds an object of the other mirror kind.
    #[error("key {key} must hold an {expected}, found kind \"{found}\"")]
    ConfigMapKind {
        /// The data key.
        key: &'static str,
        /// The kind the key is for.
        expected: &'static str,
        /// The kind found.
        found: String,
    },
    /// A source that is not a valid scope.
    #[error("invalid source \"{value}\": {reason}")]
    InvalidSource {
        /// The source as written.
        value: String,
        /// Why.
        reason: ScopeError,
    },
    /// A mirror that is not a valid repository scope.
    #[error("invalid mirror \"{value}\": {reason}")]
    InvalidMirror {
        /// The mirror as written.
        value: String,
        /// Why.
        reason: ScopeError,
    },
    /// The same mirror twice in a list the API declares a set.
    #[error("duplicate mirror \"{0}\" (mirrors is a set)")]
    DuplicateMirror(String),
    /// A `mirrorSourcePolicy` outside the enum.
    #[error(
        "unsupported value \"{0}\": supported values: \"NeverContactSource\", \"AllowContactingSource\""
    )]
    UnsupportedPolicy(String),
    /// NeverContactSource while the source is listed among its own mirrors.
    #[error(
        "cannot set mirrorSourcePolicy: NeverContactSource if the source \"{0}\" is one of the mirrors"
    )]
    SourceIsMirror(String),
    /// Two entries for one source string with different policies (rejected by the MCO).
    #[error(
        "conflicting mirrorSourcePolicy is set for the same source \"{source_name}\" in imagedigestmirrorsets, imagetagmirrorsets, or imagecontentsourcepolicies ({policy} here, {other_policy} at {other})"
    )]
    ConflictingPolicy {
        /// The source string.
        source_name: String,
        /// This entry's policy.
        policy: &'static str,
        /// The other entry's policy.
        other_policy: &'static str,
        /// Where the other entry is.
        other: String,
    },
    /// A list or string over a limit of the HostedCluster API.
    #[error("must have at most {max} {what}")]
    TooLong {
        /// The limit.
        max: usize,
        /// Items or characters.
        what: &'static str,
    },
    /// More mirrors for one scope than mirrorgate tries for a pull ([`MAX_MIRRORS_PER_SCOPE`]).
    #[error(
        "scope \"{scope}\" has {count} {serves} mirrors, more than the {max} a pull may try (each is an upstream request of a pull they all fail); entries merged: {entries}, this one the last"
    )]
    TooManyMirrors {
        /// The source scope.
        scope: String,
        /// `digest` or `tag`.
        serves: &'static str,
        /// Its mirrors after merging.
        count: usize,
        /// The entries they were merged from.
        entries: usize,
        /// The limit.
        max: usize,
    },
    /// Embedded YAML (a ConfigMap key) that does not parse.
    #[error("invalid YAML: {0}")]
    EmbeddedSyntax(String),
    /// A NodePool `spec.config` entry naming a ConfigMap that does not exist (`namespace/name`).
    #[error("names ConfigMap \"{0}\", which does not exist")]
    MissingConfigMap(String),
}
