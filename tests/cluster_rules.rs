//! `mirrorgate serve` (and `check`, `resolve`) with a `kubernetes` section: the mirror rules come
//! from an emulated Kubernetes API server (PyPI `kmock`, tests/support/kmock.rs) merged with the
//! rule files, and skopeo pulls through the proxy from real Distribution registries.
//!
//! A change on the cluster must route pulls within 2 seconds (the bound): each test
//! expresses it as the deadline of a wait on observable state (a pull through the proxy, or
//! `/status`), never as a sleep.
#![cfg(feature = "kubernetes")]

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::kmock::{CONFIG_MAPS, HOSTED_CLUSTERS, ICSP, IDMS, ITMS, NODE_POOLS};
use support::{Image, Kmock, Mirrorgate, Registry, copy_to_layout, push, single_arch, wait_until};

const SOURCE: &str = "source.test";
const MIRROR_A: &str = "mirror-a.test";
const MIRROR_B: &str = "mirror-b.test";
/// "A change to any watched object is applied within seconds": the 2 seconds.
const WITHIN: Duration = Duration::from_secs(2);
/// A bound on waits that have no deadline of their own (start-up, an API server coming back).
const WAIT: Duration = Duration::from_secs(60);
const IDMS_PATH: &str = "/apis/config.openshift.io/v1/imagedigestmirrorsets";
const ITMS_PATH: &str = "/apis/config.openshift.io/v1/imagetagmirrorsets";
const ICSP_PATH: &str = "/apis/operator.openshift.io/v1alpha1/imagecontentsourcepolicies";
const HOSTED_CLUSTERS_PATH: &str =
    "/apis/hypershift.openshift.io/v1beta1/namespaces/clusters/hostedclusters";
const NODE_POOLS_PATH: &str = "/apis/hypershift.openshift.io/v1beta1/namespaces/clusters/nodepools";
const CONFIG_MAPS_PATH: &str = "/api/v1/namespaces/clusters/configmaps";
const EVERY_KIND: &[&str] = &[ICSP, IDMS, ITMS, HOSTED_CLUSTERS, NODE_POOLS, CONFIG_MAPS];
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

/// An emulated cluster, a source registry and two mirrors, and mirrorgate reading the cluster.
struct Setup {
    kmock: Kmock,
    source: Registry,
    mirror_a: Registry,
    mirror_b: Registry,
    proxy: Mirrorgate,
    _kube: tempfile::TempDir,
}

impl Setup {
    /// Starts everything with `resources` served by the API server, `rules_yaml` as the rule
    /// file and `env` for mirrorgate. Returns before the first sync: see [`Setup::wait_ready`].
    fn start(resources: &[&str], rules_yaml: &str, env: &[(&str, &str)]) -> Setup {
        let kmock = Kmock::start(resources);
        Setup::with_kmock(kmock, rules_yaml, env)
    }

    fn with_kmock(kmock: Kmock, rules_yaml: &str, env: &[(&str, &str)]) -> Setup {
        let source = Registry::start();
        let mirror_a = Registry::start();
        let mirror_b = Registry::start();
        let kube = tempfile::tempdir().unwrap();
        let kubeconfig = kmock.kubeconfig(kube.path());
        let proxy = Mirrorgate::start_with_env(
            rules_yaml,
            &[
                (SOURCE, &source.endpoint()),
                (MIRROR_A, &mirror_a.endpoint()),
                (MIRROR_B, &mirror_b.endpoint()),
            ],
            &format!("kubernetes:\n  kubeconfig: {}\n", kubeconfig.display()),
            env,
        );
        Setup {
            kmock,
            source,
            mirror_a,
            mirror_b,
            proxy,
            _kube: kube,
        }
    }

    /// Waits (bounded by [`WAIT`]) until the rule set in force holds the object of `origin`: an
    /// object created after the first sync may come after readiness.
    fn wait_applied(&self, origin: &str) {
        self.wait_origins(origin, Instant::now(), WAIT, |o| {
            o.iter().any(|o| o == origin)
        });
    }

    fn wait_ready(&self) {
        let waited = wait_until(WAIT, || Ok(self.proxy.get("/readyz", &[]).status == 200));
        assert!(
            waited.is_ok(),
            "not ready: {}\n{}",
            self.proxy.get("/readyz", &[]).text(),
            self.proxy.log()
        );
    }

    /// The manifest of `image` at `path` (`ns/app@digest` or `ns/app:tag` under SOURCE): the
    /// proxy's status code.
    fn manifest_status(&self, repository_and_reference: &str) -> u16 {
        let (repository, reference) = repository_and_reference
            .split_once('@')
            .or_else(|| repository_and_reference.rsplit_once(':'))
            .expect("repository@digest or repository:tag");
        self.proxy
            .get(
                &format!("/v2/{SOURCE}/{repository}/manifests/{reference}"),
                &[("Accept", MANIFEST_ACCEPT)],
            )
            .status
    }

    /// Waits until a pull of the manifest answers 200, at most `within` after `since`.
    fn wait_pullable(&self, reference: &str, since: Instant, within: Duration) {
        let left = within.saturating_sub(since.elapsed());
        let waited = wait_until(left, || Ok(self.manifest_status(reference) == 200));
        assert!(
            waited.is_ok(),
            "{SOURCE}/{reference} not pullable within {within:?} of the change (last answer {}); status: {}\n{}",
            self.manifest_status(reference),
            self.status(),
            self.proxy.log()
        );
    }

    /// `/status` as JSON.
    fn status(&self) -> Value {
        self.proxy.get("/status", &[]).json()
    }

