//! Loading and validating rule objects: every refusal names the file, the document, the object
//! and the field; accepted oddities become warnings; files and directories load in sorted order.

use std::fs;
use std::path::{Path, PathBuf};

use mirrorgate::reference::Reference;
use mirrorgate::rules::{self, ResolveError, RuleSet};

fn load(yaml: &str) -> RuleSet {
    rules::load_str(yaml, "rules/test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn error(yaml: &str) -> String {
    match rules::load_str(yaml, "rules/test.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn idms(name: &str, entries: &str) -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: {name}\nspec:\n  imageDigestMirrors:\n{entries}"
    )
}

fn itms(name: &str, entries: &str) -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: {name}\nspec:\n  imageTagMirrors:\n{entries}"
    )
}

fn icsp(name: &str, entries: &str) -> String {
    format!(
        "apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicy\nmetadata:\n  name: {name}\nspec:\n  repositoryDigestMirrors:\n{entries}"
    )
}

const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn sources(rule_set: &RuleSet, image: &str) -> Vec<String> {
    sources_shown(rule_set, image, |s| format!("{} {}", s.role, s.reference))
}

/// Each pull source of `image`, as `show` writes it.
fn sources_shown(
    rule_set: &RuleSet,
    image: &str,
    show: impl Fn(&rules::PullSource) -> String,
) -> Vec<String> {
    let reference = Reference::parse_normalized(image).unwrap();
    rule_set
        .resolve(&reference)
        .unwrap()
        .sources
        .iter()
        .map(show)
        .collect()
}

// ---- validation: each refusal, with its message ----

#[test]
fn invalid_mirror_names_file_document_object_and_field() {
    let yaml = format!(
        "{}---\n{}",
        idms(
            "other",
            "  - source: example.com\n    mirrors: [m.example.com]\n"
        ),
        idms(
            "quay-mirror",
            "  - source: quay.io\n    mirrors:\n    - mirror.example.com/quay\n    - Mirror.Example.com//x\n"
        )
    );
    assert!(
        rules::load_str(&yaml, "rules/idms.yaml")
            .unwrap_err()
            .to_string()
            .starts_with(
                "rules/idms.yaml: document 2 (ImageDigestMirrorSet/quay-mirror): spec.imageDigestMirrors[0].mirrors[1]: invalid mirror \"Mirror.Example.com//x\""
            )
    );
}

#[test]
fn source_with_a_tag_is_refused() {
    assert!(
        error(&idms("x", "  - source: quay.io/ns/app:v1\n    mirrors: [m.example.com]\n"))
            .contains("spec.imageDigestMirrors[0].source: invalid source \"quay.io/ns/app:v1\": a scope cannot carry a tag or a digest")
    );
}

#[test]
fn wildcard_mirror_is_refused() {
    assert!(
        error(&idms(
            "x",
            "  - source: quay.io\n    mirrors: [\"*.example.com\"]\n"
        ))
        .contains("mirrors[0]: invalid mirror \"*.example.com\": a wildcard is only allowed")
    );
}

#[test]
fn wildcard_with_a_path_is_refused() {
    assert!(
        error(&idms(
            "x",
            "  - source: \"*.example.com/ns\"\n    mirrors: [m.example.com]\n"
        ))
        .contains("source: invalid source \"*.example.com/ns\"")
    );
}

#[test]
fn wildcard_inside_a_path_is_refused() {
    assert!(
        error(&idms(
            "x",
            "  - source: quay.io/*\n    mirrors: [m.example.com]\n"
        ))
        .contains("invalid source \"quay.io/*\"")
    );
}

#[test]
fn upper_case_path_is_refused() {
    assert!(
        error(&idms(
            "x",
            "  - source: quay.io/NS\n    mirrors: [m.example.com]\n"
        ))
        .contains("invalid repository path component \"NS\"")
    );
}

#[test]
fn unknown_policy_is_refused_with_the_enum() {
    assert!(
        error(&idms("x", "  - source: quay.io\n    mirrors: [m.example.com]\n    mirrorSourcePolicy: Never\n"))
            .contains("spec.imageDigestMirrors[0].mirrorSourcePolicy: unsupported value \"Never\": supported values: \"NeverContactSource\", \"AllowContactingSource\"")
    );
}

