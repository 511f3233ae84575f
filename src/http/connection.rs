//! One client connection from accept to close, and the deadlines that keep a client from
//! holding a place under `limits.max_connections`.
//!
//! [`Activity`] counts the requests a connection has in progress (a request is in progress from
//! the moment its head is parsed until its response body is dropped, whole or not);
//! [`drive`] serves the connection and asks it to finish (HTTP/1.1: close once idle; HTTP/2:
//! `GOAWAY`) once it has had no request in progress for the idle timeout, counted from accept,
//! so that the protocol-detection read, the TLS handshake and the first request head all fall
//! within it. A client that ignores the request to finish (an HTTP/2 peer that never answers
//! the `GOAWAY`'s ping) is disconnected one more timeout later.
//!
//! A client that stops reading is disconnected too, after `limits.write_stall_timeout`: its
//! [`Socket`] records since when the socket has refused the bytes it was given (a full send
//! buffer: HTTP/1.1, or HTTP/2 over a TCP window of zero), and a [`Tracked`] body on an HTTP/2
//! connection since when a piece it handed to hyper has waited for the stream's flow-control
//! window (which a peer can keep at zero while the socket stays writable). Either waiting past
//! the timeout closes the connection; a slow client that keeps taking bytes never waits that
//! long.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
    /// Since when the socket has refused every write and flush asked of it, as a [`stamp`]
    /// (0: it took the last one).
    write_refused_since: AtomicU64,
    /// The hand-off of each HTTP/2 response body that has handed hyper a piece: when that
    /// piece was handed, as a [`stamp`] (0: the stream came back for the next one).
    handed: Mutex<Vec<Arc<AtomicU64>>>,
    /// HTTP/2: body bytes read and not yet handed to hyper, over all streams.
    in_hand: AtomicUsize,
    /// HTTP/2 bodies waiting for `in_hand` to fall below [`IN_HAND`].
    waiting: Mutex<Vec<std::task::Waker>>,
    origin: Instant,
}

impl Shared {
    /// `at` in nanoseconds since `origin`, plus one, so that 0 stays "never".
    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The instant of a nonzero `stamp`.
    fn instant(&self, stamp: u64) -> Instant {
        self.origin + Duration::from_nanos(stamp - 1)
    }
}

