//! Walking a release through a [`Fetcher`]: release image → (per-platform payloads) → config
//! and layers → `release-manifests/` → components → their manifests (and platform children) →
//! the [`Plan`]. Every manifest and every blob the walk reads is checked against its digest.

use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use sha2::{Digest as _, Sha256, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::reference::{Algorithm, Digest, Reference};

use super::ReleaseError;
use super::manifest::{Descriptor, Manifest, PlatformFilter};
use super::payload::{
    self, Component, DEFAULT_MAX_CONFIG_SIZE, DEFAULT_MAX_FILE_SIZE, ReleaseFiles,
};
use super::plan::{Failure, Payload, Plan, by_digest};

/// A manifest as a registry (or the cache) returned it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The exact bytes.
    pub bytes: Bytes,
    /// The `Content-Type`, if any.
    pub media_type: Option<String>,
}

/// A blob's bytes as they arrive.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Where a walk gets manifests and blobs: the in-process fetch API (along the rules, through the
/// cache), or in tests a plain registry client.
pub trait Fetcher: Send + Sync {
    /// The fetcher's own error, kept as the source of [`ReleaseError::Fetch`].
    type Error: std::error::Error + Send + Sync + 'static;

    /// The manifest `reference` names (by tag or by digest). The walk checks the digest itself.
    fn manifest(
        &self,
        reference: &Reference,
    ) -> impl Future<Output = Result<FetchedManifest, Self::Error>> + Send;

    /// The blob `digest` of the repository `repository` names (its tag or digest is ignored).
    fn blob(
        &self,
        repository: &Reference,
        digest: &Digest,
    ) -> impl Future<Output = Result<BlobReader, Self::Error>> + Send;
}

/// How a walk is done.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// The platforms kept from manifest lists.
    pub platforms: PlatformFilter,
    /// Component manifests fetched at once.
    pub concurrency: usize,
    /// The bound on `image-references` and `release-metadata`.
    pub max_file_size: u64,
    /// The bound on a payload's image config.
    pub max_config_size: u64,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            platforms: PlatformFilter::default(),
            concurrency: 8,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_config_size: DEFAULT_MAX_CONFIG_SIZE,
        }
    }
}

