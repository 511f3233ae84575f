//! The proxy's own configuration file (the manual's "Configuration reference", docs/src/configuration.md, and `config/mirrorgate.yaml`).
//!
//! The file is YAML (JSON is valid YAML, so one parser reads both). Every key is optional: a
//! missing key, or one set to `null`, takes the documented default, so an empty file is a
//! complete configuration. Unknown keys are an error at every level, because a misspelt key
//! that is silently ignored leaves the proxy running with a default the operator believes they
//! changed.
//!
//! Loading happens in two stages, and both report the file they read:
//! 1. Parsing turns text into typed values (addresses, humantime durations, binary byte sizes,
//!    endpoints). Errors here come from the YAML parser and carry a line and column.
//! 2. [`Config::validate`] checks what a type alone cannot express (a plain-http endpoint needs
//!    `insecure: true`, bounds must be positive, two listeners must not collide, ...). Errors
//!    here name the key path, e.g. `registries."mirror.corp.com".endpoint`.
//!
//! Paths are kept exactly as written; relative ones are resolved against the working directory
//! by whoever opens them, which is what the default `config/rules` relies on.
//!
//! Principal types: [`Config`] (the whole file, a composition of the sections each module owns:
//! [`ClientsConfig`] from `access`, [`CacheConfig`] from `cache`, [`UpstreamConfig`] and
//! [`RegistrySettings`] from `upstream`, [`LimitsConfig`] from `http`, [`TlsConfig`] from `tls`,
//! [`WarmConfig`] from `warm`, and with feature `kubernetes` the `kubernetes` section of
//! `crate::kubernetes`)
//! and [`ConfigError`]. Each section parses and validates itself; this module keeps the file format,
//! the top-level keys, the checks that span sections, and the names of the file and key in
//! errors.
//!
//! The building blocks every section is made of live below all the modules that own one, in
//! [`crate::section`]: reading a section key by key over its defaults (a missing or `null` key
//! means the default) and the values (byte sizes, durations, [`Invalid`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_saphyr::MessageFormatter;

pub use crate::access::{ClientMode, ClientsConfig};
pub use crate::cache::CacheConfig;
pub use crate::http::LimitsConfig;
use crate::reference::Host;
pub use crate::section::values::{ByteSize, ByteSizeError, Invalid};
use crate::section::{Written, section};
pub use crate::tls::TlsConfig;
pub use crate::upstream::{Endpoint, EndpointError, RegistrySettings, Scheme, UpstreamConfig};
pub use crate::warm::WarmConfig;

/// Where the CLI looks for the configuration file when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/mirrorgate.yaml";

/// The whole configuration, parsed and (when it came from [`Config::load`] or
/// [`Config::from_yaml_str`]) validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address of the OCI API; also serves `/metrics`, `/healthz` and `/readyz` unless
    /// `metrics_listen` is set.
    pub listen: SocketAddr,
    /// A second address for `/metrics`, so that metrics can stay off the address clients use.
    pub metrics_listen: Option<SocketAddr>,
    /// Files or directories of mirror objects (YAML or JSON), read in sorted order.
    pub rules: Vec<PathBuf>,
    /// Registry host for references that do not name one (Docker Hub normalisation applies).
    pub default_registry: String,
    /// Connection settings per registry, keyed by the host as written in references and rules.
    pub registries: BTreeMap<String, RegistrySettings>,
    /// A dockerconfigjson / `auth.json` file holding credentials per registry.
    pub pull_secret: Option<PathBuf>,
    /// Local caching of manifests, blobs and tag answers.
    pub cache: CacheConfig,
    /// Timeouts for requests to upstream registries.
    pub upstream: UpstreamConfig,
    /// Reload the rule files and this file when they change (SIGHUP always reloads).
    pub watch: bool,
    /// Refuse a rule set with warnings: at start (serve does not start) and on reload (the last
    /// good set stays in force), as `mirrorgate check --strict` does. A misspelt field is only a
    /// warning, yet it can lift NeverContactSource or drop a cluster's mirrors.
    pub rules_strict: bool,
    /// The log filter (`info`, `warn`, `mirrorgate=debug`, …) unless `RUST_LOG` is set.
    pub log_level: String,
    /// Contact any registry a client names, not only those of the rules, `registries` and
    /// `default_registry`. Unsafe: it makes mirrorgate an open proxy for its credentials and
    /// network position.
    pub allow_any_registry: bool,
    /// Serve HTTPS with this certificate instead of plain HTTP (`None`, the default: plain HTTP,
    /// meant for a loopback listener or a TLS-terminating front).
    pub tls: Option<TlsConfig>,
    /// Who may pull through the proxy: anonymous (the default), htpasswd users or bearer tokens,
    /// each limited to repository scopes; see [`crate::access`].
    pub clients: ClientsConfig,
    /// Bounds on what clients may hold: connections, header size and time, upstream fetches.
    pub limits: LimitsConfig,
    /// The `host[:port]` names under which this mirrorgate is reached (e.g. its Service names): a
    /// rule mirror on one of them is mirrorgate itself and is skipped when routing. The `listen`
    /// address counts too ([`Config::self_names`]).
    pub self_names: Vec<String>,
    /// The name of this deployment in the `Via` header of every upstream request; a client
    /// request that arrives carrying it is a loop (508). `None`: one derived per process
    /// (host name and process id); set the same value on every replica to share it.
    pub via_token: Option<String>,
    /// Mirror rules also from a live cluster, merged with the rule files (`None`: files only).
    #[cfg(feature = "kubernetes")]
    pub kubernetes: Option<crate::kubernetes::Config>,
    /// Release warm-up: releases warmed at start, HostedClusters, architectures, concurrency.
    pub warm: WarmConfig,
}

