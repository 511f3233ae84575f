//! What a hostile upstream or rule author cannot make mirrorgate do: give other repositories
//! the type it chose for a manifest they share, crash a handler with a tag list that is not one,
//! or turn a pull into an unbounded error message.

use crate::support;

use support::{
    CONTAINERS_IMAGE_ACCEPT, DOCKER_MANIFEST_MEDIA_TYPE, Hostile, HttpResponse, Mirrorgate,
    OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, Registry, push, sha256_digest, single_arch,
};

const HOSTILE: &str = "hostile.test";
const REAL: &str = "real.test";
const ACCEPT: (&str, &str) = (
    "Accept",
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
);

fn content_type(response: &HttpResponse) -> Option<String> {
    response.header("content-type").map(str::to_owned)
}

#[test]
fn a_manifest_is_served_as_what_it_says_it_is_whatever_type_one_upstream_announced() {
    let real = Registry::start();
    let image = single_arch("typed-by-its-bytes", &[1000]);
    push(&image, &format!("{}/ns/app:v1", real.addr()));
    let digest = image.manifest_digest.clone();
    let bytes = image.manifest_bytes.clone();
    // The same bytes (so the same digest), announced as an index.
    let hostile = Hostile::start(move |_, path| {
        (path == format!("/v2/ns/app/manifests/{digest}")).then(|| {
            HttpResponse::ok(OCI_INDEX_MEDIA_TYPE, bytes.clone())
                .with_header("docker-content-digest", &digest)
        })
    });
    let proxy = Mirrorgate::start(
        "",
        &[(HOSTILE, &hostile.endpoint()), (REAL, &real.endpoint())],
        "",
    );
    let digest = &image.manifest_digest;
    let from_hostile = proxy.get(
        &format!("/v2/{HOSTILE}/ns/app/manifests/{digest}"),
        &[ACCEPT],
    );
    // Another repository holding the digest, served from the cache the hostile answer filled.
    let from_real = proxy.get(&format!("/v2/{REAL}/ns/app/manifests/{digest}"), &[ACCEPT]);
    let oci = Some(OCI_MANIFEST_MEDIA_TYPE.to_owned());
    assert_eq!(
        (
            from_hostile.status,
            content_type(&from_hostile),
            from_real.status,
            content_type(&from_real),
            from_real.body == image.manifest_bytes,
        ),
        (200, oci.clone(), 200, oci, true),
        "{}",
        from_real.text()
    );
}

