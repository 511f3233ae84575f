//! A second real client: oci-client (the maintained successor of oci-distribution) pulling through
//! mirrorgate from a mirror, with its own digest checks.

use crate::support;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use support::{LAYER_MEDIA_TYPE, Mirrorgate, Registry, multi_arch, push, single_arch};

const SOURCE: &str = "source.test";
const MIRROR: &str = "mirror.test";

fn rules() -> String {
    support::mirrored_rules(SOURCE, &[MIRROR])
}

fn client() -> oci_client::Client {
    oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

#[tokio::test]
async fn oci_client_pulls_every_layer_through_the_proxy() {
    let mirror = Registry::start();
    let image = single_arch("oci-client", &[1500, 40_000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(), &[(MIRROR, mirror.endpoint().as_str())], "");
    let reference: oci_client::Reference = format!("{}/{SOURCE}/ns/app:v1", proxy.addr())
        .parse()
        .unwrap();
    let pulled = client()
        .pull(&reference, &RegistryAuth::Anonymous, vec![LAYER_MEDIA_TYPE])
        .await
        .unwrap();
    // oci-client returns layers in the order their downloads finish.
    let mut layers: Vec<Vec<u8>> = pulled.layers.into_iter().map(|l| l.data.to_vec()).collect();
    let mut expected: Vec<Vec<u8>> = image.layers.iter().map(|l| image.blob(l)).collect();
    layers.sort();
    expected.sort();
    assert_eq!(
        (layers, pulled.digest),
        (expected, Some(image.manifest_digest.clone()))
    );
}

#[tokio::test]
async fn oci_client_reads_a_multi_arch_index_by_digest_through_the_proxy() {
    let mirror = Registry::start();
    let image = multi_arch("oci-client-index", &[1500]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(&rules(), &[(MIRROR, mirror.endpoint().as_str())], "");
    let reference: oci_client::Reference =
        format!("{}/{SOURCE}/ns/app@{}", proxy.addr(), image.manifest_digest)
            .parse()
            .unwrap();
    let (bytes, digest) = client()
        .pull_manifest_raw(
            &reference,
            &RegistryAuth::Anonymous,
            &[support::OCI_INDEX_MEDIA_TYPE],
        )
        .await
        .unwrap();
    assert_eq!(
        (bytes.to_vec(), digest),
        (image.manifest_bytes.clone(), image.manifest_digest.clone())
    );
}
