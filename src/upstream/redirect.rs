//! Following blob redirects without turning mirrorgate into a request forger.
//!
//! Registries answer blob downloads with a redirect to their storage (S3, GCS, a CDN), so those
//! must be followed. But the `Location` is chosen by the upstream, and mirrorgate usually runs
//! next to things an upstream must never reach through it: its own loopback services, and the
//! cloud metadata endpoint that hands out the instance's credentials. So every hop is checked
//! before a connection is made:
//!
//! - a hop to the origin that redirected, or to an endpoint configured in `registries`, is a
//!   hop to a registry the operator named, and goes out like any request to it (only the same
//!   origin keeps `Authorization`);
//! - any other hop goes through a client whose DNS resolver drops loopback, link-local,
//!   unspecified and cloud-metadata addresses, and an IP-literal host is checked the same way,
//!   unless the address is in `upstream.redirect_allowed_networks`. Checking the addresses the
//!   connection will use, rather than the name, is what defeats a name that resolves to
//!   `127.0.0.1`.
//!
//! A bearer challenge's token realm is a URL the upstream chooses as well, and one that is sent
//! the registry's credentials: [`realm_hop`] applies the same policy to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderValue;
use url::{Host, Origin};

use super::AttemptError;

/// Cloud metadata services outside the link-local range (which is refused as a whole):
/// Alibaba Cloud's, and AWS's IPv6 one.
const METADATA: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// Which addresses a redirect may lead to.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddressPolicy {
    /// Exempt from the refusal (`upstream.redirect_allowed_networks`).
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// A policy exempting `allowed`.
    pub(crate) fn new(allowed: Vec<IpNet>) -> AddressPolicy {
        AddressPolicy { allowed }
    }

    /// Whether a redirect may connect to `ip`.
    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allowed.iter().any(|network| network.contains(&ip))
    }
}

/// Loopback, link-local (which holds the usual metadata address 169.254.169.254), unspecified,
/// or another known metadata address; an IPv4-mapped IPv6 address is judged as its IPv4 one.
fn is_internal(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    METADATA.contains(&ip)
        || match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
            IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.is_unicast_link_local(),
        }
}

/// The DNS resolver of the guarded clients: the system's, minus the addresses the policy
/// refuses.
pub(crate) struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    /// A resolver applying `policy`.
    pub(crate) fn new(policy: Arc<AddressPolicy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| policy.permits(address.ip()))
                .collect();
            if permitted.is_empty() && !found.is_empty() {
                return Err(refused(&host).into());
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// The error of a hop to a refused address; it names the host, never the path or query (which
/// for blob storage carry a signature).
fn refused(host: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "redirect to {host} refused: a loopback, link-local or metadata address \
             (allow it with upstream.redirect_allowed_networks)"
        ),
    )
}

/// How one redirect hop goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    /// To the origin of the first request: the registry itself, credentials included.
    SameOrigin,
    /// To another registry endpoint configured in `registries`: as any request to it, without
    /// the credentials.
    Configured,
    /// Anywhere else: through the guarded client, without credentials.
    Guarded,
}

/// Where a redirect leads and how to get there.
#[derive(Debug)]
pub(crate) struct Redirect {
    /// The absolute target.
    pub(crate) url: Url,
    /// How it is reached.
    pub(crate) hop: Hop,
}

