//! The default metadata store: a redb file under the data dir, documents stored as JSON, with
//! the same collections and keys the MongoDB backend uses.
//!
//! A damaged file is refused at open (every page's checksum is checked then, as redb checks
//! them only when it reads them), and redb panicking on one later makes the store report
//! itself damaged: never a panic that takes a thread down unnoticed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{MARKER_KEY, MARKER_TABLE, Marker, MarkerDoc, MetaWrite, MetadataError, MetadataStore};
use crate::model::auth::TokenDoc;
use crate::model::jobs::JobDoc;
use crate::model::library::{VodListing, VodQuery, VodSort};
use crate::model::{DeadLetterDoc, LiveChunkDoc, LiveGapsDoc, LiveStreamDoc, VodDoc};

const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("live_streams");
const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("live_metadata");
const VODS: TableDefinition<&str, &[u8]> = TableDefinition::new("vod_metadata");
/// The video list's index: each video under `(created_at_ms, stream_id)`, the list's order,
/// with what a query filters on (a [`VodListing`]), so a page reads only its own documents.
const VOD_LIST: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("vod_list");
const GAPS: TableDefinition<&str, &[u8]> = TableDefinition::new("live_gaps");
const DEAD_LETTERS: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("dead_letters");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("media_jobs");
const MARKER: TableDefinition<&str, &[u8]> = TableDefinition::new(MARKER_TABLE);

fn backend(e: impl Into<redb::Error>) -> MetadataError {
    MetadataError::Embedded(Box::new(e.into()))
}

