//! The proxy's own configuration file (README "Configuration" and `config/mirrorgate.yaml`).
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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::MessageFormatter;

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
}

/// The `limits` section: the bounds that keep one client, or a crowd of them, from taking the
/// service or the upstreams down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connections served at once on the API address; further ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// How long a connection may go without a request in progress before it is closed: from
    /// accept to its first request head (TLS handshake included), between requests (HTTP/1.1
    /// keep-alive, HTTP/2 with no open stream), and to answer an HTTP/2 ping.
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted; a larger one is answered
    /// `431`.
    pub max_header_size: ByteSize,
    /// The most header fields an HTTP/1.1 request may carry; more are answered `431` (HTTP/2
    /// heads are bounded by `max_header_size` alone).
    pub max_headers: usize,
    /// Upstream fetches (manifest, blob, tag revalidation, listing) under way at once. A request
    /// that needs one more waits up to `upstream_queue_timeout`, then gets `429
    /// TOOMANYREQUESTS` with `Retry-After`. Cached content never waits.
    pub max_upstream_fetches: usize,
    /// How long a request waits for an upstream fetch slot.
    pub upstream_queue_timeout: Duration,
}

/// The `clients` section: how clients authenticate and which repositories each may pull.
///
/// The files it names are read when the proxy starts (a bad one fails `serve`, naming the file
/// and the line or key) and again on every reload; a reload whose files are bad keeps the access
/// in force. See [`crate::access`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientsConfig {
    /// How requests are authenticated.
    pub mode: ClientMode,
    /// Mode `htpasswd`: the file of `user:bcrypt-hash` lines (`htpasswd -B`).
    pub htpasswd_file: Option<PathBuf>,
    /// Mode `token`: the YAML file `tokens: [{name, token, scopes}]`.
    pub tokens_file: Option<PathBuf>,
    /// Mode `htpasswd`: the repository scopes of each user; a user not listed may pull
    /// everything.
    pub scopes: BTreeMap<String, Vec<crate::access::Scope>>,
}

/// The `clients.mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientMode {
    /// No credentials: everyone may pull everything.
    #[default]
    Anonymous,
    /// `Authorization: Basic`, checked against `htpasswd_file`.
    Htpasswd,
    /// `Authorization: Bearer <token>`, looked up in `tokens_file`.
    Token,
}

/// The `tls` section: the certificate and key the proxy serves HTTPS with.
///
/// Both files are PEM and are read at start (a bad one fails `serve` and `check`, naming it) and
/// again whenever they change on disk, so a renewed certificate is picked up without a restart;
/// see [`crate::http::tls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain: the server's certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// The private key of the first certificate (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
}

/// How to reach one registry. A registry with no entry uses [`RegistrySettings::default`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistrySettings {
    /// Where to connect instead of `https://<host>`, e.g. an address behind a load balancer.
    pub endpoint: Option<Endpoint>,
    /// Allow plain http and skip TLS verification; needed for any `http://` endpoint.
    pub insecure: bool,
    /// Extra PEM root certificates trusted for this registry only.
    pub ca_file: Option<PathBuf>,
}

/// The `cache` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Directory holding cached blobs and manifests.
    pub dir: PathBuf,
    /// Disk bound; least recently used entries are evicted first.
    pub max_size: ByteSize,
    /// Bound of the in-memory manifest cache.
    pub memory: ByteSize,
    /// How long a tag → digest answer is reused without asking upstream (`0s`: always ask).
    pub tag_ttl: Duration,
    /// How long past its TTL a tag answer may still be served when every upstream fails.
    pub stale_if_error: Duration,
    /// Free space the blob store leaves on its filesystem: a blob that would eat into it is
    /// served straight from the upstream, uncached, rather than failing half-way on a full disk.
    pub min_free_space: ByteSize,
    /// The shared tier in S3-compatible object storage (`cache.shared.s3`); `None`: local only.
    pub shared: Option<crate::cache::shared::SharedConfig>,
}

/// The `upstream` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Bound on establishing a connection (TCP and TLS) to an upstream registry.
    pub connect_timeout: Duration,
    /// Bound on an upstream request until its response headers arrive (auth round trips
    /// included), and on any pause while its body streams; a large blob may take longer in all.
    pub timeout: Duration,
    /// Networks a blob redirect may lead to although they are loopback, link-local or a cloud
    /// metadata address (refused by default: an upstream must not be able to point mirrorgate
    /// at its own host or at the instance's credentials).
    pub redirect_allowed_networks: Vec<ipnet::IpNet>,
}

