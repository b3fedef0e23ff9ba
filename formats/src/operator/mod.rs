//! The operator-state file: the non-keyed states of one parallel task (split-list,
//! union-list and broadcast-map state), each in its own checksummed block.
//!
//! [`OperatorStateWriter`] writes the states one after the other; [`OperatorStateReader`]
//! opens the file through [`RandomAccess`](crate::RandomAccess) (header, footer and the block
//! lengths) and reads any state on request.
//!
//! ## Format
//!
//! All integers little-endian; spec/formats.md section 7 draws every field.
//!
//! ```text
//! header   "FLOWOPST" | version u32                                           12 bytes
//! per state, in the writer's order:
//!          payload length L u32 | payload (L bytes) | CRC-32 of length and payload
//! footer   state count u32 | CRC-32 of the count | version u32 | "FLOWOPST"   20 bytes
//! ```
//!
//! | payload field | size |
//! |---|---|
//! | name (unique in the file) | varint length + UTF-8, at most 65 535 bytes |
//! | mode ([`OperatorStateMode`]) | 1 |
//! | value codec: list element or map value ([`CodecRecord`]) | varint + name + 4 |
//! | key codec, for broadcast-map state only | varint + name + 4 |
//! | count | varint |
//! | elements: list = varint length + bytes each; map = key (varint length + bytes), value (same), keys strictly ascending | … |

mod reader;
mod writer;

pub use reader::OperatorStateReader;
pub use writer::{OperatorStateSummary, OperatorStateWriter};

use crate::CodecRecord;

/// The magic number at both ends of an operator-state file: `FLOWOPST` in ASCII.
pub const MAGIC: [u8; 8] = *b"FLOWOPST";

/// The format version this code writes: 2 (an origin block follows the header,
/// spec/formats.md sections 4.9 and 7.1).
pub const VERSION: u32 = 2;

/// The oldest format version this code reads: 1 (no origin block).
pub const MIN_VERSION: u32 = 1;

/// The longest origin block payload a reader accepts: a kind, an id and a name of at most
/// 65 535 bytes with its varint length.
pub const MAX_ORIGIN_LEN: u32 = 1 + 8 + 3 + 65_535;

/// The length of the header: magic and version.
pub const HEADER_LEN: u64 = 12;

/// The length of the footer: state count, its CRC, version, magic.
pub const FOOTER_LEN: u64 = 20;

/// How an operator state is redistributed when the parallelism changes (one-byte code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OperatorStateMode {
    /// Code 0: a list split evenly over the new tasks.
    SplitList = 0,
    /// Code 1: a list every new task gets whole (the union of all old tasks' lists).
    UnionList = 1,
    /// Code 2: a map that is the same on every task.
    BroadcastMap = 2,
}

impl OperatorStateMode {
    /// The mode with code `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => OperatorStateMode::SplitList,
            1 => OperatorStateMode::UnionList,
            2 => OperatorStateMode::BroadcastMap,
            _ => return None,
        })
    }

    /// The on-disk code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether the state is a map (broadcast) rather than a list.
    pub fn is_map(self) -> bool {
        self == OperatorStateMode::BroadcastMap
    }
}

/// What an operator state is: name, mode, codecs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperatorStateMeta {
    /// The state's name, unique within the file.
    pub name: String,
    /// How the state is redistributed.
    pub mode: OperatorStateMode,
    /// The codec of list elements, or of broadcast map values.
    pub value: CodecRecord,
    /// The codec of broadcast map keys: present exactly for broadcast-map state.
    pub key: Option<CodecRecord>,
}

impl OperatorStateMeta {
    /// Checks that names fit the format and that a key codec is present exactly for
    /// broadcast-map state.
    pub fn validate(&self) -> Result<(), String> {
        for (what, name) in [
            ("state name", Some(&self.name)),
            ("value codec name", Some(&self.value.name)),
            ("key codec name", self.key.as_ref().map(|k| &k.name)),
        ] {
            if let Some(n) = name.filter(|n| n.len() > crate::MAX_NAME_LEN) {
                return Err(format!(
                    "{what} of {} bytes is longer than {}",
                    n.len(),
                    crate::MAX_NAME_LEN
                ));
            }
        }
        if self.mode.is_map() != self.key.is_some() {
            return Err(format!(
                "operator state '{}' of mode {:?} {} a key codec",
                self.name,
                self.mode,
                if self.key.is_some() { "has" } else { "lacks" }
            ));
        }
        Ok(())
    }
}

/// The content of an operator state, owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OperatorStateData {
    /// The elements of a split or union list, in order.
    List(Vec<Vec<u8>>),
    /// The (key, value) pairs of a broadcast map, strictly ascending by key bytes.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

/// One operator state as read from a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperatorState {
    /// What the state is.
    pub meta: OperatorStateMeta,
    /// Its content, in the shape of its mode.
    pub data: OperatorStateData,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_is_these_bytes() {
        // spec/formats.md section 7.4.
        let mut out = Vec::new();
        let mut w = OperatorStateWriter::new(&mut out, "f").unwrap();
        let meta = OperatorStateMeta {
            name: "o".into(),
            mode: OperatorStateMode::UnionList,
            value: CodecRecord::new("u8", 1),
            key: None,
        };
        w.write_list_state(&meta, [[5u8]]).unwrap();
        let summary = w.finish().unwrap();
        let expected: Vec<u8> = "46 4c 4f 57 4f 50 53 54 02 00 00 00
            01 00 00 00 00 ad de 42 fb
            0d 00 00 00 01 6f 01 02 75 38 01 00 00 00 01 01 05 b1 1d a2 bb
            01 00 00 00 79 b8 f8 99 02 00 00 00 46 4c 4f 57 4f 50 53 54"
            .split_whitespace()
            .map(|t| u8::from_str_radix(t, 16).unwrap())
            .collect();
        assert_eq!(out, expected);
        assert_eq!(summary.len, 62);
        assert_eq!(summary.state_count, 1);
    }
}
