//! What password checks may cost ([`Logins`]): bcrypt is slow by design, so an attacker can
//! turn wrong passwords into CPU load, and the time a refusal takes can tell which users exist.
//!
//! - An unknown user's password is checked against a dummy hash of the same cost as the
//!   file's, so that a refusal takes as long whether the user exists or not.
//! - At most as many verifications run at once as there are CPUs, on the blocking pool; others
//!   wait their turn without holding a thread.
//! - After [`MAX_FAILURES`] failed logins within [`WINDOW`] from one client address, or for one
//!   user name, further attempts from it (or for it) are answered 429 with `Retry-After` until
//!   the window ends, without running bcrypt. Successful verifications are cached by the
//!   caller (keyed by a hash of the credentials), so a client already logged in keeps working
//!   while its user name is being attacked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Failed logins allowed per address or user within a window.
pub(super) const MAX_FAILURES: u32 = 10;
/// The window of the failed-login count.
pub(super) const WINDOW: Duration = Duration::from_secs(60);
/// At most this many addresses and users are tracked at once.
const CAPACITY: usize = 10_000;
/// The bcrypt cost of the dummy hash when the file's hashes do not tell.
const DEFAULT_COST: u32 = 10;

/// Who failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(String),
}

/// The password-check guard of one htpasswd file.
pub(super) struct Logins {
    dummy: Arc<str>,
    verifications: Arc<Semaphore>,
    /// Failures in the current window, and when it started.
    failures: Mutex<HashMap<Key, (u32, Instant)>>,
}

impl Logins {
    /// A guard whose dummy hash has the cost of `sample` (a hash of the file), if any.
    pub(super) fn new(sample: Option<&str>) -> Logins {
        let cost = sample
            .and_then(|hash| hash.get(4..6))
            .and_then(|cost| cost.parse().ok())
            .unwrap_or(DEFAULT_COST);
        let dummy = bcrypt::hash("mirrorgate: no such user", cost)
            .or_else(|_| bcrypt::hash("mirrorgate: no such user", DEFAULT_COST))
            .unwrap_or_default();
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        Logins {
            dummy: dummy.into(),
            verifications: Arc::new(Semaphore::new(parallelism)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long attempts from `peer` or for `user` are still refused, if they are.
    pub(super) fn blocked(&self, peer: Option<IpAddr>, user: &str) -> Option<Duration> {
        let failures = self.failures.lock().ok()?;
        keys(peer, user)
            .iter()
            .filter_map(|key| failures.get(key))
            .filter(|(count, _)| *count >= MAX_FAILURES)
            .filter_map(|(_, since)| WINDOW.checked_sub(since.elapsed()))
            .max()
    }

    /// Counts a failed login from `peer` for `user`.
    pub(super) fn failed(&self, peer: Option<IpAddr>, user: &str) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= CAPACITY {
            failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if failures.len() >= CAPACITY {
                failures.clear();
            }
        }
        for key in keys(peer, user) {
            let entry = failures.entry(key).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    /// Checks `password` against `hash` (the dummy hash for an unknown user, which never
    /// matches), one of a bounded number at a time.
    pub(super) async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.to_string());
        let Ok(_permit) = self.verifications.clone().acquire_owned().await else {
            return false;
        };
        let matched =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        known && matched
    }
}

fn keys(peer: Option<IpAddr>, user: &str) -> Vec<Key> {
    let mut keys = vec![Key::User(user.to_owned())];
    if let Some(peer) = peer {
        keys.push(Key::Address(peer));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_bound_block_the_address_and_the_user() {
        let logins = Logins::new(Some("$2y$04$"));
        let (attacker, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            logins.failed(Some(attacker), "alice");
        }
        assert_eq!(
            (
                logins.blocked(Some(attacker), "bob").is_some(),
                logins.blocked(Some(other), "alice").is_some(),
                logins.blocked(Some(other), "bob").is_some(),
            ),
            (true, true, false)
        );
    }

    #[tokio::test]
    async fn an_unknown_user_is_checked_against_the_dummy_hash_and_refused() {
        let logins = Logins::new(Some("$2y$04$"));
        let hash = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(
            (
                logins.verify("pw".to_owned(), Some(hash)).await,
                logins
                    .verify("mirrorgate: no such user".to_owned(), None)
                    .await,
            ),
            (true, false)
        );
    }
}
