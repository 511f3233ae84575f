//! `mirrorgate serve` between real clients (skopeo, oci-client) and real Distribution registries:
//! a source and two mirrors, each holding what the test pushed, named in the rules by hosts that
//! the configuration maps to their loopback ports.

use crate::support;

use std::path::Path;

use support::{
    CONTAINERS_IMAGE_ACCEPT, DOCKER_MANIFEST_MEDIA_TYPE, HttpResponse, Image, Mirrorgate,
    OCI_MANIFEST_MEDIA_TYPE, Registry, copy_to_layout, http_get, http_request, layouts_identical,
    multi_arch, push, push_as, single_arch,
};

const SOURCE: &str = "source.test";
const MIRROR_A: &str = "mirror-a.test";
const MIRROR_B: &str = "mirror-b.test";

/// A source and two mirrors.
struct Registries {
    source: Registry,
    mirror_a: Registry,
    mirror_b: Registry,
}

impl Registries {
    fn start() -> Registries {
        Registries {
            source: Registry::start(),
            mirror_a: Registry::start(),
            mirror_b: Registry::start(),
        }
    }

    fn endpoints(&self) -> Vec<(&'static str, String)> {
        vec![
            (SOURCE, self.source.endpoint()),
            (MIRROR_A, self.mirror_a.endpoint()),
            (MIRROR_B, self.mirror_b.endpoint()),
        ]
    }

    fn proxy(&self, rules: &str) -> Mirrorgate {
        let endpoints = self.endpoints();
        let registries: Vec<(&str, &str)> =
            endpoints.iter().map(|(h, e)| (*h, e.as_str())).collect();
        Mirrorgate::start(rules, &registries, "")
    }

    /// Requests made to the source since `mark`, readiness probes excluded.
    fn source_requests_since(&self, mark: usize) -> usize {
        self.source
            .requests_since(mark)
            .iter()
            .filter(|r| r.path != "/v2/")
            .count()
    }
}

fn idms(source: &str, mirrors: &[&str], policy: &str) -> String {
    mirror_set(
        "ImageDigestMirrorSet",
        "imageDigestMirrors",
        source,
        mirrors,
        policy,
    )
}

fn itms(source: &str, mirrors: &[&str], policy: &str) -> String {
    mirror_set(
        "ImageTagMirrorSet",
        "imageTagMirrors",
        source,
        mirrors,
        policy,
    )
}

fn mirror_set(kind: &str, field: &str, source: &str, mirrors: &[&str], policy: &str) -> String {
    let mirrors: String = mirrors.iter().map(|m| format!("    - {m}\n")).collect();
    let policy = if policy.is_empty() {
        String::new()
    } else {
        format!("    mirrorSourcePolicy: {policy}\n")
    };
    format!(
        "---\napiVersion: config.openshift.io/v1\nkind: {kind}\nmetadata:\n  name: {}\nspec:\n  {field}:\n  - source: {source}\n    mirrors:\n{mirrors}{policy}",
        kind.to_lowercase()
    )
}

