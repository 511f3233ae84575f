//! The `warm` section: which releases are warmed without being asked, from where, and how hard.
//!
//! Principal type: [`WarmConfig`].

use crate::reference::Reference;
use crate::release::PlatformFilter;
use crate::section::section;
use crate::section::values::Invalid;

/// The `warm` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmConfig {
    /// Release images warmed at start and whenever this list changes (new entries on reload).
    pub releases: Vec<String>,
    /// With `kubernetes:`, warm each HostedCluster's `spec.release.image` when it is created or
    /// changed.
    pub hosted_clusters: bool,
    /// The platforms kept from manifest lists (`[amd64]`; `[all]` keeps every platform).
    pub architectures: PlatformFilter,
    /// Blobs fetched at once by all warm jobs together.
    pub concurrency: usize,
    /// `clients` users or token names that may use the warm admin API from another host (from
    /// this host it needs nothing).
    pub admins: Vec<String>,
}

section!(WarmConfig {
    releases,
    hosted_clusters,
    architectures,
    concurrency,
    admins,
});

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            releases: Vec::new(),
            hosted_clusters: true,
            architectures: PlatformFilter::amd64(),
            concurrency: 8,
            admins: Vec::new(),
        }
    }
}

impl WarmConfig {
    /// Checks the section; keys are relative to it.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (i, release) in self.releases.iter().enumerate() {
            Reference::parse_normalized(release).map_err(|e| {
                Invalid::new(
                    format!("releases[{i}]"),
                    format!("{release:?} is not an image reference: {e}"),
                )
            })?;
        }
        if self.concurrency == 0 {
            return Err(Invalid::new("concurrency", "must be greater than 0"));
        }
        for (i, admin) in self.admins.iter().enumerate() {
            if admin.trim().is_empty() {
                return Err(Invalid::new(format!("admins[{i}]"), "empty name"));
            }
        }
        Ok(())
    }

    /// The releases, parsed (invalid entries were refused by [`WarmConfig::validate`]).
    pub fn release_references(&self) -> Vec<Reference> {
        self.releases
            .iter()
            .filter_map(|r| Reference::parse_normalized(r).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WarmConfig, String> {
        let config: WarmConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        config
            .validate()
            .map_err(|Invalid { key, message }| format!("{key}: {message}"))?;
        Ok(config)
    }

    #[test]
    fn every_key_is_optional_and_null_means_the_default() {
        assert_eq!(
            (parse("{}"), parse("releases:\nconcurrency:\n")),
            (Ok(WarmConfig::default()), Ok(WarmConfig::default()))
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let concurrency = parse("concurrency: 0").unwrap_err();
        let release = parse("releases: ['quay.io/Bad Name:1']").unwrap_err();
        let empty = parse("architectures: []").unwrap_err();
        let misspelt = parse("architecture: [amd64]").unwrap_err();
        assert_eq!(
            (
                concurrency.starts_with("concurrency: "),
                release.starts_with("releases[0]: "),
                empty.contains("at least one architecture"),
                misspelt.contains("unknown field"),
            ),
            (true, true, true, true),
            "{concurrency}\n{release}\n{empty}\n{misspelt}"
        );
    }

    #[test]
    fn all_keeps_every_platform() {
        assert_eq!(
            parse("architectures: [all]\nconcurrency: 2").map(|c| (c.architectures, c.concurrency)),
            Ok((PlatformFilter::All, 2))
        );
    }
}
