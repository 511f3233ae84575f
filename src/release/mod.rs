//! OpenShift release payloads: what a release image is, and what warming it means.
//!
//! A release image (`quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64`, or a `-multi`
//! manifest list of per-architecture payloads of the same shape) is an image whose config carries
//! the label `io.openshift.release` and one of whose layers holds `release-manifests/`:
//! `image-references`, an `ImageStream` naming every component image by digest, and
//! `release-metadata`, with the version. Components share many base layers, so the set of unique
//! blobs is much smaller than the sum of the images.
//!
//! Principal types:
//! - [`Fetcher`]: where manifests and blobs come from (the in-process fetch API in the server);
//! - [`plan_release`]: walks a release through a fetcher into a [`Plan`], checking every digest;
//! - [`Plan`]: version, [`Component`]s, every manifest ([`ManifestEntry`]) and the unique blob set
//!   ([`BlobEntry`]), [`Totals`] against what is cached, and the `--dry-run` text;
//! - [`PlatformFilter`]: which platforms of a manifest list are kept (`[amd64]`, `[all]`);
//! - [`Manifest`]: an image manifest or an index, as the walk reads them;
//! - [`scan_layer`], [`parse_image_references`], [`parse_release_metadata`], [`release_label`]:
//!   the pure pieces, on bytes and readers;
//! - [`ReleaseError`]: what went wrong, naming the reference.
//!
//! Nothing here does network I/O itself; the walk only calls its [`Fetcher`].

mod manifest;
mod payload;
mod plan;
mod walk;

use thiserror::Error;

pub use manifest::{
    ACCEPT, DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Manifest, ManifestError, OCI_INDEX,
    OCI_MANIFEST, Platform, PlatformFilter, PlatformFilterError,
};
pub use payload::{
    Component, DEFAULT_MAX_CONFIG_SIZE, DEFAULT_MAX_FILE_SIZE, IMAGE_REFERENCES, PayloadError,
    RELEASE_LABEL, RELEASE_METADATA, ReleaseFiles, parse_image_references, parse_release_metadata,
    release_label, scan_layer,
};
pub use plan::{BlobEntry, Failure, ManifestEntry, Payload, Plan, Totals};
pub use walk::{BlobReader, FetchedManifest, Fetcher, WalkOptions, plan_release};

/// Why a release (or one of its components) could not be planned. Every variant names the
/// reference it is about.
#[derive(Debug, Error)]
pub enum ReleaseError {
    /// The fetcher failed.
    #[error("{reference}: cannot fetch: {source}")]
    Fetch {
        /// What was asked for.
        reference: String,
        /// The fetcher's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading a blob's bytes failed midway.
    #[error("{reference}: reading failed: {source}")]
    Blob {
        /// The blob, as `repository@digest`.
        reference: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content does not match the digest it was asked by.
    #[error("{reference}: content does not match its digest (got {actual})")]
    DigestMismatch {
        /// What was asked for.
        reference: String,
        /// What the content hashed to instead.
        actual: String,
    },
    /// A manifest could not be read.
    #[error("{reference}: {source}")]
    Manifest {
        /// The manifest.
        reference: String,
        /// Why.
        source: ManifestError,
    },
    /// A payload's config or `release-manifests/` is not what a release needs (not a release
    /// image, a file too large, a component by tag, ...).
    #[error("{reference}: {source}")]
    Payload {
        /// The payload image (and layer).
        reference: String,
        /// Why.
        source: PayloadError,
    },
    /// No layer of the payload holds `release-manifests/image-references`.
    #[error("{reference}: no layer holds {IMAGE_REFERENCES}: not a release payload")]
    NoReleaseManifests {
        /// The payload image.
        reference: String,
    },
    /// The release is a manifest list with no payload for the filter's platforms.
    #[error("{reference}: no payload for architectures [{filter}] (the release has {})", available.join(", "))]
    NoMatchingPlatform {
        /// The release.
        reference: String,
        /// The filter.
        filter: String,
        /// The platforms the list has.
        available: Vec<String>,
    },
    /// A manifest list names another manifest list as a platform's image.
    #[error("{reference}: an index where an image manifest was expected (nested index)")]
    NestedIndex {
        /// The child.
        reference: String,
    },
    /// The payload's config is larger than the bound.
    #[error("{reference}: the image config is {size} bytes, more than the limit of {limit} bytes")]
    ConfigTooLarge {
        /// The config blob.
        reference: String,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Two manifests give one blob different sizes.
    #[error(
        "{reference}: blob {digest} is {size} bytes here but {earlier} bytes in another manifest"
    )]
    SizeConflict {
        /// The manifest.
        reference: String,
        /// The blob.
        digest: String,
        /// The size this manifest gives.
        size: u64,
        /// The size recorded earlier.
        earlier: u64,
    },
    /// A repository and digest do not make a valid reference.
    #[error("{reference}: not a valid reference: {reason}")]
    Reference {
        /// The attempted reference.
        reference: String,
        /// Why.
        reason: String,
    },
}
