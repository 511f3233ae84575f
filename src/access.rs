//! Who may pull through mirrorgate: client authentication and repository scopes (the `clients`
//! section of the configuration).
//!
//! Principal types: [`ClientsConfig`] (the section), [`Access`] (the loaded credentials and
//! scopes), [`Client`] (who a request is), [`ClientScope`], and the refusals [`Unauthorized`] and
//! [`Denied`] (turned into HTTP answers by `http::error`).
//!
//! Three modes:
//! - `anonymous` (the default): every request is served, as before this section existed;
//! - `htpasswd`: `Authorization: Basic` is checked against the bcrypt hashes of an htpasswd file,
//!   and each user may be limited to repository scopes (`clients.scopes`);
//! - `token`: `Authorization: Bearer <token>` is looked up in a YAML file of named tokens, each
//!   with its own scopes.
//!
//! A request without valid credentials gets `401 UNAUTHORIZED` with a `WWW-Authenticate`
//! challenge (so that skopeo, podman and containerd log in as with any registry); a valid client
//! naming a repository outside its scopes gets `403 DENIED`. Both checks run before the proxy
//! looks at its cache, so cached content is only ever served to a client allowed its
//! repository. `/healthz`, `/readyz` and `/metrics` need no credentials.
//!
//! Credentials are never logged, counted or echoed: errors name users and tokens by name, and
//! the `Debug` of every type here redacts hashes and tokens.

mod config;
mod files;
mod logins;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};

use config::allowed;
pub use config::{ClientMode, ClientScope, ClientScopeError, ClientsConfig};
use files::{parse_htpasswd, parse_tokens, read};

/// The realm named in `WWW-Authenticate` challenges.
pub const REALM: &str = "mirrorgate";
/// How long a successful password verification is reused without running bcrypt again.
const VERIFIED_TTL: Duration = Duration::from_secs(120);
/// At most this many verified `Authorization` headers are remembered.
const VERIFIED_CAPACITY: usize = 10_000;
/// Tokens shorter than this are refused when the tokens file is read: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// An authenticated client (or, in `anonymous` mode, anyone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The user or token name; `None` for anonymous access. Never a secret.
    name: Option<String>,
    /// The repository scopes; `None` is every repository.
    scopes: Option<Vec<ClientScope>>,
}

impl Client {
    fn anyone() -> Arc<Client> {
        Arc::new(Client {
            name: None,
            scopes: None,
        })
    }

    /// The user or token name, or `None` for anonymous access.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether this client may pull from the logical repository `name`.
    pub fn allows(&self, name: &str) -> bool {
        allowed(self.scopes.as_deref(), name)
    }

    /// Whether this client is limited to some repositories (has scopes, none of them `*`).
    pub fn is_scoped(&self) -> bool {
        self.scopes
            .as_ref()
            .is_some_and(|scopes| !scopes.contains(&ClientScope::All))
    }

    /// Refuses a request for the logical repository `name` (`None`: a request naming no
    /// repository, always allowed) when it is outside this client's scopes.
    pub fn authorize(&self, name: Option<&str>) -> Result<(), Denied> {
        let Some(name) = name else {
            return Ok(());
        };
        if self.allows(name) {
            return Ok(());
        }
        let who = self.name.as_deref().unwrap_or("anonymous");
        tracing::info!(
            client = who,
            repository = name,
            "refused: outside the client's scopes"
        );
        Err(Denied {
            client: who.to_owned(),
            repository: name.to_owned(),
        })
    }
}

/// A client asked for a repository outside its scopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client {client:?} may not pull from {repository}")]
pub struct Denied {
    /// The user or token name (`anonymous` for none).
    pub client: String,
    /// The logical repository asked for.
    pub repository: String,
}

/// A bcrypt hash from an htpasswd file; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
struct Hash(String);

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One htpasswd user.
#[derive(Debug)]
struct User {
    hash: Hash,
    client: Arc<Client>,
}

