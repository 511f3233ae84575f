//! Running mirrorgate as a service: metrics that move as pulls happen, rules picked up without a
//! restart (file changes, ConfigMap `..data` swaps, SIGHUP), a broken rule file that leaves the
//! last good rules in force, and a graceful stop that lets a pull in flight finish.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Mirrorgate, Registry, Throttle, push, single_arch};

const SOURCE: &str = "source.test";
const MIRROR_A: &str = "mirror-a.test";
const MIRROR_B: &str = "mirror-b.test";

fn tag_rules(mirror: &str) -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: tags\nspec:\n  imageTagMirrors:\n  - source: {SOURCE}/ns\n    mirrors:\n    - {mirror}/ns\n    mirrorSourcePolicy: NeverContactSource\n"
    )
}

fn digest_rules(mirrors: &[&str], policy: &str) -> String {
    let list: String = mirrors.iter().map(|m| format!("    - {m}/ns\n")).collect();
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: digests\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/ns\n    mirrors:\n{list}    mirrorSourcePolicy: {policy}\n"
    )
}

fn tag_digest(proxy: &Mirrorgate) -> (u16, String) {
    let response = proxy.get(&format!("/v2/{SOURCE}/ns/app/manifests/v1"), &[]);
    (
        response.status,
        response
            .header("docker-content-digest")
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Polls `probe` until it returns true, for at most `limit`.
fn eventually(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    probe()
}

/// The value of the metric line that starts with `series` (name and labels), or 0.
fn metric(proxy: &Mirrorgate, series: &str) -> f64 {
    proxy.metric(series)
}

/// Two mirrors holding different images under the same tag.
fn two_mirrors() -> (Registry, Registry, String, String) {
    let a = Registry::start();
    let b = Registry::start();
    let old = single_arch("ops-old", &[1000]);
    let new = single_arch("ops-new", &[1000]);
    push(&old, &format!("{}/ns/app:v1", a.addr()));
    push(&new, &format!("{}/ns/app:v1", b.addr()));
    (a, b, old.manifest_digest, new.manifest_digest)
}

#[test]
fn metrics_count_mirror_hits_fallbacks_blocked_requests_and_cache_hits() {
    let source = Registry::start();
    let mirror = Registry::start();
    let on_mirror = single_arch("metrics-mirror", &[1000]);
    let on_source = single_arch("metrics-source", &[1000]);
    push(&on_mirror, &format!("{}/ns/app:v1", mirror.addr()));
    push(&on_source, &format!("{}/ns/app:v2", source.addr()));
    let rules = format!(
        "{}---\n{}",
        digest_rules(&[MIRROR_A], "AllowContactingSource"),
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: blocked\nspec:\n  imageDigestMirrors:\n  - source: source.test/blocked\n    mirrors:\n    - mirror-a.test/blocked\n    mirrorSourcePolicy: NeverContactSource\n"
    );
    let proxy = Mirrorgate::start(
        &rules,
        &[(SOURCE, &source.endpoint()), (MIRROR_A, &mirror.endpoint())],
        "",
    );
    let manifest = |digest: &str| {
        proxy
            .get(&format!("/v2/{SOURCE}/ns/app/manifests/{digest}"), &[])
            .status
    };
    let served = [
        manifest(&on_mirror.manifest_digest),
        manifest(&on_mirror.manifest_digest),
        manifest(&on_source.manifest_digest),
        proxy
            .get(&format!("/v2/{SOURCE}/blocked/app/manifests/v1"), &[])
            .status,
    ];
    let counts = [
        metric(
            &proxy,
            "mirrorgate_upstream_requests_total{registry=\"mirror-a.test\",role=\"mirror\",route=\"manifest\",outcome=\"ok\"}",
        ),
        metric(
            &proxy,
            "mirrorgate_upstream_requests_total{registry=\"source.test\",role=\"source\",route=\"manifest\",outcome=\"ok\"}",
        ),
        metric(&proxy, "mirrorgate_fallbacks_total{route=\"manifest\"}"),
        metric(
            &proxy,
            "mirrorgate_source_after_mirrors_total{route=\"manifest\"}",
        ),
        metric(&proxy, "mirrorgate_blocked_total{route=\"manifest\"}"),
        metric(&proxy, "mirrorgate_cache_manifest_hits_total"),
        metric(
            &proxy,
            "mirrorgate_http_requests_total{route=\"manifest\",method=\"GET\",status=\"200\"}",
        ),
    ];
    assert_eq!(
        (served, counts),
        ([200, 200, 200, 403], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0])
    );
}

#[test]
fn a_rule_change_is_picked_up_within_seconds_without_a_failed_pull() {
    let (a, b, old, new) = two_mirrors();
    let proxy = Mirrorgate::start(
        &tag_rules(MIRROR_A),
        &[(MIRROR_A, &a.endpoint()), (MIRROR_B, &b.endpoint())],
        "watch: true\ncache:\n  tag_ttl: 0s\n",
    );
    assert_eq!(tag_digest(&proxy), (200, old));
    proxy.write_rules(&tag_rules(MIRROR_B));
    let mut statuses = Vec::new();
    let switched = eventually(Duration::from_secs(10), || {
        let (status, digest) = tag_digest(&proxy);
        statuses.push(status);
        digest == new
    });
    assert_eq!(
        (switched, statuses.iter().all(|s| *s == 200)),
        (true, true),
        "switched: {switched}, statuses: {statuses:?}"
    );
}

#[test]
fn a_broken_rule_file_keeps_the_last_good_rules_and_counts_the_failure() {
    let (a, b, old, _) = two_mirrors();
    let proxy = Mirrorgate::start(
        &tag_rules(MIRROR_A),
        &[(MIRROR_A, &a.endpoint()), (MIRROR_B, &b.endpoint())],
        "watch: true\ncache:\n  tag_ttl: 0s\n",
    );
    proxy.write_rules(
        &tag_rules(MIRROR_B).replace("source: source.test/ns", "source: \"source.test/*\""),
    );
    let failed = eventually(Duration::from_secs(10), || {
        metric(&proxy, "mirrorgate_reloads_total{result=\"failure\"}") >= 1.0
    });
    assert_eq!(
        (failed, tag_digest(&proxy), proxy.get("/readyz", &[]).status),
        (true, (200, old), 200)
    );
}

/// `tag_rules(mirror)` with its policy misspelt: the rules load (with a warning) and the source
/// is no longer blocked.
fn misspelt_policy_rules(mirror: &str) -> String {
    tag_rules(mirror).replace("mirrorSourcePolicy:", "mirrorSourcePolcy:")
}

const MISSPELT_POLICY_WARNING: &str = "document 1 (ImageTagMirrorSet/tags): spec.imageTagMirrors[0].mirrorSourcePolcy: unknown field; ignored (the API server would prune it) (did you mean \"mirrorSourcePolicy\"?)";

/// mirrorgate routing tags to mirror `a` (`tag_rules`), with `b` configured too, tag answers not
/// cached, and `extra_config_yaml`.
fn routing_to_a(a: &Registry, b: &Registry, extra_config_yaml: &str) -> Mirrorgate {
    Mirrorgate::start(
        &tag_rules(MIRROR_A),
        &[(MIRROR_A, &a.endpoint()), (MIRROR_B, &b.endpoint())],
        &format!("cache:\n  tag_ttl: 0s\n{extra_config_yaml}"),
    )
}

#[test]
fn rules_strict_refuses_a_reload_with_warnings_keeping_the_last_good_rules() {
    let (a, b, old, _) = two_mirrors();
    let proxy = routing_to_a(&a, &b, "rules_strict: true\n");
    let blocked_before = metric(&proxy, "mirrorgate_blocked_scopes");
    proxy.write_rules(&misspelt_policy_rules(MIRROR_B));
    proxy.sighup();
    let failed = eventually(Duration::from_secs(10), || {
        metric(&proxy, "mirrorgate_reloads_total{result=\"failure\"}") >= 1.0
    });
    let log = proxy.log();
    assert_eq!(
        (
            failed,
            tag_digest(&proxy),
            blocked_before,
            metric(&proxy, "mirrorgate_blocked_scopes"),
            metric(&proxy, "mirrorgate_rule_warnings"),
            log.contains("rules_strict: the rule set has 1 warning(s), which are errors: "),
            log.contains(MISSPELT_POLICY_WARNING),
        ),
        (true, (200, old), 1.0, 1.0, 0.0, true, true),
        "{log}"
    );
}

#[test]
fn without_rules_strict_a_reload_with_warnings_applies_and_the_gauges_show_the_lifted_block() {
    let (a, b, _, new) = two_mirrors();
    let proxy = routing_to_a(&a, &b, "");
    let before = (
        metric(&proxy, "mirrorgate_blocked_scopes"),
        metric(&proxy, "mirrorgate_rule_warnings"),
    );
    proxy.write_rules(&misspelt_policy_rules(MIRROR_B));
    proxy.sighup();
    let switched = eventually(Duration::from_secs(10), || tag_digest(&proxy).1 == new);
    assert_eq!(
        (
            switched,
            before,
            (
                metric(&proxy, "mirrorgate_blocked_scopes"),
                metric(&proxy, "mirrorgate_rule_warnings"),
            )
        ),
        (true, (1.0, 0.0), (0.0, 1.0)),
        "{}",
        proxy.log()
    );
}

#[test]
fn rules_strict_refuses_to_start_with_a_rule_set_that_has_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, misspelt_policy_rules(MIRROR_A)).unwrap();
    let config = dir.path().join("mirrorgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{}\nrules_strict: true\nrules: [{}]\ncache:\n  dir: {}\n",
            support::free_port(),
            rules.display(),
            dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirrorgate"));
    command.arg("serve").arg("--config").arg(&config);
    let mut serve = support::spawn_logged(command, &log, &log);
    let mut exit = None;
    let exited = support::wait_until(support::READY_TIMEOUT, || {
        exit = serve.exited();
        Ok(exit.is_some())
    });
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let error = output
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert_eq!(
        (
            exited,
            exit.as_deref(),
            error.starts_with(
                "error: refusing to start: rules_strict: the rule set has 1 warning(s), which are errors: "
            ),
            error.contains(MISSPELT_POLICY_WARNING),
        ),
        (Ok(()), Some("exit status: 1"), true, true),
        "{output}"
    );
}