#[test]
fn empty_policy_is_refused() {
    assert!(
        error(&idms(
            "x",
            "  - source: quay.io\n    mirrors: [m.example.com]\n    mirrorSourcePolicy: \"\"\n"
        ))
        .contains("unsupported value \"\"")
    );
}

#[test]
fn duplicate_mirror_in_an_idms_is_refused() {
    assert!(
        error(&idms(
            "x",
            "  - source: quay.io\n    mirrors: [m.example.com, n.example.com, m.example.com]\n"
        ))
        .contains("spec.imageDigestMirrors[0].mirrors[2]: duplicate mirror \"m.example.com\"")
    );
}

#[test]
fn duplicate_mirror_in_an_itms_is_refused() {
    assert!(
        error(&itms(
            "x",
            "  - source: quay.io\n    mirrors: [m.example.com, m.example.com]\n"
        ))
        .contains("duplicate mirror")
    );
}

#[test]
fn duplicate_mirror_in_an_icsp_is_accepted() {
    let rule_set = load(&icsp(
        "x",
        "  - source: quay.io\n    mirrors: [m.example.com, m.example.com]\n",
    ));
    assert_eq!(
        sources(&rule_set, &format!("quay.io/a@{DIGEST}")),
        [
            format!("mirror m.example.com/a@{DIGEST}"),
            format!("source quay.io/a@{DIGEST}")
        ]
    );
}

#[test]
fn conflicting_policies_across_kinds_are_refused_naming_both_objects() {
    let yaml = format!(
        "{}---\n{}",
        idms(
            "digest",
            "  - source: quay.io/ns\n    mirrors: [m.example.com/ns]\n"
        ),
        itms(
            "tag",
            "  - source: quay.io/ns\n    mirrors: [t.example.com/ns]\n    mirrorSourcePolicy: NeverContactSource\n"
        )
    );
    assert_eq!(
        error(&yaml),
        "rules/test.yaml: document 2 (ImageTagMirrorSet/tag): spec.imageTagMirrors[0].mirrorSourcePolicy: conflicting mirrorSourcePolicy is set for the same source \"quay.io/ns\" in imagedigestmirrorsets, imagetagmirrorsets, or imagecontentsourcepolicies (NeverContactSource here, AllowContactingSource at rules/test.yaml: document 1 (ImageDigestMirrorSet/digest): spec.imageDigestMirrors[0])"
    );
}

#[test]
fn conflicting_policy_counts_entries_without_mirrors() {
    let yaml = format!(
        "{}---\n{}",
        idms(
            "a",
            "  - source: quay.io/ns\n    mirrors: [m.example.com/ns]\n"
        ),
        idms(
            "b",
            "  - source: quay.io/ns\n    mirrorSourcePolicy: NeverContactSource\n"
        )
    );
    assert!(error(&yaml).contains("conflicting mirrorSourcePolicy"));
}

#[test]
fn parent_and_child_scopes_may_have_different_policies() {
    let yaml = format!(
        "{}---\n{}",
        idms("a", "  - source: quay.io\n    mirrors: [m.example.com]\n"),
        idms(
            "b",
            "  - source: quay.io/ns\n    mirrors: [m.example.com/ns]\n    mirrorSourcePolicy: NeverContactSource\n"
        )
    );
    assert_eq!(load(&yaml).summary().blocked_scopes, ["quay.io/ns"]);
}

#[test]
fn never_contact_source_with_the_source_as_a_mirror_is_refused() {
    assert!(
        error(&idms("x", "  - source: quay.io/ns\n    mirrors: [m.example.com, quay.io/ns]\n    mirrorSourcePolicy: NeverContactSource\n"))
            .contains("spec.imageDigestMirrors[0].mirrorSourcePolicy: cannot set mirrorSourcePolicy: NeverContactSource if the source \"quay.io/ns\" is one of the mirrors")
    );
}

#[test]
fn missing_source_is_refused() {
    assert!(
        error(&idms("x", "  - mirrors: [m.example.com]\n"))
            .contains("spec.imageDigestMirrors[0].source: required field is missing")
    );
}

#[test]
fn mirrors_that_are_not_a_list_are_refused() {
    assert!(
        error(&idms(
            "x",
            "  - source: quay.io\n    mirrors: m.example.com\n"
        ))
        .contains("spec.imageDigestMirrors[0].mirrors: expected a list, found a string")
    );
}

