//! The rule-resolution vectors (`tests/data/mirror-vectors.yaml`), run through the
//! library and through the `resolve --json` and `check` commands; all three must agree with every
//! vector. (`management_vectors` describe HyperShift's management side, which mirrorgate
//! deliberately does not copy, so they are not run.)

use std::path::PathBuf;
use std::process::Command;

use mirrorgate::reference::Reference;
use mirrorgate::rules::{self, BlockedSource, ResolveError, Role};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

#[derive(Debug, Deserialize)]
struct Vector {
    name: String,
    objects: String,
    image: String,
    expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
struct Expect {
    matched_scope: Option<String>,
    #[serde(default)]
    sources: Vec<Attempt>,
    #[serde(default)]
    blocked: Vec<Attempt>,
    error: Option<String>,
    config_error: Option<String>,
    attempted_reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Attempt {
    reference: String,
    role: String,
    #[serde(default)]
    blocked_by: Option<String>,
}

fn vectors() -> Vec<Vector> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mirror-vectors.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the vectors are the project's own test data)",
            path.display()
        )
    });
    let file: VectorFile = serde_saphyr::from_str(&text).expect("the vector file parses");
    assert!(!file.vectors.is_empty(), "no vectors in {}", path.display());
    file.vectors
}

/// What the library says about one vector, in the vector's own terms; `Err` describes a mismatch.
fn check_with_library(vector: &Vector) -> Result<(), String> {
    let expect = &vector.expect;
    let rule_set = match rules::load_str(&vector.objects, "vector.yaml") {
        Ok(rule_set) => rule_set,
        Err(e) => {
            return match &expect.config_error {
                Some(wanted) if e.to_string().contains(wanted) => Ok(()),
                _ => Err(format!("rules refused: {e}")),
            };
        }
    };
    if let Some(wanted) = &expect.config_error {
        return Err(format!("rules accepted, expected config error {wanted:?}"));
    }
    let reference = Reference::parse_normalized(&vector.image).map_err(|e| e.to_string())?;
    let (matched, sources, blocked) = match rule_set.resolve(&reference) {
        Ok(resolution) => {
            if let Some(error) = &expect.error {
                return Err(format!("resolved, expected error {error}: {resolution:?}"));
            }
            let sources = resolution
                .sources
                .iter()
                .map(|s| attempt(s.reference.to_string(), s.role, None))
                .collect::<Vec<_>>();
            let blocked = blocked_attempts(&resolution.blocked);
            (
                resolution.matched_scope.map(|s| s.to_string()),
                sources,
                blocked,
            )
        }
        Err(ResolveError::Blocked { scope, blocked, .. }) => {
            if expect.error.as_deref() != Some("blocked") {
                return Err(format!("blocked by {scope}, expected {:?}", expect.error));
            }
            let blocked = blocked_attempts(&blocked);
            (Some(scope.to_string()), Vec::new(), blocked)
        }
        Err(ResolveError::RewriteFailed {
            scope, attempted, ..
        }) => {
            if expect.error.as_deref() != Some("rewrite_failed") {
                return Err(format!(
                    "rewrite of {attempted} failed, expected {:?}",
                    expect.error
                ));
            }
            if expect.attempted_reference.as_deref() != Some(attempted.as_str()) {
                return Err(format!(
                    "rewrite failed on {attempted}, expected {:?}",
                    expect.attempted_reference
                ));
            }
            (Some(scope.to_string()), Vec::new(), Vec::new())
        }
    };
    if matched != expect.matched_scope {
        return Err(format!(
            "matched {matched:?}, expected {:?}",
            expect.matched_scope
        ));
    }
    if sources != expect.sources {
        return Err(format!(
            "sources {sources:#?}, expected {:#?}",
            expect.sources
        ));
    }
    if blocked != expect.blocked {
        return Err(format!(
            "blocked {blocked:#?}, expected {:#?}",
            expect.blocked
        ));
    }
    Ok(())
}

fn blocked_attempts(blocked: &[BlockedSource]) -> Vec<Attempt> {
    blocked
        .iter()
        .map(|b| {
            attempt(
                b.reference.to_string(),
                b.role,
                Some(b.blocked_by.to_string()),
            )
        })
        .collect()
}

fn attempt(reference: String, role: Role, blocked_by: Option<String>) -> Attempt {
    Attempt {
        reference,
        role: role.as_str().to_owned(),
        blocked_by,
    }
}

/// What the CLI says about one vector: `check` must accept or refuse the rules, and `resolve
/// --json` must print the expected sources or fail naming the reason.
fn check_with_cli(vector: &Vector) -> Result<(), String> {
    let expect = &vector.expect;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rules_file = dir.path().join("rules.yaml");
    std::fs::write(&rules_file, &vector.objects).map_err(|e| e.to_string())?;
    // The vectors are about the node's routing; `resolve` also applies serve's limit on which
    // registries may be contacted, which this configuration lifts.
    let config_file = dir.path().join("mirrorgate.yaml");
    std::fs::write(
        &config_file,
        format!(
            "rules: [{}]\nallow_any_registry: true\n",
            serde_json::to_string(&rules_file).map_err(|e| e.to_string())?
        ),
    )
    .map_err(|e| e.to_string())?;
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mirrorgate"))
            .args(args)
            .arg("--config")
            .arg(&config_file)
            .arg("--rules")
            .arg(&rules_file)
            .output()
            .map_err(|e| e.to_string())
    };

    let check = run(&["check"])?;
    let check_err = String::from_utf8_lossy(&check.stderr);
    match &expect.config_error {
        Some(wanted) if check.status.success() || !check_err.contains(wanted) => {
            return Err(format!(
                "check: {:?} {check_err}, expected {wanted:?}",
                check.status
            ));
        }
        None if !check.status.success() => return Err(format!("check failed: {check_err}")),
        _ => {}
    }

    let resolve = run(&["resolve", "--json", &vector.image])?;
    let stdout = String::from_utf8_lossy(&resolve.stdout);
    let stderr = String::from_utf8_lossy(&resolve.stderr);
    if expect.config_error.is_some() || expect.error.is_some() {
        let wanted = match expect.error.as_deref() {
            Some("blocked") => "blocked".to_owned(),
            Some(_) => expect.attempted_reference.clone().unwrap_or_default(),
            None => expect.config_error.clone().unwrap_or_default(),
        };
        if resolve.status.success() || !stderr.contains(&wanted) {
            return Err(format!(
                "resolve: {:?} {stderr}, expected failure naming {wanted:?}",
                resolve.status
            ));
        }
        if expect.error.as_deref() == Some("blocked")
            && let Some(scope) = &expect.matched_scope
            && !stderr.contains(scope.as_str())
        {
            return Err(format!(
                "blocked message does not name scope {scope}: {stderr}"
            ));
        }
        return Ok(());
    }
    if !resolve.status.success() {
        return Err(format!("resolve failed: {stderr}"));
    }
    let printed: Vec<Attempt> =
        serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))?;
    if printed != expect.sources {
        return Err(format!(
            "resolve printed {printed:#?}, expected {:#?}",
            expect.sources
        ));
    }
    Ok(())
}

fn failures(check: fn(&Vector) -> Result<(), String>) -> Vec<String> {
    vectors()
        .iter()
        .filter_map(|v| check(v).err().map(|e| format!("{}: {e}", v.name)))
        .collect()
}

#[test]
fn library_resolves_every_vector_as_expected() {
    let failures = failures(check_with_library);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn cli_resolve_and_check_agree_with_every_vector() {
    let failures = failures(check_with_cli);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
