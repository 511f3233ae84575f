//! The `clients` section and the repository scopes a client may be limited to.
//!
//! Principal types: [`ClientsConfig`] (the section), [`ClientMode`] (how clients authenticate)
//! and [`ClientScope`] (one repository scope, as written in the section or a tokens file).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::reference::Host;
use crate::section::section;
use crate::section::values::Invalid;

/// The `clients` section: how clients authenticate and which repositories each may pull.
///
/// The files it names are read when the proxy starts (a bad one fails `serve`, naming the file
/// and the line or key) and again on every reload; a reload whose files are bad keeps the access
/// in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientsConfig {
    /// How requests are authenticated.
    pub mode: ClientMode,
    /// Mode `htpasswd`: the file of `user:bcrypt-hash` lines (`htpasswd -B`).
    pub htpasswd_file: Option<PathBuf>,
    /// Mode `token`: the YAML file `tokens: [{name, token, scopes}]`.
    pub tokens_file: Option<PathBuf>,
    /// Mode `htpasswd`: the repository scopes of each user; a user not listed may pull
    /// everything.
    pub scopes: BTreeMap<String, Vec<ClientScope>>,
    /// Whether a client on this host (a loopback listener or peer, without the headers a
    /// proxy in front adds) is an operator without credentials (`/status`, the warm API).
    /// `false` when a proxy on the same host forwards other hosts' requests.
    pub trust_loopback: bool,
}

section!(ClientsConfig {
    mode,
    htpasswd_file,
    tokens_file,
    scopes,
    trust_loopback,
});

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig {
            mode: ClientMode::default(),
            htpasswd_file: None,
            tokens_file: None,
            scopes: BTreeMap::new(),
            trust_loopback: true,
        }
    }
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

impl ClientsConfig {
    /// Checks that the mode has its file and that keys of other modes are not set; keys are
    /// relative to the section.
    pub fn validate(&self) -> Result<(), Invalid> {
        Invalid::empty_path("htpasswd_file", self.htpasswd_file.as_ref())?;
        Invalid::empty_path("tokens_file", self.tokens_file.as_ref())?;
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
            return Err(Invalid::new(key, format!("mode {mode} needs {key}")));
        }
        if let Some(key) = unused.iter().find(|key| set(key)) {
            let hint = if *key == "scopes" && self.mode == ClientMode::Token {
                "; the scopes of a token are given in tokens_file"
            } else {
                ""
            };
            return Err(Invalid::new(
                *key,
                format!("not used with mode {mode}{hint}"),
            ));
        }
        for (user, scopes) in &self.scopes {
            if user.is_empty() || user.contains(':') {
                return Err(Invalid::new(
                    format!("scopes.{user:?}"),
                    "not a user name (empty or has ':')",
                ));
            }
            if scopes.is_empty() {
                return Err(Invalid::new(
                    format!("scopes.{user:?}"),
                    "empty list: the user could pull nothing; remove the user from \
                     htpasswd_file instead",
                ));
            }
        }
        Ok(())
    }
}

/// A repository scope: `*` (everything), `<prefix>/*` (every repository under the prefix) or an
/// exact logical repository name such as `quay.io/openshift-release-dev/ocp-release`.
///
/// Names are logical and normalised, registry first: `docker.io/library/busybox`, not `busybox`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientScope {
    /// `*`: every repository.
    All,
    /// `<prefix>/*`: every repository whose name starts with `<prefix>/`.
    Under(String),
    /// An exact repository name.
    Exact(String),
}

impl ClientScope {
    /// Whether the logical repository `name` is in this scope.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            ClientScope::All => true,
            ClientScope::Under(prefix) => name
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1),
            ClientScope::Exact(exact) => name == exact,
        }
    }
}

impl fmt::Display for ClientScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientScope::All => f.write_str("*"),
            ClientScope::Under(prefix) => write!(f, "{prefix}/*"),
            ClientScope::Exact(name) => f.write_str(name),
        }
    }
}

/// Why a string is not a [`ClientScope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {input:?}: {reason}")]
pub struct ClientScopeError {
    input: String,
    reason: &'static str,
}

impl FromStr for ClientScope {
    type Err = ClientScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &'static str| ClientScopeError {
            input: s.to_owned(),
            reason,
        };
        if s == "*" {
            return Ok(ClientScope::All);
        }
        let (name, under) = match s.strip_suffix("/*") {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        if name.is_empty() {
            return Err(fail("empty"));
        }
        if name.contains('*') {
            return Err(fail(
                "`*` is only allowed alone or as a trailing `/*` (everything under a prefix)",
            ));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("contains whitespace"));
        }
        if name.contains(['@', '?', '#']) || name.contains("://") {
            return Err(fail(
                "a scope is a repository name, without scheme, tag or digest",
            ));
        }
        if name.split('/').any(str::is_empty) {
            return Err(fail(
                "empty path component (leading, trailing or double `/`)",
            ));
        }
        let first = name.split('/').next().unwrap_or_default();
        if !Host::is_registry_component(first) {
            return Err(fail(
                "a scope starts with the registry, e.g. docker.io/library/busybox or quay.io/ns/*",
            ));
        }
        let name = name.to_owned();
        Ok(if under {
            ClientScope::Under(name)
        } else {
            ClientScope::Exact(name)
        })
    }
}

impl<'de> Deserialize<'de> for ClientScope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The repositories a client may pull: `None` is everything.
pub(super) fn allowed(scopes: Option<&[ClientScope]>, name: &str) -> bool {
    scopes.is_none_or(|scopes| scopes.iter().any(|scope| scope.allows(name)))
}