#[test]
fn missing_spec_is_refused() {
    assert!(
        error(
            "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\n"
        )
        .contains("document 1 (ImageDigestMirrorSet/x): spec: required field is missing")
    );
}

#[test]
fn unknown_kind_is_refused() {
    assert!(
        error("apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n")
            .contains("document 1: kind: unsupported kind \"Secret\"")
    );
}

#[test]
fn missing_kind_is_refused() {
    assert!(
        error("apiVersion: v1\nmetadata:\n  name: x\n").contains("kind: required field is missing")
    );
}

#[test]
fn wrong_api_version_is_refused() {
    assert!(
        error(&idms("x", "  - source: quay.io\n    mirrors: [m.example.com]\n").replace("config.openshift.io/v1", "operator.openshift.io/v1alpha1"))
            .contains("apiVersion: unsupported apiVersion \"operator.openshift.io/v1alpha1\" for ImageDigestMirrorSet: expected \"config.openshift.io/v1\"")
    );
}

#[test]
fn a_document_that_is_not_an_object_is_refused() {
    assert!(error("just a string\n").contains("document 1: expected an object, found a string"));
}

#[test]
fn unquoted_wildcard_is_a_yaml_error_naming_the_file() {
    assert!(
        error(&idms(
            "x",
            "  - source: *.example.com\n    mirrors: [m.example.com]\n"
        ))
        .starts_with("rules/test.yaml: invalid YAML")
    );
}

#[test]
fn unknown_entry_field_is_a_warning() {
    let rule_set = load(&idms(
        "x",
        "  - source: quay.io\n    mirrors: [m.example.com]\n    mirrorsourcepolicy: NeverContactSource\n",
    ));
    assert_eq!(
        rule_set.warnings()[0].to_string(),
        "rules/test.yaml: document 1 (ImageDigestMirrorSet/x): spec.imageDigestMirrors[0].mirrorsourcepolicy: unknown field; ignored (the API server would prune it) (did you mean \"mirrorSourcePolicy\"?)"
    );
}

#[test]
fn misspelt_mirror_list_is_a_warning_with_the_likely_name() {
    let yaml = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirors:\n  - source: quay.io\n    mirrors: [m.example.com]\n";
    assert_eq!(
        load(yaml)
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "rules/test.yaml: document 1 (ImageDigestMirrorSet/x): spec.imageDigestMirors: unknown field; ignored (the API server would prune it) (did you mean \"imageDigestMirrors\"?)"
        ]
    );
}

#[test]
fn unknown_fields_at_the_top_and_in_metadata_are_warnings() {
    let yaml = "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: x\n  lables: {a: b}\nspecs: {}\nspec:\n  imageTagMirrors: []\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  itms.yaml: \"\"\nbinaryData: {}\ndatta: {}\n";
    let fields: Vec<String> = load(yaml)
        .warnings()
        .iter()
        .map(|w| w.at.rsplit(": ").next().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["specs", "metadata.lables", "datta", "data"]);
}

#[test]
fn icsp_has_no_policy_field() {
    let rule_set = load(&icsp(
        "x",
        "  - source: quay.io\n    mirrors: [m.example.com]\n    mirrorSourcePolicy: NeverContactSource\n",
    ));
    assert_eq!(
        (
            rule_set.summary().blocked_scopes.is_empty(),
            rule_set.warnings().len()
        ),
        (true, 1)
    );
}

// ---- containers: Lists, ConfigMaps, HostedClusters ----

#[test]
fn error_inside_a_list_names_the_item() {
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: config.openshift.io/v1\n  kind: ImageDigestMirrorSet\n  metadata:\n    name: one\n  spec:\n    imageDigestMirrors:\n    - source: quay.io\n      mirrors: [\"bad mirror\"]\n";
    assert!(error(yaml).starts_with(
        "rules/test.yaml: document 1 (List) items[0] (ImageDigestMirrorSet/one): spec.imageDigestMirrors[0].mirrors[0]: invalid mirror \"bad mirror\""
    ));
}

#[test]
fn typed_list_items_may_omit_kind() {
    let yaml = "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSetList\nitems:\n- metadata:\n    name: one\n  spec:\n    imageTagMirrors:\n    - source: quay.io\n      mirrors: [m.example.com]\n";
    assert_eq!(
        sources(&load(yaml), "quay.io/a:v1"),
        ["mirror m.example.com/a:v1", "source quay.io/a:v1"]
    );
}

#[test]
fn config_map_idms_key_must_hold_an_idms() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  idms.yaml: |\n    apiVersion: config.openshift.io/v1\n    kind: ImageTagMirrorSet\n    spec: {}\n";
    assert!(error(yaml).contains(
        "document 1 (ConfigMap/cm) data.idms.yaml: kind: key idms.yaml must hold an ImageDigestMirrorSet, found kind \"ImageTagMirrorSet\""
    ));
}

