//! `Upstream` against in-process servers: wiremock for HTTP behaviour, a raw TCP listener for
//! silence, and a small blocking rustls server for certificate checks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Method;
use http::header::{HeaderMap, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wiremock::matchers::{basic_auth, bearer_token, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::RegistrySettings;
use super::*;

/// The parts of the configuration the upstream client is built from.
#[derive(Default)]
struct Config {
    registries: BTreeMap<String, RegistrySettings>,
    pull_secret: Option<std::path::PathBuf>,
    upstream: UpstreamConfig,
    via_token: Option<String>,
}

impl<'a> From<&'a Config> for Settings<'a> {
    fn from(config: &'a Config) -> Self {
        Settings {
            upstream: &config.upstream,
            registries: &config.registries,
            pull_secret: config.pull_secret.as_deref(),
            via_token: config.via_token.as_deref(),
        }
    }
}

const CA_PEM: &[u8] = include_bytes!("testdata/ca.pem");
const LEAF_PEM: &[u8] = include_bytes!("testdata/leaf.pem");
const LEAF_KEY: &[u8] = include_bytes!("testdata/leaf.key");

const MANIFEST_PATH: &str = "/v2/ns/app/manifests/v1";

/// The registry name a wiremock server stands for: its `127.0.0.1:port`.
fn name_of(server: &MockServer) -> String {
    server.address().to_string()
}

/// Settings that send `registry` to `endpoint` (plain http needs `insecure`).
fn insecure_at(endpoint: &str) -> RegistrySettings {
    RegistrySettings {
        endpoint: Some(endpoint.parse().expect("valid endpoint")),
        insecure: true,
        ca_file: None,
    }
}

/// A configuration with these registry settings, pull secret and timeouts.
fn config(
    registries: Vec<(String, RegistrySettings)>,
    pull_secret: Option<&Path>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Config {
    Config {
        registries: registries.into_iter().collect::<BTreeMap<_, _>>(),
        pull_secret: pull_secret.map(Path::to_owned),
        upstream: UpstreamConfig {
            connect_timeout,
            timeout,
            redirect_allowed_networks: Vec::new(),
        },
        via_token: None,
    }
}

/// An `Upstream` for the wiremock registries given, with generous timeouts.
fn upstream_for(servers: &[&MockServer], pull_secret: Option<&Path>) -> Upstream {
    let registries = servers
        .iter()
        .map(|server| (name_of(server), insecure_at(&server.uri())))
        .collect();
    Upstream::new(&config(
        registries,
        pull_secret,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect("valid configuration")
}

fn get(registry: &str, request_path: &str) -> UpstreamRequest {
    UpstreamRequest::new(Method::GET, registry, "ns/app", request_path)
}

/// Writes a pull secret with `auth` entries for `(key, user, password)`.
fn pull_secret(entries: &[(&str, &str, &str)]) -> tempfile::NamedTempFile {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(key, user, password)| {
            (
                (*key).to_owned(),
                serde_json::json!({"auth": STANDARD.encode(format!("{user}:{password}"))}),
            )
        })
        .collect();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    let text = serde_json::json!({ "auths": auths }).to_string();
    file.write_all(text.as_bytes()).expect("write pull secret");
    file
}

/// Requests the server received on `request_path`.
async fn received_on(server: &MockServer, request_path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == request_path)
        .collect()
}

/// Mounts a registry that demands `Bearer <token>` and otherwise challenges with `realm`.
async fn mount_bearer_registry(registry: &MockServer, token: &str, realm: &str) {
    Mock::given(method("GET"))
        .and(path(MANIFEST_PATH))
        .and(bearer_token(token))
        .respond_with(ResponseTemplate::new(200).set_body_string("manifest"))
        .with_priority(1)
        .mount(registry)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).insert_header(
            "WWW-Authenticate",
            format!(
                r#"Bearer realm="{realm}",service="test-registry",scope="repository:ns/app:pull""#
            ),
        ))
        .with_priority(2)
        .mount(registry)
        .await;
}

/// Mounts a token endpoint at `/token` answering `token`.
async fn mount_token_endpoint(server: &MockServer, token: &str) {
    Mock::given(method("GET"))
        .and(path("/token"))
        .and(query_param("service", "test-registry"))
        .and(query_param("scope", "repository:ns/app:pull"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"token": token, "expires_in": 300})),
        )
        // Ahead of the catch-all 401 when registry and token endpoint share a server.
        .with_priority(1)
        .mount(server)
        .await;
}

