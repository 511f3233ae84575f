//! What makes an image a release payload, and reading its `release-manifests/`.
//!
//! A payload's config carries the label `io.openshift.release` (the version). One of its layers
//! holds `release-manifests/image-references` (an `image.openshift.io/v1` `ImageStream` naming
//! every component by digest) and `release-manifests/release-metadata` (Cincinnati metadata
//! with the version). [`scan_layer`] reads a layer's tar stream entry by entry and keeps only
//! those two small files, so a layer is never held in memory.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read};

use serde::Deserialize;
use thiserror::Error;

use crate::reference::Reference;

/// The config label that marks a release payload; its value is the version.
pub const RELEASE_LABEL: &str = "io.openshift.release";
/// Where a payload keeps the component list.
pub const IMAGE_REFERENCES: &str = "release-manifests/image-references";
/// Where a payload keeps its Cincinnati metadata.
pub const RELEASE_METADATA: &str = "release-manifests/release-metadata";
/// The largest `image-references` or `release-metadata` accepted by default (a real 4.x
/// `image-references` is a few hundred KiB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 8 * 1024 * 1024;
/// The largest image config read by default.
pub const DEFAULT_MAX_CONFIG_SIZE: u64 = 8 * 1024 * 1024;

/// One component of a release: a tag of `image-references` and the image it names by digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Component {
    /// The tag's name (`cluster-version-operator`, `machine-config-operator`, ...).
    pub name: String,
    /// Its pull spec, normalised; always a digest reference.
    pub reference: Reference,
}

// Components sort by name, then pull spec: the order of the dry-run and the summaries.
impl Ord for Component {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.name.as_str(), self.reference.as_str())
            .cmp(&(other.name.as_str(), other.reference.as_str()))
    }
}

impl PartialOrd for Component {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a payload's files or config are not what a release needs.
#[derive(Debug, Error)]
pub enum PayloadError {
    /// The image config is not JSON of an image config.
    #[error("the image config is not valid JSON: {0}")]
    Config(String),
    /// The config has no `io.openshift.release` label.
    #[error("not a release image: its config has no label \"{RELEASE_LABEL}\"")]
    NotARelease,
    /// A layer is not a tar stream (or its compression is not gzip).
    #[error("layer is not a readable tar archive: {0}")]
    Layer(#[source] io::Error),
    /// A layer is zstd-compressed, which this build does not read.
    #[error("layer is compressed with zstd, which is not supported for release-manifests")]
    Zstd,
    /// One of the files exceeds the bound.
    #[error("{path} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The file's path in the layer.
        path: &'static str,
        /// Its size from the tar header.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// `image-references` is not a valid ImageStream.
    #[error("{IMAGE_REFERENCES}: {0}")]
    ImageReferences(String),
    /// A tag of `image-references` names its image by tag, not digest.
    #[error("{IMAGE_REFERENCES}: tag \"{tag}\" names \"{pull_spec}\", which is not by digest")]
    NotByDigest {
        /// The tag's name.
        tag: String,
        /// Its `from.name`.
        pull_spec: String,
    },
    /// A tag's pull spec is not a valid reference.
    #[error("{IMAGE_REFERENCES}: tag \"{tag}\" names \"{pull_spec}\": {reason}")]
    BadPullSpec {
        /// The tag's name.
        tag: String,
        /// Its `from.name`.
        pull_spec: String,
        /// Why it is not a reference.
        reason: String,
    },
    /// `release-metadata` is not valid Cincinnati metadata.
    #[error("{RELEASE_METADATA}: {0}")]
    ReleaseMetadata(String),
}

/// The release version from an image config's `io.openshift.release` label, or
/// [`PayloadError::NotARelease`].
pub fn release_label(config: &[u8]) -> Result<String, PayloadError> {
    #[derive(Deserialize)]
    struct ImageConfig {
        #[serde(default)]
        config: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default, rename = "Labels")]
        labels: Option<std::collections::BTreeMap<String, String>>,
    }
    let parsed: ImageConfig =
        serde_json::from_slice(config).map_err(|e| PayloadError::Config(e.to_string()))?;
    parsed
        .config
        .and_then(|c| c.labels)
        .and_then(|mut labels| labels.remove(RELEASE_LABEL))
        .ok_or(PayloadError::NotARelease)
}

