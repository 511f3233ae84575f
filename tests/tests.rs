//! The integration tests, one binary (as ripgrep does): each feature is a module in its own file
//! beside this one, and `support` (the real registries, clients and servers the tests run) is
//! compiled once for all of them instead of once per file. Cargo.toml sets `autotests = false`
//! and names this file as the only `[[test]]`; a feature's tests are selected by module,
//! e.g. `cargo test --test tests cache::`.

mod support;

mod cache;
mod clients;
mod cluster_rules;
mod ensure;
mod first_hour;
mod harness;
mod hostile;
mod hypershift_docs;
mod kubernetes;
mod limits;
mod manual;
mod oci_client;
mod operations;
mod podman;
mod prometheus;
mod properties;
mod proxy;
mod registries_conf;
mod release;
mod rules;
mod security;
mod self_mirror;
mod shared_cache;
mod shared_store;
mod status;
mod tls;
mod upstream_auth;
mod upstream_failures;
mod vectors;
mod warm;
mod warm_hosted;
mod withdrawn;
