//! What a newcomer meets in the first hour: the command line says what went wrong and what to do,
//! `resolve` answers what `serve` does, and `serve` says how to pull through it.

use crate::support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use support::{Mirrorgate, READY_TIMEOUT, Registry, free_port, push, single_arch, wait_until};

fn mirrorgate_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mirrorgate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const RULES: &str = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.internal/ns]\n";

#[test]
fn check_outside_the_repository_says_no_configuration_was_found_and_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let output = mirrorgate_in(dir.path(), &["check"]);
    let stderr = text(&output.stderr);
    assert_eq!(
        (
            output.status.success(),
            stderr.contains("no configuration file found (config/mirrorgate.yaml does not exist in"),
            stderr.contains("the built-in defaults were used, and their rules path config/rules does not exist either: pass --config FILE"),
            stderr.contains("--rules PATH"),
        ),
        (false, true, true, true),
        "{stderr}"
    );
}

#[test]
fn resolve_refuses_what_serve_refuses_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let output = mirrorgate_in(
        dir.path(),
        &["resolve", "--rules", "rules.yaml", "ghcr.io/foo/bar:v1"],
    );
    let stderr = text(&output.stderr);
    assert_eq!(
        (
            output.status.success(),
            text(&output.stdout),
            stderr.lines().collect::<Vec<_>>()
        ),
        (
            false,
            String::new(),
            vec![
                "not contacted: source ghcr.io/foo/bar:v1 (mirrorgate does not contact ghcr.io: it is not named by the rules, `registries` or `default_registry`)",
                "error: mirrorgate does not contact ghcr.io: it is not named by the rules, `registries` or `default_registry`; serve refuses this pull with 403 DENIED. Name it under `registries` in the configuration, or in a rule",
            ]
        )
    );
}

#[test]
fn resolve_of_a_registry_named_in_the_configuration_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    fs::write(
        dir.path().join("mirrorgate.yaml"),
        "rules: [rules.yaml]\nregistries:\n  ghcr.io: {}\n",
    )
    .unwrap();
    let output = mirrorgate_in(
        dir.path(),
        &[
            "resolve",
            "--config",
            "mirrorgate.yaml",
            "ghcr.io/foo/bar:v1",
        ],
    );
    assert_eq!(
        (output.status.success(), text(&output.stdout)),
        (true, "source ghcr.io/foo/bar:v1\n".to_owned()),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn resolve_and_serve_put_a_bare_name_in_the_configured_default_registry() {
    let quay = Registry::start();
    let image = single_arch("bare-name", &[300]);
    push(&image, &format!("{}/conformance/repo1:x", quay.addr()));
    let proxy = Mirrorgate::start(
        "",
        &[("quay.io", &quay.endpoint())],
        "default_registry: quay.io\n",
    );
    let served = proxy.get(
        "/v2/conformance/repo1/manifests/x",
        &[("Accept", support::OCI_MANIFEST_MEDIA_TYPE)],
    );
    let config = proxy.config_path();
    let config = config.to_str().unwrap();
    let resolved = mirrorgate_in(
        proxy.dir(),
        &["resolve", "--config", config, "conformance/repo1:x"],
    );
    let official = mirrorgate_in(proxy.dir(), &["resolve", "--config", config, "busybox"]);
    assert_eq!(
        (
            served.status,
            quay.count("GET", "/v2/conformance/repo1/manifests/x"),
            text(&resolved.stdout),
            text(&official.stdout),
        ),
        (
            200,
            1,
            "source quay.io/conformance/repo1:x\n".to_owned(),
            // Only Docker Hub's one-component names are `library/` ones.
            "source quay.io/busybox:latest\n".to_owned(),
        ),
        "{}{}",
        text(&resolved.stderr),
        text(&official.stderr)
    );
}

#[test]
fn check_warns_about_a_registries_entry_nothing_names() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    fs::write(
        dir.path().join("mirrorgate.yaml"),
        "rules: [rules.yaml]\nregistries:\n  mirror.internal: {endpoint: \"http://127.0.0.1:1\", insecure: true}\n  mirror.internl: {endpoint: \"http://127.0.0.1:1\", insecure: true}\n",
    )
    .unwrap();
    let output = mirrorgate_in(dir.path(), &["check", "--config", "mirrorgate.yaml"]);
    let stdout = text(&output.stdout);
    let warnings: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("warnings:"))
        .take_while(|l| *l != "ok")
        .collect();
    assert_eq!(
        (output.status.success(), warnings),
        (
            true,
            vec![
                "warnings: 1",
                "  mirrorgate.yaml: registries.mirror.internl: no rule source or mirror and not default_registry names this registry; only clients naming it directly reach it (a typo?)",
            ]
        ),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_url_as_a_source_says_to_write_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("rules.yaml"),
        RULES.replace("source: quay.io/ns", "source: https://quay.io/ns/"),
    )
    .unwrap();
    let output = mirrorgate_in(dir.path(), &["check", "--rules", "rules.yaml"]);
    assert_eq!(
        text(&output.stderr),
        "error: the rule set is invalid: rules.yaml: document 1 (ImageDigestMirrorSet/x): spec.imageDigestMirrors[0].source: invalid source \"https://quay.io/ns/\": sources and mirrors are repositories (host[:port][/path]), not URLs: write \"quay.io/ns\" (the scheme comes from the registries settings)\n"
    );
}

