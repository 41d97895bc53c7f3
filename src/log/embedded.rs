//! The embedded event log: Kafka-like topics of durable append-only partition files under
//! the data dir, so `segflow run` needs no broker.
//!
//! A record is `[len: u32 LE][crc32: u32 LE][payload]`; its offset is its byte position.
//! One thread writes each batch of appends and shows it to readers at once; a second makes it
//! durable (one `fdatasync` per partition for every batch written meanwhile) and only then
//! acknowledges it. Readers thus run ahead of the sync, as a Kafka consumer reads what its
//! broker has not flushed: a playlist never waits for the disk. A process crash (even
//! `kill -9`) keeps everything written; only an OS crash or power loss can drop records, and
//! only ones never acknowledged. Committed offsets never pass the durable end.
//!
//! Files grow in zero-filled steps of [`PREALLOCATE`] bytes and records overwrite zeros in
//! place, so a sync carries no metadata change and waits for no file-system journal commit
//! (which would flush other files' data too). Writes cover whole [`BLOCK`]s, so the kernel never
//! reads a block back from disk to change part of it. Committed offsets live in
//! `{partition}.offset` files, replaced atomically.
//!
//! Damage is never taken for the end: a record that fails its checksum, or whose length cannot
//! be true, is skipped up to the next position where a whole record validates, and reported
//! (a `corrupt_record` dead letter). Only a tail after which nothing validates is a torn write,
//! cut off at open. A partition file shorter than its committed offset, or missing, is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use super::{Appended, LogError, LogRecord, MAX_RECORD_BYTES, RecordError};
use crate::model::Topic;

const HEADER: usize = 8;
/// How far a partition file is zero-filled ahead of its records.
pub const PREALLOCATE: u64 = 8 << 20;
/// Writes cover whole blocks of this size: a tail block not touched for a while may have left
/// the page cache, and changing part of it would read it back from disk first.
const BLOCK: u64 = 4096;

/// One partition file as the writer sees it.
struct PartitionFile {
    path: PathBuf,
    file: File,
    /// End of the last written record: where the next batch goes.
    end: u64,
    /// File length: zeros from `end` up to here.
    allocated: u64,
    /// The records' bytes in the block `end` falls in, rewritten with each write.
    tail: Vec<u8>,
    /// `end`, as published.
    ends: Arc<Ends>,
}

/// A partition's ends as the writer publishes them.
struct Ends {
    /// Readers read up to here.
    written: AtomicU64,
    /// Acknowledgements and committed offsets go up to here.
    durable: AtomicU64,
}

impl Ends {
    fn at(end: u64) -> Arc<Ends> {
        Arc::new(Ends { written: AtomicU64::new(end), durable: AtomicU64::new(end) })
    }
}

