//! The cluster rule source (`src/kubernetes`) against an emulated Kubernetes API server (PyPI
//! `kmock`, see tests/support/kmock.rs): discovery, watches, and the complete snapshots it
//! publishes, down to the rules they resolve to.
#![cfg(feature = "kubernetes")]

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use mirrorgate::kubernetes::{self, ClusterWatch, Config, Health, Kind, Options, Snapshot};
use mirrorgate::reference::Reference;
use serde_json::{Value, json};
use support::Kmock;
use support::kmock::{CONFIG_MAPS, HOSTED_CLUSTERS, ICSP, IDMS, ITMS, NODE_POOLS};

/// A bound on every wait, so a broken watch fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(60);
const IDMS_PATH: &str = "/apis/config.openshift.io/v1/imagedigestmirrorsets";
const ITMS_PATH: &str = "/apis/config.openshift.io/v1/imagetagmirrorsets";
const ICSP_PATH: &str = "/apis/operator.openshift.io/v1alpha1/imagecontentsourcepolicies";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A watch of the emulated cluster, connected through a kubeconfig file as a user would.
struct Cluster {
    _dir: tempfile::TempDir,
    watch: ClusterWatch,
}

async fn watch_cluster(kmock: &Kmock, config: Config, options: Options) -> Cluster {
    // The watch's own log, shown for a failing test (RUST_LOG=mirrorgate=debug,kube=debug).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        kubeconfig: Some(kmock.kubeconfig(dir.path())),
        ..config
    };
    let client = kubernetes::connect(&config).await.expect("client");
    Cluster {
        _dir: dir,
        watch: ClusterWatch::start(client, &config, options),
    }
}

fn fast() -> Options {
    Options {
        debounce: Duration::from_millis(50),
        rediscovery: Duration::from_millis(300),
        discovery_retry: Duration::from_millis(50),
    }
}

impl Cluster {
    /// Waits for a published snapshot that satisfies `done`.
    async fn snapshot_where(&self, what: &str, done: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let mut snapshots = self.watch.snapshots();
        let found = tokio::time::timeout(
            WAIT,
            snapshots.wait_for(|s| s.as_deref().is_some_and(&done)),
        )
        .await;
        match found {
            Ok(Ok(snapshot)) => snapshot.clone().unwrap(),
            _ => panic!(
                "no snapshot with {what}; last: {:?}\nhealth: {:?}",
                self.watch.current().map(|s| origins(&s)),
                self.watch.health()
            ),
        }
    }

    /// Waits for the first complete snapshot.
    async fn first(&self) -> Arc<Snapshot> {
        self.snapshot_where("anything", |_| true).await
    }

    /// Waits for the health to satisfy `done`.
    async fn health_where(&self, what: &str, done: impl Fn(&Health) -> bool) -> Health {
        let mut health = self.watch.health_updates();
        let found = tokio::time::timeout(WAIT, health.wait_for(|h| done(h))).await;
        match found {
            Ok(Ok(health)) => health.clone(),
            _ => panic!("health never showed {what}: {:?}", self.watch.health()),
        }
    }
}

fn origins(snapshot: &Snapshot) -> Vec<String> {
    snapshot.objects().iter().map(|o| o.origin()).collect()
}

fn has(origin: &str) -> impl Fn(&Snapshot) -> bool + '_ {
    move |s| origins(s).iter().any(|o| o == origin)
}

fn idms(name: &str, source: &str, mirror: &str) -> Value {
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
        "metadata": {"name": name},
        "spec": {"imageDigestMirrors": [{"source": source, "mirrors": [mirror]}]}
    })
}

