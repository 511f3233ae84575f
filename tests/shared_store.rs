//! The shared cache tier against a real S3-compatible server (SeaweedFS): what replicas sharing
//! one bucket rely on. Every test starts its own server (one at a time, see
//! `support::SeaweedFs`), and every store in a test is a separate client, as a separate replica
//! would have.

use crate::support;

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use mirrorgate::cache::shared::{
    Kind, PART_SIZE, Rejected, S3Config, SharedConfig, SharedError, SharedStore, TagRecord,
    Timeouts, Uploaded,
};
use mirrorgate::proxy::verify::digest_of;
use mirrorgate::reference::{Algorithm, Digest};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use support::SeaweedFs;
use tempfile::TempDir;
use tokio::io::{AsyncRead, ReadBuf};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    request: Duration::from_secs(10),
};

/// A server, a credentials file and a record key for it, and a scratch directory for local
/// files.
struct Setup {
    server: SeaweedFs,
    dir: TempDir,
}

impl Setup {
    fn start() -> Setup {
        let (server, dir) = SeaweedFs::start_with_replica_files();
        Setup { server, dir }
    }

    fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            bucket: SeaweedFs::BUCKET.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: Some(self.server.endpoint()),
            region: "us-east-1".to_owned(),
            path_style: true,
            insecure: true,
            ca_file: None,
            credentials_file: Some(self.dir.path().join(SeaweedFs::CREDENTIALS_FILE)),
        }
    }

    /// The `cache.shared` section of a replica on `s3`, sealing records with the test key.
    fn shared(&self, s3: S3Config) -> SharedConfig {
        SharedConfig {
            s3,
            key_file: Some(self.dir.path().join(SeaweedFs::RECORD_KEY_FILE)),
        }
    }

    /// A client on `prefix`, as one replica has.
    fn store(&self, prefix: &str) -> SharedStore {
        SharedStore::open(&self.shared(self.config(prefix)), TIMEOUTS)
            .expect("open the shared store")
    }

    /// A client on `prefix` whose key file holds `keys` (none: no key file at all).
    fn store_with_keys(&self, prefix: &str, keys: &[&str]) -> SharedStore {
        let key_file = (!keys.is_empty()).then(|| {
            let path = self.dir.path().join(format!("keys-{}", keys.join("-")));
            std::fs::write(&path, keys.join("\n")).expect("write key file");
            path
        });
        let config = SharedConfig {
            s3: self.config(prefix),
            key_file,
        };
        SharedStore::open(&config, TIMEOUTS).expect("open the shared store")
    }

    async fn put_raw(&self, key: &str, bytes: Vec<u8>) {
        self.raw()
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .expect("put");
    }

    async fn get_raw(&self, key: &str) -> Vec<u8> {
        let result = self.raw().get(&Path::from(key)).await.expect("get");
        result.bytes().await.expect("read").to_vec()
    }

    /// A plain S3 client on the bucket, to look at and tamper with objects behind the store.
    fn raw(&self) -> AmazonS3 {
        self.server.client()
    }

    /// Writes `bytes` to a local file (the verified file the tiered cache would hand over).
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write local file");
        path
    }

    /// The keys under `prefix`, sorted.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .raw()
            .list(Some(&Path::from(prefix)))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list");
        keys.sort();
        keys
    }
}

/// `len` bytes that differ for every `seed`.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn digest(bytes: &[u8]) -> Digest {
    digest_of(Algorithm::Sha256, bytes).parse().unwrap()
}

/// Every item of a read: the bytes delivered before any error, and the error's kind.
async fn read_all(
    store: &SharedStore,
    kind: Kind,
    digest: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> (Vec<u8>, Option<&'static str>) {
    let read = store
        .get(kind, digest, range)
        .await
        .expect("get")
        .expect("the object is there");
    let mut stream = read.stream;
    let mut bytes = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(error) => return (bytes, Some(error.kind())),
        }
    }
    (bytes, None)
}