impl PartitionFile {
    /// Writes `bytes` at the end and shows them to readers. On failure nothing is shown and
    /// the next batch overwrites whatever part was written.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let needed = self.end + bytes.len() as u64;
        if needed > self.allocated {
            // Zeros written (not fallocated): overwriting them later changes no metadata.
            let target = needed.div_ceil(PREALLOCATE) * PREALLOCATE;
            let zeros = vec![0u8; 1 << 20];
            let mut at = self.allocated;
            while at < target {
                let n = (target - at).min(zeros.len() as u64) as usize;
                self.file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            self.allocated = target;
        }
        // The tail block's records, the new ones, zeros up to a block boundary.
        let block_start = self.end - self.tail.len() as u64;
        let mut blocks = std::mem::take(&mut self.tail);
        blocks.extend_from_slice(bytes);
        let records = blocks.len();
        blocks.resize((records as u64).next_multiple_of(BLOCK) as usize, 0);
        if let Err(e) = self.file.write_all_at(&blocks, block_start) {
            blocks.truncate(records - bytes.len());
            self.tail = blocks;
            return Err(e);
        }
        blocks.truncate(records);
        self.tail = blocks.split_off(records - records % BLOCK as usize);
        self.end = needed;
        self.ends.written.store(needed, Ordering::Release);
        Ok(())
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

/// A reader's wake-up call and the partitions it reads.
struct Waker {
    partitions: BTreeSet<(Topic, u32)>,
    wake: Box<dyn Fn() + Send + Sync>,
}

type Wakers = Arc<Mutex<Vec<Waker>>>;

type Stopped = Arc<Mutex<BTreeMap<(Topic, u32), String>>>;

struct AppendRequest {
    topic: Topic,
    partition: u32,
    payload: Vec<u8>,
    reply: Reply,
}

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    ends: BTreeMap<(Topic, u32), Arc<Ends>>,
    /// Partitions a reader cannot read, and why: `/health` reports them.
    stopped: Stopped,
    requests: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    wakers: Wakers,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EmbeddedLog {
    /// Opens (creating if needed) every topic's partition files under `dir`, cutting off a
    /// record torn by a crash mid-write; refuses partitions that lost committed records.
    pub fn open(dir: &Path) -> Result<EmbeddedLog, LogError> {
        let mut damaged = Vec::new();
        let mut files = BTreeMap::new();
        let mut targets = BTreeMap::new();
        let mut ends = BTreeMap::new();
        for topic in Topic::ALL {
            let topic_dir = dir.join(topic.name());
            fs::create_dir_all(&topic_dir).map_err(io_err(&topic_dir))?;
            for p in 0..topic.partitions() {
                let path = partition_path(dir, topic, p);
                let committed = read_offset(&offset_path(dir, topic, p))?;
                if let Some(problem) = check_length(&path, &offset_path(dir, topic, p), committed)? {
                    damaged.push(problem);
                    continue;
                }
                let mut file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                let (end, dirty_end) = scan_valid_end(&mut file, committed, &path).map_err(io_err(&path))?;
                if dirty_end > end {
                    // Zeros over what follows the last whole record (not a truncation, which
                    // would give the space back and make the next appends change metadata).
                    tracing::warn!(topic = topic.name(), partition = p, end, "cutting off a torn record");
                    let zeros = vec![0u8; (dirty_end - end) as usize];
                    file.write_all_at(&zeros, end).and_then(|_| file.sync_data()).map_err(io_err(&path))?;
                }
                let allocated = file.metadata().map_err(io_err(&path))?.len();
                let mut tail = vec![0; (end % BLOCK) as usize];
                file.read_exact_at(&mut tail, end - end % BLOCK).map_err(io_err(&path))?;
                let published = Ends::at(end);
                ends.insert((topic, p), published.clone());
                let sync_file = file.try_clone().map_err(io_err(&path))?;
                targets.insert((topic, p), SyncTarget { path: path.clone(), file: sync_file, ends: published.clone() });
                files.insert((topic, p), PartitionFile { path, file, end, allocated, tail, ends: published });
            }
        }
        if !damaged.is_empty() {
            return Err(LogError::Damaged(damaged.join("; ")));
        }
        let (to_sync, written) = mpsc::channel();
        let syncer = std::thread::Builder::new()
            .name("segflow-log-sync".into())
            .spawn(move || sync_loop(written, targets))
            .map_err(io_err(dir))?;
        let (tx, rx) = mpsc::channel();
        let wakers: Wakers = Arc::default();
        let writer_wakers = wakers.clone();
        let writer = std::thread::Builder::new()
            .name("segflow-log-writer".into())
            .spawn(move || {
                write_loop(rx, files, writer_wakers, to_sync);
                let _ = syncer.join();
            })
            .map_err(io_err(dir))?;
        Ok(EmbeddedLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                ends,
                stopped: Stopped::default(),
                requests: Mutex::new(Some(tx)),
                wakers,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    pub fn partition_for(topic: Topic, key: &str) -> u32 {
        (crate::model::stream_hash(key) % topic.partitions() as u64) as u32
    }

    /// Appends a record keyed by `key`; resolves once it is durable.
    pub async fn append(&self, topic: Topic, key: &str, payload: Vec<u8>) -> Result<Appended, LogError> {
        self.append_to(topic, Self::partition_for(topic, key), payload).await
    }

    /// Appends a record to a given partition; resolves once it is durable.
    pub async fn append_to(&self, topic: Topic, partition: u32, payload: Vec<u8>) -> Result<Appended, LogError> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(LogError::TooLarge(payload.len()));
        }
        if payload.is_empty() {
            // A zero length marks the unwritten (zero-filled) part of a file.
            let source = io::Error::new(io::ErrorKind::InvalidInput, "an empty record");
            return Err(LogError::Io { path: partition_path(&self.inner.dir, topic, partition), source });
        }
        let (reply, done) = oneshot::channel();
        {
            let guard = self.inner.requests.lock().expect("log sender lock");
            let sender = guard.as_ref().ok_or(LogError::Closed)?;
            sender.send(AppendRequest { topic, partition, payload, reply }).map_err(|_| LogError::Closed)?;
        }
        done.await.map_err(|_| LogError::Closed)?
    }

    /// Calls `wake` after every batch of appends to one of `partitions` of `topic` is written
    /// (before its sync); a worker is not woken for the partitions of others.
    pub fn on_append(&self, topic: Topic, partitions: &[u32], wake: impl Fn() + Send + Sync + 'static) {
        let partitions = partitions.iter().map(|p| (topic, *p)).collect();
        self.inner.wakers.lock().expect("wakers lock").push(Waker { partitions, wake: Box::new(wake) });
    }

    /// A reader positioned at the partition's committed offset.
    pub fn reader(&self, topic: Topic, partition: u32) -> Result<PartitionReader, LogError> {
        let path = partition_path(&self.inner.dir, topic, partition);
        let mut file = File::open(&path).map_err(io_err(&path))?;
        let position = self.committed(topic, partition)?;
        file.seek(SeekFrom::Start(position)).map_err(io_err(&path))?;
        let ends = self.inner.ends[&(topic, partition)].clone();
        let stopped = self.inner.stopped.clone();
        Ok(PartitionReader {
            topic,
            partition,
            file,
            path,
            position,
            ends,
            buffer: Vec::new(),
            stopped,
            reported: false,
        })
    }

    /// Whether the writer thread has stopped before [`Self::close`] (it panicked).
    pub fn writer_stopped(&self) -> bool {
        self.inner.writer.lock().expect("writer lock").as_ref().is_some_and(|handle| handle.is_finished())
    }

    /// The partitions a reader cannot read, each with its file and error.
    pub fn stopped_partitions(&self) -> Vec<String> {
        self.inner.stopped.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// End of the partition's last durable record.
    pub fn end(&self, topic: Topic, partition: u32) -> u64 {
        self.inner.ends[&(topic, partition)].durable.load(Ordering::Acquire)
    }

    pub fn committed(&self, topic: Topic, partition: u32) -> Result<u64, LogError> {
        read_offset(&offset_path(&self.inner.dir, topic, partition))
    }

    /// Records that everything before `offset` has been durably processed; a commit never
    /// passes the durable end (it catches up with the next one).
    pub fn commit(&self, topic: Topic, partition: u32, offset: u64) -> Result<(), LogError> {
        let offset = offset.min(self.end(topic, partition));
        let path = offset_path(&self.inner.dir, topic, partition);
        // Through one spare, so a commit creates no file. Fixed width: each version overwrites
        // its file's bytes one for one, so a crash mid-write cannot leave a number's tail.
        crate::files::swap_in(&path, 1, 0, format!("{offset:020}").as_bytes()).map_err(io_err(&path))
    }

    /// Sets every committed offset back to 0, before any reader is made, so every record is
    /// replayed; each offset file is replaced atomically.
    pub fn rewind(&self) -> Result<super::Rewound, LogError> {
        let mut rewound = super::Rewound::default();
        for topic in Topic::ALL {
            for p in 0..topic.partitions() {
                let committed = self.committed(topic, p)?;
                if committed > 0 {
                    self.commit(topic, p, 0)?;
                    rewound.processed = rewound.processed.saturating_add(committed);
                }
                rewound.spans.insert((topic, p), (0, self.end(topic, p)));
            }
        }
        Ok(rewound)
    }

    /// Stops the writer after it has answered every request already sent.
    pub fn close(&self) {
        self.inner.requests.lock().expect("log sender lock").take();
        if let Some(handle) = self.inner.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }
}

fn partition_path(dir: &Path, topic: Topic, partition: u32) -> PathBuf {
    dir.join(topic.name()).join(format!("{partition}.log"))
}

fn offset_path(dir: &Path, topic: Topic, partition: u32) -> PathBuf {
    dir.join(topic.name()).join(format!("{partition}.offset"))
}

fn read_offset(path: &Path) -> Result<u64, LogError> {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|e| LogError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, format!("bad offset file: {e}")),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(LogError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Why partition `path` cannot be opened, if it lost records its offset file says were
/// processed: it is missing, or shorter than that offset (truncated).
fn check_length(path: &Path, offset_file: &Path, committed: u64) -> Result<Option<String>, LogError> {
    let len = match fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if committed == 0 {
                return Ok(None);
            }
            return Ok(Some(format!(
                "partition file {} is missing, but {} says its first {committed} bytes were processed; \
                 restore the file, or remove {} to accept the loss and start the partition afresh",
                path.display(),
                offset_file.display(),
                offset_file.display(),
            )));
        }
        Err(e) => return Err(LogError::Io { path: path.to_path_buf(), source: e }),
    };
    if len >= committed {
        return Ok(None);
    }
    Ok(Some(format!(
        "partition file {} is {len} bytes, shorter than its committed offset {committed} (in {}): it was \
         truncated and lost acknowledged records; restore it from a backup, or remove {} to accept the \
         loss and reprocess the partition from its start",
        path.display(),
        offset_file.display(),
        offset_file.display(),
    )))
}

/// The end of the last valid record at or after `from`, and the end of the non-zero bytes
/// after it (beyond the first if a crash tore a record). A damaged stretch followed by a valid
/// record is kept, for the readers to report: only a tail after which nothing validates is cut.
fn scan_valid_end(file: &mut File, from: u64, path: &Path) -> io::Result<(u64, u64)> {
    let len = file.metadata()?.len();
    let from = from.min(len);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    // No header starts after the last non-zero byte.
    let dirty = bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
    let mut pos = 0;
    loop {
        match parse_record(&bytes[pos..]) {
            Parsed::Record { next, .. } => pos += next,
            _ => match resync(&bytes, pos + 1, dirty) {
                Some(next) => {
                    let (start, end) = (from + pos as u64, from + next as u64);
                    tracing::error!(path = %path.display(), start, end, "damaged bytes before valid records: kept, to be reported");
                    pos = next;
                }
                None => break,
            },
        }
    }
    Ok((from + pos as u64, from + dirty.max(pos) as u64))
}

/// The first position in `from..until` where a whole valid record starts.
fn resync(bytes: &[u8], from: usize, until: usize) -> Option<usize> {
    let mut at = from;
    while at < until {
        // A header's length is not zero: a record starts at most 3 bytes before a non-zero byte.
        let non_zero = next_non_zero(bytes, at);
        if non_zero >= until {
            return None;
        }
        at = at.max(non_zero.saturating_sub(3));
        if let Parsed::Record { .. } = parse_record(&bytes[at..]) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// The first non-zero byte at or after `from` (`bytes.len()` if none), eight bytes at a time.
fn next_non_zero(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while bytes.get(at..at + 8).is_some_and(|word| word == [0; 8]) {
        at += 8;
    }
    while bytes.get(at).is_some_and(|b| *b == 0) {
        at += 1;
    }
    at
}

fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

enum Parsed<'a> {
    Record {
        payload: &'a [u8],
        next: usize,
    },
    /// Its header or payload runs past the end of `bytes`.
    Incomplete,
    /// Not a record: a length that cannot be true, or a checksum that does not match.
    Bad(RecordError),
}

/// Parses the record at the start of `bytes`.
fn parse_record(bytes: &[u8]) -> Parsed<'_> {
    let Some(header) = bytes.get(..HEADER) else { return Parsed::Incomplete };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_RECORD_BYTES {
        return Parsed::Bad(RecordError::Length);
    }
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let Some(payload) = bytes.get(HEADER..HEADER + len) else { return Parsed::Incomplete };
    if crc32fast::hash(payload) != crc {
        return Parsed::Bad(RecordError::Checksum);
    }
    Parsed::Record { payload, next: HEADER + len }
}

/// Writes batches of appends and shows them to readers, then hands them to a second thread
/// that makes them durable and acknowledges them: new records never wait for the disk's sync.
fn write_loop(
    requests: mpsc::Receiver<AppendRequest>,
    mut files: BTreeMap<(Topic, u32), PartitionFile>,
    wakers: Wakers,
    to_sync: mpsc::Sender<WrittenBatch>,
) {
    let mut encoded: BTreeMap<(Topic, u32), Vec<u8>> = BTreeMap::new();
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // Encode per partition, remembering each record's offset.
        let mut offsets = Vec::with_capacity(batch.len());
        for request in &batch {
            let key = (request.topic, request.partition);
            let Some(file) = files.get(&key) else {
                offsets.push(None);
                continue;
            };
            let buffer = encoded.entry(key).or_default();
            offsets.push(Some(file.end + buffer.len() as u64));
            encode(&request.payload, buffer);
        }
        let mut failed: BTreeMap<(Topic, u32), String> = BTreeMap::new();
        let mut ends = BTreeMap::new();
        for (key, buffer) in encoded.iter_mut().filter(|(_, b)| !b.is_empty()) {
            let file = files.get_mut(key).expect("encoded only for known partitions");
            match file.write(buffer) {
                Ok(()) => {
                    ends.insert(*key, file.end);
                }
                Err(e) => {
                    tracing::error!(path = %file.path.display(), error = %e, "event log write failed");
                    failed.insert(*key, e.to_string());
                }
            }
            buffer.clear();
        }
        wake(&wakers, &ends);
        let mut waiting = Vec::new();
        for (request, offset) in batch.into_iter().zip(offsets) {
            let key = (request.topic, request.partition);
            match (offset, failed.get(&key)) {
                (None, _) => {
                    let source = io::Error::new(io::ErrorKind::NotFound, format!("no partition {}", request.partition));
                    let _ = request.reply.send(Err(LogError::Io { path: PathBuf::from(request.topic.name()), source }));
                }
                (Some(_), Some(error)) => {
                    let path = files[&key].path.clone();
                    let _ = request.reply.send(Err(LogError::Io { path, source: io::Error::other(error.clone()) }));
                }
                (Some(offset), None) => {
                    waiting.push((key, request.reply, Appended { partition: request.partition, offset }))
                }
            }
        }
        if !waiting.is_empty() {
            let _ = to_sync.send(WrittenBatch { ends, waiting });
        }
    }
}

type Reply = oneshot::Sender<Result<Appended, LogError>>;

/// A written batch: each partition's end after it, and the appends waiting for their sync.
struct WrittenBatch {
    ends: BTreeMap<(Topic, u32), u64>,
    waiting: Vec<((Topic, u32), Reply, Appended)>,
}

/// A partition file as the syncer sees it (its own handle on the same file).
struct SyncTarget {
    path: PathBuf,
    file: File,
    ends: Arc<Ends>,
}

/// Makes written batches durable, every batch written meanwhile with one `fdatasync` per
/// partition, and acknowledges them. A failed sync keeps the records (readers may have seen
/// them) but acknowledges none: their producers retry, and the dataflow ignores duplicates.
fn sync_loop(batches: mpsc::Receiver<WrittenBatch>, targets: BTreeMap<(Topic, u32), SyncTarget>) {
    while let Ok(first) = batches.recv() {
        let mut group = vec![first];
        group.extend(batches.try_iter());
        let mut ends: BTreeMap<(Topic, u32), u64> = BTreeMap::new();
        for (key, end) in group.iter().flat_map(|batch| &batch.ends) {
            let at = ends.entry(*key).or_default();
            *at = (*at).max(*end);
        }
        let mut failed = BTreeMap::new();
        for (key, end) in ends {
            let target = &targets[&key];
            if let Err(e) = target.file.sync_data() {
                tracing::error!(topic = key.0.name(), partition = key.1, error = %e, "event log sync failed");
                failed.insert(key, e);
            } else {
                target.ends.durable.fetch_max(end, Ordering::Release);
            }
        }
        for (key, reply, appended) in group.into_iter().flat_map(|batch| batch.waiting) {
            let result = match failed.get(&key) {
                None => Ok(appended),
                Some(e) => Err(LogError::Io {
                    path: targets[&key].path.clone(),
                    source: io::Error::new(e.kind(), e.to_string()),
                }),
            };
            let _ = reply.send(result);
        }
    }
}

fn wake(wakers: &Mutex<Vec<Waker>>, written: &BTreeMap<(Topic, u32), u64>) {
    for waker in wakers.lock().expect("wakers lock").iter() {
        if written.keys().any(|key| waker.partitions.contains(key)) {
            (waker.wake)();
        }
    }
}

/// Reads one partition forward from a position; never blocks on missing data.
pub struct PartitionReader {
    pub topic: Topic,
    pub partition: u32,
    file: File,
    path: PathBuf,
    /// Offset of the first byte of `buffer`.
    position: u64,
    /// The writer's ends: nothing past the written end is read.
    ends: Arc<Ends>,
    buffer: Vec<u8>,
    /// Where this partition is reported while reading it fails, and whether it is.
    stopped: Stopped,
    reported: bool,
}

impl PartitionReader {
    /// Appends up to `max` whole records to `out`; returns how many. A damaged stretch is one
    /// record with an error for a payload, ending where the next valid record starts. While
    /// reading fails, the partition is reported stopped.
    pub fn poll(&mut self, max: usize, out: &mut Vec<LogRecord>) -> io::Result<usize> {
        let polled = self.read(max, out);
        if polled.is_ok() && !self.reported {
            return polled; // the hot path takes no lock
        }
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let key = (self.topic, self.partition);
        match &polled {
            Ok(_) => {
                stopped.remove(&key);
            }
            Err(error) => {
                let at = self.position + self.buffer.len() as u64;
                let problem = format!("partition {} cannot be read at byte {at}: {error}", self.path.display());
                stopped.insert(key, problem);
            }
        }
        self.reported = polled.is_err();
        polled
    }

