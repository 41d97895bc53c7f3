//! The MongoDB metadata store: the embedded store's collections and keys on a shared server, so
//! every segflow process of a cluster (and the legacy pipeline's tools) sees one set of documents.
//!
//! Works with MongoDB 7 and with FerretDB (the wire-compatible server the tests use), so it keeps
//! to plain commands: upserts, finds, `createIndexes`, `ping` — no `bulkWrite`, no transactions.
//! A batch is not atomic as in the embedded store, but every write is an idempotent upsert keyed
//! like the embedded tables, so a batch that fails half-way is simply applied again.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{TryStreamExt, stream};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{MARKER_KEY, MARKER_TABLE, Marker, MarkerDoc, MetaWrite, MetadataError, MetadataStore};
use crate::model::auth::TokenDoc;
use crate::model::jobs::JobDoc;
use crate::model::library::{VodQuery, VodSort, search_terms};
use crate::model::{DeadLetterDoc, LiveChunkDoc, LiveGapsDoc, LiveStreamDoc, VodDoc, VodKind};

const STREAMS: &str = "live_streams";
/// The legacy pipeline's name for the per-chunk documents.
const CHUNKS: &str = "live_metadata";
const VODS: &str = "vod_metadata";
const GAPS: &str = "live_gaps";
const DEAD_LETTERS: &str = "dead_letters";
const TOKENS: &str = "api_tokens";
const JOBS: &str = "media_jobs";
/// A video document's words ([`search_terms`]), under a multikey index: what `q` matches.
const SEARCH_TERMS: &str = "search_terms";

/// Server selection and connect timeouts, unless the URI sets its own: a server that is down at
/// start is reported within seconds, not after the driver's default 30 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a look at the marker, or its write, may take at start.
const MARKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Writes of one batch in flight at once (one per key).
const CONCURRENCY: usize = 16;
/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;
/// The server's code for an index that does not exist.
const INDEX_NOT_FOUND: i32 = 27;

/// Documents in MongoDB; cheap to clone (the driver's client is shared).
#[derive(Clone)]
pub struct MongoMetadata {
    db: Database,
    /// `host:port` list for messages; never the credentials.
    address: String,
}

/// One write after a batch is collapsed to a single write per key.
struct Op {
    collection: &'static str,
    filter: Document,
    doc: Document,
    write: Write,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Replace the document, or insert it.
    Replace,
    /// Insert the document only when absent.
    Insert,
    /// Remove the document.
    Delete,
    /// Remove every document the filter matches.
    DeleteMany,
}

/// What a write is keyed by, as in the embedded tables.
#[derive(Hash, PartialEq, Eq)]
enum Key {
    Stream(String),
    Chunk(String, u64),
    DeadLetter(String, u32, u64),
    Vod(String),
    Gaps(String),
    Token(String),
    Job(String),
    /// All of a stream's chunks.
    Chunks(String),
}

impl MongoMetadata {
    /// Connects to `uri`, checks that the server answers and creates the unique indexes
    /// (idempotent). Fails within seconds, naming MongoDB and the address, when it is down.
    pub async fn connect(uri: &str, database: &str) -> Result<MongoMetadata, MetadataError> {
        let scrub = Scrubber::new(uri);
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| scrub.error(&format!("MongoDB URI {} is invalid: {}", scrub.uri(), e.kind)))?;
        let address = options.hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        options.server_selection_timeout.get_or_insert(CONNECT_TIMEOUT);
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        options.app_name.get_or_insert_with(|| "segflow".into());
        // Acknowledged means journaled (and on a majority of a replica set), so `sync` has
        // nothing left to do.
        let concern = options.write_concern.get_or_insert_with(Default::default);
        concern.journal = Some(true);
        concern.w.get_or_insert(Acknowledgment::Majority);