#[test]
fn config_map_key_without_kind_takes_the_keys_kind() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  itms.yaml: |\n    spec:\n      imageTagMirrors:\n      - source: quay.io\n        mirrors: [m.example.com]\n";
    assert_eq!(
        sources(&load(yaml), "quay.io/a:v1"),
        ["mirror m.example.com/a:v1", "source quay.io/a:v1"]
    );
}

#[test]
fn config_map_with_invalid_embedded_yaml_names_the_key() {
    let yaml =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  idms.yaml: \"a: [\"\n";
    assert!(error(yaml).contains("document 1 (ConfigMap/cm): data.idms.yaml: invalid YAML"));
}

#[test]
fn config_map_without_mirror_keys_is_a_warning() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  other: x\n";
    assert_eq!(load(yaml).warnings().len(), 1);
}

#[test]
fn nodepool_config_skips_unknown_kinds_with_a_warning() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: np\ndata:\n  config: |\n    apiVersion: v1\n    kind: Secret\n    metadata:\n      name: s\n    ---\n    apiVersion: config.openshift.io/v1\n    kind: ImageDigestMirrorSet\n    metadata:\n      name: d\n    spec:\n      imageDigestMirrors:\n      - source: quay.io\n        mirrors: [m.example.com]\n";
    let rule_set = load(yaml);
    assert_eq!(
        (
            rule_set.warnings()[0].to_string().contains(
                "data.config document 1 (Secret/s): unsupported NodePool config kind \"Secret\""
            ),
            rule_set.rules().len()
        ),
        (true, 1)
    );
}

#[test]
fn nodepool_config_itms_is_applied_to_tag_pulls() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: np\ndata:\n  config: |\n    apiVersion: config.openshift.io/v1\n    kind: ImageTagMirrorSet\n    metadata:\n      name: t\n    spec:\n      imageTagMirrors:\n      - source: quay.io\n        mirrors: [m.example.com]\n";
    let rule_set = load(yaml);
    assert_eq!(
        (
            sources(&rule_set, "quay.io/ns/a:v1"),
            sources(&rule_set, &format!("quay.io/ns/a@{DIGEST}")),
            rule_set.warnings().len(),
        ),
        (
            vec![
                "mirror m.example.com/ns/a:v1".to_owned(),
                "source quay.io/ns/a:v1".to_owned()
            ],
            vec![format!("source quay.io/ns/a@{DIGEST}")],
            0
        )
    );
}

const NODE_POOL: &str = "apiVersion: hypershift.openshift.io/v1beta1\nkind: NodePool\nmetadata:\n  name: workers\n  namespace: clusters\nspec:\n  replicas: 2\n  config:\n  - name: np-mirrors\n";

#[test]
fn nodepool_naming_a_configmap_that_is_not_loaded_is_a_warning_naming_both() {
    let rule_set = load(NODE_POOL);
    let summary = rule_set.summary();
    assert_eq!(
        (
            rule_set
                .warnings()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            summary.config_map_uses[0].missing.clone(),
        ),
        (
            vec!["rules/test.yaml: document 1 (NodePool/workers): spec.config[0]: NodePool clusters/workers names ConfigMap \"clusters/np-mirrors\", which no rule file holds; its mirrors apply once it is loaded".to_owned()],
            vec!["clusters/np-mirrors".to_owned()],
        )
    );
}

#[test]
fn nodepool_configmap_in_another_namespace_is_not_the_one_named() {
    let yaml = format!(
        "{NODE_POOL}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: np-mirrors\n  namespace: other\ndata:\n  config: \"\"\n"
    );
    let summary = load(&yaml).summary();
    assert_eq!(
        (
            summary.config_map_uses[0].applied.len(),
            summary.config_map_uses[0].missing.len()
        ),
        (0, 1)
    );
}

