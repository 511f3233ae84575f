//! The blob store: content-addressed files under `<cache.dir>/blobs/<algorithm>/<hex>`, bounded
//! by `cache.max_size` with the least recently used evicted first (never one being read).
//!
//! A blob is written to a temporary file under `<cache.dir>/tmp` while it streams, and renamed
//! into place only once its digest is verified, so nothing partial or unverified is ever visible
//! in the store; temporary files left by a crash are removed when the store opens. While a blob
//! downloads, any number of readers can [`follow`] the temporary file as it grows.
//!
//! The store's interface is narrow, so that another store (an object store shared by replicas)
//! can stand behind the same calls: [`BlobStore::stat`], [`BlobStore::open_blob`] with
//! [`read_range`] (read a range), [`BlobStore::begin_write`] (a [`Spool`] and its
//! [`TempWriter`]), [`BlobStore::commit`] (of verified bytes only), [`BlobStore::discard`] and
//! [`BlobStore::evict`]. No file path leaves this module: readers of a blob still being written
//! follow its [`Spool`], which stays on the local disk whatever the store behind it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::watch;

use super::lru::Lru;
use super::stats::CacheStats;
use crate::reference::{Algorithm, Digest};

/// How often (at most) a blob's file time is refreshed when it is read: that time is the LRU
/// order a restart rebuilds.
const TOUCH_INTERVAL: Duration = Duration::from_secs(600);
/// The size of the reads that feed response bodies.
pub const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone)]
struct BlobEntry {
    size: u64,
    /// Open readers; an entry with readers is never evicted.
    readers: Arc<AtomicUsize>,
}

/// The blob store.
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
    index: Mutex<Lru<String, BlobEntry>>,
    stats: Arc<CacheStats>,
    next_temp: AtomicU64,
    /// Free space to leave on the filesystem (`cache.min_free_space`).
    min_free: u64,
}

/// An open blob from the store; the blob cannot be evicted while its guard lives.
pub struct BlobFile {
    /// The open file.
    pub file: std::fs::File,
    /// Its size.
    pub size: u64,
    /// Keep this as long as the file is read.
    pub guard: ReaderGuard,
}

/// Marks a stored blob as being read, which protects it from eviction.
pub struct ReaderGuard(Arc<AtomicUsize>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A blob being written, as its readers know it: where the bytes grow until the store takes
/// them, and where they are found after. Opaque outside the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    temp: Arc<PathBuf>,
    stored: Arc<PathBuf>,
}

