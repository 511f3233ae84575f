//! Tag answers: which digest a logical `name:tag` pointed to, when, and through which route. An
//! answer is reused for `cache.tag_ttl`, then revalidated; an expired one may still be served
//! within `cache.stale_if_error` when every source fails. An answer records the route it was
//! found on, and is not used once the rules route the tag differently.

use std::sync::Mutex;
use std::time::Instant;

use super::lru::Lru;

/// Tag answers kept at most (they are small; this bounds memory, not correctness).
const CAPACITY: u64 = 100_000;

/// What a tag pointed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagAnswer {
    /// The manifest digest, `algorithm:hex`.
    pub digest: String,
    /// The physical reference that answered.
    pub source: String,
    /// A fingerprint of the pull sources the rules gave when it was answered.
    pub route: u64,
    /// When it was fetched or last confirmed.
    pub confirmed_at: Instant,
}

/// The tag answers, by logical reference.
pub struct TagStore {
    answers: Mutex<Lru<String, TagAnswer>>,
}

impl Default for TagStore {
    fn default() -> Self {
        TagStore {
            answers: Mutex::new(Lru::new(CAPACITY)),
        }
    }
}

impl TagStore {
    /// The answer for `logical` (a `name:tag` string), if any.
    pub fn get(&self, logical: &str) -> Option<TagAnswer> {
        self.lock().get(&logical.to_owned()).cloned()
    }

    /// Records the answer for `logical`.
    pub fn put(&self, logical: &str, answer: TagAnswer) {
        self.lock()
            .insert(logical.to_owned(), answer, 1, |_, _| false);
    }

    /// The number of answers held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets the answer for `logical`.
    pub fn remove(&self, logical: &str) {
        self.lock().remove(&logical.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<String, TagAnswer>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
