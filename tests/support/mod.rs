//! Test harness for integration tests: real registries, real images, real clients.
//!
//! Compiled once, in the one integration test binary (tests/tests.rs); each feature module
//! takes it with `use crate::support;` and gets:
//! - [`Registry`]: a CNCF Distribution registry (Debian's `docker-registry`) on a free loopback
//!   port, optionally behind htpasswd auth, with request accounting read from its access log;
//! - [`Image`], [`single_arch`], [`multi_arch`]: images generated in Rust as OCI image layouts
//!   (real gzip'd tar layers, valid configs, manifests and indexes);
//! - [`push`], [`skopeo`], [`copy_to_layout`], [`layouts_identical`]: `skopeo` as the real client;
//! - [`SyntheticRelease`]: an OpenShift release payload (components sharing layers, a release
//!   image with `release-manifests/`) pushed to a registry, and [`RegistryFetcher`] to walk it;
//! - [`Mirrorgate`]: the proxy binary of this crate, configured for a test;
//! - [`Kmock`]: an emulated Kubernetes API server (PyPI `kmock`) for the cluster rule source;
//! - [`Prometheus`]: a real Prometheus (Debian's `prometheus`) scraping it;
//! - [`SeaweedFs`]: a real S3-compatible server (SeaweedFS `weed mini`), one at a time;
//! - [`http_get`], [`http_request`]: a minimal HTTP/1.1 client over `std::net::TcpStream`;
//! - [`Hostile`]: an in-process registry whose every answer the test writes.
//!
//! Every process runs on 127.0.0.1 and is killed (and reaped) when its guard is dropped, also when
//! the test panics. Each guard owns its own temporary directory and port, so tests run in
//! parallel.

// Not every integration test uses every helper.
#![allow(dead_code, unused_imports)]

mod hostile;
mod http;
mod image;
pub mod kmock;
mod mirrorgate;
mod process;
mod prometheus;
mod registry;
mod release;
mod seaweedfs;
mod throttle;

pub use hostile::{Hostile, loopback_server};
pub use http::{HttpResponse, http_get, http_request, try_http_request};
pub use image::{
    CONTAINERS_IMAGE_ACCEPT, DOCKER_MANIFEST_MEDIA_TYPE, Image, LAYER_MEDIA_TYPE,
    OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, copy_to_layout, layouts_identical, multi_arch,
    push, push_as, push_with_creds, sha256_digest, single_arch, skopeo,
};
pub use kmock::Kmock;
pub use mirrorgate::{Mirrorgate, SELF_ADDR, cli, mirrored_rules, serve_in_process};
pub use process::{PROBE_USER_AGENT, READY_TIMEOUT, free_port, spawn_logged, wait_until};
pub use prometheus::Prometheus;
pub use registry::{LoggedRequest, Registry, parse_access_line};
pub use release::{RegistryFetcher, ReleaseSpec, SyntheticRelease};
pub use seaweedfs::SeaweedFs;
pub use throttle::Throttle;
