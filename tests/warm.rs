//! Release warm-up inside the server: `mirrorgate warm` against a running `mirrorgate serve`,
//! with a synthetic release payload on real registries (a source and an IDMS mirror), checked
//! with skopeo and the registries' access logs.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mirrorgate::config::ByteSize;
use support::{
    Mirrorgate, Registry, ReleaseSpec, SyntheticRelease, Throttle, http_get, http_request,
    layouts_identical, push, single_arch, skopeo, wait_until,
};

const COMPONENTS: &str = "quay.io/openshift-release-dev/ocp-v4.0-art-dev";
const RELEASE: &str = "quay.io/openshift-release-dev/ocp-release";
const SOURCE_COMPONENTS: &str = "openshift-release-dev/ocp-v4.0-art-dev";
const SOURCE_RELEASE: &str = "openshift-release-dev/ocp-release";
const MIRROR_COMPONENTS: &str = "ocp/art";
const MIRROR_RELEASE: &str = "ocp/release";

/// Components and release mirrored by digest to `mirror.test` (`policy` on the components:
/// `AllowContactingSource` or `NeverContactSource`).
fn idms(policy: &str) -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: release\nspec:\n  imageDigestMirrors:\n  - source: {COMPONENTS}\n    mirrors:\n    - mirror.test/{MIRROR_COMPONENTS}\n    mirrorSourcePolicy: {policy}\n  - source: {RELEASE}\n    mirrors:\n    - mirror.test/{MIRROR_RELEASE}\n"
    )
}

/// mirrorgate with [`idms`]`(policy)`, `quay.io` served by `source` and `mirror.test` by
/// `mirror`, and `extra` configuration.
fn release_proxy(policy: &str, source: &Registry, mirror: &Registry, extra: &str) -> Mirrorgate {
    Mirrorgate::start(
        &idms(policy),
        &[
            ("quay.io", &source.endpoint()),
            ("mirror.test", &mirror.endpoint()),
        ],
        extra,
    )
}

