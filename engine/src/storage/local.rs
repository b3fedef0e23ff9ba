//! [`LocalStorage`]: the [`Storage`] on the local file system.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
#[cfg(not(unix))]
use std::sync::{Mutex, PoisonError};

use super::{components, invalid, past_end, within, ReadableFile, Storage, WritableFile, ROOT};
use crate::error::{Error, Result};

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
