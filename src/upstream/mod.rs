//! The client for upstream registries: every request mirrorgate makes to a registry goes
//! through [`Upstream::send`].
//!
//! Principal types: [`Upstream`] (the client, built from [`Settings`]), [`UpstreamRequest`] (one
//! attempt), [`AttemptError`] (why it failed), [`Endpoint`], [`UpstreamConfig`] and
//! [`RegistrySettings`] (its configuration sections).
//!
//! One call is one attempt against one pull source. `send` picks the endpoint and TLS setting of
//! the registry, sends the request, and takes care of authentication on the way:
//!
//! 1. If an earlier request left a bearer token for this (registry, repository scope), or the
//!    registry is known to want Basic credentials, the request carries it from the start.
//! 2. On a 401 it reads the `WWW-Authenticate` challenge: for `Bearer` it fetches a token from
//!    the realm (with the registry's credentials from the pull secret, if any, else
//!    anonymously), caches it, and repeats the request once; for `Basic` it repeats the request
//!    once with the credentials. The realm is named by the upstream, so it passes the address
//!    policy of redirects first (`redirect::realm_hop`): never a loopback, link-local or
//!    metadata address unless it is this registry's or a configured endpoint, or allowed.
//! 3. The final status decides: 2xx is returned for the caller to stream; everything else is an
//!    [`AttemptError`] whose `Display` is short enough for the list of failed sources in a 502.
//!
//! Credentials are looked up by the registry actually contacted (a mirror's credentials are the
//! mirror's, not the source's), are only ever sent to that registry's endpoint and its token
//! realm — unless that realm is another configured registry's endpoint (see `credentials`) —
//! and are dropped when a blob redirect leaves the origin (scheme, host and port); the
//! redirect hops themselves are checked by the `redirect` module. They never appear in logs, `Debug`
//! output or error messages.
//!
//! Timeouts: `upstream.connect_timeout` bounds TCP connect plus TLS handshake; `upstream.timeout`
//! bounds one `send` until the final response headers arrive (token round trips included) and
//! is then the idle timeout of the body, so a large blob can take as long as it keeps flowing.
//!
//! Failures say what they are evidence of: [`AttemptError::Unreachable`] when the registry's own
//! endpoint cannot be connected to (the registry looks down), other errors when one request
//! failed (a reset, no headers in time, a redirect hop or token endpoint out of reach). A
//! request whose connection closed before the response is sent once more on a new connection
//! first: that is what a registry closing an idle keep-alive connection as it is reused does.

mod auth;
mod client;
mod credentials;
mod redirect;
#[cfg(test)]
mod tests;
pub mod via;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

mod config;

use auth::{Challenge, TokenCache, parse_challenges, parse_token_response, token_scopes};
use client::{Clients, TlsMode, attempt_error, short_duration};
pub use config::{Endpoint, EndpointError, NO_SETTINGS, RegistrySettings, Scheme, UpstreamConfig};
use credentials::{BasicAuth, Credentials};
use redirect::{AddressPolicy, Hop};

pub use client::USER_AGENT;
pub use via::ViaToken;

/// The largest token endpoint answer read; real ones are a few KiB.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// A 401 body at most this large is read to its end before the retry, so that the connection
/// can be reused for it instead of being closed.
const MAX_DRAINED_BODY: u64 = 64 << 10;
/// How long draining a 401 body may take; the retry is more important than the connection.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// At most this many redirects are followed for one blob request (as reqwest and Go's client).
const MAX_REDIRECTS: usize = 10;

/// Sends read requests to upstream registries with the right endpoint, TLS, credentials and
/// timeouts.
///
/// Built once from the configuration (a reload builds a new one); cheap to clone, and shared by
/// all requests, so connection pools and cached tokens are shared too.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    timeouts: UpstreamConfig,
    /// Clients for registries without a `registries` entry (system roots, https only).
    default_clients: Clients,
    /// Registries with a `registries` entry.
    registries: HashMap<String, Route>,
    credentials: Credentials,
    tokens: TokenCache,
    /// Registries that answered a `Basic` challenge: later requests send Basic up front.
    basic_registries: Mutex<HashSet<String>>,
    /// Insecure registries without an endpoint that were last reached over plain http.
    plain_http: Mutex<HashSet<String>>,
    /// The origins of the `registries` endpoints: a redirect there goes to a named registry.
    configured: Vec<url::Origin>,
    /// This deployment's name in the `Via` header of every request (`via_token`).
    via: ViaToken,
}

