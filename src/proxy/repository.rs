//! A repository as a client addressed it, resolved to its logical upstream name.

use super::error::Error;
use crate::reference::{Digest, Reference};

/// A repository as the client addressed it, resolved to its logical upstream name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// The logical repository with the tag `latest`, normalised (`docker.io/library/busybox:latest`);
    /// routes are resolved from it.
    pub reference: Reference,
    /// `<name>` exactly as the client wrote it in the path, for links that lead back here.
    pub client_name: String,
    /// The `ns` query parameter, if the client used one.
    pub ns: Option<String>,
}

impl Repository {
    /// The logical reference of `tag` in this repository.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, Error> {
        Reference::from_parts(
            self.reference.domain(),
            self.reference.path(),
            Some(tag),
            None,
        )
        .map_err(|e| Error::InvalidTag {
            tag: tag.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The logical reference of `digest` in this repository.
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference::from_parts(
            self.reference.domain(),
            self.reference.path(),
            None,
            Some(digest),
        )
        .expect("a repository that parsed takes any valid digest")
    }

    /// The logical repository name, `domain/path`.
    pub fn name(&self) -> &str {
        self.reference.name()
    }
}
