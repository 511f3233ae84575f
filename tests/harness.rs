//! Smoke tests of the integration-test harness (`tests/support`) with its real parts: Debian's
//! `docker-registry`, images generated as OCI layouts, and `skopeo`. They do not need mirrorgate.

use crate::support;

use std::fs;

use support::{
    Image, LoggedRequest, Mirrorgate, OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, Registry,
    copy_to_layout, http_get, http_request, layouts_identical, multi_arch, parse_access_line, push,
    push_with_creds, sha256_digest, single_arch, try_http_request,
};

const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

fn assert_success(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two independent copies from the registry are byte-identical, and hold the image's blobs.
fn read_back_twice(registry: &Registry, repo_tag: &str, image: &Image) {
    let src = format!("{}/{repo_tag}", registry.addr());
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    assert_success(&copy_to_layout(&src, a.path(), &[]), "first copy");
    assert_success(&copy_to_layout(&src, b.path(), &[]), "second copy");
    layouts_identical(a.path(), b.path()).unwrap();

    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(a.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.manifest_digest);
    for digest in image.blobs.iter().chain(&image.manifests) {
        let copied = fs::read(a.path().join("blobs/sha256").join(&digest[7..])).unwrap();
        assert_eq!(copied, image.blob(digest), "{digest} differs in the copy");
    }
    let top = fs::read(
        a.path()
            .join("blobs/sha256")
            .join(&image.manifest_digest[7..]),
    )
    .unwrap();
    assert_eq!(top, image.manifest_bytes);

    // A comparison that must fail does.
    fs::write(
        a.path().join("blobs/sha256").join(&image.blobs[0][7..]),
        b"x",
    )
    .unwrap();
    let diff = layouts_identical(a.path(), b.path()).unwrap_err();
    assert!(diff.contains(&image.blobs[0][7..]), "{diff}");
}

#[test]
fn single_arch_image_round_trips_through_a_registry() {
    let registry = Registry::start();
    let image = single_arch("harness-single", &[1000, 20_000]);
    assert_eq!(image.media_type, OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(image.manifests, vec![image.manifest_digest.clone()]);
    assert_eq!(image.blobs.len(), 3, "config and two layers");
    push(&image, &format!("{}/ns/app:v1", registry.addr()));

    // The registry serves the manifest bytes as generated, under their digest.
    let response = http_get(
        &registry.addr(),
        "/v2/ns/app/manifests/v1",
        &[("Accept", ACCEPT_ALL)],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.body, image.manifest_bytes);
    assert_eq!(
        response.header("docker-content-digest"),
        Some(image.manifest_digest.as_str())
    );
    assert_eq!(
        response.header("content-type"),
        Some(OCI_MANIFEST_MEDIA_TYPE)
    );
    assert_eq!(sha256_digest(&response.body), image.manifest_digest);

    // Blobs are on disk where blob_data_path says.
    for digest in &image.blobs {
        assert_eq!(
            fs::read(registry.blob_data_path(digest)).unwrap(),
            image.blob(digest)
        );
    }

    read_back_twice(&registry, "ns/app:v1", &image);
}

#[test]
fn multi_arch_image_round_trips_through_a_registry() {
    let registry = Registry::start();
    let image = multi_arch("harness-multi", &[500, 3000]);
    assert_eq!(image.media_type, OCI_INDEX_MEDIA_TYPE);
    assert_eq!(image.platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(image.manifests.len(), 2);
    assert_eq!(image.blobs.len(), 6, "a config and two layers per platform");
    let distinct: std::collections::BTreeSet<_> = image.blobs.iter().collect();
    assert_eq!(distinct.len(), 6, "platforms share no blob");
    push(&image, &format!("{}/ns/multi:v1", registry.addr()));

    let index = http_get(
        &registry.addr(),
        &format!("/v2/ns/multi/manifests/{}", image.manifest_digest),
        &[("Accept", ACCEPT_ALL)],
    );
    assert_eq!(index.status, 200);
    assert_eq!(index.body, image.manifest_bytes);
    assert_eq!(index.header("content-type"), Some(OCI_INDEX_MEDIA_TYPE));
    let arm = http_get(
        &registry.addr(),
        &format!(
            "/v2/ns/multi/manifests/{}",
            image.manifest_for("linux/arm64")
        ),
        &[("Accept", ACCEPT_ALL)],
    );
    assert_eq!(arm.status, 200);
    assert_eq!(arm.json()["config"]["digest"], image.configs[1]);

    read_back_twice(&registry, "ns/multi:v1", &image);
}

#[test]
fn images_are_deterministic_and_seeds_distinct() {
    let a = single_arch("seed-a", &[100, 0]);
    let again = single_arch("seed-a", &[100, 0]);
    let b = single_arch("seed-b", &[100, 0]);
    assert_eq!(a.manifest_digest, again.manifest_digest);
    assert_eq!(a.blobs, again.blobs);
    assert_ne!(a.manifest_digest, b.manifest_digest);
    for digest in &a.blobs {
        assert!(!b.blobs.contains(digest), "{digest} shared between seeds");
    }
    let multi = multi_arch("seed-a", &[100, 0]);
    assert!(!multi.manifests.contains(&a.manifest_digest));
    // Blobs are real gzip'd tars whose config diff_ids match.
    let config: serde_json::Value = serde_json::from_slice(&a.blob(&a.configs[0])).unwrap();
    for (i, layer) in a.layers.iter().enumerate() {
        let compressed = a.blob(layer);
        let mut tar = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(compressed.as_slice()),
            &mut tar,
        )
        .unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][i], sha256_digest(&tar));
        let mut archive = tar::Archive::new(tar.as_slice());
        let sizes: Vec<u64> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().size().unwrap())
            .collect();
        assert_eq!(sizes, [[100, 0][i]]);
    }
}

