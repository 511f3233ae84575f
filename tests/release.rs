//! Planning the warm-up of an OpenShift release: a synthetic release payload pushed to a real
//! registry (Debian's docker-registry), walked through a plain HTTP fetcher. The expectations
//! come from what the builder generated, never from the walk.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use mirrorgate::reference::Reference;
use mirrorgate::release::{
    IMAGE_REFERENCES, PayloadError, PlatformFilter, ReleaseError, WalkOptions, plan_release,
};
use support::{Registry, RegistryFetcher, ReleaseSpec, SyntheticRelease};

const COMPONENTS: &str = "quay.io/openshift-release-dev/ocp-v4.0-art-dev";
const RELEASE: &str = "quay.io/openshift-release-dev/ocp-release";

fn fetcher(registry: &Registry) -> RegistryFetcher {
    RegistryFetcher::new(&[("quay.io", &registry.endpoint())])
}

fn options(platforms: PlatformFilter) -> WalkOptions {
    WalkOptions {
        platforms,
        ..WalkOptions::default()
    }
}

async fn plan(
    registry: &Registry,
    release: &SyntheticRelease,
    options: &WalkOptions,
) -> Result<mirrorgate::release::Plan, ReleaseError> {
    let reference: Reference = release.pull_spec.parse().unwrap();
    plan_release(&fetcher(registry), &reference, options).await
}

fn blob_sizes(plan: &mirrorgate::release::Plan) -> BTreeMap<String, u64> {
    plan.blobs()
        .iter()
        .map(|(digest, entry)| (digest.to_string(), entry.size))
        .collect()
}

fn components(plan: &mirrorgate::release::Plan) -> Vec<(String, String)> {
    plan.components
        .iter()
        .map(|c| (c.name.clone(), c.reference.to_string()))
        .collect()
}

fn built_components(release: &SyntheticRelease) -> Vec<(String, String)> {
    release
        .components
        .iter()
        .map(|c| (c.name.clone(), c.pull_spec.clone()))
        .collect()
}

#[tokio::test]
async fn the_walk_finds_every_component_and_each_shared_blob_once() {
    let registry = Registry::start();
    let release = SyntheticRelease::push(&registry, ReleaseSpec::new("4.16.0", 20));
    let fetcher = fetcher(&registry);
    let reference: Reference = release.pull_spec.parse().unwrap();
    let plan = plan_release(&fetcher, &reference, &options(PlatformFilter::amd64()))
        .await
        .unwrap();

    let expected = release.expected_blobs(None);
    let totals = plan.totals(|_| false);
    assert_eq!(
        (
            plan.version.as_str(),
            plan.digest.to_string(),
            components(&plan),
            blob_sizes(&plan),
            totals.bytes,
            totals.manifests,
            plan.failures.clone(),
        ),
        (
            "4.16.0",
            release.digest.clone(),
            built_components(&release),
            expected.clone(),
            expected.values().sum::<u64>(),
            1 + 20,
            vec![],
        )
    );
    // The components share layers: the unique set is much smaller than the images' sum.
    assert!(
        totals.bytes * 2 < release.total_image_bytes(),
        "unique {} vs all {}",
        totals.bytes,
        release.total_image_bytes()
    );
    // The base layer is in the release image and in every component: one entry, two
    // repositories, each of which can serve it.
    let base = &release.payloads[0].blobs;
    let shared: Vec<_> = plan
        .blobs()
        .iter()
        .filter(|(digest, entry)| {
            base.contains_key(digest.as_str()) && entry.repositories.len() > 1
        })
        .map(|(_, entry)| entry.repositories.clone())
        .collect();
    assert_eq!(
        shared,
        vec![BTreeSet::from([COMPONENTS.to_owned(), RELEASE.to_owned()])]
    );
    // Each unique blob can be fetched through a repository that references it.
    let through: Vec<(String, bool)> = plan
        .blob_references()
        .iter()
        .map(|(reference, _)| {
            let digest = reference.digest_str().unwrap().to_owned();
            let listed = plan.blobs()[&reference.digest().unwrap()]
                .repositories
                .contains(reference.name());
            (digest, listed)
        })
        .collect();
    assert_eq!(
        through,
        expected
            .keys()
            .map(|d| (d.clone(), true))
            .collect::<Vec<_>>()
    );
    // Only the release's config and its top layer (which holds release-manifests/) were read
    // as blobs; every component was read by its manifest alone.
    let blob_reads: Vec<String> = fetcher
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|path| path.contains("/blobs/"))
        .cloned()
        .collect();
    let payload_blobs: Vec<&String> = release.payloads[0].blobs.keys().collect();
    assert_eq!(
        (
            blob_reads.len(),
            blob_reads.iter().all(
                |p| p.starts_with("openshift-release-dev/ocp-release/blobs/")
                    && payload_blobs.iter().any(|d| p.ends_with(d.as_str()))
            )
        ),
        (2, true)
    );
}

