//! Digests an operator has withdrawn: content mirrorgate must no longer serve, though it is
//! cached and an upstream may still have it (a vulnerable or leaked image). By digest a cache is
//! right to serve forever what it verified once; the deny list is how an operator overrides that.
//!
//! Principal types: [`Withdrawn`] (the set in force, read on every request) and [`Withdrawal`]
//! (one entry: why, when, by whom).
//!
//! The set is persisted as one JSON file in the cache directory (`withdrawn.json`, written whole
//! through a temporary file), so it survives a restart; with `cache.shared` each entry is also an
//! object of the bucket, so every replica refuses the digest (see [`crate::cache::shared`]).
//! Reads are a lookup in an immutable map behind an `ArcSwap`: a change builds a new map.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// The file the set is kept in, in the cache directory.
pub const FILE: &str = "withdrawn.json";

/// One withdrawn digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// Why, as the operator said it (may be empty).
    #[serde(default)]
    pub reason: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

impl Withdrawal {
    /// A withdrawal made now, for `reason`.
    pub fn now(reason: &str) -> Withdrawal {
        Withdrawal {
            reason: reason.to_owned(),
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The withdrawn digests in force.
pub struct Withdrawn {
    entries: ArcSwap<BTreeMap<String, Withdrawal>>,
    path: PathBuf,
    tmp: PathBuf,
    /// Serialises changes, so that two at once cannot lose one another's entries on disk.
    writing: Mutex<()>,
}

/// Why the set could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawnError {
    /// The file exists but is not a set of withdrawals.
    #[error("{path}: not a list of withdrawn digests: {source}")]
    Malformed {
        /// The file.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A key of the file is not a digest.
    #[error("{path}: \"{key}\" is not a digest: {reason}")]
    NotADigest {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// Why not.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
}

impl Withdrawn {
    /// The set kept in `dir` (the cache directory), empty when there is no file yet; `tmp` is
    /// where the file is written before it is renamed into place.
    pub fn open(dir: &Path, tmp: &Path) -> Result<Withdrawn, WithdrawnError> {
        let path = dir.join(FILE);
        let shown = || path.display().to_string();
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let entries: BTreeMap<String, Withdrawal> = serde_json::from_slice(&bytes)
                    .map_err(|source| WithdrawnError::Malformed {
                        path: shown(),
                        source,
                    })?;
                for key in entries.keys() {
                    key.parse::<Digest>()
                        .map_err(|e| WithdrawnError::NotADigest {
                            path: shown(),
                            key: key.clone(),
                            reason: e.to_string(),
                        })?;
                }
                entries
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            // A cache directory that cannot be used holds no content to withdraw either, and it
            // must not fail pulls: withdrawals made now are kept in memory (and refused to be
            // written, so the operator hears of it).
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "the list of withdrawn digests cannot be read; none is withdrawn");
                BTreeMap::new()
            }
        };
        Ok(Withdrawn {
            entries: ArcSwap::from_pointee(entries),
            path,
            tmp: tmp.to_owned(),
            writing: Mutex::new(()),
        })
    }

    /// Whether `digest` is withdrawn, and why.
    pub fn get(&self, digest: &str) -> Option<Withdrawal> {
        self.entries.load().get(digest).cloned()
    }

    /// Whether `digest` is withdrawn.
    pub fn contains(&self, digest: &str) -> bool {
        self.entries.load().contains_key(digest)
    }

    /// Every withdrawn digest, sorted.
    pub fn list(&self) -> Arc<BTreeMap<String, Withdrawal>> {
        self.entries.load_full()
    }

    /// How many digests are withdrawn.
    pub fn len(&self) -> usize {
        self.entries.load().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Withdraws `digests` as `withdrawal` says (already withdrawn ones keep their first reason
    /// and time) and keeps the set on disk. Returns the digests newly withdrawn.
    pub fn withdraw(
        &self,
        digests: &[Digest],
        withdrawal: &Withdrawal,
    ) -> Result<Vec<Digest>, WithdrawnError> {
        self.change(|entries| {
            let mut added = Vec::new();
            for digest in digests {
                if !entries.contains_key(digest.as_str()) {
                    entries.insert(digest.as_str().to_owned(), withdrawal.clone());
                    added.push(digest.clone());
                }
            }
            added
        })
    }

    /// Lifts the withdrawal of `digests`; returns those that were withdrawn.
    pub fn allow(&self, digests: &[Digest]) -> Result<Vec<Digest>, WithdrawnError> {
        self.change(|entries| {
            digests
                .iter()
                .filter(|digest| entries.remove(digest.as_str()).is_some())
                .cloned()
                .collect()
        })
    }

    /// Replaces the set with what another replica's store holds merged with nothing else:
    /// the shared store is the fleet's record once `cache.shared` is on. Returns whether the
    /// set changed.
    pub fn replace(&self, entries: BTreeMap<String, Withdrawal>) -> Result<bool, WithdrawnError> {
        let mut changed = false;
        self.change(|current| {
            changed = *current != entries;
            *current = entries;
        })?;
        Ok(changed)
    }

    /// Applies `edit` to a copy of the set, writes it, then puts it in force: a failed write
    /// changes nothing.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut BTreeMap<String, Withdrawal>) -> T,
    ) -> Result<T, WithdrawnError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut entries = BTreeMap::clone(&self.entries.load());
        let result = edit(&mut entries);
        let bytes = serde_json::to_vec_pretty(&entries).expect("withdrawals serialise");
        super::write_atomically(&self.tmp, &self.path, &bytes).map_err(|source| {
            WithdrawnError::Io {
                path: self.path.display().to_string(),
                source,
            }
        })?;
        self.entries.store(Arc::new(entries));
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const B: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn digest(s: &str) -> Digest {
        s.parse().unwrap()
    }

    fn open(dir: &Path) -> Withdrawn {
        Withdrawn::open(dir, dir).unwrap()
    }

    #[test]
    fn a_withdrawal_survives_a_restart_and_allow_lifts_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        let added = first
            .withdraw(&[digest(A), digest(B)], &Withdrawal::now("CVE-2026-0001"))
            .unwrap();
        let again = first
            .withdraw(&[digest(A)], &Withdrawal::now("another reason"))
            .unwrap();
        let reopened = open(dir.path());
        let lifted = reopened.allow(&[digest(B), digest(B)]).unwrap();
        let after_allow = open(dir.path());
        assert_eq!(
            (
                added.len(),
                again.len(),
                reopened.get(A).map(|w| w.reason),
                lifted,
                after_allow.contains(A),
                after_allow.contains(B),
            ),
            (
                2,
                0,
                Some("CVE-2026-0001".to_owned()),
                vec![digest(B)],
                true,
                false
            )
        );
    }

    #[test]
    fn a_malformed_file_names_itself_and_the_bad_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), r#"{"sha256:zz": {"at": 1}}"#).unwrap();
        let error = Withdrawn::open(dir.path(), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("withdrawn.json: \"sha256:zz\" is not a digest"),
            "{error}"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_set_in_force_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let missing_tmp = dir.path().join("no-such-dir");
        let withdrawn = Withdrawn::open(dir.path(), &missing_tmp).unwrap();
        let result = withdrawn.withdraw(&[digest(A)], &Withdrawal::now(""));
        assert_eq!((result.is_err(), withdrawn.contains(A)), (true, false));
    }
}
