//! The default object store: a directory tree under the data dir, one folder per bucket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{ByteStream, ObjectStore, Playback, Rewrite, StoreError, StoredObject, io, same_bytes_or_exists, task};
use crate::files::{self, temp_path};

pub struct LocalStore {
    root: PathBuf,
    /// Per rewritten object (a live playlist), the spare file its next version goes into.
    next_spare: Mutex<HashMap<PathBuf, usize>>,
}

/// Spare files behind each rewritten object: a reader that opened one version reads whole
/// bytes until this many more rewrites.
const SPARES: usize = 3;

impl LocalStore {
    /// Moves `file` (or with `keep`, links it) to `key`, durably: the work area is on the data
    /// dir's file system; a file elsewhere is copied.
    async fn store_file(&self, key: &str, file: &Path, keep: bool) -> Result<(), StoreError> {
        let (from, to) = (file.to_path_buf(), self.path(key)?);
        let stored = tokio::task::spawn_blocking(move || {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::open(&from)?.sync_all()?;
            if !keep && std::fs::rename(&from, &to).is_ok() {
                return Ok(());
            }
            let tmp = temp_path(&to);
            if std::fs::hard_link(&from, &tmp).is_err() {
                std::fs::copy(&from, &tmp)?;
                std::fs::File::open(&tmp)?.sync_all()?;
            }
            std::fs::rename(&tmp, &to)
        })
        .await
        .map_err(task(key))?;
        stored.map_err(io(key))
    }

    pub fn new(root: &Path) -> std::io::Result<LocalStore> {
        std::fs::create_dir_all(root)?;
        Ok(LocalStore { root: root.to_path_buf(), next_spare: Mutex::default() })
    }

    /// Maps a key onto a path below the root; every component is checked, so no key escapes.
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let mut path = self.root.clone();
        for part in key.split('/') {
            crate::model::checks::validate_file_name(part).map_err(|_| StoreError::InvalidKey(key.to_string()))?;
            path.push(part);
        }
        Ok(path)
    }
}

/// A refused or deleted object leaves no empty directory behind (a non-empty one stays).
async fn remove_empty_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let _ = tokio::fs::remove_dir(parent).await;
    }
}

/// Files below `dir`, at any depth (0 if it is absent).
fn walkdir_count(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => walkdir_count(&entry.path()),
            _ => 1,
        })
        .sum()
}

/// Runs file work that blocks on this thread where the runtime allows it (the playlist writer's
/// own thread; a runtime thread first hands its other tasks to another), else on the blocking
/// pool: a rewrite is a few system calls, shorter than the wait for a pool thread.
async fn blocking<T: Send + 'static>(key: &str, work: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return Ok(tokio::task::block_in_place(work));
    }
    tokio::task::spawn_blocking(work).await.map_err(task(key))
}

