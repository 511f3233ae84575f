//! Property tests: no parser panics on any input, and valid values round-trip.
//!
//! The bodies of the fuzz targets in `fuzz/` are shared with these tests (`targets` below), so
//! every input generated here also checks the invariants those targets assert. The `heavy_*`
//! tests (ignored by default) push 100,000 inputs through each target, for stable toolchains
//! where cargo-fuzz cannot run: `cargo test --release --test tests -- --ignored properties::heavy`.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use http::Method;
use mirrorgate::config::Config;
use mirrorgate::http::route::{self, ApiRequest};
use mirrorgate::reference::{Digest, NAME_TOTAL_LENGTH_MAX, Reference, ReferenceError};
use mirrorgate::rules::{self, RepoScope, Scope};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Generators biased to the grammar.

/// A DNS label, upper case allowed.
fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?"
}

/// A host that a reference names as a domain: dotted, `localhost` or IPv6, optionally a port.
fn host() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        6 => prop::collection::vec(label(), 2..4).prop_map(|l| l.join(".")),
        1 => Just("localhost".to_owned()),
        1 => Just("[::1]".to_owned()),
        1 => Just("[fe80::1:2]".to_owned()),
        1 => (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("10.{a}.{b}.1")),
        1 => Just("docker.io".to_owned()),
        1 => Just("index.docker.io".to_owned()),
    ];
    (name, prop::option::of(0u32..70000)).prop_map(|(name, port)| match port {
        Some(port) => format!("{name}:{port}"),
        None => name,
    })
}

/// One repository path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,5}(([._]|__|-{1,3})[a-z0-9]{1,5}){0,3}"
}

/// A component that never reads as a host (no `.`), for the first one of a name without domain.
fn plain_component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,5}(([_]|__|-{1,3})[a-z0-9]{1,5}){0,3}"
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..5).prop_map(|c| c.join("/"))
}

/// A path whose first component is not a host.
fn hostless_path() -> impl Strategy<Value = String> {
    (plain_component(), prop::collection::vec(component(), 0..4)).prop_map(|(first, rest)| {
        std::iter::once(first)
            .chain(rest)
            .collect::<Vec<_>>()
            .join("/")
    })
}

fn tag() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        1 => "[A-Za-z0-9_][A-Za-z0-9_.-]{100,127}",
        1 => Just("latest".to_owned()),
    ]
}

fn digest() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
        1 => "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
    ]
}

/// Strings assembled from the grammar's pieces, valid or nearly so.
fn grammar_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(":".to_owned()),
        Just("@".to_owned()),
        Just("sha256:".to_owned()),
        Just("sha512:".to_owned()),
        Just("@sha256:".to_owned()),
        "[0-9a-f]{0,130}",
        label(),
        component(),
        host(),
        tag(),
        digest(),
        Just(".".to_owned()),
        Just("_".to_owned()),
        Just("__".to_owned()),
        Just("-".to_owned()),
        Just("*.".to_owned()),
        Just("*".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("%".to_owned()),
        Just("%3A".to_owned()),
        Just("%2F".to_owned()),
        Just("\n".to_owned()),
        Just("docker.io".to_owned()),
        Just("index.docker.io".to_owned()),
        Just("library".to_owned()),
        "\\PC{0,3}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

/// Arbitrary bytes, arbitrary text, or grammar soup.
fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        any::<String>().prop_map(String::into_bytes),
        grammar_soup().prop_map(String::into_bytes),
    ]
}

/// `valid` with a few bytes flipped, inserted or deleted.
fn mutated(valid: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    (
        valid,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6),
    )
        .prop_map(|(text, edits)| {
            let mut bytes = text.into_bytes();
            for (at, byte, op) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            bytes
        })
}

// ---------------------------------------------------------------------------------------------
// References, digests, scopes.

