//! Rate-limited WARN lines. A dead mirror fails every request that tries it; one WARN per
//! registry per [`INTERVAL`] says so without flooding the log, and the next line says how many
//! were held back meanwhile. Logging is process-wide, and so are these limits.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The shortest time between two WARN lines about one registry (per kind of line).
pub(crate) const INTERVAL: Duration = Duration::from_secs(30);

/// Keys remembered at most; beyond it, the oldest are forgotten (a forgotten key logs again).
const CAPACITY: usize = 4096;

/// Upstream attempts that failed (DNS, refused, timeout, 5xx, …), by physical registry.
pub(crate) static ATTEMPT_FAILED: LazyLock<LogLimit> = LazyLock::new(LogLimit::default);
/// Pulls that no source served, by the registry the client asked for.
pub(crate) static NOT_SERVED: LazyLock<LogLimit> = LazyLock::new(LogLimit::default);

/// Per-key admission of log lines: one per [`INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    /// Key → when its last line was admitted, and how many were held back since.
    keys: Mutex<HashMap<String, (Instant, u64)>>,
}

impl LogLimit {
    /// Whether a line about `key` may be written at `now`: `Some(held back since the last one)`,
    /// or `None` when one was written less than [`INTERVAL`] ago.
    pub(crate) fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let Ok(mut keys) = self.keys.lock() else {
            return Some(0);
        };
        if let Some((last, held)) = keys.get_mut(key) {
            if now.saturating_duration_since(*last) < INTERVAL {
                *held += 1;
                return None;
            }
            let released = *held;
            *last = now;
            *held = 0;
            return Some(released);
        }
        if keys.len() >= CAPACITY {
            keys.retain(|_, (last, _)| now.saturating_duration_since(*last) < INTERVAL);
            if keys.len() >= CAPACITY {
                keys.clear();
            }
        }
        keys.insert(key.to_owned(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_registry_per_interval_then_the_count_held_back() {
        let limit = LogLimit::default();
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            [
                limit.admit("mirror.example.com", t0),
                limit.admit("mirror.example.com", later(1)),
                limit.admit("other.example.com", later(1)),
                limit.admit("mirror.example.com", later(29)),
                limit.admit("mirror.example.com", later(31)),
                limit.admit("mirror.example.com", later(32)),
            ],
            [Some(0), None, Some(0), None, Some(2), None]
        );
    }
}
