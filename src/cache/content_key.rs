//! The key of content in a repository, `repository@digest`: what an upstream confirmed there
//! ([`super::confirmed`]) and what its manifests declare ([`super::sizes`]).

/// Content in a repository, `repository@digest`: the key of what an upstream confirmed and of
/// the sizes manifests declare. Built only from its two parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ContentKey(Box<str>);

impl ContentKey {
    /// The key of `digest` in the logical `repository`.
    pub(crate) fn new(repository: &str, digest: &str) -> ContentKey {
        let mut key = String::with_capacity(repository.len() + 1 + digest.len());
        key.push_str(repository);
        key.push('@');
        key.push_str(digest);
        ContentKey(key.into_boxed_str())
    }

    /// A key as written by [`ContentKey::as_str`] (a line of the confirmations file).
    pub(crate) fn from_written(written: String) -> ContentKey {
        ContentKey(written.into_boxed_str())
    }

    /// `repository@digest`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}