#[test]
fn a_yaml_error_snippet_names_the_file_and_the_configmap_key() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("broken.yaml"),
        "kind: List\nitems: [\n  a: b: c\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  idms.yaml: |\n    a: [\n",
    )
    .unwrap();
    let broken = text(&mirrorgate_in(dir.path(), &["check", "--rules", "broken.yaml"]).stderr);
    let key = text(&mirrorgate_in(dir.path(), &["check", "--rules", "cm.yaml"]).stderr);
    assert_eq!(
        (
            broken.contains(" --> broken.yaml:3:"),
            key.contains(" --> cm.yaml document 1 (ConfigMap/cm) data.idms.yaml:1:"),
            broken.contains("<input>") || key.contains("<input>"),
        ),
        (true, true, false),
        "{broken}\n{key}"
    );
}

#[test]
fn serve_logs_how_to_pull_through_it_once() {
    let proxy = Mirrorgate::start("", &[], "");
    // Log lines are written by a background thread.
    let _ = wait_until(READY_TIMEOUT, || {
        Ok(proxy.log().contains("pull through mirrorgate as"))
    });
    let log = proxy.log();
    let hints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pull through mirrorgate as"))
        .collect();
    let addr = proxy.addr();
    assert_eq!(
        (
            hints.len(),
            hints.first().is_some_and(|h| h.contains(&format!(
                "skopeo inspect --tls-verify=false docker://{addr}/quay.io/openshift/release:4.16"
            ))),
            hints.first().is_some_and(|h| h.contains("?ns=<registry>")),
        ),
        (1, true, true),
        "{log}"
    );
}

#[test]
fn a_dead_mirror_is_one_warn_line_and_its_back_off_keeps_the_cause() {
    let source = Registry::start();
    let image = single_arch("dead-mirror", &[1000]);
    for tag in ["v1", "v2", "v3"] {
        push(&image, &format!("{}/ns/app:{tag}", source.addr()));
    }
    // Nothing listens there: connections are refused.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let rules = "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: t\nspec:\n  imageTagMirrors:\n  - source: source.test/ns\n    mirrors: [dead.test/ns]\n";
    let proxy = Mirrorgate::start(
        rules,
        &[("source.test", &source.endpoint()), ("dead.test", &dead)],
        "",
    );
    let accept = [("Accept", support::OCI_MANIFEST_MEDIA_TYPE)];
    let statuses: Vec<u16> = ["v1", "v2", "v3"]
        .iter()
        .map(|tag| {
            proxy
                .get(&format!("/v2/source.test/ns/app/manifests/{tag}"), &accept)
                .status
        })
        .collect();
    // The source lacks this one and the mirror is skipped while backing off: 502, whose message
    // keeps why the mirror was given up.
    let missing = proxy.get("/v2/source.test/ns/app/manifests/absent", &accept);
    // Log lines are written by a background thread: wait for the last one expected.
    let _ = wait_until(READY_TIMEOUT, || {
        Ok(proxy.log().contains("not served: every source failed"))
    });
    let log = proxy.log();
    let warn_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("dead.test"))
        .collect();
    assert_eq!(
        (
            statuses,
            warn_lines
                .iter()
                .filter(|l| l.contains("upstream registry failed"))
                .count(),
            warn_lines
                .iter()
                .filter(|l| l.contains("not served: every source failed"))
                .count(),
            missing.status,
            missing
                .text()
                .contains("unreachable moments ago (connection refused"),
        ),
        (vec![200, 200, 200], 1, 1, 502, true),
        "{}\n{log}",
        missing.text()
    );
}

#[test]
fn serve_warns_about_an_unused_registries_entry_at_start_and_on_reload() {
    let proxy = Mirrorgate::start(RULES, &[("mirror.internl", "http://127.0.0.1:1")], "");
    let warned = |times: usize| {
        wait_until(READY_TIMEOUT, || {
            Ok(proxy
                .log()
                .matches("registries.mirror.internl: no rule source or mirror")
                .count()
                >= times)
        })
    };
    let at_start = warned(1);
    proxy.sighup();
    let on_reload = warned(2);
    assert_eq!((at_start, on_reload), (Ok(()), Ok(())), "{}", proxy.log());
}

const MISSPELT_HOSTED_CLUSTER: &str = "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\nmetadata:\n  name: guest\n  namespace: clusters\nspec:\n  release: {image: quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64}\n  pullSecret: {name: pull-secret}\n  imageContentSource:\n  - source: quay.io/openshift-release-dev\n    mirrors: [mirror.internal/openshift-release-dev]\n";

const MISSPELT_HOSTED_CLUSTER_WARNING: &str = "hostedcluster.yaml: document 1 (HostedCluster/guest): spec.imageContentSource: unknown field; ignored (the API server would prune it) (did you mean \"imageContentSources\"?)";