impl Activity {
    /// A connection accepted at `accepted`, idle since then.
    pub(super) fn new(accepted: Instant) -> Activity {
        Activity {
            shared: Arc::new(Shared {
                open: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
                write_refused_since: AtomicU64::new(0),
                handed: Mutex::new(Vec::new()),
                in_hand: AtomicUsize::new(0),
                waiting: Mutex::new(Vec::new()),
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

    /// Since when the connection has been unable to get bytes to the client: the socket
    /// refusing them, or the oldest piece of an HTTP/2 response still waiting for its stream
    /// to take it; `None` when neither waits.
    fn stalled_since(&self) -> Option<Instant> {
        let shared = &self.shared;
        let refused = shared.write_refused_since.load(Ordering::Acquire);
        let handed = shared
            .handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|handed| handed.load(Ordering::Acquire))
            .filter(|&stamp| stamp != 0)
            .min();
        [refused]
            .into_iter()
            .chain(handed)
            .filter(|&stamp| stamp != 0)
            .min()
            .map(|stamp| shared.instant(stamp))
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

/// The most body an HTTP/2 response hands hyper at once: one `DATA` frame at the default
/// `SETTINGS_MAX_FRAME_SIZE`. hyper takes the next piece once the stream's window has let the
/// last one out, so a stream counts as progressing while it sends a frame per
/// `write_stall_timeout`; handed whole, a 256 KiB chunk of a cached blob would have to get out
/// within it.
const PIECE: usize = 16 * 1024;

/// The most body an HTTP/2 connection's streams hold read and not yet handed to hyper: a cached
/// blob is read in chunks of 256 KiB, so without a bound every stream the peer keeps at a
/// window of zero would hold one (100 streams, 25 MiB a connection); past it, a body waits
/// to read more until another has handed some out (or the stall deadline closes the
/// connection).
const IN_HAND: usize = 4 * 1024 * 1024;

/// A response body that keeps its request counted as in progress while it is being sent, and,
/// on an HTTP/2 connection, hands its data to hyper in pieces of at most [`PIECE`], recording
/// since when a piece has waited for the stream to take it.
pub(super) struct Tracked {
    body: Body,
    in_progress: InProgress,
    /// `Some` on HTTP/2: what is left of the chunk being handed out, and the hand-off the
    /// connection watches (registered with it at the first piece).
    pieces: Option<Pieces>,
}

struct Pieces {
    rest: Bytes,
    handed: Option<Arc<AtomicU64>>,
}

impl Tracked {
    /// `body` with `in_progress` held until it is dropped; `http2` hands it out in pieces.
    pub(super) fn new(body: Body, in_progress: InProgress, http2: bool) -> Tracked {
        Tracked {
            body,
            in_progress,
            pieces: http2.then(|| Pieces {
                rest: Bytes::new(),
                handed: None,
            }),
        }
    }
}

impl Pieces {
    /// The next piece of `rest`, recorded as handed now.
    fn hand(&mut self, shared: &Shared) -> Bytes {
        let piece = if self.rest.len() > PIECE {
            self.rest.split_to(PIECE)
        } else {
            std::mem::take(&mut self.rest)
        };
        shared.release(piece.len());
        let handed = self.handed.get_or_insert_with(|| {
            let handed = Arc::new(AtomicU64::new(0));
            shared
                .handed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(handed.clone());
            handed
        });
        handed.store(shared.stamp(Instant::now()), Ordering::Release);
        piece
    }
}

impl Shared {
    /// Whether the connection's bodies hold less than [`IN_HAND`]; if not, `cx` is woken when
    /// they do.
    fn room_in_hand(&self, cx: &Context<'_>) -> bool {
        if self.in_hand.load(Ordering::Acquire) < IN_HAND {
            return true;
        }
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cx.waker().clone());
        // Looked at again once registered: a release in between would have found no waker.
        self.in_hand.load(Ordering::Acquire) < IN_HAND
    }

    /// `bytes` no longer held; wakes the bodies waiting for room when there is some.
    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.in_hand.fetch_sub(bytes, Ordering::AcqRel);
        if before - bytes < IN_HAND {
            let waiting =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
            waiting.into_iter().for_each(std::task::Waker::wake);
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
        let this = &mut *self;
        let Some(pieces) = &mut this.pieces else {
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        // Asked again: the stream took the last piece.
        if let Some(handed) = &pieces.handed {
            handed.store(0, Ordering::Release);
        }
        let shared = &this.in_progress.shared;
        if !pieces.rest.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(pieces.hand(shared)))));
        }
        if !shared.room_in_hand(cx) {
            return Poll::Pending;
        }
        match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    shared.in_hand.fetch_add(data.len(), Ordering::AcqRel);
                    pieces.rest = data;
                    Poll::Ready(Some(Ok(Frame::data(pieces.hand(shared)))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.as_ref().is_none_or(|p| p.rest.is_empty()) && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.body.size_hint();
        let rest = self.pieces.as_ref().map_or(0, |p| p.rest.len() as u64);
        let mut sum = SizeHint::new();
        sum.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            sum.set_upper(upper + rest);
        }
        sum
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(pieces) = &self.pieces {
            self.in_progress.shared.release(pieces.rest.len());
        }
        if let Some(handed) = self.pieces.as_mut().and_then(|p| p.handed.take()) {
            self.in_progress
                .shared
                .handed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|other| !Arc::ptr_eq(other, &handed));
        }
    }
}

/// A connection's stream, recording since when writes have been refused (see [`Activity`]).
pub(super) struct Socket<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Socket<S> {
    /// `inner`, reporting to `activity`.
    pub(super) fn new(inner: S, activity: &Activity) -> Socket<S> {
        Socket {
            inner,
            shared: activity.shared.clone(),
        }
    }