    /// The origins of the rule set in force (rule files and cluster objects).
    fn origins(&self) -> Vec<String> {
        self.status()["rules"]["files"]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the rule set in force satisfies `done`, at most `within` after `since`.
    fn wait_origins(
        &self,
        what: &str,
        since: Instant,
        within: Duration,
        done: impl Fn(&[String]) -> bool,
    ) {
        let left = within.saturating_sub(since.elapsed());
        let waited = wait_until(left, || Ok(done(&self.origins())));
        assert!(
            waited.is_ok(),
            "{what}: not within {within:?}; rules from {:?}\n{}",
            self.origins(),
            self.proxy.log()
        );
    }

    /// skopeo copies `SOURCE/reference` through the proxy into an OCI layout: whether it
    /// succeeded, with its stderr.
    fn skopeo_pull(&self, reference: &str) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let output = copy_to_layout(
            &format!("{}/{SOURCE}/{reference}", self.proxy.addr()),
            &dir.path().join("layout"),
            &[],
        );
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The value of a sample of `/metrics` (Prometheus text), if present.
    fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.proxy.get("/metrics", &[]).text();
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
    }
}

fn digest_set(kind: &str, name: &str, source: &str, mirror: &str, policy: Option<&str>) -> Value {
    let mut entry = json!({"source": source, "mirrors": [mirror]});
    if let Some(policy) = policy {
        entry["mirrorSourcePolicy"] = json!(policy);
    }
    match kind {
        "ImageContentSourcePolicy" => json!({
            "apiVersion": "operator.openshift.io/v1alpha1", "kind": kind,
            "metadata": {"name": name},
            "spec": {"repositoryDigestMirrors": [entry]}
        }),
        "ImageDigestMirrorSet" => json!({
            "apiVersion": "config.openshift.io/v1", "kind": kind,
            "metadata": {"name": name},
            "spec": {"imageDigestMirrors": [entry]}
        }),
        "ImageTagMirrorSet" => json!({
            "apiVersion": "config.openshift.io/v1", "kind": kind,
            "metadata": {"name": name},
            "spec": {"imageTagMirrors": [entry]}
        }),
        other => panic!("not a mirror set kind: {other}"),
    }
}

/// A HostedCluster `name` with `image_content_sources` whose further mirrors are in the
/// ConfigMap `config_map` (`imageMirrorConfigRef`).
fn hosted_cluster(name: &str, config_map: &str, image_content_sources: Value) -> Value {
    json!({
        "apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster",
        "metadata": {"name": name},
        "spec": {
            "release": {"image": "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64"},
            "imageContentSources": image_content_sources,
            "imageMirrorConfigRef": {"name": config_map}
        }
    })
}

/// An image pushed to `registry` as `repository:tag`; returns it.
fn image_on(registry: &Registry, seed: &str, repository_and_tag: &str) -> Image {
    let image = single_arch(seed, &[1500]);
    push(&image, &format!("{}/{repository_and_tag}", registry.addr()));
    image
}

/// Create, update and delete of a digest mirror set kind (IDMS, ICSP) on the cluster, each
/// routing pulls through `serve` within 2 seconds.
fn digest_mirror_set_lifecycle(kind: &str, path: &str, name: &str) {
    let setup = Setup::start(EVERY_KIND, "", &[]);
    setup.wait_ready();
    let first = image_on(&setup.mirror_a, &format!("{kind}-first"), "ns/app:v1");
    let second = image_on(&setup.mirror_b, &format!("{kind}-second"), "ns/app:v2");
    let third = image_on(&setup.mirror_b, &format!("{kind}-third"), "ns/app:v3");
    let first_ref = format!("ns/app@{}", first.manifest_digest);
    let second_ref = format!("ns/app@{}", second.manifest_digest);
    let third_ref = format!("ns/app@{}", third.manifest_digest);
    // Without a rule the source is asked, and it does not have the image.
    let before = setup.manifest_status(&first_ref);

    let created = Instant::now();
    setup.kmock.create(
        path,
        &digest_set(
            kind,
            name,
            &format!("{SOURCE}/ns"),
            &format!("{MIRROR_A}/ns"),
            None,
        ),
    );
    setup.wait_pullable(&first_ref, created, WITHIN);
    let (pulled, stderr) = setup.skopeo_pull(&first_ref);
    assert!(pulled, "skopeo through the created {kind}: {stderr}");

    let updated = Instant::now();
    setup.kmock.patch(
        &format!("{path}/{name}"),
        &json!({"spec": digest_set(kind, name, &format!("{SOURCE}/ns"), &format!("{MIRROR_B}/ns"), None)["spec"]}),
    );
    setup.wait_pullable(&second_ref, updated, WITHIN);
    let (pulled, stderr) = setup.skopeo_pull(&second_ref);
    assert!(pulled, "skopeo through the updated {kind}: {stderr}");

    let deleted = Instant::now();
    setup.kmock.delete(&format!("{path}/{name}"));
    let origin = format!("cluster: {kind}/{name}");
    setup.wait_origins(&format!("{origin} gone"), deleted, WITHIN, |o| {
        !o.contains(&origin)
    });
    let mark = setup.mirror_b.mark();
    let (pulled_after_delete, _) = setup.skopeo_pull(&third_ref);
    assert_eq!(
        (
            before,
            pulled_after_delete,
            setup.mirror_b.content_requests_since(mark),
        ),
        (404, false, Vec::<String>::new()),
        "before the {kind}: the source answers 404; after its deletion the mirror is not asked"
    );
}

#[test]
fn an_image_digest_mirror_set_created_updated_and_deleted_routes_pulls_within_two_seconds() {
    digest_mirror_set_lifecycle("ImageDigestMirrorSet", IDMS_PATH, "release");
}

#[test]
fn an_image_content_source_policy_created_updated_and_deleted_routes_pulls_within_two_seconds() {
    digest_mirror_set_lifecycle("ImageContentSourcePolicy", ICSP_PATH, "legacy");
}

