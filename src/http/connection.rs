//! One client connection from accept to close, and the deadlines that keep a silent client from
//! holding a place under `limits.max_connections`.
//!
//! [`Activity`] counts the requests a connection has in progress (a request is in progress from
//! the moment its head is parsed until its response body is dropped, whole or not);
//! [`drive`] serves the connection and asks it to finish (HTTP/1.1: close once idle; HTTP/2:
//! `GOAWAY`) once it has had no request in progress for the idle timeout, counted from accept,
//! so that the protocol-detection read, the TLS handshake and the first request head all fall
//! within it. A client that ignores the request to finish (an HTTP/2 peer that never answers
//! the `GOAWAY`'s ping) is disconnected one more timeout later.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::Body;

/// The number of requests in progress on one connection, and since when it has had none.
///
/// Counted with atomics and read only when a deadline falls due: a request costs two atomic
/// updates and no wake-up of the task that drives the connection (a channel that woke it at
/// every request start and end cost the cached-manifest path about a tenth of its throughput).
#[derive(Clone)]
pub(super) struct Activity {
    shared: Arc<Shared>,
}

struct Shared {
    /// Requests in progress.
    open: AtomicUsize,
    /// When the last request ended, in nanoseconds since `origin`.
    idle_since: AtomicU64,
    origin: Instant,
}

impl Activity {
    /// A connection accepted at `accepted`, idle since then.
    pub(super) fn new(accepted: Instant) -> Activity {
        Activity {
            shared: Arc::new(Shared {
                open: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
                origin: accepted,
            }),
        }
    }

    /// Marks a request in progress until the returned guard is dropped.
    pub(super) fn begin(&self) -> InProgress {
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        InProgress {
            shared: self.shared.clone(),
        }
    }

    /// When the connection fell idle, or `None` while a request is in progress.
    fn idle_since(&self) -> Option<Instant> {
        if self.shared.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let nanos = self.shared.idle_since.load(Ordering::Acquire);
        Some(self.shared.origin + Duration::from_nanos(nanos))
    }
}

/// A request in progress; dropping it ends it.
pub(super) struct InProgress {
    shared: Arc<Shared>,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let shared = &self.shared;
        // The time is stored before the count falls, so that whoever sees no request in
        // progress sees this end (or a later one).
        let nanos = u64::try_from(shared.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.idle_since.fetch_max(nanos, Ordering::AcqRel);
        shared.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress while it is being sent.
pub(super) struct Tracked {
    body: Body,
    _in_progress: InProgress,
}

impl Tracked {
    /// `body` with `in_progress` held until it is dropped.
    pub(super) fn new(body: Body, in_progress: InProgress) -> Tracked {
        Tracked {
            body,
            _in_progress: in_progress,
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `connection` to its end, or until it has been idle (no request in progress) for
/// `idle` since it was accepted or since its last request ended; then asks it to finish with
/// `finish`, and drops it (closing the socket) if it has not finished one more `idle` later.
/// When `stop` is closed (the server is stopping) it is asked to finish too; the server's grace
/// period bounds that wait.
///
/// The activity is looked at when a deadline falls due: a connection found busy, or idle for
/// less than `idle`, gets the next deadline it could meet.
pub(super) async fn drive<C, E>(
    connection: C,
    finish: impl Fn(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    stop: watch::Receiver<()>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = pin!(connection);
    let deadline = sleep_until(activity.shared.origin + idle);
    let mut deadline = pin!(deadline);
    // Made once, not at every turn of the loop (every wake-up of the connection).
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.changed().await;
    };
    let mut stopped = pin!(stopped);
    let mut finishing = false;
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = deadline.as_mut() => {
                if finishing {
                    tracing::debug!("connection did not finish after being asked to; closed");
                    return Ok(());
                }
                let now = Instant::now();
                match activity.idle_since() {
                    Some(since) if now >= since + idle => {
                        finish(connection.as_mut());
                        finishing = true;
                        deadline.as_mut().reset(now + idle);
                    }
                    Some(since) => deadline.as_mut().reset(since + idle),
                    None => deadline.as_mut().reset(now + idle),
                }
            }
            () = stopped.as_mut(), if !stopping && !finishing => {
                stopping = true;
                finish(connection.as_mut());
            }
        }
    }
}
