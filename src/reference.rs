//! Image references: the distribution reference grammar, Docker Hub normalisation and digests.
//!
//! Principal types: [`Reference`], [`Digest`] (with [`Algorithm`] and [`Hasher`]) and [`Host`].
//!
//! A reference is `[domain/]path[:tag][@digest]`. Clients write short forms (`busybox`,
//! `quay.io/ns/app`); everything inside mirrorgate works on the *normalised* form that
//! containers/image uses on a node (`docker.io/library/busybox:latest`), because rule matching is
//! byte-exact on that form. Rewriting a reference onto a mirror must produce a *canonical* string
//! (one that normalisation would leave unchanged), exactly as containers/image demands.
//!
//! The grammar is small and on the hot path of every proxied request, so it is scanned by hand
//! rather than with regular expressions; the functions mirror the productions of
//! `distribution/reference` one to one.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

mod hash;
mod host;
mod manifest_digest;
pub use hash::{Hasher, digest_of};
pub use host::{Host, HostError};
pub(crate) use host::{is_domain, is_domain_label, is_host_name, is_port};
pub use manifest_digest::manifest_digest;

/// The registry that names without a domain belong to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// An alias of [`DEFAULT_DOMAIN`] still found in old references.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of Docker Hub's single-component ("official") repositories.
const OFFICIAL_REPO_NAMESPACE: &str = "library";
/// The tag a reference without tag and digest gets, as kubelet and CRI-O do.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository name (domain and path) the distribution grammar allows.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// The longest tag the distribution grammar allows.
const TAG_LENGTH_MAX: usize = 128;

/// Why a string is not a valid image reference or digest.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReferenceError {
    /// The input is empty.
    #[error("invalid reference format: empty reference")]
    Empty,
    /// A bare 64-character hex string, which Docker refuses as a repository name because it is
    /// indistinguishable from an image ID.
    #[error("invalid repository name \"{0}\": cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    /// The domain part is not `host[:port]`.
    #[error("invalid reference format: invalid registry host \"{0}\"")]
    InvalidDomain(String),
    /// A path component breaks the grammar (`[a-z0-9]+` joined by `.`, `_`, `__` or dashes).
    #[error("invalid reference format: invalid repository path component \"{0}\"")]
    InvalidPathComponent(String),
    /// The repository path has upper-case letters.
    #[error("invalid reference format: repository name must be lowercase")]
    NotLowercase,
    /// The repository name is longer than [`NAME_TOTAL_LENGTH_MAX`].
    #[error("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters (got {0})")]
    NameTooLong(usize),
    /// The tag breaks `[\w][\w.-]{0,127}`.
    #[error("invalid reference format: invalid tag \"{0}\"")]
    InvalidTag(String),
    /// The digest is malformed or uses an unsupported algorithm.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The string is a valid reference but not written in canonical form (e.g. `docker.io/app`
    /// instead of `docker.io/library/app`), which containers/image refuses for rewritten names.
    #[error("\"{input}\" is not in canonical form (canonical: \"{canonical}\")")]
    NotCanonical {
        /// The input as given.
        input: String,
        /// What normalisation makes of it.
        canonical: String,
    },
}

/// Why a string is not a valid content digest.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DigestError {
    /// There is no `algorithm:` prefix.
    #[error("invalid digest \"{0}\": expected <algorithm>:<hex>")]
    Format(String),
    /// The algorithm is neither sha256 nor sha512.
    #[error("invalid digest \"{0}\": unsupported algorithm (sha256 and sha512 are supported)")]
    UnsupportedAlgorithm(String),
    /// The encoded part has the wrong length or is not lower-case hex.
    #[error("invalid digest \"{digest}\": {algorithm} needs {expected} lower-case hex characters")]
    Encoding {
        /// The digest as given.
        digest: String,
        /// The algorithm's name.
        algorithm: &'static str,
        /// How many hex characters the algorithm needs.
        expected: usize,
    },
}

/// A content digest algorithm registered by the OCI image specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, 64 hex characters.
    Sha256,
    /// SHA-512, 128 hex characters.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as written in digests.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The number of hex characters of an encoded digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest, `algorithm:hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// The whole `algorithm:hex` string, kept so that display and comparisons never allocate.
    value: Box<str>,
}

