//! The one host grammar: a registry host `name[:port]`, as written in references, rules,
//! configuration keys, endpoints and client scopes. [`Host`] parses strictly, with messages
//! (configuration, endpoints); the predicates below are the distribution reference grammar's
//! `domain` production, which the reference parser and rule scopes match on the hot path.

use std::fmt;
use std::net::Ipv6Addr;

/// A registry host: a name (DNS labels joined by `.`, which covers IPv4 and `localhost`, or an
/// IPv6 literal in brackets) and an optional port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host<'a> {
    name: &'a str,
    port: Option<u16>,
}

/// Why a string is not a [`Host`]; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostError(String);

impl<'a> Host<'a> {
    /// Parses `name[:port]` strictly: every label checked, the port in `1..=65535`.
    pub fn parse(value: &'a str) -> Result<Host<'a>, HostError> {
        let (name, port) = Host::split(value)?;
        check_name(name)?;
        let port = port.map(Host::parse_port).transpose()?;
        Ok(Host { name, port })
    }

    /// Parses a registry host as configured (a `registries` key, `default_registry`): as
    /// [`Host::parse`], with a hint for the usual mistakes (a scheme, a path).
    pub fn parse_registry(value: &'a str) -> Result<Host<'a>, HostError> {
        if value.is_empty() {
            return Err(HostError("empty".to_owned()));
        }
        if value.contains("://") {
            return Err(HostError(
                "write the host without a scheme; put a URL in endpoint".to_owned(),
            ));
        }
        if value.contains('/') {
            return Err(HostError("a host has no path".to_owned()));
        }
        Host::parse(value)
    }

    /// Splits `host[:port]` without checking either part, keeping the brackets of an IPv6
    /// literal in the host.
    pub fn split(value: &str) -> Result<(&str, Option<&str>), HostError> {
        if value.starts_with('[') {
            let end = value
                .find(']')
                .ok_or_else(|| HostError("IPv6 literal has no closing ']'".to_owned()))?;
            let (host, rest) = value.split_at(end + 1);
            return match rest {
                "" => Ok((host, None)),
                _ => match rest.strip_prefix(':') {
                    Some(port) => Ok((host, Some(port))),
                    None => Err(HostError(format!("unexpected {rest:?} after IPv6 literal"))),
                },
            };
        }
        if value.matches(':').count() > 1 {
            return Err(HostError(
                "an IPv6 address must be in brackets, e.g. [::1]:5000".to_owned(),
            ));
        }
        Ok(match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        })
    }

    /// A port in `1..=65535`.
    pub fn parse_port(port: &str) -> Result<u16, HostError> {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostError(format!("port {port:?} is not a number")));
        }
        match port.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(HostError(format!("port {port} is out of range 1..=65535"))),
        }
    }

    /// Whether the first `/`-component of a repository name is a registry host rather than
    /// the start of a path: it has a `.` or a `:`, or is `localhost` (the distribution rule,
    /// used by normalisation, addressing and client scopes alike).
    pub fn is_registry_component(first: &str) -> bool {
        first.contains(['.', ':']) || first == "localhost"
    }

    /// The name: DNS labels, an IPv4 address, or an IPv6 literal in brackets.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The port, if one was written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Checks a host name: DNS labels joined by `.`, or `[IPv6]`.
fn check_name(host: &str) -> Result<(), HostError> {
    let fail = |message: String| Err(HostError(message));
    if let Some(bracketed) = host.strip_prefix('[') {
        let Some(inner) = bracketed.strip_suffix(']') else {
            return fail("IPv6 literal has no closing ']'".to_owned());
        };
        return match inner.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => fail(format!("{inner:?} is not an IPv6 address")),
        };
    }
    if host.is_empty() {
        return fail("the host is empty".to_owned());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return fail(
                "empty label (two dots in a row, or a leading or trailing dot)".to_owned(),
            );
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return fail(format!("{c:?} is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// `host[:port]`: DNS labels or an IPv6 literal in brackets, then an optional numeric port.
pub(crate) fn is_domain(s: &str) -> bool {
    let (host, port) = split_port(s);
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|addr| {
            !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
        })
    } else {
        is_host_name(host)
    };
    host_ok && port.is_none_or(is_port)
}

/// Splits `host[:port]` at the port colon, minding the colons inside an IPv6 literal.
fn split_port(s: &str) -> (&str, Option<&str>) {
    let search_from = if s.starts_with('[') {
        s.find(']').unwrap_or(s.len())
    } else {
        0
    };
    match s[search_from..].find(':') {
        Some(i) => (&s[..search_from + i], Some(&s[search_from + i + 1..])),
        None => (s, None),
    }
}

/// DNS labels joined by dots, upper case allowed (hosts are not case-folded).
pub(crate) fn is_host_name(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_domain_label)
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
pub(crate) fn is_domain_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
}

/// `[0-9]+`.
pub(crate) fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}
