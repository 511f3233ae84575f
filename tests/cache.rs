//! Caching between real clients and real Distribution registries: repeated pulls cost the
//! upstream nothing, concurrent pulls cost one fetch, and nothing unverified is ever stored.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::{Mirrorgate, Registry, http_get, push, single_arch};

const SOURCE: &str = "source.test";
const MIRROR: &str = "mirror.test";
const MIRROR_B: &str = "mirror-b.test";

fn rules(mirrors: &[&str]) -> String {
    support::mirrored_rules(SOURCE, mirrors)
}

fn files_in(dir: &Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(files_in(&path));
            } else {
                let size = entry.metadata().map(|m| m.len()).unwrap_or_default();
                files.push((path.display().to_string(), size));
            }
        }
    }
    files
}

#[test]
fn a_second_pull_succeeds_with_every_upstream_stopped() {
    let mut mirror = Registry::start();
    let image = single_arch("offline", &[2000, 50_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let by_digest = format!("{}/{SOURCE}/ns/app@{}", proxy.addr(), image.manifest_digest);
    let by_tag = format!("{}/{SOURCE}/ns/app:v1", proxy.addr());
    assert!(
        support::copy_to_layout(&by_digest, &first.path().join("d"), &[])
            .status
            .success()
    );
    assert!(
        support::copy_to_layout(&by_tag, &first.path().join("t"), &[])
            .status
            .success()
    );
    mirror.stop();
    let digest_again = support::copy_to_layout(&by_digest, &second.path().join("d"), &[]);
    let tag_again = support::copy_to_layout(&by_tag, &second.path().join("t"), &[]);
    assert_eq!(
        (digest_again.status.success(), tag_again.status.success()),
        (true, true),
        "{}{}",
        String::from_utf8_lossy(&digest_again.stderr),
        String::from_utf8_lossy(&tag_again.stderr)
    );
}

#[test]
fn repeated_tag_pulls_within_the_ttl_make_no_upstream_request() {
    let mirror = Registry::start();
    let image = single_arch("tag-ttl", &[2000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &mirror.endpoint())],
        "cache:\n  tag_ttl: 1h\n",
    );
    let path = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    assert_eq!(proxy.get(&path, &[]).status, 200);
    let mark = mirror.mark();
    let statuses: Vec<u16> = (0..10).map(|_| proxy.get(&path, &[]).status).collect();
    assert_eq!(
        (statuses, mirror.content_requests_since(mark)),
        (vec![200; 10], Vec::<String>::new())
    );
}

#[test]
fn a_moved_tag_is_seen_after_the_ttl() {
    let mirror = Registry::start();
    let old = single_arch("moved-old", &[2000]);
    let new = single_arch("moved-new", &[2000]);
    push(&old, &format!("{}/ns/app:v1", mirror.addr()));
    // Long enough that the push of the new image and the second pull fit in it on a loaded
    // machine.
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &mirror.endpoint())],
        "cache:\n  tag_ttl: 5s\n",
    );
    let path = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    let digest = |r: &support::HttpResponse| {
        r.header("docker-content-digest")
            .unwrap_or_default()
            .to_owned()
    };
    let before = digest(&proxy.get(&path, &[]));
    push(&new, &format!("{}/ns/app:v1", mirror.addr()));
    let within_ttl = digest(&proxy.get(&path, &[]));
    // Once the answer is older than the TTL, the next pull asks the mirror again.
    let mut after = within_ttl.clone();
    let _ = support::wait_until(Duration::from_secs(30), || {
        after = digest(&proxy.get(&path, &[]));
        Ok(after != within_ttl)
    });
    assert_eq!(
        (before, within_ttl, after),
        (
            old.manifest_digest.clone(),
            old.manifest_digest.clone(),
            new.manifest_digest.clone()
        )
    );
}

#[test]
fn an_unchanged_tag_is_revalidated_with_a_head_only() {
    let mirror = Registry::start();
    let image = single_arch("revalidate", &[2000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &mirror.endpoint())],
        "cache:\n  tag_ttl: 0s\n",
    );
    let path = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    assert_eq!(proxy.get(&path, &[]).status, 200);
    let mark = mirror.mark();
    assert_eq!(proxy.get(&path, &[]).status, 200);
    assert_eq!(
        mirror.content_requests_since(mark),
        vec!["HEAD /v2/ns/app/manifests/v1".to_owned()]
    );
}