#[test]
fn an_image_tag_mirror_set_created_updated_and_deleted_routes_tag_pulls_within_two_seconds() {
    let setup = Setup::start(EVERY_KIND, "", &[]);
    setup.wait_ready();
    image_on(&setup.mirror_a, "itms-first", "ns/app:first");
    image_on(&setup.mirror_b, "itms-second", "ns/app:second");
    image_on(&setup.mirror_b, "itms-third", "ns/app:third");
    let before = setup.manifest_status("ns/app:first");
    let kind = "ImageTagMirrorSet";
    let source = format!("{SOURCE}/ns");

    let created = Instant::now();
    setup.kmock.create(
        ITMS_PATH,
        &digest_set(kind, "tags", &source, &format!("{MIRROR_A}/ns"), None),
    );
    setup.wait_pullable("ns/app:first", created, WITHIN);
    let (pulled, stderr) = setup.skopeo_pull("ns/app:first");
    assert!(pulled, "skopeo through the created ITMS: {stderr}");

    let updated = Instant::now();
    setup.kmock.patch(
        &format!("{ITMS_PATH}/tags"),
        &json!({"spec": digest_set(kind, "tags", &source, &format!("{MIRROR_B}/ns"), None)["spec"]}),
    );
    setup.wait_pullable("ns/app:second", updated, WITHIN);
    let (pulled, stderr) = setup.skopeo_pull("ns/app:second");
    assert!(pulled, "skopeo through the updated ITMS: {stderr}");

    let deleted = Instant::now();
    setup.kmock.delete(&format!("{ITMS_PATH}/tags"));
    setup.wait_origins("the ITMS gone", deleted, WITHIN, |o| {
        !o.iter().any(|o| o.contains("ImageTagMirrorSet"))
    });
    let mark = setup.mirror_b.mark();
    let (pulled_after_delete, _) = setup.skopeo_pull("ns/app:third");
    assert_eq!(
        (
            before,
            pulled_after_delete,
            setup.mirror_b.content_requests_since(mark)
        ),
        (404, false, Vec::<String>::new())
    );
}

#[test]
fn a_hosted_cluster_routes_pulls_and_its_config_map_created_later_is_applied() {
    // On the cluster before mirrorgate starts: its first complete list holds it.
    let kmock = Kmock::start(EVERY_KIND);
    kmock.create(
        HOSTED_CLUSTERS_PATH,
        &hosted_cluster(
            "guest",
            "guest-mirrors",
            json!([{"source": format!("{SOURCE}/ocp"), "mirrors": [format!("{MIRROR_A}/ocp")]}]),
        ),
    );
    let setup = Setup::with_kmock(kmock, "", &[]);
    let release = image_on(&setup.mirror_a, "hc-release", "ocp/release:v1");
    let team = image_on(&setup.mirror_b, "hc-team", "team/app:v1");
    setup.wait_ready();
    let release_ref = format!("ocp/release@{}", release.manifest_digest);
    let team_ref = format!("team/app@{}", team.manifest_digest);
    let (pulled_release, stderr) = setup.skopeo_pull(&release_ref);
    assert!(
        pulled_release,
        "the HostedCluster's imageContentSources: {stderr}\n{}\n{}",
        setup.status(),
        setup.proxy.log()
    );
    let team_before = setup.manifest_status(&team_ref);

    let created = Instant::now();
    setup.kmock.create(
        CONFIG_MAPS_PATH,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "guest-mirrors"},
                "data": {"idms.yaml": format!("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: guest\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/team\n    mirrors: [{MIRROR_B}/team]\n")}}),
    );
    setup.wait_pullable(&team_ref, created, WITHIN);
    let (pulled_team, stderr) = setup.skopeo_pull(&team_ref);
    assert_eq!(
        (team_before, pulled_team, setup.origins()),
        (
            404,
            true,
            vec![
                "rules/rules.yaml".to_owned(),
                "cluster: HostedCluster clusters/guest".to_owned(),
                "cluster: ConfigMap clusters/guest-mirrors".to_owned(),
            ]
            .into_iter()
            .map(|o| rule_origin(&setup, o))
            .collect::<Vec<_>>()
        ),
        "{stderr}"
    );
}

/// A rule file's origin as `/status` shows it (its path), or a cluster origin as is.
fn rule_origin(setup: &Setup, origin: String) -> String {
    if origin.starts_with("cluster: ") {
        origin
    } else {
        setup.proxy.dir().join(origin).display().to_string()
    }
}

#[test]
fn a_node_pool_config_map_with_an_image_tag_mirror_set_routes_tag_pulls() {
    let kmock = Kmock::start(EVERY_KIND);
    kmock.create(
        CONFIG_MAPS_PATH,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pool-mirrors"},
               "data": {"config": format!("apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: pool-tags\nspec:\n  imageTagMirrors:\n  - source: {SOURCE}/pool\n    mirrors: [{MIRROR_A}/pool]\n")}}),
    );
    create_node_pool(&kmock, "workers", &["pool-mirrors"]);
    let setup = Setup::with_kmock(kmock, "", &[]);
    image_on(&setup.mirror_a, "pool-tag", "pool/app:v1");
    setup.wait_ready();
    let mark = setup.mirror_a.mark();
    let (pulled, stderr) = setup.skopeo_pull("pool/app:v1");
    assert_eq!(
        (
            pulled,
            setup
                .mirror_a
                .count_since(mark, "GET", "/v2/pool/app/manifests/v1")
                > 0
        ),
        (true, true),
        "{stderr}"
    );
}

