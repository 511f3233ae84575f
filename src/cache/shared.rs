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

mod seal;

use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, WriteMultipart,
};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::verify::{Hasher, Outcome, Verified};
use crate::reference::Digest;
pub use seal::Rejected;
use seal::{MAX_RECORD_LEN, RecordKeys};

/// Objects up to this size are stored with one conditional `PUT` (read into memory); larger ones
/// with a multipart upload in parts of this size.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

// ---------------------------------------------------------------------------------------------
// Configuration

/// The `cache.shared` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// The S3-compatible bucket (`cache.shared.s3`).
    pub s3: S3Config,
    /// The keys that seal the bucket's records (`cache.shared.key_file`): one per line, the
    /// first seals, all are accepted. `None`: records are neither written nor trusted, and only
    /// content is shared.
    pub key_file: Option<PathBuf>,
}

/// The `cache.shared.s3` section: where the bucket is and how to sign requests to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket (it must exist: mirrorgate does not create it).
    pub bucket: String,
    /// Key prefix inside the bucket (`""`: the bucket's root), without a leading `/`.
    pub prefix: String,
    /// Where to connect, e.g. `https://s3.openshift-storage.svc`; `None`: AWS, from `region`.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
    /// Address the bucket as `endpoint/bucket/key` rather than `bucket.endpoint/key`; what most
    /// on-premises servers (Ceph RGW, MinIO, SeaweedFS) need.
    pub path_style: bool,
    /// Allow a plain `http://` endpoint. TLS, when used, is always verified (see `ca_file`).
    pub insecure: bool,
    /// Extra PEM root certificates for the endpoint.
    pub ca_file: Option<PathBuf>,
    /// An AWS credentials file, whose `[default]` profile is used; `None`: the environment
    /// variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub credentials_file: Option<PathBuf>,
}

/// The `cache.shared` section as written (every key optional, `null` meaning absent); the
/// configuration loader turns it into a [`SharedConfig`] with [`RawSharedConfig::into_config`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSharedConfig {
    s3: Option<RawS3>,
    key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawS3 {
    bucket: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    insecure: Option<bool>,
    ca_file: Option<PathBuf>,
    credentials_file: Option<PathBuf>,
}

impl RawSharedConfig {
    /// The section with defaults filled in; `None` when it names no store (`shared:` or
    /// `shared: {}`), which means the local cache only. A missing bucket is left empty for
    /// [`SharedConfig::validate`] to report.
    pub fn into_config(self) -> Option<SharedConfig> {
        let raw = self.s3?;
        Some(SharedConfig {
            s3: S3Config {
                bucket: raw.bucket.unwrap_or_default(),
                prefix: raw.prefix.unwrap_or_default(),
                endpoint: raw.endpoint,
                region: raw.region.unwrap_or_else(|| "us-east-1".to_owned()),
                path_style: raw.path_style.unwrap_or(false),
                insecure: raw.insecure.unwrap_or(false),
                ca_file: raw.ca_file,
                credentials_file: raw.credentials_file,
            },
            key_file: self.key_file,
        })
    }
}

impl SharedConfig {
    /// Checks what the types do not; the error is `(key under cache.shared, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.s3
            .validate()
            .map_err(|(key, message)| (format!("s3.{key}"), message))?;
        if self
            .key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(("key_file".to_owned(), "empty path".to_owned()));
        }
        Ok(())
    }
}

impl S3Config {
    /// Checks the values; the error is `(key under cache.shared.s3, message)`. Reads no file and
    /// contacts nothing: [`SharedStore::open`] and [`SharedStore::check`] do that.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, message: String| Err((key.to_owned(), message));
        if self.bucket.is_empty() {
            return err(
                "bucket",
                "required: the name of an existing bucket".to_owned(),
            );
        }
        if let Some(why) = bucket_name_problem(&self.bucket) {
            return err(
                "bucket",
                format!("{:?} is not an S3 bucket name: {why}", self.bucket),
            );
        }
        if let Err(why) = prefix_path(&self.prefix) {
            return err("prefix", why);
        }
        if let Some(endpoint) = &self.endpoint {
            let url = match url::Url::parse(endpoint) {
                Ok(url) => url,
                Err(e) => return err("endpoint", format!("{endpoint:?} is not a URL: {e}")),
            };
            match url.scheme() {
                "https" => {}
                "http" if self.insecure => {}
                "http" => {
                    return err(
                        "endpoint",
                        format!("plain http endpoint \"{endpoint}\" needs insecure: true"),
                    );
                }
                other => {
                    return err(
                        "endpoint",
                        format!("scheme {other:?} in \"{endpoint}\": use https:// or http://"),
                    );
                }
            }
            if url.host_str().is_none_or(str::is_empty) {
                return err("endpoint", format!("\"{endpoint}\" names no host"));
            }
            if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
                return err(
                    "endpoint",
                    format!("\"{endpoint}\": no query, fragment or user info allowed"),
                );
            }
        }
        if self.region.is_empty() {
            return err(
                "region",
                "empty: name the region requests are signed for (us-east-1 for most \
                 on-premises servers)"
                    .to_owned(),
            );
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("credentials_file", &self.credentials_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return err(key, "empty path".to_owned());
            }
        }
        Ok(())
    }

    /// `s3://bucket/prefix` (and the endpoint), for logs and `check`.
    pub fn describe(&self) -> String {
        let mut out = format!("s3://{}/{}", self.bucket, self.prefix);
        if let Some(endpoint) = &self.endpoint {
            out.push_str(&format!(" at {endpoint}"));
        }
        out
    }
}

