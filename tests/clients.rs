//! Client access (`clients`): htpasswd users and bearer tokens, with repository scopes, between
//! skopeo and a real Distribution registry.
//!
//! The harness waits for `GET /v2/` to answer 200, so each proxy starts anonymous and the test
//! then turns access control on by rewriting the configuration and sending SIGHUP: which also
//! checks that the clients files are read on reload.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use support::{Image, Mirrorgate, Registry, copy_to_layout, http_get, push, single_arch};

const SOURCE: &str = "source.test";
const PASSWORD: &str = "correct horse";
const TOKEN: &str = "mg-token-0123456789abcdef";

/// A registry holding one small image at `ns-a/app:v1` and another at `ns-b/app:v1`.
struct Setup {
    registry: Registry,
    a: Image,
    b: Image,
}

fn setup() -> Setup {
    let registry = Registry::start();
    let (a, b) = (
        single_arch("clients-a", &[1024]),
        single_arch("clients-b", &[2048]),
    );
    push(&a, &format!("{}/ns-a/app:v1", registry.addr()));
    push(&b, &format!("{}/ns-b/app:v1", registry.addr()));
    Setup { registry, a, b }
}

impl Setup {
    fn proxy(&self) -> Mirrorgate {
        let endpoint = self.registry.endpoint();
        Mirrorgate::start("", &[(SOURCE, endpoint.as_str())], "")
    }
}

/// Adds `clients` to the proxy's configuration, reloads, and waits until `/v2/` wants
/// credentials.
fn enable_clients(proxy: &Mirrorgate, clients: serde_json::Value) {
    let path = proxy.config_path();
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("read config")).expect("JSON");
    config["clients"] = clients;
    fs::write(&path, config.to_string()).expect("write config");
    proxy.sighup();
    wait_for("/v2/ to answer 401", || {
        http_get(&proxy.addr(), "/v2/", &[]).status == 401
    });
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_htpasswd(dir: &Path, users: &[&str]) -> PathBuf {
    let path = dir.join("htpasswd");
    let lines: String = users
        .iter()
        .map(|user| format!("{user}:{}\n", bcrypt::hash(PASSWORD, 4).expect("bcrypt")))
        .collect();
    fs::write(&path, lines).expect("write htpasswd");
    path
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn pull(proxy: &Mirrorgate, repository: &str, extra: &[&str]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = format!("{}/{SOURCE}/{repository}:v1", proxy.addr());
    let output = copy_to_layout(&reference, &dir.path().join("layout"), extra);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The digest of the first layer of `image`'s only manifest.
fn first_layer(image: &Image) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&image.blob(image.manifest_for("linux/amd64")))
            .expect("manifest JSON");
    manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_owned()
}

#[test]
fn htpasswd_client_pulls_and_others_are_challenged() {
    let setup = setup();
    let proxy = setup.proxy();
    let htpasswd = write_htpasswd(proxy.dir(), &["alice"]);
    enable_clients(
        &proxy,
        serde_json::json!({"mode": "htpasswd", "htpasswd_file": htpasswd}),
    );

    let challenge = http_get(&proxy.addr(), "/v2/", &[]);
    assert_eq!(
        (
            challenge.status,
            challenge.header("WWW-Authenticate"),
            challenge.json()["errors"][0]["code"].as_str(),
        ),
        (
            401,
            Some("Basic realm=\"mirrorgate\""),
            Some("UNAUTHORIZED")
        )
    );
    let wrong = basic("alice", "wrong password");
    let good = basic("alice", PASSWORD);
    let statuses: Vec<u16> = [
        ("/v2/", wrong.as_str()),
        ("/v2/source.test/ns-a/app/tags/list", ""),
        ("/v2/", good.as_str()),
        ("/healthz", ""),
        ("/readyz", ""),
        ("/metrics", ""),
    ]
    .iter()
    .map(|(path, auth)| {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            Vec::new()
        } else {
            vec![("Authorization", *auth)]
        };
        http_get(&proxy.addr(), path, &headers).status
    })
    .collect();
    assert_eq!(statuses, vec![401, 401, 200, 200, 200, 200]);

    let creds = format!("alice:{PASSWORD}");
    pull(&proxy, "ns-a/app", &["--src-creds", &creds]).expect("alice pulls with her password");
    let refused = pull(&proxy, "ns-a/app", &[]).expect_err("no credentials, no pull");
    assert!(
        refused.contains("401") || refused.to_lowercase().contains("unauthorized"),
        "{refused}"
    );

    // A broken file on reload keeps the access in force.
    fs::write(&htpasswd, "alice:plaintext\n").expect("break htpasswd");
    proxy.sighup();
    wait_for("the failed reload to be logged", || {
        proxy.log().contains("cannot reload the clients files")
    });
    assert_eq!(
        http_get(&proxy.addr(), "/v2/", &[("Authorization", &good)]).status,
        200
    );
    let log = proxy.log();
    assert_eq!(
        (
            log.contains(PASSWORD),
            log.contains(&good["Basic ".len()..])
        ),
        (false, false),
        "credentials in the log:\n{log}"
    );
}

