//! Hot reload: the configuration file and every rule path are watched (and `SIGHUP` asks for a
//! reload too); a change builds a new rule set and upstream client aside and swaps them in whole.
//! A reload that fails keeps the last good rules in force, logs the file/object/field error and
//! counts it; the proxy stays ready. With `rules_strict`, a rule set with warnings fails too.
//!
//! Principal function: [`spawn`], which watches the files, debounces events and swaps in the new
//! rules (through a [`RuleFeed`]), upstream client and client access.
//!
//! The rule [`Source`] built from the configuration (`crate::source`) is the second input: when
//! a part it watches itself changes (a cluster's snapshot, already debounced by the watch), its
//! views are loaded again with the rule files and swapped in whole; a file reload keeps the
//! cluster part and a cluster change keeps the files. A cluster object that is invalid or
//! conflicts is refused on its own ([`crate::rules::load_with_members`]): it keeps its last good
//! version (the source remembers it, across snapshots and file reloads) or is left out,
//! everything else is applied, and the proxy stays ready; a change that brings a new refusal
//! counts as a failed reload naming it.
//!
//! Watching follows Kubernetes ConfigMap volumes: their files are symlinks into a `..data`
//! directory that is replaced by an atomic symlink swap, which a watch on a file never sees after
//! the first update. So the *directories* are watched (a rule directory itself, and the parent of
//! every file), and any event in them, after a short quiet period, triggers a reload that re-reads
//! everything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::access::Access;
use crate::config::Config;
use crate::proxy::Proxy;
use crate::rules;
use crate::source::{Loaded, RuleFeed, Source};
use crate::upstream::Upstream;

/// How long the files must stay quiet before a reload: a ConfigMap update or an editor's save
/// is several events.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Reloads the rules and upstream settings of `proxy` on change (when `config.watch`) and on
/// SIGHUP, and follows the changes `source` watches itself. `config_path` is the configuration file, if one was read. Runs until the
/// process ends. The receiver sees each configuration that was reloaded successfully, for the
/// parts that follow it (the `warm` section).
pub fn spawn(
    proxy: Arc<Proxy>,
    config_path: Option<PathBuf>,
    config: Config,
    source: Source,
) -> tokio::sync::watch::Receiver<Config> {
    let (configs, reloaded) = tokio::sync::watch::channel(config.clone());
    let (sender, receiver) = mpsc::channel::<()>(1);
    let watcher = if config.watch {
        watch(&config_path, &config, sender.clone())
    } else {
        None
    };
    let hangup = sender;
    tokio::spawn(async move {
        let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot watch SIGHUP; reloads happen only on file changes");
            return;
        };
        while signal.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let _ = hangup.try_send(());
        }
    });
    tokio::spawn(async move {
        // The watcher lives as long as the loop.
        let _watcher = watcher;
        let feed = RuleFeed::new(proxy.views());
        run(proxy, feed, config_path, config, receiver, source, configs).await;
    });
    reloaded
}