section!(Config {
    listen as ListenAddr,
    metrics_listen as ListenAddr,
    rules,
    default_registry,
    registries,
    pull_secret,
    cache,
    upstream,
    watch,
    rules_strict,
    log_level,
    allow_any_registry,
    tls,
    clients,
    limits,
    self_names,
    via_token,
    #[cfg(feature = "kubernetes")]
    kubernetes,
    warm,
} accepting [
    // Refused after parsing, with the reason (see `Config::from_yaml_str`).
    #[cfg(not(feature = "kubernetes"))]
    kubernetes,
]);

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            metrics_listen: None,
            rules: vec![PathBuf::from("config/rules")],
            default_registry: "docker.io".to_owned(),
            registries: BTreeMap::new(),
            pull_secret: None,
            cache: CacheConfig::default(),
            upstream: UpstreamConfig::default(),
            watch: true,
            rules_strict: false,
            log_level: "info".to_owned(),
            allow_any_registry: false,
            tls: None,
            clients: ClientsConfig::default(),
            limits: LimitsConfig::default(),
            self_names: Vec::new(),
            via_token: None,
            #[cfg(feature = "kubernetes")]
            kubernetes: None,
            warm: WarmConfig::default(),
        }
    }
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    ///
    /// Errors name `path` as given, so that they point where the operator looks.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            cause: source,
        })?;
        Config::from_yaml_str(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `origin` names its source in error messages
    /// (normally the file path).
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let written: Written<Config> =
            serde_saphyr::from_str(text).map_err(|err| parse_error(&err, origin))?;
        #[cfg(not(feature = "kubernetes"))]
        if written.gave("kubernetes") {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                key: "kubernetes".to_owned(),
                message: "this mirrorgate was built without the kubernetes feature: remove the \
                          section, or build with the default features"
                    .to_owned(),
            });
        }
        let clients_stated = written.gave("clients");
        let config = written.section;
        config.validate(origin)?;
        // Anonymous access is the default only where nobody else can connect: on any other
        // address it would lend the pull secret and the network position to whoever reaches it,
        // so the file has to say so.
        if !clients_stated && !config.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                key: "clients".to_owned(),
                message: format!(
                    "listen {} is not a loopback address: say who may pull (clients.mode htpasswd \
                     or token, or anonymous to let everyone who reaches it pull with mirrorgate's \
                     credentials and network position)",
                    config.listen
                ),
            });
        }
        Ok(config)
    }

    /// Checks the rules that the types alone do not enforce; `origin` names the source in errors.
    ///
    /// Public so that a configuration built in code (tests, embedding) gets the same checks as
    /// one read from a file. Stops at the first problem, in the order the keys are documented.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            message,
        };
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid(
                "log_level",
                format!("invalid log filter \"{}\": {error}", self.log_level),
            ));
        }

        if let Some(metrics) = self.metrics_listen
            && let Some(why) = listeners_conflict(self.listen, metrics)
        {
            return Err(invalid("metrics_listen", why));
        }
        if self.rules.is_empty() {
            return Err(invalid(
                "rules",
                "must name at least one file or directory".to_owned(),
            ));
        }
        for (i, path) in self.rules.iter().enumerate() {
            if path.as_os_str().is_empty() {
                return Err(invalid(&format!("rules[{i}]"), "empty path".to_owned()));
            }
        }
        Host::parse_registry(&self.default_registry).map_err(|why| {
            let value = &self.default_registry;
            invalid(
                "default_registry",
                format!("{value:?} is not a registry host (host[:port]): {why}"),
            )
        })?;
        let section = |name: &str, result: Result<(), Invalid>| {
            result.map_err(|Invalid { key, message }| invalid(&format!("{name}.{key}"), message))
        };
        for (host, settings) in &self.registries {
            section("registries", settings.validate(host))?;
        }
        Invalid::empty_path("pull_secret", self.pull_secret.as_ref())
            .map_err(|Invalid { key, message }| invalid(&key, message))?;
        section("cache", self.cache.validate())?;
        section("upstream", self.upstream.validate())?;
        if let Some(tls) = &self.tls {
            section("tls", tls.validate())?;
        }
        section("clients", self.clients.validate())?;
        section("limits", self.limits.validate())?;
        for (i, name) in self.self_names.iter().enumerate() {
            Host::parse_registry(name).map_err(|why| {
                invalid(
                    &format!("self_names[{i}]"),
                    format!("{name:?} is not a host or host:port: {why}"),
                )
            })?;
        }
        if let Some(token) = &self.via_token {
            check_via_token(token).map_err(|why| invalid("via_token", why))?;
        }
        #[cfg(feature = "kubernetes")]
        if let Some(kubernetes) = &self.kubernetes {
            kubernetes
                .validate()
                .map_err(|e| invalid(&format!("kubernetes.{}", e.key), e.message))?;
        }
        section("warm", self.warm.validate())?;
        Ok(())
    }

    /// mirrorgate's own names: `self_names`, and the `listen` address as a client would write
    /// it. An all-interfaces address (`0.0.0.0`, `[::]`) adds the loopback names on its port,
    /// which reach it too; port 0 (chosen at start) adds nothing.
    pub fn self_names(&self) -> Vec<String> {
        let mut names = self.self_names.clone();
        let port = self.listen.port();
        if port != 0 {
            let ip = self.listen.ip();
            if ip.is_unspecified() {
                names.push(format!("localhost:{port}"));
                names.push(format!("127.0.0.1:{port}"));
                if ip.is_ipv6() {
                    names.push(format!("[::1]:{port}"));
                }
            } else {
                names.push(self.listen.to_string());
            }
        }
        names
    }

    /// The settings for registry `host`, or the defaults when it has no entry.
    pub fn registry(&self, host: &str) -> &RegistrySettings {
        self.registries
            .get(host)
            .unwrap_or(&crate::upstream::NO_SETTINGS)
    }

    /// Where to connect for registry `host`: its configured endpoint, else
    /// [`Endpoint::default_for`] the host.
    pub fn endpoint_for(&self, host: &str) -> Endpoint {
        self.registry(host).endpoint_for(host)
    }
}

