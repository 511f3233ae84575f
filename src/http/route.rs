//! From a request line to what is asked: the OCI distribution API paths, and the addressing that
//! maps a client's `<name>` to the upstream repository it means.
//!
//! Addressing (design.md "Addressing"), checked in this order:
//! 1. `?ns=<registry>` (containerd's mirror convention): `<name>` is a path on that registry;
//! 2. a first component that is a host (has `.` or `:`, or is `localhost`): `/v2/quay.io/ns/app/…`,
//!    which is what a registries.conf `location = "proxy:5000/quay.io"` produces;
//! 3. otherwise the default registry, with Docker Hub normalisation (`busybox` → `library/busybox`).
//!
//! axum's router cannot match `<name>` with slashes followed by `/manifests/<ref>`; registries parse
//! the path by hand, from the right, since a reference or digest never holds a `/`.

use http::Method;

use super::error::{ApiError, ErrorCode};
pub use crate::proxy::{Repository, Route};
use crate::reference::{self, Digest, Reference};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    /// `GET /v2/`: the API version check.
    Base,
    /// `GET /v2`: moved to `/v2/`, as Distribution answers.
    BaseWithoutSlash,
    /// `OPTIONS` on an API path: which methods it takes.
    Options {
        /// What the same path asks for with `GET`.
        path: Box<ApiRequest>,
    },
    /// `GET /v2/_catalog`: not part of the OCI distribution spec, and not kept by mirrorgate.
    Catalog,
    /// `/v2/<name>/manifests/<tag|digest>`.
    Manifest {
        /// The repository.
        repository: Repository,
        /// The logical reference, with the tag or the digest asked for.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// The repository.
        repository: Repository,
        /// The blob's digest.
        digest: Digest,
    },
    /// `/v2/<name>/tags/list[?n=…&last=…]`.
    TagsList {
        /// The repository.
        repository: Repository,
        /// The page size asked for.
        n: Option<usize>,
        /// The tag to continue after.
        last: Option<String>,
    },
    /// `/v2/<name>/referrers/<digest>[?artifactType=…]`.
    Referrers {
        /// The repository.
        repository: Repository,
        /// The subject's digest.
        digest: Digest,
        /// The artifact type filter, the one query parameter the spec defines for referrers.
        artifact_type: Option<String>,
        /// The rest of the query but `ns`: the spec pages referrers by an opaque `Link`, so a
        /// page's parameters (`n`, `last`, a cursor) are the upstream's own, passed back to it.
        page: Vec<(String, String)>,
    },
    /// `/healthz`: the process is alive.
    Healthz,
    /// `/readyz`: rules loaded and cache writable.
    Readyz,
    /// `/metrics`: Prometheus metrics.
    Metrics,
}

impl ApiRequest {
    /// The repository the request names, if any.
    pub fn repository(&self) -> Option<&Repository> {
        match self {
            ApiRequest::Options { path } => path.repository(),
            ApiRequest::Manifest { repository, .. }
            | ApiRequest::Blob { repository, .. }
            | ApiRequest::TagsList { repository, .. }
            | ApiRequest::Referrers { repository, .. } => Some(repository),
            ApiRequest::Base
            | ApiRequest::BaseWithoutSlash
            | ApiRequest::Catalog
            | ApiRequest::Healthz
            | ApiRequest::Readyz
            | ApiRequest::Metrics => None,
        }
    }

    /// What the request is about, for metrics and logs.
    pub fn route(&self) -> Route {
        match self {
            ApiRequest::Base | ApiRequest::BaseWithoutSlash | ApiRequest::Catalog => Route::Base,
            ApiRequest::Options { path } => path.route(),
            ApiRequest::Manifest { .. } => Route::Manifest,
            ApiRequest::Blob { .. } => Route::Blob,
            ApiRequest::TagsList { .. } => Route::Tags,
            ApiRequest::Referrers { .. } => Route::Referrers,
            ApiRequest::Healthz => Route::Healthz,
            ApiRequest::Readyz => Route::Readyz,
            ApiRequest::Metrics => Route::Metrics,
        }
    }
}