impl Digest {
    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part.
    pub fn hex(&self) -> &str {
        &self.value[self.algorithm.name().len() + 1..]
    }

    /// The digest as written: `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Digest {
            algorithm: validate_digest(s)?,
            value: s.into(),
        })
    }
}

/// Checks `algorithm:hex` and returns the algorithm.
fn validate_digest(s: &str) -> Result<Algorithm, DigestError> {
    let (algorithm, hex) = s
        .split_once(':')
        .ok_or_else(|| DigestError::Format(s.to_owned()))?;
    if !is_digest_algorithm(algorithm) || hex.is_empty() {
        return Err(DigestError::Format(s.to_owned()));
    }
    let algorithm = match algorithm {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        _ => return Err(DigestError::UnsupportedAlgorithm(s.to_owned())),
    };
    let lower_hex = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex.len() != algorithm.hex_len() || !lower_hex {
        return Err(DigestError::Encoding {
            digest: s.to_owned(),
            algorithm: algorithm.name(),
            expected: algorithm.hex_len(),
        });
    }
    Ok(algorithm)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// A parsed image reference: `domain/path[:tag][@digest]`, always with an explicit domain.
///
/// A reference with a digest is a *digest reference* whether or not it also carries a tag
/// (`name:tag@sha256:…`); the tag is then kept only for display, as containers/image does.
///
/// The canonical string is kept whole, with the parts as offsets into it: references are parsed,
/// cloned and printed for every attempt of every pull, and one buffer makes each of those a
/// single allocation or none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The canonical form, `domain/path[:tag][@digest]`.
    text: Box<str>,
    /// Where the domain ends (the index of the first `/`).
    domain_len: usize,
    /// Where the repository name `domain/path` ends.
    name_len: usize,
    /// Where the tag ends; equal to `name_len` when there is no tag.
    tag_end: usize,
    /// The digest's algorithm; the digest itself follows `@` after `tag_end`.
    digest: Option<Algorithm>,
}

/// The validated pieces of a reference string, before the canonical text is built.
struct Parts<'a> {
    domain: &'a str,
    /// Docker Hub single-component names get `library/` in front of `path`.
    official: bool,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<(Algorithm, &'a str)>,
    /// The input already is the canonical text: it named its domain (not the legacy alias) and
    /// needs no `library/`.
    canonical: bool,
}

/// The registry a name names and the rest of it, the one rule that normalisation, `serve`'s
/// addressing and `resolve` share: the first `/`-component is a registry only if it looks like a
/// host. `None` for a name that names none (`foo/bar` is the default registry's `foo/bar`).
pub fn named_domain(name: &str) -> Option<(&str, &str)> {
    name.split_once('/')
        .filter(|(first, _)| Host::is_registry_component(first))
}

