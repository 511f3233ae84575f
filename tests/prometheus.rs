//! Observability checked by the real tools: a real Prometheus scrapes mirrorgate while a workload
//! runs against real registries, and every PromQL expression the manual prints, every alert and every
//! dashboard query is evaluated through its HTTP API against the values the workload implies;
//! `promtool check metrics` on `/metrics`, `promtool check rules` and `promtool test rules` on the
//! alerts; the shipped copies of the alerts and the dashboard agree; every metric README or the
//! manual names exists, and every alert has a runbook under its name in the manual.
//!
//! Exact values from `rate` and `increase`: the workload runs twice with the same shape (new images
//! each time), so the first run creates every series the second moves. The window of each
//! expression is then replaced by the span from the first scrape after the first run (T0) to the
//! first scrape after the second (T1), and the expression evaluated at T1: with samples exactly at
//! both ends of the window Prometheus extrapolates nothing, so `increase` is the second run's
//! count and `rate` that count over the window. (Prometheus 2, as Debian ships it, selects a
//! range with both ends included, so the sample at T0 is the window's first.) Ranges are found
//! by their brackets: no expression may use `[` inside a label matcher.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{Mirrorgate, Prometheus, Registry, free_port, push, sha256_digest, single_arch};

const SOURCE: &str = "source.test";
const MIRROR: &str = "mirror.test";
const DOWN: &str = "down.test";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> serde_json::Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Collapses whitespace, so that an expression reads the same wherever it is printed.
fn normalize(expr: &str) -> String {
    expr.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// README and every chapter of the manual (docs/src), one after the other.
fn docs() -> String {
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(root().join("docs/src"))
        .expect("docs/src")
        .map(|entry| entry.expect("docs/src entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    chapters.sort();
    chapters.iter().fold(read("README.md"), |text, chapter| {
        text + "\n" + &std::fs::read_to_string(chapter).expect("read a chapter")
    })
}

/// The expressions of the ```promql blocks of README and the manual.
fn readme_expressions() -> Vec<String> {
    let docs = docs();
    let mut found = Vec::new();
    let mut rest = docs.as_str();
    while let Some(start) = rest.find("```promql\n") {
        let block = &rest[start + "```promql\n".len()..];
        let end = block.find("```").expect("a ```promql block is closed");
        found.push(normalize(&block[..end]));
        rest = &block[end..];
    }
    found
}

/// The alerts of the plain rules file: (name, expression).
fn alert_expressions() -> Vec<(String, String)> {
    let rules = yaml("deploy/prometheus/mirrorgate-rules.yaml");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert").to_owned(),
                normalize(r["expr"].as_str().expect("expr")),
            )
        })
        .collect()
}

/// Every target expression of the dashboard's panels.
fn dashboard_expressions() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/mirrorgate-dashboard.json")).unwrap();
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| normalize(t["expr"].as_str().expect("expr")))
        .collect()
}

