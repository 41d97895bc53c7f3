//! The S3 object store against a real MinIO server: uploads (single and multipart), hashes,
//! refusals that leave nothing behind, presigned URLs, and every other `ObjectStore` call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use segflow::model::keys::bucket;
use segflow::storage::object::s3::{PART_SIZE, S3Settings, S3Store};
use segflow::storage::object::{ByteStream, ObjectStore, Playback, StoreError, StoredObject};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// A test-server setting as `scripts/services.sh env` exports it, `SERVICES_TEST_{name}`.
fn env(name: &str) -> String {
    crate::common::service_env(&format!("SERVICES_TEST_{name}"))
}

/// Settings for the test server, with a bucket prefix of this test's own.
fn settings() -> S3Settings {
    S3Settings {
        endpoint: env("S3_ENDPOINT"),
        access_key: env("S3_ACCESS_KEY"),
        secret_key: env("S3_SECRET_KEY"),
        region: std::env::var("SERVICES_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        bucket_prefix: format!("t{:012x}-", rand::random::<u64>() >> 16),
        ..S3Settings::default()
    }
}

/// A plain SDK client, to look behind the store's back.
fn raw_client(settings: &S3Settings) -> Client {
    crate::common::s3_client(&settings.endpoint, &settings.access_key, &settings.secret_key, &settings.region)
}

struct Fixture {
    store: Arc<S3Store>,
    raw: Client,
    settings: S3Settings,
}

impl Fixture {
    async fn new() -> Fixture {
        let settings = settings();
        let store = S3Store::connect(settings.clone()).await.expect("connect to the test MinIO");
        Fixture { store: Arc::new(store), raw: raw_client(&settings), settings }
    }

    fn bucket(&self, name: &str) -> String {
        format!("{}{name}", self.settings.bucket_prefix)
    }

    /// Whether the object at `key` (`bucket/name`) exists, asked behind the store's back.
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let (bucket, object) = key.split_once('/').unwrap();
        match self.raw.head_object().bucket(self.bucket(bucket)).key(object).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(e) => panic!("HEAD {key}: {e:?}"),
        }
    }

    /// Multipart uploads still pending on an object (MinIO lists them per object name).
    async fn pending_uploads(&self, bucket: &str, object: &str) -> usize {
        let listed = self.raw.list_multipart_uploads().bucket(self.bucket(bucket)).prefix(object).send().await.unwrap();
        listed.uploads().iter().filter(|u| u.key() == Some(object)).count()
    }

    async fn content_type(&self, bucket: &str, object: &str) -> Option<String> {
        let head = self.raw.head_object().bucket(self.bucket(bucket)).key(object).send().await.unwrap();
        head.content_type().map(String::from)
    }

    /// Removes this test's buckets and everything in them.
    async fn cleanup(self) {
        for name in bucket::ALL {
            let bucket = self.bucket(name);
            let listed = self.raw.list_objects_v2().bucket(&bucket).send().await.unwrap();
            for object in listed.contents() {
                let key = object.key().unwrap();
                self.raw.delete_object().bucket(&bucket).key(key).send().await.unwrap();
            }
            self.raw.delete_bucket().bucket(&bucket).send().await.unwrap();
        }
    }
}