impl<'a> Parts<'a> {
    /// ParseNormalizedNamed: split the domain the Docker way (a name that names no registry is
    /// in `default_domain`), then check the full grammar.
    fn parse(s: &'a str, default_domain: &'a str) -> Result<Parts<'a>, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::HexName(s.to_owned()));
        }
        let (domain, remainder, named_domain) = match named_domain(s) {
            Some((domain, remainder)) => (domain, remainder, true),
            None => (default_domain, s, false),
        };
        let (domain, legacy) = if domain == LEGACY_DEFAULT_DOMAIN {
            (DEFAULT_DOMAIN, true)
        } else {
            (domain, false)
        };

        let (rest, digest) = match remainder.split_once('@') {
            Some((rest, digest)) => (rest, Some((validate_digest(digest)?, digest))),
            None => (remainder, None),
        };
        // The path never holds `:` (ports live in the domain), so a colon starts the tag.
        let (path, tag) = match rest.split_once(':') {
            Some((path, tag)) => (path, Some(tag)),
            None => (rest, None),
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::NotLowercase);
        }
        if !is_domain(domain) {
            return Err(ReferenceError::InvalidDomain(domain.to_owned()));
        }
        check_path(path)?;
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(ReferenceError::InvalidTag(tag.to_owned()));
        }
        let official = domain == DEFAULT_DOMAIN && !path.contains('/');
        Ok(Parts {
            domain,
            official,
            path,
            tag,
            digest,
            canonical: named_domain && !legacy && !official,
        })
    }

    /// The reference these parts name, its text built anew.
    fn build(&self) -> Result<Reference, ReferenceError> {
        let mut text = String::with_capacity(
            self.domain.len()
                + self.path.len()
                + 10
                + self.tag.map_or(0, str::len)
                + self.digest.map_or(0, |(_, d)| d.len() + 1),
        );
        text.push_str(self.domain);
        text.push('/');
        if self.official {
            text.push_str(OFFICIAL_REPO_NAMESPACE);
            text.push('/');
        }
        text.push_str(self.path);
        let name_len = text.len();
        if let Some(tag) = self.tag {
            text.push(':');
            text.push_str(tag);
        }
        let tag_end = text.len();
        if let Some((_, digest)) = self.digest {
            text.push('@');
            text.push_str(digest);
        }
        Ok(Layout::new(self.domain.len(), name_len, tag_end, self.digest)?.with_text(text))
    }

    /// Where the parts fall in the input, which is the canonical text when `canonical`.
    fn layout(&self) -> Result<Layout, ReferenceError> {
        let name_len = self.domain.len() + 1 + self.path.len();
        Layout::new(
            self.domain.len(),
            name_len,
            name_len + self.tag.map_or(0, |t| t.len() + 1),
            self.digest,
        )
    }
}

/// The offsets of a reference's parts in its text, checked against the name length limit.
#[derive(Debug, Clone, Copy)]
struct Layout {
    domain_len: usize,
    name_len: usize,
    tag_end: usize,
    digest: Option<Algorithm>,
}

impl Layout {
    fn new(
        domain_len: usize,
        name_len: usize,
        tag_end: usize,
        digest: Option<(Algorithm, &str)>,
    ) -> Result<Layout, ReferenceError> {
        if name_len > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong(name_len));
        }
        Ok(Layout {
            domain_len,
            name_len,
            tag_end,
            digest: digest.map(|(algorithm, _)| algorithm),
        })
    }

    fn with_text(self, text: String) -> Reference {
        Reference {
            text: text.into_boxed_str(),
            domain_len: self.domain_len,
            name_len: self.name_len,
            tag_end: self.tag_end,
            digest: self.digest,
        }
    }
}