fn json(doc: &impl Serialize) -> Result<Vec<u8>, MetadataError> {
    Ok(serde_json::to_vec(doc)?)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MetadataError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// A stored video document's `created_at_ms`, read without the rest of it.
fn created_at(doc: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Created {
        created_at_ms: u64,
    }
    serde_json::from_slice::<Created>(doc).ok().map(|doc| doc.created_at_ms)
}

#[derive(Clone)]
pub struct EmbeddedMetadata {
    db: Arc<Database>,
    path: PathBuf,
    /// Why the file is known to be damaged, once redb has panicked on it.
    damaged: Arc<Mutex<Option<String>>>,
}

impl EmbeddedMetadata {
    /// Opens (creating if needed) the file at `path`; a damaged one is refused, naming it.
    pub fn open(path: &Path) -> Result<EmbeddedMetadata, MetadataError> {
        let damaged = |problem: String| MetadataError::Damaged { path: path.to_path_buf(), problem };
        let db = crate::panics::caught(|| open_checked(path))
            .map_err(|panic| damaged(format!("redb panicked opening it: {panic}")))?
            .map_err(|error| match *error {
                // The file could not be read at all (permissions, say): not damage.
                redb::Error::Io(ref e) if e.kind() != std::io::ErrorKind::InvalidData => MetadataError::Embedded(error),
                redb::Error::DatabaseAlreadyOpen => MetadataError::Embedded(error),
                _ => damaged(error.to_string()),
            })?;
        Ok(EmbeddedMetadata { db: Arc::new(db), path: path.to_path_buf(), damaged: Arc::default() })
    }

    /// The document under `id` in a table keyed by stream id.
    async fn get_by_id<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<T>, MetadataError> {
        let id = id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(table).map_err(backend)?;
            table.get(id.as_str()).map_err(backend)?.map(|v| parse(v.value())).transpose()
        })
        .await
    }

    /// Every document of a table keyed by id.
    async fn list_all<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<Vec<T>, MetadataError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(table).map_err(backend)?;
            table.iter().map_err(backend)?.map(|entry| parse(entry.map_err(backend)?.1.value())).collect()
        })
        .await
    }

    /// Applies a batch in one transaction with the given durability.
    async fn write(&self, writes: Arc<Vec<MetaWrite>>, durability: Durability) -> Result<(), MetadataError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(backend)?;
            txn.set_durability(durability);
            {
                let mut streams = txn.open_table(STREAMS).map_err(backend)?;
                let mut chunks = txn.open_table(CHUNKS).map_err(backend)?;
                let mut dead = txn.open_table(DEAD_LETTERS).map_err(backend)?;
                let mut vods = txn.open_table(VODS).map_err(backend)?;
                let mut vod_list = txn.open_table(VOD_LIST).map_err(backend)?;
                let mut tokens = txn.open_table(TOKENS).map_err(backend)?;
                let mut gaps = txn.open_table(GAPS).map_err(backend)?;
                let mut jobs = txn.open_table(JOBS).map_err(backend)?;
                for write in writes.iter() {
                    match write {
                        MetaWrite::Stream(doc) => {
                            streams.insert(doc.stream_id.as_str(), json(doc)?.as_slice()).map_err(backend)?;
                        }
                        MetaWrite::Chunk { doc, overwrite } => {
                            let key = (doc.stream_id.as_str(), doc.chunk.chunk_index);
                            if *overwrite || chunks.get(key).map_err(backend)?.is_none() {
                                chunks.insert(key, json(doc)?.as_slice()).map_err(backend)?;
                            }
                        }
                        MetaWrite::DeadLetter(doc) => {
                            let key = (doc.topic.as_str(), doc.partition, doc.offset);
                            dead.insert(key, json(doc)?.as_slice()).map_err(backend)?;
                        }
                        MetaWrite::Vod(doc) => {
                            let id = doc.stream_id.as_str();
                            let before = vods.insert(id, json(doc)?.as_slice()).map_err(backend)?;
                            if let Some(created) = before.and_then(|before| created_at(before.value())) {
                                vod_list.remove((created, id)).map_err(backend)?;
                            }
                            let listing = json(&VodListing::of(doc))?;
                            vod_list.insert((doc.created_at_ms, id), listing.as_slice()).map_err(backend)?;
                        }
                        MetaWrite::DeleteVod(stream_id) => {
                            let id = stream_id.as_str();
                            let before = vods.remove(id).map_err(backend)?;
                            if let Some(created) = before.and_then(|before| created_at(before.value())) {
                                vod_list.remove((created, id)).map_err(backend)?;
                            }
                            // A recording's live documents go with it.
                            streams.remove(id).map_err(backend)?;
                            gaps.remove(id).map_err(backend)?;
                            chunks.retain_in((id, 0)..=(id, u64::MAX), |_, _| false).map_err(backend)?;
                        }
                        MetaWrite::Token(doc) => {
                            tokens.insert(doc.token_id.as_str(), json(doc)?.as_slice()).map_err(backend)?;
                        }
                        MetaWrite::Gaps(doc) => {
                            gaps.insert(doc.stream_id.as_str(), json(doc)?.as_slice()).map_err(backend)?;
                        }
                        MetaWrite::Job(doc) => {
                            jobs.insert(doc.job_id.as_str(), json(doc)?.as_slice()).map_err(backend)?;
                        }
                    }
                }
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    /// Runs blocking redb work off the async threads. redb panics on a damaged page: that
    /// becomes an error, and the store reports itself damaged from then on.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, MetadataError> + Send + 'static,
    ) -> Result<T, MetadataError> {
        let (db, path, damaged) = (self.db.clone(), self.path.clone(), self.damaged.clone());
        tokio::task::spawn_blocking(move || {
            crate::panics::caught(|| work(&db)).unwrap_or_else(|panic| {
                let problem = format!("redb panicked reading it: {panic}");
                tracing::error!(path = %path.display(), problem, "the metadata file is damaged");
                *damaged.lock().unwrap_or_else(|e| e.into_inner()) = Some(problem.clone());
                Err(MetadataError::Damaged { path, problem })
            })
        })
        .await?
    }
}