/// The registry settings used for a host with no `registries` entry.
static NO_SETTINGS: RegistrySettings = RegistrySettings {
    endpoint: None,
    insecure: false,
    ca_file: None,
};

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
            log_level: "info".to_owned(),
            allow_any_registry: false,
            tls: None,
            clients: ClientsConfig::default(),
            limits: LimitsConfig::default(),
            self_names: Vec::new(),
            via_token: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_header_size: ByteSize::kib(64),
            max_headers: 100,
            max_upstream_fetches: 64,
            upstream_queue_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: PathBuf::from("var/cache"),
            max_size: ByteSize::gib(10),
            memory: ByteSize::mib(256),
            tag_ttl: Duration::from_secs(5 * 60),
            stale_if_error: Duration::from_secs(24 * 60 * 60),
            min_free_space: ByteSize::mib(512),
            shared: None,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            redirect_allowed_networks: Vec::new(),
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
        let raw: RawConfig =
            serde_saphyr::from_str(text).map_err(|err| parse_error(&err, origin))?;
        let clients_stated = raw.clients.is_some();
        let config = raw.into_config();
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
        check_registry_host(&self.default_registry).map_err(|why| {
            let value = &self.default_registry;
            invalid(
                "default_registry",
                format!("{value:?} is not a registry host (host[:port]): {why}"),
            )
        })?;
        for (host, settings) in &self.registries {
            let key = format!("registries.{host:?}");
            check_registry_host(host).map_err(|why| {
                // The key path already quotes the host, so the message does not repeat it.
                invalid(&key, format!("not a registry host (host[:port]): {why}"))
            })?;
            if let Some(endpoint) = &settings.endpoint
                && endpoint.scheme() == Scheme::Http
                && !settings.insecure
            {
                return Err(invalid(
                    &format!("{key}.endpoint"),
                    format!("plain http endpoint \"{endpoint}\" needs insecure: true"),
                ));
            }
            if settings
                .ca_file
                .as_ref()
                .is_some_and(|p| p.as_os_str().is_empty())
            {
                return Err(invalid(&format!("{key}.ca_file"), "empty path".to_owned()));
            }
        }
        if self
            .pull_secret
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid("pull_secret", "empty path".to_owned()));
        }
        if self.cache.dir.as_os_str().is_empty() {
            return Err(invalid("cache.dir", "empty path".to_owned()));
        }
        // A zero bound would make every insertion an eviction: a cache that never hits.
        if self.cache.max_size.0 == 0 {
            return Err(invalid(
                "cache.max_size",
                "must be greater than 0".to_owned(),
            ));
        }
        if self.cache.memory.0 == 0 {
            return Err(invalid("cache.memory", "must be greater than 0".to_owned()));
        }
        if let Some(shared) = &self.cache.shared {
            shared
                .validate()
                .map_err(|(key, message)| invalid(&format!("cache.shared.{key}"), message))?;
        }
        // A zero timeout fails every request before it starts.
        if self.upstream.connect_timeout.is_zero() {
            return Err(invalid(
                "upstream.connect_timeout",
                "must be greater than 0s".to_owned(),
            ));
        }
        if self.upstream.timeout.is_zero() {
            return Err(invalid(
                "upstream.timeout",
                "must be greater than 0s".to_owned(),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(invalid("tls.cert_file", "empty path".to_owned()));
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(invalid("tls.key_file", "empty path".to_owned()));
            }
        }
        self.clients.validate(&invalid)?;
        self.limits.validate(&invalid)?;
        for (i, name) in self.self_names.iter().enumerate() {
            check_registry_host(name).map_err(|why| {
                invalid(
                    &format!("self_names[{i}]"),
                    format!("{name:?} is not a host or host:port: {why}"),
                )
            })?;
        }
        if let Some(token) = &self.via_token {
            check_via_token(token).map_err(|why| invalid("via_token", why))?;
        }
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
        self.registries.get(host).unwrap_or(&NO_SETTINGS)
    }

    /// Where to connect for registry `host`: its configured endpoint, else
    /// [`Endpoint::default_for`] the host.
    pub fn endpoint_for(&self, host: &str) -> Endpoint {
        self.registry(host).endpoint_for(host)
    }
}

impl RegistrySettings {
    /// Where to connect for `host` under these settings: the configured endpoint, else
    /// [`Endpoint::default_for`] the host.
    pub fn endpoint_for(&self, host: &str) -> Endpoint {
        self.endpoint
            .clone()
            .unwrap_or_else(|| Endpoint::default_for(host))
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

/// Checks the `host[:port]` grammar of registry names in image references.
fn check_registry_host(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("empty".to_owned());
    }
    if value.contains("://") {
        return Err("write the host without a scheme; put a URL in endpoint".to_owned());
    }
    if value.contains('/') {
        return Err("a host has no path".to_owned());
    }
    let (host, port) = split_host_port(value)?;
    check_host(host)?;
    if let Some(port) = port {
        parse_port(port)?;
    }
    Ok(())
}

/// Splits `host[:port]`, keeping the brackets of an IPv6 literal in the host.
fn split_host_port(value: &str) -> Result<(&str, Option<&str>), String> {
    if value.starts_with('[') {
        let end = value
            .find(']')
            .ok_or_else(|| "IPv6 literal has no closing ']'".to_owned())?;
        let (host, rest) = value.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected {rest:?} after IPv6 literal")),
            },
        };
    }
    if value.matches(':').count() > 1 {
        return Err("an IPv6 address must be in brackets, e.g. [::1]:5000".to_owned());
    }
    Ok(match value.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    })
}

/// Checks a host: DNS labels joined by `.` (this covers IPv4 and `localhost`), or `[IPv6]`.
fn check_host(host: &str) -> Result<(), String> {
    if let Some(bracketed) = host.strip_prefix('[') {
        let Some(inner) = bracketed.strip_suffix(']') else {
            return Err("IPv6 literal has no closing ']'".to_owned());
        };
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{inner:?} is not an IPv6 address"));
    }
    if host.is_empty() {
        return Err("the host is empty".to_owned());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading or trailing dot)".to_owned());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!("{c:?} is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("port {port} is out of range 1..=65535")),
    }
}

/// The scheme of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain http; only allowed with `insecure: true`.
    Http,
    /// TLS.
    Https,
}

impl Scheme {
    /// The port a URL with this scheme and no explicit port uses.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// Where to connect for a registry: `http(s)://host[:port]`, nothing else.
///
/// The registry API always lives under `/v2/` of the origin, so a path, query or user info in
/// the configured value can only be a mistake (credentials belong in `pull_secret`); they are
/// rejected rather than ignored. A single trailing `/` is accepted and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
}

impl Endpoint {
    /// The endpoint used for a registry with no configured one: `https://<host>`.
    ///
    /// `docker.io` is the one exception: it is a name, not a server, and Docker Hub's registry
    /// API is served by `registry-1.docker.io` (containers/image does the same).
    ///
    /// `host` is expected to be a registry host as found in a normalised reference; this does
    /// not validate it, so that a lookup never fails here, but a malformed host yields an
    /// endpoint that fails when connecting.
    pub fn default_for(host: &str) -> Endpoint {
        if host == "docker.io" {
            return Endpoint {
                scheme: Scheme::Https,
                host: "registry-1.docker.io".to_owned(),
                port: None,
            };
        }
        let (name, port) = match split_host_port(host) {
            Ok((name, Some(port))) => match parse_port(port) {
                Ok(port) => (name, Some(port)),
                Err(_) => (host, None),
            },
            _ => (host, None),
        };
        Endpoint {
            scheme: Scheme::Https,
            host: name.to_owned(),
            port,
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host as it appears in a URL: a name, an IPv4 address, or an IPv6 address in
    /// brackets (`[::1]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port if one was written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port to connect to: the written one, else the scheme's default.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or_else(|| self.scheme.default_port())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Why a string is not an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {input:?}: {reason}")]
pub struct EndpointError {
    input: String,
    reason: String,
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| EndpointError {
            input: s.to_owned(),
            reason,
        };
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((scheme, _)) => {
                return Err(fail(format!(
                    "scheme {scheme:?} is not supported; use https:// or http://"
                )));
            }
            None => return Err(fail("must start with https:// or http://".to_owned())),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(fail(
                "must not contain user info; put credentials in pull_secret".to_owned(),
            ));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(fail(
                "must not have a path, query or fragment (the registry API is always at /v2/)"
                    .to_owned(),
            ));
        }
        let (host, port) = split_host_port(authority).map_err(fail)?;
        check_host(host).map_err(fail)?;
        let port = port.map(parse_port).transpose().map_err(fail)?;
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A number of bytes, written with binary units (`KiB`, `MiB`, `GiB`, `TiB`), `B`, or as a bare
/// integer.
///
/// Decimal units (`KB`, `MB`, `GB`, ...) are rejected rather than read either way: `10GB`
/// means 10·10⁹ to some and 10·2³⁰ to others, and a cache bound off by 7% is a surprise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Units from largest to smallest, so that [`ByteSize`]'s `Display` picks the largest exact one.
const UNITS: [(&str, u64); 5] = [
    ("TiB", TIB),
    ("GiB", GIB),
    ("MiB", MIB),
    ("KiB", KIB),
    ("B", 1),
];

impl ByteSize {
    /// `n` KiB, saturating at `u64::MAX`.
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(KIB))
    }

    /// `n` MiB, saturating at `u64::MAX`.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(MIB))
    }