#[tokio::test]
async fn uploaded_blobs_and_manifests_read_back_byte_for_byte() {
    let setup = Setup::start();
    let store = setup.store("roundtrip");
    let small = content(1 << 20, 1);
    let large = content(2 * PART_SIZE + 12345, 2);
    let manifest = br#"{"schemaVersion":2}"#.to_vec();
    for (name, kind, bytes) in [
        ("small", Kind::Blob, &small),
        ("large", Kind::Blob, &large),
        ("manifest", Kind::Manifest, &manifest),
    ] {
        let d = digest(bytes);
        let file = setup.file(name, bytes);
        assert_eq!(
            store.upload(kind, &d, &file).await.expect("upload"),
            Uploaded::Created
        );
        assert_eq!(
            store.stat(kind, &d).await.expect("stat"),
            Some(bytes.len() as u64)
        );
        let (read, error) = read_all(&store, kind, &d, None).await;
        assert_eq!((read.len(), error), (bytes.len(), None), "{name}");
        assert!(read == *bytes, "{name}: the bytes differ");
    }
    let d = digest(&manifest);
    assert_eq!(
        setup.keys("roundtrip/manifests").await,
        vec![format!("roundtrip/manifests/sha256/{}", d.hex())]
    );
    assert_eq!(store.stat(Kind::Blob, &d).await.expect("stat"), None);
    let counts = store.stats().snapshot();
    assert_eq!(
        (counts.uploads, counts.bytes_written),
        (3, (small.len() + large.len() + manifest.len()) as u64)
    );
}

#[tokio::test]
async fn a_range_is_served_from_a_verified_read() {
    let setup = Setup::start();
    let store = setup.store("ranges");
    let bytes = content(3 << 20, 3);
    let d = digest(&bytes);
    store
        .upload(Kind::Blob, &d, &setup.file("blob", &bytes))
        .await
        .expect("upload");
    let len = bytes.len() as u64;
    let (read, error) = read_all(&store, Kind::Blob, &d, Some(1000..2_500_000)).await;
    assert_eq!(error, None);
    assert!(read == bytes[1000..2_500_000], "range differs");
    let (tail, error) = read_all(&store, Kind::Blob, &d, Some(len - 10..len + 100)).await;
    assert_eq!((tail.as_slice(), error), (&bytes[bytes.len() - 10..], None));
}

#[tokio::test]
async fn two_replicas_uploading_one_digest_make_one_object_and_both_succeed() {
    let setup = Setup::start();
    let (a, b) = (setup.store("race"), setup.store("race"));
    let small = content(100_000, 4);
    let large = content(PART_SIZE + 1, 5);
    let (ds, dl) = (digest(&small), digest(&large));
    let (fs, fl) = (setup.file("small", &small), setup.file("large", &large));
    let (ra, rb) = tokio::join!(
        a.upload(Kind::Blob, &ds, &fs),
        b.upload(Kind::Blob, &ds, &fs)
    );
    let mut outcomes = vec![ra.expect("a"), rb.expect("b")];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    // The single PUT is a conditional create: exactly one replica creates it.
    assert_eq!(outcomes, vec![Uploaded::AlreadyPresent, Uploaded::Created]);
    let (ra, rb) = tokio::join!(
        a.upload(Kind::Blob, &dl, &fl),
        b.upload(Kind::Blob, &dl, &fl)
    );
    assert_eq!((ra.is_ok(), rb.is_ok()), (true, true), "{ra:?} {rb:?}");
    let mut expected = vec![
        format!("race/blobs/sha256/{}", ds.hex()),
        format!("race/blobs/sha256/{}", dl.hex()),
    ];
    expected.sort();
    assert_eq!(setup.keys("race").await, expected);
    let (read, error) = read_all(&b, Kind::Blob, &dl, None).await;
    assert_eq!((read.len(), error), (large.len(), None));
    assert!(read == large);
}

/// Yields `bytes`, then never anything more: an upload stuck half-way, as in a process that is
/// about to be killed.
struct Stalls {
    bytes: Bytes,
}

