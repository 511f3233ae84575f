//! Scopes: the strings that mirror rules are written in (`quay.io`, `quay.io/ns/repo`,
//! `*.example.com`), their grammar and how they match a repository name.
//!
//! The grammar is the one the OpenShift API server enforces on IDMS/ITMS (and the MCO on every
//! kind): a source is a wildcard host or `host[:port][/path]`, a mirror only the latter. Matching
//! follows containers/image (`refMatchingPrefix`, `refMatchingSubdomainPrefix`), not HyperShift.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::reference::{is_domain_label, is_host_name, is_path_component, is_port};

/// Why a string is not a valid scope.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScopeError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// A `*` that is not the leading `*.` of a wildcard host, or a wildcard where none is allowed.
    #[error(
        "a wildcard is only allowed as the leading \"*.\" of a source host (\"*.example.com\")"
    )]
    Wildcard,
    /// The host part is not DNS labels with an optional numeric port.
    #[error("invalid registry host \"{0}\"")]
    Host(String),
    /// A path component breaks the repository grammar.
    #[error(
        "invalid repository path component \"{0}\" (lower-case letters and digits, joined by \".\", \"_\", \"__\" or dashes)"
    )]
    PathComponent(String),
    /// A tag or digest, which a scope cannot carry.
    #[error("a scope cannot carry a tag or a digest")]
    TagOrDigest,
    /// A URL (`https://quay.io/ns`) where a repository is wanted.
    #[error(
        "sources and mirrors are repositories (host[:port][/path]), not URLs: write \"{suggestion}\" (the scheme comes from the registries settings)"
    )]
    Url {
        /// The value without its scheme and trailing slashes.
        suggestion: String,
    },
}

/// A repository scope, `host[:port][/path…]`: what a non-wildcard source or any mirror names.
/// Shared (`Arc`) because resolutions hand scopes out for every pull.
///
/// The host keeps its case (containers/image compares hosts byte for byte); the path is lower case
/// by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoScope(Arc<str>);

impl RepoScope {
    /// Parses and validates `host[:port][/path…]`.
    pub fn parse(s: &str) -> Result<RepoScope, ScopeError> {
        if s.is_empty() {
            return Err(ScopeError::Empty);
        }
        if let Some((_, rest)) = s.split_once("://") {
            return Err(ScopeError::Url {
                suggestion: rest.trim_end_matches('/').to_owned(),
            });
        }
        if s.contains('*') {
            return Err(ScopeError::Wildcard);
        }
        if s.contains('@') {
            return Err(ScopeError::TagOrDigest);
        }
        let (host, path) = match s.split_once('/') {
            Some((host, path)) => (host, Some(path)),
            None => (s, None),
        };
        let host_ok = match host.split_once(':') {
            Some((name, port)) => is_host_name(name) && is_port(port),
            None => is_host_name(host),
        };
        if !host_ok {
            // A colon after the host is a tag; say so rather than blame the host.
            return Err(if path.is_some_and(|p| p.contains(':')) {
                ScopeError::TagOrDigest
            } else {
                ScopeError::Host(host.to_owned())
            });
        }
        if let Some(path) = path {
            for component in path.split('/') {
                if component.contains(':') {
                    return Err(ScopeError::TagOrDigest);
                }
                if !is_path_component(component) {
                    return Err(ScopeError::PathComponent(component.to_owned()));
                }
            }
        }
        Ok(RepoScope(s.into()))
    }

    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The scope of a rule's source: a repository scope or a wildcard host `*.domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `*.example.com`: every subdomain of the domain (not the apex), with any port.
    Wildcard(Arc<str>),
    /// `host[:port][/path…]`: that registry, namespace or repository and everything below it.
    Repo(RepoScope),
}

impl Scope {
    /// Parses a rule source: a wildcard host or a repository scope.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        if let Some(domain) = s.strip_prefix("*.") {
            let valid = !domain.is_empty() && domain.split('.').all(is_domain_label);
            return if valid {
                Ok(Scope::Wildcard(s.into()))
            } else if domain.contains(['/', ':', '@', '*']) {
                Err(ScopeError::Wildcard)
            } else {
                Err(ScopeError::Host(s.to_owned()))
            };
        }
        RepoScope::parse(s).map(Scope::Repo)
    }

    /// The scope as written, e.g. `*.example.com` or `quay.io/ns`.
    pub fn as_str(&self) -> &str {
        match self {
            Scope::Wildcard(s) => s,
            Scope::Repo(r) => r.as_str(),
        }
    }

    /// Whether this is a `*.domain` wildcard.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Scope::Wildcard(_))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The positions in `name` (a repository name, `host[:port]/path`) where a non-wildcard scope may