/// How to reach one configured registry.
struct Route {
    endpoint: Option<Endpoint>,
    insecure: bool,
    clients: Clients,
}

/// The endpoints and clients for one `send`.
struct Target<'a> {
    registry: &'a str,
    /// Tried in order; more than one only for an insecure registry without an endpoint.
    endpoints: Vec<Endpoint>,
    insecure: bool,
    clients: &'a Clients,
}

/// What the first request of a `send` carried, which decides what a 401 means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    Nothing,
    CachedToken,
    Basic,
}

/// One request to one registry.
#[derive(Clone)]
pub struct UpstreamRequest {
    /// `GET` or `HEAD`.
    pub method: Method,
    /// The registry `host[:port]` exactly as in the image reference (`quay.io`,
    /// `127.0.0.1:5001`, `docker.io`): it selects endpoint, TLS settings and credentials.
    pub registry: String,
    /// The repository path within the registry (`ns/app`); the token scope is
    /// `repository:<repository>:pull`, and credentials may be keyed by it.
    pub repository: String,
    /// The request path, e.g. `/v2/ns/app/manifests/v1` or `/v2/ns/app/blobs/sha256:…`.
    pub path: String,
    /// The query string without `?`, already encoded (`n=10&last=abc`).
    pub query: Option<String>,
    /// Headers to forward, such as `Accept` and `Range`. Hop-by-hop headers, `Authorization`,
    /// `Cookie`, `Host`, `User-Agent` and `Accept-Encoding` are dropped (see
    /// [`forwardable_headers`]).
    pub headers: HeaderMap,
    /// Follow redirects (at most 10); true only for blob downloads, which registries redirect
    /// to blob storage. When false a 3xx is an [`AttemptError::Status`].
    pub follow_redirects: bool,
}

impl fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header names only: whatever a caller put in, values are not for logs.
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field("registry", &self.registry)
            .field("repository", &self.repository)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &header_names)
            .field("follow_redirects", &self.follow_redirects)
            .finish()
    }
}

impl UpstreamRequest {
    /// A request with no query, no headers and no redirects followed.
    pub fn new(
        method: Method,
        registry: impl Into<String>,
        repository: impl Into<String>,
        path: impl Into<String>,
    ) -> UpstreamRequest {
        UpstreamRequest {
            method,
            registry: registry.into(),
            repository: repository.into(),
            path: path.into(),
            query: None,
            headers: HeaderMap::new(),
            follow_redirects: false,
        }
    }
}

/// Why one attempt against one registry failed.
///
/// The `Display` is what a user reads in a 502 body next to the source tried, so it is short,
/// and it never contains credentials, tokens or a URL's query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// 404: the registry does not have it.
    #[error("not found")]
    NotFound,
    /// 401 or 403 after the auth flow, or a challenge that the pull secret cannot answer.
    #[error("unauthorized ({status})")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// Any other status that is not 2xx: 5xx, 429, 400, a redirect that was not followed, …
    #[error("{}", status_text(*status))]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// No response in time. Connecting to the registry's own endpoint in time is
    /// [`AttemptError::Unreachable`]; `connecting` is then a redirect hop or token endpoint.
    #[error("{}timed out after {}", if *connecting { "connect " } else { "" }, short_duration(*after))]
    Timeout {
        /// True when connecting (TCP or TLS handshake) took too long, false when the response
        /// headers did.
        connecting: bool,
        /// The timeout that expired.
        after: Duration,
    },
    /// The registry's own endpoint could not be reached: connection refused, DNS failure, host
    /// unreachable, TLS handshake failure, or no connection within `upstream.connect_timeout`
    /// (`connection refused (127.0.0.1:5001)`). This, unlike a failure of one request, is
    /// evidence that the registry is down.
    #[error("{reason}")]
    Unreachable {
        /// What failed, naming the registry.
        reason: String,
        /// Whether the connection timed out (counted as a `timeout`).
        timed_out: bool,
    },
    /// A connection failed under one request: reset, or closed before the response; or a
    /// redirect hop (blob storage) or token endpoint could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The registry or its token endpoint broke the protocol: malformed challenge, token
    /// endpoint failure, bad redirect, …
    #[error("{0}")]
    Protocol(String),
}

