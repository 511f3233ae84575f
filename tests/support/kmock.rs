//! A Kubernetes API emulator (PyPI `kmock`, started through `tests/support/kmock_server.py`) on a
//! loopback port: discovery, list, watch, create, merge-patch and delete over plain HTTP.
//!
//! The Python interpreter with kmock installed is `$KMOCK_PYTHON`, else the virtual environment
//! `scripts/test.sh` creates under the cargo target directory (`tmp/kmock-venv`).

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::http::{HttpResponse, try_http_request};
use super::process::{self, ChildGuard, START_ATTEMPTS, spawn_logged};

/// `group/version/plural=Kind[:namespaced]` for each resource the tests use.
pub const ICSP: &str =
    "operator.openshift.io/v1alpha1/imagecontentsourcepolicies=ImageContentSourcePolicy";
/// ImageDigestMirrorSet.
pub const IDMS: &str = "config.openshift.io/v1/imagedigestmirrorsets=ImageDigestMirrorSet";
/// ImageTagMirrorSet (absent on OpenShift 4.12).
pub const ITMS: &str = "config.openshift.io/v1/imagetagmirrorsets=ImageTagMirrorSet";
/// HostedCluster.
pub const HOSTED_CLUSTERS: &str =
    "hypershift.openshift.io/v1beta1/hostedclusters=HostedCluster:namespaced";
/// NodePool.
pub const NODE_POOLS: &str = "hypershift.openshift.io/v1beta1/nodepools=NodePool:namespaced";
/// ConfigMap.
pub const CONFIG_MAPS: &str = "v1/configmaps=ConfigMap:namespaced";

/// kmock's start can take seconds on a loaded machine (Python imports).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running emulated API server; killed when dropped.
pub struct Kmock {
    dir: TempDir,
    port: u16,
    resources: Vec<String>,
    process: Option<ChildGuard>,
    starts: usize,
}

impl Kmock {
    /// An API server on a free port serving these resources (see the constants).
    pub fn start(resources: &[&str]) -> Kmock {
        let dir = tempfile::Builder::new()
            .prefix("kmock-")
            .tempdir()
            .expect("tempdir");
        let mut kmock = Kmock {
            dir,
            port: 0,
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            process: None,
            starts: 0,
        };
        kmock.launch(0);
        kmock
    }

    /// The port the server listens on (kept across [`Kmock::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL): clients see refused connections.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts a fresh, empty server on the same port with `resources` (the emulator keeps no
    /// state across a restart).
    pub fn restart(&mut self, resources: &[&str]) {
        self.stop();
        self.resources = resources.iter().map(|r| (*r).to_owned()).collect();
        self.launch(self.port);
    }

    fn launch(&mut self, port: u16) {
        let python = python();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/kmock_server.py");
        for _ in 0..START_ATTEMPTS {
            self.starts += 1;
            let stdout = self.dir.path().join(format!("stdout-{}.log", self.starts));
            let stderr = self.dir.path().join(format!("stderr-{}.log", self.starts));
            let mut command = Command::new(&python);
            command.arg(&script).arg("--port").arg(port.to_string());
            for resource in &self.resources {
                command.arg("--resource").arg(resource);
            }
            let mut child = spawn_logged(command, &stdout, &stderr);
            let mut found = None;
            let waited = process::wait_until(START_TIMEOUT, || {
                if let Some(line) = fs::read_to_string(&stdout).ok().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
                }) {
                    found = line.trim().parse::<u16>().ok();
                    return Ok(true);
                }
                match child.exited() {
                    Some(status) => Err(format!("kmock exited ({status})")),
                    None => Ok(false),
                }
            });
            match (waited, found) {
                (Ok(()), Some(bound)) => {
                    self.port = bound;
                    self.process = Some(child);
                    return;
                }
                (Err(why), _) => {
                    let log = fs::read_to_string(&stderr).unwrap_or_default();
                    if port != 0 && process::says_address_in_use(&log) {
                        // The port is still held by the previous instance's socket: try again.
                        std::thread::sleep(process::POLL_INTERVAL);
                        continue;
                    }
                    panic!(
                        "kmock did not start ({why}); python {}\n{}",
                        python.display(),
                        process::tail(&stderr, 30)
                    );
                }
                (Ok(()), None) => panic!("kmock printed no port"),
            }
        }
        panic!("kmock could not bind port {port}");
    }

    /// Declares more resources at run time (a CRD installed): they appear in discovery.
    pub fn declare(&self, resources: &[&str]) {
        let body = serde_json::to_vec(resources).unwrap();
        self.request("POST", "/_harness/resources", &body, "application/json");
    }

    /// Makes every request on these resources (plurals, e.g. `imagedigestmirrorsets`) answer 403
    /// Forbidden, as for a service account without the permission.
    pub fn forbid(&self, plurals: &[&str]) {
        let body = serde_json::to_vec(plurals).unwrap();
        self.request("POST", "/_harness/forbid", &body, "application/json");
    }

    /// Creates an object in the collection at `path` (e.g.
    /// `/apis/config.openshift.io/v1/imagedigestmirrorsets`); returns it as stored.
    pub fn create(&self, path: &str, object: &Value) -> Value {
        let body = serde_json::to_vec(object).unwrap();
        self.request("POST", path, &body, "application/json").json()
    }

    /// Merge-patches the object at `path`.
    pub fn patch(&self, path: &str, patch: &Value) -> Value {
        let body = serde_json::to_vec(patch).unwrap();
        self.request("PATCH", path, &body, "application/merge-patch+json")
            .json()
    }

    /// Deletes the object at `path`.
    pub fn delete(&self, path: &str) {
        self.request("DELETE", path, &[], "application/json");
    }

    fn request(&self, method: &str, path: &str, body: &[u8], content_type: &str) -> HttpResponse {
        let response = try_http_request(
            method,
            &self.addr(),
            path,
            &[("Content-Type", content_type)],
            body,
        )
        .unwrap_or_else(|e| panic!("{method} {path} on kmock: {e}"));
        assert!(
            (200..300).contains(&response.status),
            "{method} {path} on kmock: {} {}",
            response.status,
            response.text()
        );
        response
    }

    /// Writes a kubeconfig for this server (plain HTTP, no credentials) into `dir`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n\
             clusters:\n- name: kmock\n  cluster:\n    server: http://{}\n\
             users:\n- name: test\n  user: {{}}\n\
             contexts:\n- name: kmock\n  context:\n    cluster: kmock\n    user: test\n",
            self.addr()
        );
        fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

/// The Python interpreter that has kmock.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("KMOCK_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kmock-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with kmock: run scripts/test.sh (it creates {}), or set KMOCK_PYTHON",
        venv.display()
    );
    venv
}