#[async_trait]
impl MetadataStore for EmbeddedMetadata {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn health(&self) -> Result<(), MetadataError> {
        match self.damaged.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            None => Ok(()),
            Some(problem) => Err(MetadataError::Damaged { path: self.path.clone(), problem }),
        }
    }

    async fn apply(&self, writes: Arc<Vec<MetaWrite>>) -> Result<(), MetadataError> {
        self.write(writes, Durability::Immediate).await
    }

    async fn apply_buffered(&self, writes: Arc<Vec<MetaWrite>>) -> Result<(), MetadataError> {
        self.write(writes, Durability::None).await
    }

    async fn sync(&self) -> Result<(), MetadataError> {
        // An immediate commit persists every non-durable commit before it.
        self.blocking(|db| db.begin_write().map_err(backend)?.commit().map_err(backend)).await
    }

    async fn marker(&self) -> Result<Marker, MetadataError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(backend)?;
            if txn.open_table(MARKER).map_err(backend)?.get(MARKER_KEY).map_err(backend)?.is_some() {
                return Ok(Marker::Present);
            }
            let documents = !txn.open_table(STREAMS).map_err(backend)?.is_empty().map_err(backend)?
                || !txn.open_table(CHUNKS).map_err(backend)?.is_empty().map_err(backend)?
                || !txn.open_table(VODS).map_err(backend)?.is_empty().map_err(backend)?
                || !txn.open_table(DEAD_LETTERS).map_err(backend)?.is_empty().map_err(backend)?;
            Ok(if documents { Marker::Unmarked } else { Marker::Absent })
        })
        .await
    }

    async fn write_marker(&self) -> Result<(), MetadataError> {
        let marker = json(&MarkerDoc::now())?;
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(backend)?;
            txn.set_durability(Durability::Immediate);
            txn.open_table(MARKER).map_err(backend)?.insert(MARKER_KEY, marker.as_slice()).map_err(backend)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn get_stream(&self, stream_id: &str) -> Result<Option<LiveStreamDoc>, MetadataError> {
        self.get_by_id(STREAMS, stream_id).await
    }

    async fn get_vod(&self, stream_id: &str) -> Result<Option<VodDoc>, MetadataError> {
        self.get_by_id(VODS, stream_id).await
    }

    async fn get_gaps(&self, stream_id: &str) -> Result<Option<LiveGapsDoc>, MetadataError> {
        self.get_by_id(GAPS, stream_id).await
    }

    /// Reads the list's index in its order, to count the matches and find the page's; reads
    /// only the page's documents.
    async fn list_vods(&self, query: &VodQuery) -> Result<(Vec<VodDoc>, u64), MetadataError> {
        let query = query.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let (list, vods) = (txn.open_table(VOD_LIST).map_err(backend)?, txn.open_table(VODS).map_err(backend)?);
            let entries = list.iter().map_err(backend)?;
            let entries: Box<dyn Iterator<Item = _>> =
                if query.sort == VodSort::CreatedAsc { Box::new(entries) } else { Box::new(entries.rev()) };
            let (mut total, mut page) = (0u64, Vec::new());
            for entry in entries {
                let (key, listing) = entry.map_err(backend)?;
                if query.matches(&parse(listing.value())?) {
                    if total >= query.skip && (page.len() as u64) < query.limit {
                        page.push(key.value().1.to_string());
                    }
                    total += 1;
                }
            }
            let mut docs = Vec::with_capacity(page.len());
            for id in page {
                if let Some(doc) = vods.get(id.as_str()).map_err(backend)? {
                    docs.push(parse(doc.value())?);
                }
            }
            Ok((docs, total))
        })
        .await
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobDoc>, MetadataError> {
        self.get_by_id(JOBS, job_id).await
    }

    async fn list_jobs(&self, limit: u64, skip: u64) -> Result<(Vec<JobDoc>, u64), MetadataError> {
        let mut docs: Vec<JobDoc> = self.list_all(JOBS).await?;
        docs.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.job_id.cmp(&a.job_id)));
        Ok(page(docs, skip, limit))
    }

    async fn list_streams(&self) -> Result<Vec<LiveStreamDoc>, MetadataError> {
        self.list_all(STREAMS).await
    }

    async fn get_token(&self, token_id: &str) -> Result<Option<TokenDoc>, MetadataError> {
        self.get_by_id(TOKENS, token_id).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenDoc>, MetadataError> {
        self.list_all(TOKENS).await
    }

    async fn get_chunk(&self, stream_id: &str, chunk_index: u64) -> Result<Option<LiveChunkDoc>, MetadataError> {
        let id = stream_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(CHUNKS).map_err(backend)?;
            table.get((id.as_str(), chunk_index)).map_err(backend)?.map(|v| parse(v.value())).transpose()
        })
        .await
    }

    async fn chunks(&self, stream_id: &str, from: u64, limit: usize) -> Result<Vec<LiveChunkDoc>, MetadataError> {
        let id = stream_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(CHUNKS).map_err(backend)?;
            let range = table.range((id.as_str(), from)..=(id.as_str(), u64::MAX)).map_err(backend)?;
            range.take(limit).map(|entry| parse(entry.map_err(backend)?.1.value())).collect()
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterDoc>, MetadataError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(DEAD_LETTERS).map_err(backend)?;
            table.iter().map_err(backend)?.take(limit).map(|entry| parse(entry.map_err(backend)?.1.value())).collect()
        })
        .await
    }
}