/// The two files of `release-manifests/` a layer held (each `None` when absent from it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseFiles {
    /// `release-manifests/image-references`.
    pub image_references: Option<Vec<u8>>,
    /// `release-manifests/release-metadata`.
    pub release_metadata: Option<Vec<u8>>,
    /// Files the layer deletes for the layers below it (overlay whiteouts): an upper layer's
    /// `.wh.image-references` means a lower layer's copy does not count.
    pub whiteouts: BTreeSet<&'static str>,
}

impl ReleaseFiles {
    /// Adds what a lower layer holds, where this (upper) layer neither has nor deletes it.
    pub fn merge_lower(&mut self, lower: ReleaseFiles) {
        if self.image_references.is_none() && !self.whiteouts.contains(IMAGE_REFERENCES) {
            self.image_references = lower.image_references;
        }
        if self.release_metadata.is_none() && !self.whiteouts.contains(RELEASE_METADATA) {
            self.release_metadata = lower.release_metadata;
        }
        self.whiteouts.extend(lower.whiteouts);
    }

    /// Whether both files are known (found or deleted), so lower layers need no reading.
    pub fn complete(&self) -> bool {
        let known = |path| {
            let found = match path {
                IMAGE_REFERENCES => self.image_references.is_some(),
                _ => self.release_metadata.is_some(),
            };
            found || self.whiteouts.contains(path)
        };
        known(IMAGE_REFERENCES) && known(RELEASE_METADATA)
    }
}

/// Reads a layer (gzip'd or plain tar, told apart by its first bytes) entry by entry and keeps
/// the two `release-manifests/` files, each bounded by `max_file_size`. Returns once the archive
/// ends; the caller may read on past it (e.g. to finish verifying the layer's digest).
pub fn scan_layer<R: Read>(layer: R, max_file_size: u64) -> Result<ReleaseFiles, PayloadError> {
    let mut reader = BufReader::new(layer);
    let head = reader.fill_buf().map_err(PayloadError::Layer)?;
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(PayloadError::Zstd);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        scan_tar(flate2::bufread::GzDecoder::new(reader), max_file_size)
    } else {
        scan_tar(reader, max_file_size)
    }
}

