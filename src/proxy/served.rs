//! What the proxy serves, as domain values ([`Served`]); `http` renders them into responses, and
//! in-process callers (`ensure`, warm-up) use them directly.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::HeaderValue;

use crate::cache::StoredManifest;
use crate::reference::Digest;

/// The bytes of a blob as they are served. A stream that fails mid-way ends the answer: a
/// client never takes a cut blob for a whole one.
pub type BlobStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What a request was answered with.
pub enum Served {
    /// A manifest, exactly the bytes an upstream served, as the type it names itself.
    Manifest {
        /// The manifest.
        manifest: Arc<StoredManifest>,
        /// A `HEAD`: the headers alone.
        head: bool,
    },
    /// A blob, whole or a part of it.
    Blob(ServedBlob),
    /// A list (tags, referrers) of `content_type`.
    List {
        /// Its media type.
        content_type: String,
        /// The list, under the client's names.
        body: Bytes,
        /// A `HEAD`: the headers alone.
        head: bool,
        /// The next page (`Link: <…>; rel="next"`), under the client's name.
        link: Option<HeaderValue>,
        /// The filters the upstream applied to a referrers list (`OCI-Filters-Applied`).
        filters: Option<HeaderValue>,
    },
}

/// The header naming the filters an upstream applied to a referrers list (distribution-spec).
pub const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";

/// A blob answer.
pub struct ServedBlob {
    /// The blob's digest.
    pub digest: Digest,
    /// Whole, a part, or a range no byte of the blob satisfies.
    pub range: BlobRange,
    /// The length of what is served (`Content-Length`), when known.
    pub len: Option<u64>,
    /// The part served (`Content-Range`), as the store or the upstream gave it.
    pub content_range: Option<HeaderValue>,
    /// The bytes; `None` for a `HEAD` (and for an unsatisfiable range).
    pub stream: Option<BlobStream>,
}

/// Which bytes of a blob an answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobRange {
    /// The whole blob.
    Whole,
    /// The part a `Range` asked for.
    Part,
    /// A range no byte of the blob satisfies: nothing is served (not even the digest).
    Unsatisfiable,
}

impl ServedBlob {
    /// The answer to a range of blob `digest` (of `size` bytes, when known) that no byte
    /// satisfies.
    pub(super) fn unsatisfiable(digest: &Digest, size: Option<u64>) -> ServedBlob {
        ServedBlob {
            digest: digest.clone(),
            range: BlobRange::Unsatisfiable,
            len: Some(0),
            content_range: size
                .and_then(|size| HeaderValue::from_str(&format!("bytes */{size}")).ok()),
            stream: None,
        }
    }
}