/// Why `name` is not a valid S3 bucket name (the rules every S3 implementation accepts).
fn bucket_name_problem(name: &str) -> Option<&'static str> {
    if !(3..=63).contains(&name.len()) {
        return Some("3 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Some("only lower-case letters, digits, '.' and '-'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(name.as_bytes()[0]) || !alnum(name.as_bytes()[name.len() - 1]) {
        return Some("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Some("no two adjacent dots");
    }
    None
}

/// The prefix as an object path (one trailing `/` allowed).
fn prefix_path(prefix: &str) -> Result<Path, String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return if prefix.is_empty() {
            Ok(Path::default())
        } else {
            Err("\"/\": use \"\" for the bucket's root".to_owned())
        };
    }
    if trimmed.starts_with('/') {
        return Err(format!("{prefix:?}: no leading '/'"));
    }
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!("{prefix:?}: empty, '.' or '..' component"));
    }
    Path::parse(trimmed).map_err(|e| format!("{prefix:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Errors and counters

/// How an operation on the shared store failed. Each is something to count and log and then
/// carry on without the shared tier; none should fail a pull.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The server could not be reached, broke the connection or answered with a server error.
    #[error("shared store unavailable: {0}")]
    Unavailable(String),
    /// The server did not answer in time.
    #[error("shared store did not answer in time: {0}")]
    Timeout(String),
    /// The server refused the request: wrong credentials, or a policy that forbids it.
    #[error("shared store refused access (check the credentials and the bucket policy): {0}")]
    Denied(String),
    /// The bucket does not exist.
    #[error("bucket {bucket:?} does not exist (mirrorgate does not create it): {detail}")]
    MissingBucket {
        /// The configured bucket.
        bucket: String,
        /// The server's answer.
        detail: String,
    },
    /// The server has no room (full, or over a quota).
    #[error("shared store is full or over quota: {0}")]
    Full(String),
    /// The object does not hash to its digest, or has the wrong length: it must be replaced.
    #[error("corrupt object {key} in the shared store: {reason}")]
    Corrupt {
        /// The object's key.
        key: String,
        /// What did not match.
        reason: String,
    },
    /// Reading an object broke off before its end.
    #[error("reading {key} from the shared store broke off: {reason}")]
    Broken {
        /// The object's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A local file to upload could not be read.
    #[error("{}: {source}", path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes offered for upload do not hash to their digest (or are not as long as said):
    /// nothing was made visible.
    #[error("refused to store {digest}: {reason}")]
    Unverified {
        /// The digest the bytes were said to have.
        digest: String,
        /// What did not match.
        reason: String,
    },
    /// The credentials or CA file could not be read, or the client could not be built.
    #[error("shared store configuration: {0}")]
    Config(String),
    /// A repository name that cannot be a key.
    #[error("{0:?} is not a repository name")]
    InvalidRepository(String),
    /// A marker or tag answer not sealed with any of this replica's keys: treated as absent.
    #[error("untrusted record {key} in the shared store (treated as absent): {reason}")]
    Untrusted {
        /// The record's key.
        key: String,
        /// Why it is not trusted.
        reason: Rejected,
    },
}

impl SharedError {
    /// A short stable name of the kind of failure, for a metric label or a log field.
    pub fn kind(&self) -> &'static str {
        match self {
            SharedError::Unavailable(_) => "unavailable",
            SharedError::Timeout(_) => "timeout",
            SharedError::Denied(_) => "denied",
            SharedError::MissingBucket { .. } => "missing_bucket",
            SharedError::Full(_) => "full",
            SharedError::Corrupt { .. } => "corrupt",
            SharedError::Broken { .. } => "broken",
            SharedError::Local { .. } => "local",
            SharedError::Unverified { .. } => "unverified",
            SharedError::Config(_) => "config",
            SharedError::InvalidRepository(_) => "invalid_repository",
            SharedError::Untrusted { .. } => "untrusted",
        }
    }

    fn from_store(error: object_store::Error, bucket: &str) -> SharedError {
        use object_store::Error as E;
        match error {
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                SharedError::Denied(chain(&error))
            }
            _ => {
                // Some requests (listings, multipart) report any status as a generic error:
                // the status and the S3 error code are in the text.
                let text = chain(&error);
                let lower = text.to_ascii_lowercase();
                if text.contains("NoSuchBucket") {
                    SharedError::MissingBucket {
                        bucket: bucket.to_owned(),
                        detail: text,
                    }
                } else if [
                    "403 forbidden",
                    "401 unauthorized",
                    "accessdenied",
                    "signaturedoesnotmatch",
                    "invalidaccesskeyid",
                ]
                .iter()
                .any(|needle| lower.contains(needle))
                {
                    SharedError::Denied(text)
                } else if lower.contains("timed out") || lower.contains("timeout") {
                    SharedError::Timeout(text)
                } else if [
                    "507",
                    "insufficient storage",
                    "quotaexceeded",
                    "entitytoolarge",
                    "no free",
                    "no writable",
                ]
                .iter()
                .any(|needle| lower.contains(needle))
                {
                    SharedError::Full(text)
                } else {
                    SharedError::Unavailable(text)
                }
            }
        }
    }
}

/// An error with its sources, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// What the shared tier did since it was opened.
#[derive(Debug, Default)]
pub struct SharedStats {
    hits: AtomicU64,
    misses: AtomicU64,
    uploads: AtomicU64,
    already_present: AtomicU64,
    upload_failures: AtomicU64,
    corrupt: AtomicU64,
    replaced: AtomicU64,
    errors: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    rejected_markers: AtomicU64,
    rejected_tags: AtomicU64,
    rejected_withdrawals: AtomicU64,
}