#[test]
fn a_config_map_data_symlink_swap_is_picked_up() {
    let (a, b, old, new) = two_mirrors();
    let volume = tempfile::tempdir().unwrap();
    let mount = |name: &str, rules: &str| {
        let dir = volume.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    };
    mount("..2026_11_24_a", &tag_rules(MIRROR_A));
    std::os::unix::fs::symlink("..2026_11_24_a", volume.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rules.yaml", volume.path().join("rules.yaml")).unwrap();
    let proxy = Mirrorgate::start(
        "",
        &[(MIRROR_A, &a.endpoint()), (MIRROR_B, &b.endpoint())],
        &format!(
            "watch: true\nrules: [{}]\ncache:\n  tag_ttl: 0s\n",
            volume.path().display()
        ),
    );
    let before = tag_digest(&proxy);
    // What the kubelet does: a new timestamped directory, then an atomic swap of `..data`.
    mount("..2026_11_24_b", &tag_rules(MIRROR_B));
    std::os::unix::fs::symlink("..2026_11_24_b", volume.path().join("..data_tmp")).unwrap();
    std::fs::rename(
        volume.path().join("..data_tmp"),
        volume.path().join("..data"),
    )
    .unwrap();
    let switched = eventually(Duration::from_secs(10), || tag_digest(&proxy).1 == new);
    assert_eq!((before, switched), ((200, old), true), "{}", proxy.log());
}

#[test]
fn sighup_reloads_the_rules_when_files_are_not_watched() {
    let (a, b, _, new) = two_mirrors();
    let proxy = Mirrorgate::start(
        &tag_rules(MIRROR_A),
        &[(MIRROR_A, &a.endpoint()), (MIRROR_B, &b.endpoint())],
        "watch: false\ncache:\n  tag_ttl: 0s\n",
    );
    proxy.write_rules(&tag_rules(MIRROR_B));
    proxy.sighup();
    let switched = eventually(Duration::from_secs(10), || tag_digest(&proxy).1 == new);
    assert!(switched);
}

fn terminate(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for_exit(pid: u32, limit: Duration) -> bool {
    eventually(limit, || {
        !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid)
    })
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[test]
fn sigterm_lets_a_blob_pull_in_flight_finish() {
    let mirror = Registry::start();
    let image = single_arch("sigterm", &[2 << 20]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let throttle = Throttle::start(mirror.endpoint());
    let proxy = Mirrorgate::start(
        &digest_rules(&[MIRROR_A], "NeverContactSource"),
        &[(MIRROR_A, &throttle.endpoint())],
        "",
    );
    let layer = image.layers[0].clone();
    let path = format!("/v2/{SOURCE}/ns/app/blobs/{layer}");
    let addr = proxy.addr();
    let pull = std::thread::spawn(move || support::try_http_request("GET", &addr, &path, &[], b""));
    // Terminate while the download holds its upstream fetch slot.
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &proxy,
            "mirrorgate_upstream_fetches_in_flight"
        ) >= 1.0),
        "the pull did not start\n{}",
        proxy.log()
    );
    let pid = proxy.pid().unwrap();
    terminate(pid);
    let pulled = pull.join().unwrap();
    let exited = wait_for_exit(pid, Duration::from_secs(10));
    let whole = pulled
        .as_ref()
        .is_ok_and(|r| r.status == 200 && r.body == image.blob(&layer));
    assert_eq!(
        (whole, exited),
        (true, true),
        "pull: {:?}, exited: {exited}",
        pulled.map(|r| r.status)
    );
}
