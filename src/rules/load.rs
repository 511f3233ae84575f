//! Building rule sets: from files and directories, from text, or from documents another source
//! already decoded ([`Documents`], e.g. objects read from a Kubernetes API).
//!
//! A path is a file (read whatever its name) or a directory, whose `.yaml`, `.yml` and `.json`
//! files are read in sorted order, descending into subdirectories. Names starting with `.` are
//! skipped: that is how a Kubernetes ConfigMap volume keeps its `..data` and timestamped
//! directories, whose files are also reachable through the visible symlinks.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::objects::{Decoded, decode_documents, parse_json_documents, parse_yaml_documents};
use super::{RuleError, RuleSet};

/// Rule documents already decoded from their text (YAML or JSON values), with their origin: a
/// file path, or an object's name, used in every message about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Documents {
    /// Where the documents come from.
    pub origin: String,
    /// The documents, in order.
    pub documents: Vec<serde_json::Value>,
}

impl RuleSet {
    /// Builds a rule set from decoded documents, in the order given (object order never
    /// changes the result, but it orders warnings). Any error fails the whole set, naming the
    /// origin, object and field.
    pub fn from_documents(
        sources: impl IntoIterator<Item = Documents>,
    ) -> Result<RuleSet, RuleError> {
        let mut decoded = Decoded::default();
        let mut origins = Vec::new();
        for source in sources {
            let origin: Arc<str> = Arc::from(source.origin);
            decode_documents(&origin, source.documents, &mut decoded)?;
            origins.push(origin);
        }
        RuleSet::build(decoded, origins)
    }
}

/// Loads every rule file under `paths` and builds the rule set. Any error fails the whole set.
pub fn load(paths: &[PathBuf]) -> Result<RuleSet, RuleError> {
    load_with_documents(paths, [])
}

/// Loads every rule file under `paths` together with `documents` decoded elsewhere (objects
/// read from a live cluster) into ONE rule set, with the same semantics as if they all were
/// files: conflicts between a file and a document are found and name both.
pub fn load_with_documents(
    paths: &[PathBuf],
    documents: impl IntoIterator<Item = Documents>,
) -> Result<RuleSet, RuleError> {
    let (mut decoded, mut origins) = decode_files(paths)?;
    for source in documents {
        let origin: Arc<str> = Arc::from(source.origin);
        decode_documents(&origin, source.documents, &mut decoded)?;
        origins.push(origin);
    }
    RuleSet::build(decoded, origins)
}

/// Reads and decodes every rule file under `paths`, in order: what they hold, and their names.
pub(super) fn decode_files(paths: &[PathBuf]) -> Result<(Decoded, Vec<Arc<str>>), RuleError> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files, &mut HashSet::new())?;
    }
    let mut decoded = Decoded::default();
    let mut origins = Vec::with_capacity(files.len());
    for file in &files {
        let text = fs::read_to_string(file).map_err(|source| RuleError::Io {
            path: file.clone(),
            cause: source,
        })?;
        let origin: Arc<str> = Arc::from(file.display().to_string());
        decode_text(&origin, &text, is_json(file), &mut decoded)?;
        origins.push(origin);
    }
    Ok((decoded, origins))
}

/// Builds a rule set from YAML (or JSON) text, naming it `file` in messages.
pub fn load_str(text: &str, file: &str) -> Result<RuleSet, RuleError> {
    let mut decoded = Decoded::default();
    decode_text(&Arc::from(file), text, false, &mut decoded)?;
    RuleSet::build(decoded, Vec::new())
}

fn decode_text(
    file: &Arc<str>,
    text: &str,
    json: bool,
    out: &mut Decoded,
) -> Result<(), RuleError> {
    let documents = if json {
        parse_json_documents(text)
    } else {
        parse_yaml_documents(text, file)
    }
    .map_err(|message| {
        // An unquoted `*.example.com` parses as a YAML alias; say what the user meant.
        let hint = if message.contains("alias") && text.contains("*.") {
            "\nhint: quote wildcard sources: source: \"*.example.com\""
        } else {
            ""
        };
        RuleError::Syntax {
            file: file.to_string(),
            message: format!(
                "invalid {}: {message}{hint}",
                if json { "JSON" } else { "YAML" }
            ),
        }
    })?;
    decode_documents(file, documents, out)
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

fn is_rule_file_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Appends the files under `path` in sorted order. `visited` guards against symlink loops.
fn collect_files(
    path: &Path,
    files: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), RuleError> {
    let io_error = |source| RuleError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    let metadata = fs::metadata(path).map_err(io_error)?;
    if !metadata.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    if !visited.insert(fs::canonicalize(path).map_err(io_error)?) {
        return Ok(());
    }
    let mut entries = fs::read_dir(path)
        .map_err(io_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error)?;
    entries.sort();
    for entry in entries {
        if is_hidden(&entry) {
            continue;
        }
        let is_dir = fs::metadata(&entry)
            .map_err(|source| RuleError::Io {
                path: entry.clone(),
                cause: source,
            })?
            .is_dir();
        if is_dir {
            collect_files(&entry, files, visited)?;
        } else if is_rule_file_name(&entry) {
            files.push(entry);
        }
    }
    Ok(())
}
