//! The shared object store: S3 or MinIO, for cluster mode and for deployments that keep segments
//! and VOD files in buckets, with presigned URLs that players fetch directly.
//!
//! A key `{bucket}/{rest}` is the object `{rest}` in the bucket `{bucket_prefix}{bucket}`. Every
//! object segflow writes records its SHA-256, so `stat_sha256` costs a HEAD instead of a
//! download: as user metadata (`x-amz-meta-sha256`) on single-request uploads; on multipart
//! uploads, whose metadata is fixed before the bytes are hashed, as the object tags `sha256` and
//! `etag` written after completion. A tag is trusted only while the object's ETag still equals
//! the tagged one, so an overwrite racing the tagging can never inherit a stale hash.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    Delete, ObjectIdentifier, Tag, Tagging,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ByteStream, ObjectStore, Playback, StoreError, StoredObject, content_type, io, same_bytes_or_exists};
use crate::model::checks::{validate_file_name, validate_sha256_hex};
use crate::model::keys::bucket;

const BACKEND: &str = "S3";
/// Size of a multipart upload's parts, and the most an upload holds in memory.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// User metadata and tag name of the recorded SHA-256.
const SHA256: &str = "sha256";
/// Tag name of the ETag the `sha256` tag belongs to.
const ETAG: &str = "etag";
/// A server that is down refuses or times out within this, per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One request, an 8 MiB part included, answers within this (streamed bodies are not counted).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);
/// `connect` gives up after this, retries included.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
/// Read size when streaming a local file up.
const FILE_CHUNK: usize = 1024 * 1024;

/// How to reach the server. `Debug` never prints the secret key.
#[derive(Clone)]
pub struct S3Settings {
    /// Where segflow reaches the server, e.g. `http://minio:9000`.
    pub endpoint: String,
    /// Where viewers reach it (e.g. `http://localhost:9000`): presigned URLs use this host.
    /// `None`: the same as `endpoint`.
    pub public_endpoint: Option<String>,
    pub access_key: String,
    pub secret_key: String,
    /// `us-east-1` by default (MinIO's default too).
    pub region: String,
    /// Prepended to every bucket name (lowercase letters, digits, `-`, `.`); empty by default.
    pub bucket_prefix: String,
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            endpoint: String::new(),
            public_endpoint: None,
            access_key: String::new(),
            secret_key: String::new(),
            region: "us-east-1".into(),
            bucket_prefix: String::new(),
        }
    }
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("public_endpoint", &self.public_endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("region", &self.region)
            .field("bucket_prefix", &self.bucket_prefix)
            .finish()
    }
}

pub struct S3Store {
    client: Client,
    /// Signs URLs for viewers, on the public endpoint; never sends a request.
    presigner: Client,
    endpoint: String,
    region: String,
    bucket_prefix: String,
}

/// An upload's bytes, from a request body or a local file.
type Chunks = BoxStream<'static, Result<Bytes, StoreError>>;

impl S3Store {
    /// Builds the clients and creates the four buckets when missing. A server that is down
    /// fails this within seconds, with an error naming S3 and the endpoint.
    pub async fn connect(settings: S3Settings) -> Result<S3Store, StoreError> {
        validate_bucket_prefix(&settings.bucket_prefix)?;
        let client = client(&settings, &settings.endpoint);
        let presigner = match &settings.public_endpoint {
            Some(public) => self::client(&settings, public),
            None => client.clone(),
        };
        let store = S3Store {
            client,
            presigner,
            endpoint: settings.endpoint.clone(),
            region: settings.region.clone(),
            bucket_prefix: settings.bucket_prefix.clone(),
        };
        let buckets = async {
            for name in bucket::ALL {
                store.ensure_bucket(name).await?;
            }
            Ok(())
        };
        match tokio::time::timeout(STARTUP_TIMEOUT, buckets).await {
            Ok(created) => created.map(|()| store),
            Err(_) => Err(backend(
                &settings.endpoint,
                format!("S3 at {} did not answer within {STARTUP_TIMEOUT:?}", settings.endpoint),
            )),
        }
    }