#[test]
fn nodepool_config_entry_without_a_name_is_refused() {
    let yaml = "apiVersion: hypershift.openshift.io/v1beta1\nkind: NodePool\nmetadata:\n  name: workers\nspec:\n  config:\n  - {}\n";
    assert_eq!(
        error(yaml),
        "rules/test.yaml: document 1 (NodePool/workers): spec.config[0].name: required field is missing"
    );
}

#[test]
fn hosted_cluster_image_mirror_config_alias_names_the_configmap_too() {
    let yaml = "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\nmetadata:\n  name: hc\n  namespace: clusters\nspec:\n  imageMirrorConfig:\n    name: mirrors\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mirrors\n  namespace: clusters\ndata:\n  itms.yaml: |\n    kind: ImageTagMirrorSet\n    spec:\n      imageTagMirrors:\n      - source: quay.io\n        mirrors: [m.example.com]\n";
    let rule_set = load(yaml);
    let summary = rule_set.summary();
    assert_eq!(
        (
            summary.config_map_uses[0].kind,
            summary.config_map_uses[0].object.as_str(),
            summary.config_map_uses[0].applied.clone(),
            summary.warnings.len(),
            sources(&rule_set, "quay.io/ns/a:v1").len(),
        ),
        (
            "HostedCluster",
            "clusters/hc",
            vec!["clusters/mirrors (rules/test.yaml: document 2 (ConfigMap/mirrors))".to_owned()],
            0,
            2,
        )
    );
}

#[test]
fn hosted_cluster_naming_a_missing_configmap_is_a_warning_naming_both() {
    let yaml = "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\nmetadata:\n  name: hc\n  namespace: clusters\nspec:\n  imageMirrorConfigRef:\n    name: mirrors\n";
    assert_eq!(
        load(yaml).warnings()[0].to_string(),
        "rules/test.yaml: document 1 (HostedCluster/hc): spec.imageMirrorConfigRef: HostedCluster clusters/hc names ConfigMap \"clusters/mirrors\", which no rule file holds; its mirrors apply once it is loaded"
    );
}

#[test]
fn hosted_cluster_configmap_without_mirror_keys_is_a_warning() {
    let yaml = "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\nmetadata:\n  name: hc\nspec:\n  imageMirrorConfigRef:\n    name: np\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: np\ndata:\n  config: \"\"\n";
    let warnings: Vec<String> = load(yaml)
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("ConfigMap \"np\" (rules/test.yaml: document 2 (ConfigMap/np)) has no idms.yaml or itms.yaml key")),
        "{warnings:?}"
    );
}

#[test]
fn nodepool_config_still_refuses_invalid_mirror_objects() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: np\ndata:\n  config: |\n    apiVersion: config.openshift.io/v1\n    kind: ImageDigestMirrorSet\n    metadata:\n      name: d\n    spec:\n      imageDigestMirrors:\n      - source: quay.io\n        mirrors: [\"UPPER.example.com/NS\"]\n";
    assert!(error(yaml).contains(
        "document 1 (ConfigMap/np) data.config document 1 (ImageDigestMirrorSet/d): spec.imageDigestMirrors[0].mirrors[0]: invalid mirror"
    ));
}

#[test]
fn hosted_cluster_sources_are_digest_rules() {
    let yaml = "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\nmetadata:\n  name: hc\nspec:\n  imageContentSources:\n  - source: quay.io/ns\n    mirrors: [m.example.com/ns]\n";
    assert_eq!(
        sources(&load(yaml), "quay.io/ns/a:v1"),
        ["source quay.io/ns/a:v1"]
    );
}

#[test]
fn hosted_cluster_duplicate_mirrors_are_refused() {
    let yaml = "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\nmetadata:\n  name: hc\nspec:\n  imageContentSources:\n  - source: quay.io/ns\n    mirrors: [m.example.com/ns, m.example.com/ns]\n";
    assert!(
        error(yaml).contains(
            "(HostedCluster/hc): spec.imageContentSources[0].mirrors[1]: duplicate mirror"
        )
    );
}

#[test]
fn hosted_cluster_with_more_than_255_sources_is_refused() {
    let entries: String = (0..256)
        .map(|i| format!("  - source: quay.io/ns{i}\n    mirrors: [m.example.com/ns{i}]\n"))
        .collect();
    let yaml = format!(
        "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster\nmetadata:\n  name: hc\nspec:\n  imageContentSources:\n{entries}"
    );
    assert!(error(&yaml).contains("spec.imageContentSources: must have at most 255 items"));
}

