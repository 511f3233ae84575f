//! Routing a reference: the ordered pull sources for an image, as containers/image computes them
//! (`PullSourcesFromReference`, then the blocked check of `newDockerClient` for every attempt).
//!
//! 1. Exactly one rule applies: the longest matching scope (see [`RuleSet::find`]).
//! 2. A digest reference (`@sha256:…`, with or without a tag) takes the rule's digest mirrors
//!    (IDMS, ICSP); a tag reference (including the implicit `:latest`) its tag mirrors (ITMS).
//! 3. Each mirror replaces the matched scope; the result must be a canonical reference or the
//!    whole pull fails before anything is contacted.
//! 4. The source comes last.
//! 5. Every attempt whose own repository name falls in a blocked scope is dropped: the source of a
//!    NeverContactSource scope, and any mirror that lies inside a blocked scope.
//! 6. Every mirror on one of mirrorgate's own names is skipped: mirrorgate is already the one
//!    routing the pull (see `self_names`).
//! 7. If nothing is left, the pull is refused as blocked.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::reference::{Reference, ReferenceError};

use super::ruleset::{Match, RuleSet};
use super::{Scope, Serves};

/// The part an attempt plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A mirror of the matched scope.
    Mirror,
    /// The reference itself.
    Source,
}

impl Role {
    /// `mirror` or `source`, as printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Mirror => "mirror",
            Role::Source => "source",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One place to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The physical reference to fetch.
    pub reference: Reference,
    /// Whether it is a mirror or the source.
    pub role: Role,
    /// The objects it comes from (`file: location`, `; `-separated): for a mirror those that list
    /// it, for the source those of the matched rule that route this kind of reference (see
    /// [`super::Rule::source_origin`]); `None` when no rule applies.
    pub origin: Option<Arc<str>>,
}

/// An attempt dropped because its repository lies in a blocked scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedSource {
    /// The reference that would have been fetched.
    pub reference: Reference,
    /// Whether it was a mirror or the source.
    pub role: Role,
    /// The blocked scope it falls in.
    pub blocked_by: Scope,
}

/// A mirror attempt skipped because the mirror is mirrorgate itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedSource {
    /// The reference that would have been fetched (on mirrorgate's own address).
    pub reference: Reference,
    /// The self name its host matched.
    pub self_name: String,
}

impl fmt::Display for SkippedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mirror {} is mirrorgate itself (self name {}): already routing it",
            self.reference, self.self_name
        )
    }
}

/// The answer for one reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The scope of the rule that applied, if any.
    pub matched_scope: Option<Scope>,
    /// The attempts to make, in order; never empty.
    pub sources: Vec<PullSource>,
    /// The attempts dropped because they lie in blocked scopes, in order.
    pub blocked: Vec<BlockedSource>,
    /// The mirror attempts skipped because they are mirrorgate itself, in order.
    pub skipped: Vec<SkippedSource>,
}

/// Why a reference has no pull source.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// Every attempt lies in a blocked scope.
    #[error(
        "{reference} is blocked: scope \"{scope}\" never contacts its source (mirrorSourcePolicy: NeverContactSource, set by {}) and no usable mirror serves {} references{}",
        set_by.join("; "),
        match serves { Serves::Digest => "digest", Serves::Tag => "tag" },
        skipped_note(skipped)
    )]
    Blocked {
        /// The reference asked for.
        reference: String,
        /// The matched, blocked scope.
        scope: Scope,
        /// The object entries that set NeverContactSource.
        set_by: Vec<String>,
        /// The kind of reference, which decided the mirrors considered.
        serves: Serves,
        /// Every dropped attempt.
        blocked: Vec<BlockedSource>,
        /// The mirrors skipped because they are mirrorgate itself (boxed: the error stays small).
        skipped: Box<[SkippedSource]>,
    },
    /// A mirror rewrite gave an invalid or non-canonical reference, which fails the whole pull.
    #[error(
        "{reference}: mirror \"{mirror}\" of scope \"{scope}\" rewrites it to \"{attempted}\", which is not a valid reference: {reason}"
    )]
    RewriteFailed {
        /// The reference asked for.
        reference: String,
        /// The matched scope.
        scope: Scope,
        /// The mirror whose rewrite failed.
        mirror: String,
        /// The string the rewrite produced.
        attempted: String,
        /// Why it is not acceptable.
        reason: Box<ReferenceError>,
    },
}

