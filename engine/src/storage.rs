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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};

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

// ---------------------------------------------------------------------------------------------
// LocalStorage
// ---------------------------------------------------------------------------------------------

/// A [`Storage`] on the local file system (`std::fs`), rooted at a directory.
///
/// Files are synced with `sync_all`, directories by opening them and calling `sync_all`.
/// Files are opened for reading only when they are regular files reached without a symbolic
/// link below the root: a symbolic link (which could lead outside the root), a FIFO, a socket or
/// a device is refused with [`Error::InvalidPath`], and nothing blocks (a FIFO is never opened:
/// the type is checked first without following links, and the open itself does not block). The
/// root itself is trusted.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A storage rooted at `root`, which is created if missing and made absolute (relative to
    /// the current directory), so that error messages name full paths.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let root = std::path::absolute(root).map_err(|e| Error::io(root, e))?;
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        Ok(LocalStorage { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The full path of a storage path, after checking it (the root is accepted).
    pub fn full_path(&self, path: &str) -> Result<PathBuf> {
        self.resolve(path, true)
    }

    /// Opens the regular file at `path`: its full path, the file and its length. Every
    /// component below the root is checked without following links: a symbolic link, or a
    /// final component that is not a regular file, is refused before anything is opened; the
    /// open does not block (a FIFO swapped in meanwhile) and the opened file is checked again.
    fn open_regular(&self, path: &str) -> Result<(PathBuf, File, u64)> {
        let comps = components(path, false)?;
        let target = self.resolve(path, false)?;
        let mut full = self.root.clone();
        for (i, c) in comps.iter().enumerate() {
            full.push(c);
            // Errors name the file asked for, whichever component is missing.
            let meta = fs::symlink_metadata(&full).map_err(|e| Error::io(&target, e))?;
            let last = i + 1 == comps.len();
            let kind = meta.file_type();
            if kind.is_symlink() {
                return Err(refused(
                    path,
                    "a symbolic link: only regular files are read",
                ));
            }
            if last && !kind.is_file() {
                return Err(refused(
                    path,
                    "not a regular file (a directory, FIFO, socket or device)",
                ));
            }
        }
        let file = open_nonblocking(&full).map_err(|e| Error::io(&full, e))?;
        let meta = file.metadata().map_err(|e| Error::io(&full, e))?;
        if !meta.is_file() {
            return Err(refused(
                path,
                "not a regular file (it changed while being opened)",
            ));
        }
        Ok((full, file, meta.len()))
    }

    fn resolve(&self, path: &str, allow_root: bool) -> Result<PathBuf> {
        let mut full = self.root.clone();
        full.extend(components(path, allow_root)?);
        Ok(full)
    }
}

impl Storage for LocalStorage {
    fn create(&self, path: &str) -> Result<Box<dyn WritableFile>> {
        let full = self.resolve(path, false)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&full)
            .map_err(|e| Error::io(&full, e))?;
        Ok(Box::new(LocalWritable {
            file: BufWriter::with_capacity(64 * 1024, file),
            path: full,
            len: 0,
        }))
    }

    fn open(&self, path: &str) -> Result<Box<dyn ReadableFile>> {
        let (full, file, len) = self.open_regular(path)?;
        Ok(Box::new(LocalReadable::new(full, file, len)))
    }

    /// Maps the whole file (an empty file is read without a map); see the invariant in
    /// [`Storage::open_mapped`].
    fn open_mapped(&self, path: &str) -> Result<Option<Box<dyn ReadableFile>>> {
        let (full, file, len) = self.open_regular(path)?;
        Ok(Some(Box::new(crate::mmap::MappedFile::map(
            full, &file, len,
        )?)))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let from_full = self.resolve(from, false)?;
        let to_full = self.resolve(to, false)?;
        fs::rename(&from_full, &to_full).map_err(|e| {
            let context = format!("rename to {}: {e}", to_full.display());
            Error::io(&from_full, io::Error::new(e.kind(), context))
        })
    }

    fn local_path(&self, path: &str) -> Result<Option<PathBuf>> {
        self.resolve(path, false).map(Some)
    }

    fn link_from(&self, source: &Path, to: &str) -> Result<bool> {
        let full = self.resolve(to, false)?;
        match fs::hard_link(source, &full) {
            Ok(()) => Ok(true),
            // Another file system (EXDEV, 18 on Linux and macOS), or one without hard links
            // (EPERM, ENOTSUP): the caller copies.
            Err(e)
                if e.raw_os_error() == Some(18)
                    || e.kind() == io::ErrorKind::Unsupported
                    || e.kind() == io::ErrorKind::PermissionDenied =>
            {
                Ok(false)
            }
            Err(e) => {
                let context = format!("hard link to {}: {e}", full.display());
                Err(Error::io(source, io::Error::new(e.kind(), context)))
            }
        }
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        let full = self.resolve(path, false)?;
        fs::remove_file(&full).map_err(|e| Error::io(&full, e))
    }

    fn create_dir_all(&self, path: &str) -> Result<()> {
        let full = self.resolve(path, true)?;
        fs::create_dir_all(&full).map_err(|e| Error::io(&full, e))
    }

    fn remove_dir_all(&self, path: &str) -> Result<()> {
        if path == ROOT {
            return Err(invalid(path, "the root directory cannot be removed"));
        }
        let full = self.resolve(path, false)?;
        fs::remove_dir_all(&full).map_err(|e| Error::io(&full, e))
    }

    fn sync_dir(&self, dir: &str) -> Result<()> {
        let full = self.resolve(dir, true)?;
        sync_directory(&full).map_err(|e| Error::io(&full, e))
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let full = self.resolve(dir, true)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&full).map_err(|e| Error::io(&full, e))? {
            let entry = entry.map_err(|e| Error::io(&full, e))?;
            let name = entry.file_name().into_string().map_err(|name| {
                Error::io(
                    full.join(name),
                    io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"),
                )
            })?;
            names.push(name);
        }
        names.sort_unstable();
        Ok(names)
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let full = self.resolve(path, true)?;
        match fs::metadata(&full) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => {
                // A component that is a file (ENOTDIR on Unix) means the path does not exist.
                let mut dir = full.parent();
                while let Some(d) = dir.filter(|d| d.starts_with(&self.root)) {
                    if fs::metadata(d).is_ok_and(|m| !m.is_dir()) {
                        return Ok(false);
                    }
                    dir = d.parent();
                }
                Err(Error::io(&full, e))
            }
        }
    }
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