    /// Records what became of a write or flush: refused (pending), or bytes taken.
    fn record<T>(&self, result: &Poll<io::Result<T>>, took: impl FnOnce(&T) -> bool) {
        let refused = &self.shared.write_refused_since;
        match result {
            Poll::Pending => {
                if refused.load(Ordering::Relaxed) == 0 {
                    refused.store(self.shared.stamp(Instant::now()), Ordering::Release);
                }
            }
            Poll::Ready(Ok(value)) if took(value) => {
                if refused.load(Ordering::Relaxed) != 0 {
                    refused.store(0, Ordering::Release);
                }
            }
            Poll::Ready(_) => {}
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(&result, |&n| n > 0);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(&result, |&n| n > 0);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.record(&result, |()| true);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long a connection may go idle ([`drive`]) or stalled, and where stalls are counted.
pub(super) struct Deadlines {
    /// `limits.header_read_timeout`.
    pub(super) idle: Duration,
    /// `limits.write_stall_timeout`.
    pub(super) stall: Duration,
    /// Connections closed for a stall.
    pub(super) stalled: Counter,
}

/// Serves `connection` to its end, or until it has been idle (no request in progress) for
/// `deadlines.idle` since it was accepted or since its last request ended; then asks it to
/// finish with `finish`, and drops it (closing the socket) if it has not finished one more
/// `idle` later. A connection that has been unable to get bytes to its client (see
/// [`Activity`]) for `deadlines.stall` is dropped at once, request in progress or not, after
/// `abort` (which makes the close discard what the socket has not sent). When
/// `stop` is closed (the server is stopping) it is asked to finish too; the server's grace
/// period bounds that wait.
///
/// The activity is looked at when a deadline falls due: a connection found busy, or idle for
/// less than `idle`, gets the next deadline it could meet; a busy one is looked at again
/// within `stall`, so a stall is found between one and two `stall`s after it began.
pub(super) async fn drive<C, E>(
    connection: C,
    finish: impl Fn(Pin<&mut C>),
    abort: impl FnOnce(),
    activity: &Activity,
    deadlines: &Deadlines,
    stop: watch::Receiver<()>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let Deadlines {
        idle,
        stall,
        stalled: stalls,
    } = deadlines;
    let (idle, stall) = (*idle, *stall);
    let mut connection = pin!(connection);
    let deadline = sleep_until(activity.shared.origin + idle.min(stall));
    let mut deadline = pin!(deadline);
    // Made once, not at every turn of the loop (every wake-up of the connection).
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.changed().await;
    };
    let mut stopped = pin!(stopped);
    let mut finish_by: Option<Instant> = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = deadline.as_mut() => {
                let now = Instant::now();
                let stalled = activity.stalled_since();
                if let Some(since) = stalled
                    && now >= since + stall
                {
                    stalls.inc();
                    abort();
                    tracing::debug!(stalled_for = ?now - since, "connection closed: its client took no bytes of a response within limits.write_stall_timeout");
                    return Ok(());
                }
                if finish_by.is_some_and(|by| now >= by) {
                    tracing::debug!("connection did not finish after being asked to; closed");
                    return Ok(());
                }
                let busy = activity.idle_since().is_none();
                let next = match (finish_by, activity.idle_since()) {
                    (Some(by), _) => by,
                    (None, Some(since)) if now >= since + idle => {
                        finish(connection.as_mut());
                        finish_by = Some(now + idle);
                        now + idle
                    }
                    (None, Some(since)) => since + idle,
                    (None, None) => now + idle,
                };
                let next = match stalled {
                    Some(since) => next.min(since + stall),
                    None if busy => next.min(now + stall),
                    None => next,
                };
                deadline.as_mut().reset(next);
            }
            () = stopped.as_mut(), if !stopping && finish_by.is_none() => {
                stopping = true;
                finish(connection.as_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::full_body;

    /// The data of each frame `body` gives until its end, polled with a waker that does
    /// nothing (the bodies here are ready at once), and whether the connection saw a piece
    /// waiting for its stream after each.
    fn frames(body: &mut Tracked, activity: &Activity) -> Vec<(usize, bool)> {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut seen = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut *body).poll_frame(&mut cx) {
            let length = frame.unwrap().into_data().map_or(0, |data| data.len());
            seen.push((length, activity.stalled_since().is_some()));
        }
        seen
    }

    #[test]
    fn an_http2_body_is_handed_out_a_frame_at_a_time_each_waiting_until_taken() {
        let activity = Activity::new(Instant::now());
        let chunk = Bytes::from(vec![7u8; 2 * PIECE + 100]);
        let mut body = Tracked::new(full_body(chunk), activity.begin(), true);
        let seen = frames(&mut body, &activity);
        let after_end = activity.stalled_since().is_some();
        drop(body);
        assert_eq!(
            (seen, after_end, activity.stalled_since()),
            (vec![(PIECE, true), (PIECE, true), (100, true)], false, None)
        );
    }

    #[test]
    fn an_http1_body_passes_through_whole_and_is_not_watched() {
        let activity = Activity::new(Instant::now());
        let chunk = Bytes::from(vec![7u8; 2 * PIECE + 100]);
        let mut body = Tracked::new(full_body(chunk), activity.begin(), false);
        assert_eq!(frames(&mut body, &activity), vec![(2 * PIECE + 100, false)]);
    }

    #[test]
    fn a_piece_not_taken_is_the_connections_stall_from_when_it_was_handed() {
        let activity = Activity::new(Instant::now());
        let mut body = Tracked::new(
            full_body(Bytes::from(vec![7u8; PIECE])),
            activity.begin(),
            true,
        );
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let before = Instant::now();
        let handed = Pin::new(&mut body).poll_frame(&mut cx).is_ready();
        let after = Instant::now();
        let since = activity.stalled_since().expect("a piece waits");
        assert!(handed && since >= before && since <= after);
    }

    #[test]
    fn http2_bodies_wait_to_read_more_while_the_connection_holds_its_bound_unhanded() {
        let activity = Activity::new(Instant::now());
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        let body = || Tracked::new(full_body(chunk.clone()), activity.begin(), true);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // Each holds what it has not handed of its chunk, as a stream at a window of zero does.
        let held = IN_HAND / (chunk.len() - PIECE) + 1;
        let mut holding: Vec<Tracked> = (0..held).map(|_| body()).collect();
        let first_pieces = holding
            .iter_mut()
            .all(|body| Pin::new(body).poll_frame(&mut cx).is_ready());
        let mut next = body();
        let waits = Pin::new(&mut next).poll_frame(&mut cx).is_pending();
        drop(holding.pop());
        let reads_once_one_is_gone = Pin::new(&mut next).poll_frame(&mut cx).is_ready();
        assert_eq!(
            (first_pieces, waits, reads_once_one_is_gone),
            (true, true, true)
        );
    }
}