/// A snapshot of [`SharedStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedCounts {
    /// Reads that found the object (`get` that returned a stream, `stat` that found it).
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Objects this process made visible.
    pub uploads: u64,
    /// Uploads that found the object already there (another replica stored it).
    pub already_present: u64,
    /// Uploads that failed (nothing became visible).
    pub upload_failures: u64,
    /// Objects found corrupt while reading them.
    pub corrupt: u64,
    /// Corrupt objects replaced with verified bytes.
    pub replaced: u64,
    /// Operations that failed for any other reason (unreachable, denied, timeout, ...).
    pub errors: u64,
    /// Object bytes read (delivered or not).
    pub bytes_read: u64,
    /// Object bytes sent in uploads, completed or not.
    pub bytes_written: u64,
    /// Confirmation markers found without a valid seal (not trusted).
    pub rejected_markers: u64,
    /// Tag answers found without a valid seal (not trusted).
    pub rejected_tags: u64,
    /// Withdrawal records found without a valid seal (not trusted).
    pub rejected_withdrawals: u64,
}

impl SharedStats {
    /// The counters now.
    pub fn snapshot(&self) -> SharedCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SharedCounts {
            hits: get(&self.hits),
            misses: get(&self.misses),
            uploads: get(&self.uploads),
            already_present: get(&self.already_present),
            upload_failures: get(&self.upload_failures),
            corrupt: get(&self.corrupt),
            replaced: get(&self.replaced),
            errors: get(&self.errors),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            rejected_markers: get(&self.rejected_markers),
            rejected_tags: get(&self.rejected_tags),
            rejected_withdrawals: get(&self.rejected_withdrawals),
        }
    }
}

impl SharedStats {
    /// Counts a failed operation whose failure the store did not see (the caller stopped
    /// waiting for it).
    pub fn count_error(&self) {
        bump(&self.errors, 1);
    }

    /// Counts an object found corrupt by the caller (e.g. not the size its manifest declares).
    pub fn count_corrupt(&self) {
        bump(&self.corrupt, 1);
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// The store

/// What is stored: the two kinds of content-addressed objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A layer or config blob (`blobs/…`).
    Blob,
    /// A manifest or index (`manifests/…`).
    Manifest,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Blob => "blobs",
            Kind::Manifest => "manifests",
        }
    }
}

/// A tag answer as replicas share it: what the tag pointed to, on which route, and when (seconds
/// since the Unix epoch, by the clock of the replica that recorded it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    /// The manifest digest.
    pub digest: Digest,
    /// The fingerprint of the route the answer came from.
    pub route: u64,
    /// When an upstream gave it.
    pub recorded_at: u64,
}

impl TagRecord {
    fn parse(bytes: &[u8]) -> Option<TagRecord> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        Some(TagRecord {
            digest: lines.next()?.parse().ok()?,
            route: lines.next()?.parse().ok()?,
            recorded_at: lines.next()?.parse().ok()?,
        })
    }
}

/// How an upload ended, both being success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// This call made the object visible.
    Created,
    /// The object was there already (another replica, or an earlier run, stored it).
    AlreadyPresent,
}

/// Bounds on waiting for the shared store: the store is an optimisation, so a slow one must
/// cost a bounded delay, after which the caller goes to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection (TCP and TLS).
    pub connect: Duration,
    /// A whole request other than a streamed read (HEAD, PUT, one part, listing), retries
    /// included; and the longest pause while an object streams.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// A verified read of one object: `stream` yields the bytes of `range`, and fails with
/// [`SharedError::Corrupt`] (without its last chunk) if the object is not what its key says.
pub struct SharedRead {
    /// The object's full size.
    pub size: u64,
    /// The byte range the stream yields.
    pub range: Range<u64>,
    /// The bytes.
    pub stream: BoxStream<'static, Result<Bytes, SharedError>>,
}

