//! A mirror that is mirrorgate itself, and loops between mirrorgates: a rule whose mirror is
//! mirrorgate's own address is skipped (the pull goes on to the next source without a request to
//! itself), `resolve` and `check` report it, and two mirrorgates whose rules send a repository to
//! each other refuse the looped request with 508 once each instead of amplifying it.

use crate::support;

use std::time::{Duration, Instant};

use support::{
    Mirrorgate, Registry, SELF_ADDR, copy_to_layout, http_request, layouts_identical, push,
    single_arch,
};

const SOURCE: &str = "registry.test";
const MIRROR: &str = "mirror.test";

/// An IDMS for `registry.test/app` with these mirrors (as written) and policy.
fn idms(mirrors: &[&str], policy: &str) -> String {
    let list: String = mirrors.iter().map(|m| format!("    - {m}\n")).collect();
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: through-mirrorgate\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/app\n    mirrors:\n{list}    mirrorSourcePolicy: {policy}\n"
    )
}

/// The value of the metric line that starts with `series` (name and labels), or 0.
fn metric(proxy: &Mirrorgate, series: &str) -> f64 {
    proxy
        .get("/metrics", &[])
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `probe` until it returns true, for at most `limit`.
fn eventually(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    probe()
}

/// Pulls `registry.test/app@<digest>` through a mirrorgate whose first mirror is itself (named
/// `self_host` in the rules, reachable there through `registries`, so that a mirrorgate that did
/// not know its own name would send itself a request), and returns what it did.
fn pull_through_self_mirror(
    self_host: &str,
    extra_config: &str,
) -> ((bool, usize, usize), [f64; 3]) {
    let source = Registry::start();
    let mut mirror = Registry::start();
    let image = single_arch("self-mirror", &[2048, 30_000]);
    push(&image, &format!("{}/app:v1", mirror.addr()));
    let direct = tempfile::tempdir().unwrap();
    let output = copy_to_layout(
        &format!("{}/app@{}", mirror.addr(), image.manifest_digest),
        &direct.path().join("l"),
        &[],
    );
    assert!(output.status.success(), "direct pull failed");
    mirror.reset();
    let rules = idms(
        &[
            &format!("{self_host}/{SOURCE}/app"),
            &format!("{MIRROR}/app"),
        ],
        "AllowContactingSource",
    );
    let self_endpoint = format!("http://{SELF_ADDR}");
    let proxy = Mirrorgate::start(
        &rules,
        &[
            (SOURCE, &source.endpoint()),
            (MIRROR, &mirror.endpoint()),
            (self_host, &self_endpoint),
        ],
        extra_config,
    );
    let through = tempfile::tempdir().unwrap();
    let output = copy_to_layout(
        &format!("{}/{SOURCE}/app@{}", proxy.addr(), image.manifest_digest),
        &through.path().join("l"),
        &[],
    );
    assert!(
        output.status.success(),
        "pull through mirrorgate failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.log()
    );
    let identical = layouts_identical(&through.path().join("l"), &direct.path().join("l")).is_ok();
    let self_label = self_host.replace(SELF_ADDR, &proxy.addr());
    (
        (
            identical,
            mirror.count("GET", "/v2/app/manifests/"),
            source.requests().len(),
        ),
        [
            metric(&proxy, "mirrorgate_loops_refused_total"),
            metric(
                &proxy,
                &format!(
                    "mirrorgate_upstream_requests_total{{registry=\"{self_label}\",role=\"mirror\",route=\"manifest\",outcome=\"error\"}}"
                ),
            ),
            metric(
                &proxy,
                "mirrorgate_http_requests_total{route=\"manifest\",method=\"GET\",status=\"508\"}",
            ),
        ],
    )
}

#[test]
fn a_first_mirror_on_the_listen_address_is_skipped_and_the_next_source_serves() {
    // The listen address is a self name without being listed.
    let (pulled, own) = pull_through_self_mirror(SELF_ADDR, "");
    assert_eq!((pulled, own), ((true, 1, 0), [0.0, 0.0, 0.0]));
}

#[test]
fn a_first_mirror_on_a_configured_self_name_is_skipped_and_the_next_source_serves() {
    let (pulled, own) = pull_through_self_mirror(
        "mirrorgate.mirrorgate.svc:5000",
        "self_names: [mirrorgate.mirrorgate.svc:5000]\n",
    );
    assert_eq!((pulled, own), ((true, 1, 0), [0.0, 0.0, 0.0]));
}

/// `(508 answers, 502 answers)` to manifest GETs so far.
fn answers(proxy: &Mirrorgate) -> (f64, f64) {
    let series = |status: u16| {
        format!(
            "mirrorgate_http_requests_total{{route=\"manifest\",method=\"GET\",status=\"{status}\"}}"
        )
    };
    (metric(proxy, &series(508)), metric(proxy, &series(502)))
}

#[test]
fn two_mirrorgates_mirroring_each_other_refuse_one_looped_request_each_and_stay_responsive() {
    let digest = format!("sha256:{}", "5".repeat(64));
    let path = format!("/v2/{SOURCE}/app/manifests/{digest}");
    // a.test and b.test are the two proxies; neither may contact the source.
    let mut a = Mirrorgate::start(
        &idms(&["b.test/registry.test/app"], "NeverContactSource"),
        &[("b.test", "http://127.0.0.1:1")],
        "",
    );
    let b = Mirrorgate::start(
        &idms(&["a.test/registry.test/app"], "NeverContactSource"),
        &[("a.test", &format!("http://{}", a.addr()))],
        "",
    );
    a.reconfigure(&format!(
        "registries:\n  b.test:\n    endpoint: http://{}\n",
        b.addr()
    ));
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &a,
            "mirrorgate_reloads_total{result=\"success\"}"
        ) == 1.0),
        "a did not reload\n{}",
        a.log()
    );

    // Client -> a -> b -> a: a refuses the request that comes back.
    let first = a.get(&path, &[]).status;
    let after_first = (answers(&a), answers(&b));
    // Client -> b -> a -> b: b refuses the request that comes back.
    let second = b.get(&path, &[]).status;
    let after_second = (answers(&a), answers(&b));
    // A blob download runs in a task of its own: the chain goes with it, so a -> b -> a again.
    let blob = a
        .get(&format!("/v2/{SOURCE}/app/blobs/{digest}"), &[])
        .status;
    let blob_loops = metric(
        &a,
        "mirrorgate_http_requests_total{route=\"blob\",method=\"GET\",status=\"508\"}",
    );
    let alive = (a.get("/v2/", &[]).status, b.get("/v2/", &[]).status);
    let loops = (
        metric(&a, "mirrorgate_loops_refused_total"),
        metric(&b, "mirrorgate_loops_refused_total"),
    );
    assert_eq!(
        (
            first,
            after_first,
            second,
            after_second,
            blob,
            blob_loops,
            alive,
            loops
        ),
        (
            502,
            // a: one 508 (the request b forwarded back), one 502 (to the client); b: the one
            // request a sent it, answered 502 once its only mirror refused the loop.
            ((1.0, 1.0), (0.0, 1.0)),
            502,
            ((1.0, 2.0), (1.0, 2.0)),
            502,
            1.0,
            (200, 200),
            (2.0, 1.0)
        ),
        "a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
}