/// SHA-256 of an `Authorization` header that verified → the client and when.
type Verified = Mutex<HashMap<[u8; 32], (Arc<Client>, Instant)>>;

/// How requests are authenticated.
enum Mode {
    Anonymous,
    Htpasswd {
        users: HashMap<String, User>,
        /// SHA-256 of an `Authorization` header that verified → the client and when.
        verified: Verified,
        /// What password checks may cost.
        logins: logins::Logins,
    },
    Token {
        /// SHA-256 of the token → the client.
        tokens: HashMap<[u8; 32], Arc<Client>>,
    },
}

/// Who may pull: the credentials and scopes loaded from the `clients` section and its files.
pub struct Access {
    mode: Mode,
    anyone: Arc<Client>,
    trust_loopback: bool,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mode, clients): (&str, Vec<&str>) = match &self.mode {
            Mode::Anonymous => ("anonymous", Vec::new()),
            Mode::Htpasswd { users, .. } => {
                ("htpasswd", users.keys().map(String::as_str).collect())
            }
            Mode::Token { tokens } => (
                "token",
                tokens.values().filter_map(|c| c.name.as_deref()).collect(),
            ),
        };
        f.debug_struct("Access")
            .field("mode", &mode)
            .field("clients", &clients)
            .finish_non_exhaustive()
    }
}

/// Why the files of the `clients` section could not be loaded. Messages name the file and the
/// line or key, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A file could not be read.
    #[error("{}: cannot read: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A line or key of a file is not acceptable.
    #[error("{}:{location}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (`12`), line and column (`3:5`), or key path (`tokens[1].token`).
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The configuration lacks the file its mode needs (normally caught by validation).
    #[error("clients: {0}")]
    Config(String),
}

impl Access {
    /// Everyone may pull everything.
    pub fn anonymous() -> Access {
        Access {
            mode: Mode::Anonymous,
            anyone: Client::anyone(),
            trust_loopback: true,
        }
    }

    /// Reads the files the `clients` section names.
    pub fn load(config: &ClientsConfig) -> Result<Access, AccessError> {
        let mode = match config.mode {
            ClientMode::Anonymous => Mode::Anonymous,
            ClientMode::Htpasswd => {
                let path = config.htpasswd_file.as_deref().ok_or_else(|| {
                    AccessError::Config("mode htpasswd needs htpasswd_file".to_owned())
                })?;
                let text = read(path)?;
                let users = parse_htpasswd(&text, path, config)?;
                for user in config.scopes.keys() {
                    if !users.contains_key(user) {
                        tracing::warn!(user = %user, file = %path.display(), "clients.scopes names a user the htpasswd file does not have");
                    }
                }
                let sample = users.values().next().map(|user| user.hash.0.clone());
                Mode::Htpasswd {
                    users,
                    verified: Mutex::new(HashMap::new()),
                    logins: logins::Logins::new(sample.as_deref()),
                }
            }
            ClientMode::Token => {
                let path = config.tokens_file.as_deref().ok_or_else(|| {
                    AccessError::Config("mode token needs tokens_file".to_owned())
                })?;
                let text = read(path)?;
                Mode::Token {
                    tokens: parse_tokens(&text, path)?,
                }
            }
        };
        Ok(Access {
            mode,
            anyone: Client::anyone(),
            trust_loopback: config.trust_loopback,
        })
    }

    /// Whether a request from this host that no proxy forwarded is an operator's without
    /// credentials (`clients.trust_loopback`).
    pub fn trusts_loopback(&self) -> bool {
        self.trust_loopback
    }

    /// Whether requests are served without credentials.
    pub fn is_anonymous(&self) -> bool {
        matches!(self.mode, Mode::Anonymous)
    }