/// `expr` with every range (`[5m]`, `[$__rate_interval]`, `[$__range]`) replaced by `window`.
fn with_window(expr: &str, window: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        let close = rest[open..].find(']').expect("a range is closed") + open;
        out.push_str(&rest[..open]);
        out.push('[');
        out.push_str(window);
        out.push(']');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// What an expression must return: samples by their labels (without `job`, `instance` and the
/// metric name, which say where, not what), or, for latency quantiles, a finite value for these
/// routes and none for others (how long a request takes is not implied by the workload).
#[derive(Debug)]
enum Expect {
    Samples(Vec<(Vec<(&'static str, &'static str)>, f64)>),
    FiniteFor(Vec<&'static str>),
}

fn labels(sample: &serde_json::Value) -> BTreeMap<String, String> {
    sample["metric"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "job" | "instance" | "__name__"))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Whether `samples` are what `expect` says; `Err` shows the difference.
fn check(samples: &[serde_json::Value], expect: &Expect) -> Result<(), String> {
    let got: BTreeMap<BTreeMap<String, String>, f64> =
        samples.iter().map(|s| (labels(s), value(s))).collect();
    match expect {
        Expect::Samples(wanted) => {
            let wanted: BTreeMap<BTreeMap<String, String>, f64> = wanted
                .iter()
                .map(|(l, v)| {
                    (
                        l.iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                        *v,
                    )
                })
                .collect();
            let same = got.len() == wanted.len()
                && wanted.iter().all(|(l, v)| {
                    got.get(l)
                        .is_some_and(|g| (g - v).abs() <= 1e-9 * v.abs().max(1.0))
                });
            if same {
                Ok(())
            } else {
                Err(format!("wanted {wanted:?}, got {got:?}"))
            }
        }
        Expect::FiniteFor(routes) => {
            let finite: BTreeSet<String> = got
                .iter()
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .filter_map(|(l, _)| l.get("route").cloned())
                .collect();
            let wanted: BTreeSet<String> = routes.iter().map(|r| (*r).to_owned()).collect();
            if finite == wanted {
                Ok(())
            } else {
                Err(format!("wanted finite values for {wanted:?}, got {got:?}"))
            }
        }
    }
}

/// A registry that answers every request 503, as a mirror in trouble does (no back-off: it
/// answers). Serves until the test process ends.
fn failing_registry() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    format!("http://{addr}")
}

/// The expression of `MirrorgateMirrorFailing`.
const MIRROR_FAILING: &str = r#"sum by (namespace, job, registry) (rate(mirrorgate_upstream_requests_total{role="mirror",outcome=~"error|timeout|skipped|unauthorized|rejected|digest_mismatch|size_mismatch"}[5m])) > 0"#;

/// The expression of `MirrorgateBlockedScopesDropped`.
const BLOCKED_SCOPES_DROPPED: &str =
    "mirrorgate_blocked_scopes < max_over_time(mirrorgate_blocked_scopes[1h])";

fn rules() -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: digests\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/ns\n    mirrors:\n    - {MIRROR}/ns\n    - {DOWN}/ns\n---\napiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: blocked\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/blocked\n    mirrors:\n    - {MIRROR}/blocked\n    mirrorSourcePolicy: NeverContactSource\n"
    )
}