fn mirror_entry(source: &str, mirrors: std::ops::Range<usize>) -> String {
    let mirrors: Vec<String> = mirrors.map(|i| format!("m{i}.example.com/ns")).collect();
    format!(
        "  - source: {source}\n    mirrors: [{}]\n",
        mirrors.join(", ")
    )
}

#[test]
fn more_mirrors_for_one_scope_than_a_pull_tries_are_refused_naming_the_entry() {
    let max = rules::MAX_MIRRORS_PER_SCOPE;
    let at_the_limit = idms("many", &mirror_entry("quay.io/ns", 0..max));
    let one_entry = idms("many", &mirror_entry("quay.io/ns", 0..max + 1));
    // Merged from two objects, each under the limit.
    let two_objects = format!(
        "{}---\n{}",
        idms("first-half", &mirror_entry("quay.io/ns", 0..max / 2 + 1)),
        idms(
            "second-half",
            &mirror_entry("quay.io/ns", max / 2 + 1..max + 1)
        ),
    );
    let tag_mirrors = itms("tags", &mirror_entry("quay.io/ns", 0..max + 1));
    assert_eq!(
        (
            sources(&load(&at_the_limit), &format!("quay.io/ns/app@{DIGEST}")).len(),
            error(&one_entry),
            error(&two_objects),
            error(&tag_mirrors),
        ),
        (
            max + 1,
            format!(
                "rules/test.yaml: document 1 (ImageDigestMirrorSet/many): spec.imageDigestMirrors[0].mirrors: scope \"quay.io/ns\" has {} digest mirrors, more than the {max} a pull may try (each is an upstream request of a pull they all fail); entries merged: 1, this one the last",
                max + 1
            ),
            format!(
                "rules/test.yaml: document 2 (ImageDigestMirrorSet/second-half): spec.imageDigestMirrors[0].mirrors: scope \"quay.io/ns\" has {} digest mirrors, more than the {max} a pull may try (each is an upstream request of a pull they all fail); entries merged: 2, this one the last",
                max + 1
            ),
            format!(
                "rules/test.yaml: document 1 (ImageTagMirrorSet/tags): spec.imageTagMirrors[0].mirrors: scope \"quay.io/ns\" has {} tag mirrors, more than the {max} a pull may try (each is an upstream request of a pull they all fail); entries merged: 1, this one the last",
                max + 1
            ),
        )
    );
}

// ---- resolve: explanations ----

#[test]
fn blocked_pull_names_the_scope_and_the_object() {
    let rule_set = load(&idms(
        "no-source",
        "  - source: quay.io/ns\n    mirrors: [m.example.com/ns]\n    mirrorSourcePolicy: NeverContactSource\n",
    ));
    let reference = Reference::parse_normalized("quay.io/ns/app:v1").unwrap();
    let error = rule_set.resolve(&reference).unwrap_err();
    assert_eq!(
        error.to_string(),
        "quay.io/ns/app:v1 is blocked: scope \"quay.io/ns\" never contacts its source (mirrorSourcePolicy: NeverContactSource, set by rules/test.yaml: document 1 (ImageDigestMirrorSet/no-source): spec.imageDigestMirrors[0]) and no usable mirror serves tag references"
    );
}

#[test]
fn mirror_inside_another_blocked_scope_is_dropped() {
    let yaml = format!(
        "{}---\n{}",
        idms(
            "a",
            "  - source: quay.io/ns\n    mirrors: [internal.example.com/quay, m.example.com/quay]\n"
        ),
        idms(
            "b",
            "  - source: internal.example.com\n    mirrors: [backup.example.com]\n    mirrorSourcePolicy: NeverContactSource\n"
        )
    );
    assert_eq!(
        sources(&load(&yaml), &format!("quay.io/ns/app@{DIGEST}")),
        [
            format!("mirror m.example.com/quay/app@{DIGEST}"),
            format!("source quay.io/ns/app@{DIGEST}")
        ]
    );
}

#[test]
fn wildcard_rewrite_that_moves_a_port_into_the_path_fails_the_pull() {
    let rule_set = load(&idms(
        "w",
        "  - source: \"*.example.com\"\n    mirrors: [mirror.local/ex]\n",
    ));
    let reference =
        Reference::parse_normalized(&format!("a.example.com:5000/ns/x@{DIGEST}")).unwrap();
    assert!(matches!(
        rule_set.resolve(&reference),
        Err(ResolveError::RewriteFailed { attempted, .. }) if attempted == format!("mirror.local/ex:5000/ns/x@{DIGEST}")
    ));
}