        let fail =
            |what: &str, e: mongodb::error::Error| scrub.error(&format!("MongoDB at {address} {what}: {}", e.kind));
        let client = Client::with_options(options).map_err(|e| fail("cannot be used", e))?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 }).await.map_err(|e| fail("is unreachable", e))?;

        let store = MongoMetadata { db, address: address.clone() };
        let indexes = [
            (STREAMS, doc! { "stream_id": 1 }),
            (CHUNKS, doc! { "stream_id": 1, "chunk_index": 1 }),
            (VODS, doc! { "stream_id": 1 }),
            (GAPS, doc! { "stream_id": 1 }),
            (DEAD_LETTERS, doc! { "topic": 1, "partition": 1, "offset": 1 }),
            (TOKENS, doc! { "token_id": 1 }),
            (JOBS, doc! { "job_id": 1 }),
        ];
        for (collection, keys) in indexes {
            // Default index names, so an identical index made by another tool is a no-op.
            let model = IndexModel::builder().keys(keys).options(IndexOptions::builder().unique(true).build()).build();
            store
                .collection::<Document>(collection)
                .create_index(model)
                .await
                .map_err(|e| fail(&format!("refused the unique index of {collection}"), e))?;
        }
        // The library's list queries: each filter (status, kind, both, a word) with the whole
        // sort after it, so that a page is read in order from the index, never sorted.
        let library = [
            doc! { "created_at_ms": 1, "stream_id": 1 },
            doc! { "status": 1, "created_at_ms": 1, "stream_id": 1 },
            doc! { "kind": 1, "created_at_ms": 1, "stream_id": 1 },
            doc! { "kind": 1, "status": 1, "created_at_ms": 1, "stream_id": 1 },
            doc! { SEARCH_TERMS: 1, "created_at_ms": 1, "stream_id": 1 },
        ];
        for keys in library {
            let model = IndexModel::builder().keys(keys).build();
            let created = store.collection::<Document>(VODS).create_index(model).await;
            created.map_err(|e| fail(&format!("refused an index of {VODS}"), e))?;
        }
        // An earlier word index, without the sort's last field.
        if let Err(e) = store.collection::<Document>(VODS).drop_index(format!("{SEARCH_TERMS}_1_created_at_ms_1")).await
            && !is_code(&e, INDEX_NOT_FOUND)
        {
            return Err(fail(&format!("refused to drop a superseded index of {VODS}"), e));
        }
        // The job list, newest first.
        let model = IndexModel::builder().keys(doc! { "created_at_ms": -1, "job_id": -1 }).build();
        let created = store.collection::<Document>(JOBS).create_index(model).await;
        created.map_err(|e| fail(&format!("refused an index of {JOBS}"), e))?;
        Ok(store)
    }

    fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.db.collection(name)
    }

    /// A failed request, with the driver's error as its cause.
    fn error(&self, what: &str, e: mongodb::error::Error) -> MetadataError {
        let message = format!("MongoDB at {}: {what}: {}", self.address, e.kind);
        MetadataError::Mongo { message, source: Some(Box::new(e)) }
    }

    /// A request that cannot be made, for `reason`.
    fn refused(&self, what: &str, reason: String) -> MetadataError {
        MetadataError::Mongo { message: format!("MongoDB at {}: {what}: {reason}", self.address), source: None }
    }

    /// Turns a batch into one write per key, in first-seen order. Later overwrites win; an
    /// insert-if-absent after another write to its key changes nothing, as in the embedded store.
    fn plan(&self, writes: &[MetaWrite]) -> Result<Vec<Op>, MetadataError> {
        let mut ops: Vec<Op> = Vec::new();
        let mut seen: HashMap<Key, usize> = HashMap::new();
        for write in writes {
            let mut planned = vec![self.op(write)?];
            if let MetaWrite::DeleteVod(stream_id) = write {
                planned.extend(recording_deletions(stream_id));
            }
            for (key, op) in planned {
                match seen.entry(key) {
                    Entry::Vacant(slot) => {
                        slot.insert(ops.len());
                        ops.push(op);
                    }
                    Entry::Occupied(slot) if op.write != Write::Insert => ops[*slot.get()] = op,
                    Entry::Occupied(_) => {}
                }
            }
        }
        Ok(ops)
    }

    fn op(&self, write: &MetaWrite) -> Result<(Key, Op), MetadataError> {
        Ok(match write {
            MetaWrite::Stream(doc) => {
                (Key::Stream(doc.stream_id.clone()), self.by_stream_id(STREAMS, &doc.stream_id, doc)?)
            }
            MetaWrite::Chunk { doc, overwrite } => {
                let index = doc.chunk.chunk_index;
                let filter = doc! { "stream_id": &doc.stream_id, "chunk_index": self.int(index)? };
                let write = if *overwrite { Write::Replace } else { Write::Insert };
                let op = Op { collection: CHUNKS, filter, doc: self.encode(doc)?, write };
                (Key::Chunk(doc.stream_id.clone(), index), op)
            }
            MetaWrite::DeadLetter(doc) => {
                let (partition, offset) = (i64::from(doc.partition), self.int(doc.offset)?);
                let filter = doc! { "topic": &doc.topic, "partition": partition, "offset": offset };
                let op = Op { collection: DEAD_LETTERS, filter, doc: self.encode(doc)?, write: Write::Replace };
                (Key::DeadLetter(doc.topic.clone(), doc.partition, doc.offset), op)
            }
            MetaWrite::Vod(doc) => {
                let mut op = self.by_stream_id(VODS, &doc.stream_id, doc)?;
                op.doc.insert(SEARCH_TERMS, search_terms(doc));
                (Key::Vod(doc.stream_id.clone()), op)
            }
            MetaWrite::DeleteVod(stream_id) => {
                let op = Op {
                    collection: VODS,
                    filter: doc! { "stream_id": stream_id },
                    doc: doc! {},
                    write: Write::Delete,
                };
                (Key::Vod(stream_id.clone()), op)
            }
            MetaWrite::Gaps(doc) => (Key::Gaps(doc.stream_id.clone()), self.by_stream_id(GAPS, &doc.stream_id, doc)?),
            MetaWrite::Token(doc) => {
                let filter = doc! { "token_id": &doc.token_id };
                let op = Op { collection: TOKENS, filter, doc: self.encode(doc)?, write: Write::Replace };
                (Key::Token(doc.token_id.clone()), op)
            }
            MetaWrite::Job(doc) => {
                let filter = doc! { "job_id": &doc.job_id };
                let op = Op { collection: JOBS, filter, doc: self.encode(doc.as_ref())?, write: Write::Replace };
                (Key::Job(doc.job_id.clone()), op)
            }
        })
    }

    /// An upsert of the one document a stream has in `collection`.
    fn by_stream_id(
        &self,
        collection: &'static str,
        stream_id: &str,
        doc: &impl Serialize,
    ) -> Result<Op, MetadataError> {
        Ok(Op { collection, filter: doc! { "stream_id": stream_id }, doc: self.encode(doc)?, write: Write::Replace })
    }

    fn encode(&self, doc: &impl Serialize) -> Result<Document, MetadataError> {
        bson::to_document(doc).map_err(|e| MetadataError::Mongo {
            message: format!("MongoDB at {}: cannot encode a document: {e}", self.address),
            source: Some(Box::new(e)),
        })
    }

    /// BSON has no unsigned integers: u64 fields are stored as Int64.
    fn int(&self, value: u64) -> Result<i64, MetadataError> {
        i64::try_from(value).map_err(|_| self.refused("cannot store", format!("{value} is above BSON's Int64 range")))
    }

    async fn run(&self, op: Op) -> Result<(), MetadataError> {
        let collection = self.collection::<Document>(op.collection);
        let result = match op.write {
            Write::Replace => collection.replace_one(op.filter.clone(), op.doc.clone()).upsert(true).await.map(drop),
            Write::Insert => {
                // The filter's fields are inserted from the filter itself.
                let mut fields = op.doc.clone();
                for key in op.filter.keys() {
                    fields.remove(key);
                }
                collection.update_one(op.filter.clone(), doc! { "$setOnInsert": fields }).upsert(true).await.map(drop)
            }
            Write::Delete => collection.delete_one(op.filter.clone()).await.map(drop),
            Write::DeleteMany => collection.delete_many(op.filter.clone()).await.map(drop),
        };
        match result {
            // Two upserts of one new key raced (another process, or a server that does not
            // retry it itself): the document now exists, so the insert is done and the replace
            // goes through on a second try.
            Err(e) if is_duplicate_key(&e) && op.write == Write::Insert => Ok(()),
            Err(e) if is_duplicate_key(&e) => {
                collection.replace_one(op.filter, op.doc).upsert(true).await.map(drop).map_err(|e| self.write_error(e))
            }
            result => result.map_err(|e| self.write_error(e)),
        }
    }

    /// Runs a request at start, given up after [`MARKER_TIMEOUT`]; `what` names it in errors.
    async fn bounded<T>(
        &self,
        what: &str,
        request: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, MetadataError> {
        self.answer(what, request).await?.map_err(|e| self.error(what, e))
    }

    /// The server's answer to a request at start, unless none came within [`MARKER_TIMEOUT`].
    async fn answer<T>(
        &self,
        what: &str,
        request: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<mongodb::error::Result<T>, MetadataError> {
        tokio::time::timeout(MARKER_TIMEOUT, request)
            .await
            .map_err(|_| self.refused(what, format!("no answer within {MARKER_TIMEOUT:?}")))
    }

    /// Whether `collection` holds any document.
    async fn any(&self, collection: &str) -> Result<bool, MetadataError> {
        let handle = self.collection::<Document>(collection);
        let found = handle.find_one(doc! {}).projection(doc! { "_id": 1 });
        Ok(self.bounded(&format!("reading {collection} of database {} failed", self.db.name()), found).await?.is_some())
    }

    fn write_error(&self, e: mongodb::error::Error) -> MetadataError {
        self.error("write failed", e)
    }

    async fn find_one<T: DeserializeOwned + Send + Sync>(
        &self,
        collection: &str,
        filter: Document,
    ) -> Result<Option<T>, MetadataError> {
        self.collection::<T>(collection)
            .find_one(filter)
            .projection(doc! { "_id": 0 })
            .await
            .map_err(|e| self.error(&format!("reading {collection} failed"), e))
    }

    /// A page of the documents matching `filter`, in `sort` order, and how many match in all.
    async fn page<T: DeserializeOwned + Send + Sync>(
        &self,
        collection: &str,
        filter: Document,
        projection: Document,
        sort: Document,
        skip: u64,
        limit: u64,
    ) -> Result<(Vec<T>, u64), MetadataError> {
        let fail = |e: mongodb::error::Error| self.error(&format!("reading {collection} failed"), e);
        let handle = self.collection::<T>(collection);
        let total = handle.count_documents(filter.clone()).await.map_err(fail)?;
        if limit == 0 {
            return Ok((Vec::new(), total));
        }
        let page = handle
            .find(filter)
            .projection(projection)
            .sort(sort)
            .skip(skip)
            .limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let docs = page.await.map_err(fail)?.try_collect().await.map_err(fail)?;
        Ok((docs, total))
    }

    /// Documents matching `filter` in `sort` order, at most `limit` (0 means none, not all).
    async fn find<T: DeserializeOwned + Send + Sync>(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: Option<usize>,
    ) -> Result<Vec<T>, MetadataError> {
        if limit == Some(0) {
            return Ok(Vec::new());
        }
        let fail = |e: mongodb::error::Error| self.error(&format!("reading {collection} failed"), e);
        let handle = self.collection::<T>(collection);
        let mut find = handle.find(filter).projection(doc! { "_id": 0 }).sort(sort);
        if let Some(limit) = limit {
            find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        find.await.map_err(fail)?.try_collect().await.map_err(fail)
    }
}

/// A deleted video's live documents, when it is a recording: its stream, gap counts and chunks.
fn recording_deletions(stream_id: &str) -> [(Key, Op); 3] {
    let delete = |collection, write| Op { collection, filter: doc! { "stream_id": stream_id }, doc: doc! {}, write };
    [
        (Key::Stream(stream_id.into()), delete(STREAMS, Write::Delete)),
        (Key::Gaps(stream_id.into()), delete(GAPS, Write::Delete)),
        (Key::Chunks(stream_id.into()), delete(CHUNKS, Write::DeleteMany)),
    ]
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        _ => is_code(e, DUPLICATE_KEY),
    }
}

/// Whether the server refused a command with `code`.
fn is_code(e: &mongodb::error::Error, code: i32) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == code)
}

