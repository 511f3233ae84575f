//! The files the `clients` section names: htpasswd users (bcrypt hashes only) and the YAML file
//! of named tokens. A bad file is an [`AccessError`] naming the file and the line or key; no
//! error holds a secret.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};
use sha2::{Digest as _, Sha256};

use super::{AccessError, Client, ClientScope, ClientsConfig, Hash, MIN_TOKEN_LEN, User, logins};

pub(super) fn read(path: &Path) -> Result<String, AccessError> {
    std::fs::read_to_string(path).map_err(|cause| AccessError::Io {
        path: path.to_owned(),
        cause,
    })
}

pub(super) fn invalid(
    path: &Path,
    location: impl fmt::Display,
    message: impl Into<String>,
) -> AccessError {
    AccessError::Invalid {
        path: path.to_owned(),
        location: location.to_string(),
        message: message.into(),
    }
}

/// Parses `user:bcrypt-hash` lines; blank lines and `#` comments are skipped.
pub(super) fn parse_htpasswd(
    text: &str,
    path: &Path,
    config: &ClientsConfig,
) -> Result<HashMap<String, User>, AccessError> {
    let mut users = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(invalid(path, number, "expected user:bcrypt-hash"));
        };
        if user.is_empty() {
            return Err(invalid(path, number, "empty user name"));
        }
        if user.len() > logins::MAX_USER_NAME_BYTES {
            return Err(invalid(
                path,
                number,
                format!(
                    "user name longer than {} bytes",
                    logins::MAX_USER_NAME_BYTES
                ),
            ));
        }
        check_bcrypt(hash).map_err(|why| invalid(path, number, format!("user {user:?}: {why}")))?;
        let client = Arc::new(Client {
            name: Some(user.to_owned()),
            scopes: config.scopes.get(user).cloned(),
        });
        let user_entry = User {
            hash: Hash(hash.to_owned()),
            client,
        };
        if users.insert(user.to_owned(), user_entry).is_some() {
            return Err(invalid(
                path,
                number,
                format!("user {user:?} appears twice"),
            ));
        }
    }
    Ok(users)
}

/// Checks the shape of a bcrypt hash (`$2y$NN$` + 53 characters) without running bcrypt.
pub(super) fn check_bcrypt(hash: &str) -> Result<(), &'static str> {
    let bcrypt_prefix = ["$2y$", "$2b$", "$2a$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix));
    if !bcrypt_prefix {
        return Err(
            "only bcrypt hashes ($2y$ or $2b$) are supported; create them with `htpasswd -B`",
        );
    }
    let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
    let well_formed = hash.len() == 60
        && hash.as_bytes().get(6) == Some(&b'$')
        && cost.is_some_and(|c| (4..=31).contains(&c))
        && hash[7..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if !well_formed {
        return Err("malformed bcrypt hash");
    }
    Ok(())
}

/// The tokens file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    token: String,
    #[serde(default)]
    scopes: Option<Vec<ClientScope>>,
}

/// Parses the tokens file: `tokens: [{name, token, scopes?}]`.
pub(super) fn parse_tokens(
    text: &str,
    path: &Path,
) -> Result<HashMap<[u8; 32], Arc<Client>>, AccessError> {
    let raw: RawTokens = serde_saphyr::from_str(text).map_err(|err| {
        let location = err
            .location()
            .filter(|loc| loc.line() > 0)
            .map_or_else(String::new, |loc| {
                format!("{}:{}", loc.line(), loc.column())
            });
        // The parser's message may quote the offending value, which can be a token: only
        // messages known not to are passed on.
        let message = DefaultMessageFormatter.format_message(err.without_snippet());
        let safe = ["unknown field", "missing field", "invalid scope"]
            .iter()
            .any(|known| message.contains(known));
        let message = if safe {
            message.into_owned()
        } else {
            "not a tokens file: expected `tokens:` with a list of {name, token, scopes}".to_owned()
        };
        invalid(path, location, message)
    })?;
    let mut tokens = HashMap::new();
    let mut names = std::collections::HashSet::new();
    for (i, entry) in raw.tokens.into_iter().enumerate() {
        if entry.name.trim().is_empty() {
            return Err(invalid(path, format!("tokens[{i}].name"), "empty name"));
        }
        let name = entry.name;
        if !names.insert(name.clone()) {
            return Err(invalid(
                path,
                format!("tokens[{i}].name"),
                format!("{name:?} appears twice"),
            ));
        }
        let token = entry.token.trim();
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                path,
                format!("tokens[{i}].token"),
                format!(
                    "token of {name:?} must be at least {MIN_TOKEN_LEN} printable characters without spaces"
                ),
            ));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let client = Arc::new(Client {
            name: Some(name.clone()),
            scopes: entry.scopes,
        });
        if tokens.insert(key, client).is_some() {
            return Err(invalid(
                path,
                format!("tokens[{i}].token"),
                format!("token of {name:?} is also another entry's token"),
            ));
        }
    }
    Ok(tokens)
}