    /// `n` GiB, saturating at `u64::MAX`.
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(GIB))
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

/// Prints the largest binary unit that represents the size exactly (`10GiB`, `1536B`), so the
/// output parses back to the same value.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, factor) = UNITS
            .iter()
            .copied()
            .find(|&(_, factor)| self.0 != 0 && self.0.is_multiple_of(factor))
            .unwrap_or(("B", 1));
        write!(f, "{}{unit}", self.0 / factor)
    }
}

/// Why a string is not a [`ByteSize`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason}")]
pub struct ByteSizeError {
    input: String,
    reason: String,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| ByteSizeError {
            input: s.to_owned(),
            reason,
        };
        let text = s.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let unit = unit.trim_start();
        if number.is_empty() {
            return Err(fail(
                "expected a whole number with a binary unit, e.g. 512MiB or 10GiB".to_owned(),
            ));
        }
        let factor = match unit {
            "" | "B" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            "TiB" => TIB,
            _ => return Err(fail(unit_hint(unit))),
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .map(ByteSize)
            .ok_or_else(|| fail("too large".to_owned()))
    }
}

/// Explains an unaccepted unit, pointing at the binary unit the writer most likely meant.
fn unit_hint(unit: &str) -> String {
    let binary = match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" | "kib" => Some("KiB"),
        "m" | "mb" | "mib" => Some("MiB"),
        "g" | "gb" | "gib" => Some("GiB"),
        "t" | "tb" | "tib" => Some("TiB"),
        "b" => Some("B"),
        _ => None,
    };
    match binary {
        Some(binary) if unit.to_ascii_lowercase().ends_with("ib") || binary == "B" => {
            format!("unit {unit:?} is written {binary:?}")
        }
        Some(binary) => format!(
            "decimal unit {unit:?} is not accepted; use the binary unit {binary:?} (powers of 1024)"
        ),
        None if unit.starts_with('.') => "a size is a whole number; use a smaller unit".to_owned(),
        None => format!("unknown unit {unit:?}; use B, KiB, MiB, GiB or TiB"),
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 512MiB or 10GiB, or a number of bytes")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A listen address as it appears in the file; std's own error ("invalid socket address
/// syntax") does not say that a host name such as `localhost` is the usual cause.
struct ListenAddr(SocketAddr);

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

/// A humantime duration (`30s`, `5m`, `24h`) as it appears in the file.
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|err| de::Error::custom(format!("invalid duration {text:?}: {err}")))
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

// The file as written: every key optional and `null` treated as absent, so that defaults live
// in one place (the `Default` impls) and a key written as `key:` with nothing after it (as when
// its value is commented out) means the default rather than an error.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    listen: Option<ListenAddr>,
    metrics_listen: Option<ListenAddr>,
    rules: Option<Vec<PathBuf>>,
    default_registry: Option<String>,
    registries: Option<BTreeMap<String, Option<RawRegistrySettings>>>,
    pull_secret: Option<PathBuf>,
    cache: Option<RawCache>,
    upstream: Option<RawUpstream>,
    watch: Option<bool>,
    log_level: Option<String>,
    allow_any_registry: Option<bool>,
    tls: Option<RawTls>,
    clients: Option<RawClients>,
    limits: Option<RawLimits>,
    self_names: Option<Vec<String>>,
    via_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: Option<usize>,
    header_read_timeout: Option<HumanDuration>,
    max_header_size: Option<ByteSize>,
    max_headers: Option<usize>,
    max_upstream_fetches: Option<usize>,
    upstream_queue_timeout: Option<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawClients {
    mode: Option<ClientMode>,
    htpasswd_file: Option<PathBuf>,
    tokens_file: Option<PathBuf>,
    scopes: Option<BTreeMap<String, Vec<crate::access::Scope>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRegistrySettings {
    endpoint: Option<Endpoint>,
    insecure: Option<bool>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    dir: Option<PathBuf>,
    max_size: Option<ByteSize>,
    memory: Option<ByteSize>,
    tag_ttl: Option<HumanDuration>,
    stale_if_error: Option<HumanDuration>,
    min_free_space: Option<ByteSize>,
    shared: Option<crate::cache::shared::RawSharedConfig>,
}

// No `default` here: a `tls` section must name both files (serde reports the one missing).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    connect_timeout: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
    redirect_allowed_networks: Option<Vec<Network>>,
}

/// An IP network written `10.0.0.0/8` or `fd00::/8`, or one address (`127.0.0.1`).
struct Network(ipnet::IpNet);

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let network = match text.parse::<ipnet::IpNet>() {
            Ok(network) => network,
            Err(_) => text
                .parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| {
                    de::Error::custom(format!(
                        "\"{text}\" is not an IP network (10.0.0.0/8, fd00::/8) or address"
                    ))
                })?,
        };
        Ok(Network(network.trunc()))
    }
}

