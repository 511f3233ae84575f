//! The shared cache tier end to end: mirrorgate replicas (separate processes, each with its own
//! local cache) on one bucket of a real S3-compatible server (SeaweedFS), real registries as
//! upstreams and skopeo as the client. Every test starts its own server; they run one at a time
//! (see `support::SeaweedFs`).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path as FsPath;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use support::{
    Image, Mirrorgate, Registry, SeaweedFs, copy_to_layout, http_get, layouts_identical, push,
    sha256_digest, single_arch, try_http_request, wait_until,
};
use tempfile::TempDir;

const SOURCE: &str = "source.test";
const MIRROR: &str = "mirror.test";
/// Long enough for background uploads on a loaded machine; the waits end as soon as the
/// condition holds.
const UPLOADED: Duration = Duration::from_secs(60);

fn rules() -> String {
    support::mirrored_rules(SOURCE, &[MIRROR])
}

/// A server, a credentials file and a record key for it, and the replicas' configuration.
struct Bucket {
    server: SeaweedFs,
    dir: TempDir,
}

impl Bucket {
    fn start() -> Bucket {
        let (server, dir) = SeaweedFs::start_with_replica_files();
        Bucket { server, dir }
    }

    fn credentials(&self) -> std::path::PathBuf {
        self.dir.path().join(SeaweedFs::CREDENTIALS_FILE)
    }

    /// The `cache.shared` configuration of a replica, on `endpoint` (the server's unless given),
    /// sealing records with the test key.
    fn config(&self, endpoint: Option<&str>, bucket: &str, credentials: &FsPath) -> String {
        let key_file = self.dir.path().join(SeaweedFs::RECORD_KEY_FILE);
        self.config_with_key(endpoint, bucket, credentials, Some(&key_file))
    }

    /// [`config`](Self::config) with the record keys in `key_file` (none: no key).
    fn config_with_key(
        &self,
        endpoint: Option<&str>,
        bucket: &str,
        credentials: &FsPath,
        key_file: Option<&FsPath>,
    ) -> String {
        let key_file = key_file.map_or_else(String::new, |path| {
            format!("    key_file: {}\n", path.display())
        });
        format!(
            "cache:\n  shared:\n{key_file}    s3:\n      bucket: {bucket}\n      endpoint: {}\n      path_style: true\n      insecure: true\n      credentials_file: {}\n",
            endpoint.map_or_else(|| self.server.endpoint(), str::to_owned),
            credentials.display()
        )
    }

    /// A replica on the bucket, with `upstream` as the mirror.
    fn replica(&self, upstream: &Registry) -> Mirrorgate {
        self.replica_via(upstream, None)
    }

    fn replica_via(&self, upstream: &Registry, endpoint: Option<&str>) -> Mirrorgate {
        Mirrorgate::start(
            &rules(),
            &[(MIRROR, &upstream.endpoint())],
            &self.config(endpoint, SeaweedFs::BUCKET, &self.credentials()),
        )
    }

    /// A replica on the bucket whose record keys are in `key_file` (none: no key).
    fn replica_with_key(&self, upstream: &Registry, key_file: Option<&FsPath>) -> Mirrorgate {
        Mirrorgate::start(
            &rules(),
            &[(MIRROR, &upstream.endpoint())],
            &self.config_with_key(None, SeaweedFs::BUCKET, &self.credentials(), key_file),
        )
    }

    /// A plain S3 client on the bucket, to look at and tamper with objects behind mirrorgate.
    fn raw(&self) -> AmazonS3 {
        self.server.client()
    }

    /// The keys under `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String> {
        block_on(async {
            let mut keys: Vec<String> = self
                .raw()
                .list(Some(&Path::from(prefix)))
                .map_ok(|meta| meta.location.to_string())
                .try_collect()
                .await
                .unwrap_or_default();
            keys.sort();
            keys
        })
    }

    /// The bytes of object `key`, `None` if it is absent.
    fn object(&self, key: &str) -> Option<Vec<u8>> {
        block_on(async {
            let result = self.raw().get(&Path::from(key)).await.ok()?;
            Some(result.bytes().await.ok()?.to_vec())
        })
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        block_on(async {
            self.raw()
                .put(&Path::from(key), PutPayload::from(bytes))
                .await
                .expect("put")
        });
    }

    /// Waits until the bucket holds every blob and the manifest of `image`, with the right bytes,
    /// and the confirmation of each for `repository`.
    fn wait_for_image(&self, image: &Image, repository: &str) {
        let mut objects: Vec<(String, String)> = image
            .blobs
            .iter()
            .map(|digest| (blob_key(digest), digest.clone()))
            .collect();
        objects.push((
            manifest_key(&image.manifest_digest),
            image.manifest_digest.clone(),
        ));
        let result = wait_until(UPLOADED, || {
            Ok(objects.iter().all(|(key, digest)| {
                self.object(key)
                    .is_some_and(|bytes| sha256_digest(&bytes) == *digest)
                    && self.object(&marker_key(repository, digest)).is_some()
            }))
        });
        result.unwrap_or_else(|why| {
            panic!(
                "the bucket does not hold {}: {why}; keys: {:?}",
                image.manifest_digest,
                self.keys("")
            )
        });
    }
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("a sha256 digest")
}

