//! A synthetic OpenShift release payload, built in Rust and pushed to a real registry.
//!
//! [`SyntheticRelease::push`] writes one OCI layout holding every image of the release and pushes
//! them with `skopeo`:
//! - components under `<registry>/openshift-release-dev/ocp-v4.0-art-dev`, each with a base layer
//!   shared by all components, a layer shared by every other component, and a layer of its own
//!   (with [`ReleaseSpec::multi_arch`], each component is an index over linux/amd64 and
//!   linux/arm64, with per-architecture layers shared the same way);
//! - the release image under `<registry>/openshift-release-dev/ocp-release`: the shared base
//!   layer, and a layer holding `release-manifests/image-references` (an ImageStream naming the
//!   components by digest, under the logical registry name [`ReleaseSpec::source_name`]),
//!   `release-manifests/release-metadata` and a manifest file; its config is labelled
//!   `io.openshift.release`. Multi-arch: an index over one such payload per architecture.
//!
//! The builder records what it generated, so tests compare a walk's findings with what was
//! built ([`SyntheticRelease::expected_blobs`]), never with the walk's own output.
//!
//! [`RegistryFetcher`] implements `mirrorgate::release::Fetcher` with plain HTTP against
//! registries, mapping logical registry names (`quay.io`) to test endpoints.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures_util::TryStreamExt;
use mirrorgate::reference::{Digest, Reference};
use mirrorgate::release::{self, BlobReader, FetchedManifest, Fetcher};
use serde_json::json;
use tempfile::TempDir;

use super::image::{
    CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, check,
    new_layout, pseudo_random, sha256_digest, skopeo, write_blob,
};
use super::registry::Registry;

/// The repository of the components, as in real releases.
pub const COMPONENT_REPOSITORY: &str = "openshift-release-dev/ocp-v4.0-art-dev";
/// The repository of the release image.
pub const RELEASE_REPOSITORY: &str = "openshift-release-dev/ocp-release";

/// What to build.
#[derive(Debug, Clone)]
pub struct ReleaseSpec {
    /// The release version (label, release-metadata, tag).
    pub version: String,
    /// How many component images.
    pub components: usize,
    /// Components and release as indexes over linux/amd64 and linux/arm64.
    pub multi_arch: bool,
    /// The registry name written in pull specs (`quay.io`); the fetcher maps it to the registry.
    pub source_name: String,
    /// Whether the release layer holds `release-manifests/image-references` and
    /// `release-metadata` (false: a layer with other files only).
    pub release_manifests: bool,
    /// Whether the config carries `io.openshift.release`.
    pub release_label: bool,
    /// Extra `(tag, pull spec)` entries of image-references, written as given.
    pub extra_tags: Vec<(String, String)>,
    /// Bytes added to each component's own layer (0: a few KiB each).
    pub own_layer_extra: usize,
}

impl ReleaseSpec {
    /// A good single-arch release of `components` components.
    pub fn new(version: &str, components: usize) -> ReleaseSpec {
        ReleaseSpec {
            version: version.to_owned(),
            components,
            multi_arch: false,
            source_name: "quay.io".to_owned(),
            release_manifests: true,
            release_label: true,
            extra_tags: Vec::new(),
            own_layer_extra: 0,
        }
    }
}

/// One generated image manifest: its digest, size and blobs (digest → size).
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `linux/amd64`, `linux/arm64`.
    pub platform: String,
    /// The manifest's digest.
    pub digest: String,
    /// Config and layers, digest → size.
    pub blobs: BTreeMap<String, u64>,
}

/// One component as built.
#[derive(Debug, Clone)]
pub struct BuiltComponent {
    /// Its tag name in image-references.
    pub name: String,
    /// Its pull spec by digest (`<source_name>/openshift-release-dev/ocp-v4.0-art-dev@sha256:…`).
    pub pull_spec: String,
    /// The top manifest's digest (an index when multi-arch).
    pub digest: String,
    /// Its image manifests, one per platform.
    pub images: Vec<BuiltImage>,
}

/// A release pushed to a registry.
pub struct SyntheticRelease {
    /// The spec it was built from.
    pub spec: ReleaseSpec,
    /// The release's pull spec by tag (`<source_name>/openshift-release-dev/ocp-release:<version>-…`).
    pub pull_spec: String,
    /// The top manifest's digest.
    pub digest: String,
    /// The payload image manifests, one per platform.
    pub payloads: Vec<BuiltImage>,
    /// The components.
    pub components: Vec<BuiltComponent>,
    /// The bytes of image-references as written.
    pub image_references: Vec<u8>,
    _layout: TempDir,
}

