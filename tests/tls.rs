//! `mirrorgate serve` with `tls:`: a test CA (rcgen) signs a server certificate for 127.0.0.1 and
//! `localhost`, and real clients — skopeo, a rustls client, reqwest — pull and shake hands
//! through it; a renewed certificate is served without a restart.
//!
//! The harness's `Mirrorgate::start` probes readiness in plain HTTP, so this file starts the
//! binary itself ([`TlsProxy`]) and probes over TLS with the test CA as the only root.

use crate::support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::{Registry, copy_to_layout, free_port, layouts_identical, push, single_arch, skopeo};
use tempfile::TempDir;

const SOURCE: &str = "source.test";
const MIRROR: &str = "mirror.test";

/// How long the proxy may take to answer its first TLS probe.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a renewed certificate may take to be served (checks are at most 1 s apart).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Rules sending `source.test/ns` to `mirror.test/ns`, tags and digests alike, never the source.
fn rules() -> String {
    support::mirrored_rules(SOURCE, &[MIRROR])
}

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("self-sign CA").pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for 127.0.0.1 and `localhost` with this serial and last day of
    /// validity, as (certificate PEM, key PEM).
    fn server_cert(&self, serial: u64, valid_until_year: i32) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "mirrorgate test");
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(valid_until_year, 12, 31);
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        (cert.pem(), key.serialize_pem())
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA PEM")
    }
}