/// `mirrorgate warm ARGS…` against `mirrorgate`'s address.
fn warm_cli(mirrorgate: &Mirrorgate, args: &[&str]) -> Output {
    let server = format!("http://{}", mirrorgate.addr());
    Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(["warm", "--server", &server])
        .args(args)
        .output()
        .expect("run mirrorgate warm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Blob GETs per digest, over the registries, since their marks.
fn blob_gets(registries: &[(&Registry, usize)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (registry, mark) in registries {
        for request in registry.requests_since(*mark) {
            if request.method == "GET"
                && let Some((_, digest)) = request.path.split_once("/blobs/")
            {
                *counts.entry(digest.to_owned()).or_default() += 1;
            }
        }
    }
    counts
}

/// The summary lines of a fully warmed release, the timing line left out.
fn summary_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.trim_start().starts_with("time "))
        .map(str::to_owned)
        .collect()
}

fn expected_summary(
    release: &SyntheticRelease,
    images: usize,
    fetched: u64,
    cached: u64,
) -> Vec<String> {
    expected_summary_of(release, None, images, fetched, cached)
}

/// [`expected_summary`] for the release's blobs on `architectures` (`None`: all).
fn expected_summary_of(
    release: &SyntheticRelease,
    architectures: Option<&[&str]>,
    images: usize,
    fetched: u64,
    cached: u64,
) -> Vec<String> {
    let blobs = release.expected_blobs(architectures);
    let total: u64 = blobs.values().sum();
    vec![
        format!(
            "release {}:{} ({}): succeeded",
            RELEASE,
            release.release_tag(),
            release.digest
        ),
        format!("  version {}", release.spec.version),
        format!("  components {}", release.components.len()),
        format!("  images {images}/{images}"),
        format!(
            "  unique blobs {}/{} ({})",
            blobs.len(),
            blobs.len(),
            ByteSize(total).human()
        ),
        format!(
            "  bytes fetched {} ({fetched} bytes)",
            ByteSize(fetched).human()
        ),
        format!(
            "  bytes already cached {} ({cached} bytes)",
            ByteSize(cached).human()
        ),
        "  failures 0".to_owned(),
    ]
}

/// `skopeo copy` of every component and of the release into one OCI layout at `dir`, from
/// `components`/`release` repositories (as `host/path`).
fn copy_all(
    release: &SyntheticRelease,
    components: &str,
    release_repo: &str,
    dir: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut copy = |src: String, name: &str| {
        let dest = format!("oci:{}:{name}", dir.display());
        let output = skopeo(&[
            "copy",
            "--all",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{src}"),
            &dest,
        ]);
        if !output.status.success() {
            problems.push(format!("{src}: {}", text(&output.stderr)));
        }
    };
    for component in &release.components {
        copy(
            format!("{components}@{}", component.digest),
            &component.name,
        );
    }
    copy(
        format!("{release_repo}:{}", release.release_tag()),
        "release",
    );
    problems
}

#[test]
fn a_warmed_release_is_pulled_byte_for_byte_with_every_upstream_stopped() {
    let mut source = Registry::start();
    let mut mirror = Registry::start();
    let release = SyntheticRelease::push(&source, ReleaseSpec::new("4.16.0", 20));
    release.push_to(&mirror, Some(MIRROR_COMPONENTS), Some(MIRROR_RELEASE));
    let direct = tempfile::tempdir().unwrap();
    let problems = copy_all(
        &release,
        &format!("{}/{SOURCE_COMPONENTS}", source.addr()),
        &format!("{}/{SOURCE_RELEASE}", source.addr()),
        direct.path(),
    );
    assert_eq!(problems, Vec::<String>::new());
    let mirrorgate = release_proxy("AllowContactingSource", &source, &mirror, "");
    let marks = (source.mark(), mirror.mark());

    let first = warm_cli(&mirrorgate, &[&release.pull_spec]);
    let fetched_blobs = blob_gets(&[(&source, marks.0), (&mirror, marks.1)]);

    // A second run on the warm cache: nothing asked upstream, everything already cached.
    let marks = (source.mark(), mirror.mark());
    let second = warm_cli(&mirrorgate, &[&release.pull_spec]);
    let upstream_after = (
        source.content_requests_since(marks.0),
        mirror.content_requests_since(marks.1),
    );

    let blobs = release.expected_blobs(None);
    let total: u64 = blobs.values().sum();
    assert_eq!(
        (
            first.status.success(),
            summary_lines(&text(&first.stdout)),
            second.status.success(),
            summary_lines(&text(&second.stdout)),
        ),
        (
            true,
            expected_summary(&release, 21, total, 0),
            true,
            expected_summary(&release, 21, 0, total),
        ),
        "first stderr:\n{}\nsecond stderr:\n{}",
        text(&first.stderr),
        text(&second.stderr)
    );
    // Each unique blob, shared layers included, was fetched from upstream exactly once.
    assert_eq!(
        fetched_blobs,
        blobs
            .keys()
            .map(|d| (d.clone(), 1))
            .collect::<BTreeMap<_, _>>()
    );
    assert_eq!(upstream_after, (Vec::new(), Vec::new()));

    let metrics = http_get(&mirrorgate.addr(), "/metrics", &[]).text();
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("absent")
            .to_owned()
    };
    assert_eq!(
        (
            metric("mirrorgate_warm_jobs_total{outcome=\"succeeded\"}"),
            metric("mirrorgate_warm_jobs_total{outcome=\"failed\"}"),
            metric("mirrorgate_warm_images_total"),
            metric("mirrorgate_warm_bytes_total{source=\"fetched\"}"),
            metric("mirrorgate_warm_bytes_total{source=\"cached\"}"),
            metric("mirrorgate_warm_blobs_total{source=\"fetched\"}"),
            metric("mirrorgate_warm_failures_total"),
        ),
        (
            "2".to_owned(),
            "0".to_owned(),
            "42".to_owned(),
            total.to_string(),
            total.to_string(),
            blobs.len().to_string(),
            "0".to_owned(),
        )
    );

    // Every upstream stopped: every component and the release still pull, byte for byte.
    source.stop();
    mirror.stop();
    let through = tempfile::tempdir().unwrap();
    let problems = copy_all(
        &release,
        &format!("{}/{COMPONENTS}", mirrorgate.addr()),
        &format!("{}/{RELEASE}", mirrorgate.addr()),
        through.path(),
    );
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(layouts_identical(direct.path(), through.path()), Ok(()));
}

#[test]
fn components_only_on_the_source_under_never_contact_source_fail_and_the_source_is_not_asked() {
    let source = Registry::start();
    let mirror = Registry::start();
    let release = SyntheticRelease::push(&source, ReleaseSpec::new("4.16.1", 4));
    // The mirror holds the release image only.
    release.push_to(&mirror, None, Some(MIRROR_RELEASE));
    let mirrorgate = release_proxy("NeverContactSource", &source, &mirror, "");
    let mark = source.mark();
    let output = warm_cli(&mirrorgate, &[&release.pull_spec]);
    let stdout = text(&output.stdout);
    let failures: Vec<(String, bool, bool)> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("failures "))
        .skip(1)
        .map(|l| {
            let (head, reason) = l.trim().split_once(": ").unwrap_or((l, ""));
            (
                head.to_owned(),
                reason.contains(&format!("mirror.test/{MIRROR_COMPONENTS}@")),
                reason.contains("not found"),
            )
        })
        .collect();
    let expected: Vec<(String, bool, bool)> = release
        .components
        .iter()
        .map(|c| (format!("{} {}", c.name, c.pull_spec), true, true))
        .collect();
    let asked_source: Vec<String> = source
        .content_requests_since(mark)
        .into_iter()
        .filter(|r| r.contains(SOURCE_COMPONENTS))
        .collect();
    assert_eq!(
        (
            output.status.success(),
            stdout.contains("): failed\n"),
            stdout.contains(&format!("  failures {}\n", release.components.len())),
            failures,
            asked_source,
            text(&output.stderr).contains("could not be warmed completely"),
        ),
        (false, true, true, expected, Vec::<String>::new(), true),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
}