/// Keeps the URI's password out of every message.
struct Scrubber {
    uri: String,
    password: Option<String>,
}

impl Scrubber {
    fn new(uri: &str) -> Scrubber {
        let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let Some((userinfo, hosts)) = authority.rsplit_once('@') else {
            return Scrubber { uri: uri.to_string(), password: None };
        };
        match userinfo.split_once(':') {
            Some((user, password)) if !password.is_empty() => Scrubber {
                uri: uri.replacen(authority, &format!("{user}:***@{hosts}"), 1),
                password: Some(password.to_string()),
            },
            _ => Scrubber { uri: uri.to_string(), password: None },
        }
    }

    /// The URI with its password masked.
    fn uri(&self) -> &str {
        &self.uri
    }

    fn text(&self, text: &str) -> String {
        match &self.password {
            Some(password) => text.replace(password.as_str(), "***"),
            None => text.to_string(),
        }
    }

    /// An error of connecting, its message scrubbed. The driver's error is left out of the
    /// chain: it may carry the URI, password included.
    fn error(&self, message: &str) -> MetadataError {
        MetadataError::Mongo { message: self.text(message), source: None }
    }
}

#[async_trait]
impl MetadataStore for MongoMetadata {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    async fn apply(&self, writes: Arc<Vec<MetaWrite>>) -> Result<(), MetadataError> {
        let (streams, others): (Vec<Op>, Vec<Op>) =
            self.plan(&writes)?.into_iter().partition(|op| op.collection == STREAMS);
        // Keys are independent, so their writes run concurrently; one key has one write. Stream
        // documents go last: a reader that sees a stream's counts also finds its chunks.
        for ops in [others, streams] {
            stream::iter(ops.into_iter().map(Ok)).try_for_each_concurrent(CONCURRENCY, |op| self.run(op)).await?;
        }
        Ok(())
    }