impl SyntheticRelease {
    /// Builds the release of `spec` and pushes every image to `registry`.
    pub fn push(registry: &Registry, spec: ReleaseSpec) -> SyntheticRelease {
        let layout = new_layout();
        let arches: &[&str] = if spec.multi_arch {
            &["amd64", "arm64"]
        } else {
            &["amd64"]
        };
        let mut refs = Vec::new();
        let mut components = Vec::new();
        for i in 0..spec.components {
            let name = format!("component-{i:02}");
            let images: Vec<(BuiltImage, usize)> = arches
                .iter()
                .map(|arch| {
                    let mut layers = vec![
                        layer_of_bytes(&format!("base/{arch}"), 64 * 1024),
                        layer_of_bytes(
                            &format!("own/{name}/{arch}"),
                            2048 + 512 * i + spec.own_layer_extra,
                        ),
                    ];
                    if i % 2 == 0 {
                        layers.insert(1, layer_of_bytes(&format!("even/{arch}"), 16 * 1024));
                    }
                    write_image(layout.path(), arch, &name, &BTreeMap::new(), &layers)
                })
                .collect();
            let (digest, media_type, size) = top_of(layout.path(), &images, spec.multi_arch);
            refs.push((name.clone(), digest.clone(), media_type, size));
            components.push(BuiltComponent {
                pull_spec: format!("{}/{COMPONENT_REPOSITORY}@{digest}", spec.source_name),
                name,
                digest,
                images: images.into_iter().map(|(image, _)| image).collect(),
            });
        }

        let mut tags: Vec<serde_json::Value> = components
            .iter()
            .map(|c| tag_json(&c.name, &c.pull_spec))
            .collect();
        tags.extend(spec.extra_tags.iter().map(|(n, p)| tag_json(n, p)));
        let image_references = serde_json::to_vec_pretty(&json!({
            "kind": "ImageStream",
            "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": spec.version, "creationTimestamp": null},
            "spec": {"lookupPolicy": {"local": false}, "tags": tags},
            "status": {"dockerImageRepository": ""},
        }))
        .expect("image-references JSON");
        let metadata = serde_json::to_vec(&json!({
            "kind": "cincinnati-metadata-v0",
            "version": spec.version,
            "previous": ["4.0.0-prev"],
            "metadata": {"url": "https://example.com/errata"},
        }))
        .expect("release-metadata JSON");
        let mut files: Vec<(&str, &[u8])> = vec![(
            "release-manifests/0000_00_cluster-version-operator_00_namespace.yaml",
            b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: openshift-cluster-version\n",
        )];
        if spec.release_manifests {
            files.push(("release-manifests/image-references", &image_references));
            files.push(("release-manifests/release-metadata", &metadata));
        }
        let mut labels = BTreeMap::new();
        if spec.release_label {
            labels.insert("io.openshift.release".to_owned(), spec.version.clone());
        }
        let payloads: Vec<(BuiltImage, usize)> = arches
            .iter()
            .map(|arch| {
                let layers = vec![
                    layer_of_bytes(&format!("base/{arch}"), 64 * 1024),
                    layer_of_files(&files),
                ];
                write_image(layout.path(), arch, "release", &labels, &layers)
            })
            .collect();
        let (digest, media_type, size) = top_of(layout.path(), &payloads, spec.multi_arch);
        let release_tag = if spec.multi_arch {
            format!("{}-multi", spec.version)
        } else {
            format!("{}-x86_64", spec.version)
        };
        refs.push(("release".to_owned(), digest.clone(), media_type, size));
        write_index(layout.path(), &refs);

