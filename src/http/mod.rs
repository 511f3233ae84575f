//! The OCI distribution API surface: the server loop, request routing and addressing ([`route`]),
//! OCI error bodies ([`error`]), and HTTPS with a certificate reloaded on change ([`tls`]). What
//! each request gets is decided by [`crate::proxy`]; this module only speaks HTTP.

mod connection;
pub mod error;
mod metrics_endpoint;
pub mod route;
mod server;
pub mod status_endpoint;
pub mod tls;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

pub use error::{ApiError, ErrorCode};
pub use metrics_endpoint::serve_metrics;
pub use route::{ApiRequest, Repository};
pub use server::serve;
pub use tls::ServerTls;

/// The response body type: whole buffers and streamed blobs alike. A stream that fails mid-body
/// makes the server abort the connection, so a client never takes a cut body for a whole one.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A body of known bytes.
pub fn full_body(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body (HEAD responses).
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The header every registry response carries.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
