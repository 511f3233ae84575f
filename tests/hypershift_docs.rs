//! Every YAML example of HyperShift's "Image Registry Mirrors" documentation
//! (`tests/data/hypershift-docs`), loaded as written: what `check` reports, what `resolve`
//! answers, and what `serve` does for skopeo with the rule hosts mapped to real Distribution
//! registries (the mirror holds the image, the source holds nothing).

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mirrorgate::reference::Reference;
use mirrorgate::rules::{self, RuleSet};
use support::{Image, Mirrorgate, Registry, copy_to_layout, layouts_identical, push, single_arch};

const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hypershift-docs")
        .join(name)
}

fn load(names: &[&str]) -> RuleSet {
    let paths: Vec<PathBuf> = names.iter().map(|n| example(n)).collect();
    rules::load(&paths).unwrap_or_else(|e| panic!("{e}"))
}

fn sources(rule_set: &RuleSet, image: &str) -> Vec<String> {
    let reference = Reference::parse_normalized(image).unwrap();
    rule_set
        .resolve(&reference)
        .unwrap()
        .sources
        .iter()
        .map(|s| format!("{} {}", s.role, s.reference))
        .collect()
}

fn mirrorgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(args)
        .output()
        .expect("run mirrorgate")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "mirrorgate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// ---- the rules each example makes ----

#[test]
fn image_content_sources_mirror_digest_pulls_only() {
    let rule_set = load(&["image-content-sources.yaml"]);
    assert_eq!(
        (
            sources(&rule_set, &format!("registry.redhat.io/ubi9/ubi@{DIGEST}")),
            sources(&rule_set, "registry.redhat.io/ubi9/ubi:latest"),
            rule_set.warnings().len(),
        ),
        (
            vec![
                format!("mirror mirror.example.com/redhat/ubi9/ubi@{DIGEST}"),
                format!("source registry.redhat.io/ubi9/ubi@{DIGEST}"),
            ],
            vec!["source registry.redhat.io/ubi9/ubi:latest".to_owned()],
            0,
        )
    );
}

#[test]
fn image_mirror_config_ref_configmap_itms_mirrors_tag_pulls() {
    let rule_set = load(&["hostedcluster-image-mirror-config-ref.yaml"]);
    assert_eq!(
        (
            sources(
                &rule_set,
                "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64"
            ),
            sources(
                &rule_set,
                &format!("quay.io/openshift-release-dev/ocp-release@{DIGEST}")
            ),
            rule_set.warnings().len(),
        ),
        (
            vec![
                "mirror mirror.corp.com/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
                "source quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
            ],
            vec![format!(
                "source quay.io/openshift-release-dev/ocp-release@{DIGEST}"
            )],
            0,
        )
    );
}

#[test]
fn nodepool_config_itms_is_applied_and_the_nodepool_is_accepted() {
    let rule_set = load(&["nodepool-config.yaml"]);
    assert_eq!(
        (
            sources(
                &rule_set,
                "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64"
            ),
            rule_set.summary().objects.get("NodePool").copied(),
            rule_set.warnings().len(),
        ),
        (
            vec![
                "mirror mirror.corp.com/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
                "source quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
            ],
            Some(1),
            0,
        )
    );
}

#[test]
fn unified_configmap_mirrors_digests_and_tags() {
    let rule_set = load(&["unified-idms-itms.yaml"]);
    assert_eq!(
        (
            sources(&rule_set, &format!("registry.redhat.io/ubi9/ubi@{DIGEST}")),
            sources(&rule_set, "registry.redhat.io/ubi9/ubi:9.4"),
            sources(
                &rule_set,
                "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64"
            ),
        ),
        (
            vec![
                format!("mirror mirror.corp.com/redhat/ubi9/ubi@{DIGEST}"),
                format!("source registry.redhat.io/ubi9/ubi@{DIGEST}"),
            ],
            vec!["source registry.redhat.io/ubi9/ubi:9.4".to_owned()],
            vec![
                "mirror mirror.corp.com/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
                "source quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
            ],
        )
    );
}