impl Reference {
    /// Parses what a user or client writes, normalised as containers/image and CRI-O do: a
    /// missing domain becomes `docker.io`, `index.docker.io` becomes `docker.io`, one-component
    /// Docker Hub names get `library/`, and a reference without tag and digest gets `:latest`.
    pub fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
        Self::parse_with_default(s, DEFAULT_DOMAIN)
    }

    /// [`Reference::parse_normalized`] with another registry for names that name none: what
    /// `serve` does with `default_registry` for `/v2/<name>/…`, so that `resolve` answers for
    /// the same upstream image as `serve` (`busybox` is `quay.io/busybox:latest` when
    /// `default_registry` is `quay.io`; only Docker Hub names get `library/`).
    pub fn parse_with_default(s: &str, default_domain: &str) -> Result<Reference, ReferenceError> {
        let mut parts = Parts::parse(s, default_domain)?;
        if parts.tag.is_none() && parts.digest.is_none() {
            parts.tag = Some(DEFAULT_TAG);
            parts.canonical = false;
        }
        if parts.canonical {
            Ok(parts.layout()?.with_text(s.to_owned()))
        } else {
            parts.build()
        }
    }

    /// Parses a reference that must already be canonical (what containers/image's
    /// `reference.ParseNamed` accepts): normalising it must not change it. No tag is added.
    pub fn parse_canonical(s: &str) -> Result<Reference, ReferenceError> {
        Self::parse_canonical_owned(s.to_owned())
    }

    /// [`Reference::parse_canonical`] on an owned string, which becomes the reference's text.
    pub fn parse_canonical_owned(s: String) -> Result<Reference, ReferenceError> {
        let parts = Parts::parse(&s, DEFAULT_DOMAIN)?;
        if !parts.canonical {
            return Err(ReferenceError::NotCanonical {
                canonical: parts.build()?.to_string(),
                input: s,
            });
        }
        let layout = parts.layout()?;
        Ok(layout.with_text(s))
    }

    /// Builds a reference from parts that are each validated: a registry host, a repository path
    /// (normalised for Docker Hub like any other input), and an optional tag or digest.
    pub fn from_parts(
        domain: &str,
        path: &str,
        tag: Option<&str>,
        digest: Option<&Digest>,
    ) -> Result<Reference, ReferenceError> {
        // A domain that normalisation would not read as one (no `.` or `:`, not `localhost`)
        // has no canonical form: `registry1/ns/app` means `docker.io/registry1/ns/app`.
        let looks_like_a_host = Host::is_registry_component(domain);
        if !is_domain(domain) || !looks_like_a_host {
            return Err(ReferenceError::InvalidDomain(domain.to_owned()));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::NotLowercase);
        }
        check_path(path)?;
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(ReferenceError::InvalidTag(tag.to_owned()));
        }
        let domain = if domain == LEGACY_DEFAULT_DOMAIN {
            DEFAULT_DOMAIN
        } else {
            domain
        };
        Parts {
            domain,
            official: domain == DEFAULT_DOMAIN && !path.contains('/'),
            path,
            tag,
            digest: digest.map(|d| (d.algorithm, d.as_str())),
            canonical: false,
        }
        .build()
    }

    /// The canonical string form, `domain/path[:tag][@digest]`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The repository name, `domain/path`: the key that mirror rules match.
    pub fn name(&self) -> &str {
        &self.text[..self.name_len]
    }

    /// The registry host, with its port if any.
    pub fn domain(&self) -> &str {
        &self.text[..self.domain_len]
    }

    /// The repository path within the registry.
    pub fn path(&self) -> &str {
        &self.text[self.domain_len + 1..self.name_len]
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        (self.tag_end > self.name_len).then(|| &self.text[self.name_len + 1..self.tag_end])
    }

    /// The digest as written (`sha256:…`), if any.
    pub fn digest_str(&self) -> Option<&str> {
        self.digest.map(|_| &self.text[self.tag_end + 1..])
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        let algorithm = self.digest?;
        Some(Digest {
            algorithm,
            value: self.text[self.tag_end + 1..].into(),
        })
    }

    /// Whether this reference names content by digest (IDMS/ICSP mirrors apply) rather than by
    /// tag (ITMS mirrors apply).
    pub fn is_digest(&self) -> bool {
        self.digest.is_some()
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// The same as [`Reference::parse_normalized`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse_normalized(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Every `/`-separated component of a repository path follows the component grammar.
fn check_path(path: &str) -> Result<(), ReferenceError> {
    match path.split('/').find(|c| !is_path_component(c)) {
        Some(bad) => Err(ReferenceError::InvalidPathComponent(bad.to_owned())),
        None => Ok(()),
    }
}

/// `[a-z0-9]+` runs joined by exactly one separator: `.`, `_`, `__` or one or more `-`.
pub(crate) fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let separator = &s[start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|c| c == b'-');
        if !valid {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `[a-z0-9]+(?:[.+_-][a-z0-9]+)*`, the OCI digest algorithm grammar.
fn is_digest_algorithm(s: &str) -> bool {
    !s.is_empty()
        && s.split(['.', '+', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn normalized(s: &str) -> String {
        Reference::parse_normalized(s).unwrap().to_string()
    }

    fn error(s: &str) -> ReferenceError {
        Reference::parse_normalized(s).unwrap_err()
    }

    #[test]
    fn short_docker_hub_name_gets_domain_library_and_latest() {
        assert_eq!(normalized("busybox"), "docker.io/library/busybox:latest");
    }

    #[test]
    fn docker_hub_name_with_namespace_keeps_it() {
        assert_eq!(normalized("bitnami/redis:7"), "docker.io/bitnami/redis:7");
    }

    #[test]
    fn a_bare_name_is_in_the_default_domain_given_and_only_docker_hub_adds_library() {
        let in_quay = |s: &str| {
            Reference::parse_with_default(s, "quay.io")
                .unwrap()
                .to_string()
        };
        assert_eq!(
            [
                in_quay("conformance/repo1:x"),
                in_quay("busybox"),
                in_quay("registry.example:5000/ns/app:v1"),
                Reference::parse_with_default("busybox", DEFAULT_DOMAIN)
                    .unwrap()
                    .to_string(),
            ],
            [
                "quay.io/conformance/repo1:x",
                "quay.io/busybox:latest",
                "registry.example:5000/ns/app:v1",
                "docker.io/library/busybox:latest",
            ]
        );
    }

    #[test]
    fn legacy_index_domain_is_docker_io() {
        assert_eq!(
            normalized("index.docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn docker_io_single_component_gets_library() {
        assert_eq!(
            normalized("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn first_component_without_dot_or_colon_is_a_docker_hub_namespace() {
        assert_eq!(
            normalized("registry1/ns/app:v1"),
            "docker.io/registry1/ns/app:v1"
        );
    }

    #[test]
    fn localhost_is_a_host() {
        let r = Reference::parse_normalized("localhost/app:v1").unwrap();
        assert_eq!((r.domain(), r.path()), ("localhost", "app"));
    }

    #[test]
    fn host_with_port_is_kept() {
        let r = Reference::parse_normalized("localhost:5000/ns/app:v1").unwrap();
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("localhost:5000", "ns/app", Some("v1"))
        );
    }

    #[test]
    fn upper_case_host_is_not_folded() {
        assert_eq!(normalized("Quay.io/ns/app:v1"), "Quay.io/ns/app:v1");
    }

    #[test]
    fn ipv6_host_with_port_is_accepted() {
        let s = format!("[::1]:5000/ns/app@sha256:{HEX}");
        assert_eq!(normalized(&s), s);
    }

    #[test]
    fn digest_reference_without_tag_gets_no_latest() {
        let r = Reference::parse_normalized(&format!("quay.io/ns/app@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag(), None);
    }

    #[test]
    fn tag_and_digest_reference_is_a_digest_reference() {
        let r = Reference::parse_normalized(&format!("quay.io/ns/app:v1@sha256:{HEX}")).unwrap();
        assert!(r.is_digest() && r.tag() == Some("v1"));
    }

    #[test]
    fn path_separators_follow_the_grammar() {
        assert_eq!(
            normalized("example.com/a.b/c_d/e__f/g---h:v"),
            "example.com/a.b/c_d/e__f/g---h:v"
        );
    }

    #[test]
    fn upper_case_path_is_rejected() {
        assert_eq!(error("quay.io/NS/app"), ReferenceError::NotLowercase);
    }

    #[test]
    fn empty_reference_is_rejected() {
        assert_eq!(error(""), ReferenceError::Empty);
    }

    #[test]
    fn double_slash_is_rejected() {
        assert_eq!(
            error("quay.io//app"),
            ReferenceError::InvalidPathComponent(String::new())
        );
    }

    #[test]
    fn trailing_separator_in_component_is_rejected() {
        assert_eq!(
            error("quay.io/ns-/app"),
            ReferenceError::InvalidPathComponent("ns-".into())
        );
    }

    #[test]
    fn triple_underscore_is_rejected() {
        assert_eq!(
            error("quay.io/a___b"),
            ReferenceError::InvalidPathComponent("a___b".into())
        );
    }

    #[test]
    fn bad_port_is_rejected() {
        assert_eq!(
            error("quay.io:port/app"),
            ReferenceError::InvalidDomain("quay.io:port".into())
        );
    }

    #[test]
    fn host_label_ending_in_dash_is_rejected() {
        assert_eq!(
            error("quay-.io/app"),
            ReferenceError::InvalidDomain("quay-.io".into())
        );
    }

    #[test]
    fn tag_starting_with_dot_is_rejected() {
        assert_eq!(
            error("quay.io/app:.v1"),
            ReferenceError::InvalidTag(".v1".into())
        );
    }

    #[test]
    fn tag_longer_than_128_is_rejected() {
        let tag = "v".repeat(129);
        assert_eq!(
            error(&format!("quay.io/app:{tag}")),
            ReferenceError::InvalidTag(tag)
        );
    }

    #[test]
    fn tag_of_128_is_accepted() {
        let tag = "v".repeat(128);
        assert!(Reference::parse_normalized(&format!("quay.io/app:{tag}")).is_ok());
    }

    #[test]
    fn name_over_255_characters_is_rejected() {
        let path = "a".repeat(250);
        assert_eq!(
            error(&format!("quay.io/{path}")),
            ReferenceError::NameTooLong(258)
        );
    }

    #[test]
    fn bare_hex_string_is_rejected() {
        assert_eq!(error(HEX), ReferenceError::HexName(HEX.into()));
    }

    #[test]
    fn sha512_digest_is_accepted() {
        let d: Digest = format!("sha512:{}", "b".repeat(128)).parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn short_sha256_digest_is_rejected() {
        let err = "sha256:abc".parse::<Digest>().unwrap_err();
        assert!(matches!(err, DigestError::Encoding { expected: 64, .. }));
    }

    #[test]
    fn upper_case_hex_digest_is_rejected() {
        let err = format!("sha256:{}", "A".repeat(64))
            .parse::<Digest>()
            .unwrap_err();
        assert!(matches!(err, DigestError::Encoding { .. }));
    }

    #[test]
    fn unknown_digest_algorithm_is_rejected() {
        let err = format!("md5:{HEX}").parse::<Digest>().unwrap_err();
        assert!(matches!(err, DigestError::UnsupportedAlgorithm(_)));
    }

    #[test]
    fn digest_without_algorithm_is_rejected() {
        assert_eq!(
            HEX.parse::<Digest>().unwrap_err(),
            DigestError::Format(HEX.into())
        );
    }

    #[test]
    fn digest_hex_part_is_exposed() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(d.hex(), HEX);
    }

    #[test]
    fn canonical_reference_round_trips() {
        let s = format!("mirror.example.com/ns/app:v1@sha256:{HEX}");
        assert_eq!(Reference::parse_canonical(&s).unwrap().to_string(), s);
    }

    #[test]
    fn non_canonical_docker_hub_name_is_refused_as_canonical() {
        let err = Reference::parse_canonical("docker.io/app:v1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"docker.io/app:v1\" is not in canonical form (canonical: \"docker.io/library/app:v1\")"
        );
    }

    #[test]
    fn port_moved_into_path_is_not_a_reference() {
        assert!(Reference::parse_canonical("mirror.local/ex:5000/ns/x:v1").is_err());
    }

    #[test]
    fn parts_are_exposed_for_a_tag_and_digest_reference() {
        let r =
            Reference::parse_normalized(&format!("localhost:5000/ns/app:v1@sha256:{HEX}")).unwrap();
        assert_eq!(
            (r.domain(), r.path(), r.tag(), r.digest_str()),
            (
                "localhost:5000",
                "ns/app",
                Some("v1"),
                Some(format!("sha256:{HEX}").as_str())
            )
        );
    }

    #[test]
    fn digest_accessor_returns_a_validated_digest() {
        let r = Reference::parse_normalized(&format!("quay.io/app@sha256:{HEX}")).unwrap();
        assert_eq!(r.digest().unwrap().hex(), HEX);
    }

    #[test]
    fn official_image_path_includes_library() {
        let r = Reference::parse_normalized("busybox:1").unwrap();
        assert_eq!(
            (r.name(), r.path()),
            ("docker.io/library/busybox", "library/busybox")
        );
    }

    #[test]
    fn legacy_index_domain_is_not_canonical() {
        assert!(Reference::parse_canonical("index.docker.io/library/busybox:1").is_err());
    }

    #[test]
    fn from_parts_refuses_a_domain_normalisation_would_not_read_as_one() {
        assert_eq!(
            Reference::from_parts("registry1", "ns/app", Some("v1"), None),
            Err(ReferenceError::InvalidDomain("registry1".into()))
        );
    }

    #[test]
    fn from_parts_keeps_a_single_label_host() {
        let r = Reference::from_parts("registry1:5000", "ns/app", Some("v1"), None).unwrap();
        assert_eq!(r.to_string(), "registry1:5000/ns/app:v1");
    }

    #[test]
    fn from_parts_normalises_docker_hub() {
        let r = Reference::from_parts("docker.io", "busybox", Some("1"), None).unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
    }
}
