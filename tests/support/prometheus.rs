//! A real Prometheus server (Debian's `prometheus`) on a free loopback port, with its own data
//! directory and configuration, scraping given targets every second.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::http::try_http_request;
use super::process::{self, ChildGuard, START_ATTEMPTS, spawn_logged};

/// How long Prometheus may take to open its TSDB and answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `prometheus`; killed when dropped.
pub struct Prometheus {
    dir: TempDir,
    port: u16,
    process: Option<ChildGuard>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, job `mirrorgate`) every second and
    /// evaluating `rule_files` every second. Ready when `/-/ready` answers 200.
    pub fn start(targets: &[String], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir()
            .expect("tempdir");
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": [{
                "job_name": "mirrorgate",
                "static_configs": [{"targets": targets}],
            }],
        });
        // JSON is YAML.
        fs::write(dir.path().join("prometheus.yml"), config.to_string()).expect("write config");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = process::free_port();
            let mut command = Command::new("prometheus");
            command
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .current_dir(dir.path());
            let log = dir.path().join("prometheus.log");
            let log_start = fs::metadata(&log).map_or(0, |m| m.len() as usize);
            let mut child = spawn_logged(command, &log, &log);
            let addr = format!("127.0.0.1:{port}");
            let ready = process::wait_until(READY_TIMEOUT, || {
                if let Some(status) = child.exited() {
                    return Err(format!("prometheus exited ({status})"));
                }
                Ok(try_http_request("GET", &addr, "/-/ready", &[], &[])
                    .is_ok_and(|r| r.status == 200))
            });
            match ready.and_then(|()| match child.exited() {
                Some(status) => Err(format!("prometheus exited ({status})")),
                None => Ok(()),
            }) {
                Ok(()) => {
                    return Prometheus {
                        dir,
                        port,
                        process: Some(child),
                    };
                }
                Err(why) => {
                    child.stop();
                    let text = fs::read(&log).unwrap_or_default();
                    let ours = String::from_utf8_lossy(&text[log_start.min(text.len())..]);
                    if !process::says_address_in_use(&ours) {
                        panic!(
                            "prometheus did not become ready ({why})\n{}",
                            process::tail(&log, 40)
                        );
                    }
                    failures.push(format!("port {port}: {}", ours.trim()));
                }
            }
        }
        panic!(
            "prometheus did not start in {START_ATTEMPTS} attempts (ports taken):\n{}",
            failures.join("\n")
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The directory holding the configuration, the data and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET /api/v1/<endpoint>?<params>`, the `data` of a successful answer or the error.
    pub fn api(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
    ) -> Result<serde_json::Value, String> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let path = format!("/api/v1/{endpoint}?{query}");
        let response = try_http_request("GET", &self.addr(), &path, &[], &[])
            .map_err(|e| format!("GET {path}: {e}"))?;
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| format!("GET {path}: {} not JSON: {e}", response.status))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("?")
            ))
        }
    }

    /// The instant query `expr`, evaluated at `time` (Unix seconds as Prometheus writes them) or
    /// now: the result vector's samples.
    pub fn query(&self, expr: &str, time: Option<&str>) -> Result<Vec<serde_json::Value>, String> {
        let mut params = vec![("query", expr)];
        if let Some(time) = time {
            params.push(("time", time));
        }
        let data = self.api("query", &params)?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            other => Err(format!("{expr}: result type {other:?}, not a vector")),
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.stop();
        }
    }
}
