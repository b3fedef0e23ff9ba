//! Byte layouts of checkpoints: the `_metadata` file of a completed checkpoint or savepoint
//! ([`metadata`]) and the keyed and operator state handles it lists ([`handle`]).
//!
//! Every decoder here takes the whole file as bytes plus the file's name, checks the magic,
//! the format version and the CRC-32 before it interprets anything, checks every length and
//! count against the bytes that remain before it allocates, and returns a
//! [`FormatError`] naming the file and the byte offset of the first bad field. It
//! never panics. Encoders check the same rules, so whatever they write decodes again, and
//! every record has exactly one encoding (decoding then encoding gives the same bytes).
//!
//! spec/formats.md section 4 draws the layouts byte by byte.
//!
//! ```
//! use flowstate_formats::checkpoint::{
//!     CheckpointMetadataRecord, KeyedHandleKind, KeyedStateHandleRecord, SnapshotKindRecord,
//!     StateFileRecord, TaskStateRecord,
//! };
//!
//! let metadata = CheckpointMetadataRecord {
//!     checkpoint_id: 7,
//!     kind: SnapshotKindRecord::Checkpoint,
//!     timestamp_millis: 1_700_000_000_000,
//!     tasks: vec![TaskStateRecord {
//!         operator_id: "window-agg".into(),
//!         subtask_index: 0,
//!         parallelism: 1,
//!         max_parallelism: 128,
//!         keyed: vec![KeyedStateHandleRecord {
//!             kind: KeyedHandleKind::KeyGroupFiles,
//!             key_group_range: (0, 127),
//!             files: vec![StateFileRecord {
//!                 path: "chk-7/window-agg-0".into(),
//!                 size: 4096,
//!                 crc32c: Some(0x1c29_4b4d),
//!             }],
//!             shared: vec![],
//!         }],
//!         operator: vec![],
//!     }],
//! };
//! let bytes = metadata.encode("chk-7/_metadata")?;
//! assert_eq!(&bytes[..4], b"FSCM");
//! assert_eq!(CheckpointMetadataRecord::decode(&bytes, "chk-7/_metadata")?, metadata);
//!
//! let mut damaged = bytes.clone();
//! damaged[20] ^= 0x01;
//! let err = CheckpointMetadataRecord::decode(&damaged, "chk-7/_metadata").unwrap_err();
//! assert!(err.to_string().contains("chk-7/_metadata"));
//! # Ok::<(), flowstate_formats::FormatError>(())
//! ```

use crate::codec::checksum;
use crate::FormatError;

pub mod handle;
pub mod metadata;
pub mod native_snapshot;
pub mod origin;

pub use handle::{
    check_relative_path, KeyedHandleKind, KeyedStateHandleRecord, OperatorStateHandleRecord,
    StateFileRecord,
};
pub use metadata::{CheckpointMetadataRecord, SnapshotKindRecord, TaskStateRecord};
pub use native_snapshot::{NativeSnapshotRecord, NativeTableRecord, TableLocation};
pub use origin::{FileOrigin, OriginKind};

/// The result type of this module: errors are [`FormatError`]s naming the file, and the
/// byte offset where there is one.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// The length of a framed file's header: magic (4 bytes) and version (u16).
pub(crate) const HEADER_LEN: usize = 6;
/// The length of a framed file's trailer: the CRC-32 (u32).
pub(crate) const TRAILER_LEN: usize = 4;

/// Identifies one framed format: `magic | version u16 LE | body | CRC-32 u32 LE`, the CRC
/// covering every byte before it. A reader accepts versions `oldest ..= version`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) magic: [u8; 4],
    pub(crate) version: u16,
    pub(crate) oldest: u16,
}

