//! Which cached content each logical repository may be served: the `repository@digest` pairs an
//! upstream served or confirmed there ([`Confirmations`]).
//!
//! The stores are content-addressed, so without this a digest cached for one repository would
//! be served under any other name. The pairs are kept in memory (bounded, least recently used
//! dropped first) and appended to `<cache.dir>/confirmed` so that they survive a restart: after
//! one, during an upstream outage, a client limited to some repositories still gets the content
//! confirmed for them, rather than nothing. The file is compacted (deduplicated, the most recent
//! [`PERSISTED`] kept, replaced atomically) when it is opened and whenever as many lines again
//! have been appended. A lost or unreadable file only costs confirmations, which the next pull
//! of each repository makes again.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::content_key::ContentKey;
use super::lru::Lru;

/// How many pairs are remembered in memory.
const IN_MEMORY: u64 = 1_000_000;
/// How many pairs the file keeps after a compaction (about 100 bytes each).
const PERSISTED: usize = 100_000;

/// The confirmed `repository@digest` pairs.
pub(super) struct Confirmations {
    inner: Mutex<Inner>,
}

struct Inner {
    known: Lru<ContentKey, ()>,
    path: PathBuf,
    /// Open for appending; `None` when the file cannot be written (confirmations then last
    /// until the process ends).
    file: Option<File>,
    /// Lines appended since the last compaction.
    appended: usize,
}

impl Confirmations {
    /// Opens (and compacts) `<dir>/confirmed`.
    pub(super) fn open(dir: &Path) -> Confirmations {
        let path = dir.join("confirmed");
        let mut known = Lru::new(IN_MEMORY);
        let kept = compact(&path).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "cannot read the confirmed content file; starting without it");
            Vec::new()
        });
        for key in kept {
            known.insert(ContentKey::from_written(key), (), 1, |_, _| false);
        }
        let file = append_to(&path);
        Confirmations {
            inner: Mutex::new(Inner {
                known,
                path,
                file,
                appended: 0,
            }),
        }
    }

    /// Whether `digest` was confirmed in `repository`.
    pub(super) fn contains(&self, repository: &str, digest: &str) -> bool {
        let key = ContentKey::new(repository, digest);
        self.inner
            .lock()
            .is_ok_and(|mut inner| inner.known.get(&key).is_some())
    }

    /// Records that an upstream served or confirmed `digest` in `repository`; whether the pair
    /// is new.
    pub(super) fn insert(&self, repository: &str, digest: &str) -> bool {
        let key = ContentKey::new(repository, digest);
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        if inner.known.get(&key).is_some() {
            return false;
        }
        inner.known.insert(key.clone(), (), 1, |_, _| false);
        let Some(file) = inner.file.as_mut() else {
            return true;
        };
        if let Err(error) = file.write_all(format!("{}\n", key.as_str()).as_bytes()) {
            tracing::warn!(%error, "cannot record confirmed content; it is kept in memory only");
            inner.file = None;
            return true;
        }
        inner.appended += 1;
        if inner.appended >= PERSISTED {
            inner.appended = 0;
            if let Err(error) = compact(&inner.path) {
                tracing::warn!(%error, "cannot compact the confirmed content file");
            }
            inner.file = append_to(&inner.path);
        }
        true
    }
}

fn append_to(path: &Path) -> Option<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .inspect_err(|error| {
            tracing::warn!(path = %path.display(), %error, "cannot write the confirmed content file; confirmations are kept in memory only");
        })
        .ok()
}

/// Rewrites the file with its most recent [`PERSISTED`] distinct, well-formed lines (oldest
/// first) and returns them. An absent file is empty.
fn compact(path: &Path) -> io::Result<Vec<String>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| well_formed(line))
        .collect();
    let mut seen = HashSet::new();
    let mut kept: Vec<String> = lines
        .into_iter()
        .rev()
        .filter(|line| seen.insert(line.clone()))
        .take(PERSISTED)
        .collect();
    kept.reverse();
    let temporary = path.with_extension("tmp");
    let mut out = io::BufWriter::new(File::create(&temporary)?);
    for line in &kept {
        writeln!(out, "{line}")?;
    }
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    fs::rename(&temporary, path)?;
    Ok(kept)
}

/// `repository@algorithm:hex`: a torn last line (a crash mid-write) is dropped.
fn well_formed(line: &str) -> bool {
    line.rsplit_once('@').is_some_and(|(repository, digest)| {
        !repository.is_empty()
            && digest
                .split_once(':')
                .is_some_and(|(algorithm, hex)| !algorithm.is_empty() && hex.len() >= 32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn confirmations_survive_a_reopen_and_torn_lines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = Confirmations::open(dir.path());
        first.insert("quay.io/ns/app", DIGEST);
        first.insert("quay.io/ns/app", DIGEST);
        drop(first);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("confirmed"))
            .unwrap();
        file.write_all(b"quay.io/ns/torn@sha256:01").unwrap();
        let second = Confirmations::open(dir.path());
        assert_eq!(
            (
                second.contains("quay.io/ns/app", DIGEST),
                second.contains("quay.io/ns/other", DIGEST),
                fs::read_to_string(dir.path().join("confirmed")).unwrap()
            ),
            (true, false, format!("quay.io/ns/app@{DIGEST}\n"))
        );
    }
}