#[test]
fn token_client_pulls_with_a_registry_token() {
    let setup = setup();
    let proxy = setup.proxy();
    let tokens = proxy.dir().join("tokens.yaml");
    fs::write(
        &tokens,
        format!("tokens:\n  - name: ci\n    token: {TOKEN}\n    scopes: [\"{SOURCE}/ns-a/*\"]\n"),
    )
    .expect("write tokens");
    enable_clients(
        &proxy,
        serde_json::json!({"mode": "token", "tokens_file": tokens}),
    );

    let challenge = http_get(&proxy.addr(), "/v2/", &[]);
    assert_eq!(
        challenge.header("WWW-Authenticate"),
        Some("Bearer realm=\"mirrorgate\"")
    );
    pull(&proxy, "ns-a/app", &["--src-registry-token", TOKEN]).expect("the token pulls");
    assert!(pull(&proxy, "ns-a/app", &[]).is_err(), "no token, no pull");
    assert!(
        pull(
            &proxy,
            "ns-a/app",
            &["--src-registry-token", "mg-token-wrong-0123456"]
        )
        .is_err(),
        "an unknown token does not pull"
    );
    let denied = pull(&proxy, "ns-b/app", &["--src-registry-token", TOKEN])
        .expect_err("ns-b is outside the token's scopes");
    assert!(
        denied.contains("403") || denied.to_lowercase().contains("denied"),
        "{denied}"
    );
    assert!(!proxy.log().contains(TOKEN), "the token is in the log");
}

#[test]
fn a_scoped_client_cannot_read_another_scopes_cached_blob() {
    let setup = setup();
    let proxy = setup.proxy();
    let htpasswd = write_htpasswd(proxy.dir(), &["admin", "alice"]);
    enable_clients(
        &proxy,
        serde_json::json!({
            "mode": "htpasswd",
            "htpasswd_file": htpasswd,
            "scopes": {"alice": [format!("{SOURCE}/ns-a/*")]},
        }),
    );
    let creds = format!("admin:{PASSWORD}");
    pull(&proxy, "ns-b/app", &["--src-creds", &creds]).expect("admin pulls ns-b");

    let alice = basic("alice", PASSWORD);
    let headers = [("Authorization", alice.as_str())];
    let b_blob = format!("/v2/{SOURCE}/ns-b/app/blobs/{}", first_layer(&setup.b));
    let a_blob = format!("/v2/{SOURCE}/ns-a/app/blobs/{}", first_layer(&setup.a));
    let b_manifest = format!("/v2/{SOURCE}/ns-b/app/manifests/v1");
    let mark = setup.registry.mark();
    let denied = http_get(&proxy.addr(), &b_blob, &headers);
    assert_eq!(
        (
            denied.status,
            denied.json()["errors"][0]["code"].as_str(),
            http_get(&proxy.addr(), &b_manifest, &headers).status,
            http_get(&proxy.addr(), &a_blob, &headers).status,
        ),
        (403, Some("DENIED"), 403, 200)
    );
    assert!(
        !denied.text().contains(PASSWORD),
        "the error body holds credentials"
    );
    assert_eq!(
        setup.registry.count_since(mark, "GET", "ns-b"),
        0,
        "a refused request reached the registry"
    );
    let admin = basic("admin", PASSWORD);
    assert_eq!(
        http_get(&proxy.addr(), &b_blob, &[("Authorization", &admin)]).status,
        200,
        "the blob is cached and served to a client allowed its scope"
    );
}

#[test]
fn repeated_failed_logins_from_one_address_get_429_with_retry_after() {
    let proxy = Mirrorgate::start("", &[], "");
    let htpasswd = write_htpasswd(proxy.dir(), &["alice"]);
    enable_clients(
        &proxy,
        serde_json::json!({"mode": "htpasswd", "htpasswd_file": htpasswd}),
    );
    // Eleven guesses, each for another (unknown) user: the address is what is limited.
    let statuses: Vec<u16> = (0..11)
        .map(|guess| {
            let authorization = basic(&format!("guess{guess}"), "wrong");
            http_get(&proxy.addr(), "/v2/", &[("Authorization", &authorization)]).status
        })
        .collect();
    let limited = http_get(
        &proxy.addr(),
        "/v2/",
        &[("Authorization", &basic("alice", PASSWORD))],
    );
    let mut expected = vec![401; 10];
    expected.push(429);
    assert_eq!(
        (
            statuses,
            limited.status,
            limited.header("Retry-After").is_some(),
            limited.json()["errors"][0]["code"]
                .as_str()
                .map(str::to_owned)
        ),
        (expected, 429, true, Some("TOOMANYREQUESTS".to_owned()))
    );
}