    /// The client behind a request to `path` from `peer`, or the 401 refusal (429 after too
    /// many failed logins). `/healthz`, `/readyz` and `/metrics` need no credentials; in
    /// `anonymous` mode nothing does.
    pub async fn authenticate(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Client>, Unauthorized> {
        if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return Ok(self.anyone.clone());
        }
        let result = match &self.mode {
            Mode::Anonymous => return Ok(self.anyone.clone()),
            Mode::Htpasswd {
                users,
                verified,
                logins,
            } => basic(users, verified, logins, headers, peer).await,
            Mode::Token { tokens } => bearer(tokens, headers).map_err(Refused::Invalid),
        };
        let scheme = match self.mode {
            Mode::Token { .. } => "Bearer",
            _ => "Basic",
        };
        result.map_err(|refused| match refused {
            Refused::Invalid(reason) => {
                tracing::info!(path, reason, "refused: no valid credentials");
                Unauthorized {
                    scheme,
                    retry_after: None,
                }
            }
            Refused::TooMany(wait) => {
                tracing::info!(path, peer = ?peer, "refused: too many failed logins");
                Unauthorized {
                    scheme,
                    retry_after: Some(wait.as_secs() + 1),
                }
            }
        })
    }
}

/// Why credentials were refused.
enum Refused {
    /// Missing or wrong; the reason never holds a secret.
    Invalid(&'static str),
    /// Too many failed logins from this address or for this user: come back after this.
    TooMany(Duration),
}

impl From<&'static str> for Refused {
    fn from(reason: &'static str) -> Refused {
        Refused::Invalid(reason)
    }
}

/// Checks `Authorization: Basic` from `peer`; `Err` says why it failed (never with the
/// password).
async fn basic(
    users: &HashMap<String, User>,
    verified: &Verified,
    logins: &logins::Logins,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Arc<Client>, Refused> {
    let value = credentials(headers, "Basic")?;
    let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
    if let Ok(cache) = verified.lock()
        && let Some((client, at)) = cache.get(&key)
        && at.elapsed() < VERIFIED_TTL
    {
        return Ok(client.clone());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| "Basic credentials are not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "Basic credentials are not UTF-8")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("Basic credentials have no ':'")?;
    if let Some(wait) = logins.blocked(peer, user) {
        return Err(Refused::TooMany(wait));
    }
    // No htpasswd file holds such a name, so refusing it at once tells nothing.
    if user.len() > logins::MAX_USER_NAME_BYTES {
        logins.failed(peer, user);
        return Err(Refused::Invalid("unknown user or wrong password"));
    }
    let entry = users.get(user);
    // An unknown user costs a verification too (against a dummy hash): the time a refusal
    // takes does not tell which users exist.
    let ok = logins
        .verify(password.to_owned(), entry.map(|e| e.hash.0.clone()))
        .await;
    let Some(entry) = entry.filter(|_| ok) else {
        logins.failed(peer, user);
        return Err(Refused::Invalid("unknown user or wrong password"));
    };
    if let Ok(mut cache) = verified.lock() {
        if cache.len() >= VERIFIED_CAPACITY {
            cache.retain(|_, (_, at)| at.elapsed() < VERIFIED_TTL);
            if cache.len() >= VERIFIED_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (entry.client.clone(), Instant::now()));
    }
    Ok(entry.client.clone())
}

/// Checks `Authorization: Bearer`.
fn bearer(
    tokens: &HashMap<[u8; 32], Arc<Client>>,
    headers: &HeaderMap,
) -> Result<Arc<Client>, &'static str> {
    let token = credentials(headers, "Bearer")?;
    let key: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    tokens.get(&key).cloned().ok_or("unknown token")
}

/// The credentials of `Authorization: <scheme> <credentials>` (scheme case-insensitive).
fn credentials<'h>(headers: &'h HeaderMap, scheme: &str) -> Result<&'h str, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "Authorization header is not text")?;
    let (given, rest) = value
        .split_once(' ')
        .ok_or("Authorization header has no scheme")?;
    if !given.eq_ignore_ascii_case(scheme) {
        return Err("Authorization header uses another scheme");
    }
    Ok(rest)
}

