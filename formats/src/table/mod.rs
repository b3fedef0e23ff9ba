//! The LSM table file (SSTable): an immutable, sorted run of entries of the LSM backend, with
//! prefix-compressed data blocks, a block index, a bloom filter over whole keys and key
//! prefixes, range tombstones and a properties block.
//!
//! [`TableBuilder`] streams a table out from entries in strictly ascending key order;
//! [`TableReader`] opens one through [`RandomAccess`] (footer, index, filter, properties and
//! range tombstones only) and answers point lookups and ordered scans, reading one data block
//! at a time through [`TableReader`]'s single block-reading path, in front of which the
//! engine may put a [`BlockCache`].
//!
//! The table knows nothing of state: keys are byte strings compared lexicographically (the
//! tree lays them out as `state id | key group (big-endian u16) | key | namespace [| map user
//! key]`). There are no sequence numbers: within a table a key appears at most once, and a
//! newer table shadows an older one. A table's range tombstones delete keys of *older*
//! tables only; its own point entries are newer than its own range tombstones.
//!
//! ```
//! use flowstate_formats::table::{EntryKind, TableBuilder, TableOptions, TableReader};
//! use flowstate_formats::FormatError;
//!
//! let mut file = Vec::new();
//! let mut b = TableBuilder::new(&mut file, TableOptions::default(), "000001.sst")?;
//! b.add(b"apple", EntryKind::Put, b"red")?;
//! b.add(b"banana", EntryKind::Merge, b"+yellow")?;
//! b.add(b"cherry", EntryKind::Delete, b"")?;
//! b.add_range_tombstone(b"x", b"z")?;
//! let summary = b.finish()?;
//! assert_eq!(summary.entries(), 3);
//!
//! let table = TableReader::open(&file[..], "000001.sst")?;
//! assert_eq!(table.get(b"apple")?, Some((EntryKind::Put, b"red".to_vec())));
//! assert_eq!(table.get(b"avocado")?, None);
//! let keys: Vec<Vec<u8>> = table.iter().map(|e| e.map(|e| e.key)).collect::<Result<_, _>>()?;
//! assert_eq!(keys, [b"apple".to_vec(), b"banana".to_vec(), b"cherry".to_vec()]);
//! assert!(table.covering_tombstone(b"y").is_some());
//! # Ok::<(), FormatError>(())
//! ```
//!
//! ## Format
//!
//! All integers little-endian; spec/formats.md section 5 draws every field.
//!
//! ```text
//! header            "FLOWLSMT" | version u32                                   12 bytes
//! data blocks       one frame each, ascending keys, tiling 12 .. D
//! range tombstones  frame (absent if none)
//! filter            frame (absent if bloom bits per key is 0 or there are no entries)
//! properties        frame
//! index             frame
//! footer            (offset u64, length u32, CRC u32) of index, filter, properties and range
//!                   tombstones | table id u64 | footer CRC | version u32 | "FLOWLSMT"
//!                                                                                88 bytes
//!
//! frame             type u8 | compression u8 | uncompressed len u32 | stored len u32 |
//!                   stored payload | CRC-32 of (table id u64 ‖ frame offset u64 ‖ all bytes
//!                   before it)
//! data block        entries: shared varint | unshared varint | value len × 4 + kind varint |
//!                   key suffix | value; then restart offsets u32 × R, R u32
//! ```
//!
//! The parts tile the file without gaps, so every byte is under a CRC or compared with a fixed
//! value (magic, version).
//!
//! [`RandomAccess`]: crate::RandomAccess

mod block;
mod builder;
mod cache;
mod filter;
mod footer;
mod frame;
mod index;
mod iter;
mod properties;
mod range_tombstone;
mod reader;

pub use block::Block;
pub use builder::{TableBuilder, TableOptions, TableSummary};
pub use cache::{BlockCache, BlockCacheKey};
pub use filter::{FixedPrefix, PrefixExtractor};
pub use iter::TableIter;
pub use properties::TableProperties;
pub use range_tombstone::{
    covering as covering_range_tombstone, normalize as normalize_range_tombstones, RangeTombstone,
};
pub use reader::{TableReadOptions, TableReader};

pub use crate::limits::{ReadLimits, MAX_BLOCK_LEN, MAX_META_LEN};

/// The CRC of a block frame of table `table_id` at file offset `offset` whose header is
/// `header` (10 bytes) and stored payload `stored`: for tools that forge or repair frames (see
/// [`crate::fuzzing`]).
#[doc(hidden)]
pub fn frame_crc(table_id: u64, offset: u64, header: &[u8], stored: &[u8]) -> u32 {
    frame::crc(table_id, offset, header, stored)
}

/// The magic number at both ends of a table file: `FLOWLSMT` in ASCII.
pub const MAGIC: [u8; 8] = *b"FLOWLSMT";

/// The format version this code writes: 2, whose filter block has the blocked (cache-local)
/// layout (spec/formats.md section 5.7).
pub const VERSION: u32 = 2;

/// The oldest format version this code reads: 1, whose filter spreads its probes over the
/// whole bit array.
pub const MIN_VERSION: u32 = 1;

/// The length of the header: magic and version.
pub const HEADER_LEN: u64 = 12;

/// The length of the footer.
pub const FOOTER_LEN: u64 = footer::FOOTER_LEN as u64;

/// The uncompressed size a data block is closed at by default: 4 KiB.
///
/// Small blocks make a point lookup cheap (one block is read, checked and searched per
/// lookup that passes the filter), which is what per-record state access does most; scans
/// pay about 10 more bytes of framing and one more index entry per block.
pub const DEFAULT_BLOCK_SIZE: usize = 4 << 10;

/// How many entries share one restart point by default: 16.
pub const DEFAULT_RESTART_INTERVAL: usize = 16;

/// The largest restart interval a table may record: 65 535.
pub const MAX_RESTART_INTERVAL: usize = u16::MAX as usize;

/// Bloom filter bits per hashed key (and per distinct prefix) by default: 10, for about 1%
/// false positives.
pub const DEFAULT_BLOOM_BITS_PER_KEY: u32 = 10;

/// The most bloom filter bits per key a table may record: 64.
pub const MAX_BLOOM_BITS_PER_KEY: u32 = 64;

/// The longest key (of an entry or a range tombstone bound): 1 MiB.
pub const MAX_KEY_LEN: usize = 1 << 20;

/// What an entry of a table says about its key.
///
/// ## Format
///
/// Kept in the two low bits of an entry's value tag (value length × 4 + kind):
///
/// | code | kind |
/// |---|---|
/// | 0 | [`Put`](EntryKind::Put) |
/// | 1 | [`Delete`](EntryKind::Delete) (its value is empty) |
/// | 2 | [`Merge`](EntryKind::Merge) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EntryKind {
    /// The key holds the value.
    Put = 0,
    /// A point tombstone: the key holds nothing, whatever older tables say.
    Delete = 1,
    /// A merge operand (a list append): the tree combines it with what older tables hold.
    Merge = 2,
}

impl EntryKind {
    /// The kind with on-disk code `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(EntryKind::Put),
            1 => Some(EntryKind::Delete),
            2 => Some(EntryKind::Merge),
            _ => None,
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// One entry of a table, owned: what [`TableIter`] yields as an [`Iterator`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableEntry {
    /// The key.
    pub key: Vec<u8>,
    /// Put, delete or merge.
    pub kind: EntryKind,
    /// The value (empty for a delete).
    pub value: Vec<u8>,
}

#[cfg(test)]
mod tests;