#[test]
fn an_expired_tag_answer_is_served_when_every_source_fails() {
    let mut mirror = Registry::start();
    let image = single_arch("stale", &[2000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &mirror.endpoint())],
        "cache:\n  tag_ttl: 1s\n  stale_if_error: 1h\n",
    );
    let path = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    assert_eq!(proxy.get(&path, &[]).status, 200);
    mirror.stop();
    std::thread::sleep(Duration::from_millis(1200));
    let stale = proxy.get(&path, &[]);
    assert_eq!(
        (stale.status, stale.header("docker-content-digest")),
        (200, Some(image.manifest_digest.as_str()))
    );
}

#[test]
fn cached_manifests_survive_a_restart() {
    let mut mirror = Registry::start();
    let image = single_arch("restart", &[2000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let mut proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let path = format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest);
    assert_eq!(proxy.get(&path, &[]).status, 200);
    mirror.stop();
    proxy.restart();
    let again = proxy.get(&path, &[]);
    assert_eq!(
        (again.status, again.body),
        (200, image.manifest_bytes.clone())
    );
}

#[test]
fn a_cached_manifest_head_has_the_headers_of_the_first_answer() {
    let mirror = Registry::start();
    let image = single_arch("head-cached", &[2000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let path = format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest);
    let first = proxy.get(&path, &[]);
    let mark = mirror.mark();
    let head = support::http_request("HEAD", &proxy.addr(), &path, &[], b"");
    let pick = |r: &support::HttpResponse| {
        ["content-type", "content-length", "docker-content-digest"]
            .map(|h| r.header(h).map(str::to_owned))
    };
    assert_eq!(
        (pick(&head), mirror.content_requests_since(mark)),
        (pick(&first), Vec::<String>::new())
    );
}

#[test]
fn a_stored_blob_is_served_with_ranges_and_head_without_upstream_contact() {
    let mirror = Registry::start();
    let image = single_arch("blob-store", &[80_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let layer = &image.layers[0];
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    assert_eq!(proxy.get(&path, &[]).body, image.blob(layer));
    let mark = mirror.mark();
    let whole = proxy.get(&path, &[]);
    let part = proxy.get(&path, &[("Range", "bytes=100-199")]);
    let head = support::http_request("HEAD", &proxy.addr(), &path, &[], b"");
    assert_eq!(
        (
            whole.body == image.blob(layer),
            part.status,
            part.body,
            head.header("content-length").map(str::to_owned),
            mirror.content_requests_since(mark)
        ),
        (
            true,
            206,
            image.blob(layer)[100..200].to_vec(),
            Some(image.blob(layer).len().to_string()),
            Vec::<String>::new()
        )
    );
}

#[test]
fn concurrent_pulls_of_an_uncached_blob_make_one_upstream_fetch() {
    let mirror = Registry::start();
    let image = single_arch("coalesce", &[32 << 20]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let layer = image.layers[0].clone();
    let expected = image.blob(&layer);
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let mark = mirror.mark();
    let bodies: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|_| s.spawn(|| http_get(&proxy.addr(), &path, &[]).body == expected))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fetches = mirror
        .content_requests_since(mark)
        .into_iter()
        .filter(|r| r.starts_with("GET") && r.contains("/blobs/"))
        .count();
    assert_eq!((bodies, fetches), (vec![true; 24], 1));
}

#[test]
fn a_corrupt_blob_is_never_served_or_cached_and_the_next_pull_uses_the_next_source() {
    let mirror = Registry::start();
    let mirror_b = Registry::start();
    let image = single_arch("corrupt-cache", &[60_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    push(&image, &format!("{}/ns/app:v1", mirror_b.addr()));
    let layer = image.layers[0].clone();
    let mut bytes = image.blob(&layer);
    bytes[5000] ^= 0x55;
    std::fs::write(mirror.blob_data_path(&layer), bytes).unwrap();
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR, MIRROR_B]),
        &[
            (MIRROR, &mirror.endpoint()),
            (MIRROR_B, &mirror_b.endpoint()),
        ],
        "",
    );
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let first = support::try_http_request("GET", &proxy.addr(), &path, &[], b"");
    let stored_after_first = files_in(&proxy.cache_dir().join("blobs"));
    let second = proxy.get(&path, &[]);
    assert_eq!(
        (
            first.is_err(),
            stored_after_first.is_empty(),
            second.status,
            second.body == image.blob(&layer)
        ),
        (true, true, 200, true),
        "first: {:?}, stored: {stored_after_first:?}",
        first.map(|r| r.status)
    );
}

#[test]
fn eviction_keeps_the_store_under_max_size() {
    let mirror = Registry::start();
    let image = single_arch("evict", &[60_000, 60_000, 60_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &mirror.endpoint())],
        "cache:\n  max_size: 150KiB\n",
    );
    for layer in &image.layers {
        assert_eq!(
            proxy
                .get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[])
                .status,
            200
        );
    }
    // A client has the last byte before the blob is committed (fsync, rename) and eviction
    // follows the commit: wait for the last layer to be in the store and the store within its
    // bound.
    let blobs = proxy.cache_dir().join("blobs");
    let last = image.layers.last().expect("layers").to_string();
    let hex = last.trim_start_matches("sha256:").to_owned();
    support::wait_until(support::READY_TIMEOUT, || {
        let files = files_in(&blobs);
        let stored: u64 = files.iter().map(|(_, size)| size).sum();
        Ok(files.iter().any(|(name, _)| name.ends_with(&hex)) && stored <= 150 * 1024)
    })
    .unwrap_or_else(|e| {
        panic!(
            "the last layer is not in the store ({e}); store: {:?}; log:\n{}",
            files_in(&blobs),
            proxy.log()
        )
    });
    let stored: u64 = files_in(&blobs).iter().map(|(_, size)| size).sum();
    assert_eq!(
        (stored > 0, stored <= 150 * 1024),
        (true, true),
        "stored {stored} bytes"
    );
}

#[test]
fn a_download_killed_mid_way_leaves_nothing_behind_and_the_next_pull_is_whole() {
    let mirror = Registry::start();
    let image = single_arch("kill-9", &[2 << 20]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let throttle = support::Throttle::start(mirror.endpoint());
    let mut proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &format!("http://{}", throttle.addr))],
        "",
    );
    let layer = image.layers[0].clone();
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let addr = proxy.addr();
    let reader = std::thread::spawn({
        let path = path.clone();
        move || support::try_http_request("GET", &addr, &path, &[], b"")
    });
    // Once the download is under way (its temporary file exists; it takes over a second),
    // kill -9 the proxy mid-way.
    support::wait_until(Duration::from_secs(15), || {
        Ok(!files_in(&proxy.cache_dir().join("tmp")).is_empty())
    })
    .expect("the download started");
    proxy.stop();
    let cut = reader.join().unwrap();
    let tmp_before_restart = files_in(&proxy.cache_dir().join("tmp"));
    proxy.restart();
    let leftovers = files_in(&proxy.cache_dir().join("tmp"));
    let stored = files_in(&proxy.cache_dir().join("blobs"));
    let whole = proxy.get(&path, &[]);
    assert_eq!(
        (
            cut.as_ref()
                .map_or(true, |r| r.body.len() < image.blob(&layer).len()),
            tmp_before_restart.is_empty(),
            leftovers.is_empty(),
            stored.is_empty(),
            whole.body == image.blob(&layer)
        ),
        (true, false, true, true, true),
        "cut: {:?}, tmp before: {tmp_before_restart:?}, leftovers: {leftovers:?}, stored: {stored:?}",
        cut.map(|r| r.status)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_answer_is_not_reused_once_the_rules_route_the_tag_elsewhere() {
    use mirrorgate::config::{Config, RegistrySettings};
    use mirrorgate::proxy::Proxy;
    use mirrorgate::upstream::Upstream;

    let mirror_a = Registry::start();
    let mirror_b = Registry::start();
    let old = single_arch("route-old", &[2000]);
    let new = single_arch("route-new", &[2000]);
    push(&old, &format!("{}/ns/app:v1", mirror_a.addr()));
    push(&new, &format!("{}/ns/app:v1", mirror_b.addr()));
    let cache = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.cache.dir = cache.path().to_path_buf();
    config.cache.tag_ttl = Duration::from_secs(3600);
    for (host, registry) in [(MIRROR, &mirror_a), (MIRROR_B, &mirror_b)] {
        config.registries.insert(
            host.to_owned(),
            RegistrySettings {
                endpoint: Some(registry.endpoint().parse().unwrap()),
                insecure: true,
                ca_file: None,
            },
        );
    }
    let routed_to =
        |mirror: &str| mirrorgate::rules::load_str(&rules(&[mirror]), "rules.yaml").unwrap();
    let proxy = Arc::new(
        Proxy::new(
            Arc::new(routed_to(MIRROR)),
            Upstream::new(&config).unwrap(),
            &config,
        )
        .unwrap(),
    );
    let addr = support::serve_in_process(&proxy, config.limits.clone()).await;
    let digest_of_tag = || {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            http_get(&addr, &format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[])
                .header("docker-content-digest")
                .unwrap_or_default()
                .to_owned()
        })
    };
    let before = digest_of_tag().await.unwrap();
    proxy.replace_rules(Arc::new(routed_to(MIRROR_B)), &config);
    let after = digest_of_tag().await.unwrap();
    assert_eq!(
        (before, after),
        (old.manifest_digest.clone(), new.manifest_digest.clone())
    );
}

