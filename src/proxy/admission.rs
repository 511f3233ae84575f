//! Admission of upstream fetches: at most `limits.max_upstream_fetches` are under way at once.
//!
//! A cold cluster start can send thousands of pulls at once; passed through unbounded they
//! would open as many connections to a mirror (which then throttles or falls over) and as many
//! downloads into the store. So every operation that contacts an upstream — a manifest fetch, a
//! tag revalidation, a blob download, a pass-through, a listing, a repository check — first
//! takes a slot, and holds it until its upstream response is consumed. A request that finds no
//! free slot waits in a fair queue for `limits.upstream_queue_timeout`, then is answered `429
//! TOOMANYREQUESTS` with `Retry-After`, which every registry client honours with a back-off.
//! Cached content never takes a slot, and requests joining a fetch under way share its slot.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::ApiError;
use crate::metrics::Metrics;

/// The `Retry-After` of a refusal, in seconds: long enough for a fetch or two to finish, short
/// enough that a client backing off for it does not stall a node's start.
pub const RETRY_AFTER_SECONDS: u64 = 2;

/// The slots for upstream fetches.
#[derive(Debug)]
pub(crate) struct FetchSlots {
    semaphore: Arc<Semaphore>,
    size: usize,
    wait: Duration,
    in_flight: Gauge,
    queued: Gauge,
    refused: Counter,
}

/// One upstream fetch slot, free again when dropped.
#[derive(Debug)]
pub(crate) struct FetchSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for FetchSlot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl FetchSlots {
    /// `size` slots; a request waits at most `wait` for one.
    pub(crate) fn new(size: usize, wait: Duration, metrics: &Metrics) -> FetchSlots {
        let (in_flight, queued, refused) = metrics.fetch_slots();
        FetchSlots {
            semaphore: Arc::new(Semaphore::new(size)),
            size,
            wait,
            in_flight,
            queued,
            refused,
        }
    }

    /// Fetches under way.
    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Requests waiting for a slot.
    pub(crate) fn queued(&self) -> i64 {
        self.queued.get()
    }

    /// The number of slots.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Requests refused since the start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// A slot for fetching `what` (for the refusal message), or 429 once none freed up within
    /// the wait.
    pub(crate) async fn acquire(&self, what: &str) -> Result<FetchSlot, ApiError> {
        let permit = match self.semaphore.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.queued.inc();
                let waited =
                    tokio::time::timeout(self.wait, self.semaphore.clone().acquire_owned()).await;
                self.queued.dec();
                match waited {
                    Ok(Ok(permit)) => permit,
                    // Timed out (or closed, which this code never does).
                    _ => {
                        self.refused.inc();
                        tracing::warn!(
                            what,
                            slots = self.size,
                            waited = ?self.wait,
                            "no upstream fetch slot free; answered 429"
                        );
                        return Err(ApiError::too_many_requests(
                            format!(
                                "mirrorgate is fetching {} things upstream already; {what} is not cached: try again later",
                                self.size
                            ),
                            RETRY_AFTER_SECONDS,
                        ));
                    }
                }
            }
        };
        self.in_flight.inc();
        Ok(FetchSlot {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::stats::CacheStats;

    fn slots(size: usize, wait: Duration) -> FetchSlots {
        FetchSlots::new(size, wait, &Metrics::new(Arc::new(CacheStats::default())))
    }

    #[tokio::test]
    async fn a_request_beyond_the_slots_waits_then_gets_429_with_retry_after() {
        let slots = slots(1, Duration::from_millis(50));
        let _held = slots.acquire("first").await.expect("a free slot");
        let refused = slots.acquire("second").await.expect_err("no slot");
        assert_eq!(
            (refused.status.as_u16(), refused.retry_after),
            (429, Some(RETRY_AFTER_SECONDS))
        );
    }

    #[tokio::test]
    async fn a_queued_request_gets_the_slot_freed_while_it_waits() {
        let slots = Arc::new(slots(1, Duration::from_secs(30)));
        let held = slots.acquire("first").await.expect("a free slot");
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire("second").await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.await.expect("task").is_ok());
    }
}
