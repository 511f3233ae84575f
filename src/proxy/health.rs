//! How each upstream registry has been answering ([`Health`]), for `/status`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::upstream::AttemptError;

/// At most this many registries are tracked (they are bounded by the rules and `registries`
/// already; this bounds `allow_any_registry`).
const HEALTH_CAPACITY: usize = 10_000;

/// How each registry contacted has been answering.
#[derive(Debug, Default)]
pub(super) struct Health {
    registries: Mutex<HashMap<String, RegistryHealth>>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct RegistryHealth {
    pub(super) attempts: u64,
    pub(super) failures: u64,
    pub(super) last_success: Option<SystemTime>,
    pub(super) refusals: u64,
    pub(super) last_error: Option<(SystemTime, String)>,
    /// Whether the last attempt failed.
    pub(super) failing: bool,
    /// Whether the last attempt was answered with a refusal.
    pub(super) refusing: bool,
}

impl Health {
    /// Records one attempt at `registry`. Any answer a registry gives about the content (found
    /// or not found) is a success; a refusal (401, 403, 429, 400…) is an answer too, but kept
    /// apart, since it is why nothing was served; no answer, a 5xx or a broken protocol is a
    /// failure.
    pub(super) fn record(&self, registry: &str, result: Result<(), &AttemptError>) {
        let Ok(mut registries) = self.registries.lock() else {
            return;
        };
        if registries.len() >= HEALTH_CAPACITY && !registries.contains_key(registry) {
            return;
        }
        let entry = registries.entry(registry.to_owned()).or_default();
        entry.attempts += 1;
        match result {
            Ok(()) | Err(AttemptError::NotFound) => {
                entry.last_success = Some(SystemTime::now());
                entry.failing = false;
                entry.refusing = false;
            }
            Err(error) if error.is_refusal() => {
                let now = SystemTime::now();
                entry.refusals += 1;
                entry.last_success = Some(now);
                entry.last_error = Some((now, error.to_string()));
                entry.failing = false;
                entry.refusing = true;
            }
            Err(error) => {
                entry.failures += 1;
                entry.last_error = Some((SystemTime::now(), error.to_string()));
                entry.failing = true;
                entry.refusing = false;
            }
        }
    }

    pub(super) fn snapshot(&self) -> HashMap<String, RegistryHealth> {
        self.registries
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}
