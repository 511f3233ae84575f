//! The bucket itself ([`SharedStore`]): verified reads, verified uploads, replacement of corrupt
//! objects, sealed records (confirmations, tag answers, withdrawals) and the start-up check.

use super::config::{S3Config, SharedConfig, prefix_path};
use super::error::{SharedError, SharedStats, bump, chain};
use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::AtomicU64;
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
use tokio::io::{AsyncRead, AsyncReadExt};

use super::seal::{MAX_RECORD_LEN, RecordKeys, Rejected};
use crate::cache::verify::{Hasher, Outcome, Verified};
use crate::reference::Digest;

/// Objects up to this size are stored with one conditional `PUT` (read into memory); larger ones
/// with a multipart upload in parts of this size.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

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
