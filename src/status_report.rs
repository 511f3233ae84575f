//! The status report of a running proxy, for people and scripts: [`Status`] is what `GET /status`
//! answers (JSON) and what `mirrorgate status` prints ([`Status::render`]). The proxy builds it
//! (`proxy::Proxy::status`); the `/status` endpoint (`http::status_endpoint`) serves it.
//!
//! It is a snapshot of state the proxy already keeps: the rule set in force and the last reload
//! ([`RulesStatus`]), each upstream registry's health ([`RegistryStatus`]), the caches
//! ([`CacheStatus`]) and the upstream fetches under way ([`FetchesStatus`]). Times are RFC 3339
//! (UTC, seconds) so that scripts can parse them and people can read them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::section::values::ByteSize;

/// Everything `/status` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The running version.
    pub version: String,
    /// When the process started.
    pub started_at: String,
    /// The rule set in force.
    pub rules: RulesStatus,
    /// Every registry mirrorgate may contact, by name, sorted.
    pub registries: Vec<RegistryStatus>,
    /// The caches.
    pub cache: CacheStatus,
    /// Upstream fetches.
    pub fetches: FetchesStatus,
    /// Digests an operator withdrew (`mirrorgate deny`), sorted.
    #[serde(default)]
    pub withdrawn: Vec<WithdrawnStatus>,
}

/// A withdrawn digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithdrawnStatus {
    /// The digest.
    pub digest: String,
    /// Why, as the operator said (may be empty).
    pub reason: String,
    /// When.
    pub at: String,
}

/// The rule set in force and how it got there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesStatus {
    /// The configuration file, or `None` for the built-in defaults.
    pub config: Option<String>,
    /// The rule files read, in order.
    pub files: Vec<String>,
    /// Objects per kind.
    pub objects: BTreeMap<String, usize>,
    /// The number of scopes (distinct rule sources).
    pub scopes: usize,
    /// Scopes whose source is never contacted (NeverContactSource).
    pub blocked_scopes: Vec<String>,
    /// Warnings of the rule set in force.
    pub warnings: Vec<String>,
    /// The cluster objects refused because they are invalid or conflict, each with what is
    /// wrong and what of it is in force instead (the rest of the rules are in force).
    #[serde(default)]
    pub refused: Vec<String>,
    /// When the rules in force were loaded.
    pub loaded_at: String,
    /// The last reload attempt, if any happened since the start.
    pub last_reload: Option<ReloadStatus>,
    /// Why the rule set is not complete yet, while it is not (pulls are refused 503 meanwhile,
    /// with a message that does not say why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// One reload attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// When it happened.
    pub at: String,
    /// `success` or `failure`.
    pub result: String,
    /// Why it failed (the last good rules stay in force).
    pub error: Option<String>,
}

/// How an upstream registry has been doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryStatus {
    /// The registry, `host[:port]` as references and rules write it.
    pub registry: String,
    /// `ok` (its last attempt got an answer), `refusing` (it answered the last attempt with a
    /// refusal: 401, 403, 429, 400…; it is up), `failing` (its last attempt got no answer or a
    /// 5xx), `backing_off` (it looks down: skipped until `backing_off_until`) or `unused` (not
    /// contacted since the start).
    pub state: String,
    /// Until when it is skipped after it could not be reached.
    pub backing_off_until: Option<String>,
    /// The last answer it gave (any status a registry gives, not found included).
    pub last_success: Option<String>,
    /// The last failure or refusal: when, and why.
    pub last_error: Option<ErrorStatus>,
    /// Attempts since the start.
    pub attempts: u64,
    /// Failed attempts since the start (no answer, or a 5xx).
    pub failures: u64,
    /// Attempts answered with a refusal (401, 403, 429, 400…) since the start.
    #[serde(default)]
    pub refusals: u64,
}

/// A failure and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorStatus {
    /// When.
    pub at: String,
    /// What went wrong.
    pub message: String,
}

/// The caches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheStatus {
    /// Manifests held in memory.
    pub manifest_entries: usize,
    /// Bytes of manifests held in memory.
    pub manifest_memory_bytes: u64,
    /// Tag answers held.
    pub tag_entries: usize,
    /// Blobs in the store.
    pub blob_entries: usize,
    /// Bytes of blobs in the store.
    pub blob_bytes: u64,
    /// The store's bound (`cache.max_size`).
    pub blob_max_bytes: u64,
    /// Manifest requests answered from the cache (by digest, and tags within their TTL) since
    /// the start.
    pub manifest_hits: u64,
    /// Manifest fetches from upstreams because the cache could not answer, since the start.
    pub manifest_misses: u64,
    /// Blobs served from the store since the start.
    pub blob_hits: u64,
    /// Blobs fetched since the start.
    pub blob_misses: u64,
    /// hits / (hits + misses), manifests and blobs together; `None` before any request.
    pub hit_ratio: Option<f64>,
}

