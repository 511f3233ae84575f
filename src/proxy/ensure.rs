//! Fetching without HTTP: "make sure this manifest / blob is cached, along the rules", for work
//! such as warming a release payload before nodes pull it.
//!
//! The same paths as client requests (rules, reachability, verification, one fetch per key
//! shared with any client asking at the same time, the stores), in the background admission
//! class ([`Admission::Background`]): such work never takes an upstream fetch slot a client
//! would get.

use std::sync::Arc;

use futures_util::StreamExt;

use super::admission::Admission;
use super::error::Error;
use super::open::Proxy;
use super::repository::Repository;
use crate::cache::BlobFile;
use crate::cache::StoredManifest;
use crate::reference::{Digest, Reference};

impl Proxy {
    /// Makes sure the manifest `reference` names (a logical, normalised reference, by tag or
    /// digest) is cached, fetching it along the rules if it is not; returns its digest.
    pub async fn ensure_manifest(self: &Arc<Self>, reference: &Reference) -> Result<Digest, Error> {
        let manifest = self.ensure_manifest_content(reference).await?;
        manifest
            .digest
            .parse()
            .map_err(|_| Error::InvalidDigest(format!("invalid digest {}", manifest.digest)))
    }

    /// [`Proxy::ensure_manifest`], returning the stored manifest itself (bytes, media type,
    /// digest) for a caller that reads it.
    pub async fn ensure_manifest_content(
        self: &Arc<Self>,
        reference: &Reference,
    ) -> Result<Arc<StoredManifest>, Error> {
        Admission::Background
            .scope(self.stored_manifest(reference, &super::manifest::standard_accept()))
            .await
    }

    /// The size of blob `digest` when it is in the blob store (counting as a use).
    pub fn cached_blob_size(&self, digest: &Digest) -> Option<u64> {
        self.tiers.blob_size(digest)
    }

    /// Opens blob `digest` of the blob store for reading, if it is there; the file stays
    /// protected from eviction while the returned value lives.
    pub fn open_cached_blob(&self, digest: &Digest) -> Option<BlobFile> {
        self.tiers.open_blob(digest)
    }

    /// Makes sure blob `digest` of the repository of `repository` (a logical reference; its
    /// tag or digest does not matter) is in the blob store, downloading and verifying it along
    /// the rules if it is not; returns its size.
    pub async fn ensure_blob(
        self: &Arc<Self>,
        repository: &Reference,
        digest: &Digest,
    ) -> Result<u64, Error> {
        if let Some(size) = self.tiers.blob_size(digest) {
            return Ok(size);
        }
        let repository = Repository {
            reference: Reference::from_parts(
                repository.domain(),
                repository.path(),
                Some(crate::reference::DEFAULT_TAG),
                None,
            )
            .map_err(|e| Error::InvalidTag {
                tag: crate::reference::DEFAULT_TAG.to_owned(),
                reason: e.to_string(),
            })?,
            client_name: repository.name().to_owned(),
            ns: None,
        };
        let this = self.clone();
        let digest_owned = digest.clone();
        Admission::Background
            .scope(async move {
                // The download is driven by whoever reads it: read it to the end, as a client
                // would, and let the store keep it.
                let served = this
                    .blob_answer(&repository, &digest_owned, false, None)
                    .await?;
                if let Some(mut stream) = served.stream {
                    while let Some(chunk) = stream.next().await {
                        chunk.map_err(|e| {
                            Error::Upstream(format!("blob {digest_owned}: download failed: {e}"))
                        })?;
                    }
                }
                Ok::<(), Error>(())
            })
            .await?;
        self.wait_for_commit(digest).await;
        self.tiers.blob_size(digest).ok_or_else(|| {
            Error::Upstream(format!(
                "blob {digest} was fetched but not stored (the cache's filesystem is short of \
                 cache.min_free_space)"
            ))
        })
    }
}
