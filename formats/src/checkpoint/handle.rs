//! State handles: which files hold a task's keyed or operator state.
//!
//! A handle names its files by path, relative to the checkpoint storage's root for a
//! checkpoint or to the savepoint's directory for a savepoint, with the size each file had
//! when it was published.
//!
//! ## Format
//!
//! Integers are little-endian. Inside `_metadata` (see [`super::metadata`]) the records are
//! written bare:
//!
//! ```text
//! state file      u16 path length | path (UTF-8) | u64 size
//! keyed handle    u8 kind = 1 (key-group files) | u16 first key group | u16 last key group
//!                 | u32 file count (>= 1) | state file ...
//!              or u8 kind = 2 (LSM native) | u16 first | u16 last
//!                 | u32 file count (>= 1) | state file ... | u32 shared count | state file ...
//!              or u8 kind = 3 (heap chain) | u16 first | u16 last
//!                 | u32 file count (= 0) | u32 shared count (>= 1) | state file ...
//! operator handle u8 kind = 1 (one file) | state file
//! ```
//!
//! Standing alone (to send a handle from a task to whoever completes the checkpoint) a
//! handle is framed: magic (`FSKH` keyed, `FSOH` operator), u16 version 1, the bare record,
//! and a u32 CRC-32 over every byte before it.
//!
//! Kind 1 lists canonical key-group snapshot files. Kind 2 is a native snapshot of the LSM
//! backend: its first file is the native snapshot file (formats.md section 8), the other files
//! are table files private to the snapshot (a native savepoint), and the shared files are
//! tables under `shared/` that several checkpoints may reference (an incremental checkpoint).
//! Kind 3 is a heap backend's incremental checkpoint: no file of its own, and its shared files
//! are a chain, in order: a full canonical file (the base) and then delta files (formats.md
//! 3.11), each applied on top of the ones before. A decoder rejects kinds it does not know.

use super::{Frame, Reader, Result, Writer};

/// The longest path a handle may hold, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// The number of key groups there can be (the upper bound of max parallelism); a handle's
/// last key group is below it.
pub const MAX_KEY_GROUPS: u32 = 1 << 15;

/// The kind byte of a keyed handle made of files holding whole key groups.
pub const KEYED_KIND_KEY_GROUP_FILES: u8 = 1;

/// The kind byte of a keyed handle holding a native LSM snapshot: a native snapshot file,
/// private table files and shared table files.
pub const KEYED_KIND_LSM_NATIVE: u8 = 2;

/// The kind byte of a keyed handle holding a heap backend's incremental checkpoint: a chain of
/// shared files, a base then deltas.
pub const KEYED_KIND_HEAP_CHAIN: u8 = 3;

/// What a keyed state handle's files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyedHandleKind {
    /// Canonical key-group snapshot files, each holding the whole range (kind byte 1).
    #[default]
    KeyGroupFiles,
    /// A native LSM snapshot (kind byte 2): the first file is the native snapshot file, the
    /// others private table files; shared files are tables under `shared/`.
    LsmNative,
    /// A heap backend's incremental checkpoint (kind byte 3): no file of its own; the shared
    /// files are its chain, a full canonical file then delta files, in order.
    HeapChain,
}

impl KeyedHandleKind {
    /// The kind's byte in the file.
    pub fn to_byte(self) -> u8 {
        match self {
            KeyedHandleKind::KeyGroupFiles => KEYED_KIND_KEY_GROUP_FILES,
            KeyedHandleKind::LsmNative => KEYED_KIND_LSM_NATIVE,
            KeyedHandleKind::HeapChain => KEYED_KIND_HEAP_CHAIN,
        }
    }

    /// The kind of a byte, if it names one.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            KEYED_KIND_KEY_GROUP_FILES => Some(KeyedHandleKind::KeyGroupFiles),
            KEYED_KIND_LSM_NATIVE => Some(KeyedHandleKind::LsmNative),
            KEYED_KIND_HEAP_CHAIN => Some(KeyedHandleKind::HeapChain),
            _ => None,
        }
    }
}

/// The kind byte of an operator handle made of one file.
pub const OPERATOR_KIND_FILE: u8 = 1;

/// The frame of a keyed handle standing alone.
pub(crate) const KEYED_FRAME: Frame = Frame {
    magic: *b"FSKH",
    version: 2,
    oldest: 1,
};

/// The frame of an operator handle standing alone.
pub(crate) const OPERATOR_FRAME: Frame = Frame {
    magic: *b"FSOH",
    version: 2,
    oldest: 1,
};