#[test]
fn a_request_carrying_our_via_token_gets_508_naming_the_loop_without_contacting_anything() {
    let mirror = Registry::start();
    let proxy = Mirrorgate::start(
        &idms(&[&format!("{MIRROR}/app")], "AllowContactingSource"),
        &[(MIRROR, &mirror.endpoint())],
        "via_token: mirrorgate.mirrorgate.svc\n",
    );
    let path = format!("/v2/{SOURCE}/app/manifests/sha256:{}", "7".repeat(64));
    let looped = http_request(
        "GET",
        &proxy.addr(),
        &path,
        &[("Via", "1.1 edge-proxy, 1.1 mirrorgate.mirrorgate.svc")],
        &[],
    );
    let body = looped.json();
    let passing = http_request(
        "GET",
        &proxy.addr(),
        "/v2/",
        &[("Via", "1.1 another-mirrorgate")],
        &[],
    );
    assert_eq!(
        (
            looped.status,
            body["errors"][0]["code"].as_str(),
            body["errors"][0]["message"].as_str().is_some_and(
                |m| m.starts_with("loop detected") && m.contains("mirrorgate.mirrorgate.svc")
            ),
            body["errors"][0]["detail"]["token"].as_str(),
            mirror.requests().len(),
            passing.status,
            metric(&proxy, "mirrorgate_loops_refused_total"),
        ),
        (
            508,
            Some("UNKNOWN"),
            true,
            Some("mirrorgate.mirrorgate.svc"),
            0,
            200,
            1.0
        ),
        "{body}"
    );
}

/// Runs the mirrorgate binary; (status, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    support::cli(args)
}

#[test]
fn resolve_shows_the_self_mirror_skipped_and_check_reports_it_once_per_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mirrorgate.yaml");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &config,
        format!(
            "self_names: [mirrorgate.mirrorgate.svc:5000]\nrules: [{}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let itms = "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: through-mirrorgate\nspec:\n  imageTagMirrors:\n  - source: registry.test/app\n    mirrors:\n    - mirrorgate.mirrorgate.svc:5000/registry.test/app\n";
    std::fs::write(
        &rules,
        format!(
            "{}---\n{itms}",
            idms(
                &[
                    "mirrorgate.mirrorgate.svc:5000/registry.test/app",
                    "mirror.test/app"
                ],
                "AllowContactingSource"
            )
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    let image = format!("{SOURCE}/app@{digest}");
    let resolved = cli(&["resolve", "--config", config, &image]);
    let checked = cli(&["check", "--config", config]);
    let self_lines: Vec<&str> = checked
        .1
        .lines()
        .skip_while(|l| !l.starts_with("self mirrors: "))
        .take_while(|l| !l.starts_with("warnings: "))
        .collect();
    assert_eq!(
        (resolved, checked.0, self_lines),
        (
            (
                true,
                format!(
                    "mirror mirror.test/app@{digest}  ({origin})\nsource registry.test/app@{digest}  ({origin})\n",
                    origin = format!(
                        "{}: document 1 (ImageDigestMirrorSet/through-mirrorgate)",
                        rules.display()
                    )
                ),
                format!(
                    "skipped: mirror mirrorgate.mirrorgate.svc:5000/registry.test/app@{digest} is mirrorgate itself (self name mirrorgate.mirrorgate.svc:5000): already routing it\n"
                )
            ),
            true,
            vec![
                "self mirrors: 1 (self names: 127.0.0.1:5000, mirrorgate.mirrorgate.svc:5000)",
                "  registry.test/app: mirror mirrorgate.mirrorgate.svc:5000/registry.test/app (digest, tag) is mirrorgate itself (self name mirrorgate.mirrorgate.svc:5000); skipped when routing",
            ]
        )
    );
}
