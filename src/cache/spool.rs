//! Filling the blob store from a body being verified, while clients read it: the client that
//! started the download gets the bytes from memory while it keeps up ([`lead`]), every other
//! reader follows the file as it grows ([`follow`]), and the file enters the store only once
//! every byte is verified ([`fill`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::blobs::{BlobStore, DownloadState, Piece, Spool, TempWriter, follow};
use super::stats::CacheStats;
use super::verify::Outcome;
use crate::reference::Digest;

/// Chunks queued for the client that started a download before it counts as lagging.
pub const LEADER_QUEUE: usize = 64;

/// The body of the client that started a download: bytes from memory as they arrive, then, if
/// the queue was dropped before `Done` (the client lagged, or the download failed), the rest
/// from the file, where [`follow`] applies the same rules as for every other reader.
pub fn lead(
    leader: mpsc::Receiver<Piece>,
    temp: Spool,
    state: watch::Receiver<DownloadState>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    type Rest = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;
    enum Source {
        Memory(
            mpsc::Receiver<Piece>,
            u64,
            Box<(Spool, watch::Receiver<DownloadState>)>,
        ),
        File(Rest),
    }
    futures_util::stream::unfold(
        Source::Memory(leader, 0, Box::new((temp, state))),
        |source| async move {
            let mut rest = match source {
                Source::Memory(mut leader, position, file) => match leader.recv().await {
                    Some(Piece::Data(bytes)) => {
                        let position = position + bytes.len() as u64;
                        return Some((Ok(bytes), Source::Memory(leader, position, file)));
                    }
                    Some(Piece::Done) => return None,
                    None => {
                        let (temp, state) = *file;
                        follow(temp, state, position).boxed()
                    }
                },
                Source::File(rest) => rest,
            };
            let next = rest.next().await?;
            Some((next, Source::File(rest)))
        },
    )
}

/// How a body written into its spool ended: `Complete` with the bytes it had, and whether those
/// bytes are all in the spool (writing it failed, a full disk say, and only the caching was
/// abandoned: one reader got the rest from memory).
pub(crate) struct Spooled {
    pub(crate) outcome: Outcome,
    pub(crate) in_file: bool,
}

/// Where a body is written: the writer of `temp`, in `store`.
pub(crate) struct Sink<'a> {
    pub(crate) file: &'a mut TempWriter,
    pub(crate) temp: &'a Spool,
    pub(crate) store: &'a BlobStore,
    pub(crate) stats: &'a CacheStats,
}

/// Writes a verified body into its spool, handing each chunk to the leader while it keeps up
/// and telling the readers as bytes reach the file; returns how the body ended.
///
/// A write that fails costs the cache, not the pull: the download goes on for one reader, from
/// memory at that reader's pace — the leader if it kept up, else the first reader to reach the
/// end of what the file holds ([`DownloadState::Relayed`]). The other readers fail (their
/// clients retry, and fetch for themselves); the partial file is removed at the end.
pub(crate) async fn spool(
    body: impl futures_util::Stream<Item = Result<Bytes, Outcome>> + Unpin,
    mut sink: Sink<'_>,
    state: &watch::Sender<DownloadState>,
    leader: &mut Option<mpsc::Sender<Piece>>,
) -> Spooled {
    let spooled = spool_body(body, &mut sink, state, leader).await;
    if !spooled.in_file {
        sink.store.discard(sink.temp).await;
    }
    spooled
}

async fn spool_body(
    mut body: impl futures_util::Stream<Item = Result<Bytes, Outcome>> + Unpin,
    sink: &mut Sink<'_>,
    state: &watch::Sender<DownloadState>,
    leader: &mut Option<mpsc::Sender<Piece>>,
) -> Spooled {
    let mut total = 0u64;
    // Set once the file is lost: the one reader the rest goes to.
    let mut relay: Option<mpsc::Sender<Piece>> = None;
    loop {
        let chunk = match body.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(outcome)) => {
                let in_file = relay.is_none();
                return Spooled { outcome, in_file };
            }
            None => {
                // Without a file there is no commit to send the end: every byte is verified.
                let in_file = match relay {
                    Some(relay) => {
                        if !relayed(&relay, Piece::Done, state).await {
                            return left_alone();
                        }
                        false
                    }
                    None => true,
                };
                return Spooled {
                    outcome: Outcome::Complete(total),
                    in_file,
                };
            }
        };
        total += chunk.len() as u64;
        if let Some(relay) = &relay {
            if !relayed(relay, Piece::Data(chunk), state).await {
                return left_alone();
            }
            continue;
        }
        // The client that started the download gets the bytes from memory while it keeps up;
        // once it lags (or leaves) it reads the file like the rest.
        if let Some(sender) = leader
            && sender.try_send(Piece::Data(chunk.clone())).is_err()
        {
            *leader = None;
        }
        // Readers are told about bytes once they are in the file.
        match sink.file.push(chunk).await {
            Ok(Some(written)) => {
                state.send_modify(|s| {
                    if let DownloadState::Streaming { written: w, .. } = s {
                        *w = written;
                    }
                });
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "writing the blob store failed mid-download; the blob is served uncached");
                CacheStats::count(&sink.stats.store_failures);
                let rest = match leader.take() {
                    // The leader kept up: it has every byte so far.
                    Some(leader) => {
                        state.send_replace(DownloadState::Uncacheable);
                        leader
                    }
                    None => {
                        let (from, unwritten) = sink.file.unwritten();
                        let (rest, receiver) = mpsc::channel(LEADER_QUEUE);
                        state.send_replace(DownloadState::Relayed {
                            from,
                            rest: Arc::new(Mutex::new(Some(receiver))),
                        });
                        for chunk in unwritten {
                            if !relayed(&rest, Piece::Data(chunk), state).await {
                                return left_alone();
                            }
                        }
                        rest
                    }
                };
                relay = Some(rest);
            }
        }
    }
}