/// The version a record of `files` is written in: 2 when every file carries a checksum, 1 when
/// none does (as version 1 wrote them); files of both kinds in one record are refused.
pub(crate) fn version_for<'a>(
    files: impl IntoIterator<Item = &'a StateFileRecord>,
) -> std::result::Result<u16, &'static str> {
    let (mut with, mut without) = (false, false);
    for f in files {
        if f.crc32c.is_some() {
            with = true;
        } else {
            without = true;
        }
    }
    match (with, without) {
        (true, true) => Err("some files carry a checksum and others do not"),
        (true, false) => Ok(2),
        _ => Ok(1),
    }
}

/// The smallest encoding of a state file: an empty path cannot occur, so one path byte.
pub(crate) const MIN_FILE_LEN: usize = 2 + 1 + 8;
/// The smallest encoding of a keyed handle (one file).
pub(crate) const MIN_KEYED_LEN: usize = 1 + 2 + 2 + 4 + MIN_FILE_LEN;
/// The smallest encoding of an operator handle.
pub(crate) const MIN_OPERATOR_LEN: usize = 1 + MIN_FILE_LEN;

/// Checks that `path` is a relative path a handle may hold: 1 to [`MAX_PATH_LEN`] bytes, `/`
/// as the only separator, no leading `/`, no empty, `.` or `..` component, and no `\`, `:`
/// or NUL. These are the path rules of the engine's storage, so a path read from a file can
/// never reach outside the directory it is relative to. Returns why a path is rejected.
pub fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains(['\\', ':', '\0']) {
        return Err("path contains '\\', ':' or NUL");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty path component"),
            "." | ".." => return Err("'.' or '..' path component"),
            _ => {}
        }
    }
    Ok(())
}

/// One published state file: its path, its size in bytes and (version 2) the CRC-32 of its
/// whole content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateFileRecord {
    /// The path, relative to the checkpoint storage's root (a checkpoint) or to the
    /// savepoint's directory (a savepoint); see [`check_relative_path`].
    pub path: String,
    /// The file's length in bytes.
    pub size: u64,
    /// The CRC-32 of the file's whole content: binds the file to the record, so that another
    /// file of the same size in its place is detected. `None` in version-1 files.
    pub crc32c: Option<u32>,
}

impl StateFileRecord {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let at = r.pos();
        let path = r.str16()?;
        if let Err(reason) = check_relative_path(&path) {
            return Err(r.invalid(at, format!("state file path {path:?}: {reason}")));
        }
        let size = r.u64()?;
        let crc32 = if r.version >= 2 { Some(r.u32()?) } else { None };
        Ok(StateFileRecord {
            path,
            size,
            crc32c: crc32,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        if let Err(reason) = check_relative_path(&self.path) {
            return Err(w.invalid(format!("state file path {:?}: {reason}", self.path)));
        }
        w.str16(&self.path)?;
        w.u64(self.size);
        match (w.version >= 2, self.crc32c) {
            (true, Some(crc)) => w.u32(crc),
            (false, None) => {}
            _ => {
                return Err(w.invalid(format!(
                    "state file {}: checksums on some files only",
                    self.path
                )))
            }
        }
        Ok(())
    }
}

/// The keyed state of a key-group range, held in files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyedStateHandleRecord {
    /// What the files are.
    pub kind: KeyedHandleKind,
    /// The first and the last key group (inclusive); `first <= last < 32768`.
    pub key_group_range: (u16, u16),
    /// The files: at least one, none for [`KeyedHandleKind::HeapChain`].
    pub files: Vec<StateFileRecord>,
    /// The shared files (kinds [`KeyedHandleKind::LsmNative`] and, at least one,
    /// [`KeyedHandleKind::HeapChain`]; empty otherwise).
    pub shared: Vec<StateFileRecord>,
}

impl KeyedStateHandleRecord {
    /// Encodes the handle standing alone (framed, with its checksum). `file` names the
    /// destination in errors about a record that breaks the format's rules.
    pub fn encode(&self, file: &str) -> Result<Vec<u8>> {
        let version = version_for(self.files.iter().chain(&self.shared)).map_err(|reason| {
            crate::FormatError::InvalidInput {
                file: file.to_string(),
                reason: reason.into(),
            }
        })?;
        let mut w = KEYED_FRAME.writer_of(file, version);
        self.write(&mut w)?;
        Ok(w.finish())
    }

