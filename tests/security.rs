//! mirrorgate is no open proxy: it contacts only the registries the rules, `registries` and
//! `default_registry` name, and a client naming any other host is refused before a connection is
//! made. A client that never finishes its request headers is disconnected.

use crate::support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::Mirrorgate;

/// A listener on a free loopback port that counts the connections it gets.
struct CountingListener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CountingListener {
    fn start() -> CountingListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, done) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        CountingListener {
            port,
            accepted,
            stop,
        }
    }

    fn connections(&self) -> usize {
        // Give a connection in flight the time to be accepted.
        std::thread::sleep(Duration::from_millis(100));
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn error_code(response: &support::HttpResponse) -> String {
    response.json()["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_client_naming_an_unconfigured_host_is_refused_before_any_connection() {
    let listener = CountingListener::start();
    let proxy = Mirrorgate::start("", &[], "");
    let host = format!("127.0.0.1:{}", listener.port);
    let manifest = proxy.get(&format!("/v2/{host}/ns/app/manifests/v1"), &[]);
    let blob = proxy.get(
        &format!("/v2/ns/app/blobs/sha256:{}?ns={host}", "a".repeat(64)),
        &[],
    );
    let tags = proxy.get(&format!("/v2/{host}/ns/app/tags/list"), &[]);
    assert_eq!(
        (
            (manifest.status, error_code(&manifest)),
            (blob.status, error_code(&blob)),
            tags.status,
            listener.connections()
        ),
        (
            (403, "DENIED".to_owned()),
            (403, "DENIED".to_owned()),
            403,
            0
        )
    );
}

#[test]
fn a_host_name_outside_the_rules_is_refused() {
    let proxy = Mirrorgate::start("", &[], "");
    let response = proxy.get("/v2/internal.corp.test/ns/app/manifests/v1", &[]);
    assert_eq!(
        (response.status, error_code(&response)),
        (403, "DENIED".to_owned())
    );
}

#[test]
fn allow_any_registry_lets_a_client_name_any_host() {
    let listener = CountingListener::start();
    let proxy = Mirrorgate::start("", &[], "allow_any_registry: true\n");
    let host = format!("127.0.0.1:{}", listener.port);
    let response = proxy.get(&format!("/v2/{host}/ns/app/manifests/v1"), &[]);
    assert_eq!(
        (response.status, listener.connections() >= 1),
        (502, true),
        "{}",
        response.text()
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let proxy = Mirrorgate::start("", &[], "limits:\n  header_read_timeout: 2s\n");
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    // The server closes the connection (perhaps after a 408) once its header timeout passes.
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(25) {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => continue,
        }
    }
    assert!(closed, "still open after {:?}", started.elapsed());
}

#[test]
fn a_mirror_that_cannot_be_reached_is_skipped_for_a_while() {
    let source = support::Registry::start();
    let image = support::single_arch("backoff", &[1000]);
    support::push(&image, &format!("{}/ns/app:v1", source.addr()));
    // A mirror that accepts connections and closes them at once.
    let dead = CountingListener::start();
    let rules = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: d\nspec:\n  imageDigestMirrors:\n  - source: source.test/ns\n    mirrors: [dead.test/ns]\n";
    let proxy = Mirrorgate::start(
        rules,
        &[
            ("source.test", source.endpoint().as_str()),
            ("dead.test", &format!("http://127.0.0.1:{}", dead.port)),
        ],
        "",
    );
    let path = format!("/v2/source.test/ns/app/manifests/{}", image.manifest_digest);
    let first = proxy.get(&path, &[]).status;
    let after_first = dead.connections();
    let second = proxy.get(&path, &[]).status;
    assert_eq!(
        (first, second, dead.connections() - after_first),
        (200, 200, 0)
    );
}

#[test]
fn an_upstream_reset_mid_blob_fails_that_response_and_the_retry_succeeds() {
    let mirror = support::Registry::start();
    let image = support::single_arch("reset-mid-blob", &[300_000]);
    support::push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let front = support::Throttle::start_cutting_first_blob(mirror.endpoint());
    let rules = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: d\nspec:\n  imageDigestMirrors:\n  - source: source.test/ns\n    mirrors: [mirror.test/ns]\n    mirrorSourcePolicy: NeverContactSource\n";
    let proxy = Mirrorgate::start(rules, &[("mirror.test", &front.endpoint())], "");
    let layer = &image.layers[0];
    let path = format!("/v2/source.test/ns/app/blobs/{layer}");
    let first = support::try_http_request("GET", &proxy.addr(), &path, &[], b"");
    let second = proxy.get(&path, &[]);
    let first_whole = first
        .as_ref()
        .is_ok_and(|r| r.status == 200 && r.body == image.blob(layer));
    assert_eq!(
        (first_whole, second.status, second.body == image.blob(layer)),
        (false, 200, true),
        "second: {}",
        second.status
    );
}

const REDIRECT_RULES: &str = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: d\nspec:\n  imageDigestMirrors:\n  - source: source.test/ns\n    mirrors: [mirror.test/ns]\n    mirrorSourcePolicy: NeverContactSource\n";

/// Blob GETs the registry saw since `mark`.
fn blob_gets_since(registry: &support::Registry, mark: usize) -> usize {
    registry
        .requests_since(mark)
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .count()
}

#[test]
fn a_blob_redirect_to_a_loopback_address_is_refused_before_connecting() {
    let mirror = support::Registry::start();
    let image = support::single_arch("redirect-refused", &[2000]);
    support::push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    // The front answers blob GETs with a redirect to the registry's own (loopback) address.
    let front = support::Throttle::start_redirecting_blobs(mirror.endpoint());
    let proxy = Mirrorgate::start(REDIRECT_RULES, &[("mirror.test", &front.endpoint())], "");
    let mark = mirror.requests().len();
    let layer = &image.layers[0];
    let response = proxy.get(&format!("/v2/source.test/ns/app/blobs/{layer}"), &[]);
    assert_eq!(
        (
            response.status,
            response.text().contains("refused"),
            blob_gets_since(&mirror, mark)
        ),
        (502, true, 0),
        "{} {}",
        response.status,
        response.text()
    );
}

#[test]
fn a_blob_redirect_into_an_allowed_network_is_followed() {
    let mirror = support::Registry::start();
    let image = support::single_arch("redirect-allowed", &[2000]);
    support::push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let front = support::Throttle::start_redirecting_blobs(mirror.endpoint());
    let proxy = Mirrorgate::start(
        REDIRECT_RULES,
        &[("mirror.test", &front.endpoint())],
        "upstream:\n  redirect_allowed_networks: [127.0.0.0/8]\n",
    );
    let layer = &image.layers[0];
    let response = proxy.get(&format!("/v2/source.test/ns/app/blobs/{layer}"), &[]);
    assert_eq!(
        (response.status, response.body == image.blob(layer)),
        (200, true),
        "{} {}",
        response.status,
        response.text()
    );
}

const LEAK_RULES: &str = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: leak\nspec:\n  imageDigestMirrors:\n  - source: quay.io/leak\n    mirrors: [mirror.test/leak]\n";

#[test]
fn a_401_from_the_mirror_does_not_open_the_cache_for_another_repository() {
    let source = support::Registry::start();
    let mirror = support::Registry::start_with_htpasswd("someone", "not-in-the-pull-secret");
    let image = support::single_arch("leak-secret", &[4096]);
    support::push(&image, &format!("{}/other/secret:v1", source.addr()));
    let proxy = Mirrorgate::start(
        LEAK_RULES,
        &[
            ("quay.io", &source.endpoint()),
            ("mirror.test", &mirror.endpoint()),
        ],
        "",
    );
    let layer = &image.layers[0];
    let manifest = format!("manifests/{}", image.manifest_digest);
    let blob = format!("blobs/{layer}");
    let pulled: Vec<u16> = [&manifest, &blob]
        .iter()
        .map(|what| {
            proxy
                .get(&format!("/v2/quay.io/other/secret/{what}"), &[])
                .status
        })
        .collect();
    // The mirror of quay.io/leak answers 401, the source 404.
    let leaked: Vec<(u16, String)> = [&manifest, &blob]
        .iter()
        .map(|what| {
            let response = proxy.get(&format!("/v2/quay.io/leak/anything/{what}"), &[]);
            (response.status, error_code(&response))
        })
        .collect();
    assert_eq!(
        (pulled, leaked),
        (
            vec![200, 200],
            vec![
                (404, "MANIFEST_UNKNOWN".to_owned()),
                (404, "BLOB_UNKNOWN".to_owned())
            ]
        )
    );
}

#[test]
fn during_an_outage_a_scoped_client_gets_only_content_confirmed_for_it_even_after_a_restart() {
    let mut source = support::Registry::start();
    let (mine, other) = (
        support::single_arch("outage-mine", &[2048]),
        support::single_arch("outage-other", &[3072]),
    );
    support::push(&mine, &format!("{}/ns/app:v1", source.addr()));
    support::push(&other, &format!("{}/other/app:v1", source.addr()));
    let mut proxy = Mirrorgate::start("", &[("quay.io", &source.endpoint())], "");
    let (my_layer, other_layer) = (&mine.layers[0], &other.layers[0]);
    let cached: Vec<u16> = [
        format!("/v2/quay.io/ns/app/blobs/{my_layer}"),
        format!("/v2/quay.io/other/app/blobs/{other_layer}"),
    ]
    .iter()
    .map(|path| proxy.get(path, &[]).status)
    .collect();
    // Both downloads are committed, and their confirmations written, before the restart.
    let stored = |layer: &str| {
        let hex = layer.trim_start_matches("sha256:");
        let confirmed =
            std::fs::read_to_string(proxy.cache_dir().join("confirmed")).unwrap_or_default();
        proxy.cache_dir().join("blobs/sha256").join(hex).exists() && confirmed.contains(layer)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(stored(my_layer) && stored(other_layer)) {
        assert!(Instant::now() < deadline, "the blobs were not stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.restart();
    source.stop();

    // From now on only a client limited to quay.io/ns/* pulls.
    const TOKEN: &str = "mg-outage-token-0123456789";
    let tokens = proxy.dir().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("tokens:\n  - name: ns\n    token: {TOKEN}\n    scopes: [\"quay.io/ns/*\"]\n"),
    )
    .unwrap();
    let path = proxy.config_path();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["clients"] = serde_json::json!({"mode": "token", "tokens_file": tokens});
    std::fs::write(&path, config.to_string()).unwrap();
    proxy.sighup();
    let deadline = Instant::now() + Duration::from_secs(15);
    while proxy.get("/v2/", &[]).status != 401 {
        assert!(
            Instant::now() < deadline,
            "the clients section was not loaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let confirmed = proxy.get(&format!("/v2/quay.io/ns/app/blobs/{my_layer}"), &auth);
    let elsewhere = proxy.get(
        &format!("/v2/quay.io/ns/nonexist/blobs/{other_layer}"),
        &auth,
    );
    assert_eq!(
        (
            cached,
            confirmed.status,
            confirmed.body == mine.blob(my_layer),
            elsewhere.status
        ),
        (vec![200, 200], 200, true, 502),
        "{}",
        elsewhere.text()
    );
}

#[test]
fn another_port_on_a_host_the_rules_name_is_refused() {
    let rules = "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: t\nspec:\n  imageTagMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.corp.test/ns]\n";
    let proxy = Mirrorgate::start(rules, &[], "");
    let statuses: Vec<(u16, String)> = [
        "/v2/ns/app/manifests/v1?ns=quay.io:6200",
        "/v2/mirror.corp.test:6200/ns/app/manifests/v1",
    ]
    .iter()
    .map(|path| {
        let response = proxy.get(path, &[]);
        (response.status, error_code(&response))
    })
    .collect();
    assert_eq!(statuses, vec![(403, "DENIED".to_owned()); 2]);
}