/// The directories to watch for `config`, and whether to watch below them: every rule directory
/// with what is under it; the configuration file's directory, the parent of every rule file, and
/// those of the pull secret and CA files, without what is under them (the cache often lives
/// there, and its writes are no reason to reload).
fn watched_directories(
    config_path: &Option<PathBuf>,
    config: &Config,
) -> BTreeSet<(PathBuf, bool)> {
    let parent = |path: &Path| -> PathBuf {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let mut directories = BTreeSet::new();
    if let Some(path) = config_path {
        directories.insert((parent(path), false));
    }
    for path in &config.rules {
        if path.is_dir() {
            directories.insert((path.clone(), true));
        } else {
            directories.insert((parent(path), false));
        }
    }
    for file in secondary_files(config) {
        directories.insert((parent(file), false));
    }
    // A directory watched with what is under it needs no second, shallow watch.
    let deep: Vec<PathBuf> = directories
        .iter()
        .filter(|(_, deep)| *deep)
        .map(|(d, _)| d.clone())
        .collect();
    directories.retain(|(d, is_deep)| *is_deep || !deep.contains(d));
    directories
}

/// The files besides the configuration and the rules that a reload reads: the pull secret, CA
/// bundles, and the clients' htpasswd or tokens file.
fn secondary_files(config: &Config) -> impl Iterator<Item = &PathBuf> {
    config
        .pull_secret
        .iter()
        .chain(
            config
                .registries
                .values()
                .filter_map(|settings| settings.ca_file.as_ref()),
        )
        .chain(config.clients.htpasswd_file.iter())
        .chain(config.clients.tokens_file.iter())
}

/// What a file event must touch to be worth a reload: one of the files read (the configuration,
/// rule files, the pull secret, CA files), anything under a rule directory, or the `..data`
/// machinery of a ConfigMap volume beside a file read. Anything else in the same directories (a
/// log file, the cache) is ignored, and so are reads and access-time updates, which our own
/// reloads cause.
#[derive(Debug, Default)]
struct Interest {
    files: BTreeSet<PathBuf>,
    deep: Vec<PathBuf>,
    shallow: Vec<PathBuf>,
}

impl Interest {
    fn new(config_path: &Option<PathBuf>, config: &Config) -> Interest {
        let mut interest = Interest::default();
        let files = config_path
            .iter()
            .chain(config.rules.iter().filter(|p| !p.is_dir()))
            .chain(secondary_files(config));
        interest.files = files.map(|f| absolute(f)).collect();
        for (directory, deep) in watched_directories(config_path, config) {
            if deep {
                interest.deep.push(absolute(&directory));
            } else {
                interest.shallow.push(absolute(&directory));
            }
        }
        interest
    }

    fn is_change(&self, event: &notify::Event) -> bool {
        let kind_matters = !matches!(
            event.kind,
            notify::EventKind::Access(_)
                | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
        );
        kind_matters && event.paths.iter().any(|path| self.touches(path))
    }

    fn touches(&self, path: &Path) -> bool {
        if self.files.contains(path) || self.deep.iter().any(|d| path.starts_with(d)) {
            return true;
        }
        let in_shallow = path
            .parent()
            .is_some_and(|p| self.shallow.iter().any(|d| d == p));
        let volume_machinery = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."));
        in_shallow && volume_machinery
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn watch(
    config_path: &Option<PathBuf>,
    config: &Config,
    sender: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let interest = Interest::new(config_path, config);
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.as_ref().is_ok_and(|e| interest.is_change(e)) {
                // A full channel already holds a pending reload.
                let _ = sender.try_send(());
            }
        }) {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(%error, "cannot watch files; reloads happen only on SIGHUP");
                return None;
            }
        };
    for (directory, deep) in watched_directories(config_path, config) {
        let mode = if deep {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        match watcher.watch(&absolute(&directory), mode) {
            Ok(()) => tracing::info!(directory = %directory.display(), "watching for changes"),
            Err(error) => {
                tracing::warn!(directory = %directory.display(), %error, "cannot watch; changes there need SIGHUP")
            }
        }
    }
    Some(watcher)
}

async fn run(
    proxy: Arc<Proxy>,
    feed: RuleFeed,
    config_path: Option<PathBuf>,
    mut config: Config,
    mut receiver: mpsc::Receiver<()>,
    mut source: Source,
    configs: tokio::sync::watch::Sender<Config>,
) {
    loop {
        tokio::select! {
            event = receiver.recv() => {
                if event.is_none() {
                    return;
                }
                // Let a burst of events settle into one reload.
                loop {
                    match tokio::time::timeout(DEBOUNCE, receiver.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_quiet) => break,
                    }
                }
                match reload(&proxy, &feed, &config_path, &config, &mut source).await {
                    Ok((new_config, refused)) => {
                        proxy.record_reload(outcome(&refused));
                        configs.send_replace(new_config.clone());
                        config = new_config;
                    }
                    Err(error) => {
                        proxy.record_reload(Err(format!("{error:#}")));
                        tracing::error!(error = %format!("{error:#}"), "reload failed; the last good rules stay in force");
                    }
                }
            }
            () = source.changed() => {
                match apply_source_change(&proxy, &feed, &config, &mut source).await {
                    Ok(refused) => proxy.record_reload(outcome(&refused)),
                    Err(error) => {
                        let error = format!("{error:#}");
                        proxy.record_reload(Err(error.clone()));
                        if proxy.incomplete().is_some() {
                            proxy.set_incomplete(Some(format!(
                                "the cluster's mirror objects cannot be applied: {error}"
                            )));
                        }
                        // Cluster objects are refused one by one; what fails the whole set is the
                        // rule files (changed on disk since their last reload).
                        tracing::error!(%error, "the cluster's mirror objects cannot be applied; the last good rules stay in force");
                    }
                }
            }
        }
    }
}