    fn read(&mut self, max: usize, out: &mut Vec<LogRecord>) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let written = self.ends.written.load(Ordering::Acquire);
        loop {
            let read_to = self.position + self.buffer.len() as u64;
            let want = (written.saturating_sub(read_to)).min(chunk.len() as u64) as usize;
            if want == 0 {
                break;
            }
            let n = self.file.read(&mut chunk[..want])?;
            if n == 0 {
                break;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
            if self.buffer.len() >= 4 * 1024 * 1024 {
                break;
            }
        }
        // Up to the written end, the bytes are whole records: a header or payload running past
        // it is damage, not a record still to come.
        let complete = self.position + self.buffer.len() as u64 >= written;
        let mut consumed = 0;
        let mut count = 0;
        while count < max && consumed < self.buffer.len() {
            let offset = self.position + consumed as u64;
            let (next, payload) = match parse_record(&self.buffer[consumed..]) {
                Parsed::Record { payload, next } => (next, Ok(payload.to_vec())),
                Parsed::Incomplete if !complete => break,
                bad => {
                    let error = if let Parsed::Bad(error) = bad { error } else { RecordError::Length };
                    let next = match resync(&self.buffer, consumed + 1, self.buffer.len()) {
                        Some(next) => next,
                        None if complete => self.buffer.len(),
                        None => break, // the next valid record may be in what is not read yet
                    };
                    let end = self.position + next as u64;
                    tracing::error!(path = %self.path.display(), offset, end, %error, "damaged record skipped");
                    (next - consumed, Err(error))
                }
            };
            out.push(LogRecord { partition: self.partition, offset, next_offset: offset + next as u64, payload });
            consumed += next;
            count += 1;
        }
        self.buffer.drain(..consumed);
        self.position += consumed as u64;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn drain(reader: &mut PartitionReader) -> Vec<LogRecord> {
        let mut out = Vec::new();
        while reader.poll(1000, &mut out).unwrap() > 0 {}
        out
    }

    #[tokio::test]
    async fn appends_read_back_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let p = EmbeddedLog::partition_for(Topic::LiveChunks, "s1");
        let a = log.append(Topic::LiveChunks, "s1", b"one".to_vec()).await.unwrap();
        let b = log.append(Topic::LiveChunks, "s1", b"two".to_vec()).await.unwrap();
        assert_eq!((a.partition, a.offset), (p, 0));
        assert_eq!(b.offset, 11);
        let records = drain(&mut log.reader(Topic::LiveChunks, p).unwrap());
        assert_eq!(records.iter().map(|r| r.payload.clone().unwrap()).collect::<Vec<_>>(), [b"one", b"two"]);
        log.commit(Topic::LiveChunks, p, records[0].next_offset).unwrap();
        log.close();

        // A torn tail (crash mid-write) is cut off on reopen; the commit is kept.
        let path = partition_path(dir.path(), Topic::LiveChunks, p);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let records = drain(&mut log.reader(Topic::LiveChunks, p).unwrap());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].payload.as_deref().unwrap(), b"two");
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > PREALLOCATE, "zero-filled ahead of the records");
        let c = log.append(Topic::LiveChunks, "s1", b"three".to_vec()).await.unwrap();
        assert_eq!(c.offset, 22);
        assert_eq!(log.end(Topic::LiveChunks, p), 35);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "records overwrite zeros in place");
        let records = drain(&mut log.reader(Topic::LiveChunks, p).unwrap());
        assert_eq!(
            records.iter().map(|r| r.payload.clone().unwrap()).collect::<Vec<_>>(),
            [b"two".to_vec(), b"three".to_vec()]
        );

        // Later commits reuse the offset file and its one spare: no file is created.
        let offsets = || {
            let dir = std::fs::read_dir(offset_path(dir.path(), Topic::LiveChunks, p).parent().unwrap()).unwrap();
            let mut inodes: Vec<u64> =
                dir.map(|e| std::os::unix::fs::MetadataExt::ino(&e.unwrap().metadata().unwrap())).collect();
            inodes.sort();
            inodes
        };
        let before = offsets();
        for offset in [records[1].next_offset, 22, 35] {
            log.commit(Topic::LiveChunks, p, offset).unwrap();
            assert_eq!(log.committed(Topic::LiveChunks, p).unwrap(), offset);
        }
        assert_eq!(offsets(), before);
    }

    #[tokio::test]
    async fn whole_block_writes_keep_earlier_records_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let record = |i: usize| format!("{i:03}").repeat(100).into_bytes();
        for round in 0..2 {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            for i in round * 20..round * 20 + 20 {
                log.append_to(Topic::LiveChunks, 0, record(i)).await.unwrap();
            }
            log.close();
        }
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let records = drain(&mut log.reader(Topic::LiveChunks, 0).unwrap());
        let expected: Vec<Vec<u8>> = (0..40).map(record).collect();
        assert_eq!(records.into_iter().map(|r| r.payload.unwrap()).collect::<Vec<_>>(), expected);
        assert_eq!(log.end(Topic::LiveChunks, 0), 40 * (HEADER as u64 + 300), "the records cross several blocks");
    }

    #[tokio::test]
    async fn corrupt_record_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        log.append_to(Topic::VodChunks, 1, b"good".to_vec()).await.unwrap();
        log.append_to(Topic::VodChunks, 1, b"flip".to_vec()).await.unwrap();
        log.append_to(Topic::VodChunks, 1, b"after".to_vec()).await.unwrap();
        let path = partition_path(dir.path(), Topic::VodChunks, 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[12 + HEADER] ^= 0xff; // a payload byte of the second record
        fs::write(&path, bytes).unwrap();
        let records = drain(&mut log.reader(Topic::VodChunks, 1).unwrap());
        assert_eq!(records.len(), 3);
        assert_eq!(
            (records[1].payload.clone(), records[1].offset, records[1].next_offset),
            (Err(RecordError::Checksum), 12, 24)
        );
        assert_eq!(records[2].payload.as_deref().unwrap(), b"after");
    }

    /// `count` records of 40 to 80 bytes on partition 0 of `live-chunks`; their offsets, and
    /// the end of the last one.
    async fn write_records(dir: &Path, count: usize) -> Vec<u64> {
        let log = EmbeddedLog::open(dir).unwrap();
        let mut offsets = Vec::new();
        for i in 0..count {
            let payload = format!("{{\"record\":{i},\"pad\":\"{}\"}}", "x".repeat(20 + i % 40));
            offsets.push(log.append_to(Topic::LiveChunks, 0, payload.into_bytes()).await.unwrap().offset);
        }
        offsets.push(log.end(Topic::LiveChunks, 0));
        log.close();
        offsets
    }

    fn damage(dir: &Path, change: impl FnOnce(&mut Vec<u8>)) {
        let path = partition_path(dir, Topic::LiveChunks, 0);
        let mut bytes = fs::read(&path).unwrap();
        change(&mut bytes);
        fs::write(&path, bytes).unwrap();
    }

    fn payloads(records: &[LogRecord]) -> Vec<Option<usize>> {
        let index = |p: &Vec<u8>| {
            let doc: serde_json::Value = serde_json::from_slice(p).unwrap();
            doc["record"].as_u64().unwrap() as usize
        };
        records.iter().map(|r| r.payload.as_ref().ok().map(index)).collect()
    }

    /// A flipped bit anywhere in a record, its length included, loses that record alone, on a
    /// reader of the open log and across a reopen (which cuts nothing after it).
    #[tokio::test]
    async fn a_damaged_record_loses_only_itself() {
        for (name, at) in [("length", 1), ("high length byte", 3), ("checksum", 5), ("payload", HEADER + 7)] {
            let dir = tempfile::tempdir().unwrap();
            let offsets = write_records(dir.path(), 40).await;
            damage(dir.path(), |bytes| bytes[offsets[20] as usize + at] ^= 0x10);
            let log = EmbeddedLog::open(dir.path()).unwrap();
            assert_eq!(log.end(Topic::LiveChunks, 0), offsets[40], "{name}: nothing cut");
            let records = drain(&mut log.reader(Topic::LiveChunks, 0).unwrap());
            let mut expected: Vec<Option<usize>> = (0..40).map(Some).collect();
            expected[20] = None;
            assert_eq!(payloads(&records), expected, "{name}");
            assert_eq!((records[20].offset, records[20].next_offset), (offsets[20], offsets[21]), "{name}");
            let next = log.append_to(Topic::LiveChunks, 0, b"{\"record\":40}".to_vec()).await.unwrap();
            assert_eq!(next.offset, offsets[40], "{name}: new records follow the old ones");
        }
    }

    /// A zeroed stretch, or garbage over several records, is one damaged record; the records
    /// after it are read.
    #[tokio::test]
    async fn a_damaged_stretch_is_one_record_and_reading_goes_on() {
        for (name, fill) in [("zeros", 0u8), ("garbage", 0xa5)] {
            let dir = tempfile::tempdir().unwrap();
            let offsets = write_records(dir.path(), 100).await;
            let (from, to) = (offsets[10] as usize + 3, offsets[30] as usize + 5);
            damage(dir.path(), |bytes| bytes[from..to].fill(fill));
            let log = EmbeddedLog::open(dir.path()).unwrap();
            let records = drain(&mut log.reader(Topic::LiveChunks, 0).unwrap());
            let expected: Vec<Option<usize>> = (0..10).map(Some).chain([None]).chain((31..100).map(Some)).collect();
            assert_eq!(payloads(&records), expected, "{name}");
            assert_eq!((records[10].offset, records[10].next_offset), (offsets[10], offsets[31]), "{name}");
        }
    }

    /// The last record damaged while the log is open: reported, and the reader goes on with
    /// the records appended after it.
    #[tokio::test]
    async fn a_damaged_last_record_is_reported_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        log.append_to(Topic::LiveChunks, 0, b"one".to_vec()).await.unwrap();
        log.append_to(Topic::LiveChunks, 0, b"two".to_vec()).await.unwrap();
        let path = partition_path(dir.path(), Topic::LiveChunks, 0);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff], 11 + 2).unwrap(); // the length of "two": past the end
        let mut reader = log.reader(Topic::LiveChunks, 0).unwrap();
        let records = drain(&mut reader);
        assert_eq!(
            records.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
            [Ok(b"one".to_vec()), Err(RecordError::Length)]
        );
        assert_eq!(records[1].next_offset, 22);
        log.append_to(Topic::LiveChunks, 0, b"three".to_vec()).await.unwrap();
        let records = drain(&mut reader);
        assert_eq!(records.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), [Ok(b"three".to_vec())]);
    }

    /// A partition file truncated below its committed offset, or missing, is refused with its
    /// name and what to do; removing the offset file accepts the loss.
    #[tokio::test]
    async fn a_partition_shorter_than_its_committed_offset_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let offsets = write_records(dir.path(), 10).await;
        let log = EmbeddedLog::open(dir.path()).unwrap();
        log.commit(Topic::LiveChunks, 0, offsets[9]).unwrap();
        log.close();
        let path = partition_path(dir.path(), Topic::LiveChunks, 0);
        let offset_file = offset_path(dir.path(), Topic::LiveChunks, 0);
        OpenOptions::new().write(true).open(&path).unwrap().set_len(offsets[5]).unwrap();
        let Err(LogError::Damaged(message)) = EmbeddedLog::open(dir.path()) else {
            panic!("a truncated partition opens")
        };
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("remove {}", offset_file.display())), "{message}");
        assert_eq!(fs::metadata(&path).unwrap().len(), offsets[5], "the file is left as it is");

        fs::remove_file(&path).unwrap();
        let Err(LogError::Damaged(message)) = EmbeddedLog::open(dir.path()) else {
            panic!("a missing partition opens")
        };
        assert!(message.contains(&format!("{} is missing", path.display())), "{message}");

        fs::remove_file(&offset_file).unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!((log.committed(Topic::LiveChunks, 0).unwrap(), log.end(Topic::LiveChunks, 0)), (0, 0));
    }

    /// A partition whose reads fail is reported stopped, with its file, until they work again.
    #[tokio::test]
    async fn a_partition_that_cannot_be_read_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        log.append_to(Topic::LiveChunks, 2, b"one".to_vec()).await.unwrap();
        let mut reader = log.reader(Topic::LiveChunks, 2).unwrap();
        let path = partition_path(dir.path(), Topic::LiveChunks, 2);
        reader.file = OpenOptions::new().write(true).open(&path).unwrap(); // reads fail
        assert!(reader.poll(10, &mut Vec::new()).is_err());
        let stopped = log.stopped_partitions();
        assert!(
            stopped.len() == 1 && stopped[0].contains(&format!("{} cannot be read", path.display())),
            "{stopped:?}"
        );
        reader.file = File::open(&path).unwrap();
        assert_eq!(drain(&mut reader).len(), 1);
        assert!(log.stopped_partitions().is_empty());
        assert!(!log.writer_stopped());
    }

    #[tokio::test]
    async fn oversized_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let err = log.append(Topic::LiveChunks, "k", vec![0; MAX_RECORD_BYTES + 1]).await.unwrap_err();
        assert!(matches!(err, LogError::TooLarge(_)));
    }
}
