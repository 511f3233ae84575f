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
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::Body;

/// The number of requests in progress on one connection.
#[derive(Clone)]
pub(super) struct Activity {
    open: Arc<watch::Sender<usize>>,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            open: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Marks a request in progress until the returned guard is dropped.
    pub(super) fn begin(&self) -> InProgress {
        self.open.send_modify(|open| *open += 1);
        InProgress {
            open: self.open.clone(),
        }
    }

    /// `body` with `in_progress` held until it is dropped.
    pub(super) fn track(body: Body, in_progress: InProgress) -> Body {
        Tracked {
            body,
            _in_progress: in_progress,
        }
        .boxed_unsync()
    }
}

/// A request in progress; dropping it ends it.
pub(super) struct InProgress {
    open: Arc<watch::Sender<usize>>,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.open.send_modify(|open| *open = open.saturating_sub(1));
    }
}

/// A response body that keeps its request counted as in progress while it is being sent.
struct Tracked {
    body: Body,
    _in_progress: InProgress,
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
/// `idle` since `accepted` or since its last request ended; then asks it to finish with
/// `finish`, and drops it (closing the socket) if it has not finished one more `idle` later.
/// When `stop` is closed (the server is stopping) it is asked to finish too; the server's grace
/// period bounds that wait.
pub(super) async fn drive<C, E>(
    connection: C,
    finish: impl Fn(Pin<&mut C>),
    activity: &Activity,
    accepted: Instant,
    idle: Duration,
    mut stop: watch::Receiver<()>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = pin!(connection);
    let mut open = activity.open.subscribe();
    let mut idle_since = accepted;
    let mut finishing: Option<Instant> = None;
    let mut stopping = false;
    loop {
        let busy = *open.borrow_and_update() > 0;
        let idle_deadline = idle_since + idle;
        tokio::select! {
            result = connection.as_mut() => return result,
            changed = open.changed() => {
                if changed.is_ok() && *open.borrow() == 0 {
                    idle_since = Instant::now();
                }
            }
            () = sleep_until(idle_deadline), if !busy && finishing.is_none() => {
                finish(connection.as_mut());
                finishing = Some(Instant::now() + idle);
            }
            () = sleep_until(finishing.unwrap_or(idle_deadline)), if finishing.is_some() => {
                tracing::debug!("connection did not finish after being asked to; closed");
                return Ok(());
            }
            _ = stop.changed(), if !stopping && finishing.is_none() => {
                stopping = true;
                finish(connection.as_mut());
            }
        }
    }
}