/// What normalisation makes of a domain and path: `(domain, path)`.
fn normalised(domain: &str, path: &str) -> (String, String) {
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    (domain.to_owned(), path)
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn reference_parsers_never_panic(input in any_input()) {
        targets::reference(&input);
    }

    #[test]
    fn from_parts_never_panics(
        domain in prop_oneof![host(), label(), grammar_soup()],
        path in prop_oneof![path(), grammar_soup()],
        tag in prop::option::of(prop_oneof![tag(), grammar_soup()]),
        digest in prop::option::of(digest()),
    ) {
        let digest = digest.map(|d| d.parse::<Digest>().unwrap());
        if let Ok(r) = Reference::from_parts(&domain, &path, tag.as_deref(), digest.as_ref())
            && targets::domain_is_recognised(r.domain())
        {
            targets::check_reference(&r);
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn valid_references_round_trip(
        domain in prop::option::of(host()),
        path in path(),
        hostless in hostless_path(),
        tag in prop::option::of(tag()),
        digest in prop::option::of(digest()),
    ) {
        let (written, path) = match &domain {
            Some(domain) => (format!("{domain}/{path}"), path),
            None => (hostless.clone(), hostless),
        };
        let mut s = written;
        if let Some(tag) = &tag {
            s = format!("{s}:{tag}");
        }
        if let Some(digest) = &digest {
            s = format!("{s}@{digest}");
        }
        let (want_domain, want_path) = normalised(domain.as_deref().unwrap_or("docker.io"), &path);
        let name_len = want_domain.len() + 1 + want_path.len();
        let parsed = Reference::parse_normalized(&s);
        if name_len > NAME_TOTAL_LENGTH_MAX {
            prop_assert_eq!(parsed, Err(ReferenceError::NameTooLong(name_len)));
            return Ok(());
        }
        let r = parsed.map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
        prop_assert_eq!(r.domain(), want_domain.as_str());
        prop_assert_eq!(r.path(), want_path.as_str());
        let want_tag = match (&tag, &digest) {
            (None, None) => Some("latest"),
            (tag, _) => tag.as_deref(),
        };
        prop_assert_eq!(r.tag(), want_tag);
        prop_assert_eq!(r.digest_str(), digest.as_deref());
        prop_assert_eq!(Reference::parse_normalized(&r.to_string()), Ok(r.clone()));
        prop_assert_eq!(Reference::parse_canonical(r.as_str()), Ok(r.clone()));
        targets::check_reference(&r);
        // The same reference from its parts.
        let d = digest.as_deref().map(|d| d.parse::<Digest>().unwrap());
        let from_parts = Reference::from_parts(r.domain(), r.path(), r.tag(), d.as_ref());
        prop_assert_eq!(from_parts, Ok(r.clone()));
        // A canonical input is accepted as is.
        if domain.as_deref().is_some_and(|d| d != "index.docker.io")
            && r.as_str() == s
        {
            prop_assert_eq!(Reference::parse_canonical(&s), Ok(r));
        }
    }

    #[test]
    fn valid_digests_round_trip(d in digest()) {
        let parsed: Digest = d.parse().unwrap();
        prop_assert_eq!(parsed.as_str(), d.as_str());
        prop_assert_eq!(parsed.to_string().parse::<Digest>(), Ok(parsed.clone()));
        prop_assert_eq!(parsed.hex().len(), parsed.algorithm().hex_len());
    }

    #[test]
    fn digests_with_a_wrong_hex_length_are_rejected(
        algorithm in prop_oneof![Just("sha256"), Just("sha512")],
        hex in "[0-9a-f]{0,140}",
    ) {
        let want = if algorithm == "sha256" { 64 } else { 128 };
        let parsed = format!("{algorithm}:{hex}").parse::<Digest>();
        prop_assert_eq!(parsed.is_ok(), hex.len() == want);
    }

    #[test]
    fn valid_scopes_round_trip(host in host(), path in prop::option::of(path())) {
        // Scopes take DNS names with a port only (no IPv6 literal).
        prop_assume!(!host.starts_with('['));
        let s = match &path {
            Some(path) => format!("{host}/{path}"),
            None => host.clone(),
        };
        let repo = RepoScope::parse(&s).map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
        prop_assert_eq!(repo.as_str(), s.as_str());
        prop_assert_eq!(Scope::parse(&s), Ok(Scope::Repo(repo)));
        let name = host.split(':').next().unwrap();
        let wildcard = format!("*.{name}");
        let scope = Scope::parse(&wildcard).unwrap();
        prop_assert!(scope.is_wildcard());
        prop_assert_eq!(scope.as_str(), wildcard.as_str());
        prop_assert!(RepoScope::parse(&wildcard).is_err());
    }
}

/// `from_parts` refuses a single-label domain (`?ns=registry1` in the router): its text would
/// name Docker Hub when parsed again, so it has no canonical form.
#[test]
fn from_parts_refuses_a_domain_without_canonical_form() {
    assert!(Reference::from_parts("registry1", "ns/app", Some("v1"), None).is_err());
}

/// The router refuses `?ns=<single-label host>` (no canonical reference names it) with
/// NAME_INVALID rather than route a reference containers/image would read as Docker Hub's.
#[test]
fn ns_single_label_host_is_name_invalid() {
    let error = route::parse(
        &Method::GET,
        "/v2/ns/app/manifests/v1",
        Some("ns=registry1"),
        "docker.io",
    )
    .unwrap_err();
    assert_eq!(error.code, mirrorgate::http::ErrorCode::NameInvalid);
}

// ---------------------------------------------------------------------------------------------
// Rules and the router.

fn idms_yaml(kind: &str, field: &str, source: &str, mirrors: &[String]) -> String {
    let list: String = mirrors.iter().map(|m| format!("    - {m}\n")).collect();
    format!(
        "---\napiVersion: config.openshift.io/v1\nkind: {kind}\nmetadata:\n  name: g\nspec:\n  {field}:\n  - source: \"{source}\"\n    mirrors:\n{list}"
    )
}

/// A repository scope of a rule: a dotted host and zero to two path components.
fn scope() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[a-z][a-z0-9]{0,4}", 2..3).prop_map(|l| l.join(".")),
        prop::collection::vec(component(), 0..3),
    )
        .prop_map(|(host, path)| {
            std::iter::once(host)
                .chain(path)
                .collect::<Vec<_>>()
                .join("/")
        })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn rule_parser_never_panics(text in any_input()) {
        targets::rules(&text);
    }

    #[test]
    fn generated_rule_objects_load_and_resolve(
        source in scope(),
        lists in prop::collection::vec(prop::collection::vec(scope(), 1..4), 1..4),
        kinds in prop::collection::vec(0u8..3, 1..4),
        repo in component(),
        tag in tag(),
    ) {
        // Lists may overlap, contradict each other or repeat entries: the merge must cope.
        let mut yaml = String::new();
        for (list, kind) in lists.iter().zip(kinds.iter().cycle()) {
            let (k, f) = match kind {
                0 => ("ImageDigestMirrorSet", "imageDigestMirrors"),
                1 => ("ImageTagMirrorSet", "imageTagMirrors"),
                _ => ("ImageContentSourcePolicy", "repositoryDigestMirrors"),
            };
            let mut list = list.clone();
            if k != "ImageContentSourcePolicy" {
                list.sort();
                list.dedup();
            }
            yaml.push_str(&idms_yaml(k, f, &source, &list));
            let yaml = yaml.replace("operator.openshift.io/v1alpha1", "config.openshift.io/v1");
            let _ = yaml;
        }
        let yaml = yaml.replace(
            "apiVersion: config.openshift.io/v1\nkind: ImageContentSourcePolicy",
            "apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicy",
        );
        let set = rules::load_str(&yaml, "g.yaml").expect("generated rules load");
        let reference = Reference::parse_normalized(&format!("{source}/{repo}:{tag}"));
        if let Ok(reference) = reference {
            targets::check_resolution(&set, &reference);
        }
        for probe in targets::probes(&set) {
            targets::check_resolution(&set, &probe);
        }
    }

    #[test]
    fn router_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
        targets::route(&data);
    }

    #[test]
    fn manifest_by_tag_routes_to_its_reference(domain in host(), path in path(), tag in tag()) {
        let request = route::parse(&Method::GET, &format!("/v2/{domain}/{path}/manifests/{tag}"), None, "docker.io");
        if let Ok(ApiRequest::Manifest { reference, .. }) = request {
            prop_assert_eq!(reference.tag(), Some(tag.as_str()));
            targets::check_reference(&reference);
        }
    }
}

