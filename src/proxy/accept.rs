//! Which manifest types a client accepts, from its `Accept` headers (RFC 9110 §12.5.1): what the
//! upstreams are asked for on its behalf, and whether a manifest may be served to it.
//!
//! Registries match media types exactly, so a wildcard (`*/*`, `application/*`) is asked of an
//! upstream as the manifest types it covers. A type is accepted by its most specific range, and
//! refused by `q=0`. A client that sends no `Accept` takes any type (RFC 9110), as one sending
//! `*/*` (curl's default) does. Distribution 2.8 reads neither a wildcard nor an absent `Accept`
//! as including the OCI types (it answers such a client 404 `MANIFEST_UNKNOWN` for an OCI
//! manifest): mirrorgate answers what the client said it takes.

use http::HeaderValue;
use http::header::GetAll;

/// The manifest types every registry knows, in the order they are asked for.
const KNOWN_TYPES: [&str; 6] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
];

/// The types a request no client made asks for: the four standard ones (schema 1 is only
/// served to clients that ask for it).
const STANDARD_TYPES: &[&str] = KNOWN_TYPES.split_at(4).0;

/// What a client that sends no `Accept` takes: anything.
const WITHOUT_ACCEPT: &str = "*/*";

/// A client's manifest `Accept`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestAccept {
    /// Each media range, lower-cased without parameters, with its quality.
    ranges: Vec<(String, f32)>,
}

impl ManifestAccept {
    /// The four standard types, for requests mirrorgate makes for itself (warm, ensure).
    pub fn standard() -> ManifestAccept {
        ManifestAccept::of(STANDARD_TYPES)
    }

    fn of(types: &[&str]) -> ManifestAccept {
        ManifestAccept {
            ranges: types.iter().map(|t| ((*t).to_owned(), 1.0)).collect(),
        }
    }

    /// A client's `Accept` headers, each a comma-separated list of media ranges.
    pub fn from_headers(headers: GetAll<'_, HeaderValue>) -> ManifestAccept {
        let ranges: Vec<(String, f32)> = headers
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(media_range)
            .collect();
        if ranges.is_empty() {
            ManifestAccept::of(&[WITHOUT_ACCEPT])
        } else {
            ManifestAccept { ranges }
        }
    }

    /// Whether a manifest of `media_type` may be served: its most specific matching range
    /// (the type, then `type/*`, then `*/*`) has a quality above zero.
    pub fn accepts(&self, media_type: &str) -> bool {
        let media_type = media_type.trim().to_ascii_lowercase();
        let major = media_type.split('/').next().unwrap_or_default();
        let wildcard = format!("{major}/*");
        [media_type.as_str(), wildcard.as_str(), "*/*"]
            .iter()
            .find_map(|candidate| {
                self.ranges
                    .iter()
                    .find(|(range, _)| range == candidate)
                    .map(|(_, q)| *q > 0.0)
            })
            .unwrap_or(false)
    }

    /// What an upstream is asked for: the known types accepted, in a fixed order (so that
    /// clients accepting the same types share fetches and tag answers), then the other types the
    /// client named. `None`: no manifest type at all.
    pub fn upstream(&self) -> Option<HeaderValue> {
        let mut types: Vec<&str> = KNOWN_TYPES
            .iter()
            .copied()
            .filter(|t| self.accepts(t))
            .collect();
        let mut others: Vec<&str> = self
            .ranges
            .iter()
            .map(|(range, _)| range.as_str())
            .filter(|range| !range.ends_with("/*") && !KNOWN_TYPES.contains(range))
            .filter(|range| self.accepts(range))
            .collect();
        others.sort_unstable();
        others.dedup();
        types.extend(others);
        if types.is_empty() {
            return None;
        }
        HeaderValue::from_str(&types.join(", ")).ok()
    }

    /// Whether every standard type is accepted: such clients get what an upstream asked for
    /// the standard types answers, so they share tag answers with mirrorgate's own requests.
    pub fn takes_every_standard_type(&self) -> bool {
        STANDARD_TYPES.iter().all(|t| self.accepts(t))
    }
}

/// One media range of an `Accept` list: its `type/subtype` (lower-cased) and its `q`.
fn media_range(item: &str) -> Option<(String, f32)> {
    let mut parts = item.split(';');
    let range = parts.next()?.trim().to_ascii_lowercase();
    let (major, minor) = range.split_once('/')?;
    if major.is_empty() || minor.is_empty() || (major == "*" && minor != "*") {
        return None;
    }
    let q = parts
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
        .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok())?;
    Some((range, q.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http::header::ACCEPT;

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

    fn accept(values: &[&str]) -> ManifestAccept {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        ManifestAccept::from_headers(headers.get_all(ACCEPT))
    }

    fn accepted(accept: &ManifestAccept) -> Vec<bool> {
        [OCI, OCI_INDEX, DOCKER, DOCKER_LIST]
            .iter()
            .map(|t| accept.accepts(t))
            .collect()
    }

    #[test]
    fn a_type_is_accepted_by_its_most_specific_range_and_refused_by_q_zero() {
        assert_eq!(
            [
                accepted(&accept(&[DOCKER])),
                accepted(&accept(&[&format!("{DOCKER}, {OCI_INDEX}")])),
                accepted(&accept(&[DOCKER, DOCKER_LIST])),
                accepted(&accept(&["*/*"])),
                accepted(&accept(&[&format!("application/*, {OCI};q=0")])),
                accepted(&accept(&[&format!("{OCI}; q=0.5, */*;q=0")])),
                accepted(&accept(&["text/html"])),
                accepted(&accept(&[])),
            ],
            [
                vec![false, false, true, false],
                vec![false, true, true, false],
                vec![false, false, true, true],
                vec![true, true, true, true],
                vec![false, true, true, true],
                vec![true, false, false, false],
                vec![false, false, false, false],
                // No Accept: anything, as `*/*`.
                vec![true, true, true, true],
            ]
        );
    }

    #[test]
    fn an_upstream_is_asked_for_what_the_client_accepts_wildcards_spelled_out() {
        let upstream = |a: ManifestAccept| a.upstream().map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            [
                upstream(accept(&[DOCKER])),
                upstream(accept(&[&format!("{DOCKER}, {OCI};q=0.9, */*;q=0.1")])),
                upstream(accept(&["application/*;q=0.8", "application/x-custom"])),
                upstream(accept(&["text/html"])),
                upstream(accept(&[])),
                upstream(ManifestAccept::standard()),
            ],
            [
                Some(DOCKER.to_owned()),
                Some(KNOWN_TYPES.join(", ")),
                Some(format!("{}, application/x-custom", KNOWN_TYPES.join(", "))),
                Some("text/html".to_owned()),
                Some(KNOWN_TYPES.join(", ")),
                Some(STANDARD_TYPES.join(", ")),
            ]
        );
    }

    #[test]
    fn the_lists_clients_send_take_every_standard_type() {
        // containers/image (skopeo, podman, CRI-O) and containerd.
        let containers_image = KNOWN_TYPES.join(", ");
        let containerd = format!("{DOCKER}, {DOCKER_LIST}, {OCI}, {OCI_INDEX}, */*");
        assert_eq!(
            [
                accept(&[&containers_image]).takes_every_standard_type(),
                accept(&[&containerd]).takes_every_standard_type(),
                accept(&[DOCKER, DOCKER_LIST]).takes_every_standard_type(),
            ],
            [true, true, false]
        );
    }
}