#[test]
fn image_content_sources_merge_with_the_referenced_idms_by_the_node_rules() {
    // The documentation: a unified ConfigMap "automatically merges with imageContentSources if both
    // are specified". The two lists for registry.redhat.io are disjoint, so the node merges them in
    // byte order.
    let dir = tempfile::tempdir().unwrap();
    let hosted_cluster = dir.path().join("hosted-cluster.yaml");
    fs::write(
        &hosted_cluster,
        "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\nmetadata:\n  name: my-cluster\n  namespace: clusters\nspec:\n  imageMirrorConfigRef:\n    name: unified-mirrors\n  imageContentSources:\n  - source: registry.redhat.io\n    mirrors:\n    - mirror.example.com/redhat\n",
    )
    .unwrap();
    let rule_set = rules::load(&[hosted_cluster, example("unified-idms-itms.yaml")]).unwrap();
    let summary = rule_set.summary();
    assert_eq!(
        (
            sources(&rule_set, &format!("registry.redhat.io/ubi9/ubi@{DIGEST}")),
            summary.config_map_uses[0].applied.len(),
            summary.warnings.len(),
        ),
        (
            vec![
                format!("mirror mirror.corp.com/redhat/ubi9/ubi@{DIGEST}"),
                format!("mirror mirror.example.com/redhat/ubi9/ubi@{DIGEST}"),
                format!("source registry.redhat.io/ubi9/ubi@{DIGEST}"),
            ],
            1,
            0,
        )
    );
}

#[test]
fn all_examples_load_together() {
    let rule_set = load(&[
        "image-content-sources.yaml",
        "hostedcluster-image-mirror-config-ref.yaml",
        "nodepool-config.yaml",
        "unified-idms-itms.yaml",
    ]);
    assert_eq!(
        (
            sources(&rule_set, &format!("registry.redhat.io/ubi9/ubi@{DIGEST}")),
            rule_set.warnings().len(),
        ),
        (
            vec![
                format!("mirror mirror.corp.com/redhat/ubi9/ubi@{DIGEST}"),
                format!("mirror mirror.example.com/redhat/ubi9/ubi@{DIGEST}"),
                format!("source registry.redhat.io/ubi9/ubi@{DIGEST}"),
            ],
            0,
        )
    );
}

// ---- the command line ----

#[test]
fn check_reports_the_configmaps_each_hostedcluster_and_nodepool_applied() {
    let hosted = example("hostedcluster-image-mirror-config-ref.yaml");
    let node_pool = example("nodepool-config.yaml");
    let out = stdout(&mirrorgate(&[
        "check",
        "--rules",
        hosted.to_str().unwrap(),
        "--rules",
        node_pool.to_str().unwrap(),
    ]));
    let report: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "hypershift config maps:")
        .take(5)
        .map(str::trim)
        .collect();
    assert_eq!(
        report,
        [
            "hypershift config maps:".to_owned(),
            "HostedCluster clusters/my-cluster:".to_owned(),
            format!(
                "applied ConfigMap clusters/cluster-mirrors ({}: document 1 (ConfigMap/cluster-mirrors))",
                hosted.display()
            ),
            "NodePool clusters/workers:".to_owned(),
            format!(
                "applied ConfigMap clusters/nodepool-tag-mirrors ({}: document 1 (ConfigMap/nodepool-tag-mirrors))",
                node_pool.display()
            ),
        ]
    );
}

#[test]
fn resolve_answers_each_example_from_the_command_line_naming_the_object_of_each_source() {
    // (file, image, mirror, the object within the file that routes it)
    let cases = [
        (
            "image-content-sources.yaml",
            format!("registry.redhat.io/ubi9/ubi@{DIGEST}"),
            format!("mirror.example.com/redhat/ubi9/ubi@{DIGEST}"),
            "document 1 (HostedCluster/my-cluster)",
        ),
        (
            "hostedcluster-image-mirror-config-ref.yaml",
            "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
            "mirror.corp.com/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
            "document 1 (ConfigMap/cluster-mirrors) data.itms.yaml (ImageTagMirrorSet/cluster-tag-mirrors)",
        ),
        (
            "nodepool-config.yaml",
            "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
            "mirror.corp.com/openshift-release-dev/ocp-release:4.16.0-x86_64".to_owned(),
            "document 1 (ConfigMap/nodepool-tag-mirrors) data.config document 1 (ImageTagMirrorSet/nodepool-tag-mirrors)",
        ),
        (
            "unified-idms-itms.yaml",
            format!("registry.redhat.io/ubi9/ubi@{DIGEST}"),
            format!("mirror.corp.com/redhat/ubi9/ubi@{DIGEST}"),
            "document 1 (ConfigMap/unified-mirrors) data.idms.yaml (ImageDigestMirrorSet/cluster-digest-mirrors)",
        ),
    ];
    for (file, image, mirror, object) in cases {
        let path = example(file);
        let path = path.to_str().unwrap();
        let out = stdout(&mirrorgate(&["resolve", "--rules", path, &image]));
        let expected =
            format!("mirror {mirror}  ({path}: {object})\nsource {image}  ({path}: {object})\n");
        assert_eq!((file, out), (file, expected));
    }
}