    /// The bucket name behind a key's first component, e.g. `vod-raw` -> `{prefix}vod-raw`.
    pub fn bucket_name(&self, bucket: &str) -> String {
        format!("{}{bucket}", self.bucket_prefix)
    }

    /// Splits a key into bucket and object name; every component is checked as on the local
    /// store, and a key needs a bucket and a name.
    fn locate<'k>(&self, key: &'k str) -> Result<(String, &'k str), StoreError> {
        let invalid = || StoreError::InvalidKey(key.to_string());
        key.split('/').try_for_each(validate_file_name).map_err(|_| invalid())?;
        let (bucket, object) = key.split_once('/').ok_or_else(invalid)?;
        Ok((self.bucket_name(bucket), object))
    }

    async fn ensure_bucket(&self, name: &str) -> Result<(), StoreError> {
        let bucket = self.bucket_name(name);
        match self.client.head_bucket().bucket(&bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => {}
            Err(e) => return Err(self.unreachable(&bucket, e)),
        }
        let mut create = self.client.create_bucket().bucket(&bucket);
        if self.region != "us-east-1" {
            // us-east-1 is the one region S3 wants no location constraint for.
            let location = BucketLocationConstraint::from(self.region.as_str());
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder().location_constraint(location).build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()) =>
            {
                Ok(()) // another process created it meanwhile
            }
            Err(e) => Err(self.unreachable(&bucket, e)),
        }
    }

    /// An error of a start-up or health request, naming the endpoint.
    fn unreachable<E: std::error::Error + Send + Sync + 'static>(&self, bucket: &str, e: SdkError<E>) -> StoreError {
        let message = match e.raw_response().map(|r| r.status().as_u16()) {
            Some(403) => {
                format!("S3 at {} refused the credentials (HTTP 403; check the access and secret key)", self.endpoint)
            }
            _ => format!("cannot use S3 at {}: {}", self.endpoint, DisplayErrorContext(&e)),
        };
        StoreError::Backend { backend: BACKEND, key: bucket.to_string(), message, source: Some(Box::new(e)) }
    }

    async fn head(&self, key: &str, bucket: &str, object: &str) -> Result<Option<HeadObjectOutput>, StoreError> {
        match self.client.head_object().bucket(bucket).key(object).send().await {
            Ok(head) => Ok(Some(head)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(caused(key, e)),
        }
    }

    /// The SHA-256 segflow recorded for an object: its metadata, or its tags while they belong
    /// to the object's current ETag. The flag tells whether it came from the tags.
    async fn recorded_sha256(&self, bucket: &str, object: &str, head: &HeadObjectOutput) -> Option<(String, bool)> {
        if let Some(sha) = head.metadata().and_then(|m| m.get(SHA256)).filter(|s| validate_sha256_hex(s).is_ok()) {
            return Some((sha.to_ascii_lowercase(), false));
        }
        let etag = unquote(head.e_tag()?);
        // Any failure here (a store without tagging, say) falls back to hashing the bytes.
        let tags = self.client.get_object_tagging().bucket(bucket).key(object).send().await.ok()?;
        let tag = |name: &str| tags.tag_set().iter().find(|t| t.key() == name).map(|t| t.value());
        match (tag(SHA256), tag(ETAG)) {
            (Some(sha), Some(tagged)) if unquote(tagged) == etag && validate_sha256_hex(sha).is_ok() => {
                Some((sha.to_ascii_lowercase(), true))
            }
            _ => None,
        }
    }

    /// Downloads and hashes an object (one written by an outside producer); `None` if absent.
    async fn hash_object(&self, key: &str, bucket: &str, object: &str) -> Result<Option<StoredObject>, StoreError> {
        let mut body = match self.client.get_object().bucket(bucket).key(object).send().await {
            Ok(got) => got.body,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(caused(key, e)),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| caused(key, e))? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Some(StoredObject { size, sha256: hex::encode(hasher.finalize()) }))
    }

    /// Streams `body` up: one `PutObject` when it fits in a part, else a multipart upload that is
    /// aborted on any error, so a refused upload leaves nothing behind.
    async fn upload(
        &self,
        key: &str,
        mut body: Chunks,
        max_bytes: u64,
        write: Write,
    ) -> Result<StoredObject, StoreError> {
        let write_once = write == Write::Once;
        // `If-None-Match: *`: the server refuses the write when the key holds an object.
        let if_none_match = write_once.then(|| "*".to_string());
        let (bucket, object) = self.locate(key)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buffer = BytesMut::new();
        let mut multipart: Option<Multipart> = None;
        let uploaded = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(StoreError::TooLarge(max_bytes));
                }
                hasher.update(&chunk);
                buffer.extend_from_slice(&chunk);
                // Strictly more than a part: a body of exactly one part stays a single put.
                while buffer.len() > PART_SIZE {
                    let part = buffer.split_to(PART_SIZE).freeze();
                    if multipart.is_none() {
                        multipart = Some(self.start_multipart(key, &bucket, object).await?);
                    }
                    if let Some(upload) = &mut multipart {
                        upload.upload_part(key, part).await?;
                    }
                }
            }
            if size == 0 && write_once {
                return Err(StoreError::Empty);
            }
            let sha256 = hex::encode(hasher.finalize_reset());
            let taken = match &mut multipart {
                None => {
                    let put = self
                        .client
                        .put_object()
                        .bucket(&bucket)
                        .key(object)
                        .content_type(content_type(key))
                        .metadata(SHA256, &sha256)
                        .set_if_none_match(if_none_match)
                        .body(S3Body::from(buffer.split().freeze()))
                        .send()
                        .await;
                    match put {
                        Err(e) if is_taken(&e) => true,
                        put => put.map(|_| false).map_err(|e| caused(key, e))?,
                    }
                }
                Some(upload) => {
                    upload.upload_part(key, buffer.split().freeze()).await?;
                    match upload.complete(key, if_none_match).await? {
                        Completed::Taken => true,
                        Completed::Stored(etag) => {
                            self.tag_sha256(key, &bucket, object, &sha256, etag.as_deref()).await;
                            false
                        }
                    }
                }
            };
            let ours = StoredObject { size, sha256 };
            if taken {
                same_bytes_or_exists(key, self.stat_sha256(key).await?, &ours)?;
            }
            Ok(ours)
        }
        .await;
        if let Some(upload) = multipart {
            upload.abort().await; // unless completed: refused, or the key was taken
        }
        uploaded
    }

    async fn start_multipart(&self, key: &str, bucket: &str, object: &str) -> Result<Multipart, StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(object)
            .content_type(content_type(key))
            // Declared, so S3 and MinIO agree on the parts' checksums (see `Multipart`).
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| caused(key, e))?;
        Multipart::created(&self.client, key, bucket, object, &created)
    }

    /// Size and SHA-256 of the object `head` describes: the hash segflow recorded, else the
    /// bytes hashed; `None` if it went away meanwhile.
    async fn stored(
        &self,
        key: &str,
        bucket: &str,
        object: &str,
        head: &HeadObjectOutput,
    ) -> Result<Option<StoredObject>, StoreError> {
        match self.recorded_sha256(bucket, object, head).await {
            Some((sha256, _)) => {
                Ok(Some(StoredObject { size: head.content_length().unwrap_or(0).max(0) as u64, sha256 }))
            }
            None => self.hash_object(key, bucket, object).await,
        }
    }

    /// Records a multipart object's SHA-256 as tags bound to its ETag. Best effort: without
    /// them `stat_sha256` hashes the bytes, so a failure only costs time later.
    async fn tag_sha256(&self, key: &str, bucket: &str, object: &str, sha256: &str, etag: Option<&str>) {
        let Some(etag) = etag else {
            tracing::warn!(key, "CompleteMultipartUpload answered no ETag; SHA-256 not recorded");
            return;
        };
        let tagging = [(SHA256, sha256), (ETAG, unquote(etag))]
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .and_then(|tags| Tagging::builder().set_tag_set(Some(tags)).build());
        let tagged = match tagging {
            Ok(tagging) => self
                .client
                .put_object_tagging()
                .bucket(bucket)
                .key(object)
                .tagging(tagging)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(&e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = tagged {
            tracing::warn!(key, %error, "recording the SHA-256 tag failed; stat_sha256 will hash the object");
        }
    }

    fn not_found(key: &str) -> StoreError {
        StoreError::NotFound(key.to_string())
    }

    /// A SigV4 presigned GET on the public endpoint; signing sends no request.
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        self.presign_get_as(key, ttl, None).await
    }

    /// [`Self::presign_get`], answered with `disposition` as its `Content-Disposition`.
    async fn presign_get_as(
        &self,
        key: &str,
        ttl: Duration,
        disposition: Option<String>,
    ) -> Result<String, StoreError> {
        let (bucket, object) = self.locate(key)?;
        let config =
            PresigningConfig::expires_in(ttl).map_err(|e| backend(key, format!("cannot presign for {ttl:?}: {e}")))?;
        let presigned = self
            .presigner
            .get_object()
            .bucket(bucket)
            .key(object)
            .set_response_content_disposition(disposition)
            .presigned(config)
            .await
            .map_err(|e| caused(key, e))?;
        Ok(presigned.uri().to_string())
    }
}