/// Hands `piece` to the one reader of a download that lost its file, waiting for it; false
/// once that reader is gone, or nobody is left who could take the rest.
async fn relayed(
    relay: &mpsc::Sender<Piece>,
    piece: Piece,
    state: &watch::Sender<DownloadState>,
) -> bool {
    let sent = relay.send(piece);
    tokio::pin!(sent);
    loop {
        tokio::select! {
            sent = &mut sent => return sent.is_ok(),
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                // The map of downloads holds one receiver of the state; readers hold the others.
                if state.receiver_count() <= 1 {
                    return false;
                }
            }
        }
    }
}

/// The end of a download whose file was lost and whose last reader left.
fn left_alone() -> Spooled {
    Spooled {
        outcome: Outcome::Broken("no reader is left for a download that lost its file".into()),
        in_file: false,
    }
}

/// How a fill of the blob store from one body ended.
#[derive(Debug)]
pub enum Filled {
    /// Every byte verified (`size` of them): stored when `in_file`; otherwise writing the file
    /// failed and one reader got the rest from memory.
    Complete {
        /// The bytes verified.
        size: u64,
        /// Whether they are all in the spool (and so in the store).
        in_file: bool,
    },
    /// Every byte verified and served, but the spool could not be written out to be stored.
    Unstored(String),
    /// The bytes are not the digest's.
    Corrupt(String),
    /// The body broke off (or the download lost its last reader).
    Broken(String),
}

/// Fills the store with `body` (of `len` bytes when known), streaming it to the readers of
/// `state` (and to `leader` while it keeps up); the spool it was written to, for the caller to
/// discard when the fill did not complete. A store without room or unable to start writing is
/// `Err` with the download's outcome: served uncached.
pub(crate) async fn fill(
    store: &BlobStore,
    stats: &CacheStats,
    digest: &Digest,
    len: Option<u64>,
    body: impl futures_util::Stream<Item = Result<Bytes, Outcome>> + Unpin,
    state: &watch::Sender<DownloadState>,
    leader: &mut Option<mpsc::Sender<Piece>>,
) -> Result<(Filled, Spool), DownloadState> {
    if let Some(refused) = room_for(store, stats, digest, len) {
        return Err(refused);
    }
    let (temp, mut file) = match store.begin_write(digest, len).await {
        Ok(temp) => temp,
        Err(error) => {
            tracing::warn!(%error, "cannot write to the blob store; serving uncached");
            CacheStats::count(&stats.store_failures);
            return Err(DownloadState::Uncacheable);
        }
    };
    state.send_replace(DownloadState::Streaming {
        temp: temp.clone(),
        len,
        written: 0,
    });
    let sink = Sink {
        file: &mut file,
        temp: &temp,
        store,
        stats,
    };
    let Spooled { outcome, in_file } = spool(body, sink, state, leader).await;
    let filled = match outcome {
        Outcome::Complete(size) if !in_file => Filled::Complete { size, in_file },
        Outcome::Complete(size) => {
            match commit(store, digest, &temp, &mut file, size, state, leader).await {
                Ok(size) => Filled::Complete { size, in_file },
                Err(reason) => Filled::Unstored(reason),
            }
        }
        Outcome::Corrupt(reason) => Filled::Corrupt(reason),
        Outcome::Broken(reason) => Filled::Broken(reason),
    };
    Ok((filled, temp))
}

/// `None` when the store has room for a blob of `len` bytes (when known); otherwise the
/// outcome of its download, served uncached. A full disk must cost the cache, not the pull;
/// a blob larger than `cache.max_size` would evict everything else and keep nothing.
pub(crate) fn room_for(
    store: &BlobStore,
    stats: &CacheStats,
    digest: &Digest,
    len: Option<u64>,
) -> Option<DownloadState> {
    if !store.has_room(len.unwrap_or(0)) {
        tracing::warn!(digest = %digest, "the cache's filesystem is short of cache.min_free_space; serving the blob uncached");
        CacheStats::count(&stats.store_failures);
        return Some(DownloadState::Uncacheable);
    }
    if let Some(len) = len.filter(|len| !store.fits(*len)) {
        tracing::warn!(digest = %digest, len, "the blob is larger than cache.max_size; serving it uncached");
        CacheStats::count(&stats.store_failures);
        return Some(DownloadState::Uncacheable);
    }
    None
}

