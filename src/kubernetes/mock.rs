//! Unit tests of discovery and of the watch's publishing rules against kube-rs's mock client
//! (a `tower-test` service answering each request the test's way).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::*;

/// How the mock API server answers a request.
#[derive(Clone)]
enum Reply {
    Json(StatusCode, Value),
    /// Answer only once the gate is opened.
    Gated(Arc<Notify>, StatusCode, Value),
    /// Never answer (a watch with no events).
    Hold,
}

type Responder = Arc<dyn Fn(&str, bool) -> Reply + Send + Sync>;

/// A client whose requests `respond(path, is_watch)` answers; also returns the paths requested.
fn mock_client(respond: Responder) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let uri = request.uri().clone();
            let watch = uri.query().is_some_and(|q| q.contains("watch=true"));
            log.lock().unwrap().push(uri.to_string());
            match respond(uri.path(), watch) {
                Reply::Json(status, body) => {
                    let response = Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap();
                    send.send_response(response);
                }
                Reply::Gated(gate, status, body) => {
                    tokio::spawn(async move {
                        gate.notified().await;
                        send.send_response(
                            Response::builder()
                                .status(status)
                                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                                .unwrap(),
                        );
                    });
                }
                Reply::Hold => held.push(send),
            }
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn resource_list(group_version: &str, plurals: &[&str]) -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": plurals.iter().map(|p| json!({
            "name": p, "singularName": "", "namespaced": false, "kind": "X",
            "verbs": ["get", "list", "watch"]
        })).collect::<Vec<_>>()
    })
}

fn status(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
           "message": message, "reason": match code { 403 => "Forbidden", 404 => "NotFound", _ => "ServiceUnavailable" }})
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "10"}, "items": items})
}

fn idms(name: &str, source: &str, mirror: &str) -> Value {
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
        "metadata": {"name": name, "resourceVersion": "5"},
        "spec": {"imageDigestMirrors": [{"source": source, "mirrors": [mirror]}]}
    })
}

