//! Which registries are skipped for a moment because they look down ([`Backoff`]), so that a
//! dead mirror does not cost every request its timeout.
//!
//! One failed request says nothing about a registry, only evidence that it is down does:
//! - its own endpoint could not be reached (connection refused, DNS failure, host unreachable,
//!   connect timeout, TLS handshake failure: [`AttemptError::Unreachable`]): skipped at once;
//! - [`STREAK`] requests in a row failed otherwise (a connection reset or closed before the
//!   response, no response in time, a redirect hop to blob storage or a token endpoint out of
//!   reach), each started within [`WINDOW`] of the failure before: skipped too.
//!
//! Any answer of the registry, whatever its status (4xx and 5xx too), ends the streak and the
//! back-off. A registry skipped is skipped for [`BACKOFF`]; one more failure of the streak after
//! that skips it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::upstream::AttemptError;

/// How long a registry that looks down is skipped.
pub(super) const BACKOFF: Duration = Duration::from_secs(5);
/// Requests in a row that must fail, none answered, before a reachable registry is skipped.
pub(super) const STREAK: u32 = 3;
/// A failure continues the streak when its request started at most this long after the last
/// failure: failures further apart are not one outage.
pub(super) const WINDOW: Duration = Duration::from_secs(10);
/// At most this many registries are remembered (they are bounded by the rules and
/// `registries` already; this bounds `allow_any_registry`).
const CAPACITY: usize = 10_000;

/// The registries failing or skipped, by `host[:port]`.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    registries: Mutex<HashMap<String, Failing>>,
}

/// A registry whose last attempts failed.
#[derive(Debug, Clone)]
struct Failing {
    /// Failed attempts in a row.
    streak: u32,
    /// When the last one failed.
    last: Instant,
    /// Skipped until then, if it is.
    until: Option<Instant>,
    /// Why it is skipped, as the skipped attempts report it.
    cause: String,
}

impl Backoff {
    /// How much longer `registry` is skipped at `now`, and why, if it is.
    pub(super) fn skipping(&self, registry: &str, now: Instant) -> Option<(Duration, String)> {
        let registries = self.registries.lock().ok()?;
        let failing = registries.get(registry)?;
        let remaining = failing.until?.checked_duration_since(now)?;
        Some((remaining, failing.cause.clone()))
    }

    /// Records the outcome of an attempt at `registry` that `started` and ended at `now`.
    pub(super) fn record<T>(
        &self,
        registry: &str,
        started: Instant,
        now: Instant,
        result: &Result<T, AttemptError>,
    ) {
        let Ok(mut registries) = self.registries.lock() else {
            return;
        };
        match result {
            Err(error @ AttemptError::Unreachable { .. }) => {
                let failing = entry(&mut registries, registry, now);
                failing.streak = failing.streak.saturating_add(1);
                failing.last = now;
                failing.until = Some(now + BACKOFF);
                failing.cause = format!("unreachable moments ago ({error})");
            }
            Err(error @ (AttemptError::Connect(_) | AttemptError::Timeout { .. })) => {
                failed(&mut registries, registry, started, now, error);
            }
            // An answer (or a protocol the registry broke in answering): it is up.
            _ => {
                registries.remove(registry);
            }
        }
    }