impl BlobStore {
    /// Opens the store: removes leftover temporary files and indexes the blobs present, oldest
    /// file time first, evicting down to `max_size` if the bound shrank.
    pub fn open(
        dir: PathBuf,
        tmp: PathBuf,
        max_size: u64,
        min_free: u64,
        stats: Arc<CacheStats>,
    ) -> io::Result<BlobStore> {
        // A cache directory that cannot be written degrades to pass-through serving (every
        // download finds it cannot store), never to a proxy that does not start.
        let prepared = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::create_dir_all(&tmp))
            .and_then(|()| std::fs::read_dir(&tmp));
        match prepared {
            Ok(leftovers) => {
                for entry in leftovers.flatten() {
                    let path = entry.path();
                    if let Err(error) = std::fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), %error, "cannot remove a leftover temporary file");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "the blob store cannot be used; blobs are served without caching");
            }
        }
        let mut found = Vec::new();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let algorithm_dir = dir.join(algorithm.name());
            let Ok(entries) = std::fs::read_dir(&algorithm_dir) else {
                continue;
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                let Some(hex) = name.to_str() else { continue };
                let key = format!("{}:{hex}", algorithm.name());
                // Anything that is not a blob name is not ours to index.
                if key.parse::<Digest>().is_err() {
                    continue;
                }
                let metadata = entry.metadata()?;
                if metadata.is_file() {
                    let time = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    found.push((time, key, metadata.len()));
                }
            }
        }
        found.sort();
        let store = BlobStore {
            dir,
            tmp,
            index: Mutex::new(Lru::new(max_size)),
            stats,
            next_temp: AtomicU64::new(0),
            min_free,
        };
        {
            let mut index = store.lock();
            for (_, key, size) in found {
                let entry = BlobEntry {
                    size,
                    readers: Arc::new(AtomicUsize::new(0)),
                };
                let evicted = index.insert(key, entry, size, |_, _| false);
                store.delete_evicted(evicted);
            }
            CacheStats::set(&store.stats.blob_bytes, index.weight());
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<String, BlobEntry>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the blob `digest` lives once stored.
    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.algorithm().name()).join(digest.hex())
    }

    /// The size of a stored blob, counting as a use.
    pub fn stat(&self, digest: &Digest) -> Option<u64> {
        self.lock()
            .get(&digest.as_str().to_owned())
            .map(|entry| entry.size)
    }

    /// Opens a stored blob for reading, counting as a use.
    pub fn open_blob(&self, digest: &Digest) -> Option<BlobFile> {
        let key = digest.as_str().to_owned();
        let entry = {
            let mut index = self.lock();
            let entry = index.get(&key)?.clone();
            entry.readers.fetch_add(1, Ordering::AcqRel);
            entry
        };
        let guard = ReaderGuard(entry.readers.clone());
        match std::fs::File::open(self.path(digest)) {
            Ok(file) => {
                let stale = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > TOUCH_INTERVAL);
                if stale {
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(BlobFile {
                    file,
                    size: entry.size,
                    guard,
                })
            }
            Err(error) => {
                // Removed behind our back: forget it, and fetch it again.
                tracing::warn!(digest = %digest, %error, "indexed blob cannot be opened; forgotten");
                drop(guard);
                self.lock().remove(&key);
                None
            }
        }
    }

    /// Whether a blob of `len` bytes can be stored at all (`cache.max_size`): a larger one is
    /// streamed without being cached, rather than evicting the whole store for nothing.
    pub fn fits(&self, len: u64) -> bool {
        len <= self.lock().capacity()
    }

    /// Whether `len` more bytes fit on the store's filesystem with `cache.min_free_space` to
    /// spare. Eviction only bounds the store itself; the disk may be shared, or full of
    /// something else. When the free space cannot be read, the write is left to tell.
    pub fn has_room(&self, len: u64) -> bool {
        free_space(&self.tmp).is_none_or(|free| free >= len.saturating_add(self.min_free))
    }

    /// Begins writing blob `digest`, which is about to stream in: the spool its readers follow,
    /// and the writer. `len`, when known, is reserved on disk up front.
    pub async fn begin_write(
        &self,
        digest: &Digest,
        len: Option<u64>,
    ) -> io::Result<(Spool, TempWriter)> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("blob-{}-{n}", std::process::id()));
        let file = tokio::fs::File::create(&path).await?.into_std().await;
        if let Some(len) = len
            && let Err(error) = reserve(&file, len)
        {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        let spool = Spool {
            temp: Arc::new(path),
            stored: Arc::new(self.path(digest)),
        };
        Ok((spool, TempWriter::new(file)))
    }

    /// Drops a blob being written that will not be committed.
    pub async fn discard(&self, spool: &Spool) {
        let _ = tokio::fs::remove_file(spool.temp.as_path()).await;
    }

    /// Removes a stored blob (unless it is being read); whether it was removed.
    pub fn evict(&self, digest: &Digest) -> bool {
        let key = digest.as_str().to_owned();
        let mut index = self.lock();
        let reading = index
            .get(&key)
            .is_some_and(|entry| entry.readers.load(Ordering::Acquire) > 0);
        if reading {
            return false;
        }
        let Some(entry) = index.remove(&key) else {
            return false;
        };
        self.delete_evicted(vec![(key, entry)]);
        CacheStats::set(&self.stats.blob_bytes, index.weight());
        true
    }

    /// Moves the verified bytes of `spool` into the store as blob `digest`, then evicts down to
    /// the bound. Only a blob whose every byte hashed to `digest` may be committed.
    pub fn commit(&self, spool: &Spool, digest: &Digest, size: u64) -> io::Result<()> {
        let temp = spool.temp.as_path();
        let path = self.path(digest);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Indexing, evicting and renaming under the lock: an eviction of an older copy of the
        // same blob cannot delete the new file. The evicted files go first, so that the store
        // on disk never holds more than its bound, not even for a moment.
        let key = digest.as_str().to_owned();
        let mut index = self.lock();
        // The same content is already stored (and may be read): the copy is not needed.
        if index.peek(&key).is_some() {
            return std::fs::remove_file(temp);
        }
        let entry = BlobEntry {
            size,
            readers: Arc::new(AtomicUsize::new(0)),
        };
        let mut evicted = index.insert(key.clone(), entry, size, |_, entry| {
            entry.readers.load(Ordering::Acquire) > 0
        });
        // A blob the bound cannot make room for (larger than `cache.max_size`, or than what the
        // blobs being read leave) is refused alone, without evicting anything: it is served, not
        // kept.
        let refused = evicted.iter().position(|(evicted, _)| *evicted == key);
        if let Some(refused) = refused {
            evicted.swap_remove(refused);
        }
        self.delete_evicted(evicted);
        CacheStats::set(&self.stats.blob_bytes, index.weight());
        if refused.is_some() {
            tracing::warn!(digest = %digest, size, max_size = index.capacity(), "blob larger than the room the store can make: served, not stored");
            CacheStats::count(&self.stats.store_failures);
            return std::fs::remove_file(temp);
        }
        if let Err(error) = std::fs::rename(temp, &path) {
            index.remove(&key);
            CacheStats::set(&self.stats.blob_bytes, index.weight());
            return Err(error);
        }
        Ok(())
    }

    /// Deletes the files of evicted entries (called with the index locked).
    fn delete_evicted(&self, evicted: Vec<(String, BlobEntry)>) {
        for (key, _) in evicted {
            CacheStats::count(&self.stats.evictions);
            if let Ok(digest) = key.parse::<Digest>() {
                let path = self.path(&digest);
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot remove an evicted blob");
                }
            }
        }
    }

    /// The bytes held in the store.
    pub fn stored_bytes(&self) -> u64 {
        self.lock().weight()
    }

    /// The number of blobs in the store.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Writes a downloading blob to its temporary file without holding up the download.