#[test]
fn a_cache_directory_that_cannot_be_written_still_serves_pulls() {
    let mirror = Registry::start();
    let image = single_arch("no-cache-dir", &[40_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    // A directory below a regular file can never be created, not even by root.
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &mirror.endpoint())],
        &format!("cache:\n  dir: {}/cache\n", blocker.path().display()),
    );
    let manifest = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    let layer = &image.layers[0];
    let blob = proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]);
    assert_eq!(
        (manifest.status, blob.status, blob.body == image.blob(layer)),
        (200, 200, true)
    );
}

#[test]
fn a_cached_blob_is_not_served_for_a_repository_that_does_not_hold_it() {
    let mirror = Registry::start();
    let image = single_arch("other-repo", &[20_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let other = single_arch("other-repo-b", &[1000]);
    push(&other, &format!("{}/ns/other:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let layer = &image.layers[0];
    let held = proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]);
    // The registry answers 404 for a blob of ns/app asked under ns/other; so must the proxy.
    let elsewhere = proxy.get(&format!("/v2/{SOURCE}/ns/other/blobs/{layer}"), &[]);
    let mark = mirror.mark();
    let again = proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]);
    assert_eq!(
        (
            held.status,
            elsewhere.status,
            again.status,
            mirror.content_requests_since(mark)
        ),
        (200, 404, 200, Vec::<String>::new())
    );
}