/// The error for a path that is not a regular file reached without links.
fn refused(path: &str, reason: &'static str) -> Error {
    Error::InvalidPath {
        path: PathBuf::from(path),
        reason,
    }
}

/// Opens `path` for reading without blocking on a FIFO and without following a final
/// symbolic link.
#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
}

/// Opens `path` for reading (the type was checked just before).
#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Makes the entries of directory `path` durable.
#[cfg(unix)]
fn sync_directory(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    if !dir.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        ));
    }
    match dir.sync_all() {
        // fsync(2): EINVAL means the file system does not support synchronizing this kind of
        // file (some network and FUSE file systems for directories): nothing more can be done.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

/// Makes the entries of directory `path` durable.
///
/// Outside Unix (Windows), a directory cannot be opened as a `File` to sync it, and rename
/// durability is the file system's (NTFS journals its metadata): only check that it is one.
#[cfg(not(unix))]
fn sync_directory(path: &Path) -> io::Result<()> {
    if fs::metadata(path)?.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory",
        ))
    }
}

#[derive(Debug)]
struct LocalWritable {
    file: BufWriter<File>,
    path: PathBuf,
    len: u64,
}

impl WritableFile for LocalWritable {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.file
            .write_all(buf)
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += buf.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(&self.path, e))
    }

    fn len(&self) -> u64 {
        self.len
    }
}

#[derive(Debug)]
struct LocalReadable {
    path: PathBuf,
    #[cfg(unix)]
    file: File,
    #[cfg(not(unix))]
    file: Mutex<File>,
    len: u64,
}

impl LocalReadable {
    fn new(path: PathBuf, file: File, len: u64) -> Self {
        #[cfg(not(unix))]
        let file = Mutex::new(file);
        LocalReadable { path, file, len }
    }
}

impl ReadableFile for LocalReadable {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if !within(offset, buf.len(), self.len) {
            return Err(past_end(&self.path, offset, buf.len(), self.len));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file
                .read_exact_at(buf, offset)
                .map_err(|e| Error::io(&self.path, e))
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(buf))
                .map_err(|e| Error::io(&self.path, e))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MemStorage
// ---------------------------------------------------------------------------------------------

/// How [`MemStorage::crash_with`] treats what was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Everything not synced is lost: each file keeps its synced bytes, each directory its
    /// synced names.
    DropUnsynced,
    /// Unsynced data may partly survive, chosen by a pseudo-random generator seeded with
    /// `seed` (the same seed on the same history gives the same result):
    ///
    /// - a file whose unsynced bytes extend its synced bytes keeps the synced bytes and a
    ///   random prefix (possibly empty, possibly all) of the unsynced tail;
    /// - a file truncated and rewritten since its last sync keeps either its synced bytes or
    ///   a random prefix of its new bytes;
    /// - each unsynced change of a name in a directory (created, renamed, removed) survives
    ///   or not, independently of the others.
    Torn {
        /// The generator's seed.
        seed: u64,
    },
}

/// An in-memory [`Storage`] that simulates power loss and injects faults, for tests.
///
/// Every file has live bytes (what reads see) and durable bytes ([`WritableFile::sync`]
/// copies live to durable); every directory has a live name table and a durable one
/// ([`Storage::sync_dir`] copies live to durable; creating, renaming and removing change only
/// the live one). [`crash`](MemStorage::crash) resets everything to the durable state, as a
/// power loss would, and [`crash_with`](MemStorage::crash_with) can tear unsynced data
/// instead of dropping it.
///
/// Mutating operations are counted ([`op_count`](MemStorage::op_count)): `create`,
/// `rename`, `remove_file`, `create_dir_all`, `remove_dir_all`, `sync_dir` and, on a file,
/// `write_all` and `sync`. [`fail_after`](MemStorage::fail_after) makes them fail from a
/// given one on, so that a test can sweep every failure point of a piece of code. A failing
/// operation changes nothing, except that with [short writes](MemStorage::set_short_writes)
/// a failing `write_all` writes a prefix of its buffer first. Reads never fail.
///
/// Clones share the same file system. Everything is deterministic: the only randomness
/// comes from seeds the test gives.
///
/// Renames of directories across directories are modelled per directory (each directory's
/// table becomes durable on its own), which no journaling file system does; avoid relying
/// on crash behaviour of such renames.
#[derive(Clone)]
pub struct MemStorage {
    state: Arc<Mutex<MemState>>,
}