impl AsyncRead for Stalls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.bytes.is_empty() {
            return Poll::Pending;
        }
        let n = self.bytes.len().min(buf.remaining());
        let chunk = self.bytes.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_upload_stopped_half_way_leaves_nothing_visible() {
    let setup = Setup::start();
    let store = setup.store("stopped");
    let bytes = content(4 * PART_SIZE, 6);
    let d = digest(&bytes);
    let first = Bytes::copy_from_slice(&bytes[..3 * PART_SIZE]);
    let len = bytes.len() as u64;
    let uploading = {
        let store = store.clone();
        let d = d.clone();
        tokio::spawn(async move {
            store
                .upload_reader(Kind::Blob, &d, len, Stalls { bytes: first })
                .await
        })
    };
    // Parts are on the server once the writer has taken the bytes after them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.stats().snapshot().bytes_written < 3 * PART_SIZE as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never got under way"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What a killed process does: stop, without completing or aborting anything.
    uploading.abort();
    assert!(uploading.await.unwrap_err().is_cancelled());
    assert_eq!(store.stat(Kind::Blob, &d).await.expect("stat"), None);
    assert_eq!(setup.keys("stopped").await, Vec::<String>::new());

    // Bytes that do not hash to the digest are refused at the end: nothing visible either.
    let mut wrong = bytes.clone();
    *wrong.last_mut().unwrap() ^= 1;
    let error = store
        .upload(Kind::Blob, &d, &setup.file("wrong", &wrong))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "unverified", "{error}");
    assert_eq!(setup.keys("stopped").await, Vec::<String>::new());

    // The next upload is whole.
    let file = setup.file("right", &bytes);
    assert_eq!(
        store.upload(Kind::Blob, &d, &file).await.expect("upload"),
        Uploaded::Created
    );
    let (read, error) = read_all(&store, Kind::Blob, &d, None).await;
    assert_eq!((read.len(), error), (bytes.len(), None));
    assert!(read == bytes);
    assert_eq!(store.stats().snapshot().upload_failures, 1);
}

#[tokio::test]
async fn a_corrupt_object_is_never_delivered_whole_and_is_replaced() {
    let setup = Setup::start();
    let store = setup.store("corrupt");
    let bytes = content(1 << 20, 7);
    let d = digest(&bytes);
    let file = setup.file("blob", &bytes);
    store.upload(Kind::Blob, &d, &file).await.expect("upload");
    // Same length, last byte changed: only the digest can tell.
    let mut wrong = bytes.clone();
    *wrong.last_mut().unwrap() ^= 0xff;
    setup
        .raw()
        .put(
            &Path::from(store.key(Kind::Blob, &d)),
            PutPayload::from(wrong),
        )
        .await
        .expect("overwrite");

    let (read, error) = read_all(&store, Kind::Blob, &d, None).await;
    assert_eq!(error, Some("corrupt"));
    assert!(
        read.len() < bytes.len() && read[..] == bytes[..read.len()],
        "delivered {} of {} bytes",
        read.len(),
        bytes.len()
    );
    let (read, error) = read_all(&store, Kind::Blob, &d, Some(0..10)).await;
    assert_eq!((read.len(), error), (0, Some("corrupt")));
    // An upload does not touch an object that is there, corrupt or not: replace_corrupt does.
    assert_eq!(
        store.upload(Kind::Blob, &d, &file).await.expect("upload"),
        Uploaded::AlreadyPresent
    );
    store
        .replace_corrupt(Kind::Blob, &d, &file)
        .await
        .expect("replace");
    let (read, error) = read_all(&store, Kind::Blob, &d, None).await;
    assert_eq!((read.len(), error), (bytes.len(), None));
    assert!(read == bytes);
    let counts = store.stats().snapshot();
    assert_eq!((counts.corrupt, counts.replaced), (2, 1));
}