/// `limit` of the sorted `docs` after `skip`, and how many there are in all.
fn page<T>(docs: Vec<T>, skip: u64, limit: u64) -> (Vec<T>, u64) {
    let total = docs.len() as u64;
    let (skip, limit) = (usize::try_from(skip).unwrap_or(usize::MAX), usize::try_from(limit).unwrap_or(usize::MAX));
    (docs.into_iter().skip(skip).take(limit).collect(), total)
}

/// Opens the file, checks every page of it, and creates the tables.
fn open_checked(path: &Path) -> Result<Database, Box<redb::Error>> {
    fn boxed(e: impl Into<redb::Error>) -> Box<redb::Error> {
        Box::new(e.into())
    }
    let mut db = Database::create(path).map_err(boxed)?;
    let began = std::time::Instant::now();
    // `false`: redb repaired its free space. A damaged page in use is an error, as the last
    // commit (of a clean shutdown, or of the repair after a crash) is two-phase.
    if !db.check_integrity().map_err(boxed)? {
        tracing::warn!(path = %path.display(), "the metadata file failed a check of its free space, and was repaired");
    }
    tracing::debug!(path = %path.display(), took = ?began.elapsed(), "metadata file checked");
    let txn = db.begin_write().map_err(boxed)?;
    txn.open_table(STREAMS).map_err(boxed)?;
    txn.open_table(CHUNKS).map_err(boxed)?;
    txn.open_table(DEAD_LETTERS).map_err(boxed)?;
    let vods = txn.open_table(VODS).map_err(boxed)?;
    let mut vod_list = txn.open_table(VOD_LIST).map_err(boxed)?;
    // A file of an earlier version has no list index, or one of other videos: it is made again.
    if vod_list.len().map_err(boxed)? != vods.len().map_err(boxed)? {
        vod_list.retain(|_, _| false).map_err(boxed)?;
        for entry in vods.iter().map_err(boxed)? {
            let (id, doc) = entry.map_err(boxed)?;
            match serde_json::from_slice::<VodDoc>(doc.value()) {
                Ok(doc) => {
                    let listing = serde_json::to_vec(&VodListing::of(&doc)).expect("a listing serializes");
                    vod_list.insert((doc.created_at_ms, id.value()), listing.as_slice()).map_err(boxed)?;
                }
                Err(error) => {
                    tracing::warn!(stream_id = id.value(), %error, "a video document that does not parse is not listed")
                }
            }
        }
    }
    drop((vods, vod_list));
    txn.open_table(TOKENS).map_err(boxed)?;
    txn.open_table(GAPS).map_err(boxed)?;
    txn.open_table(JOBS).map_err(boxed)?;
    txn.open_table(MARKER).map_err(boxed)?;
    txn.commit().map_err(boxed)?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{VodKind, VodStatus};

    fn video(id: &str, title: &str, created: u64) -> VodDoc {
        VodDoc::new(id, title, "", &format!("vod-raw/{id}/source.mp4"), created)
    }

    async fn ids(store: &EmbeddedMetadata, query: VodQuery) -> (Vec<String>, u64) {
        let (docs, total) = store.list_vods(&query).await.unwrap();
        (docs.into_iter().map(|doc| doc.stream_id).collect(), total)
    }

    fn all() -> VodQuery {
        VodQuery { limit: 100, ..VodQuery::default() }
    }

    #[tokio::test]
    async fn the_list_index_follows_every_write_and_is_made_again_for_an_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.redb");
        let store = EmbeddedMetadata::open(&path).unwrap();
        let mut beach = video("vod-b", "Beach", 5);
        let docs = [beach.clone(), video("vod-a", "City", 5), video("vod-c", "Beach at night", 1)];
        store.apply(Arc::new(docs.iter().map(|d| MetaWrite::Vod(Box::new(d.clone()))).collect())).await.unwrap();

        // Newest first, ties by id; oldest first the other way round; pages of the same order.
        assert_eq!(ids(&store, all()).await, (vec!["vod-b".into(), "vod-a".into(), "vod-c".into()], 3));
        let oldest = VodQuery { sort: VodSort::CreatedAsc, ..all() };
        assert_eq!(ids(&store, oldest).await.0, ["vod-c", "vod-a", "vod-b"]);
        assert_eq!(ids(&store, VodQuery { skip: 1, limit: 1, ..all() }).await, (vec!["vod-a".into()], 3));
        let words = |q: &str| VodQuery { words: vec![q.into()], ..all() };
        assert_eq!(ids(&store, words("beach")).await, (vec!["vod-b".into(), "vod-c".into()], 2));

        // An edit and a new status are listed as they are now, once.
        beach.title = "Harbour".into();
        beach.set_status(VodStatus::Ready, 9);
        store.apply(Arc::new(vec![MetaWrite::Vod(Box::new(beach.clone()))])).await.unwrap();
        assert_eq!(ids(&store, words("beach")).await.0, ["vod-c"]);
        let ready = VodQuery { status: Some(VodStatus::Ready), ..all() };
        assert_eq!(ids(&store, ready.clone()).await, (vec!["vod-b".into()], 1));
        // A document written again with another creation time moves in the list.
        beach.created_at_ms = 0;
        store.apply(Arc::new(vec![MetaWrite::Vod(Box::new(beach))])).await.unwrap();
        assert_eq!(ids(&store, all()).await, (vec!["vod-a".into(), "vod-c".into(), "vod-b".into()], 3));
        store.apply(Arc::new(vec![MetaWrite::DeleteVod("vod-a".into())])).await.unwrap();
        assert_eq!(ids(&store, all()).await, (vec!["vod-c".into(), "vod-b".into()], 2));
        let recordings = VodQuery { kind: Some(VodKind::Recording), ..all() };
        assert_eq!(ids(&store, recordings).await.1, 0);
        drop(store);

        // A file from before the index (its table emptied here) gets it back when opened.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(VOD_LIST).unwrap().retain(|_, _| false).unwrap();
        txn.commit().unwrap();
        drop(db);
        let store = EmbeddedMetadata::open(&path).unwrap();
        assert_eq!(ids(&store, all()).await, (vec!["vod-c".into(), "vod-b".into()], 2));
        assert_eq!(ids(&store, ready).await.0, ["vod-b"]);
    }
}