impl RuleSet {
    /// The ordered pull sources for `reference` (which must be normalised, as
    /// [`Reference::parse_normalized`] makes it), or why there are none.
    pub fn resolve(&self, reference: &Reference) -> Result<Resolution, ResolveError> {
        let Some(Match { rule, rewrite_from }) = self.find(reference.name()) else {
            return Ok(Resolution {
                matched_scope: None,
                sources: vec![PullSource {
                    reference: reference.clone(),
                    role: Role::Source,
                    origin: None,
                }],
                blocked: Vec::new(),
                skipped: Vec::new(),
            });
        };
        let serves = if reference.is_digest() {
            Serves::Digest
        } else {
            Serves::Tag
        };
        let mirrors = rule.mirrors(serves);
        let origins = rule.mirror_origins(serves);

        // Rewrite every mirror first: one bad rewrite fails the pull, blocked or not.
        let full = reference.as_str();
        let rest = &full[rewrite_from..];
        let mut attempts = Vec::with_capacity(mirrors.len() + 1);
        let mut skipped = Vec::new();
        for (mirror, origin) in mirrors.iter().zip(origins) {
            let mut rewritten = String::with_capacity(mirror.as_str().len() + rest.len());
            rewritten.push_str(mirror.as_str());
            rewritten.push_str(rest);
            match Reference::parse_canonical_owned(rewritten) {
                Ok(physical) => match self.self_names().matching_location(mirror.as_str()) {
                    Some(name) => skipped.push(SkippedSource {
                        reference: physical,
                        self_name: name.to_owned(),
                    }),
                    None => {
                        attempts.push((physical, Role::Mirror, self.is_exposed(mirror), origin))
                    }
                },
                Err(reason) => {
                    return Err(ResolveError::RewriteFailed {
                        reference: full.to_owned(),
                        scope: rule.scope.clone(),
                        mirror: mirror.to_string(),
                        attempted: format!("{mirror}{rest}"),
                        reason: Box::new(reason),
                    });
                }
            }
        }
        attempts.push((
            reference.clone(),
            Role::Source,
            rule.blocked,
            rule.source_origin(serves),
        ));

        let mut sources = Vec::with_capacity(attempts.len());
        let mut blocked = Vec::new();
        for (physical, role, exposed, origin) in attempts {
            // The source's own rule is the matched one; a mirror may fall under any rule.
            let governing = match role {
                Role::Source => Some(rule),
                Role::Mirror if exposed => self.find(physical.name()).map(|m| m.rule),
                Role::Mirror => None,
            };
            match governing {
                Some(governing) if governing.blocked => blocked.push(BlockedSource {
                    reference: physical,
                    role,
                    blocked_by: governing.scope.clone(),
                }),
                _ => sources.push(PullSource {
                    reference: physical,
                    role,
                    origin: Some(origin.clone()),
                }),
            }
        }
        if sources.is_empty() {
            return Err(ResolveError::Blocked {
                reference: full.to_owned(),
                scope: rule.scope.clone(),
                set_by: rule.blocked_by.clone(),
                serves,
                blocked,
                skipped: skipped.into_boxed_slice(),
            });
        }
        Ok(Resolution {
            matched_scope: Some(rule.scope.clone()),
            sources,
            blocked,
            skipped,
        })
    }
}

/// `; skipped: …` naming the self mirrors, or nothing.
fn skipped_note(skipped: &[SkippedSource]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let list: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    format!(" (skipped: {})", list.join("; "))
}