fn authorization_of(request: &Request) -> Option<String> {
    request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn ok_response_is_returned_with_its_body() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(MANIFEST_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_string("manifest"))
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let response = upstream
        .send(get(&name_of(&registry), MANIFEST_PATH))
        .await
        .expect("200");
    assert_eq!(response.text().await.expect("body"), "manifest");
}

#[tokio::test]
async fn head_returns_headers_and_no_body() {
    let registry = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path(MANIFEST_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Docker-Content-Digest", "sha256:abc")
                .set_body_string("manifest"),
        )
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let request = UpstreamRequest::new(Method::HEAD, name_of(&registry), "ns/app", MANIFEST_PATH);
    let response = upstream.send(request).await.expect("200");
    let digest = response.headers().get("docker-content-digest").cloned();
    let body = response.bytes().await.expect("body");
    assert_eq!(
        (digest, body.len()),
        (Some(HeaderValue::from_static("sha256:abc")), 0)
    );
}

#[tokio::test]
async fn partial_content_is_success() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/ns/app/blobs/sha256:abc"))
        .and(header("range", "bytes=2-3"))
        .respond_with(ResponseTemplate::new(206).set_body_string("cd"))
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let mut request = get(&name_of(&registry), "/v2/ns/app/blobs/sha256:abc");
    request
        .headers
        .insert("range", HeaderValue::from_static("bytes=2-3"));
    let response = upstream.send(request).await.expect("206");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
}

#[tokio::test]
async fn query_is_passed_through() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/ns/app/tags/list"))
        .and(query_param("n", "10"))
        .and(query_param("last", "abc"))
        .respond_with(ResponseTemplate::new(200).set_body_string("tags"))
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let mut request = get(&name_of(&registry), "/v2/ns/app/tags/list");
    request.query = Some("n=10&last=abc".to_owned());
    assert!(upstream.send(request).await.is_ok());
}

#[tokio::test]
async fn not_found_is_not_found() {
    let registry = MockServer::start().await;
    let upstream = upstream_for(&[&registry], None);
    let result = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(result.err(), Some(AttemptError::NotFound));
}

#[tokio::test]
async fn server_error_is_a_status_error() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let result = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(result.err(), Some(AttemptError::Status { status: 500 }));
}

#[tokio::test]
async fn refused_port_fails_fast_with_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let registry = format!("127.0.0.1:{port}");
    let upstream = Upstream::new(&config(
        vec![(registry.clone(), insecure_at(&format!("http://{registry}")))],
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect("valid configuration");
    let started = Instant::now();
    let result = upstream.send(get(&registry, MANIFEST_PATH)).await;
    assert_eq!(
        (result.err(), started.elapsed() < Duration::from_secs(1)),
        (
            Some(AttemptError::Unreachable {
                reason: format!("connection refused (127.0.0.1:{port})"),
                timed_out: false
            }),
            true
        )
    );
}

#[tokio::test]
async fn a_connect_error_names_the_registry_not_its_endpoint() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let upstream = Upstream::new(&config(
        vec![(
            "mirror.corp.test".to_owned(),
            insecure_at(&format!("http://127.0.0.1:{port}")),
        )],
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect("valid configuration");
    let result = upstream.send(get("mirror.corp.test", MANIFEST_PATH)).await;
    assert_eq!(
        result.err(),
        Some(AttemptError::Unreachable {
            reason: "connection refused (mirror.corp.test)".to_owned(),
            timed_out: false
        })
    );
}

/// A TCP server that accepts connections and never sends a byte.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    address
}

/// A keep-alive HTTP server that answers `answered` requests on each connection and then
/// closes it as the next request arrives, without answering: what a registry closing an idle
/// connection just as a client reuses it looks like. Counts the connections it accepted.
async fn closing_server(answered: usize) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                for request in 0..=answered {
                    head.clear();
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    if request == answered {
                        return;
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nmanifest")
                        .await;
                }
            });
        }
    });
    (address, connections)
}