    /// Decodes a handle standing alone, as written by [`encode`](Self::encode); errors name
    /// `file`.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Self> {
        let mut r = KEYED_FRAME.open(bytes, file)?;
        let handle = Self::read(&mut r)?;
        r.finish()?;
        Ok(handle)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let at = r.pos();
        let byte = r.u8()?;
        let Some(kind) = KeyedHandleKind::from_byte(byte) else {
            return Err(r.invalid(at, format!("unknown keyed state handle kind {byte}")));
        };
        let at = r.pos();
        let first = r.u16()?;
        let last = r.u16()?;
        if let Err(reason) = check_range(first, last) {
            return Err(r.invalid(at, reason));
        }
        let at = r.pos();
        let count = r.count(MIN_FILE_LEN)?;
        let chain = kind == KeyedHandleKind::HeapChain;
        if count == 0 && !chain {
            return Err(r.invalid(at, "a keyed state handle lists no file"));
        }
        if count > 0 && chain {
            return Err(r.invalid(at, "a heap chain handle lists no file of its own"));
        }
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            files.push(StateFileRecord::read(r)?);
        }
        let mut shared = Vec::new();
        if kind != KeyedHandleKind::KeyGroupFiles {
            let at = r.pos();
            let count = r.count(MIN_FILE_LEN)?;
            if count == 0 && chain {
                return Err(r.invalid(at, "a heap chain handle lists an empty chain"));
            }
            shared.reserve(count);
            for _ in 0..count {
                shared.push(StateFileRecord::read(r)?);
            }
        }
        Ok(KeyedStateHandleRecord {
            kind,
            key_group_range: (first, last),
            files,
            shared,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        if self.kind == KeyedHandleKind::KeyGroupFiles && !self.shared.is_empty() {
            return Err(w.invalid("a key-group-files handle lists no shared file"));
        }
        w.u8(self.kind.to_byte());
        let (first, last) = self.key_group_range;
        check_range(first, last).map_err(|reason| w.invalid(reason))?;
        w.u16(first);
        w.u16(last);
        let chain = self.kind == KeyedHandleKind::HeapChain;
        if self.files.is_empty() && !chain {
            return Err(w.invalid("a keyed state handle lists no file"));
        }
        if chain && (!self.files.is_empty() || self.shared.is_empty()) {
            return Err(w.invalid(
                "a heap chain handle lists no file of its own and at least one shared file",
            ));
        }
        w.count(self.files.len())?;
        for file in &self.files {
            file.write(w)?;
        }
        if self.kind != KeyedHandleKind::KeyGroupFiles {
            w.count(self.shared.len())?;
            for file in &self.shared {
                file.write(w)?;
            }
        }
        Ok(())
    }
}

fn check_range(first: u16, last: u16) -> Result<(), String> {
    if first > last || u32::from(last) >= MAX_KEY_GROUPS {
        Err(format!(
            "key-group range {first}..={last} is not a valid range below {MAX_KEY_GROUPS}"
        ))
    } else {
        Ok(())
    }
}

/// The operator (non-keyed) state of one task, held in one file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperatorStateHandleRecord {
    /// The file.
    pub file: StateFileRecord,
}

impl OperatorStateHandleRecord {
    /// Encodes the handle standing alone (framed, with its checksum). `file` names the
    /// destination in errors about a record that breaks the format's rules.
    pub fn encode(&self, file: &str) -> Result<Vec<u8>> {
        let version =
            version_for([&self.file]).map_err(|reason| crate::FormatError::InvalidInput {
                file: file.to_string(),
                reason: reason.into(),
            })?;
        let mut w = OPERATOR_FRAME.writer_of(file, version);
        self.write(&mut w)?;
        Ok(w.finish())
    }

