//! The manual (docs/, an mdBook) and README agree with themselves and with the code: every relative
//! link and `#anchor` resolves (mdBook does not check anchors), every chapter is in the book's
//! summary, and the configuration reference documents exactly the keys the configuration types
//! accept and `config/mirrorgate.yaml` shows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use mirrorgate::config::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// README.md, deploy/README.md and every Markdown file of the manual's source.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md"), root().join("deploy/README.md")];
    let mut chapters: Vec<PathBuf> = fs::read_dir(root().join("docs/src"))
        .expect("docs/src")
        .map(|entry| entry.expect("docs/src entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    chapters.sort();
    docs.extend(chapters);
    docs
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// `line` without its inline code spans, which hold no links.
fn without_code(line: &str) -> String {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A heading's visible text: code spans keep their text, links their label, emphasis is dropped.
fn heading_text(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find("](")
            .and_then(|mid| after[mid..].find(')').map(|close| (mid, mid + close + 1)))
        {
            Some((mid, end)) => {
                text.push_str(&after[..mid]);
                rest = &after[end..];
            }
            None => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.replace(['`', '*'], "")
}

/// The id mdBook (and, for the ASCII these files use, GitHub) gives a heading: lower case,
/// letters, digits, `-` and `_` kept, each whitespace character a `-`, everything else dropped; a
/// repeated id gets `-1`, `-2`, … in order.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for line in prose(text) {
        let Some(heading) = line
            .strip_prefix('#')
            .map(|rest| rest.trim_start_matches('#'))
            .and_then(|rest| rest.strip_prefix(' '))
        else {
            continue;
        };
        let id: String = heading_text(heading.trim())
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    Some(c.to_lowercase().collect::<String>())
                } else if c.is_whitespace() {
                    Some("-".to_owned())
                } else {
                    None
                }
            })
            .collect();
        let count = seen.entry(id.clone()).or_default();
        ids.insert(if *count == 0 {
            id.clone()
        } else {
            format!("{id}-{count}")
        });
        *count += 1;
    }
    ids
}

/// The targets of the inline links `[label](target)` of `text`, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            targets.push(target.to_owned());
            rest = &after[end..];
        }
    }
    targets
}