#[test]
fn the_dry_run_prints_the_plan_and_fetches_no_component_blob() {
    let source = Registry::start();
    let mirror = Registry::start();
    let release = SyntheticRelease::push(&source, ReleaseSpec::new("4.17.0", 3));
    release.push_to(&mirror, Some(MIRROR_COMPONENTS), Some(MIRROR_RELEASE));
    let mirrorgate = release_proxy("AllowContactingSource", &source, &mirror, "");
    let marks = (source.mark(), mirror.mark());
    let output = warm_cli(&mirrorgate, &["--dry-run", &release.pull_spec]);

    let expected = release.expected_dry_run(
        &format!("mirror.test/{MIRROR_RELEASE}"),
        &format!("mirror.test/{MIRROR_COMPONENTS}"),
    );
    // Only the release image's own blobs (its config and the layer with release-manifests/)
    // were read; no component blob.
    let payload = &release.payloads[0].blobs;
    let component_blobs_fetched: Vec<String> = blob_gets(&[(&source, marks.0), (&mirror, marks.1)])
        .into_keys()
        .filter(|digest| !payload.contains_key(digest))
        .collect();
    assert_eq!(
        (
            text(&output.stdout),
            output.status.success(),
            component_blobs_fetched
        ),
        (expected, true, Vec::<String>::new()),
        "stderr:\n{}",
        text(&output.stderr)
    );
}