#[test]
fn check_warns_about_a_misspelt_hosted_cluster_mirror_field_and_not_about_its_other_fields() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("hostedcluster.yaml"),
        MISSPELT_HOSTED_CLUSTER,
    )
    .unwrap();
    let output = mirrorgate_in(
        dir.path(),
        &["check", "--offline", "--rules", "hostedcluster.yaml"],
    );
    let stdout = text(&output.stdout);
    let warnings: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("warnings: "))
        .take_while(|l| *l != "ok")
        .map(str::to_owned)
        .collect();
    assert_eq!(
        (output.status.success(), warnings),
        (
            true,
            vec![
                "warnings: 1".to_owned(),
                format!("  {MISSPELT_HOSTED_CLUSTER_WARNING}")
            ]
        ),
        "{stdout}{}",
        text(&output.stderr)
    );
}

#[test]
fn check_strict_fails_on_a_warning_and_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("hostedcluster.yaml"),
        MISSPELT_HOSTED_CLUSTER,
    )
    .unwrap();
    fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let strict = mirrorgate_in(
        dir.path(),
        &[
            "check",
            "--offline",
            "--strict",
            "--rules",
            "hostedcluster.yaml",
        ],
    );
    let clean = mirrorgate_in(
        dir.path(),
        &["check", "--offline", "--strict", "--rules", "rules.yaml"],
    );
    let stderr = text(&strict.stderr);
    assert_eq!(
        (
            strict.status.success(),
            stderr.lines().collect::<Vec<_>>(),
            text(&strict.stdout).lines().last().map(str::to_owned),
            clean.status.success(),
        ),
        (
            false,
            vec![
                "error: --strict: 1 warning(s) are errors:",
                &format!("  {MISSPELT_HOSTED_CLUSTER_WARNING}"),
            ],
            Some(format!("  {MISSPELT_HOSTED_CLUSTER_WARNING}")),
            true,
        ),
        "{stderr}{}",
        text(&clean.stderr)
    );
}

#[test]
fn resolve_names_the_object_each_pull_source_comes_from_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let image =
        "quay.io/ns/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let text_output = mirrorgate_in(dir.path(), &["resolve", "--rules", "rules.yaml", image]);
    let json_output = mirrorgate_in(
        dir.path(),
        &["resolve", "--json", "--rules", "rules.yaml", image],
    );
    let json: serde_json::Value = serde_json::from_slice(&json_output.stdout).unwrap_or_default();
    let origin = "rules.yaml: document 1 (ImageDigestMirrorSet/x)";
    let mirrored = image.replace("quay.io/ns", "mirror.internal/ns");
    assert_eq!(
        (text(&text_output.stdout), json),
        (
            format!("mirror {mirrored}  ({origin})\nsource {image}  ({origin})\n"),
            serde_json::json!([
                {"reference": mirrored, "role": "mirror", "origin": origin},
                {"reference": image, "role": "source", "origin": origin},
            ])
        ),
        "{}",
        text(&text_output.stderr)
    );
}

/// The subcommands `mirrorgate --help` lists, and the long options `mirrorgate CMD --help` lists
/// for each (`--help` and `--version` aside).
fn commands_and_options() -> Vec<(String, Vec<String>)> {
    let help = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
            .args(args)
            .output()
            .expect("run mirrorgate --help");
        text(&output.stdout)
    };
    let top = help(&["--help"]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|command| command != "help")
        .collect();
    commands
        .into_iter()
        .map(|command| {
            let options = help(&[command.as_str(), "--help"])
                .split_whitespace()
                .filter(|word| word.starts_with("--") && word.len() > 2)
                .map(|word| {
                    word.trim_end_matches([',', '.', ')', ':'])
                        .split(['=', '['])
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
                .filter(|option| option != "--help" && option != "--version")
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            (command, options)
        })
        .collect()
}

#[test]
fn the_manual_command_table_names_every_command_and_option_help_lists() {
    let chapter =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/commands.md"))
            .expect("read docs/src/commands.md");
    let table: Vec<&str> = chapter
        .lines()
        .skip_while(|line| *line != "# Command line")
        .skip(1)
        .take_while(|line| !line.starts_with("# "))
        .filter(|line| line.starts_with("| `mirrorgate "))
        .collect();
    let missing: Vec<String> = commands_and_options()
        .into_iter()
        .flat_map(|(command, options)| {
            let row = table.iter().find(|row| {
                row.contains(&format!("`mirrorgate {command} "))
                    || row.contains(&format!("`mirrorgate {command}`"))
            });
            // `[ADMIN]` stands for the options the table spells out once, in the status row.
            let admin = table
                .iter()
                .find(|row| row.contains("`ADMIN`"))
                .copied()
                .unwrap_or_default();
            match row {
                None => vec![format!("mirrorgate {command}")],
                Some(row) => options
                    .into_iter()
                    .filter(|option| {
                        !(row.contains(option.as_str())
                            || row.contains("[ADMIN]") && admin.contains(option.as_str()))
                    })
                    .map(|option| format!("mirrorgate {command} {option}"))
                    .collect(),
            }
        })
        .collect();
    assert_eq!(missing, Vec::<String>::new(), "rows: {table:#?}");
}