fn blob_key(digest: &str) -> String {
    format!("blobs/sha256/{}", hex(digest))
}

fn manifest_key(digest: &str) -> String {
    format!("manifests/sha256/{}", hex(digest))
}

fn marker_key(repository: &str, digest: &str) -> String {
    format!("repos/{repository}/sha256/{}", hex(digest))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The value of counter `name` (without `mirrorgate_` and `_total`) on `proxy`'s `/metrics`.
fn counter(proxy: &Mirrorgate, name: &str) -> u64 {
    series_sum(proxy, &format!("mirrorgate_{name}_total "))
}

/// The sum of the series on `proxy`'s `/metrics` whose line starts with `prefix` (a name and
/// a space, or a name and some of its labels).
fn series_sum(proxy: &Mirrorgate, prefix: &str) -> u64 {
    let text = proxy.get("/metrics", &[]).text();
    text.lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// The records of `kind` (`marker`, `tag`) `proxy` found in the bucket and did not trust.
fn rejected_records(proxy: &Mirrorgate, kind: &str) -> u64 {
    series_sum(
        proxy,
        &format!("mirrorgate_shared_rejected_records_total{{kind=\"{kind}\"}} "),
    )
}

/// `GET` requests for each blob at `registry` since `mark`.
fn blob_gets(registry: &Registry, mark: usize) -> BTreeMap<String, usize> {
    let mut gets = BTreeMap::new();
    for request in registry.requests_since(mark) {
        if request.method == "GET"
            && let Some((_, digest)) = request.path.split_once("/blobs/")
        {
            *gets.entry(digest.to_owned()).or_default() += 1;
        }
    }
    gets
}

/// The lines of `proxy`'s log about blobs and problems, for a failure message.
fn warnings(proxy: &Mirrorgate) -> String {
    proxy
        .log()
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR") || line.contains("blob"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn pull(proxy: &Mirrorgate, image: &Image, dest: &FsPath) -> std::process::Output {
    copy_to_layout(
        &format!("{}/{SOURCE}/ns/app@{}", proxy.addr(), image.manifest_digest),
        dest,
        &[],
    )
}

fn succeeded(output: &std::process::Output) -> Result<(), String> {
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn a_second_replica_pulls_byte_for_byte_from_the_shared_cache_with_every_upstream_stopped() {
    let bucket = Bucket::start();
    let mut mirror = Registry::start();
    let image = single_arch("shared-a-b", &[3000, 2 << 20, 9 << 20]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let a = bucket.replica(&mirror);
    let b = bucket.replica(&mirror);
    let dir = tempfile::tempdir().unwrap();
    let by_tag = |proxy: &Mirrorgate| format!("{}/{SOURCE}/ns/app:v1", proxy.addr());
    succeeded(&pull(&a, &image, &dir.path().join("a"))).expect("pull through A");
    succeeded(&copy_to_layout(&by_tag(&a), &dir.path().join("a-tag"), &[]))
        .expect("pull by tag through A");
    bucket.wait_for_image(&image, &format!("{SOURCE}/ns/app"));
    // The tag's answer is recorded for replicas that never saw the tag.
    wait_until(UPLOADED, || {
        Ok(bucket.object(&format!("tags/{SOURCE}/ns/app/v1")).is_some())
    })
    .expect("the tag answer is recorded");
    mirror.stop();
    let through_b = pull(&b, &image, &dir.path().join("b"));
    let by_tag_through_b = copy_to_layout(&by_tag(&b), &dir.path().join("b-tag"), &[]);
    assert_eq!(
        (
            succeeded(&through_b),
            layouts_identical(&dir.path().join("a"), &dir.path().join("b")),
            succeeded(&by_tag_through_b),
            layouts_identical(&dir.path().join("a-tag"), &dir.path().join("b-tag")),
            counter(&b, "shared_hits") >= 4,
            counter(&b, "shared_corrupt_objects"),
        ),
        (Ok(()), Ok(()), Ok(()), Ok(()), true, 0),
        "B's log:\n{}",
        b.log()
    );
}

#[test]
fn concurrent_cold_pulls_through_two_replicas_fetch_each_blob_upstream_at_most_once_per_replica() {
    let bucket = Bucket::start();
    let mirror = Registry::start();
    let image = single_arch("shared-concurrent", &[1 << 20, 12 << 20]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let a = bucket.replica(&mirror);
    let b = bucket.replica(&mirror);
    let dir = tempfile::tempdir().unwrap();
    let mark = mirror.mark();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let proxy = if i % 2 == 0 { &a } else { &b };
                let dest = dir.path().join(format!("pull-{i}"));
                let image = &image;
                s.spawn(move || succeeded(&pull(proxy, image, &dest)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all_identical: Vec<Result<(), String>> = (1..16)
        .map(|i| {
            layouts_identical(
                &dir.path().join("pull-0"),
                &dir.path().join(format!("pull-{i}")),
            )
        })
        .collect();
    bucket.wait_for_image(&image, &format!("{SOURCE}/ns/app"));
    let most_gets = blob_gets(&mirror, mark).into_values().max().unwrap_or(0);
    let wanted: BTreeSet<String> = image.blobs.iter().map(|d| blob_key(d)).collect();
    let stored: BTreeSet<String> = bucket.keys("blobs").into_iter().collect();
    assert_eq!(
        (
            results,
            all_identical,
            most_gets <= 2,
            stored,
            bucket.keys("manifests").len()
        ),
        (vec![Ok(()); 16], vec![Ok(()); 15], true, wanted, 1),
        "blob GETs upstream: {:?}\nA: {}\nB: {}",
        blob_gets(&mirror, mark),
        warnings(&a),
        warnings(&b)
    );
}

/// A TCP forwarder to `backend` that lets requests (the uploads) through slowly: 16 KiB every
/// 10 ms. Answers come back at full speed. Stops accepting when dropped.
struct SlowUploads {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl SlowUploads {
    fn start(backend: &str) -> SlowUploads {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let backend = backend.to_owned();
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&backend) else {
                            continue;
                        };
                        client.set_nonblocking(false).ok();
                        forward(client, server, stopping.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SlowUploads { addr, stop }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowUploads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn forward(client: TcpStream, server: TcpStream, stop: Arc<AtomicBool>) {
    let (mut client_in, mut server_out) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let stopping = stop.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 << 10];
        while !stopping.load(Ordering::Relaxed) {
            match client_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if server_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(std::net::Shutdown::Write);
    });
}

#[test]
fn a_replica_killed_during_an_upload_leaves_no_object_and_the_next_pull_is_whole() {
    let bucket = Bucket::start();
    let mirror = Registry::start();
    let image = single_arch("shared-kill", &[20 << 20]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let slow = SlowUploads::start(&bucket.server.endpoint().replace("http://", ""));
    let mut a = bucket.replica_via(&mirror, Some(&slow.endpoint()));
    let layer = image.layers[0].clone();
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let first = http_get(&a.addr(), &path, &[]);
    // The upload follows the download, in the background, at 1.6 MB/s: kill -9 while it runs.
    wait_until(UPLOADED, || Ok(counter(&a, "shared_bytes_written") > 0))
        .expect("the upload started");
    let uploads_before_kill = counter(&a, "shared_uploads");
    a.stop();
    drop(slow);
    let visible_after_kill = bucket.object(&blob_key(&layer)).is_some();
    let b = bucket.replica(&mirror);
    let next = http_get(&b.addr(), &path, &[]);
    let stored = wait_until(UPLOADED, || Ok(bucket.object(&blob_key(&layer)).is_some()))
        .map(|()| sha256_digest(&bucket.object(&blob_key(&layer)).unwrap_or_default()) == layer);
    assert_eq!(
        (
            first.body == image.blob(&layer),
            uploads_before_kill,
            visible_after_kill,
            next.body == image.blob(&layer),
            stored
        ),
        (true, 0, false, true, Ok(true))
    );
}

#[test]
fn a_corrupt_shared_object_is_never_served_and_is_refetched_and_replaced() {
    let bucket = Bucket::start();
    let mirror = Registry::start();
    let image = single_arch("shared-corrupt", &[4000, 3 << 20]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let a = bucket.replica(&mirror);
    let dir = tempfile::tempdir().unwrap();
    succeeded(&pull(&a, &image, &dir.path().join("a"))).expect("pull through A");
    bucket.wait_for_image(&image, &format!("{SOURCE}/ns/app"));
    // One object shorter than its blob, one of the same length with other bytes.
    let (short, same_length) = (image.layers[0].clone(), image.layers[1].clone());
    bucket.put(&blob_key(&short), b"not the layer".to_vec());
    let mut flipped = image.blob(&same_length);
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    bucket.put(&blob_key(&same_length), flipped.clone());
    let b = bucket.replica(&mirror);
    // A client reads the manifest first: it declares each blob's size.
    let manifest = b.get(
        &format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest),
        &[("Accept", support::OCI_MANIFEST_MEDIA_TYPE)],
    );
    assert_eq!(manifest.status, 200);
    let path = |digest: &str| format!("/v2/{SOURCE}/ns/app/blobs/{digest}");
    // The short object is known bad before a byte is sent: the pull is served from upstream.
    let short_pull = http_get(&b.addr(), &path(&short), &[]);
    // The other is found bad at its end: the response breaks off without its last bytes; the
    // next request gets the blob refetched from upstream.
    let first = try_http_request("GET", &b.addr(), &path(&same_length), &[], b"");
    let second = http_get(&b.addr(), &path(&same_length), &[]);
    let replaced = wait_until(UPLOADED, || {
        Ok(bucket
            .object(&blob_key(&short))
            .is_some_and(|bytes| sha256_digest(&bytes) == short)
            && bucket
                .object(&blob_key(&same_length))
                .is_some_and(|bytes| sha256_digest(&bytes) == same_length))
    });
    assert_eq!(
        (
            short_pull.body == image.blob(&short),
            first
                .as_ref()
                .map_or(true, |r| r.body != flipped && r.body.len() < flipped.len()),
            second.body == image.blob(&same_length),
            replaced,
            counter(&b, "shared_corrupt_objects"),
            counter(&b, "shared_replaced_objects"),
        ),
        (true, true, true, Ok(()), 2, 2),
        "B's log:\n{}",
        b.log()
    );
}

#[test]
fn pulls_keep_working_while_the_s3_server_is_stopped_and_uploads_resume_when_it_returns() {
    let mut bucket = Bucket::start();
    let mirror = Registry::start();
    let during = single_arch("shared-outage", &[5000, 1 << 20]);
    let after = single_arch("shared-after", &[6000, 1 << 20]);
    push(&during, &format!("{}/ns/app:during", mirror.addr()));
    push(&after, &format!("{}/ns/app:after", mirror.addr()));
    let a = bucket.replica(&mirror);
    let dir = tempfile::tempdir().unwrap();
    bucket.server.stop();
    let pulled_during = succeeded(&pull(&a, &during, &dir.path().join("during")));
    let again_during = succeeded(&pull(&a, &during, &dir.path().join("again")));
    let ready = a.get("/readyz", &[]).status;
    let failures = counter(&a, "shared_errors") + counter(&a, "shared_upload_failures");
    bucket.server.restart();
    let pulled_after = succeeded(&pull(&a, &after, &dir.path().join("after")));
    bucket.wait_for_image(&after, &format!("{SOURCE}/ns/app"));
    assert_eq!(
        (
            pulled_during,
            again_during,
            ready,
            failures > 0,
            pulled_after
        ),
        (Ok(()), Ok(()), 200, true, Ok(())),
        "log:\n{}",
        a.log()
    );
}

fn check_output(proxy: &Mirrorgate) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .arg("check")
        .arg("--config")
        .arg(proxy.config_path())
        .output()
        .expect("run mirrorgate check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout),
    )
}

#[test]
fn wrong_credentials_or_a_missing_bucket_are_a_clear_error_and_pulls_are_still_served() {
    let bucket = Bucket::start();
    let mirror = Registry::start();
    let image = single_arch("shared-misconfigured", &[7000, 100_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let wrong_secret = bucket.dir.path().join("wrong");
    SeaweedFs::write_credentials(&wrong_secret, "not-the-secret");
    let denied = Mirrorgate::start(
        &rules(),
        &[(MIRROR, &mirror.endpoint())],
        &bucket.config(None, SeaweedFs::BUCKET, &wrong_secret),
    );
    let missing = Mirrorgate::start(
        &rules(),
        &[(MIRROR, &mirror.endpoint())],
        &bucket.config(None, "no-such-bucket", &bucket.credentials()),
    );
    let dir = tempfile::tempdir().unwrap();
    let logged = |proxy: &Mirrorgate, needle: &str| {
        wait_until(Duration::from_secs(30), || Ok(proxy.log().contains(needle)))
    };
    let denied_logged = logged(&denied, "refused access");
    let missing_logged = logged(&missing, "does not exist");
    let pulls = (
        succeeded(&pull(&denied, &image, &dir.path().join("denied"))),
        succeeded(&pull(&missing, &image, &dir.path().join("missing"))),
    );
    let (denied_ok, denied_says) = check_output(&denied);
    let (missing_ok, missing_says) = check_output(&missing);
    assert_eq!(
        (
            denied_logged,
            missing_logged,
            pulls,
            (denied_ok, denied_says.contains("refused access")),
            (missing_ok, missing_says.contains("does not exist")),
            bucket.keys("").len(),
        ),
        (
            Ok(()),
            Ok(()),
            (Ok(()), Ok(())),
            (false, true),
            (false, true),
            0
        ),
        "check said:\n{denied_says}\n{missing_says}"
    );
}

#[test]
fn a_marker_planted_for_another_repository_does_not_make_a_replica_serve_it_the_content() {
    let bucket = Bucket::start();
    let mirror = Registry::start();
    let image = single_arch("shared-planted", &[4000, 5000]);
    let other = single_arch("shared-planted-other", &[6000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    // The other repository exists upstream, without the image's layers.
    push(&other, &format!("{}/ns/other:v1", mirror.addr()));
    let a = bucket.replica(&mirror);
    let dir = tempfile::tempdir().unwrap();
    succeeded(&pull(&a, &image, &dir.path().join("a"))).expect("pull through A");
    let app = format!("{SOURCE}/ns/app");
    bucket.wait_for_image(&image, &app);
    // Whoever can write the bucket grants ns/other the layers: an empty marker (as mirrorgate
    // wrote them before they were sealed) for one, A's marker for ns/app copied for the other.
    let (planted, copied) = (&image.layers[0], &image.layers[1]);
    let other_repository = format!("{SOURCE}/ns/other");
    bucket.put(&marker_key(&other_repository, planted), Vec::new());
    let sealed = bucket
        .object(&marker_key(&app, copied))
        .expect("A's marker");
    bucket.put(&marker_key(&other_repository, copied), sealed);
    let b = bucket.replica(&mirror);
    let answers = [planted, copied].map(|digest| {
        b.get(&format!("/v2/{other_repository}/blobs/{digest}"), &[])
            .status
    });
    assert_eq!(
        (answers, rejected_records(&b, "marker") >= 2),
        ([404, 404], true),
        "B's log:\n{}",
        warnings(&b)
    );
}

#[test]
fn a_rewritten_tag_record_does_not_make_a_replica_serve_another_manifest() {
    let bucket = Bucket::start();
    let mut mirror = Registry::start();
    let image = single_arch("shared-tag", &[3000]);
    let secret = single_arch("shared-tag-secret", &[3500]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    push(&secret, &format!("{}/ns/secret:v1", mirror.addr()));
    let a = bucket.replica(&mirror);
    // A client taking every type: only such clients' tag answers are recorded in the bucket.
    let accept = [("Accept", support::CONTAINERS_IMAGE_ACCEPT)];
    let by_tag =
        |proxy: &Mirrorgate| proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &accept);
    let secret_path = format!(
        "/v2/{SOURCE}/ns/secret/manifests/{}",
        secret.manifest_digest
    );
    assert_eq!(
        (by_tag(&a).status, a.get(&secret_path, &accept).status),
        (200, 200)
    );
    let tag_key = format!("tags/{SOURCE}/ns/app/v1");
    wait_until(UPLOADED, || {
        Ok(bucket.object(&tag_key).is_some()
            && bucket
                .object(&manifest_key(&secret.manifest_digest))
                .is_some())
    })
    .expect("the tag answer and the other repository's manifest are in the bucket");
    // Whoever can write the bucket points the tag at the other repository's manifest, keeping
    // the rest of the record (route, time, MAC).
    let record = String::from_utf8(bucket.object(&tag_key).unwrap()).expect("text");
    let rewritten = record.replacen(&image.manifest_digest, &secret.manifest_digest, 1);
    bucket.put(&tag_key, rewritten.into_bytes());
    mirror.stop();
    let b = bucket.replica(&mirror);
    let answer = by_tag(&b);
    assert_eq!(
        (
            answer.status,
            answer.header("Docker-Content-Digest"),
            rejected_records(&b, "tag") >= 1
        ),
        (502, None, true),
        "B's log:\n{}",
        warnings(&b)
    );
}

#[test]
fn replicas_trust_the_markers_sealed_with_their_key_and_not_those_of_another_key() {
    let bucket = Bucket::start();
    let mirror = Registry::start();
    let image = single_arch("shared-keys", &[4000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let a = bucket.replica(&mirror);
    let dir = tempfile::tempdir().unwrap();
    succeeded(&pull(&a, &image, &dir.path().join("a"))).expect("pull through A");
    bucket.wait_for_image(&image, &format!("{SOURCE}/ns/app"));
    let other_key = bucket.dir.path().join("other-key");
    SeaweedFs::write_record_key(&other_key, "another-test-record-key-0123456789abcdef");
    let replicas = [
        bucket.replica(&mirror),
        bucket.replica_with_key(&mirror, Some(&other_key)),
        bucket.replica_with_key(&mirror, None),
    ];
    let layer = &image.layers[0];
    // Each serves the layer from the bucket; only a replica that trusts A's marker for the
    // repository does so without asking the mirror first.
    let seen: Vec<(bool, bool, u64)> = replicas
        .iter()
        .map(|replica| {
            let response = replica.get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[]);
            (
                response.body == image.blob(layer),
                series_sum(replica, "mirrorgate_upstream_requests_total{") > 0,
                rejected_records(replica, "marker"),
            )
        })
        .collect();
    let (_, sealed_check) = check_output(&replicas[0]);
    let (_, keyless_check) = check_output(&replicas[2]);
    assert_eq!(
        (
            seen,
            sealed_check.contains("records sealed and checked with 1 key(s)"),
            keyless_check.contains("no cache.shared.key_file"),
        ),
        (
            vec![(true, false, 0), (true, true, 1), (true, true, 0)],
            true,
            true
        ),
        "check said:\n{sealed_check}\n{keyless_check}"
    );
}

/// Runs an admin command against `replica`: (success, stdout and stderr).
fn admin(replica: &Mirrorgate, args: &[&str]) -> (bool, String) {
    let output = replica.admin_command(args);
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn a_digest_withdrawn_on_one_replica_is_refused_by_every_replica_and_deleted_from_the_bucket() {
    let bucket = Bucket::start();
    let mirror = Registry::start();
    let image = single_arch("shared-withdrawn", &[4000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let (a, b) = (bucket.replica(&mirror), bucket.replica(&mirror));
    let dir = tempfile::tempdir().unwrap();
    succeeded(&pull(&a, &image, &dir.path().join("a"))).expect("pull through A");
    bucket.wait_for_image(&image, &format!("{SOURCE}/ns/app"));
    let layer = &image.layers[0];
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let served_by_b = b.get(&path, &[]).status;

    let denied = admin(&a, &["deny", "--reason", "leaked", layer]);
    // B reads the shared record within its refresh interval.
    let refused_by_b = wait_until(Duration::from_secs(60), || {
        Ok(b.get(&path, &[]).status == 404)
    });
    let withdrawal_key = format!("withdrawn/sha256/{}", hex(layer));
    let in_bucket = (
        bucket.object(&withdrawal_key).is_some(),
        bucket.object(&blob_key(layer)).is_some(),
    );
    // A record planted without the key withdraws nothing.
    let other = &image.configs[0];
    bucket.put(
        &format!("withdrawn/sha256/{}", hex(other)),
        br#"{"reason":"planted","at":0}"#.to_vec(),
    );
    let planted_rejected = wait_until(Duration::from_secs(60), || {
        Ok(rejected_records(&b, "withdrawal") >= 1)
    });
    let other_served = b
        .get(&format!("/v2/{SOURCE}/ns/app/blobs/{other}"), &[])
        .status;

    let allowed = admin(&b, &["allow", layer]);
    let served_again_by_a = wait_until(Duration::from_secs(60), || {
        Ok(a.get(&path, &[]).status == 200)
    });
    assert_eq!(
        (
            served_by_b,
            denied.0,
            refused_by_b.is_ok(),
            in_bucket,
            planted_rejected.is_ok(),
            other_served,
            allowed.0,
            served_again_by_a.is_ok(),
        ),
        (200, true, true, (true, false), true, 200, true, true),
        "deny: {}\nallow: {}\nA: {}\nB: {}",
        denied.1,
        allowed.1,
        warnings(&a),
        warnings(&b)
    );
}
