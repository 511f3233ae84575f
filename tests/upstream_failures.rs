//! One failed request is not an outage: `mirrorgate serve` in front of real Distribution
//! registries, with a mirror behind a forwarder that misbehaves on some requests (closes them
//! unanswered, answers 429, truncates every blob), and what the other pulls get meanwhile.

use crate::support;

use support::{HttpResponse, Image, Mirrorgate, Registry, Throttle, free_port, push, single_arch};

const SOURCE: &str = "source.test";
const MIRROR: &str = "mirror.test";

/// Digest pulls of `source.test/ns` go to `mirror.test/ns` first, with `policy`.
fn digest_mirror_rules(policy: &str) -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: m\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/ns\n    mirrors: [{MIRROR}/ns]\n{policy}"
    )
}

/// Only the mirror may serve: the source is never contacted.
fn mirror_only() -> String {
    digest_mirror_rules("    mirrorSourcePolicy: NeverContactSource\n")
}

/// Two images, `ns/app-a` and `ns/app-b`, pushed to `registry`.
fn two_images(registry: &Registry, seed: &str) -> (Image, Image) {
    let (a, b) = (
        single_arch(&format!("{seed}-a"), &[2048]),
        single_arch(&format!("{seed}-b"), &[2048]),
    );
    push(&a, &format!("{}/ns/app-a:v1", registry.addr()));
    push(&b, &format!("{}/ns/app-b:v1", registry.addr()));
    (a, b)
}

/// Two images on a registry, a mirror forwarding to it that misbehaves on `ns/app-a` as `start`
/// makes it, and mirrorgate with only that mirror to pull from.
struct MirrorBehind {
    backend: Registry,
    _mirror: Throttle,
    proxy: Mirrorgate,
    a: Image,
    b: Image,
}

