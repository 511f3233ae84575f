//! Fewer, larger writes for HTTP/2: [`Coalesced`] wraps a connection's stream, gathers what is
//! written and writes it at the flush, one turn of the scheduler after the flush was first asked.
//!
//! hyper runs each HTTP/2 stream in a task of its own. A client with eight requests in flight
//! gets eight tasks that finish one after the other, and each one wakes the connection's task,
//! which runs next (tokio favours the task just woken) and writes that single response: a
//! `writev`, a TLS record and a TCP segment per response, where the kernel's send path, not
//! the response, is most of the cost. Yielding once before writing lets the other streams that
//! are ready finish first, so the connection writes what they all produced at once.
//!
//! A batch waits once, and only for the tasks already runnable, so a response waits one turn
//! and no more; frames of a large body pass straight through. HTTP/1.1 answers one request at a
//! time per connection and gains nothing from it, so the wrapper is switched on only for
//! connections known to speak HTTP/2 (by ALPN, or by the preface a plain-text client sent).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before they are written whatever the batch: a batch of small responses fits
/// many times over.
const GATHER: usize = 64 * 1024;

/// A write this large passes straight through: HTTP/2's default largest frame (16 KiB of body).
const DIRECT: usize = 16 * 1024;

/// A stream whose writes are gathered and written at a flush, one turn of the scheduler after
/// the first flush asked for them, when `enabled`; reads pass straight through.
pub(super) struct Coalesced<S> {
    inner: S,
    enabled: bool,
    gathered: Vec<u8>,
    /// The flush of the gathered bytes already waited its turn.
    waited: bool,
}

impl<S> Coalesced<S> {
    pub(super) fn new(inner: S, enabled: bool) -> Coalesced<S> {
        Coalesced {
            inner,
            enabled,
            gathered: Vec::new(),
            waited: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out what was gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        while written < self.gathered.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.gathered[written..]) {
                Poll::Ready(Ok(0)) => {
                    self.gathered.drain(..written);
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(error)) => {
                    self.gathered.drain(..written);
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => {
                    self.gathered.drain(..written);
                    return Poll::Pending;
                }
            }
        }
        self.gathered.clear();
        // Gathering memory is not kept by an idle connection.
        if self.gathered.capacity() > GATHER {
            self.gathered = Vec::new();
        }
        self.waited = false;
        Poll::Ready(Ok(()))
    }

    /// Gathers `bufs`, writing out what was gathered first when that is already large. A write
    /// of a whole frame of body or more goes straight through (after what was gathered): it is
    /// large enough on its own, and copying it would cost more than the batch saves.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if total >= DIRECT {
            if !self.gathered.is_empty() {
                std::task::ready!(self.poll_drain(cx))?;
            }
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if self.gathered.len() >= GATHER {
            std::task::ready!(self.poll_drain(cx))?;
        }
        let room = GATHER.saturating_sub(self.gathered.len()).max(1);
        let mut taken = 0;
        for buf in bufs {
            let part = &buf[..buf.len().min(room - taken)];
            self.gathered.extend_from_slice(part);
            taken += part.len();
            if taken == room {
                break;
            }
        }
        Poll::Ready(Ok(taken))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.enabled {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        self.poll_gather(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.enabled {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        self.poll_gather(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.enabled || self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.gathered.is_empty() {
            if !self.waited {
                // One turn for the tasks already runnable to add to this batch; woken now, the
                // task is polled again after them.
                self.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            std::task::ready!(self.poll_drain(cx))?;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.gathered.is_empty() {
            std::task::ready!(self.poll_drain(cx))?;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write the inner stream receives.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn context() -> Context<'static> {
        Context::from_waker(futures_util::task::noop_waker_ref())
    }

    #[test]
    fn writes_are_gathered_and_written_once_at_the_second_flush() {
        let mut stream = Coalesced::new(Writes::default(), true);
        let mut cx = context();
        let mut pinned = Pin::new(&mut stream);
        let wrote = (
            pinned.as_mut().poll_write(&mut cx, b"first ").is_ready(),
            pinned.as_mut().poll_write(&mut cx, b"second").is_ready(),
        );
        let first_flush_waits = pinned.as_mut().poll_flush(&mut cx).is_pending();
        let more = pinned.as_mut().poll_write(&mut cx, b" third").is_ready();
        let second_flush = pinned.as_mut().poll_flush(&mut cx).is_ready();
        assert_eq!(
            (wrote, first_flush_waits, more, second_flush),
            ((true, true), true, true, true)
        );
        assert_eq!(stream.inner.0, vec![b"first second third".to_vec()]);
    }

    #[test]
    fn a_large_write_goes_straight_through_after_what_was_gathered() {
        let mut stream = Coalesced::new(Writes::default(), true);
        let mut cx = context();
        let frame = vec![7u8; DIRECT];
        let mut pinned = Pin::new(&mut stream);
        let small = pinned.as_mut().poll_write(&mut cx, b"head");
        let large = pinned.as_mut().poll_write(&mut cx, &frame);
        assert_eq!(
            (
                matches!(small, Poll::Ready(Ok(4))),
                matches!(large, Poll::Ready(Ok(n)) if n == DIRECT)
            ),
            (true, true)
        );
        assert_eq!(stream.inner.0, vec![b"head".to_vec(), frame]);
    }

    #[test]
    fn a_full_gathering_is_written_before_more_is_taken() {
        let mut stream = Coalesced::new(Writes::default(), true);
        let mut cx = context();
        let piece = vec![7u8; DIRECT - 1];
        let mut pinned = Pin::new(&mut stream);
        let mut taken = 0;
        while taken < GATHER {
            match pinned.as_mut().poll_write(&mut cx, &piece) {
                Poll::Ready(Ok(n)) => taken += n,
                other => panic!("a gathering write answered {other:?}"),
            }
        }
        let before = stream.inner.0.len();
        let mut pinned = Pin::new(&mut stream);
        let next = pinned.as_mut().poll_write(&mut cx, b"more");
        assert_eq!(
            (
                before,
                matches!(next, Poll::Ready(Ok(4))),
                stream.inner.0.len()
            ),
            (0, true, 1),
            "the full gathering went out before more was taken"
        );
    }

    #[tokio::test]
    async fn switched_off_every_write_goes_through_at_once() {
        let mut stream = Coalesced::new(Writes::default(), false);
        stream.write_all(b"a").await.unwrap();
        stream.write_all(b"b").await.unwrap();
        assert_eq!(stream.inner.0.len(), 2);
    }

    #[tokio::test]
    async fn shutdown_writes_what_was_gathered() {
        let mut stream = Coalesced::new(Writes::default(), true);
        stream.write_all(b"last words").await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(stream.inner.0, vec![b"last words".to_vec()]);
    }
}
