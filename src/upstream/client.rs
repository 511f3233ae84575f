//! The `reqwest` clients behind [`Upstream`](super::Upstream), and turning their errors into
//! short, secret-free [`AttemptError`]s.
//!
//! A client owns its connection pool and TLS configuration, so one is built per distinct TLS
//! setting (system roots; system roots plus a registry's `ca_file`; no verification for
//! `insecure`), never per request. Each setting gets three clients, none of which follows
//! redirects by itself (blob redirects are followed hop by hop, see [`super::redirect`]): one
//! for the registries themselves, the same without a connection pool for the one retry of a
//! request whose pooled connection was closed under it, and a guarded one, whose resolver
//! refuses internal addresses, for redirect hops to anywhere else.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use reqwest::redirect::Policy;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::UpstreamConfig;
use super::redirect::{AddressPolicy, GuardedResolver};
use super::{AttemptError, UpstreamError};

/// The `User-Agent` of every upstream request, so registry operators can tell who is pulling.
pub const USER_AGENT: &str = concat!("mirrorgate/", env!("CARGO_PKG_VERSION"));

/// How to verify a registry's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum TlsMode {
    /// The system roots.
    System,
    /// The system roots plus the PEM roots of this file.
    ExtraRoots(std::path::PathBuf),
    /// No verification; plain http is allowed too.
    Insecure,
}

/// The two clients of one TLS setting; both return 3xx responses as they are.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    /// For the registries (and redirect hops to them).
    pub(crate) direct: reqwest::Client,
    /// `direct` without idle connections: every request on it opens a new one.
    pub(crate) fresh: reqwest::Client,
    /// For redirect hops elsewhere: never connects to a loopback, link-local or metadata
    /// address unless the policy allows it.
    pub(crate) guarded: reqwest::Client,
    /// The policy of `guarded`, for hops to IP literals (which no resolver sees).
    pub(crate) redirects: Arc<AddressPolicy>,
}

impl Clients {
    /// Builds both clients for `mode`; `registry` names the registry that needs it in errors.
    pub(crate) fn build(
        mode: &TlsMode,
        timeouts: &UpstreamConfig,
        registry: Option<&str>,
        redirects: &Arc<AddressPolicy>,
    ) -> Result<Clients, UpstreamError> {
        let roots = match mode {
            TlsMode::ExtraRoots(path) => load_roots(path, registry.unwrap_or("?"))?,
            TlsMode::System | TlsMode::Insecure => Vec::new(),
        };
        let build = |guarded: bool, pooled: bool| {
            let mut builder = reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(timeouts.connect_timeout)
                // Before the headers this bounds the exchange; on the body it is an idle
                // timeout, so a large blob may take as long as it needs while it keeps flowing.
                .read_timeout(timeouts.timeout)
                .redirect(Policy::none())
                // A Referer would tell blob storage which registry path asked; nobody needs it.
                .referer(false)
                // Proxies are not configured by the environment (the `system-proxy` feature is
                // off); say so explicitly so that enabling the feature cannot change behaviour.
                .no_proxy()
                // A registry that is not insecure is only spoken to over TLS, redirects included.
                .https_only(*mode != TlsMode::Insecure);
            match mode {
                TlsMode::Insecure => builder = builder.tls_danger_accept_invalid_certs(true),
                TlsMode::ExtraRoots(_) => builder = builder.tls_certs_merge(roots.clone()),
                TlsMode::System => {}
            }
            if guarded {
                builder = builder.dns_resolver(Arc::new(GuardedResolver::new(redirects.clone())));
            }
            if !pooled {
                builder = builder.pool_max_idle_per_host(0);
            }
            builder.build().map_err(|err| UpstreamError::Client {
                registry: registry.map(str::to_owned),
                reason: error_chain(&err),
            })
        };
        Ok(Clients {
            direct: build(false, true)?,
            fresh: build(false, false)?,
            guarded: build(true, true)?,
            redirects: redirects.clone(),
        })
    }
}

/// Reads a `ca_file`: one or more PEM certificates, each checked to be usable as a trust anchor
/// so that a bad file fails at startup, naming itself, rather than at the first pull.
fn load_roots(path: &Path, registry: &str) -> Result<Vec<reqwest::Certificate>, UpstreamError> {
    let error = |reason: String| UpstreamError::CaFile {
        registry: registry.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|err| error(format!("cannot read the file: {err}")))?;
    let mut roots = Vec::new();
    let mut store = rustls::RootCertStore::empty();
    for (index, der) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let der = der.map_err(|err| error(format!("invalid PEM: {err}")))?;
        store
            .add(der.clone())
            .map_err(|err| error(format!("certificate {} is invalid: {err}", index + 1)))?;
        roots.push(
            reqwest::Certificate::from_der(&der)
                .map_err(|err| error(format!("certificate {}: {err}", index + 1)))?,
        );
    }
    if roots.is_empty() {
        return Err(error(
            "no PEM certificate (BEGIN CERTIFICATE) found".to_owned(),
        ));
    }
    Ok(roots)
}