/// Explains why two listen addresses cannot both be bound, or `None` when they can.
fn listeners_conflict(listen: SocketAddr, metrics: SocketAddr) -> Option<String> {
    // Port 0 asks the OS for a fresh port on each bind, so two such addresses never collide
    // (tests rely on this to run listeners side by side).
    if listen.port() == 0 || listen.port() != metrics.port() {
        return None;
    }
    if listen.ip() == metrics.ip() {
        return Some(format!(
            "{metrics} is the same address as listen; leave metrics_listen unset to serve \
             /metrics on listen"
        ));
    }
    // A wildcard address claims the port on every interface (and, for `[::]`, usually for
    // IPv4 too), so the second bind would fail at startup; say so now instead.
    if listen.ip().is_unspecified() || metrics.ip().is_unspecified() {
        return Some(format!(
            "{metrics} would bind the same port as listen {listen}"
        ));
    }
    None
}

/// Checks a `Via` received-by name (RFC 9110 §7.6.3): a token (pseudonym) or `host:port`.
fn check_via_token(token: &str) -> Result<(), String> {
    const MAX: usize = 255;
    if token.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if token.len() > MAX {
        return Err(format!("longer than {MAX} characters"));
    }
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:".contains(c);
    match token.chars().find(|&c| !is_token_char(c)) {
        Some(c) => Err(format!(
            "{c:?} is not allowed: a Via name is a token (letters, digits, .-_ and the like) or host:port"
        )),
        None => Ok(()),
    }
}