#[test]
fn host_scope_matches_the_host_on_any_port_and_carries_the_port() {
    let rule_set = load(&idms(
        "h",
        "  - source: example.com\n    mirrors: [mirror.local]\n",
    ));
    assert_eq!(
        sources(&rule_set, &format!("example.com:5000/ns/x@{DIGEST}"))[0],
        format!("mirror mirror.local:5000/ns/x@{DIGEST}")
    );
}

#[test]
fn longest_scope_wins_whatever_the_object_order() {
    let parent = idms("p", "  - source: quay.io\n    mirrors: [p.example.com]\n");
    let child = idms(
        "c",
        "  - source: quay.io/ns\n    mirrors: [c.example.com]\n",
    );
    let forward = load(&format!("{parent}---\n{child}"));
    let backward = load(&format!("{child}---\n{parent}"));
    let image = format!("quay.io/ns/app@{DIGEST}");
    assert_eq!(sources(&forward, &image), sources(&backward, &image));
}

// ---- files and directories ----

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn directory_files_load_in_sorted_order_skipping_hidden_and_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let rule = idms("x", "  - source: quay.io\n    mirrors: [m.example.com]\n");
    write(dir.path(), "b.yaml", &rule);
    write(dir.path(), "a.yml", &rule.replace("quay.io", "a.io"));
    write(
        dir.path(),
        "c/d.json",
        r#"{"apiVersion":"config.openshift.io/v1","kind":"ImageTagMirrorSet","metadata":{"name":"j"},"spec":{"imageTagMirrors":[{"source":"j.io","mirrors":["m.example.com"]}]}}"#,
    );
    write(dir.path(), ".hidden.yaml", "not: [valid");
    write(dir.path(), "README.md", "# notes");
    let rule_set = rules::load(&[dir.path().to_path_buf()]).unwrap();
    let names: Vec<_> = rule_set
        .summary()
        .files
        .iter()
        .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["a.yml", "b.yaml", "c/d.json"]);
}

#[test]
fn a_broken_file_in_a_directory_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &idms("x", "  - source: quay.io\n    mirrors: [m.example.com]\n"),
    );
    let broken = write(dir.path(), "b.yaml", "kind: [unclosed\n");
    let error = rules::load(&[dir.path().to_path_buf()])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("{}: invalid YAML", broken.display())),
        "{error}"
    );
}

#[test]
fn a_missing_path_names_itself() {
    let error = rules::load(&[PathBuf::from("/nonexistent/rules")])
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("/nonexistent/rules: "), "{error}");
}

#[test]
fn config_map_volume_layout_is_read_once_through_its_symlinks() {
    // A ConfigMap volume: ..2026_11_24/idms.yaml, ..data -> ..2026_11_24, idms.yaml -> ..data/idms.yaml
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "..2026_11_24/idms.yaml",
        &idms("x", "  - source: quay.io\n    mirrors: [m.example.com]\n"),
    );
    std::os::unix::fs::symlink("..2026_11_24", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/idms.yaml", dir.path().join("idms.yaml")).unwrap();
    let rule_set = rules::load(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(rule_set.summary().files, [dir.path().join("idms.yaml")]);
}

#[test]
fn a_json_file_holds_objects_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "rules.json",
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"config.openshift.io/v1","kind":"ImageDigestMirrorSet","metadata":{"name":"j"},"spec":{"imageDigestMirrors":[{"source":"quay.io","mirrors":["m.example.com"]}]}}]}"#,
    );
    assert_eq!(rules::load(&[file]).unwrap().rules().len(), 1);
}

