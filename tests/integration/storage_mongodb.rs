//! The MongoDB metadata store against a real MongoDB-wire server (FerretDB in CI, MongoDB 7 works
//! too): documents round-trip, writes are idempotent, the unique indexes hold, pages are ordered.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::{Client, Database, IndexModel};
use segflow::model::library::{VodQuery, VodSort, search_terms};
use segflow::model::{
    Chunk, ChunkStatus, DeadLetterDoc, DeadLetterReason, LiveChunkDoc, LiveStreamDoc, MediaInfo, StreamStatus,
    VariantDoc, VodDoc, VodKind, VodStatus, keys, now_ms, now_us,
};
use segflow::storage::metadata::embedded::EmbeddedMetadata;
use segflow::storage::metadata::mongodb::MongoMetadata;
use segflow::storage::metadata::{MetaWrite, MetadataStore};

fn mongo_uri() -> String {
    crate::common::service_env("SERVICES_TEST_MONGO_URI")
}

/// Runs `test` against a fresh database of its own, dropped afterwards even when the test fails.
async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(MongoMetadata, Database) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let uri = mongo_uri();
    let name = format!("segflow_test_{:016x}", rand::random::<u64>());
    let store = MongoMetadata::connect(&uri, &name).await.expect("connect to the test MongoDB");
    let db = Client::with_uri_str(&uri).await.unwrap().database(&name);
    let outcome = tokio::spawn(test(store, db.clone())).await;
    db.drop().await.expect("drop the test database");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn apply(store: &MongoMetadata, writes: Vec<MetaWrite>) {
    store.apply(Arc::new(writes)).await.unwrap();
}

fn stream(id: &str) -> LiveStreamDoc {
    let mut doc = LiveStreamDoc::new(id, "a title", 2, 6, now_ms());
    doc.head_sequence = Some(41);
    doc.dvr_window_start = Some(36);
    doc.chunks_accepted = 42;
    doc.init_object_key = Some(format!("live-streams/{id}/init.mp4"));
    doc
}

fn chunk(stream_id: &str, index: u64) -> LiveChunkDoc {
    LiveChunkDoc {
        stream_id: stream_id.to_string(),
        chunk: Box::new(Chunk {
            chunk_index: index,
            sequence_number: index,
            duration_ms: 2000,
            size_bytes: 1_628_000,
            checksum: Some("ab".repeat(32)),
            stored_sha256: Some("ab".repeat(32)),
            object_key: keys::live_chunk(stream_id, index, "ts"),
            keyframe_aligned: true,
            audio_track_id: Some(format!("audio-{stream_id}")),
            video_track_id: None,
            // A microsecond timestamp: far above 32 bits, stored as Int64.
            ingested_at_us: now_us(),
            encoder_program_date_time_ms: Some(now_ms() + index * 2000),
        }),
        status: ChunkStatus::Live,
        dvr_window_start: index.saturating_sub(5),
        program_date_time_ms: now_ms() + index * 2000,
        processing_latency_ms: Some(12.5),
        manifest_updated_at_ms: None,
    }
}

fn vod(id: &str) -> VodDoc {
    let mut doc = VodDoc::new(id, "talk", "a talk", &format!("vod-raw/{id}/source.mp4"), now_ms());
    doc.size_bytes = 5_000_000_000;
    doc.source_sha256 = "cd".repeat(32);
    doc.set_status(VodStatus::Processing, now_ms());
    doc.set_status(VodStatus::Ready, now_ms());
    doc.source = Some(MediaInfo {
        duration_s: 61.5,
        width: 1920,
        height: 1080,
        frame_rate: 29.97,
        rotation_degrees: 0,
        variable_frame_rate: false,
        video_codec: "h264".into(),
        audio_codec: Some("aac".into()),
    });
    doc.rungs_planned = vec!["1080p".into(), "720p".into()];
    doc.progress_pct = 100.0;
    doc.variants_generated = doc.rungs_planned.clone();
    doc.variants = vec![VariantDoc {
        name: "1080p".into(),
        width: 1920,
        height: 1080,
        bandwidth: 6_000_000,
        average_bandwidth: 5_000_000,
        codecs: "avc1.640028,mp4a.40.2".into(),
        frame_rate: 29.97,
        playlist_path: format!("vod-variants/{id}/1080p/playlist.m3u8"),
        segments: 31,
    }];
    doc.manifest_path = Some(format!("manifests/{id}/vod_manifest.m3u8"));
    doc.processing_latency_ms = Some(9876.5);
    doc.keyframe_aligned = true;
    doc
}