// ---- serve, with skopeo and real registries ----

/// Real registries standing for the hosts the examples name.
struct Hosts {
    registries: Vec<(&'static str, Registry)>,
}

impl Hosts {
    fn start(names: &[&'static str]) -> Hosts {
        Hosts {
            registries: names.iter().map(|n| (*n, Registry::start())).collect(),
        }
    }

    fn get(&self, name: &str) -> &Registry {
        &self.registries.iter().find(|(n, _)| *n == name).unwrap().1
    }

    fn proxy(&self, example_file: &str) -> Mirrorgate {
        let endpoints: Vec<(&str, String)> = self
            .registries
            .iter()
            .map(|(n, r)| (*n, r.endpoint()))
            .collect();
        let registries: Vec<(&str, &str)> =
            endpoints.iter().map(|(h, e)| (*h, e.as_str())).collect();
        let rules = fs::read_to_string(example(example_file)).unwrap();
        Mirrorgate::start(&rules, &registries, "")
    }

    /// Requests to `name` since `mark`, readiness probes excluded.
    fn requests_since(&self, name: &str, mark: usize) -> usize {
        self.get(name)
            .requests_since(mark)
            .iter()
            .filter(|r| r.path != "/v2/")
            .count()
    }
}

/// skopeo pulls `through` from the proxy and `direct` from a registry; both layouts are identical.
fn pull_matches(proxy: &Mirrorgate, through: &str, direct: &str) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let output = copy_to_layout(
        &format!("{}/{through}", proxy.addr()),
        &a.path().join("l"),
        &[],
    );
    assert!(
        output.status.success(),
        "pull of {through} through mirrorgate failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.log()
    );
    let output = copy_to_layout(direct, &b.path().join("l"), &[]);
    assert!(output.status.success(), "direct pull of {direct} failed");
    layouts_identical(&a.path().join("l"), &b.path().join("l")).unwrap();
}

fn image(seed: &str) -> Image {
    single_arch(seed, &[1024, 5000])
}

/// A tag pull of `quay.io/openshift-release-dev/…` is served by `mirror.corp.com`; quay.io
/// is not asked.
fn tag_pull_served_by_mirror_corp(example_file: &str) {
    let hosts = Hosts::start(&["quay.io", "mirror.corp.com"]);
    let image = image(example_file);
    push(
        &image,
        &format!(
            "{}/openshift-release-dev/ocp-release:4.16.0-x86_64",
            hosts.get("mirror.corp.com").addr()
        ),
    );
    let proxy = hosts.proxy(example_file);
    let mark = hosts.get("quay.io").mark();
    pull_matches(
        &proxy,
        "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64",
        &format!(
            "{}/openshift-release-dev/ocp-release:4.16.0-x86_64",
            hosts.get("mirror.corp.com").addr()
        ),
    );
    assert_eq!(hosts.requests_since("quay.io", mark), 0);
}

/// A digest pull of `registry.redhat.io/ubi9/ubi@…` is served by `mirror`'s `redhat/…`.
fn digest_pull_served_by(example_file: &str, mirror: &'static str) {
    let hosts = Hosts::start(&["registry.redhat.io", mirror]);
    let image = image(example_file);
    push(
        &image,
        &format!("{}/redhat/ubi9/ubi:9.4", hosts.get(mirror).addr()),
    );
    let proxy = hosts.proxy(example_file);
    let mark = hosts.get("registry.redhat.io").mark();
    pull_matches(
        &proxy,
        &format!("registry.redhat.io/ubi9/ubi@{}", image.manifest_digest),
        &format!(
            "{}/redhat/ubi9/ubi@{}",
            hosts.get(mirror).addr(),
            image.manifest_digest
        ),
    );
    assert_eq!(hosts.requests_since("registry.redhat.io", mark), 0);
}

#[test]
fn serve_image_content_sources_digest_pull_comes_from_the_mirror() {
    digest_pull_served_by("image-content-sources.yaml", "mirror.example.com");
}

#[test]
fn serve_image_mirror_config_ref_tag_pull_comes_from_the_mirror() {
    tag_pull_served_by_mirror_corp("hostedcluster-image-mirror-config-ref.yaml");
}

#[test]
fn serve_nodepool_config_tag_pull_comes_from_the_mirror() {
    tag_pull_served_by_mirror_corp("nodepool-config.yaml");
}

#[test]
fn serve_unified_configmap_serves_digest_and_tag_pulls_from_the_mirror() {
    digest_pull_served_by("unified-idms-itms.yaml", "mirror.corp.com");
    tag_pull_served_by_mirror_corp("unified-idms-itms.yaml");
}
