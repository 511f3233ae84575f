//! The sizes manifests declare for what they reference.
//!
//! Every descriptor in a manifest (its config, its layers, the manifests of an index) carries the
//! size of the content it names, and the manifest itself is verified against its digest. So once
//! a manifest has been fetched for a repository, the size of each of its blobs is known before
//! any upstream is asked for them, and an upstream that announces or sends another number of
//! bytes is not serving that blob: it is refused at once, instead of after its bytes have filled
//! the disk and failed the digest (or never ended at all).
//!
//! A manifest also vouches that its repository holds what it references: a registry accepts a
//! manifest into a repository only once every blob and child manifest it names is in that
//! repository (the Distribution registry checks each descriptor on a manifest push; foreign
//! layers, which carry `urls` and live elsewhere, excepted). So content a confirmed manifest of
//! the repository declares may be served from the caches for that repository without asking an
//! upstream to confirm the pair again — a pull costs one confirmation, its manifest's, not one
//! per blob.
//!
//! Sizes are kept per repository and digest, as the manifests of that repository declare them,
//! so that a manifest in one repository cannot make another's pulls fail. The map is bounded
//! and in memory: after a restart the first pull of a blob is checked against the length the
//! upstream announces only, which the digest check still backs.

use std::sync::Mutex;

use serde::Deserialize;

use super::content_key::ContentKey;
use super::lru::Lru;
use crate::reference::Digest;

/// How many (repository, digest) sizes are remembered; each costs about 150 bytes.
const CAPACITY: u64 = 200_000;

/// The descriptor sizes learnt from manifests.
pub(crate) struct DescriptorSizes {
    sizes: Mutex<Lru<ContentKey, Declared>>,
}

/// What a repository's manifests declare of one descriptor.
#[derive(Clone, Copy)]
struct Declared {
    size: u64,
    /// The repository holds it (not a foreign layer fetched from its `urls`).
    held: bool,
}

/// The parts of a manifest or index that hold descriptors (image manifest: config and layers;
/// index: manifests; artifact manifest: blobs).
#[derive(Deserialize)]
struct Descriptors {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    blobs: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Vec<String>,
}

impl DescriptorSizes {
    /// An empty map.
    pub(crate) fn new() -> DescriptorSizes {
        DescriptorSizes {
            sizes: Mutex::new(Lru::new(CAPACITY)),
        }
    }

    /// Records the descriptors of `manifest`, a verified manifest an upstream served or
    /// confirmed for `repository`. A manifest that is not JSON of the known shapes declares
    /// nothing.
    pub(crate) fn learn(&self, repository: &str, manifest: &[u8]) {
        let Ok(parsed) = serde_json::from_slice::<Descriptors>(manifest) else {
            return;
        };
        let descriptors = parsed
            .config
            .iter()
            .chain(&parsed.layers)
            .chain(&parsed.manifests)
            .chain(&parsed.blobs)
            .filter(|d| d.digest.parse::<Digest>().is_ok());
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        for descriptor in descriptors {
            let declared = Declared {
                size: descriptor.size,
                held: descriptor.urls.is_empty(),
            };
            sizes.insert(
                ContentKey::new(repository, &descriptor.digest),
                declared,
                1,
                |_, _| false,
            );
        }
    }

    /// The size the manifests of `repository` declare for `digest`, if one was learnt.
    pub(crate) fn get(&self, repository: &str, digest: &Digest) -> Option<u64> {
        self.declared(repository, digest.as_str())
            .map(|declared| declared.size)
    }

    /// Whether a confirmed manifest of `repository` vouches that it holds `digest`, of `len`
    /// bytes when that is known (content of another length is not what the manifest named).
    pub(crate) fn vouches(&self, repository: &str, digest: &str, len: Option<u64>) -> bool {
        self.declared(repository, digest)
            .is_some_and(|declared| declared.held && len.is_none_or(|len| len == declared.size))
    }

    fn declared(&self, repository: &str, digest: &str) -> Option<Declared> {
        let key = ContentKey::new(repository, digest);
        self.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
    }
}

/// Why an upstream answer is not the content a descriptor names, if it is not: it announces
/// another length than the descriptor's `expected` size.
pub(crate) fn size_mismatch(expected: Option<u64>, announced: Option<u64>) -> Option<String> {
    match (expected, announced) {
        (Some(expected), Some(announced)) if expected != announced => Some(format!(
            "announced {announced} bytes where the manifest says {expected}"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const CONFIG: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{CONFIG}","size":12}},"layers":[{{"mediaType":"y","digest":"{LAYER}","size":3456}}]}}"#
        )
    }

    #[test]
    fn sizes_of_config_and_layers_are_learnt_for_the_repository() {
        let sizes = DescriptorSizes::new();
        sizes.learn("quay.io/ns/app", manifest().as_bytes());
        let layer: Digest = LAYER.parse().unwrap();
        let config: Digest = CONFIG.parse().unwrap();
        assert_eq!(
            (
                sizes.get("quay.io/ns/app", &layer),
                sizes.get("quay.io/ns/app", &config),
                sizes.get("quay.io/other/app", &layer)
            ),
            (Some(3456), Some(12), None)
        );
    }

    #[test]
    fn a_manifest_vouches_for_what_its_repository_holds_at_the_declared_size() {
        let sizes = DescriptorSizes::new();
        sizes.learn("quay.io/ns/app", manifest().as_bytes());
        assert_eq!(
            (
                sizes.vouches("quay.io/ns/app", LAYER, Some(3456)),
                sizes.vouches("quay.io/ns/app", CONFIG, None),
                sizes.vouches("quay.io/ns/app", LAYER, Some(3457)),
                sizes.vouches("quay.io/other/app", LAYER, Some(3456)),
            ),
            (true, true, false, false)
        );
    }

    #[test]
    fn a_foreign_layer_is_declared_but_not_vouched_for() {
        let sizes = DescriptorSizes::new();
        let manifest = format!(
            r#"{{"schemaVersion":2,"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{LAYER}","size":3456,"urls":["https://example.com/layer"]}}]}}"#
        );
        sizes.learn("quay.io/ns/app", manifest.as_bytes());
        let layer: Digest = LAYER.parse().unwrap();
        assert_eq!(
            (
                sizes.get("quay.io/ns/app", &layer),
                sizes.vouches("quay.io/ns/app", LAYER, Some(3456))
            ),
            (Some(3456), false)
        );
    }

    #[test]
    fn what_is_not_a_manifest_declares_nothing() {
        let sizes = DescriptorSizes::new();
        sizes.learn("quay.io/ns/app", b"not json");
        sizes.learn(
            "quay.io/ns/app",
            br#"{"layers":[{"digest":"nope","size":1}]}"#,
        );
        assert_eq!(sizes.sizes.lock().unwrap().len(), 0);
    }

    #[test]
    fn a_length_other_than_the_descriptor_is_a_mismatch() {
        assert_eq!(
            [
                size_mismatch(Some(10), Some(11)).is_some(),
                size_mismatch(Some(10), Some(10)).is_some(),
                size_mismatch(None, Some(10)).is_some(),
                size_mismatch(Some(10), None).is_some(),
            ],
            [true, false, false, false]
        );
    }
}