/// The value of the series `series` (name and labels as printed) on mirrorgate's `/metrics`.
fn metric(metrics_addr: &str, series: &str) -> f64 {
    support::http_get(metrics_addr, "/metrics", &[])
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The timestamp (ms) of the first scrape that started after `after` (Unix seconds).
fn scrape_after(prometheus: &Prometheus, after: f64) -> i64 {
    let mut at = None;
    wait_for("a scrape after the workload", || {
        let samples = prometheus
            .query("timestamp(mirrorgate_build_info)", None)
            .unwrap_or_default();
        at = samples.first().map(value).filter(|t| *t > after);
        at.is_some()
    });
    (at.unwrap() * 1000.0).round() as i64
}

/// One run of the workload; every run counts the same (see `per_run`). Returns the layer size.
fn workload(
    proxy: &Mirrorgate,
    metrics_addr: &str,
    source: &Registry,
    mirror: &Registry,
    run: u32,
) -> usize {
    let on_mirror = single_arch(&format!("prom-mirror-{run}"), &[3000]);
    let on_source = single_arch(&format!("prom-source-{run}"), &[3000]);
    push(&on_mirror, &format!("{}/ns/app:m{run}", mirror.addr()));
    push(&on_source, &format!("{}/ns/app:s{run}", source.addr()));
    let layer = on_mirror.layers[0].clone();
    let layer_size = on_mirror.blob(&layer).len();
    let get = |path: &str| proxy.get(path, &[]).status;
    let manifest = |digest: &str| get(&format!("/v2/{SOURCE}/ns/app/manifests/{digest}"));
    let blob = || get(&format!("/v2/{SOURCE}/ns/app/blobs/{layer}"));
    let stored_before = metric(metrics_addr, "mirrorgate_cache_blob_bytes");
    let missing = sha256_digest(format!("nowhere {run}").as_bytes());
    let statuses = [
        // Served by the mirror, then from the cache.
        manifest(&on_mirror.manifest_digest),
        manifest(&on_mirror.manifest_digest),
        blob(),
        {
            // The second blob pull is a hit once the first download is in the store.
            wait_for("the blob in the store", || {
                metric(metrics_addr, "mirrorgate_cache_blob_bytes") > stored_before
            });
            blob()
        },
        // The mirror lacks it, the other mirror fails (503), the source serves.
        manifest(&on_source.manifest_digest),
        // Nobody has it, one mirror failed: 502.
        manifest(&missing),
        // A tag in a blocked scope without tag mirrors: 403.
        get(&format!("/v2/{SOURCE}/blocked/app/manifests/v1")),
    ];
    assert_eq!(statuses, [200, 200, 200, 200, 200, 502, 403], "run {run}");
    // A reload that fails: the last good rules stay in force.
    let failures = metric(metrics_addr, "mirrorgate_reloads_total{result=\"failure\"}");
    proxy.write_rules(&format!("kind: ImageDigestMirrorSet\nbroken: [{run}\n"));
    proxy.sighup();
    wait_for("the failed reload", || {
        metric(metrics_addr, "mirrorgate_reloads_total{result=\"failure\"}") > failures
    });
    layer_size
}

/// What each expression must return after one run, counted over a window of `r` seconds.
fn expectations(
    r: f64,
    layer: f64,
    blob_bytes: f64,
    manifest_bytes: f64,
) -> Vec<(&'static str, Expect)> {
    use Expect::{FiniteFor, Samples};
    let rate = |n: f64| n / r;
    let one = |v: f64| Samples(vec![(vec![], v)]);
    let by = |key: &'static str, pairs: &[(&'static str, f64)]| {
        Samples(pairs.iter().map(|(k, v)| (vec![(key, *k)], *v)).collect())
    };
    // The per-route counters exist from the start for every route that can count.
    let per_route = |manifest: f64| {
        by(
            "route",
            &[
                ("manifest", manifest),
                ("blob", 0.0),
                ("tags", 0.0),
                ("referrers", 0.0),
            ],
        )
    };
    // Per run: 7 pull requests (manifests 200 ×3, 502, 403; blobs 200 ×2); upstream: mirror
    // manifest ok 1, mirror blob ok 1, mirror not found 2, down.test 503 ×2, source ok 1, source
    // not found 1; 1 fallback, 2 source attempts after mirrors, 1 blocked; cache: 1 manifest hit,
    // 3 manifest misses, 1 blob hit, 1 blob miss; 1 failed reload.
    let refused = rate(1.0);
    vec![
        // the manual (docs/src/operations.md)
        (
            r#"sum(rate(mirrorgate_upstream_requests_total{route="manifest",role="mirror",outcome="ok"}[5m])) / sum(rate(mirrorgate_upstream_requests_total{route="manifest",outcome="ok"}[5m]))"#,
            one(0.5),
        ),
        (
            "sum by (route) (rate(mirrorgate_source_after_mirrors_total[5m]))",
            per_route(rate(2.0)),
        ),
        (
            "sum by (route) (rate(mirrorgate_fallbacks_total[5m]))",
            per_route(rate(1.0)),
        ),
        (
            "sum by (route) (rate(mirrorgate_blocked_total[5m]))",
            per_route(rate(1.0)),
        ),
        (
            "(sum(rate(mirrorgate_cache_manifest_hits_total[5m])) + sum(rate(mirrorgate_cache_tag_hits_total[5m]))) / (sum(rate(mirrorgate_cache_manifest_hits_total[5m])) + sum(rate(mirrorgate_cache_tag_hits_total[5m])) + sum(rate(mirrorgate_cache_manifest_misses_total[5m])))",
            one(0.25),
        ),
        (
            "histogram_quantile(0.99, sum by (le, route) (rate(mirrorgate_http_request_duration_seconds_bucket[5m])))",
            FiniteFor(vec!["blob", "manifest"]),
        ),
        (
            r#"increase(mirrorgate_reloads_total{result="failure"}[15m]) > 0"#,
            by("result", &[("failure", 1.0)]),
        ),
        // Alerts
        (MIRROR_FAILING, by("registry", &[(DOWN, rate(2.0))])),
        (
            r#"sum by (namespace, job) (rate(mirrorgate_http_requests_total{route=~"manifest|blob|tags|referrers",status=~"5.."}[5m])) / sum by (namespace, job) (rate(mirrorgate_http_requests_total{route=~"manifest|blob|tags|referrers"}[5m])) > 0.05"#,
            one(1.0 / 7.0),
        ),
        (
            r#"sum by (namespace, job) (rate(mirrorgate_http_requests_total{route=~"manifest|blob|tags|referrers|unauthorized",status=~"401|403"}[5m])) > 0.1"#,
            if refused > 0.1 {
                one(refused)
            } else {
                Samples(vec![])
            },
        ),
        ("mirrorgate_last_reload_successful == 0", one(0.0)),
        (BLOCKED_SCOPES_DROPPED, Samples(vec![])),
        (
            "sum by (namespace, job) (rate(mirrorgate_cache_store_failures_total[5m])) > 0",
            Samples(vec![]),
        ),
        (
            "sum by (namespace, job) (rate(mirrorgate_upstream_fetches_refused_total[5m])) > 0",
            Samples(vec![]),
        ),
        // Dashboard
        (
            "sum by (route) (rate(mirrorgate_http_requests_total[$__rate_interval]))",
            // The harness's readiness probe asked /v2/ once, before the window.
            by(
                "route",
                &[("base", 0.0), ("manifest", rate(5.0)), ("blob", rate(2.0))],
            ),
        ),
        (
            "histogram_quantile(0.5, sum by (le, route) (rate(mirrorgate_http_request_duration_seconds_bucket[$__rate_interval])))",
            FiniteFor(vec!["blob", "manifest"]),
        ),
        (
            "histogram_quantile(0.99, sum by (le, route) (rate(mirrorgate_http_request_duration_seconds_bucket[$__rate_interval])))",
            FiniteFor(vec!["blob", "manifest"]),
        ),
        (
            r#"sum by (role) (rate(mirrorgate_upstream_requests_total{route=~"manifest|blob",outcome="ok"}[$__rate_interval]))"#,
            by("role", &[("mirror", rate(2.0)), ("source", rate(1.0))]),
        ),
        (
            "sum(rate(mirrorgate_cache_manifest_hits_total[$__rate_interval])) + sum(rate(mirrorgate_cache_tag_hits_total[$__rate_interval])) + sum(rate(mirrorgate_cache_blob_hits_total[$__rate_interval]))",
            one(rate(2.0)),
        ),
        (
            "sum by (route) (rate(mirrorgate_fallbacks_total[$__rate_interval]))",
            per_route(rate(1.0)),
        ),
        (
            "sum by (route) (rate(mirrorgate_source_after_mirrors_total[$__rate_interval]))",
            per_route(rate(2.0)),
        ),
        (
            "sum by (route) (rate(mirrorgate_blocked_total[$__rate_interval]))",
            per_route(rate(1.0)),
        ),
        (
            r#"sum by (registry, outcome) (rate(mirrorgate_upstream_requests_total{outcome!~"ok|not_found"}[$__rate_interval]))"#,
            Samples(vec![(
                vec![("registry", DOWN), ("outcome", "error")],
                rate(2.0),
            )]),
        ),
        (
            "(sum(rate(mirrorgate_cache_manifest_hits_total[$__rate_interval])) + sum(rate(mirrorgate_cache_tag_hits_total[$__rate_interval]))) / (sum(rate(mirrorgate_cache_manifest_hits_total[$__rate_interval])) + sum(rate(mirrorgate_cache_tag_hits_total[$__rate_interval])) + sum(rate(mirrorgate_cache_manifest_misses_total[$__rate_interval])))",
            one(0.25),
        ),
        (
            "sum(rate(mirrorgate_cache_blob_hits_total[$__rate_interval])) / (sum(rate(mirrorgate_cache_blob_hits_total[$__rate_interval])) + sum(rate(mirrorgate_cache_blob_misses_total[$__rate_interval])))",
            one(0.5),
        ),
        ("sum(mirrorgate_cache_blob_bytes)", one(blob_bytes)),
        (
            "sum(mirrorgate_cache_manifest_memory_bytes)",
            one(manifest_bytes),
        ),
        (
            "sum(rate(mirrorgate_bytes_served_from_cache_total[$__rate_interval]))",
            one(rate(layer)),
        ),
        (
            "sum(rate(mirrorgate_bytes_served_from_upstream_total[$__rate_interval]))",
            one(rate(layer)),
        ),
        (
            "sum(rate(mirrorgate_bytes_fetched_total[$__rate_interval]))",
            one(rate(layer)),
        ),
        (
            "sum by (kind) (mirrorgate_rules_loaded)",
            by("kind", &[("ImageDigestMirrorSet", 2.0)]),
        ),
        (
            "sum by (result) (increase(mirrorgate_reloads_total[$__range]))",
            by("result", &[("failure", 1.0), ("success", 0.0)]),
        ),
        ("min(mirrorgate_last_reload_successful)", one(0.0)),
        ("sum(mirrorgate_upstream_fetches_in_flight)", one(0.0)),
        ("sum(mirrorgate_upstream_fetches_queued)", one(0.0)),
        (
            "sum(rate(mirrorgate_upstream_fetches_refused_total[$__rate_interval]))",
            one(0.0),
        ),
    ]
}

