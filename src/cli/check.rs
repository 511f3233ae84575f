//! `mirrorgate check`: the configuration, every rule file and the files the proxy reads at start
//! loaded and validated (with the cluster listed and the shared cache's bucket reached unless
//! `--offline`), and a summary printed.

use anyhow::{Context, Result, bail};
use mirrorgate::http;
use mirrorgate::proxy::Reachable;
use mirrorgate::upstream::Upstream;

use crate::RuleArgs;

/// Reaches the shared cache (`cache.shared`), if configured, with its credentials: wrong
/// credentials, a missing bucket or an unusable key file are an error. Returns what it checked,
/// and whether its records are sealed.
fn check_shared_cache(cache: &mirrorgate::cache::CacheConfig) -> Result<Option<String>> {
    use mirrorgate::cache::shared::{SharedStore, Timeouts};
    let Some(shared) = &cache.shared else {
        return Ok(None);
    };
    let described = shared.s3.describe();
    let store = SharedStore::open(shared, Timeouts::default())
        .with_context(|| format!("the shared cache {described} cannot be used"))?;
    let runtime = crate::runtime()?;
    runtime
        .block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(30), store.check())
                .await
                .map_err(|_| anyhow::anyhow!("no answer within 30s"))?
                .map_err(anyhow::Error::from)
        })
        .with_context(|| format!("the shared cache {described} cannot be used"))?;
    let records = match store.record_keys() {
        0 => "no cache.shared.key_file: confirmations and tag answers are neither shared nor \
              trusted, only content is"
            .to_owned(),
        keys => format!("records sealed and checked with {keys} key(s) from cache.shared.key_file"),
    };
    Ok(Some(format!(
        "{described} (reachable, bucket found; {records})"
    )))
}

pub fn check(args: &RuleArgs, offline: bool, strict: bool) -> Result<()> {
    let (rule_set, config, config_path) = args.load(!offline)?;
    // The files the proxy reads at start (pull secret, CA bundles, clients) must be good too.
    Upstream::new(&config).context("the upstream settings are invalid")?;
    mirrorgate::access::Access::load(&config.clients)
        .context("the clients settings are invalid")?;
    http::ServerTls::from_config(config.tls.as_ref()).context("the tls settings are invalid")?;
    let shared = if offline {
        None
    } else {
        check_shared_cache(&config.cache)?
    };
    let summary = rule_set.summary();
    match &config_path {
        Some(path) => println!("config: {} (listen {})", path.display(), config.listen),
        None => println!("config: built-in defaults (listen {})", config.listen),
    }
    if let Some(shared) = shared {
        println!("shared cache: {shared}");
    }
    println!("files: {}", summary.files.len());
    for file in &summary.files {
        println!("  {}", file.display());
    }
    let objects: usize = summary.objects.values().sum();
    println!("objects: {objects}");
    for (kind, count) in &summary.objects {
        println!("  {kind}: {count}");
    }
    println!("scopes: {}", summary.scopes);
    for rule in rule_set.rules() {
        println!(
            "  {}: {} digest mirror(s), {} tag mirror(s){}",
            rule.scope,
            rule.digest_mirrors.len(),
            rule.tag_mirrors.len(),
            if rule.blocked { ", source blocked" } else { "" }
        );
    }
    if !summary.config_map_uses.is_empty() {
        println!("hypershift config maps:");
        for config_use in &summary.config_map_uses {
            println!("  {} {}:", config_use.kind, config_use.object);
            for applied in &config_use.applied {
                println!("    applied ConfigMap {applied}");
            }
            for missing in &config_use.missing {
                println!("    missing ConfigMap {missing} (not in the rule files; see warnings)");
            }
        }
    }
    println!("blocked scopes: {}", summary.blocked_scopes.len());
    for scope in &summary.blocked_scopes {
        println!("  {scope}");
    }
    // Mirrors that are mirrorgate itself are expected where a cluster's own mirror sets send
    // pulls through it; they are reported, not warned about.
    let self_mirrors = rule_set.self_mirrors();
    println!(
        "self mirrors: {} (self names: {})",
        self_mirrors.len(),
        rule_set.self_names().names().join(", ")
    );
    for self_mirror in &self_mirrors {
        println!("  {self_mirror}");
    }
    let unused = Reachable::unused_registries(&rule_set, &(&config).into());
    let mut warnings: Vec<String> = summary.warnings.iter().map(ToString::to_string).collect();
    for registry in &unused {
        let at = config_path
            .as_ref()
            .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
        warnings.push(format!(
            "{at}: {}",
            Reachable::unused_registry_warning(registry)
        ));
    }
    println!("warnings: {}", warnings.len());
    for warning in &warnings {
        println!("  {warning}");
    }
    // A refused cluster object does not stop `serve` (the rest is served), but it is an error
    // of the configuration to fix: listed, and the check fails.
    if !summary.errors.is_empty() {
        println!("refused cluster objects: {}", summary.errors.len());
        for error in &summary.errors {
            println!("  {error}");
        }
        bail!(
            "{} cluster object(s) refused: {}",
            summary.errors.len(),
            summary
                .errors
                .iter()
                .map(|e| e.member.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if strict && !warnings.is_empty() {
        bail!(
            "--strict: {} warning(s) are errors:\n  {}",
            warnings.len(),
            warnings.join("\n  ")
        );
    }
    println!("ok");
    Ok(())
}
