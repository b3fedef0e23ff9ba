use std::io;

use thiserror::Error;

/// An error found while encoding or decoding bytes: what is wrong and where.
///
/// Two families of variants:
///
/// - **Primitive decoders** over a bare byte slice ([`crate::codec::varint`]) know no file and
///   report [`Truncated`](FormatError::Truncated) and
///   [`MalformedVarint`](FormatError::MalformedVarint). The engine's codecs convert them into
///   their own error.
/// - **File readers and writers** ([`crate::snapshot`], [`crate::operator`], [`crate::table`])
///   name the file and the byte offset in every error they return: [`file`](FormatError::file)
///   and [`offset`](FormatError::offset) give them back. They never return the two primitive
///   variants.
///
/// Offsets are absolute positions in the file. Where a structure sits inside a compressed
/// block, the offset is the block's and the reason says where in the decompressed payload.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A primitive decoder ran out of input before a value was complete (no file context).
    #[error("truncated input: needed {needed} more bytes, {available} available")]
    Truncated {
        /// Bytes the value still needed.
        needed: u64,
        /// Bytes that were left.
        available: u64,
    },
    /// A variable-length integer ran past ten bytes, overflowed 64 bits or was not in its
    /// shortest form (no file context).
    #[error("malformed varint")]
    MalformedVarint,
    /// A file, or a structure inside it, ended before a value was complete.
    #[error("{file}: truncated at byte {offset}: needed {needed} bytes, {available} available")]
    TruncatedFile {
        /// The file's name.
        file: String,
        /// Where the incomplete value starts.
        offset: u64,
        /// Bytes the value needed.
        needed: u64,
        /// Bytes that were left in the file or structure.
        available: u64,
    },
    /// A checksum did not match the bytes it covers.
    #[error("{file}: checksum mismatch for the bytes at {offset}: stored {expected:#010x}, computed {found:#010x}")]
    ChecksumMismatch {
        /// The file's name.
        file: String,
        /// The first byte the checksum covers.
        offset: u64,
        /// The checksum stored in the file.
        expected: u32,
        /// The checksum computed over the bytes read.
        found: u32,
    },
    /// A magic number is not the format's: not a file of this kind, or its end is missing.
    #[error("{file}: bad magic number at byte {offset}")]
    BadMagic {
        /// The file's name.
        file: String,
        /// Where the magic number was expected.
        offset: u64,
    },
    /// The file has a format version this code does not read.
    #[error(
        "{file}: format version {found} is not supported (this code reads version {supported})"
    )]
    UnsupportedVersion {
        /// The file's name.
        file: String,
        /// The version found in the file.
        found: u32,
        /// The version this code reads and writes.
        supported: u32,
    },
    /// The bytes are well framed and their checksums match, but their content breaks a rule
    /// of the format (an unknown state index, unsorted map keys, a length that does not add
    /// up...).
    #[error("{file}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file's name.
        file: String,
        /// Where the offending value starts (the block's offset inside a compressed block).
        offset: u64,
        /// What rule is broken.
        reason: String,
    },
    /// A declared size or count is above a limit of the format or of the caller.
    #[error("{file}: {what} of {value} at byte {offset} exceeds the limit of {limit}")]
    LimitExceeded {
        /// The file's name.
        file: String,
        /// Where the declared value sits.
        offset: u64,
        /// What was declared (for example "block uncompressed length").
        what: &'static str,
        /// The declared value.
        value: u64,
        /// The limit in force.
        limit: u64,
    },
    /// Reading or writing the file failed.
    #[error("{file}: I/O error at byte {offset}: {source}")]
    Io {
        /// The file's name.
        file: String,
        /// Where the read or write started.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A writer or reader was called with arguments that break its contract (key groups out
    /// of order, an entry of the wrong shape, a key group outside the file's range...). Nothing
    /// is wrong with the file; the call is.
    #[error("{file}: invalid input: {reason}")]
    InvalidInput {
        /// The file's name.
        file: String,
        /// What is wrong with the call.
        reason: String,
    },
}

impl FormatError {
    /// The name of the file the error is about; `None` for the primitive variants.
    pub fn file(&self) -> Option<&str> {
        match self {
            FormatError::Truncated { .. } | FormatError::MalformedVarint => None,
            FormatError::TruncatedFile { file, .. }
            | FormatError::ChecksumMismatch { file, .. }
            | FormatError::BadMagic { file, .. }
            | FormatError::UnsupportedVersion { file, .. }
            | FormatError::Corrupt { file, .. }
            | FormatError::LimitExceeded { file, .. }
            | FormatError::Io { file, .. }
            | FormatError::InvalidInput { file, .. } => Some(file),
        }
    }

    /// The byte offset in the file the error points at; `None` for the primitive variants,
    /// [`UnsupportedVersion`](FormatError::UnsupportedVersion) (the version is at both ends)
    /// and [`InvalidInput`](FormatError::InvalidInput).
    pub fn offset(&self) -> Option<u64> {
        match self {
            FormatError::TruncatedFile { offset, .. }
            | FormatError::ChecksumMismatch { offset, .. }
            | FormatError::BadMagic { offset, .. }
            | FormatError::Corrupt { offset, .. }
            | FormatError::LimitExceeded { offset, .. }
            | FormatError::Io { offset, .. } => Some(*offset),
            FormatError::Truncated { .. }
            | FormatError::MalformedVarint
            | FormatError::UnsupportedVersion { .. }
            | FormatError::InvalidInput { .. } => None,
        }
    }

    /// Whether the error says that stored bytes are damaged or of an unknown format (as opposed
    /// to an I/O failure, which may pass, or a misuse of the API).
    pub fn is_corruption(&self) -> bool {
        !matches!(
            self,
            FormatError::Io { .. } | FormatError::InvalidInput { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_static_error() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<FormatError>();
    }

    #[test]
    fn file_and_offset_are_reported() {
        let e = FormatError::Corrupt {
            file: "a.snap".into(),
            offset: 42,
            reason: "x".into(),
        };
        assert_eq!(e.file(), Some("a.snap"));
        assert_eq!(e.offset(), Some(42));
        assert!(e.is_corruption());
        assert_eq!(e.to_string(), "a.snap: corrupt at byte 42: x");
        assert_eq!(FormatError::MalformedVarint.file(), None);
    }
}