/// end and still match, longest first: the whole name, then before every `/` or `:`.
///
/// containers/image accepts `/`, `:` or `@` after the prefix; a name has no `@`, and its only `:` is
/// the port's, which is why a host-only scope matches that host on any port.
pub(crate) fn prefix_ends(name: &str) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(name.len()).chain(
        name.bytes()
            .enumerate()
            .rev()
            .filter(|&(_, b)| b == b'/' || b == b':')
            .map(|(i, _)| i),
    )
}

/// The wildcard suffixes (`.example.com`, with the leading dot) that can match `name`, longest
/// first, each with the position where the host name ends (where a rewrite continues).
///
/// This reproduces containers/image's `refMatchingSubdomainPrefix`: it looks for the *first*
/// occurrence of the suffix in the name, so `a.example.community.example.com` does not match
/// `*.example.com` even though a plain suffix test would say it does.
pub(crate) fn wildcard_suffixes(name: &str) -> impl Iterator<Item = (&str, usize)> + '_ {
    let host_end = name.find(['/', ':']).unwrap_or(name.len());
    let host = &name[..host_end];
    host.bytes()
        .enumerate()
        .filter(|&(i, b)| b == b'.' && i > 0)
        .map(move |(i, _)| &host[i..])
        .filter(move |suffix| host.find(suffix) == Some(host_end - suffix.len()))
        .map(move |suffix| (suffix, host_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_only_scope_is_valid() {
        assert!(Scope::parse("quay.io").is_ok());
    }

    #[test]
    fn single_label_host_is_valid() {
        assert!(Scope::parse("registry1/ns").is_ok());
    }

    #[test]
    fn upper_case_host_is_valid() {
        assert!(Scope::parse("Mirror.Example.com/x").is_ok());
    }

    #[test]
    fn host_with_port_and_path_is_valid() {
        assert!(Scope::parse("localhost:5000/ns/app").is_ok());
    }

    #[test]
    fn wildcard_source_is_valid() {
        assert!(Scope::parse("*.example.com").unwrap().is_wildcard());
    }

    #[test]
    fn wildcard_with_path_is_rejected() {
        assert_eq!(Scope::parse("*.example.com/ns"), Err(ScopeError::Wildcard));
    }

    #[test]
    fn wildcard_inside_path_is_rejected() {
        assert_eq!(Scope::parse("quay.io/*"), Err(ScopeError::Wildcard));
    }

    #[test]
    fn wildcard_mirror_is_rejected() {
        assert_eq!(RepoScope::parse("*.example.com"), Err(ScopeError::Wildcard));
    }

    #[test]
    fn double_slash_is_rejected() {
        assert_eq!(
            RepoScope::parse("Mirror.Example.com//x"),
            Err(ScopeError::PathComponent(String::new()))
        );
    }

    #[test]
    fn trailing_slash_is_rejected() {
        assert_eq!(
            RepoScope::parse("quay.io/"),
            Err(ScopeError::PathComponent(String::new()))
        );
    }

    #[test]
    fn upper_case_path_is_rejected() {
        assert_eq!(
            RepoScope::parse("quay.io/NS"),
            Err(ScopeError::PathComponent("NS".into()))
        );
    }

    #[test]
    fn tag_is_rejected() {
        assert_eq!(
            RepoScope::parse("quay.io/ns/app:v1"),
            Err(ScopeError::TagOrDigest)
        );
    }

    #[test]
    fn digest_is_rejected() {
        assert_eq!(
            RepoScope::parse("quay.io/ns/app@sha256:abc"),
            Err(ScopeError::TagOrDigest)
        );
    }

    #[test]
    fn scheme_is_rejected() {
        assert!(RepoScope::parse("https://quay.io").is_err());
    }

    #[test]
    fn prefix_ends_are_longest_first() {
        let ends: Vec<_> = prefix_ends("a.io:5000/ns/app").collect();
        assert_eq!(ends, vec![16, 12, 9, 4]);
    }

    #[test]
    fn wildcard_suffixes_are_longest_first() {
        let suffixes: Vec<_> = wildcard_suffixes("a.b.example.com:5000/x").collect();
        assert_eq!(
            suffixes,
            vec![(".b.example.com", 15), (".example.com", 15), (".com", 15)]
        );
    }

    #[test]
    fn wildcard_suffix_uses_first_occurrence() {
        let suffixes: Vec<_> = wildcard_suffixes("a.example.community.example.com/x")
            .map(|(s, _)| s)
            .collect();
        assert!(!suffixes.contains(&".example.com"));
    }
}