/// Incompressible test bytes.
fn data(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `bytes` as a request body, in chunks of `chunk` bytes.
fn body(bytes: &Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<_> =
        (0..bytes.len()).step_by(chunk).map(|i| Ok(bytes.slice(i..(i + chunk).min(bytes.len())))).collect();
    futures_util::stream::iter(chunks).boxed()
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn connect_creates_the_buckets_and_reports_health() {
    let f = Fixture::new().await;
    for name in bucket::ALL {
        f.raw.head_bucket().bucket(f.bucket(name)).send().await.unwrap_or_else(|e| panic!("bucket {name}: {e:?}"));
    }
    // A second process finds them in place.
    let again = S3Store::connect(f.settings.clone()).await.unwrap();
    again.health().await.unwrap();
    f.store.health().await.unwrap();
    assert!(!format!("{:?}", f.settings).contains(&f.settings.secret_key), "Debug prints no secret");
    f.cleanup().await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn put_stream_hashes_single_and_multipart_uploads() {
    let f = Fixture::new().await;
    // Small (one PutObject), exactly one part (still one PutObject), 20 MiB (multipart, 3 parts).
    for (name, len, chunk) in
        [("small.ts", 100_000, 7_001), ("exact.ts", PART_SIZE, MIB), ("large.mp4", 20 * MIB, MIB + 37)]
    {
        let key = format!("vod-raw/v1/{name}");
        let bytes = data(len, len as u64);
        let stored = f.store.put_stream(&key, body(&bytes, chunk), 64 * MIB as u64).await.unwrap();
        let expected = StoredObject { size: len as u64, sha256: sha256(&bytes) };
        assert_eq!(stored, expected, "{key}");
        assert_eq!(f.store.stat_sha256(&key).await.unwrap(), Some(expected), "{key}");
        assert_eq!(f.store.get_bytes(&key).await.unwrap().as_deref(), Some(&bytes[..]), "{key}");
        assert_eq!(f.pending_uploads("vod-raw", &format!("v1/{name}")).await, 0);
    }
    assert_eq!(f.content_type("vod-raw", "v1/small.ts").await.as_deref(), Some("video/mp2t"));
    assert_eq!(f.content_type("vod-raw", "v1/large.mp4").await.as_deref(), Some("video/mp4"));
    // Single uploads carry the hash as metadata, multipart ones as tags bound to the ETag.
    let head = f.raw.head_object().bucket(f.bucket("vod-raw")).key("v1/exact.ts").send().await.unwrap();
    assert_eq!(head.metadata().and_then(|m| m.get("sha256")), Some(&sha256(&data(PART_SIZE, PART_SIZE as u64))));
    let head = f.raw.head_object().bucket(f.bucket("vod-raw")).key("v1/large.mp4").send().await.unwrap();
    assert!(head.e_tag().unwrap().contains("-3"), "20 MiB is three 8 MiB parts: {:?}", head.e_tag());
    let tags = f.raw.get_object_tagging().bucket(f.bucket("vod-raw")).key("v1/large.mp4").send().await.unwrap();
    let tag = |name: &str| tags.tag_set().iter().find(|t| t.key() == name).map(|t| t.value().to_string());
    assert_eq!(tag("sha256"), Some(sha256(&data(20 * MIB, 20 * MIB as u64))));
    assert_eq!(tag("etag").as_deref(), Some(head.e_tag().unwrap().trim_matches('"')));
    f.cleanup().await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn refused_uploads_leave_no_object_and_no_pending_upload() {
    let f = Fixture::new().await;
    // The check below can see a pending upload at all (MinIO lists them per object name).
    let pending = f.raw.create_multipart_upload().bucket(f.bucket("vod-raw")).key("v2/probe.mp4").send().await.unwrap();
    assert_eq!(f.pending_uploads("vod-raw", "v2/probe.mp4").await, 1);
    let id = pending.upload_id().unwrap();
    f.raw.abort_multipart_upload().bucket(f.bucket("vod-raw")).key("v2/probe.mp4").upload_id(id).send().await.unwrap();

    let bytes = data(20 * MIB, 2);
    // Too large within the first part, and after two parts went up.
    for (name, max) in [("small.mp4", MIB as u64), ("large.mp4", 18 * MIB as u64)] {
        let key = format!("vod-raw/v2/{name}");
        let refused = f.store.put_stream(&key, body(&bytes, MIB), max).await;
        assert!(matches!(refused, Err(StoreError::TooLarge(m)) if m == max), "{key}: {refused:?}");
        assert!(!f.exists(&key).await.unwrap(), "{key}");
        assert_eq!(f.pending_uploads("vod-raw", &format!("v2/{name}")).await, 0, "{key}");
    }
    let empty = f.store.put_stream("vod-raw/v2/empty.mp4", body(&Bytes::new(), 1), 100).await;
    assert!(matches!(empty, Err(StoreError::Empty)), "{empty:?}");
    assert!(!f.exists("vod-raw/v2/empty.mp4").await.unwrap());
    assert_eq!(f.pending_uploads("vod-raw", "v2/empty.mp4").await, 0);
    let failing = futures_util::stream::iter([Ok(data(9 * MIB, 3)), Err(std::io::Error::other("client went away"))]);
    let failed = f.store.put_stream("vod-raw/v2/failed.mp4", failing.boxed(), u64::MAX).await;
    assert!(matches!(failed, Err(StoreError::Upload(_))), "{failed:?}");
    assert_eq!(f.pending_uploads("vod-raw", "v2/failed.mp4").await, 0);

    // A cancelled upload (the request was dropped mid-way) aborts itself in the background.
    let stalled = futures_util::stream::iter([Ok(data(9 * MIB, 4))]).chain(futures_util::stream::pending());
    let store = f.store.clone();
    let task =
        tokio::spawn(async move { store.put_stream("vod-raw/v2/cancelled.mp4", stalled.boxed(), u64::MAX).await });
    let started = Instant::now();
    while f.pending_uploads("vod-raw", "v2/cancelled.mp4").await == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the multipart upload never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    let started = Instant::now();
    while f.pending_uploads("vod-raw", "v2/cancelled.mp4").await > 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "the cancelled upload was not aborted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!f.exists("vod-raw/v2/cancelled.mp4").await.unwrap());
    f.cleanup().await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn presigned_urls_serve_the_bytes_and_refuse_a_bad_signature() {
    let f = Fixture::new().await;
    let http = reqwest::Client::new();
    let playlist = Bytes::from_static(b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-ENDLIST\n");
    f.store.put_bytes("manifests/v3/vod_manifest.m3u8", playlist.clone()).await.unwrap();
    let segment = data(300_000, 5);
    f.store.put_stream("live-streams/l3/seg_00001.ts", body(&segment, 65_536), u64::MAX).await.unwrap();

    for (key, bytes, content_type) in [
        ("manifests/v3/vod_manifest.m3u8", &playlist, "application/vnd.apple.mpegurl"),
        ("live-streams/l3/seg_00001.ts", &segment, "video/mp2t"),
    ] {
        let url = f.store.presign_get(key, Duration::from_secs(3600)).await.unwrap();
        assert!(url.starts_with(&format!("{}/{}", f.settings.endpoint, f.bucket(key.split('/').next().unwrap()))));
        assert!(url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=3600"), "{url}");
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], content_type);
        assert_eq!(&response.bytes().await.unwrap()[..], &bytes[..]);

        // One signature character altered: refused.
        let at = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        let flipped = if &url[at..=at] == "0" { "1" } else { "0" };
        let forged = format!("{}{flipped}{}", &url[..at], &url[at + 1..]);
        assert_eq!(http.get(&forged).send().await.unwrap().status(), 403, "{forged}");
    }

    // A public endpoint: URLs name the host viewers use, still signed for it.
    let public = f.settings.endpoint.replace("127.0.0.1", "localhost");
    let viewer =
        S3Store::connect(S3Settings { public_endpoint: Some(public.clone()), ..f.settings.clone() }).await.unwrap();
    let url = viewer.presign_get("live-streams/l3/seg_00001.ts", Duration::from_secs(60)).await.unwrap();
    assert!(url.starts_with(&public), "{url}");
    // Over a week is more than SigV4 allows: a clear error, not a broken URL.
    let too_long = f.store.presign_get("live-streams/l3/seg_00001.ts", Duration::from_secs(8 * 86_400)).await;
    assert!(matches!(too_long, Err(StoreError::Backend { .. })), "{too_long:?}");
    f.cleanup().await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn reads_renames_deletes_and_files() {
    let f = Fixture::new().await;
    let store = f.store.as_ref();
    let bytes = data(50_000, 6);
    store.put_bytes("live-streams/l4/incoming/seg.ts", bytes.clone()).await.unwrap();
    assert!(f.exists("live-streams/l4/incoming/seg.ts").await.unwrap());
    assert!(!f.exists("live-streams/l4/nope.ts").await.unwrap());
    assert_eq!(store.get_bytes("live-streams/l4/incoming/seg.ts").await.unwrap(), Some(bytes.clone()));
    assert_eq!(store.get_bytes("live-streams/l4/nope.ts").await.unwrap(), None);
    assert_eq!(store.stat_sha256("live-streams/l4/nope.ts").await.unwrap(), None);

    // read_path downloads into scratch (created on demand) under the key's last component.
    let scratch = tempfile::tempdir().unwrap();
    let path = store.read_path("live-streams/l4/incoming/seg.ts", &scratch.path().join("job")).await.unwrap();
    assert_eq!(path, scratch.path().join("job/seg.ts"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let absent = store.read_path("live-streams/l4/nope.ts", scratch.path()).await;
    assert!(matches!(&absent, Err(StoreError::NotFound(key)) if key == "live-streams/l4/nope.ts"), "{absent:?}");
    // Players get the bytes from S3 itself.
    let playback = store.playback("live-streams/l4/incoming/seg.ts", Duration::from_secs(60)).await.unwrap();
    assert!(matches!(&playback, Playback::Redirect(url) if url.contains("X-Amz-Signature=")), "{playback:?}");

    // Rename: the bytes, their hash and their Content-Type move; the source is gone.
    store.rename("live-streams/l4/incoming/seg.ts", "live-streams/l4/chunks/1.ts").await.unwrap();
    assert!(!f.exists("live-streams/l4/incoming/seg.ts").await.unwrap());
    assert_eq!(store.get_bytes("live-streams/l4/chunks/1.ts").await.unwrap(), Some(bytes.clone()));
    let expected = StoredObject { size: bytes.len() as u64, sha256: sha256(&bytes) };
    assert_eq!(store.stat_sha256("live-streams/l4/chunks/1.ts").await.unwrap(), Some(expected));
    assert_eq!(f.content_type("live-streams", "l4/chunks/1.ts").await.as_deref(), Some("video/mp2t"));
    store.rename("live-streams/l4/chunks/1.ts", "live-streams/l4/chunks/1.ts").await.unwrap();
    assert_eq!(store.get_bytes("live-streams/l4/chunks/1.ts").await.unwrap(), Some(bytes.clone()));
    let missing = store.rename("live-streams/l4/nope.ts", "live-streams/l4/chunks/2.ts").await;
    assert!(matches!(&missing, Err(StoreError::NotFound(_))), "{missing:?}");

    // A multipart object's tagged hash moves into the copy's metadata.
    let large = data(10 * MIB, 7);
    store.put_stream("vod-raw/v4/incoming.mp4", body(&large, MIB), u64::MAX).await.unwrap();
    store.rename("vod-raw/v4/incoming.mp4", "vod-raw/v4/source.mp4").await.unwrap();
    let head = f.raw.head_object().bucket(f.bucket("vod-raw")).key("v4/source.mp4").send().await.unwrap();
    assert_eq!(head.metadata().and_then(|m| m.get("sha256")), Some(&sha256(&large)));
    assert_eq!(head.content_type(), Some("video/mp4"));
    let expected = StoredObject { size: large.len() as u64, sha256: sha256(&large) };
    assert_eq!(store.stat_sha256("vod-raw/v4/source.mp4").await.unwrap(), Some(expected));

    // Delete: gone; absent is fine.
    store.delete("live-streams/l4/chunks/1.ts").await.unwrap();
    assert!(!f.exists("live-streams/l4/chunks/1.ts").await.unwrap());
    store.delete("live-streams/l4/chunks/1.ts").await.unwrap();

    // put_file: small and multipart, typed by extension, and the file moved into the store.
    for (name, len) in [("index.m3u8", 2_000), ("seg_000.ts", 9 * MIB + 5)] {
        let file = scratch.path().join(name);
        let contents = data(len, len as u64);
        std::fs::write(&file, &contents).unwrap();
        let key = format!("vod-variants/v4/720p/{name}");
        store.put_file(&key, &file).await.unwrap();
        assert!(!file.exists(), "{name} moved into the store");
        assert_eq!(store.get_bytes(&key).await.unwrap().as_deref(), Some(&contents[..]));
        let expected = StoredObject { size: len as u64, sha256: sha256(&contents) };
        assert_eq!(store.stat_sha256(&key).await.unwrap(), Some(expected));
    }
    assert_eq!(
        f.content_type("vod-variants", "v4/720p/index.m3u8").await.as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(f.content_type("vod-variants", "v4/720p/seg_000.ts").await.as_deref(), Some("video/mp2t"));
    f.cleanup().await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn objects_from_outside_producers_are_hashed() {
    let f = Fixture::new().await;
    let bytes = data(1_000_000, 8);
    f.raw
        .put_object()
        .bucket(f.bucket("vod-raw"))
        .key("v5/source.mp4")
        .body(bytes.clone().into())
        .send()
        .await
        .unwrap();
    let expected = StoredObject { size: bytes.len() as u64, sha256: sha256(&bytes) };
    assert_eq!(f.store.stat_sha256("vod-raw/v5/source.mp4").await.unwrap(), Some(expected.clone()));

    // A hash tag that belongs to another ETag (a stale one) is not believed.
    f.raw
        .put_object()
        .bucket(f.bucket("vod-raw"))
        .key("v5/tagged.mp4")
        .tagging(format!("sha256={}&etag=0123456789abcdef0123456789abcdef-2", "0".repeat(64)))
        .body(bytes.clone().into())
        .send()
        .await
        .unwrap();
    assert_eq!(f.store.stat_sha256("vod-raw/v5/tagged.mp4").await.unwrap(), Some(expected));
    f.cleanup().await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn invalid_keys_are_refused() {
    let f = Fixture::new().await;
    let store = f.store.as_ref();
    for bad in ["../x", "live-streams/../x", "live-streams//x", "live-streams/.x", "/abs", "live-streams", "", "a/b c"]
    {
        let refused = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey(k)) if k == bad);
        assert!(refused(store.put_bytes(bad, Bytes::from_static(b"x")).await), "{bad}");
        assert!(refused(store.put_stream(bad, body(&Bytes::from_static(b"x"), 1), 10).await.map(drop)), "{bad}");
        assert!(refused(store.stat_sha256(bad).await.map(drop)), "{bad}");
        assert!(refused(store.get_bytes(bad).await.map(drop)), "{bad}");
        assert!(refused(store.playback(bad, Duration::from_secs(60)).await.map(drop)), "{bad}");
        assert!(refused(store.delete(bad).await), "{bad}");
        assert!(refused(store.presign_get(bad, Duration::from_secs(60)).await.map(drop)), "{bad}");
        assert!(refused(store.rename("live-streams/l6/a.ts", bad).await), "{bad}");
    }
    f.cleanup().await;
}

#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn a_server_that_is_down_fails_fast_naming_s3() {
    let started = Instant::now();
    let down = S3Settings { endpoint: "http://127.0.0.1:1".into(), ..settings() };
    let error = S3Store::connect(down).await.err().expect("nothing listens on port 1");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let message = error.to_string();
    assert!(message.contains("S3") && message.contains("http://127.0.0.1:1"), "{message}");
}

/// Stored media is write-once on S3 too (`If-None-Match: *` on PutObject, on completing a
/// multipart upload and on CopyObject): other bytes are refused however close two uploads race,
/// the same bytes again are a retry and taken; FFmpeg's output is still replaced.
#[tokio::test]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn stored_media_is_write_once_however_close_uploads_race() {
    let f = Fixture::new().await;
    let store = f.store.clone();
    for (name, len) in [("small.ts", 10_000), ("large.mp4", 9 * MIB)] {
        let key = format!("live-streams/w1/chunks/{name}");
        let (first, second) = (data(len, 1), data(len, 2));
        let stored = store.put_stream(&key, body(&first, MIB), u64::MAX).await.unwrap();
        let refused = store.put_stream(&key, body(&second, MIB), u64::MAX).await;
        assert!(matches!(&refused, Err(StoreError::Exists(_))), "{name}: {refused:?}");
        assert_eq!(store.put_stream(&key, body(&first, MIB), u64::MAX).await.unwrap(), stored, "{name}: a retry");
        assert_eq!(store.get_bytes(&key).await.unwrap(), Some(first), "{name}: the first bytes stay");
        assert_eq!(f.pending_uploads("live-streams", &format!("w1/chunks/{name}")).await, 0, "{name}");
    }
    for n in 0..10u64 {
        let key = format!("live-streams/w1/chunks/{n}.ts");
        let put = |seed: u64| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.put_stream(&key, body(&data(50_000, seed), 7_000), u64::MAX).await })
        };
        let (a, b) = (put(2 * n + 10), put(2 * n + 11));
        let results = [a.await.unwrap(), b.await.unwrap()];
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        assert_eq!(store.stat_sha256(&key).await.unwrap().as_ref(), Some(won[0]));
    }
    // A move onto a taken key is refused and leaves the source; with the same bytes it moves.
    store.put_stream("live-streams/w1/incoming/a.ts", body(&data(500, 3), 100), u64::MAX).await.unwrap();
    let refused = store.rename("live-streams/w1/incoming/a.ts", "live-streams/w1/chunks/small.ts").await;
    assert!(matches!(&refused, Err(StoreError::Exists(_))), "{refused:?}");
    assert!(f.exists("live-streams/w1/incoming/a.ts").await.unwrap());
    store.put_stream("live-streams/w1/incoming/b.ts", body(&data(10_000, 1), 100), u64::MAX).await.unwrap();
    store.rename("live-streams/w1/incoming/b.ts", "live-streams/w1/chunks/small.ts").await.unwrap();
    assert!(!f.exists("live-streams/w1/incoming/b.ts").await.unwrap());
    // FFmpeg's files are segflow's own: a job run again replaces them.
    let scratch = tempfile::tempdir().unwrap();
    for seed in [4, 5] {
        let file = scratch.path().join("seg_000.ts");
        std::fs::write(&file, data(1_000, seed)).unwrap();
        store.put_file("vod-variants/w1/720p/seg_000.ts", &file).await.unwrap();
        assert_eq!(store.get_bytes("vod-variants/w1/720p/seg_000.ts").await.unwrap(), Some(data(1_000, seed)));
    }
    f.cleanup().await;
}