async fn create_parent(path: &Path, key: &str) -> Result<(), StoreError> {
    match path.parent() {
        Some(parent) => tokio::fs::create_dir_all(parent).await.map_err(io(key)),
        None => Ok(()),
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        // One trip to the blocking pool for the whole write.
        let written = tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            files::replace(&path, &bytes)
        })
        .await
        .map_err(task(key))?;
        written.map_err(io(key))
    }

    /// All in one blocking call: each is a few system calls on cached pages.
    async fn rewrite_all(&self, rewrites: Vec<Rewrite>) -> Result<(), StoreError> {
        let mut planned = Vec::with_capacity(rewrites.len());
        {
            let mut next = self.next_spare.lock().unwrap_or_else(|e| e.into_inner());
            for rewrite in rewrites {
                let path = self.path(&rewrite.key)?;
                let spare = if rewrite.last { next.remove(&path) } else { next.get(&path).copied() }.unwrap_or(0);
                if !rewrite.last {
                    next.insert(path.clone(), (spare + 1) % SPARES);
                }
                planned.push((path, spare, rewrite));
            }
        }
        let first_key = planned.first().map(|(_, _, r)| r.key.clone()).unwrap_or_default();
        blocking(&first_key, move || {
            for (path, spare, rewrite) in planned {
                files::swap_in(&path, SPARES, spare, &rewrite.bytes).map_err(io(&rewrite.key))?;
                if rewrite.last {
                    files::drop_spares(&path, SPARES).map_err(io(&rewrite.key))?;
                }
            }
            Ok(())
        })
        .await?
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream, max_bytes: u64) -> Result<StoredObject, StoreError> {
        let path = self.path(key)?;
        create_parent(&path, key).await?;
        let tmp = temp_path(&path);
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io(key))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let result = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StoreError::Upload)?;
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(StoreError::TooLarge(max_bytes));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io(key))?;
            }
            if size == 0 {
                return Err(StoreError::Empty);
            }
            file.sync_data().await.map_err(io(key))
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            remove_empty_parent(&path).await;
            return Err(e);
        }
        let ours = StoredObject { size, sha256: hex::encode(hasher.finalize()) };
        let moved = tokio::task::spawn_blocking(move || {
            let moved = files::rename_new(&tmp, &path);
            if !matches!(moved, Ok(true)) {
                let _ = std::fs::remove_file(&tmp);
            }
            moved
        });
        if !moved.await.map_err(task(key))?.map_err(io(key))? {
            same_bytes_or_exists(key, self.stat_sha256(key).await?, &ours)?;
        }
        Ok(ours)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        tokio::fs::try_exists(self.path(key)?).await.map_err(io(key))
    }

    async fn stat_sha256(&self, key: &str) -> Result<Option<StoredObject>, StoreError> {
        let path = self.path(key)?;
        // One trip to the blocking pool: open, read and hash there.
        let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<Option<StoredObject>> {
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut hasher = Sha256::new();
            let size = std::io::copy(&mut file, &mut hasher)?;
            Ok(Some(StoredObject { size, sha256: hex::encode(hasher.finalize()) }))
        })
        .await
        .map_err(task(key))?;
        hashed.map_err(io(key))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (from_path, to_path) = (self.path(from)?, self.path(to)?);
        create_parent(&to_path, to).await?;
        let moved = tokio::task::spawn_blocking(move || files::rename_new(&from_path, &to_path));
        if !moved.await.map_err(task(from))?.map_err(io(from))? {
            let ours = self.stat_sha256(from).await?.ok_or_else(|| StoreError::NotFound(from.to_string()))?;
            same_bytes_or_exists(to, self.stat_sha256(to).await?, &ours)?;
            self.delete(from).await?;
        }
        Ok(())
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        self.store_file(key, file, false).await
    }

    async fn put_copy(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        self.store_file(key, file, true).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(key)(e)),
            _ => {
                remove_empty_parent(&path).await;
                Ok(())
            }
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let dir = self.path(prefix.strip_suffix('/').ok_or_else(|| StoreError::InvalidKey(prefix.to_string()))?)?;
        let key = prefix.to_string();
        blocking(prefix, move || {
            let count = walkdir_count(&dir);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&key)(e)),
                _ => Ok(count),
            }
        })
        .await?
    }

    async fn read_path(&self, key: &str, _scratch: &Path) -> Result<PathBuf, StoreError> {
        self.path(key)
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(bytes) => Ok(Some(bytes.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(key)(e)),
        }
    }

    /// Served by the API from the file, behind its own signed URLs.
    async fn playback(&self, key: &str, _ttl: Duration) -> Result<Playback, StoreError> {
        self.path(key).map(Playback::File)
    }

    async fn health(&self) -> Result<(), StoreError> {
        tokio::fs::metadata(&self.root).await.map(|_| ()).map_err(io(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()).boxed()
    }

    #[tokio::test]
    async fn streams_hashes_and_refuses_bad_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let stored = store.put_stream("b/s/x.ts", body(&[b"hello ", b"world"]), 100).await.unwrap();
        assert_eq!(stored.size, 11);
        // sha256("hello world")
        assert_eq!(stored.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(store.stat_sha256("b/s/x.ts").await.unwrap(), Some(stored));

        assert!(matches!(store.put_stream("b/s/y.ts", body(&[b"0123456789"]), 5).await, Err(StoreError::TooLarge(5))));
        assert!(matches!(store.put_stream("b/s/z.ts", body(&[]), 5).await, Err(StoreError::Empty)));
        let left: Vec<_> = std::fs::read_dir(dir.path().join("b/s")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("x.ts")], "failed uploads leave nothing behind");

        for bad in ["../x", "b/../../x", "b//x", "b/.x", "/abs"] {
            let refused = store.playback(bad, Duration::from_secs(1)).await;
            assert!(matches!(refused, Err(StoreError::InvalidKey(_))), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_media_is_write_once_however_close_uploads_race() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(dir.path()).unwrap());
        let first = store.put_stream("b/s/0.ts", body(&[b"first"]), 100).await.unwrap();
        assert!(matches!(store.put_stream("b/s/0.ts", body(&[b"second"]), 100).await, Err(StoreError::Exists(_))));
        assert_eq!(store.put_stream("b/s/0.ts", body(&[b"first"]), 100).await.unwrap(), first, "a retry is taken");
        // Pairs of different uploads to one key at once: one wins, the other is refused, and
        // the stored bytes are the winner's.
        for n in 0..20 {
            let key = format!("b/race/{n}.ts");
            let put = |bytes: &'static [u8]| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move { store.put_stream(&key, body(&[bytes]), 100).await })
            };
            let (a, b) = (put(b"bytes a"), put(b"bytes b"));
            let results = [a.await.unwrap(), b.await.unwrap()];
            let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(won.len(), 1, "{results:?}");
            assert_eq!(store.stat_sha256(&key).await.unwrap().as_ref(), Some(won[0]));
        }
        // A move onto a taken key is refused the same way, and leaves the source.
        store.put_stream("b/in/a.ts", body(&[b"other"]), 100).await.unwrap();
        assert!(matches!(store.rename("b/in/a.ts", "b/s/0.ts").await, Err(StoreError::Exists(_))));
        assert!(store.stat_sha256("b/in/a.ts").await.unwrap().is_some());
        store.put_stream("b/in/b.ts", body(&[b"first"]), 100).await.unwrap();
        store.rename("b/in/b.ts", "b/s/0.ts").await.unwrap();
        assert_eq!(store.stat_sha256("b/in/b.ts").await.unwrap(), None, "the same bytes: moved");
    }

    #[tokio::test]
    async fn rewrites_swap_spares_in_place_and_the_last_one_drops_them() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let key = "manifests/s/live.m3u8";
        let path = dir.path().join(key);
        // Every file behind the object, hidden spares included, by inode.
        let files = || -> std::collections::BTreeSet<u64> {
            let dir = std::fs::read_dir(path.parent().unwrap()).unwrap();
            dir.map(|e| e.unwrap().metadata().unwrap().ino()).collect()
        };
        let mut first_files = None;
        let mut held = Vec::new();
        for version in 0..20 {
            let body = format!("version {version}\n").repeat(version + 1);
            store
                .rewrite_all(vec![Rewrite { key: key.into(), bytes: body.clone().into(), last: false }])
                .await
                .unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
            // The first version makes every file; later ones create none.
            assert_eq!(*first_files.get_or_insert_with(files), files(), "version {version}");
            held.push((std::fs::File::open(&path).unwrap(), body));
        }
        assert_eq!(first_files.unwrap().len(), SPARES + 1);
        // A reader that opened a version keeps it whole for the next SPARES rewrites.
        let (file, body) = &held[held.len() - 1 - SPARES];
        let mut read = String::new();
        std::io::Read::read_to_string(&mut &*file, &mut read).unwrap();
        assert_eq!(&read, body);
        let visible: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| !name.starts_with('.'))
            .collect();
        assert_eq!(visible, ["live.m3u8"], "spares are hidden files, not objects");

        // Several objects in one call, each in its own place.
        let other = "manifests/t/live.m3u8";
        let both = vec![
            Rewrite { key: key.into(), bytes: Bytes::from_static(b"s\n"), last: false },
            Rewrite { key: other.into(), bytes: Bytes::from_static(b"t\n"), last: false },
        ];
        store.rewrite_all(both).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"s\n");
        assert_eq!(std::fs::read(dir.path().join(other)).unwrap(), b"t\n");

        store
            .rewrite_all(vec![Rewrite { key: key.into(), bytes: Bytes::from_static(b"ended\n"), last: true }])
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ended\n");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("live.m3u8")], "the last rewrite drops the spares");
    }
}