/// An OpenShift 4.12 cluster: ICSP and IDMS, no ITMS, no HyperShift.
fn openshift_4_12(path: &str) -> Option<Reply> {
    match path {
        "/apis/operator.openshift.io/v1alpha1" => Some(Reply::Json(
            StatusCode::OK,
            resource_list(
                "operator.openshift.io/v1alpha1",
                &["imagecontentsourcepolicies"],
            ),
        )),
        "/apis/config.openshift.io/v1" => Some(Reply::Json(
            StatusCode::OK,
            resource_list(
                "config.openshift.io/v1",
                &[
                    "imagedigestmirrorsets",
                    "clusterversions",
                    "clusterversions/status",
                ],
            ),
        )),
        "/apis/hypershift.openshift.io/v1beta1" => Some(Reply::Json(
            StatusCode::NOT_FOUND,
            status(404, "the server could not find the requested resource"),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn discovery_finds_the_kinds_each_group_version_serves() {
    let (client, _) = mock_client(Arc::new(|path, _| {
        openshift_4_12(path).unwrap_or(Reply::Json(StatusCode::NOT_FOUND, status(404, "no")))
    }));
    let capabilities = detect(&client, &Kind::DETECTED).await.unwrap();
    assert_eq!(
        capabilities.by_kind().into_iter().collect::<Vec<_>>(),
        vec![
            (Kind::ImageContentSourcePolicy, true),
            (Kind::ImageDigestMirrorSet, true),
            (Kind::ImageTagMirrorSet, false),
            (Kind::HostedCluster, false),
            (Kind::NodePool, false),
        ]
    );
}

#[tokio::test]
async fn discovery_failing_otherwise_than_404_is_an_error_not_an_empty_cluster() {
    let (client, _) = mock_client(Arc::new(|_, _| {
        Reply::Json(StatusCode::SERVICE_UNAVAILABLE, status(503, "etcd is down"))
    }));
    let error = detect(&client, &Kind::DETECTED).await.unwrap_err();
    assert_eq!(
        (
            error.is_not_found(),
            matches!(error, Error::Api { code: 503, .. })
        ),
        (false, true),
        "{error}"
    );
}

#[tokio::test]
async fn a_403_names_the_resource_and_verb_to_grant() {
    let (client, _) = mock_client(Arc::new(|path, _| {
        openshift_4_12(path).unwrap_or(Reply::Json(
            StatusCode::FORBIDDEN,
            status(
                403,
                "imagedigestmirrorsets.config.openshift.io is forbidden: User \"system:serviceaccount:mirrorgate:mirrorgate\" cannot list resource",
            ),
        ))
    }));
    let config = Config {
        hosted_clusters: false,
        ..Config::default()
    };
    let error = list_once(client, &config, Duration::from_secs(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("refused to list imagecontentsourcepolicies.operator.openshift.io")
            || error.contains("refused to list imagedigestmirrorsets.config.openshift.io"),
        "{error}"
    );
    assert!(error.contains("grant \"list\""), "{error}");
}

#[tokio::test]
async fn a_refused_connection_ends_the_listing_before_its_deadline() {
    // A port nothing listens on: a refused connection, not a slow server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}").parse().unwrap();
    // kube builds its TLS connector also for plain http; the binary installs ring in main.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_from(kube::Config::new(url)).unwrap();
    let deadline = Duration::from_secs(60);
    let error = list_once(client, &Config::default(), deadline)
        .await
        .unwrap_err();
    let Error::NotSynced { waited, last_error } = &error else {
        panic!("{error}");
    };
    assert_eq!(
        (
            *waited < deadline,
            last_error
                .as_ref()
                .is_some_and(|e| e.contains("client error (Connect)"))
        ),
        (true, true),
        "{error}"
    );
}

#[tokio::test]
async fn no_snapshot_is_published_before_every_kind_is_listed() {
    let icsp_gate = Arc::new(Notify::new());
    let gate = icsp_gate.clone();
    let (client, seen) = mock_client(Arc::new(move |path, watch| {
        if let Some(reply) = openshift_4_12(path) {
            return reply;
        }
        match (path, watch) {
            (_, true) => Reply::Hold,
            ("/apis/config.openshift.io/v1/imagedigestmirrorsets", false) => Reply::Json(
                StatusCode::OK,
                list(vec![idms(
                    "release",
                    "quay.io/ocp",
                    "mirror.example.com/ocp",
                )]),
            ),
            ("/apis/operator.openshift.io/v1alpha1/imagecontentsourcepolicies", false) => {
                Reply::Gated(gate.clone(), StatusCode::OK, list(vec![]))
            }
            _ => Reply::Json(StatusCode::NOT_FOUND, status(404, "no")),
        }
    }));
    let config = Config {
        hosted_clusters: false,
        ..Config::default()
    };
    let watch = ClusterWatch::start(client, &config, Options::default());
    let mut snapshots = watch.snapshots();
    // Wait until the IDMS watch is open: its list is done, the ICSP list is still held back.
    let mut health = watch.health_updates();
    loop {
        let watching = seen.lock().unwrap().iter().any(|uri| {
            uri.starts_with("/apis/config.openshift.io/v1/imagedigestmirrorsets?")
                && uri.contains("watch=true")
        });
        if watching {
            break;
        }
        tokio::time::timeout(Duration::from_secs(10), health.changed())
            .await
            .ok();
    }
    assert_eq!(
        (watch.current(), watch.health().synced),
        (None, false),
        "published before the ICSP list completed"
    );
    icsp_gate.notify_one();
    let snapshot = snapshots
        .wait_for(Option::is_some)
        .await
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(
        snapshot
            .objects()
            .iter()
            .map(ClusterObject::origin)
            .collect::<Vec<_>>(),
        vec!["cluster: ImageDigestMirrorSet/release"]
    );
    let health = watch.health();
    assert_eq!(
        (
            health.synced,
            health.capabilities.get(&Kind::ImageTagMirrorSet).copied(),
            health.objects.get(&Kind::ImageDigestMirrorSet).copied(),
        ),
        (true, Some(false), Some(1))
    );
    // The kind the cluster does not serve was never asked for.
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|uri| uri.contains("imagetagmirrorsets")),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn a_cluster_serving_none_of_the_kinds_publishes_an_empty_snapshot() {
    let (client, seen) = mock_client(Arc::new(|_, _| {
        Reply::Json(
            StatusCode::NOT_FOUND,
            status(404, "the server could not find the requested resource"),
        )
    }));
    let watch = ClusterWatch::start(client, &Config::default(), Options::default());
    let snapshot = tokio::time::timeout(Duration::from_secs(30), watch.first_snapshot())
        .await
        .expect("a snapshot");
    assert_eq!(
        (snapshot.objects().len(), watch.health().watches),
        (0, 0),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn a_watch_answering_404_triggers_discovery_and_the_removed_kind_is_dropped() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // The ImageDigestMirrorSet CRD is removed while mirrorgate watches it: the watch answers 404.
    let removed = Arc::new(AtomicBool::new(false));
    let flag = removed.clone();
    let watch_gate = Arc::new(Notify::new());
    let gate = watch_gate.clone();
    let (client, seen) = mock_client(Arc::new(move |path, watch| {
        let gone = flag.load(Ordering::SeqCst);
        match (path, watch) {
            ("/apis/config.openshift.io/v1", _) => Reply::Json(
                StatusCode::OK,
                resource_list(
                    "config.openshift.io/v1",
                    if gone {
                        &[]
                    } else {
                        &["imagedigestmirrorsets"]
                    },
                ),
            ),
            ("/apis/config.openshift.io/v1/imagedigestmirrorsets", false) if !gone => Reply::Json(
                StatusCode::OK,
                list(vec![idms(
                    "release",
                    "quay.io/ocp",
                    "mirror.example.com/ocp",
                )]),
            ),
            ("/apis/config.openshift.io/v1/imagedigestmirrorsets", true) => Reply::Gated(
                gate.clone(),
                StatusCode::NOT_FOUND,
                status(404, "the server could not find the requested resource"),
            ),
            _ => Reply::Json(StatusCode::NOT_FOUND, status(404, "no")),
        }
    }));
    let config = Config {
        hosted_clusters: false,
        ..Config::default()
    };
    // Periodic discovery is an hour away: only the 404 can explain a second discovery.
    let options = Options {
        rediscovery: Duration::from_secs(3600),
        ..Options::default()
    };
    let watch = ClusterWatch::start(client, &config, options);
    let mut snapshots = watch.snapshots();
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        snapshots.wait_for(|s| s.as_ref().is_some_and(|s| !s.objects().is_empty())),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no IDMS; requests: {:?} health {:?}",
            seen.lock().unwrap(),
            watch.health()
        )
    })
    .unwrap()
    .clone()
    .unwrap();
    removed.store(true, Ordering::SeqCst);
    watch_gate.notify_one();
    let last = tokio::time::timeout(
        Duration::from_secs(30),
        snapshots.wait_for(|s| s.as_ref().is_some_and(|s| s.objects().is_empty())),
    )
    .await
    .unwrap_or_else(|_| panic!("never dropped; requests: {:?}", seen.lock().unwrap()))
    .unwrap()
    .clone()
    .unwrap();
    let discoveries = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|uri| *uri == "/apis/config.openshift.io/v1")
        .count();
    assert_eq!(
        (
            first.objects().len(),
            last.objects().len(),
            discoveries >= 2,
            watch
                .health()
                .capabilities
                .get(&Kind::ImageDigestMirrorSet)
                .copied()
        ),
        (1, 0, true, Some(false))
    );
}