#[test]
fn request_accounting_counts_only_what_was_asked() {
    let mut registry = Registry::start();
    let image = single_arch("harness-count", &[300]);
    push(&image, &format!("{}/ns/count:v1", registry.addr()));
    // The push made requests; the readiness and sync probes are never counted.
    assert!(
        registry.count("PUT", "/manifests/v1") == 1,
        "{:?}",
        registry.requests()
    );
    assert!(
        registry
            .requests()
            .iter()
            .all(|r| r.path != "/v2/" || r.user_agent != "mirrorgate-harness-probe")
    );

    let mark = registry.mark();
    assert!(registry.requests_since(mark).is_empty());
    let path = "/v2/ns/count/manifests/v1";
    let head = http_request(
        "HEAD",
        &registry.addr(),
        path,
        &[("Accept", ACCEPT_ALL)],
        &[],
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let get = http_get(
        &registry.addr(),
        &format!("{path}?x=1"),
        &[("Accept", ACCEPT_ALL)],
    );
    assert_eq!(get.status, 200);
    let missing = http_get(&registry.addr(), "/v2/ns/count/manifests/nope", &[]);
    assert_eq!(missing.status, 404);

    let since = registry.requests_since(mark);
    assert_eq!(
        since,
        vec![
            LoggedRequest {
                method: "HEAD".into(),
                path: path.into(),
                status: 200,
                size: image.manifest_bytes.len() as u64,
                user_agent: "mirrorgate-tests".into(),
            },
            LoggedRequest {
                method: "GET".into(),
                path: format!("{path}?x=1"),
                status: 200,
                size: image.manifest_bytes.len() as u64,
                user_agent: "mirrorgate-tests".into(),
            },
            LoggedRequest {
                method: "GET".into(),
                path: "/v2/ns/count/manifests/nope".into(),
                status: 404,
                size: missing.body.len() as u64,
                user_agent: "mirrorgate-tests".into(),
            },
        ]
    );
    assert_eq!(registry.count_since(mark, "GET", "/manifests/"), 2);
    assert_eq!(registry.count_since(mark, "HEAD", "/manifests/"), 1);

    // A pull through skopeo: its manifest GET is seen, and nothing is written.
    let mark = registry.mark();
    let dir = tempfile::tempdir().unwrap();
    let out = copy_to_layout(&format!("{}/ns/count:v1", registry.addr()), dir.path(), &[]);
    assert_success(&out, "copy");
    let pulled = registry.requests_since(mark);
    assert!(
        registry.count_since(mark, "GET", "/manifests/v1") >= 1,
        "{pulled:?}"
    );
    assert_eq!(
        registry.count_since(mark, "GET", &image.layers[0]),
        1,
        "{pulled:?}"
    );
    assert!(
        pulled
            .iter()
            .all(|r| r.method == "GET" || r.method == "HEAD"),
        "{pulled:?}"
    );

    // reset() moves the base of requests()/count().
    registry.reset();
    assert!(registry.requests().is_empty());
    assert_eq!(registry.count("GET", "/manifests/"), 0);
}

#[test]
fn stop_refuses_connections_and_restart_keeps_port_and_storage() {
    let mut registry = Registry::start();
    let image = single_arch("harness-restart", &[200]);
    push(&image, &format!("{}/ns/restart:v1", registry.addr()));
    let port = registry.port();

    registry.stop();
    registry.stop();
    assert!(!registry.is_running());
    assert!(try_http_request("GET", &registry.addr(), "/v2/", &[], &[]).is_err());
    let marked = registry.mark(); // works while stopped

    registry.restart();
    assert_eq!(registry.port(), port);
    let response = http_get(
        &registry.addr(),
        "/v2/ns/restart/manifests/v1",
        &[("Accept", ACCEPT_ALL)],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.body, image.manifest_bytes);
    assert_eq!(registry.count_since(marked, "GET", "/manifests/v1"), 1);
}

#[test]
fn corrupted_blob_is_served_with_wrong_bytes() {
    let registry = Registry::start();
    let image = single_arch("harness-corrupt", &[4000]);
    push(&image, &format!("{}/ns/corrupt:v1", registry.addr()));
    let layer = &image.layers[0];
    let original = image.blob(layer);
    let mut wrong = original.clone();
    wrong[100] ^= 0xff;
    fs::write(registry.blob_data_path(layer), &wrong).unwrap();

    let response = http_get(
        &registry.addr(),
        &format!("/v2/ns/corrupt/blobs/{layer}"),
        &[],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.body, wrong);
    assert_ne!(&sha256_digest(&response.body), layer);
}

#[test]
fn htpasswd_registry_needs_credentials() {
    let registry = Registry::start_with_htpasswd("alice", "s3cret");
    assert_eq!(registry.credentials(), Some(("alice", "s3cret")));
    let image = single_arch("harness-auth", &[100]);
    push_with_creds(
        &image,
        &format!("{}/private/app:v1", registry.addr()),
        "alice",
        "s3cret",
    );

    let anonymous = http_get(&registry.addr(), "/v2/private/app/manifests/v1", &[]);
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic ")),
        "{:?}",
        anonymous.headers
    );
    assert_eq!(anonymous.json()["errors"][0]["code"], "UNAUTHORIZED");

    // "alice:s3cret" in base64.
    let authorised = http_get(
        &registry.addr(),
        "/v2/private/app/manifests/v1",
        &[
            ("Authorization", "Basic YWxpY2U6czNjcmV0"),
            ("Accept", ACCEPT_ALL),
        ],
    );
    assert_eq!(authorised.status, 200);
    assert_eq!(authorised.body, image.manifest_bytes);

    let dir = tempfile::tempdir().unwrap();
    let src = format!("{}/private/app:v1", registry.addr());
    let denied = copy_to_layout(&src, dir.path(), &[]);
    assert!(!denied.status.success());
    let allowed = copy_to_layout(&src, dir.path(), &["--src-creds", "alice:s3cret"]);
    assert_success(&allowed, "copy with credentials");

    assert_eq!(
        registry.count("GET", "/manifests/v1"),
        3 + 1,
        "{:?}",
        registry.requests()
    );
}