/// A multipart upload in progress. Its CRC32 is declared at creation, sent with every part and
/// listed again on completion, as S3 requires of an upload created with an algorithm (left to
/// the SDK's defaults, S3-compatible servers disagree on what completion must list). Dropped
/// unfinished (a cancelled request), it aborts itself in the background, so no invisible parts
/// stay on the server.
struct Multipart {
    client: Client,
    bucket: String,
    object: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    finished: bool,
}

impl Multipart {
    /// The upload CreateMultipartUpload answered for `key`.
    fn created(
        client: &Client,
        key: &str,
        bucket: &str,
        object: &str,
        created: &CreateMultipartUploadOutput,
    ) -> Result<Multipart, StoreError> {
        let upload_id =
            created.upload_id().ok_or_else(|| backend(key, "CreateMultipartUpload answered no upload id"))?.to_string();
        Ok(Multipart {
            client: client.clone(),
            bucket: bucket.to_string(),
            object: object.to_string(),
            upload_id,
            parts: Vec::new(),
            finished: false,
        })
    }

    async fn upload_part(&mut self, key: &str, part: Bytes) -> Result<(), StoreError> {
        let number = self.parts.len() as i32 + 1;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.object)
            .upload_id(&self.upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(S3Body::from(part))
            .send()
            .await
            .map_err(|e| caused(key, e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded.e_tag().map(String::from))
                .set_checksum_crc32(uploaded.checksum_crc32().map(String::from))
                .build(),
        );
        Ok(())
    }

