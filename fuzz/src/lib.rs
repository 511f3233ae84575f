//! The bodies of mirrorgate's fuzz targets, as plain functions.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line `fuzz_target!` calling the function of the same
//! name here, so the same bodies run under libFuzzer (`cargo +nightly fuzz run <name>`) and, on
//! stable, from `tests/properties.rs` (which includes this file with `#[path]`): the `heavy`
//! test feeds each of them 100,000 random inputs.
//!
//! A target panics only when the code under test panics or breaks one of the invariants
//! asserted here (round-trips, canonical results); errors are expected and ignored.

use std::path::Path;

use http::Method;
use mirrorgate::config::Config;
use mirrorgate::http::route::{self, ApiRequest};
use mirrorgate::reference::{Digest, Reference};
use mirrorgate::rules::{self, RepoScope, RuleSet, Scope};

/// A digest that is always valid, for probes.
pub const PROBE_DIGEST: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The invariants every parsed [`Reference`] keeps: its parts reassemble to its text, and its
/// text is canonical and parses back to the same value.
pub fn check_reference(r: &Reference) {
    let mut text = format!("{}/{}", r.domain(), r.path());
    assert_eq!(r.name(), text, "name() is domain()/path() for {r:?}");
    if let Some(tag) = r.tag() {
        text.push(':');
        text.push_str(tag);
    }
    if let Some(digest) = r.digest_str() {
        text.push('@');
        text.push_str(digest);
    }
    assert_eq!(r.as_str(), text, "the parts reassemble to the text");
    assert_eq!(r.to_string(), text);
    assert_eq!(r.is_digest(), r.digest_str().is_some());
    if let Some(digest) = r.digest() {
        assert_eq!(Some(digest.as_str()), r.digest_str());
        assert_eq!(digest.as_str().parse::<Digest>().as_ref(), Ok(&digest));
    }
    assert_eq!(
        Reference::parse_canonical(r.as_str()).as_ref(),
        Ok(r),
        "the text of a reference is canonical"
    );
    if r.tag().is_some() || r.is_digest() {
        // Without tag and digest normalisation would add `:latest`.
        assert_eq!(Reference::parse_normalized(r.as_str()).as_ref(), Ok(r));
    }
}

/// Whether a domain is one that a reference string names as a domain (`.` or `:` or
/// `localhost`); other hosts (`registry1`) read as a Docker Hub namespace when reparsed.
pub fn domain_is_recognised(domain: &str) -> bool {
    domain.contains(['.', ':']) || domain == "localhost"
}

/// Reference, digest and scope parsers on one string; `from_parts` on its `\n`-separated parts.
pub fn reference(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    if let Ok(r) = Reference::parse_normalized(s) {
        check_reference(&r);
        assert!(
            r.tag().is_some() || r.is_digest(),
            "normalised has a tag or digest"
        );
    }
    if let Ok(r) = Reference::parse_canonical(s) {
        assert_eq!(r.as_str(), s, "a canonical reference keeps its text");
        check_reference(&r);
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.as_str(), s);
        assert_eq!(d.to_string().parse::<Digest>(), Ok(d.clone()));
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
    }
    if let Ok(scope) = Scope::parse(s) {
        assert_eq!(scope.as_str(), s);
    }
    if let Ok(scope) = RepoScope::parse(s) {
        assert_eq!(scope.as_str(), s);
        assert_eq!(Scope::parse(s), Ok(Scope::Repo(scope)));
    }

    let mut parts = s.splitn(4, '\n');
    let domain = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let tag = parts.next().filter(|t| !t.is_empty());
    let digest = parts.next().and_then(|d| d.parse::<Digest>().ok());
    if let Ok(r) = Reference::from_parts(domain, path, tag, digest.as_ref()) {
        // See tests/properties.rs `from_parts_round_trips`: a single-label domain such as
        // `registry1` gives a reference whose text reparses on Docker Hub.
        if domain_is_recognised(r.domain()) {
            check_reference(&r);
        }
    }
}

/// The references that probe a rule set: a few under every scope of every rule.
pub fn probes(set: &RuleSet) -> Vec<Reference> {
    let mut out = Vec::new();
    for rule in set.rules() {
        let scope = rule.scope.as_str();
        let names: Vec<String> = match scope.strip_prefix("*.") {
            Some(domain) => vec![
                format!("a.{domain}/x"),
                format!("a.b.{domain}:5000/ns/x"),
                format!("{domain}/x"),
            ],
            None if scope.contains('/') => vec![scope.to_owned(), format!("{scope}/x")],
            None => vec![format!("{scope}/x"), format!("{scope}/ns/x")],
        };
        for name in names {
            for suffix in [String::from(":v1"), format!("@{PROBE_DIGEST}")] {
                if let Ok(r) = Reference::parse_normalized(&format!("{name}{suffix}")) {
                    out.push(r);
                }
            }
        }
    }
    out
}