/// A listen address as it appears in the file; std's own error ("invalid socket address
/// syntax") does not say that a host name such as `localhost` is the usual cause.
struct ListenAddr(SocketAddr);

impl From<ListenAddr> for SocketAddr {
    fn from(address: ListenAddr) -> SocketAddr {
        address.0
    }
}

impl From<ListenAddr> for Option<SocketAddr> {
    fn from(address: ListenAddr) -> Option<SocketAddr> {
        Some(address.0)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.trim().parse().map(ListenAddr).map_err(|_| {
            de::Error::custom(format!(
                "invalid address {text:?}: expected IP:port such as 127.0.0.1:5000 or \
                 [::1]:5000 (host names are not resolved)"
            ))
        })
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {cause}", path.display())]
    Io {
        /// The path as given to [`Config::load`].
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// The text is not YAML, or a value has the wrong type or an unknown key.
    #[error("{origin}{location}: {message}", location = location_suffix(*line, *column))]
    Parse {
        /// The file (or other source) that was parsed.
        origin: String,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<u64>,
        /// 1-based column of the problem, when the parser knows it.
        column: Option<u64>,
        /// The parser's message, without location.
        message: String,
        /// A multi-line rendering with the offending lines quoted, for a terminal.
        snippet: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// The file (or other source) that was parsed.
        origin: String,
        /// Path of the offending key, e.g. `registries."mirror.corp.com".endpoint`.
        key: String,
        /// What is wrong and, where possible, how to fix it.
        message: String,
    },
}

fn location_suffix(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

fn parse_error(err: &serde_saphyr::Error, origin: &str) -> ConfigError {
    // The parser's own Display appends "at line X, column Y"; take the bare message and put
    // the location after the file name instead, as compilers do, so editors can jump to it.
    let plain = err.without_snippet();
    let message: Cow<'_, str> = serde_saphyr::DefaultMessageFormatter.format_message(plain);
    // The message can quote text from the file; keep control characters from reaching a
    // terminal or log verbatim.
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    let location = err.location().filter(|loc| loc.line() > 0);
    ConfigError::Parse {
        origin: origin.to_owned(),
        line: location.map(|loc| loc.line()),
        column: location.map(|loc| loc.column()),
        message: escaped,
        snippet: err.render_with_options(serde_saphyr::render_options! {
            source_name: Some(origin),
        }),
    }
}

impl<'a> From<&'a Config> for crate::upstream::Settings<'a> {
    fn from(config: &'a Config) -> Self {
        crate::upstream::Settings {
            upstream: &config.upstream,
            registries: &config.registries,
            pull_secret: config.pull_secret.as_deref(),
            via_token: config.via_token.as_deref(),
        }
    }
}

impl<'a> From<&'a Config> for crate::proxy::ProxySettings<'a> {
    fn from(config: &'a Config) -> Self {
        crate::proxy::ProxySettings {
            clients: &config.clients,
            cache: &config.cache,
            default_registry: &config.default_registry,
            registries: &config.registries,
            allow_any_registry: config.allow_any_registry,
            metrics_elsewhere: config.metrics_listen.is_some(),
            max_upstream_fetches: config.limits.max_upstream_fetches,
            upstream_queue_timeout: config.limits.upstream_queue_timeout,
        }
    }
}

#[cfg(test)]
mod tests;