#[test]
fn pulls_wait_for_the_first_sync_then_survive_a_lost_api_server_and_follow_it_when_back() {
    let mut kmock = Kmock::start(EVERY_KIND);
    // Down from the start: mirrorgate serves, but not the rules it cannot know yet.
    kmock.stop();
    let mut setup = Setup::with_kmock(kmock, "", &[]);
    let first = image_on(&setup.mirror_a, "down-first", "ns/app:v1");
    let during = image_on(&setup.mirror_a, "down-during", "ns/app:v2");
    let after = image_on(&setup.mirror_b, "down-after", "ns/app:v3");
    let first_ref = format!("ns/app@{}", first.manifest_digest);
    let not_ready = setup.proxy.get("/readyz", &[]);
    let refused = setup.proxy.get(
        &format!("/v2/{SOURCE}/{first_ref}").replace('@', "/manifests/"),
        &[("Accept", MANIFEST_ACCEPT)],
    );
    assert_eq!(
        (
            not_ready.status,
            refused.status,
            refused.header("Retry-After").is_some(),
            refused.json()["errors"][0]["code"]
                .as_str()
                .map(str::to_owned),
            setup.metric("mirrorgate_cluster_synced"),
        ),
        (503, 503, true, Some("UNAVAILABLE".to_owned()), Some(0.0)),
        "before the first sync: {}",
        refused.text()
    );
    let source_asked = setup.source.content_requests_since(0);
    // What stands in the way is said to operators, once discovery has failed.
    let explained = wait_until(WAIT, || {
        Ok(setup.status()["rules"]["incomplete"]
            .as_str()
            .is_some_and(|why| why.contains("last error: ")))
    });
    assert!(explained.is_ok(), "{}", setup.status());

    setup.kmock.restart(EVERY_KIND);
    create_release_mirror_set(&setup.kmock);
    setup.wait_ready();
    setup.wait_applied("cluster: ImageDigestMirrorSet/release");
    let (pulled_first, stderr) = setup.skopeo_pull(&first_ref);
    assert!(pulled_first, "after the first sync: {stderr}");

    setup.kmock.stop();
    // The last complete rules stay in force: a pull never made before still goes to the mirror.
    let (pulled_during, stderr) = setup.skopeo_pull(&format!("ns/app@{}", during.manifest_digest));
    let ready_during = setup.proxy.get("/readyz", &[]).status;
    assert_eq!(
        (pulled_during, ready_during),
        (true, 200),
        "API server down: {stderr}"
    );

    // Back (empty, as the emulator keeps no state) with the mirror set changed meanwhile.
    setup.kmock.restart(EVERY_KIND);
    setup.kmock.create(
        IDMS_PATH,
        &digest_set(
            "ImageDigestMirrorSet",
            "release",
            &format!("{SOURCE}/ns"),
            &format!("{MIRROR_B}/ns"),
            None,
        ),
    );
    let back = Instant::now();
    setup.wait_pullable(&format!("ns/app@{}", after.manifest_digest), back, WAIT);
    let restarts = setup.metric("mirrorgate_cluster_watch_restarts_total");
    assert_eq!(
        (source_asked, restarts.is_some_and(|n| n >= 1.0)),
        (Vec::<String>::new(), true),
        "nothing reached the source before the first sync; the watches re-listed"
    );
}

