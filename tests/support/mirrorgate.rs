//! The proxy binary of this crate (`mirrorgate serve --config FILE`), configured for one test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::http::{HttpResponse, http_get, try_http_request};
use super::process::{
    self, ChildGuard, PROBE_USER_AGENT, READY_TIMEOUT, START_ATTEMPTS, spawn_logged,
};

/// Written in rules or configuration given to [`Mirrorgate::start`], this stands for the
/// proxy's own address (`127.0.0.1:PORT`), known only once a port is chosen: for tests whose rules
/// name mirrorgate itself.
pub const SELF_ADDR: &str = "MIRRORGATE-SELF-ADDR";

/// A running `mirrorgate serve`; killed when dropped.
pub struct Mirrorgate {
    dir: TempDir,
    port: u16,
    /// The rules as given ([`SELF_ADDR`] not yet replaced).
    rules: String,
    config: serde_json::Value,
    env: Vec<(String, String)>,
    process: Option<ChildGuard>,
}

impl Mirrorgate {
    /// Starts mirrorgate with `rules_yaml` as its only rule file and a registry entry
    /// `{endpoint, insecure: true}` for each `(host as written in the rules, endpoint URL)`.
    ///
    /// The configuration is: `listen` on a free loopback port, `rules: [<dir>/rules]`,
    /// `cache.dir: <dir>/cache`, `watch: false`, the registries; then `extra_config_yaml`
    /// (top-level YAML, may be empty) is merged over it, maps key by key and the extra value
    /// winning, so `"cache:\n  tag_ttl: 1s\nwatch: true\n"` keeps `cache.dir`. Ready when
    /// `GET /v2/` answers 200.
    pub fn start(
        rules_yaml: &str,
        registries: &[(&str, &str)],
        extra_config_yaml: &str,
    ) -> Mirrorgate {
        Mirrorgate::start_with_env(rules_yaml, registries, extra_config_yaml, &[])
    }

