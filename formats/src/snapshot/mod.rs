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
//! A delta file (version 3, [`DeltaOf`]) holds changes since a base: its sections are coded
//! `2 × state index` (entries that are new or changed) and `2 × state index + 1` (removals:
//! key and namespace only), ascending by code.
//!
//! What the format cannot check: that a key belongs to the key group it is filed under (that
//! needs the engine's key-group hash), and that the bytes decode with the recorded codecs.
//!
//! [`RandomAccess`]: crate::RandomAccess

mod block;
mod delta;
mod entry;
mod footer;
mod index;
mod key_group_encoder;
mod meta;
mod reader;
mod writer;

pub use delta::DeltaOf;
pub use entry::{DecodedEntry, DecodedValue, EntryValue, ListElements, MapEntries, OwnedValue};
pub use index::KeyGroupLocation;
pub use key_group_encoder::{EncodedKeyGroup, KeyGroupEncoder, SortedEntries};
pub use meta::{SnapshotMeta, StateKind, StateMetaRecord, ValueShape, MAX_STATES};
pub use reader::SnapshotReader;
pub use writer::{SnapshotSummary, SnapshotWriter, SnapshotWriterOptions};

pub use crate::limits::{ReadLimits, MAX_BLOCK_LEN, MAX_META_LEN};

/// The magic number at both ends of a snapshot file: `FLOWSNAP` in ASCII.
pub const MAGIC: [u8; 8] = *b"FLOWSNAP";

/// The newest format version this code reads and writes: 3, a delta file (section 3.11;
/// [`DeltaOf`]). Full files are written as version 2 (the meta block ends with the file's
/// origin, spec/formats.md section 4.9), which version 3 extends.
pub const VERSION: u32 = 3;

/// The version of full files: 2.
pub const FULL_VERSION: u32 = 2;

/// The oldest format version this code reads: 1 (no origin).
pub const MIN_VERSION: u32 = 1;

/// The length of the header: magic and version.
pub const HEADER_LEN: u64 = 12;

/// The length of the footer.
pub const FOOTER_LEN: u64 = footer::FOOTER_LEN as u64;

/// The largest max parallelism a snapshot may record (Flink's upper bound, 2^15).
pub const MAX_PARALLELISM: u32 = 1 << 15;

/// The uncompressed payload size at which a writer closes a block by default: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CodecRecord, Compression};

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .filter(|t| *t != "|")
            .map(|t| u8::from_str_radix(t, 16).unwrap())
            .collect()
    }

    #[test]
    fn the_spec_example_is_these_bytes() {
        // spec/formats.md section 3.10.
        let meta = SnapshotMeta {
            max_parallelism: 128,
            key_group_start: 0,
            key_group_end: 1,
            key_codec: CodecRecord::new("u32", 1),
            states: vec![StateMetaRecord {
                name: "n".into(),
                kind: StateKind::Value,
                namespace: CodecRecord::new("unit", 1),
                value: CodecRecord::new("u8", 1),
                user_key: None,
                ttl_millis: None,
            }],
        };
        let mut out = Vec::new();
        let mut w = SnapshotWriter::new(&mut out, &meta, Compression::None).unwrap();
        w.begin_key_group(1).unwrap();
        w.add_entry(0, &7u32.to_le_bytes(), b"", EntryValue::Value(&[42]))
            .unwrap();
        w.end_key_group().unwrap();
        let summary = w.finish().unwrap();
        let mut expected = hex("46 4c 4f 57 53 4e 41 50 02 00 00 00");
        expected.extend(hex(
            "80 00 00 00 | 00 00 | 01 00 | 03 75 33 32 01 00 00 00 | 01
             01 6e | 00 | 04 75 6e 69 74 01 00 00 00 | 02 75 38 01 00 00 00 | 00 | 00 00 00 00 00 00 00 00 | 00",
        ));
        expected.extend(hex(
            "01 00 | 00 | 0a 00 00 00 | 0a 00 00 00 | 00 01 04 07 00 00 00 00 01 2a | a1 85 5a 8a",
        ));
        expected.extend(hex("00 00 01 00"));
        expected.extend([0; 24]);
        expected.extend(hex(
            "3a 00 00 00 00 00 00 00 19 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00",
        ));
        expected.extend(hex(
            "0c 00 00 00 00 00 00 00 2e 00 00 00 1c f8 4e 4d 53 00 00 00 00 00 00 00 34 00 00 00 69 57 67 35
             01 00 00 00 00 00 00 00 0a 78 ae e3 02 00 00 00 46 4c 4f 57 53 4e 41 50",
        ));
        assert_eq!(out, expected);
        assert_eq!(summary.len, 191);
        assert_eq!(
            summary.key_groups,
            [KeyGroupLocation {
                key_group: 1,
                offset: 58,
                len: 25,
                entry_count: 1
            }]
        );
    }
}
