//! Limits a reader enforces on declared sizes before it allocates.

/// The most bytes of one block (a key-group block of a snapshot, a state of an operator-state
/// file, a data block of an LSM table), before or after compression: 64 MiB. Writers never produce larger blocks; readers
/// refuse them.
pub const MAX_BLOCK_LEN: u32 = 64 << 20;

/// The most bytes of a snapshot's meta block, or of an LSM table's index, filter, properties or
/// range tombstone block: 16 MiB.
pub const MAX_META_LEN: u32 = 16 << 20;

/// Limits a reader applies on top of the format's own maxima ([`MAX_BLOCK_LEN`],
/// [`MAX_META_LEN`]); a limit above the format's maximum has the maximum's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// The largest block, stored or uncompressed, the reader accepts.
    pub max_block_len: u32,
    /// The largest meta block the reader accepts.
    pub max_meta_len: u32,
}

impl Default for ReadLimits {
    /// The format's maxima.
    fn default() -> Self {
        ReadLimits {
            max_block_len: MAX_BLOCK_LEN,
            max_meta_len: MAX_META_LEN,
        }
    }
}

impl ReadLimits {
    /// The block limit in force: the smaller of the caller's and the format's.
    pub fn block_len(&self) -> u32 {
        self.max_block_len.min(MAX_BLOCK_LEN)
    }

    /// The meta block limit in force.
    pub fn meta_len(&self) -> u32 {
        self.max_meta_len.min(MAX_META_LEN)
    }
}