/// The jobs the server lists, as (image, trigger, state) once none is running.
fn finished_jobs(mirrorgate: &Mirrorgate) -> Vec<(String, String, String, u64, u64)> {
    mirrorgate
        .finished_warm_jobs()
        .iter()
        .map(|j| {
            (
                j["image"].as_str().unwrap_or_default().to_owned(),
                j["trigger"].as_str().unwrap_or_default().to_owned(),
                j["state"].as_str().unwrap_or_default().to_owned(),
                j["blobs"]["done"].as_u64().unwrap_or_default(),
                j["blobs"]["total"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn configured_releases_are_warmed_at_start_and_new_ones_on_reload() {
    let source = Registry::start();
    let mirror = Registry::start();
    let first = SyntheticRelease::push(&source, ReleaseSpec::new("4.18.0", 3));
    first.push_to(&mirror, Some(MIRROR_COMPONENTS), Some(MIRROR_RELEASE));
    let second = SyntheticRelease::push(&source, ReleaseSpec::new("4.18.1", 3));
    second.push_to(&mirror, Some(MIRROR_COMPONENTS), Some(MIRROR_RELEASE));
    let mut mirrorgate = release_proxy(
        "AllowContactingSource",
        &source,
        &mirror,
        &format!("warm:\n  releases: ['{}']\n", first.pull_spec),
    );
    let at_start = finished_jobs(&mirrorgate);
    mirrorgate.reconfigure(&format!(
        "warm:\n  releases: ['{}', '{}']\n",
        first.pull_spec, second.pull_spec
    ));
    let mut after_reload = Vec::new();
    wait_until(Duration::from_secs(120), || {
        after_reload = finished_jobs(&mirrorgate);
        Ok(after_reload.len() == 2)
    })
    .unwrap_or_else(|e| panic!("no job for the new release: {e}\n{}", mirrorgate.log()));
    let job = |release: &SyntheticRelease| {
        let n = release.expected_blobs(None).len() as u64;
        (
            format!("{RELEASE}:{}", release.release_tag()),
            "config".to_owned(),
            "succeeded".to_owned(),
            n,
            n,
        )
    };
    assert_eq!(
        (at_start, after_reload),
        (vec![job(&first)], vec![job(&first), job(&second)])
    );
}

#[test]
fn a_client_pull_is_not_held_up_by_a_warm_job_holding_upstream_fetches() {
    let source = Registry::start();
    let mirror = Registry::start();
    // Each component has a layer of its own of more than 64 KiB.
    let spec = ReleaseSpec {
        own_layer_extra: 200_000,
        ..ReleaseSpec::new("4.19.0", 4)
    };
    let release = SyntheticRelease::push(&source, spec);
    release.push_to(&mirror, Some(MIRROR_COMPONENTS), None);
    // The mirror sends 64 KiB of each blob and then nothing: the downloads of the components'
    // own layers stay under way, each holding an upstream fetch slot, for as long as the test
    // runs (the release image and the base layer it shares come from the source).
    let payload = &release.payloads[0].blobs;
    let stalled: Vec<String> = release
        .components
        .iter()
        .flat_map(|c| c.images[0].blobs.iter())
        .filter(|(digest, size)| **size > 64 * 1024 && !payload.contains_key(*digest))
        .map(|(digest, _)| digest.clone())
        .collect();
    assert_eq!(stalled.len(), 4, "every component's own layer stalls");
    let stalling = Throttle::start_stalling_blobs(mirror.endpoint());
    let image = single_arch("client-during-warm", &[200_000]);
    push(&image, &format!("{}/other/app:v1", source.addr()));
    // One client slot, refused after 1s of waiting: a client queued behind the warm job's
    // stalled downloads would get 429.
    let mirrorgate = Mirrorgate::start(
        &idms("NeverContactSource"),
        &[
            ("quay.io", &source.endpoint()),
            ("mirror.test", &stalling.endpoint()),
        ],
        "limits:\n  max_upstream_fetches: 1\n  upstream_queue_timeout: 1s\nwarm:\n  concurrency: 4\n",
    );
    let body = format!("{{\"image\": \"{}\"}}", release.pull_spec);
    let started = http_request(
        "POST",
        &mirrorgate.addr(),
        "/warm/jobs",
        &[],
        body.as_bytes(),
    );
    assert_eq!(started.status, 202, "{}", started.text());
    let id = started.json()["id"].as_u64().unwrap();
    // Wait until the job holds a stalled download.
    wait_until(Duration::from_secs(60), || {
        let status = http_get(&mirrorgate.addr(), "/status", &[]).json();
        Ok(status["fetches"]["downloads"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| stalled.iter().any(|s| d["digest"] == s.as_str()))
        }))
    })
    .unwrap_or_else(|e| {
        panic!(
            "the warm job never fetched a component blob: {e}\n{}",
            mirrorgate.log()
        )
    });

    let manifest = http_get(
        &mirrorgate.addr(),
        "/v2/quay.io/other/app/manifests/v1",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
    );
    let layer = &image.layers[0];
    let blob = http_get(
        &mirrorgate.addr(),
        &format!("/v2/quay.io/other/app/blobs/{layer}"),
        &[],
    );
    let job = http_get(&mirrorgate.addr(), &format!("/warm/jobs/{id}"), &[]).json();
    assert_eq!(
        (
            manifest.status,
            blob.status,
            blob.body.len(),
            job["state"].as_str().unwrap_or_default().to_owned()
        ),
        (200, 200, image.blob(layer).len(), "fetching".to_owned()),
        "{}",
        mirrorgate.log()
    );
}

#[test]
fn a_multi_arch_release_is_warmed_for_the_configured_architectures() {
    let source = Registry::start();
    let mirror = Registry::start();
    let release = SyntheticRelease::push(
        &source,
        ReleaseSpec {
            multi_arch: true,
            ..ReleaseSpec::new("4.16.2", 4)
        },
    );
    release.push_to(&mirror, Some(MIRROR_COMPONENTS), Some(MIRROR_RELEASE));
    let registries = [
        ("quay.io", source.endpoint()),
        ("mirror.test", mirror.endpoint()),
    ];
    let registries: Vec<(&str, &str)> = registries.iter().map(|(h, e)| (*h, e.as_str())).collect();
    let mut outcomes = Vec::new();
    let mut expected = Vec::new();
    for (setting, architectures, images) in [
        ("[amd64]", Some(&["amd64"][..]), 1 + 4),
        ("[all]", None, 2 + 4 * 2),
    ] {
        let mirrorgate = Mirrorgate::start(
            &idms("AllowContactingSource"),
            &registries,
            &format!("warm:\n  architectures: {setting}\n"),
        );
        let marks = (source.mark(), mirror.mark());
        let output = warm_cli(&mirrorgate, &[&release.pull_spec]);
        let blobs = release.expected_blobs(architectures);
        let total: u64 = blobs.values().sum();
        outcomes.push((
            output.status.success(),
            summary_lines(&text(&output.stdout)),
            blob_gets(&[(&source, marks.0), (&mirror, marks.1)]),
        ));
        expected.push((
            true,
            expected_summary_of(&release, architectures, images, total, 0),
            blobs
                .keys()
                .map(|d| (d.clone(), 1))
                .collect::<BTreeMap<_, _>>(),
        ));
    }
    assert_eq!(outcomes, expected);
}