#[test]
fn an_invalid_combination_keeps_the_last_good_rules_and_names_both_objects() {
    let setup = Setup::start(EVERY_KIND, "", &[]);
    setup.kmock.create(
        IDMS_PATH,
        &digest_set(
            "ImageDigestMirrorSet",
            "allow",
            &format!("{SOURCE}/ns"),
            &format!("{MIRROR_A}/ns"),
            None,
        ),
    );
    setup.wait_ready();
    setup.wait_applied("cluster: ImageDigestMirrorSet/allow");
    let later = image_on(&setup.mirror_a, "invalid-later", "ns/app:v1");
    let failures_before = setup.metric("mirrorgate_reloads_total{result=\"failure\"}");

    let created = Instant::now();
    setup.kmock.create(
        IDMS_PATH,
        &digest_set(
            "ImageDigestMirrorSet",
            "never",
            &format!("{SOURCE}/ns"),
            &format!("{MIRROR_A}/ns"),
            Some("NeverContactSource"),
        ),
    );
    let failed = wait_until(WAIT.min(WITHIN.saturating_sub(created.elapsed())), || {
        Ok(setup.status()["rules"]["last_reload"]["result"] == "failure")
    });
    assert!(failed.is_ok(), "no failed reload: {}", setup.status());
    let error = setup.status()["rules"]["last_reload"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (pulled, stderr) = setup.skopeo_pull(&format!("ns/app@{}", later.manifest_digest));
    assert_eq!(
        (
            error.contains("cluster: ImageDigestMirrorSet/allow"),
            error.contains("cluster: ImageDigestMirrorSet/never"),
            failures_before,
            setup.metric("mirrorgate_reloads_total{result=\"failure\"}"),
            setup
                .origins()
                .contains(&"cluster: ImageDigestMirrorSet/never".to_owned()),
            setup.proxy.get("/readyz", &[]).status,
            pulled,
        ),
        (true, true, Some(0.0), Some(1.0), false, 200, true),
        "error: {error}\nskopeo: {stderr}"
    );
}

#[test]
fn a_cluster_without_image_tag_mirror_sets_serves_and_picks_the_kind_up_when_installed() {
    // OpenShift 4.12: no ImageTagMirrorSet.
    let setup = Setup::start(
        &[ICSP, IDMS, HOSTED_CLUSTERS, NODE_POOLS, CONFIG_MAPS],
        "",
        &[("MIRRORGATE_KUBERNETES_REDISCOVERY", "300ms")],
    );
    create_release_mirror_set(&setup.kmock);
    setup.wait_ready();
    setup.wait_applied("cluster: ImageDigestMirrorSet/release");
    let digest_image = image_on(&setup.mirror_a, "nitms-digest", "ns/app:v1");
    image_on(&setup.mirror_b, "nitms-tag", "ns/app:tagged");
    let (pulled, stderr) = setup.skopeo_pull(&format!("ns/app@{}", digest_image.manifest_digest));
    assert!(pulled, "{stderr}");
    let capability =
        |kind: &str| setup.metric(&format!("mirrorgate_cluster_capability{{kind=\"{kind}\"}}"));
    let before = (
        capability("ImageDigestMirrorSet"),
        capability("ImageTagMirrorSet"),
        setup.metric("mirrorgate_cluster_objects{kind=\"ImageDigestMirrorSet\"}"),
        setup.metric("mirrorgate_cluster_synced"),
        setup
            .metric("mirrorgate_cluster_last_sync_timestamp_seconds")
            .is_some_and(|t| t > 0.0),
    );

    // An upgrade installs the kind, and an object of it appears.
    setup.kmock.declare(&[ITMS]);
    setup.kmock.create(
        ITMS_PATH,
        &digest_set(
            "ImageTagMirrorSet",
            "tags",
            &format!("{SOURCE}/ns"),
            &format!("{MIRROR_B}/ns"),
            None,
        ),
    );
    setup.wait_pullable("ns/app:tagged", Instant::now(), WAIT);
    assert_eq!(
        (before, capability("ImageTagMirrorSet")),
        (
            (Some(1.0), Some(0.0), Some(1.0), Some(1.0), true),
            Some(1.0)
        )
    );
}

/// `mirrorgate ARGS…`: exit success, stdout, stderr.
fn mirrorgate(args: &[&str]) -> (bool, String, String) {
    support::cli(args)
}

fn write_config(dir: &Path, kubeconfig: &Path) -> PathBuf {
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        format!("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: files\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/files\n    mirrors: [{MIRROR_B}/files]\n"),
    )
    .unwrap();
    let config = dir.join("mirrorgate.yaml");
    std::fs::write(
        &config,
        format!(
            "rules: [{}]\nkubernetes:\n  kubeconfig: {}\n",
            rules.display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn check_and_resolve_list_the_cluster_once_and_answer_from_the_merged_set_naming_each_object() {
    let kmock = Kmock::start(EVERY_KIND);
    create_release_mirror_set(&kmock);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &kmock.kubeconfig(dir.path()));
    let config = config.to_str().unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    let (checked, check_out, check_err) = mirrorgate(&["check", "--config", config]);
    let (resolved, resolve_out, resolve_err) = mirrorgate(&[
        "resolve",
        "--config",
        config,
        &format!("{SOURCE}/ns/app@{digest}"),
    ]);
    let (from_files, files_out, _) = mirrorgate(&[
        "resolve",
        "--config",
        config,
        &format!("{SOURCE}/files/app@{digest}"),
    ]);
    assert_eq!(
        (
            checked,
            check_out.contains("cluster: ImageDigestMirrorSet/release"),
            check_out.contains("rules.yaml"),
            resolved,
            resolve_out,
            from_files,
            files_out,
        ),
        (
            true,
            true,
            true,
            true,
            // Each pull source names its object: the cluster's, or the file's.
            format!(
                "mirror {MIRROR_A}/ns/app@{digest}  ({cluster})\nsource {SOURCE}/ns/app@{digest}  ({cluster})\n",
                cluster = "cluster: ImageDigestMirrorSet/release"
            ),
            true,
            format!(
                "mirror {MIRROR_B}/files/app@{digest}  ({file})\nsource {SOURCE}/files/app@{digest}  ({file})\n",
                file = format!(
                    "{}: document 1 (ImageDigestMirrorSet/files)",
                    dir.path().join("rules.yaml").display()
                )
            ),
        ),
        "check: {check_out}{check_err}\nresolve: {resolve_err}"
    );
}

#[test]
fn check_names_the_cluster_when_it_cannot_be_listed() {
    let mut kmock = Kmock::start(EVERY_KIND);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &kmock.kubeconfig(dir.path()));
    kmock.stop();
    // A refused connection ends the listing at once (not at its 30 s deadline): the error says
    // what was tried.
    let (checked, _, stderr) = mirrorgate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(
        (
            checked,
            stderr.contains("cannot list the cluster's mirror objects"),
        ),
        (false, true),
        "{stderr}"
    );
}

#[test]
fn a_file_reload_keeps_the_cluster_rules_and_a_cluster_change_keeps_the_file_rules() {
    let file_rules = |sources: &[&str]| -> String {
        let entries: String = sources
            .iter()
            .map(|s| format!("  - source: {SOURCE}/{s}\n    mirrors: [{MIRROR_B}/{s}]\n"))
            .collect();
        format!(
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: files\nspec:\n  imageDigestMirrors:\n{entries}"
        )
    };
    let kmock = Kmock::start(EVERY_KIND);
    create_release_mirror_set(&kmock);
    let setup = Setup::with_kmock(kmock, &file_rules(&["files"]), &[]);
    setup.wait_ready();
    let from_cluster = image_on(&setup.mirror_a, "keep-cluster", "ns/app:v1");
    let from_new_file_rule = image_on(&setup.mirror_b, "keep-new-file", "other/app:v1");
    let from_file = image_on(&setup.mirror_b, "keep-file", "files/app:v1");
    let from_changed_cluster = image_on(&setup.mirror_b, "keep-changed", "ns/app:v2");

    // A file reload (SIGHUP) adds a rule: the cluster's rule stays in force beside it.
    setup.proxy.write_rules(&file_rules(&["files", "other"]));
    setup.proxy.sighup();
    setup.wait_pullable(
        &format!("other/app@{}", from_new_file_rule.manifest_digest),
        Instant::now(),
        WAIT,
    );
    let cluster_after_file_reload =
        setup.skopeo_pull(&format!("ns/app@{}", from_cluster.manifest_digest));

    // A cluster change: the file's rules stay in force beside it.
    let changed = Instant::now();
    setup.kmock.patch(
        &format!("{IDMS_PATH}/release"),
        &json!({"spec": digest_set("ImageDigestMirrorSet", "release", &format!("{SOURCE}/ns"), &format!("{MIRROR_B}/ns"), None)["spec"]}),
    );
    setup.wait_pullable(
        &format!("ns/app@{}", from_changed_cluster.manifest_digest),
        changed,
        WITHIN,
    );
    let file_after_cluster_change =
        setup.skopeo_pull(&format!("files/app@{}", from_file.manifest_digest));
    assert_eq!(
        (cluster_after_file_reload.0, file_after_cluster_change.0),
        (true, true),
        "{}\n{}",
        cluster_after_file_reload.1,
        file_after_cluster_change.1
    );
}

/// Why the rules are incomplete, as `/status` tells operators, once it contains `what`.
fn wait_incomplete_for(setup: &Setup, what: &str) -> Result<(), String> {
    wait_until(WAIT, || {
        Ok(setup.status()["rules"]["incomplete"]
            .as_str()
            .is_some_and(|why| why.contains(what)))
    })
}

#[test]
fn a_403_names_the_permission_to_grant_in_status_and_check() {
    let kmock = Kmock::start(EVERY_KIND);
    kmock.forbid(&["imagedigestmirrorsets"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &kmock.kubeconfig(dir.path()));
    let (checked, _, check_err) = mirrorgate(&["check", "--config", config.to_str().unwrap()]);
    let setup = Setup::with_kmock(kmock, "", &[]);
    let grant = "grant \"list\" on \"imagedigestmirrorsets.config.openshift.io\"";
    let explained = wait_incomplete_for(&setup, grant);
    let readyz = setup.proxy.get("/readyz", &[]);
    let pull = setup.proxy.get(
        &format!("/v2/{SOURCE}/ns/app/manifests/v1"),
        &[("Accept", MANIFEST_ACCEPT)],
    );
    assert_eq!(
        (
            explained.is_ok(),
            readyz.status,
            pull.status,
            checked,
            check_err.contains(grant),
        ),
        (true, 503, 503, false, true),
        "status: {}\npull: {}\ncheck: {check_err}",
        setup.status(),
        pull.text()
    );
}

#[test]
fn another_tenants_refused_object_is_shown_to_operators_and_never_to_clients() {
    // Another tenant's HostedCluster and its ConfigMap, whose content is no valid mirror set.
    let kmock = Kmock::start(EVERY_KIND);
    kmock.create(
        HOSTED_CLUSTERS_PATH,
        &hosted_cluster("tenant-a", "tenant-a-mirrors", json!([])),
    );
    kmock.create(
        CONFIG_MAPS_PATH,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tenant-a-mirrors"},
                "data": {"idms.yaml": "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: tenant-a\nspec:\n  imageDigestMirrors:\n  - source: quay.io/tenant-a\n    mirrors: [\"Registry.Tenant-A.internal/Secret\"]\n"}}),
    );
    let setup = Setup::with_kmock(kmock, "", &[]);
    // The operator's view names the ConfigMap and what is wrong in it; everyone else is served.
    let refused = setup.wait_refused("HostedCluster clusters/tenant-a");
    setup.wait_ready();
    let pull = setup.proxy.get(
        &format!("/v2/{SOURCE}/ns/absent/manifests/v1"),
        &[("Accept", MANIFEST_ACCEPT)],
    );
    let readyz = setup.proxy.get("/readyz", &[]);
    let shows_the_tenant = |text: &str| text.contains("tenant-a") || text.contains("Secret");
    assert_eq!(
        (
            refused.contains("ConfigMap clusters/tenant-a-mirrors"),
            pull.status,
            shows_the_tenant(&pull.text()),
            readyz.status,
            shows_the_tenant(&readyz.text()),
        ),
        (true, 404, false, 200, false),
        "refused: {refused}\npull: {}\nreadyz: {}",
        pull.text(),
        readyz.text()
    );
}

