//! mirrorgate: a pull-through OCI registry proxy that applies OpenShift image mirror rules
//! (ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet) exactly as a node would.
//!
//! The crate is a library with a thin binary on top (`src/main.rs`). Each module is one concept:
//! - [`reference`](mod@reference): the image reference grammar, Docker Hub normalisation and digests;
//! - [`rules`]: the mirror objects, their validation, the merged override map and `resolve`;
//! - [`config`]: the proxy's own configuration file;
//! - [`access`]: who may pull: client credentials (htpasswd, tokens) and repository scopes;
//! - [`upstream`]: the client for upstream registries (endpoints, TLS, credentials, tokens);
//! - [`http`]: the OCI distribution API surface (routing of paths, addressing, error bodies);
//! - [`proxy`]: serving each request from the pull sources the rules give, verifying content;
//! - [`cache`]: manifests, tag answers and blobs kept so that repeated pulls cost nothing;
//! - [`metrics`]: what every part did, for Prometheus;
//! - [`reload`]: picking up changed rules and settings without a restart;
//! - [`release`]: OpenShift release payloads and the plan of warming one;
//! - [`status`]: the state of a running proxy for `/status` and `mirrorgate status`;
//! - `kubernetes` (feature `kubernetes`, on by default): mirror objects watched in a live cluster.

#![warn(missing_docs)]

pub mod access;
pub mod cache;
pub mod config;
pub mod http;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod metrics;
pub mod proxy;
pub mod reference;
pub mod release;
pub mod reload;
pub mod rules;
pub mod status;
pub mod upstream;
