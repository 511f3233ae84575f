//! mirrorgate: a pull-through OCI registry proxy that applies OpenShift image mirror rules
//! (ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet) exactly as a node would.
//!
//! The crate is a library with a thin binary on top (`src/main.rs`, its commands in `src/cli/`).
//! Each module is one concept:
//! - [`reference`](mod@reference): the image reference grammar, Docker Hub normalisation and digests;
//! - [`rules`]: the mirror objects, their validation, the merged override map and `resolve`;
//! - [`section`]: how each module's configuration section is read (a missing or `null` key means
//!   the default) and the values sections are made of ([`section::values`]: sizes, durations,
//!   a section's validation error), below every module that owns a section;
//! - [`access`]: who may pull: client credentials (htpasswd, tokens) and repository scopes;
//! - [`upstream`]: the client for upstream registries (endpoints, TLS, credentials, tokens);
//! - [`cache`]: manifests, tag answers and blobs kept so that repeated pulls cost nothing;
//! - [`metrics`]: what every part did, for Prometheus;
//! - [`tls`]: HTTPS on the listener, with a certificate reloaded on change;
//! - [`proxy`]: serving each request from the pull sources the rules give, verifying content;
//! - [`release`]: OpenShift release payloads and the plan of warming one;
//! - [`warm`]: release warm-up jobs run inside the server through the proxy, and their progress
//!   (HostedClusters watched through `kubernetes`);
//! - [`http`]: the OCI distribution API surface (routing of paths, addressing, error bodies);
//! - [`config`]: the proxy's own configuration file, composed of each module's section;
//! - [`source`]: where the rules in force come from (rule files, a live cluster), as complete
//!   views, and the stream of them;
//! - [`reload`]: picking up changed rules and settings without a restart;
//! - [`status_report`]: the report of a running proxy's state that `/status` answers and
//!   `mirrorgate status` prints;
//! - `kubernetes` (feature `kubernetes`, on by default): mirror objects watched in a live cluster.
//!
//! Dependencies point one way, in the order of this list (each module owns its configuration
//! section and its errors; `http` alone turns errors into HTTP answers).

#![warn(missing_docs)]

pub mod access;
pub mod cache;
pub mod config;
pub mod http;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
/// Without the `kubernetes` feature: only the metrics of the cluster rule source, so that its
/// series exist (at 0) either way.
#[cfg(not(feature = "kubernetes"))]
pub mod kubernetes {
    pub mod metrics;
}
pub(crate) mod log_limit;
pub mod metrics;
pub mod proxy;
pub mod reference;
pub mod release;
pub mod reload;
pub mod rules;
pub mod section;
pub mod source;
pub mod status_report;
pub mod tls;
pub mod upstream;
pub mod warm;
