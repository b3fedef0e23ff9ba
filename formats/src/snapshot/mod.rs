//! The canonical key-group snapshot file: the state of a key-group range, grouped by key group
//! with an offset index, so that a restore of any sub-range reads only its own key groups.
//!
//! Heap checkpoints and the savepoints of both backends write it. [`SnapshotWriter`] streams
//! it out key group by key group; [`SnapshotReader`] opens it through [`RandomAccess`]
//! (footer, index and meta block only) and reads any key group on request.
//!
//! ## Format
//!
//! All integers little-endian; spec/formats.md section 3 draws every field.
//!
//! ```text
//! header      "FLOWSNAP" | version u32                                      12 bytes
//! meta block  max parallelism, key-group range, key codec, per state meta     (CRC in footer)
//! key-group blocks, ascending key group; one or more per non-empty key group:
//!             kg u16 | compression u8 | uncompressed len u32 | stored len u32 | payload | CRC u32
//! index       first kg u16 | last kg u16 | per key group of the range: offset u64, length u64,
//!             entries u64 (0, 0, 0 for an empty key group)               (CRC in footer)
//! footer      meta offset, length, CRC | index offset, length, CRC | entries u64 | footer CRC |
//!             version u32 | "FLOWSNAP"                                        56 bytes
//! ```
//!
//! The payload of a block is a run of state sections: `state index` (varint), `entry count`
//! (varint, at least 1), then the entries, each `key`, `namespace` (varint length + bytes) and
//! the state (value: varint length + bytes; list: varint count + elements; map: varint count +
//! (user key, value) pairs). Within a key group, states ascend and the entries of a state
//! ascend strictly by (key bytes, namespace bytes); map user keys ascend strictly. A state's
//! entries may continue into the next block of the same key group: its first section then
//! repeats the state index.
//!
//! What the format cannot check: that a key belongs to the key group it is filed under (that
//! needs the engine's key-group hash), and that the bytes decode with the recorded codecs.
//!
//! [`RandomAccess`]: crate::RandomAccess

mod block;
mod entry;
mod footer;
mod index;
mod meta;
mod reader;
mod writer;

pub use entry::{DecodedEntry, DecodedValue, EntryValue, ListElements, MapEntries, OwnedValue};
pub use index::KeyGroupLocation;
pub use meta::{SnapshotMeta, StateKind, StateMetaRecord, ValueShape, MAX_STATES};
pub use reader::SnapshotReader;
pub use writer::{SnapshotSummary, SnapshotWriter, SnapshotWriterOptions};

pub use crate::limits::{ReadLimits, MAX_BLOCK_LEN, MAX_META_LEN};

/// The magic number at both ends of a snapshot file: `FLOWSNAP` in ASCII.
pub const MAGIC: [u8; 8] = *b"FLOWSNAP";

/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// The length of the header: magic and version.
pub const HEADER_LEN: u64 = 12;

/// The length of the footer.
pub const FOOTER_LEN: u64 = footer::FOOTER_LEN as u64;

/// The largest max parallelism a snapshot may record (Flink's upper bound, 2^15).
pub const MAX_PARALLELISM: u32 = 1 << 15;

/// The uncompressed payload size at which a writer closes a block by default: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