    /// Adds the object `source` (`bucket/key`, URL-encoded) as the next part, if its ETag is
    /// still `if_match`.
    async fn copy_part(&mut self, key: &str, source: String, if_match: Option<String>) -> Result<(), StoreError> {
        let number = self.parts.len() as i32 + 1;
        let copied = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(&self.object)
            .upload_id(&self.upload_id)
            .part_number(number)
            .copy_source(source)
            .set_copy_source_if_match(if_match)
            .send()
            .await
            .map_err(|e| caused(key, e))?;
        let etag = copied.copy_part_result().and_then(|r| r.e_tag()).map(String::from);
        self.parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
        Ok(())
    }

    /// Completes the upload (unless the key holds an object, with `if_none_match` of `*`).
    async fn complete(&mut self, key: &str, if_none_match: Option<String>) -> Result<Completed, StoreError> {
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.object)
            .upload_id(&self.upload_id)
            .multipart_upload(parts)
            .set_if_none_match(if_none_match)
            .send()
            .await;
        match completed {
            Err(e) if is_taken(&e) => Ok(Completed::Taken), // the caller aborts the upload
            completed => {
                let completed = completed.map_err(|e| caused(key, e))?;
                self.finished = true;
                Ok(Completed::Stored(completed.e_tag().map(String::from)))
            }
        }
    }

    async fn abort(mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let aborted = self.abort_request().send().await;
        if let Err(e) = aborted {
            let error = DisplayErrorContext(&e);
            tracing::warn!(bucket = self.bucket, object = self.object, %error, "aborting a multipart upload failed");
        }
    }

    fn abort_request(
        &self,
    ) -> aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder {
        self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.object).upload_id(&self.upload_id)
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if !self.finished
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let request = self.abort_request();
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let (bucket, object) = self.locate(key)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        self.client
            .put_object()
            .bucket(bucket)
            .key(object)
            .content_type(content_type(key))
            .metadata(SHA256, sha256)
            .body(S3Body::from(bytes))
            .send()
            .await
            .map_err(|e| caused(key, e))?;
        Ok(())
    }

    async fn put_stream(&self, key: &str, body: ByteStream, max_bytes: u64) -> Result<StoredObject, StoreError> {
        let chunks = body.map(|chunk| chunk.map_err(StoreError::Upload)).boxed();
        self.upload(key, chunks, max_bytes, Write::Once).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let (bucket, object) = self.locate(key)?;
        Ok(self.head(key, &bucket, object).await?.is_some())
    }

    async fn stat_sha256(&self, key: &str) -> Result<Option<StoredObject>, StoreError> {
        let (bucket, object) = self.locate(key)?;
        let Some(head) = self.head(key, &bucket, object).await? else {
            return Ok(None);
        };
        self.stored(key, &bucket, object, &head).await
    }

    /// A server-side copy onto a write-once key, then a delete of the source. MinIO ignores
    /// `If-None-Match` on CopyObject, so the copy is one part of a multipart upload, whose
    /// completion it does check. Objects up to 5 GiB (a part's limit): this moves live segments.
    async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (from_bucket, from_object) = self.locate(from)?;
        let (to_bucket, to_object) = self.locate(to)?;
        let head = self.head(from, &from_bucket, from_object).await?.ok_or_else(|| Self::not_found(from))?;
        if from == to {
            return Ok(()); // there is nothing to move
        }
        let ours = self.stored(from, &from_bucket, from_object, &head).await?.ok_or_else(|| Self::not_found(from))?;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&to_bucket)
            .key(to_object)
            .set_content_type(head.content_type().map(String::from))
            .metadata(SHA256, &ours.sha256)
            .send()
            .await
            .map_err(|e| caused(to, e))?;
        let mut upload = Multipart::created(&self.client, to, &to_bucket, to_object, &created)?;
        let source = url_encode(&format!("{from_bucket}/{from_object}"));
        // The bytes copied are the ones the hash above was read for.
        let completed = async {
            upload.copy_part(to, source, head.e_tag().map(String::from)).await?;
            upload.complete(to, Some("*".into())).await
        }
        .await;
        upload.abort().await; // unless completed
        if let Completed::Taken = completed? {
            same_bytes_or_exists(to, self.stat_sha256(to).await?, &ours)?;
        }
        self.delete(from).await
    }

    /// Streams the file up (multipart over 8 MiB), then removes it: it moved into the store, as
    /// on the local store.
    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        self.put_copy(key, file).await?;
        if let Err(error) = tokio::fs::remove_file(file).await {
            tracing::warn!(key, file = %file.display(), %error, "removing a stored file failed");
        }
        Ok(())
    }

    async fn put_copy(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        let opened = tokio::fs::File::open(file).await.map_err(io(key))?;
        self.upload(key, file_chunks(opened, key.to_string()), u64::MAX, Write::Replace).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (bucket, object) = self.locate(key)?;
        match self.client.delete_object().bucket(bucket).key(object).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(caused(key, e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let folder = prefix.strip_suffix('/').ok_or_else(|| StoreError::InvalidKey(prefix.to_string()))?;
        let (bucket, object_prefix) = self.locate(folder)?;
        let object_prefix = format!("{object_prefix}/");
        let mut deleted = 0;
        // Each round lists what is left (at most 1,000, DeleteObjects' limit) and deletes it.
        loop {
            let listed = self
                .client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix(&object_prefix)
                .send()
                .await
                .map_err(|e| caused(prefix, e))?;
            let objects: Vec<ObjectIdentifier> = listed
                .contents()
                .iter()
                .filter_map(|o| ObjectIdentifier::builder().set_key(o.key().map(str::to_string)).build().ok())
                .collect();
            if objects.is_empty() {
                return Ok(deleted);
            }
            let count = objects.len() as u64;
            let batch =
                Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|e| caused(prefix, e))?;
            let result = self
                .client
                .delete_objects()
                .bucket(&bucket)
                .delete(batch)
                .send()
                .await
                .map_err(|e| caused(prefix, e))?;
            if let Some(failed) = result.errors().first() {
                let message = format!(
                    "deleting {} failed: {}",
                    failed.key().unwrap_or_default(),
                    failed.message().unwrap_or_default()
                );
                return Err(StoreError::Backend { backend: BACKEND, key: prefix.to_string(), message, source: None });
            }
            deleted += count;
        }
    }

    /// Downloads into `scratch/<last key component>` (through a temporary name, so the file is
    /// whole when it appears).
    async fn read_path(&self, key: &str, scratch: &Path) -> Result<PathBuf, StoreError> {
        let (bucket, object) = self.locate(key)?;
        let name = key.rsplit('/').next().unwrap_or(key);
        let mut body = match self.client.get_object().bucket(bucket).key(object).send().await {
            Ok(got) => got.body,
            Err(e) if is_not_found(&e) => return Err(Self::not_found(key)),
            Err(e) => return Err(caused(key, e)),
        };
        tokio::fs::create_dir_all(scratch).await.map_err(io(key))?;
        let path = scratch.join(name);
        let tmp = scratch.join(format!("{name}.tmp-{:016x}", rand::random::<u64>()));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io(key))?;
            while let Some(chunk) = body.try_next().await.map_err(|e| caused(key, e))? {
                file.write_all(&chunk).await.map_err(io(key))?;
            }
            file.flush().await.map_err(io(key))?;
            drop(file);
            tokio::fs::rename(&tmp, &path).await.map_err(io(key))
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        written.map(|()| path)
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let (bucket, object) = self.locate(key)?;
        let got = match self.client.get_object().bucket(bucket).key(object).send().await {
            Ok(got) => got,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(caused(key, e)),
        };
        let bytes = got.body.collect().await.map_err(|e| caused(key, e))?;
        Ok(Some(bytes.into_bytes()))
    }

    /// A presigned URL: the bytes go from the server to the player directly.
    async fn playback(&self, key: &str, ttl: Duration) -> Result<Playback, StoreError> {
        self.presign_get(key, ttl).await.map(Playback::Redirect)
    }

    async fn download(&self, key: &str, ttl: Duration, file_name: &str) -> Result<Playback, StoreError> {
        let disposition = super::attachment(file_name);
        self.presign_get_as(key, ttl, Some(disposition)).await.map(Playback::Redirect)
    }

    async fn health(&self) -> Result<(), StoreError> {
        let bucket = self.bucket_name(bucket::LIVE_STREAMS);
        match tokio::time::timeout(HEALTH_TIMEOUT, self.client.head_bucket().bucket(&bucket).send()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.unreachable(&bucket, e)),
            Err(_) => {
                Err(backend(&bucket, format!("S3 at {} did not answer within {HEALTH_TIMEOUT:?}", self.endpoint)))
            }
        }
    }
}