impl Frame {
    /// Checks the header and the checksum of `bytes` and returns a reader over the body.
    pub(crate) fn open<'a>(&self, bytes: &'a [u8], file: &'a str) -> Result<Reader<'a>> {
        let min_len = (HEADER_LEN + TRAILER_LEN) as u64;
        if bytes.len() < 4 || bytes[..4] != self.magic {
            if bytes.len() < 4 && self.magic.starts_with(bytes) {
                return Err(truncated(file, 0, min_len, bytes.len()));
            }
            return Err(FormatError::BadMagic {
                file: file.to_string(),
                offset: 0,
            });
        }
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(truncated(file, 0, min_len, bytes.len()));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version < self.oldest || version > self.version {
            return Err(FormatError::UnsupportedVersion {
                file: file.to_string(),
                found: u32::from(version),
                supported: u32::from(self.version),
            });
        }
        let crc_at = bytes.len() - TRAILER_LEN;
        let (covered, trailer) = bytes.split_at(crc_at);
        let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        checksum::verify(covered, expected, file, 0)?;
        Ok(Reader {
            bytes: covered,
            pos: HEADER_LEN,
            file,
            version,
        })
    }

    /// A writer whose output starts with this frame's header, of version `version`.
    pub(crate) fn writer_of<'a>(&self, file: &'a str, version: u16) -> Writer<'a> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&version.to_le_bytes());
        Writer { out, file, version }
    }
}

fn truncated(file: &str, offset: usize, needed: u64, available: usize) -> FormatError {
    FormatError::TruncatedFile {
        file: file.to_string(),
        offset: offset as u64,
        needed,
        available: available as u64,
    }
}

/// Reads fields from the body of a framed file, tracking the offset for errors.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    /// The file up to (not including) the checksum trailer.
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
    /// The format version of the file being read.
    pub(crate) version: u16,
}

impl<'a> Reader<'a> {
    /// The current offset in the file.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A [`FormatError::Corrupt`] at `offset`.
    pub(crate) fn invalid(&self, offset: usize, reason: impl Into<String>) -> FormatError {
        FormatError::Corrupt {
            file: self.file.to_string(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(truncated(self.file, self.pos, n as u64, self.remaining()));
        }
        let bytes = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A string: u16 LE byte length, then UTF-8.
    pub(crate) fn str16(&mut self) -> Result<String> {
        let at = self.pos;
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.invalid(at, "string is not UTF-8"))
    }

    /// A u32 count of elements of at least `min_size` bytes each, checked against the bytes
    /// that remain, so that a lying count cannot make the caller allocate.
    pub(crate) fn count(&mut self, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let count = self.u32()? as usize;
        let needed = (count as u64).saturating_mul(min_size as u64);
        if needed > self.remaining() as u64 {
            return Err(truncated(self.file, at, needed, self.remaining()));
        }
        Ok(count)
    }

    /// Fails unless every byte of the body was read.
    pub(crate) fn finish(self) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.invalid(
                self.pos,
                format!("{} trailing bytes before the checksum", self.remaining()),
            ))
        }
    }
}

/// Writes fields of a framed file, with the offset for errors about the record.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    out: Vec<u8>,
    file: &'a str,
    /// The format version being written.
    pub(crate) version: u16,
}

impl Writer<'_> {
    /// A [`FormatError::InvalidInput`]: the record breaks a rule of the format at the
    /// current offset.
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> FormatError {
        FormatError::InvalidInput {
            file: self.file.to_string(),
            reason: format!("at byte {}: {}", self.out.len(), reason.into()),
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// A string of at most `u16::MAX` bytes.
    pub(crate) fn str16(&mut self, s: &str) -> Result<()> {
        let len = u16::try_from(s.len())
            .map_err(|_| self.invalid(format!("string of {} bytes is over 65535", s.len())))?;
        self.u16(len);
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// A count of elements.
    pub(crate) fn count(&mut self, n: usize) -> Result<()> {
        let n = u32::try_from(n).map_err(|_| self.invalid(format!("{n} elements exceed u32")))?;
        self.u32(n);
        Ok(())
    }

    /// Appends the CRC-32 trailer and returns the file's bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let crc = checksum::crc32(&self.out);
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out
    }
}