/// Contradictory lists whose cycle is broken at the source (it sorts before its mirrors) used to
/// panic while merging.
#[test]
fn cyclic_mirror_lists_load() {
    let yaml = format!(
        "{}{}",
        idms_yaml(
            "ImageDigestMirrorSet",
            "imageDigestMirrors",
            "a.io",
            &["b.io/x".into(), "c.io/x".into()]
        ),
        idms_yaml(
            "ImageDigestMirrorSet",
            "imageDigestMirrors",
            "a.io",
            &["c.io/x".into(), "b.io/x".into()]
        )
    );
    assert!(rules::load_str(&yaml, "cycle.yaml").is_ok());
}

/// An ICSP listing a mirror twice loops it on itself; that must load too.
#[test]
fn an_icsp_repeating_a_mirror_loads() {
    let yaml = idms_yaml(
        "ImageContentSourcePolicy",
        "repositoryDigestMirrors",
        "a.io",
        &["m.io/m".into(), "m.io/m".into()],
    )
    .replace("config.openshift.io/v1", "operator.openshift.io/v1alpha1");
    assert!(rules::load_str(&yaml, "icsp.yaml").is_ok());
}

// ---------------------------------------------------------------------------------------------
// Configuration and pull secrets.

fn config_yaml() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        host(),
        label(),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("{}".to_owned()),
        Just("[]".to_owned()),
        Just("- a\n- b".to_owned()),
        "[0-9]{1,25}(B|KiB|MiB|GiB|TiB|KB|k|)",
        "[0-9]{1,25}(ns|s|m|h|d|y|)",
        "-[0-9]{1,20}",
        (0u8..=255, 0u32..70000).prop_map(|(a, p)| format!("127.0.0.{a}:{p}")),
        Just("[::]:5000".to_owned()),
        "(https?|ftp)://[a-z.:0-9@/]{0,20}",
        "[a-z=,_:0-9\\[\\]{}\"]{0,20}",
        "\\PC{0,10}",
    ];
    let key = prop::sample::select(vec![
        "listen",
        "metrics_listen",
        "rules",
        "default_registry",
        "registries",
        "pull_secret",
        "cache",
        "upstream",
        "watch",
        "log_level",
        "tls",
        "unknown",
    ]);
    let sub = prop::sample::select(vec![
        "dir",
        "max_size",
        "memory",
        "tag_ttl",
        "stale_if_error",
        "connect_timeout",
        "timeout",
        "endpoint",
        "insecure",
        "ca_file",
        "cert_file",
        "key_file",
    ]);
    let line = prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k}: {v}")),
        (key, sub, value).prop_map(|(k, s, v)| format!("{k}:\n  {s}: {v}")),
        (host(), sub_value()).prop_map(|(h, v)| format!("registries:\n  \"{h}\":\n    {v}")),
    ];
    prop::collection::vec(line, 0..8).prop_map(|l| l.join("\n"))
}