/// Decides the next hop of a redirect answered to a request for `from`: the target is
/// `location` resolved against `from`; `registry` is the origin of the first request (only a
/// hop back there is trusted as the registry, whatever hops came between), `configured` the
/// origins of the `registries` endpoints.
pub(crate) fn next_hop(
    from: &Url,
    registry: &Origin,
    location: Option<&HeaderValue>,
    configured: &[Origin],
    policy: &AddressPolicy,
) -> Result<Redirect, AttemptError> {
    let protocol = |message: &str| AttemptError::Protocol(message.to_owned());
    let location = location
        .ok_or_else(|| protocol("redirect without a Location"))?
        .to_str()
        .map_err(|_| protocol("redirect Location is not text"))?;
    let url = from
        .join(location)
        .map_err(|_| protocol("redirect Location is not a URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(protocol("redirect to a URL that is not http(s)"));
    }
    if url.host().is_none() {
        return Err(protocol("redirect to a URL without a host"));
    }
    let hop = classify(&url, std::slice::from_ref(registry), configured, policy)
        .map_err(|host| AttemptError::Protocol(refused(&host).to_string()))?;
    Ok(Redirect { url, hop })
}

/// How a request to `url` goes out: to one of the `registry` origins, to a `configured` one, or
/// guarded. `Err` holds the host of a URL whose IP literal the policy refuses (or `""` for a
/// URL without a host).
fn classify(
    url: &Url,
    registry: &[Origin],
    configured: &[Origin],
    policy: &AddressPolicy,
) -> Result<Hop, String> {
    let origin = url.origin();
    if registry.contains(&origin) {
        return Ok(Hop::SameOrigin);
    }
    if configured.contains(&origin) {
        return Ok(Hop::Configured);
    }
    let literal = match url.host() {
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(Host::Domain(_)) => None,
        None => return Err(String::new()),
    };
    match literal {
        Some(ip) if !policy.permits(ip) => Err(url.host_str().unwrap_or_default().to_owned()),
        _ => Ok(Hop::Guarded),
    }
}

/// How the token request to a bearer challenge's `realm` goes out: the realm is named by the
/// upstream, so it passes the same address policy as a redirect. A realm on the registry's own
/// origin (`registry`, the endpoints of this registry) or on a configured one goes out like any
/// request to a registry; anywhere else through the guarded client, and never to an internal IP
/// literal.
pub(crate) fn realm_hop(
    realm: &Url,
    registry: &[Origin],
    configured: &[Origin],
    policy: &AddressPolicy,
) -> Result<Hop, AttemptError> {
    classify(realm, registry, configured, policy)
        .map_err(|host| AttemptError::Protocol(realm_refused(&host)))
}

/// The error of a token realm on a refused address; it names the realm's host, never its path
/// or query.
pub(crate) fn realm_refused(host: &str) -> String {
    format!(
        "token realm {host} refused: a loopback, link-local or metadata address (allow it with \
         upstream.redirect_allowed_networks, or name it in registries)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> AddressPolicy {
        AddressPolicy::new(allowed.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn hop(from: &str, location: &str, allowed: &[&str]) -> Result<Hop, String> {
        let from: Url = from.parse().unwrap();
        next_hop(
            &from,
            &from.origin(),
            Some(&HeaderValue::from_str(location).unwrap()),
            &["https://mirror.corp:8443".parse::<Url>().unwrap().origin()],
            &policy(allowed),
        )
        .map(|r| r.hop)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_permitted() {
        let refused: Vec<&str> = [
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.100.100.200",
            "fd00:ec2::254",
            "10.1.2.3",
            "52.1.2.3",
        ]
        .into_iter()
        .filter(|ip| !policy(&[]).permits(ip.parse().unwrap()))
        .collect();
        assert_eq!(
            refused,
            [
                "127.0.0.1",
                "127.9.9.9",
                "169.254.169.254",
                "0.0.0.0",
                "::1",
                "fe80::1",
                "::ffff:127.0.0.1",
                "100.100.100.200",
                "fd00:ec2::254"
            ]
        );
    }

    #[test]
    fn an_allowed_network_exempts_its_addresses_only() {
        let policy = policy(&["127.0.0.0/8"]);
        assert_eq!(
            (
                policy.permits("127.0.0.2".parse().unwrap()),
                policy.permits("169.254.169.254".parse().unwrap())
            ),
            (true, false)
        );
    }

    #[test]
    fn hops_are_classified_by_origin() {
        let from = "https://registry.example/v2/ns/app/blobs/sha256:ab";
        assert_eq!(
            [
                hop(from, "/other/path", &[]),
                hop(from, "https://mirror.corp:8443/blob", &[]),
                hop(from, "https://storage.example/bucket?sig=x", &[]),
                hop(from, "http://registry.example/plain", &[]),
            ],
            [
                Ok(Hop::SameOrigin),
                Ok(Hop::Configured),
                Ok(Hop::Guarded),
                Ok(Hop::Guarded)
            ]
        );
    }

    #[test]
    fn a_hop_back_to_a_guarded_host_stays_guarded() {
        let registry: Url = "https://registry.example/v2/x".parse().unwrap();
        let storage: Url = "https://storage.example/a".parse().unwrap();
        let next = next_hop(
            &storage,
            &registry.origin(),
            Some(&HeaderValue::from_static("/b")),
            &[],
            &policy(&[]),
        );
        assert_eq!(next.map(|r| r.hop).ok(), Some(Hop::Guarded));
    }

    #[test]
    fn a_hop_to_an_internal_literal_is_refused_without_the_path() {
        let result = hop(
            "https://registry.example/v2/x",
            "http://169.254.169.254/latest/meta-data?secret=1",
            &[],
        );
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.contains("169.254.169.254") && !e.contains("secret")),
            "{result:?}"
        );
    }

    #[test]
    fn a_hop_to_an_allowed_internal_literal_is_guarded() {
        assert_eq!(
            hop(
                "https://registry.example/v2/x",
                "http://127.0.0.1:9000/blob",
                &["127.0.0.0/8"]
            ),
            Ok(Hop::Guarded)
        );
    }

    #[test]
    fn a_redirect_without_location_or_to_another_scheme_is_an_error() {
        let from: Url = "https://registry.example/v2/x".parse().unwrap();
        let missing = next_hop(&from, &from.origin(), None, &[], &policy(&[]));
        let ftp = hop("https://registry.example/v2/x", "ftp://files/x", &[]);
        assert!(missing.is_err() && ftp.is_err(), "{missing:?} {ftp:?}");
    }
}
