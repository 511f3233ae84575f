//! Registry authentication: the `WWW-Authenticate` parser, bearer token requests and the token
//! cache.
//!
//! Registries follow the Docker token protocol: an unauthenticated request gets a 401 with
//! `WWW-Authenticate: Bearer realm="https://auth.example/token",service="…",scope="…"`; the client
//! asks the realm for a token for `repository:<name>:pull` (anonymously, or with Basic
//! credentials), then repeats the request with `Authorization: Bearer <token>`. Tokens are valid
//! for `expires_in` seconds, so they are cached per (registry, scope) and sent up front on later
//! requests, which saves the 401 round trip and the token request on every pull after the first.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderValue;

/// The token lifetime the distribution spec prescribes when the token endpoint names none.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped from the cache this long before they expire (at most a quarter of their
/// lifetime), so that a token never expires between being picked and reaching the registry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Above this many cached tokens, expired ones are swept on insert; this bounds the cache by the
/// number of repositories pulled within one token lifetime.
const SWEEP_THRESHOLD: usize = 1024;

/// One challenge of a `WWW-Authenticate` header: a scheme with parameters (or a token68).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// The scheme as written (`Bearer`, `basic`, …); compare with [`Challenge::is`].
    scheme: String,
    /// Parameters in order, names lower-cased (parameter names are case-insensitive).
    params: Vec<(String, String)>,
    /// The `token68` form (`Negotiate abc==`), which no registry scheme uses but is legal.
    token68: Option<String>,
}

impl Challenge {
    /// Whether this challenge uses `scheme` (case-insensitive, as RFC 9110 says).
    pub(crate) fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The scheme as written.
    pub(crate) fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The first parameter named `name` (case-insensitive).
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Why a `WWW-Authenticate` value could not be parsed: what was expected at which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChallengeError {
    /// Byte offset into the header value.
    pub(crate) position: usize,
    /// What was expected there.
    pub(crate) reason: &'static str,
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.position)
    }
}

/// Parses one `WWW-Authenticate` header value into its challenges (RFC 9110 §11.6.1):
///
/// ```text
/// challenges = challenge *( OWS "," OWS challenge )
/// challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
/// auth-param = token BWS "=" BWS ( token / quoted-string )
/// ```
///
/// Commas separate both parameters and challenges, so after each comma the parser looks ahead:
/// `name =` continues the current challenge, anything else starts a new one. Quoted strings may
/// hold `\`-escapes and commas. Works on bytes, because header values need not be UTF-8; quoted
/// values that are not UTF-8 are converted lossily. Never panics: every index is checked.
pub(crate) fn parse_challenges(input: &[u8]) -> Result<Vec<Challenge>, ChallengeError> {
    let mut parser = Parser { input, pos: 0 };
    let mut challenges = Vec::new();
    loop {
        parser.skip_separators();
        if parser.at_end() {
            return Ok(challenges);
        }
        let scheme = parser
            .token()
            .ok_or(parser.error("expected an auth scheme"))?;
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
            token68: None,
        };
        let spaced = parser.skip_ows();
        if parser.at_end() || parser.peek() == Some(b',') {
            challenges.push(challenge);
            continue;
        }
        if !spaced {
            return Err(parser.error("expected a space after the auth scheme"));
        }
        if let Some(token68) = parser.token68() {
            challenge.token68 = Some(token68);
            challenges.push(challenge);
            continue;
        }
        loop {
            let name = parser
                .token()
                .ok_or(parser.error("expected a parameter name"))?;
            parser.skip_ows();
            if parser.peek() != Some(b'=') {
                return Err(parser.error("expected '=' after a parameter name"));
            }
            parser.pos += 1;
            parser.skip_ows();
            let value = if parser.peek() == Some(b'"') {
                parser.quoted_string()?
            } else {
                parser
                    .token()
                    .ok_or(parser.error("expected a parameter value"))?
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
            parser.skip_ows();
            if parser.at_end() {
                break;
            }
            if parser.peek() != Some(b',') {
                return Err(parser.error("expected ',' after a parameter"));
            }
            if !parser.param_follows() {
                break;
            }
            parser.skip_separators();
        }
        challenges.push(challenge);
    }
}

