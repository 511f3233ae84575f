//! Images generated in Rust as OCI image layouts, and `skopeo` as the real client.
//!
//! A layer is a gzip'd tar holding one file of deterministic pseudo-random bytes derived from
//! the image's seed, the platform and the layer's index: the same arguments always give the same
//! digests, and distinct seeds give distinct ones.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::process::hex;

/// Media type of the generated layers.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of the generated image configs.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a single-platform image manifest.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a multi-platform image index.
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of a Docker schema 2 image manifest.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The `Accept` of containers/image (skopeo, podman, CRI-O): every manifest type.
pub const CONTAINERS_IMAGE_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws, application/vnd.docker.distribution.manifest.v1+json";
/// The `org.opencontainers.image.ref.name` of the top manifest in the layout's `index.json`.
pub const LAYOUT_REF: &str = "latest";
/// Bound on one `skopeo` invocation, so that a hung pull fails the test instead of hanging it.
const SKOPEO_TIMEOUT: &str = "120s";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// A generated image, stored as an OCI image layout in a temporary directory.
#[derive(Debug)]
pub struct Image {
    /// The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`).
    pub layout: TempDir,
    /// Digest of the top manifest: the image manifest, or for multi-arch the image index.
    pub manifest_digest: String,
    /// Media type of the top manifest ([`OCI_MANIFEST_MEDIA_TYPE`] or [`OCI_INDEX_MEDIA_TYPE`]).
    pub media_type: &'static str,
    /// The exact bytes of the top manifest or index.
    pub manifest_bytes: Vec<u8>,
    /// Per-platform image manifest digests (single-arch: just [`Image::manifest_digest`]).
    pub manifests: Vec<String>,
    /// Platforms of [`Image::manifests`], as `os/architecture` (`linux/amd64`, `linux/arm64`).
    pub platforms: Vec<String>,
    /// Config digests, one per platform, in the order of [`Image::manifests`].
    pub configs: Vec<String>,
    /// Layer digests of every platform, in manifest order.
    pub layers: Vec<String>,
    /// Config and layer digests of every platform (everything but manifests).
    pub blobs: Vec<String>,
}

impl Image {
    /// The layout directory.
    pub fn path(&self) -> &Path {
        self.layout.path()
    }

    /// The skopeo reference of the top manifest: `oci:<layout>:latest`.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{LAYOUT_REF}", self.path().display())
    }

    /// The bytes of a blob or manifest of the image, by digest.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let path = self.blob_path(digest);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Where the layout stores a blob or manifest.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest:?}"));
        self.path().join("blobs/sha256").join(hex)
    }

    /// The per-platform image manifest for `os/architecture` (e.g. `linux/arm64`).
    pub fn manifest_for(&self, platform: &str) -> &str {
        let i = self
            .platforms
            .iter()
            .position(|p| p == platform)
            .unwrap_or_else(|| panic!("no platform {platform:?} in {:?}", self.platforms));
        &self.manifests[i]
    }
}

/// A single-platform (linux/amd64) image with one layer per entry of `layer_sizes` (the size of
/// the file in each layer, in bytes). The same arguments give the same digests; another seed,
/// or [`multi_arch`] with the same seed, shares no blob or manifest with it.
pub fn single_arch(name_seed: &str, layer_sizes: &[usize]) -> Image {
    let layout = new_layout();
    let seed = format!("single/{name_seed}");
    let platform = write_platform(layout.path(), &seed, "amd64", None, layer_sizes);
    let top = Descriptor {
        media_type: OCI_MANIFEST_MEDIA_TYPE,
        digest: platform.manifest.digest.clone(),
        size: platform.manifest.bytes.len(),
    };
    write_index_json(layout.path(), &top);
    Image {
        manifest_digest: top.digest,
        media_type: OCI_MANIFEST_MEDIA_TYPE,
        manifest_bytes: platform.manifest.bytes.clone(),
        manifests: vec![platform.manifest.digest.clone()],
        platforms: vec!["linux/amd64".to_owned()],
        configs: vec![platform.config.clone()],
        blobs: platform.blobs(),
        layers: platform.layers,
        layout,
    }
}