    /// Decodes a handle standing alone, as written by [`encode`](Self::encode); errors name
    /// `file`.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Self> {
        let mut r = OPERATOR_FRAME.open(bytes, file)?;
        let handle = Self::read(&mut r)?;
        r.finish()?;
        Ok(handle)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let at = r.pos();
        let kind = r.u8()?;
        if kind != OPERATOR_KIND_FILE {
            return Err(r.invalid(at, format!("unknown operator state handle kind {kind}")));
        }
        Ok(OperatorStateHandleRecord {
            file: StateFileRecord::read(r)?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u8(OPERATOR_KIND_FILE);
        self.file.write(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FormatError;

    fn keyed() -> KeyedStateHandleRecord {
        KeyedStateHandleRecord {
            kind: KeyedHandleKind::KeyGroupFiles,
            shared: vec![],
            key_group_range: (3, 9),
            files: vec![
                StateFileRecord {
                    crc32c: None,
                    path: "chk-2/op-1-keyed".into(),
                    size: 1234,
                },
                StateFileRecord {
                    crc32c: None,
                    path: "chk-2/op-1-keyed-b".into(),
                    size: 0,
                },
            ],
        }
    }

    #[test]
    fn handles_round_trip_standing_alone() {
        let bytes = keyed().encode("h").unwrap();
        assert_eq!(&bytes[..6], b"FSKH\x01\x00");
        assert_eq!(
            KeyedStateHandleRecord::decode(&bytes, "h").unwrap(),
            keyed()
        );
        let op = OperatorStateHandleRecord {
            file: StateFileRecord {
                crc32c: None,
                path: "sp/offsets".into(),
                size: u64::MAX,
            },
        };
        let bytes = op.encode("h").unwrap();
        assert_eq!(OperatorStateHandleRecord::decode(&bytes, "h").unwrap(), op);
        // A keyed handle is not an operator handle.
        assert!(matches!(
            OperatorStateHandleRecord::decode(&keyed().encode("h").unwrap(), "h"),
            Err(FormatError::BadMagic { .. })
        ));
    }

    fn native() -> KeyedStateHandleRecord {
        KeyedStateHandleRecord {
            kind: KeyedHandleKind::LsmNative,
            key_group_range: (0, 63),
            files: vec![StateFileRecord {
                crc32c: None,
                path: "chk-4/op-0-keyed".into(),
                size: 310,
            }],
            shared: vec![
                StateFileRecord {
                    crc32c: None,
                    path: "shared/0123-000001.sst".into(),
                    size: 4096,
                },
                StateFileRecord {
                    crc32c: None,
                    path: "shared/0123-000002.sst".into(),
                    size: 8192,
                },
            ],
        }
    }

    #[test]
    fn native_handles_round_trip_with_their_shared_files() {
        let bytes = native().encode("h").unwrap();
        assert_eq!(bytes[6], KEYED_KIND_LSM_NATIVE);
        assert_eq!(
            KeyedStateHandleRecord::decode(&bytes, "h").unwrap(),
            native()
        );
        let mut empty = native();
        empty.shared.clear();
        let bytes = empty.encode("h").unwrap();
        assert_eq!(KeyedStateHandleRecord::decode(&bytes, "h").unwrap(), empty);
        // A key-group-files handle cannot carry shared files.
        let mut wrong = native();
        wrong.kind = KeyedHandleKind::KeyGroupFiles;
        assert!(wrong.encode("h").is_err());
        // Every flip and truncation of a native handle is an error too.
        let bytes = native().encode("h").unwrap();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(
                KeyedStateHandleRecord::decode(&damaged, "h").is_err(),
                "{i}"
            );
            assert!(
                KeyedStateHandleRecord::decode(&bytes[..i], "h").is_err(),
                "{i}"
            );
        }
    }

    #[test]
    fn every_flip_and_truncation_of_a_handle_is_an_error() {
        let bytes = keyed().encode("h").unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(
                    KeyedStateHandleRecord::decode(&damaged, "h").is_err(),
                    "{i}.{bit}"
                );
            }
            assert!(
                KeyedStateHandleRecord::decode(&bytes[..i], "h").is_err(),
                "len {i}"
            );
        }
    }

    #[test]
    fn paths_that_escape_or_are_odd_are_rejected() {
        for bad in [
            "", "/abs", "a//b", "a/", "./a", "a/../b", "..", "a\\b", "c:x", "a\0b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
            let mut h = keyed();
            h.files[0].path = bad.into();
            assert!(
                matches!(h.encode("h"), Err(FormatError::InvalidInput { .. })),
                "{bad:?}"
            );
        }
        assert!(check_relative_path(&"a".repeat(MAX_PATH_LEN)).is_ok());
        assert!(check_relative_path(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
        for good in ["a", "chk-1/x", "sp/2024/a.b", "..a/b..", "a/.b"] {
            assert!(check_relative_path(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn invalid_ranges_and_empty_file_lists_are_refused_by_the_encoder() {
        for range in [(5, 4), (0, 32768), (32768, 32768)] {
            let mut h = keyed();
            h.key_group_range = range;
            assert!(h.encode("h").is_err(), "{range:?}");
        }
        let mut h = keyed();
        h.key_group_range = (0, 32767);
        assert!(h.encode("h").is_ok());
        h.files.clear();
        let err = h.encode("h").unwrap_err();
        assert_eq!(err.file(), Some("h"));
        assert!(err.to_string().contains("no file"), "{err}");
    }
}