#[tokio::test]
async fn present_blobs_are_counted_apart_from_those_to_fetch() {
    let registry = Registry::start();
    let release = SyntheticRelease::push(&registry, ReleaseSpec::new("4.16.1", 4));
    let plan = plan(&registry, &release, &WalkOptions::default())
        .await
        .unwrap();
    let present: BTreeMap<String, u64> = release.payloads[0].blobs.clone();
    let totals = plan.totals(|d| present.contains_key(d.as_str()));
    let all = release.expected_blobs(None);
    assert_eq!(
        (
            totals.blobs,
            totals.present_blobs,
            totals.present_bytes,
            totals.missing_bytes()
        ),
        (
            all.len(),
            present.len(),
            present.values().sum::<u64>(),
            all.values().sum::<u64>() - present.values().sum::<u64>()
        )
    );
}

#[tokio::test]
async fn a_multi_arch_release_filtered_to_amd64_keeps_one_payload_and_amd64_children() {
    let registry = Registry::start();
    let mut spec = ReleaseSpec::new("4.16.2", 8);
    spec.multi_arch = true;
    let release = SyntheticRelease::push(&registry, spec);
    let plan = plan(&registry, &release, &options(PlatformFilter::amd64()))
        .await
        .unwrap();
    let payloads: Vec<(String, String)> = plan
        .payloads
        .iter()
        .map(|p| {
            (
                p.platform.as_ref().unwrap().to_string(),
                p.reference.digest_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        (
            plan.version.as_str(),
            payloads,
            components(&plan),
            blob_sizes(&plan),
            plan.totals(|_| false).manifests,
            plan.failures.clone(),
        ),
        (
            "4.16.2",
            vec![("linux/amd64".to_owned(), release.payloads[0].digest.clone())],
            built_components(&release),
            release.expected_blobs(Some(&["amd64"])),
            // The release index and its amd64 payload; each component's list and amd64 child.
            1 + 1 + 8 * 2,
            vec![],
        )
    );
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for manifest in plan.manifests() {
        *kinds.entry(manifest.media_type.clone()).or_default() += 1;
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            (mirrorgate::release::OCI_INDEX.to_owned(), 1 + 8),
            (mirrorgate::release::OCI_MANIFEST.to_owned(), 1 + 8),
        ])
    );
}

#[tokio::test]
async fn a_multi_arch_release_with_all_platforms_keeps_every_payload_and_child() {
    let registry = Registry::start();
    let mut spec = ReleaseSpec::new("4.16.3", 8);
    spec.multi_arch = true;
    let release = SyntheticRelease::push(&registry, spec);
    let plan = plan(&registry, &release, &options(PlatformFilter::All))
        .await
        .unwrap();
    let platforms: Vec<String> = plan
        .payloads
        .iter()
        .map(|p| p.platform.as_ref().unwrap().to_string())
        .collect();
    let expected = release.expected_blobs(None);
    assert_eq!(
        (
            platforms,
            components(&plan),
            blob_sizes(&plan),
            plan.totals(|_| false).manifests,
        ),
        (
            vec!["linux/amd64".to_owned(), "linux/arm64".to_owned()],
            built_components(&release),
            expected.clone(),
            1 + 2 + 8 * 3,
        )
    );
    assert!(expected.len() > release.expected_blobs(Some(&["amd64"])).len());
}

#[tokio::test]
async fn a_multi_arch_release_without_the_asked_platform_names_the_ones_it_has() {
    let registry = Registry::start();
    let mut spec = ReleaseSpec::new("4.16.4", 2);
    spec.multi_arch = true;
    let release = SyntheticRelease::push(&registry, spec);
    let err = plan(
        &registry,
        &release,
        &options(PlatformFilter::parse(["s390x"]).unwrap()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{RELEASE}:4.16.4-multi: no payload for architectures [s390x] (the release has linux/amd64, linux/arm64)"
        )
    );
}

#[tokio::test]
async fn a_payload_without_release_manifests_is_not_a_release_payload() {
    let registry = Registry::start();
    let mut spec = ReleaseSpec::new("4.16.5", 2);
    spec.release_manifests = false;
    let release = SyntheticRelease::push(&registry, spec);
    let err = plan(&registry, &release, &WalkOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{RELEASE}@{}: no layer holds release-manifests/image-references: not a release payload",
            release.digest
        )
    );
}

#[tokio::test]
async fn an_image_without_the_release_label_is_not_a_release_image() {
    let registry = Registry::start();
    let mut spec = ReleaseSpec::new("4.16.6", 2);
    spec.release_label = false;
    let release = SyntheticRelease::push(&registry, spec);
    let err = plan(&registry, &release, &WalkOptions::default())
        .await
        .unwrap_err();
    let ReleaseError::Payload {
        reference,
        source: PayloadError::NotARelease,
    } = &err
    else {
        panic!("expected NotARelease, got {err}");
    };
    assert_eq!(
        (reference.clone(), err.to_string()),
        (
            format!("{RELEASE}@{}", release.digest),
            format!(
                "{RELEASE}@{}: not a release image: its config has no label \"io.openshift.release\"",
                release.digest
            )
        )
    );
}