///
/// File writes block, so they run on tokio's blocking pool. Awaiting each one before taking
/// the next network chunk would make the download as slow as network, hash and disk in a row;
/// instead chunks are collected (not copied) into batches of [`WRITE_BATCH`] bytes, and a batch
/// is written while the next one fills. The download only waits when the disk is slower than the
/// network.
pub struct TempWriter {
    /// `None` while a batch is being written.
    file: Option<std::fs::File>,
    in_flight: Option<tokio::task::JoinHandle<(std::fs::File, Batch)>>,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Bytes known to be in the file.
    written: u64,
    /// The batch whose write failed: after `written`, before `pending`.
    failed: Vec<Bytes>,
}

/// A batch written (its length), or why not, with its chunks.
type Batch = Result<u64, (io::Error, Vec<Bytes>)>;

/// How many bytes a [`TempWriter`] collects before it writes them.
pub const WRITE_BATCH: usize = 1 << 20;

impl TempWriter {
    fn new(file: std::fs::File) -> TempWriter {
        TempWriter {
            file: Some(file),
            in_flight: None,
            pending: Vec::new(),
            pending_len: 0,
            written: 0,
            failed: Vec::new(),
        }
    }

    /// After a failed write: the bytes known to be in the file, and the chunks that follow
    /// them, which never reached it (bounded by two batches).
    pub fn unwritten(&mut self) -> (u64, Vec<Bytes>) {
        let mut chunks = std::mem::take(&mut self.failed);
        chunks.append(&mut self.pending);
        self.pending_len = 0;
        (self.written, chunks)
    }

    /// Adds a chunk. When a batch is full it is handed to the blocking pool (after the previous
    /// batch is done); returns the bytes known to be in the file when that changed.
    pub async fn push(&mut self, chunk: Bytes) -> io::Result<Option<u64>> {
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len < WRITE_BATCH {
            return Ok(None);
        }
        let before = self.written;
        self.finish_in_flight().await?;
        self.start_batch();
        Ok((self.written != before).then_some(self.written))
    }

    /// Writes everything pushed; returns the bytes in the file.
    pub async fn flush(&mut self) -> io::Result<u64> {
        self.finish_in_flight().await?;
        self.start_batch();
        self.finish_in_flight().await?;
        Ok(self.written)
    }