/// What a reload that applied its rule set records: a failure naming the cluster objects it
/// refused that were not refused before (everything else is in force), else a success.
fn outcome(refused: &[String]) -> Result<(), String> {
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cluster objects refused (the rest of the rules are in force): {}",
            refused.join("; ")
        ))
    }
}

/// With `rules_strict`, a rule set with warnings is refused: the error names every warning.
pub fn check_strict(config: &Config, rule_set: &rules::RuleSet) -> anyhow::Result<()> {
    let warnings = rule_set.warnings();
    if !config.rules_strict || warnings.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    anyhow::bail!(
        "rules_strict: the rule set has {} warning(s), which are errors: {}",
        listed.len(),
        listed.join("; ")
    )
}

/// [`check_strict`] for every view of `loaded`.
fn check_views(config: &Config, loaded: &Loaded) -> anyhow::Result<()> {
    loaded
        .views
        .iter()
        .try_for_each(|(_, rule_set)| check_strict(config, rule_set))
}

/// Logs the warnings of every view of `loaded`.
fn log_warnings(loaded: &Loaded) {
    for (_, rule_set) in loaded.views.iter() {
        for warning in rule_set.warnings() {
            tracing::warn!(%warning, "rule warning");
        }
    }
}

/// Loads the views of `source` again after a change it watches itself (with the rule files of
/// `config`) and swaps them in. Returns the cluster objects newly refused.
async fn apply_source_change(
    proxy: &Proxy,
    feed: &RuleFeed,
    config: &Config,
    source: &mut Source,
) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let loader = source.loader();
    let files = config.rules.clone();
    let self_names = rules::SelfNames::new(config.self_names());
    let loaded = tokio::task::spawn_blocking(move || loader.load(&files, &self_names))
        .await
        .context("the reload task failed")?
        .context("the rule set is invalid")?;
    check_views(config, &loaded)?;
    log_warnings(&loaded);
    let (views, refused) = source.swapped_in(loaded, proxy);
    let summary = views.management().summary();
    feed.publish(Arc::new(views));
    proxy.replace_views(feed.current(), config);
    proxy.set_incomplete(None);
    tracing::info!(
        sources = summary.files.len(),
        scopes = summary.scopes,
        blocked_scopes = summary.blocked_scopes.len(),
        refused = summary.errors.len(),
        "cluster rules applied"
    );
    Ok(refused)
}