/// An `Upstream` for a plain-http registry at `address`, named by it.
fn upstream_at(address: SocketAddr) -> Upstream {
    Upstream::new(&config(
        vec![(
            address.to_string(),
            insecure_at(&format!("http://{address}")),
        )],
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect("valid configuration")
}

#[tokio::test]
async fn a_pooled_connection_closed_before_the_answer_is_retried_once_on_a_new_one() {
    let (address, connections) = closing_server(1).await;
    let upstream = upstream_at(address);
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let response = upstream
            .send(get(&address.to_string(), MANIFEST_PATH))
            .await;
        bodies.push(match response {
            Ok(response) => Ok(response.text().await.unwrap_or_default()),
            Err(error) => Err(error),
        });
    }
    assert_eq!(
        (
            bodies,
            connections.load(std::sync::atomic::Ordering::SeqCst)
        ),
        (
            vec![Ok("manifest".to_owned()), Ok("manifest".to_owned())],
            2
        )
    );
}

#[tokio::test]
async fn a_registry_closing_every_request_unanswered_fails_the_request_not_the_registry() {
    let (address, connections) = closing_server(0).await;
    let upstream = upstream_at(address);
    let result = upstream
        .send(get(&address.to_string(), MANIFEST_PATH))
        .await
        .map(|_| ());
    assert_eq!(
        (
            result,
            connections.load(std::sync::atomic::Ordering::SeqCst)
        ),
        (
            Err(AttemptError::Connect(format!(
                "connection closed before the response ({address})"
            ))),
            2
        )
    );
}

#[tokio::test]
async fn silent_server_times_out_after_timeout() {
    let address = silent_server().await;
    let registry = address.to_string();
    let upstream = Upstream::new(&config(
        vec![(registry.clone(), insecure_at(&format!("http://{address}")))],
        None,
        Duration::from_secs(5),
        Duration::from_millis(300),
    ))
    .expect("valid configuration");
    let started = Instant::now();
    let result = upstream.send(get(&registry, MANIFEST_PATH)).await;
    assert_eq!(
        (result.err(), started.elapsed() < Duration::from_secs(2)),
        (
            Some(AttemptError::Timeout {
                connecting: false,
                after: Duration::from_millis(300)
            }),
            true
        )
    );
}

#[tokio::test]
async fn silent_tls_handshake_times_out_after_connect_timeout() {
    let address = silent_server().await;
    let registry = address.to_string();
    let upstream = Upstream::new(&config(
        vec![(registry.clone(), insecure_at(&format!("https://{address}")))],
        None,
        Duration::from_millis(200),
        Duration::from_secs(10),
    ))
    .expect("valid configuration");
    let started = Instant::now();
    let result = upstream.send(get(&registry, MANIFEST_PATH)).await;
    assert_eq!(
        (result.err(), started.elapsed() < Duration::from_secs(2)),
        (
            Some(AttemptError::Unreachable {
                reason: "connect timed out after 200ms".to_owned(),
                timed_out: true
            }),
            true
        )
    );
}

#[tokio::test]
async fn anonymous_bearer_token_is_fetched_once_for_two_requests() {
    let registry = MockServer::start().await;
    mount_bearer_registry(&registry, "tok", &format!("{}/token", registry.uri())).await;
    mount_token_endpoint(&registry, "tok").await;
    let upstream = upstream_for(&[&registry], None);
    let first = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    let second = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    let token_requests = received_on(&registry, "/token").await;
    assert_eq!(
        (
            first.is_ok(),
            second.is_ok(),
            token_requests.len(),
            authorization_of(&token_requests[0])
        ),
        (true, true, 1, None)
    );
}

#[tokio::test]
async fn cached_token_is_sent_without_a_401_round_trip() {
    let registry = MockServer::start().await;
    mount_bearer_registry(&registry, "tok", &format!("{}/token", registry.uri())).await;
    mount_token_endpoint(&registry, "tok").await;
    let upstream = upstream_for(&[&registry], None);
    for _ in 0..3 {
        upstream
            .send(get(&name_of(&registry), MANIFEST_PATH))
            .await
            .expect("200");
    }
    // One 401 and then three authorised requests.
    assert_eq!(received_on(&registry, MANIFEST_PATH).await.len(), 4);
}

#[tokio::test]
async fn a_token_realm_on_another_configured_registry_is_asked_without_credentials() {
    let registry = MockServer::start().await;
    let other_registry = MockServer::start().await;
    mount_bearer_registry(&registry, "tok", &format!("{}/token", other_registry.uri())).await;
    mount_token_endpoint(&other_registry, "tok").await;
    // Credentials for both registries: the realm, being the other registry's endpoint, must
    // get neither this registry's nor its own.
    let secret = pull_secret(&[
        (&name_of(&registry), "alice", "pw-a"),
        (&name_of(&other_registry), "bob", "pw-b"),
    ]);
    let upstream = upstream_for(&[&registry, &other_registry], Some(secret.path()));
    let result = upstream
        .send(get(&name_of(&registry), MANIFEST_PATH))
        .await
        .map(|_| ());
    let seen: Vec<Option<String>> = received_on(&other_registry, "/token")
        .await
        .iter()
        .map(authorization_of)
        .collect();
    assert_eq!((result, seen), (Ok(()), vec![None]));
}

#[tokio::test]
async fn a_token_realm_on_no_configured_endpoint_gets_the_registry_credentials() {
    let auth_server = MockServer::start().await;
    mount_token_endpoint(&auth_server, "tok").await;
    // `localhost` is no configured endpoint (the registry is configured as 127.0.0.1).
    let realm = format!("http://localhost:{}/token", auth_server.address().port());
    let (result, token_requests) =
        with_realm(&realm, &auth_server, &["127.0.0.0/8", "::1/128"]).await;
    let seen: Vec<Option<String>> = token_requests.iter().map(authorization_of).collect();
    assert_eq!((result, seen), (Ok(()), vec![Some(basic("alice", "pw-a"))]));
}

/// Sends one manifest request to `registry`, which challenges with `realm`, through an upstream
/// configured for `registry` alone with these credentials and `redirect_allowed_networks`;
/// returns the result and the requests the token server saw.
async fn with_realm(
    realm: &str,
    auth_server: &MockServer,
    allowed: &[&str],
) -> (Result<(), AttemptError>, Vec<Request>) {
    let registry = MockServer::start().await;
    mount_bearer_registry(&registry, "tok", realm).await;
    let secret = pull_secret(&[(&name_of(&registry), "alice", "pw-a")]);
    let upstream = upstream_allowing(&registry, secret.path(), allowed);
    let result = upstream
        .send(get(&name_of(&registry), MANIFEST_PATH))
        .await
        .map(|_| ());
    (result, received_on(auth_server, "/token").await)
}

#[tokio::test]
async fn a_token_realm_on_an_internal_address_is_refused_naming_its_host() {
    let auth_server = MockServer::start().await;
    mount_token_endpoint(&auth_server, "tok").await;
    let port = auth_server.address().port();
    let mut outcomes = Vec::new();
    for realm in [
        format!("http://127.0.0.1:{port}/token"),
        format!("http://localhost:{port}/token"),
        "http://169.254.169.254/latest/token".to_owned(),
    ] {
        let (result, token_requests) = with_realm(&realm, &auth_server, &[]).await;
        outcomes.push((result.map_err(|e| e.to_string()), token_requests.len()));
    }
    let refused = |host: &str| {
        Err(format!(
            "token realm {host} refused: a loopback, link-local or metadata address (allow it \
             with upstream.redirect_allowed_networks, or name it in registries)"
        ))
    };
    assert_eq!(
        outcomes,
        vec![
            (refused("127.0.0.1"), 0),
            (refused("localhost"), 0),
            (refused("169.254.169.254"), 0),
        ]
    );
}

#[tokio::test]
async fn a_token_realm_in_an_allowed_network_is_used() {
    let auth_server = MockServer::start().await;
    mount_token_endpoint(&auth_server, "tok").await;
    let realm = format!("http://localhost:{}/token", auth_server.address().port());
    let (result, token_requests) =
        with_realm(&realm, &auth_server, &["127.0.0.0/8", "::1/128"]).await;
    assert_eq!((result, token_requests.len()), (Ok(()), 1));
}

#[tokio::test]
async fn basic_challenge_is_answered_with_credentials() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(basic_auth("carol", "pw-c"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(1)
        .mount(&registry)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Basic realm="reg""#),
        )
        .with_priority(2)
        .mount(&registry)
        .await;
    let secret = pull_secret(&[(&name_of(&registry), "carol", "pw-c")]);
    let upstream = upstream_for(&[&registry], Some(secret.path()));
    let result = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(result.map(|r| r.status()).ok(), Some(StatusCode::OK));
}

#[tokio::test]
async fn basic_credentials_go_up_front_after_the_first_challenge() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(basic_auth("carol", "pw-c"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(1)
        .mount(&registry)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Basic realm="reg""#),
        )
        .with_priority(2)
        .mount(&registry)
        .await;
    let secret = pull_secret(&[(&name_of(&registry), "carol", "pw-c")]);
    let upstream = upstream_for(&[&registry], Some(secret.path()));
    for _ in 0..2 {
        upstream
            .send(get(&name_of(&registry), MANIFEST_PATH))
            .await
            .expect("200");
    }
    // 401, 200, then straight 200.
    assert_eq!(received_on(&registry, MANIFEST_PATH).await.len(), 3);
}

#[tokio::test]
async fn basic_challenge_without_credentials_is_unauthorized() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Basic realm="reg""#),
        )
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let result = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(
        result.err(),
        Some(AttemptError::Unauthorized { status: 401 })
    );
}