/// The invariants of a resolution: at least one source, all canonical, the source last and
/// unchanged.
pub fn check_resolution(set: &RuleSet, r: &Reference) {
    let Ok(resolution) = set.resolve(r) else {
        return;
    };
    assert!(!resolution.sources.is_empty(), "Ok has a pull source");
    for source in resolution.sources.iter().map(|s| &s.reference) {
        check_reference(source);
        assert_eq!(source.is_digest(), r.is_digest(), "kind is kept");
        assert_eq!(source.tag(), r.tag());
        assert_eq!(source.digest_str(), r.digest_str());
    }
    for blocked in &resolution.blocked {
        check_reference(&blocked.reference);
    }
    assert!(
        resolution
            .sources
            .iter()
            .map(|s| &s.reference)
            .chain(resolution.blocked.iter().map(|b| &b.reference))
            .any(|x| x == r),
        "the source itself is among the attempts"
    );
}

/// The rule parser on arbitrary text; what loads is rendered and probed.
pub fn rules(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let Ok(set) = rules::load_str(&s, "f.yaml") else {
        return;
    };
    let _ = set.summary();
    let _ = set.to_registries_conf();
    for rule in set.rules() {
        assert!(set.rule(rule.scope.as_str()).is_some());
    }
    for probe in probes(&set) {
        check_resolution(&set, &probe);
    }
}

/// The method a fuzz byte selects.
pub fn method(selector: u8) -> Method {
    match selector % 8 {
        0 | 1 => Method::GET,
        2 => Method::HEAD,
        3 => Method::PUT,
        4 => Method::POST,
        5 => Method::DELETE,
        6 => Method::PATCH,
        _ => Method::OPTIONS,
    }
}

/// The path router: the first byte picks the method, the rest is `path[?query]`.
pub fn route(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text.as_ref(), None),
    };
    check_route(&method(selector), path, query);
}

/// Routes one request and checks what comes out.
pub fn check_route(method: &Method, path: &str, query: Option<&str>) {
    let Ok(request) = route::parse(method, path, query, "docker.io") else {
        return;
    };
    let _ = request.route();
    // OPTIONS names what the same path names with GET.
    let request = match request {
        ApiRequest::Options { path } => *path,
        request => request,
    };
    let repository = match &request {
        ApiRequest::Manifest {
            repository,
            reference,
        } => {
            assert_eq!(reference.name(), repository.name());
            if domain_is_recognised(reference.domain()) {
                check_reference(reference);
            }
            repository
        }
        ApiRequest::Blob { repository, .. }
        | ApiRequest::TagsList { repository, .. }
        | ApiRequest::Referrers { repository, .. } => repository,
        ApiRequest::Base
        | ApiRequest::BaseWithoutSlash
        | ApiRequest::Catalog
        | ApiRequest::Options { .. }
        | ApiRequest::Healthz
        | ApiRequest::Readyz
        | ApiRequest::Metrics => {
            return;
        }
    };
    assert_eq!(repository.reference.tag(), Some("latest"));
    if domain_is_recognised(repository.reference.domain()) {
        check_reference(&repository.reference);
    }
    let _ = repository.with_tag("v1");
    let _ = repository.with_digest(&PROBE_DIGEST.parse().expect("probe digest"));
}

/// The configuration parser on arbitrary text.
pub fn config(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(config) = Config::from_yaml_str(&s, "c.yaml") {
        assert!(config.validate("c.yaml").is_ok(), "what loads validates");
        let _ = config.endpoint_for(&config.default_registry);
        for host in config.registries.keys() {
            let _ = config.endpoint_for(host).to_string();
        }
    }
}

/// The dockerconfigjson (pull secret) parser, through [`mirrorgate::upstream::Upstream::new`]
/// (the parser itself is private): `data` is written to `path` and loaded as the pull secret.
pub fn dockerconfigjson(data: &[u8], path: &Path) {
    std::fs::write(path, data).expect("write the pull secret");
    let config = Config {
        pull_secret: Some(path.to_owned()),
        ..Config::default()
    };
    if let Err(error) = mirrorgate::upstream::Upstream::new(&config) {
        let _ = error.to_string();
    }
}