/// A request without valid credentials: the answer is a challenge in this scheme (a `429` with
/// `Retry-After` after too many failed logins); `http::error` turns it into the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized {
    scheme: &'static str,
    /// Seconds to wait: set after too many failed logins.
    retry_after: Option<u64>,
}

impl Unauthorized {
    /// The refusal where `Authorization: Basic` is expected.
    pub const BASIC: Unauthorized = Unauthorized {
        scheme: "Basic",
        retry_after: None,
    };
    /// The refusal where `Authorization: Bearer` is expected.
    pub const BEARER: Unauthorized = Unauthorized {
        scheme: "Bearer",
        retry_after: None,
    };

    /// Seconds to wait before trying again, after too many failed logins.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The `WWW-Authenticate` challenge: `<scheme> realm="mirrorgate"`.
    pub fn challenge(&self) -> String {
        format!("{} realm=\"{REALM}\"", self.scheme)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use http::HeaderValue;

    fn scope(s: &str) -> ClientScope {
        s.parse().expect("valid scope")
    }

    #[test]
    fn scope_forms_and_matching() {
        let under = scope("quay.io/openshift-release-dev/*");
        let exact = scope("quay.io/openshift-release-dev/ocp-release");
        assert_eq!(
            (
                under.allows("quay.io/openshift-release-dev/ocp-release"),
                under.allows("quay.io/openshift-release-dev/a/b"),
                under.allows("quay.io/openshift-release-dev"),
                under.allows("quay.io/openshift-release-devil/x"),
                exact.allows("quay.io/openshift-release-dev/ocp-release"),
                exact.allows("quay.io/openshift-release-dev/ocp-release-art"),
                scope("*").allows("docker.io/library/busybox"),
            ),
            (true, true, false, false, true, false, true)
        );
    }

    #[test]
    fn bad_scopes_are_rejected() {
        let bad = [
            "",
            "/*",
            "quay.io/*/x",
            "quay.io/ns*",
            "library/busybox",
            "quay.io//x",
            "quay.io/x/",
            "quay.io/x:v1@sha256:00",
            "https://quay.io/x",
            "quay.io/a b",
        ];
        let accepted: Vec<&str> = bad
            .iter()
            .copied()
            .filter(|s| s.parse::<ClientScope>().is_ok())
            .collect();
        assert_eq!(accepted, Vec::<&str>::new());
    }

    #[test]
    fn scope_display_round_trips() {
        for text in ["*", "quay.io/ns/*", "localhost:5000/app"] {
            assert_eq!(scope(text).to_string(), text);
        }
    }

    fn htpasswd_config(scopes: &[(&str, &[&str])]) -> ClientsConfig {
        ClientsConfig {
            mode: ClientMode::Htpasswd,
            htpasswd_file: Some(PathBuf::from("htpasswd")),
            tokens_file: None,
            scopes: scopes
                .iter()
                .map(|(u, s)| ((*u).to_owned(), s.iter().map(|s| scope(s)).collect()))
                .collect(),
            trust_loopback: true,
        }
    }

    const HASH: &str = "$2y$04$abcdefghijklmnopqrstuu5Tgv3Ma3bcn7B/nc3Cc0Oh4dR1VmyLS";

    #[test]
    fn htpasswd_lines_are_parsed_with_scopes() {
        let text = format!("# users\n\nalice:{HASH}\nbob:{HASH}\n");
        let config = htpasswd_config(&[("alice", &["quay.io/ns/*"])]);
        let users = parse_htpasswd(&text, Path::new("htpasswd"), &config).expect("valid");
        assert_eq!(
            (
                users["alice"].client.allows("quay.io/ns/app"),
                users["alice"].client.allows("quay.io/other/app"),
                users["bob"].client.allows("quay.io/other/app"),
            ),
            (true, false, true)
        );
    }

    #[test]
    fn htpasswd_errors_name_file_and_line() {
        let config = htpasswd_config(&[]);
        let errors: Vec<String> = [
            format!("alice:{HASH}\nbob\n"),
            format!("alice:{HASH}\n\nbob:{{SHA}}abc=\n"),
            format!("alice:{HASH}\nalice:{HASH}\n"),
            "alice:$2y$04$short\n".to_owned(),
        ]
        .iter()
        .map(|text| {
            parse_htpasswd(text, Path::new("/etc/htpasswd"), &config)
                .expect_err("invalid")
                .to_string()
        })
        .collect();
        assert_eq!(
            errors,
            vec![
                "/etc/htpasswd:2: expected user:bcrypt-hash".to_owned(),
                "/etc/htpasswd:3: user \"bob\": only bcrypt hashes ($2y$ or $2b$) are supported; \
                 create them with `htpasswd -B`"
                    .to_owned(),
                "/etc/htpasswd:2: user \"alice\" appears twice".to_owned(),
                "/etc/htpasswd:1: user \"alice\": malformed bcrypt hash".to_owned(),
            ]
        );
    }

    #[test]
    fn tokens_file_is_parsed() {
        let text = "tokens:\n  - name: ci\n    token: 0123456789abcdef-ci\n    scopes: [\"quay.io/ns/*\"]\n  - name: admin\n    token: 0123456789abcdef-admin\n";
        let tokens = parse_tokens(text, Path::new("tokens.yaml")).expect("valid");
        let get = |t: &str| tokens[&<[u8; 32]>::from(Sha256::digest(t.as_bytes()))].clone();
        let (ci, admin) = (get("0123456789abcdef-ci"), get("0123456789abcdef-admin"));
        assert_eq!(
            (
                ci.name(),
                ci.allows("quay.io/ns/app"),
                ci.allows("docker.io/library/busybox"),
                admin.allows("docker.io/library/busybox"),
            ),
            (Some("ci"), true, false, true)
        );
    }

    #[test]
    fn token_errors_name_file_and_key_without_the_token() {
        let errors: Vec<String> = [
            "tokens:\n  - name: ci\n    token: short-secret\n",
            "tokens:\n  - name: a\n    token: 0123456789abcdef\n  - name: a\n    token: 0123456789abcdefg\n",
            "tokens:\n  - name: a\n    token: 0123456789abcdef\n  - name: b\n    token: 0123456789abcdef\n",
            "tokens:\n  - name: a\n    token: 0123456789abcdef\n    scope: [\"*\"]\n",
            "tokens:\n  - name: a\n    token: 0123456789abcdef\n    scopes: [busybox]\n",
        ]
        .iter()
        .map(|text| {
            parse_tokens(text, Path::new("tokens.yaml"))
                .expect_err("invalid")
                .to_string()
        })
        .collect();
        assert!(
            errors[0].starts_with("tokens.yaml:tokens[0].token: ")
                && !errors[0].contains("short-secret"),
            "{errors:?}"
        );
        assert!(
            errors[1] == "tokens.yaml:tokens[1].name: \"a\" appears twice"
                && errors[2].starts_with("tokens.yaml:tokens[1].token: ")
                && !errors[2].contains("0123456789abcdef")
                && errors[3].starts_with("tokens.yaml:4:")
                && errors[3].contains("unknown field `scope`")
                && errors[4].starts_with("tokens.yaml:4:")
                && errors[4].contains("starts with the registry"),
            "{errors:?}"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let config = htpasswd_config(&[]);
        let users =
            parse_htpasswd(&format!("alice:{HASH}\n"), Path::new("h"), &config).expect("valid");
        let access = Access {
            mode: Mode::Htpasswd {
                users,
                verified: Mutex::new(HashMap::new()),
                logins: logins::Logins::new(None),
            },
            anyone: Client::anyone(),
            trust_loopback: true,
        };
        let shown = format!(
            "{access:?} {:?}",
            parse_htpasswd(&format!("alice:{HASH}\n"), Path::new("h"), &config)
        );
        assert!(
            shown.contains("alice") && !shown.contains(HASH) && !shown.contains("$2y$"),
            "{shown}"
        );
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).expect("header"),
        );
        headers
    }