#[tokio::test]
async fn still_401_after_a_token_is_unauthorized() {
    let registry = MockServer::start().await;
    // The registry challenges whatever it gets, even the token it asked for.
    mount_bearer_registry(
        &registry,
        "never-accepted",
        &format!("{}/token", registry.uri()),
    )
    .await;
    mount_token_endpoint(&registry, "tok").await;
    let upstream = upstream_for(&[&registry], None);
    let result = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(
        result.err(),
        Some(AttemptError::Unauthorized { status: 401 })
    );
}

#[tokio::test]
async fn refused_cached_token_is_replaced_by_a_fresh_one() {
    let registry = MockServer::start().await;
    let realm = format!("{}/token", registry.uri());
    // The first token works once, then is "revoked"; the second token works.
    Mock::given(method("GET"))
        .and(path(MANIFEST_PATH))
        .and(bearer_token("first"))
        .respond_with(ResponseTemplate::new(200))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&registry)
        .await;
    mount_bearer_registry(&registry, "second", &realm).await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"token": "first"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&registry)
        .await;
    Mock::given(method("GET"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"token": "second"})),
        )
        .with_priority(1)
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let first = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    let second = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(
        (
            first.is_ok(),
            second.is_ok(),
            received_on(&registry, "/token").await.len()
        ),
        (true, true, 2)
    );
}

