//! One upstream attempt and what its failure means: [`Proxy::attempt`] (counted, backed off,
//! its registry's health recorded), why a pull source did not serve ([`AttemptFailure`]), and the
//! answer when none did ([`exhausted`]).

use std::time::{Duration, Instant};

use crate::reference::Reference;
use crate::rules::{ResolveError, Role};
use crate::upstream::AttemptError;

use super::error::{self, Error, Missing, Tried};
use super::open::Proxy;
use super::route::Route;

/// One pull source tried without success, and why.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) reference: Reference,
    pub(super) role: Role,
    pub(super) reason: AttemptFailure,
}

/// Why one pull source did not serve.
#[derive(Debug, thiserror::Error)]
pub(super) enum AttemptFailure {
    /// The upstream request failed.
    #[error(transparent)]
    Upstream(#[from] AttemptError),
    /// The bytes do not match the digest asked for.
    #[error("served wrong content (digest {actual})")]
    DigestMismatch {
        /// The digest of what was served.
        actual: String,
    },
    /// The response is larger than the bound for its kind.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The response's length is not the size the manifest declares for the content.
    #[error("{0}")]
    SizeMismatch(String),
    /// The response body could not be read or parsed.
    #[error("{0}")]
    Body(String),
    /// A HEAD answered 200 without proving the content is there.
    #[error("{0}")]
    Unconfirmed(String),
}

impl AttemptFailure {
    pub(super) fn is_not_found(&self) -> bool {
        matches!(self, AttemptFailure::Upstream(AttemptError::NotFound))
    }

    /// A failure to answer (unreachable, timed out, 5xx, broken protocol), as opposed to an
    /// answer: not found, refused (401, 403, 429, 400…), or content that is not what was asked
    /// for. Only failures are an outage, during which cached content may be served unconfirmed.
    pub(super) fn is_failure(&self) -> bool {
        match self {
            // A refusal (401, 403, 429, 400…) is an answer: the registry is up.
            AttemptFailure::Upstream(error) => {
                !error.is_refusal()
                    && matches!(
                        error,
                        AttemptError::Status { .. }
                            | AttemptError::Timeout { .. }
                            | AttemptError::Unreachable { .. }
                            | AttemptError::Connect(_)
                            | AttemptError::Protocol(_)
                    )
            }
            AttemptFailure::Body(_) => true,
            AttemptFailure::DigestMismatch { .. }
            | AttemptFailure::TooLarge(_)
            | AttemptFailure::SizeMismatch(_)
            | AttemptFailure::Unconfirmed(_) => false,
        }
    }
}

impl Proxy {
    /// Sends one attempt to an upstream, counting it by registry, role, route and outcome. A
    /// success is counted `ok` when the answer arrives; what its body turns out to be is counted
    /// by the caller (`count_attempt`).
    pub(super) async fn attempt(
        &self,
        request: crate::upstream::UpstreamRequest,
        role: Role,
        route: Route,
    ) -> Result<reqwest::Response, AttemptError> {
        let route = route.as_str();
        let registry = request.registry.clone();
        let started = Instant::now();
        if let Some((remaining, cause)) = self.sources.backoff.skipping(&registry, started) {
            self.metrics
                .proxy
                .upstream(&registry, role.as_str(), route, "skipped", Duration::ZERO);
            return Err(AttemptError::Connect(format!(
                "not contacted: {cause}, retried in {}s",
                remaining.as_secs() + 1
            )));
        }
        let upstream = self.in_force.upstream.load_full();
        let result = upstream.send(request).await;
        self.sources
            .backoff
            .record(&registry, started, Instant::now(), &result);
        self.sources
            .health
            .record(&registry, result.as_ref().map(|_| ()));
        if let Err(error) = &result
            && !matches!(error, AttemptError::NotFound)
            && let Some(held_back) =
                crate::log_limit::ATTEMPT_FAILED.admit(&registry, Instant::now())
        {
            tracing::warn!(
                registry,
                role = role.as_str(),
                %error,
                similar_held_back = held_back,
                "upstream registry failed (one line per registry every {}s)",
                crate::log_limit::INTERVAL.as_secs()
            );
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.outcome(),
        };
        self.metrics
            .proxy
            .upstream(&registry, role.as_str(), route, outcome, started.elapsed());
        result
    }

    /// Counts a source attempt that only happens because mirror attempts failed.
    pub(super) fn note_attempt(&self, role: Role, failures: &[Failure], route: Route) {
        if role == Role::Source && failures.iter().any(|f| f.role == Role::Mirror) {
            self.metrics.proxy.source_after_mirrors(route.as_str());
        }
    }

    /// Counts an attempt whose outcome is known only after its body was read.
    pub(super) fn count_attempt(
        &self,
        registry: &str,
        role: Role,
        route: Route,
        outcome: &'static str,
    ) {
        self.metrics.proxy.upstream(
            registry,
            role.as_str(),
            route.as_str(),
            outcome,
            Duration::ZERO,
        );
    }

    /// The refusal of a request whose reference the rules give no pull source; blocked ones are
    /// counted.
    pub(super) fn refuse(&self, route: Route, error: ResolveError) -> Error {
        if matches!(error, ResolveError::Blocked { .. }) {
            self.metrics.proxy.blocked(route.as_str());
        }
        Error::Resolve(error)
    }
}

/// The answer when no pull source served: not found when every one said so, a failure
/// otherwise; the message lists the sources tried and why each failed (the first
/// [`error::MAX_LISTED_FAILURES`]; the detail has every one). Logged here, once.
pub(super) fn exhausted(
    what: &str,
    logical: &str,
    failures: &[Failure],
    missing: Missing,
) -> Error {
    let tried: Vec<Tried> = failures
        .iter()
        .map(|f| Tried {
            reference: f.reference.to_string(),
            role: f.role,
            error: f.reason.to_string(),
        })
        .collect();
    let listed = error::listing(&tried);
    let all_not_found = !failures.is_empty() && failures.iter().all(|f| f.reason.is_not_found());
    let message = if all_not_found {
        format!("{what} {logical} not found; tried {listed}")
    } else {
        format!("no source served {what} {logical}; tried {listed}")
    };
    // Not found is an answer; every source failing is a fault to look at: WARN, one line per
    // registry per interval.
    if all_not_found {
        tracing::info!(reference = logical, not_found = true, failed = %listed, "{what} not served");
    } else {
        let registry = logical.split('/').next().unwrap_or(logical);
        if let Some(held_back) = crate::log_limit::NOT_SERVED.admit(registry, Instant::now()) {
            tracing::warn!(
                reference = logical,
                failed = %listed,
                similar_held_back = held_back,
                "{what} not served: every source failed (one line per registry every {}s)",
                crate::log_limit::INTERVAL.as_secs()
            );
        }
    }
    Error::Exhausted {
        missing,
        all_not_found,
        message,
        tried,
    }
}

pub(super) fn summary(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| format!("{} {}: {}", f.role, f.reference, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_an_answer_not_an_outage() {
        let failures = [
            AttemptError::Status { status: 429 },
            AttemptError::Status { status: 400 },
            AttemptError::Unauthorized { status: 403 },
            AttemptError::Status { status: 503 },
            AttemptError::Connect("connection reset (mirror.test)".to_owned()),
            AttemptError::Unreachable {
                reason: "connection refused (mirror.test)".to_owned(),
                timed_out: false,
            },
        ]
        .map(|error| AttemptFailure::Upstream(error).is_failure());
        assert_eq!(failures, [false, false, false, true, true, true]);
    }
}
