//! Content verification: hashing bytes as they pass, so that a digest-addressed answer is checked
//! against its digest — before a manifest is sent, and at the end of a streamed blob, whose
//! response is then aborted instead of completed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::reference::Digest;
pub use crate::reference::{Hasher, digest_of};

/// How a verified stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every byte arrived and matched the digest; the number of bytes.
    Complete(u64),
    /// The bytes are not the blob: wrong digest, or more than announced. The source is at fault.
    Corrupt(String),
    /// The transfer broke off (upstream error, fewer bytes than announced).
    Broken(String),
}

/// A blob body that hashes what passes and fails at the end, instead of ending, when the bytes do
/// not match the digest or the announced length.
///
/// The last chunk is held back until the digest is checked: a client that has received every
/// byte may take the response as complete even if the connection is then reset, so the bytes
/// that would complete it are only released once they are known to be right.
pub struct Verified<S> {
    inner: S,
    held: Option<Bytes>,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_len: Option<u64>,
    received: u64,
    /// Called once, with how the stream ended (not at all if the client goes away first).
    on_end: Option<Box<dyn FnOnce(Outcome) + Send>>,
}

impl<S> Verified<S> {
    /// Wraps `inner`, which should yield the blob `expected` of `expected_len` bytes if known.
    pub fn new(
        inner: S,
        expected: Digest,
        expected_len: Option<u64>,
        on_end: impl FnOnce(Outcome) + Send + 'static,
    ) -> Verified<S> {
        Verified {
            inner,
            held: None,
            hasher: Some(Hasher::new(expected.algorithm())),
            expected,
            expected_len,
            received: 0,
            on_end: Some(Box::new(on_end)),
        }
    }

    fn fail(&mut self, outcome: Outcome) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.hasher = None;
        self.held = None;
        let reason = match &outcome {
            Outcome::Corrupt(reason) | Outcome::Broken(reason) => reason.clone(),
            Outcome::Complete(_) => String::new(),
        };
        if let Some(on_end) = self.on_end.take() {
            on_end(outcome);
        }
        Poll::Ready(Some(Err(std::io::Error::other(reason))))
    }
}

impl<S, E> Stream for Verified<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(hasher) = this.hasher.as_mut() else {
                return Poll::Ready(this.held.take().map(Ok));
            };
            match this.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    hasher.update(&chunk);
                    this.received += chunk.len() as u64;
                    if let Some(len) = this.expected_len.filter(|&len| this.received > len) {
                        return this.fail(Outcome::Corrupt(format!(
                            "upstream sent more than the {len} bytes it announced"
                        )));
                    }
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return this.fail(Outcome::Broken(format!("upstream body failed: {error}")));
                }
                Poll::Ready(None) => {
                    let actual = this.hasher.take().map(Hasher::finish).unwrap_or_default();
                    if let Some(len) = this.expected_len.filter(|&len| len != this.received) {
                        return this.fail(Outcome::Broken(format!(
                            "upstream sent {} of {len} bytes",
                            this.received
                        )));
                    }
                    if actual != this.expected.as_str() {
                        return this.fail(Outcome::Corrupt(format!(
                            "digest mismatch: expected {}, got {actual}",
                            this.expected
                        )));
                    }
                    if let Some(on_end) = this.on_end.take() {
                        on_end(Outcome::Complete(this.received));
                    }
                    // `hasher` is now None: the next poll releases the held chunk, then ends.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Algorithm;
    use futures_util::stream;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    async fn collect(
        chunks: Vec<&'static [u8]>,
        digest: &str,
        len: Option<u64>,
    ) -> Vec<Result<Bytes, String>> {
        let inner = stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        let verified = Verified::new(inner, digest.parse().unwrap(), len, |_| {});
        verified
            .map(|r| r.map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
            .await
    }

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(digest_of(Algorithm::Sha256, b""), EMPTY_SHA256);
    }

    #[tokio::test]
    async fn matching_stream_passes_every_chunk_and_ends() {
        let digest = digest_of(Algorithm::Sha256, b"hello world");
        let items = collect(vec![b"hello ", b"world"], &digest, Some(11)).await;
        assert_eq!(
            items,
            vec![
                Ok(Bytes::from_static(b"hello ")),
                Ok(Bytes::from_static(b"world"))
            ]
        );
    }

    #[tokio::test]
    async fn mismatching_stream_ends_with_an_error() {
        let digest = digest_of(Algorithm::Sha256, b"hello world");
        let items = collect(vec![b"hello ", b"WORLD"], &digest, None).await;
        assert!(
            items
                .last()
                .unwrap()
                .as_ref()
                .unwrap_err()
                .contains("digest mismatch")
        );
    }

    #[tokio::test]
    async fn mismatching_stream_never_releases_its_last_chunk() {
        let digest = digest_of(Algorithm::Sha256, b"hello world");
        let items = collect(vec![b"hello ", b"WORLD"], &digest, Some(11)).await;
        assert!(items.len() == 2 && items[0].is_ok() && items[1].is_err());
    }

    #[tokio::test]
    async fn short_stream_ends_with_an_error() {
        let digest = digest_of(Algorithm::Sha256, b"hello");
        let items = collect(vec![b"hello"], &digest, Some(11)).await;
        assert!(items.last().unwrap().is_err());
    }

    #[tokio::test]
    async fn long_stream_fails_as_soon_as_it_passes_the_length() {
        let digest = digest_of(Algorithm::Sha256, b"hello world");
        let items = collect(vec![b"hello ", b"world"], &digest, Some(6)).await;
        assert!(items.len() == 1 && items[0].is_err());
    }
}