#[tokio::test]
async fn malformed_challenge_is_a_protocol_error() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Bearer realm="open"#),
        )
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let result = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(
        result.err(),
        Some(AttemptError::Protocol(
            "malformed WWW-Authenticate header: unterminated quoted string at byte 13".to_owned()
        ))
    );
}

/// A registry that answers the blob with a redirect to `storage` (with Basic auth from a pull
/// secret), and a storage that serves it.
async fn redirecting_registry(storage: &MockServer) -> (MockServer, tempfile::NamedTempFile) {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(REDIRECTED_BLOB))
        .and(basic_auth("dave", "pw-d"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("Location", format!("{}/bucket/blob?sig=x", storage.uri())),
        )
        .with_priority(1)
        .mount(&registry)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Basic realm="reg""#),
        )
        .with_priority(2)
        .mount(&registry)
        .await;
    Mock::given(method("GET"))
        .and(path("/bucket/blob"))
        .respond_with(ResponseTemplate::new(200).set_body_string("blob-bytes"))
        .mount(storage)
        .await;
    let secret = pull_secret(&[(&name_of(&registry), "dave", "pw-d")]);
    (registry, secret)
}

const REDIRECTED_BLOB: &str = "/v2/ns/app/blobs/sha256:abc";

/// An `Upstream` for `registry` whose redirects may lead to `allowed` networks.
fn upstream_allowing(registry: &MockServer, secret: &Path, allowed: &[&str]) -> Upstream {
    let mut config = config(
        vec![(name_of(registry), insecure_at(&registry.uri()))],
        Some(secret),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    config.upstream.redirect_allowed_networks =
        allowed.iter().map(|n| n.parse().unwrap()).collect();
    Upstream::new(&config).expect("upstream")
}

#[tokio::test]
async fn cross_host_redirect_drops_authorization_and_still_fetches_the_blob() {
    let storage = MockServer::start().await;
    let (registry, secret) = redirecting_registry(&storage).await;
    // The storage is on loopback, like everything in tests: it has to be allowed.
    let upstream = upstream_allowing(&registry, secret.path(), &["127.0.0.0/8"]);
    let mut request = get(&name_of(&registry), REDIRECTED_BLOB);
    request.follow_redirects = true;
    let body = upstream
        .send(request)
        .await
        .expect("blob")
        .text()
        .await
        .expect("body");
    let storage_saw: Vec<Option<String>> = received_on(&storage, "/bucket/blob")
        .await
        .iter()
        .map(authorization_of)
        .collect();
    assert_eq!((body.as_str(), storage_saw), ("blob-bytes", vec![None]));
}

#[tokio::test]
async fn a_redirect_to_dead_storage_fails_the_request_not_the_registry() {
    let storage_address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(REDIRECTED_BLOB))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("Location", format!("http://{storage_address}/bucket/blob")),
        )
        .mount(&registry)
        .await;
    let secret = pull_secret(&[]);
    let upstream = upstream_allowing(&registry, secret.path(), &["127.0.0.0/8"]);
    let mut request = get(&name_of(&registry), REDIRECTED_BLOB);
    request.follow_redirects = true;
    let result = upstream.send(request).await.map(|_| ());
    // A connection error of this request, not `Unreachable`, which would back off the
    // registry that answered.
    assert_eq!(
        result,
        Err(AttemptError::Connect(format!(
            "connection refused ({})",
            name_of(&registry)
        )))
    );
}