fn sub_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "(https?)://[a-z.]{1,10}(:[0-9]{1,6})?/?".prop_map(|e| format!("endpoint: {e}")),
        any::<bool>().prop_map(|b| format!("insecure: {b}")),
        "[a-z/]{0,10}".prop_map(|p| format!("ca_file: \"{p}\"")),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_parser_never_panics(
        input in prop_oneof![any_input(), config_yaml().prop_map(String::into_bytes), mutated(config_yaml())],
    ) {
        targets::config(&input);
    }

    #[test]
    fn valid_configs_load(
        port in 1u16..=65535,
        registry in host(),
        max_size in 1u64..1_000_000,
        unit in prop::sample::select(vec!["B", "KiB", "MiB", "GiB"]),
        ttl in 0u64..100_000,
    ) {
        // An IPv6 or docker.io default registry is fine too; hosts with an out-of-range port
        // are not.
        let port_ok = registry
            .rsplit_once(':')
            .filter(|(h, _)| !h.ends_with(':') && !registry.ends_with(']'))
            .is_none_or(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0));
        let text = format!(
            "listen: 127.0.0.1:{port}\ndefault_registry: \"{registry}\"\ncache:\n  max_size: {max_size}{unit}\n  tag_ttl: {ttl}s\n"
        );
        let loaded = Config::from_yaml_str(&text, "c.yaml");
        if port_ok {
            let config = loaded.map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(config.listen.port(), port);
            prop_assert_eq!(config.default_registry, registry);
            prop_assert_eq!(config.cache.tag_ttl.as_secs(), ttl);
        } else {
            prop_assert!(loaded.is_err());
        }
    }
}