/// Upstream fetches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchesStatus {
    /// Fetches under way.
    pub in_flight: i64,
    /// Requests waiting for a slot.
    pub queued: i64,
    /// The bound (`limits.max_upstream_fetches`).
    pub max: usize,
    /// Requests answered 429 since the start, because no slot freed up in time.
    pub refused: u64,
    /// The blob downloads under way: digest and the repository that started each.
    pub downloads: Vec<DownloadStatus>,
}

/// A blob download under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadStatus {
    /// The blob's digest.
    pub digest: String,
    /// The logical repository that started it.
    pub repository: String,
}

impl CacheStatus {
    /// hits / (hits + misses) of manifests and blobs, or `None` when there were none.
    pub fn ratio(hits: u64, misses: u64) -> Option<f64> {
        let total = hits + misses;
        (total > 0).then(|| hits as f64 / total as f64)
    }
}

impl Status {
    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let rules = &self.rules;
        writeln!(
            out,
            "mirrorgate {} (up since {})",
            self.version, self.started_at
        )?;
        writeln!(out)?;
        writeln!(out, "rules")?;
        writeln!(
            out,
            "  config:         {}",
            rules.config.as_deref().unwrap_or("built-in defaults")
        )?;
        writeln!(out, "  files:          {}", rules.files.len())?;
        for file in &rules.files {
            writeln!(out, "    {file}")?;
        }
        let objects: Vec<String> = rules
            .objects
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        let objects = if objects.is_empty() {
            "none".to_owned()
        } else {
            objects.join(", ")
        };
        writeln!(out, "  objects:        {objects}")?;
        writeln!(out, "  scopes:         {}", rules.scopes)?;
        writeln!(out, "  blocked scopes: {}", rules.blocked_scopes.len())?;
        for scope in &rules.blocked_scopes {
            writeln!(out, "    {scope}")?;
        }
        if !rules.warnings.is_empty() {
            writeln!(out, "  warnings:       {}", rules.warnings.len())?;
            for warning in &rules.warnings {
                writeln!(out, "    {warning}")?;
            }
        }
        if !rules.refused.is_empty() {
            writeln!(out, "  refused:        {}", rules.refused.len())?;
            for refused in &rules.refused {
                writeln!(out, "    {}", indented(refused))?;
            }
        }
        writeln!(out, "  loaded at:      {}", rules.loaded_at)?;
        match &rules.last_reload {
            None => writeln!(out, "  last reload:    none since the start")?,
            Some(reload) => match &reload.error {
                None => writeln!(out, "  last reload:    {} {}", reload.at, reload.result)?,
                Some(error) => writeln!(
                    out,
                    "  last reload:    {} {} (the rules loaded at {} stay in force): {}",
                    reload.at,
                    reload.result,
                    rules.loaded_at,
                    indented(error)
                )?,
            },
        }
        if let Some(why) = &rules.incomplete {
            writeln!(out, "  not complete:   {}", indented(why))?;
        }
        writeln!(out)?;
        writeln!(out, "registries")?;
        let width = self
            .registries
            .iter()
            .map(|r| r.registry.len())
            .max()
            .unwrap_or(0);
        for registry in &self.registries {
            let state = match (&registry.state[..], &registry.backing_off_until) {
                ("backing_off", Some(until)) => format!("backing off until {until}"),
                (state, _) => state.to_owned(),
            };
            write!(
                out,
                "  {:width$}  {state}, {} attempts, {} failed",
                registry.registry, registry.attempts, registry.failures
            )?;
            if registry.refusals > 0 {
                write!(out, ", {} refused", registry.refusals)?;
            }
            if let Some(error) = &registry.last_error {
                write!(
                    out,
                    "; last error {}: {}",
                    error.at,
                    indented(&error.message)
                )?;
            }
            writeln!(out)?;
        }
        if self.registries.is_empty() {
            writeln!(out, "  none")?;
        }
        writeln!(out)?;
        let cache = &self.cache;
        writeln!(out, "cache")?;
        writeln!(
            out,
            "  manifests:      {} in memory ({}), {} tag answers",
            cache.manifest_entries,
            ByteSize(cache.manifest_memory_bytes).human(),
            cache.tag_entries
        )?;
        writeln!(
            out,
            "  blobs:          {} ({} of {})",
            cache.blob_entries,
            ByteSize(cache.blob_bytes).human(),
            ByteSize(cache.blob_max_bytes).human()
        )?;
        let ratio = cache.hit_ratio.map_or("no requests yet".to_owned(), |r| {
            format!("{:.1}%", r * 100.0)
        });
        writeln!(
            out,
            "  hit ratio:      {ratio} (manifests {} hits / {} misses, blobs {} / {})",
            cache.manifest_hits, cache.manifest_misses, cache.blob_hits, cache.blob_misses
        )?;
        writeln!(out)?;
        let fetches = &self.fetches;
        writeln!(out, "upstream fetches")?;
        writeln!(
            out,
            "  in flight:      {} of {} ({} waiting, {} refused since the start)",
            fetches.in_flight, fetches.max, fetches.queued, fetches.refused
        )?;
        for download in &fetches.downloads {
            writeln!(
                out,
                "    blob {} for {}",
                download.digest, download.repository
            )?;
        }
        if !self.withdrawn.is_empty() {
            writeln!(out)?;
            writeln!(out, "withdrawn:        {}", self.withdrawn.len())?;
            for withdrawn in &self.withdrawn {
                write!(out, "  {} since {}", withdrawn.digest, withdrawn.at)?;
                if !withdrawn.reason.is_empty() {
                    write!(out, ": {}", withdrawn.reason)?;
                }
                writeln!(out)?;
            }
        }
        Ok(())
    }
}