/// `skopeo copy --all` from `docker://<reference>` into a new OCI layout; the output on failure.
fn pull(reference: &str, dir: &Path) -> Result<(), String> {
    let output = copy_to_layout(reference, dir, &[]);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Pulls `image_ref` (as `registry/path…`) through the proxy and directly from `direct`, and checks
/// that both OCI layouts are identical.
fn pull_through_matches_direct(proxy: &Mirrorgate, image_ref: &str, direct: &str) {
    let through = tempfile::tempdir().unwrap();
    let straight = tempfile::tempdir().unwrap();
    pull(
        &format!("{}/{image_ref}", proxy.addr()),
        &through.path().join("l"),
    )
    .unwrap_or_else(|e| panic!("pull through mirrorgate failed: {e}\n{}", proxy.log()));
    pull(direct, &straight.path().join("l")).expect("direct pull");
    layouts_identical(&through.path().join("l"), &straight.path().join("l")).unwrap();
}

fn image(seed: &str) -> Image {
    single_arch(seed, &[2048, 70_000])
}

#[test]
fn digest_pull_is_served_by_the_idms_mirror_without_touching_the_source() {
    let registries = Registries::start();
    let image = image("digest-via-mirror");
    push(
        &image,
        &format!("{}/quay/ns/app:v1", registries.mirror_a.addr()),
    );
    push(&image, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy(&idms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/quay/ns")],
        "",
    ));
    let mark = registries.source.mark();
    pull_through_matches_direct(
        &proxy,
        &format!("{SOURCE}/ns/app@{}", image.manifest_digest),
        &format!(
            "{}/quay/ns/app@{}",
            registries.mirror_a.addr(),
            image.manifest_digest
        ),
    );
    assert_eq!(registries.source_requests_since(mark), 0);
}

#[test]
fn tag_pull_is_served_by_the_itms_mirror() {
    let registries = Registries::start();
    let image = image("tag-via-mirror");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    let proxy = registries.proxy(&itms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    pull_through_matches_direct(
        &proxy,
        &format!("{SOURCE}/ns/app:v1"),
        &format!("{}/ns/app:v1", registries.mirror_a.addr()),
    );
}

#[test]
fn idms_mirror_is_not_used_for_tag_pulls() {
    let registries = Registries::start();
    let image = image("idms-not-for-tags");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    let proxy = registries.proxy(&idms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    let mark = registries.mirror_a.mark();
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    assert_eq!(
        (
            response.status,
            registries.mirror_a.requests_since(mark).len()
        ),
        (404, 0)
    );
}

#[test]
fn itms_mirror_is_not_used_for_digest_pulls() {
    let registries = Registries::start();
    let image = image("itms-not-for-digests");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    let proxy = registries.proxy(&itms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    let mark = registries.mirror_a.mark();
    let response = proxy.get(
        &format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest),
        &[],
    );
    assert_eq!(
        (
            response.status,
            registries.mirror_a.requests_since(mark).len()
        ),
        (404, 0)
    );
}

#[test]
fn mirrors_are_tried_in_rule_order() {
    let registries = Registries::start();
    let image = image("mirror-order");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    push(&image, &format!("{}/ns/app:v1", registries.mirror_b.addr()));
    // Two objects with disjoint lists merge in byte order: mirror-a before mirror-b.
    let rules = format!(
        "{}{}",
        idms(&format!("{SOURCE}/ns"), &[&format!("{MIRROR_B}/ns")], ""),
        idms(&format!("{SOURCE}/ns"), &[&format!("{MIRROR_A}/ns")], "")
            .replace("name: imagedigestmirrorset", "name: second")
    );
    let proxy = registries.proxy(&rules);
    let mark_b = registries.mirror_b.mark();
    let response = proxy.get(
        &format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest),
        &[],
    );
    assert_eq!(
        (
            response.status,
            registries.mirror_b.requests_since(mark_b).len()
        ),
        (200, 0)
    );
}

#[test]
fn missing_on_the_mirror_falls_back_to_the_source() {
    let registries = Registries::start();
    let image = image("fallback");
    push(&image, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy(&idms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    let mark = registries.mirror_a.mark();
    pull_through_matches_direct(
        &proxy,
        &format!("{SOURCE}/ns/app@{}", image.manifest_digest),
        &format!(
            "{}/ns/app@{}",
            registries.source.addr(),
            image.manifest_digest
        ),
    );
    // The mirror was asked first (and said not found); only then the source served.
    let manifest = format!("/v2/ns/app/manifests/{}", image.manifest_digest);
    let asked = registries.mirror_a.count_since(mark, "GET", &manifest)
        + registries.mirror_a.count_since(mark, "HEAD", &manifest);
    assert!(
        asked > 0,
        "the mirror was not asked for {manifest}: {:?}",
        registries.mirror_a.requests_since(mark)
    );
}

#[test]
fn never_contact_source_leaves_the_source_untouched_when_the_mirror_lacks_the_image() {
    let registries = Registries::start();
    let image = image("ncs");
    push(&image, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy(&idms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "NeverContactSource",
    ));
    let mark = registries.source.mark();
    let by_digest = proxy.get(
        &format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest),
        &[],
    );
    let by_tag = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    let blob = proxy.get(
        &format!("/v2/{SOURCE}/ns/app/blobs/{}", image.layers[0]),
        &[],
    );
    assert_eq!(
        (
            by_digest.status,
            by_tag.status,
            blob.status,
            registries.source_requests_since(mark)
        ),
        (404, 403, 404, 0)
    );
}

#[test]
fn blocked_tag_pull_is_denied_naming_the_scope_and_the_object() {
    let registries = Registries::start();
    let proxy = registries.proxy(&idms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "NeverContactSource",
    ));
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    let error = &response.json()["errors"][0];
    assert_eq!(
        (
            response.status,
            error["code"].as_str(),
            error["message"]
                .as_str()
                .unwrap()
                .contains("scope \"source.test/ns\""),
            error["message"]
                .as_str()
                .unwrap()
                .contains("ImageDigestMirrorSet/imagedigestmirrorset")
        ),
        (403, Some("DENIED"), true, true),
        "{error}"
    );
}

#[test]
fn a_stopped_mirror_is_skipped() {
    let mut registries = Registries::start();
    let image = image("stopped-mirror");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_b.addr()));
    registries.mirror_a.stop();
    let proxy = registries.proxy(&idms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns"), &format!("{MIRROR_B}/ns")],
        "NeverContactSource",
    ));
    pull_through_matches_direct(
        &proxy,
        &format!("{SOURCE}/ns/app@{}", image.manifest_digest),
        &format!(
            "{}/ns/app@{}",
            registries.mirror_b.addr(),
            image.manifest_digest
        ),
    );
}