impl RawConfig {
    fn into_config(self) -> Config {
        let default = Config::default();
        Config {
            listen: self.listen.map_or(default.listen, |a| a.0),
            metrics_listen: self.metrics_listen.map(|a| a.0),
            rules: self.rules.unwrap_or(default.rules),
            default_registry: self.default_registry.unwrap_or(default.default_registry),
            registries: self
                .registries
                .unwrap_or_default()
                .into_iter()
                .map(|(host, raw)| (host, raw.unwrap_or_default().into_settings()))
                .collect(),
            pull_secret: self.pull_secret,
            cache: self.cache.unwrap_or_default().into_cache(),
            upstream: self.upstream.unwrap_or_default().into_upstream(),
            watch: self.watch.unwrap_or(default.watch),
            log_level: self.log_level.unwrap_or(default.log_level),
            allow_any_registry: self
                .allow_any_registry
                .unwrap_or(default.allow_any_registry),
            tls: self.tls.map(|raw| TlsConfig {
                cert_file: raw.cert_file,
                key_file: raw.key_file,
            }),
            clients: self
                .clients
                .map_or_else(ClientsConfig::default, |raw| ClientsConfig {
                    mode: raw.mode.unwrap_or_default(),
                    htpasswd_file: raw.htpasswd_file,
                    tokens_file: raw.tokens_file,
                    scopes: raw.scopes.unwrap_or_default(),
                }),
            limits: self.limits.unwrap_or_default().into_limits(),
            self_names: self.self_names.unwrap_or_default(),
            via_token: self.via_token,
        }
    }
}

impl RawLimits {
    fn into_limits(self) -> LimitsConfig {
        let default = LimitsConfig::default();
        LimitsConfig {
            max_connections: self.max_connections.unwrap_or(default.max_connections),
            header_read_timeout: self
                .header_read_timeout
                .map_or(default.header_read_timeout, |d| d.0),
            max_header_size: self.max_header_size.unwrap_or(default.max_header_size),
            max_headers: self.max_headers.unwrap_or(default.max_headers),
            max_upstream_fetches: self
                .max_upstream_fetches
                .unwrap_or(default.max_upstream_fetches),
            upstream_queue_timeout: self
                .upstream_queue_timeout
                .map_or(default.upstream_queue_timeout, |d| d.0),
        }
    }
}

impl LimitsConfig {
    /// The smallest `max_header_size`: hyper cannot parse a request head in less.
    pub const MIN_HEADER_SIZE: ByteSize = ByteSize::kib(8);
    /// The smallest `max_headers`: what registry clients send, with room to spare.
    pub const MIN_HEADERS: usize = 16;

    /// Checks that every bound lets something through.
    fn validate(&self, invalid: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid(
                "limits.max_connections",
                "must be greater than 0".to_owned(),
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(invalid(
                "limits.header_read_timeout",
                "must be greater than 0s".to_owned(),
            ));
        }
        if self.max_header_size.0 < Self::MIN_HEADER_SIZE.0 {
            return Err(invalid(
                "limits.max_header_size",
                format!("must be at least {}", Self::MIN_HEADER_SIZE),
            ));
        }
        if self.max_headers < Self::MIN_HEADERS {
            return Err(invalid(
                "limits.max_headers",
                format!("must be at least {}", Self::MIN_HEADERS),
            ));
        }
        if self.max_upstream_fetches == 0 {
            return Err(invalid(
                "limits.max_upstream_fetches",
                "must be greater than 0".to_owned(),
            ));
        }
        Ok(())
    }
}