// One tenant's bad object is that tenant's error only (issue 31, item 9): a member (a mirror set,
// or a HostedCluster or NodePool with its ConfigMaps) that is invalid or conflicts keeps its last
// good rules or is left out, and everyone else's changes go on being applied.

/// An ImageDigestMirrorSet document (YAML) as a ConfigMap key holds it.
fn idms_yaml(name: &str, source: &str, mirror: &str, policy: Option<&str>) -> String {
    let policy = policy
        .map(|p| format!("    mirrorSourcePolicy: {p}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: {name}\nspec:\n  imageDigestMirrors:\n  - source: {source}\n    mirrors: [{mirror}]\n{policy}"
    )
}

fn config_map(name: &str, key: &str, text: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {key: text}})
}

/// Creates the ImageDigestMirrorSet `release`: `SOURCE/ns` from `MIRROR_A/ns`.
fn create_release_mirror_set(kmock: &Kmock) {
    kmock.create(
        IDMS_PATH,
        &digest_set(
            "ImageDigestMirrorSet",
            "release",
            &format!("{SOURCE}/ns"),
            &format!("{MIRROR_A}/ns"),
            None,
        ),
    );
}

/// Creates the ConfigMap `name` whose `key` holds an ImageDigestMirrorSet sending
/// `SOURCE/<repository>` to `<mirror>/<repository>`, with `policy`.
fn create_mirror_config_map(
    kmock: &Kmock,
    name: &str,
    key: &str,
    repository: &str,
    mirror: &str,
    policy: Option<&str>,
) {
    let text = idms_yaml(
        name,
        &format!("{SOURCE}/{repository}"),
        &format!("{mirror}/{repository}"),
        policy,
    );
    kmock.create(CONFIG_MAPS_PATH, &config_map(name, key, &text));
}

/// Creates a NodePool of the HostedCluster `guest` in `clusters` whose `spec.config` names these
/// ConfigMaps.
fn create_node_pool(kmock: &Kmock, name: &str, config_maps: &[&str]) {
    let config: Vec<Value> = config_maps.iter().map(|n| json!({"name": n})).collect();
    kmock.create(
        NODE_POOLS_PATH,
        &json!({
            "apiVersion": "hypershift.openshift.io/v1beta1", "kind": "NodePool",
            "metadata": {"name": name},
            "spec": {"clusterName": "guest", "replicas": 2, "config": config}
        }),
    );
}

/// Creates a HostedCluster in `clusters` whose `imageContentSources` send `SOURCE/<repository>`
/// to `<mirror host>/<repository>`, and with an `imageMirrorConfigRef` if `config` is given.
fn create_hosted_cluster(
    kmock: &Kmock,
    name: &str,
    sources: &[(&str, &str)],
    config: Option<&str>,
) {
    let sources: Vec<Value> = sources
        .iter()
        .map(|(repository, mirror)| {
            json!({"source": format!("{SOURCE}/{repository}"), "mirrors": [format!("{mirror}/{repository}")]})
        })
        .collect();
    let mut spec = json!({
        "release": {"image": "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64"},
        "imageContentSources": sources,
    });
    if let Some(config) = config {
        spec["imageMirrorConfigRef"] = json!({"name": config});
    }
    kmock.create(
        HOSTED_CLUSTERS_PATH,
        &json!({"apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster",
                "metadata": {"name": name}, "spec": spec}),
    );
}

