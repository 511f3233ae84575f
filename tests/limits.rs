//! Everything a client or an upstream can make mirrorgate hold is bounded: connections, request
//! heads, request bodies, upstream fetches, upstream silence, and bytes beyond what a manifest
//! declares.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Mirrorgate, Registry, Throttle};

const RULES: &str = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: d\nspec:\n  imageDigestMirrors:\n  - source: source.test/ns\n    mirrors: [mirror.test/ns]\n";

fn error_code(response: &support::HttpResponse) -> String {
    response.json()["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Sends `request` on `stream` and reads until a whole response head has arrived, or the
/// stream's read timeout passes; returns what was read.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

const BASE: &[u8] = b"GET /v2/ HTTP/1.1\r\nHost: mirrorgate\r\n\r\n";

#[test]
fn a_connection_beyond_max_connections_waits_until_one_closes() {
    let proxy = Mirrorgate::start("", &[], "limits:\n  max_connections: 1\n");
    let mut first = TcpStream::connect(proxy.addr()).unwrap();
    let first_answer = exchange(&mut first, BASE);
    let mut second = TcpStream::connect(proxy.addr()).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let while_first_open = exchange(&mut second, BASE);
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let after_first_closed = exchange(&mut second, b"");
    assert_eq!(
        (
            first_answer.starts_with("HTTP/1.1 200"),
            while_first_open.is_empty(),
            after_first_closed.starts_with("HTTP/1.1 200")
        ),
        (true, true, true),
        "{first_answer:?} / {while_first_open:?} / {after_first_closed:?}"
    );
}

#[test]
fn a_request_head_larger_than_max_header_size_gets_431() {
    let proxy = Mirrorgate::start("", &[], "limits:\n  max_header_size: 16KiB\n");
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET /v2/ HTTP/1.1\r\nHost: mirrorgate\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let answer = exchange(&mut stream, request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

#[test]
fn a_read_with_a_body_is_refused_unread() {
    let proxy = Mirrorgate::start("", &[], "");
    let response = support::http_request("GET", &proxy.addr(), "/v2/", &[], b"surprise");
    assert_eq!(
        (response.status, error_code(&response)),
        (413, "UNSUPPORTED".to_owned())
    );
}

/// A mirrorgate with one upstream fetch slot (and a 200 ms queue) in front of a slow mirror (an
/// ITMS and IDMS NeverContactSource route) holding `image` as `ns/app:v1`.
fn one_slot_proxy(image: &support::Image, extra_yaml: &str) -> (Registry, Throttle, Mirrorgate) {
    let mirror = Registry::start();
    support::push(image, &format!("{}/ns/app:v1", mirror.addr()));
    // Slow bodies keep a fetch under way for more than a second.
    let front = Throttle::start(mirror.endpoint());
    let never = |rules: &str| {
        rules.replace(
            "\n    mirrors",
            "\n    mirrorSourcePolicy: NeverContactSource\n    mirrors",
        )
    };
    let rules = never(RULES)
        + "---\n"
        + &never(
            &RULES
                .replace("ImageDigestMirrorSet", "ImageTagMirrorSet")
                .replace("imageDigestMirrors", "imageTagMirrors"),
        );
    let proxy = Mirrorgate::start(
        &rules,
        &[("mirror.test", &front.endpoint())],
        &format!(
            "limits:\n  max_upstream_fetches: 1\n  upstream_queue_timeout: 200ms\n{extra_yaml}"
        ),
    );
    (mirror, front, proxy)
}

/// Starts a GET of the blob `digest` (slow: it holds the only fetch slot) and returns once the
/// slot is taken; the thread answers the GET's status.
fn hold_the_only_slot(proxy: &Mirrorgate, digest: &str) -> std::thread::JoinHandle<u16> {
    let addr = proxy.addr();
    let path = format!("/v2/source.test/ns/app/blobs/{digest}");
    let holder = std::thread::spawn(move || support::http_get(&addr, &path, &[]).status);
    let gauge = "mirrorgate_upstream_fetches_in_flight 1";
    for _ in 0..100 {
        if proxy.get("/metrics", &[]).text().contains(gauge) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    holder
}

#[test]
fn upstream_fetches_beyond_the_bound_wait_then_get_429_with_retry_after() {
    let image = support::single_arch("fetch-slots", &[2 * 1024 * 1024, 1000]);
    let (_mirror, _front, proxy) = one_slot_proxy(&image, "");
    let (big, small) = (&image.layers[0], &image.layers[1]);
    let first = hold_the_only_slot(&proxy, big);
    let small_path = format!("/v2/source.test/ns/app/blobs/{small}");
    let refused = proxy.get(&small_path, &[]);
    let first_status = first.join().unwrap();
    let later = proxy.get(&small_path, &[]);
    assert_eq!(
        (
            refused.status,
            error_code(&refused),
            refused.header("retry-after").map(str::to_owned),
            first_status,
            later.status
        ),
        (
            429,
            "TOOMANYREQUESTS".to_owned(),
            Some("2".to_owned()),
            200,
            200
        )
    );
}

#[test]
fn a_known_tag_is_answered_from_the_cache_when_no_fetch_slot_is_free() {
    let image = support::single_arch("busy-tag", &[2 * 1024 * 1024]);
    // tag_ttl 0s: every tag pull wants to revalidate.
    let (_mirror, _front, proxy) = one_slot_proxy(&image, "cache:\n  tag_ttl: 0s\n");
    let tag_path = "/v2/source.test/ns/app/manifests/v1";
    let first = proxy.get(tag_path, &[]);
    let holder = hold_the_only_slot(&proxy, &image.layers[0]);
    let busy = proxy.get(tag_path, &[]);
    holder.join().unwrap();
    assert_eq!(
        (
            first.status,
            busy.status,
            busy.header("docker-content-digest").map(str::to_owned)
        ),
        (200, 200, Some(image.manifest_digest.clone()))
    );
}

#[test]
fn a_stalled_upstream_blob_is_aborted_after_the_idle_timeout() {
    let mirror = Registry::start();
    let image = support::single_arch("stalled", &[1024 * 1024]);
    support::push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let front = Throttle::start_stalling_blobs(mirror.endpoint());
    let proxy = Mirrorgate::start(
        RULES,
        &[("mirror.test", &front.endpoint())],
        "upstream:\n  timeout: 1s\n",
    );
    let layer = &image.layers[0];
    let path = format!("/v2/source.test/ns/app/blobs/{layer}");
    // The client reads until the proxy gives up: an error or a short body, never a hang.
    let response = support::try_http_request("GET", &proxy.addr(), &path, &[], b"");
    let whole = response
        .as_ref()
        .is_ok_and(|r| r.status == 200 && r.body == image.blob(layer));
    // Log lines are written by a background thread: give it a moment.
    let mut log = proxy.log();
    for _ in 0..50 {
        if log.contains("blob download failed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        log = proxy.log();
    }
    assert_eq!(
        (whole, log.contains("blob download failed")),
        (false, true),
        "{log}"
    );
}

#[test]
fn a_mirror_announcing_another_size_than_the_manifest_is_skipped_for_the_source() {
    let (source, mirror) = (Registry::start(), Registry::start());
    let image = support::single_arch("padded", &[300_000]);
    for registry in [&source, &mirror] {
        support::push(&image, &format!("{}/ns/app:v1", registry.addr()));
    }
    let front = Throttle::start_padding_blobs(mirror.endpoint());
    let proxy = Mirrorgate::start(
        RULES,
        &[
            ("source.test", &source.endpoint()),
            ("mirror.test", &front.endpoint()),
        ],
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let pulled = support::copy_to_layout(
        &format!(
            "{}/source.test/ns/app@{}",
            proxy.addr(),
            image.manifest_digest
        ),
        dir.path(),
        &[],
    );
    let metrics = proxy.get("/metrics", &[]).text();
    let mismatch = metrics.lines().any(|line| {
        line.starts_with("mirrorgate_upstream_requests_total{")
            && line.contains("registry=\"mirror.test\"")
            && line.contains("route=\"blob\"")
            && line.contains("outcome=\"size_mismatch\"")
    });
    assert_eq!(
        (pulled.status.success(), mismatch),
        (true, true),
        "{}\n{metrics}",
        String::from_utf8_lossy(&pulled.stderr)
    );
}

/// Reads `stream` until the server closes it (true), or until the read timeout, a bound far
/// beyond the server's own timeout, passes (false); returns that and every byte read.
fn read_until_closed(stream: &mut TcpStream) -> (bool, Vec<u8>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return (true, seen),
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
            Err(error) => {
                let closed = matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                );
                return (closed, seen);
            }
        }
    }
}

/// The types of the HTTP/2 frames in `bytes` (a server's side of a connection).
fn h2_frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    types
}

#[test]
fn silent_connections_are_closed_so_that_max_connections_does_not_lock_clients_out() {
    let proxy = Mirrorgate::start(
        "",
        &[],
        "limits:\n  max_connections: 2\n  header_read_timeout: 1s\n",
    );
    // One connection sends nothing at all; the other opens HTTP/2 (preface and an empty
    // SETTINGS frame) and then falls silent, never opening a stream.
    let mut silent = TcpStream::connect(proxy.addr()).unwrap();
    let mut h2 = TcpStream::connect(proxy.addr()).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let (silent_closed, _) = read_until_closed(&mut silent);
    let (h2_closed, h2_bytes) = read_until_closed(&mut h2);
    const GOAWAY: u8 = 0x7;
    let healthz = proxy.get("/healthz", &[]);
    assert_eq!(
        (
            silent_closed,
            h2_closed,
            h2_frame_types(&h2_bytes).contains(&GOAWAY),
            healthz.status
        ),
        (true, true, true, 200),
        "frames from the server: {:?}",
        h2_frame_types(&h2_bytes)
    );
}

#[test]
fn a_request_with_more_header_fields_than_max_headers_gets_431() {
    let proxy = Mirrorgate::start("", &[], "limits:\n  max_headers: 20\n");
    let request = |fields: usize| {
        let mut head = String::from("GET /v2/ HTTP/1.1\r\nHost: mirrorgate\r\n");
        for index in 0..fields {
            head.push_str(&format!("X-Field-{index}: {index}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        exchange(&mut stream, head.as_bytes())
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        (request(15), request(30)),
        (
            "HTTP/1.1 200 OK".to_owned(),
            "HTTP/1.1 431 Request Header Fields Too Large".to_owned()
        )
    );
}

/// A mirrorgate (with `extra_yaml`) in front of a mirror holding `image` as `ns/app:v1`, whose
/// first layer it has cached; returns the path of that layer's blob.
fn proxy_with_a_cached_blob(
    image: &support::Image,
    extra_yaml: &str,
) -> (Registry, Mirrorgate, String) {
    let mirror = Registry::start();
    support::push(image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(RULES, &[("mirror.test", &mirror.endpoint())], extra_yaml);
    let path = format!("/v2/source.test/ns/app/blobs/{}", image.layers[0]);
    let first = proxy.get(&path, &[]);
    assert_eq!(
        first.body,
        image.blob(&image.layers[0]),
        "the blob is cached"
    );
    (mirror, proxy, path)
}

/// A connection to `addr` that sends `request` with a receive buffer of a few KiB (so that the
/// kernel does not take a large response in for it) and reads nothing until told to.
fn slow_client(addr: &str, request: &str) -> TcpStream {
    use std::os::fd::AsRawFd;
    let stream = TcpStream::connect(addr).unwrap();
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket and an int option of the size given.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    (&stream).write_all(request.as_bytes()).unwrap();
    stream
}

/// The value of the counter `mirrorgate_connections_stalled_total` in `metrics`.
fn stalled_connections(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("mirrorgate_connections_stalled_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn clients_that_never_read_their_response_are_disconnected_so_that_healthz_answers() {
    let image = support::single_arch("unread", &[8 * 1024 * 1024]);
    // Idle connections are never closed within the test: only the stall deadline frees a slot.
    let (_mirror, proxy, path) = proxy_with_a_cached_blob(
        &image,
        "limits:\n  max_connections: 4\n  header_read_timeout: 120s\n  write_stall_timeout: 1s\n",
    );
    let request = format!("GET {path} HTTP/1.1\r\nHost: mirrorgate\r\n\r\n");
    let mut readers: Vec<TcpStream> = (0..4)
        .map(|_| slow_client(&proxy.addr(), &request))
        .collect();
    // Waits in the listen backlog until a slot frees (the client's read timeout is a minute).
    let healthz = support::try_http_request("GET", &proxy.addr(), "/healthz", &[], b"")
        .map(|response| response.status)
        .map_err(|error| error.to_string());
    let stalled = stalled_connections(&proxy.get("/metrics", &[]).text());
    let ends: Vec<(bool, bool)> = readers
        .iter_mut()
        .map(|reader| {
            let (closed, seen) = read_until_closed(reader);
            (closed, seen.len() < image.blob(&image.layers[0]).len())
        })
        .collect();
    assert_eq!(
        (healthz, stalled >= 1.0, ends),
        (Ok(200), true, vec![(true, true); 4]),
        "the readers were closed before the whole blob"
    );
}

#[test]
fn a_client_that_reads_slowly_but_steadily_gets_the_whole_blob() {
    let image = support::single_arch("slow-reader", &[2 * 1024 * 1024]);
    let (_mirror, proxy, path) =
        proxy_with_a_cached_blob(&image, "limits:\n  write_stall_timeout: 1s\n");
    let request = format!("GET {path} HTTP/1.1\r\nHost: mirrorgate\r\nConnection: close\r\n\r\n");
    let mut reader = slow_client(&proxy.addr(), &request);
    reader
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // 32 KiB every 50 ms: the download takes seconds, several times the stall deadline, but the
    // socket takes bytes all along.
    let mut seen = Vec::new();
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let body_start = seen
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(seen.len(), |at| at + 4);
    assert!(
        seen[body_start..] == image.blob(&image.layers[0])[..],
        "{} body bytes of {}",
        seen.len() - body_start,
        image.blob(&image.layers[0]).len()
    );
}

#[test]
fn http2_streams_are_bounded_and_streams_left_without_a_window_close_their_connection() {
    let image = support::single_arch("h2-window", &[8 * 1024 * 1024]);
    let (_mirror, proxy, path) =
        proxy_with_a_cached_blob(&image, "limits:\n  write_stall_timeout: 1s\n");
    let addr = proxy.addr();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (advertised, statuses, connection_ended) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // A stream window of zero: the server may send headers, never a byte of body.
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let mut responses = Vec::new();
        for _ in 0..20 {
            let request = http::Request::get(format!("http://{addr}{path}"))
                .body(())
                .unwrap();
            client = client.ready().await.unwrap();
            responses.push(client.send_request(request, true).unwrap().0);
        }
        // The bodies are kept: a dropped one would cancel its stream.
        let mut statuses = Vec::new();
        let mut bodies = Vec::new();
        for response in responses {
            let response = response.await.unwrap();
            statuses.push(response.status().as_u16());
            bodies.push(response.into_body());
        }
        let advertised = client.current_max_send_streams();
        // A bound far beyond the server's deadline.
        let ended = tokio::time::timeout(Duration::from_secs(60), connection)
            .await
            .is_ok();
        (advertised, statuses, ended)
    });
    let stalled = stalled_connections(&proxy.get("/metrics", &[]).text());
    assert_eq!(
        (advertised, statuses, connection_ended, stalled),
        (100, vec![200; 20], true, 1.0)
    );
}

/// A request head of exactly `size` bytes (request line, `Host` and a filler field).
fn head_of(size: usize) -> String {
    let start = "GET /v2/ HTTP/1.1\r\nHost: mirrorgate\r\nX-Filler: ";
    let end = "\r\n\r\n";
    format!("{start}{}{end}", "a".repeat(size - start.len() - end.len()))
}

#[test]
fn a_request_head_of_max_header_size_passes_and_one_byte_more_gets_431() {
    let proxy = Mirrorgate::start("", &[], "");
    let status_line = |size: usize| {
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        exchange(&mut stream, head_of(size).as_bytes())
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    // The documented default, 64 KiB.
    assert_eq!(
        (status_line(64 * 1024), status_line(64 * 1024 + 1)),
        (
            "HTTP/1.1 200 OK".to_owned(),
            "HTTP/1.1 431 Request Header Fields Too Large".to_owned()
        )
    );
}

#[test]
fn an_http2_header_list_of_max_header_size_passes_and_one_byte_more_gets_431() {
    let proxy = Mirrorgate::start("", &[], "");
    let addr = proxy.addr();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let statuses = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        // RFC 9113's size of a header list: each field's name and value, plus 32; pseudo-fields
        // count with their colon.
        let fixed = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", addr.as_str()),
            (":path", "/v2/"),
        ]
        .iter()
        .map(|(name, value)| name.len() + value.len() + 32)
        .sum::<usize>()
            + "x-filler".len()
            + 32;
        let mut statuses = Vec::new();
        for size in [64 * 1024, 64 * 1024 + 1] {
            let request = http::Request::get(format!("http://{addr}/v2/"))
                .header("x-filler", "a".repeat(size - fixed))
                .body(())
                .unwrap();
            let mut ready = client.clone().ready().await.unwrap();
            let response = ready.send_request(request, true).unwrap().0.await;
            statuses.push(response.map(|r| r.status().as_u16()).ok());
        }
        statuses
    });
    assert_eq!(statuses, [Some(200), Some(431)]);
}