fn client(settings: &S3Settings, endpoint: &str) -> Client {
    let credentials = Credentials::new(&settings.access_key, &settings.secret_key, None, None, "segflow");
    let timeouts =
        TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_attempt_timeout(ATTEMPT_TIMEOUT).build();
    let config = aws_sdk_s3::Config::builder()
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .region(Region::new(settings.region.clone()))
        // MinIO serves `host/bucket/key`, not `bucket.host/key`.
        .force_path_style(true)
        .timeout_config(timeouts)
        .build();
    Client::from_conf(config)
}

/// Bucket names allow lowercase letters, digits, `-` and `.`, at most 63 in all.
fn validate_bucket_prefix(prefix: &str) -> Result<(), StoreError> {
    let longest = bucket::ALL.iter().map(|b| b.len()).max().unwrap_or(0);
    let ok = prefix.len() + longest <= 63
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !prefix.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        let most = 63 - longest;
        Err(backend(
            prefix,
            format!("invalid bucket prefix: use at most {most} lowercase letters, digits, '-' and '.'"),
        ))
    }
}

/// `CopySource` is `bucket/key`, URL-encoded except for the slashes.
fn url_encode(source: &str) -> String {
    let mut encoded = String::with_capacity(source.len());
    for b in source.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn backend(key: &str, message: impl Into<String>) -> StoreError {
    StoreError::Backend { backend: BACKEND, key: key.to_string(), message: message.into(), source: None }
}

/// An error on `key` with its cause, whose whole chain the message spells out.
fn caused(key: &str, e: impl Error + Send + Sync + 'static) -> StoreError {
    let message = DisplayErrorContext(&e).to_string();
    StoreError::Backend { backend: BACKEND, key: key.to_string(), message, source: Some(Box::new(e)) }
}

/// A write refused by `If-None-Match: *` because the key holds an object (412), or because
/// another conditional write to it is in progress (409).
fn is_taken<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    let code = e.as_service_error().and_then(|e| e.code());
    matches!(code, Some("PreconditionFailed" | "ConditionalRequestConflict"))
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
}

