//! mirrorgate: a pull-through OCI registry proxy that applies OpenShift image mirror rules
//! (ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet) exactly as a node would.
//!
//! The crate is a library with a thin binary on top (`src/main.rs`). Each module is one concept:
//! - [`reference`](mod@reference): the image reference grammar, Docker Hub normalisation and digests;
//! - [`rules`]: the mirror objects, their validation, the merged override map and `resolve`;
//! - [`config`]: the proxy's own configuration file.

#![warn(missing_docs)]

pub mod config;
pub mod reference;
pub mod rules;