/// `path` with `.` and `..` taken away, so that files compare by name.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with each relative link of `docs`: a file that does not exist, or an anchor that
/// is no heading of the Markdown file it points into.
fn broken_links(docs: &[PathBuf]) -> Vec<String> {
    let mut broken = Vec::new();
    for doc in docs {
        let text = read(doc);
        for target in link_targets(&text) {
            if target.is_empty()
                || target.contains("://")
                || target.starts_with("mailto:")
                || target.starts_with('<')
            {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let into = if file.is_empty() {
                doc.clone()
            } else {
                lexical(&doc.parent().expect("a document's directory").join(file))
            };
            let name = doc
                .strip_prefix(root())
                .unwrap_or(doc)
                .display()
                .to_string();
            if !into.exists() {
                broken.push(format!("{name}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let is_markdown = into.extension().is_some_and(|ext| ext == "md");
                if !is_markdown || !anchors(&read(&into)).contains(anchor) {
                    broken.push(format!("{name}: {target}: no heading with that id"));
                }
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_and_anchor_in_readme_and_the_manual_resolves() {
    assert_eq!(broken_links(&documents()), Vec::<String>::new());
}

#[test]
fn a_broken_link_or_anchor_is_reported() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let page = dir.path().join("page.md");
    fs::write(
        &page,
        "# A page\n\n## Its `second` part\n\n[ok](#its-second-part) [ok](page.md#a-page) \
         [gone](missing.md) [no such part](#second) `[in code](#nowhere)`\n\n```\n[fenced](#nowhere)\n```\n",
    )
    .expect("write page.md");
    let name = page.display().to_string();
    let relative = |s: &str| s.replace(&name, "page.md");
    let found: Vec<String> = broken_links(std::slice::from_ref(&page))
        .iter()
        .map(|b| relative(b))
        .collect();
    assert_eq!(
        found,
        [
            "page.md: missing.md: no such file",
            "page.md: #second: no heading with that id"
        ]
    );
}

#[test]
fn heading_ids_follow_mdbook_and_github() {
    let ids = anchors(
        "# `registries`: where and how\n## Serving (side by side, `bash benches/load/run.sh`)\n\
         ## Latest run (2026-11-30 03:45–04:02 UTC)\n## Serving (side by side, `bash benches/load/run.sh`)\n",
    );
    assert_eq!(
        ids,
        BTreeSet::from(
            [
                "registries-where-and-how",
                "serving-side-by-side-bash-benchesloadrunsh",
                "serving-side-by-side-bash-benchesloadrunsh-1",
                "latest-run-2026-11-30-03450402-utc",
            ]
            .map(str::to_owned)
        )
    );
}

#[test]
fn the_book_summary_names_every_chapter_and_only_chapters_that_exist() {
    let summary = read(&root().join("docs/src/SUMMARY.md"));
    let listed: BTreeSet<String> = link_targets(&summary).into_iter().collect();
    let chapters: BTreeSet<String> = documents()
        .iter()
        .filter_map(|doc| doc.strip_prefix(root().join("docs/src")).ok())
        .filter(|doc| doc.components().count() == 1)
        .map(|doc| doc.display().to_string())
        .filter(|doc| doc != "SUMMARY.md")
        .collect();
    assert_eq!(listed, chapters);
}

// The configuration reference.

/// The dotted key paths of a YAML mapping, recursively. The entries of free-keyed maps
/// (`registries`, a user's `clients.scopes`) are spelled `*`.
fn key_paths(value: &serde_json::Value, prefix: &str, into: &mut BTreeSet<String>) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (key, child) in map {
        let free = matches!(prefix, "registries" | "clients.scopes");
        let path = match (prefix, free) {
            ("", _) => key.clone(),
            (_, true) => format!("{prefix}.*"),
            (_, false) => format!("{prefix}.{key}"),
        };
        into.insert(path.clone());
        key_paths(child, &path, into);
    }
}

fn yaml(text: &str, what: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The configuration reference: its full example (the ```yaml block after
/// `<!-- reference: every key -->`) and the keys its tables document (first column of every row
/// whose first cell is a `` `key` ``).
fn reference() -> (String, BTreeSet<String>) {
    let text = read(&root().join("docs/src/configuration.md"));
    let marker = "<!-- reference: every key -->";
    let after = &text[text.find(marker).expect("the reference marker") + marker.len()..];
    let start = after.find("```yaml\n").expect("the reference's yaml block") + "```yaml\n".len();
    let end = after[start..]
        .find("```")
        .expect("the yaml block is closed");
    let example = after[start..start + end].to_owned();
    let tabled = prose(&text)
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(key, _)| key.to_owned()))
        .collect();
    (example, tabled)
}

/// The keys the configuration types accept at the mapping `path` of `example` (dotted, `""` for
/// the top level), as the loader names them when it refuses an unknown one.
fn accepted_keys(example: &serde_json::Value, path: &str) -> BTreeSet<String> {
    let mut probe = example.clone();
    let mut at = &mut probe;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        at = at
            .get_mut(key)
            .unwrap_or_else(|| panic!("{path}: not in the example"));
    }
    at.as_object_mut()
        .unwrap_or_else(|| panic!("{path}: not a mapping"))
        .insert("not_a_key".to_owned(), serde_json::Value::from(1));
    let text = serde_json::to_string(&probe).expect("JSON is YAML");
    let error = Config::from_yaml_str(&text, "probe")
        .err()
        .unwrap_or_else(|| panic!("{path}: an unknown key is accepted"))
        .to_string();
    let list = error
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("{path}: the error names no expected keys: {error}"))
        .1;
    list.split(", ")
        .map(|key| key.trim().trim_matches('`').to_owned())
        .collect()
}

#[test]
fn the_configuration_reference_documents_exactly_the_keys_the_configuration_accepts() {
    let (example_text, tabled) = reference();
    let example = yaml(&example_text, "the reference's example");
    // The example is a valid configuration: every key it shows exists, every value parses.
    if let Err(e) = Config::from_yaml_str(&example_text, "the reference's example") {
        panic!("the reference's example does not load: {e}");
    }
    let mut shown = BTreeSet::new();
    key_paths(&example, "", &mut shown);
    // The keys themselves, not the free-keyed entries of `registries` and `clients.scopes`.
    let keys: BTreeSet<String> = shown
        .iter()
        .filter(|path| *path != "registries.*" && *path != "clients.scopes.*")
        .cloned()
        .collect();
    let host = example["registries"]
        .as_object()
        .and_then(|m| m.keys().next())
        .expect("the example names a registry")
        .clone();
    // Every mapping of the example (but the free-keyed ones) is asked which keys the types accept
    // there: each of them must be shown.
    let mut accepted = BTreeSet::new();
    for mapping in std::iter::once("").chain(keys.iter().map(String::as_str)) {
        let concrete = mapping.replace("registries.*", &format!("registries.{host}"));
        let mut at = &example;
        for key in concrete.split('.').filter(|k| !k.is_empty()) {
            at = &at[key];
        }
        if !at.is_object() || mapping == "registries" || mapping == "clients.scopes" {
            continue;
        }
        for key in accepted_keys(&example, &concrete) {
            accepted.insert(if mapping.is_empty() {
                key
            } else {
                format!("{mapping}.{key}")
            });
        }
    }
    assert_eq!(
        accepted.difference(&keys).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys the configuration accepts that the reference's example does not show"
    );
    assert_eq!(
        (
            keys.difference(&tabled).collect::<Vec<_>>(),
            tabled.difference(&keys).collect::<Vec<_>>()
        ),
        (Vec::new(), Vec::new()),
        "(keys of the example without a row, rows that are no key of the example)"
    );
    let mut in_file = BTreeSet::new();
    key_paths(
        &yaml(
            &read(&root().join("config/mirrorgate.yaml")),
            "config/mirrorgate.yaml",
        ),
        "",
        &mut in_file,
    );
    assert_eq!(
        in_file.difference(&shown).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys of config/mirrorgate.yaml the reference does not show"
    );
}