impl fmt::Debug for SharedRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRead")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// The shared bucket. Cheap to clone; clones share the clients and the counters.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// HEAD, PUT, parts, listings: every request bounded as a whole.
    requests: AmazonS3,
    /// Streamed GETs: bounded per pause, not as a whole, so a large object can take its time.
    reads: AmazonS3,
    prefix: Path,
    config: S3Config,
    /// What seals and opens records; `None`: no records are written or trusted.
    keys: Option<RecordKeys>,
    stats: SharedStats,
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStore")
            .field("bucket", &self.inner.config.bucket)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// Static S3 credentials.
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// Builds the clients for a validated `shared` configuration: reads the credentials (file
    /// or environment), the CA file and the key file. Contacts nothing; call
    /// [`check`](Self::check) for that.
    pub fn open(shared: &SharedConfig, timeouts: Timeouts) -> Result<SharedStore, SharedError> {
        shared
            .validate()
            .map_err(|(key, message)| SharedError::Config(format!("{key}: {message}")))?;
        let config = &shared.s3;
        let keys = match &shared.key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    SharedError::Config(format!("key_file {}: cannot read: {e}", path.display()))
                })?;
                Some(RecordKeys::parse(&text).map_err(|why| {
                    SharedError::Config(format!("key_file {}: {why}", path.display()))
                })?)
            }
            None => None,
        };
        let credentials = match &config.credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    SharedError::Config(format!(
                        "credentials_file {}: cannot read: {e}",
                        path.display()
                    ))
                })?;
                parse_credentials_file(&text).map_err(|why| {
                    SharedError::Config(format!("credentials_file {}: {why}", path.display()))
                })?
            }
            None => credentials_from_env()?,
        };
        let mut certificates = Vec::new();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                SharedError::Config(format!("ca_file {}: cannot read: {e}", path.display()))
            })?;
            certificates = Certificate::from_pem_bundle(&pem)
                .map_err(|e| SharedError::Config(format!("ca_file {}: {e}", path.display())))?;
            if certificates.is_empty() {
                return Err(SharedError::Config(format!(
                    "ca_file {}: no PEM certificate in it",
                    path.display()
                )));
            }
        }
        // The process uses ring for TLS (see upstream); reqwest needs it installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |streaming: bool| {
            let mut options = ClientOptions::new()
                .with_connect_timeout(timeouts.connect)
                .with_allow_http(config.insecure);
            options = if streaming {
                options
                    .with_timeout_disabled()
                    .with_read_timeout(timeouts.request)
            } else {
                options.with_timeout(timeouts.request)
            };
            for certificate in &certificates {
                options = options.with_root_certificate(certificate.clone());
            }
            let retry = RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: timeouts.request,
            };
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&config.bucket)
                .with_region(&config.region)
                .with_access_key_id(&credentials.key_id)
                .with_secret_access_key(&credentials.secret)
                .with_conditional_put(S3ConditionalPut::ETagMatch)
                .with_client_options(options)
                .with_retry(retry);
            if let Some(token) = &credentials.token {
                builder = builder.with_token(token);
            }
            builder = match (&config.endpoint, config.path_style) {
                (Some(endpoint), true) => builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false),
                (Some(endpoint), false) => builder
                    .with_endpoint(virtual_hosted_endpoint(endpoint, &config.bucket)?)
                    .with_virtual_hosted_style_request(true),
                (None, path_style) => builder.with_virtual_hosted_style_request(!path_style),
            };
            builder.build().map_err(|e| SharedError::Config(chain(&e)))
        };
        Ok(SharedStore {
            inner: Arc::new(Inner {
                requests: build(false)?,
                reads: build(true)?,
                prefix: prefix_path(&config.prefix).map_err(SharedError::Config)?,
                config: config.clone(),
                keys,
                stats: SharedStats::default(),
            }),
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &S3Config {
        &self.inner.config
    }

    /// How many keys records are sealed and checked with; 0: none, and records are neither
    /// written nor trusted.
    pub fn record_keys(&self) -> usize {
        self.inner.keys.as_ref().map_or(0, RecordKeys::len)
    }

    /// The counters.
    pub fn stats(&self) -> &SharedStats {
        &self.inner.stats
    }

    /// The key of `digest`'s object of `kind`, relative to the bucket.
    pub fn key(&self, kind: Kind, digest: &Digest) -> String {
        self.path(kind, digest).to_string()
    }

    fn path(&self, kind: Kind, digest: &Digest) -> Path {
        self.inner
            .prefix
            .clone()
            .join(kind.dir())
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    fn failed(&self, error: object_store::Error) -> SharedError {
        let error = SharedError::from_store(error, &self.inner.config.bucket);
        bump(&self.inner.stats.errors, 1);
        error
    }

    /// Reaches the bucket with the credentials: lists (at most a page of) the prefix. Meant for
    /// start-up and `mirrorgate check`, where wrong credentials or a missing bucket must be a
    /// clear message ([`SharedError::Denied`], [`SharedError::MissingBucket`]).
    pub async fn check(&self) -> Result<(), SharedError> {
        let prefix = (!self.inner.prefix.as_ref().is_empty()).then_some(&self.inner.prefix);
        match self.inner.requests.list_with_delimiter(prefix).await {
            Ok(_) => Ok(()),
            Err(error) => match self.failed(error) {
                // A listing of a missing bucket is the one 404 that is not about a key.
                SharedError::Unavailable(detail) if detail.contains("404") => {
                    Err(SharedError::MissingBucket {
                        bucket: self.inner.config.bucket.clone(),
                        detail,
                    })
                }
                other => Err(other),
            },
        }
    }

    /// The size of `digest`'s object, or `None` when the bucket does not hold it.
    pub async fn stat(&self, kind: Kind, digest: &Digest) -> Result<Option<u64>, SharedError> {
        match self.inner.requests.head(&self.path(kind, digest)).await {
            Ok(meta) => {
                bump(&self.inner.stats.hits, 1);
                Ok(Some(meta.size))
            }
            Err(object_store::Error::NotFound { .. }) => {
                bump(&self.inner.stats.misses, 1);
                Ok(None)
            }
            Err(error) => Err(self.failed(error)),
        }
    }

    /// Reads `digest`'s object, `range` of it (clamped to the object) or all of it: `None` when
    /// the bucket does not hold it.
    ///
    /// The whole object is read and hashed even for a range, because only the whole can be
    /// checked; the stream yields the range and holds its last chunk back until the check
    /// passes. A mismatch ends the stream with [`SharedError::Corrupt`] (counted): refetch from
    /// upstream and call [`replace_corrupt`](Self::replace_corrupt).
    pub async fn get(
        &self,
        kind: Kind,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<SharedRead>, SharedError> {
        let path = self.path(kind, digest);
        let result = match self.inner.reads.get(&path).await {
            Ok(result) => result,
            // A GET's 404 says which: the key, or the whole bucket.
            Err(object_store::Error::NotFound { ref source, .. })
                if !source.to_string().contains("NoSuchBucket") =>
            {
                bump(&self.inner.stats.misses, 1);
                return Ok(None);
            }
            Err(error) => return Err(self.failed(error)),
        };
        bump(&self.inner.stats.hits, 1);
        let size = result.meta.size;
        let range = match range {
            Some(r) => r.start.min(size)..r.end.min(size).max(r.start.min(size)),
            None => 0..size,
        };
        let key = path.to_string();
        let outcome = Arc::new(Mutex::new(None));
        let seen = outcome.clone();
        let store = self.inner.clone();
        let counted = result.into_stream().inspect_ok(move |chunk| {
            bump(&store.stats.bytes_read, chunk.len() as u64);
        });
        let verified = Verified::new(counted, digest.clone(), Some(size), move |end| {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
        });
        let store = self.inner.clone();
        let verified = verified.map(move |item| {
            item.map_err(|error| {
                let end = outcome.lock().unwrap_or_else(|e| e.into_inner()).take();
                match end {
                    Some(Outcome::Corrupt(reason)) => {
                        bump(&store.stats.corrupt, 1);
                        SharedError::Corrupt {
                            key: key.clone(),
                            reason: reason.replace("upstream ", "the object "),
                        }
                    }
                    Some(Outcome::Broken(reason)) => {
                        bump(&store.stats.errors, 1);
                        SharedError::Broken {
                            key: key.clone(),
                            reason,
                        }
                    }
                    _ => SharedError::Broken {
                        key: key.clone(),
                        reason: error.to_string(),
                    },
                }
            })
        });
        Ok(Some(SharedRead {
            size,
            range: range.clone(),
            stream: slice(verified.boxed(), range),
        }))
    }

    /// Stores `digest`'s verified local `file` unless the bucket holds it already. The bytes
    /// are hashed again as they are sent, and the object becomes visible only when they match.
    pub async fn upload(
        &self,
        kind: Kind,
        digest: &Digest,
        file: &FsPath,
    ) -> Result<Uploaded, SharedError> {
        let (len, reader) = open_local(file).await?;
        self.upload_from(kind, digest, len, reader, false).await
    }

    /// [`upload`](Self::upload) from any reader of `len` bytes.
    pub async fn upload_reader(
        &self,
        kind: Kind,
        digest: &Digest,
        len: u64,
        reader: impl AsyncRead + Unpin + Send,
    ) -> Result<Uploaded, SharedError> {
        self.upload_from(kind, digest, len, reader, false).await
    }

    /// Replaces `digest`'s object, found corrupt by [`get`](Self::get), with the verified local
    /// `file` (refetched from upstream). The only write that replaces an existing object.
    pub async fn replace_corrupt(
        &self,
        kind: Kind,
        digest: &Digest,
        file: &FsPath,
    ) -> Result<(), SharedError> {
        let (len, reader) = open_local(file).await?;
        self.upload_from(kind, digest, len, reader, true).await?;
        bump(&self.inner.stats.replaced, 1);
        Ok(())
    }

    /// [`replace_corrupt`](Self::replace_corrupt) from any reader of `len` bytes.
    pub async fn replace_corrupt_reader(
        &self,
        kind: Kind,
        digest: &Digest,
        len: u64,
        reader: impl AsyncRead + Unpin + Send,
    ) -> Result<(), SharedError> {
        self.upload_from(kind, digest, len, reader, true).await?;
        bump(&self.inner.stats.replaced, 1);
        Ok(())
    }

    async fn upload_from(
        &self,
        kind: Kind,
        digest: &Digest,
        len: u64,
        reader: impl AsyncRead + Unpin + Send,
        replace: bool,
    ) -> Result<Uploaded, SharedError> {
        let result = self.try_upload(kind, digest, len, reader, replace).await;
        let stats = &self.inner.stats;
        match &result {
            Ok(Uploaded::Created) => bump(&stats.uploads, 1),
            Ok(Uploaded::AlreadyPresent) => bump(&stats.already_present, 1),
            Err(_) => bump(&stats.upload_failures, 1),
        }
        result
    }

    async fn try_upload(
        &self,
        kind: Kind,
        digest: &Digest,
        len: u64,
        mut reader: impl AsyncRead + Unpin + Send,
        replace: bool,
    ) -> Result<Uploaded, SharedError> {
        let path = self.path(kind, digest);
        let mut hasher = Hasher::new(digest.algorithm());
        let unverified = |reason: String| SharedError::Unverified {
            digest: digest.to_string(),
            reason,
        };
        let local = |source| SharedError::Local {
            path: PathBuf::from(path.to_string()),
            source,
        };
        if len <= PART_SIZE as u64 {
            let mut buf = BytesMut::with_capacity(len as usize);
            let mut limited = (&mut reader).take(len + 1);
            while limited.read_buf(&mut buf).await.map_err(local)? > 0 {}
            if buf.len() as u64 != len {
                return Err(unverified(format!("{} bytes, not {len}", buf.len())));
            }
            hasher.update(&buf);
            let actual = hasher.finish();
            if actual != digest.as_str() {
                return Err(unverified(format!("the bytes hash to {actual}")));
            }
            let mode = if replace {
                PutMode::Overwrite
            } else {
                PutMode::Create
            };
            bump(&self.inner.stats.bytes_written, len);
            let options = PutOptions {
                mode,
                ..PutOptions::default()
            };
            return match self
                .inner
                .requests
                .put_opts(&path, PutPayload::from(buf.freeze()), options)
                .await
            {
                Ok(_) => Ok(Uploaded::Created),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Uploaded::AlreadyPresent),
                Err(error) => Err(self.failed(error)),
            };
        }
        if !replace {
            match self.inner.requests.head(&path).await {
                Ok(_) => return Ok(Uploaded::AlreadyPresent),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(self.failed(error)),
            }
        }
        let upload = self
            .inner
            .requests
            .put_multipart(&path)
            .await
            .map_err(|e| self.failed(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        // Any early return drops `writer` without completing: the parts stay invisible, and
        // `abort` asks the server to drop them now rather than at the lifecycle rule's pace.
        let sent: Result<(), SharedError> = async {
            let mut sent = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf).await.map_err(local)?;
                if n == 0 {
                    break;
                }
                sent += n as u64;
                if sent > len {
                    return Err(unverified(format!("more than {len} bytes")));
                }
                hasher.update(&buf[..n]);
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.failed(e))?;
                writer.write(&buf[..n]);
                bump(&self.inner.stats.bytes_written, n as u64);
            }
            if sent != len {
                return Err(unverified(format!("{sent} bytes, not {len}")));
            }
            let actual = std::mem::replace(&mut hasher, Hasher::new(digest.algorithm())).finish();
            if actual != digest.as_str() {
                return Err(unverified(format!("the bytes hash to {actual}")));
            }
            Ok(())
        }
        .await;
        match sent {
            Ok(()) => match writer.finish().await {
                Ok(_) => Ok(Uploaded::Created),
                Err(error) => Err(self.failed(error)),
            },
            Err(error) => {
                let _ = writer.abort().await;
                Err(error)
            }
        }
    }

    fn marker(&self, repository: &str, digest: &Digest) -> Result<Path, SharedError> {
        if repository.is_empty()
            || repository
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(SharedError::InvalidRepository(repository.to_owned()));
        }
        let mut path = self.inner.prefix.clone().join("repos");
        for part in repository.split('/') {
            path = path.join(part);
        }
        Ok(path.join(digest.algorithm().name()).join(digest.hex()))
    }

    /// Records that an upstream served or confirmed `digest` for `repository` (e.g.
    /// `quay.io/openshift/release`), so that every replica may serve the shared object for it:
    /// a marker sealed with the key. Without a key it writes nothing, since no replica would
    /// trust it.
    pub async fn confirm(&self, repository: &str, digest: &Digest) -> Result<(), SharedError> {
        let path = self.marker(repository, digest)?;
        self.write_record(&path, "").await
    }

    /// Whether a replica with the key recorded, with [`confirm`](Self::confirm), that an
    /// upstream served or confirmed this pair. A marker without a valid seal is
    /// [`SharedError::Untrusted`] (counted); without a key, the bucket is not asked.
    pub async fn is_confirmed(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, SharedError> {
        let path = self.marker(repository, digest)?;
        match self.read_record(&path).await? {
            None => Ok(false),
            // The seal binds the key, which names the pair: the (empty) content adds nothing.
            Some(Ok(_)) => Ok(true),
            Some(Err(reason)) => {
                Err(self.untrusted(&self.inner.stats.rejected_markers, &path, reason))
            }
        }
    }

    fn tag_path(&self, repository: &str, tag: &str) -> Result<Path, SharedError> {
        let valid_repository = !repository.is_empty()
            && !repository
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..");
        if !valid_repository {
            return Err(SharedError::InvalidRepository(repository.to_owned()));
        }
        // The tag grammar ([A-Za-z0-9_][A-Za-z0-9_.-]*) leaves nothing to escape.
        let valid_tag = tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            && !tag.is_empty()
            && !tag.starts_with(['.', '-']);
        if !valid_tag {
            return Err(SharedError::InvalidRepository(format!(
                "{repository}:{tag}"
            )));
        }
        let mut path = self.inner.prefix.clone().join("tags");
        for part in repository.split('/') {
            path = path.join(part);
        }
        Ok(path.join(tag))
    }

    /// Records the answer an upstream gave for `repository:tag` (a digest, on the route with
    /// fingerprint `route`), so that another replica can serve it when every upstream fails.
    /// Overwrites the previous answer: it is a pointer, not content. Without a key it writes
    /// nothing.
    pub async fn record_tag(
        &self,
        repository: &str,
        tag: &str,
        answer: &TagRecord,
    ) -> Result<(), SharedError> {
        let path = self.tag_path(repository, tag)?;
        let text = format!(
            "{}\n{}\n{}\n",
            answer.digest, answer.route, answer.recorded_at
        );
        self.write_record(&path, &text).await
    }

    /// The last answer recorded for `repository:tag` by a replica with the key; `None` when
    /// there is none, or no key. An answer without a valid seal is [`SharedError::Untrusted`]
    /// (counted).
    pub async fn tag(&self, repository: &str, tag: &str) -> Result<Option<TagRecord>, SharedError> {
        let path = self.tag_path(repository, tag)?;
        match self.read_record(&path).await? {
            None => Ok(None),
            Some(Ok(content)) => Ok(TagRecord::parse(content.as_bytes())),
            Some(Err(reason)) => {
                Err(self.untrusted(&self.inner.stats.rejected_tags, &path, reason))
            }
        }
    }

    fn withdrawal_path(&self, digest: &Digest) -> Path {
        self.inner
            .prefix
            .clone()
            .join("withdrawn")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Records that an operator withdrew `digest` (`content` says why and when), so that every
    /// replica with the key refuses it, and deletes its manifest and blob objects. Returns
    /// whether the record was shared: without a key nothing is written (no replica would trust
    /// it), and the withdrawal holds for this replica only.
    pub async fn withdraw(&self, digest: &Digest, content: &str) -> Result<bool, SharedError> {
        if self.inner.keys.is_none() {
            return Ok(false);
        }
        self.write_record(&self.withdrawal_path(digest), content)
            .await?;
        for kind in [Kind::Manifest, Kind::Blob] {
            let path = Path::from(self.key(kind, digest));
            match self.inner.requests.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(self.failed(error)),
            }
        }
        Ok(true)
    }

    /// Lifts the withdrawal of `digest` in the bucket (a record that is not there is no error).
    pub async fn allow(&self, digest: &Digest) -> Result<(), SharedError> {
        if self.inner.keys.is_none() {
            return Ok(());
        }
        match self
            .inner
            .requests
            .delete(&self.withdrawal_path(digest))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.failed(error)),
        }
    }

    /// Every withdrawal recorded by a replica with the key, as (digest, content); `None` without
    /// a key. Records without a valid seal, or under a key that is no digest, are left out and
    /// counted: a planted one must not withdraw content.
    pub async fn withdrawals(&self) -> Result<Option<Vec<(Digest, String)>>, SharedError> {
        if self.inner.keys.is_none() {
            return Ok(None);
        }
        let prefix = self.inner.prefix.clone().join("withdrawn");
        let listed: Vec<object_store::ObjectMeta> = self
            .inner
            .requests
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.failed(e))?;
        let mut found = Vec::new();
        for meta in listed {
            // `…/withdrawn/<algorithm>/<hex>`, and nothing else, names a withdrawal.
            let digest = meta
                .location
                .as_ref()
                .rsplit_once('/')
                .and_then(|(dir, hex)| {
                    let algorithm = dir.rsplit('/').next()?;
                    format!("{algorithm}:{hex}").parse::<Digest>().ok()
                });
            let Some(digest) = digest.filter(|d| self.withdrawal_path(d) == meta.location) else {
                bump(&self.inner.stats.rejected_withdrawals, 1);
                continue;
            };
            match self.read_record(&meta.location).await? {
                None => {}
                Some(Ok(content)) => found.push((digest, content)),
                Some(Err(reason)) => {
                    let _ = self.untrusted(
                        &self.inner.stats.rejected_withdrawals,
                        &meta.location,
                        reason,
                    );
                }
            }
        }
        Ok(Some(found))
    }

    /// Writes the record `content` at `path`, sealed; nothing without a key.
    async fn write_record(&self, path: &Path, content: &str) -> Result<(), SharedError> {
        let Some(keys) = &self.inner.keys else {
            return Ok(());
        };
        let body = keys.seal(path.as_ref(), content);
        self.inner
            .requests
            .put(path, PutPayload::from(body.into_bytes()))
            .await
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }

    /// The content of the record at `path`: `None` when there is none (or no key to open it
    /// with, in which case the bucket is not asked), the reason when it is not sealed with a key
    /// of ours.
    async fn read_record(
        &self,
        path: &Path,
    ) -> Result<Option<Result<String, Rejected>>, SharedError> {
        let Some(keys) = &self.inner.keys else {
            return Ok(None);
        };
        let result = match self.inner.requests.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(self.failed(error)),
        };
        // Whoever can write the bucket could plant a huge object here: it is not read.
        if result.meta.size > MAX_RECORD_LEN {
            return Ok(Some(Err(Rejected::TooLarge)));
        }
        let bytes = result.bytes().await.map_err(|e| self.failed(e))?;
        Ok(Some(keys.open(path.as_ref(), &bytes).map(str::to_owned)))
    }

    /// Counts a record at `path` that is not trusted, in `counter` (its kind's).
    fn untrusted(&self, counter: &AtomicU64, path: &Path, reason: Rejected) -> SharedError {
        bump(counter, 1);
        SharedError::Untrusted {
            key: path.to_string(),
            reason,
        }
    }
}