/// A multi-platform image: an OCI image index over linux/amd64 and linux/arm64 (v8) manifests,
/// each with its own config and its own distinct layers of `layer_sizes`.
pub fn multi_arch(name_seed: &str, layer_sizes: &[usize]) -> Image {
    let layout = new_layout();
    let seed = format!("multi/{name_seed}");
    let platforms = [
        write_platform(layout.path(), &seed, "amd64", None, layer_sizes),
        write_platform(layout.path(), &seed, "arm64", Some("v8"), layer_sizes),
    ];
    let entries: Vec<serde_json::Value> = platforms
        .iter()
        .map(|p| {
            let mut platform = json!({"architecture": p.architecture, "os": "linux"});
            if let Some(variant) = p.variant {
                platform["variant"] = json!(variant);
            }
            json!({
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "digest": p.manifest.digest,
                "size": p.manifest.bytes.len(),
                "platform": platform,
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": entries,
    });
    let index = write_blob(
        layout.path(),
        serde_json::to_vec(&index).expect("index JSON"),
    );
    let top = Descriptor {
        media_type: OCI_INDEX_MEDIA_TYPE,
        digest: index.digest.clone(),
        size: index.bytes.len(),
    };
    write_index_json(layout.path(), &top);
    Image {
        manifest_digest: index.digest,
        media_type: OCI_INDEX_MEDIA_TYPE,
        manifest_bytes: index.bytes,
        manifests: platforms
            .iter()
            .map(|p| p.manifest.digest.clone())
            .collect(),
        platforms: platforms
            .iter()
            .map(|p| format!("linux/{}", p.architecture))
            .collect(),
        configs: platforms.iter().map(|p| p.config.clone()).collect(),
        layers: platforms.iter().flat_map(|p| p.layers.clone()).collect(),
        blobs: platforms.iter().flat_map(|p| p.blobs()).collect(),
        layout,
    }
}

pub(super) struct Blob {
    pub(super) digest: String,
    pub(super) bytes: Vec<u8>,
}

struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: usize,
}

struct Platform {
    architecture: &'static str,
    variant: Option<&'static str>,
    manifest: Blob,
    config: String,
    layers: Vec<String>,
}

impl Platform {
    fn blobs(&self) -> Vec<String> {
        let mut blobs = vec![self.config.clone()];
        blobs.extend(self.layers.iter().cloned());
        blobs
    }
}

pub(super) fn new_layout() -> TempDir {
    let layout = tempfile::Builder::new()
        .prefix("oci-layout-")
        .tempdir()
        .expect("tempdir");
    fs::create_dir_all(layout.path().join("blobs/sha256")).expect("create blobs dir");
    fs::write(
        layout.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    layout
}

/// Stores `bytes` under `blobs/sha256/<hex>` and returns them with their digest.
pub(super) fn write_blob(layout: &Path, bytes: Vec<u8>) -> Blob {
    let digest = sha256_digest(&bytes);
    let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    Blob { digest, bytes }
}

/// `index.json` naming the top manifest as [`LAYOUT_REF`], which is how skopeo's `oci:` transport
/// finds `oci:<dir>:<ref>`.
fn write_index_json(layout: &Path, top: &Descriptor) {
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": top.media_type,
            "digest": top.digest,
            "size": top.size,
            "annotations": {"org.opencontainers.image.ref.name": LAYOUT_REF},
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index.json"),
    )
    .expect("write index.json");
}

/// `len` deterministic pseudo-random bytes for `label` (SHA-256 in counter mode).
pub(super) fn pseudo_random(label: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter: u64 = 0;
    while out.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(label.as_bytes());
        hasher.update(counter.to_le_bytes());
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// One layer: (compressed blob, diff_id of the uncompressed tar).
fn make_layer(label: &str, size: usize) -> (Vec<u8>, String) {
    let content = pseudo_random(label, size);
    let name = format!("data/{}.bin", &sha256_digest(label.as_bytes())[7..23]);
    let mut header = tar::Header::new_ustar();
    header.set_path(&name).expect("tar path");
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(&header, content.as_slice())
        .expect("tar append");
    let tar = builder.into_inner().expect("tar finish");
    let diff_id = sha256_digest(&tar);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip finish"), diff_id)
}

fn write_platform(
    layout: &Path,
    seed: &str,
    architecture: &'static str,
    variant: Option<&'static str>,
    layer_sizes: &[usize],
) -> Platform {
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for (i, &size) in layer_sizes.iter().enumerate() {
        let label = format!("{seed}/linux/{architecture}/layer-{i}");
        let (compressed, diff_id) = make_layer(&label, size);
        let blob = write_blob(layout, compressed);
        descriptors.push(json!({
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": blob.digest,
            "size": blob.bytes.len(),
        }));
        history.push(json!({
            "created": "1970-01-01T00:00:00Z",
            "created_by": format!("mirrorgate-tests {label}"),
        }));
        diff_ids.push(diff_id);
        layers.push(blob.digest);
    }
    let mut config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": {"org.opencontainers.image.title": seed},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    if let Some(variant) = variant {
        config["variant"] = json!(variant);
    }
    let config = write_blob(layout, serde_json::to_vec(&config).expect("config JSON"));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config.digest,
            "size": config.bytes.len(),
        },
        "layers": descriptors,
    });
    let manifest = write_blob(
        layout,
        serde_json::to_vec(&manifest).expect("manifest JSON"),
    );
    Platform {
        architecture,
        variant,
        manifest,
        config: config.digest,
        layers,
    }
}

