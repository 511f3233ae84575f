//! When the process started, when the rules in force were loaded and how the last reload went
//! ([`Reloads`]), for `/status`.

use std::sync::Mutex;
use std::time::SystemTime;

use super::open::Proxy;

/// When the process started, when the rules in force were loaded, and the last reload.
#[derive(Debug)]
pub(super) struct Reloads {
    pub(super) started_at: SystemTime,
    state: Mutex<ReloadState>,
}

#[derive(Debug, Clone)]
pub(super) struct ReloadState {
    pub(super) config: Option<String>,
    pub(super) loaded_at: SystemTime,
    pub(super) last: Option<(SystemTime, Result<(), String>)>,
}

impl Reloads {
    pub(super) fn new() -> Reloads {
        let now = SystemTime::now();
        Reloads {
            started_at: now,
            state: Mutex::new(ReloadState {
                config: None,
                loaded_at: now,
                last: None,
            }),
        }
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, ReloadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Proxy {
    /// Names the configuration file the proxy was started from (`None`: built-in defaults),
    /// for `/status`.
    pub fn set_config_path(&self, path: Option<&std::path::Path>) {
        self.reloads.state().config = path.map(|p| p.display().to_string());
    }

    /// Records the result of a reload: counted, and kept for `/status`. A failed reload keeps
    /// the last good rules, so their load time stays.
    pub fn record_reload(&self, result: Result<(), String>) {
        self.metrics.rules.reload(result.is_ok());
        let now = SystemTime::now();
        let mut state = self.reloads.state();
        if result.is_ok() {
            state.loaded_at = now;
        }
        state.last = Some((now, result));
    }
}
