//! What the HTTP surface ([`crate::http`]) counts: client requests and the time to their response
//! headers, the connections open on the API address and those closed for a stalled response, and
//! requests refused as loops.
//!
//! Principal type: [`HttpMetrics`], a part of [`crate::metrics::Metrics`], which registers it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteMethodLabels {
    route: &'static str,
    method: &'static str,
}

/// The families of the HTTP surface: `http_requests`, `http_request_duration_seconds`,
/// `connections`, `connections_stalled` and `loops_refused`.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteMethodLabels, Histogram>,
    connections: Gauge,
    connections_stalled: Counter,
    loops_refused: Counter,
}

impl HttpMetrics {
    /// The families, timing requests in histograms made by `latency` (the buckets are the
    /// exposition's choice, shared with the upstream timings).
    pub fn new(latency: fn() -> Histogram) -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            connections: Gauge::default(),
            connections_stalled: Counter::default(),
            loops_refused: Counter::default(),
        }
    }

    /// Registers the families in `registry` (the exporter's root).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "Client requests by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response headers, by route and method",
            self.request_duration.clone(),
        );
        registry.register(
            "connections",
            "Client connections open on the API address",
            self.connections.clone(),
        );
        registry.register(
            "connections_stalled",
            "Client connections closed because a response got no bytes out within limits.write_stall_timeout",
            self.connections_stalled.clone(),
        );
        registry.register(
            "loops_refused",
            "Requests answered 508 Loop Detected because they carried this mirrorgate's own Via token",
            self.loops_refused.clone(),
        );
    }

    /// The gauge of open client connections.
    pub fn connections(&self) -> Gauge {
        self.connections.clone()
    }

    /// The counter of client connections closed for a stalled response.
    pub fn connections_stalled(&self) -> Counter {
        self.connections_stalled.clone()
    }

    /// Counts one answered client request.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteMethodLabels { route, method })
            .observe(took.as_secs_f64());
    }

    /// Counts a request refused as a loop (508).
    pub fn loop_refused(&self) {
        self.loops_refused.inc();
    }
}