#[tokio::test]
async fn a_redirect_to_a_loopback_address_is_refused_without_contacting_it() {
    let storage = MockServer::start().await;
    let (registry, secret) = redirecting_registry(&storage).await;
    let upstream = upstream_allowing(&registry, secret.path(), &[]);
    let mut request = get(&name_of(&registry), REDIRECTED_BLOB);
    request.follow_redirects = true;
    let result = upstream.send(request).await.map(|_| ());
    let storage_requests = received_on(&storage, "/bucket/blob").await.len();
    assert!(
        matches!(&result, Err(AttemptError::Protocol(reason)) if reason.contains("refused") && !reason.contains("sig="))
            && storage_requests == 0,
        "{result:?}, storage saw {storage_requests} requests"
    );
}

#[tokio::test]
async fn a_redirect_to_a_name_resolving_to_loopback_is_refused() {
    let storage = MockServer::start().await;
    let (registry, secret) = redirecting_registry(&storage).await;
    // Same server, named `localhost`: the name is not checked, the addresses it resolves to are.
    let port = storage.address().port();
    Mock::given(method("GET"))
        .and(path("/v2/ns/app/blobs/sha256:def"))
        .respond_with(ResponseTemplate::new(302).insert_header(
            "Location",
            format!("http://localhost:{port}/bucket/blob?sig=y"),
        ))
        .with_priority(1)
        .mount(&registry)
        .await;
    let upstream = upstream_allowing(&registry, secret.path(), &[]);
    let mut request = get(&name_of(&registry), "/v2/ns/app/blobs/sha256:def");
    request.follow_redirects = true;
    let result = upstream.send(request).await.map(|_| ());
    let storage_requests = received_on(&storage, "/bucket/blob").await.len();
    assert!(
        matches!(&result, Err(AttemptError::Protocol(reason)) if reason.contains("redirect to localhost refused"))
            && storage_requests == 0,
        "{result:?}, storage saw {storage_requests} requests"
    );
}

#[tokio::test]
async fn redirect_is_not_followed_without_follow_redirects() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("Location", format!("{}/elsewhere", registry.uri())),
        )
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let result = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(result.err(), Some(AttemptError::Status { status: 307 }));
}

#[tokio::test]
async fn client_authorization_and_hop_by_hop_headers_are_not_forwarded() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&registry)
        .await;
    let upstream = upstream_for(&[&registry], None);
    let mut request = get(&name_of(&registry), MANIFEST_PATH);
    for (name, value) in [
        ("accept", "application/vnd.oci.image.manifest.v1+json"),
        ("authorization", "Bearer client-token"),
        ("connection", "x-private"),
        ("x-private", "1"),
        ("te", "trailers"),
    ] {
        request
            .headers
            .insert(name, HeaderValue::from_static(value));
    }
    upstream.send(request).await.expect("200");
    let seen = &received_on(&registry, MANIFEST_PATH).await[0].headers;
    let shown = |name: &str| {
        seen.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        [
            shown("accept"),
            shown("authorization"),
            shown("x-private"),
            shown("te"),
            shown("user-agent")
        ],
        [
            Some("application/vnd.oci.image.manifest.v1+json".to_owned()),
            None,
            None,
            None,
            Some(USER_AGENT.to_owned())
        ]
    );
}