#[tokio::test]
async fn a_stopped_server_gives_typed_errors_and_a_restarted_one_serves_again() {
    let mut setup = Setup::start();
    let store = setup.store("outage");
    let before = content(50_000, 8);
    let d = digest(&before);
    store
        .upload(Kind::Blob, &d, &setup.file("before", &before))
        .await
        .expect("upload");

    setup.server.stop();
    let unreachable = ["unavailable", "timeout"];
    let stat = store.stat(Kind::Blob, &d).await.unwrap_err();
    assert!(unreachable.contains(&stat.kind()), "{stat}");
    let get = store.get(Kind::Blob, &d, None).await.unwrap_err();
    assert!(unreachable.contains(&get.kind()), "{get}");
    let during = content(50_000, 9);
    let dd = digest(&during);
    let file = setup.file("during", &during);
    let upload = store.upload(Kind::Blob, &dd, &file).await.unwrap_err();
    assert!(unreachable.contains(&upload.kind()), "{upload}");
    let confirm = store.confirm("example.com/app", &d).await.unwrap_err();
    assert!(unreachable.contains(&confirm.kind()), "{confirm}");
    assert!(store.check().await.is_err());
    let counts = store.stats().snapshot();
    assert_eq!(counts.upload_failures, 1);

    setup.server.restart();
    assert_eq!(
        store.stat(Kind::Blob, &d).await.expect("stat"),
        Some(before.len() as u64)
    );
    assert_eq!(
        store.upload(Kind::Blob, &dd, &file).await.expect("upload"),
        Uploaded::Created
    );
    let (read, error) = read_all(&store, Kind::Blob, &dd, None).await;
    assert_eq!((read == during, error), (true, None));
}

#[tokio::test]
async fn wrong_credentials_and_a_missing_bucket_fail_the_check_clearly() {
    let setup = Setup::start();
    assert_eq!(setup.store("check").check().await.ok(), Some(()));

    let wrong = setup.dir.path().join("wrong-credentials");
    SeaweedFs::write_credentials(&wrong, "not-the-secret");
    let config = S3Config {
        credentials_file: Some(wrong),
        ..setup.config("check")
    };
    let error = SharedStore::open(&setup.shared(config), TIMEOUTS)
        .expect("open")
        .check()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "denied", "{error}");
    assert!(error.to_string().contains("credentials"), "{error}");

    let config = S3Config {
        bucket: "no-such-bucket".to_owned(),
        ..setup.config("check")
    };
    let error = SharedStore::open(&setup.shared(config), TIMEOUTS)
        .expect("open")
        .check()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SharedError::MissingBucket { bucket, .. } if bucket == "no-such-bucket"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("\"no-such-bucket\" does not exist")
    );

    let config = S3Config {
        credentials_file: Some(setup.dir.path().join("absent")),
        ..setup.config("check")
    };
    let error = SharedStore::open(&setup.shared(config), TIMEOUTS).unwrap_err();
    assert_eq!(error.kind(), "config", "{error}");
    assert!(error.to_string().contains("absent"), "{error}");

    let config = SharedConfig {
        key_file: Some(setup.dir.path().join("no-key-file")),
        ..setup.shared(setup.config("check"))
    };
    let error = SharedStore::open(&config, TIMEOUTS).unwrap_err();
    assert_eq!(error.kind(), "config", "{error}");
    assert!(error.to_string().contains("key_file"), "{error}");
}

#[tokio::test]
async fn confirmations_are_seen_by_another_replica() {
    let setup = Setup::start();
    let a = setup.store("confirm/team");
    let bytes = content(10, 10);
    let d = digest(&bytes);
    a.confirm("quay.io/openshift/release", &d)
        .await
        .expect("confirm");
    a.confirm("localhost:5000/app", &d).await.expect("confirm");

    let b = setup.store("confirm/team");
    let seen = (
        b.is_confirmed("quay.io/openshift/release", &d)
            .await
            .unwrap(),
        b.is_confirmed("localhost:5000/app", &d).await.unwrap(),
        b.is_confirmed("quay.io/openshift/other", &d).await.unwrap(),
        b.is_confirmed("quay.io/openshift", &d).await.unwrap(),
    );
    assert_eq!(seen, (true, true, false, false));
    let other_prefix = setup.store("confirm/elsewhere");
    assert!(
        !other_prefix
            .is_confirmed("quay.io/openshift/release", &d)
            .await
            .unwrap()
    );
    let error = b.is_confirmed("quay.io//x", &d).await.unwrap_err();
    assert_eq!(error.kind(), "invalid_repository");
}

