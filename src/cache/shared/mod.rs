//! The shared cache tier: blobs and manifests by digest in an S3-compatible bucket that several
//! mirrorgate replicas use at once, so that content one replica fetched is warm for all of them.
//!
//! Principal types:
//! - [`SharedConfig`] / [`S3Config`]: the `cache.shared.s3` section (parsed, validated here);
//! - [`SharedStore`]: the bucket: [`stat`](SharedStore::stat), [`get`](SharedStore::get) (a
//!   verified stream), [`upload`](SharedStore::upload) (of a verified local file),
//!   [`replace_corrupt`](SharedStore::replace_corrupt), per-repository confirmations and a
//!   start-up [`check`](SharedStore::check);
//! - [`SharedError`]: every way the bucket can fail, typed, so that the caller counts it and
//!   carries on from the local tier or an upstream: the shared store never fails a pull;
//! - [`SharedStats`]: what the tier did, as plain counters.
//!
//! Two rules make a bucket shared by replicas safe:
//! - *Nothing unverified becomes visible.* An upload hashes the file as it sends it and only
//!   completes (single `PUT`, or the completion of a multipart upload) when the bytes hash to the
//!   digest; an upload that is interrupted, by an error or a killed process, leaves at most an
//!   incomplete multipart upload, which S3 never shows as an object (a bucket lifecycle rule
//!   removes its parts). A single `PUT` is a conditional create (`If-None-Match: *`), so two
//!   replicas storing one digest never replace each other's object; a multipart upload checks
//!   first, and if two complete at once the later one rewrites the same verified bytes.
//! - *Nothing read is trusted.* [`SharedStore::get`] hashes the object as it streams and holds
//!   back the last chunk until the digest and the length are checked; a mismatch ends the stream
//!   with [`SharedError::Corrupt`] instead, and the caller refetches from upstream and calls
//!   [`SharedStore::replace_corrupt`]. That is the only way mirrorgate ever replaces a shared
//!   object; it deletes none: eviction is the bucket's lifecycle policy.
//!
//! Keys, under the configured prefix: `blobs/<algorithm>/<hex>`, `manifests/<algorithm>/<hex>`,
//! `repos/<repository>/<algorithm>/<hex>` for the marker saying that an upstream served or
//! confirmed that digest for that repository, and `tags/<repository>/<tag>` for a tag answer.
//!
//! A third rule covers the markers and tag answers, which carry authorisation rather than
//! content: *a record is trusted only when sealed* (module `seal`) with a key from
//! `cache.shared.key_file`, so that write access to the bucket alone grants no repository
//! anything. Without a key, records are neither written nor read.

mod config;
mod error;
mod seal;
mod store;
mod tier;

pub use config::{S3Config, SharedConfig};
pub use error::{SharedCounts, SharedError, SharedStats};
pub use seal::Rejected;
pub use store::{Kind, PART_SIZE, SharedRead, SharedStore, TagRecord, Timeouts, Uploaded};
pub use tier::SharedTier;
