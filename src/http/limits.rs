//! The `limits` section: the bounds that keep one client, or a crowd of them, from taking the
//! service or the upstreams down.
//!
//! Principal type: [`LimitsConfig`]. The server applies the connection and header bounds; the
//! proxy's admission applies the upstream-fetch bounds.

use std::time::Duration;

use serde::Deserialize;

use crate::settings::{ByteSize, HumanDuration, Invalid};

/// The `limits` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawLimits")]
pub struct LimitsConfig {
    /// Connections served at once on the API address; further ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// How long a connection may go without a request in progress before it is closed: from
    /// accept to its first request head (TLS handshake included), between requests (HTTP/1.1
    /// keep-alive, HTTP/2 with no open stream), and to answer an HTTP/2 ping.
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted; a larger one is answered
    /// `431`.
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_header_size: ByteSize::kib(64),
            max_headers: 100,
            max_upstream_fetches: 64,
            upstream_queue_timeout: Duration::from_secs(10),
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
        Ok(())
    }
}

/// The section as written: every key optional, `null` meaning the default.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: Option<usize>,
    header_read_timeout: Option<HumanDuration>,
    max_header_size: Option<ByteSize>,
    max_headers: Option<usize>,
    max_upstream_fetches: Option<usize>,
    upstream_queue_timeout: Option<HumanDuration>,
}

impl From<RawLimits> for LimitsConfig {
    fn from(raw: RawLimits) -> Self {
        let default = LimitsConfig::default();
        LimitsConfig {
            max_connections: raw.max_connections.unwrap_or(default.max_connections),
            header_read_timeout: raw
                .header_read_timeout
                .map_or(default.header_read_timeout, |d| d.0),
            max_header_size: raw.max_header_size.unwrap_or(default.max_header_size),
            max_headers: raw.max_headers.unwrap_or(default.max_headers),
            max_upstream_fetches: raw
                .max_upstream_fetches
                .unwrap_or(default.max_upstream_fetches),
            upstream_queue_timeout: raw
                .upstream_queue_timeout
                .map_or(default.upstream_queue_timeout, |d| d.0),
        }
    }
}
