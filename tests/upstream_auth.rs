//! Upstreams that require credentials: a Distribution registry behind htpasswd (Basic), and one
//! behind a bearer-token front written here (Distribution's own token setup needs a signing
//! service; the front issues tokens the way registry token services do and forwards authorized
//! requests to a real registry). mirrorgate finds credentials in its pull secret by the registry
//! it actually contacts.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Mirrorgate, Registry, push, push_with_creds, single_arch};

const MIRROR: &str = "mirror.test";
const SOURCE: &str = "source.test";
const TOKEN: &str = "a-token-issued-by-the-front";

fn itms(source: &str, mirror: &str) -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: t\nspec:\n  imageTagMirrors:\n  - source: {source}\n    mirrors:\n    - {mirror}\n    mirrorSourcePolicy: NeverContactSource\n"
    )
}

/// A pull secret file holding `user:password` for `host`; the path is returned.
fn pull_secret(dir: &std::path::Path, host: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("pull-secret.json");
    std::fs::write(
        &path,
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn basic_auth_mirror_is_pulled_with_its_own_credentials_from_the_pull_secret() {
    let mirror = Registry::start_with_htpasswd("puller", "s3cret");
    let image = single_arch("basic-auth", &[1000]);
    push_with_creds(
        &image,
        &format!("{}/ns/app:v1", mirror.addr()),
        "puller",
        "s3cret",
    );
    let secrets = tempfile::tempdir().unwrap();
    let secret = pull_secret(secrets.path(), MIRROR, "puller", "s3cret");
    let proxy = Mirrorgate::start(
        &itms(&format!("{SOURCE}/ns"), &format!("{MIRROR}/ns")),
        &[(MIRROR, mirror.endpoint().as_str())],
        &format!("pull_secret: {secret}\n"),
    );
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    assert_eq!(
        (response.status, response.body),
        (200, image.manifest_bytes.clone())
    );
}

#[test]
fn credentials_of_another_registry_are_not_used_for_a_mirror() {
    let mirror = Registry::start_with_htpasswd("puller", "s3cret");
    let image = single_arch("other-creds", &[1000]);
    push_with_creds(
        &image,
        &format!("{}/ns/app:v1", mirror.addr()),
        "puller",
        "s3cret",
    );
    let secrets = tempfile::tempdir().unwrap();
    // The credentials are the source's: they must not open the mirror.
    let secret = pull_secret(secrets.path(), SOURCE, "puller", "s3cret");
    let proxy = Mirrorgate::start(
        &itms(&format!("{SOURCE}/ns"), &format!("{MIRROR}/ns")),
        &[(MIRROR, mirror.endpoint().as_str())],
        &format!("pull_secret: {secret}\n"),
    );
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    assert_eq!(response.status, 502);
}

/// A registry front that demands bearer tokens from its own token endpoint and forwards
/// authorized requests to a real registry.
struct TokenFront {
    addr: SocketAddr,
    token_requests: Arc<AtomicUsize>,
    runtime: tokio::runtime::Runtime,
}

impl TokenFront {
    /// `credentials`: what the token endpoint requires (Basic), or `None` for anonymous tokens.
    fn start(backend: String, credentials: Option<(&str, &str)>) -> TokenFront {
        let (runtime, listener, addr) = support::loopback_server(2);
        let token_requests = Arc::new(AtomicUsize::new(0));
        let expected_basic = credentials.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let state = Arc::new(FrontState {
            addr,
            backend,
            expected_basic,
            token_requests: token_requests.clone(),
            client: reqwest::Client::new(),
        });
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| front(state.clone(), request));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TokenFront {
            addr,
            token_requests,
            runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TokenFront {
    fn drop(&mut self) {
        // Stops the accept loop and every connection task.
        let runtime = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        );
        runtime.shutdown_background();
    }
}

struct FrontState {
    addr: SocketAddr,
    backend: String,
    expected_basic: Option<String>,
    token_requests: Arc<AtomicUsize>,
    client: reqwest::Client,
}

fn reply(
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().insert(*name, value.parse().unwrap());
    }
    response
}

async fn front(
    state: Arc<FrontState>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if request.uri().path() == "/token" {
        state.token_requests.fetch_add(1, Ordering::SeqCst);
        if state.expected_basic.is_some() && authorization != state.expected_basic {
            return Ok(reply(StatusCode::UNAUTHORIZED, &[], Bytes::new()));
        }
        let body = serde_json::json!({"token": TOKEN, "expires_in": 300}).to_string();
        return Ok(reply(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            body.into(),
        ));
    }
    if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let challenge = format!(
            "Bearer realm=\"http://{}/token\",service=\"front\",scope=\"repository:ns/app:pull\"",
            state.addr
        );
        return Ok(reply(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", challenge)],
            Bytes::from_static(
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#,
            ),
        ));
    }
    let url = format!(
        "{}{}",
        state.backend,
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let mut forward = state.client.request(request.method().clone(), url);
    for name in [header::ACCEPT, header::RANGE] {
        if let Some(value) = request.headers().get(&name) {
            forward = forward.header(name, value.clone());
        }
    }
    let Ok(upstream) = forward.send().await else {
        return Ok(reply(StatusCode::BAD_GATEWAY, &[], Bytes::new()));
    };
    let status = upstream.status();
    let mut headers = Vec::new();
    for name in [
        "content-type",
        "content-length",
        "docker-content-digest",
        "content-range",
    ] {
        if let Some(value) = upstream.headers().get(name).and_then(|v| v.to_str().ok()) {
            headers.push((name, value.to_owned()));
        }
    }
    let body = upstream.bytes().await.unwrap_or_default();
    let mut response = reply(status, &headers, body);
    // HEAD answers carry the length of the body they do not send.
    if let Some(length) = headers.iter().find(|(n, _)| *n == "content-length") {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length.1.parse().unwrap());
    }
    Ok(response)
}

#[test]
fn bearer_token_registry_is_pulled_with_one_token_for_many_requests() {
    let backend = Registry::start();
    let image = single_arch("bearer", &[1000, 2000]);
    push(&image, &format!("{}/ns/app:v1", backend.addr()));
    let front = TokenFront::start(backend.endpoint(), Some(("robot", "pw")));
    let secrets = tempfile::tempdir().unwrap();
    let secret = pull_secret(secrets.path(), MIRROR, "robot", "pw");
    let proxy = Mirrorgate::start(
        &itms(&format!("{SOURCE}/ns"), &format!("{MIRROR}/ns")),
        &[(MIRROR, front.endpoint().as_str())],
        &format!("pull_secret: {secret}\n"),
    );
    let manifest = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    let blobs: Vec<u16> = image
        .layers
        .iter()
        .map(|layer| {
            proxy
                .get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"), &[])
                .status
        })
        .collect();
    assert_eq!(
        (
            manifest.status,
            blobs,
            front.token_requests.load(Ordering::SeqCst)
        ),
        (200, vec![200, 200], 1)
    );
}

#[test]
fn bearer_token_registry_without_credentials_gets_an_anonymous_token() {
    let backend = Registry::start();
    let image = single_arch("anonymous-bearer", &[1000]);
    push(&image, &format!("{}/ns/app:v1", backend.addr()));
    let front = TokenFront::start(backend.endpoint(), None);
    let proxy = Mirrorgate::start(
        &itms(&format!("{SOURCE}/ns"), &format!("{MIRROR}/ns")),
        &[(MIRROR, front.endpoint().as_str())],
        "",
    );
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    assert_eq!(response.status, 200);
}

#[test]
fn skopeo_pulls_through_a_bearer_token_mirror() {
    let backend = Registry::start();
    let image = single_arch("skopeo-bearer", &[1000, 30_000]);
    push(&image, &format!("{}/ns/app:v1", backend.addr()));
    let front = TokenFront::start(backend.endpoint(), None);
    let proxy = Mirrorgate::start(
        &itms(&format!("{SOURCE}/ns"), &format!("{MIRROR}/ns")),
        &[(MIRROR, front.endpoint().as_str())],
        "",
    );
    let through = tempfile::tempdir().unwrap();
    let straight = tempfile::tempdir().unwrap();
    let output = support::copy_to_layout(
        &format!("{}/{SOURCE}/ns/app:v1", proxy.addr()),
        &through.path().join("l"),
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let direct = support::copy_to_layout(
        &format!("{}/ns/app:v1", backend.addr()),
        &straight.path().join("l"),
        &[],
    );
    assert!(direct.status.success());
    support::layouts_identical(&through.path().join("l"), &straight.path().join("l")).unwrap();
}
