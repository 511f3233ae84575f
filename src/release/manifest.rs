//! The two shapes of manifest a release walk meets: an image manifest (config and layers) and an
//! index (OCI image index or Docker manifest list, whose children carry platforms), and the
//! platform filter that picks children of an index.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use thiserror::Error;

use crate::reference::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a walk sends as `Accept` for manifests: the four media types it can read.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor: what a manifest says about a blob or child manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type the descriptor gives (may be empty in old manifests).
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// For a child of an index: its platform, if given.
    pub platform: Option<Platform>,
}

/// The platform of an index child.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    /// `linux`, `windows`, `unknown` (attestations), ...
    pub os: String,
    /// `amd64`, `arm64`, `ppc64le`, `s390x`, ...
    pub architecture: String,
    /// `v8`, ... if given.
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// One image: a config blob and layer blobs.
    Image {
        /// The image config.
        config: Descriptor,
        /// The layers, bottom first.
        layers: Vec<Descriptor>,
    },
    /// Per-platform children (OCI index, Docker manifest list).
    Index {
        /// The children, in the order of the index.
        manifests: Vec<Descriptor>,
    },
}

/// Why manifest bytes are not a manifest a release walk can read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("not a valid manifest ({media_type}): {reason}")]
    Malformed {
        /// The media type it was read as.
        media_type: String,
        /// What was wrong.
        reason: String,
    },
    /// A media type a walk cannot read (Docker schema 1, artifacts of other kinds, ...).
    #[error("unsupported manifest media type \"{0}\"")]
    Unsupported(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Manifest {
    /// Parses manifest bytes. `media_type` is the `Content-Type` the registry gave, if any; the
    /// manifest's own `mediaType` field, then its shape, decide otherwise.
    pub fn parse(bytes: &[u8], media_type: Option<&str>) -> Result<Manifest, ManifestError> {
        Manifest::parse_typed(bytes, media_type).map(|(manifest, _)| manifest)
    }

    /// [`Manifest::parse`], also returning the media type it was read as.
    pub fn parse_typed(
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<(Manifest, String), ManifestError> {
        let declared = media_type
            .map(|m| m.split(';').next().unwrap_or(m).trim().to_owned())
            .filter(|m| !m.is_empty());
        let malformed = |reason: String| ManifestError::Malformed {
            media_type: declared
                .clone()
                .unwrap_or_else(|| "no media type".to_owned()),
            reason,
        };
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if raw.schema_version == Some(1) {
            return Err(ManifestError::Unsupported(
                "application/vnd.docker.distribution.manifest.v1+json".to_owned(),
            ));
        }
        let media_type = match (declared.as_deref(), raw.media_type.as_deref()) {
            // A generic Content-Type says nothing; the document may.
            (Some("application/json") | Some("application/octet-stream") | None, Some(m)) => {
                m.to_owned()
            }
            (Some(m), _) => m.to_owned(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) => OCI_MANIFEST.to_owned(),
        };
        let descriptor = |raw: RawDescriptor| -> Result<Descriptor, ManifestError> {
            let digest = raw
                .digest
                .parse::<Digest>()
                .map_err(|e| malformed(e.to_string()))?;
            Ok(Descriptor {
                media_type: raw.media_type,
                digest,
                size: raw.size,
                platform: raw.platform.map(|p| Platform {
                    os: p.os,
                    architecture: p.architecture,
                    variant: p.variant.filter(|v| !v.is_empty()),
                }),
            })
        };
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let manifests = raw
                    .manifests
                    .ok_or_else(|| malformed("an index without \"manifests\"".to_owned()))?;
                let manifests = manifests
                    .into_iter()
                    .map(descriptor)
                    .collect::<Result<_, _>>()?;
                Ok((Manifest::Index { manifests }, media_type))
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let config = raw
                    .config
                    .ok_or_else(|| malformed("a manifest without \"config\"".to_owned()))?;
                let manifest = Manifest::Image {
                    config: descriptor(config)?,
                    layers: raw
                        .layers
                        .unwrap_or_default()
                        .into_iter()
                        .map(descriptor)
                        .collect::<Result<_, _>>()?,
                };
                Ok((manifest, media_type))
            }
            other => Err(ManifestError::Unsupported(other.to_owned())),
        }
    }
}

/// Which platforms of an index are kept: the `architectures` setting (`[amd64]`, or `[all]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub enum PlatformFilter {
    /// Every child of every index.
    All,
    /// Children whose architecture is one of these (normalised: `x86_64` is `amd64`).
    Architectures(BTreeSet<String>),
}

/// Why an `architectures` list is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlatformFilterError {
    /// The list is empty.
    #[error("architectures must name at least one architecture, or be [all]")]
    Empty,
    /// `all` is mixed with architectures.
    #[error("architectures: \"all\" keeps every platform and cannot be combined with others")]
    AllMixed,
    /// Not an architecture name.
    #[error(
        "architectures: \"{0}\" is not an architecture name (e.g. amd64, arm64, ppc64le, s390x)"
    )]
    Invalid(String),
}

impl PlatformFilter {
    /// Only amd64, the default.
    pub fn amd64() -> PlatformFilter {
        PlatformFilter::Architectures(BTreeSet::from(["amd64".to_owned()]))
    }