impl AttemptError {
    /// A label for metrics: `not_found`, `unauthorized`, `rejected` (another 4xx answer),
    /// `timeout` or `error`.
    pub fn outcome(&self) -> &'static str {
        match self {
            AttemptError::NotFound => "not_found",
            AttemptError::Unauthorized { .. } => "unauthorized",
            AttemptError::Status { status: 400..=499 } => "rejected",
            AttemptError::Timeout { .. }
            | AttemptError::Unreachable {
                timed_out: true, ..
            } => "timeout",
            AttemptError::Status { .. }
            | AttemptError::Unreachable { .. }
            | AttemptError::Connect(_)
            | AttemptError::Protocol(_) => "error",
        }
    }

    /// An answer refusing the request (401, 403, 429, 400, any 4xx but 404): the registry is
    /// up, whatever it thinks of this request.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            AttemptError::Unauthorized { .. } | AttemptError::Status { status: 400..=499 }
        )
    }
}

/// `HTTP 503 Service Unavailable`, or `HTTP 599` for a code without a reason phrase.
fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

/// Why an [`Upstream`] could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A registry's `ca_file` is unreadable or holds no valid PEM certificate.
    #[error("registries.\"{registry}\".ca_file {}: {reason}", path.display())]
    CaFile {
        /// The registry whose settings name the file.
        registry: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The pull secret is unreadable or malformed (the message never quotes a secret).
    #[error(
        "pull secret {}: {}{reason}",
        path.display(),
        key.as_ref().map(|k| format!("auths.\"{k}\": ")).unwrap_or_default()
    )]
    PullSecret {
        /// The file.
        path: PathBuf,
        /// The `auths` key of the bad entry, when one entry is the problem.
        key: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built (e.g. no usable system root certificates).
    #[error(
        "cannot build the HTTP client{}: {reason}",
        registry.as_ref().map(|r| format!(" for registry {r}")).unwrap_or_default()
    )]
    Client {
        /// The registry whose settings need the client; `None` for the default client.
        registry: Option<String>,
        /// The underlying error.
        reason: String,
    },
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and counts only: credentials and tokens are never shown.
        let mut registries: Vec<&String> = self.inner.registries.keys().collect();
        registries.sort();
        f.debug_struct("Upstream")
            .field("timeouts", &self.inner.timeouts)
            .field("registries", &registries)
            .field("credentials", &self.inner.credentials)
            .field("tokens", &self.inner.tokens)
            .finish()
    }
}

/// What the upstream client is built from: the `upstream` section, the `registries` entries
/// and the pull secret (the configuration converts into it).
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// Timeouts and the redirect guard.
    pub upstream: &'a UpstreamConfig,
    /// How to reach each registry, by host.
    pub registries: &'a BTreeMap<String, RegistrySettings>,
    /// The dockerconfigjson / `auth.json` file of credentials.
    pub pull_secret: Option<&'a Path>,
    /// The name of this deployment in `Via` (`None`: one per process).
    pub via_token: Option<&'a str>,
}

