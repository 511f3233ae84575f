//! What a hostile upstream or rule author cannot make mirrorgate do: give other repositories
//! the type it chose for a manifest they share, crash a handler with a tag list that is not one,
//! or turn a pull into an unbounded error message.

mod support;

use support::{
    Hostile, HttpResponse, Mirrorgate, OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, Registry,
    push, single_arch,
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
