//! Whether cached content may be served for a repository ([`Proxy::may_serve_cached`]): the
//! stores are content-addressed, so a digest cached for one repository is served for another
//! only once an upstream confirmed the pair (here, on another replica, or now, by a HEAD); during
//! an outage, only to a client without repository scopes ([`serving_client`]).

use http::HeaderMap;

use crate::reference::Reference;
use crate::rules::Role;

use super::attempt::{AttemptFailure, Failure, exhausted, summary};
use super::error::{Error, Missing};
use super::open::Proxy;
use super::route::Route;
use super::{blob, manifest};

/// What kind of stored content a HEAD upstream confirms before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    Manifest,
    Blob,
}

impl Stored {
    pub(super) fn route(self) -> Route {
        match self {
            Stored::Manifest => Route::Manifest,
            Stored::Blob => Route::Blob,
        }
    }
}

tokio::task_local! {
    /// Whether the client of the request this task serves is limited to some repositories
    /// (set by [`Proxy::respond`]; unset, as for in-process callers, means not limited).
    static SCOPED_CLIENT: bool;
}

/// Runs `work` (answering one request) for a client limited (`scoped`) or not to some
/// repositories: during an outage, cached content no upstream confirmed for the repository is
/// served only to a client without scopes.
pub async fn serving_client<F: std::future::Future>(scoped: bool, work: F) -> F::Output {
    SCOPED_CLIENT.scope(scoped, work).await
}

fn scoped_client() -> bool {
    SCOPED_CLIENT.try_with(|scoped| *scoped).unwrap_or(false)
}

/// Whether a HEAD `response` proves that the upstream holds `digest` of `stored_len` bytes: its
/// `Content-Length` must be that length, and its `Docker-Content-Digest` that digest (blob
/// storage that a registry redirected the HEAD to sends no such header; its length must match).
fn confirms(
    response: &reqwest::Response,
    digest: &str,
    stored_len: Option<u64>,
) -> Result<(), String> {
    let from_registry = response.url().path().starts_with("/v2/");
    head_confirms(response.headers(), from_registry, digest, stored_len)
}

/// [`confirms`] on the headers of a HEAD answered by the registry (`from_registry`) or by the
/// storage it redirected to.
fn head_confirms(
    headers: &HeaderMap,
    from_registry: bool,
    digest: &str,
    stored_len: Option<u64>,
) -> Result<(), String> {
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
    answer_confirms(headers, from_registry, digest, length, stored_len)
}

/// [`head_confirms`] for an answer announcing `length` bytes for the whole content (a part's
/// total, say).
pub(super) fn answer_confirms(
    headers: &HeaderMap,
    from_registry: bool,
    digest: &str,
    length: Option<u64>,
    stored_len: Option<u64>,
) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    match header("docker-content-digest") {
        Some(announced) if announced != digest => {
            return Err(format!("HEAD announced digest {announced}"));
        }
        None if from_registry => {
            return Err("HEAD answered without Docker-Content-Digest".to_owned());
        }
        _ => {}
    }
    match (length, stored_len) {
        (None, _) => Err("HEAD answered without Content-Length".to_owned()),
        (Some(length), Some(stored)) if length != stored => Err(format!(
            "HEAD announced {length} bytes, the content has {stored}"
        )),
        _ => Ok(()),
    }
}

impl Proxy {
    /// Whether cached content `digest` (`stored_len` bytes, when known) may be served for
    /// `logical` (a reference by digest): an upstream served or confirmed it there before, or a
    /// HEAD along `sources` confirms it now (its `Content-Length` and `Docker-Content-Digest`
    /// match the stored object).
    ///
    /// Otherwise it is refused: with 404 as soon as one source says not found (the content is
    /// not this repository's), and with the reasons when sources refused (401, 403) or answered
    /// a HEAD that proves nothing. Only when every source *failed* (unreachable, timed out, 5xx)
    /// does the cache answer, as it would for a repository it knows, and then only to a client
    /// without repository scopes: a scoped client gets only what was confirmed for it.
    pub(super) async fn may_serve_cached(
        &self,
        logical: &Reference,
        sources: &[(Reference, Role)],
        stored: Stored,
        stored_len: Option<u64>,
    ) -> Result<(), Error> {
        let Some(digest) = logical.digest_str() else {
            return Ok(());
        };
        // Confirmed here, or by another replica in the shared store (as good as ours).
        if self
            .tiers
            .confirmed(logical.name(), digest, stored_len)
            .await
        {
            return Ok(());
        }
        let _slot = self.sources.fetch_slots.acquire(logical.as_str()).await?;
        let mut failures = Vec::new();
        for (physical, role) in sources {
            let mut request = match stored {
                Stored::Blob => blob::blob_request(
                    physical,
                    &digest
                        .parse()
                        .map_err(|_| Error::InvalidDigest(format!("invalid digest {digest}")))?,
                    http::Method::HEAD,
                    None,
                ),
                Stored::Manifest => {
                    manifest::manifest_request(physical, &manifest::standard_accept_header())
                }
            };
            request.method = http::Method::HEAD;
            let reason = match self.attempt(request, *role, stored.route()).await {
                Ok(response) => match confirms(&response, digest, stored_len) {
                    Ok(()) => {
                        self.remember_content(logical.name(), digest);
                        return Ok(());
                    }
                    Err(why) => AttemptFailure::Unconfirmed(why),
                },
                Err(error) => AttemptFailure::Upstream(error),
            };
            failures.push(Failure {
                reference: physical.clone(),
                role: *role,
                reason,
            });
        }
        let (route, missing) = match stored {
            Stored::Blob => (Route::Blob, Missing::Blob),
            Stored::Manifest => (Route::Manifest, Missing::Manifest),
        };
        let outage = !failures.is_empty() && failures.iter().all(|f| f.reason.is_failure());
        if outage && !scoped_client() {
            return Ok(());
        }
        let what = route.as_str();
        if failures.iter().any(|f| f.reason.is_not_found()) {
            tracing::info!(reference = %logical, failed = %summary(&failures), "cached content refused: not found on the route");
            // Not found on the route: the content is not this repository's, whatever else failed.
            return Err(
                match exhausted(what, logical.as_str(), &failures, missing) {
                    Error::Exhausted { tried, .. } => Error::Exhausted {
                        missing,
                        all_not_found: true,
                        message: format!(
                            "{what} {logical} not found; tried {}",
                            summary(&failures)
                        ),
                        tried,
                    },
                    other => other,
                },
            );
        }
        Err(exhausted(what, logical.as_str(), &failures, missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_head_confirms_only_with_the_stored_length_and_digest() {
        let checks = [
            head_confirms(
                &headers(&[("content-length", "42"), ("docker-content-digest", DIGEST)]),
                true,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[("content-length", "41"), ("docker-content-digest", DIGEST)]),
                true,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[("content-length", "42")]),
                true,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[("docker-content-digest", DIGEST)]),
                true,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[
                    ("content-length", "42"),
                    ("docker-content-digest", "sha256:00"),
                ]),
                true,
                DIGEST,
                Some(42),
            ),
            // Blob storage a registry redirected to sends no digest header; the length decides.
            head_confirms(
                &headers(&[("content-length", "42")]),
                false,
                DIGEST,
                Some(42),
            ),
            head_confirms(
                &headers(&[("content-length", "7")]),
                false,
                DIGEST,
                Some(42),
            ),
        ];
        assert_eq!(
            checks.map(|check| check.is_ok()),
            [true, false, false, false, false, true, false]
        );
    }
}
