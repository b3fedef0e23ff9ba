//! The one storage interface through which all file I/O of checkpoints and LSM tables goes.
//!
//! Every file the engine writes or reads goes through a [`Storage`], so that tests can replace
//! the real file system with [`MemStorage`], which injects I/O errors and short writes and
//! simulates power loss (unsynced data dropped or torn, unsynced directory changes lost).
//! [`LocalStorage`] is the real implementation on `std::fs`.
//!
//! # Paths
//!
//! Paths are `&str`, relative to the storage's root, with `/` as the only separator:
//! `"chk-7/_metadata"`. The same rules hold for every implementation, and a path is checked
//! before anything is touched; a path that breaks them is rejected with
//! [`Error::InvalidPath`]:
//!
//! - not empty, not absolute (no leading `/`);
//! - no empty component (`a//b`, a trailing `/`), no `.` and no `..` component;
//! - no `\`, `:` or NUL anywhere (they would be separators, drive prefixes or terminators on
//!   some platform).
//!
//! The root directory itself is named [`ROOT`] (`"."`), accepted only where a directory makes
//! sense and the root is not being removed: [`Storage::create_dir_all`], [`Storage::sync_dir`],
//! [`Storage::list_dir`] and [`Storage::exists`].
//!
//! # Durability
//!
//! Nothing is durable until synced: [`WritableFile::sync`] makes a file's bytes durable, and
//! [`Storage::sync_dir`] makes the creations, renames and removals of names in one directory
//! durable (a new directory needs its parent synced too). [`Storage::write_atomic`] is the
//! publication protocol built on them: temporary file, sync, rename, directory sync.
//!
//! ```
//! use flowstate::storage::{CrashMode, MemStorage, Storage, ROOT};
//!
//! let storage = MemStorage::new();
//! storage.create_dir_all("chk-1")?;
//! storage.sync_dir(ROOT)?;
//! storage.write_atomic("chk-1/_metadata", b"complete")?;
//!
//! let mut unsynced = storage.create("chk-1/data")?;
//! unsynced.write_all(b"lost on power loss")?;
//!
//! storage.crash_with(CrashMode::DropUnsynced);
//! assert_eq!(storage.read_all("chk-1/_metadata", 1024)?, b"complete");
//! assert!(!storage.exists("chk-1/data")?);
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[cfg(feature = "object-store")]
mod faulty_object_store;
mod local;
mod mem;
#[cfg(feature = "object-store")]
mod object;

#[cfg(feature = "object-store")]
pub use faulty_object_store::FaultyObjectStore;
pub use local::LocalStorage;
pub use mem::{CrashMode, MemStorage};
#[cfg(feature = "object-store")]
pub use object::{ObjectStorage, ObjectStorageOptions};
/// The `object_store` crate this storage is built on (feature `object-store`), for building
/// a store by hand ([`ObjectStorage::new`]) with settings a URL cannot carry.
#[cfg(feature = "object-store")]
pub use object_store;

/// The name of a storage's root directory in paths.
pub const ROOT: &str = ".";

/// The suffix [`Storage::write_atomic`] appends to a file's name for its temporary file.
pub const TEMP_SUFFIX: &str = ".flowstate-tmp";

/// Whether `name` (a file name or a path) is a temporary file of [`Storage::write_atomic`],
/// left behind by a crash or a failure; such files can be removed at start-up.
pub fn is_temp_name(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
}