#[tokio::test]
async fn a_component_named_by_tag_fails_the_release_naming_the_tag() {
    let registry = Registry::start();
    let mut spec = ReleaseSpec::new("4.16.7", 2);
    spec.extra_tags = vec![("cli".to_owned(), format!("{COMPONENTS}:cli"))];
    let release = SyntheticRelease::push(&registry, spec);
    let err = plan(&registry, &release, &WalkOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{RELEASE}@{}: release-manifests/image-references: tag \"cli\" names \"{COMPONENTS}:cli\", which is not by digest",
            release.digest
        )
    );
}

#[tokio::test]
async fn image_references_past_the_limit_are_refused_with_their_size() {
    let registry = Registry::start();
    let release = SyntheticRelease::push(&registry, ReleaseSpec::new("4.16.8", 3));
    let limited = WalkOptions {
        max_file_size: 512,
        ..WalkOptions::default()
    };
    let err = plan(&registry, &release, &limited).await.unwrap_err();
    let ReleaseError::Payload {
        source: PayloadError::TooLarge { path, size, limit },
        ..
    } = err
    else {
        panic!("expected TooLarge, got {err}");
    };
    assert_eq!(
        (path, size, limit),
        (IMAGE_REFERENCES, release.image_references.len() as u64, 512)
    );
}

#[tokio::test]
async fn a_missing_component_is_a_failure_and_the_others_are_planned() {
    let registry = Registry::start();
    let mut spec = ReleaseSpec::new("4.16.9", 3);
    let absent = format!("{COMPONENTS}@sha256:{}", "0".repeat(64));
    spec.extra_tags = vec![("zz-absent".to_owned(), absent.clone())];
    let release = SyntheticRelease::push(&registry, spec);
    let plan = plan(&registry, &release, &WalkOptions::default())
        .await
        .unwrap();
    let failures: Vec<(String, String, bool)> = plan
        .failures
        .iter()
        .map(|f| {
            (
                f.component.clone(),
                f.reference.clone(),
                f.reason.contains("HTTP 404"),
            )
        })
        .collect();
    assert_eq!(
        (failures, blob_sizes(&plan)),
        (
            vec![("zz-absent".to_owned(), absent, true)],
            release.expected_blobs(None)
        )
    );
}

#[tokio::test]
async fn the_dry_run_shows_version_components_with_their_pull_sources_and_blob_totals() {
    let registry = Registry::start();
    let release = SyntheticRelease::push(&registry, ReleaseSpec::new("4.17.0", 3));
    let plan = plan(&registry, &release, &WalkOptions::default())
        .await
        .unwrap();
    let rules = mirrorgate::rules::load_str(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: release\nspec:\n  imageDigestMirrors:\n  - source: quay.io/openshift-release-dev/ocp-v4.0-art-dev\n    mirrors:\n    - mirror.example.com/ocp/art\n  - source: quay.io/openshift-release-dev/ocp-release\n    mirrors:\n    - mirror.example.com/ocp/release\n",
        "idms.yaml",
    )
    .unwrap();

    assert_eq!(
        plan.render_dry_run(&rules),
        release.expected_dry_run(
            "mirror.example.com/ocp/release",
            "mirror.example.com/ocp/art"
        )
    );
}

#[tokio::test]
async fn a_release_layer_whose_bytes_do_not_match_its_digest_is_refused() {
    let registry = Registry::start();
    let release = SyntheticRelease::push(&registry, ReleaseSpec::new("4.17.1", 2));
    // The top layer holds release-manifests/; serve other (valid gzip'd tar) bytes for it.
    let top_layer = release.payloads[0]
        .blobs
        .keys()
        .find(|digest| {
            std::fs::read(registry.blob_data_path(digest))
                .map(|bytes| bytes.starts_with(&[0x1f, 0x8b]) && bytes.len() < 4096)
                .unwrap_or(false)
        })
        .expect("the release-manifests layer")
        .clone();
    let other = SyntheticRelease::push(&registry, ReleaseSpec::new("4.17.2", 2));
    let replacement = other.payloads[0]
        .blobs
        .keys()
        .map(|d| std::fs::read(registry.blob_data_path(d)).unwrap())
        .find(|bytes| bytes.starts_with(&[0x1f, 0x8b]) && bytes.len() < 4096)
        .expect("the other release-manifests layer");
    std::fs::write(registry.blob_data_path(&top_layer), replacement).unwrap();
    let err = plan(&registry, &release, &WalkOptions::default())
        .await
        .unwrap_err();
    let ReleaseError::DigestMismatch { reference, .. } = &err else {
        panic!("expected DigestMismatch, got {err}");
    };
    assert_eq!(reference, &format!("{RELEASE}@{top_layer}"));
}