    async fn marker(&self) -> Result<Marker, MetadataError> {
        let what = format!("reading {MARKER_TABLE} of database {} failed", self.db.name());
        let markers = self.collection::<Document>(MARKER_TABLE);
        if self.bounded(&what, markers.find_one(doc! { "_id": MARKER_KEY })).await?.is_some() {
            return Ok(Marker::Present);
        }
        for collection in [STREAMS, CHUNKS, VODS, DEAD_LETTERS] {
            if self.any(collection).await? {
                return Ok(Marker::Unmarked);
            }
        }
        Ok(Marker::Absent)
    }

    async fn write_marker(&self) -> Result<(), MetadataError> {
        let mut marker = self.encode(&MarkerDoc::now())?;
        marker.insert("_id", MARKER_KEY);
        let what = format!("writing {MARKER_TABLE} of database {} failed", self.db.name());
        let markers = self.collection::<Document>(MARKER_TABLE);
        let write = markers.replace_one(doc! { "_id": MARKER_KEY }, marker).upsert(true);
        match self.answer(&what, write).await? {
            // Another process of a cluster marked it at the same moment: it is marked.
            Err(e) if is_duplicate_key(&e) => Ok(()),
            result => result.map(drop).map_err(|e| self.error(&what, e)),
        }
    }