/// A file system rooted at one directory, through which all checkpoint and table I/O goes.
///
/// See the [module documentation](self) for the path rules and the durability model. Errors
/// of the underlying system are [`Error::Io`] naming the path; bad paths are
/// [`Error::InvalidPath`].
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates the file at `path`, or truncates it if it exists, and opens it for writing.
    /// The parent directory must exist. The file's name is durable only after
    /// [`sync_dir`](Storage::sync_dir) of its directory.
    fn create(&self, path: &str) -> Result<Box<dyn WritableFile>>;

    /// Opens the file at `path` for reading.
    fn open(&self, path: &str) -> Result<Box<dyn ReadableFile>>;

    /// Opens the file at `path` for reading through a read-only memory map of the whole file,
    /// or `None` when this storage does not map files (the caller then uses
    /// [`open`](Storage::open)). Reads are checked as [`open`](Storage::open)'s are.
    ///
    /// Only for immutable files: the file must not be written, truncated or replaced in place
    /// while the returned handle lives (removing its name or renaming another file over it
    /// is fine). LSM table files are such files. The default maps nothing; a storage that
    /// injects faults should keep it, so that its reads go through `open`.
    fn open_mapped(&self, path: &str) -> Result<Option<Box<dyn ReadableFile>>> {
        components(path, false)?;
        Ok(None)
    }

    /// Renames `from` to `to`, atomically replacing a file at `to`. Durable only after
    /// [`sync_dir`](Storage::sync_dir) of the directories of both names.
    fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// The path on the local file system of the file at `path`, where this storage keeps its
    /// files in a local directory (the path is checked first). `None` otherwise (the default):
    /// callers then copy through [`open`](Storage::open) instead of linking.
    fn local_path(&self, path: &str) -> Result<Option<PathBuf>> {
        components(path, false)?;
        Ok(None)
    }

    /// Makes `to` a hard link to the local file `source` (from another storage's
    /// [`local_path`](Storage::local_path)), failing if `to` exists. Returns `Ok(false)`, and
    /// creates nothing, when this storage cannot link to it (the default; also a local
    /// storage on another file system, or a file system without hard links): the caller then
    /// copies. The new name is durable only after [`sync_dir`](Storage::sync_dir); the
    /// content is whatever `source` holds, made durable by whoever wrote it.
    fn link_from(&self, source: &Path, to: &str) -> Result<bool> {
        let _ = source;
        components(to, false)?;
        Ok(false)
    }

    /// Removes the file at `path`; durable only after [`sync_dir`](Storage::sync_dir) of its
    /// directory.
    fn remove_file(&self, path: &str) -> Result<()>;

    /// Creates the directory at `path` and any missing parents; does nothing if it exists.
    /// A new directory is durable only after [`sync_dir`](Storage::sync_dir) of its parent.
    fn create_dir_all(&self, path: &str) -> Result<()>;

    /// Removes the directory at `path` with everything in it. The root cannot be removed.
    fn remove_dir_all(&self, path: &str) -> Result<()>;

    /// Makes the creations, renames and removals of names in directory `dir` durable.
    fn sync_dir(&self, dir: &str) -> Result<()>;

    /// The names of the files and directories in directory `dir`, sorted.
    fn list_dir(&self, dir: &str) -> Result<Vec<String>>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &str) -> Result<bool>;

    /// Publishes `bytes` at `path` so that, even across a crash, `path` holds either its old
    /// content (or nothing) or all of `bytes`, never a part.
    ///
    /// Writes a temporary file in the same directory (named `path` + [`TEMP_SUFFIX`]), syncs
    /// it, renames it over `path` and syncs the directory. When this returns `Ok`, the new
    /// content is durable. On an error the outcome is unknown (the directory sync may fail
    /// after the rename), but still old or new, never partial; the temporary file is removed
    /// if possible, and whatever remains of it is recognised by [`is_temp_name`].
    ///
    /// The directory must exist and be durable. Two concurrent calls for the same `path`
    /// are not supported (they share the temporary name).
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<()> {
        components(path, false)?;
        let tmp = format!("{path}{TEMP_SUFFIX}");
        if let Err(err) = write_synced(self, &tmp, bytes) {
            let _ = self.remove_file(&tmp);
            return Err(err);
        }
        if let Err(err) = self.rename(&tmp, path) {
            let _ = self.remove_file(&tmp);
            return Err(err);
        }
        self.sync_dir(parent_dir(path))
    }

    /// Whether a file made with [`create`](Storage::create) stays invisible until
    /// [`WritableFile::sync`] publishes it whole, after which it cannot be written to (an
    /// object store's upload). Writers then need no temporary file and no rename: they create
    /// the file under its final name. `false` for a file system.
    fn publishes_on_sync(&self) -> bool {
        false
    }

    /// How many files a checkpoint should upload, or a restore fetch, at once through this
    /// storage: 1 for a local file system (copies and links are quick), more for a store
    /// where each transfer waits on the network.
    fn parallel_transfers(&self) -> usize {
        1
    }

    /// Publishes `bytes` at `path` as [`write_atomic`](Storage::write_atomic) does, but only
    /// if nothing is at `path`: otherwise an [`Error::Io`] of kind `AlreadyExists`, and
    /// nothing changes. The default checks, then writes: exclusive only while one writer
    /// manages the directory. An object store makes it one conditional request.
    fn write_new(&self, path: &str, bytes: &[u8]) -> Result<()> {
        if self.exists(path)? {
            return Err(Error::io(
                path,
                io::Error::new(io::ErrorKind::AlreadyExists, "the file exists already"),
            ));
        }
        self.write_atomic(path, bytes)
    }

    /// Reads the whole file at `path`, refusing with [`Error::FileTooLarge`] a file longer
    /// than `max_len` bytes before allocating anything.
    fn read_all(&self, path: &str, max_len: u64) -> Result<Vec<u8>> {
        let file = self.open(path)?;
        let len = file.len();
        let too_large = || Error::FileTooLarge {
            path: PathBuf::from(path),
            len,
            limit: max_len,
        };
        if len > max_len {
            return Err(too_large());
        }
        let mut buf = vec![0; usize::try_from(len).map_err(|_| too_large())?];
        file.read_at(0, &mut buf)?;
        Ok(buf)
    }
}