impl Default for MemStorage {
    fn default() -> Self {
        MemStorage::new()
    }
}

impl fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        let files = state
            .nodes
            .values()
            .filter(|n| matches!(n, Node::File(_)))
            .count();
        f.debug_struct("MemStorage")
            .field("nodes", &state.nodes.len())
            .field("files", &files)
            .field("op_count", &state.ops)
            .field("fail_from_op", &state.fail_from)
            .field("short_writes", &state.short_writes)
            .field("crashes", &state.epoch)
            .finish()
    }
}

const ROOT_ID: u64 = 0;

struct MemState {
    /// Files and directories by id; the root is [`ROOT_ID`]. Ordered, so that crashes iterate
    /// deterministically.
    nodes: BTreeMap<u64, Node>,
    next_id: u64,
    /// The number of crashes so far; handles from an earlier epoch are dead.
    epoch: u64,
    /// Mutating operations attempted so far.
    ops: u64,
    /// Mutating operation number (1-based, as counted by `ops`) from which operations fail.
    fail_from: Option<u64>,
    short_writes: bool,
    /// Generator for short-write lengths.
    rng: SplitMix64,
    /// Collect unreachable nodes when there are more than this many.
    gc_threshold: usize,
}

enum Node {
    File(MemFile),
    Dir(MemDir),
}

#[derive(Default)]
struct MemFile {
    live: Arc<Vec<u8>>,
    durable: Arc<Vec<u8>>,
}

#[derive(Default)]
struct MemDir {
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

fn lock(state: &Mutex<MemState>) -> MutexGuard<'_, MemState> {
    // The state stays consistent across a panic: no operation panics half-way.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn mem_err(path: &str, kind: io::ErrorKind, msg: &str) -> Error {
    Error::io(path, io::Error::new(kind, msg.to_string()))
}

