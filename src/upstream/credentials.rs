//! Registry credentials from a pull secret (dockerconfigjson, which is also the containers
//! `auth.json` format):
//!
//! ```json
//! {"auths": {"quay.io": {"auth": "base64(user:password)"},
//!            "quay.io/team": {"username": "robot", "password": "…"}}}
//! ```
//!
//! Lookup follows containers/image (`pkg/docker/config`): keys may name a namespace or
//! repository below a host, and the most specific key that is a path prefix of the repository
//! wins, then the host key. Keys written the old Docker way, with a scheme and a path
//! (`https://index.docker.io/v1/`), only ever name a host and are consulted last. Docker Hub has
//! three host names (`docker.io`, `index.docker.io`, `registry-1.docker.io`) that all mean the same
//! credentials.
//!
//! Secrets never leave this module except as a ready-made `Authorization` header value marked
//! sensitive; `Debug` output and error messages never contain them.
//!
//! A registry's credentials go to its own endpoint, and to the token realm its bearer challenge
//! names only when [`realm_receives_credentials`]: the realm is on the registry's own endpoint
//! (quay.io's `https://quay.io/v2/auth`), or on a host that is no other configured registry's
//! endpoint (Docker Hub's `https://auth.docker.io/token`). A realm on another configured
//! registry's endpoint host is asked for a token anonymously: the registry chooses the realm,
//! and must not be able to hand its credentials to another registry mirrorgate talks to.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose};
use http::HeaderValue;

use url::{Origin, Url};

use super::UpstreamError;

/// Decodes the `auth` field with or without `=` padding (both are found in the wild).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A user name and password, held only as the `Authorization: Basic …` value they make.
#[derive(Clone)]
pub(crate) struct BasicAuth {
    /// Kept only in tests, to tell entries apart; the running proxy never needs it.
    #[cfg(test)]
    username: String,
    authorization: HeaderValue,
}

impl BasicAuth {
    fn new(username: &str, password: &str) -> BasicAuth {
        let encoded = general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let mut authorization = HeaderValue::try_from(format!("Basic {encoded}"))
            .expect("base64 is always a valid header value");
        // Keeps the value out of HTTP/2 header compression tables and out of `Debug` output.
        authorization.set_sensitive(true);
        BasicAuth {
            #[cfg(test)]
            username: username.to_owned(),
            authorization,
        }
    }

    /// The `Authorization` header value (`Basic …`), marked sensitive.
    pub(crate) fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The user name.
    #[cfg(test)]
    pub(crate) fn username(&self) -> &str {
        &self.username
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Redacted entirely: even user names can be secrets (robot accounts, tokens as names).
        f.write_str("BasicAuth(<redacted>)")
    }
}

/// All credentials of a pull secret, ready for lookup.
#[derive(Default)]
pub(crate) struct Credentials {
    /// Keys written without a scheme, normalised to `host` or `host/path`.
    exact: HashMap<String, BasicAuth>,
    /// Keys written with a scheme (`https://index.docker.io/v1/`), normalised to their host;
    /// the first in key order wins when several normalise to one host.
    legacy: HashMap<String, BasicAuth>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.exact.keys().chain(self.legacy.keys()).collect();
        keys.sort();
        f.debug_struct("Credentials").field("keys", &keys).finish()
    }
}

impl Credentials {
    /// Reads the pull secret at `path`. Errors name the file and, for a bad entry, its key.
    pub(crate) fn load(path: &Path) -> Result<Credentials, UpstreamError> {
        let bytes = std::fs::read(path).map_err(|err| UpstreamError::PullSecret {
            path: path.to_owned(),
            key: None,
            reason: format!("cannot read the file: {err}"),
        })?;
        Credentials::parse(&bytes, path)
    }