#[test]
fn a_blob_is_passed_through_uncached_when_the_disk_is_short_of_min_free_space() {
    let mirror = Registry::start();
    let image = single_arch("disk-full", &[200_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    // No disk has a petabyte free: to the store, the disk is full.
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &mirror.endpoint())],
        "cache:\n  min_free_space: 1048576GiB\n",
    );
    let layer = &image.layers[0];
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let first = proxy.get(&path, &[]);
    let second = proxy.get(&path, &[]);
    let stored = files_in(&proxy.cache_dir().join("blobs"));
    let failures = proxy
        .get("/metrics", &[])
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("mirrorgate_cache_store_failures_total "))
        .map(str::to_owned);
    assert_eq!(
        (
            first.status,
            first.body == image.blob(layer),
            second.body == image.blob(layer),
            stored,
            failures
        ),
        (200, true, true, Vec::new(), Some("2".to_owned()))
    );
}

#[test]
fn a_first_client_that_falls_behind_its_download_still_gets_every_byte() {
    let mirror = Registry::start();
    let image = single_arch("slow-leader", &[24 * 1024 * 1024]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let layer = &image.layers[0];
    let mut stream = std::net::TcpStream::connect(proxy.addr()).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "GET /v2/{SOURCE}/ns/app/blobs/{layer} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    // Not reading: the download runs ahead of this client (until the blob is stored), which
    // then reads the rest from the file.
    support::wait_until(Duration::from_secs(30), || {
        Ok(!files_in(&proxy.cache_dir().join("blobs")).is_empty())
    })
    .expect("the download finished while the client did not read");
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut answer).unwrap();
    let body_at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    assert_eq!(
        (
            answer.starts_with(b"HTTP/1.1 200"),
            answer[body_at..] == image.blob(layer)[..]
        ),
        (true, true),
        "{} bytes of body",
        answer.len() - body_at
    );
}