/// Parses a request. `default_registry` is the registry of names that do not name one.
pub fn parse(
    method: &Method,
    path: &str,
    query: Option<&str>,
    default_registry: &str,
) -> Result<ApiRequest, ApiError> {
    match path {
        "/healthz" => return Ok(ApiRequest::Healthz),
        "/readyz" => return Ok(ApiRequest::Readyz),
        "/metrics" => return Ok(ApiRequest::Metrics),
        _ => {}
    }
    if *method == Method::OPTIONS {
        let path = parse(&Method::GET, path, query, default_registry)?;
        return Ok(ApiRequest::Options {
            path: Box::new(path),
        });
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::unsupported(method));
    }
    match path {
        "/v2/" => return Ok(ApiRequest::Base),
        "/v2" => return Ok(ApiRequest::BaseWithoutSlash),
        "/v2/_catalog" => return Ok(ApiRequest::Catalog),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Err(ApiError::new(
            http::StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            format!("no such endpoint: {path}"),
        ));
    };
    let rest = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| ApiError::name_invalid("the path is not UTF-8"))?;
    let params = Params::parse(query);

    if let Some(name) = rest.strip_suffix("/tags/list") {
        let n = match params.get("n") {
            None => None,
            Some(n) => Some(n.parse::<usize>().map_err(|_| {
                ApiError::new(
                    http::StatusCode::BAD_REQUEST,
                    ErrorCode::Unsupported,
                    format!("invalid page size n=\"{n}\""),
                )
            })?),
        };
        return Ok(ApiRequest::TagsList {
            repository: repository(name, &params, default_registry)?,
            n,
            last: params.get("last").map(str::to_owned),
        });
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let repository = repository(name, &params, default_registry)?;
        let reference = if reference.contains(':') {
            repository.with_digest(&parse_digest(reference)?)
        } else {
            repository.with_tag(reference).map_err(ApiError::from)?
        };
        return Ok(ApiRequest::Manifest {
            repository,
            reference,
        });
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Ok(ApiRequest::Blob {
            repository: repository(name, &params, default_registry)?,
            digest: parse_digest(digest)?,
        });
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        return Ok(ApiRequest::Referrers {
            repository: repository(name, &params, default_registry)?,
            digest: parse_digest(digest)?,
            artifact_type: params.get("artifactType").map(str::to_owned),
            page: params.except(&["ns", "artifactType"]),
        });
    }
    Err(ApiError::new(
        http::StatusCode::NOT_FOUND,
        ErrorCode::NameUnknown,
        format!("no such endpoint: {path}"),
    ))
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse::<Digest>()
        .map_err(|e| ApiError::digest_invalid(e.to_string()))
}

/// Maps `<name>` to the logical repository (see the module docs).
fn repository(name: &str, params: &Params, default_registry: &str) -> Result<Repository, ApiError> {
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::name_invalid(format!("invalid repository name \"{name}\": {e}"))
    };
    let (domain, path) = match params.get("ns") {
        Some(ns) => (ns, name),
        None => reference::named_domain(name).unwrap_or((default_registry, name)),
    };
    let reference =
        Reference::from_parts(domain, path, Some("latest"), None).map_err(|e| invalid(&e))?;
    Ok(Repository {
        reference,
        client_name: name.to_owned(),
        ns: params.get("ns").map(str::to_owned),
    })
}

/// The response header naming the registry a `?ns=` request was scoped to (distribution-spec,
/// "Registry Proxying").
pub const OCI_NAMESPACE: http::HeaderName = http::HeaderName::from_static("oci-namespace");

/// The `OCI-Namespace` value for a request's query: its `ns`, when it has a usable one.
pub fn oci_namespace(query: Option<&str>) -> Option<http::HeaderValue> {
    Params::parse(query)
        .get("ns")
        .filter(|ns| !ns.is_empty())
        .and_then(|ns| http::HeaderValue::from_str(ns).ok())
}