    /// Parses pull secret text; `path` only names the source in errors.
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Credentials, UpstreamError> {
        let error = |key: Option<&str>, reason: String| UpstreamError::PullSecret {
            path: path.to_owned(),
            key: key.map(str::to_owned),
            reason,
        };
        // Parsed as a generic value and checked by hand, so that no error message can quote a
        // secret (serde's "invalid type" messages quote the offending value).
        let root: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| {
            error(
                None,
                format!(
                    "not valid JSON (line {}, column {})",
                    err.line(),
                    err.column()
                ),
            )
        })?;
        let Some(root) = root.as_object() else {
            return Err(error(None, "expected a JSON object".to_owned()));
        };
        let mut credentials = Credentials::default();
        let Some(auths) = root.get("auths") else {
            // An auth.json may legitimately have no `auths` (only `credHelpers`, say).
            return Ok(credentials);
        };
        let Some(auths) = auths.as_object() else {
            return Err(error(None, "\"auths\" must be an object".to_owned()));
        };
        // serde_json's map is ordered by key, so "first wins" below is deterministic.
        for (key, entry) in auths {
            let Some(auth) = parse_entry(entry).map_err(|reason| error(Some(key), reason))? else {
                tracing::warn!(
                    pull_secret = %path.display(),
                    key = %key,
                    "pull secret entry has neither \"auth\" nor \"username\"; ignored"
                );
                continue;
            };
            match normalize_key(key) {
                Some((true, host)) => {
                    credentials.legacy.entry(host).or_insert(auth);
                }
                Some((false, name)) => {
                    credentials.exact.insert(name, auth);
                }
                None => return Err(error(Some(key), "not a registry host".to_owned())),
            }
        }
        Ok(credentials)
    }

    /// The credentials for `repository` on the registry `registry` (`host[:port]`, as contacted):
    /// the most specific key, then the host key, then an old-style key for the host.
    pub(crate) fn lookup(&self, registry: &str, repository: &str) -> Option<&BasicAuth> {
        let host = canonical_host(&registry.to_ascii_lowercase());
        let mut path = repository.trim_matches('/');
        loop {
            let key = if path.is_empty() {
                host.clone()
            } else {
                format!("{host}/{path}")
            };
            if let Some(auth) = self.exact.get(&key) {
                return Some(auth);
            }
            if path.is_empty() {
                break;
            }
            path = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
        self.legacy.get(&host)
    }
}

/// Reads one `auths` entry: `auth` (base64 of `user:password`) or `username` + `password`.
/// `Ok(None)` for an entry with neither (e.g. only an `identitytoken`, which is not supported).
/// Whether a token `realm` may receive the credentials of the registry whose endpoints are
/// `own`, when `configured` are the endpoints of every configured registry: yes on the
/// registry's own endpoint (origin or host); no on another configured registry's endpoint
/// origin or host; yes anywhere else (a public token service).
pub(crate) fn realm_receives_credentials(
    realm: &Url,
    own: &[Origin],
    configured: &[Origin],
) -> bool {
    let origin = realm.origin();
    if own.contains(&origin) {
        return true;
    }
    let host = |origin: &Origin| match origin {
        Origin::Tuple(_, host, _) => Some(host.clone()),
        Origin::Opaque(_) => None,
    };
    let Some(realm_host) = host(&origin) else {
        return false;
    };
    let mut others = configured.iter().filter(|endpoint| !own.contains(endpoint));
    if others.clone().any(|endpoint| *endpoint == origin) {
        return false;
    }
    own.iter()
        .any(|endpoint| host(endpoint).as_ref() == Some(&realm_host))
        || !others.any(|endpoint| host(endpoint).as_ref() == Some(&realm_host))
}