/// A cursor over a header value.
struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn error(&self, reason: &'static str) -> ChallengeError {
        ChallengeError {
            position: self.pos,
            reason,
        }
    }

    /// Skips spaces and tabs; says whether there were any.
    fn skip_ows(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Skips whitespace and commas (empty list elements are allowed by the `#` list rule).
    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    /// Reads a `token` (one or more tchars).
    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        let bytes = self.input.get(start..self.pos)?;
        // tchars are ASCII, so this conversion cannot fail; `ok()` keeps it panic-free anyway.
        (!bytes.is_empty())
            .then(|| std::str::from_utf8(bytes).ok().map(str::to_owned))
            .flatten()
    }

    /// Reads a token68 when the rest of this challenge is exactly one (`abc==` then the end or a
    /// comma); otherwise leaves the cursor alone, so that `realm="x"` is read as a parameter.
    fn token68(&mut self) -> Option<String> {
        let mut end = self.pos;
        while self.input.get(end).copied().is_some_and(is_token68_char) {
            end += 1;
        }
        if end == self.pos {
            return None;
        }
        while self.input.get(end) == Some(&b'=') {
            end += 1;
        }
        let mut after = end;
        while matches!(self.input.get(after), Some(b' ' | b'\t')) {
            after += 1;
        }
        if !matches!(self.input.get(after), None | Some(b',')) {
            return None;
        }
        let text = std::str::from_utf8(self.input.get(self.pos..end)?).ok()?;
        self.pos = end;
        Some(text.to_owned())
    }

    /// Reads a quoted string starting at `"`, resolving `\`-escapes.
    fn quoted_string(&mut self) -> Result<String, ChallengeError> {
        let start = self.pos;
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ChallengeError {
                        position: start,
                        reason: "unterminated quoted string",
                    });
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&value).into_owned());
                }
                Some(b'\\') => {
                    let escaped = self
                        .input
                        .get(self.pos + 1)
                        .copied()
                        .ok_or(ChallengeError {
                            position: start,
                            reason: "unterminated quoted string",
                        })?;
                    value.push(escaped);
                    self.pos += 2;
                }
                Some(byte) => {
                    value.push(byte);
                    self.pos += 1;
                }
            }
        }
    }

    /// At a comma after a parameter: whether the next list element is another parameter of the
    /// same challenge (`token BWS "="`) rather than a new challenge. Does not move the cursor.
    fn param_follows(&self) -> bool {
        let mut probe = Parser {
            input: self.input,
            pos: self.pos,
        };
        probe.skip_separators();
        if probe.token().is_none() {
            return false;
        }
        probe.skip_ows();
        probe.peek() == Some(b'=')
    }
}

/// `tchar` of RFC 9110: the characters of a token.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The characters of a token68 before its trailing `=` padding.
fn is_token68_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~+/".contains(&byte)
}

/// What the token endpoint answered, reduced to what is used.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct IssuedToken {
    /// The bearer token (never logged; see the `Debug` impl).
    pub(crate) token: String,
    /// How long the token is valid.
    pub(crate) lifetime: Duration,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Reads a token endpoint's JSON answer: `token` (or the OAuth2 `access_token`) and
/// `expires_in` (seconds, default 60).
///
/// Error messages never quote the body, which holds the token.
pub(crate) fn parse_token_response(body: &[u8]) -> Result<IssuedToken, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        format!(
            "token endpoint answered invalid JSON (line {}, column {})",
            err.line(),
            err.column()
        )
    })?;
    let non_empty = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let token = non_empty("token")
        .or_else(|| non_empty("access_token"))
        .ok_or_else(|| "token endpoint answered no token".to_owned())?;
    // Some servers send a float or a string; anything unusable means the default lifetime.
    let seconds = value.get("expires_in").and_then(|v| {
        v.as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    });
    let lifetime = match seconds {
        Some(0) | None => DEFAULT_TOKEN_LIFETIME,
        Some(s) => Duration::from_secs(s),
    };
    Ok(IssuedToken {
        token: token.to_owned(),
        lifetime,
    })
}

