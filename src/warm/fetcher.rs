//! The release walk's [`Fetcher`] on the proxy's in-process fetch API: every manifest and blob
//! the walk reads is cached along the rules (background admission class, shared coalescing),
//! then read back from the stores.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use crate::cache::blobs::ReaderGuard;
use crate::proxy::{Error, Proxy};
use crate::reference::{Digest, Reference};
use crate::release::{BlobReader, FetchedManifest, Fetcher};

use super::job::Job;

/// Fetches through `proxy`; with a job, counts what it fetched into the job's progress and
/// keeps every manifest read (digest → bytes, media type) for the job's image accounting.
pub(super) struct ProxyFetcher {
    proxy: Arc<Proxy>,
    job: Option<Arc<Job>>,
    manifests: Mutex<HashMap<String, (Bytes, String)>>,
}

impl ProxyFetcher {
    pub(super) fn new(proxy: Arc<Proxy>, job: Option<Arc<Job>>) -> ProxyFetcher {
        ProxyFetcher {
            proxy,
            job,
            manifests: Mutex::new(HashMap::new()),
        }
    }

    /// The manifest of `digest` read by the walk, with its media type.
    pub(super) fn manifest_read(&self, digest: &str) -> Option<(Bytes, String)> {
        self.manifests
            .lock()
            .ok()
            .and_then(|m| m.get(digest).cloned())
    }
}

impl Fetcher for ProxyFetcher {
    type Error = Error;

    async fn manifest(&self, reference: &Reference) -> Result<FetchedManifest, Error> {
        let stored = self.proxy.ensure_manifest_content(reference).await?;
        if let Ok(mut manifests) = self.manifests.lock() {
            manifests.insert(
                stored.digest.clone(),
                (stored.bytes.clone(), stored.media_type.clone()),
            );
        }
        Ok(FetchedManifest {
            bytes: stored.bytes.clone(),
            media_type: Some(stored.media_type.clone()),
        })
    }

    async fn blob(&self, repository: &Reference, digest: &Digest) -> Result<BlobReader, Error> {
        let cached = self.proxy.cached_blob_size(digest).is_some();
        let size = self.proxy.ensure_blob(repository, digest).await?;
        if let Some(job) = &self.job {
            job.blob_read_while_planning(digest, size, !cached);
        }
        let file = self.proxy.open_cached_blob(digest).ok_or_else(|| {
            Error::Upstream(format!(
                "blob {digest} was evicted from the cache before it could be read"
            ))
        })?;
        Ok(Box::pin(CachedBlob {
            file: tokio::fs::File::from_std(file.file),
            _guard: file.guard,
        }))
    }
}

/// A stored blob being read, protected from eviction until dropped.
struct CachedBlob {
    file: tokio::fs::File,
    _guard: ReaderGuard,
}

impl AsyncRead for CachedBlob {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}