impl Upstream {
    /// Builds from the configuration: per-registry `endpoint`, `insecure` and `ca_file`;
    /// `pull_secret`; `upstream.connect_timeout` and `upstream.timeout`.
    ///
    /// Reads the CA files and the pull secret now, so that a bad file fails at startup naming
    /// itself. Installs rustls' `ring` provider as the process default if none is installed
    /// yet (both ring and aws-lc may be compiled in, and reqwest needs the choice made).
    pub fn new<'a>(config: impl Into<Settings<'a>>) -> Result<Upstream, UpstreamError> {
        let config: Settings<'a> = config.into();
        // Err means a provider is already installed (by main, or an earlier call): fine.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let timeouts = config.upstream.clone();
        let redirects = Arc::new(AddressPolicy::new(
            config.upstream.redirect_allowed_networks.clone(),
        ));
        let default_clients = Clients::build(&TlsMode::System, &timeouts, None, &redirects)?;
        let mut by_mode: HashMap<TlsMode, Clients> =
            HashMap::from([(TlsMode::System, default_clients.clone())]);
        let mut registries = HashMap::new();
        for (host, settings) in config.registries {
            let mode = if settings.insecure {
                if let Some(path) = &settings.ca_file {
                    tracing::warn!(
                        registry = %host,
                        ca_file = %path.display(),
                        "ca_file is ignored: insecure: true turns certificate verification off"
                    );
                }
                TlsMode::Insecure
            } else if let Some(path) = &settings.ca_file {
                TlsMode::ExtraRoots(path.clone())
            } else {
                TlsMode::System
            };
            let clients = match by_mode.get(&mode) {
                Some(clients) => clients.clone(),
                None => {
                    let clients = Clients::build(&mode, &timeouts, Some(host), &redirects)?;
                    by_mode.insert(mode, clients.clone());
                    clients
                }
            };
            registries.insert(
                host.clone(),
                Route {
                    endpoint: settings.endpoint.clone(),
                    insecure: settings.insecure,
                    clients,
                },
            );
        }
        let credentials = match config.pull_secret {
            Some(path) => Credentials::load(path)?,
            None => Credentials::default(),
        };
        let configured = config
            .registries
            .iter()
            .filter_map(|(host, settings)| {
                let endpoint = settings.endpoint_for(host);
                Some(reqwest::Url::parse(&endpoint.to_string()).ok()?.origin())
            })
            .collect();
        Ok(Upstream {
            inner: Arc::new(Inner {
                timeouts,
                default_clients,
                registries,
                credentials,
                tokens: TokenCache::default(),
                basic_registries: Mutex::new(HashSet::new()),
                plain_http: Mutex::new(HashSet::new()),
                configured,
                via: ViaToken::new(config.via_token),
            }),
        })
    }

    /// The name this client gives itself in `Via`; a client request carrying it is a loop.
    pub fn via_token(&self) -> &ViaToken {
        &self.inner.via
    }

    /// Sends one request to the registry named `request.registry`, authenticating as needed,
    /// and returns the response when its final status is 2xx (200, 206, …). The request carries
    /// `Via`: the chain of the client request being served (see [`via`]) and this hop.
    ///
    /// The body has not been read: stream it with `bytes_stream()` or `chunk()`. Errors while
    /// reading it are `reqwest::Error`s (an idle gap longer than `upstream.timeout` is one,
    /// with `is_timeout()`). For `HEAD` the response has the headers and an empty body.
    /// Headers and body bytes are exactly the registry's (no decompression).
    pub async fn send(&self, request: UpstreamRequest) -> Result<reqwest::Response, AttemptError> {
        let timeout = self.inner.timeouts.timeout;
        let result = match tokio::time::timeout(timeout, self.send_authorized(&request)).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Timeout {
                connecting: false,
                after: timeout,
            }),
        };
        // The endpoint behind a registry name (`registries.*.endpoint`) is the operator's
        // business: clients read errors naming the registry, the log names the endpoint.
        let public = |reason: String| {
            let public = name_registry(&reason, &request.registry);
            if public != reason {
                tracing::info!(registry = %request.registry, error = %reason, "cannot connect to registry");
            }
            public
        };
        let result = result.map_err(|error| match error {
            AttemptError::Connect(reason) => AttemptError::Connect(public(reason)),
            AttemptError::Unreachable { reason, timed_out } => AttemptError::Unreachable {
                reason: public(reason),
                timed_out,
            },
            other => other,
        });
        match &result {
            Ok(response) => tracing::debug!(
                registry = %request.registry,
                path = %request.path,
                status = response.status().as_u16(),
                "upstream answered"
            ),
            Err(err) => tracing::debug!(
                registry = %request.registry,
                path = %request.path,
                error = %err,
                "upstream attempt failed"
            ),
        }
        result
    }

    /// The whole exchange of one `send`: first request, then at most one authenticated retry.
    async fn send_authorized(
        &self,
        request: &UpstreamRequest,
    ) -> Result<reqwest::Response, AttemptError> {
        let inner = &*self.inner;
        let target = inner.target(&request.registry);
        let mut headers = forwardable_headers(&request.headers);
        // The one place every upstream request gets its `Via` (see `via`).
        headers.insert(header::VIA, inner.via.outgoing());
        let scope = format!("repository:{}:pull", request.repository);
        let credentials = inner
            .credentials
            .lookup(&request.registry, &request.repository);

        let (sent, authorization) = match inner.tokens.get(&request.registry, &scope) {
            Some(token) => (Sent::CachedToken, Some(token)),
            None => match credentials {
                Some(basic) if inner.wants_basic(&request.registry) => {
                    (Sent::Basic, Some(basic.authorization().clone()))
                }
                _ => (Sent::Nothing, None),
            },
        };
        let response = self
            .exchange(&target, request, &headers, authorization.as_ref())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return check_status(response);
        }

        if sent == Sent::CachedToken {
            // Expired early or revoked: a fresh one is fetched below.
            inner.tokens.remove(&request.registry, &scope);
        }
        let challenges = challenges(response.headers())?;
        drain(response).await;
        let authorization = if let Some(bearer) = challenges.iter().find(|c| c.is("bearer")) {
            self.fetch_token(&target, bearer, &scope, credentials)
                .await?
        } else if challenges.iter().any(|c| c.is("basic")) {
            match credentials {
                // Credentials already sent up front and refused: repeating them cannot help.
                Some(basic) if sent != Sent::Basic => {
                    inner.remember_basic(&request.registry);
                    basic.authorization().clone()
                }
                _ => return Err(AttemptError::Unauthorized { status: 401 }),
            }
        } else if let Some(other) = challenges.first() {
            return Err(AttemptError::Protocol(format!(
                "unsupported authentication scheme {:?}",
                other.scheme()
            )));
        } else {
            return Err(AttemptError::Unauthorized { status: 401 });
        };
        let response = self
            .exchange(&target, request, &headers, Some(&authorization))
            .await?;
        check_status(response)
    }

    /// Sends the request once, trying the target's endpoints in order. Only a fast connection
    /// failure (refused, TLS handshake) moves on to the next endpoint: a timeout would double
    /// what a dead registry costs. A request whose connection was closed before the response
    /// (a pooled connection the registry closed as it was reused) is sent once more, on a new
    /// connection: every request sent here is a GET or HEAD, which may be repeated.
    async fn exchange(
        &self,
        target: &Target<'_>,
        request: &UpstreamRequest,
        headers: &HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, AttemptError> {
        let mut last_error = None;
        for endpoint in &target.endpoints {
            let url = request_url(endpoint, &request.path, request.query.as_deref())?;
            let send = |client: &reqwest::Client| {
                let mut builder = client
                    .request(request.method.clone(), url.clone())
                    .headers(headers.clone());
                if let Some(authorization) = authorization {
                    builder = builder.header(header::AUTHORIZATION, authorization.clone());
                }
                builder.send()
            };
            let mut sent = send(&target.clients.direct).await;
            if let Err(err) = &sent
                && matches!(request.method, Method::GET | Method::HEAD)
                && client::closed_before_response(err)
            {
                tracing::debug!(
                    registry = %target.registry,
                    endpoint = %endpoint,
                    error = %attempt_error(err, &self.inner.timeouts),
                    "connection closed before the response; sending once more on a new connection"
                );
                sent = send(&target.clients.fresh).await;
            }
            match sent {
                Ok(response) => {
                    if target.endpoints.len() > 1 {
                        self.inner
                            .remember_scheme(target.registry, endpoint.scheme());
                    }
                    if request.follow_redirects && response.status().is_redirection() {
                        return self
                            .follow_redirects(target, request, response, headers, authorization)
                            .await;
                    }
                    return Ok(response);
                }
                Err(err) => match client::endpoint_error(&err, &self.inner.timeouts) {
                    error @ AttemptError::Unreachable {
                        timed_out: false, ..
                    } => {
                        tracing::debug!(
                            registry = %target.registry,
                            endpoint = %endpoint,
                            %error,
                            "cannot connect to endpoint"
                        );
                        last_error = Some(error);
                    }
                    other => return Err(other),
                },
            }
        }
        Err(last_error
            .unwrap_or_else(|| AttemptError::Protocol("no endpoint to connect to".to_owned())))
    }

    /// Follows the redirects of a blob request hop by hop (at most [`MAX_REDIRECTS`]), each
    /// checked by [`redirect::next_hop`] before any connection: `Authorization` only goes back
    /// to the origin that redirected, and hops outside the configured registries go through the
    /// guarded client.
    async fn follow_redirects(
        &self,
        target: &Target<'_>,
        request: &UpstreamRequest,
        mut response: reqwest::Response,
        headers: &HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, AttemptError> {
        let origin = response.url().origin();
        for _ in 0..MAX_REDIRECTS {
            let next = redirect::next_hop(
                response.url(),
                &origin,
                response.headers().get(header::LOCATION),
                &self.inner.configured,
                &target.clients.redirects,
            )?;
            drain(response).await;
            let client = match next.hop {
                Hop::SameOrigin | Hop::Configured => &target.clients.direct,
                Hop::Guarded => &target.clients.guarded,
            };
            tracing::debug!(
                registry = %target.registry,
                host = next.url.host_str().unwrap_or_default(),
                hop = ?next.hop,
                "following a blob redirect"
            );
            let same_origin = next.url.origin() == origin;
            let mut builder = client
                .request(request.method.clone(), next.url)
                .headers(headers.clone());
            if same_origin && let Some(authorization) = authorization {
                builder = builder.header(header::AUTHORIZATION, authorization.clone());
            }
            response = builder
                .send()
                .await
                .map_err(|err| attempt_error(&err, &self.inner.timeouts))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
        }
        Err(AttemptError::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// Fetches a bearer token for `scope` from the challenge's realm, caches it, and returns
    /// the `Authorization` value.
    ///
    /// The realm gets the registry's credentials when there are some: that is how the token
    /// protocol works (the realm is the registry's own auth service, named by the registry),
    /// but never over plain http unless the registry itself is insecure, and never on another
    /// configured registry's endpoint ([`credentials::realm_receives_credentials`]), which is
    /// asked anonymously.
    async fn fetch_token(
        &self,
        target: &Target<'_>,
        challenge: &Challenge,
        scope: &str,
        credentials: Option<&BasicAuth>,
    ) -> Result<HeaderValue, AttemptError> {
        let protocol = |message: &str| AttemptError::Protocol(message.to_owned());
        let realm = challenge
            .param("realm")
            .filter(|realm| !realm.is_empty())
            .ok_or_else(|| protocol("bearer challenge without a realm"))?;
        let mut url = reqwest::Url::parse(realm)
            .map_err(|_| protocol("bearer challenge realm is not a URL"))?;
        match url.scheme() {
            "https" => {}
            "http" if target.insecure => {}
            "http" => {
                return Err(protocol(
                    "bearer challenge realm is plain http (allowed for insecure registries only)",
                ));
            }
            _ => return Err(protocol("bearer challenge realm is not an http(s) URL")),
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                query.append_pair("service", service);
            }
            for scope in token_scopes(scope, challenge) {
                query.append_pair("scope", &scope);
            }
        }
        let registry_origins: Vec<url::Origin> = target
            .endpoints
            .iter()
            .filter_map(|endpoint| reqwest::Url::parse(&endpoint.to_string()).ok())
            .map(|endpoint| endpoint.origin())
            .collect();
        let hop = redirect::realm_hop(
            &url,
            &registry_origins,
            &self.inner.configured,
            &target.clients.redirects,
        )?;
        let realm_host = url.host_str().unwrap_or_default().to_owned();
        let credentials = credentials.filter(|_| {
            let receives = credentials::realm_receives_credentials(
                &url,
                &registry_origins,
                &self.inner.configured,
            );
            if !receives {
                tracing::warn!(
                    registry = %target.registry,
                    realm = %realm_host,
                    "the token realm is another configured registry's endpoint: this registry's \
                     credentials are not sent there; asking for a token anonymously"
                );
            }
            receives
        });
        let client = match hop {
            Hop::SameOrigin | Hop::Configured => &target.clients.direct,
            Hop::Guarded => &target.clients.guarded,
        };
        let mut builder = client.get(url);
        if let Some(basic) = credentials {
            builder = builder.header(header::AUTHORIZATION, basic.authorization().clone());
        }
        let token_endpoint_error = |err: AttemptError| match err {
            AttemptError::Connect(reason) => {
                AttemptError::Connect(format!("token endpoint: {reason}"))
            }
            AttemptError::Protocol(reason) => {
                AttemptError::Protocol(format!("token endpoint: {reason}"))
            }
            other => other,
        };
        let response = builder.send().await.map_err(|err| {
            if client::is_refused(&err) {
                // The guarded resolver found only internal addresses behind the realm's name.
                return AttemptError::Protocol(redirect::realm_refused(&realm_host));
            }
            token_endpoint_error(attempt_error(&err, &self.inner.timeouts))
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(AttemptError::Unauthorized {
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(AttemptError::Protocol(format!(
                "token endpoint answered {}",
                status_text(status.as_u16())
            )));
        }
        let body = read_limited(response, MAX_TOKEN_RESPONSE, &self.inner.timeouts)
            .await
            .map_err(token_endpoint_error)?;
        let issued = parse_token_response(&body).map_err(AttemptError::Protocol)?;
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", issued.token))
            .map_err(|_| protocol("token endpoint answered a token that is not a header value"))?;
        authorization.set_sensitive(true);
        self.inner.tokens.insert(
            target.registry,
            scope,
            authorization.clone(),
            issued.lifetime,
        );
        tracing::debug!(
            registry = %target.registry,
            %scope,
            lifetime = %short_duration(issued.lifetime),
            "fetched a registry token"
        );
        Ok(authorization)
    }
}

impl Inner {
    /// Where and how to connect for `registry`.
    fn target<'a>(&'a self, registry: &'a str) -> Target<'a> {
        let Some(route) = self.registries.get(registry) else {
            return Target {
                registry,
                endpoints: vec![Endpoint::default_for(registry)],
                insecure: false,
                clients: &self.default_clients,
            };
        };
        let endpoints = match &route.endpoint {
            Some(endpoint) => vec![endpoint.clone()],
            // As containers/image does for insecure registries: https first, then plain http;
            // whichever worked last time goes first.
            None if route.insecure => {
                let https = Endpoint::default_for(registry);
                match plain_http(&https) {
                    Some(http) if self.prefers_http(registry) => vec![http, https],
                    Some(http) => vec![https, http],
                    None => vec![https],
                }
            }
            None => vec![Endpoint::default_for(registry)],
        };
        Target {
            registry,
            endpoints,
            insecure: route.insecure,
            clients: &route.clients,
        }
    }

    fn wants_basic(&self, registry: &str) -> bool {
        lock(&self.basic_registries).contains(registry)
    }

    fn remember_basic(&self, registry: &str) {
        lock(&self.basic_registries).insert(registry.to_owned());
    }

    fn prefers_http(&self, registry: &str) -> bool {
        lock(&self.plain_http).contains(registry)
    }

    fn remember_scheme(&self, registry: &str, scheme: Scheme) {
        let mut plain_http = lock(&self.plain_http);
        match scheme {
            Scheme::Http => plain_http.insert(registry.to_owned()),
            Scheme::Https => plain_http.remove(registry),
        };
    }
}

/// `reason` with its trailing `(host:port)` (the address that failed) replaced by `registry`.
fn name_registry(reason: &str, registry: &str) -> String {
    match reason.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
        Some((what, _address)) => format!("{what} ({registry})"),
        None => reason.to_owned(),
    }
}

/// Locks a set whose every operation is a single call, so a poisoned lock is still consistent.
fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The plain-http twin of an https endpoint (same host and port, or port 80 if none).
fn plain_http(https: &Endpoint) -> Option<Endpoint> {
    let port = https.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("http://{}{port}", https.host()).parse().ok()
}

/// `endpoint` + `path` + `?query`.
fn request_url(
    endpoint: &Endpoint,
    path: &str,
    query: Option<&str>,
) -> Result<reqwest::Url, AttemptError> {
    if !path.starts_with('/') {
        return Err(AttemptError::Protocol(
            "request path does not start with '/'".to_owned(),
        ));
    }
    let mut text = format!("{endpoint}{path}");
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        text.push('?');
        text.push_str(query);
    }
    reqwest::Url::parse(&text)
        .map_err(|err| AttemptError::Protocol(format!("invalid request URL: {err}")))
}

/// Headers never forwarded upstream, besides those a `Connection` header names.
///
/// Hop-by-hop headers (RFC 9110 §7.6.1) belong to the client's connection to mirrorgate.
/// `Authorization` and `Cookie` are the client's credentials for mirrorgate, not for the
/// registry. `Host`, `Content-Length` and `User-Agent` are set for the upstream request.
/// `Accept-Encoding` is dropped because content is verified and cached by digest, which is
/// over the bytes as stored, not a compressed transfer form.
const NOT_FORWARDED: [&str; 16] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "cookie",
    "user-agent",
    "accept-encoding",
    "expect",
];

/// The headers of `headers` that may go upstream: all but hop-by-hop headers (and those a
/// `Connection` header names), `Authorization`, `Cookie`, `Host`, `Content-Length`,
/// `User-Agent`, `Accept-Encoding` and `Expect`.
pub fn forwardable_headers(headers: &HeaderMap) -> HeaderMap {
    let connection_named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    let mut forwarded = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if NOT_FORWARDED.contains(&name.as_str()) || connection_named.contains(name) {
            continue;
        }
        forwarded.append(name.clone(), value.clone());
    }
    forwarded
}

/// The final status decides: 2xx is success, the rest an [`AttemptError`].
fn check_status(response: reqwest::Response) -> Result<reqwest::Response, AttemptError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(match status {
        StatusCode::NOT_FOUND => AttemptError::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AttemptError::Unauthorized {
            status: status.as_u16(),
        },
        _ => AttemptError::Status {
            status: status.as_u16(),
        },
    })
}