fn parse_entry(entry: &serde_json::Value) -> Result<Option<BasicAuth>, String> {
    let Some(entry) = entry.as_object() else {
        return Err("expected an object".to_owned());
    };
    let field = |name: &str| -> Result<Option<&str>, String> {
        match entry.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("\"{name}\" must be a string")),
        }
    };
    if let Some(auth) = field("auth")?.map(str::trim).filter(|s| !s.is_empty()) {
        let decoded = LENIENT_BASE64
            .decode(auth)
            .or_else(|_| STANDARD.decode(auth))
            .map_err(|_| "\"auth\" is not valid base64".to_owned())?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| "\"auth\" does not decode to UTF-8 text".to_owned())?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| "\"auth\" does not decode to user:password".to_owned())?;
        if username.is_empty() {
            return Err("\"auth\" has an empty user name".to_owned());
        }
        return Ok(Some(BasicAuth::new(username, password)));
    }
    match field("username")?.filter(|s| !s.is_empty()) {
        Some(username) => Ok(Some(BasicAuth::new(
            username,
            field("password")?.unwrap_or(""),
        ))),
        None => Ok(None),
    }
}

/// Normalises an `auths` key to `(legacy, name)`: legacy keys (written with a scheme) become
/// their host; others `host` or `host/path`, without trailing `/`. `None` for an empty host.
fn normalize_key(key: &str) -> Option<(bool, String)> {
    let key = key.trim();
    let lower = key.to_ascii_lowercase();
    let without_scheme = ["https://", "http://"]
        .iter()
        .find_map(|scheme| lower.starts_with(scheme).then(|| &key[scheme.len()..]));
    let (legacy, host, path) = match without_scheme {
        // containers/image: a key with a scheme only ever names a host (`/v1/` and the like are
        // leftovers of the Docker v1 API).
        Some(rest) => (true, rest.split('/').next().unwrap_or(""), ""),
        None => {
            let trimmed = key.trim_end_matches('/');
            let (host, path) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            (false, host, path)
        }
    };
    if host.is_empty() {
        return None;
    }
    let host = canonical_host(&host.to_ascii_lowercase());
    Some(match path.trim_matches('/') {
        "" => (legacy, host),
        path => (legacy, format!("{host}/{path}")),
    })
}

