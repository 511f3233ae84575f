//! `registries-conf` renders what the Machine Config Operator writes: every example in
//! `tests/data/registries-conf-examples.md` is rendered from its objects and compared, as
//! parsed TOML, with the file shown there.

use std::path::PathBuf;
use std::process::Command;

use mirrorgate::rules;

/// One example: its title, its objects (YAML) and the rendered registries.conf (TOML).
struct Example {
    title: String,
    objects: String,
    rendered: String,
}

fn fenced_block<'a>(section: &'a str, language: &str) -> Option<&'a str> {
    let fence = format!("```{language}\n");
    let start = section.find(&fence)? + fence.len();
    let end = section[start..].find("```")?;
    Some(&section[start..start + end])
}

fn examples() -> Vec<Example> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/registries-conf-examples.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let examples: Vec<Example> = text
        .split("\n## ")
        .skip(1)
        .filter_map(|section| {
            Some(Example {
                title: section.lines().next()?.to_owned(),
                objects: fenced_block(section, "yaml")?.to_owned(),
                // The first TOML block is the current MCO's rendering (a legacy one may follow).
                rendered: fenced_block(section, "toml")?.to_owned(),
            })
        })
        .collect();
    assert!(!examples.is_empty(), "no examples in {}", path.display());
    examples
}

#[test]
fn every_example_renders_the_registries_conf_the_mco_writes() {
    let mut mismatches = Vec::new();
    for example in examples() {
        let rule_set = rules::load_str(&example.objects, &example.title).expect("example loads");
        let ours: toml::Table = rule_set
            .to_registries_conf()
            .expect("renders")
            .parse()
            .expect("our output is TOML");
        let theirs: toml::Table = example.rendered.parse().expect("the example is TOML");
        if ours != theirs {
            mismatches.push(format!(
                "{}:\nours:   {ours:#?}\ntheirs: {theirs:#?}",
                example.title
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn cli_prints_parseable_toml_for_the_example_rules() {
    let output = Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["registries-conf", "--rules", "config/rules"])
        .output()
        .expect("runs");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(
        (output.status.success(), text.parse::<toml::Table>().is_ok()),
        (true, true),
        "{text}"
    );
}