    /// Parses a list such as `["amd64", "arm64"]` or `["all"]`.
    pub fn parse<S: AsRef<str>>(
        names: impl IntoIterator<Item = S>,
    ) -> Result<PlatformFilter, PlatformFilterError> {
        let names: Vec<String> = names
            .into_iter()
            .map(|n| n.as_ref().trim().to_ascii_lowercase())
            .collect();
        if names.is_empty() {
            return Err(PlatformFilterError::Empty);
        }
        if names.iter().any(|n| n == "all") {
            return if names.len() == 1 {
                Ok(PlatformFilter::All)
            } else {
                Err(PlatformFilterError::AllMixed)
            };
        }
        let mut set = BTreeSet::new();
        for name in names {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(PlatformFilterError::Invalid(name));
            }
            set.insert(normalise_architecture(&name).to_owned());
        }
        Ok(PlatformFilter::Architectures(set))
    }

    /// Whether an index child with this platform is kept. A child without a platform is kept
    /// only by [`PlatformFilter::All`].
    pub fn keeps(&self, platform: Option<&Platform>) -> bool {
        match self {
            PlatformFilter::All => true,
            PlatformFilter::Architectures(set) => {
                platform.is_some_and(|p| set.contains(normalise_architecture(&p.architecture)))
            }
        }
    }
}

impl TryFrom<Vec<String>> for PlatformFilter {
    type Error = PlatformFilterError;

    fn try_from(names: Vec<String>) -> Result<Self, Self::Error> {
        PlatformFilter::parse(names)
    }
}

impl Default for PlatformFilter {
    fn default() -> Self {
        PlatformFilter::amd64()
    }
}

impl fmt::Display for PlatformFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformFilter::All => f.write_str("all"),
            PlatformFilter::Architectures(set) => {
                let names: Vec<&str> = set.iter().map(String::as_str).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

/// The GOARCH name for the aliases people write (as containers/image normalises them).
fn normalise_architecture(name: &str) -> &str {
    match name {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST_A: &str =
        "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str =
        "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn an_image_manifest_gives_its_config_and_layers() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{DIGEST_A}","size":7}},"layers":[{{"mediaType":"l","digest":"{DIGEST_B}","size":9}}]}}"#
        );
        let Manifest::Image { config, layers } =
            Manifest::parse(bytes.as_bytes(), Some(DOCKER_MANIFEST)).unwrap()
        else {
            panic!("not an image manifest");
        };
        assert_eq!(
            (
                config.digest.as_str(),
                config.size,
                layers.len(),
                layers[0].size
            ),
            (DIGEST_A, 7, 1, 9)
        );
    }

    #[test]
    fn the_media_type_field_decides_when_the_header_is_generic() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"digest":"{DIGEST_A}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let manifest = Manifest::parse(bytes.as_bytes(), Some("application/json")).unwrap();
        let Manifest::Index { manifests } = manifest else {
            panic!("not an index");
        };
        assert_eq!(
            manifests[0].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );
    }

    #[test]
    fn schema1_and_garbage_are_refused() {
        let schema1 = Manifest::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None);
        let garbage = Manifest::parse(b"nope", Some(OCI_MANIFEST));
        let bad_digest = Manifest::parse(
            br#"{"schemaVersion":2,"config":{"digest":"sha256:xyz","size":1},"layers":[]}"#,
            Some(OCI_MANIFEST),
        );
        assert_eq!(
            (
                matches!(schema1, Err(ManifestError::Unsupported(_))),
                matches!(garbage, Err(ManifestError::Malformed { .. })),
                matches!(bad_digest, Err(ManifestError::Malformed { .. })),
            ),
            (true, true, true)
        );
    }

    #[test]
    fn a_platform_filter_reads_from_a_configuration_list() {
        let all: PlatformFilter = serde_json::from_str(r#"["all"]"#).unwrap();
        let mixed = serde_json::from_str::<PlatformFilter>(r#"["all","arm64"]"#);
        assert_eq!(
            (
                all,
                mixed
                    .unwrap_err()
                    .to_string()
                    .contains("cannot be combined")
            ),
            (PlatformFilter::All, true)
        );
    }

    #[test]
    fn platform_filters_parse_all_or_architectures() {
        assert_eq!(PlatformFilter::parse(["all"]), Ok(PlatformFilter::All));
        assert_eq!(
            PlatformFilter::parse(["x86_64", "arm64"]),
            Ok(PlatformFilter::Architectures(BTreeSet::from([
                "amd64".to_owned(),
                "arm64".to_owned()
            ])))
        );
        assert_eq!(
            PlatformFilter::parse(Vec::<String>::new()),
            Err(PlatformFilterError::Empty)
        );
        assert_eq!(
            PlatformFilter::parse(["all", "amd64"]),
            Err(PlatformFilterError::AllMixed)
        );
        assert_eq!(
            PlatformFilter::parse(["linux/amd64"]),
            Err(PlatformFilterError::Invalid("linux/amd64".to_owned()))
        );
    }

    #[test]
    fn a_filter_keeps_matching_architectures_and_all_keeps_everything() {
        let platform = |arch: &str| Platform {
            os: "linux".to_owned(),
            architecture: arch.to_owned(),
            variant: None,
        };
        let amd64 = PlatformFilter::amd64();
        assert_eq!(
            (
                amd64.keeps(Some(&platform("amd64"))),
                amd64.keeps(Some(&platform("arm64"))),
                amd64.keeps(None),
                PlatformFilter::All.keeps(Some(&platform("s390x"))),
                PlatformFilter::All.keeps(None),
            ),
            (true, false, false, true, true)
        );
    }
}