        for component in &components {
            push_ref(
                layout.path(),
                &component.name,
                &format!(
                    "{}/{COMPONENT_REPOSITORY}:{}",
                    registry.addr(),
                    component.name
                ),
            );
        }
        push_ref(
            layout.path(),
            "release",
            &format!("{}/{RELEASE_REPOSITORY}:{release_tag}", registry.addr()),
        );
        SyntheticRelease {
            pull_spec: format!("{}/{RELEASE_REPOSITORY}:{release_tag}", spec.source_name),
            spec,
            digest,
            payloads: payloads.into_iter().map(|(image, _)| image).collect(),
            components,
            image_references,
            _layout: layout,
        }
    }

    /// Pushes the same images to `registry` (a mirror): components under `component_repository`
    /// (each by its name as tag), the release under `release_repository` (by its tag); `None`
    /// pushes none of them.
    pub fn push_to(
        &self,
        registry: &Registry,
        component_repository: Option<&str>,
        release_repository: Option<&str>,
    ) {
        let components = component_repository.map_or(&[][..], |_| &self.components[..]);
        let component_repository = component_repository.unwrap_or_default();
        for component in components {
            push_ref(
                self._layout.path(),
                &component.name,
                &format!(
                    "{}/{component_repository}:{}",
                    registry.addr(),
                    component.name
                ),
            );
        }
        if let Some(repository) = release_repository {
            push_ref(
                self._layout.path(),
                "release",
                &format!("{}/{repository}:{}", registry.addr(), self.release_tag()),
            );
        }
    }

    /// The release's tag (`<version>-x86_64`, `<version>-multi`).
    pub fn release_tag(&self) -> &str {
        self.pull_spec.rsplit_once(':').map_or("", |(_, tag)| tag)
    }

    /// What `--dry-run` prints for this single-architecture release (amd64) when the rules mirror
    /// the release to `release_mirror` and the components to `components_mirror` (repositories
    /// with their registry), the source allowed after each.
    pub fn expected_dry_run(&self, release_mirror: &str, components_mirror: &str) -> String {
        assert!(
            !self.spec.multi_arch,
            "the expected text is a single-architecture one"
        );
        let repository = self
            .pull_spec
            .rsplit_once(':')
            .map_or(self.pull_spec.as_str(), |(repository, _)| repository);
        let tag = self.release_tag();
        let digest = &self.digest;
        let mut expected = format!(
            "release {repository}:{tag} ({digest})\nversion {version}\narchitectures amd64\n  source {repository}:{tag}\npayload {repository}@{digest}\n  mirror {release_mirror}@{digest}\n  source {repository}@{digest}\ncomponents {count}\n",
            version = self.spec.version,
            count = self.components.len(),
        );
        for component in &self.components {
            expected.push_str(&format!(
                "  {name} {spec}\n    mirror {components_mirror}@{digest}\n    source {spec}\n",
                name = component.name,
                spec = component.pull_spec,
                digest = component.digest
            ));
        }
        let blobs = self.expected_blobs(None);
        expected.push_str(&format!(
            "manifests {}\nunique blobs {} ({})\n",
            self.components.len() + 1,
            blobs.len(),
            mirrorgate::config::ByteSize(blobs.values().sum()).human()
        ));
        expected
    }

    /// Every blob (digest → size) of the release's payloads and components on the given
    /// architectures (`None`: all).
    pub fn expected_blobs(&self, architectures: Option<&[&str]>) -> BTreeMap<String, u64> {
        let keep = |image: &BuiltImage| {
            architectures.is_none_or(|arches| {
                arches
                    .iter()
                    .any(|a| image.platform == format!("linux/{a}"))
            })
        };
        self.payloads
            .iter()
            .chain(self.components.iter().flat_map(|c| &c.images))
            .filter(|image| keep(image))
            .flat_map(|image| image.blobs.clone())
            .collect()
    }

    /// The sum of every image's blob sizes (what copying each image separately would move).
    pub fn total_image_bytes(&self) -> u64 {
        self.payloads
            .iter()
            .chain(self.components.iter().flat_map(|c| &c.images))
            .flat_map(|image| image.blobs.values())
            .sum()
    }
}

fn tag_json(name: &str, pull_spec: &str) -> serde_json::Value {
    json!({
        "name": name,
        "annotations": {"io.openshift.build.source-location": "https://example.com/src"},
        "from": {"kind": "DockerImage", "name": pull_spec},
        "generation": null,
        "importPolicy": {},
        "referencePolicy": {"type": "Source"},
    })
}

/// A gzip'd tar layer: (compressed bytes, diff_id).
struct Layer {
    compressed: Vec<u8>,
    diff_id: String,
}

fn layer_of_bytes(label: &str, size: usize) -> Layer {
    let content = pseudo_random(label, size);
    let path = format!("data/{}.bin", &sha256_digest(label.as_bytes())[7..23]);
    layer_of_files(&[(path.as_str(), content.as_slice())])
}

fn layer_of_files(files: &[(&str, &[u8])]) -> Layer {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).expect("tar path");
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *bytes).expect("tar append");
    }
    let tar = builder.into_inner().expect("tar finish");
    let diff_id = sha256_digest(&tar);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).expect("gzip");
    Layer {
        compressed: gz.finish().expect("gzip finish"),
        diff_id,
    }
}

/// Writes config and layers of one platform's image; returns it with its manifest's size.
fn write_image(
    layout: &Path,
    arch: &str,
    title: &str,
    labels: &BTreeMap<String, String>,
    layers: &[Layer],
) -> (BuiltImage, usize) {
    let mut blobs = BTreeMap::new();
    let mut descriptors = Vec::new();
    for layer in layers {
        let blob = write_blob(layout, layer.compressed.clone());
        descriptors.push(json!({
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": blob.digest,
            "size": blob.bytes.len(),
        }));
        blobs.insert(blob.digest, blob.bytes.len() as u64);
    }
    let mut all_labels = labels.clone();
    all_labels.insert(
        "org.opencontainers.image.title".to_owned(),
        title.to_owned(),
    );
    let config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Labels": all_labels},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let config = write_blob(layout, serde_json::to_vec(&config).expect("config JSON"));
    blobs.insert(config.digest.clone(), config.bytes.len() as u64);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.digest, "size": config.bytes.len()},
        "layers": descriptors,
    });
    let manifest = write_blob(
        layout,
        serde_json::to_vec(&manifest).expect("manifest JSON"),
    );
    (
        BuiltImage {
            platform: format!("linux/{arch}"),
            digest: manifest.digest,
            blobs,
        },
        manifest.bytes.len(),
    )
}

