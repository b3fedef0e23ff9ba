use thiserror::Error;

/// An error found while decoding bytes: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input ended before a value was complete.
    #[error("truncated input: needed {needed} more bytes, {available} available")]
    Truncated {
        /// Bytes the value still needed.
        needed: u64,
        /// Bytes that were left.
        available: u64,
    },
    /// A variable-length integer ran past ten bytes or overflowed 64 bits.
    #[error("malformed varint")]
    MalformedVarint,
    /// A checksum did not match the bytes it covers.
    #[error("checksum mismatch: expected {expected:#010x}, found {found:#010x}")]
    ChecksumMismatch {
        /// The checksum stored in the input.
        expected: u32,
        /// The checksum computed over the bytes read.
        found: u32,
    },
}