/// The scopes to ask the token endpoint for: ours first, then any other the challenge names
/// (space-separated, as the spec allows), without duplicates.
pub(crate) fn token_scopes(ours: &str, challenge: &Challenge) -> Vec<String> {
    let mut scopes = vec![ours.to_owned()];
    for scope in challenge
        .param("scope")
        .unwrap_or("")
        .split_ascii_whitespace()
    {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    scopes
}

/// Bearer `Authorization` values per (registry, scope), each kept until shortly before its
/// token expires.
#[derive(Default)]
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<(String, String), CachedToken>>,
}

struct CachedToken {
    authorization: HeaderValue,
    valid_until: Instant,
}

impl TokenCache {
    /// The cached `Authorization` value for `registry` and `scope`, if still fresh.
    pub(crate) fn get(&self, registry: &str, scope: &str) -> Option<HeaderValue> {
        let entries = self.lock();
        let entry = entries.get(&(registry.to_owned(), scope.to_owned()))?;
        (Instant::now() < entry.valid_until).then(|| entry.authorization.clone())
    }

    /// Caches `authorization` (a `Bearer …` value) for `lifetime` minus a safety margin.
    pub(crate) fn insert(
        &self,
        registry: &str,
        scope: &str,
        authorization: HeaderValue,
        lifetime: Duration,
    ) {
        let margin = EXPIRY_MARGIN.min(lifetime / 4);
        let now = Instant::now();
        let valid_until = now + lifetime.saturating_sub(margin);
        let mut entries = self.lock();
        if entries.len() >= SWEEP_THRESHOLD {
            entries.retain(|_, entry| entry.valid_until > now);
        }
        entries.insert(
            (registry.to_owned(), scope.to_owned()),
            CachedToken {
                authorization,
                valid_until,
            },
        );
    }