fn scan_tar<R: Read>(stream: R, max_file_size: u64) -> Result<ReleaseFiles, PayloadError> {
    let mut archive = tar::Archive::new(stream);
    let mut found = ReleaseFiles::default();
    for entry in archive.entries().map_err(PayloadError::Layer)? {
        let mut entry = entry.map_err(PayloadError::Layer)?;
        let path = entry.path().map_err(PayloadError::Layer)?;
        let path = path.to_string_lossy();
        let path = path.trim_start_matches("./").trim_start_matches('/');
        let path = path.trim_end_matches('/');
        // Opaque directory or whole-directory deletion: nothing below this layer counts.
        if path == "release-manifests/.wh..wh..opq" || path == ".wh.release-manifests" {
            found.whiteouts.insert(IMAGE_REFERENCES);
            found.whiteouts.insert(RELEASE_METADATA);
            continue;
        }
        let wanted = match path {
            IMAGE_REFERENCES => IMAGE_REFERENCES,
            RELEASE_METADATA => RELEASE_METADATA,
            "release-manifests/.wh.image-references" => {
                found.whiteouts.insert(IMAGE_REFERENCES);
                continue;
            }
            "release-manifests/.wh.release-metadata" => {
                found.whiteouts.insert(RELEASE_METADATA);
                continue;
            }
            _ => continue,
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        if size > max_file_size {
            return Err(PayloadError::TooLarge {
                path: wanted,
                size,
                limit: max_file_size,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // The header's size bounds the read; `take` makes sure of it.
        (&mut entry)
            .take(max_file_size + 1)
            .read_to_end(&mut bytes)
            .map_err(PayloadError::Layer)?;
        if wanted == IMAGE_REFERENCES {
            found.image_references = Some(bytes);
        } else {
            found.release_metadata = Some(bytes);
        }
    }
    Ok(found)
}

/// Parses `image-references`: every tag of the `ImageStream` with its pull spec, which must be
/// by digest. Tag names are unique and non-empty; the list is sorted by name.
pub fn parse_image_references(bytes: &[u8]) -> Result<Vec<Component>, PayloadError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ImageStream {
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        spec: Option<Spec>,
    }
    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        tags: Vec<Tag>,
    }
    #[derive(Deserialize)]
    struct Tag {
        #[serde(default)]
        name: String,
        #[serde(default)]
        from: Option<From>,
    }
    #[derive(Deserialize)]
    struct From {
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        name: String,
    }
    let bad = |m: String| PayloadError::ImageReferences(m);
    let stream: ImageStream =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    if stream.kind != "ImageStream" || stream.api_version != "image.openshift.io/v1" {
        return Err(bad(format!(
            "expected apiVersion image.openshift.io/v1, kind ImageStream; found apiVersion \"{}\", kind \"{}\"",
            stream.api_version, stream.kind
        )));
    }
    let tags = stream.spec.map(|s| s.tags).unwrap_or_default();
    if tags.is_empty() {
        return Err(bad(
            "spec.tags is empty: the release names no component".to_owned()
        ));
    }
    let mut components = Vec::with_capacity(tags.len());
    let mut names = BTreeSet::new();
    for (i, tag) in tags.into_iter().enumerate() {
        if tag.name.is_empty() {
            return Err(bad(format!("spec.tags[{i}] has no name")));
        }
        if !names.insert(tag.name.clone()) {
            return Err(bad(format!("tag \"{}\" appears twice", tag.name)));
        }
        let Some(from) = tag.from.filter(|f| !f.name.is_empty()) else {
            return Err(bad(format!("tag \"{}\" has no from.name", tag.name)));
        };
        if let Some(kind) = from.kind.as_deref()
            && kind != "DockerImage"
        {
            return Err(bad(format!(
                "tag \"{}\": from.kind is \"{kind}\", expected DockerImage",
                tag.name
            )));
        }
        let reference =
            Reference::parse_normalized(&from.name).map_err(|e| PayloadError::BadPullSpec {
                tag: tag.name.clone(),
                pull_spec: from.name.clone(),
                reason: e.to_string(),
            })?;
        if !reference.is_digest() {
            return Err(PayloadError::NotByDigest {
                tag: tag.name,
                pull_spec: from.name,
            });
        }
        components.push(Component {
            name: tag.name,
            reference,
        });
    }
    components.sort();
    Ok(components)
}

/// The version in `release-metadata` (Cincinnati metadata, kind `cincinnati-metadata-v0`).
pub fn parse_release_metadata(bytes: &[u8]) -> Result<String, PayloadError> {
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        version: String,
    }
    let bad = |m: String| PayloadError::ReleaseMetadata(m);
    let metadata: Metadata =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    if let Some(kind) = metadata.kind.as_deref()
        && kind != "cincinnati-metadata-v0"
    {
        return Err(bad(format!(
            "kind is \"{kind}\", expected cincinnati-metadata-v0"
        )));
    }
    if metadata.version.trim().is_empty() {
        return Err(bad("no version".to_owned()));
    }
    Ok(metadata.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut header = tar::Header::new_ustar();
            header.set_path(path).unwrap();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, *bytes).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_gzipped_layer_yields_both_files_and_nothing_else() {
        let layer = gzip(&tar_of(&[
            ("release-manifests/0000_00_cvo.yaml", b"kind: X"),
            ("./release-manifests/image-references", b"refs"),
            ("release-manifests/release-metadata", b"meta"),
        ]));
        let found = scan_layer(layer.as_slice(), 100).unwrap();
        assert_eq!(
            (found.image_references, found.release_metadata),
            (Some(b"refs".to_vec()), Some(b"meta".to_vec()))
        );
    }

    #[test]
    fn a_plain_tar_layer_is_read_too() {
        let layer = tar_of(&[("release-manifests/image-references", b"refs")]);
        let found = scan_layer(layer.as_slice(), 100).unwrap();
        assert_eq!(
            (found.image_references, found.release_metadata),
            (Some(b"refs".to_vec()), None)
        );
    }

    #[test]
    fn a_file_past_the_limit_is_refused_with_its_size() {
        let big = vec![b' '; 101];
        let layer = gzip(&tar_of(&[("release-manifests/image-references", &big)]));
        let err = scan_layer(layer.as_slice(), 100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "release-manifests/image-references is 101 bytes, more than the limit of 100 bytes"
        );
    }

    #[test]
    fn an_upper_whiteout_hides_a_lower_copy() {
        let mut upper = scan_layer(
            tar_of(&[("release-manifests/.wh.image-references", b"")]).as_slice(),
            100,
        )
        .unwrap();
        let lower = scan_layer(
            tar_of(&[
                ("release-manifests/image-references", b"old"),
                ("release-manifests/release-metadata", b"meta"),
            ])
            .as_slice(),
            100,
        )
        .unwrap();
        upper.merge_lower(lower);
        assert_eq!(
            (upper.image_references, upper.release_metadata),
            (None, Some(b"meta".to_vec()))
        );
    }

    #[test]
    fn image_references_give_sorted_digest_components() {
        let text = format!(
            r#"{{"kind":"ImageStream","apiVersion":"image.openshift.io/v1","spec":{{"tags":[
              {{"name":"b","from":{{"kind":"DockerImage","name":"quay.io/ocp/art@{DIGEST}"}}}},
              {{"name":"a","from":{{"kind":"DockerImage","name":"quay.io/ocp/art@{DIGEST}"}}}}]}}}}"#
        );
        let components = parse_image_references(text.as_bytes()).unwrap();
        let names: Vec<(&str, &str)> = components
            .iter()
            .map(|c| (c.name.as_str(), c.reference.as_str()))
            .collect();
        let expected = format!("quay.io/ocp/art@{DIGEST}");
        assert_eq!(names, [("a", expected.as_str()), ("b", expected.as_str())]);
    }

    #[test]
    fn a_component_by_tag_is_an_error_naming_the_tag() {
        let text = r#"{"kind":"ImageStream","apiVersion":"image.openshift.io/v1","spec":{"tags":[
              {"name":"cli","from":{"kind":"DockerImage","name":"quay.io/ocp/cli:4.16"}}]}}"#;
        let err = parse_image_references(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "release-manifests/image-references: tag \"cli\" names \"quay.io/ocp/cli:4.16\", which is not by digest"
        );
    }

    #[test]
    fn image_references_of_another_kind_or_duplicate_tags_are_errors() {
        let wrong_kind = parse_image_references(br#"{"kind":"List","apiVersion":"v1"}"#);
        let dup = format!(
            r#"{{"kind":"ImageStream","apiVersion":"image.openshift.io/v1","spec":{{"tags":[
              {{"name":"a","from":{{"name":"quay.io/x@{DIGEST}"}}}},{{"name":"a","from":{{"name":"quay.io/y@{DIGEST}"}}}}]}}}}"#
        );
        let dup = parse_image_references(dup.as_bytes());
        assert_eq!(
            (
                wrong_kind
                    .unwrap_err()
                    .to_string()
                    .contains("kind \"List\""),
                dup.unwrap_err()
                    .to_string()
                    .contains("tag \"a\" appears twice"),
            ),
            (true, true)
        );
    }

    #[test]
    fn release_metadata_gives_the_version() {
        assert_eq!(
            parse_release_metadata(
                br#"{"kind":"cincinnati-metadata-v0","version":"4.16.0","previous":["4.15.9"]}"#
            )
            .unwrap(),
            "4.16.0"
        );
        assert!(parse_release_metadata(br#"{"kind":"x","version":"1"}"#).is_err());
        assert!(parse_release_metadata(br#"{"kind":"cincinnati-metadata-v0"}"#).is_err());
    }

    #[test]
    fn the_release_label_marks_a_release_config() {
        let release = br#"{"config":{"Labels":{"io.openshift.release":"4.16.0"}}}"#;
        let plain = br#"{"config":{"Labels":{"other":"x"}}}"#;
        assert_eq!(release_label(release).unwrap(), "4.16.0");
        assert!(matches!(
            release_label(plain),
            Err(PayloadError::NotARelease)
        ));
    }
}
