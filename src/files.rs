//! Files replaced atomically: by a new file renamed over, or, for small files rewritten often
//! (live playlists, log offsets), through hidden spares so that no version creates a file.
//!
//! Replacing a file by a new one costs a new inode and frees the old one per write. On ext4
//! without a journal, which skips inodes freed in the last minutes, that search and that
//! release (a synchronous discard) cost more CPU than the rest of the live path, and stall
//! with the disk (BENCHMARKS.md, "Sixth session").

use std::io;
use std::path::{Path, PathBuf};

/// A unique name beside `path` for a file that will be renamed onto it.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
    path.with_file_name(name)
}

/// Replaces `path` atomically by a new file holding `bytes` (written beside it, renamed over).
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Moves `from` to `to` unless `to` exists, in one atomic step; false (and `from` left as it
/// is) when it does. Write-once objects are made this way.
pub fn rename_new(from: &Path, to: &Path) -> io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        // A file system without the flag: a hard link is exclusive too.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOTSUP) => match std::fs::hard_link(from, to) {
            Ok(()) => std::fs::remove_file(from).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    }
}

/// The hidden file `.{name}.{n}` beside `path` that holds its spare version `n`.
pub fn spare_path(path: &Path, n: usize) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{n}"))
}

/// Rewrites `path` with `bytes` without a new file: they go into spare `n` (of `spares`) in
/// place, then the spare and `path` swap names in one atomic step, so the spare holds the
/// previous version. A reader that opened a version reads it whole until its file is written
/// again, `spares` rewrites later when they are used in turn.
pub fn swap_in(path: &Path, spares: usize, n: usize, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let spare = spare_path(path, n);
    let open = |spare: &Path| std::fs::File::options().write(true).create(true).truncate(false).open(spare);
    let file = match open(&spare) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(spare.parent().unwrap_or(Path::new(".")))?;
            open(&spare)?
        }
        opened => opened?,
    };
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)?;
    drop(file);
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, &spare, CWD, path, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        // The first version: nothing to swap with yet. Every spare is made now, so that no
        // later version creates a file.
        Err(rustix::io::Errno::NOENT) => {
            std::fs::rename(&spare, path)?;
            (0..spares).try_for_each(|n| open(&spare_path(path, n)).map(drop))
        }
        // A file system that cannot swap names: write a new file and rename it over.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOTSUP) => replace(path, bytes),
        Err(e) => Err(e.into()),
    }
}

/// Removes the spares of `path` once no version follows; absent ones are fine.
pub fn drop_spares(path: &Path, spares: usize) -> io::Result<()> {
    for n in 0..spares {
        match std::fs::remove_file(spare_path(path, n)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
