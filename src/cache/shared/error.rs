//! Every way the bucket can fail ([`SharedError`]) and what the tier did ([`SharedStats`]).

use std::path::PathBuf;

use super::seal::Rejected;
use std::sync::atomic::{AtomicU64, Ordering};

/// How an operation on the shared store failed. Each is something to count and log and then
/// carry on without the shared tier; none should fail a pull.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The server could not be reached, broke the connection or answered with a server error.
    #[error("shared store unavailable: {0}")]
    Unavailable(String),
    /// The server did not answer in time.
    #[error("shared store did not answer in time: {0}")]
    Timeout(String),
    /// The server refused the request: wrong credentials, or a policy that forbids it.
    #[error("shared store refused access (check the credentials and the bucket policy): {0}")]
    Denied(String),
    /// The bucket does not exist.
    #[error("bucket {bucket:?} does not exist (mirrorgate does not create it): {detail}")]
    MissingBucket {
        /// The configured bucket.
        bucket: String,
        /// The server's answer.
        detail: String,
    },
    /// The server has no room (full, or over a quota).
    #[error("shared store is full or over quota: {0}")]
    Full(String),
    /// The object does not hash to its digest, or has the wrong length: it must be replaced.
    #[error("corrupt object {key} in the shared store: {reason}")]
    Corrupt {
        /// The object's key.
        key: String,
        /// What did not match.
        reason: String,
    },
    /// Reading an object broke off before its end.
    #[error("reading {key} from the shared store broke off: {reason}")]
    Broken {
        /// The object's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A local file to upload could not be read.
    #[error("{}: {source}", path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes offered for upload do not hash to their digest (or are not as long as said):
    /// nothing was made visible.
    #[error("refused to store {digest}: {reason}")]
    Unverified {
        /// The digest the bytes were said to have.
        digest: String,
        /// What did not match.
        reason: String,
    },
    /// The credentials or CA file could not be read, or the client could not be built.
    #[error("shared store configuration: {0}")]
    Config(String),
    /// A repository name that cannot be a key.
    #[error("{0:?} is not a repository name")]
    InvalidRepository(String),
    /// A marker or tag answer not sealed with any of this replica's keys: treated as absent.
    #[error("untrusted record {key} in the shared store (treated as absent): {reason}")]
    Untrusted {
        /// The record's key.
        key: String,
        /// Why it is not trusted.
        reason: Rejected,
    },
}

impl SharedError {
    /// A short stable name of the kind of failure, for a metric label or a log field.
    pub fn kind(&self) -> &'static str {
        match self {
            SharedError::Unavailable(_) => "unavailable",
            SharedError::Timeout(_) => "timeout",
            SharedError::Denied(_) => "denied",
            SharedError::MissingBucket { .. } => "missing_bucket",
            SharedError::Full(_) => "full",
            SharedError::Corrupt { .. } => "corrupt",
            SharedError::Broken { .. } => "broken",
            SharedError::Local { .. } => "local",
            SharedError::Unverified { .. } => "unverified",
            SharedError::Config(_) => "config",
            SharedError::InvalidRepository(_) => "invalid_repository",
            SharedError::Untrusted { .. } => "untrusted",
        }
    }

    pub(super) fn from_store(error: object_store::Error, bucket: &str) -> SharedError {
        use object_store::Error as E;
        match error {
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                SharedError::Denied(chain(&error))
            }
            _ => {
                // Some requests (listings, multipart) report any status as a generic error:
                // the status and the S3 error code are in the text.
                let text = chain(&error);
                let lower = text.to_ascii_lowercase();
                if text.contains("NoSuchBucket") {
                    SharedError::MissingBucket {
                        bucket: bucket.to_owned(),
                        detail: text,
                    }
                } else if [
                    "403 forbidden",
                    "401 unauthorized",
                    "accessdenied",
                    "signaturedoesnotmatch",
                    "invalidaccesskeyid",
                ]
                .iter()
                .any(|needle| lower.contains(needle))
                {
                    SharedError::Denied(text)
                } else if lower.contains("timed out") || lower.contains("timeout") {
                    SharedError::Timeout(text)
                } else if [
                    "507",
                    "insufficient storage",
                    "quotaexceeded",
                    "entitytoolarge",
                    "no free",
                    "no writable",
                ]
                .iter()
                .any(|needle| lower.contains(needle))
                {
                    SharedError::Full(text)
                } else {
                    SharedError::Unavailable(text)
                }
            }
        }
    }
}

/// An error with its sources, on one line.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// What the shared tier did since it was opened.
#[derive(Debug, Default)]
pub struct SharedStats {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) uploads: AtomicU64,
    pub(super) already_present: AtomicU64,
    pub(super) upload_failures: AtomicU64,
    pub(super) corrupt: AtomicU64,
    pub(super) replaced: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    pub(super) rejected_markers: AtomicU64,
    pub(super) rejected_tags: AtomicU64,
    pub(super) rejected_withdrawals: AtomicU64,
}

/// A snapshot of [`SharedStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedCounts {
    /// Reads that found the object (`get` that returned a stream, `stat` that found it).
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Objects this process made visible.
    pub uploads: u64,
    /// Uploads that found the object already there (another replica stored it).
    pub already_present: u64,
    /// Uploads that failed (nothing became visible).
    pub upload_failures: u64,
    /// Objects found corrupt while reading them.
    pub corrupt: u64,
    /// Corrupt objects replaced with verified bytes.
    pub replaced: u64,
    /// Operations that failed for any other reason (unreachable, denied, timeout, ...).
    pub errors: u64,
    /// Object bytes read (delivered or not).
    pub bytes_read: u64,
    /// Object bytes sent in uploads, completed or not.
    pub bytes_written: u64,
    /// Confirmation markers found without a valid seal (not trusted).
    pub rejected_markers: u64,
    /// Tag answers found without a valid seal (not trusted).
    pub rejected_tags: u64,
    /// Withdrawal records found without a valid seal (not trusted).
    pub rejected_withdrawals: u64,
}

impl SharedStats {
    /// The counters now.
    pub fn snapshot(&self) -> SharedCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SharedCounts {
            hits: get(&self.hits),
            misses: get(&self.misses),
            uploads: get(&self.uploads),
            already_present: get(&self.already_present),
            upload_failures: get(&self.upload_failures),
            corrupt: get(&self.corrupt),
            replaced: get(&self.replaced),
            errors: get(&self.errors),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            rejected_markers: get(&self.rejected_markers),
            rejected_tags: get(&self.rejected_tags),
            rejected_withdrawals: get(&self.rejected_withdrawals),
        }
    }
}

impl SharedStats {
    /// Counts a failed operation whose failure the store did not see (the caller stopped
    /// waiting for it).
    pub fn count_error(&self) {
        bump(&self.errors, 1);
    }

    /// Counts an object found corrupt by the caller (e.g. not the size its manifest declares).
    pub fn count_corrupt(&self) {
        bump(&self.corrupt, 1);
    }
}

pub(super) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}