    /// Every registry skipped, with until when.
    pub(super) fn skipped(&self) -> HashMap<String, Instant> {
        self.registries
            .lock()
            .map(|registries| {
                registries
                    .iter()
                    .filter_map(|(registry, failing)| Some((registry.clone(), failing.until?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A request that failed without proving the registry down: counted in the streak.
fn failed(
    registries: &mut HashMap<String, Failing>,
    registry: &str,
    started: Instant,
    now: Instant,
    error: &AttemptError,
) {
    let failing = entry(registries, registry, now);
    let continues = failing.streak > 0 && started <= failing.last + WINDOW;
    failing.streak = if continues { failing.streak + 1 } else { 1 };
    failing.last = now;
    if failing.streak >= STREAK {
        failing.until = Some(now + BACKOFF);
        failing.cause = format!(
            "{} requests in a row failed moments ago (the last: {error})",
            failing.streak
        );
    }
}

/// The record of `registry`, new if there is none (when full, the registries neither skipped
/// nor failing lately are forgotten first).
fn entry<'a>(
    registries: &'a mut HashMap<String, Failing>,
    registry: &str,
    now: Instant,
) -> &'a mut Failing {
    if registries.len() >= CAPACITY && !registries.contains_key(registry) {
        registries.retain(|_, failing| {
            failing.until.is_some_and(|until| until > now) || failing.last + WINDOW > now
        });
        if registries.len() >= CAPACITY {
            registries.clear();
        }
    }
    registries
        .entry(registry.to_owned())
        .or_insert_with(|| Failing {
            streak: 0,
            last: now,
            until: None,
            cause: String::new(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = "mirror.test";

    fn closed() -> Result<(), AttemptError> {
        Err(AttemptError::Connect(
            "connection closed before the response (mirror.test)".to_owned(),
        ))
    }

    fn refused() -> Result<(), AttemptError> {
        Err(AttemptError::Unreachable {
            reason: "connection refused (mirror.test)".to_owned(),
            timed_out: false,
        })
    }

    /// Records `results`, each attempt starting `gap` after the previous one ended; returns
    /// whether the registry is skipped after each.
    fn skipped_after(results: &[Result<(), AttemptError>], gap: Duration) -> Vec<bool> {
        let backoff = Backoff::default();
        let mut now = Instant::now();
        results
            .iter()
            .map(|result| {
                let started = now + gap;
                now = started + Duration::from_millis(10);
                backoff.record(REGISTRY, started, now, result);
                backoff.skipping(REGISTRY, now).is_some()
            })
            .collect()
    }

    #[test]
    fn an_unreachable_registry_is_skipped_at_once() {
        assert_eq!(skipped_after(&[refused()], Duration::ZERO), [true]);
    }

    #[test]
    fn one_request_closed_before_its_answer_skips_nothing_three_in_a_row_do() {
        let results = [closed(), closed(), closed()];
        assert_eq!(
            skipped_after(&results, Duration::ZERO),
            [false, false, true]
        );
    }

    #[test]
    fn no_headers_in_time_or_a_redirect_hop_out_of_reach_is_one_failed_request() {
        let results = [
            Err(AttemptError::Timeout {
                connecting: false,
                after: Duration::from_secs(30),
            }),
            Err(AttemptError::Timeout {
                connecting: true,
                after: Duration::from_secs(5),
            }),
        ];
        assert_eq!(skipped_after(&results, Duration::ZERO), [false, false]);
    }

    #[test]
    fn failures_a_window_apart_are_not_a_streak() {
        let results = [closed(), closed(), closed()];
        assert_eq!(
            skipped_after(&results, WINDOW + Duration::from_secs(1)),
            [false, false, false]
        );
    }

    #[test]
    fn any_answer_ends_the_streak_a_refusal_and_a_server_error_included() {
        let answers = [
            Ok(()),
            Err(AttemptError::NotFound),
            Err(AttemptError::Status { status: 429 }),
            Err(AttemptError::Status { status: 400 }),
            Err(AttemptError::Unauthorized { status: 403 }),
            Err(AttemptError::Status { status: 503 }),
        ];
        let skipped: Vec<Vec<bool>> = answers
            .into_iter()
            .map(|answer| skipped_after(&[closed(), closed(), answer, closed()], Duration::ZERO))
            .collect();
        assert_eq!(skipped, vec![vec![false; 4]; 6]);
    }

    #[test]
    fn an_answer_ends_the_back_off() {
        let results = [refused(), Err(AttemptError::Status { status: 429 })];
        assert_eq!(skipped_after(&results, Duration::ZERO), [true, false]);
    }

    #[test]
    fn the_skipped_attempts_report_the_evidence() {
        let backoff = Backoff::default();
        let now = Instant::now();
        for result in [closed(), closed(), closed()] {
            backoff.record(REGISTRY, now, now, &result);
        }
        backoff.record("dead.test", now, now, &refused());
        let cause = |registry| backoff.skipping(registry, now).map(|(_, cause)| cause);
        assert_eq!(
            (cause(REGISTRY), cause("dead.test")),
            (
                Some(
                    "3 requests in a row failed moments ago (the last: connection closed before \
                     the response (mirror.test))"
                        .to_owned()
                ),
                Some("unreachable moments ago (connection refused (mirror.test))".to_owned())
            )
        );
    }
}