impl ClientsConfig {
    /// Checks that the mode has its file and that keys of other modes are not set.
    fn validate(&self, invalid: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        if empty(&self.htpasswd_file) {
            return Err(invalid("clients.htpasswd_file", "empty path".to_owned()));
        }
        if empty(&self.tokens_file) {
            return Err(invalid("clients.tokens_file", "empty path".to_owned()));
        }
        let (needed, unused): (Option<&str>, &[&str]) = match self.mode {
            ClientMode::Anonymous => (None, &["htpasswd_file", "tokens_file", "scopes"]),
            ClientMode::Htpasswd => (Some("htpasswd_file"), &["tokens_file"]),
            ClientMode::Token => (Some("tokens_file"), &["htpasswd_file", "scopes"]),
        };
        let mode = match self.mode {
            ClientMode::Anonymous => "anonymous",
            ClientMode::Htpasswd => "htpasswd",
            ClientMode::Token => "token",
        };
        let set = |key: &str| match key {
            "htpasswd_file" => self.htpasswd_file.is_some(),
            "tokens_file" => self.tokens_file.is_some(),
            _ => !self.scopes.is_empty(),
        };
        if let Some(key) = needed
            && !set(key)
        {
            return Err(invalid(
                &format!("clients.{key}"),
                format!("mode {mode} needs {key}"),
            ));
        }
        if let Some(key) = unused.iter().find(|key| set(key)) {
            let hint = if *key == "scopes" && self.mode == ClientMode::Token {
                "; the scopes of a token are given in tokens_file"
            } else {
                ""
            };
            return Err(invalid(
                &format!("clients.{key}"),
                format!("not used with mode {mode}{hint}"),
            ));
        }
        for (user, scopes) in &self.scopes {
            if user.is_empty() || user.contains(':') {
                return Err(invalid(
                    &format!("clients.scopes.{user:?}"),
                    "not a user name (empty or has ':')".to_owned(),
                ));
            }
            if scopes.is_empty() {
                return Err(invalid(
                    &format!("clients.scopes.{user:?}"),
                    "empty list: the user could pull nothing; remove the user from \
                     htpasswd_file instead"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }
}

impl RawRegistrySettings {
    fn into_settings(self) -> RegistrySettings {
        RegistrySettings {
            endpoint: self.endpoint,
            insecure: self.insecure.unwrap_or(false),
            ca_file: self.ca_file,
        }
    }
}

impl RawCache {
    fn into_cache(self) -> CacheConfig {
        let default = CacheConfig::default();
        CacheConfig {
            dir: self.dir.unwrap_or(default.dir),
            max_size: self.max_size.unwrap_or(default.max_size),
            memory: self.memory.unwrap_or(default.memory),
            tag_ttl: self.tag_ttl.map_or(default.tag_ttl, |d| d.0),
            stale_if_error: self.stale_if_error.map_or(default.stale_if_error, |d| d.0),
            min_free_space: self.min_free_space.unwrap_or(default.min_free_space),
            shared: self.shared.and_then(|raw| raw.into_config()),
        }
    }
}

impl RawUpstream {
    fn into_upstream(self) -> UpstreamConfig {
        let default = UpstreamConfig::default();
        UpstreamConfig {
            connect_timeout: self
                .connect_timeout
                .map_or(default.connect_timeout, |d| d.0),
            timeout: self.timeout.map_or(default.timeout, |d| d.0),
            redirect_allowed_networks: self
                .redirect_allowed_networks
                .map_or(default.redirect_allowed_networks, |networks| {
                    networks.into_iter().map(|n| n.0).collect()
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "config/mirrorgate.yaml";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_str(text, ORIGIN)
    }

    fn error_text(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    const FULL_EXAMPLE: &str = r#"
listen: 127.0.0.1:5000          # OCI API, plus /metrics /healthz /readyz unless metrics_listen is set
metrics_listen: null            # optional second address for /metrics
rules: [config/rules]           # files or directories of YAML/JSON mirror objects, read in sorted order
default_registry: docker.io
registries:                     # per-registry settings, keyed by the host as written in references and rules
  mirror.corp.com:
    endpoint: https://10.0.0.5:8443   # where to connect; default https://<host>
    insecure: false                   # true: plain http allowed, TLS not verified
    ca_file: null                     # extra PEM roots for this registry
pull_secret: null               # dockerconfigjson / auth.json with credentials per registry
cache:
  dir: var/cache                # blobs and manifests on disk
  max_size: 10GiB               # disk bound, least recently used evicted first
  memory: 256MiB                # in-memory manifest bound
  tag_ttl: 5m                   # tag → digest answers are reused this long without asking upstream
  stale_if_error: 24h           # serve an expired tag answer when every upstream fails
upstream:
  connect_timeout: 5s
  timeout: 30s
watch: true                     # reload rule files and this file on change (also on SIGHUP)
"#;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").ok(), Some(Config::default()));
    }

    #[test]
    fn comment_only_file_gives_defaults() {
        assert_eq!(
            parse("# nothing set yet\n# listen: 0.0.0.0:5000\n").ok(),
            Some(Config::default())
        );
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let expected = Config {
            listen: "127.0.0.1:5000".parse().expect("literal address"),
            metrics_listen: None,
            rules: vec![PathBuf::from("config/rules")],
            default_registry: "docker.io".to_owned(),
            registries: BTreeMap::new(),
            pull_secret: None,
            cache: CacheConfig {
                dir: PathBuf::from("var/cache"),
                max_size: ByteSize(10 * 1024 * 1024 * 1024),
                memory: ByteSize(256 * 1024 * 1024),
                tag_ttl: Duration::from_secs(300),
                stale_if_error: Duration::from_secs(86_400),
                min_free_space: ByteSize(512 * 1024 * 1024),
                shared: None,
            },
            upstream: UpstreamConfig {
                connect_timeout: Duration::from_secs(5),
                timeout: Duration::from_secs(30),
                redirect_allowed_networks: Vec::new(),
            },
            watch: true,
            log_level: "info".to_owned(),
            allow_any_registry: false,
            tls: None,
            clients: ClientsConfig {
                mode: ClientMode::Anonymous,
                htpasswd_file: None,
                tokens_file: None,
                scopes: BTreeMap::new(),
            },
            limits: LimitsConfig {
                max_connections: 4096,
                header_read_timeout: Duration::from_secs(10),
                max_header_size: ByteSize(64 * 1024),
                max_headers: 100,
                max_upstream_fetches: 64,
                upstream_queue_timeout: Duration::from_secs(10),
            },
            self_names: Vec::new(),
            via_token: None,
        };
        assert_eq!(Config::default(), expected);
    }

    #[test]
    fn full_example_parses_to_expected_values() {
        let mut expected = Config::default();
        expected.registries.insert(
            "mirror.corp.com".to_owned(),
            RegistrySettings {
                endpoint: Some(Endpoint {
                    scheme: Scheme::Https,
                    host: "10.0.0.5".to_owned(),
                    port: Some(8443),
                }),
                insecure: false,
                ca_file: None,
            },
        );
        assert_eq!(parse(FULL_EXAMPLE).ok(), Some(expected));
    }

    #[test]
    fn null_value_means_default() {
        let text = "listen:\nrules: ~\ncache:\nupstream: null\nregistries:\n  quay.io:\n";
        let mut expected = Config::default();
        expected
            .registries
            .insert("quay.io".to_owned(), RegistrySettings::default());
        assert_eq!(parse(text).ok(), Some(expected));
    }

    #[test]
    fn json_config_is_accepted() {
        let text = r#"{"listen": "[::1]:5001", "cache": {"max_size": "1GiB", "tag_ttl": "0s"},
                       "registries": {"localhost:5000": {"endpoint": "http://localhost:5000",
                                                         "insecure": true}}}"#;
        let config = parse(text).expect("valid JSON config");
        assert_eq!(
            (
                config.listen.to_string(),
                config.cache.max_size,
                config.cache.tag_ttl,
                config.endpoint_for("localhost:5000").to_string(),
            ),
            (
                "[::1]:5001".to_owned(),
                ByteSize::gib(1),
                Duration::ZERO,
                "http://localhost:5000".to_owned(),
            )
        );
    }

    #[test]
    fn unknown_top_level_key_is_rejected_and_named() {
        let err = error_text("listen: 127.0.0.1:5000\nlisten_addr: 0.0.0.0:5000\n");
        assert!(
            err.starts_with("config/mirrorgate.yaml:2:1: ") && err.contains("`listen_addr`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_nested_key_is_rejected() {
        let err = error_text("cache:\n  maxsize: 10GiB\n");
        assert!(err.contains("unknown field `maxsize`"), "{err}");
    }

    #[test]
    fn unknown_registry_key_is_rejected() {
        let err = error_text("registries:\n  quay.io:\n    endpoints: https://q\n");
        assert!(err.contains("unknown field `endpoints`"), "{err}");
    }

    #[test]
    fn bad_duration_is_rejected_with_location() {
        let err = error_text("upstream:\n  timeout: 30 seconds later\n");
        assert!(
            err.starts_with("config/mirrorgate.yaml:2:") && err.contains("invalid duration"),
            "{err}"
        );
    }

    #[test]
    fn duration_without_unit_is_rejected() {
        let err = error_text("upstream:\n  timeout: 30\n");
        assert!(err.contains("invalid duration \"30\""), "{err}");
    }

    #[test]
    fn zero_tag_ttl_is_accepted() {
        let config = parse("cache:\n  tag_ttl: 0s\n").expect("0s is a valid tag_ttl");
        assert_eq!(config.cache.tag_ttl, Duration::ZERO);
    }

    #[test]
    fn decimal_size_unit_is_rejected_with_binary_hint() {
        let err = error_text("cache:\n  max_size: 10GB\n");
        assert!(err.contains("use the binary unit \"GiB\""), "{err}");
    }

    #[test]
    fn binary_sizes_and_bare_bytes_parse() {
        let config = parse("cache:\n  memory: 512MiB\n  max_size: 1GiB\n")
            .and_then(|a| parse("cache:\n  max_size: 1048576\n").map(|b| (a, b)))
            .expect("valid sizes");
        assert_eq!(
            (
                config.0.cache.memory,
                config.0.cache.max_size,
                config.1.cache.max_size
            ),
            (ByteSize(512 << 20), ByteSize(1 << 30), ByteSize(1 << 20))
        );
    }

    #[test]
    fn size_units_parse() {
        let parsed: Vec<Option<u64>> = ["2TiB", "3KiB", "7B", "42", " 5 MiB "]
            .iter()
            .map(|s| s.parse::<ByteSize>().ok().map(ByteSize::bytes))
            .collect();
        assert_eq!(
            parsed,
            vec![
                Some(2 << 40),
                Some(3 << 10),
                Some(7),
                Some(42),
                Some(5 << 20)
            ]
        );
    }

    #[test]
    fn fractional_and_negative_sizes_are_rejected() {
        let results: Vec<bool> = ["1.5GiB", "-1", "GiB", "", "99999999999TiB"]
            .iter()
            .map(|s| s.parse::<ByteSize>().is_err())
            .collect();
        assert_eq!(results, vec![true; 5]);
    }

    #[test]
    fn negative_yaml_size_is_rejected() {
        let err = error_text("cache:\n  memory: -1\n");
        assert!(err.contains("must not be negative"), "{err}");
    }

    #[test]
    fn byte_size_display_round_trips() {
        let sizes = [
            ByteSize(0),
            ByteSize(1536),
            ByteSize::mib(256),
            ByteSize::gib(10),
        ];
        let shown: Vec<String> = sizes.iter().map(ToString::to_string).collect();
        let reparsed: Vec<ByteSize> = shown.iter().filter_map(|s| s.parse().ok()).collect();
        assert_eq!(
            (shown, reparsed),
            (
                vec![
                    "0B".to_owned(),
                    "1536B".to_owned(),
                    "256MiB".to_owned(),
                    "10GiB".to_owned()
                ],
                sizes.to_vec()
            )
        );
    }

    #[test]
    fn http_endpoint_without_insecure_is_rejected() {
        let err = error_text("registries:\n  mirror.corp.com:\n    endpoint: http://10.0.0.5\n");
        assert_eq!(
            err,
            "config/mirrorgate.yaml: registries.\"mirror.corp.com\".endpoint: plain http \
             endpoint \"http://10.0.0.5\" needs insecure: true"
        );
    }

    #[test]
    fn http_endpoint_with_insecure_is_accepted() {
        let text =
            "registries:\n  mirror.corp.com:\n    endpoint: http://10.0.0.5/\n    insecure: true\n";
        let config = parse(text).expect("insecure http endpoint is allowed");
        assert_eq!(
            config.endpoint_for("mirror.corp.com").to_string(),
            "http://10.0.0.5"
        );
    }

    #[test]
    fn endpoint_with_path_is_rejected() {
        let err = error_text("registries:\n  a.io:\n    endpoint: https://b.io/v2\n");
        assert!(err.contains("must not have a path"), "{err}");
    }

    #[test]
    fn endpoint_with_user_info_is_rejected() {
        assert!("https://user:pw@b.io".parse::<Endpoint>().is_err());
    }

    #[test]
    fn endpoint_with_other_scheme_is_rejected() {
        assert!("ftp://b.io".parse::<Endpoint>().is_err());
    }

    #[test]
    fn endpoint_parts_are_exposed() {
        let endpoint: Endpoint = "https://[fd00::5]:8443".parse().expect("valid endpoint");
        assert_eq!(
            (
                endpoint.scheme(),
                endpoint.host(),
                endpoint.port_or_default()
            ),
            (Scheme::Https, "[fd00::5]", 8443)
        );
    }

    #[test]
    fn unconfigured_registry_defaults_to_https_host() {
        assert_eq!(
            Config::default().endpoint_for("quay.io:8443").to_string(),
            "https://quay.io:8443"
        );
    }

    #[test]
    fn docker_hub_defaults_to_its_registry_api_host() {
        assert_eq!(
            Config::default().endpoint_for("docker.io").to_string(),
            "https://registry-1.docker.io"
        );
    }

    #[test]
    fn bad_registry_host_key_is_rejected() {
        let err = error_text("registries:\n  https://mirror.corp.com:\n    insecure: true\n");
        assert!(
            err.starts_with("config/mirrorgate.yaml: registries.\"https://mirror.corp.com\": "),
            "{err}"
        );
    }

    #[test]
    fn registry_host_grammar() {
        let verdicts: Vec<(&str, bool)> = [
            "quay.io",
            "localhost",
            "localhost:5000",
            "10.0.0.5:8443",
            "[::1]:5000",
            "[fd00::1]",
            "my-registry.example.com",
            "-bad.io",
            "bad-.io",
            "a..b",
            "under_score.io",
            "quay.io/ns",
            "quay.io:0",
            "quay.io:65536",
            "quay.io:",
            "::1",
            "[::1",
            "[nope]",
            "",
        ]
        .iter()
        .map(|h| (*h, check_registry_host(h).is_ok()))
        .collect();
        let expected: Vec<(&str, bool)> = verdicts
            .iter()
            .enumerate()
            .map(|(i, (h, _))| (*h, i < 7))
            .collect();
        assert_eq!(verdicts, expected);
    }

    #[test]
    fn bad_default_registry_is_rejected() {
        let err = error_text("default_registry: docker.io/library\n");
        assert!(err.contains(": default_registry: "), "{err}");
    }

    #[test]
    fn invalid_log_level_is_rejected() {
        let err = error_text("log_level: \"mirrorgate=loud\"\n");
        assert!(err.contains("log_level: invalid log filter"), "{err}");
    }

    #[test]
    fn log_level_filter_is_kept() {
        assert_eq!(
            parse("log_level: mirrorgate=debug\n").unwrap().log_level,
            "mirrorgate=debug"
        );
    }

    #[test]
    fn zero_memory_is_rejected() {
        let err = error_text("cache:\n  memory: 0MiB\n");
        assert!(
            err.ends_with("cache.memory: must be greater than 0"),
            "{err}"
        );
    }

    #[test]
    fn zero_max_size_is_rejected() {
        let err = error_text("cache:\n  max_size: 0\n");
        assert!(
            err.ends_with("cache.max_size: must be greater than 0"),
            "{err}"
        );
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let err = error_text("upstream:\n  connect_timeout: 0s\n");
        assert!(
            err.ends_with("upstream.connect_timeout: must be greater than 0s"),
            "{err}"
        );
    }

    #[test]
    fn same_listen_and_metrics_listen_is_rejected() {
        let err = error_text("listen: 127.0.0.1:5000\nmetrics_listen: 127.0.0.1:5000\n");
        assert!(err.contains(": metrics_listen: "), "{err}");
    }

    #[test]
    fn metrics_listen_on_wildcard_listen_port_is_rejected() {
        let err = error_text("listen: 0.0.0.0:5000\nmetrics_listen: 127.0.0.1:5000\n");
        assert!(err.contains("would bind the same port"), "{err}");
    }

    #[test]
    fn two_ephemeral_listen_ports_are_accepted() {
        let text = "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\n";
        assert!(parse(text).is_ok());
    }

    #[test]
    fn distinct_metrics_listen_is_accepted() {
        let config = parse("metrics_listen: 127.0.0.1:9100\n").expect("distinct addresses");
        assert_eq!(
            config.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
    }

    #[test]
    fn empty_rules_is_rejected() {
        let err = error_text("rules: []\n");
        assert!(
            err.ends_with("rules: must name at least one file or directory"),
            "{err}"
        );
    }

    #[test]
    fn bad_listen_address_is_a_parse_error_with_location() {
        let err = error_text("watch: false\nlisten: localhost:5000\n");
        assert!(
            err.starts_with("config/mirrorgate.yaml:2:") && err.contains("host names are not"),
            "{err}"
        );
    }

    #[test]
    fn load_missing_file_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("absent.yaml");
        let err = Config::load(&path).expect_err("file does not exist");
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mirrorgate.yaml");
        std::fs::write(&path, "watch: false\n").expect("write config");
        assert!(!Config::load(&path).expect("valid config").watch);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mirrorgate.yaml");
        std::fs::write(&path, "rules: []\n").expect("write config");
        let err = Config::load(&path).expect_err("empty rules");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: rules: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn parse_error_keeps_a_snippet_naming_the_file() {
        let snippet = match parse("cache:\n  maxsize: 1\n") {
            Err(ConfigError::Parse { snippet, .. }) => snippet,
            other => panic!("expected a parse error, got {other:?}"),
        };
        assert!(snippet.contains("config/mirrorgate.yaml:2:3"), "{snippet}");
    }

    #[test]
    fn tls_section_parses() {
        let config = parse("tls:\n  cert_file: /etc/mirrorgate/tls.crt\n  key_file: tls.key\n")
            .expect("valid tls section");
        assert_eq!(
            config.tls,
            Some(TlsConfig {
                cert_file: PathBuf::from("/etc/mirrorgate/tls.crt"),
                key_file: PathBuf::from("tls.key"),
            })
        );
    }

    #[test]
    fn null_tls_means_plain_http() {
        assert_eq!(parse("tls:\n").ok(), Some(Config::default()));
    }

    #[test]
    fn tls_without_key_file_is_rejected_with_location() {
        let err = error_text("watch: false\ntls:\n  cert_file: tls.crt\n");
        assert!(
            err.starts_with("config/mirrorgate.yaml:") && err.contains("`key_file`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_tls_key_is_rejected() {
        let err =
            error_text("tls:\n  cert_file: tls.crt\n  key_file: tls.key\n  ca_file: ca.crt\n");
        assert!(err.contains("unknown field `ca_file`"), "{err}");
    }

    #[test]
    fn empty_tls_path_is_rejected() {
        let err = error_text("tls:\n  cert_file: tls.crt\n  key_file: \"\"\n");
        assert!(err.ends_with(": tls.key_file: empty path"), "{err}");
    }

    #[test]
    fn clients_htpasswd_section_parses() {
        let text = "clients:\n  mode: htpasswd\n  htpasswd_file: /etc/mirrorgate/htpasswd\n  \
                    scopes:\n    alice: [\"quay.io/openshift-release-dev/*\", \"*\"]\n";
        let clients = parse(text).expect("valid clients section").clients;
        assert_eq!(
            clients,
            ClientsConfig {
                mode: ClientMode::Htpasswd,
                htpasswd_file: Some(PathBuf::from("/etc/mirrorgate/htpasswd")),
                tokens_file: None,
                scopes: BTreeMap::from([(
                    "alice".to_owned(),
                    vec![
                        crate::access::Scope::Under("quay.io/openshift-release-dev".to_owned()),
                        crate::access::Scope::All,
                    ]
                )]),
            }
        );
    }

    #[test]
    fn clients_token_section_parses() {
        let clients = parse("clients:\n  mode: token\n  tokens_file: tokens.yaml\n")
            .expect("valid clients section")
            .clients;
        assert_eq!(
            (clients.mode, clients.tokens_file),
            (ClientMode::Token, Some(PathBuf::from("tokens.yaml")))
        );
    }

    #[test]
    fn null_clients_means_anonymous() {
        assert_eq!(parse("clients:\n").ok(), Some(Config::default()));
    }

    #[test]
    fn unknown_clients_mode_is_rejected_with_location() {
        let err = error_text("watch: false\nclients:\n  mode: ldap\n");
        assert!(
            err.starts_with("config/mirrorgate.yaml:3:") && err.contains("ldap"),
            "{err}"
        );
    }

    #[test]
    fn unknown_clients_key_is_rejected() {
        let err = error_text("clients:\n  mode: token\n  token_file: t.yaml\n");
        assert!(err.contains("unknown field `token_file`"), "{err}");
    }

    #[test]
    fn clients_mode_without_its_file_is_rejected() {
        let errors = [
            error_text("clients:\n  mode: htpasswd\n"),
            error_text("clients:\n  mode: token\n"),
        ];
        assert_eq!(
            errors,
            [
                "config/mirrorgate.yaml: clients.htpasswd_file: mode htpasswd needs htpasswd_file",
                "config/mirrorgate.yaml: clients.tokens_file: mode token needs tokens_file",
            ]
        );
    }

    #[test]
    fn clients_keys_of_another_mode_are_rejected() {
        let errors = [
            error_text("clients:\n  htpasswd_file: h\n"),
            error_text("clients:\n  mode: token\n  tokens_file: t\n  scopes:\n    a: [\"*\"]\n"),
            error_text("clients:\n  mode: htpasswd\n  htpasswd_file: h\n  tokens_file: t\n"),
        ];
        assert!(
            errors[0].ends_with("clients.htpasswd_file: not used with mode anonymous")
                && errors[1].contains("clients.scopes: not used with mode token; the scopes")
                && errors[2].ends_with("clients.tokens_file: not used with mode htpasswd"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_client_scope_is_rejected_with_location() {
        let err = error_text(
            "clients:\n  mode: htpasswd\n  htpasswd_file: h\n  scopes:\n    alice: [busybox]\n",
        );
        assert!(
            err.starts_with("config/mirrorgate.yaml:5:")
                && err.contains("starts with the registry"),
            "{err}"
        );
    }

    #[test]
    fn empty_client_scope_list_is_rejected() {
        let err = error_text(
            "clients:\n  mode: htpasswd\n  htpasswd_file: h\n  scopes:\n    alice: []\n",
        );
        assert!(
            err.contains("clients.scopes.\"alice\": empty list"),
            "{err}"
        );
    }

    #[test]
    fn limits_section_parses() {
        let config = parse(
            "limits:\n  max_connections: 10\n  header_read_timeout: 2s\n  max_header_size: 16KiB\n  max_headers: 200\n  max_upstream_fetches: 3\n  upstream_queue_timeout: 500ms\n",
        )
        .expect("valid limits");
        assert_eq!(
            config.limits,
            LimitsConfig {
                max_connections: 10,
                header_read_timeout: Duration::from_secs(2),
                max_header_size: ByteSize::kib(16),
                max_headers: 200,
                max_upstream_fetches: 3,
                upstream_queue_timeout: Duration::from_millis(500),
            }
        );
    }

    #[test]
    fn zero_limits_are_rejected_naming_the_key() {
        let errors: Vec<String> = [
            "limits:\n  max_connections: 0\n",
            "limits:\n  max_upstream_fetches: 0\n",
            "limits:\n  header_read_timeout: 0s\n",
        ]
        .iter()
        .map(|text| error_text(text))
        .collect();
        assert!(
            errors[0].contains("limits.max_connections: must be greater than 0")
                && errors[1].contains("limits.max_upstream_fetches: must be greater than 0")
                && errors[2].contains("limits.header_read_timeout: must be greater than 0s"),
            "{errors:?}"
        );
    }

    #[test]
    fn too_few_headers_are_rejected() {
        let err = error_text("limits:\n  max_headers: 8\n");
        assert!(
            err.contains("limits.max_headers: must be at least 16"),
            "{err}"
        );
    }

    #[test]
    fn a_header_size_below_what_hyper_needs_is_rejected() {
        let err = error_text("limits:\n  max_header_size: 1KiB\n");
        assert!(
            err.contains("limits.max_header_size: must be at least 8KiB"),
            "{err}"
        );
    }

    #[test]
    fn redirect_networks_accept_networks_and_single_addresses() {
        let config = parse(
            "upstream:\n  redirect_allowed_networks: [127.0.0.0/8, \"::1\", 169.254.10.7/16]\n",
        )
        .expect("valid networks");
        let networks: Vec<String> = config
            .upstream
            .redirect_allowed_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(networks, ["127.0.0.0/8", "::1/128", "169.254.0.0/16"]);
    }

    #[test]
    fn a_bad_redirect_network_is_rejected_with_location() {
        let err = error_text("upstream:\n  redirect_allowed_networks: [10.0.0.0/33]\n");
        assert!(
            err.starts_with("config/mirrorgate.yaml:2:") && err.contains("is not an IP network"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_example_file_states_the_defaults() {
        let shipped = include_str!("../config/mirrorgate.yaml");
        assert_eq!(parse(shipped).ok(), Some(Config::default()));
    }

    #[test]
    fn a_non_loopback_listen_needs_the_clients_section() {
        let err = error_text("listen: 0.0.0.0:5000\n");
        assert!(
            err.contains("clients: listen 0.0.0.0:5000 is not a loopback address"),
            "{err}"
        );
    }

    #[test]
    fn a_non_loopback_listen_with_explicit_anonymous_clients_is_accepted() {
        let config = parse("listen: \"[::]:5000\"\nclients:\n  mode: anonymous\n");
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn self_names_include_the_listen_address() {
        let config =
            parse("self_names: [mirrorgate.mirrorgate.svc:5000, mirrorgate.example.com]\n")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.self_names(),
            vec![
                "mirrorgate.mirrorgate.svc:5000",
                "mirrorgate.example.com",
                "127.0.0.1:5000"
            ]
        );
    }

    #[test]
    fn an_all_interfaces_listen_address_adds_the_loopback_names_and_port_zero_none() {
        let wildcard = parse("listen: \"[::]:5000\"\nclients:\n  mode: anonymous\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let ephemeral = parse("listen: 127.0.0.1:0\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (wildcard.self_names(), ephemeral.self_names()),
            (
                vec![
                    "localhost:5000".to_owned(),
                    "127.0.0.1:5000".to_owned(),
                    "[::1]:5000".to_owned()
                ],
                vec![]
            )
        );
    }

    #[test]
    fn a_self_name_with_a_path_is_rejected_and_named() {
        let err = error_text("self_names: [ok.example.com, mirrorgate.svc:5000/quay.io]\n");
        assert!(
            err.starts_with("config/mirrorgate.yaml: self_names[1]: ")
                && err.contains("a host has no path"),
            "{err}"
        );
    }

    #[test]
    fn a_via_token_is_a_token_or_host_port() {
        let accepted = parse("via_token: mirrorgate.mirrorgate.svc:5000\n")
            .map(|c| c.via_token)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = error_text("via_token: \"mirror gate\"\n");
        assert_eq!(
            (
                accepted.as_deref(),
                err.starts_with("config/mirrorgate.yaml: via_token: ' ' is not allowed")
            ),
            (Some("mirrorgate.mirrorgate.svc:5000"), true),
            "{err}"
        );
    }
}