impl Setup {
    /// `/status`'s refused cluster objects.
    fn refused(&self) -> Vec<String> {
        self.status()["rules"]["refused"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (bounded by [`WAIT`]) until `/status` lists `member` among the refused cluster
    /// objects; returns its entry.
    fn wait_refused(&self, member: &str) -> String {
        let prefix = format!("{member}: ");
        let found = || self.refused().into_iter().find(|r| r.starts_with(&prefix));
        let waited = wait_until(WAIT, || Ok(found().is_some()));
        assert!(
            waited.is_ok(),
            "{member} not refused; status: {}\n{}",
            self.status(),
            self.proxy.log()
        );
        found().expect("waited for it")
    }

    /// Another change made now, an ImageDigestMirrorSet `later` for `SOURCE/later` on MIRROR_B,
    /// routes the pull of `later` (`later/app` on MIRROR_B) within 2 seconds.
    fn another_change_applies(&self, later: &Image) {
        let created = Instant::now();
        self.kmock.create(
            IDMS_PATH,
            &digest_set(
                "ImageDigestMirrorSet",
                "later",
                &format!("{SOURCE}/later"),
                &format!("{MIRROR_B}/later"),
                None,
            ),
        );
        self.wait_pullable(
            &format!("later/app@{}", later.manifest_digest),
            created,
            WITHIN,
        );
    }
}

#[test]
fn an_invalid_config_map_of_one_tenant_keeps_its_last_good_rules_and_another_tenants_later_change_is_in_force()
 {
    let kmock = Kmock::start(EVERY_KIND);
    create_mirror_config_map(&kmock, "a-mirrors", "idms.yaml", "a", MIRROR_A, None);
    create_hosted_cluster(&kmock, "tenant-a", &[], Some("a-mirrors"));
    create_hosted_cluster(&kmock, "tenant-b", &[("b", MIRROR_A)], None);
    let setup = Setup::with_kmock(kmock, "", &[]);
    let a_image = image_on(&setup.mirror_a, "tenant-a", "a/app:v1");
    let b_image = image_on(&setup.mirror_b, "tenant-b", "b/app:v1");
    let a_ref = format!("a/app@{}", a_image.manifest_digest);
    let b_ref = format!("b/app@{}", b_image.manifest_digest);
    setup.wait_ready();
    setup.wait_pullable(&a_ref, Instant::now(), WAIT);

    setup.kmock.patch(
        &format!("{CONFIG_MAPS_PATH}/a-mirrors"),
        &json!({"data": {"idms.yaml": "kind: [unclosed"}}),
    );
    let refused = setup.wait_refused("HostedCluster clusters/tenant-a");
    let b_before = setup.manifest_status(&b_ref);
    let changed = Instant::now();
    setup.kmock.patch(
        &format!("{HOSTED_CLUSTERS_PATH}/tenant-b"),
        &json!({"spec": {"imageContentSources": [{"source": format!("{SOURCE}/b"), "mirrors": [format!("{MIRROR_B}/b")]}]}}),
    );
    setup.wait_pullable(&b_ref, changed, WITHIN);
    let (a_pulled, stderr) = setup.skopeo_pull(&a_ref);
    assert_eq!(
        (
            b_before,
            a_pulled,
            refused.starts_with("HostedCluster clusters/tenant-a: cluster: ConfigMap clusters/a-mirrors: data.idms.yaml: invalid YAML"),
            refused.ends_with("; its last good version stays in force"),
            setup.metric("mirrorgate_cluster_objects_refused{in_force=\"last_good\"}"),
            setup.proxy.get("/readyz", &[]).status,
        ),
        (404, true, true, true, Some(1.0), 200),
        "refused: {refused}\nskopeo: {stderr}"
    );
}

#[test]
fn of_two_tenants_giving_one_source_different_policies_the_later_is_refused_and_named_and_other_changes_still_apply()
 {
    let shared = format!("{SOURCE}/shared");
    let kmock = Kmock::start(EVERY_KIND);
    create_mirror_config_map(
        &kmock,
        "a-mirrors",
        "idms.yaml",
        "shared",
        MIRROR_A,
        Some("NeverContactSource"),
    );
    create_hosted_cluster(&kmock, "tenant-a", &[], Some("a-mirrors"));
    let setup = Setup::with_kmock(kmock, "", &[]);
    let from_b = image_on(&setup.mirror_b, "conflict-b", "b/app:v1");
    let later = image_on(&setup.mirror_b, "conflict-later", "later/app:v1");
    let only_at_source = image_on(&setup.source, "conflict-source", "shared/app:v1");
    setup.wait_ready();
    setup.wait_applied("cluster: ConfigMap clusters/a-mirrors");
    let failures_before = setup.metric("mirrorgate_reloads_total{result=\"failure\"}");

    // Tenant B's HostedCluster allows the source tenant A's ConfigMap blocks.
    create_hosted_cluster(
        &setup.kmock,
        "tenant-b",
        &[("shared", MIRROR_B), ("b", MIRROR_B)],
        None,
    );
    let refused = setup.wait_refused("HostedCluster clusters/tenant-b");
    let last_reload = setup.status()["rules"]["last_reload"].clone();
    setup.another_change_applies(&later);
    let source_mark = setup.source.mark();
    assert_eq!(
        (
            refused.contains(&format!(
                "conflicting mirrorSourcePolicy is set for the same source \"{shared}\""
            )),
            refused.contains("cluster: ConfigMap clusters/a-mirrors"),
            refused.ends_with("; left out (it has no good version to keep)"),
            last_reload["result"].as_str(),
            last_reload["error"]
                .as_str()
                .is_some_and(|e| e.contains("HostedCluster clusters/tenant-b")),
            setup.metric("mirrorgate_reloads_total{result=\"failure\"}"),
            // Tenant B is left out whole (its other mirror too), tenant A's block stays in force.
            setup.manifest_status(&format!("b/app@{}", from_b.manifest_digest)),
            setup.manifest_status(&format!("shared/app@{}", only_at_source.manifest_digest)),
            setup
                .source
                .content_requests_since(source_mark)
                .iter()
                .any(|r| r.contains("/shared/")),
            setup.metric("mirrorgate_cluster_objects_refused{in_force=\"left_out\"}"),
        ),
        (
            true,
            true,
            true,
            Some("failure"),
            true,
            failures_before.map(|n| n + 1.0),
            404,
            404,
            false,
            Some(1.0),
        ),
        "refused: {refused}\nlast reload: {last_reload}"
    );
}

#[test]
fn a_node_pool_changed_to_an_empty_config_name_keeps_its_last_good_rules_and_other_changes_apply() {
    let kmock = Kmock::start(EVERY_KIND);
    create_mirror_config_map(&kmock, "pool-mirrors", "config", "pool", MIRROR_A, None);
    create_node_pool(&kmock, "workers", &["pool-mirrors"]);
    let setup = Setup::with_kmock(kmock, "", &[]);
    let pool = image_on(&setup.mirror_a, "pool-empty-name", "pool/app:v1");
    let later = image_on(&setup.mirror_b, "pool-later", "later/app:v1");
    let pool_ref = format!("pool/app@{}", pool.manifest_digest);
    setup.wait_ready();
    setup.wait_pullable(&pool_ref, Instant::now(), WAIT);

    setup.kmock.patch(
        &format!("{NODE_POOLS_PATH}/workers"),
        &json!({"spec": {"config": [{"name": ""}]}}),
    );
    let refused = setup.wait_refused("NodePool clusters/workers");
    setup.another_change_applies(&later);
    let (pool_pulled, stderr) = setup.skopeo_pull(&pool_ref);
    assert_eq!(
        (refused.as_str(), pool_pulled),
        (
            "NodePool clusters/workers: cluster: NodePool clusters/workers: spec.config[0].name: required field is missing; its last good version stays in force",
            true
        ),
        "{stderr}"
    );
}

#[test]
fn after_a_restart_with_bad_objects_of_three_tenants_pulls_of_the_others_are_served_and_check_names_each()
 {
    let kmock = Kmock::start(EVERY_KIND);
    // An invalid ConfigMap (tenant-a), a NodePool naming no ConfigMap (tenant-b), and two
    // HostedClusters giving one source different policies (tenant-c blocks it, tenant-d allows it).
    kmock.create(
        CONFIG_MAPS_PATH,
        &config_map("a-mirrors", "idms.yaml", "kind: [unclosed"),
    );
    create_hosted_cluster(&kmock, "tenant-a", &[], Some("a-mirrors"));
    create_node_pool(&kmock, "tenant-b", &[""]);
    create_mirror_config_map(
        &kmock,
        "c-mirrors",
        "idms.yaml",
        "contested",
        MIRROR_A,
        Some("NeverContactSource"),
    );
    create_hosted_cluster(&kmock, "tenant-c", &[], Some("c-mirrors"));
    create_hosted_cluster(&kmock, "tenant-d", &[("contested", MIRROR_B)], None);
    // Everyone else: the management cluster's mirror set and a good tenant.
    create_release_mirror_set(&kmock);
    create_hosted_cluster(&kmock, "tenant-e", &[("e", MIRROR_B)], None);
    // A new mirrorgate process: no last good version of anything.
    let setup = Setup::with_kmock(kmock, "", &[]);
    let management = image_on(&setup.mirror_a, "restart-management", "ns/app:v1");
    let tenant = image_on(&setup.mirror_b, "restart-tenant", "e/app:v1");
    setup.wait_ready();
    let (management_pulled, management_err) =
        setup.skopeo_pull(&format!("ns/app@{}", management.manifest_digest));
    let (tenant_pulled, tenant_err) =
        setup.skopeo_pull(&format!("e/app@{}", tenant.manifest_digest));
    let mut refused: Vec<String> = setup
        .refused()
        .iter()
        .map(|r| r.split(": ").next().unwrap_or_default().to_owned())
        .collect();
    refused.sort();
    let (checked, check_out, check_err) = mirrorgate(&[
        "check",
        "--config",
        setup.proxy.config_path().to_str().unwrap(),
    ]);
    let named_by_check = [
        "HostedCluster clusters/tenant-a: cluster: ConfigMap clusters/a-mirrors: data.idms.yaml",
        "NodePool clusters/tenant-b: cluster: NodePool clusters/tenant-b: spec.config[0].name",
        "HostedCluster clusters/tenant-c: cluster: ConfigMap clusters/c-mirrors",
        "HostedCluster clusters/tenant-d: cluster: HostedCluster clusters/tenant-d: spec.imageContentSources[0].mirrorSourcePolicy",
    ]
    .map(|line| check_out.contains(line));
    assert_eq!(
        (
            (management_pulled, tenant_pulled),
            setup.proxy.get("/readyz", &[]).status,
            refused,
            setup.metric("mirrorgate_cluster_objects_refused{in_force=\"left_out\"}"),
            checked,
            named_by_check,
            check_err.contains("4 cluster object(s) refused"),
        ),
        (
            (true, true),
            200,
            vec![
                "HostedCluster clusters/tenant-a".to_owned(),
                "HostedCluster clusters/tenant-c".to_owned(),
                "HostedCluster clusters/tenant-d".to_owned(),
                "NodePool clusters/tenant-b".to_owned(),
            ],
            Some(4.0),
            false,
            [true; 4],
            true,
        ),
        "management: {management_err}\ntenant: {tenant_err}\ncheck: {check_out}{check_err}"
    );
}