#[test]
fn a_mirror_serving_a_wrong_manifest_for_a_digest_is_never_served() {
    let registries = Registries::start();
    let image = image("wrong-manifest");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    push(&image, &format!("{}/ns/app:v1", registries.mirror_b.addr()));
    let tampered = String::from_utf8(image.manifest_bytes.clone())
        .unwrap()
        .replace("schemaVersion\":2", "schemaVersion\": 2");
    std::fs::write(
        registries.mirror_a.blob_data_path(&image.manifest_digest),
        tampered,
    )
    .unwrap();
    let proxy = registries.proxy(&idms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns"), &format!("{MIRROR_B}/ns")],
        "NeverContactSource",
    ));
    let response = proxy.get(
        &format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest),
        &[],
    );
    assert_eq!(
        (response.status, response.body),
        (200, image.manifest_bytes.clone())
    );
}

#[test]
fn a_mirror_serving_a_wrong_blob_is_aborted_and_skipped_on_the_next_pull() {
    let registries = Registries::start();
    let image = image("wrong-blob");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    push(&image, &format!("{}/ns/app:v1", registries.mirror_b.addr()));
    let layer = &image.layers[1];
    let mut bytes = image.blob(layer);
    bytes[100] ^= 0xff;
    std::fs::write(registries.mirror_a.blob_data_path(layer), bytes).unwrap();
    let proxy = registries.proxy(&idms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns"), &format!("{MIRROR_B}/ns")],
        "NeverContactSource",
    ));
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let first = support::try_http_request("GET", &proxy.addr(), &path, &[], b"");
    let second = proxy.get(&path, &[]);
    assert_eq!(
        (
            first.is_err(),
            second.status,
            second.body == image.blob(layer)
        ),
        (true, 200, true),
        "first: {:?}",
        first.map(|r| r.status)
    );
}

#[test]
fn image_mirror_config_map_routes_tags_and_digests() {
    let registries = Registries::start();
    let image = image("configmap");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    let rules = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mirrors\ndata:\n  idms.yaml: |\n{}  itms.yaml: |\n{}",
        indent(&idms(
            &format!("{SOURCE}/ns"),
            &[&format!("{MIRROR_A}/ns")],
            "NeverContactSource"
        )),
        indent(&itms(
            &format!("{SOURCE}/ns"),
            &[&format!("{MIRROR_A}/ns")],
            "NeverContactSource"
        )),
    );
    let proxy = registries.proxy(&rules);
    let by_tag = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    let by_digest = proxy.get(
        &format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest),
        &[],
    );
    assert_eq!((by_tag.status, by_digest.status), (200, 200));
}

fn indent(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| *l != "---")
        .map(|l| format!("    {l}\n"))
        .collect()
}