    /// Htpasswd access with one user, `alice`, whose password is `s3cret`.
    fn alice_with_password_s3cret() -> Access {
        let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
        let config = htpasswd_config(&[]);
        Access {
            mode: Mode::Htpasswd {
                users: parse_htpasswd(&format!("alice:{hash}\n"), Path::new("h"), &config)
                    .expect("valid"),
                verified: Mutex::new(HashMap::new()),
                logins: logins::Logins::new(Some(&hash)),
            },
            anyone: Client::anyone(),
            trust_loopback: true,
        }
    }

    #[tokio::test]
    async fn repeated_failed_logins_get_429_with_retry_after_even_with_the_right_password() {
        let access = alice_with_password_s3cret();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let attacker: IpAddr = "192.0.2.7".parse().unwrap();
        let mut statuses = Vec::new();
        for attempt in 0..=logins::MAX_FAILURES {
            let guess = headers(&format!("Basic {}", b64(&format!("mallory{attempt}:x"))));
            let refusal = access
                .authenticate("/v2/", &guess, Some(attacker))
                .await
                .expect_err("wrong credentials");
            statuses.push(
                crate::http::ApiError::unauthorized(refusal)
                    .into_response(false)
                    .status()
                    .as_u16(),
            );
        }
        let good = headers(&format!("Basic {}", b64("alice:s3cret")));
        let blocked = crate::http::ApiError::unauthorized(
            access
                .authenticate("/v2/", &good, Some(attacker))
                .await
                .expect_err("blocked address"),
        )
        .into_response(false);
        let elsewhere = access
            .authenticate("/v2/", &good, Some("192.0.2.8".parse().unwrap()))
            .await
            .is_ok();
        let mut expected = vec![401; logins::MAX_FAILURES as usize];
        expected.push(429);
        assert_eq!(
            (
                statuses,
                blocked.status().as_u16(),
                blocked.headers().contains_key(header::RETRY_AFTER),
                elsewhere
            ),
            (expected, 429, true, true)
        );
    }

