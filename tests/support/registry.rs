//! A real CNCF Distribution registry (Debian's `docker-registry`, 2.8) on a loopback port.
//!
//! Request accounting reads the registry's access log (its stdout). Distribution 2.8 writes one
//! line per request in Apache combined format (gorilla/handlers), after the handler returns:
//!
//! ```text
//! 127.0.0.1 - - [24/Nov/2026:05:49:07 +0000] "HEAD /v2/foo/manifests/x?a=b HTTP/1.1" 404 91 "" "curl/7.88.1"
//! ```
//!
//! The request line carries the exact method and the request URI with its query; every request
//! is there, including 401 answers. The harness's own probes (readiness, log sync) send the
//! `User-Agent` [`PROBE_USER_AGENT`] and are left out of the accounting.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use super::http::try_http_request;
use super::process::{
    self, ChildGuard, PROBE_USER_AGENT, READY_TIMEOUT, START_ATTEMPTS, spawn_logged,
};

/// One request as the registry logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, `PUT`, ...
    pub method: String,
    /// The request URI: path and query, as sent (e.g. `/v2/ns/app/manifests/v1`).
    pub path: String,
    /// The response status.
    pub status: u16,
    /// Response body bytes the handler wrote (for `HEAD`, the length a `GET` would send).
    pub size: u64,
    /// The client's `User-Agent`.
    pub user_agent: String,
}

/// A running Distribution registry; killed when dropped.
pub struct Registry {
    dir: TempDir,
    port: u16,
    auth: Option<(String, String)>,
    process: Option<ChildGuard>,
    /// Requests before this index are left out of [`Registry::requests`] (see [`Registry::reset`]).
    base: usize,
    syncs: AtomicU64,
}

impl Registry {
    /// An open registry (no auth), ready to answer `GET /v2/` with 200.
    pub fn start() -> Registry {
        Registry::launch(None)
    }

