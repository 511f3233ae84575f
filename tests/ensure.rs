//! Fetching without HTTP: the in-process API a warm-up job calls ("make sure this manifest /
//! blob is cached, along the rules") fills the caches, so that a client then pulls without any
//! upstream contact.

use crate::support;

use std::sync::Arc;

use mirrorgate::config::{Config, RegistrySettings};
use mirrorgate::proxy::Proxy;
use mirrorgate::reference::{Digest, Reference};
use mirrorgate::upstream::Upstream;
use support::{Registry, http_get, push, single_arch};

const SOURCE: &str = "source.test";
const MIRROR: &str = "mirror.test";

/// Digest and tag rules sending `source.test/ns` to the mirror, the source never contacted.
fn rules() -> String {
    support::mirrored_rules(SOURCE, &[MIRROR])
}

/// A proxy in-process with the test's rules, `mirror` as the mirror registry and its cache in
/// `cache`.
fn proxy_with_mirror(mirror: &Registry, cache: &std::path::Path) -> Arc<Proxy> {
    proxy_with(&mirror.endpoint(), cache, |_| {})
}

/// [`proxy_with_mirror`] with the mirror at `endpoint` and the configuration `adjust` made.
fn proxy_with(
    endpoint: &str,
    cache: &std::path::Path,
    adjust: impl FnOnce(&mut Config),
) -> Arc<Proxy> {
    let mut config = Config::default();
    config.cache.dir = cache.to_path_buf();
    config.registries.insert(
        MIRROR.to_owned(),
        RegistrySettings {
            endpoint: Some(endpoint.parse().unwrap()),
            insecure: true,
            ca_file: None,
        },
    );
    adjust(&mut config);
    let rule_set = mirrorgate::rules::load_str(&rules(), "rules.yaml").unwrap();
    Arc::new(Proxy::new(Arc::new(rule_set), Upstream::new(&config).unwrap(), &config).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_api_caches_a_manifest_and_its_blobs_along_the_rules() {
    let mirror = Registry::start();
    let image = single_arch("ensure", &[3_000, 300_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let cache = tempfile::tempdir().unwrap();
    let proxy = proxy_with_mirror(&mirror, cache.path());

    // What a warm-up job does: the manifest by tag, then every blob it references.
    let tag = Reference::parse_normalized(&format!("{SOURCE}/ns/app:v1")).unwrap();
    let digest = proxy.ensure_manifest(&tag).await.unwrap();
    let mut sizes = Vec::new();
    for blob in image.configs.iter().chain(&image.layers) {
        let blob: Digest = blob.parse().unwrap();
        sizes.push(proxy.ensure_blob(&tag, &blob).await.unwrap());
    }
    let expected_sizes: Vec<u64> = image
        .configs
        .iter()
        .chain(&image.layers)
        .map(|blob| image.blob(blob).len() as u64)
        .collect();

    // A client now gets all of it from the caches: the mirror sees no request.
    let addr = support::serve_in_process(&proxy, Config::default().limits).await;
    let mark = mirror.mark();
    let paths: Vec<String> = std::iter::once(format!("/v2/{SOURCE}/ns/app/manifests/v1"))
        .chain(
            image
                .configs
                .iter()
                .chain(&image.layers)
                .map(|blob| format!("/v2/{SOURCE}/ns/app/blobs/{blob}")),
        )
        .collect();
    let served = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|path| {
                let response = http_get(&addr, path, &[]);
                (response.status, response.body.len() as u64)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let expected_served: Vec<(u16, u64)> =
        std::iter::once((200, image.manifest_bytes.len() as u64))
            .chain(expected_sizes.iter().map(|size| (200, *size)))
            .collect();
    assert_eq!(
        (
            digest.to_string(),
            sizes,
            served,
            mirror.content_requests_since(mark)
        ),
        (
            image.manifest_digest.clone(),
            expected_sizes,
            expected_served,
            Vec::<String>::new()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_api_follows_the_rules_and_reports_what_is_missing() {
    let mirror = Registry::start();
    let cache = tempfile::tempdir().unwrap();
    let proxy = proxy_with_mirror(&mirror, cache.path());
    let mark = mirror.mark();
    let missing = Reference::parse_normalized(&format!("{SOURCE}/ns/absent:v1")).unwrap();
    let error = proxy
        .ensure_manifest(&missing)
        .await
        .expect_err("nothing to fetch")
        .to_string();
    // The mirror was asked (the source is never contacted under NeverContactSource).
    let asked = mirror
        .content_requests_since(mark)
        .iter()
        .any(|r| r.contains("/v2/ns/absent/manifests/v1"));
    assert_eq!(
        (error.contains("not found"), asked),
        (true, true),
        "{error}"
    );
}

#[test]
fn a_scoped_client_queued_for_a_slot_does_not_get_a_blob_a_warm_job_streams_for_another_repository()
{
    let mirror = Registry::start();
    let image = single_arch("queued-join", &[30_000, 300_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let (first, warmed) = (image.layers[0].clone(), image.layers[1].clone());
    let front = support::Throttle::start_holding_blobs(mirror.endpoint());
    let cache = tempfile::tempdir().unwrap();
    let tokens = cache.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "tokens:\n  - name: everything\n    token: {EVERYTHING}\n  - name: other\n    token: {OTHER}\n    scopes: [\"{SOURCE}/ns/other\"]\n"
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One client fetch slot: a client finding it taken waits in the queue.
    let proxy = proxy_with(&front.endpoint(), &cache.path().join("cache"), |config| {
        config.limits.max_upstream_fetches = 1;
        config.clients.mode = mirrorgate::access::ClientMode::Token;
        config.clients.tokens_file = Some(tokens);
    });
    let addr = runtime.block_on(support::serve_in_process(&proxy, Config::default().limits));
    let get = |path: String, token: &'static str| {
        let addr = addr.clone();
        std::thread::spawn(move || {
            http_get(
                &addr,
                &path,
                &[("Authorization", &format!("Bearer {token}"))],
            )
        })
    };
    let wait = |what: &str, ready: &dyn Fn() -> bool| {
        support::wait_until(support::READY_TIMEOUT, || Ok(ready()))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    };
    // A client of ns/app takes the slot, its download held at the mirror.
    let holder = get(format!("/v2/{SOURCE}/ns/app/blobs/{first}"), EVERYTHING);
    wait("the first download reached the mirror", &|| {
        front.held() == 1
    });
    // The scoped client asks ns/other, which does not hold the layer, and queues for the slot.
    let scoped = get(format!("/v2/{SOURCE}/ns/other/blobs/{warmed}"), OTHER);
    wait("the scoped client queued", &|| {
        let (_, text) = proxy.metrics().exposition(None);
        text.lines()
            .any(|line| line == "mirrorgate_upstream_fetches_queued 1")
    });
    // Meanwhile a warm job fetches the layer for ns/app, on a slot of its own.
    let warm = {
        let (proxy, warmed) = (proxy.clone(), warmed.parse::<Digest>().unwrap());
        let app = Reference::parse_normalized(&format!("{SOURCE}/ns/app:v1")).unwrap();
        runtime.spawn(async move { proxy.ensure_blob(&app, &warmed).await })
    };
    wait("the warm job's download reached the mirror", &|| {
        front.held() == 2
    });
    // The slot frees up; the scoped client finds the warm job's download under way.
    front.release(&first);
    wait("the scoped client joined the warm job's download", &|| {
        proxy
            .cache_stats()
            .coalesced
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    });
    front.release_all();
    let (holder, scoped) = (holder.join().unwrap(), scoped.join().unwrap());
    let warmed_size = runtime.block_on(warm).unwrap();
    assert_eq!(
        (
            holder.status,
            warmed_size.ok(),
            scoped.status,
            scoped.body == image.blob(&warmed)
        ),
        (200, Some(image.blob(&warmed).len() as u64), 404, false),
        "{}",
        scoped.text()
    );
}

const EVERYTHING: &str = "mg-queued-join-everything-0123";
const OTHER: &str = "mg-queued-join-other-0123456789";