impl MirrorBehind {
    fn start(seed: &str, start: fn(String, &'static str) -> Throttle) -> MirrorBehind {
        let backend = Registry::start();
        let (a, b) = two_images(&backend, seed);
        let mirror = start(backend.endpoint(), "/ns/app-a/");
        let proxy = proxy_for_mirror(&mirror_only(), &mirror.endpoint());
        MirrorBehind {
            backend,
            _mirror: mirror,
            proxy,
            a,
            b,
        }
    }
}

/// mirrorgate with the mirror at `mirror` and a source that is never reached.
fn proxy_for_mirror(rules: &str, mirror: &str) -> Mirrorgate {
    let unreachable_source = format!("http://127.0.0.1:{}", free_port());
    Mirrorgate::start(
        rules,
        &[(SOURCE, &unreachable_source), (MIRROR, mirror)],
        "",
    )
}

fn manifest_path(repository: &str, image: &Image) -> String {
    format!(
        "/v2/{SOURCE}/ns/{repository}/manifests/{}",
        image.manifest_digest
    )
}

/// Pulls the manifest of `ns/app-a` `times` times (their statuses), then the one of `ns/app-b`.
fn pull_a_then_b(
    proxy: &Mirrorgate,
    (a, b): (&Image, &Image),
    times: usize,
) -> (Vec<u16>, HttpResponse) {
    let statuses = (0..times)
        .map(|_| proxy.get(&manifest_path("app-a", a), &[]).status)
        .collect();
    (statuses, proxy.get(&manifest_path("app-b", b), &[]))
}

#[test]
fn a_request_closed_unanswered_leaves_the_other_pulls_from_its_registry_served() {
    // Every part bound: the registry and the mirror live until the end of the test.
    let MirrorBehind {
        backend: _backend,
        _mirror,
        proxy,
        a,
        b,
    } = MirrorBehind::start("closed-once", Throttle::start_closing_unanswered);
    let (closed, other) = pull_a_then_b(&proxy, (&a, &b), 1);
    assert_eq!(
        (closed, other.status, other.body == b.manifest_bytes),
        (vec![502], 200, true),
        "{}",
        other.text()
    );
}

#[test]
fn three_requests_in_a_row_closed_unanswered_back_their_registry_off() {
    let MirrorBehind {
        backend,
        _mirror,
        proxy,
        a,
        b,
    } = MirrorBehind::start("closed-thrice", Throttle::start_closing_unanswered);
    let (closed, skipped) = pull_a_then_b(&proxy, (&a, &b), 3);
    assert_eq!(
        (
            closed,
            skipped.status,
            skipped
                .text()
                .contains("not contacted: 3 requests in a row failed moments ago"),
            backend.count("GET", "/ns/app-b/"),
        ),
        (vec![502, 502, 502], 502, true, 0),
        "{}",
        skipped.text()
    );
}

#[test]
fn a_refused_registry_is_backed_off_at_once() {
    let backend = Registry::start();
    let (a, b) = two_images(&backend, "refused");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = proxy_for_mirror(&mirror_only(), &dead);
    let (refused, skipped) = pull_a_then_b(&proxy, (&a, &b), 1);
    assert_eq!(
        (
            refused,
            skipped.status,
            skipped
                .text()
                .contains("not contacted: unreachable moments ago (connection refused"),
        ),
        (vec![502], 502, true),
        "{}",
        skipped.text()
    );
}

#[test]
fn a_registry_answering_429_is_up_neither_backed_off_nor_failing() {
    let MirrorBehind {
        backend: _backend,
        _mirror,
        proxy,
        a,
        b,
    } = MirrorBehind::start("too-many", Throttle::start_refusing_with_429);
    let refused: Vec<u16> = (0..3)
        .map(|_| proxy.get(&manifest_path("app-a", &a), &[]).status)
        .collect();
    // Asked before `ns/app-b` is pulled: the last attempt was a refusal.
    let status = proxy.get("/status", &[]).json();
    let other = proxy.get(&manifest_path("app-b", &b), &[]);
    let mirror_status = status["registries"]
        .as_array()
        .and_then(|registries| registries.iter().find(|r| r["registry"] == MIRROR))
        .cloned()
        .unwrap_or_default();
    let metrics = proxy.get("/metrics", &[]).text();
    let rejected = format!(
        "mirrorgate_upstream_requests_total{{registry=\"{MIRROR}\",role=\"mirror\",route=\"manifest\",outcome=\"rejected\"}} 3"
    );
    assert_eq!(
        (
            refused,
            other.status,
            mirror_status["state"].as_str(),
            mirror_status["failures"].as_u64(),
            mirror_status["refusals"].as_u64(),
            metrics.lines().any(|line| line == rejected),
        ),
        (
            vec![502, 502, 502],
            200,
            Some("refusing"),
            Some(0),
            Some(3),
            true
        ),
        "{mirror_status}\n{}",
        other.text()
    );
}

#[test]
fn a_mirror_truncating_every_blob_gives_way_to_the_source_after_two_pulls() {
    let (source, mirror_backend) = (Registry::start(), Registry::start());
    let image = single_arch("truncating-mirror", &[2048, 200_000]);
    push(&image, &format!("{}/ns/app:v1", source.addr()));
    push(&image, &format!("{}/ns/app:v1", mirror_backend.addr()));
    let mirror = Throttle::start_cutting_every_blob(mirror_backend.endpoint());
    let proxy = Mirrorgate::start(
        &digest_mirror_rules(""),
        &[(SOURCE, &source.endpoint()), (MIRROR, &mirror.endpoint())],
        "",
    );
    let layer = &image.layers[1];
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    // Pulls until one gets the blob (at most five; a pull may also join a broken download).
    let served = (0..5).any(|_| {
        support::try_http_request("GET", &proxy.addr(), &path, &[], b"")
            .is_ok_and(|r| r.status == 200 && r.body == image.blob(layer))
    });
    // Two broken bodies give the mirror way; a request on a pooled connection the mirror closed
    // meanwhile is sent once more on a fresh one, so the mirror may see a third GET.
    let mirror_gets = mirror_backend.count("GET", &format!("/blobs/{layer}"));
    assert_eq!(
        (
            served,
            (2..=3).contains(&mirror_gets),
            source.count("GET", &format!("/blobs/{layer}")),
        ),
        (true, true, 1),
        "mirror GETs: {mirror_gets}\n{}",
        proxy.log()
    );
}