    /// Writes everything pushed and makes the file's data durable.
    pub async fn sync_data(&mut self) -> io::Result<()> {
        self.flush().await?;
        let file = self.take_file()?;
        let (file, result) = tokio::task::spawn_blocking(move || {
            let result = file.sync_data();
            (file, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.file = Some(file);
        result
    }

    fn take_file(&mut self) -> io::Result<std::fs::File> {
        self.file
            .take()
            .ok_or_else(|| io::Error::other("an earlier write of this file failed"))
    }

    /// A writer of `file`, which a test chooses (one whose writes fail, say).
    #[cfg(test)]
    pub(crate) fn of_file(file: std::fs::File) -> TempWriter {
        TempWriter::new(file)
    }

    fn start_batch(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Ok(mut file) = self.take_file() else {
            return;
        };
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let result = match batch.iter().try_for_each(|chunk| file.write_all(chunk)) {
                Ok(()) => Ok(batch.iter().map(|c| c.len() as u64).sum()),
                Err(error) => Err((error, batch)),
            };
            (file, result)
        }));
    }

    async fn finish_in_flight(&mut self) -> io::Result<()> {
        let Some(in_flight) = self.in_flight.take() else {
            // A file lost to an earlier failure stays lost.
            return self
                .file
                .as_ref()
                .map(|_| ())
                .ok_or_else(|| io::Error::other("an earlier write of this file failed"));
        };
        let (file, result) = in_flight.await.map_err(io::Error::other)?;
        self.file = Some(file);
        match result {
            Ok(written) => {
                self.written += written;
                Ok(())
            }
            Err((error, batch)) => {
                self.failed = batch;
                Err(error)
            }
        }
    }
}

/// Allocates `len` bytes of disk for `file` without changing its size.
///
/// A blob that cannot fit is known before its download starts rather than at the write that
/// fills the disk, and the filesystem allocates the extents once instead of block by block as
/// the batches arrive (a few percent of the CPU a cold download costs). Filesystems without
/// preallocation are left to allocate as they write.
#[cfg(target_os = "linux")]
fn reserve(file: &std::fs::File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("blob too large"))?;
    // SAFETY: fallocate reads no memory of ours; the descriptor is open for the call's length.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(()),
        _ => Err(error),
    }
}

/// Elsewhere the filesystem allocates as the batches are written.
#[cfg(not(target_os = "linux"))]
fn reserve(_file: &std::fs::File, _len: u64) -> io::Result<()> {
    Ok(())
}