/// Turns a failed exchange into an [`AttemptError`].
///
/// `timeouts` gives the numbers for the message; a timeout while connecting (TCP or TLS) is told
/// apart from one while waiting for the response.
pub(crate) fn attempt_error(err: &reqwest::Error, timeouts: &UpstreamConfig) -> AttemptError {
    if err.is_timeout() {
        let connecting = err.is_connect();
        return AttemptError::Timeout {
            connecting,
            after: if connecting {
                timeouts.connect_timeout
            } else {
                timeouts.timeout
            },
        };
    }
    if let Some(refused) = chain(err).iter().find_map(|e| {
        e.downcast_ref::<std::io::Error>()
            .filter(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    }) {
        // The guarded resolver's refusal: a policy decision, not a connection failure.
        return AttemptError::Protocol(refused.to_string());
    }
    if err.is_builder() {
        return AttemptError::Protocol(format!("invalid request: {}", innermost(err)));
    }
    AttemptError::Connect(with_host(err, &connect_reason(err)))
}

/// Turns a failed exchange with a registry's own endpoint into an [`AttemptError`]: a failure to
/// connect (refused, DNS, unreachable, TLS handshake, connect timeout) is
/// [`AttemptError::Unreachable`], the evidence that the registry is down.
pub(crate) fn endpoint_error(err: &reqwest::Error, timeouts: &UpstreamConfig) -> AttemptError {
    let error = attempt_error(err, timeouts);
    match error {
        AttemptError::Connect(_) | AttemptError::Timeout { .. } if err.is_connect() => {
            AttemptError::Unreachable {
                reason: error.to_string(),
                timed_out: err.is_timeout(),
            }
        }
        other => other,
    }
}

/// Whether the connection of a sent request was closed (or reset) before the response headers
/// arrived: what a registry closing an idle pooled connection just as it is reused looks like.
pub(crate) fn closed_before_response(err: &reqwest::Error) -> bool {
    !err.is_connect()
        && !err.is_timeout()
        && chain(err).iter().any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_incomplete_message)
                || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::BrokenPipe
                    )
                })
        })
}

/// Whether the exchange failed because the guarded resolver refused every address of the host.
pub(crate) fn is_refused(err: &reqwest::Error) -> bool {
    chain(err).iter().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    })
}

/// Appends `(host:port)` of the URL that failed — never its path or query, which for a
/// redirect to blob storage hold a pre-signed signature.
fn with_host(err: &reqwest::Error, reason: &str) -> String {
    match err
        .url()
        .and_then(|url| Some((url.host_str()?, url.port_or_known_default()?)))
    {
        Some((host, port)) => format!("{reason} ({host}:{port})"),
        None => reason.to_owned(),
    }
}

/// A short reason for a connection-level failure, from the most telling error in the chain.
fn connect_reason(err: &reqwest::Error) -> String {
    for current in chain(err) {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return format!("TLS handshake failed: {tls}");
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            let reason = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused",
                std::io::ErrorKind::ConnectionReset => "connection reset",
                std::io::ErrorKind::ConnectionAborted => "connection aborted",
                std::io::ErrorKind::UnexpectedEof => "connection closed",
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                    "host unreachable"
                }
                _ => continue,
            };
            return reason.to_owned();
        }
        if let Some(hyper) = current.downcast_ref::<hyper::Error>()
            && hyper.is_incomplete_message()
        {
            return "connection closed before the response".to_owned();
        }
    }
    if err.is_dns() {
        return format!("DNS lookup failed: {}", innermost(err));
    }
    innermost(err)
}

/// The error and its causes, outermost first.
///
/// Unlike `source()`, this descends into `io::Error`s that wrap another error (how hyper-util
/// and tokio-rustls report TLS failures): `io::Error::source` skips the wrapped error itself.
fn chain(err: &reqwest::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut errors: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    // Bounded, in case some error type's source() ever cycles.
    while let Some(error) = current
        && errors.len() < 32
    {
        errors.push(error);
        current = match error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner),
            None => error.source(),
        };
    }
    errors
}

/// The display of the innermost error: the outer layers only add "error sending request for
/// url (…)", and the URL may carry a pre-signed query.
fn innermost(err: &reqwest::Error) -> String {
    let errors = chain(err);
    match errors.last() {
        Some(last) if errors.len() > 1 => last.to_string(),
        _ => {
            // reqwest's own message; it appends " for url (<url>)", which is cut.
            let mut text = err.to_string();
            if let Some(at) = text.find(" for url (") {
                text.truncate(at);
            }
            text
        }
    }
}

/// The whole chain of a builder error, for startup messages (no URL or secret is involved).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

/// A short form of a duration for messages (`5s`, `300ms`).
pub(crate) fn short_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