/// Makes the verified bytes of `temp` available: readers may finish at once, while the
/// store makes them durable and takes them in. The size, or why they could not be written.
async fn commit(
    store: &BlobStore,
    digest: &Digest,
    temp: &Spool,
    file: &mut TempWriter,
    size: u64,
    state: &watch::Sender<DownloadState>,
    leader: &mut Option<mpsc::Sender<Piece>>,
) -> Result<u64, String> {
    if let Err(error) = file.flush().await {
        return Err(format!("writing the blob store: {error}"));
    }
    state.send_replace(DownloadState::Complete {
        len: size,
        temp: temp.clone(),
    });
    if let Some(sender) = leader.take() {
        let _ = sender.try_send(Piece::Done);
    }
    let stored = file
        .sync_data()
        .await
        .and_then(|()| store.commit(temp, digest, size));
    if let Err(error) = stored {
        tracing::warn!(digest = %digest, %error, "verified blob served but not stored");
        store.discard(temp).await;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;

    /// A download of `chunks` into a store whose disk is full (every write of the spool fails,
    /// ENOSPC), for the `leader` given; with a reader that follows the spool from its start when
    /// `follower`. How it ended, what the leader and the follower got, and what the store has
    /// in its temporary directory and counted as failures.
    async fn into_a_full_disk(
        chunks: &[Bytes],
        leader: Option<mpsc::Sender<Piece>>,
        follower: bool,
    ) -> (Spooled, Option<Vec<u8>>, usize, u64) {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(CacheStats::default());
        let store = BlobStore::open(
            dir.path().join("blobs"),
            dir.path().join("tmp"),
            u64::MAX,
            0,
            stats.clone(),
        )
        .unwrap();
        let digest: Digest = crate::reference::digest_of(crate::reference::Algorithm::Sha256, b"")
            .parse()
            .unwrap();
        let (temp, _unused) = store.begin_write(&digest, None).await.unwrap();
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut file = TempWriter::of_file(full);
        let body = futures_util::stream::iter(chunks.iter().cloned().map(Ok));
        let (state, readers) = watch::channel(DownloadState::Streaming {
            temp: temp.clone(),
            len: None,
            written: 0,
        });
        let mut leader = leader;
        let sink = Sink {
            file: &mut file,
            temp: &temp,
            store: &store,
            stats: &stats,
        };
        let download = async {
            let spooled = spool(body, sink, &state, &mut leader).await;
            // However it ended, the leader's queue ends with it.
            leader.take();
            spooled
        };
        let reader = async {
            if !follower {
                return None;
            }
            let read: std::io::Result<Vec<Bytes>> =
                follow(temp.clone(), readers.clone(), 0).try_collect().await;
            read.ok().map(|chunks| chunks.concat())
        };
        let (spooled, followed) = tokio::join!(download, reader);
        let left = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        (
            spooled,
            followed,
            left,
            CacheStats::get(&stats.store_failures),
        )
    }

    fn chunks(count: usize) -> Vec<Bytes> {
        (0..count)
            .map(|i| Bytes::from(vec![i as u8; 64 * 1024]))
            .collect()
    }

    fn complete(spooled: &Spooled, chunks: &[Bytes]) -> bool {
        let total = chunks.iter().map(Bytes::len).sum::<usize>() as u64;
        matches!(spooled.outcome, Outcome::Complete(n) if n == total)
    }

    #[tokio::test]
    async fn a_leader_that_kept_up_gets_every_byte_when_the_spool_cannot_be_written() {
        // Fewer chunks than the leader's queue holds: it keeps up without reading meanwhile,
        // and more than two batches: the write of the first fails with the second.
        let chunks = chunks(LEADER_QUEUE - 8);
        let (sender, mut received) = mpsc::channel(LEADER_QUEUE);
        let (spooled, _, left, failures) = into_a_full_disk(&chunks, Some(sender), false).await;
        let (mut bytes, mut done) = (Vec::new(), false);
        while let Some(piece) = received.recv().await {
            match piece {
                Piece::Data(chunk) => bytes.extend_from_slice(&chunk),
                Piece::Done => done = true,
            }
        }
        assert_eq!(
            (
                complete(&spooled, &chunks),
                spooled.in_file,
                bytes == chunks.concat(),
                done,
                left,
                failures
            ),
            (true, false, true, true, 0, 1)
        );
    }

    #[tokio::test]
    async fn a_reader_of_the_spool_gets_every_byte_when_the_spool_cannot_be_written() {
        // The leader lagged (or left): the reader of the file takes the rest from memory.
        let chunks = chunks(4 * LEADER_QUEUE);
        let (spooled, followed, left, failures) = into_a_full_disk(&chunks, None, true).await;
        assert_eq!(
            (
                complete(&spooled, &chunks),
                spooled.in_file,
                followed == Some(chunks.concat()),
                left,
                failures
            ),
            (true, false, true, 0, 1)
        );
    }
}