/// The bytes an unprivileged process may still write on the filesystem holding `path`.
fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` a buffer statvfs fills on success.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // Both are u64 on 64-bit Linux but narrower elsewhere; the conversions are for the others.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Some(blocks.saturating_mul(size))
}

/// What a download hands a reader from memory rather than through the file.
#[derive(Debug)]
pub enum Piece {
    /// The next bytes (never the last ones before the digest is verified).
    Data(Bytes),
    /// Every byte was sent and verified.
    Done,
}

/// The rest of a download that lost its file, for the one reader that takes it.
pub type Relay = Arc<Mutex<Option<tokio::sync::mpsc::Receiver<Piece>>>>;

/// The progress of a blob download shared by everyone reading it.
#[derive(Debug, Clone)]
pub enum DownloadState {
    /// Pull sources are being tried.
    Connecting,
    /// Bytes are arriving in `temp`; `written` of them are on disk.
    Streaming {
        /// What the bytes grow in.
        temp: Spool,
        /// The length the upstream announced.
        len: Option<u64>,
        /// Bytes written so far.
        written: u64,
    },
    /// All `len` bytes arrived and were verified; they are in `temp` until the store takes them
    /// (a reader that finds `temp` gone finds the stored blob).
    Complete {
        /// The blob's size.
        len: u64,
        /// What the bytes are in, until the store takes them.
        temp: Spool,
    },
    /// The download failed; the message says why, and whether every source said not found.
    Failed {
        /// What was tried and why it failed.
        reason: Arc<str>,
        /// Every source tried answered "not found".
        not_found: bool,
    },
    /// The store cannot take the blob (the cache directory is unusable): each reader fetches it
    /// for itself, uncached.
    Uncacheable,
    /// Writing `temp` failed after its first `from` bytes (a full disk): the download goes on
    /// uncached, for one reader, which reads the file up to `from` and takes the rest from
    /// `rest`. Other readers fail, and later requests fetch the blob for themselves.
    Relayed {
        /// The bytes in the file.
        from: u64,
        /// The rest, for the first reader that gets that far.
        rest: Relay,
    },
}

/// Reads `len` bytes of `file` from `start`, as chunks of at most [`READ_CHUNK`].
pub fn read_range(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let end = start.saturating_add(len);
    futures_util::stream::try_unfold(
        (Arc::new(file), start),
        move |(file, position)| async move {
            if position >= end {
                return Ok(None);
            }
            let want = usize::try_from(end - position).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
            let chunk = read_chunk(&file, position, want).await?;
            let position = position + chunk.len() as u64;
            Ok(Some((chunk, (file, position))))
        },
    )
}

/// Reads up to `want` bytes at `offset` on the blocking pool, straight into the chunk that is
/// handed on (tokio's `File` reads into a buffer of its own and copies from there).
async fn read_chunk(file: &Arc<std::fs::File>, offset: u64, want: usize) -> io::Result<Bytes> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        let mut buffer = BytesMut::with_capacity(want);
        let read = pread_into(&file, &mut buffer.spare_capacity_mut()[..want], offset)?;
        if read == 0 {
            // The length comes from the index or the download: a file that ends early was cut.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the blob file ends before its length",
            ));
        }
        // SAFETY: `pread_into` initialised the first `read` bytes of the spare capacity.
        unsafe { buffer.set_len(read) };
        Ok(buffer.freeze())
    })
    .await
    .map_err(io::Error::other)?
}

/// `pread` into memory not yet initialised: a buffer zeroed first only to be overwritten cost a
/// `memset` of every byte served (most of the user-space instructions of a cached blob).
/// Returns how many bytes were read; those are initialised.
fn pread_into(
    file: &std::fs::File,
    buffer: &mut [std::mem::MaybeUninit<u8>],
    offset: u64,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
    loop {
        // SAFETY: the kernel writes at most `buffer.len()` bytes at `buffer`, which is valid
        // for writes of that many bytes; the file descriptor stays open while `file` is borrowed.
        let read = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                offset,
            )
        };
        match usize::try_from(read) {
            Ok(read) => return Ok(read),
            Err(_) => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// A body that reads a blob's temporary file as the download writes it. It never yields the
/// last byte before the download is verified, and fails rather than ends if the download fails,
/// so a reader never takes a broken blob for a whole one.
///
/// A reader that opens the spool only after the download completed finds the stored blob.
pub fn follow(
    spool: Spool,
    state: watch::Receiver<DownloadState>,
    start: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    struct Follower {
        temp: Arc<PathBuf>,
        stored: Arc<PathBuf>,
        file: Option<Arc<std::fs::File>>,
        position: u64,
        state: watch::Receiver<DownloadState>,
        done: bool,
        /// The rest of a download that lost its file, and where its next chunk starts.
        relay: Option<(tokio::sync::mpsc::Receiver<Piece>, u64)>,
    }
    let follower = Follower {
        temp: spool.temp,
        stored: spool.stored,
        file: None,
        position: start,
        state,
        done: false,
        relay: None,
    };
    futures_util::stream::unfold(follower, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            if let Some((rest, at)) = &mut f.relay {
                match rest.recv().await {
                    Some(Piece::Data(chunk)) => {
                        let start = *at;
                        *at += chunk.len() as u64;
                        // Bytes this reader already had from the file (or from memory).
                        if *at <= f.position {
                            continue;
                        }
                        let skip = usize::try_from(f.position - start).unwrap_or(0);
                        let chunk = chunk.slice(skip..);
                        f.position += chunk.len() as u64;
                        return Some((Ok(chunk), f));
                    }
                    Some(Piece::Done) => return None,
                    None => {
                        f.done = true;
                        let error = io::Error::other("the uncached download of the blob failed");
                        return Some((Err(error), f));
                    }
                }
            }
            let snapshot = f.state.borrow_and_update().clone();
            // A download that started over (its first source broke off or was corrupt) grows
            // another spool: the bytes read so far came from the abandoned one.
            let restarted = match &snapshot {
                DownloadState::Streaming { temp, .. } | DownloadState::Complete { temp, .. } => {
                    temp.temp != f.temp
                }
                _ => false,
            };
            if restarted {
                f.done = true;
                let error = io::Error::other(
                    "the blob's download started over from another source; try again",
                );
                return Some((Err(error), f));
            }
            let (readable, complete) = match snapshot {
                DownloadState::Streaming { written, .. } => (written.saturating_sub(1), false),
                DownloadState::Complete { len, .. } => (len, true),
                DownloadState::Failed { reason, .. } => {
                    f.done = true;
                    return Some((Err(io::Error::other(reason.to_string())), f));
                }
                DownloadState::Uncacheable => {
                    f.done = true;
                    let error = io::Error::other("the blob could not be cached");
                    return Some((Err(error), f));
                }
                DownloadState::Connecting => (0, false),
                DownloadState::Relayed { from, .. } if f.position < from => (from, false),
                DownloadState::Relayed { from, rest } => {
                    let taken = rest.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let Some(rest) = taken else {
                        f.done = true;
                        let error = io::Error::other("the blob could not be cached; try again");
                        return Some((Err(error), f));
                    };
                    f.relay = Some((rest, from));
                    continue;
                }
            };
            if f.position < readable {
                let want = usize::try_from(readable - f.position)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let file = match &mut f.file {
                    Some(file) => file,
                    None => {
                        // A temporary file that is gone was committed (or the download failed,
                        // and then there is no stored file either, unless an earlier verified
                        // copy of the same content).
                        let opened = match tokio::fs::File::open(f.temp.as_path()).await {
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                tokio::fs::File::open(f.stored.as_path()).await
                            }
                            opened => opened,
                        };
                        let opened = match opened {
                            Ok(file) => Ok(Arc::new(file.into_std().await)),
                            Err(error) => Err(error),
                        };
                        match opened {
                            Ok(file) => f.file.insert(file),
                            Err(error) => {
                                f.done = true;
                                return Some((Err(error), f));
                            }
                        }
                    }
                };
                return match read_chunk(file, f.position, want).await {
                    Ok(chunk) => {
                        f.position += chunk.len() as u64;
                        Some((Ok(chunk), f))
                    }
                    Err(error) => {
                        f.done = true;
                        Some((Err(error), f))
                    }
                };
            }
            if complete {
                return None;
            }
            if f.state.changed().await.is_err() {
                f.done = true;
                let error = io::Error::other("the download ended without an outcome");
                return Some((Err(error), f));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, bytes).unwrap();
        (dir, std::fs::File::open(path).unwrap())
    }

    #[tokio::test]
    async fn a_range_read_returns_exactly_its_bytes_across_chunk_boundaries() {
        let content: Vec<u8> = (0..READ_CHUNK * 5 / 2 + 7).map(|i| i as u8).collect();
        let (_dir, file) = file_with(&content);
        let (start, len) = (100, 2 * READ_CHUNK + 5);
        let chunks: Vec<Bytes> = read_range(file, start as u64, len as u64)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(chunks.concat(), content[start..start + len]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_the_length_asked_is_an_error_not_a_short_body() {
        let (_dir, file) = file_with(b"only eleven");
        let read: io::Result<Vec<Bytes>> = read_range(file, 0, 64).try_collect().await;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn reserving_space_for_a_blob_leaves_the_file_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("blob")).unwrap();
        reserve(&file, 4 << 20).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 0);
    }

    fn store(dir: &Path) -> BlobStore {
        store_of(dir, u64::MAX)
    }

    fn store_of(dir: &Path, max_size: u64) -> BlobStore {
        BlobStore::open(
            dir.join("blobs"),
            dir.join("tmp"),
            max_size,
            0,
            Arc::new(CacheStats::default()),
        )
        .unwrap()
    }

    /// Writes and commits `len` bytes of `fill`; their digest.
    async fn put(store: &BlobStore, fill: u8, len: usize) -> Digest {
        let content = vec![fill; len];
        let digest: Digest = crate::reference::digest_of(Algorithm::Sha256, &content)
            .parse()
            .unwrap();
        let (spool, mut writer) = store.begin_write(&digest, None).await.unwrap();
        writer.push(Bytes::from(content)).await.unwrap();
        let written = writer.flush().await.unwrap();
        store.commit(&spool, &digest, written).unwrap();
        digest
    }

    #[tokio::test]
    async fn a_blob_larger_than_the_store_is_not_kept_and_evicts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(dir.path(), 100);
        let small = [put(&store, 1, 30).await, put(&store, 2, 30).await];
        let big = put(&store, 3, 150).await;
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(
            (
                small.map(|digest| store.stat(&digest)),
                store.stat(&big),
                store.fits(150),
                leftovers
            ),
            ([Some(30), Some(30)], None, false, 0)
        );
    }

    #[tokio::test]
    async fn a_blob_that_fits_only_in_place_of_blobs_being_read_evicts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(dir.path(), 100);
        let older = put(&store, 1, 30).await;
        let read = put(&store, 2, 60).await;
        let reading = store.open_blob(&read).expect("stored");
        // 60 bytes being read leave room for 40: evicting the older 30 would not make room.
        let newer = put(&store, 3, 50).await;
        drop(reading);
        assert_eq!(
            (store.stat(&older), store.stat(&read), store.stat(&newer)),
            (Some(30), Some(60), None)
        );
    }

    #[tokio::test]
    async fn a_blob_is_written_committed_read_and_evicted_through_the_store_interface() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let content = b"blob content".to_vec();
        let digest: Digest = crate::reference::digest_of(Algorithm::Sha256, &content)
            .parse()
            .unwrap();
        let (spool, mut writer) = store
            .begin_write(&digest, Some(content.len() as u64))
            .await
            .unwrap();
        let before_commit = store.stat(&digest);
        writer.push(Bytes::from(content.clone())).await.unwrap();
        let written = writer.flush().await.unwrap();
        store.commit(&spool, &digest, written).unwrap();
        let stored = store.stat(&digest);
        let read: Vec<Bytes> = {
            let blob = store.open_blob(&digest).expect("stored");
            read_range(blob.file, 0, blob.size)
                .try_collect()
                .await
                .unwrap()
        };
        // A reader that follows the spool after the commit finds the stored blob.
        let (_, done) = watch::channel(DownloadState::Complete {
            len: written,
            temp: spool.clone(),
        });
        let followed: Vec<Bytes> = follow(spool, done, 0).try_collect().await.unwrap();
        let evicted = store.evict(&digest);
        assert_eq!(
            (
                before_commit,
                stored,
                read.concat(),
                followed.concat(),
                evicted,
                store.stat(&digest),
                store.is_empty()
            ),
            (
                None,
                Some(content.len() as u64),
                content.clone(),
                content,
                true,
                None,
                true
            )
        );
    }

    #[tokio::test]
    async fn a_follower_of_an_abandoned_spool_fails_when_the_download_starts_over() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let digest: Digest = crate::reference::digest_of(Algorithm::Sha256, b"twelve bytes")
            .parse()
            .unwrap();
        let (first, mut writer) = store.begin_write(&digest, Some(12)).await.unwrap();
        writer.push(Bytes::from_static(b"twelve")).await.unwrap();
        let written = writer.flush().await.unwrap();
        let (state, receiver) = watch::channel(DownloadState::Streaming {
            temp: first.clone(),
            len: Some(12),
            written,
        });
        let mut follower = Box::pin(follow(first, receiver, 0));
        // The last byte written is held back while the download streams.
        let head = follower
            .next()
            .await
            .map(|chunk| chunk.map(|c| c.to_vec()).ok());
        let (second, _writer) = store.begin_write(&digest, Some(12)).await.unwrap();
        state.send_replace(DownloadState::Streaming {
            temp: second,
            len: Some(12),
            written: 0,
        });
        let after_restart = follower.next().await.map(|chunk| chunk.is_err());
        assert_eq!(
            (head, after_restart),
            (Some(Some(b"twelv".to_vec())), Some(true))
        );
    }

    #[tokio::test]
    async fn a_discarded_write_leaves_nothing_and_a_blob_being_read_is_not_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let content = b"kept while read".to_vec();
        let digest: Digest = crate::reference::digest_of(Algorithm::Sha256, &content)
            .parse()
            .unwrap();
        let (abandoned, _writer) = store.begin_write(&digest, None).await.unwrap();
        store.discard(&abandoned).await;
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        let (spool, mut writer) = store.begin_write(&digest, None).await.unwrap();
        writer.push(Bytes::from(content.clone())).await.unwrap();
        let written = writer.flush().await.unwrap();
        store.commit(&spool, &digest, written).unwrap();
        let reading = store.open_blob(&digest).expect("stored");
        let evicted_while_read = store.evict(&digest);
        drop(reading);
        let evicted_after = store.evict(&digest);
        assert_eq!(
            (leftovers, evicted_while_read, evicted_after),
            (0, false, true)
        );
    }
}