/// Reads the configuration and the rules again, and swaps them in if they are good. Returns
/// the configuration and the cluster objects newly refused.
async fn reload(
    proxy: &Proxy,
    feed: &RuleFeed,
    config_path: &Option<PathBuf>,
    current: &Config,
    source: &mut Source,
) -> anyhow::Result<(Config, Vec<String>)> {
    use anyhow::Context;
    let config_path = config_path.clone();
    let fallback = current.clone();
    let loader = source.loader();
    // File reading and parsing are blocking work.
    let (config, loaded, upstream) = tokio::task::spawn_blocking(move || {
        let config = match &config_path {
            Some(path) => Config::load(path)?,
            None => fallback,
        };
        let self_names = rules::SelfNames::new(config.self_names());
        let loaded = loader
            .load(&config.rules, &self_names)
            .context("the rule set is invalid")?;
        let upstream = Upstream::new(&config).context("the upstream settings are invalid")?;
        anyhow::Ok((config, loaded, upstream))
    })
    .await
    .context("the reload task failed")??;
    check_views(&config, &loaded)?;
    for setting in needs_restart(current, &config) {
        tracing::warn!(
            setting,
            "changed in the configuration; takes effect after a restart"
        );
    }
    let summary = loaded.views.management().summary();
    log_warnings(&loaded);
    for registry in
        crate::proxy::Reachable::unused_registries(loaded.views.management(), &(&config).into())
    {
        let warning = crate::proxy::Reachable::unused_registry_warning(&registry);
        tracing::warn!(registry, "{warning}");
    }
    proxy.replace_upstream(upstream);
    // The clients files are read again with everything else; bad ones keep the access in force.
    match Access::load(&config.clients) {
        Ok(access) => proxy.replace_access(access),
        Err(error) => {
            tracing::error!(%error, "cannot reload the clients files; the access in force is kept");
        }
    }
    let (views, refused) = source.swapped_in(loaded, proxy);
    feed.publish(Arc::new(views));
    proxy.replace_views(feed.current(), &config);
    if source.waiting() {
        tracing::info!("rule files reloaded; pulls still wait for the cluster's mirror objects");
    }
    tracing::info!(
        files = summary.files.len(),
        scopes = summary.scopes,
        blocked_scopes = summary.blocked_scopes.len(),
        "reloaded"
    );
    Ok((config, refused))
}

/// The settings that differ between `old` and `new` but only take effect at start.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("listen");
    }
    if old.metrics_listen != new.metrics_listen {
        changed.push("metrics_listen");
    }
    if old.cache != new.cache {
        changed.push("cache");
    }
    if old.default_registry != new.default_registry {
        changed.push("default_registry");
    }
    if old.watch != new.watch {
        changed.push("watch");
    }
    // New certificate files are picked up by themselves; other paths need a restart.
    if old.tls != new.tls {
        changed.push("tls");
    }
    if old.limits != new.limits {
        changed.push("limits");
    }
    #[cfg(feature = "kubernetes")]
    if old.kubernetes != new.kubernetes {
        changed.push("kubernetes");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: notify::EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    fn interest() -> Interest {
        let config = Config {
            rules: vec![PathBuf::from("/etc/mirrorgate/rules.yaml")],
            ..Config::default()
        };
        Interest::new(
            &Some(PathBuf::from("/etc/mirrorgate/mirrorgate.yaml")),
            &config,
        )
    }

    #[test]
    fn a_written_rule_file_is_a_change() {
        let kind = notify::EventKind::Modify(notify::event::ModifyKind::Any);
        assert!(interest().is_change(&event(kind, "/etc/mirrorgate/rules.yaml")));
    }

    #[test]
    fn a_config_map_data_swap_is_a_change() {
        let kind = notify::EventKind::Create(notify::event::CreateKind::Any);
        assert!(interest().is_change(&event(kind, "/etc/mirrorgate/..data")));
    }

    #[test]
    fn another_file_in_the_same_directory_is_no_change() {
        let kind = notify::EventKind::Modify(notify::event::ModifyKind::Any);
        assert!(!interest().is_change(&event(kind, "/etc/mirrorgate/mirrorgate.log")));
    }

    #[test]
    fn reading_a_rule_file_is_no_change() {
        let kind = notify::EventKind::Access(notify::event::AccessKind::Any);
        assert!(!interest().is_change(&event(kind, "/etc/mirrorgate/rules.yaml")));
    }

    #[test]
    fn a_rule_directory_is_watched_itself_and_a_rule_file_through_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            rules: vec![
                dir.path().to_path_buf(),
                PathBuf::from("/etc/mirrorgate/idms.yaml"),
            ],
            ..Config::default()
        };
        let watched = watched_directories(&Some(PathBuf::from("conf/mirrorgate.yaml")), &config);
        assert_eq!(
            watched,
            BTreeSet::from([
                (dir.path().to_path_buf(), true),
                (PathBuf::from("/etc/mirrorgate"), false),
                (PathBuf::from("conf"), false),
            ])
        );
    }

    #[test]
    fn a_changed_listen_address_needs_a_restart() {
        let old = Config::default();
        let new = Config {
            listen: "127.0.0.1:6000".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(needs_restart(&old, &new), vec!["listen"]);
    }
}