/// Walks the release `release` and returns its plan. Errors of the release itself (not a
/// release, no `release-manifests/`, a malformed `image-references`, ...) fail the walk;
/// a component that cannot be read is recorded in [`Plan::failures`] and the walk goes on.
pub async fn plan_release<F: Fetcher>(
    fetcher: &F,
    release: &Reference,
    options: &WalkOptions,
) -> Result<Plan, ReleaseError> {
    let top = fetch_manifest(fetcher, release).await?;
    let mut plan = Plan::new(
        release.clone(),
        top.digest.clone(),
        options.platforms.clone(),
    );
    let (manifest, children) =
        plan.add_manifest(release, &top.digest, &top.bytes, top.media_type.as_deref())?;
    let mut payloads = Vec::new();
    match manifest {
        Manifest::Image { config, layers } => payloads.push((None, top.digest, config, layers)),
        Manifest::Index { manifests } => {
            if children.is_empty() {
                return Err(ReleaseError::NoMatchingPlatform {
                    reference: release.to_string(),
                    filter: options.platforms.to_string(),
                    available: manifests
                        .iter()
                        .map(|m| {
                            m.platform
                                .as_ref()
                                .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
                        })
                        .collect(),
                });
            }
            for child in children {
                let reference = by_digest(release, &child.digest)?;
                let fetched = fetch_manifest(fetcher, &reference).await?;
                let (manifest, _) = plan.add_manifest(
                    release,
                    &fetched.digest,
                    &fetched.bytes,
                    fetched.media_type.as_deref(),
                )?;
                let Manifest::Image { config, layers } = manifest else {
                    return Err(ReleaseError::NestedIndex {
                        reference: reference.to_string(),
                    });
                };
                payloads.push((child.platform, fetched.digest, config, layers));
            }
        }
    }

    let mut components: Vec<Component> = Vec::new();
    let mut version = None;
    for (platform, digest, config, layers) in payloads {
        let reference = by_digest(release, &digest)?;
        let config_bytes = read_config(fetcher, release, &config, options).await?;
        let label =
            payload::release_label(&config_bytes).map_err(|source| ReleaseError::Payload {
                reference: reference.to_string(),
                source,
            })?;
        let files = read_release_files(fetcher, release, &reference, &layers, options).await?;
        let Some(image_references) = files.image_references else {
            return Err(ReleaseError::NoReleaseManifests {
                reference: reference.to_string(),
            });
        };
        let payload_error = |source| ReleaseError::Payload {
            reference: reference.to_string(),
            source,
        };
        components
            .extend(payload::parse_image_references(&image_references).map_err(payload_error)?);
        let payload_version = match &files.release_metadata {
            Some(bytes) => payload::parse_release_metadata(bytes).map_err(payload_error)?,
            None => label.clone(),
        };
        version.get_or_insert(payload_version);
        plan.payloads.push(Payload {
            reference,
            platform,
            label,
        });
    }
    components.sort();
    components.dedup();
    plan.version = version.unwrap_or_default();
    plan.components = components;

    // Owned items: a stream over borrowed components makes the walk's future unusable with
    // `tokio::spawn` (its closure would be higher-ranked over the borrow).
    let references: Vec<(usize, Reference)> = plan
        .components
        .iter()
        .map(|c| c.reference.clone())
        .enumerate()
        .collect();
    let platforms = &options.platforms;
    let fetched: Vec<(usize, ComponentResult)> =
        stream::iter(references)
            .map(|(i, reference)| async move {
                (i, fetch_component(fetcher, &reference, platforms).await)
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
    let mut fetched = fetched;
    fetched.sort_by_key(|(i, _)| *i);
    for (i, result) in fetched {
        let component = plan.components[i].clone();
        let recorded = result.and_then(|manifests| {
            for m in &manifests {
                plan.add_manifest(
                    &component.reference,
                    &m.digest,
                    &m.bytes,
                    m.media_type.as_deref(),
                )
                .map_err(|e| (m.reference.clone(), e))?;
            }
            Ok(())
        });
        if let Err((reference, error)) = recorded {
            plan.failures.push(Failure {
                component: component.name.clone(),
                reference,
                reason: error.to_string(),
            });
        }
    }
    Ok(plan)
}

/// A component's manifests, or the reference that failed and why.
type ComponentResult = Result<Vec<Fetched>, (String, ReleaseError)>;

/// A manifest fetched and checked: its digest is the one asked for, or computed for a tag.
struct Fetched {
    reference: String,
    digest: Digest,
    bytes: Bytes,
    media_type: Option<String>,
}

async fn fetch_manifest<F: Fetcher>(
    fetcher: &F,
    reference: &Reference,
) -> Result<Fetched, ReleaseError> {
    let fetched = fetcher
        .manifest(reference)
        .await
        .map_err(|e| ReleaseError::Fetch {
            reference: reference.to_string(),
            source: Box::new(e),
        })?;
    let digest = match reference.digest() {
        Some(expected) => {
            let actual = digest_of(expected.algorithm(), &fetched.bytes);
            if actual != expected {
                return Err(ReleaseError::DigestMismatch {
                    reference: reference.to_string(),
                    actual: actual.to_string(),
                });
            }
            expected
        }
        None => digest_of(Algorithm::Sha256, &fetched.bytes),
    };
    Ok(Fetched {
        reference: reference.to_string(),
        digest,
        bytes: fetched.bytes,
        media_type: fetched.media_type,
    })
}

/// A component's manifest, and for a list the children the filter keeps (an image manifest
/// of a single-arch release is kept whatever its platform).
async fn fetch_component<F: Fetcher>(
    fetcher: &F,
    reference: &Reference,
    platforms: &PlatformFilter,
) -> ComponentResult {
    let top = fetch_manifest(fetcher, reference)
        .await
        .map_err(|e| (reference.to_string(), e))?;
    let manifest = Manifest::parse(&top.bytes, top.media_type.as_deref()).map_err(|source| {
        (
            reference.to_string(),
            ReleaseError::Manifest {
                reference: reference.to_string(),
                source,
            },
        )
    })?;
    let mut out = vec![];
    if let Manifest::Index { manifests } = &manifest {
        for child in manifests
            .iter()
            .filter(|c| platforms.keeps(c.platform.as_ref()))
        {
            let child_ref =
                by_digest(reference, &child.digest).map_err(|e| (reference.to_string(), e))?;
            let fetched = fetch_manifest(fetcher, &child_ref)
                .await
                .map_err(|e| (child_ref.to_string(), e))?;
            if matches!(
                Manifest::parse(&fetched.bytes, fetched.media_type.as_deref()),
                Ok(Manifest::Index { .. })
            ) {
                return Err((
                    child_ref.to_string(),
                    ReleaseError::NestedIndex {
                        reference: child_ref.to_string(),
                    },
                ));
            }
            out.push(fetched);
        }
    }
    out.insert(0, top);
    Ok(out)
}

/// The payload's config, bounded and checked against its digest.
async fn read_config<F: Fetcher>(
    fetcher: &F,
    repository: &Reference,
    config: &Descriptor,
    options: &WalkOptions,
) -> Result<Vec<u8>, ReleaseError> {
    let reference = by_digest(repository, &config.digest)?;
    if config.size > options.max_config_size {
        return Err(ReleaseError::ConfigTooLarge {
            reference: reference.to_string(),
            size: config.size,
            limit: options.max_config_size,
        });
    }
    let reader = fetcher
        .blob(repository, &config.digest)
        .await
        .map_err(|e| ReleaseError::Fetch {
            reference: reference.to_string(),
            source: Box::new(e),
        })?;
    let mut bytes = Vec::with_capacity(config.size as usize);
    reader
        .take(config.size + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ReleaseError::Blob {
            reference: reference.to_string(),
            source: e,
        })?;
    let actual = digest_of(config.digest.algorithm(), &bytes);
    if actual != config.digest || bytes.len() as u64 != config.size {
        return Err(ReleaseError::DigestMismatch {
            reference: reference.to_string(),
            actual: format!("{actual} ({} bytes)", bytes.len()),
        });
    }
    Ok(bytes)
}

/// Reads the payload's layers from the top down until both `release-manifests/` files are
/// known; each layer read is streamed to its end and checked against its digest.
async fn read_release_files<F: Fetcher>(
    fetcher: &F,
    repository: &Reference,
    payload: &Reference,
    layers: &[Descriptor],
    options: &WalkOptions,
) -> Result<ReleaseFiles, ReleaseError> {
    let mut files = ReleaseFiles::default();
    for layer in layers.iter().rev() {
        let reference = by_digest(repository, &layer.digest)?;
        let reader =
            fetcher
                .blob(repository, &layer.digest)
                .await
                .map_err(|e| ReleaseError::Fetch {
                    reference: reference.to_string(),
                    source: Box::new(e),
                })?;
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let expected = layer.clone();
        let limit = options.max_file_size;
        let scanned = tokio::task::spawn_blocking(move || {
            let mut verified = Verifying::new(bridge, &expected);
            let found = payload::scan_layer(&mut verified, limit);
            // Read to the end even when the archive ended or failed, so the digest is checked.
            let rest = io::copy(&mut verified, &mut io::sink());
            (found, rest, verified.mismatch())
        })
        .await
        .map_err(|e| ReleaseError::Blob {
            reference: reference.to_string(),
            source: io::Error::other(e),
        })?;
        let (found, rest, mismatch) = scanned;
        if let Some(actual) = mismatch {
            return Err(ReleaseError::DigestMismatch {
                reference: reference.to_string(),
                actual,
            });
        }
        rest.map_err(|e| ReleaseError::Blob {
            reference: reference.to_string(),
            source: e,
        })?;
        let found = found.map_err(|source| ReleaseError::Payload {
            reference: format!("{payload} (layer {})", layer.digest),
            source,
        })?;
        files.merge_lower(found);
        if files.complete() {
            break;
        }
    }
    Ok(files)
}

/// The digest of `bytes` with `algorithm`.
fn digest_of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(bytes);
    hasher.finish()
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Digest {
        let (name, hash) = match self {
            Hasher::Sha256(h) => ("sha256", h.finalize().to_vec()),
            Hasher::Sha512(h) => ("sha512", h.finalize().to_vec()),
        };
        let mut text = String::with_capacity(name.len() + 1 + hash.len() * 2);
        text.push_str(name);
        text.push(':');
        for byte in hash {
            text.push_str(&format!("{byte:02x}"));
        }
        text.parse().expect("a hash is a valid digest")
    }
}

/// A reader that hashes and counts what passes through; at the end it knows whether the
/// content matched its descriptor.
struct Verifying<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Descriptor,
    read: u64,
    mismatch: Option<String>,
}

impl<R: Read> Verifying<R> {
    fn new(inner: R, expected: &Descriptor) -> Self {
        Verifying {
            inner,
            hasher: Some(Hasher::new(expected.digest.algorithm())),
            expected: expected.clone(),
            read: 0,
            mismatch: None,
        }
    }

    /// What the content was instead, once it ended and did not match.
    fn mismatch(&self) -> Option<String> {
        self.mismatch.clone()
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.expected.size {
            let what = format!(
                "more than the {} bytes its descriptor gives",
                self.expected.size
            );
            self.mismatch = Some(what.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, what));
        }
        match (&mut self.hasher, n) {
            (Some(hasher), n) if n > 0 => hasher.update(&buf[..n]),
            (Some(_), _) => {
                let actual = self.hasher.take().expect("present").finish();
                if actual != self.expected.digest || self.read != self.expected.size {
                    let what = format!("{actual} ({} bytes)", self.read);
                    self.mismatch = Some(what.clone());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, what));
                }
            }
            (None, _) => {}
        }
        Ok(n)
    }
}