#[test]
fn a_range_from_the_first_byte_of_an_uncached_blob_is_served_verified() {
    let mirror = Registry::start();
    let image = single_arch("range-corrupt", &[60_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let layer = image.layers[0].clone();
    let mut bytes = image.blob(&layer);
    bytes[5000] ^= 0x55;
    std::fs::write(mirror.blob_data_path(&layer), &bytes).unwrap();
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let ranged =
        support::try_http_request("GET", &proxy.addr(), &path, &[("Range", "bytes=0-")], b"");
    // The corrupt bytes never reach the client whole: the response is cut before its end.
    let served_corrupt = ranged.as_ref().is_ok_and(|r| r.body == bytes);
    assert_eq!(
        (
            served_corrupt,
            files_in(&proxy.cache_dir().join("blobs")).is_empty()
        ),
        (false, true),
        "{:?}",
        ranged.map(|r| r.status)
    );
}

#[test]
fn a_head_answered_200_without_the_stored_length_does_not_confirm_a_cached_blob() {
    let mirror = Registry::start();
    let image = single_arch("affirmed-head", &[20_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let front = support::Throttle::start_affirming_blob_heads(mirror.endpoint());
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &front.endpoint())], "");
    let layer = &image.layers[0];
    let held = proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]);
    // The front answers HEAD 200 for ns/elsewhere too, but with a length that is not the blob's.
    let elsewhere = proxy.get(&format!("/v2/{SOURCE}/ns/elsewhere/blobs/{layer}"), &[]);
    assert_eq!(
        (
            held.status,
            elsewhere.status,
            elsewhere.body == image.blob(layer)
        ),
        (200, 502, false),
        "{}",
        elsewhere.text()
    );
}

