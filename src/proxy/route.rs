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