/// The pull sources the snapshot's rules give for `image`.
fn sources(snapshot: &Snapshot, image: &str) -> Vec<String> {
    let rules = snapshot.to_rule_set().expect("valid rules");
    let reference: Reference = image.parse().unwrap();
    rules
        .resolve(&reference)
        .unwrap()
        .sources
        .iter()
        .map(|s| s.reference.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_every_kind_has_each_detected_and_watched() {
    let kmock = Kmock::start(&[ICSP, IDMS, ITMS, HOSTED_CLUSTERS, NODE_POOLS, CONFIG_MAPS]);
    let cluster = watch_cluster(&kmock, Config::default(), fast()).await;
    cluster.first().await;
    let health = cluster.watch.health();
    assert_eq!(
        (
            health.synced,
            health.capabilities.into_iter().collect::<Vec<_>>(),
            health.watches
        ),
        (
            true,
            vec![
                (Kind::ImageContentSourcePolicy, true),
                (Kind::ImageDigestMirrorSet, true),
                (Kind::ImageTagMirrorSet, true),
                (Kind::HostedCluster, true),
                (Kind::NodePool, true),
            ],
            5
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_image_tag_mirror_sets_is_watched_until_the_kind_is_installed() {
    // OpenShift 4.12: ICSP and IDMS, no ITMS, no HyperShift.
    let kmock = Kmock::start(&[ICSP, IDMS]);
    kmock.create(
        IDMS_PATH,
        &idms("release", "quay.io/ocp", "mirror.example.com/ocp"),
    );
    let cluster = watch_cluster(&kmock, Config::default(), fast()).await;
    let first = cluster.first().await;
    let health = cluster.watch.health();
    assert_eq!(
        (
            origins(&first),
            health.capabilities.get(&Kind::ImageTagMirrorSet).copied(),
            health.capabilities.get(&Kind::HostedCluster).copied(),
        ),
        (
            vec!["cluster: ImageDigestMirrorSet/release".to_owned()],
            Some(false),
            Some(false)
        )
    );

    // An upgrade installs the ImageTagMirrorSet CRD, and someone creates one.
    kmock.declare(&[ITMS]);
    kmock.create(
        ITMS_PATH,
        &json!({
            "apiVersion": "config.openshift.io/v1", "kind": "ImageTagMirrorSet",
            "metadata": {"name": "tags"},
            "spec": {"imageTagMirrors": [{"source": "quay.io/ocp", "mirrors": ["mirror.example.com/tags"]}]}
        }),
    );
    let snapshot = cluster
        .snapshot_where(
            "the ImageTagMirrorSet",
            has("cluster: ImageTagMirrorSet/tags"),
        )
        .await;
    assert_eq!(
        (
            sources(&snapshot, "quay.io/ocp/release:4.16"),
            cluster
                .watch
                .health()
                .capabilities
                .get(&Kind::ImageTagMirrorSet)
                .copied()
        ),
        (
            vec![
                "mirror.example.com/tags/release:4.16".to_owned(),
                "quay.io/ocp/release:4.16".to_owned()
            ],
            Some(true)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_updating_and_deleting_mirror_sets_changes_the_snapshot() {
    let kmock = Kmock::start(&[ICSP, IDMS, ITMS]);
    let cluster = watch_cluster(&kmock, Config::default(), fast()).await;
    let empty = cluster.first().await;
    assert_eq!(origins(&empty), Vec::<String>::new());
    let image = format!("quay.io/ocp/release@{DIGEST}");

    kmock.create(
        IDMS_PATH,
        &idms("release", "quay.io/ocp", "mirror.example.com/one"),
    );
    let created = cluster
        .snapshot_where("the IDMS", has("cluster: ImageDigestMirrorSet/release"))
        .await;
    assert_eq!(
        sources(&created, &image),
        vec![
            format!("mirror.example.com/one/release@{DIGEST}"),
            format!("quay.io/ocp/release@{DIGEST}")
        ]
    );

    kmock.patch(
        &format!("{IDMS_PATH}/release"),
        &json!({"spec": {"imageDigestMirrors": [{"source": "quay.io/ocp", "mirrors": ["mirror.example.com/two"], "mirrorSourcePolicy": "NeverContactSource"}]}}),
    );
    let updated = cluster
        .snapshot_where("the updated IDMS", |s| {
            s.objects()
                .iter()
                .any(|o| o.value.to_string().contains("mirror.example.com/two"))
        })
        .await;
    assert_eq!(
        sources(&updated, &image),
        vec![format!("mirror.example.com/two/release@{DIGEST}")]
    );

    kmock.create(
        ICSP_PATH,
        &json!({
            "apiVersion": "operator.openshift.io/v1alpha1", "kind": "ImageContentSourcePolicy",
            "metadata": {"name": "legacy"},
            "spec": {"repositoryDigestMirrors": [{"source": "registry.example.com/legacy", "mirrors": ["mirror.example.com/legacy"]}]}
        }),
    );
    let with_icsp = cluster
        .snapshot_where("the ICSP", has("cluster: ImageContentSourcePolicy/legacy"))
        .await;
    assert_eq!(
        sources(
            &with_icsp,
            &format!("registry.example.com/legacy/app@{DIGEST}")
        ),
        vec![
            format!("mirror.example.com/legacy/app@{DIGEST}"),
            format!("registry.example.com/legacy/app@{DIGEST}")
        ]
    );

    kmock.delete(&format!("{IDMS_PATH}/release"));
    let deleted = cluster
        .snapshot_where("the IDMS gone", |s| {
            !has("cluster: ImageDigestMirrorSet/release")(s)
        })
        .await;
    assert_eq!(
        (origins(&deleted), sources(&deleted, &image)),
        (
            vec!["cluster: ImageContentSourcePolicy/legacy".to_owned()],
            vec![format!("quay.io/ocp/release@{DIGEST}")]
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_cluster_config_map_created_after_it_is_read_and_no_other_config_map() {
    let kmock = Kmock::start(&[HOSTED_CLUSTERS, NODE_POOLS, CONFIG_MAPS]);
    kmock.create(
        "/api/v1/namespaces/clusters/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"},
                "data": {"idms.yaml": "not: rules"}}),
    );
    kmock.create(
        "/apis/hypershift.openshift.io/v1beta1/namespaces/clusters/hostedclusters",
        &json!({
            "apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster",
            "metadata": {"name": "guest"},
            "spec": {
                "release": {"image": "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64"},
                "imageContentSources": [{"source": "quay.io/openshift-release-dev", "mirrors": ["mirror.example.com/ocp"]}],
                "imageMirrorConfigRef": {"name": "guest-mirrors"}
            }
        }),
    );
    let cluster = watch_cluster(&kmock, Config::default(), fast()).await;
    let first = cluster.first().await;
    assert_eq!(
        origins(&first),
        vec!["cluster: HostedCluster clusters/guest".to_owned()]
    );

    kmock.create(
        "/api/v1/namespaces/clusters/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "guest-mirrors"},
                "data": {"idms.yaml": "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: guest\nspec:\n  imageDigestMirrors:\n  - source: registry.example.com/team\n    mirrors: [mirror.example.com/team]\n"}}),
    );
    let snapshot = cluster
        .snapshot_where(
            "the referenced ConfigMap",
            has("cluster: ConfigMap clusters/guest-mirrors"),
        )
        .await;
    assert_eq!(
        (
            origins(&snapshot),
            sources(
                &snapshot,
                &format!("registry.example.com/team/app@{DIGEST}")
            ),
            sources(
                &snapshot,
                &format!("quay.io/openshift-release-dev/ocp-release@{DIGEST}")
            ),
        ),
        (
            vec![
                "cluster: HostedCluster clusters/guest".to_owned(),
                "cluster: ConfigMap clusters/guest-mirrors".to_owned()
            ],
            vec![
                format!("mirror.example.com/team/app@{DIGEST}"),
                format!("registry.example.com/team/app@{DIGEST}")
            ],
            vec![
                format!("mirror.example.com/ocp/ocp-release@{DIGEST}"),
                format!("quay.io/openshift-release-dev/ocp-release@{DIGEST}")
            ],
        )
    );

    // The reference removed: the ConfigMap is no longer read.
    kmock.patch(
        "/apis/hypershift.openshift.io/v1beta1/namespaces/clusters/hostedclusters/guest",
        &json!({"spec": {"imageMirrorConfigRef": null}}),
    );
    let dropped = cluster
        .snapshot_where("the ConfigMap dropped", |s| {
            !has("cluster: ConfigMap clusters/guest-mirrors")(s)
        })
        .await;
    assert_eq!(
        origins(&dropped),
        vec!["cluster: HostedCluster clusters/guest".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pool_config_config_map_is_read_and_follows_its_changes() {
    let kmock = Kmock::start(&[HOSTED_CLUSTERS, NODE_POOLS, CONFIG_MAPS]);
    let config_map = |mirror: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pool-mirrors"},
               "data": {"config": format!("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: pool\nspec:\n  imageDigestMirrors:\n  - source: quay.io/pool\n    mirrors: [{mirror}]\n---\napiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: pool-tags\nspec:\n  imageTagMirrors:\n  - source: quay.io/pool\n    mirrors: [{mirror}]\n")}})
    };
    kmock.create(
        "/api/v1/namespaces/clusters/configmaps",
        &config_map("mirror.example.com/a"),
    );
    kmock.create(
        "/apis/hypershift.openshift.io/v1beta1/namespaces/clusters/nodepools",
        &json!({
            "apiVersion": "hypershift.openshift.io/v1beta1", "kind": "NodePool",
            "metadata": {"name": "workers"},
            "spec": {"clusterName": "guest", "replicas": 2, "config": [{"name": "pool-mirrors"}]}
        }),
    );
    let cluster = watch_cluster(&kmock, Config::default(), fast()).await;
    let first = cluster.first().await;
    let image = format!("quay.io/pool/app@{DIGEST}");
    assert_eq!(
        (origins(&first), sources(&first, &image)),
        (
            vec![
                "cluster: NodePool clusters/workers".to_owned(),
                "cluster: ConfigMap clusters/pool-mirrors".to_owned()
            ],
            vec![
                format!("mirror.example.com/a/app@{DIGEST}"),
                format!("quay.io/pool/app@{DIGEST}")
            ]
        )
    );

    kmock.patch(
        "/api/v1/namespaces/clusters/configmaps/pool-mirrors",
        &json!({"data": config_map("mirror.example.com/b")["data"]}),
    );
    let changed = cluster
        .snapshot_where("the changed ConfigMap", |s| {
            s.objects()
                .iter()
                .any(|o| o.value.to_string().contains("mirror.example.com/b"))
        })
        .await;
    assert_eq!(
        sources(&changed, &image),
        vec![
            format!("mirror.example.com/b/app@{DIGEST}"),
            format!("quay.io/pool/app@{DIGEST}")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_limit_what_is_read_of_hosted_clusters() {
    let kmock = Kmock::start(&[IDMS, HOSTED_CLUSTERS, NODE_POOLS, CONFIG_MAPS]);
    for namespace in ["clusters", "other"] {
        kmock.create(
            &format!("/apis/hypershift.openshift.io/v1beta1/namespaces/{namespace}/hostedclusters"),
            &json!({"apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster",
                    "metadata": {"name": "guest"}, "spec": {}}),
        );
    }
    let config = Config {
        namespaces: vec!["clusters".to_owned()],
        ..Config::default()
    };
    let cluster = watch_cluster(&kmock, config, fast()).await;
    let first = cluster.first().await;
    assert_eq!(
        origins(&first),
        vec!["cluster: HostedCluster clusters/guest".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_until_the_api_server_answers_and_lists_completely() {
    // The API server is down when the watch starts.
    let mut kmock = Kmock::start(&[IDMS]);
    kmock.stop();
    let cluster = watch_cluster(&kmock, Config::default(), fast()).await;
    let health = cluster
        .health_where("failed discovery", |h| h.discovery_failures >= 2)
        .await;
    assert_eq!(
        (
            cluster.watch.current(),
            health.synced,
            health.capabilities.is_empty()
        ),
        (None, false, true)
    );

    kmock.restart(&[IDMS]);
    kmock.create(
        IDMS_PATH,
        &idms("release", "quay.io/ocp", "mirror.example.com/ocp"),
    );
    let first = cluster.first().await;
    assert_eq!(
        (origins(&first), cluster.watch.health().synced),
        (
            vec!["cluster: ImageDigestMirrorSet/release".to_owned()],
            true
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_api_server_keeps_the_last_snapshot_and_changes_made_meanwhile_apply_on_return() {
    let mut kmock = Kmock::start(&[ICSP, IDMS, ITMS]);
    kmock.create(
        IDMS_PATH,
        &idms("before", "quay.io/ocp", "mirror.example.com/before"),
    );
    let cluster = watch_cluster(&kmock, Config::default(), fast()).await;
    let first = cluster.first().await;
    assert_eq!(
        origins(&first),
        vec!["cluster: ImageDigestMirrorSet/before".to_owned()]
    );

    kmock.stop();
    let failed = cluster
        .health_where("a failed watch", |h| {
            h.failures.values().sum::<u64>() + h.discovery_failures >= 3
        })
        .await;
    assert_eq!(
        (
            cluster.watch.current().map(|s| origins(&s)),
            failed.synced,
            failed.last_error.is_some()
        ),
        (
            Some(vec!["cluster: ImageDigestMirrorSet/before".to_owned()]),
            true,
            true
        )
    );

    // Meanwhile, the IDMS was replaced (the emulator comes back with the new state only).
    kmock.restart(&[ICSP, IDMS, ITMS]);
    kmock.create(
        IDMS_PATH,
        &idms("after", "quay.io/ocp", "mirror.example.com/after"),
    );
    let back = cluster
        .snapshot_where("the state after the restart", |s| {
            origins(s) == ["cluster: ImageDigestMirrorSet/after"]
        })
        .await;
    assert_eq!(
        sources(&back, &format!("quay.io/ocp/release@{DIGEST}")),
        vec![
            format!("mirror.example.com/after/release@{DIGEST}"),
            format!("quay.io/ocp/release@{DIGEST}")
        ]
    );
    assert!(
        cluster.watch.health().watch_restarts >= 1,
        "{:?}",
        cluster.watch.health()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_once_answers_with_the_complete_cluster() {
    let kmock = Kmock::start(&[ICSP, IDMS, ITMS]);
    kmock.create(
        IDMS_PATH,
        &idms("release", "quay.io/ocp", "mirror.example.com/ocp"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        kubeconfig: Some(kmock.kubeconfig(dir.path())),
        ..Config::default()
    };
    let client = kubernetes::connect(&config).await.unwrap();
    let snapshot = kubernetes::list_once(client, &config, WAIT).await.unwrap();
    assert_eq!(
        sources(&snapshot, &format!("quay.io/ocp/release@{DIGEST}")),
        vec![
            format!("mirror.example.com/ocp/release@{DIGEST}"),
            format!("quay.io/ocp/release@{DIGEST}")
        ]
    );
}