#[test]
fn a_cached_blob_is_served_for_another_repository_that_holds_it() {
    let mirror = Registry::start();
    let image = single_arch("shared-layer", &[20_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    push(&image, &format!("{}/ns/shared:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let layer = &image.layers[0];
    let held = proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]);
    let mark = mirror.mark();
    let shared = proxy.get(&format!("/v2/{SOURCE}/ns/shared/blobs/{layer}"), &[]);
    // Confirmed by one HEAD, not downloaded again.
    assert_eq!(
        (
            held.status,
            shared.status,
            shared.body == image.blob(layer),
            mirror.count_since(mark, "GET", "/blobs/"),
            mirror.count_since(mark, "HEAD", "/blobs/")
        ),
        (200, 200, true, 0, 1)
    );
}

#[test]
fn a_cached_blob_named_by_a_manifest_the_other_repository_served_needs_no_confirmation() {
    let mirror = Registry::start();
    let image = single_arch("vouched-layer", &[20_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    push(&image, &format!("{}/ns/shared:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &mirror.endpoint())], "");
    let layer = &image.layers[0];
    let held = proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]);
    // A registry takes a manifest into a repository only with every blob it names there, so
    // the manifest ns/shared served vouches for the layer in ns/shared.
    let manifest = proxy.get(&format!("/v2/{SOURCE}/ns/shared/manifests/v1"), &[]);
    let mark = mirror.mark();
    let shared = proxy.get(&format!("/v2/{SOURCE}/ns/shared/blobs/{layer}"), &[]);
    assert_eq!(
        (
            held.status,
            manifest.status,
            shared.status,
            shared.body == image.blob(layer),
            mirror.content_requests_since(mark)
        ),
        (200, 200, 200, true, Vec::<String>::new())
    );
}

/// The value of the counter or gauge `series` on the proxy's `/metrics`.
fn metric(proxy: &Mirrorgate, series: &str) -> u64 {
    proxy
        .get("/metrics", &[])
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_download_that_fails_for_one_repository_is_not_the_answer_of_another_that_joined_it() {
    let mirror = Registry::start();
    let image = single_arch("joined-failure", &[40_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let front = support::Throttle::start_holding_blobs(mirror.endpoint());
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &front.endpoint())], "");
    let layer = &image.layers[0];
    std::thread::scope(|s| {
        // ns/missing does not hold the layer: its download will end in a 404.
        let missing = s.spawn(|| proxy.get(&format!("/v2/{SOURCE}/ns/missing/blobs/{layer}"), &[]));
        support::wait_until(support::READY_TIMEOUT, || Ok(front.held() == 1))
            .expect("the download for ns/missing reached the mirror");
        // ns/app holds it, and asks while that download is under way.
        let app = s.spawn(|| proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]));
        support::wait_until(support::READY_TIMEOUT, || {
            Ok(metric(&proxy, "mirrorgate_cache_coalesced_total") == 1)
        })
        .expect("ns/app joined the download under way");
        front.release_all();
        let (missing, app) = (missing.join().unwrap(), app.join().unwrap());
        assert_eq!(
            (
                missing.status,
                app.status,
                app.body == image.blob(layer),
                app.text().contains("ns/missing")
            ),
            (404, 200, true, false),
            "ns/app got: {}",
            app.text()
        );
    });
}

#[test]
fn a_head_passed_through_without_digest_or_length_confirms_nothing() {
    let mirror = Registry::start();
    let image = single_arch("bare-head", &[20_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let front = support::Throttle::start_bare_blob_heads(mirror.endpoint());
    let proxy = Mirrorgate::start(&rules(&[MIRROR]), &[(MIRROR, &front.endpoint())], "");
    let layer = &image.layers[0];
    let elsewhere = format!("/v2/{SOURCE}/ns/elsewhere/blobs/{layer}");
    // The front answers 200 for a HEAD of any blob in any repository, vouching for nothing.
    let head = support::http_request("HEAD", &proxy.addr(), &elsewhere, &[], b"");
    let held = proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]);
    let served = proxy.get(&elsewhere, &[]);
    let confirmed =
        std::fs::read_to_string(proxy.cache_dir().join("confirmed")).unwrap_or_default();
    assert_eq!(
        (
            head.status,
            held.status,
            served.body == image.blob(layer),
            confirmed.contains("ns/elsewhere")
        ),
        (200, 200, false, false),
        "{}: {}\nconfirmed:\n{confirmed}",
        served.status,
        served.text()
    );
}

#[test]
fn a_blob_larger_than_max_size_is_served_uncached_and_evicts_nothing() {
    let mirror = Registry::start();
    let image = single_arch("oversized", &[40_000, 40_000, 40_000, 200_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &mirror.endpoint())],
        "cache:\n  max_size: 150KiB\n",
    );
    let path = |layer: &str| format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let (small, big) = image.layers.split_at(3);
    let blobs = proxy.cache_dir().join("blobs");
    for layer in small {
        assert_eq!(proxy.get(&path(layer), &[]).status, 200);
    }
    support::wait_until(support::READY_TIMEOUT, || Ok(files_in(&blobs).len() == 3))
        .expect("the small layers are stored");
    let served = proxy.get(&path(&big[0]), &[]);
    // A download is committed after its client has the last byte; a HEAD right after waits
    // for that commit.
    let head = support::http_request("HEAD", &proxy.addr(), &path(&big[0]), &[], b"");
    let mut stored: Vec<u64> = files_in(&blobs).into_iter().map(|(_, size)| size).collect();
    stored.sort_unstable();
    let mut small_sizes: Vec<u64> = small.iter().map(|l| image.blob(l).len() as u64).collect();
    small_sizes.sort_unstable();
    let mark = mirror.mark();
    let again: Vec<u16> = small
        .iter()
        .map(|layer| proxy.get(&path(layer), &[]).status)
        .collect();
    assert_eq!(
        (
            served.status,
            served.body == image.blob(&big[0]),
            head.status,
            stored,
            again,
            mirror.count_since(mark, "GET", "/blobs/"),
        ),
        (200, true, 200, small_sizes, vec![200; 3], 0)
    );
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped; `None` (with the
/// reason printed) where mounting is not allowed.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(SmallDisk { dir }),
            Ok(output) => {
                println!(
                    "skipped: cannot mount a tmpfs ({})",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                println!("skipped: cannot run mount ({error})");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_disk_that_fills_mid_download_costs_the_cache_not_the_pull() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let mirror = Registry::start();
    let image = single_arch("disk-fills", &[4 << 20]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    // Sent without a length, the blob cannot be reserved on disk up front: the disk fills
    // while it streams.
    let front = support::Throttle::start_unsized_blobs(mirror.endpoint());
    let cache = disk.dir.path().join("cache");
    let proxy = Mirrorgate::start(
        &rules(&[MIRROR]),
        &[(MIRROR, &front.endpoint())],
        &format!("cache:\n  dir: {}\n  min_free_space: 0\n", cache.display()),
    );
    let layer = &image.layers[0];
    let pulled = support::try_http_request(
        "GET",
        &proxy.addr(),
        &format!("/v2/{SOURCE}/ns/app/blobs/{layer}"),
        &[],
        b"",
    );
    // The partial file is removed once the download has ended, just after the last byte.
    let _ = support::wait_until(support::READY_TIMEOUT, || {
        Ok(files_in(&cache.join("tmp")).is_empty())
    });
    let left_behind = files_in(&cache.join("tmp"));
    let stored = files_in(&cache.join("blobs"));
    assert_eq!(
        (
            pulled
                .as_ref()
                .map(|r| (r.status, r.body == image.blob(layer)))
                .map_err(ToString::to_string),
            left_behind,
            stored,
            metric(&proxy, "mirrorgate_cache_store_failures_total")
        ),
        (Ok((200, true)), Vec::new(), Vec::new(), 1),
        "log:\n{}",
        proxy.log()
    );
}