/// Docker Hub's host names all share one set of credentials, filed under `docker.io`.
fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(json: &str) -> Credentials {
        Credentials::parse(json.as_bytes(), Path::new("secret.json")).expect("valid pull secret")
    }

    fn auth(user: &str, password: &str) -> String {
        STANDARD.encode(format!("{user}:{password}"))
    }

    fn user_for(credentials: &Credentials, registry: &str, repository: &str) -> Option<String> {
        credentials
            .lookup(registry, repository)
            .map(|a| a.username().to_owned())
    }

    fn origins(urls: &[&str]) -> Vec<Origin> {
        urls.iter()
            .map(|url| Url::parse(url).expect("URL").origin())
            .collect()
    }

    #[test]
    fn a_realm_gets_credentials_on_its_own_endpoint_or_a_host_no_other_registry_has() {
        // Two registries configured: quay.io (its realm on itself) and a corporate mirror.
        let configured = origins(&["https://quay.io", "https://mirror.corp:8443"]);
        let docker_hub = origins(&["https://registry-1.docker.io"]);
        let quay = origins(&["https://quay.io"]);
        let receives = |realm: &str, own: &[Origin]| {
            realm_receives_credentials(&Url::parse(realm).expect("URL"), own, &configured)
        };
        assert_eq!(
            [
                receives("https://auth.docker.io/token", &docker_hub),
                receives("https://quay.io/v2/auth", &quay),
                receives("https://quay.io:8443/v2/auth", &quay),
                receives("https://mirror.corp:8443/token", &docker_hub),
                receives("https://mirror.corp/token", &docker_hub),
                receives("https://quay.io/v2/auth", &docker_hub),
                receives("https://mirror.corp:8443/token", &quay),
            ],
            [true, true, true, false, false, false, false]
        );
    }

    #[test]
    fn on_a_host_two_registries_share_a_realm_gets_credentials_except_on_the_others_endpoint() {
        let configured = origins(&["http://10.0.0.5:5000", "http://10.0.0.5:5001"]);
        let own = origins(&["http://10.0.0.5:5000"]);
        let receives = |realm: &str| {
            realm_receives_credentials(&Url::parse(realm).expect("URL"), &own, &configured)
        };
        assert_eq!(
            [
                receives("http://10.0.0.5:5000/token"),
                receives("http://10.0.0.5:5002/token"),
                receives("http://10.0.0.5:5001/token"),
            ],
            [true, true, false]
        );
    }

    #[test]
    fn most_specific_auth_json_key_wins() {
        let credentials = secret(&format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "quay.io/ns": {{"auth": "{}"}},
                "quay.io/ns/app": {{"username": "app", "password": "p"}}}}}}"#,
            auth("host", "p"),
            auth("ns", "p"),
        ));
        let users: Vec<Option<String>> = [
            ("quay.io", "ns/app"),
            ("quay.io", "ns/app/sub"),
            ("quay.io", "ns/other"),
            ("quay.io", "nsx/app"),
            ("quay.io:443", "ns/app"),
        ]
        .iter()
        .map(|(registry, repository)| user_for(&credentials, registry, repository))
        .collect();
        assert_eq!(
            users,
            vec![
                Some("app".to_owned()),
                Some("app".to_owned()),
                Some("ns".to_owned()),
                Some("host".to_owned()),
                None
            ]
        );
    }

    #[test]
    fn index_docker_io_v1_key_applies_to_docker_io() {
        let credentials = secret(&format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}}}}}"#,
            auth("hubuser", "pw")
        ));
        assert_eq!(
            user_for(&credentials, "docker.io", "library/busybox"),
            Some("hubuser".to_owned())
        );
    }

    #[test]
    fn exact_key_beats_legacy_scheme_key() {
        let credentials = secret(&format!(
            r#"{{"auths": {{"https://quay.io/v1/": {{"auth": "{}"}}, "quay.io": {{"auth": "{}"}}}}}}"#,
            auth("legacy", "p"),
            auth("exact", "p")
        ));
        assert_eq!(
            user_for(&credentials, "quay.io", "ns/app"),
            Some("exact".to_owned())
        );
    }

    #[test]
    fn registry_port_is_part_of_the_key() {
        let credentials = secret(&format!(
            r#"{{"auths": {{"127.0.0.1:5001": {{"auth": "{}"}}}}}}"#,
            auth("a", "p")
        ));
        let users = (
            user_for(&credentials, "127.0.0.1:5001", "ns/app"),
            user_for(&credentials, "127.0.0.1:5002", "ns/app"),
        );
        assert_eq!(users, (Some("a".to_owned()), None));
    }

    #[test]
    fn auth_field_without_padding_decodes() {
        // "user:pw" is 7 bytes, so standard base64 would end in "=".
        let credentials = secret(r#"{"auths": {"r.io": {"auth": "dXNlcjpwdw"}}}"#);
        assert_eq!(user_for(&credentials, "r.io", "x"), Some("user".to_owned()));
    }

    #[test]
    fn bad_auth_entry_error_names_file_and_key_but_not_the_secret() {
        let err = Credentials::parse(
            br#"{"auths": {"quay.io": {"auth": "c2VjcmV0LXZhbHVl"}}}"#,
            Path::new("/etc/secret.json"),
        )
        .expect_err("auth without a colon")
        .to_string();
        assert_eq!(
            err,
            "pull secret /etc/secret.json: auths.\"quay.io\": \"auth\" does not decode to \
             user:password"
        );
    }

    #[test]
    fn invalid_json_error_names_the_file() {
        let err = Credentials::parse(b"{\"auths\": ", Path::new("ps.json"))
            .expect_err("truncated JSON")
            .to_string();
        assert!(
            err.starts_with("pull secret ps.json: not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let credentials =
            secret(r#"{"auths": {"quay.io": {"username": "robot-user", "password": "hunter2"}}}"#);
        let shown = format!("{credentials:?} {:?}", credentials.lookup("quay.io", "a"));
        assert!(
            !shown.contains("hunter2") && !shown.contains("robot-user"),
            "{shown}"
        );
    }
}
