//! What can go wrong serving a request, in the proxy's own terms. The HTTP layer turns each
//! [`Error`] into a status and an OCI error body, in one place (`http::error`).

use crate::rules::{ResolveError, Role};

/// What was asked for and is missing when every source said "not found".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A manifest (or a referrers list, which is keyed by a manifest).
    Manifest,
    /// A blob.
    Blob,
    /// A repository (its tag list).
    Repository,
}

/// One pull source tried without success, as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The physical reference tried.
    pub reference: String,
    /// Mirror or source.
    pub role: Role,
    /// Why it did not serve.
    pub error: String,
}

/// The most failures the message of an [`Error::Exhausted`] lists; the others are counted
/// (its detail has every one).
pub const MAX_LISTED_FAILURES: usize = 10;

/// `role reference: error; …` for a message: the first [`MAX_LISTED_FAILURES`] of `tried`, then
/// how many more there are.
pub(super) fn listing(tried: &[Tried]) -> String {
    let mut listed = tried
        .iter()
        .take(MAX_LISTED_FAILURES)
        .map(|t| format!("{} {}: {}", t.role, t.reference, t.error))
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(more) = tried
        .len()
        .checked_sub(MAX_LISTED_FAILURES)
        .filter(|&n| n > 0)
    {
        listed.push_str(&format!("; … and {more} more"));
    }
    listed
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The rules give the reference no pull source (blocked, or a rewrite that fails).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// None of the pull sources is a registry mirrorgate may contact.
    #[error("{message}")]
    NotConfigured {
        /// Which registry, and how to allow it.
        message: String,
    },
    /// Every source was tried and none served; `all_not_found` when each said "not found".
    #[error("{message}")]
    Exhausted {
        /// What the clients asked for.
        missing: Missing,
        /// Every source answered "not found".
        all_not_found: bool,
        /// The whole story, for a person.
        message: String,
        /// Each source tried and why it failed.
        tried: Vec<Tried>,
    },
    /// Content that every source said is not there (a download shared with other clients).
    #[error("{message}")]
    NotFound {
        /// What is missing.
        missing: Missing,
        /// What happened.
        message: String,
    },
    /// The upstreams failed in a way that is not about the content asked for.
    #[error("{0}")]
    Upstream(String),
    /// No upstream fetch slot freed up in time: come back in `retry_after` seconds.
    #[error("{message}")]
    Busy {
        /// What happened.
        message: String,
        /// Seconds after which the client may try again.
        retry_after: u64,
    },
    /// Content an operator withdrew (`mirrorgate deny`): refused wherever it is held.
    #[error("{digest} was withdrawn by an operator{}", reason_suffix(.reason))]
    Withdrawn {
        /// What was asked for.
        missing: Missing,
        /// The withdrawn digest.
        digest: String,
        /// The operator's reason, if one was given.
        reason: String,
    },
    /// A digest that does not parse.
    #[error("{0}")]
    InvalidDigest(String),
    /// A tag that the reference grammar refuses.
    #[error("invalid tag \"{tag}\": {reason}")]
    InvalidTag {
        /// The tag as given.
        tag: String,
        /// Why it is invalid.
        reason: String,
    },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_names_the_first_failures_and_counts_the_rest() {
        let tried: Vec<Tried> = (0..MAX_LISTED_FAILURES + 3)
            .map(|i| Tried {
                reference: format!("m{i}.example.com/ns/app:v1"),
                role: Role::Mirror,
                error: "not found".to_owned(),
            })
            .collect();
        let listed = listing(&tried);
        let last_listed = format!("mirror m{}.example.com/ns/app:v1", MAX_LISTED_FAILURES - 1);
        assert_eq!(
            (
                listed.matches("not found").count(),
                listed.contains(&last_listed),
                listed.ends_with("; … and 3 more"),
                listing(&tried[..2]),
            ),
            (
                MAX_LISTED_FAILURES,
                true,
                true,
                "mirror m0.example.com/ns/app:v1: not found; mirror m1.example.com/ns/app:v1: not found".to_owned()
            )
        );
    }
}
