//! `mirrorgate resolve`: the ordered pull sources of an image under the rules, and what `serve`
//! would leave out of them.

use anyhow::{Context, Result, bail};
use mirrorgate::proxy::Reachable;
use mirrorgate::reference::Reference;
use mirrorgate::rules::ResolveError;

use crate::RuleArgs;

pub fn resolve(args: &RuleArgs, json: bool, image: &str) -> Result<()> {
    let (rule_set, config, _) = args.load(true)?;
    super::tell_refused(&rule_set);
    // The same normalisation as `serve`'s addressing: a name without a registry is in
    // `default_registry`.
    let reference = Reference::parse_with_default(image, &config.default_registry)
        .with_context(|| format!("invalid image \"{image}\""))?;
    let mut resolution = match rule_set.resolve(&reference) {
        Ok(resolution) => resolution,
        Err(error @ ResolveError::Blocked { .. }) => {
            if let ResolveError::Blocked {
                blocked, skipped, ..
            } = &error
            {
                for attempt in skipped {
                    eprintln!("skipped: {attempt}");
                }
                for attempt in blocked {
                    eprintln!(
                        "not contacted: {} {} (in blocked scope \"{}\")",
                        attempt.role, attempt.reference, attempt.blocked_by
                    );
                }
            }
            bail!(error);
        }
        Err(error) => bail!(error),
    };
    for attempt in &resolution.skipped {
        eprintln!("skipped: {attempt}");
    }
    for attempt in &resolution.blocked {
        eprintln!(
            "not contacted: {} {} (in blocked scope \"{}\")",
            attempt.role, attempt.reference, attempt.blocked_by
        );
    }
    // `serve` contacts only the registries the rules and configuration name; say so here too.
    let reachable = Reachable::new(&rule_set, &(&config).into());
    resolution.sources.retain(|source| {
        let registry = source.reference.domain();
        let allowed = reachable.allows(registry, source.role);
        if !allowed {
            eprintln!(
                "not contacted: {} {} ({})",
                source.role,
                source.reference,
                Reachable::refusal(registry)
            );
        }
        allowed
    });
    if resolution.sources.is_empty() {
        bail!(
            "{}; serve refuses this pull with 403 DENIED. Name it under `registries` in the configuration, or in a rule",
            Reachable::refusal(reference.domain())
        );
    }
    if json {
        let sources: Vec<_> = resolution
            .sources
            .iter()
            .map(|s| {
                serde_json::json!({
                    "reference": s.reference.to_string(),
                    "role": s.role.as_str(),
                    "origin": s.origin.as_deref(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&sources)?);
    } else {
        for source in &resolution.sources {
            match &source.origin {
                Some(origin) => println!("{} {}  ({origin})", source.role, source.reference),
                None => println!("{} {}", source.role, source.reference),
            }
        }
    }
    Ok(())
}