fn pull_secret_json() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        host(),
        (host(), path()).prop_map(|(h, p)| format!("{h}/{p}")),
        host().prop_map(|h| format!("https://{h}/v1/")),
        Just("https://index.docker.io/v1/".to_owned()),
        Just("".to_owned()),
        Just("/".to_owned()),
        Just("HTTPS://".to_owned()),
        "\\PC{0,8}",
    ];
    let auth = prop_oneof![
        "[A-Za-z0-9+/=_-]{0,24}".prop_map(|a| format!("{{\"auth\": \"{a}\"}}")),
        ("[a-z]{0,6}", "\\PC{0,6}")
            .prop_map(|(u, p)| { serde_json::json!({"username": u, "password": p}).to_string() }),
        Just("{\"auth\": null}".to_owned()),
        Just("{\"auth\": 5}".to_owned()),
        Just("{\"identitytoken\": \"x\"}".to_owned()),
        Just("[]".to_owned()),
        Just("\"x\"".to_owned()),
    ];
    prop_oneof![
        prop::collection::vec((key, auth), 0..4).prop_map(|entries| {
            let body = entries
                .iter()
                .map(|(k, a)| format!("{}: {a}", serde_json::Value::String(k.clone())))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{{\"auths\": {{{body}}}}}")
        }),
        Just("{}".to_owned()),
        Just("{\"auths\": []}".to_owned()),
        Just("[]".to_owned()),
    ]
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn pull_secret_parser_never_panics(
        input in prop_oneof![any_input(), pull_secret_json().prop_map(String::into_bytes), mutated(pull_secret_json())],
    ) {
        let dir = tempfile::tempdir().unwrap();
        targets::dockerconfigjson(&input, &dir.path().join("pull-secret.json"));
    }
}

// ---------------------------------------------------------------------------------------------
// Sanity fuzzing on stable: 100,000 inputs per target (release mode recommended).

fn heavy(strategy: impl Strategy<Value = Vec<u8>>, cases: u32, target: impl Fn(&[u8])) {
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let started = std::time::Instant::now();
    runner
        .run(&strategy, |input| {
            target(&input);
            Ok(())
        })
        .unwrap();
    eprintln!("{cases} inputs in {:.1?}", started.elapsed());
}

const HEAVY: u32 = 100_000;

#[test]
#[ignore = "heavy: 100k inputs; cargo test --release --test tests -- --ignored properties::heavy"]
fn heavy_reference() {
    heavy(any_input(), HEAVY, targets::reference);
}

#[test]
#[ignore = "heavy: 100k inputs; cargo test --release --test tests -- --ignored properties::heavy"]
fn heavy_rules() {
    heavy(
        prop_oneof![
            any_input(),
            scope().prop_map(|s| idms_yaml(
                "ImageDigestMirrorSet",
                "imageDigestMirrors",
                &s,
                &["m.io/x".into()]
            )
            .into_bytes()),
            mutated(scope().prop_map(|s| idms_yaml(
                "ImageTagMirrorSet",
                "imageTagMirrors",
                &s,
                &["m.io/x".into()]
            ))),
        ],
        HEAVY,
        targets::rules,
    );
}

#[test]
#[ignore = "heavy: 100k inputs; cargo test --release --test tests -- --ignored properties::heavy"]
fn heavy_route() {
    heavy(
        prop_oneof![
            any_input(),
            (any::<u8>(), host(), path(), tag()).prop_map(|(m, h, p, t)| {
                let mut bytes = vec![m];
                bytes.extend_from_slice(format!("/v2/{h}/{p}/manifests/{t}?ns={h}").as_bytes());
                bytes
            }),
        ],
        HEAVY,
        targets::route,
    );
}

#[test]
#[ignore = "heavy: 100k inputs; cargo test --release --test tests -- --ignored properties::heavy"]
fn heavy_config() {
    heavy(
        prop_oneof![
            any_input(),
            config_yaml().prop_map(String::into_bytes),
            mutated(config_yaml()),
        ],
        HEAVY,
        targets::config,
    );
}

#[test]
#[ignore = "heavy: inputs through Upstream::new; cargo test --release --test tests -- --ignored properties::heavy"]
fn heavy_dockerconfigjson() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pull-secret.json");
    heavy(
        prop_oneof![
            any_input(),
            pull_secret_json().prop_map(String::into_bytes),
            mutated(pull_secret_json()),
        ],
        HEAVY,
        |input| targets::dockerconfigjson(input, &path),
    );
}