/// `https://host/` with the bucket as the first label of the host, for virtual-hosted addressing
/// against a custom endpoint (object_store expects the bucket in the endpoint then).
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> Result<String, SharedError> {
    let mut url = url::Url::parse(endpoint)
        .map_err(|e| SharedError::Config(format!("endpoint {endpoint:?}: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| SharedError::Config(format!("endpoint {endpoint:?} names no host")))?
        .to_owned();
    url.set_host(Some(&format!("{bucket}.{host}")))
        .map_err(|e| SharedError::Config(format!("endpoint {endpoint:?}: {e}")))?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

async fn open_local(file: &FsPath) -> Result<(u64, tokio::fs::File), SharedError> {
    let local = |source| SharedError::Local {
        path: file.to_owned(),
        source,
    };
    let handle = tokio::fs::File::open(file).await.map_err(local)?;
    let len = handle.metadata().await.map_err(local)?.len();
    Ok((len, handle))
}

/// The bytes of `range` out of a verified stream of the whole object, with the last piece held
/// back until the whole stream has ended well (the range may end long before the object does).
fn slice(
    inner: BoxStream<'static, Result<Bytes, SharedError>>,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, SharedError>> {
    struct State {
        inner: BoxStream<'static, Result<Bytes, SharedError>>,
        offset: u64,
        held: Option<Bytes>,
        done: bool,
    }
    let state = State {
        inner,
        offset: 0,
        held: None,
        done: false,
    };
    stream::unfold(state, move |mut state| {
        let range = range.clone();
        async move {
            if state.done {
                return None;
            }
            loop {
                match state.inner.next().await {
                    Some(Ok(chunk)) => {
                        let start = state.offset;
                        let end = start + chunk.len() as u64;
                        state.offset = end;
                        let from = range.start.clamp(start, end) - start;
                        let to = range.end.clamp(start, end) - start;
                        if from == to {
                            continue;
                        }
                        let piece = chunk.slice(from as usize..to as usize);
                        if let Some(previous) = state.held.replace(piece) {
                            return Some((Ok(previous), state));
                        }
                    }
                    Some(Err(error)) => {
                        state.held = None;
                        state.done = true;
                        return Some((Err(error), state));
                    }
                    None => {
                        state.done = true;
                        return state.held.take().map(|last| (Ok(last), state));
                    }
                }
            }
        }
    })
    .boxed()
}

fn credentials_from_env() -> Result<Credentials, SharedError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(key_id), Some(secret)) => Ok(Credentials {
            key_id,
            secret,
            token: var("AWS_SESSION_TOKEN"),
        }),
        _ => Err(SharedError::Config(
            "no credentials: set cache.shared.s3.credentials_file, or the environment \
             variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                .to_owned(),
        )),
    }
}

/// The `[default]` profile of an AWS credentials file (INI: `key = value` lines under
/// `[profile]` headers, `#` and `;` comments).
fn parse_credentials_file(text: &str) -> Result<Credentials, String> {
    let mut section: Option<&str> = None;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: unclosed section header", number + 1))?;
            section = Some(name.trim());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: not `key = value`", number + 1))?;
        if section != Some("default") {
            continue;
        }
        let value = value.trim().to_owned();
        match key.trim() {
            "aws_access_key_id" => key_id = Some(value),
            "aws_secret_access_key" => secret = Some(value),
            "aws_session_token" => token = Some(value),
            _ => {}
        }
    }
    match (key_id, secret) {
        (Some(key_id), Some(secret)) if !key_id.is_empty() && !secret.is_empty() => {
            Ok(Credentials {
                key_id,
                secret,
                token: token.filter(|t| !t.is_empty()),
            })
        }
        _ => {
            Err("no [default] profile with aws_access_key_id and aws_secret_access_key".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
        RawSharedConfig {
            s3: Some(RawS3 {
                bucket: Some("mirrorgate-cache".to_owned()),
                ..RawS3::default()
            }),
            key_file: None,
        }
        .into_config()
        .unwrap()
        .s3
    }

    fn problem(edit: impl FnOnce(&mut S3Config)) -> Option<(String, String)> {
        let mut config = config();
        edit(&mut config);
        config.validate().err()
    }

    #[test]
    fn defaults_are_those_of_the_contract() {
        assert_eq!(
            config(),
            S3Config {
                bucket: "mirrorgate-cache".to_owned(),
                prefix: String::new(),
                endpoint: None,
                region: "us-east-1".to_owned(),
                path_style: false,
                insecure: false,
                ca_file: None,
                credentials_file: None,
            }
        );
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn the_configuration_file_reads_the_section_and_names_bad_keys() {
        let text = "cache:\n  shared:\n    s3:\n      bucket: team-cache\n      \
                    endpoint: http://127.0.0.1:8333\n      insecure: true\n      \
                    path_style: true\n";
        let config = crate::config::Config::from_yaml_str(text, "f.yaml").unwrap();
        let s3 = config.cache.shared.map(|shared| shared.s3);
        assert_eq!(
            s3.as_ref()
                .map(|s3| (s3.bucket.as_str(), s3.path_style, s3.insecure)),
            Some(("team-cache", true, true))
        );
        let error_of = |text: &str| {
            crate::config::Config::from_yaml_str(text, "f.yaml")
                .unwrap_err()
                .to_string()
        };
        let error =
            error_of("cache: {shared: {s3: {bucket: team-cache, endpoint: 'http://s3:8333'}}}");
        assert!(
            error.starts_with("f.yaml: cache.shared.s3.endpoint: plain http"),
            "{error}"
        );
        let error = error_of("cache: {shared: {s3: {bucket: b, secret: x}}}");
        assert!(error.contains("secret"), "{error}");
        let keyed = crate::config::Config::from_yaml_str(
            "cache: {shared: {key_file: /etc/mirrorgate/shared-key/key, s3: {bucket: b-1}}}",
            "f.yaml",
        )
        .unwrap();
        assert_eq!(
            keyed.cache.shared.and_then(|shared| shared.key_file),
            Some(PathBuf::from("/etc/mirrorgate/shared-key/key"))
        );
        let error = error_of("cache: {shared: {key_file: '', s3: {bucket: b-1}}}");
        assert!(
            error.starts_with("f.yaml: cache.shared.key_file: empty path"),
            "{error}"
        );
        assert_eq!(
            crate::config::Config::from_yaml_str("cache: {shared: }", "f.yaml")
                .unwrap()
                .cache
                .shared,
            None
        );
    }

    #[test]
    fn an_empty_section_means_no_shared_store() {
        assert_eq!(RawSharedConfig::default().into_config(), None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = |p: Option<(String, String)>| p.map(|(key, _)| key);
        assert_eq!(
            key(problem(|c| c.bucket.clear())),
            Some("bucket".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.bucket = "Upper_Case".to_owned())),
            Some("bucket".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.prefix = "/abs".to_owned())),
            Some("prefix".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.prefix = "a//b".to_owned())),
            Some("prefix".to_owned())
        );
        assert_eq!(
            key(problem(
                |c| c.endpoint = Some("http://s3.local:8333".to_owned())
            )),
            Some("endpoint".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.endpoint = Some("ftp://s3.local".to_owned()))),
            Some("endpoint".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.region.clear())),
            Some("region".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.ca_file = Some(PathBuf::new()))),
            Some("ca_file".to_owned())
        );
    }

    #[test]
    fn plain_http_is_accepted_with_insecure_and_a_prefix_may_end_in_a_slash() {
        assert_eq!(
            problem(|c| {
                c.endpoint = Some("http://127.0.0.1:8333".to_owned());
                c.insecure = true;
                c.prefix = "team/mirrorgate/".to_owned();
            }),
            None
        );
    }

    #[test]
    fn credentials_come_from_the_default_profile() {
        let text = "# comment\n[other]\naws_access_key_id = OTHER\naws_secret_access_key = x\n\
                    [default]\naws_access_key_id=AKID\n aws_secret_access_key = SECRET \n\
                    aws_session_token =\n";
        let credentials = parse_credentials_file(text).unwrap();
        assert_eq!(
            (
                credentials.key_id.as_str(),
                credentials.secret.as_str(),
                credentials.token
            ),
            ("AKID", "SECRET", None)
        );
    }

    #[test]
    fn a_credentials_file_without_the_default_profile_is_an_error() {
        let text = "[prod]\naws_access_key_id = A\naws_secret_access_key = B\n";
        assert!(
            parse_credentials_file(text)
                .unwrap_err()
                .contains("[default]")
        );
        assert!(
            parse_credentials_file("[default\n")
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket_in_the_host() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example.com:9000", "cache").unwrap(),
            "https://cache.s3.example.com:9000"
        );
    }

    #[tokio::test]
    async fn a_range_is_cut_out_and_its_last_piece_waits_for_the_end() {
        let chunks: Vec<Result<Bytes, SharedError>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
            Err(SharedError::Corrupt {
                key: "k".to_owned(),
                reason: "r".to_owned(),
            }),
        ];
        let items: Vec<Result<Bytes, String>> = slice(stream::iter(chunks).boxed(), 2..8)
            .map(|r| r.map_err(|e| e.kind().to_owned()))
            .collect()
            .await;
        assert_eq!(
            items,
            vec![Ok(Bytes::from_static(b"llo ")), Err("corrupt".to_owned())]
        );
        let whole: Vec<Bytes> = slice(
            stream::iter(vec![
                Ok(Bytes::from_static(b"hello ")),
                Ok(Bytes::from_static(b"world")),
            ])
            .boxed(),
            2..8,
        )
        .try_collect()
        .await
        .unwrap();
        assert_eq!(
            whole,
            vec![Bytes::from_static(b"llo "), Bytes::from_static(b"wo")]
        );
    }
}