#[test]
fn every_readme_alert_and_dashboard_expression_returns_what_the_workload_implies() {
    let source = Registry::start();
    let mirror = Registry::start();
    let down = failing_registry();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let proxy = Mirrorgate::start(
        &rules(),
        &[
            (SOURCE, &source.endpoint()),
            (MIRROR, &mirror.endpoint()),
            (DOWN, &down),
        ],
        &format!("metrics_listen: \"{metrics_addr}\"\n"),
    );
    let rules_file = root().join("deploy/prometheus/mirrorgate-rules.yaml");
    let prometheus = Prometheus::start(std::slice::from_ref(&metrics_addr), &[rules_file]);

    workload(&proxy, &metrics_addr, &source, &mirror, 1);
    let t0 = scrape_after(&prometheus, now_seconds());
    let layer = workload(&proxy, &metrics_addr, &source, &mirror, 2);
    let t1 = scrape_after(&prometheus, now_seconds());
    let window = format!("{}ms", t1 - t0);
    let time = format!("{}.{:03}", t1 / 1000, t1 % 1000);
    let r = (t1 - t0) as f64 / 1000.0;
    let expected = expectations(
        r,
        layer as f64,
        metric(&metrics_addr, "mirrorgate_cache_blob_bytes"),
        metric(&metrics_addr, "mirrorgate_cache_manifest_memory_bytes"),
    );

    let mut expressions: Vec<(String, String)> = readme_expressions()
        .into_iter()
        .map(|e| ("the manual".to_owned(), e))
        .collect();
    expressions.extend(
        alert_expressions()
            .into_iter()
            .map(|(name, e)| (format!("alert {name}"), e)),
    );
    expressions.extend(
        dashboard_expressions()
            .into_iter()
            .map(|e| ("dashboard".to_owned(), e)),
    );
    let mut problems = Vec::new();
    for (origin, expr) in &expressions {
        // As printed (Grafana's variables given a value), it parses and evaluates.
        let printed = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h");
        if let Err(error) = prometheus.query(&printed, Some(&time)) {
            problems.push(format!("{origin}: {expr}: {error}"));
            continue;
        }
        let Some((_, expect)) = expected.iter().find(|(e, _)| normalize(e) == *expr) else {
            problems.push(format!("{origin}: {expr}: no expected value in this test"));
            continue;
        };
        let measured = with_window(expr, &window);
        match prometheus.query(&measured, Some(&time)) {
            Ok(samples) => {
                if let Err(difference) = check(&samples, expect) {
                    problems.push(format!("{origin}: {measured}: {difference}"));
                }
            }
            Err(error) => problems.push(format!("{origin}: {measured}: {error}")),
        }
    }
    // Prometheus loaded the alerts and evaluates them without error.
    let mut rule_health = Vec::new();
    wait_for("every rule evaluated", || {
        let groups = prometheus.api("rules", &[]).unwrap_or_default();
        rule_health = groups["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["health"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect::<Vec<_>>();
        rule_health.len() == alert_expressions().len()
            && rule_health.iter().all(|(_, h)| h != "unknown")
    });
    let unhealthy: Vec<_> = rule_health.iter().filter(|(_, h)| h != "ok").collect();
    assert_eq!(
        (problems, unhealthy),
        (Vec::<String>::new(), Vec::new()),
        "evaluated {} expressions over a window of {window} ending at {time}\n--- prometheus log\n{}",
        expressions.len(),
        prometheus.log()
    );
}

/// The expression of the alert `name` in the plain rules file (so a test follows what ships).
fn alert_expression(name: &str) -> String {
    alert_expressions()
        .into_iter()
        .find(|(alert, _)| alert == name)
        .unwrap_or_else(|| panic!("no alert {name}"))
        .1
}

/// The `registry` labels of the samples `expr` returns at the first scrape after now.
fn registries_after_a_scrape(prometheus: &Prometheus, expr: &str) -> Result<Vec<String>, String> {
    let at = scrape_after(prometheus, now_seconds());
    let time = format!("{}.{:03}", at / 1000, at % 1000);
    let samples = prometheus.query(expr, Some(&time))?;
    Ok(samples
        .iter()
        .map(|s| labels(s).get("registry").cloned().unwrap_or_default())
        .collect())
}

#[test]
fn a_failing_mirror_of_a_never_contact_source_scope_fires_mirror_failing_and_a_lifted_block_fires_blocked_scopes_dropped()
 {
    let down = failing_registry();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let blocked = format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: blocked\nspec:\n  imageDigestMirrors:\n  - source: {SOURCE}/blocked\n    mirrors:\n    - {DOWN}/blocked\n    mirrorSourcePolicy: NeverContactSource\n"
    );
    let proxy = Mirrorgate::start(
        &blocked,
        &[(DOWN, &down)],
        &format!("metrics_listen: \"{metrics_addr}\"\n"),
    );
    let rules_file = root().join("deploy/prometheus/mirrorgate-rules.yaml");
    let prometheus = Prometheus::start(std::slice::from_ref(&metrics_addr), &[rules_file]);
    // Pulls on both sides of a scrape, so that the failures counter moves between two samples.
    let pull = |run: u32| {
        let digest = sha256_digest(format!("never served {run}").as_bytes());
        let status = proxy
            .get(&format!("/v2/{SOURCE}/blocked/app/manifests/{digest}"), &[])
            .status;
        scrape_after(&prometheus, now_seconds());
        status
    };
    let pulls: Vec<u16> = (0..3).map(pull).collect();
    let mirror_failing =
        registries_after_a_scrape(&prometheus, &alert_expression("MirrorgateMirrorFailing"));
    let dropped_before = registries_after_a_scrape(
        &prometheus,
        &alert_expression("MirrorgateBlockedScopesDropped"),
    );
    // A misspelt policy: the rules load with a warning, and the source is no longer blocked.
    let successes = metric(
        &metrics_addr,
        "mirrorgate_reloads_total{result=\"success\"}",
    );
    proxy.write_rules(&blocked.replace("mirrorSourcePolicy:", "mirrorSourcePolcy:"));
    proxy.sighup();
    wait_for("the reload", || {
        metric(
            &metrics_addr,
            "mirrorgate_reloads_total{result=\"success\"}",
        ) > successes
    });
    let dropped_after = registries_after_a_scrape(
        &prometheus,
        &alert_expression("MirrorgateBlockedScopesDropped"),
    );
    assert_eq!(
        (
            pulls,
            metric(
                &metrics_addr,
                "mirrorgate_source_after_mirrors_total{route=\"manifest\"}"
            ),
            mirror_failing,
            dropped_before,
            dropped_after,
            metric(&metrics_addr, "mirrorgate_rule_warnings"),
        ),
        (
            vec![502, 502, 502],
            0.0,
            Ok(vec![DOWN.to_owned()]),
            Ok(vec![]),
            Ok(vec![String::new()]),
            1.0,
        ),
        "{}",
        prometheus.log()
    );
}