#[test]
fn containerd_ns_query_names_the_registry() {
    let registries = Registries::start();
    let image = image("containerd-ns");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    let proxy = registries.proxy(&itms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    let response = proxy.get(
        &format!("/v2/ns/app/manifests/v1?ns={SOURCE}"),
        &[("Accept", support::OCI_MANIFEST_MEDIA_TYPE)],
    );
    assert_eq!(
        (response.status, response.header("docker-content-digest")),
        (200, Some(image.manifest_digest.as_str()))
    );
}

#[test]
fn every_ns_answer_names_its_namespace_in_oci_namespace() {
    let registries = Registries::start();
    let image = image("oci-namespace");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    let proxy = registries.proxy(&itms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    let accept = [("Accept", support::OCI_MANIFEST_MEDIA_TYPE)];
    let answer = |method: &str, path: &str| {
        let response = http_request(method, &proxy.addr(), path, &accept, &[]);
        (
            path.to_owned(),
            response.status,
            response.header("oci-namespace").map(str::to_owned),
        )
    };
    let ns = |path: &str, status: u16, namespace: &str| {
        (path.to_owned(), status, Some(namespace.to_owned()))
    };
    let manifest = format!("/v2/ns/app/manifests/v1?ns={SOURCE}");
    let blob = format!("/v2/ns/app/blobs/{}?ns={SOURCE}", image.blobs[0]);
    let missing = format!("/v2/ns/absent/manifests/v1?ns={SOURCE}");
    let invalid = format!("/v2/NS/App/manifests/v1?ns={SOURCE}");
    let refused = "/v2/ns/app/manifests/v1?ns=elsewhere.example.net".to_owned();
    let plain = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    assert_eq!(
        vec![
            answer("GET", &manifest),
            answer("HEAD", &manifest),
            answer("GET", &blob),
            answer("GET", &missing),
            answer("GET", &invalid),
            answer("GET", &refused),
            answer("GET", &plain),
        ],
        vec![
            ns(&manifest, 200, SOURCE),
            ns(&manifest, 200, SOURCE),
            ns(&blob, 200, SOURCE),
            ns(&missing, 404, SOURCE),
            ns(&invalid, 400, SOURCE),
            ns(&refused, 403, "elsewhere.example.net"),
            (plain, 200, None),
        ]
    );
}

#[test]
fn multi_arch_image_copied_through_the_proxy_is_byte_identical_to_a_direct_copy() {
    let registries = Registries::start();
    let image = multi_arch("multi-arch", &[3000, 50_000, 120_000]);
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    let proxy = registries.proxy(&format!(
        "{}{}",
        idms(
            &format!("{SOURCE}/ns"),
            &[&format!("{MIRROR_A}/ns")],
            "NeverContactSource"
        ),
        itms(
            &format!("{SOURCE}/ns"),
            &[&format!("{MIRROR_A}/ns")],
            "NeverContactSource"
        )
    ));
    pull_through_matches_direct(
        &proxy,
        &format!("{SOURCE}/ns/app:v1"),
        &format!("{}/ns/app:v1", registries.mirror_a.addr()),
    );
}

#[test]
fn manifest_head_has_the_headers_of_the_get() {
    let registries = Registries::start();
    let image = image("head");
    push(&image, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy("");
    let path = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    let head = http_request("HEAD", &proxy.addr(), &path, &[], b"");
    assert_eq!(
        (
            head.status,
            head.header("content-type"),
            head.header("docker-content-digest"),
            head.header("content-length").map(str::to_owned),
            head.body.len()
        ),
        (
            200,
            Some(image.media_type),
            Some(image.manifest_digest.as_str()),
            Some(image.manifest_bytes.len().to_string()),
            0
        )
    );
}

#[test]
fn blob_range_requests_are_answered_with_the_part() {
    let registries = Registries::start();
    let image = image("range");
    push(&image, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy("");
    let layer = &image.layers[1];
    let response = proxy.get(
        &format!("/v2/{SOURCE}/ns/app/blobs/{layer}"),
        &[("Range", "bytes=10-19")],
    );
    assert_eq!(
        (response.status, response.body),
        (206, image.blob(layer)[10..20].to_vec())
    );
}

#[test]
fn tag_list_follows_the_tag_route_under_the_clients_name() {
    let registries = Registries::start();
    let image = image("tags");
    push(&image, &format!("{}/ns/app:v1", registries.mirror_a.addr()));
    push(&image, &format!("{}/ns/app:v2", registries.mirror_a.addr()));
    let proxy = registries.proxy(&itms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/tags/list"), &[]);
    assert_eq!(
        response.json(),
        serde_json::json!({"name": format!("{SOURCE}/ns/app"), "tags": ["v1", "v2"]})
    );
}

#[test]
fn api_base_answers_with_the_version_header() {
    let registries = Registries::start();
    let proxy = registries.proxy("");
    let response = proxy.get("/v2/", &[]);
    assert_eq!(
        (
            response.status,
            response.header("docker-distribution-api-version"),
            response.text()
        ),
        (200, Some("registry/2.0"), "{}".to_owned())
    );
}

/// The OCI error of a request: status, code.
fn error_of(response: &support::HttpResponse) -> (u16, String) {
    (
        response.status,
        response.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn bad_digest_gets_digest_invalid() {
    let registries = Registries::start();
    let proxy = registries.proxy("");
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/blobs/sha256:1234"), &[]);
    assert_eq!(error_of(&response), (400, "DIGEST_INVALID".to_owned()));
}

#[test]
fn dot_dot_in_a_name_gets_name_invalid() {
    let registries = Registries::start();
    let proxy = registries.proxy("");
    let response = proxy.get(&format!("/v2/{SOURCE}/../ns/manifests/v1"), &[]);
    assert_eq!(error_of(&response), (400, "NAME_INVALID".to_owned()));
}

#[test]
fn writes_get_unsupported() {
    let registries = Registries::start();
    let proxy = registries.proxy("");
    let response = http_request(
        "PUT",
        &proxy.addr(),
        &format!("/v2/{SOURCE}/ns/app/manifests/v1"),
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(error_of(&response), (405, "UNSUPPORTED".to_owned()));
}

#[test]
fn unknown_manifest_gets_manifest_unknown_listing_what_was_tried() {
    let registries = Registries::start();
    let proxy = registries.proxy(&itms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/nope"), &[]);
    let tried = response.json()["errors"][0]["detail"]["tried"].clone();
    assert_eq!(
        (error_of(&response), tried.as_array().map(Vec::len)),
        ((404, "MANIFEST_UNKNOWN".to_owned()), Some(2))
    );
}

#[test]
fn failing_sources_get_a_bad_gateway_listing_each_reason() {
    let mut registries = Registries::start();
    registries.source.stop();
    registries.mirror_a.stop();
    let proxy = registries.proxy(&itms(
        &format!("{SOURCE}/ns"),
        &[&format!("{MIRROR_A}/ns")],
        "",
    ));
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    let message = response.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        (
            response.status,
            message.contains("mirror mirror-a.test/ns/app:v1"),
            message.contains("source source.test/ns/app:v1")
        ),
        (502, true, true),
        "{message}"
    );
}

/// The answers a client gets from a registry where the path, not the content, decides: asked of
/// Distribution and of mirrorgate in front of it, side by side.
#[test]
fn the_base_redirect_options_and_an_invalid_tag_are_answered_as_distribution_answers() {
    let registries = Registries::start();
    let image = image("registry-answers");
    push(&image, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy("");
    let answer = |addr: &str, method: &str, path: &str| {
        let response = http_request(method, addr, path, &[], &[]);
        (
            response.status,
            response.header("location").map(str::to_owned),
            // Distribution allows its write methods too; only what both allow is compared.
            response
                .header("allow")
                .map(|allow| allow.contains("GET") && allow.contains("HEAD")),
            response.text().starts_with("{}"),
        )
    };
    let paths = [
        ("GET", "/v2".to_owned()),
        ("OPTIONS", "/v2/".to_owned()),
        ("OPTIONS", "/v2/ns/app/manifests/v1".to_owned()),
        (
            "GET",
            "/v2/ns/app/manifests/.INVALID_MANIFEST_NAME".to_owned(),
        ),
    ];
    let direct: Vec<_> = paths
        .iter()
        .map(|(method, path)| answer(&registries.source.addr(), method, path))
        .collect();
    let through: Vec<_> = paths
        .iter()
        .map(|(method, path)| {
            let path = path.replacen("/v2/ns/", &format!("/v2/{SOURCE}/ns/"), 1);
            answer(&proxy.addr(), method, &path)
        })
        .collect();
    let invalid_tag = http_request(
        "GET",
        &proxy.addr(),
        &format!("/v2/{SOURCE}/ns/app/manifests/.INVALID_MANIFEST_NAME"),
        &[],
        &[],
    );
    assert_eq!(
        (through, invalid_tag.json()["errors"][0]["code"].clone()),
        (direct, serde_json::json!("MANIFEST_UNKNOWN"))
    );
}

#[test]
fn the_catalog_is_not_kept_and_says_so_in_an_oci_error() {
    let registries = Registries::start();
    let proxy = registries.proxy("");
    let response = http_request("GET", &proxy.addr(), "/v2/_catalog", &[], &[]);
    assert_eq!(
        (
            response.status,
            response.json()["errors"][0]["code"].clone()
        ),
        (404, serde_json::json!("UNSUPPORTED")),
        "{}",
        response.text()
    );
}

#[test]
fn manifests_and_blobs_carry_their_digest_as_etag_and_if_none_match_gets_304() {
    let registries = Registries::start();
    let image = image("etag");
    push(&image, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy("");
    let accept = ("Accept", support::OCI_MANIFEST_MEDIA_TYPE);
    let manifest = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    let blob = format!("/v2/{SOURCE}/ns/app/blobs/{}", image.layers[0]);
    let tag_of = |digest: &str| format!("\"{digest}\"");
    let answer = |path: &str, if_none_match: Option<&str>| {
        let mut headers = vec![accept];
        headers.extend(if_none_match.map(|tag| ("If-None-Match", tag)));
        let response = proxy.get(path, &headers);
        (
            response.status,
            response.header("etag").map(str::to_owned),
            response.body.len(),
        )
    };
    let manifest_tag = tag_of(&image.manifest_digest);
    let blob_tag = tag_of(&image.layers[0]);
    let blob_len = image.blob(&image.layers[0]).len();
    assert_eq!(
        [
            answer(&manifest, None),
            answer(&manifest, Some(&manifest_tag)),
            answer(&manifest, Some("\"sha256:0000\"")),
            answer(&blob, None),
            answer(&blob, Some(&blob_tag)),
        ],
        [
            (200, Some(manifest_tag.clone()), answer(&manifest, None).2),
            (304, Some(manifest_tag.clone()), 0),
            (200, Some(manifest_tag.clone()), answer(&manifest, None).2),
            (200, Some(blob_tag.clone()), blob_len),
            (304, Some(blob_tag.clone()), 0),
        ]
    );
}

#[test]
fn an_inverted_range_is_416_with_the_size_cached_or_not() {
    let registries = Registries::start();
    let image = image("inverted-range");
    push(&image, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy("");
    let layer = &image.layers[1];
    let size = image.blob(layer).len();
    let range = [("Range", "bytes=500-0")];
    let answer = |addr: &str, path: &str| {
        let response = http_request("GET", addr, path, &range, &[]);
        (
            response.status,
            response.header("content-range").map(str::to_owned),
        )
    };
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    // Before the blob is cached (passed through), and from the cache.
    let uncached = answer(&proxy.addr(), &path);
    assert_eq!(proxy.get(&path, &[]).status, 200);
    let cached = answer(&proxy.addr(), &path);
    let expected = (416, Some(format!("bytes */{size}")));
    assert_eq!((uncached, cached), (expected.clone(), expected));
}

const DOCKER_V2: &str = DOCKER_MANIFEST_MEDIA_TYPE;

/// A manifest answer as a client tells it apart: its status, and its type or error code.
fn manifest_answer(response: &HttpResponse) -> (u16, String) {
    let what = if response.status == 200 {
        response
            .header("content-type")
            .unwrap_or_default()
            .to_owned()
    } else {
        response.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (response.status, what)
}

/// A client is answered only with manifest types its `Accept` names, as Distribution answers it:
/// asked of Distribution and of mirrorgate in front of it, side by side, for an OCI image and a
/// Docker schema 2 image, by tag and by digest; skopeo pulls the Docker image as it is.
#[test]
fn a_manifest_is_answered_in_a_type_the_client_accepts_as_distribution_answers() {
    let registries = Registries::start();
    let oci = image("accept-oci");
    push(&oci, &format!("{}/ns/oci:v1", registries.source.addr()));
    push_as(
        &image("accept-docker"),
        &format!("{}/ns/docker:v1", registries.source.addr()),
        "v2s2",
    );
    let docker_digest = http_get(
        &registries.source.addr(),
        "/v2/ns/docker/manifests/v1",
        &[("Accept", DOCKER_V2)],
    )
    .header("docker-content-digest")
    .expect("a digest")
    .to_owned();
    let proxy = registries.proxy("");
    let asks = [
        ("ns/oci/manifests/v1", DOCKER_V2),
        (
            &format!("ns/oci/manifests/{}", oci.manifest_digest),
            DOCKER_V2,
        ),
        ("ns/oci/manifests/v1", OCI_MANIFEST_MEDIA_TYPE),
        ("ns/oci/manifests/v1", CONTAINERS_IMAGE_ACCEPT),
        ("ns/docker/manifests/v1", DOCKER_V2),
        (&format!("ns/docker/manifests/{docker_digest}"), DOCKER_V2),
        ("ns/docker/manifests/v1", CONTAINERS_IMAGE_ACCEPT),
    ];
    let direct: Vec<_> = asks
        .iter()
        .map(|(path, accept)| {
            let response = http_get(
                &registries.source.addr(),
                &format!("/v2/{path}"),
                &[("Accept", accept)],
            );
            manifest_answer(&response)
        })
        .collect();
    let through: Vec<_> = asks
        .iter()
        .map(|(path, accept)| {
            manifest_answer(&proxy.get(&format!("/v2/{SOURCE}/{path}"), &[("Accept", accept)]))
        })
        .collect();
    pull_through_matches_direct(
        &proxy,
        &format!("{SOURCE}/ns/docker:v1"),
        &format!("{}/ns/docker:v1", registries.source.addr()),
    );
    let not_oci =
        |(status, what): &(u16, String)| (*status, what.as_str() != OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(
        (
            through,
            direct.iter().map(not_oci).take(2).collect::<Vec<_>>()
        ),
        (direct, vec![(404, true), (404, true)])
    );
}

/// A cached manifest keeps its type: a client that does not accept it is answered 404
/// `MANIFEST_UNKNOWN` (never its bytes), by digest and by tag, while a client that does is served
/// it from the cache; wildcards and q-values are read as HTTP defines them.
#[test]
fn a_cached_manifest_is_served_only_to_clients_accepting_its_type() {
    let registries = Registries::start();
    let oci = image("accept-cached");
    push(&oci, &format!("{}/ns/app:v1", registries.source.addr()));
    let proxy = registries.proxy("");
    let by_tag = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    let by_digest = format!("/v2/{SOURCE}/ns/app/manifests/{}", oci.manifest_digest);
    let first = proxy.get(&by_tag, &[("Accept", CONTAINERS_IMAGE_ACCEPT)]);
    assert_eq!(first.status, 200, "{}", first.text());
    let mark = registries.source.mark();
    // What the client is answered, and whether it was given the OCI manifest's bytes.
    let ask = |path: &str, accept: &str| {
        let response = proxy.get(path, &[("Accept", accept)]);
        (
            manifest_answer(&response),
            response.body == oci.manifest_bytes,
        )
    };
    let refused = [
        (&by_digest, DOCKER_V2),
        (&by_digest, "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"),
        (&by_digest, "*/*, application/vnd.oci.image.manifest.v1+json;q=0"),
    ]
    .map(|(path, accept)| ask(path, accept));
    let served = [
        (&by_digest, CONTAINERS_IMAGE_ACCEPT),
        (&by_digest, "*/*"),
        (&by_digest, "application/*;q=0.5"),
        (&by_tag, OCI_MANIFEST_MEDIA_TYPE),
    ]
    .map(|(path, accept)| ask(path, accept));
    let refused_by_tag = manifest_answer(&proxy.get(&by_tag, &[("Accept", DOCKER_V2)]));
    let manifest_requests_for_cached: Vec<_> = registries
        .source
        .requests_since(mark)
        .into_iter()
        .filter(|r| r.path.contains(&oci.manifest_digest))
        .collect();
    let oci_answer = ((200, OCI_MANIFEST_MEDIA_TYPE.to_owned()), true);
    let unknown = ((404, "MANIFEST_UNKNOWN".to_owned()), false);
    assert_eq!(
        (
            refused,
            served,
            refused_by_tag,
            manifest_requests_for_cached.len()
        ),
        (
            [unknown.clone(), unknown.clone(), unknown],
            [
                oci_answer.clone(),
                oci_answer.clone(),
                oci_answer.clone(),
                oci_answer
            ],
            (404, "MANIFEST_UNKNOWN".to_owned()),
            0
        )
    );
}
