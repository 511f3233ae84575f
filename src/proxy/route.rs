//! The names of what is served, one type for requests and upstream attempts alike, so that a
//! misspelt route cannot silently become another one; each yields its metric label.

/// What a request (or an upstream attempt made for it) is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /v2/`.
    Base,
    /// A manifest by tag or digest.
    Manifest,
    /// A blob.
    Blob,
    /// A tag list.
    Tags,
    /// A referrers list.
    Referrers,
    /// `/healthz`.
    Healthz,
    /// `/readyz`.
    Readyz,
    /// `/metrics`.
    Metrics,
    /// `/status`.
    Status,
    /// A request that did not parse.
    Invalid,
    /// A request without valid credentials.
    Unauthorized,
}

impl Route {
    /// The metric label (and log name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::Tags => "tags",
            Route::Referrers => "referrers",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Status => "status",
            Route::Invalid => "invalid",
            Route::Unauthorized => "unauthorized",
        }
    }
}

/// Content in a repository, `repository@digest`: the key of what an upstream confirmed and of
/// the sizes manifests declare. Built only from its two parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ContentKey(Box<str>);

impl ContentKey {
    /// The key of `digest` in the logical `repository`.
    pub(crate) fn new(repository: &str, digest: &str) -> ContentKey {
        let mut key = String::with_capacity(repository.len() + 1 + digest.len());
        key.push_str(repository);
        key.push('@');
        key.push_str(digest);
        ContentKey(key.into_boxed_str())
    }

    /// A key as written by [`ContentKey::as_str`] (a line of the confirmations file).
    pub(crate) fn from_written(written: String) -> ContentKey {
        ContentKey(written.into_boxed_str())
    }

    /// `repository@digest`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}