fn promtool(args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; scripts/test.sh installs it)");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn promtool_check_metrics_finds_nothing_on_a_busy_proxy() {
    let source = Registry::start();
    let mirror = Registry::start();
    let proxy = Mirrorgate::start(
        &rules(),
        &[(SOURCE, &source.endpoint()), (MIRROR, &mirror.endpoint())],
        "",
    );
    let image = single_arch("promtool", &[1000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let manifest = format!("/v2/{SOURCE}/ns/app/manifests/{}", image.manifest_digest);
    let blob = format!("/v2/{SOURCE}/ns/app/blobs/{}", image.layers[0]);
    for path in [manifest.as_str(), &manifest, &blob, "/v2/", "/nowhere"] {
        proxy.get(path, &[]);
    }
    proxy.get("/status", &[]);
    let metrics = proxy.get("/metrics", &[]);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (ok, report) = promtool(&["check", "metrics"], Some(&metrics.body));
    assert_eq!((ok, report.trim()), (true, ""), "{}", metrics.text());
}

#[test]
fn the_alerts_pass_promtool_check_and_their_unit_tests() {
    let (checked, check_report) = promtool(
        &["check", "rules", "deploy/prometheus/mirrorgate-rules.yaml"],
        None,
    );
    let tests: Vec<String> = std::fs::read_dir(root().join("deploy/prometheus/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (tested, test_report) = promtool(&args, None);
    assert_eq!(
        (checked, tested, tests.is_empty()),
        (true, true, false),
        "{check_report}\n{test_report}"
    );
    // Every alert has a unit test and a runbook.
    let tested_alerts: BTreeSet<String> = tests
        .iter()
        .flat_map(|t| {
            let doc = yaml(t);
            doc["tests"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["alertname"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    // A runbook is found by the alert's name: a heading of its own in the operations chapter.
    let operations = read("docs/src/operations.md");
    let untested: Vec<String> = alert_expressions()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            !tested_alerts.contains(name)
                || !operations.lines().any(|line| line == format!("### {name}"))
        })
        .collect();
    assert_eq!(
        untested,
        Vec::<String>::new(),
        "alerts without a unit test or a runbook in docs/src/operations.md"
    );
}

#[test]
fn the_prometheus_rule_holds_the_groups_of_the_plain_rules_file() {
    let plain = yaml("deploy/prometheus/mirrorgate-rules.yaml");
    let operator = yaml("deploy/kubernetes/base/prometheusrule.yaml");
    assert_eq!(
        (
            operator["apiVersion"].as_str(),
            operator["kind"].as_str(),
            &operator["spec"]["groups"]
        ),
        (
            Some("monitoring.coreos.com/v1"),
            Some("PrometheusRule"),
            &plain["groups"]
        )
    );
    let kustomization = read("deploy/kubernetes/base/kustomization.yaml");
    assert!(kustomization.contains("- prometheusrule.yaml"));
}

#[test]
fn the_dashboard_config_maps_hold_the_dashboard() {
    let json = read("deploy/grafana/mirrorgate-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&json).unwrap();
    let console = yaml("deploy/grafana/openshift-console-dashboard.yaml");
    let operator = yaml("deploy/grafana/grafana-operator-dashboard.yaml");
    let parse = |v: &serde_json::Value| -> serde_json::Value {
        serde_json::from_str(v.as_str().unwrap_or("null")).unwrap()
    };
    assert_eq!(
        (
            console["metadata"]["namespace"].as_str(),
            console["metadata"]["labels"]["console.openshift.io/dashboard"].as_str(),
            parse(&console["data"]["mirrorgate.json"]),
            operator["kind"].as_str(),
            parse(&operator["spec"]["json"]),
        ),
        (
            Some("openshift-config-managed"),
            Some("true"),
            dashboard.clone(),
            Some("GrafanaDashboard"),
            dashboard,
        )
    );
}

/// The metric names README and the manual mention, each `mirrorgate_…` word.
fn readme_metric_names() -> BTreeSet<String> {
    let readme = docs();
    let mut names = BTreeSet::new();
    for (start, _) in readme.match_indices("mirrorgate_") {
        let name: String = readme[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn every_metric_readme_names_exists_on_metrics() {
    let registry = Registry::start();
    let proxy = Mirrorgate::start(&rules(), &[(SOURCE, &registry.endpoint())], "");
    // Families with labels show once they have a series: one upstream attempt makes those of
    // the upstream requests.
    let missing = sha256_digest(b"not anywhere");
    let asked = proxy.get(&format!("/v2/{SOURCE}/elsewhere/manifests/{missing}"), &[]);
    assert_eq!(asked.status, 404);
    let text = proxy.get("/metrics", &[]).text();
    // Families are listed with their HELP and TYPE even before a first sample.
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or_default());
            exported.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    let names = readme_metric_names();
    let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
    assert_eq!(
        (names.len() > 25, missing),
        (true, vec![]),
        "README or the manual names metrics /metrics does not export:\n{text}"
    );
}

#[test]
fn a_tag_pull_that_fetches_its_manifest_counts_a_manifest_miss() {
    let mirror = Registry::start();
    let image = single_arch("tag-miss", &[1000]);
    push(&image, &format!("{}/ns/app:v1", mirror.addr()));
    let rules = format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: tags\nspec:\n  imageTagMirrors:\n  - source: {SOURCE}/ns\n    mirrors:\n    - {MIRROR}/ns\n    mirrorSourcePolicy: NeverContactSource\n"
    );
    let proxy = Mirrorgate::start(&rules, &[(MIRROR, &mirror.endpoint())], "");
    let tag = format!("/v2/{SOURCE}/ns/app/manifests/v1");
    let statuses = [proxy.get(&tag, &[]).status, proxy.get(&tag, &[]).status];
    let counter = |name: &str| metric(&proxy.addr(), name);
    assert_eq!(
        (
            statuses,
            counter("mirrorgate_cache_manifest_misses_total"),
            counter("mirrorgate_cache_tag_hits_total"),
            counter("mirrorgate_cache_manifest_hits_total"),
        ),
        ([200, 200], 1.0, 1.0, 0.0)
    );
}