#[test]
fn access_log_parser_is_strict() {
    let line = r#"127.0.0.1 - - [24/Nov/2026:05:49:07 +0000] "HEAD /v2/foo/manifests/x?a=b HTTP/1.1" 404 91 "" "curl/7.88.1""#;
    assert_eq!(
        parse_access_line(line),
        Some(LoggedRequest {
            method: "HEAD".into(),
            path: "/v2/foo/manifests/x?a=b".into(),
            status: 404,
            size: 91,
            user_agent: "curl/7.88.1".into(),
        })
    );
    let quoted =
        r#"127.0.0.1 - - [24/Nov/2026:05:49:07 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "a \"b\" c""#;
    assert_eq!(parse_access_line(quoted).unwrap().user_agent, r#"a "b" c"#);
    for bad in [
        "",
        r#"time="2026-11-24T05:49:07Z" level=info msg="response completed""#,
        r#"127.0.0.1 - - [24/Nov/2026:05:49:07 +0000] "get /v2/ HTTP/1.1" 200 2 "" "ua""#,
        r#"127.0.0.1 - - [24/Nov/2026:05:49:07 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "ua" extra"#,
        r#"127.0.0.1 - - [24/Nov/2026:05:49:07 +0000] "GET /v2/" 200 2 "" "ua""#,
    ] {
        assert_eq!(parse_access_line(bad), None, "{bad}");
    }
}

#[test]
fn http_client_decodes_chunked_and_reports_truncation() {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let replies: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 2\r\n\r\n{}",
        ];
        for reply in replies {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(reply).unwrap();
        }
    });
    let chunked = http_get(&addr, "/x", &[]);
    assert_eq!(
        (chunked.status, chunked.text().as_str()),
        (200, "hello world")
    );
    assert_eq!(chunked.header("x-a"), Some("1"));
    let error = try_http_request("GET", &addr, "/y", &[], &[]).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
    let put = http_request("PUT", &addr, "/z", &[], b"");
    assert_eq!(put.status, 405);
    assert_eq!(put.json(), serde_json::json!({}));
    server.join().unwrap();
}

#[test]
fn mirrorgate_starts_answers_and_restarts() {
    let registry = Registry::start();
    let endpoint = registry.endpoint();
    let mut proxy = Mirrorgate::start(
        "",
        &[("mirror.test", endpoint.as_str())],
        "cache:\n  tag_ttl: 1s\n",
    );
    let response = proxy.get("/v2/", &[]);
    assert_eq!(response.status, 200, "{}", proxy.log());
    assert_eq!(
        response.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let config = fs::read_to_string(proxy.config_path()).unwrap();
    assert_eq!(
        (
            config.contains("\"tag_ttl\": \"1s\""),
            config.contains(&endpoint)
        ),
        (true, true),
        "{config}"
    );

    let port = proxy.port();
    proxy.stop();
    assert!(try_http_request("GET", &proxy.addr(), "/v2/", &[], &[]).is_err());
    proxy.restart();
    assert_eq!(proxy.port(), port);
    assert_eq!(proxy.get("/v2/", &[]).status, 200);
}