    /// A registry behind htpasswd basic auth with one user, ready to answer `GET /v2/` with 401.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::launch(Some((user.to_owned(), password.to_owned())))
    }

    fn launch(auth: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("registry-")
            .tempdir()
            .expect("tempdir");
        fs::create_dir(dir.path().join("data")).expect("create storage dir");
        if let Some((user, password)) = &auth {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))
                .expect("write htpasswd");
        }
        let mut registry = Registry {
            dir,
            port: 0,
            auth,
            process: None,
            base: 0,
            syncs: AtomicU64::new(0),
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            registry.port = process::free_port();
            registry.write_config();
            match registry.spawn() {
                Ok(()) => return registry,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "docker-registry did not start in {START_ATTEMPTS} attempts (ports taken):\n{}",
            failures.join("\n")
        );
    }

    fn write_config(&self) {
        let root = self.dir.path().join("data");
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: mirrorgate-tests\n",
            root = root.display(),
            port = self.port,
        );
        if self.auth.is_some() {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: mirrorgate-tests\n    path: {}\n",
                self.dir.path().join("htpasswd").display()
            ));
        }
        fs::write(self.config_path(), config).expect("write registry config");
    }

    /// Spawns the process and waits until it is ready. `Err` when it lost the port to someone
    /// else (the caller may retry elsewhere); panics on any other failure.
    fn spawn(&mut self) -> Result<(), String> {
        let stderr_start = fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize);
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(self.config_path())
            .current_dir(self.dir.path());
        let mut child = spawn_logged(command, &self.access_log_path(), &self.log_path());
        let listening = format!("listening on {}", self.addr());
        let expected = if self.auth.is_some() { 401 } else { 200 };
        let result = process::wait_until(READY_TIMEOUT, || {
            if let Some(status) = child.exited() {
                return Err(format!("docker-registry exited ({status})"));
            }
            // Only this run's stderr counts (restarts append to the same file), and the line
            // proves that this process, not another one, holds the port.
            let stderr = fs::read(self.log_path()).unwrap_or_default();
            let ours = String::from_utf8_lossy(&stderr[stderr_start.min(stderr.len())..]);
            if !ours.contains(&listening) {
                return Ok(false);
            }
            Ok(self.probe("/v2/") == Some(expected))
        });
        match result {
            Ok(()) => {
                self.process = Some(child);
                Ok(())
            }
            Err(why) => {
                child.stop();
                let stderr = fs::read(self.log_path()).unwrap_or_default();
                let ours = String::from_utf8_lossy(&stderr[stderr_start.min(stderr.len())..]);
                if process::says_address_in_use(&ours) {
                    return Err(format!("port {}: {}", self.port, ours.trim()));
                }
                panic!(
                    "docker-registry on {} did not become ready ({why}; expected /v2/ -> {expected})\n{}\n{}",
                    self.addr(),
                    process::tail(&self.log_path(), 30),
                    process::tail(&self.access_log_path(), 10)
                );
            }
        }
    }

    /// A `GET` with the probe user agent; `None` when the connection fails.
    fn probe(&self, path: &str) -> Option<u16> {
        try_http_request(
            "GET",
            &self.addr(),
            path,
            &[("User-Agent", PROBE_USER_AGENT)],
            &[],
        )
        .ok()
        .map(|r| r.status)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across [`Registry::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, an endpoint for mirrorgate's `registries` section.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The `(user, password)` of an htpasswd registry.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The temporary directory holding config, storage and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// The storage root (`storage.filesystem.rootdirectory`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's stderr: its application log (`level=info msg="response completed" ...`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The registry's stdout: the access log that request accounting reads.
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The application log's contents.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// Where the filesystem driver keeps a blob's bytes (`sha256:<hex>` or `<hex>`), so that a
    /// test can overwrite them and have the registry serve wrong bytes for the digest.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a sha256 digest: {digest:?}"
        );
        self.root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Whether the process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.process {
            Some(child) => child.exited().is_none(),
            None => false,
        }
    }

    /// Kills the registry (connections to its port are then refused); idempotent. Storage and
    /// logs are kept for [`Registry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.stop();
        }
    }

    /// Stops the registry if running and starts it again on the same port with the same
    /// storage; panics if the port has been taken meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn() {
            panic!("docker-registry could not restart on its port: {why}");
        }
    }

    /// Every request logged since start (or the last [`Registry::reset`]), oldest first,
    /// without the harness's own probes.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.requests_since(self.base)
    }

    /// A position in the request log: [`Registry::requests_since`] with it returns only the
    /// requests made after this call.
    pub fn mark(&self) -> usize {
        self.all_requests().len()
    }

    /// The requests made after `mark` was taken.
    pub fn requests_since(&self, mark: usize) -> Vec<LoggedRequest> {
        let mut all = self.all_requests();
        all.drain(..mark.min(all.len()));
        all
    }

    /// The requests since `mark` as `METHOD path`, the `/v2/` version checks left out: what a
    /// test compares to say which content the registry was asked for.
    pub fn content_requests_since(&self, mark: usize) -> Vec<String> {
        self.requests_since(mark)
            .into_iter()
            .filter(|r| r.path != "/v2/")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// How many requests (since start or the last reset) had exactly this method and a URI
    /// containing `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        count_matching(&self.requests(), method, path_contains)
    }

    /// Like [`Registry::count`], for requests made after `mark`.
    pub fn count_since(&self, mark: usize, method: &str, path_contains: &str) -> usize {
        count_matching(&self.requests_since(mark), method, path_contains)
    }

    /// Forgets the requests so far for [`Registry::requests`] and [`Registry::count`] (e.g. the
    /// pushes of the test's setup).
    pub fn reset(&mut self) {
        self.base = self.mark();
    }

    /// Every request in the access log, without probes, after making sure that requests already
    /// answered have been logged.
    fn all_requests(&self) -> Vec<LoggedRequest> {
        self.sync_log();
        let bytes = fs::read(self.access_log_path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        // Only complete lines: the last one may still be being written.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        complete
            .lines()
            .map(|line| {
                parse_access_line(line).unwrap_or_else(|| {
                    panic!(
                        "unexpected line in the registry access log {}: {line:?}",
                        self.access_log_path().display()
                    )
                })
            })
            .filter(|r| r.user_agent != PROBE_USER_AGENT)
            .collect()
    }

    /// Distribution logs a request after its handler returns, so a client can hold the
    /// response before the line is written. A probe request, waited for in the log, gives
    /// requests that finished earlier the time to be logged.
    fn sync_log(&self) {
        if self.process.is_none() {
            return;
        }
        let n = self.syncs.fetch_add(1, Ordering::Relaxed);
        let path = format!("/v2/?harness-sync={n}");
        if self.probe(&path).is_none() {
            return;
        }
        let needle = format!("\"GET {path} HTTP/1.1\"");
        // Generous: on a loaded machine the registry can take seconds to log; the wait ends as
        // soon as the line is there.
        let _ = process::wait_until(Duration::from_secs(15), || {
            let bytes = fs::read(self.access_log_path()).unwrap_or_default();
            Ok(String::from_utf8_lossy(&bytes).contains(&needle))
        });
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn count_matching(requests: &[LoggedRequest], method: &str, path_contains: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method == method && r.path.contains(path_contains))
        .count()
}

/// Parses one access-log line (Apache combined format as gorilla/handlers writes it):
/// `HOST - USER [TIME] "METHOD URI PROTO" STATUS SIZE "REFERER" "USER-AGENT"`.
pub fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    let (_, rest) = line.split_once(" [")?;
    let (_, rest) = rest.split_once("] ")?;
    let (request, rest) = parse_quoted(rest)?;
    let mut parts = request.split(' ');
    let method = parts.next()?;
    let path = parts.next()?;
    let protocol = parts.next()?;
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !path.starts_with('/')
        || !protocol.starts_with("HTTP/")
    {
        return None;
    }
    let rest = rest.strip_prefix(' ')?;
    let (status, rest) = rest.split_once(' ')?;
    if status.len() != 3 {
        return None;
    }
    let status: u16 = status.parse().ok()?;
    let (size, rest) = rest.split_once(' ')?;
    let size: u64 = size.parse().ok()?;
    let (_referer, rest) = parse_quoted(rest)?;
    let rest = rest.strip_prefix(' ')?;
    let (user_agent, rest) = parse_quoted(rest)?;
    if !rest.is_empty() {
        return None;
    }
    Some(LoggedRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        status,
        size,
        user_agent,
    })
}

/// A `"`-quoted string at the start of `text` (with `\"` and `\\` escapes), and what follows.
fn parse_quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                if escaped != '"' && escaped != '\\' {
                    out.push('\\');
                }
                out.push(escaped);
            }
            c => out.push(c),
        }
    }
    None
}