/// All challenges of all `WWW-Authenticate` headers. A malformed header is an error only when
/// no other header gave a challenge.
fn challenges(headers: &HeaderMap) -> Result<Vec<Challenge>, AttemptError> {
    let mut challenges = Vec::new();
    let mut error = None;
    for value in headers.get_all(header::WWW_AUTHENTICATE) {
        match parse_challenges(value.as_bytes()) {
            Ok(parsed) => challenges.extend(parsed),
            Err(err) => error = Some(err),
        }
    }
    match error {
        Some(err) if challenges.is_empty() => Err(AttemptError::Protocol(format!(
            "malformed WWW-Authenticate header: {err}"
        ))),
        _ => Ok(challenges),
    }
}

/// Reads a small body to its end (bounded in size and time), so that its connection can be
/// reused; otherwise drops it, which closes the connection.
async fn drain(mut response: reqwest::Response) {
    if response
        .content_length()
        .is_none_or(|length| length > MAX_DRAINED_BODY)
    {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Ok(Some(_)) = response.chunk().await {}
    })
    .await;
}

/// Reads a whole body of at most `limit` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    timeouts: &UpstreamConfig,
) -> Result<Vec<u8>, AttemptError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| attempt_error(&err, timeouts))?
    {
        if body.len() + chunk.len() > limit {
            return Err(AttemptError::Protocol(format!(
                "answer larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
