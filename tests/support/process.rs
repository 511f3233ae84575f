//! Shared plumbing: free ports, child-process guards, bounded waits, log tails.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// How long a started process may take to answer its readiness probe.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(15);
/// How many times a start is retried when the chosen port was taken in the meantime.
pub const START_ATTEMPTS: usize = 5;
/// The `User-Agent` of the harness's own probes, so that request accounting can leave them out.
pub const PROBE_USER_AGENT: &str = "mirrorgate-harness-probe";

/// Ports handed out by this test process, so that parallel tests never get the same one from
/// the kernel twice (it readily reuses a port just released).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free port on 127.0.0.1: bound to port 0, read back and released. Another process can still
/// take it before the caller binds it, so callers retry on "address in use".
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Opens a log file for appending (created if missing), for a child's stdout or stderr.
pub fn append_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

/// Spawns `command` with stdin closed and stdout/stderr appended to the given files.
pub fn spawn_logged(mut command: Command, stdout: &Path, stderr: &Path) -> ChildGuard {
    command
        .stdin(Stdio::null())
        .stdout(append_log(stdout))
        .stderr(append_log(stderr));
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    ChildGuard { child: Some(child) }
}

/// A running child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// The process id while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("try_wait failed: {e}")),
        }
    }

    /// Kills (SIGKILL) and reaps the process; idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killing an already exited child fails harmlessly; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `ready` until it returns `Ok(true)`, the deadline passes, or it returns `Err` (a fatal
/// condition such as the process having exited). Returns the last error or a timeout message.
pub fn wait_until(
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(fatal) => return Err(fatal),
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready after {timeout:?}"));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The last `lines` lines of a text file (lossy UTF-8), for panic messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "--- {} (last {} lines)\n{}",
        path.display(),
        all.len() - start,
        all[start..].join("\n")
    )
}

/// Whether a log says that a listener could not bind its port.
pub fn says_address_in_use(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use") || log.contains("addrinuse")
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}
