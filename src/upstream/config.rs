//! The `upstream` and `registries` sections: timeouts, redirect guard, and how to reach each
//! registry.
//!
//! Principal types: [`UpstreamConfig`] (the `upstream` section), [`RegistrySettings`] (one
//! `registries` entry) and [`Endpoint`] (where to connect: `http(s)://host[:port]`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::reference::Host;
use crate::section::section;
use crate::section::values::{HumanDuration, Invalid};

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

section!(UpstreamConfig {
    connect_timeout as HumanDuration,
    timeout as HumanDuration,
    redirect_allowed_networks as Networks,
});

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            redirect_allowed_networks: Vec::new(),
        }
    }
}

impl UpstreamConfig {
    /// Checks the bounds; keys are relative to the section.
    pub fn validate(&self) -> Result<(), Invalid> {
        // A zero timeout fails every request before it starts.
        if self.connect_timeout.is_zero() {
            return Err(Invalid::new("connect_timeout", "must be greater than 0s"));
        }
        if self.timeout.is_zero() {
            return Err(Invalid::new("timeout", "must be greater than 0s"));
        }
        Ok(())
    }
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

section!(RegistrySettings {
    endpoint,
    insecure,
    ca_file,
});

/// The registry settings used for a host with no `registries` entry.
pub static NO_SETTINGS: RegistrySettings = RegistrySettings {
    endpoint: None,
    insecure: false,
    ca_file: None,
};

impl RegistrySettings {
    /// Where to connect for `host` under these settings: the configured endpoint, else
    /// [`Endpoint::default_for`] the host.
    pub fn endpoint_for(&self, host: &str) -> Endpoint {
        self.endpoint
            .clone()
            .unwrap_or_else(|| Endpoint::default_for(host))
    }

    /// Checks the entry of registry `host`; keys are relative to the `registries` section.
    pub fn validate(&self, host: &str) -> Result<(), Invalid> {
        let key = format!("{host:?}");
        Host::parse_registry(host).map_err(|why| {
            // The key path already quotes the host, so the message does not repeat it.
            Invalid::new(&key, format!("not a registry host (host[:port]): {why}"))
        })?;
        if let Some(endpoint) = &self.endpoint
            && endpoint.scheme() == Scheme::Http
            && !self.insecure
        {
            return Err(Invalid::new(
                format!("{key}.endpoint"),
                format!("plain http endpoint \"{endpoint}\" needs insecure: true"),
            ));
        }
        Invalid::empty_path(&format!("{key}.ca_file"), self.ca_file.as_ref())
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
        let (name, port) = match Host::split(host) {
            Ok((name, Some(port))) => match Host::parse_port(port) {
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
        let host = Host::parse(authority).map_err(|e| fail(e.to_string()))?;
        let (host, port) = (host.name(), host.port());
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

/// The networks of `redirect_allowed_networks` as written.
#[derive(Deserialize)]
struct Networks(Vec<Network>);

impl From<Networks> for Vec<ipnet::IpNet> {
    fn from(networks: Networks) -> Self {
        networks.0.into_iter().map(|n| n.0).collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