impl MemState {
    fn new(seed: u64) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT_ID, Node::Dir(MemDir::default()));
        MemState {
            nodes,
            next_id: ROOT_ID + 1,
            epoch: 0,
            ops: 0,
            fail_from: None,
            short_writes: false,
            rng: SplitMix64(seed),
            gc_threshold: 64,
        }
    }

    /// Counts a mutating operation on `path` and fails it if faults are injected.
    fn mutation(&mut self, path: &str) -> Result<()> {
        self.ops += 1;
        match self.fail_from {
            Some(from) if self.ops >= from => Err(Error::io(
                path,
                io::Error::other(format!(
                    "injected fault: mutating operation {} fails (MemStorage::fail_after)",
                    self.ops
                )),
            )),
            _ => Ok(()),
        }
    }

    fn add(&mut self, node: Node) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(id, node);
        id
    }

    fn dir(&self, id: u64) -> Option<&MemDir> {
        match self.nodes.get(&id) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn dir_mut(&mut self, id: u64) -> Option<&mut MemDir> {
        match self.nodes.get_mut(&id) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn file_mut(&mut self, id: u64) -> Option<&mut MemFile> {
        match self.nodes.get_mut(&id) {
            Some(Node::File(f)) => Some(f),
            _ => None,
        }
    }

    /// The id of the directory named by `comps` (live names).
    fn lookup_dir(&self, path: &str, comps: &[&str]) -> Result<u64> {
        let mut id = ROOT_ID;
        for comp in comps {
            let dir = self
                .dir(id)
                .ok_or_else(|| mem_err(path, io::ErrorKind::InvalidInput, "not a directory"))?;
            id = *dir.live.get(*comp).ok_or_else(|| {
                mem_err(path, io::ErrorKind::NotFound, "no such file or directory")
            })?;
        }
        if self.dir(id).is_none() {
            return Err(mem_err(
                path,
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        Ok(id)
    }

    /// The id of the parent directory of a non-root path, its last component, and the id the
    /// last component names, if any.
    fn lookup_entry<'p>(
        &self,
        path: &str,
        comps: &[&'p str],
    ) -> Result<(u64, &'p str, Option<u64>)> {
        let (name, dirs) = comps
            .split_last()
            .ok_or_else(|| invalid(path, "the root directory is not acceptable here"))?;
        let parent = self.lookup_dir(path, dirs)?;
        let id = self.dir(parent).and_then(|d| d.live.get(*name).copied());
        Ok((parent, name, id))
    }

    fn is_dir(&self, id: u64) -> bool {
        self.dir(id).is_some()
    }

    /// Removes nodes that no live or durable name reaches.
    fn collect_garbage(&mut self) {
        let mut reached = BTreeSet::new();
        let mut stack = vec![ROOT_ID];
        while let Some(id) = stack.pop() {
            if !reached.insert(id) {
                continue;
            }
            if let Some(dir) = self.dir(id) {
                stack.extend(dir.live.values().chain(dir.durable.values()).copied());
            }
        }
        self.nodes.retain(|id, _| reached.contains(id));
        self.gc_threshold = (2 * self.nodes.len()).max(64);
    }

    fn maybe_collect_garbage(&mut self) {
        if self.nodes.len() > self.gc_threshold {
            self.collect_garbage();
        }
    }
}

impl MemStorage {
    /// An empty in-memory file system (short-write lengths seeded with 0).
    pub fn new() -> Self {
        MemStorage::with_seed(0)
    }

    /// An empty in-memory file system whose short-write lengths come from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        MemStorage {
            state: Arc::new(Mutex::new(MemState::new(seed))),
        }
    }

    /// Simulates a power loss with [`CrashMode::DropUnsynced`]: every file and directory
    /// returns to its durable state. Handles opened for writing before the crash fail from
    /// now on; injected faults stay until [`heal`](MemStorage::heal).
    pub fn crash(&self) {
        self.crash_with(CrashMode::DropUnsynced);
    }

    /// Simulates a power loss, dropping or tearing unsynced data as `mode` says; see
    /// [`crash`](MemStorage::crash).
    pub fn crash_with(&self, mode: CrashMode) {
        let mut state = lock(&self.state);
        let mut rng = match mode {
            CrashMode::DropUnsynced => None,
            CrashMode::Torn { seed } => Some(SplitMix64(seed)),
        };
        let mut old = std::mem::take(&mut state.nodes);
        let mut nodes = BTreeMap::new();
        let mut stack = vec![ROOT_ID];
        while let Some(id) = stack.pop() {
            if nodes.contains_key(&id) {
                continue;
            }
            let Some(node) = old.remove(&id) else {
                continue;
            };
            let node = match node {
                Node::Dir(dir) => {
                    let table = match rng.as_mut() {
                        None => dir.durable,
                        Some(rng) => torn_table(dir.live, dir.durable, rng),
                    };
                    // Push in reverse so that children are visited in name order.
                    stack.extend(table.values().rev().copied());
                    Node::Dir(MemDir {
                        live: table.clone(),
                        durable: table,
                    })
                }
                Node::File(file) => {
                    let bytes = match rng.as_mut() {
                        None => file.durable,
                        Some(rng) => torn_bytes(file.live, file.durable, rng),
                    };
                    Node::File(MemFile {
                        live: Arc::clone(&bytes),
                        durable: bytes,
                    })
                }
            };
            nodes.insert(id, node);
        }
        state.nodes = nodes;
        state.gc_threshold = (2 * state.nodes.len()).max(64);
        state.epoch += 1;
    }

    /// Makes the `n`-th mutating operation from now (`n = 1`: the next one; `0` counts as
    /// `1`) and every later one fail with an injected [`Error::Io`] (an `io::Error` of kind
    /// `Other` whose message says it is injected), until [`heal`](MemStorage::heal).
    pub fn fail_after(&self, n: u64) {
        let mut state = lock(&self.state);
        state.fail_from = Some(state.ops.saturating_add(n.max(1)));
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        lock(&self.state).fail_from = None;
    }

    /// With `true`, a `write_all` that fails by injection first writes a prefix of its buffer
    /// (at least one byte and not all of it, if the buffer has two bytes or more), of a length
    /// drawn from the storage's seed.
    pub fn set_short_writes(&self, enabled: bool) {
        lock(&self.state).short_writes = enabled;
    }

    /// The number of mutating operations attempted so far, failed ones included; see the type's
    /// documentation for which operations count.
    pub fn op_count(&self) -> u64 {
        lock(&self.state).ops
    }
}

impl Storage for MemStorage {
    fn create(&self, path: &str) -> Result<Box<dyn WritableFile>> {
        let comps = components(path, false)?;
        let mut state = lock(&self.state);
        state.mutation(path)?;
        let (parent, name, existing) = state.lookup_entry(path, &comps)?;
        let id = match existing {
            Some(id) => {
                let file = state
                    .file_mut(id)
                    .ok_or_else(|| mem_err(path, io::ErrorKind::InvalidInput, "is a directory"))?;
                file.live = Arc::new(Vec::new());
                id
            }
            None => {
                let id = state.add(Node::File(MemFile::default()));
                if let Some(dir) = state.dir_mut(parent) {
                    dir.live.insert(name.to_string(), id);
                }
                id
            }
        };
        Ok(Box::new(MemWritable {
            state: Arc::clone(&self.state),
            id,
            epoch: state.epoch,
            path: path.to_string(),
            pos: 0,
        }))
    }

    fn open(&self, path: &str) -> Result<Box<dyn ReadableFile>> {
        let comps = components(path, false)?;
        let state = lock(&self.state);
        let (_, _, id) = state.lookup_entry(path, &comps)?;
        let id = id.ok_or_else(|| mem_err(path, io::ErrorKind::NotFound, "no such file"))?;
        match state.nodes.get(&id) {
            Some(Node::File(file)) => Ok(Box::new(MemReadable {
                path: path.to_string(),
                data: Arc::clone(&file.live),
            })),
            _ => Err(mem_err(path, io::ErrorKind::InvalidInput, "is a directory")),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let from_comps = components(from, false)?;
        let to_comps = components(to, false)?;
        let mut state = lock(&self.state);
        state.mutation(from)?;
        let (from_parent, from_name, id) = state.lookup_entry(from, &from_comps)?;
        let id = id.ok_or_else(|| mem_err(from, io::ErrorKind::NotFound, "no such file"))?;
        let (to_parent, to_name, existing) = state.lookup_entry(to, &to_comps)?;
        if existing == Some(id) {
            return Ok(());
        }
        if state.is_dir(id) {
            if to_comps.starts_with(&from_comps) {
                return Err(mem_err(
                    from,
                    io::ErrorKind::InvalidInput,
                    "cannot move a directory into itself",
                ));
            }
            if existing.is_some() {
                return Err(mem_err(
                    to,
                    io::ErrorKind::AlreadyExists,
                    "a directory cannot replace an existing name",
                ));
            }
        } else if existing.is_some_and(|e| state.is_dir(e)) {
            return Err(mem_err(to, io::ErrorKind::InvalidInput, "is a directory"));
        }
        if let Some(dir) = state.dir_mut(from_parent) {
            dir.live.remove(from_name);
        }
        if let Some(dir) = state.dir_mut(to_parent) {
            dir.live.insert(to_name.to_string(), id);
        }
        Ok(())
    }

    fn remove_file(&self, path: &str) -> Result<()> {
        let comps = components(path, false)?;
        let mut state = lock(&self.state);
        state.mutation(path)?;
        let (parent, name, id) = state.lookup_entry(path, &comps)?;
        let id = id.ok_or_else(|| mem_err(path, io::ErrorKind::NotFound, "no such file"))?;
        if state.is_dir(id) {
            return Err(mem_err(path, io::ErrorKind::InvalidInput, "is a directory"));
        }
        if let Some(dir) = state.dir_mut(parent) {
            dir.live.remove(name);
        }
        Ok(())
    }

    fn create_dir_all(&self, path: &str) -> Result<()> {
        let comps = components(path, true)?;
        let mut state = lock(&self.state);
        state.mutation(path)?;
        let mut id = ROOT_ID;
        for comp in comps {
            let next = state.dir(id).and_then(|d| d.live.get(comp).copied());
            id = match next {
                Some(next) if state.is_dir(next) => next,
                Some(_) => {
                    return Err(mem_err(
                        path,
                        io::ErrorKind::AlreadyExists,
                        "a component is a file",
                    ))
                }
                None => {
                    let new = state.add(Node::Dir(MemDir::default()));
                    if let Some(dir) = state.dir_mut(id) {
                        dir.live.insert(comp.to_string(), new);
                    }
                    new
                }
            };
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &str) -> Result<()> {
        let comps = components(path, true)?;
        if comps.is_empty() {
            return Err(invalid(path, "the root directory cannot be removed"));
        }
        let mut state = lock(&self.state);
        state.mutation(path)?;
        let (parent, name, id) = state.lookup_entry(path, &comps)?;
        let id = id.ok_or_else(|| mem_err(path, io::ErrorKind::NotFound, "no such directory"))?;
        if !state.is_dir(id) {
            return Err(mem_err(
                path,
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        if let Some(dir) = state.dir_mut(parent) {
            dir.live.remove(name);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> Result<()> {
        let comps = components(dir, true)?;
        let mut state = lock(&self.state);
        state.mutation(dir)?;
        let id = state.lookup_dir(dir, &comps)?;
        if let Some(d) = state.dir_mut(id) {
            d.durable = d.live.clone();
        }
        state.maybe_collect_garbage();
        Ok(())
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let comps = components(dir, true)?;
        let state = lock(&self.state);
        let id = state.lookup_dir(dir, &comps)?;
        Ok(state
            .dir(id)
            .map(|d| d.live.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn exists(&self, path: &str) -> Result<bool> {
        let comps = components(path, true)?;
        let state = lock(&self.state);
        let mut id = ROOT_ID;
        for comp in comps {
            match state.dir(id).and_then(|d| d.live.get(comp)) {
                Some(next) => id = *next,
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// A directory table after a torn crash: each name whose live entry differs from its durable
/// one takes one of them at random.
fn torn_table(
    live: BTreeMap<String, u64>,
    mut durable: BTreeMap<String, u64>,
    rng: &mut SplitMix64,
) -> BTreeMap<String, u64> {
    let names: BTreeSet<String> = live.keys().chain(durable.keys()).cloned().collect();
    for name in names {
        let new = live.get(&name).copied();
        if new != durable.get(&name).copied() && rng.below(2) == 1 {
            match new {
                Some(id) => durable.insert(name, id),
                None => durable.remove(&name),
            };
        }
    }
    durable
}

/// A file's bytes after a torn crash.
fn torn_bytes(live: Arc<Vec<u8>>, durable: Arc<Vec<u8>>, rng: &mut SplitMix64) -> Arc<Vec<u8>> {
    if live == durable {
        return durable;
    }
    if live.starts_with(&durable) {
        let tail = (live.len() - durable.len()) as u64;
        let keep = durable.len() + rng.below(tail + 1) as usize;
        return Arc::new(live[..keep].to_vec());
    }
    if rng.below(2) == 0 {
        durable
    } else {
        let keep = rng.below(live.len() as u64 + 1) as usize;
        Arc::new(live[..keep].to_vec())
    }
}

struct MemWritable {
    state: Arc<Mutex<MemState>>,
    id: u64,
    epoch: u64,
    path: String,
    pos: u64,
}

impl fmt::Debug for MemWritable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemWritable")
            .field("path", &self.path)
            .field("len", &self.pos)
            .finish()
    }
}

/// Locks the state for a write handle opened in `epoch`; a crash since then kills the handle.
fn live_state<'a>(
    state: &'a Mutex<MemState>,
    epoch: u64,
    path: &str,
) -> Result<MutexGuard<'a, MemState>> {
    let state = lock(state);
    if state.epoch != epoch {
        return Err(mem_err(
            path,
            io::ErrorKind::Other,
            "file handle opened before a simulated crash",
        ));
    }
    Ok(state)
}

/// Writes `buf` at `pos` in the file `id`, if it still exists (writes to a file that no name
/// reaches any more are unobservable).
fn write_at(state: &mut MemState, id: u64, pos: u64, buf: &[u8]) {
    if let Some(file) = state.file_mut(id) {
        let data = Arc::make_mut(&mut file.live);
        let start = pos as usize;
        let end = start + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
    }
}

impl WritableFile for MemWritable {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        let mut state = live_state(&self.state, self.epoch, &self.path)?;
        if let Err(err) = state.mutation(&self.path) {
            if state.short_writes && buf.len() >= 2 {
                let n = 1 + state.rng.below(buf.len() as u64 - 1) as usize;
                write_at(&mut state, self.id, self.pos, &buf[..n]);
                self.pos += n as u64;
            }
            return Err(err);
        }
        write_at(&mut state, self.id, self.pos, buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        let mut state = live_state(&self.state, self.epoch, &self.path)?;
        state.mutation(&self.path)?;
        if let Some(file) = state.file_mut(self.id) {
            file.durable = Arc::clone(&file.live);
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.pos
    }
}

struct MemReadable {
    path: String,
    data: Arc<Vec<u8>>,
}

impl fmt::Debug for MemReadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemReadable")
            .field("path", &self.path)
            .field("len", &self.data.len())
            .finish()
    }
}

impl ReadableFile for MemReadable {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if !within(offset, buf.len(), self.len()) {
            return Err(past_end(&self.path, offset, buf.len(), self.len()));
        }
        let start = offset as usize;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }
}

/// SplitMix64: a small deterministic generator, enough for choosing crash outcomes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

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

    fn write_file(s: &dyn Storage, path: &str, bytes: &[u8], sync: bool) {
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

    /// A storage with the root's entries durable and `f` holding synced `"synced"`.
    fn mem_with_synced_file() -> MemStorage {
        let s = MemStorage::new();
        write_file(&s, "f", b"synced", true);
        s.sync_dir(ROOT).unwrap();
        s
    }

    #[test]
    fn crash_drops_unsynced_data_and_keeps_synced_data() {
        let s = mem_with_synced_file();
        let mut f = s.create("g").unwrap();
        s.sync_dir(ROOT).unwrap();
        f.write_all(b"never synced").unwrap();
        let mut h = s.create("f").unwrap(); // truncates f, unsynced
        h.write_all(b"rewritten").unwrap();
        assert_eq!(s.read_all("f", 100).unwrap(), b"rewritten");
        s.crash();
        assert_eq!(s.read_all("f", 100).unwrap(), b"synced");
        assert_eq!(s.read_all("g", 100).unwrap(), b"", "name durable, data not");

        let mut f = s.create("g").unwrap();
        f.write_all(b"abc").unwrap();
        f.sync().unwrap();
        f.write_all(b"def").unwrap();
        s.crash();
        assert_eq!(s.read_all("g", 100).unwrap(), b"abc");
    }

    #[test]
    fn crash_drops_an_unsynced_rename_and_keeps_a_synced_one() {
        let s = mem_with_synced_file();
        write_file(&s, "tmp", b"new", true);
        s.sync_dir(ROOT).unwrap();
        s.rename("tmp", "f").unwrap();
        s.crash();
        assert_eq!(s.read_all("f", 100).unwrap(), b"synced");
        assert_eq!(s.read_all("tmp", 100).unwrap(), b"new");

        s.rename("tmp", "f").unwrap();
        s.sync_dir(ROOT).unwrap();
        s.crash();
        assert_eq!(s.read_all("f", 100).unwrap(), b"new");
        assert!(!s.exists("tmp").unwrap());
    }

    #[test]
    fn crash_drops_files_and_directories_whose_directory_was_not_synced() {
        let s = mem_with_synced_file();
        write_file(&s, "n", b"file synced, name not", true);
        s.create_dir_all("x/y").unwrap();
        write_file(&s, "x/y/z", b"z", true);
        s.sync_dir("x/y").unwrap();
        s.sync_dir("x").unwrap();
        s.remove_file("f").unwrap();
        s.crash();
        assert!(!s.exists("n").unwrap());
        assert!(!s.exists("x").unwrap(), "root not synced after mkdir");
        assert!(s.exists("f").unwrap(), "an unsynced removal is undone");

        s.create_dir_all("x/y").unwrap();
        write_file(&s, "x/y/z", b"z", true);
        for dir in ["x/y", "x", ROOT] {
            s.sync_dir(dir).unwrap();
        }
        s.remove_file("f").unwrap();
        s.sync_dir(ROOT).unwrap();
        s.crash();
        assert_eq!(s.read_all("x/y/z", 10).unwrap(), b"z");
        assert!(!s.exists("f").unwrap());
    }

    #[test]
    fn handles_from_before_a_crash_fail_and_clones_share_state() {
        let s = mem_with_synced_file();
        let other = s.clone();
        let mut f = other.create("f").unwrap();
        f.write_all(b"x").unwrap();
        assert_eq!(s.read_all("f", 10).unwrap(), b"x", "a clone sees the write");
        let reader = s.open("f").unwrap();
        other.crash();
        assert!(f.write_all(b"y").is_err());
        assert!(f.sync().is_err());
        assert_eq!(s.read_all("f", 10).unwrap(), b"synced");
        let mut buf = [0u8];
        reader.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"x", "an open reader keeps its view");
        assert!(format!("{s:?}").contains("MemStorage"));
    }

    /// A torn crash of `f` (durable "AAAA", then 1000 unsynced bytes), returning its content.
    fn torn_outcome(seed: u64) -> Vec<u8> {
        let s = MemStorage::new();
        let mut f = s.create("f").unwrap();
        s.sync_dir(ROOT).unwrap();
        f.write_all(b"AAAA").unwrap();
        f.sync().unwrap();
        f.write_all(&[b'B'; 1000]).unwrap();
        s.crash_with(CrashMode::Torn { seed });
        s.read_all("f", 2000).unwrap()
    }

    #[test]
    fn torn_crash_keeps_the_synced_bytes_and_a_prefix_of_the_rest() {
        let mut lens = BTreeSet::new();
        for seed in 0..50 {
            let got = torn_outcome(seed);
            assert!(
                got.len() >= 4 && got.len() <= 1004,
                "seed {seed}: {}",
                got.len()
            );
            assert_eq!(&got[..4], b"AAAA", "seed {seed}");
            assert!(got[4..].iter().all(|&b| b == b'B'), "seed {seed}");
            lens.insert(got.len());
        }
        assert!(lens.len() > 10, "torn lengths vary with the seed: {lens:?}");
    }

    /// A history with unsynced data, names and a truncation, then a torn crash; returns
    /// every name with its content.
    fn torn_history(seed: u64) -> Vec<(String, Vec<u8>)> {
        let s = mem_with_synced_file();
        write_file(&s, "new-synced", b"0123456789", true);
        write_file(&s, "new-unsynced", b"abcdefghij", false);
        write_file(&s, "f", b"rewritten", false);
        s.remove_file("new-synced").unwrap();
        s.crash_with(CrashMode::Torn { seed });
        s.list_dir(ROOT)
            .unwrap()
            .into_iter()
            .map(|name| {
                let bytes = s.read_all(&name, 100).unwrap();
                (name, bytes)
            })
            .collect()
    }

    #[test]
    fn torn_crash_is_deterministic_for_a_seed() {
        assert_eq!(torn_outcome(7), torn_outcome(7));
        let mut outcomes = BTreeSet::new();
        for seed in 0..40 {
            let outcome = torn_history(seed);
            assert_eq!(outcome, torn_history(seed), "seed {seed}");
            let f = &outcome.iter().find(|(n, _)| n == "f").unwrap().1;
            assert!(f == b"synced" || b"rewritten".starts_with(f), "{f:?}");
            for (name, bytes) in &outcome {
                if name == "new-unsynced" {
                    assert!(b"abcdefghij".starts_with(bytes));
                }
            }
            outcomes.insert(outcome);
        }
        assert!(outcomes.len() > 5, "outcomes vary: {}", outcomes.len());
        // Some seed keeps the unsynced name and some drops it.
        let kept = outcomes
            .iter()
            .filter(|o| o.iter().any(|(n, _)| n == "new-unsynced"))
            .count();
        assert!(kept > 0 && kept < outcomes.len());
    }

    fn assert_injected<T: fmt::Debug>(result: Result<T>) {
        match result {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::Other);
                assert!(source.to_string().contains("injected"), "{source}");
            }
            other => panic!("expected an injected fault, got {other:?}"),
        }
    }

    #[test]
    fn fail_after_fails_exactly_the_nth_op_and_later_ones_until_heal() {
        let s = MemStorage::new();
        s.fail_after(3);
        s.create_dir_all("a").unwrap(); // 1
        let mut f = s.create("a/f").unwrap(); // 2
        assert_eq!(s.op_count(), 2);
        // Reads are not counted and do not fail.
        assert!(s.exists("a/f").unwrap());
        assert_eq!(s.list_dir("a").unwrap(), vec!["f"]);
        s.open("a/f").unwrap();
        assert_eq!(s.op_count(), 2);

        assert_injected(f.write_all(b"data")); // 3
        assert_injected(f.sync()); // 4
        assert_injected(s.create_dir_all("b")); // 5
        assert_injected(s.rename("a/f", "a/g")); // 6
        assert_injected(s.remove_file("a/f")); // 7
        assert_injected(s.remove_dir_all("a")); // 8
        assert_injected(s.sync_dir("a")); // 9
        assert_injected(s.create("a/h")); // 10
        assert_eq!(s.op_count(), 10);
        // Failed operations changed nothing.
        assert_eq!(s.list_dir(ROOT).unwrap(), vec!["a"]);
        assert_eq!(s.list_dir("a").unwrap(), vec!["f"]);
        assert_eq!(s.read_all("a/f", 10).unwrap(), b"");

        s.heal();
        f.write_all(b"data").unwrap();
        f.sync().unwrap();
        assert_eq!(s.read_all("a/f", 10).unwrap(), b"data");

        // fail_after(1) and fail_after(0) both fail the very next operation.
        s.fail_after(1);
        assert_injected(s.sync_dir(ROOT));
        s.heal();
        s.fail_after(0);
        assert_injected(s.sync_dir(ROOT));
        s.heal();
        s.sync_dir(ROOT).unwrap();
    }

    #[test]
    fn short_write_writes_a_prefix_then_fails() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut lens = BTreeSet::new();
        for seed in 0..10 {
            let s = MemStorage::with_seed(seed);
            s.set_short_writes(true);
            let mut f = s.create("f").unwrap();
            s.fail_after(1);
            assert_injected(f.write_all(&data));
            s.heal();
            let got = s.read_all("f", 2000).unwrap();
            assert!(!got.is_empty() && got.len() < data.len(), "{}", got.len());
            assert_eq!(got[..], data[..got.len()]);
            assert_eq!(f.len(), got.len() as u64);
            lens.insert(got.len());
        }
        assert!(lens.len() > 1, "{lens:?}");

        // Without short writes a failing write writes nothing.
        let s = MemStorage::new();
        let mut f = s.create("f").unwrap();
        s.fail_after(1);
        assert_injected(f.write_all(&data));
        assert_eq!(s.read_all("f", 2000).unwrap(), b"");
    }

    /// Sweeps every failure point of `write_atomic` followed by a crash: the target is then
    /// its old content (or absent) or the complete new content, never a part, and it is the
    /// new content whenever `write_atomic` succeeded.
    fn sweep_write_atomic(old: Option<&[u8]>, mode: CrashMode, short_writes: bool) {
        let new: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8 + 1).collect();
        let setup = || {
            let s = MemStorage::with_seed(11);
            s.set_short_writes(short_writes);
            s.create_dir_all("chk-1").unwrap();
            s.sync_dir(ROOT).unwrap();
            if let Some(old) = old {
                s.write_atomic("chk-1/_metadata", old).unwrap();
            }
            s
        };
        let clean = setup();
        let base = clean.op_count();
        clean.write_atomic("chk-1/_metadata", &new).unwrap();
        let ops = clean.op_count() - base;
        assert_eq!(ops, 5, "create, write, sync, rename, sync_dir");

        for n in 1..=ops + 1 {
            let s = setup();
            s.fail_after(n);
            let result = s.write_atomic("chk-1/_metadata", &new);
            assert_eq!(result.is_ok(), n > ops, "failure point {n}");
            s.crash_with(mode);
            s.heal();
            let got = if s.exists("chk-1/_metadata").unwrap() {
                Some(s.read_all("chk-1/_metadata", 10_000).unwrap())
            } else {
                None
            };
            let what = format!("failure point {n}, {mode:?}, old {old:?}");
            if result.is_ok() {
                assert_eq!(got.as_deref(), Some(&new[..]), "{what}");
            } else {
                assert!(
                    got.as_deref() == old || got.as_deref() == Some(&new[..]),
                    "{what}: partial target of {:?} bytes",
                    got.map(|g| g.len())
                );
            }
            for name in s.list_dir("chk-1").unwrap() {
                assert!(name == "_metadata" || is_temp_name(&name), "{what}: {name}");
            }
        }
    }

    #[test]
    fn write_atomic_then_crash_at_every_failure_point_is_never_partial() {
        for old in [None, Some(&b"old checkpoint metadata"[..])] {
            for short_writes in [false, true] {
                sweep_write_atomic(old, CrashMode::DropUnsynced, short_writes);
                for seed in 0..20 {
                    sweep_write_atomic(old, CrashMode::Torn { seed }, short_writes);
                }
            }
        }
    }

    #[test]
    fn garbage_is_collected_but_reachable_files_survive() {
        let s = MemStorage::new();
        for i in 0..500 {
            let name = format!("f{}", i % 3);
            s.write_atomic(&name, format!("v{i}").as_bytes()).unwrap();
        }
        let nodes = lock(&s.state).nodes.len();
        assert!(nodes < 100, "{nodes} nodes kept");
        s.crash();
        assert_eq!(s.read_all("f0", 10).unwrap(), b"v498");
        assert_eq!(s.read_all("f1", 10).unwrap(), b"v499");
        assert_eq!(s.read_all("f2", 10).unwrap(), b"v497");
        assert!(is_temp_name("x/_metadata.flowstate-tmp"));
        assert!(!is_temp_name("_metadata"));
    }
}