#[tokio::test]
async fn insecure_registry_without_endpoint_falls_back_to_http() {
    let registry = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(MANIFEST_PATH))
        .respond_with(ResponseTemplate::new(200))
        .mount(&registry)
        .await;
    let settings = RegistrySettings {
        endpoint: None,
        insecure: true,
        ca_file: None,
    };
    let upstream = Upstream::new(&config(
        vec![(name_of(&registry), settings)],
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect("valid configuration");
    let result = upstream.send(get(&name_of(&registry), MANIFEST_PATH)).await;
    assert_eq!(result.map(|r| r.status()).ok(), Some(StatusCode::OK));
}

#[test]
fn invalid_ca_file_error_names_the_file() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
        .expect("write");
    let settings = RegistrySettings {
        endpoint: None,
        insecure: false,
        ca_file: Some(file.path().to_owned()),
    };
    let err = Upstream::new(&config(
        vec![("mirror.corp.com".to_owned(), settings)],
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect_err("invalid certificate")
    .to_string();
    assert!(
        err.starts_with(&format!(
            "registries.\"mirror.corp.com\".ca_file {}: certificate 1 is invalid",
            file.path().display()
        )),
        "{err}"
    );
}

#[test]
fn ca_file_without_certificates_is_rejected() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(b"not a PEM file\n").expect("write");
    let settings = RegistrySettings {
        endpoint: None,
        insecure: false,
        ca_file: Some(file.path().to_owned()),
    };
    let err = Upstream::new(&config(
        vec![("mirror.corp.com".to_owned(), settings)],
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect_err("no certificate")
    .to_string();
    assert!(
        err.ends_with("no PEM certificate (BEGIN CERTIFICATE) found"),
        "{err}"
    );
}

#[test]
fn missing_pull_secret_error_names_the_file() {
    let err = Upstream::new(&config(
        vec![],
        Some(Path::new("/nonexistent/pull-secret.json")),
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect_err("missing file")
    .to_string();
    assert!(
        err.starts_with("pull secret /nonexistent/pull-secret.json: cannot read the file"),
        "{err}"
    );
}

/// A blocking TLS server (rustls, test certificate for 127.0.0.1) answering 200 `ok` to each
/// request; runs on plain threads for the rest of the test process.
fn tls_server() -> SocketAddr {
    let certs = CertificateDer::pem_slice_iter(LEAF_PEM)
        .collect::<Result<Vec<_>, _>>()
        .expect("test certificate");
    let key = PrivateKeyDer::from_pem_slice(LEAF_KEY).expect("test key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = Arc::clone(&config);
            std::thread::spawn(move || serve_tls(stream, config));
        }
    });
    address
}

fn serve_tls(stream: std::net::TcpStream, config: Arc<rustls::ServerConfig>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// Sends one GET to a TLS server at `address` with these settings.
async fn get_over_tls(
    address: SocketAddr,
    insecure: bool,
    ca_file: Option<&Path>,
) -> Result<reqwest::Response, AttemptError> {
    let registry = address.to_string();
    let settings = RegistrySettings {
        endpoint: Some(
            format!("https://{address}")
                .parse()
                .expect("valid endpoint"),
        ),
        insecure,
        ca_file: ca_file.map(Path::to_owned),
    };
    let upstream = Upstream::new(&config(
        vec![(registry.clone(), settings)],
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect("valid configuration");
    upstream.send(get(&registry, MANIFEST_PATH)).await
}

#[tokio::test]
async fn ca_file_roots_are_trusted() {
    let mut ca = tempfile::NamedTempFile::new().expect("temp file");
    ca.write_all(CA_PEM).expect("write");
    let result = get_over_tls(tls_server(), false, Some(ca.path())).await;
    assert_eq!(result.map(|r| r.status()).ok(), Some(StatusCode::OK));
}

#[tokio::test]
async fn unknown_issuer_is_a_connect_error() {
    let address = tls_server();
    let result = get_over_tls(address, false, None).await;
    assert!(
        matches!(&result, Err(AttemptError::Unreachable { reason, timed_out: false }) if reason.starts_with("TLS handshake failed")),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn insecure_registry_skips_certificate_verification() {
    let result = get_over_tls(tls_server(), true, None).await;
    assert_eq!(result.map(|r| r.status()).ok(), Some(StatusCode::OK));
}

#[test]
fn attempt_errors_display_briefly() {
    let shown: Vec<String> = [
        AttemptError::NotFound,
        AttemptError::Unauthorized { status: 403 },
        AttemptError::Status { status: 503 },
        AttemptError::Status { status: 599 },
        AttemptError::Timeout {
            connecting: true,
            after: Duration::from_secs(5),
        },
        AttemptError::Timeout {
            connecting: false,
            after: Duration::from_millis(1500),
        },
        AttemptError::Connect("connection refused (127.0.0.1:5001)".to_owned()),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        shown,
        vec![
            "not found",
            "unauthorized (403)",
            "HTTP 503 Service Unavailable",
            "HTTP 599",
            "connect timed out after 5s",
            "timed out after 1s 500ms",
            "connection refused (127.0.0.1:5001)",
        ]
    );
}

#[test]
fn outcomes_are_metric_labels() {
    let outcomes: Vec<&str> = [
        AttemptError::NotFound,
        AttemptError::Unauthorized { status: 401 },
        AttemptError::Timeout {
            connecting: false,
            after: Duration::from_secs(1),
        },
        AttemptError::Status { status: 500 },
        AttemptError::Protocol(String::new()),
        AttemptError::Status { status: 429 },
        AttemptError::Unreachable {
            reason: "connect timed out after 5s".to_owned(),
            timed_out: true,
        },
        AttemptError::Unreachable {
            reason: "connection refused (mirror.test)".to_owned(),
            timed_out: false,
        },
    ]
    .iter()
    .map(AttemptError::outcome)
    .collect();
    assert_eq!(
        outcomes,
        vec![
            "not_found",
            "unauthorized",
            "timeout",
            "error",
            "error",
            "rejected",
            "timeout",
            "error"
        ]
    );
}

#[test]
fn upstream_debug_does_not_show_credentials() {
    let secret = pull_secret(&[("quay.io", "robot", "hunter2")]);
    let upstream = Upstream::new(&config(
        vec![],
        Some(secret.path()),
        Duration::from_secs(5),
        Duration::from_secs(10),
    ))
    .expect("valid configuration");
    let shown = format!("{upstream:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains(&STANDARD.encode("robot:hunter2")),
        "{shown}"
    );
}

#[test]
fn forwardable_headers_drop_those_named_by_connection() {
    let mut headers = HeaderMap::new();
    headers.insert("connection", HeaderValue::from_static("close, X-Trace"));
    headers.insert("x-trace", HeaderValue::from_static("1"));
    headers.insert("range", HeaderValue::from_static("bytes=0-1"));
    let kept: Vec<String> = forwardable_headers(&headers)
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect();
    assert_eq!(kept, vec!["range"]);
}

#[test]
fn send_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let upstream = Upstream::new(&Config::default()).expect("default configuration");
    let future = upstream.send(get("quay.io", MANIFEST_PATH));
    // The server runs handlers on a multi-threaded runtime, which needs `Send` futures.
    assert_send(&future);
}

#[tokio::test]
async fn every_request_carries_via_extending_the_chain_being_served() {
    let registry = MockServer::start().await;
    mount_bearer_registry(&registry, "t0k3n", &format!("{}/token", registry.uri())).await;
    mount_token_endpoint(&registry, "t0k3n").await;
    let mut settings = config(
        vec![(name_of(&registry), insecure_at(&registry.uri()))],
        None,
        Duration::from_secs(5),
        Duration::from_secs(10),
    );
    settings.via_token = Some("mirrorgate.test".to_owned());
    let upstream = Upstream::new(&settings).expect("valid configuration");
    let mut request = get(&name_of(&registry), MANIFEST_PATH);
    // Whatever a caller put there, the chain is written by `send`.
    request
        .headers
        .insert(http::header::VIA, HeaderValue::from_static("1.1 forged"));
    let mut client = HeaderMap::new();
    client.insert(http::header::VIA, HeaderValue::from_static("1.1 edge"));
    via::serving(via::received(&client), upstream.send(request))
        .await
        .expect("200 after the token round trip");
    let vias: Vec<Option<String>> = received_on(&registry, MANIFEST_PATH)
        .await
        .iter()
        .map(|r| {
            r.headers
                .get(http::header::VIA)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        vias,
        vec![Some("1.1 edge, 1.1 mirrorgate.test".to_owned()); 2],
        "the 401 and the authorized retry"
    );
}