#[test]
fn a_rule_set_is_shared_read_only_across_threads() {
    let rule_set = std::sync::Arc::new(load(&idms(
        "x",
        "  - source: quay.io\n    mirrors: [m.example.com]\n",
    )));
    let image = format!("quay.io/a@{DIGEST}");
    let answers: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let rule_set = rule_set.clone();
                let image = image.clone();
                s.spawn(move || sources(&rule_set, &image))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn mirror_whose_rewrite_falls_into_a_deeper_blocked_scope_is_dropped() {
    let yaml = format!(
        "{}---\n{}",
        idms(
            "a",
            "  - source: quay.io\n    mirrors: [internal.example.com, m.example.com]\n"
        ),
        idms(
            "b",
            "  - source: internal.example.com/ns\n    mirrors: [backup.example.com/ns]\n    mirrorSourcePolicy: NeverContactSource\n"
        )
    );
    let rule_set = load(&yaml);
    assert_eq!(
        sources(&rule_set, &format!("quay.io/ns/app@{DIGEST}")),
        [
            format!("mirror m.example.com/ns/app@{DIGEST}"),
            format!("source quay.io/ns/app@{DIGEST}")
        ]
    );
}

#[test]
fn mirror_on_a_host_under_a_blocked_wildcard_is_dropped() {
    let yaml = format!(
        "{}---\n{}",
        idms(
            "a",
            "  - source: quay.io\n    mirrors: [a.internal.example.com/quay, m.example.com/quay]\n"
        ),
        idms(
            "b",
            "  - source: \"*.internal.example.com\"\n    mirrors: [backup.example.com]\n    mirrorSourcePolicy: NeverContactSource\n"
        )
    );
    assert_eq!(
        sources(&load(&yaml), &format!("quay.io/app@{DIGEST}")),
        [
            format!("mirror m.example.com/quay/app@{DIGEST}"),
            format!("source quay.io/app@{DIGEST}")
        ]
    );
}

#[test]
fn a_cycle_broken_at_the_source_keeps_the_source_as_a_mirror_as_runtime_utils_does() {
    let yaml = format!(
        "{}---\n{}",
        idms("one", "  - source: a.io\n    mirrors: [b.io/x, c.io/x]\n"),
        idms("two", "  - source: a.io\n    mirrors: [c.io/x, b.io/x]\n")
    );
    assert_eq!(
        sources(&load(&yaml), &format!("a.io/app@{DIGEST}")),
        [
            format!("mirror a.io/app@{DIGEST}"),
            format!("mirror b.io/x/app@{DIGEST}"),
            format!("mirror c.io/x/app@{DIGEST}"),
            format!("source a.io/app@{DIGEST}")
        ]
    );
}

// ---- origins: which object each pull source comes from ----

/// `role reference (origin)` for each pull source of `image`.
fn sources_with_origins(rule_set: &RuleSet, image: &str) -> Vec<String> {
    sources_shown(rule_set, image, |s| {
        let origin = s.origin.as_deref().unwrap_or("no rule");
        format!("{} {} ({origin})", s.role, s.reference)
    })
}

#[test]
fn each_merged_mirror_names_the_objects_that_list_it_and_the_source_its_rule() {
    let rule_set = load(&format!(
        "{}---\n{}---\n{}",
        idms(
            "first",
            "  - source: quay.io/ns\n    mirrors: [a.example.com/ns, shared.example.com/ns]\n"
        ),
        icsp(
            "second",
            "  - source: quay.io/ns\n    mirrors: [shared.example.com/ns, b.example.com/ns]\n"
        ),
        itms(
            "tags",
            "  - source: quay.io/ns\n    mirrors: [t.example.com/ns]\n"
        ),
    ));
    let first = "rules/test.yaml: document 1 (ImageDigestMirrorSet/first)";
    let second = "rules/test.yaml: document 2 (ImageContentSourcePolicy/second)";
    let tags = "rules/test.yaml: document 3 (ImageTagMirrorSet/tags)";
    assert_eq!(
        (
            sources_with_origins(&rule_set, &format!("quay.io/ns/app@{DIGEST}")),
            sources_with_origins(&rule_set, "quay.io/ns/app:v1"),
            sources_with_origins(&rule_set, "quay.io/other/app:v1"),
        ),
        (
            vec![
                format!("mirror a.example.com/ns/app@{DIGEST} ({first})"),
                format!("mirror shared.example.com/ns/app@{DIGEST} ({first}; {second})"),
                format!("mirror b.example.com/ns/app@{DIGEST} ({second})"),
                format!("source quay.io/ns/app@{DIGEST} ({first}; {second})"),
            ],
            vec![
                format!("mirror t.example.com/ns/app:v1 ({tags})"),
                format!("source quay.io/ns/app:v1 ({tags})"),
            ],
            vec!["source quay.io/other/app:v1 (no rule)".to_owned()],
        )
    );
}
