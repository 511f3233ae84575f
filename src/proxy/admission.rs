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
//!
//! Two admission classes ([`Admission`]): clients, and background work (the in-process API a
//! warm-up job calls). Background work takes its slots from a pool of its own, so it can never
//! take a slot a client would get: clients keep every `max_upstream_fetches` slot whatever the
//! background does. Background work waits for its slot as long as it takes (no `429`: nobody is
//! waiting at the other end). The class travels with the task ([`Admission::scope`]), so the
//! fetch paths shared with client requests need no extra parameter.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::Error;
use crate::metrics::Metrics;

/// The `Retry-After` of a refusal, in seconds: long enough for a fetch or two to finish, short
/// enough that a client backing off for it does not stall a node's start.
pub const RETRY_AFTER_SECONDS: u64 = 2;

/// Who an upstream fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// A client request: the `limits.max_upstream_fetches` slots, a bounded wait.
    #[default]
    Client,
    /// Background work: a pool of its own, never a client's slot.
    Background,
}

tokio::task_local! {
    static ADMISSION: Admission;
}

impl Admission {
    /// The class of the task running now (clients unless scoped otherwise).
    pub fn current() -> Admission {
        ADMISSION.try_with(|class| *class).unwrap_or_default()
    }

    /// Runs `work` in this class.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        ADMISSION.scope(self, work).await
    }
}

/// Slots of background work for `size` client slots: a quarter, at least one.
fn background_size(size: usize) -> usize {
    (size / 4).max(1)
}

/// The slots for upstream fetches.
#[derive(Debug)]
pub(crate) struct FetchSlots {
    semaphore: Arc<Semaphore>,
    /// The pool of [`Admission::Background`].
    background: Arc<Semaphore>,
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
        let (in_flight, queued, refused) = metrics.proxy.fetch_slots();
        FetchSlots {
            semaphore: Arc::new(Semaphore::new(size)),
            background: Arc::new(Semaphore::new(background_size(size))),
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
    pub(crate) async fn acquire(&self, what: &str) -> Result<FetchSlot, Error> {
        if Admission::current() == Admission::Background {
            let permit =
                self.background.clone().acquire_owned().await.map_err(|_| {
                    Error::Upstream("the background fetch slots are closed".to_owned())
                })?;
            self.in_flight.inc();
            return Ok(FetchSlot {
                _permit: permit,
                in_flight: self.in_flight.clone(),
            });
        }
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
                        return Err(Error::Busy {
                            message: format!(
                                "mirrorgate is fetching {} things upstream already; {what} is not cached: try again later",
                                self.size
                            ),
                            retry_after: RETRY_AFTER_SECONDS,
                        });
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
        let refused =
            crate::http::ApiError::from(slots.acquire("second").await.expect_err("no slot"));
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

    #[tokio::test]
    async fn background_work_never_takes_a_clients_slot() {
        let slots = slots(1, Duration::from_millis(50));
        // Background work holds every slot of its pool...
        let background = Admission::Background
            .scope(slots.acquire("warm-up"))
            .await
            .expect("a background slot");
        // ...and a client still finds its one slot free, at once.
        let client = slots.acquire("client").await.map(|_| ());
        // With the client slot taken, background work still gets its own.
        let _client = slots.acquire("client").await.expect("the client slot");
        drop(background);
        let again = Admission::Background
            .scope(slots.acquire("warm-up"))
            .await
            .map(|_| ());
        assert_eq!((client, again), (Ok(()), Ok(())));
    }

    #[tokio::test]
    async fn background_work_waits_for_its_own_pool_not_for_clients() {
        let slots = Arc::new(slots(4, Duration::from_millis(50)));
        let held = Admission::Background
            .scope(slots.acquire("warm-up 1"))
            .await
            .expect("the background slot");
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move {
                Admission::Background
                    .scope(slots.acquire("warm-up 2"))
                    .await
                    .map(|_| ())
            }
        });
        // Every client slot is free while background work queues behind its own pool.
        let clients: Vec<_> = futures_util::future::join_all((0..4).map(|_| slots.acquire("c")))
            .await
            .into_iter()
            .map(|slot| slot.is_ok())
            .collect();
        drop(held);
        let waited = waiting.await.expect("the task ran");
        assert_eq!((clients, waited), (vec![true; 4], Ok(())));
    }
}