/// The top manifest of one image: the single image, or an index over the platforms.
fn top_of(
    layout: &Path,
    images: &[(BuiltImage, usize)],
    multi_arch: bool,
) -> (String, &'static str, usize) {
    if !multi_arch {
        let (image, size) = &images[0];
        return (image.digest.clone(), OCI_MANIFEST_MEDIA_TYPE, *size);
    }
    let entries: Vec<serde_json::Value> = images
        .iter()
        .map(|(image, size)| {
            let arch = image.platform.trim_start_matches("linux/");
            json!({
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "digest": image.digest,
                "size": size,
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    let index =
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": entries});
    let index = write_blob(layout, serde_json::to_vec(&index).expect("index JSON"));
    (index.digest, OCI_INDEX_MEDIA_TYPE, index.bytes.len())
}

/// `index.json` naming every top manifest by its ref name.
fn write_index(layout: &Path, refs: &[(String, String, &'static str, usize)]) {
    let manifests: Vec<serde_json::Value> = refs
        .iter()
        .map(|(name, digest, media_type, size)| {
            json!({
                "mediaType": media_type,
                "digest": digest,
                "size": size,
                "annotations": {"org.opencontainers.image.ref.name": name},
            })
        })
        .collect();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).expect("JSON"),
    )
    .expect("write index.json");
}

fn push_ref(layout: &Path, name: &str, dest: &str) {
    let src = format!("oci:{}:{name}", layout.display());
    let dest = format!("docker://{dest}");
    let args = [
        "copy",
        "--all",
        "--preserve-digests",
        "--quiet",
        "--dest-tls-verify=false",
        &src,
        &dest,
    ];
    check(&skopeo(&args), &format!("skopeo copy {src} {dest}"));
}

/// A `Fetcher` over plain HTTP to registries, with logical registry names mapped to test
/// endpoints. Records every request path it made.
pub struct RegistryFetcher {
    client: reqwest::Client,
    endpoints: HashMap<String, String>,
    /// `manifests/<ref>` and `blobs/<digest>` paths requested, in order.
    pub requests: Mutex<Vec<String>>,
}

impl RegistryFetcher {
    /// A fetcher sending requests for registry `name` to `endpoint` (`http://127.0.0.1:PORT`).
    pub fn new(endpoints: &[(&str, &str)]) -> RegistryFetcher {
        let _ = rustls::crypto::ring::default_provider().install_default();
        RegistryFetcher {
            client: reqwest::Client::builder().build().expect("reqwest client"),
            endpoints: endpoints
                .iter()
                .map(|(n, e)| (n.to_string(), e.to_string()))
                .collect(),
            requests: Mutex::new(Vec::new()),
        }
    }

    fn url(&self, reference: &Reference, tail: &str) -> io::Result<String> {
        let endpoint = self.endpoints.get(reference.domain()).ok_or_else(|| {
            io::Error::other(format!("no endpoint for registry {}", reference.domain()))
        })?;
        self.requests
            .lock()
            .unwrap()
            .push(format!("{}/{tail}", reference.path()));
        Ok(format!("{endpoint}/v2/{}/{tail}", reference.path()))
    }

    async fn get(&self, url: &str, accept: Option<&str>) -> io::Result<reqwest::Response> {
        let mut request = self.client.get(url);
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let response = request.send().await.map_err(io::Error::other)?;
        if !response.status().is_success() {
            return Err(io::Error::other(format!(
                "GET {url}: HTTP {}",
                response.status()
            )));
        }
        Ok(response)
    }
}

impl Fetcher for RegistryFetcher {
    type Error = io::Error;

    async fn manifest(&self, reference: &Reference) -> io::Result<FetchedManifest> {
        let tag_or_digest = reference
            .digest_str()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let url = self.url(reference, &format!("manifests/{tag_or_digest}"))?;
        let response = self.get(&url, Some(release::ACCEPT)).await?;
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes: Bytes = response.bytes().await.map_err(io::Error::other)?;
        Ok(FetchedManifest { bytes, media_type })
    }

    async fn blob(&self, repository: &Reference, digest: &Digest) -> io::Result<BlobReader> {
        let url = self.url(repository, &format!("blobs/{digest}"))?;
        let response = self.get(&url, None).await?;
        let stream = response.bytes_stream().map_err(io::Error::other);
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }
}
