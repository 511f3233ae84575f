//! The OCI distribution API surface: the server loop, request routing and addressing ([`route`]),
//! OCI error bodies ([`error`]), and HTTPS with a certificate reloaded on change ([`crate::tls`]). What
//! each request gets is decided by [`crate::proxy`]; this module only speaks HTTP. Beside the
//! registry API, the operator endpoints (`/metrics`, the probes, [`status_endpoint`],
//! [`warm_endpoint`], [`withdrawn_endpoint`]), one table of which listener (`listen`,
//! `metrics_listen`) serves each deciding where a request to one goes (the `operator` module).
//!
//! Principal types: [`ApiRequest`] (what a request asks for), [`ApiError`] and [`ErrorCode`] (the
//! one mapping of errors to OCI bodies), [`LimitsConfig`] (the `limits` section); entry points
//! [`serve`] (or [`serve_with_warm`], with the warm-up admin API) and [`serve_metrics`].

mod answer;
mod coalesce;
mod conditional;
mod connection;
pub mod error;
mod limits;
mod metrics_listener;
mod operator;
mod operator_client;
mod protocol;
pub mod route;
mod server;
pub mod status_endpoint;
pub mod warm_endpoint;
pub mod withdrawn_endpoint;

pub use crate::proxy::{Body, empty_body, full_body};
pub use crate::tls::ServerTls;
pub use error::{ApiError, ErrorCode};
pub use limits::LimitsConfig;
pub use metrics_listener::serve_metrics;
pub use route::{ApiRequest, Repository};
pub use server::{serve, serve_with_warm};

/// The header every registry response carries.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
