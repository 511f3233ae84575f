//! The `kubernetes:` section of the configuration file: whether the mirror rules also come from a
//! live cluster, and which of its objects.
//!
//! ```yaml
//! kubernetes:                 # absent: no cluster rules (files only)
//!   kubeconfig: null          # null: in-cluster service account, else $KUBECONFIG or ~/.kube/config
//!   mirror_sets: true         # ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet
//!   hosted_clusters: true     # HostedClusters, NodePools and the ConfigMaps they reference
//!   namespaces: []            # namespaces watched for HostedClusters, NodePools, ConfigMaps; []: all
//! ```
//!
//! As everywhere in the configuration, a key that is absent or `null` takes its default and an
//! unknown key is an error.

use std::collections::BTreeSet;
use std::path::PathBuf;

use thiserror::Error;

use crate::section::section;

/// The parsed `kubernetes:` section. Read it with [`Config::from_yaml_str`] (or as a key of the
/// configuration file), or build it by hand followed by [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A kubeconfig file; `None`: the in-cluster service account when running in a pod, else
    /// `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Watch the cluster-scoped ImageContentSourcePolicy, ImageDigestMirrorSet and
    /// ImageTagMirrorSet objects.
    pub mirror_sets: bool,
    /// Watch HostedClusters (`spec.imageContentSources`, `spec.imageMirrorConfigRef`), NodePools
    /// (`spec.config`) and the ConfigMaps they reference.
    pub hosted_clusters: bool,
    /// Namespaces watched for HostedClusters, NodePools and their ConfigMaps; empty: all.
    pub namespaces: Vec<String>,
}

section!(Config {
    kubeconfig,
    mirror_sets,
    hosted_clusters,
    namespaces,
});

impl Default for Config {
    fn default() -> Config {
        Config {
            kubeconfig: None,
            mirror_sets: true,
            hosted_clusters: true,
            namespaces: Vec::new(),
        }
    }
}

/// A `kubernetes:` section that cannot be used; `key` is the path below `kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("kubernetes.{key}: {message}")]
pub struct ConfigError {
    /// The offending key, e.g. `namespaces[1]`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Config {
    /// Parses and validates the section from YAML text (the value of the `kubernetes` key).
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError {
            key: String::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: namespace names, duplicates, and that something is watched.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.mirror_sets && !self.hosted_clusters {
            return Err(ConfigError {
                key: "mirror_sets".to_owned(),
                message:
                    "mirror_sets and hosted_clusters are both false, so nothing would be read \
                          from the cluster: remove the kubernetes section instead"
                        .to_owned(),
            });
        }
        if let Some(path) = &self.kubeconfig
            && path.as_os_str().is_empty()
        {
            return Err(ConfigError {
                key: "kubeconfig".to_owned(),
                message: "empty path: write null for the in-cluster service account or \
                          $KUBECONFIG"
                    .to_owned(),
            });
        }
        let mut seen = BTreeSet::new();
        for (i, namespace) in self.namespaces.iter().enumerate() {
            let key = format!("namespaces[{i}]");
            if let Err(why) = check_namespace(namespace) {
                return Err(ConfigError {
                    key,
                    message: format!("invalid namespace \"{namespace}\": {why}"),
                });
            }
            if !seen.insert(namespace.as_str()) {
                return Err(ConfigError {
                    key,
                    message: format!("namespace \"{namespace}\" is listed twice"),
                });
            }
        }
        if !self.namespaces.is_empty() && !self.hosted_clusters {
            return Err(ConfigError {
                key: "namespaces".to_owned(),
                message:
                    "namespaces only apply to HostedClusters, NodePools and their ConfigMaps, \
                          and hosted_clusters is false (the mirror sets are cluster-scoped)"
                        .to_owned(),
            });
        }
        Ok(())
    }
}

/// A namespace name is an RFC 1123 label: at most 63 lower-case alphanumerics or `-`, starting
/// and ending with an alphanumeric.
fn check_namespace(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 63 {
        return Err("longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lower-case letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_takes_every_default() {
        assert_eq!(Config::from_yaml_str("{}"), Ok(Config::default()));
        assert_eq!(Config::from_yaml_str("null"), Ok(Config::default()));
    }

    #[test]
    fn keys_as_written_are_kept() {
        let config = Config::from_yaml_str(
            "kubeconfig: /etc/kube/config\nmirror_sets: false\nnamespaces: [clusters, team-a]\n",
        )
        .unwrap();
        assert_eq!(
            config,
            Config {
                kubeconfig: Some(PathBuf::from("/etc/kube/config")),
                mirror_sets: false,
                hosted_clusters: true,
                namespaces: vec!["clusters".to_owned(), "team-a".to_owned()],
            }
        );
    }

    #[test]
    fn an_unknown_key_is_an_error() {
        let error = Config::from_yaml_str("namespace: [clusters]\n").unwrap_err();
        assert!(error.message.contains("namespace"), "{error}");
    }

    #[test]
    fn bad_namespaces_are_named_by_index() {
        let error = Config::from_yaml_str("namespaces: [clusters, Team_A]\n").unwrap_err();
        assert_eq!(
            (error.key.as_str(), error.to_string().contains("Team_A")),
            ("namespaces[1]", true)
        );
        let error = Config::from_yaml_str("namespaces: [a, a]\n").unwrap_err();
        assert_eq!(error.key, "namespaces[1]");
    }

    #[test]
    fn watching_nothing_is_an_error() {
        let error =
            Config::from_yaml_str("mirror_sets: false\nhosted_clusters: false\n").unwrap_err();
        assert_eq!(error.key, "mirror_sets");
    }

    #[test]
    fn namespaces_without_hosted_clusters_is_an_error() {
        let error =
            Config::from_yaml_str("hosted_clusters: false\nnamespaces: [clusters]\n").unwrap_err();
        assert_eq!(error.key, "namespaces");
    }
}