/// The reason a record lookup was not trusted, or its kind of failure otherwise.
fn why_untrusted(error: SharedError) -> Result<Rejected, &'static str> {
    match error {
        SharedError::Untrusted { reason, .. } => Ok(reason),
        other => Err(other.kind()),
    }
}

#[tokio::test]
async fn a_planted_or_copied_marker_is_not_a_confirmation() {
    let setup = Setup::start();
    let store = setup.store("planted");
    let d = digest(&content(10, 11));
    let marker = |repository: &str| format!("planted/repos/{repository}/sha256/{}", d.hex());
    store
        .confirm("quay.io/team-a/app", &d)
        .await
        .expect("confirm");
    // Whoever can write the bucket plants an empty marker (as mirrorgate wrote them before
    // they were sealed), copies a sealed one to another repository's key, and plants a large
    // object where a marker goes.
    setup
        .put_raw(&marker("quay.io/team-b/app"), Vec::new())
        .await;
    let sealed = setup.get_raw(&marker("quay.io/team-a/app")).await;
    setup.put_raw(&marker("quay.io/team-c/app"), sealed).await;
    setup
        .put_raw(&marker("quay.io/team-d/app"), vec![b'\n'; 1 << 20])
        .await;
    let mut answers = Vec::new();
    for team in ["team-a", "team-b", "team-c", "team-d"] {
        let answer = store.is_confirmed(&format!("quay.io/{team}/app"), &d).await;
        answers.push(answer.map_err(why_untrusted));
    }
    assert_eq!(
        (answers, store.stats().snapshot().rejected_markers),
        (
            vec![
                Ok(true),
                Err(Ok(Rejected::Unsealed)),
                Err(Ok(Rejected::BadMac)),
                Err(Ok(Rejected::TooLarge)),
            ],
            3
        )
    );
}

#[tokio::test]
async fn a_rewritten_or_unsealed_tag_answer_is_not_trusted() {
    let setup = Setup::start();
    let store = setup.store("answers");
    let (served, other) = (digest(b"served"), digest(b"another repository's"));
    let record = TagRecord {
        digest: served.clone(),
        route: 7,
        recorded_at: 1_700_000_000,
    };
    store
        .record_tag("quay.io/a/app", "v1", &record)
        .await
        .expect("record");
    let recorded = trusted_tag(&store, "v1").await;
    // The same answer pointing at another manifest, its MAC kept; and an answer as mirrorgate
    // wrote them before they were sealed (digest, route, time).
    let key = "answers/tags/quay.io/a/app/v1";
    let sealed = String::from_utf8(setup.get_raw(key).await).expect("text");
    let rewritten = sealed.replacen(served.as_str(), other.as_str(), 1);
    setup.put_raw(key, rewritten.into_bytes()).await;
    setup
        .put_raw(
            "answers/tags/quay.io/a/app/v2",
            format!("{other}\n7\n1700000000\n").into_bytes(),
        )
        .await;
    assert_eq!(
        (
            recorded,
            trusted_tag(&store, "v1").await,
            trusted_tag(&store, "v2").await,
            store.stats().snapshot().rejected_tags,
        ),
        (
            Ok(Some(record)),
            Err(Ok(Rejected::BadMac)),
            Err(Ok(Rejected::Unsealed)),
            2
        )
    );
}

/// The answer `store` trusts for `quay.io/a/app:<tag>`, or why it does not.
async fn trusted_tag(
    store: &SharedStore,
    tag: &str,
) -> Result<Option<TagRecord>, Result<Rejected, &'static str>> {
    store.tag("quay.io/a/app", tag).await.map_err(why_untrusted)
}