    /// Forgets the token for `registry` and `scope` (the registry refused it).
    pub(crate) fn remove(&self, registry: &str, scope: &str) {
        self.lock().remove(&(registry.to_owned(), scope.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), CachedToken>> {
        // A panic while holding this lock cannot leave the map inconsistent (each operation is
        // one map call), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.lock().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A challenge flattened to `(scheme, params, token68)` for compact expectations.
    type Flat = (String, Vec<(String, String)>, Option<String>);

    /// Parses and flattens.
    fn parse(input: &str) -> Result<Vec<Flat>, String> {
        parse_challenges(input.as_bytes())
            .map(|list| {
                list.into_iter()
                    .map(|c| (c.scheme, c.params, c.token68))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn ch(
        scheme: &str,
        params: &[(&str, &str)],
    ) -> (String, Vec<(String, String)>, Option<String>) {
        (
            scheme.to_owned(),
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            None,
        )
    }

    #[test]
    fn www_authenticate_parser_handles_tricky_inputs() {
        let cases: Vec<(&str, Result<Vec<_>, String>)> = vec![
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
                Ok(vec![ch(
                    "Bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                        ("scope", "repository:library/busybox:pull"),
                    ],
                )]),
            ),
            // Case-insensitive names, spaces around '=', commas and escapes inside quotes.
            (
                r#"bEaReR  REALM = "https://a/t?x=1,y=2" , Service=reg , scope="a \"b\" \\c""#,
                Ok(vec![ch(
                    "bEaReR",
                    &[
                        ("realm", "https://a/t?x=1,y=2"),
                        ("service", "reg"),
                        ("scope", r#"a "b" \c"#),
                    ],
                )]),
            ),
            // Several challenges in one value, including a bare scheme and a token68.
            (
                r#"Negotiate, Basic realm="Registry Realm", Bearer realm="https://a/t",service=s, NTLM abc+/d=="#,
                Ok(vec![
                    ch("Negotiate", &[]),
                    ch("Basic", &[("realm", "Registry Realm")]),
                    ch("Bearer", &[("realm", "https://a/t"), ("service", "s")]),
                    ("NTLM".to_owned(), vec![], Some("abc+/d==".to_owned())),
                ]),
            ),
            // Empty list elements and an empty quoted value.
            (
                r#",, Basic realm="" ,,"#,
                Ok(vec![ch("Basic", &[("realm", "")])]),
            ),
            ("", Ok(vec![])),
            (
                r#"Bearer realm="unterminated"#,
                Err("unterminated quoted string at byte 13".to_owned()),
            ),
            (
                r#"Bearer realm="ends with backslash\"#,
                Err("unterminated quoted string at byte 13".to_owned()),
            ),
            // `name=` alone is a legal token68 ("cmVhbG0=" style); as a parameter it would
            // have no value.
            (
                "Bearer realm=",
                Ok(vec![(
                    "Bearer".to_owned(),
                    vec![],
                    Some("realm=".to_owned()),
                )]),
            ),
            (
                r#"Bearer a="b", realm="#,
                Err("expected a parameter value at byte 20".to_owned()),
            ),
            (
                r#"Bearer realm="a" service="b""#,
                Err("expected ',' after a parameter at byte 17".to_owned()),
            ),
            (
                r#"Bearer="x""#,
                Err("expected a space after the auth scheme at byte 6".to_owned()),
            ),
            (r#"=x"#, Err("expected an auth scheme at byte 0".to_owned())),
        ];
        let got: Vec<_> = cases.iter().map(|(input, _)| parse(input)).collect();
        let expected: Vec<_> = cases.into_iter().map(|(_, want)| want).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn www_authenticate_parser_never_panics() {
        // Every prefix of inputs built from the grammar's special characters and non-UTF-8
        // bytes: a panic anywhere fails the test.
        let samples: [&[u8]; 4] = [
            b"Bearer realm=\"a\\\"b\", x = y ,, Basic abc== , \"q",
            b"\\\"=,= \t,\"\\",
            b"B \xff\xfe=\"\xc3\x28\", c=\x00",
            b"a b=c, d e, f=\"",
        ];
        let mut parsed = 0;
        for sample in samples {
            for end in 0..=sample.len() {
                for start in 0..=end {
                    let _ = parse_challenges(&sample[start..end]);
                    parsed += 1;
                }
            }
        }
        assert!(parsed > 0);
    }

    #[test]
    fn challenge_param_lookup_is_case_insensitive() {
        let challenges =
            parse_challenges(br#"Bearer Realm="https://a/t""#).expect("valid challenge");
        assert_eq!(challenges[0].param("REALM"), Some("https://a/t"));
    }

    #[test]
    fn token_response_reads_access_token_and_defaults_expiry() {
        let issued = parse_token_response(br#"{"access_token":"abc"}"#).expect("valid");
        assert_eq!(
            (issued.token.as_str(), issued.lifetime),
            ("abc", Duration::from_secs(60))
        );
    }

    #[test]
    fn token_response_prefers_token_and_reads_expires_in() {
        let issued = parse_token_response(br#"{"token":"t","access_token":"a","expires_in":300}"#)
            .expect("valid");
        assert_eq!(
            (issued.token.as_str(), issued.lifetime),
            ("t", Duration::from_secs(300))
        );
    }

    #[test]
    fn token_response_errors_do_not_quote_the_body() {
        let err = parse_token_response(br#"{"token": "secret-token-value""#).expect_err("bad");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn token_scopes_keep_ours_first_and_add_the_challenge_ones() {
        let challenge =
            parse_challenges(br#"Bearer realm="r",scope="repository:a:pull repository:b:pull""#)
                .expect("valid")
                .remove(0);
        assert_eq!(
            token_scopes("repository:b:pull", &challenge),
            vec!["repository:b:pull", "repository:a:pull"]
        );
    }

    #[test]
    fn cached_token_expires_before_its_lifetime() {
        let cache = TokenCache::default();
        cache.insert(
            "r",
            "s",
            HeaderValue::from_static("Bearer x"),
            Duration::from_millis(4),
        );
        std::thread::sleep(Duration::from_millis(3) + Duration::from_micros(500));
        assert_eq!(cache.get("r", "s"), None);
    }
}
