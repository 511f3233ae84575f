//! podman (Debian's) pulling through mirrorgate with the registries.conf form the manual's "Pointing
//! nodes at mirrorgate" gives: the registry as `[[registry]]`, mirrorgate as its mirror. Storage
//! is vfs under the test's temporary directory (`--root`/`--runroot`), so nothing of the
//! machine's own podman state is used or changed.

use crate::support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use support::{Mirrorgate, Registry, multi_arch, push, single_arch};

const SOURCE: &str = "source.test";

/// podman with its storage, run directory and registries.conf under `dir`.
fn podman(dir: &Path, args: &[&str]) -> Output {
    let root = dir.join("root");
    let runroot = dir.join("run");
    Command::new("podman")
        .arg("--root")
        .arg(&root)
        .arg("--runroot")
        .arg(&runroot)
        .args(["--storage-driver", "vfs", "--events-backend", "none"])
        .args(args)
        .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
        // No user configuration of the machine's may change what is tested.
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .output()
        .expect("run podman (Debian package podman)")
}

fn succeeded(output: &Output) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn podman_pulls_by_tag_by_digest_and_one_platform_of_a_list_through_the_readme_mirror_form() {
    let source = Registry::start();
    let single = single_arch("podman-single", &[3000, 40_000]);
    let multi = multi_arch("podman-multi", &[5000]);
    push(&single, &format!("{}/ns/app:v1", source.addr()));
    push(&multi, &format!("{}/ns/multi:v1", source.addr()));
    let proxy = Mirrorgate::start("", &[(SOURCE, &source.endpoint())], "");

    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("registries.conf"),
        format!(
            "[[registry]]\nlocation = \"{SOURCE}\"\n\n[[registry.mirror]]\nlocation = \"{}/{SOURCE}\"\ninsecure = true\n",
            proxy.addr()
        ),
    )
    .expect("write registries.conf");
    fs::write(dir.path().join("auth.json"), "{}").expect("write auth.json");

    let by_tag = format!("{SOURCE}/ns/app:v1");
    let by_digest = format!("{SOURCE}/ns/app@{}", single.manifest_digest);
    let list = format!("{SOURCE}/ns/multi:v1");
    let pulled = |reference: &str, extra: &[&str]| {
        let mut args = vec!["pull", "--quiet"];
        args.extend_from_slice(extra);
        args.push(reference);
        succeeded(&podman(dir.path(), &args))?;
        succeeded(&podman(
            dir.path(),
            &[
                "image",
                "inspect",
                "--format",
                "{{.Digest}} {{.Os}}/{{.Architecture}}",
                reference,
            ],
        ))
    };
    let arm64 = multi.manifest_for("linux/arm64").to_owned();
    assert_eq!(
        (
            pulled(&by_tag, &[]),
            pulled(&by_digest, &[]),
            pulled(&list, &["--arch", "arm64"]),
        ),
        (
            Ok(format!("{} linux/amd64", single.manifest_digest)),
            Ok(format!("{} linux/amd64", single.manifest_digest)),
            // podman records the digest it pulled by: the list's; the platform is arm64's.
            Ok(format!("{} linux/arm64", multi.manifest_digest)),
        ),
        "mirrorgate log:\n{}",
        proxy.log()
    );
    // The arm64 image's own manifest came through mirrorgate from the registry.
    assert!(
        source.count("GET", &format!("/v2/ns/multi/manifests/{arm64}")) >= 1,
        "the arm64 manifest was not fetched from the registry: {:?}",
        source.requests()
    );
}