/// Runs `skopeo --insecure-policy --command-timeout 120s <args>` and returns its output,
/// whatever the exit status.
pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(["--insecure-policy", "--command-timeout", SKOPEO_TIMEOUT])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("run skopeo (is it installed? scripts/test.sh installs it): {e}")
        })
}

pub(super) fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Pushes every manifest and blob of `image`, digests unchanged, to `dest`
/// (`127.0.0.1:PORT/ns/app:v1`, plain http); panics with skopeo's output on failure.
pub fn push(image: &Image, dest: &str) {
    push_args(image, dest, &["--preserve-digests"]);
}

/// [`push`] with the manifests converted to `format` (skopeo's `--format`: `v2s2`, `oci`): their
/// digests change with their type, so a test asks the registry for them.
pub fn push_as(image: &Image, dest: &str, format: &str) {
    push_args(image, dest, &["--format", format]);
}

/// [`push`] to a registry that requires basic auth.
pub fn push_with_creds(image: &Image, dest: &str, user: &str, password: &str) {
    let creds = format!("{user}:{password}");
    push_args(image, dest, &["--preserve-digests", "--dest-creds", &creds]);
}

fn push_args(image: &Image, dest: &str, extra: &[&str]) {
    let src = image.oci_ref();
    let dest_ref = format!("docker://{dest}");
    let mut args = vec!["copy", "--all", "--quiet", "--dest-tls-verify=false"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[&src, &dest_ref]);
    check(&skopeo(&args), &format!("skopeo copy {src} {dest_ref}"));
}

/// `skopeo copy --all --src-tls-verify=false <extra_args> docker://<src_docker_ref> oci:<dest_dir>`
/// (the output is returned, not checked: a test may expect a failure).
pub fn copy_to_layout(src_docker_ref: &str, dest_dir: &Path, extra_args: &[&str]) -> Output {
    let src = format!("docker://{src_docker_ref}");
    let dest = format!("oci:{}", dest_dir.display());
    let mut args = vec!["copy", "--all", "--quiet", "--src-tls-verify=false"];
    args.extend_from_slice(extra_args);
    args.extend_from_slice(&[&src, &dest]);
    skopeo(&args)
}

/// Whether two directories hold the same files (relative paths) with the same bytes; `Err`
/// lists the differences.
pub fn layouts_identical(a: &Path, b: &Path) -> Result<(), String> {
    let files_a = list_files(a)?;
    let files_b = list_files(b)?;
    let mut problems = Vec::new();
    for only in files_a.difference(&files_b) {
        problems.push(format!("only in {}: {}", a.display(), only.display()));
    }
    for only in files_b.difference(&files_a) {
        problems.push(format!("only in {}: {}", b.display(), only.display()));
    }
    for path in files_a.intersection(&files_b) {
        let bytes_a =
            fs::read(a.join(path)).map_err(|e| format!("read {}: {e}", path.display()))?;
        let bytes_b =
            fs::read(b.join(path)).map_err(|e| format!("read {}: {e}", path.display()))?;
        if bytes_a != bytes_b {
            problems.push(format!(
                "{} differs ({} vs {} bytes)",
                path.display(),
                bytes_a.len(),
                bytes_b.len()
            ));
        }
    }
    if files_a.is_empty() {
        problems.push(format!("{} holds no files", a.display()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Every regular file under `root`, as paths relative to it.
fn list_files(root: &Path) -> Result<BTreeSet<PathBuf>, String> {
    let mut files = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| format!("stat {}: {e}", path.display()))?;
            if kind.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root").to_path_buf();
                files.insert(relative);
            }
        }
    }
    Ok(files)
}
