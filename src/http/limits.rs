//! The `limits` section: the bounds that keep one client, or a crowd of them, from taking the
//! service or the upstreams down.
//!
//! Principal type: [`LimitsConfig`]. The server applies the connection and header bounds; the
//! proxy's admission applies the upstream-fetch bounds.

use std::time::Duration;

use crate::section::section;
use crate::section::values::{ByteSize, HumanDuration, Invalid};

/// The `limits` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connections served at once on the API address; further ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// How long a connection may go without a request in progress before it is closed: from
    /// accept to its first request head (TLS handshake included), between requests (HTTP/1.1
    /// keep-alive, HTTP/2 with no open stream), and to answer an HTTP/2 ping.
    pub header_read_timeout: Duration,
    /// The largest request head accepted; a larger one is answered `431`. HTTP/1.1: the request
    /// line and header lines as sent, bytes exactly; HTTP/2: the header list size of RFC 9113
    /// (each field's name and value, plus 32 bytes).
    pub max_header_size: ByteSize,
    /// The most header fields an HTTP/1.1 request may carry; more are answered `431` (HTTP/2
    /// heads are bounded by `max_header_size` alone).
    pub max_headers: usize,
    /// Upstream fetches (manifest, blob, tag revalidation, listing) under way at once. A request
    /// that needs one more waits up to `upstream_queue_timeout`, then gets `429
    /// TOOMANYREQUESTS` with `Retry-After`. Cached content never waits.
    pub max_upstream_fetches: usize,
    /// How long a request waits for an upstream fetch slot.
    pub upstream_queue_timeout: Duration,
    /// How long a response may make no progress towards the client before its connection is
    /// closed: the socket accepting no bytes (HTTP/1.1 and HTTP/2), or an HTTP/2 stream whose
    /// flow-control window lets less than a piece of its body out (see the `connection` module).
    pub write_stall_timeout: Duration,
    /// HTTP/2 streams (requests in progress) one connection may have open at once, advertised
    /// in `SETTINGS_MAX_CONCURRENT_STREAMS`; further ones are refused (`REFUSED_STREAM`).
    pub max_concurrent_streams: u32,
}

section!(LimitsConfig {
    max_connections,
    header_read_timeout as HumanDuration,
    max_header_size,
    max_headers,
    max_upstream_fetches,
    upstream_queue_timeout as HumanDuration,
    write_stall_timeout as HumanDuration,
    max_concurrent_streams,
});

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_header_size: ByteSize::kib(64),
            max_headers: 100,
            max_upstream_fetches: 64,
            upstream_queue_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
        }
    }
}

impl LimitsConfig {
    /// The smallest `max_header_size`: hyper cannot parse a request head in less.
    pub const MIN_HEADER_SIZE: ByteSize = ByteSize::kib(8);
    /// The smallest `max_headers`: what registry clients send, with room to spare.
    pub const MIN_HEADERS: usize = 16;

    /// Checks that every bound lets something through; keys are relative to the section.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_connections == 0 {
            return Err(Invalid::new("max_connections", "must be greater than 0"));
        }
        if self.header_read_timeout.is_zero() {
            return Err(Invalid::new(
                "header_read_timeout",
                "must be greater than 0s",
            ));
        }
        if self.max_header_size.0 < Self::MIN_HEADER_SIZE.0 {
            return Err(Invalid::new(
                "max_header_size",
                format!("must be at least {}", Self::MIN_HEADER_SIZE),
            ));
        }
        if self.max_headers < Self::MIN_HEADERS {
            return Err(Invalid::new(
                "max_headers",
                format!("must be at least {}", Self::MIN_HEADERS),
            ));
        }
        if self.max_upstream_fetches == 0 {
            return Err(Invalid::new(
                "max_upstream_fetches",
                "must be greater than 0",
            ));
        }
        if self.write_stall_timeout.is_zero() {
            return Err(Invalid::new(
                "write_stall_timeout",
                "must be greater than 0s",
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(Invalid::new(
                "max_concurrent_streams",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
