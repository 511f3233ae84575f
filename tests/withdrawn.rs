//! Withdrawing content (`mirrorgate deny` / `allow`) on a running server in front of a real
//! Distribution registry: a withdrawn digest is refused by digest and through a tag, deleted
//! from the cache, counted, listed by `status`, kept across a restart, and served again once
//! allowed.

use crate::support;

use support::{Mirrorgate, Registry, push, single_arch};

const SOURCE: &str = "source.test";

/// Runs an admin command against `proxy`: (success, stdout, stderr).
fn cli(proxy: &Mirrorgate, args: &[&str]) -> (bool, String, String) {
    let output = proxy.admin_command(args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn code_and_message(response: &support::HttpResponse) -> (u16, String, String) {
    let json = response.json();
    (
        response.status,
        json["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        json["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn a_withdrawn_digest_is_refused_everywhere_deleted_and_served_again_once_allowed() {
    let registry = Registry::start();
    let image = single_arch("withdrawn", &[4000]);
    push(&image, &format!("{}/ns/app:v1", registry.addr()));
    let mut proxy = Mirrorgate::start("", &[(SOURCE, &registry.endpoint())], "");
    let accept = [("Accept", support::OCI_MANIFEST_MEDIA_TYPE)];
    let by_digest = format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest);
    let by_tag = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    let layer = &image.layers[0];
    let blob = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    assert_eq!(
        (
            proxy.get(&by_digest, &accept).status,
            proxy.get(&blob, &[]).status
        ),
        (200, 200)
    );
    let stored_blob = proxy
        .cache_dir()
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    // The blob is committed to the store once its download is verified, just after the answer.
    let cached_before =
        support::wait_until(support::READY_TIMEOUT, || Ok(stored_blob.exists())).is_ok();

    let denied = cli(
        &proxy,
        &[
            "deny",
            "--reason",
            "CVE-2026-12345",
            &image.manifest_digest,
            layer,
        ],
    );
    let refused = [
        code_and_message(&proxy.get(&by_digest, &accept)),
        code_and_message(&proxy.get(&by_tag, &accept)),
        code_and_message(&proxy.get(&blob, &[])),
    ];
    let fetched_before_restart = registry.count("GET", layer);
    let status = cli(&proxy, &["status"]);
    let refused_count = proxy.metric("mirrorgate_withdrawn_refused_total{route=\"blob\"}");
    let withdrawn_gauge = proxy.metric("mirrorgate_withdrawn_digests");

    proxy.restart();
    let after_restart = proxy.get(&blob, &[]).status;
    let allowed = cli(&proxy, &["allow", layer]);
    let served_again = proxy.get(&blob, &[]);

    let withdrawn_message = format!("{layer} was withdrawn by an operator: CVE-2026-12345");
    assert_eq!(
        (
            cached_before,
            denied.0,
            denied.1.lines().next().map(str::to_owned),
            refused.clone().map(|(status, code, _)| (status, code)),
            refused[2].2.clone(),
            stored_blob.exists(),
            fetched_before_restart,
            status.1.contains(&format!("{layer} since")) && status.1.contains("CVE-2026-12345"),
            (refused_count, withdrawn_gauge),
            after_restart,
            (allowed.0, allowed.1.lines().next().map(str::to_owned)),
            (served_again.status, served_again.body == image.blob(layer)),
        ),
        (
            true,
            true,
            Some(format!("withdrawn {}", image.manifest_digest)),
            [
                (404, "MANIFEST_UNKNOWN".to_owned()),
                (404, "MANIFEST_UNKNOWN".to_owned()),
                (404, "BLOB_UNKNOWN".to_owned()),
            ],
            withdrawn_message,
            false,
            1,
            true,
            (1.0, 2.0),
            404,
            (true, Some(format!("allowed again {layer}"))),
            (200, true),
        ),
        "deny: {denied:?}\nstatus: {status:?}\nallow: {allowed:?}\n{}",
        proxy.log()
    );
}

#[test]
fn a_malformed_digest_changes_nothing_and_says_which() {
    let registry = Registry::start();
    let proxy = Mirrorgate::start("", &[(SOURCE, &registry.endpoint())], "");
    let (ok, _, stderr) = cli(&proxy, &["deny", "sha256:1234", "not-a-digest"]);
    let listed = support::http_get(&proxy.addr(), "/withdrawn", &[]).json();
    assert_eq!(
        (
            ok,
            stderr.contains("answered 400") && stderr.contains("\"sha256:1234\" is not a digest"),
            listed
        ),
        (false, true, serde_json::json!({"withdrawn": {}})),
        "{stderr}"
    );
}