/// A file open for writing, as returned by [`Storage::create`]. Writes append.
///
/// After an error the file's content is unspecified: discard it and write it again.
pub trait WritableFile: Send + fmt::Debug {
    /// Appends all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> Result<()>;
    /// The number of bytes written through this handle.
    fn len(&self) -> u64;
    /// Whether nothing was written through this handle.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file open for reading, as returned by [`Storage::open`].
pub trait ReadableFile: Send + Sync + fmt::Debug {
    /// The file's length in bytes when it was opened.
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` with the bytes at `offset`. A read that would go past the end of the file
    /// is an [`Error::Io`] (kind `UnexpectedEof`) naming the path and the offset.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// The `len` bytes at `offset` in place, for a file held in memory (a memory map); `None`
    /// (the default) for a file read with copies, and for a range past the end.
    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }
}

fn write_synced<S: Storage + ?Sized>(storage: &S, path: &str, bytes: &[u8]) -> Result<()> {
    let mut file = storage.create(path)?;
    file.write_all(bytes)?;
    file.sync()
}

fn invalid(path: &str, reason: &'static str) -> Error {
    Error::InvalidPath {
        path: PathBuf::from(path),
        reason,
    }
}

/// Checks `path` and splits it into components; the root is the empty list, accepted only if
/// `allow_root`.
fn components(path: &str, allow_root: bool) -> Result<Vec<&str>> {
    if path.is_empty() {
        return Err(invalid(path, "empty path"));
    }
    if path == ROOT {
        return if allow_root {
            Ok(Vec::new())
        } else {
            Err(invalid(path, "the root directory is not acceptable here"))
        };
    }
    if path.starts_with('/') {
        return Err(invalid(
            path,
            "absolute path; paths are relative to the storage root",
        ));
    }
    if path.contains('\\') {
        return Err(invalid(path, "'\\' is not allowed; '/' is the separator"));
    }
    if path.contains(':') {
        return Err(invalid(path, "':' is not allowed (drive prefixes)"));
    }
    if path.contains('\0') {
        return Err(invalid(path, "NUL byte in path"));
    }
    path.split('/')
        .map(|c| match c {
            "" => Err(invalid(path, "empty component ('//' or a trailing '/')")),
            "." => Err(invalid(path, "'.' component")),
            ".." => Err(invalid(path, "'..' component escapes the root")),
            c => Ok(c),
        })
        .collect()
}

/// The directory of a checked, non-root path.
fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or(ROOT, |(dir, _)| dir)
}

pub(crate) fn past_end(path: impl Into<PathBuf>, offset: u64, n: usize, len: u64) -> Error {
    Error::io(
        path,
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "read of {n} bytes at offset {offset} goes past the end of the file ({len} bytes)"
            ),
        ),
    )
}

/// Whether a read of `n` bytes at `offset` stays within `len` bytes.
fn within(offset: u64, n: usize, len: u64) -> bool {
    u64::try_from(n)
        .ok()
        .and_then(|n| offset.checked_add(n))
        .is_some_and(|end| end <= len)
}

/// The size of the chunks [`stream_crc32c`] reads.
const STREAM_CHUNK: usize = 1 << 20;

/// Reads `source` whole in chunks, passing each to `sink`, and returns its CRC-32C (the checksum
/// that binds a file to the snapshot that lists it).
pub(crate) fn stream_crc32c(
    source: &dyn ReadableFile,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<u32> {
    let len = source.len();
    let mut hasher = flowstate_formats::codec::checksum::Crc32c::new();
    let mut buf = vec![0u8; STREAM_CHUNK.min(usize::try_from(len).unwrap_or(STREAM_CHUNK))];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        source.read_at(at, &mut buf[..n])?;
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
        at += n as u64;
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::fs;

    /// Paths every method must reject.
    const BAD_PATHS: &[&str] = &[
        "", "/", "/abs", "/a/b", "..", "../x", "a/..", "a/../b", "a//b", "a/", "./a", "a/./b",
        "a\\b", "c:x", "a\0b",
    ];

    fn local() -> (tempfile::TempDir, LocalStorage) {
        let tmp = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(tmp.path().join("root")).unwrap();
        (tmp, storage)
    }

    /// Only regular files reached without a link are opened; nothing blocks (a FIFO).
    #[cfg(unix)]
    #[test]
    fn local_opens_only_regular_files_without_links_and_never_blocks() {
        let (tmp, s) = local();
        s.create_dir_all("chk-1").unwrap();
        write_file(&s, "chk-1/good", b"good", true);
        assert_eq!(s.read_all("chk-1/good", 100).unwrap(), b"good");
        // A file outside the root, reached by a link inside it.
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"secret").unwrap();
        std::os::unix::fs::symlink(&outside, s.root().join("chk-1/link")).unwrap();
        // A directory of the root reached by a link.
        std::os::unix::fs::symlink(s.root().join("chk-1"), s.root().join("chk-2")).unwrap();
        // A FIFO (a reader of it would block) and a socket.
        let fifo = s.root().join("chk-1/fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        let socket = std::os::unix::net::UnixListener::bind(s.root().join("chk-1/socket")).unwrap();
        std::fs::create_dir(s.root().join("chk-1/dir")).unwrap();
        let mut bad = vec!["chk-1/link", "chk-2/good", "chk-1/socket", "chk-1/dir"];
        if made.is_ok_and(|status| status.success()) {
            bad.push("chk-1/fifo");
        }
        for path in bad {
            for result in [s.open(path).map(|_| ()), s.open_mapped(path).map(|_| ())] {
                match result {
                    Err(Error::InvalidPath { path: p, .. }) => assert_eq!(p, Path::new(path)),
                    other => panic!("{path}: {other:?}"),
                }
            }
            assert!(s.read_all(path, 100).is_err(), "{path}");
        }
        drop(socket);
    }

    fn assert_invalid<T: fmt::Debug>(result: Result<T>, what: &str) {
        match result {
            Err(Error::InvalidPath { .. }) => {}
            other => panic!("{what}: expected InvalidPath, got {other:?}"),
        }
    }

    fn io_kind<T: fmt::Debug>(result: Result<T>) -> io::ErrorKind {
        match result {
            Err(Error::Io { source, .. }) => source.kind(),
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }

    pub(super) fn write_file(s: &dyn Storage, path: &str, bytes: &[u8], sync: bool) {
        let mut f = s.create(path).unwrap();
        f.write_all(bytes).unwrap();
        if sync {
            f.sync().unwrap();
        }
    }

    fn check_rejects_bad_paths(s: &dyn Storage) {
        write_file(s, "ok", b"kept", true);
        for &bad in BAD_PATHS {
            let what = format!("{bad:?}");
            assert_invalid(s.create(bad), &format!("create {what}"));
            assert_invalid(s.open(bad), &format!("open {what}"));
            assert_invalid(s.rename(bad, "ok2"), &format!("rename from {what}"));
            assert_invalid(s.rename("ok", bad), &format!("rename to {what}"));
            assert_invalid(s.remove_file(bad), &format!("remove_file {what}"));
            assert_invalid(s.create_dir_all(bad), &format!("create_dir_all {what}"));
            assert_invalid(s.remove_dir_all(bad), &format!("remove_dir_all {what}"));
            assert_invalid(s.sync_dir(bad), &format!("sync_dir {what}"));
            assert_invalid(s.list_dir(bad), &format!("list_dir {what}"));
            assert_invalid(s.exists(bad), &format!("exists {what}"));
            assert_invalid(s.write_atomic(bad, b"x"), &format!("write_atomic {what}"));
            assert_invalid(s.read_all(bad, 100), &format!("read_all {what}"));
        }
        // The root is a directory: not a file, and not removable.
        assert_invalid(s.create(ROOT), "create root");
        assert_invalid(s.open(ROOT), "open root");
        assert_invalid(s.rename("ok", ROOT), "rename to root");
        assert_invalid(s.remove_file(ROOT), "remove_file root");
        assert_invalid(s.remove_dir_all(ROOT), "remove_dir_all root");
        assert_invalid(s.write_atomic(ROOT, b"x"), "write_atomic root");
        // Nothing was touched.
        assert_eq!(s.list_dir(ROOT).unwrap(), vec!["ok".to_string()]);
        assert_eq!(s.read_all("ok", 100).unwrap(), b"kept");
    }

    #[test]
    fn mem_rejects_bad_paths_for_every_method_without_counting_ops() {
        let s = MemStorage::new();
        check_rejects_bad_paths(&s);
        // create + write_all + sync of "ok": the rejected calls were not even counted.
        assert_eq!(s.op_count(), 3);
    }

    #[test]
    fn local_rejects_bad_paths_for_every_method_and_touches_nothing_outside() {
        let (tmp, s) = local();
        check_rejects_bad_paths(&s);
        let outside: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("root")]);
    }

    #[test]
    fn root_is_accepted_by_directory_methods() {
        let (_tmp, local) = local();
        for s in [&local as &dyn Storage, &MemStorage::new()] {
            s.create_dir_all(ROOT).unwrap();
            s.sync_dir(ROOT).unwrap();
            assert!(s.exists(ROOT).unwrap());
            assert!(s.list_dir(ROOT).unwrap().is_empty());
        }
    }

    fn check_round_trip(s: &dyn Storage) {
        s.create_dir_all("a/b").unwrap();
        let mut f = s.create("a/b/f").unwrap();
        assert!(f.is_empty());
        f.write_all(b"hello ").unwrap();
        f.write_all(b"").unwrap();
        f.write_all(b"world").unwrap();
        assert_eq!(f.len(), 11);
        f.sync().unwrap();
        drop(f);

        let r = s.open("a/b/f").unwrap();
        assert_eq!(r.len(), 11);
        let mut buf = [0u8; 5];
        r.read_at(6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");
        r.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        r.read_at(11, &mut []).unwrap();
        assert_eq!(s.read_all("a/b/f", 11).unwrap(), b"hello world");

        assert!(s.exists("a").unwrap());
        assert!(s.exists("a/b/f").unwrap());
        assert!(!s.exists("a/b/g").unwrap());
        assert!(!s.exists("a/b/f/x").unwrap(), "below a file");
        assert_eq!(io_kind(s.open("a/b/g")), io::ErrorKind::NotFound);
        assert!(s.open("a/b").is_err(), "a directory is not a readable file");

        // create truncates.
        write_file(s, "a/b/f", b"new", true);
        assert_eq!(s.read_all("a/b/f", 100).unwrap(), b"new");
    }

    #[test]
    fn mem_round_trip() {
        check_round_trip(&MemStorage::new());
    }

    #[test]
    fn local_round_trip() {
        let (_tmp, s) = local();
        check_round_trip(&s);
        assert_eq!(fs::read(s.root().join("a/b/f")).unwrap(), b"new");
    }

    fn check_read_past_end(s: &dyn Storage) {
        write_file(s, "f", b"0123456789", true);
        let r = s.open("f").unwrap();
        let mut buf = [0u8; 4];
        for offset in [7, 10, 11, u64::MAX - 1, u64::MAX] {
            let err = r.read_at(offset, &mut buf).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("offset {offset}")), "{msg}");
            assert!(msg.contains('f'), "{msg}");
            assert_eq!(io_kind::<()>(Err(err)), io::ErrorKind::UnexpectedEof);
        }
        assert!(r.read_at(11, &mut []).is_err(), "empty read after the end");
        r.read_at(6, &mut buf).unwrap();
        assert_eq!(&buf, b"6789");
    }

    #[test]
    fn read_past_end_is_an_error_naming_path_and_offset() {
        check_read_past_end(&MemStorage::new());
        let (_tmp, s) = local();
        check_read_past_end(&s);
    }

    fn check_rename(s: &dyn Storage) {
        s.write_atomic("x", b"old").unwrap();
        write_file(s, "y", b"new content", true);
        s.rename("y", "x").unwrap();
        assert_eq!(s.read_all("x", 100).unwrap(), b"new content");
        assert!(!s.exists("y").unwrap());
        assert_eq!(io_kind(s.rename("y", "z")), io::ErrorKind::NotFound);
        // Into another directory.
        s.create_dir_all("d").unwrap();
        s.rename("x", "d/x").unwrap();
        assert_eq!(s.list_dir("d").unwrap(), vec!["x".to_string()]);
        assert_eq!(s.list_dir(ROOT).unwrap(), vec!["d".to_string()]);
    }

    #[test]
    fn rename_replaces_the_target() {
        check_rename(&MemStorage::new());
        let (_tmp, s) = local();
        check_rename(&s);
    }

    fn check_list_and_remove(s: &dyn Storage) {
        for name in ["b", "a", "c2", "c10", "B"] {
            write_file(s, name, name.as_bytes(), false);
        }
        s.create_dir_all("d/e").unwrap();
        write_file(s, "d/e/f", b"f", false);
        assert_eq!(
            s.list_dir(ROOT).unwrap(),
            vec!["B", "a", "b", "c10", "c2", "d"]
        );
        assert_eq!(s.list_dir("d").unwrap(), vec!["e"]);
        assert!(s.list_dir("missing").is_err());
        assert!(s.list_dir("a").is_err(), "a file is not a directory");

        s.remove_file("a").unwrap();
        assert_eq!(io_kind(s.remove_file("a")), io::ErrorKind::NotFound);
        assert!(s.remove_file("d").is_err(), "remove_file of a directory");
        assert!(s.remove_dir_all("b").is_err(), "remove_dir_all of a file");
        s.remove_dir_all("d").unwrap();
        assert!(!s.exists("d/e/f").unwrap());
        assert_eq!(s.list_dir(ROOT).unwrap(), vec!["B", "b", "c10", "c2"]);
        assert!(s.create_dir_all("b/c").is_err(), "a component is a file");
    }

    #[test]
    fn list_dir_is_sorted_and_removal_works() {
        check_list_and_remove(&MemStorage::new());
        let (_tmp, s) = local();
        check_list_and_remove(&s);
    }

    fn check_write_atomic(s: &dyn Storage) {
        s.create_dir_all("chk-1").unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        s.write_atomic("chk-1/_metadata", &big).unwrap();
        assert_eq!(s.list_dir("chk-1").unwrap(), vec!["_metadata"]);
        assert_eq!(s.read_all("chk-1/_metadata", 100_000).unwrap(), big);
        // Replacing with shorter content leaves exactly the new content.
        s.write_atomic("chk-1/_metadata", b"short").unwrap();
        assert_eq!(s.read_all("chk-1/_metadata", 100).unwrap(), b"short");
        s.write_atomic("top", b"top").unwrap();
        assert_eq!(s.list_dir(ROOT).unwrap(), vec!["chk-1", "top"]);
        assert!(s.write_atomic("missing/f", b"x").is_err());
        assert!(!s.exists(&format!("missing/f{TEMP_SUFFIX}")).unwrap());
    }

    #[test]
    fn write_atomic_leaves_only_the_complete_target() {
        check_write_atomic(&MemStorage::new());
        let (_tmp, s) = local();
        check_write_atomic(&s);
    }

    #[test]
    fn read_all_refuses_a_file_over_the_limit() {
        let (_tmp, local) = local();
        for s in [&local as &dyn Storage, &MemStorage::new()] {
            write_file(s, "f", &[7; 100], true);
            let err = s.read_all("f", 99).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::FileTooLarge {
                        len: 100,
                        limit: 99,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::Limit);
            assert_eq!(s.read_all("f", 100).unwrap(), vec![7; 100]);
        }
    }

    #[test]
    fn local_errors_name_the_full_path_and_survive_reopening() {
        let (tmp, s) = local();
        match s.open("dir/missing") {
            Err(Error::Io { path, source }) => {
                assert_eq!(path, tmp.path().join("root/dir/missing"));
                assert!(path.is_absolute());
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        s.write_atomic("f", b"durable").unwrap();
        let again = LocalStorage::new(tmp.path().join("root")).unwrap();
        assert_eq!(again.read_all("f", 100).unwrap(), b"durable");
        assert_eq!(
            s.full_path("a/b").unwrap(),
            tmp.path().join("root").join("a").join("b")
        );
        assert!(s.sync_dir("f").is_err(), "sync_dir of a file");
    }
}
