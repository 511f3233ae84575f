//! A release's plan: what warming it means — its version, its components, every manifest to
//! fetch, and the unique blob set with sizes — built from manifests as they are fetched, with no
//! I/O of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::reference::{Digest, Reference};
use crate::rules::RuleSet;
use crate::section::values::ByteSize;

use super::ReleaseError;
use super::manifest::{Descriptor, Manifest, Platform, PlatformFilter};
use super::payload::Component;

/// One selected payload image of the release (the release itself when it is single-arch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// `repository@digest` of the payload's image manifest.
    pub reference: Reference,
    /// Its platform in the release's index; `None` for a single-arch release.
    pub platform: Option<Platform>,
    /// The value of its `io.openshift.release` label.
    pub label: String,
}

/// A manifest the warm-up fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// `repository@digest`.
    pub reference: Reference,
    /// Its media type: the `Content-Type` given, else the document's `mediaType`, else its shape.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A blob the warm-up fetches: its size and every repository that references it (a registry
/// serves a blob per repository, so each is asked through one of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// The size the manifests give.
    pub size: u64,
    /// Repository names (`domain/path`, as [`Reference::name`]) whose manifests reference it.
    pub repositories: BTreeSet<String>,
}

/// A component that could not be planned (its manifest could not be fetched or read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The component's name in `image-references`.
    pub component: String,
    /// The reference that failed (the component's, or one of its children).
    pub reference: String,
    /// Why.
    pub reason: String,
}

/// Figures of a plan against what is already present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Unique blobs.
    pub blobs: usize,
    /// Their summed size.
    pub bytes: u64,
    /// Unique blobs already present.
    pub present_blobs: usize,
    /// Their summed size.
    pub present_bytes: u64,
    /// Manifests (release, payloads, components and their platform children).
    pub manifests: usize,
}

impl Totals {
    /// Bytes still to fetch.
    pub fn missing_bytes(&self) -> u64 {
        self.bytes - self.present_bytes
    }
}

/// Everything warming one release means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The release as asked for (normalised; by tag or by digest).
    pub release: Reference,
    /// The digest of the release's top manifest (image manifest or index).
    pub digest: Digest,
    /// The release version (`release-metadata`, else the `io.openshift.release` label).
    pub version: String,
    /// The platforms kept from manifest lists.
    pub platforms: PlatformFilter,
    /// The payload images selected.
    pub payloads: Vec<Payload>,
    /// The components `image-references` names, sorted by name (a name appears once per
    /// distinct pull spec, when per-architecture payloads disagree).
    pub components: Vec<Component>,
    /// Components that could not be planned.
    pub failures: Vec<Failure>,
    manifests: BTreeMap<String, ManifestEntry>,
    blobs: BTreeMap<Digest, BlobEntry>,
}

impl Plan {
    /// An empty plan for a release whose top manifest has `digest`.
    pub fn new(release: Reference, digest: Digest, platforms: PlatformFilter) -> Plan {
        Plan {
            release,
            digest,
            version: String::new(),
            platforms,
            payloads: Vec::new(),
            components: Vec::new(),
            failures: Vec::new(),
            manifests: BTreeMap::new(),
            blobs: BTreeMap::new(),
        }
    }

