//! The engine's one memory map: read-only maps of immutable files, behind
//! [`LocalStorage::open_mapped`](crate::storage::LocalStorage) (spec/unsafe.md lists the site).
//!
//! A read through a map is a bounds check and a copy from the page cache, where a `pread`
//! is a system call and the same copy; benches/README.md ("Table reads: mmap vs pread")
//! gives the measurement that justifies it.
//!
//! # The invariant
//!
//! A mapped file must not be written, truncated or replaced in place while it is mapped: a
//! write would change bytes the program holds as `&[u8]`, and a truncation turns reads of the
//! lost pages into `SIGBUS`. Removing the file's name (unlinking it) or renaming another file
//! over it is fine: the map keeps the old inode alive until it is dropped.
//!
//! The engine maps only LSM table files, which satisfy it: a table is written under a
//! temporary name, synced, renamed into place and never written again; it is removed only
//! after it became obsolete (and the last reader dropped it) or at a tree's open when the
//! manifest does not list it. The tree's directory belongs to the tree: nothing else in the
//! process writes there, and another process that modifies files there breaks the contract
//! (as it would corrupt the tree with plain reads too, only then without undefined behavior).
//! The tests do not truncate a mapped file to show the failure, since that crashes the test
//! process with `SIGBUS`.

use std::fs::File;
use std::io;
use std::path::PathBuf;

#[cfg(unix)]
use memmap2::Advice;
use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};
use crate::storage::{past_end, ReadableFile};

/// A read-only map of a whole file, read with checked copies.
#[derive(Debug)]
pub(crate) struct MappedFile {
    path: PathBuf,
    /// `None` for an empty file, which cannot be mapped on every platform (`mmap` of length 0
    /// is `EINVAL` on Linux).
    map: Option<Mmap>,
}