/// A running `mirrorgate serve` with `tls:`; killed when dropped.
struct TlsProxy {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl TlsProxy {
    /// Starts mirrorgate with [`rules`], `mirror.test` at `mirror_endpoint`, and `tls` pointing at
    /// `tls.crt` / `tls.key` in its directory holding `cert_pem` / `key_pem`; ready when a
    /// handshake trusting `ca` and `GET /v2/` succeed.
    fn start(mirror_endpoint: &str, ca: &Ca, cert_pem: &str, key_pem: &str) -> TlsProxy {
        let dir = tempfile::Builder::new()
            .prefix("mirrorgate-tls-")
            .tempdir()
            .expect("tempdir");
        let mut proxy = TlsProxy {
            dir,
            port: 0,
            child: None,
        };
        fs::create_dir(proxy.dir.path().join("rules")).expect("rules dir");
        fs::write(proxy.dir.path().join("rules/rules.yaml"), rules()).expect("write rules");
        fs::write(proxy.cert_path(), cert_pem).expect("write cert");
        fs::write(proxy.key_path(), key_pem).expect("write key");
        let mut failures = Vec::new();
        for _ in 0..5 {
            proxy.port = free_port();
            let config = serde_json::json!({
                "listen": proxy.addr(),
                "rules": [proxy.dir.path().join("rules")],
                "cache": {"dir": proxy.dir.path().join("cache")},
                "registries": {MIRROR: {"endpoint": mirror_endpoint, "insecure": true}},
                "watch": false,
                "tls": {"cert_file": proxy.cert_path(), "key_file": proxy.key_path()},
            });
            fs::write(
                proxy.config_path(),
                serde_json::to_string_pretty(&config).expect("config JSON"),
            )
            .expect("write config");
            match proxy.spawn(ca) {
                Ok(()) => return proxy,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "mirrorgate did not start with TLS (ports taken):\n{}",
            failures.join("\n")
        );
    }

    /// Spawns the process and waits until it answers over TLS; `Err` when its port was taken.
    fn spawn(&mut self, ca: &Ca) -> Result<(), String> {
        let log_start = self.log().len();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env("RUST_LOG", "mirrorgate=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn mirrorgate");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                let log = self.log();
                let ours = log.get(log_start..).unwrap_or_default();
                if ours.contains("Address already in use") {
                    return Err(format!("port {}: {}", self.port, ours.trim()));
                }
                panic!("mirrorgate exited ({status}) before it was ready:\n{log}");
            }
            if let Ok(response) = https_get(&self.addr(), "/v2/", &ca.der(), &[b"http/1.1"])
                && response.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "mirrorgate with TLS was not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mirrorgate.yaml")
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mirrorgate.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A rustls client configuration trusting only `root`, offering `alpn`.
fn client_config(root: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("add root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What one TLS connection showed.
struct Handshake {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Handshake {
    /// Connects to `addr` as `127.0.0.1`, trusting only `root`, and completes the handshake.
    fn connect(
        addr: &str,
        root: &CertificateDer<'static>,
        alpn: &[&[u8]],
    ) -> Result<Handshake, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .and_then(|()| tcp.set_write_timeout(Some(Duration::from_secs(30))))
            .map_err(|e| format!("timeouts: {e}"))?;
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let connection = rustls::ClientConnection::new(client_config(root, alpn), name)
            .map_err(|e| format!("client: {e}"))?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(Handshake { stream })
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The server's certificate.
    fn peer_certificate(&self) -> CertificateDer<'static> {
        self.stream
            .conn
            .peer_certificates()
            .expect("peer certificates")[0]
            .clone()
            .into_owned()
    }

    /// One HTTP/1.1 request on this connection, keeping it open; the status and body.
    fn get(&mut self, path: &str) -> Result<HttpsResponse, String> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: mirrorgate-tls-test\r\n\r\n"
        );
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        read_response(&mut self.stream)
    }
}

struct HttpsResponse {
    status: u16,
    body: Vec<u8>,
}

/// Reads one response framed by `Content-Length` (the proxy's answers to `/v2/` and errors).
fn read_response(stream: &mut impl Read) -> Result<HttpsResponse, String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response head".to_owned());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .ok_or_else(|| format!("no Content-Length: {head}"))?;
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err("connection closed in the body".to_owned());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(HttpsResponse { status, body })
}

/// `GET path` over a fresh TLS connection trusting only `root`.
fn https_get(
    addr: &str,
    path: &str,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<HttpsResponse, String> {
    Handshake::connect(addr, root, alpn)?.get(path)
}

/// The serial number of a DER certificate, read with a minimal DER walk:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER, … } … }`.
fn serial_of(der: &[u8]) -> u128 {
    /// Splits one DER element: (tag, contents, rest).
    fn element(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (length, header) = match input[1] {
            short if short < 0x80 => (usize::from(short), 2),
            long => {
                let count = usize::from(long & 0x7f);
                let length = input[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (length, 2 + count)
            }
        };
        (
            tag,
            &input[header..header + length],
            &input[header + length..],
        )
    }
    let (_, certificate, _) = element(der);
    let (_, tbs, _) = element(certificate);
    let (tag, contents, rest) = element(tbs);
    // Skip the explicitly tagged version.
    let (tag, contents) = match tag {
        0xa0 => {
            let (tag, contents, _) = element(rest);
            (tag, contents)
        }
        _ => (tag, contents),
    };
    assert_eq!(tag, 0x02, "serialNumber is an INTEGER");
    contents
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

/// Writes `ca.crt` into a new directory, for skopeo's `--src-cert-dir`.
fn cert_dir(ca: &Ca) -> TempDir {
    let dir = tempfile::tempdir().expect("cert dir");
    fs::write(dir.path().join("ca.crt"), &ca.pem).expect("write ca.crt");
    dir
}

fn skopeo_copy(src: &str, dest: &Path, cert_dir: &Path) -> Result<(), String> {
    let dest = format!("oci:{}", dest.display());
    let cert_dir = cert_dir.display().to_string();
    let output = skopeo(&[
        "copy",
        "--all",
        "--quiet",
        "--src-cert-dir",
        &cert_dir,
        &format!("docker://{src}"),
        &dest,
    ]);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A mirror holding one image at `ns/app:v1`, and mirrorgate in front of it with TLS.
struct Setup {
    ca: Ca,
    mirror: Registry,
    proxy: TlsProxy,
}

impl Setup {
    fn start(seed: &str) -> (Setup, support::Image) {
        let mirror = Registry::start();
        let image = single_arch(seed, &[2048, 70_000]);
        push(&image, &format!("{}/ns/app:v1", mirror.addr()));
        let ca = Ca::new("mirrorgate test CA");
        let (cert, key) = ca.server_cert(0x1001, 2099);
        let proxy = TlsProxy::start(&mirror.endpoint(), &ca, &cert, &key);
        (Setup { ca, mirror, proxy }, image)
    }
}

#[test]
fn skopeo_pulls_over_verified_tls_and_gets_what_the_mirror_holds() {
    let (setup, image) = Setup::start("tls-skopeo");
    let certs = cert_dir(&setup.ca);
    let through = tempfile::tempdir().unwrap();
    let straight = tempfile::tempdir().unwrap();
    for reference in [
        format!("{}/{SOURCE}/ns/app:v1", setup.proxy.addr()),
        format!(
            "{}/{SOURCE}/ns/app@{}",
            setup.proxy.addr(),
            image.manifest_digest
        ),
    ] {
        let layout = through.path().join(reference.replace(['/', ':', '@'], "_"));
        skopeo_copy(&reference, &layout, certs.path()).unwrap_or_else(|e| {
            panic!(
                "skopeo through mirrorgate over TLS failed: {e}\n{}",
                setup.proxy.log()
            )
        });
        let direct = straight
            .path()
            .join(reference.replace(['/', ':', '@'], "_"));
        let output = copy_to_layout(&format!("{}/ns/app:v1", setup.mirror.addr()), &direct, &[]);
        assert!(output.status.success(), "direct pull failed: {output:?}");
        layouts_identical(&layout, &direct).unwrap();
    }
}

#[test]
fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let (setup, _) = Setup::start("tls-untrusted");
    let stranger = Ca::new("another CA");
    let refused = Handshake::connect(&setup.proxy.addr(), &stranger.der(), &[b"http/1.1"]).err();
    // skopeo with only the system roots (and verification on) refuses too.
    let layout = tempfile::tempdir().unwrap();
    let empty_certs = tempfile::tempdir().unwrap();
    let skopeo_refused = skopeo_copy(
        &format!("{}/{SOURCE}/ns/app:v1", setup.proxy.addr()),
        &layout.path().join("l"),
        empty_certs.path(),
    )
    .err();
    // The server goes on serving clients that trust it.
    let trusted =
        https_get(&setup.proxy.addr(), "/v2/", &setup.ca.der(), &[b"http/1.1"]).map(|r| r.status);
    let refused = refused.expect("the handshake must fail");
    let skopeo_refused = skopeo_refused.expect("skopeo must refuse the certificate");
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    assert!(
        skopeo_refused.contains("certificate signed by unknown authority"),
        "{skopeo_refused}"
    );
    assert_eq!(trusted, Ok(200));
}

#[test]
fn alpn_negotiates_http2_and_http1() {
    let (setup, _) = Setup::start("tls-alpn");
    let addr = setup.proxy.addr();
    let h2 = Handshake::connect(&addr, &setup.ca.der(), &[b"h2", b"http/1.1"])
        .expect("h2 handshake")
        .alpn();
    let h1 = Handshake::connect(&addr, &setup.ca.der(), &[b"http/1.1"])
        .expect("http/1.1 handshake")
        .alpn();
    let none = Handshake::connect(&addr, &setup.ca.der(), &[])
        .expect("handshake without ALPN")
        .alpn();
    assert_eq!(
        (h2, h1, none),
        (Some(b"h2".to_vec()), Some(b"http/1.1".to_vec()), None)
    );

    // A real HTTP/2 exchange: reqwest offers h2 and http/1.1 and gets h2.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (version, status, manifest_status) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(setup.ca.pem.as_bytes()).expect("CA")])
            .build()
            .expect("client");
        let v2 = client
            .get(format!("https://{addr}/v2/"))
            .send()
            .await
            .expect("GET /v2/ over h2");
        let manifest = client
            .get(format!(
                "https://localhost:{}/v2/{SOURCE}/ns/app/manifests/v1",
                setup.proxy.port
            ))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .expect("GET manifest over h2");
        (
            v2.version(),
            v2.status().as_u16(),
            manifest.status().as_u16(),
        )
    });
    assert_eq!(
        (version, status, manifest_status),
        (reqwest::Version::HTTP_2, 200, 200),
        "{}",
        setup.proxy.log()
    );
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let (setup, _) = Setup::start("tls-reload");
    let addr = setup.proxy.addr();
    let first = Handshake::connect(&addr, &setup.ca.der(), &[b"http/1.1"])
        .expect("handshake")
        .peer_certificate();
    assert_eq!(serial_of(&first), 0x1001);

    // Renewal as a tool that rewrites files in place does it: key first, then certificate, so
    // for a moment the pair does not match.
    let (renewed, renewed_key) = setup.ca.server_cert(0x2002, 2098);
    fs::write(setup.proxy.key_path(), &renewed_key).unwrap();
    fs::write(setup.proxy.cert_path(), &renewed).unwrap();
    let renewed_der = CertificateDer::from_pem_slice(renewed.as_bytes()).unwrap();

    let deadline = Instant::now() + RELOAD_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let mut handshake = Handshake::connect(&addr, &setup.ca.der(), &[b"http/1.1"])
            .unwrap_or_else(|e| panic!("handshake during renewal: {e}\n{}", setup.proxy.log()));
        let serial = serial_of(&handshake.peer_certificate());
        if serial == 0x2002 {
            assert_eq!(handshake.peer_certificate(), renewed_der);
            let status = handshake.get("/v2/").map(|r| r.status);
            assert_eq!(status, Ok(200));
            break;
        }
        seen.push(serial);
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within {RELOAD_TIMEOUT:?} (serials seen: \
             {seen:x?})\n{}",
            setup.proxy.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    // Log lines are written by a background thread: the line may follow the handshake.
    support::wait_until(RELOAD_TIMEOUT, || {
        Ok(setup.proxy.log().contains("TLS certificate reloaded"))
    })
    .unwrap_or_else(|e| panic!("no reload logged ({e})\n{}", setup.proxy.log()));
}

#[test]
fn a_stop_closes_idle_and_half_open_tls_connections_at_once() {
    let (mut setup, _) = Setup::start("tls-stop");
    let addr = setup.proxy.addr();
    // One connection idle after a request (HTTP/1.1 keep-alive), one that never says hello.
    let mut idle = Handshake::connect(&addr, &setup.ca.der(), &[b"http/1.1"]).expect("handshake");
    let served = idle.get("/v2/").map(|r| (r.status, r.body.len()));
    let silent = TcpStream::connect(&addr).expect("connect");
    // Both connections are open on the server's side (its gauge counts the silent one once
    // accepted) before the stop is asked for.
    support::wait_until(READY_TIMEOUT, || {
        let metrics = idle.get("/metrics")?;
        Ok(String::from_utf8_lossy(&metrics.body)
            .lines()
            .any(|line| line == "mirrorgate_connections 2"))
    })
    .unwrap_or_else(|e| {
        panic!(
            "the silent connection was not accepted: {e}\n{}",
            setup.proxy.log()
        )
    });
    let started = Instant::now();
    let status = setup.proxy.terminate(Duration::from_secs(8));
    let took = started.elapsed();
    drop(silent);
    assert_eq!(served.map(|(status, _)| status), Ok(200));
    let status = status.unwrap_or_else(|| {
        panic!(
            "mirrorgate did not stop within 8 s of SIGTERM with open TLS connections\n{}",
            setup.proxy.log()
        )
    });
    assert_eq!(
        (
            status.success(),
            setup.proxy.log().lines().any(|l| l.ends_with(" stopped"))
        ),
        (true, true),
        "{status} after {took:?}\n{}",
        setup.proxy.log()
    );
}

#[test]
fn mirrorgate_status_reads_an_https_server_that_its_ca_file_vouches_for() {
    let (setup, _) = Setup::start("tls-status");
    let certs = cert_dir(&setup.ca);
    let ca_file = certs.path().join("ca.crt").display().to_string();
    let status = |args: &[&str]| support::cli(&[&["status"], args].concat());
    let config = setup.proxy.config_path().display().to_string();
    // The configuration names the server (https, since it has `tls`).
    let (trusted, out, err) = status(&["--config", &config, "--ca-file", &ca_file, "--json"]);
    let scopes = serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|report| report["rules"]["scopes"].as_u64());
    let (untrusted, _, refusal) = status(&["--config", &config]);
    assert_eq!(
        (
            trusted,
            scopes,
            untrusted,
            refusal.contains(&format!(
                "cannot reach https://{}/status",
                setup.proxy.addr()
            ))
        ),
        (true, Some(1), false, true),
        "{out}{err}{refusal}"
    );
}