/// `text` with its continuation lines indented under the report's items.
fn indented(text: &str) -> String {
    text.trim_end().replace('\n', "\n      ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Status {
        Status {
            version: "0.1.0".into(),
            started_at: "2026-11-29T20:00:00Z".into(),
            rules: RulesStatus {
                config: Some("/etc/mirrorgate/mirrorgate.yaml".into()),
                files: vec!["/etc/mirrorgate/rules/idms.yaml".into()],
                objects: BTreeMap::from([("ImageDigestMirrorSet".into(), 1)]),
                scopes: 2,
                blocked_scopes: vec!["quay.io/blocked".into()],
                warnings: vec![],
                refused: vec![],
                loaded_at: "2026-11-29T20:00:00Z".into(),
                last_reload: Some(ReloadStatus {
                    at: "2026-11-29T20:05:00Z".into(),
                    result: "failure".into(),
                    error: Some("the rule set is invalid: idms.yaml: …".into()),
                }),
                incomplete: None,
            },
            registries: vec![RegistryStatus {
                registry: "mirror.example.com".into(),
                state: "backing_off".into(),
                backing_off_until: Some("2026-11-29T20:06:05Z".into()),
                last_success: None,
                last_error: Some(ErrorStatus {
                    at: "2026-11-29T20:06:00Z".into(),
                    message: "connection refused".into(),
                }),
                attempts: 3,
                failures: 1,
                refusals: 0,
            }],
            cache: CacheStatus {
                manifest_entries: 2,
                manifest_memory_bytes: 2048,
                tag_entries: 1,
                blob_entries: 3,
                blob_bytes: 3 << 20,
                blob_max_bytes: 10 << 30,
                manifest_hits: 3,
                manifest_misses: 1,
                blob_hits: 0,
                blob_misses: 0,
                hit_ratio: CacheStatus::ratio(3, 1),
            },
            fetches: FetchesStatus {
                in_flight: 0,
                queued: 0,
                max: 64,
                refused: 0,
                downloads: vec![],
            },
            withdrawn: vec![],
        }
    }

    #[test]
    fn the_text_names_a_failed_reload_a_backing_off_registry_and_the_hit_ratio() {
        let text = example().render();
        let wanted = [
            "last reload:    2026-11-29T20:05:00Z failure (the rules loaded at 2026-11-29T20:00:00Z stay in force)",
            "mirror.example.com  backing off until 2026-11-29T20:06:05Z, 3 attempts, 1 failed; last error 2026-11-29T20:06:00Z: connection refused",
            "hit ratio:      75.0%",
            "blobs:          3 (3.0 MiB of 10.0 GiB)",
        ];
        let missing: Vec<&str> = wanted.into_iter().filter(|w| !text.contains(w)).collect();
        assert_eq!(missing, Vec::<&str>::new(), "in:\n{text}");
    }

    #[test]
    fn the_text_lists_the_refused_cluster_objects() {
        let mut status = example();
        status.rules.refused = vec!["NodePool clusters/workers: cluster: NodePool clusters/workers: spec.config[0].name: required field is missing; its last good version stays in force".into()];
        let text = status.render();
        assert!(
            text.contains("  refused:        1\n    NodePool clusters/workers: cluster: NodePool clusters/workers: spec.config[0].name: required field is missing; its last good version stays in force\n"),
            "{text}"
        );
    }

    #[test]
    fn a_status_without_refused_objects_reads_as_none_refused() {
        let mut json = serde_json::to_value(example()).unwrap();
        json["rules"].as_object_mut().unwrap().remove("refused");
        let read: Status = serde_json::from_value(json).unwrap();
        assert_eq!(read.rules.refused, Vec::<String>::new());
    }

    #[test]
    fn the_json_form_reads_back_as_the_same_status() {
        let status = example();
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
    }
}