/// What completing a multipart upload did.
enum Completed {
    /// Stored; the object's ETag.
    Stored(Option<String>),
    /// Refused: the key holds an object already.
    Taken,
}

/// Whether an upload may replace what a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    /// Media from outside: never replaced, and never empty.
    Once,
    /// segflow's own output (FFmpeg's files), written again when a job runs again.
    Replace,
}

/// A missing object (`NoSuchKey`, or a bodiless 404 on HEAD); a missing bucket is a failure.
fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match e.as_service_error().and_then(|e| e.code()) {
        Some(code) => matches!(code, "NoSuchKey" | "NotFound"),
        None => e.raw_response().is_some_and(|r| r.status().as_u16() == 404),
    }
}

/// A local file as upload chunks.
fn file_chunks(file: tokio::fs::File, key: String) -> Chunks {
    futures_util::stream::try_unfold(file, move |mut file| {
        let key = key.clone();
        async move {
            let mut chunk = BytesMut::with_capacity(FILE_CHUNK);
            let read = file.read_buf(&mut chunk).await.map_err(io(&key))?;
            Ok((read > 0).then(|| (chunk.freeze(), file)))
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_and_copy_sources() {
        assert_eq!(content_type("manifests/v/vod_manifest.m3u8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("live-streams/l/seg_00001.ts"), "video/mp2t");
        assert_eq!(content_type("vod-variants/v/720p/init.mp4"), "video/mp4");
        assert_eq!(content_type("vod-raw/v/source"), "application/octet-stream");
        assert_eq!(url_encode("t1-live-streams/a b/x+y.ts"), "t1-live-streams/a%20b/x%2By.ts");
    }

    #[test]
    fn debug_hides_the_secret() {
        let settings = S3Settings { secret_key: "hunter2".into(), ..S3Settings::default() };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn bucket_prefixes_are_checked() {
        assert!(validate_bucket_prefix("").is_ok());
        assert!(validate_bucket_prefix("test-1a2b-").is_ok());
        assert!(validate_bucket_prefix("Upper_").is_err());
        assert!(validate_bucket_prefix(&"x".repeat(60)).is_err());
    }
}