#[test]
fn a_tag_list_that_is_not_one_is_a_502_naming_the_upstream_and_null_tags_are_an_empty_list() {
    let malformed = [
        ("array", "[]"),
        ("string", r#""x""#),
        ("number", "42"),
        ("tags-number", r#"{"name":"ns/tags-number","tags":42}"#),
        (
            "tags-of-numbers",
            r#"{"name":"ns/tags-of-numbers","tags":[1,2]}"#,
        ),
    ];
    let hostile = Hostile::start(move |_, path| {
        let repository = path.strip_prefix("/v2/ns/")?.strip_suffix("/tags/list")?;
        let body = match repository {
            "null-tags" => r#"{"name":"ns/null-tags","tags":null}"#,
            "tags" => r#"{"name":"ns/tags","tags":["v1","v2"]}"#,
            other => malformed.iter().find(|(name, _)| *name == other)?.1,
        };
        Some(HttpResponse::ok("application/json", body))
    });
    let proxy = Mirrorgate::start("", &[(HOSTILE, &hostile.endpoint())], "");
    let answers: Vec<(&str, u16, String, bool)> = malformed
        .iter()
        .map(|(repository, _)| {
            let response = proxy.get(&format!("/v2/{HOSTILE}/ns/{repository}/tags/list"), &[]);
            let error = &response.json()["errors"][0];
            (
                *repository,
                response.status,
                error["code"].as_str().unwrap_or_default().to_owned(),
                error["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("{HOSTILE}/ns/{repository}: invalid tag list")),
            )
        })
        .collect();
    let expected: Vec<(&str, u16, String, bool)> = malformed
        .iter()
        .map(|(repository, _)| (*repository, 502, "UNKNOWN".to_owned(), true))
        .collect();
    let null_tags = proxy.get(&format!("/v2/{HOSTILE}/ns/null-tags/tags/list"), &[]);
    let tags = proxy.get(&format!("/v2/{HOSTILE}/ns/tags/tags/list"), &[]);
    assert_eq!(
        (answers, null_tags.status, null_tags.json(), tags.json()),
        (
            expected,
            200,
            serde_json::json!({"name": format!("{HOSTILE}/ns/null-tags"), "tags": null}),
            serde_json::json!({"name": format!("{HOSTILE}/ns/tags"), "tags": ["v1", "v2"]}),
        )
    );
}

#[test]
fn a_pull_every_mirror_fails_lists_the_first_failures_and_counts_the_others() {
    // As many mirrors as a scope may have, each a registry on a port nothing listens on.
    let hosts: Vec<String> = (0..64).map(|i| format!("m{i}.test")).collect();
    let mirrors: Vec<String> = hosts.iter().map(|host| format!("{host}/ns")).collect();
    let rules = format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: many\nspec:\n  imageDigestMirrors:\n  - source: {REAL}/ns\n    mirrors: [{}]\n",
        mirrors.join(", ")
    );
    let registries: Vec<(&str, &str)> = hosts
        .iter()
        .map(|host| (host.as_str(), "http://127.0.0.1:1"))
        .chain([(REAL, "http://127.0.0.1:1")])
        .collect();
    let proxy = Mirrorgate::start(&rules, &registries, "");
    let response = proxy.get(
        &format!("/v2/{REAL}/ns/app/manifests/sha256:{}", "a".repeat(64)),
        &[ACCEPT],
    );
    let body = response.json();
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert_eq!(
        (
            response.status,
            message.matches("mirror m").count(),
            message.ends_with("; … and 55 more"),
            body["errors"][0]["detail"]["tried"]
                .as_array()
                .map(Vec::len),
        ),
        (502, 10, true, Some(65)),
        "{message}"
    );
}

/// A Docker schema-1 manifest's payload, as Distribution stores it before signing.
const SCHEMA1_PAYLOAD: &str = "{\n   \"schemaVersion\": 1,\n   \"name\": \"ns/legacy\",\n   \"tag\": \"v1\",\n   \"architecture\": \"amd64\",\n   \"fsLayers\": [],\n   \"history\": []\n}";
const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// `payload` in libtrust's "pretty" JWS form with the signature `signature`, as Distribution
/// writes it anew on every GET of a schema-1 manifest.
fn signed_schema1(payload: &str, signature: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let length = payload.rfind("\n}").expect("a closing brace");
    let protected = b64.encode(format!(
        r#"{{"formatLength":{length},"formatTail":"{}","time":"2026-12-08T00:00:00Z"}}"#,
        b64.encode(&payload[length..])
    ));
    format!(
        "{},\n   \"signatures\": [\n      {{\n         \"header\": {{\"alg\": \"ES256\"}},\n         \"signature\": \"{signature}\",\n         \"protected\": \"{protected}\"\n      }}\n   ]{}",
        &payload[..length],
        &payload[length..]
    )
}

/// A registry serving one signed schema-1 manifest by tag and by digest, signed anew on every GET
/// as Distribution does; `payload` is what it signs (the digest it announces is always that of
/// `SCHEMA1_PAYLOAD`).
fn resigning_registry(payload: &'static str) -> Hostile {
    let digest = support::sha256_digest(SCHEMA1_PAYLOAD.as_bytes());
    let served = std::sync::atomic::AtomicUsize::new(0);
    Hostile::start(move |_, path| {
        let asked = path.strip_prefix("/v2/ns/legacy/manifests/")?;
        (asked == "v1" || asked == digest).then(|| {
            let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            HttpResponse::ok(SCHEMA1_SIGNED, signed_schema1(payload, &format!("c2ln{n}")))
                .with_header("docker-content-digest", &digest)
        })
    })
}

#[test]
fn a_signed_schema1_manifest_resigned_on_every_get_pulls_by_its_payload_digest() {
    let registry = resigning_registry(SCHEMA1_PAYLOAD);
    let proxy = Mirrorgate::start("", &[(HOSTILE, &registry.endpoint())], "");
    let digest = support::sha256_digest(SCHEMA1_PAYLOAD.as_bytes());
    let accept = ("Accept", SCHEMA1_SIGNED);
    let pulled = |reference: &str| {
        let response = proxy.get(
            &format!("/v2/{HOSTILE}/ns/legacy/manifests/{reference}"),
            &[accept],
        );
        (
            response.status,
            response.header("docker-content-digest").map(str::to_owned),
            content_type(&response),
            // What is served is a signature of the payload.
            response
                .text()
                .starts_with(&SCHEMA1_PAYLOAD[..SCHEMA1_PAYLOAD.rfind("\n}").unwrap()]),
        )
    };
    let expected = (
        200,
        Some(digest.clone()),
        Some(SCHEMA1_SIGNED.to_owned()),
        true,
    );
    assert_eq!(
        [pulled("v1"), pulled(&digest), pulled(&digest)],
        [expected.clone(), expected.clone(), expected],
        "{}",
        proxy.log()
    );
}

#[test]
fn a_signed_schema1_manifest_whose_payload_is_not_the_digest_is_never_served() {
    const TAMPERED: &str = "{\n   \"schemaVersion\": 1,\n   \"name\": \"ns/legacy\",\n   \"tag\": \"v2\",\n   \"architecture\": \"amd64\",\n   \"fsLayers\": [],\n   \"history\": []\n}";
    let registry = resigning_registry(TAMPERED);
    let proxy = Mirrorgate::start("", &[(HOSTILE, &registry.endpoint())], "");
    let digest = support::sha256_digest(SCHEMA1_PAYLOAD.as_bytes());
    let response = proxy.get(
        &format!("/v2/{HOSTILE}/ns/legacy/manifests/{digest}"),
        &[("Accept", SCHEMA1_SIGNED)],
    );
    assert_eq!(
        (
            response.status,
            response.text().contains("served wrong content")
        ),
        (502, true),
        "{}",
        response.text()
    );
}

/// A referrers list paged by its upstream: every page reaches the client through mirrorgate by
/// following the `Link`s it is given, under either addressing, with the filter passed to the
/// upstream and the upstream's `OCI-Filters-Applied` kept.
#[test]
fn a_paged_referrers_list_is_followed_page_by_page_with_its_filter_and_filters_applied() {
    let subject = format!("sha256:{}", "5".repeat(64));
    let referrer = |i: usize| format!("sha256:{}", i.to_string().repeat(64));
    let sbom = "application/vnd.example.sbom.v1";
    let page_path = format!("/v2/ns/app/referrers/{subject}");
    let hostile = Hostile::start_with_request(move |_, path, query, _| {
        if path != page_path {
            return None;
        }
        let params: Vec<(String, String)> = form_urlencoded::parse(query?.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // Unfiltered asks are not answered: the filter must reach the upstream.
        (param("artifactType")? == sbom).then_some(())?;
        let after = param("last").map_or(0, |last| {
            (1..=5)
                .position(|i| referrer(i) == last)
                .map_or(5, |p| p + 1)
        });
        let page: Vec<usize> = (after + 1..=5).take(2).collect();
        let manifests: Vec<_> = page
            .iter()
            .map(|&i| serde_json::json!({"mediaType": OCI_MANIFEST_MEDIA_TYPE, "digest": referrer(i), "size": 1, "artifactType": sbom}))
            .collect();
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX_MEDIA_TYPE, "manifests": manifests});
        let mut response = HttpResponse::ok(OCI_INDEX_MEDIA_TYPE, index.to_string())
            .with_header("oci-filters-applied", "artifactType");
        if let Some(&last) = page.last().filter(|&&last| last < 5) {
            response = response.with_header(
                "link",
                &format!(
                    "<{page_path}?n=2&last={}&artifactType={}>; rel=\"next\"",
                    referrer(last),
                    sbom.replace('/', "%2F")
                ),
            );
        }
        Some(response)
    });
    let proxy = Mirrorgate::start("", &[(HOSTILE, &hostile.endpoint())], "");
    let follow = |first: String| {
        let mut pages = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take().filter(|_| pages.len() < 5) {
            let response = proxy.get(&path, &[]);
            next = response
                .header("link")
                .and_then(|link| Some(link.strip_prefix('<')?.split_once('>')?.0.to_owned()));
            let digests: Vec<String> = response.json()["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["digest"].as_str().unwrap_or_default().to_owned())
                .collect();
            pages.push((
                response.status,
                response.header("oci-filters-applied").map(str::to_owned),
                digests,
            ));
        }
        pages
    };
    let filter = format!("artifactType={}", sbom.replace('/', "%2F"));
    let expected: Vec<(u16, Option<String>, Vec<String>)> = [vec![1, 2], vec![3, 4], vec![5]]
        .into_iter()
        .map(|page| {
            (
                200,
                Some("artifactType".to_owned()),
                page.into_iter().map(referrer).collect(),
            )
        })
        .collect();
    assert_eq!(
        (
            follow(format!("/v2/{HOSTILE}/ns/app/referrers/{subject}?{filter}")),
            follow(format!(
                "/v2/ns/app/referrers/{subject}?ns={HOSTILE}&{filter}"
            )),
        ),
        (expected.clone(), expected)
    );
}

/// An upstream that converts a tag's manifest for clients that do not take its type: the
/// conversion is what those clients get, and only them; a client taking every type gets the
/// stored manifest, asked or answered in either order.
#[test]
fn a_tag_answer_made_for_one_accept_is_not_given_to_a_client_of_another() {
    const DOCKER_V2: &str = DOCKER_MANIFEST_MEDIA_TYPE;
    let manifest = |media_type: &str| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(b"{}"), "size": 2},
            "layers": [],
        })
        .to_string()
    };
    let (stored, converted) = (manifest(OCI_MANIFEST_MEDIA_TYPE), manifest(DOCKER_V2));
    let hostile = Hostile::start_with_request(move |_, path, _, headers| {
        (path == "/v2/ns/app/manifests/v1").then_some(())?;
        let accept = headers
            .get_all("accept")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let body = if accept.contains(OCI_MANIFEST_MEDIA_TYPE) {
            &stored
        } else if accept.contains(DOCKER_V2) {
            &converted
        } else {
            return None;
        };
        let media_type = serde_json::from_str::<serde_json::Value>(body).ok()?["mediaType"]
            .as_str()?
            .to_owned();
        Some(
            HttpResponse::ok(&media_type, body.clone())
                .with_header("docker-content-digest", &sha256_digest(body.as_bytes())),
        )
    });
    let proxy = Mirrorgate::start("", &[(HOSTILE, &hostile.endpoint())], "");
    let path = format!("/v2/{HOSTILE}/ns/app/manifests/v1");
    let ask = |accept: &str| {
        let response = proxy.get(&path, &[("Accept", accept)]);
        (response.status, content_type(&response))
    };
    let every_type = CONTAINERS_IMAGE_ACCEPT;
    let answers = [
        ask(DOCKER_V2),
        ask(every_type),
        ask(DOCKER_V2),
        ask(every_type),
        ask(OCI_MANIFEST_MEDIA_TYPE),
    ];
    let (oci, docker) = (
        (200, Some(OCI_MANIFEST_MEDIA_TYPE.to_owned())),
        (200, Some(DOCKER_V2.to_owned())),
    );
    assert_eq!(
        answers,
        [docker.clone(), oci.clone(), docker, oci.clone(), oci]
    );
}
