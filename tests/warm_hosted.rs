//! HostedClusters warmed without a command: with `kubernetes:`, a HostedCluster created on an
//! emulated API server (kmock) has its `spec.release.image` warmed, and changing the image warms
//! the new release. The server side runs in-process (proxy, warm job registry, the HostedCluster
//! watcher) against real registries.

#![cfg(feature = "kubernetes")]

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mirrorgate::config::{Config, RegistrySettings};
use mirrorgate::proxy::Proxy;
use mirrorgate::upstream::Upstream;
use mirrorgate::warm::{State, WarmConfig, Warmer};
use serde_json::json;
use support::kmock::HOSTED_CLUSTERS;
use support::{Kmock, Registry, ReleaseSpec, SyntheticRelease};

const HOSTED: &str = "/apis/hypershift.openshift.io/v1beta1/namespaces/clusters/hostedclusters";

/// (image, trigger, state, blobs done, blobs total) of every job, once `count` jobs have ended.
async fn finished_jobs(warmer: &Warmer, count: usize) -> Vec<(String, String, State, u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let jobs: Vec<_> = warmer
            .jobs()
            .into_iter()
            .map(|p| (p.image, p.trigger, p.state, p.blobs.done, p.blobs.total))
            .collect();
        if jobs.len() >= count && jobs.iter().all(|j| j.2.is_finished()) {
            return jobs;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_cluster_release_is_warmed_when_created_and_again_when_upgraded() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let source = Registry::start();
    let first = SyntheticRelease::push(&source, ReleaseSpec::new("4.16.0", 3));
    let second = SyntheticRelease::push(&source, ReleaseSpec::new("4.16.1", 3));
    let kmock = Kmock::start(&[HOSTED_CLUSTERS]);

    let cache = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.cache.dir = cache.path().to_path_buf();
    config.registries.insert(
        "quay.io".to_owned(),
        RegistrySettings {
            endpoint: Some(source.endpoint().parse().unwrap()),
            insecure: true,
            ca_file: None,
        },
    );
    let rules = mirrorgate::rules::RuleSet::empty();
    let proxy =
        Arc::new(Proxy::new(Arc::new(rules), Upstream::new(&config).unwrap(), &config).unwrap());
    let warmer = Warmer::new(proxy, &WarmConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let kubernetes = mirrorgate::kubernetes::Config {
        kubeconfig: Some(kmock.kubeconfig(dir.path())),
        ..mirrorgate::kubernetes::Config::default()
    };
    let watch = warmer
        .watch_hosted_clusters(Some(&kubernetes))
        .expect("hosted_clusters is on by default");

    kmock.create(
        HOSTED,
        &json!({
            "apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster",
            "metadata": {"name": "guest"},
            "spec": {"release": {"image": first.pull_spec}}
        }),
    );
    let created = finished_jobs(&warmer, 1).await;
    kmock.patch(
        &format!("{HOSTED}/guest"),
        &json!({"spec": {"release": {"image": second.pull_spec}}}),
    );
    let upgraded = finished_jobs(&warmer, 2).await;
    watch.abort();

    let job = |release: &SyntheticRelease| {
        let blobs = release.expected_blobs(None).len() as u64;
        (
            format!(
                "quay.io/openshift-release-dev/ocp-release:{}",
                release.release_tag()
            ),
            "hostedcluster clusters/guest".to_owned(),
            State::Succeeded,
            blobs,
            blobs,
        )
    };
    assert_eq!(
        (created, upgraded),
        (vec![job(&first)], vec![job(&first), job(&second)])
    );
}

/// Through `serve` with a `kubernetes:` section: the HostedCluster watch starts with the server,
/// and the job routes its components by the cluster's own ImageDigestMirrorSet
/// (NeverContactSource): the source is never asked for a component.
#[test]
fn serve_warms_a_hosted_cluster_release_along_the_cluster_mirror_rules() {
    use support::Mirrorgate;
    use support::kmock::{CONFIG_MAPS, IDMS};

    const COMPONENTS: &str = "quay.io/openshift-release-dev/ocp-v4.0-art-dev";
    let source = Registry::start();
    let mirror = Registry::start();
    let release = SyntheticRelease::push(&source, ReleaseSpec::new("4.17.2", 3));
    release.push_to(&mirror, Some("ocp/art"), None);
    let kmock = Kmock::start(&[IDMS, HOSTED_CLUSTERS, CONFIG_MAPS]);
    kmock.create(
        "/apis/config.openshift.io/v1/imagedigestmirrorsets",
        &json!({
            "apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
            "metadata": {"name": "release"},
            "spec": {"imageDigestMirrors": [{
                "source": COMPONENTS, "mirrors": ["mirror.test/ocp/art"],
                "mirrorSourcePolicy": "NeverContactSource"
            }]}
        }),
    );
    let source_mark = source.mark();
    let kube = tempfile::tempdir().unwrap();
    let kubeconfig = kmock.kubeconfig(kube.path());
    let mirrorgate = Mirrorgate::start(
        "",
        &[
            ("quay.io", &source.endpoint()),
            ("mirror.test", &mirror.endpoint()),
        ],
        &format!("kubernetes:\n  kubeconfig: {}\n", kubeconfig.display()),
    );
    kmock.create(
        HOSTED,
        &json!({
            "apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster",
            "metadata": {"name": "guest", "namespace": "clusters"},
            "spec": {"release": {"image": release.pull_spec}}
        }),
    );

    let jobs: Vec<(String, String)> = mirrorgate
        .finished_warm_jobs()
        .iter()
        .map(|j| {
            (
                j["trigger"].as_str().unwrap_or_default().to_owned(),
                j["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let component_requests_to_source: Vec<String> = source
        .content_requests_since(source_mark)
        .into_iter()
        .filter(|r| r.contains("ocp-v4.0-art-dev"))
        .collect();
    assert_eq!(
        (jobs, component_requests_to_source),
        (
            vec![(
                "hostedcluster clusters/guest".to_owned(),
                "succeeded".to_owned()
            )],
            Vec::<String>::new()
        ),
        "log:\n{}",
        mirrorgate.log()
    );
}