    async fn get_stream(&self, stream_id: &str) -> Result<Option<LiveStreamDoc>, MetadataError> {
        self.find_one(STREAMS, doc! { "stream_id": stream_id }).await
    }

    async fn get_token(&self, token_id: &str) -> Result<Option<TokenDoc>, MetadataError> {
        self.find_one(TOKENS, doc! { "token_id": token_id }).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenDoc>, MetadataError> {
        self.find(TOKENS, doc! {}, doc! { "created_at_ms": 1 }, None).await
    }

    async fn list_streams(&self) -> Result<Vec<LiveStreamDoc>, MetadataError> {
        self.find(STREAMS, doc! {}, doc! { "stream_id": 1 }, None).await
    }

    async fn get_chunk(&self, stream_id: &str, chunk_index: u64) -> Result<Option<LiveChunkDoc>, MetadataError> {
        let Ok(index) = i64::try_from(chunk_index) else { return Ok(None) };
        self.find_one(CHUNKS, doc! { "stream_id": stream_id, "chunk_index": index }).await
    }

    async fn chunks(&self, stream_id: &str, from: u64, limit: usize) -> Result<Vec<LiveChunkDoc>, MetadataError> {
        let Ok(from) = i64::try_from(from) else { return Ok(Vec::new()) };
        // Equality on stream_id, range and sort on chunk_index: the unique index serves it all.
        let filter = doc! { "stream_id": stream_id, "chunk_index": { "$gte": from } };
        self.find(CHUNKS, filter, doc! { "stream_id": 1, "chunk_index": 1 }, Some(limit)).await
    }

    async fn get_vod(&self, stream_id: &str) -> Result<Option<VodDoc>, MetadataError> {
        self.find_one(VODS, doc! { "stream_id": stream_id }).await
    }

    async fn get_gaps(&self, stream_id: &str) -> Result<Option<LiveGapsDoc>, MetadataError> {
        self.find_one(GAPS, doc! { "stream_id": stream_id }).await
    }

    async fn list_vods(&self, query: &VodQuery) -> Result<(Vec<VodDoc>, u64), MetadataError> {
        let mut filter = doc! {};
        if let Some(status) = query.status {
            filter.insert("status", status.as_str());
        }
        match query.kind {
            // A document from before kinds has none: it is an upload.
            Some(VodKind::Upload) => filter.insert("kind", doc! { "$in": [VodKind::Upload.as_str(), Bson::Null] }),
            Some(kind) => filter.insert("kind", kind.as_str()),
            None => None,
        };
        if !query.words.is_empty() {
            filter.insert(SEARCH_TERMS, doc! { "$all": &query.words });
        }
        let order = if query.sort == VodSort::CreatedAsc { 1 } else { -1 };
        let sort = doc! { "created_at_ms": order, "stream_id": order };
        let projection = doc! { "_id": 0, SEARCH_TERMS: 0 };
        self.page(VODS, filter, projection, sort, query.skip, query.limit).await
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobDoc>, MetadataError> {
        self.find_one(JOBS, doc! { "job_id": job_id }).await
    }

    async fn list_jobs(&self, limit: u64, skip: u64) -> Result<(Vec<JobDoc>, u64), MetadataError> {
        let sort = doc! { "created_at_ms": -1, "job_id": -1 };
        self.page(JOBS, doc! {}, doc! { "_id": 0 }, sort, skip, limit).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterDoc>, MetadataError> {
        let sort = doc! { "topic": 1, "partition": 1, "offset": 1 };
        self.find(DEAD_LETTERS, doc! {}, sort, Some(limit)).await
    }

    async fn health(&self) -> Result<(), MetadataError> {
        match tokio::time::timeout(HEALTH_TIMEOUT, self.db.run_command(doc! { "ping": 1 })).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.error("ping failed", e)),
            Err(_) => Err(self.refused("ping failed", format!("no answer within {HEALTH_TIMEOUT:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        let scrub = Scrubber::new("mongodb://app:s3cret@db1:27017,db2:27017/segflow?authSource=admin");
        assert_eq!(scrub.uri(), "mongodb://app:***@db1:27017,db2:27017/segflow?authSource=admin");
        assert_eq!(scrub.text("auth failed for s3cret"), "auth failed for ***");
        for plain in ["mongodb://127.0.0.1:27017", "mongodb://app@db1/?authMechanism=MONGODB-X509"] {
            assert_eq!(Scrubber::new(plain).uri(), plain);
            assert_eq!(Scrubber::new(plain).text("x"), "x");
        }
    }

    #[test]
    fn u64_fields_round_trip_through_bson() {
        let doc = DeadLetterDoc {
            topic: "live-chunks".into(),
            partition: u32::MAX,
            offset: i64::MAX as u64,
            reason: crate::model::DeadLetterReason::MalformedJson,
            error: "e".into(),
            payload_preview: "p".into(),
            at_ms: crate::model::now_us(),
        };
        let encoded = bson::to_document(&doc).unwrap();
        let bytes = bson::to_vec(&encoded).unwrap();
        assert_eq!(bson::from_slice::<DeadLetterDoc>(&bytes).unwrap(), doc);
        // Above Int64 the document cannot be stored: an error, not a wrapped value.
        assert!(bson::to_document(&DeadLetterDoc { offset: u64::MAX, ..doc }).is_err());
    }
}
