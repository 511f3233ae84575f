//! `mirrorgate status` against a running server: the rules and the last reload, each registry's
//! health, the caches and the fetches under way, as text and as JSON; `/status` is served where
//! `/metrics` is.

use crate::support;

use support::{Mirrorgate, Registry, free_port, push, single_arch};

const SOURCE: &str = "source.test";
const MIRROR: &str = "mirror.test";
const DEAD: &str = "dead.test";

fn rules() -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: digests\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/ns\n    mirrors:\n    - {DEAD}/ns\n    - {MIRROR}/ns\n  - source: {SOURCE}/blocked\n    mirrors:\n    - {MIRROR}/blocked\n    mirrorSourcePolicy: NeverContactSource\n"
    )
}

/// `mirrorgate status ARGS…`: exit success, stdout, stderr.
fn status(args: &[&str]) -> (bool, String, String) {
    support::cli(&[&["status"], args].concat())
}

#[test]
fn status_shows_rules_registry_health_cache_and_a_failed_reload() {
    let source = Registry::start();
    let mirror = Registry::start();
    // Nothing listens there: connecting is refused, and the registry is backed off.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let image = single_arch("status", &[2000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let proxy = Mirrorgate::start(
        &rules(),
        &[
            (SOURCE, &source.endpoint()),
            (MIRROR, &mirror.endpoint()),
            (DEAD, &dead),
        ],
        "",
    );
    let manifest = format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest);
    let served = [
        proxy.get(&manifest, &[]).status,
        proxy.get(&manifest, &[]).status,
    ];
    proxy.write_rules("kind: ImageDigestMirrorSet\nspec: [\n");
    proxy.sighup();
    let server = format!("http://{}", proxy.addr());
    let mut report = serde_json::Value::Null;
    let reloaded = (0..200).any(|_| {
        let (ok, out, err) = status(&["--server", &server, "--json"]);
        assert!(ok, "mirrorgate status --json failed: {err}");
        report = serde_json::from_str(&out).expect("status --json prints JSON");
        if report["rules"]["last_reload"].is_null() {
            std::thread::sleep(std::time::Duration::from_millis(50));
            return false;
        }
        true
    });
    let registry = |name: &str| {
        report["registries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["registry"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let (dead_state, mirror_state, source_state) =
        (registry(DEAD), registry(MIRROR), registry(SOURCE));
    assert_eq!(
        (
            (
                served,
                reloaded,
                report["rules"]["scopes"].as_u64(),
                report["rules"]["blocked_scopes"].clone(),
                report["rules"]["objects"]["ImageDigestMirrorSet"].as_u64(),
                report["rules"]["files"][0]
                    .as_str()
                    .is_some_and(|f| f.ends_with("rules/rules.yaml")),
                report["rules"]["last_reload"]["result"].as_str(),
                report["rules"]["last_reload"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("rules.yaml")),
            ),
            (
                // Backed off for 5 s after the refusal, failing after that.
                matches!(
                    dead_state["state"].as_str(),
                    Some("backing_off" | "failing")
                ),
                dead_state["last_error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("refused")),
                (
                    dead_state["attempts"].as_u64(),
                    dead_state["failures"].as_u64()
                ),
                mirror_state["state"].as_str(),
                (
                    mirror_state["attempts"].as_u64(),
                    mirror_state["failures"].as_u64()
                ),
                source_state["state"].as_str(),
                report["cache"]["manifest_entries"].as_u64(),
                (
                    report["cache"]["manifest_hits"].as_u64(),
                    report["cache"]["manifest_misses"].as_u64()
                ),
                report["cache"]["hit_ratio"].as_f64(),
                report["fetches"]["in_flight"].as_i64(),
            ),
        ),
        (
            (
                [200, 200],
                true,
                Some(2),
                serde_json::json!(["source.test/blocked"]),
                Some(1),
                true,
                Some("failure"),
                true,
            ),
            (
                true,
                true,
                (Some(1), Some(1)),
                Some("ok"),
                (Some(1), Some(0)),
                Some("unused"),
                Some(1),
                (Some(1), Some(1)),
                Some(0.5),
                Some(0),
            ),
        ),
        "{report:#}"
    );

    let (ok, text, err) = status(&["--server", &server]);
    println!("{text}");
    let wanted = [
        "rules\n",
        "  scopes:         2\n",
        "  blocked scopes: 1\n    source.test/blocked\n",
        " failure (the rules loaded at ",
        ", 1 attempts, 1 failed; last error ",
        "  mirror.test  ok, 1 attempts, 0 failed\n",
        "  source.test  unused, 0 attempts, 0 failed\n",
        "  manifests:      1 in memory (",
        "  hit ratio:      50.0% (manifests 1 hits / 1 misses, blobs 0 / 0)\n",
        "  in flight:      0 of 64 (0 waiting, 0 refused since the start)\n",
    ];
    let missing: Vec<&str> = wanted.into_iter().filter(|w| !text.contains(w)).collect();
    assert_eq!((ok, missing), (true, vec![]), "{text}{err}");
}

#[test]
fn status_is_served_where_metrics_are() {
    let registry = Registry::start();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let proxy = Mirrorgate::start(
        &rules(),
        &[(SOURCE, &registry.endpoint())],
        &format!("metrics_listen: \"{metrics_addr}\"\n"),
    );
    let on_api = proxy.get("/status", &[]).status;
    let on_metrics = support::http_get(&metrics_addr, "/status", &[]);
    // The configuration file names the server: no --server needed.
    let (ok, out, err) = status(&["--config", &proxy.config_path().display().to_string()]);
    assert_eq!(
        (
            on_api,
            on_metrics.status,
            on_metrics.json()["rules"]["scopes"].as_u64(),
            ok,
            out.contains("  scopes:         2\n"),
        ),
        (404, 200, Some(2), true, true),
        "{out}{err}"
    );
}

#[test]
fn status_of_a_server_that_is_not_there_says_so() {
    let server = format!("http://127.0.0.1:{}", free_port());
    let (ok, _, err) = status(&["--server", &server]);
    assert_eq!(
        (ok, err.contains(&format!("cannot reach {server}/status"))),
        (false, true),
        "{err}"
    );
}