    #[test]
    fn an_htpasswd_user_name_longer_than_htpasswd_allows_is_refused_naming_the_line() {
        let config = htpasswd_config(&[]);
        let long = "u".repeat(logins::MAX_USER_NAME_BYTES + 1);
        let longest = "u".repeat(logins::MAX_USER_NAME_BYTES);
        let text = format!("{longest}:{HASH}\n{long}:{HASH}\n");
        assert_eq!(
            parse_htpasswd(&text, Path::new("h"), &config)
                .map(|users| users.len())
                .map_err(|e| e.to_string()),
            Err(format!(
                "h:2: user name longer than {} bytes",
                logins::MAX_USER_NAME_BYTES
            ))
        );
    }

    #[tokio::test]
    async fn basic_credentials_are_verified_and_cached() {
        let access = alice_with_password_s3cret();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let good = headers(&format!("Basic {}", b64("alice:s3cret")));
        let bad = headers(&format!("basic {}", b64("alice:wrong")));
        let results = (
            access
                .authenticate("/v2/", &good, None)
                .await
                .ok()
                .map(|c| c.name.clone()),
            access.authenticate("/v2/", &good, None).await.is_ok(),
            access.authenticate("/v2/", &bad, None).await.is_err(),
            access
                .authenticate("/v2/", &HeaderMap::new(), None)
                .await
                .is_err(),
            access
                .authenticate("/healthz", &HeaderMap::new(), None)
                .await
                .is_ok(),
        );
        let cached = match &access.mode {
            Mode::Htpasswd { verified, .. } => verified.lock().map(|c| c.len()).unwrap_or(0),
            _ => 0,
        };
        assert_eq!(
            results,
            (Some(Some("alice".to_owned())), true, true, true, true)
        );
        assert_eq!(cached, 1);
    }
}