/// Decoded query parameters; the first occurrence of a key wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Params {
        Params(
            query
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter but those named, in order.
    fn except(&self, keys: &[&str]) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| !keys.contains(&k.as_str()))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn get(path: &str, query: Option<&str>) -> Result<ApiRequest, ApiError> {
        parse(&Method::GET, path, query, "docker.io")
    }

    fn manifest_reference(path: &str, query: Option<&str>) -> String {
        match get(path, query).unwrap() {
            ApiRequest::Manifest { reference, .. } => reference.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ns_query_names_the_registry() {
        assert_eq!(
            manifest_reference("/v2/openshift/release/manifests/4.16", Some("ns=quay.io")),
            "quay.io/openshift/release:4.16"
        );
    }

    #[test]
    fn host_prefix_names_the_registry() {
        assert_eq!(
            manifest_reference("/v2/quay.io/openshift/release/manifests/4.16", None),
            "quay.io/openshift/release:4.16"
        );
    }

    #[test]
    fn host_with_port_prefix_names_the_registry() {
        assert_eq!(
            manifest_reference("/v2/127.0.0.1:5001/ns/app/manifests/v1", None),
            "127.0.0.1:5001/ns/app:v1"
        );
    }

    #[test]
    fn plain_name_goes_to_the_default_registry_with_library() {
        assert_eq!(
            manifest_reference("/v2/busybox/manifests/1", None),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn ns_docker_io_normalises_official_images() {
        assert_eq!(
            manifest_reference("/v2/busybox/manifests/1", Some("ns=docker.io")),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn manifest_by_digest_is_a_digest_reference() {
        assert_eq!(
            manifest_reference(&format!("/v2/quay.io/ns/app/manifests/{DIGEST}"), None),
            format!("quay.io/ns/app@{DIGEST}")
        );
    }

    #[test]
    fn percent_encoded_digest_colon_is_decoded() {
        assert_eq!(
            manifest_reference(
                &format!(
                    "/v2/quay.io/ns/app/manifests/{}",
                    DIGEST.replace(':', "%3A")
                ),
                None
            ),
            format!("quay.io/ns/app@{DIGEST}")
        );
    }

    #[test]
    fn repository_named_manifests_is_split_at_the_last_marker() {
        assert_eq!(
            manifest_reference("/v2/quay.io/a/manifests/b/manifests/v1", None),
            "quay.io/a/manifests/b:v1"
        );
    }

    #[test]
    fn blob_path_is_parsed() {
        let request = get(&format!("/v2/quay.io/ns/app/blobs/{DIGEST}"), None).unwrap();
        assert!(matches!(request, ApiRequest::Blob { digest, .. } if digest.as_str() == DIGEST));
    }

    #[test]
    fn tags_list_takes_n_and_last() {
        let request = get("/v2/quay.io/ns/app/tags/list", Some("n=10&last=v1")).unwrap();
        assert!(matches!(
            request,
            ApiRequest::TagsList { n: Some(10), last: Some(ref l), .. } if l == "v1"
        ));
    }

    #[test]
    fn referrers_take_an_artifact_type() {
        let request = get(
            &format!("/v2/quay.io/ns/app/referrers/{DIGEST}"),
            Some("artifactType=application%2Fvnd.example"),
        )
        .unwrap();
        assert!(matches!(
            request,
            ApiRequest::Referrers { artifact_type: Some(ref t), .. } if t == "application/vnd.example"
        ));
    }

    #[test]
    fn a_referrers_page_keeps_the_upstreams_own_parameters_but_ns() {
        let request = get(
            &format!("/v2/ns/app/referrers/{DIGEST}"),
            Some("ns=quay.io&n=2&artifactType=a%2Fb&last=sha256%3Aabc&cursor=x"),
        )
        .unwrap();
        let ApiRequest::Referrers {
            artifact_type,
            page,
            ..
        } = request
        else {
            panic!("{request:?}");
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            (artifact_type, page),
            (
                Some("a/b".to_owned()),
                vec![
                    pair("n", "2"),
                    pair("last", "sha256:abc"),
                    pair("cursor", "x")
                ]
            )
        );
    }

    #[test]
    fn base_endpoint_is_recognised() {
        assert_eq!(get("/v2/", None).unwrap(), ApiRequest::Base);
    }

    #[test]
    fn dot_dot_in_a_name_is_name_invalid() {
        assert_eq!(
            get("/v2/quay.io/../etc/manifests/v1", None)
                .unwrap_err()
                .code,
            ErrorCode::NameInvalid
        );
    }

    #[test]
    fn upper_case_name_is_name_invalid() {
        assert_eq!(
            get("/v2/quay.io/NS/app/manifests/v1", None)
                .unwrap_err()
                .code,
            ErrorCode::NameInvalid
        );
    }

    #[test]
    fn bad_digest_is_digest_invalid() {
        assert_eq!(
            get("/v2/quay.io/ns/app/blobs/sha256:abc", None)
                .unwrap_err()
                .code,
            ErrorCode::DigestInvalid
        );
    }

    #[test]
    fn a_tag_outside_the_grammar_names_no_manifest() {
        let error = get("/v2/quay.io/ns/app/manifests/.bad", None).unwrap_err();
        assert_eq!(
            (error.status, error.code),
            (http::StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown)
        );
    }

    #[test]
    fn write_methods_are_unsupported() {
        let error = parse(
            &Method::PUT,
            "/v2/quay.io/ns/app/manifests/v1",
            None,
            "docker.io",
        )
        .unwrap_err();
        assert_eq!(
            (error.status, error.code),
            (http::StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported)
        );
    }

    #[test]
    fn unknown_path_is_not_found() {
        assert_eq!(
            get("/v2/quay.io/ns/app/unknown", None).unwrap_err().status,
            http::StatusCode::NOT_FOUND
        );
    }
}