    /// [`Mirrorgate::start`] with extra environment variables for the process (e.g. `RUST_LOG`).
    pub fn start_with_env(
        rules_yaml: &str,
        registries: &[(&str, &str)],
        extra_config_yaml: &str,
        env: &[(&str, &str)],
    ) -> Mirrorgate {
        let dir = tempfile::Builder::new()
            .prefix("mirrorgate-")
            .tempdir()
            .expect("tempdir");
        fs::create_dir(dir.path().join("rules")).expect("create rules dir");
        fs::create_dir(dir.path().join("cache")).expect("create cache dir");

        let mut registry_map = serde_json::Map::new();
        for (host, endpoint) in registries {
            registry_map.insert(
                (*host).to_owned(),
                serde_json::json!({"endpoint": endpoint, "insecure": true}),
            );
        }
        let mut config = serde_json::json!({
            "listen": "127.0.0.1:0",
            "rules": [dir.path().join("rules")],
            "cache": {"dir": dir.path().join("cache")},
            "registries": registry_map,
            "watch": false,
        });
        if !extra_config_yaml.trim().is_empty() {
            let extra: serde_json::Value = serde_saphyr::from_str(extra_config_yaml)
                .unwrap_or_else(|e| {
                    panic!("extra_config_yaml is not YAML: {e}\n{extra_config_yaml}")
                });
            assert!(
                extra.is_object(),
                "extra_config_yaml must be a YAML mapping, got {extra}"
            );
            merge(&mut config, extra);
        }

        let mut mirrorgate = Mirrorgate {
            dir,
            port: 0,
            rules: rules_yaml.to_owned(),
            config,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            process: None,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            mirrorgate.port = process::free_port();
            mirrorgate.config["listen"] = serde_json::json!(mirrorgate.addr());
            mirrorgate.write_rules(&mirrorgate.rules.clone());
            mirrorgate.write_config();
            match mirrorgate.spawn() {
                Ok(()) => return mirrorgate,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "mirrorgate did not start in {START_ATTEMPTS} attempts (ports taken):\n{}",
            failures.join("\n")
        );
    }

    fn write_config(&self) {
        // JSON is YAML: the file is read by the YAML loader like any other configuration.
        let text = serde_json::to_string_pretty(&self.config).expect("config JSON");
        let text = text.replace(SELF_ADDR, &self.addr());
        fs::write(self.config_path(), text).expect("write mirrorgate config");
    }

    /// Merges `extra_config_yaml` into the configuration (as [`Mirrorgate::start`] does), writes
    /// it and sends SIGHUP: the running process reloads it.
    pub fn reconfigure(&mut self, extra_config_yaml: &str) {
        let extra: serde_json::Value = serde_saphyr::from_str(extra_config_yaml)
            .unwrap_or_else(|e| panic!("extra_config_yaml is not YAML: {e}\n{extra_config_yaml}"));
        merge(&mut self.config, extra);
        self.write_config();
        self.sighup();
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_start = fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize);
        let mut command = Command::new(env!("CARGO_BIN_EXE_mirrorgate"));
        command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = spawn_logged(command, &self.log_path(), &self.log_path());
        let addr = self.addr();
        let result = process::wait_until(READY_TIMEOUT, || {
            if let Some(status) = child.exited() {
                return Err(format!("mirrorgate exited ({status})"));
            }
            let probe = try_http_request(
                "GET",
                &addr,
                "/v2/",
                &[("User-Agent", PROBE_USER_AGENT)],
                &[],
            );
            Ok(probe.is_ok_and(|r| r.status == 200))
        });
        // Another process holding the port would answer the probe while ours fails to bind.
        let result = result.and_then(|()| match child.exited() {
            Some(status) => Err(format!("mirrorgate exited ({status})")),
            None => Ok(()),
        });
        match result {
            Ok(()) => {
                self.process = Some(child);
                Ok(())
            }
            Err(why) => {
                child.stop();
                let log = fs::read(self.log_path()).unwrap_or_default();
                let ours = String::from_utf8_lossy(&log[log_start.min(log.len())..]);
                if process::says_address_in_use(&ours) {
                    return Err(format!("port {}: {}", self.port, ours.trim()));
                }
                panic!(
                    "mirrorgate on {addr} did not become ready ({why})\n{}\n--- config {}\n{}",
                    process::tail(&self.log_path(), 40),
                    self.config_path().display(),
                    fs::read_to_string(self.config_path()).unwrap_or_default()
                );
            }
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across [`Mirrorgate::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `GET path_and_query` on the proxy.
    pub fn get(&self, path_and_query: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(&self.addr(), path_and_query, headers)
    }

    /// Runs `mirrorgate ARGS --server http://<this proxy>`, a command of its admin API (`deny`,
    /// `allow`, `status`, `warm`).
    pub fn admin_command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
            .args(args)
            .args(["--server", &format!("http://{}", self.addr())])
            .output()
            .expect("run mirrorgate")
    }

    /// The value of one series of `/metrics` (`name{labels}` as exposed), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.get("/metrics", &[])
            .text()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The temporary directory holding config, rules, cache and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file passed to `serve --config`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mirrorgate.yaml")
    }

    /// The rules directory (the configuration's only `rules` entry).
    pub fn rules_dir(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    /// The rule file written by [`Mirrorgate::start`] and [`Mirrorgate::write_rules`].
    pub fn rules_path(&self) -> PathBuf {
        self.rules_dir().join("rules.yaml")
    }

    /// The cache directory (`cache.dir`, unless the extra configuration changed it).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Replaces the rule file atomically (a dotfile written, then renamed over it), as a
    /// reload test needs; the proxy sees it when watching or after [`Mirrorgate::sighup`].
    pub fn write_rules(&self, rules_yaml: &str) {
        let tmp = self.rules_dir().join(".rules.yaml.tmp");
        fs::write(&tmp, rules_yaml.replace(SELF_ADDR, &self.addr())).expect("write rules");
        fs::rename(&tmp, self.rules_path()).expect("rename rules into place");
    }

    /// Sends SIGHUP (reload) to the running process.
    pub fn sighup(&self) {
        let pid = self.pid().expect("mirrorgate is not running").to_string();
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {pid} failed: {status}");
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildGuard::id)
    }

    /// Whether the process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.process {
            Some(child) => child.exited().is_none(),
            None => false,
        }
    }

    /// The process's stdout and stderr, interleaved, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mirrorgate.log")
    }

    /// The jobs `GET /warm/jobs` lists, once there is one and none is running (waits up to two
    /// minutes: a release is warmed in the background).
    pub fn finished_warm_jobs(&self) -> Vec<serde_json::Value> {
        let mut jobs = Vec::new();
        process::wait_until(std::time::Duration::from_secs(120), || {
            let answer = http_get(&self.addr(), "/warm/jobs", &[]);
            if answer.status != 200 {
                return Err(format!(
                    "GET /warm/jobs answered {}: {}",
                    answer.status,
                    answer.text()
                ));
            }
            jobs = answer.json()["jobs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            Ok(!jobs.is_empty()
                && jobs
                    .iter()
                    .all(|j| j["state"] == "succeeded" || j["state"] == "failed"))
        })
        .unwrap_or_else(|e| panic!("warm jobs did not finish: {e}\n{}", self.log()));
        jobs
    }

    /// The log's contents so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// Kills the process; idempotent. Config, rules, cache and log are kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.stop();
        }
    }

    /// Stops the process if running and starts it again on the same port with the same
    /// configuration and cache; panics if the port has been taken meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn() {
            panic!("mirrorgate could not restart on its port: {why}");
        }
    }
}

impl Drop for Mirrorgate {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Merges `extra` into `base`: objects key by key (recursively), anything else replaced.
fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Serves `proxy` (built in the test's process) with `limits` on a free loopback port, in a task
/// of the current runtime; its address.
pub async fn serve_in_process(
    proxy: &std::sync::Arc<mirrorgate::proxy::Proxy>,
    limits: mirrorgate::http::LimitsConfig,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(mirrorgate::http::serve(
        listener,
        proxy.clone(),
        None,
        limits,
        std::future::pending(),
    ));
    addr
}

/// `mirrorgate ARGS…` run to its end: whether it exited successfully, its stdout, its stderr.
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(args)
        .output()
        .expect("run mirrorgate");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Digest and tag rules (an IDMS and an ITMS) sending `{source}/ns` to each `{mirror}/ns` in
/// order, the source never contacted.
pub fn mirrored_rules(source: &str, mirrors: &[&str]) -> String {
    let list: String = mirrors.iter().map(|m| format!("    - {m}/ns\n")).collect();
    let set = |kind: &str, field: &str| {
        format!(
            "---\napiVersion: config.openshift.io/v1\nkind: {kind}\nmetadata:\n  name: m\nspec:\n  {field}:\n  - source: {source}/ns\n    mirrors:\n{list}    mirrorSourcePolicy: NeverContactSource\n"
        )
    };
    set("ImageDigestMirrorSet", "imageDigestMirrors") + &set("ImageTagMirrorSet", "imageTagMirrors")
}