/// What `store` trusts of the records for `quay.io/a/app`: the confirmation of `digest` and
/// the answer for tag `v1`.
async fn trusted(
    store: &SharedStore,
    digest: &Digest,
) -> (
    Result<bool, Result<Rejected, &'static str>>,
    Result<Option<TagRecord>, Result<Rejected, &'static str>>,
) {
    (
        store
            .is_confirmed("quay.io/a/app", digest)
            .await
            .map_err(why_untrusted),
        trusted_tag(store, "v1").await,
    )
}

#[tokio::test]
async fn records_sealed_with_the_key_are_trusted_by_every_replica_holding_it_and_by_no_other() {
    const OTHER_KEY: &str = "another-test-record-key-0123456789abcdef";
    let setup = Setup::start();
    let writer = setup.store("keys");
    let d = digest(&content(10, 12));
    let record = TagRecord {
        digest: d.clone(),
        route: 3,
        recorded_at: 1_700_000_000,
    };
    writer.confirm("quay.io/a/app", &d).await.expect("confirm");
    writer
        .record_tag("quay.io/a/app", "v1", &record)
        .await
        .expect("record");
    let same_key = setup.store("keys");
    let other_key = setup.store_with_keys("keys", &[OTHER_KEY]);
    // Rotation: the new key seals, the old one is still accepted.
    let rotated = setup.store_with_keys("keys", &[OTHER_KEY, SeaweedFs::RECORD_KEY]);
    let keyless = setup.store_with_keys("keys", &[]);
    assert_eq!(
        [
            trusted(&same_key, &d).await,
            trusted(&other_key, &d).await,
            trusted(&rotated, &d).await,
            trusted(&keyless, &d).await,
        ],
        [
            (Ok(true), Ok(Some(record.clone()))),
            (Err(Ok(Rejected::BadMac)), Err(Ok(Rejected::BadMac))),
            (Ok(true), Ok(Some(record.clone()))),
            (Ok(false), Ok(None)),
        ]
    );
    // What the rotated replica seals is trusted only where the new key is listed (so it must
    // reach every replica before any seals with it); a replica without a key writes nothing.
    rotated.confirm("quay.io/b/app", &d).await.expect("confirm");
    keyless.confirm("quay.io/c/app", &d).await.expect("confirm");
    keyless
        .record_tag("quay.io/c/app", "v1", &record)
        .await
        .expect("record");
    assert_eq!(
        (
            other_key.is_confirmed("quay.io/b/app", &d).await.ok(),
            same_key
                .is_confirmed("quay.io/b/app", &d)
                .await
                .map_err(why_untrusted),
            setup.keys("keys/repos/quay.io/c").await,
            setup.keys("keys/tags/quay.io/c").await,
            keyless.stats().snapshot().errors,
        ),
        (Some(true), Err(Ok(Rejected::BadMac)), vec![], vec![], 0)
    );
}

#[tokio::test]
async fn a_server_that_never_answers_costs_a_bounded_wait_and_a_timeout_error() {
    // Accepts connections and reads requests, but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(16) {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = a\naws_secret_access_key = b\n",
    )
    .unwrap();
    let config = S3Config {
        bucket: "silent".to_owned(),
        prefix: String::new(),
        endpoint: Some(format!("http://{addr}")),
        region: "us-east-1".to_owned(),
        path_style: true,
        insecure: true,
        ca_file: None,
        credentials_file: Some(credentials),
    };
    let store = SharedStore::open(
        &SharedConfig {
            s3: config,
            key_file: None,
        },
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_millis(300),
        },
    )
    .expect("open");
    let d = digest(b"x");
    let errors = (
        store.stat(Kind::Blob, &d).await.unwrap_err().kind(),
        store.get(Kind::Blob, &d, None).await.unwrap_err().kind(),
        store.check().await.unwrap_err().kind(),
    );
    assert_eq!(errors, ("timeout", "timeout", "timeout"));
    assert_eq!(store.stats().snapshot().errors, 3);
    drop(silent);
}