fn dead_letter(partition: u32, offset: u64) -> DeadLetterDoc {
    DeadLetterDoc {
        topic: "live-chunks".into(),
        partition,
        offset,
        reason: DeadLetterReason::InvalidEvent,
        error: "chunk needs duration_ms > 0".into(),
        payload_preview: "{\"stream_id\":\"s\"}".into(),
        at_ms: now_ms(),
    }
}

async fn indexes(db: &Database, collection: &str) -> Vec<IndexModel> {
    db.collection::<Document>(collection).list_indexes().await.unwrap().try_collect().await.unwrap()
}

async fn index_keys(db: &Database, collection: &str) -> Vec<Document> {
    indexes(db, collection).await.into_iter().map(|i| i.keys).collect()
}

async fn count(db: &Database, collection: &str) -> u64 {
    db.collection::<Document>(collection).count_documents(doc! {}).await.unwrap()
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn every_document_type_round_trips() {
    with_store(|store, db| async move {
        let (s, c, v, d) = (stream("live-a"), chunk("live-a", 3), vod("vod-a"), dead_letter(4, 1_234_567_890_123));
        apply(
            &store,
            vec![
                MetaWrite::Stream(s.clone()),
                MetaWrite::Chunk { doc: c.clone(), overwrite: true },
                MetaWrite::Vod(Box::new(v.clone())),
                MetaWrite::DeadLetter(d.clone()),
            ],
        )
        .await;
        assert_eq!(store.get_stream("live-a").await.unwrap(), Some(s.clone()));
        assert_eq!(store.list_streams().await.unwrap(), vec![s]);
        assert_eq!(store.get_chunk("live-a", 3).await.unwrap(), Some(c.clone()));
        assert_eq!(store.chunks("live-a", 0, 10).await.unwrap(), vec![c.clone()]);
        assert_eq!(store.get_vod("vod-a").await.unwrap(), Some(v));
        assert_eq!(store.dead_letters(10).await.unwrap(), vec![d]);
        assert_eq!(store.get_stream("live-none").await.unwrap(), None);
        assert_eq!(store.get_chunk("live-a", 4).await.unwrap(), None);
        assert_eq!(store.get_chunk("live-a", u64::MAX).await.unwrap(), None);
        assert_eq!(store.get_vod("vod-none").await.unwrap(), None);

        // u64 fields are stored as BSON Int64 and come back unchanged.
        let raw = db.collection::<Document>("live_metadata").find_one(doc! {}).await.unwrap().unwrap();
        assert_eq!(raw.get_i64("ingested_at_us").unwrap() as u64, c.chunk.ingested_at_us);
        assert!(c.chunk.ingested_at_us > 1_600_000_000_000_000, "a realistic µs timestamp");
        assert_eq!(raw.get_i64("chunk_index").unwrap(), 3);
    })
    .await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn u64_above_int64_is_an_error_not_a_wrapped_value() {
    with_store(|store, db| async move {
        let mut c = chunk("live-a", 1);
        c.chunk.size_bytes = u64::MAX;
        let err = store.apply(Arc::new(vec![MetaWrite::Chunk { doc: c, overwrite: true }])).await.unwrap_err();
        assert!(err.to_string().contains("MongoDB"), "{err}");
        assert_eq!(count(&db, "live_metadata").await, 0);
    })
    .await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn applying_a_batch_twice_leaves_one_document_per_key() {
    with_store(|store, db| async move {
        let batch = Arc::new(vec![
            MetaWrite::Stream(stream("live-a")),
            MetaWrite::Chunk { doc: chunk("live-a", 0), overwrite: true },
            MetaWrite::Chunk { doc: chunk("live-a", 1), overwrite: false },
            MetaWrite::Vod(Box::new(vod("vod-a"))),
            MetaWrite::DeadLetter(dead_letter(0, 7)),
        ]);
        store.apply(batch.clone()).await.unwrap();
        store.apply(batch).await.unwrap();
        for collection in ["live_streams", "vod_metadata", "dead_letters"] {
            assert_eq!(count(&db, collection).await, 1, "{collection}");
        }
        assert_eq!(count(&db, "live_metadata").await, 2);

        // Within a batch, the later overwrite of a key wins.
        let mut ended = stream("live-a");
        ended.status = StreamStatus::Ended;
        ended.ended_at_ms = Some(now_ms());
        let mut late = chunk("live-a", 0);
        late.status = ChunkStatus::Late;
        apply(
            &store,
            vec![
                MetaWrite::Stream(stream("live-a")),
                MetaWrite::Chunk { doc: chunk("live-a", 0), overwrite: true },
                MetaWrite::Stream(ended.clone()),
                MetaWrite::Chunk { doc: late.clone(), overwrite: true },
            ],
        )
        .await;
        assert_eq!(store.get_stream("live-a").await.unwrap(), Some(ended));
        assert_eq!(store.get_chunk("live-a", 0).await.unwrap(), Some(late));
        assert_eq!(count(&db, "live_streams").await, 1);
        assert_eq!(count(&db, "live_metadata").await, 2);

        // An empty batch is fine.
        apply(&store, Vec::new()).await;
    })
    .await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn insert_if_absent_does_not_overwrite() {
    with_store(|store, _db| async move {
        let first = chunk("live-a", 5);
        let mut second = chunk("live-a", 5);
        second.status = ChunkStatus::ChecksumFailed;
        second.processing_latency_ms = None;

        // Absent: inserted.
        apply(&store, vec![MetaWrite::Chunk { doc: first.clone(), overwrite: false }]).await;
        assert_eq!(store.get_chunk("live-a", 5).await.unwrap(), Some(first.clone()));
        // Present: left alone.
        apply(&store, vec![MetaWrite::Chunk { doc: second.clone(), overwrite: false }]).await;
        assert_eq!(store.get_chunk("live-a", 5).await.unwrap(), Some(first.clone()));
        // Overwrite: replaced.
        apply(&store, vec![MetaWrite::Chunk { doc: second.clone(), overwrite: true }]).await;
        assert_eq!(store.get_chunk("live-a", 5).await.unwrap(), Some(second.clone()));

        // In one batch, in order: insert-if-absent then overwrite gives the overwrite ...
        let sixth = second_at(6);
        apply(
            &store,
            vec![
                MetaWrite::Chunk { doc: chunk("live-a", 6), overwrite: false },
                MetaWrite::Chunk { doc: sixth.clone(), overwrite: true },
            ],
        )
        .await;
        assert_eq!(store.get_chunk("live-a", 6).await.unwrap(), Some(sixth));
        // ... and overwrite then insert-if-absent keeps the overwrite.
        let seventh = chunk("live-a", 7);
        apply(
            &store,
            vec![
                MetaWrite::Chunk { doc: seventh.clone(), overwrite: true },
                MetaWrite::Chunk { doc: second_at(7), overwrite: false },
            ],
        )
        .await;
        assert_eq!(store.get_chunk("live-a", 7).await.unwrap(), Some(seventh));
    })
    .await;
}

fn second_at(index: u64) -> LiveChunkDoc {
    let mut doc = chunk("live-a", index);
    doc.status = ChunkStatus::Late;
    doc.chunk.ingested_at_us = 1_700_000_000_123_456;
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn concurrent_upserts_of_one_new_key_all_succeed() {
    with_store(|_store, db| async move {
        // Several processes (one client each) racing to create the same documents: a lost
        // upsert race is a duplicate key error, which must not fail the batch.
        let mut tasks = Vec::new();
        for process in 0..6 {
            let store = MongoMetadata::connect(&mongo_uri(), db.name()).await.unwrap();
            tasks.push(tokio::spawn(async move {
                for index in 0..15 {
                    let writes = vec![
                        MetaWrite::Stream(stream(&format!("live-{index}"))),
                        MetaWrite::Chunk { doc: chunk("live-a", index), overwrite: process % 2 == 0 },
                        MetaWrite::DeadLetter(dead_letter(1, index)),
                    ];
                    store.apply(Arc::new(writes)).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(count(&db, "live_streams").await, 15);
        assert_eq!(count(&db, "live_metadata").await, 15);
        assert_eq!(count(&db, "dead_letters").await, 15);
    })
    .await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn unique_indexes_exist_and_refuse_duplicates() {
    with_store(|store, db| async move {
        let expected = [
            ("live_metadata", doc! { "stream_id": 1, "chunk_index": 1 }),
            ("live_streams", doc! { "stream_id": 1 }),
            ("vod_metadata", doc! { "stream_id": 1 }),
            ("dead_letters", doc! { "topic": 1, "partition": 1, "offset": 1 }),
        ];
        for (collection, keys) in &expected {
            let indexes = indexes(&db, collection).await;
            let found = indexes.iter().find(|i| &i.keys == keys);
            let found = found.unwrap_or_else(|| panic!("{collection}: no index on {keys}: {indexes:?}"));
            assert_eq!(found.options.as_ref().and_then(|o| o.unique), Some(true), "{collection}: {found:?}");
        }

        apply(&store, vec![MetaWrite::Chunk { doc: chunk("live-a", 9), overwrite: true }]).await;
        let chunks = db.collection::<Document>("live_metadata");
        let err = chunks.insert_one(doc! { "stream_id": "live-a", "chunk_index": 9_i64 }).await.unwrap_err();
        let code = match err.kind.as_ref() {
            ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
            _ => None,
        };
        assert_eq!(code, Some(11000), "a duplicate key error: {err}");
        // Another chunk index of the stream is a different key.
        chunks.insert_one(doc! { "stream_id": "live-a", "chunk_index": 10_i64 }).await.unwrap();

        // Creating the indexes again (a second process, a restart) is a no-op, but for the
        // superseded word index of an earlier version, which goes.
        let before = indexes(&db, "live_metadata").await.len();
        let videos = db.collection::<Document>("vod_metadata");
        let old_words = doc! { "search_terms": 1, "created_at_ms": 1 };
        videos.create_index(IndexModel::builder().keys(old_words.clone()).build()).await.unwrap();
        let again = MongoMetadata::connect(&mongo_uri(), db.name()).await.unwrap();
        assert_eq!(indexes(&db, "live_metadata").await.len(), before);
        let video_keys = index_keys(&db, "vod_metadata").await;
        assert!(!video_keys.contains(&old_words), "{video_keys:?}");
        assert!(video_keys.contains(&doc! { "search_terms": 1, "created_at_ms": 1, "stream_id": 1 }));
        assert_eq!(
            again.get_chunk("live-a", 9).await.unwrap(),
            Some(store.get_chunk("live-a", 9).await.unwrap().unwrap())
        );
    })
    .await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn chunks_come_in_ascending_pages_from_the_asked_index() {
    with_store(|store, _db| async move {
        // Written out of order, over several batches, next to another stream's chunks.
        let mut order: Vec<u64> = (0..25).collect();
        order.reverse();
        order.swap(3, 17);
        for part in order.chunks(7) {
            let writes = part.iter().map(|&i| MetaWrite::Chunk { doc: chunk("live-a", i), overwrite: true }).collect();
            apply(&store, writes).await;
        }
        let others = (0..5).map(|i| MetaWrite::Chunk { doc: chunk("live-a2", i), overwrite: true }).collect();
        apply(&store, others).await;

        let indexes = |page: Vec<LiveChunkDoc>| -> Vec<u64> {
            assert!(page.iter().all(|c| c.stream_id == "live-a"));
            page.iter().map(|c| c.chunk.chunk_index).collect()
        };
        assert_eq!(indexes(store.chunks("live-a", 0, 10).await.unwrap()), (0..10).collect::<Vec<_>>());
        assert_eq!(indexes(store.chunks("live-a", 10, 10).await.unwrap()), (10..20).collect::<Vec<_>>());
        assert_eq!(indexes(store.chunks("live-a", 20, 10).await.unwrap()), (20..25).collect::<Vec<_>>());
        assert_eq!(indexes(store.chunks("live-a", 7, 3).await.unwrap()), vec![7, 8, 9]);
        assert_eq!(indexes(store.chunks("live-a", 0, usize::MAX).await.unwrap()).len(), 25);
        assert!(store.chunks("live-a", 0, 0).await.unwrap().is_empty(), "limit 0 means none");
        assert!(store.chunks("live-a", 25, 10).await.unwrap().is_empty());
        assert!(store.chunks("live-a", u64::MAX, 10).await.unwrap().is_empty());
        assert!(store.chunks("live-none", 0, 10).await.unwrap().is_empty());
        assert_eq!(store.chunks("live-a2", 3, 10).await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn dead_letters_are_written_once_per_record() {
    with_store(|store, db| async move {
        let first = dead_letter(2, 40);
        apply(&store, vec![MetaWrite::DeadLetter(first.clone())]).await;
        // A replay of the same log record (same topic, partition, offset) after a restart.
        let mut replay = first.clone();
        replay.at_ms += 5000;
        apply(&store, vec![MetaWrite::DeadLetter(replay.clone()), MetaWrite::DeadLetter(replay.clone())]).await;
        assert_eq!(count(&db, "dead_letters").await, 1);
        // One document per key, the latest write kept, as in the embedded store.
        assert_eq!(store.dead_letters(10).await.unwrap(), vec![replay.clone()]);

        // Other records are other keys, listed in (topic, partition, offset) order.
        apply(&store, vec![MetaWrite::DeadLetter(dead_letter(2, 3)), MetaWrite::DeadLetter(dead_letter(0, 99))]).await;
        let keys: Vec<_> = store.dead_letters(10).await.unwrap().iter().map(|d| (d.partition, d.offset)).collect();
        assert_eq!(keys, vec![(0, 99), (2, 3), (2, 40)]);
        assert_eq!(store.dead_letters(2).await.unwrap().len(), 2);
        assert!(store.dead_letters(0).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn health_is_ok_and_sync_is_a_no_op() {
    with_store(|store, _db| async move {
        store.health().await.unwrap();
        store.sync().await.unwrap();
        store.apply_buffered(Arc::new(vec![MetaWrite::Stream(stream("live-b"))])).await.unwrap();
        store.sync().await.unwrap();
        assert!(store.get_stream("live-b").await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn a_closed_port_fails_fast_naming_mongodb_without_the_password() {
    let started = Instant::now();
    let err = match MongoMetadata::connect("mongodb://segflow:hunter2@127.0.0.1:1/?authSource=admin", "x").await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e.to_string(),
    };
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(err.contains("MongoDB") && err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let err = match MongoMetadata::connect("postgres://segflow:hunter2@host/db", "x").await {
        Ok(_) => panic!("accepted a non-MongoDB URI"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("MongoDB") && !err.contains("hunter2"), "{err}");
}

/// 10,000 videos of both kinds and every final status, with a few words each, created 1 ms apart.
fn library(n: u64) -> Vec<VodDoc> {
    let topics = ["beach", "city", "forest", "desert", "harbour"];
    (0..n)
        .map(|i| {
            let mut doc = VodDoc::new(
                &format!("vod-lib{i:05}"),
                &format!("Clip {i} of the {}", topics[(i % 5) as usize]),
                if i % 7 == 0 { "filmed at night" } else { "" },
                &format!("vod-raw/vod-lib{i:05}/source.mp4"),
                1_700_000_000_000 + i,
            );
            doc.set_status(
                [VodStatus::Ready, VodStatus::Failed, VodStatus::Transcoding][(i % 3) as usize],
                doc.created_at_ms,
            );
            doc.kind = if i % 4 == 0 { VodKind::Recording } else { VodKind::Upload };
            doc.tags = if i % 11 == 0 { vec!["Featured".into()] } else { Vec::new() };
            doc
        })
        .collect()
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn a_library_of_ten_thousand_videos_pages_as_the_embedded_store_does() {
    with_store(|store, db| async move {
        let data = tempfile::tempdir().unwrap();
        let embedded = EmbeddedMetadata::open(&data.path().join("metadata.redb")).unwrap();
        let docs = library(10_000);
        // The embedded store through its write path; MongoDB by `insertMany` of the documents
        // its write path makes (FerretDB upserts one at a time, each a scan of the collection).
        let writes: Arc<Vec<MetaWrite>> = Arc::new(docs.iter().map(|d| MetaWrite::Vod(Box::new(d.clone()))).collect());
        embedded.apply(writes).await.unwrap();
        let encoded = docs.iter().map(|doc| {
            let mut encoded = mongodb::bson::to_document(doc).unwrap();
            encoded.insert("search_terms", search_terms(doc));
            encoded
        });
        db.collection::<Document>("vod_metadata").insert_many(encoded).await.unwrap();
        // One through the store's own write path, so the two encodings are checked to agree.
        apply(&store, vec![MetaWrite::Vod(Box::new(docs[0].clone()))]).await;
        let queries = [
            VodQuery { limit: 20, ..VodQuery::default() },
            VodQuery { skip: 9_990, limit: 20, ..VodQuery::default() },
            VodQuery { status: Some(VodStatus::Failed), sort: VodSort::CreatedAsc, skip: 40, limit: 20, ..VodQuery::default() },
            VodQuery { kind: Some(VodKind::Recording), status: Some(VodStatus::Ready), limit: 50, ..VodQuery::default() },
            VodQuery { kind: Some(VodKind::Upload), limit: 10, ..VodQuery::default() },
            VodQuery { words: vec!["beach".into(), "night".into()], skip: 10, limit: 25, ..VodQuery::default() },
            VodQuery { words: vec!["featured".into()], status: Some(VodStatus::Ready), limit: 100, ..VodQuery::default() },
            VodQuery { words: vec!["mountain".into()], limit: 10, ..VodQuery::default() },
        ];
        for query in &queries {
            let began = Instant::now();
            let (page, total) = store.list_vods(query).await.unwrap();
            let mongo_took = began.elapsed();
            let began = Instant::now();
            let (expected, expected_total) = embedded.list_vods(query).await.unwrap();
            eprintln!("{query:?}: {total} videos; a page in {mongo_took:?} on MongoDB, {:?} embedded", began.elapsed());
            let ids = |docs: &[VodDoc]| docs.iter().map(|d| d.stream_id.clone()).collect::<Vec<_>>();
            assert_eq!((ids(&page), total), (ids(&expected), expected_total), "{query:?}");
            assert_eq!(page, expected, "whole documents, {query:?}");
        }
        let (page, total) = store.list_vods(&queries[5]).await.unwrap();
        assert_eq!((page.len(), total), (25, 286), "every 35th video is a night at the beach");

        // Every filter has an index that leads with it and goes on with the sort.
        let keys = index_keys(&db, "vod_metadata").await;
        for leading in [
            doc! { "created_at_ms": 1, "stream_id": 1 },
            doc! { "status": 1, "created_at_ms": 1, "stream_id": 1 },
            doc! { "kind": 1, "created_at_ms": 1, "stream_id": 1 },
            doc! { "kind": 1, "status": 1, "created_at_ms": 1, "stream_id": 1 },
            doc! { "search_terms": 1, "created_at_ms": 1, "stream_id": 1 },
        ] {
            assert!(keys.contains(&leading), "{leading} in {keys:?}");
        }
        // The server's own account of a page query, where it gives one (MongoDB does; FerretDB
        // v1 reports its SQL instead): the documents it examined are the page, not the library.
        let explain = doc! {
            "explain": { "find": "vod_metadata", "filter": { "status": "failed" }, "sort": { "status": 1, "created_at_ms": 1, "stream_id": 1 }, "limit": 20 },
            "verbosity": "executionStats",
        };
        let plan = db.run_command(explain).await.unwrap();
        eprintln!("explain of a page of failed videos: {plan}");
        if let Ok(stats) = plan.get_document("executionStats") {
            let examined = stats.get_i64("totalDocsExamined").or_else(|_| stats.get_i32("totalDocsExamined").map(i64::from));
            assert!(examined.unwrap() <= 20, "{stats}");
        }
    })
    .await;
}
