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
//! - What failures cost in memory is bounded whatever names are tried: a user is tracked by a
//!   keyed hash of the name (not the name, which a client may make as long as a header), at most
//!   [`CAPACITY`] addresses and users are tracked, and a full table makes room by dropping
//!   expired entries, then the oldest that block nothing, so that a flood of new names does not
//!   lift a lock-out in force. A user name longer than [`MAX_USER_NAME_BYTES`] is refused before
//!   any of this (no htpasswd file can hold one).

use std::collections::HashMap;
use std::hash::BuildHasher;
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
/// The longest user name accepted, in bytes (as Apache's htpasswd bounds them).
pub(super) const MAX_USER_NAME_BYTES: usize = 255;
/// The bcrypt cost of the dummy hash when the file's hashes do not tell.
const DEFAULT_COST: u32 = 10;

/// Who failed: an address, or a user by the hash of its name (randomly keyed per table, so that
/// nobody can choose names that collide with another's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(u64),
}

/// The password-check guard of one htpasswd file.
pub(super) struct Logins {
    dummy: Arc<str>,
    verifications: Arc<Semaphore>,
    /// Failures in the current window, and when it started.
    failures: Mutex<HashMap<Key, (u32, Instant)>>,
    /// The key of the user-name hashes.
    names: std::collections::hash_map::RandomState,
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
            names: std::collections::hash_map::RandomState::new(),
        }
    }

    /// How long attempts from `peer` or for `user` are still refused, if they are.
    pub(super) fn blocked(&self, peer: Option<IpAddr>, user: &str) -> Option<Duration> {
        let failures = self.failures.lock().ok()?;
        self.keys(peer, user)
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
        if failures.len() + 2 > CAPACITY {
            make_room(&mut failures);
        }
        for key in self.keys(peer, user) {
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

impl Logins {
    /// The keys a failure from `peer` for `user` counts against (a name too long to be a user
    /// counts against the address alone).
    fn keys(&self, peer: Option<IpAddr>, user: &str) -> Vec<Key> {
        let mut keys = Vec::with_capacity(2);
        if user.len() <= MAX_USER_NAME_BYTES {
            keys.push(Key::User(self.names.hash_one(user)));
        }
        if let Some(peer) = peer {
            keys.push(Key::Address(peer));
        }
        keys
    }

    /// How many addresses and users are tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.failures.lock().map_or(0, |f| f.len())
    }
}

/// Frees a tenth of a full table: expired entries first, then the oldest that block nothing,
/// and only then the oldest lock-outs. A tenth at a time, so that a flood pays the sort once
/// per thousand failures rather than a scan for each.
fn make_room(failures: &mut HashMap<Key, (u32, Instant)>) {
    failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
    let target = CAPACITY - CAPACITY / 10;
    if failures.len() <= target {
        return;
    }
    let mut by_age: Vec<(bool, Instant, Key)> = failures
        .iter()
        .map(|(key, (count, since))| (*count >= MAX_FAILURES, *since, *key))
        .collect();
    // Non-blocking before blocking (false < true), oldest first.
    by_age.sort_unstable_by_key(|(blocking, since, _)| (*blocking, *since));
    for (_, _, key) in by_age.iter().take(failures.len() - target) {
        failures.remove(key);
    }
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

    #[test]
    fn a_flood_of_distinct_long_user_names_stays_bounded_and_keeps_the_lock_outs() {
        let logins = Logins::new(Some("$2y$04$"));
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            logins.failed(Some(attacker), "alice");
        }
        // Twice the table's capacity of new names, each as long as a header allows, from as
        // many addresses.
        let mut name = "x".repeat(MAX_USER_NAME_BYTES - 8);
        let prefix = name.len();
        for i in 0..2 * CAPACITY as u32 {
            name.truncate(prefix);
            name.push_str(&format!("{i:08}"));
            let peer = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) + 1));
            logins.failed(Some(peer), &name);
        }
        let long = "y".repeat(64 * 1024);
        for _ in 0..MAX_FAILURES {
            logins.failed(None, &long);
        }
        assert_eq!(
            (
                logins.tracked() <= CAPACITY,
                logins.blocked(Some(attacker), "bob").is_some(),
                logins.blocked(None, "alice").is_some(),
                logins.blocked(None, &long).is_some(),
            ),
            (true, true, true, false)
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