    /// Records the fetched manifest `digest` of `repository` (any reference naming the
    /// repository) and its blobs, and returns the children of an index that the platform
    /// filter keeps (none for an image manifest). Blobs shared with manifests recorded earlier
    /// are counted once.
    pub fn add_manifest(
        &mut self,
        repository: &Reference,
        digest: &Digest,
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<(Manifest, Vec<Descriptor>), ReleaseError> {
        let reference = by_digest(repository, digest)?;
        let (manifest, media_type) =
            Manifest::parse_typed(bytes, media_type).map_err(|source| ReleaseError::Manifest {
                reference: reference.to_string(),
                source,
            })?;
        let kept = match &manifest {
            Manifest::Image { config, layers } => {
                // Check every size first, so a conflicting manifest leaves the plan unchanged.
                for blob in std::iter::once(config).chain(layers) {
                    if let Some(known) = self.blobs.get(&blob.digest)
                        && known.size != blob.size
                    {
                        return Err(ReleaseError::SizeConflict {
                            reference: reference.to_string(),
                            digest: blob.digest.to_string(),
                            size: blob.size,
                            earlier: known.size,
                        });
                    }
                }
                for blob in std::iter::once(config).chain(layers) {
                    self.blobs
                        .entry(blob.digest.clone())
                        .or_insert_with(|| BlobEntry {
                            size: blob.size,
                            repositories: BTreeSet::new(),
                        })
                        .repositories
                        .insert(repository.name().to_owned());
                }
                Vec::new()
            }
            Manifest::Index { manifests } => manifests
                .iter()
                .filter(|child| self.platforms.keeps(child.platform.as_ref()))
                .cloned()
                .collect(),
        };
        self.manifests
            .entry(reference.to_string())
            .or_insert(ManifestEntry {
                reference,
                media_type,
                size: bytes.len() as u64,
            });
        Ok((manifest, kept))
    }

    /// Every manifest to fetch, by reference.
    pub fn manifests(&self) -> impl Iterator<Item = &ManifestEntry> {
        self.manifests.values()
    }

    /// The unique blob set: digest → size and referencing repositories.
    pub fn blobs(&self) -> &BTreeMap<Digest, BlobEntry> {
        &self.blobs
    }

    /// For each unique blob, one reference to fetch it through (`repository@digest`, the first
    /// repository in name order).
    pub fn blob_references(&self) -> Vec<(Reference, u64)> {
        self.blobs
            .iter()
            .filter_map(|(digest, entry)| {
                let repository = entry.repositories.first()?;
                let (domain, path) = repository.split_once('/')?;
                Reference::from_parts(domain, path, None, Some(digest))
                    .ok()
                    .map(|r| (r, entry.size))
            })
            .collect()
    }

    /// The figures, with `present` telling which blobs are already in the cache.
    pub fn totals(&self, present: impl Fn(&Digest) -> bool) -> Totals {
        let mut totals = Totals {
            manifests: self.manifests.len(),
            ..Totals::default()
        };
        for (digest, entry) in &self.blobs {
            totals.blobs += 1;
            totals.bytes += entry.size;
            if present(digest) {
                totals.present_blobs += 1;
                totals.present_bytes += entry.size;
            }
        }
        totals
    }

    /// The `--dry-run` text: the release and its version, each component with the pull sources
    /// `rules` give it, and the unique blob count and total size.
    pub fn render_dry_run(&self, rules: &RuleSet) -> String {
        let totals = self.totals(|_| false);
        let mut out = String::new();
        let _ = writeln!(out, "release {} ({})", self.release, self.digest);
        let _ = writeln!(out, "version {}", self.version);
        let _ = writeln!(out, "architectures {}", self.platforms);
        write_sources(&mut out, rules, &self.release, "  ");
        for payload in &self.payloads {
            match &payload.platform {
                Some(platform) => {
                    let _ = writeln!(out, "payload {platform} {}", payload.reference);
                }
                None => {
                    let _ = writeln!(out, "payload {}", payload.reference);
                }
            }
            write_sources(&mut out, rules, &payload.reference, "  ");
        }
        let _ = writeln!(out, "components {}", self.components.len());
        for component in &self.components {
            let _ = writeln!(out, "  {} {}", component.name, component.reference);
            write_sources(&mut out, rules, &component.reference, "    ");
        }
        let _ = writeln!(out, "manifests {}", totals.manifests);
        let _ = writeln!(
            out,
            "unique blobs {} ({})",
            totals.blobs,
            ByteSize(totals.bytes).human()
        );
        if !self.failures.is_empty() {
            let _ = writeln!(out, "failures {}", self.failures.len());
            for failure in &self.failures {
                let _ = writeln!(
                    out,
                    "  {} {}: {}",
                    failure.component, failure.reference, failure.reason
                );
            }
        }
        out
    }
}

/// `mirror <ref>` / `source <ref>` lines, or why there is no pull source.
fn write_sources(out: &mut String, rules: &RuleSet, reference: &Reference, indent: &str) {
    match rules.resolve(reference) {
        Ok(resolution) => {
            for source in &resolution.sources {
                let _ = writeln!(out, "{indent}{} {}", source.role, source.reference);
            }
        }
        Err(error) => {
            let _ = writeln!(out, "{indent}no pull source: {error}");
        }
    }
}

/// `repository@digest` for any reference naming the repository.
pub(crate) fn by_digest(
    repository: &Reference,
    digest: &Digest,
) -> Result<Reference, ReleaseError> {
    Reference::from_parts(repository.domain(), repository.path(), None, Some(digest)).map_err(|e| {
        ReleaseError::Reference {
            reference: format!("{}@{digest}", repository.name()),
            reason: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn image(config: char, layers: &[(char, u64)]) -> Vec<u8> {
        let layers: Vec<String> = layers
            .iter()
            .map(|(c, size)| format!(r#"{{"digest":"{}","size":{size}}}"#, digest(*c)))
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"digest":"{}","size":10}},"layers":[{}]}}"#,
            digest(config),
            layers.join(",")
        )
        .into_bytes()
    }

    fn plan() -> Plan {
        Plan::new(
            "quay.io/ocp/release:4.16".parse().unwrap(),
            digest('f'),
            PlatformFilter::amd64(),
        )
    }

    #[test]
    fn shared_layers_count_once_and_sizes_add_up() {
        let mut plan = plan();
        let repo: Reference = "quay.io/ocp/art@sha256:0000000000000000000000000000000000000000000000000000000000000000".parse().unwrap();
        plan.add_manifest(
            &repo,
            &digest('1'),
            &image('a', &[('c', 100), ('d', 200)]),
            None,
        )
        .unwrap();
        plan.add_manifest(
            &repo,
            &digest('2'),
            &image('b', &[('c', 100), ('e', 300)]),
            None,
        )
        .unwrap();
        let totals = plan.totals(|d| *d == digest('c'));
        assert_eq!(
            (
                totals.blobs,
                totals.bytes,
                totals.present_blobs,
                totals.present_bytes,
                totals.manifests,
                totals.missing_bytes()
            ),
            (5, 10 + 10 + 100 + 200 + 300, 1, 100, 2, 520)
        );
    }

    #[test]
    fn a_blob_given_two_sizes_is_refused_and_changes_nothing() {
        let mut plan = plan();
        let repo: Reference = "quay.io/ocp/art:x".parse().unwrap();
        plan.add_manifest(&repo, &digest('1'), &image('a', &[('c', 100)]), None)
            .unwrap();
        let err = plan
            .add_manifest(&repo, &digest('2'), &image('b', &[('c', 101)]), None)
            .unwrap_err();
        assert_eq!(
            (
                matches!(err, ReleaseError::SizeConflict { .. }),
                plan.blobs().len()
            ),
            (true, 2)
        );
    }
}