impl MappedFile {
    /// Maps the first `len` bytes of `file` (its length when it was opened), read-only.
    ///
    /// The caller promises the [invariant](self#the-invariant): `file` is not written,
    /// truncated or replaced in place while the returned value lives.
    pub(crate) fn map(path: PathBuf, file: &File, len: u64) -> Result<MappedFile> {
        if len == 0 {
            return Ok(MappedFile { path, map: None });
        }
        let Ok(n) = usize::try_from(len) else {
            return Err(Error::io(
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a file of {len} bytes does not fit in the address space"),
                ),
            ));
        };
        // SAFETY: `Mmap` hands out the mapped bytes as `&[u8]`, which is sound only while no
        // one modifies or truncates the file under the map. The caller of `map` promises that
        // (module documentation): the engine maps only table files, which are complete and
        // synced before they are renamed into place and never written again afterwards;
        // they are only unlinked, which leaves the mapped inode intact. `len` is the file's
        // length at open, so the map covers no page past its end.
        let map =
            unsafe { MmapOptions::new().len(n).map(file) }.map_err(|e| Error::io(&path, e))?;
        // Point reads touch one block here and there: no read-ahead of neighbouring pages.
        // Only a hint, so a failure changes nothing.
        #[cfg(unix)]
        let _ = map.advise(Advice::Random);
        Ok(MappedFile {
            path,
            map: Some(map),
        })
    }

    /// The mapped bytes (none for an empty file).
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl ReadableFile for MappedFile {
    fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match ReadableFile::bytes_at(self, offset, buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(past_end(&self.path, offset, buf.len(), self.len())),
        }
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        flowstate_formats::RandomAccess::bytes_at(self.bytes(), offset, len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{LocalStorage, Storage};

    fn storage_with(name: &str, bytes: &[u8]) -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        storage.write_atomic(name, bytes).unwrap();
        (dir, storage)
    }

    fn mapped(storage: &LocalStorage, name: &str) -> Box<dyn ReadableFile> {
        storage
            .open_mapped(name)
            .unwrap()
            .expect("local storage maps files")
    }

    fn assert_past_end(err: Error, offset: u64) {
        match &err {
            Error::Io { path, source } => {
                assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof, "{err}");
                assert!(path.ends_with("t.sst"), "{err}");
                assert!(err.to_string().contains(&offset.to_string()), "{err}");
            }
            other => panic!("not an I/O error: {other}"),
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Miri cannot map files
    fn an_empty_file_is_opened_without_a_map_and_reads_only_nothing() {
        let (_dir, storage) = storage_with("t.sst", b"");
        let file = mapped(&storage, "t.sst");
        assert_eq!(file.len(), 0);
        assert!(file.is_empty());
        file.read_at(0, &mut []).unwrap();
        assert_past_end(file.read_at(0, &mut [0]).unwrap_err(), 0);
        assert_past_end(file.read_at(1, &mut []).unwrap_err(), 1);
        assert_past_end(file.read_at(u64::MAX, &mut []).unwrap_err(), u64::MAX);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn reads_at_every_boundary_match_the_file_and_past_the_end_is_an_error() {
        // Spans more than one page, and ends off a page boundary.
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let (_dir, storage) = storage_with("t.sst", &data);
        let file = mapped(&storage, "t.sst");
        let len = data.len() as u64;
        assert_eq!(file.len(), len);
        for &offset in &[0, 1, 4095, 4096, 4097, 8191, 8192, 9_999, 10_000] {
            for &n in &[0usize, 1, 2, 4096, 10_000] {
                let mut buf = vec![0xaa; n];
                let fits = offset + n as u64 <= len;
                match file.read_at(offset, &mut buf) {
                    Ok(()) => {
                        assert!(fits, "read of {n} at {offset} succeeded");
                        assert_eq!(buf, data[offset as usize..offset as usize + n]);
                    }
                    Err(err) => {
                        assert!(!fits, "read of {n} at {offset}: {err}");
                        assert_past_end(err, offset);
                        assert!(buf.iter().all(|&b| b == 0xaa), "a failed read wrote");
                    }
                }
            }
        }
        let mut whole = vec![0; data.len()];
        file.read_at(0, &mut whole).unwrap();
        assert_eq!(whole, data);
        assert_past_end(file.read_at(u64::MAX, &mut [0]).unwrap_err(), u64::MAX);
        assert_past_end(
            file.read_at(u64::MAX - 1, &mut [0; 4]).unwrap_err(),
            u64::MAX - 1,
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_map_agrees_with_pread_and_keeps_its_bytes_after_the_name_is_removed_or_replaced() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let (_dir, storage) = storage_with("t.sst", &data);
        let file = mapped(&storage, "t.sst");
        let plain = storage.open("t.sst").unwrap();
        let (mut a, mut b) = (vec![0; 777], vec![0; 777]);
        file.read_at(1234, &mut a).unwrap();
        plain.read_at(1234, &mut b).unwrap();
        assert_eq!(a, b);

        // How tables go: replaced by rename (a new inode), or unlinked when obsolete.
        storage.write_atomic("t.sst", b"other").unwrap();
        storage.remove_file("t.sst").unwrap();
        let mut whole = vec![0; data.len()];
        file.read_at(0, &mut whole).unwrap();
        assert_eq!(whole, data);
        drop(file);
        assert!(!storage.exists("t.sst").unwrap());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn threads_read_one_map_concurrently() {
        let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i ^ (i >> 8)) as u8).collect();
        let (_dir, storage) = storage_with("t.sst", &data);
        let file: Arc<dyn ReadableFile> = Arc::from(mapped(&storage, "t.sst"));
        let data = Arc::new(data);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (file, data) = (Arc::clone(&file), Arc::clone(&data));
                std::thread::spawn(move || {
                    let mut x = t + 1;
                    let mut buf = vec![0; 100];
                    for _ in 0..2000 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let offset = (x >> 33) % (data.len() as u64 - 100);
                        file.read_at(offset, &mut buf).unwrap();
                        assert_eq!(buf, data[offset as usize..offset as usize + 100]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn only_regular_files_are_mapped_and_missing_ones_are_errors() {
        let (_dir, storage) = storage_with("t.sst", b"x");
        storage.create_dir_all("d").unwrap();
        // A directory is not a regular file: refused before anything is opened.
        assert!(matches!(
            storage.open_mapped("d"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            storage.open_mapped("missing"),
            Err(Error::Io { .. })
        ));
        assert!(matches!(
            storage.open_mapped("../t.sst"),
            Err(Error::InvalidPath { .. })
        ));
    }
}
