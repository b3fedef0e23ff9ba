//! Key-group blocks: the header, and the payload of state sections.
//!
//! ## Format
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | key group, `u16` LE |
//! | 2 | 1 | compression code ([`CompressionKind`]) |
//! | 3 | 4 | uncompressed payload length, `u32` LE |
//! | 7 | 4 | stored payload length `S`, `u32` LE |
//! | 11 | `S` | payload, compressed or not |
//! | 11 + `S` | 4 | CRC-32 of bytes `0..11 + S` |
//!
//! The uncompressed payload is one or more state sections:
//!
//! | size | field |
//! |---|---|
//! | varint | state index |
//! | varint | entry count, at least 1 |
//! | … | entries: key (varint length + bytes), namespace (same), then the state: value = varint length + bytes; list = varint count + elements (varint length + bytes each); map = varint count + pairs (user key, value; varint length + bytes each) |

use crate::codec::compress::CompressionKind;
use crate::cursor::Cursor;
use crate::FormatError;

use super::entry::{DecodedEntry, DecodedValue, ListElements, MapEntries};
use super::meta::ValueShape;

/// The length of a block header.
pub(crate) const HEADER_LEN: usize = 11;

/// The length of the CRC after a block's payload.
pub(crate) const TRAILER_LEN: usize = 4;

/// The fewest bytes an entry takes: empty key, empty namespace, empty value (three zero
/// lengths).
pub(crate) const MIN_ENTRY_LEN: usize = 3;

/// The fewest bytes a removal takes (delta files): empty key and namespace.
pub(crate) const MIN_REMOVAL_LEN: usize = 2;

/// The header of a key-group block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHeader {
    pub(crate) key_group: u16,
    pub(crate) compression: CompressionKind,
    pub(crate) uncompressed_len: u32,
    pub(crate) stored_len: u32,
}

impl BlockHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&self.key_group.to_le_bytes());
        out[2] = self.compression.code();
        out[3..7].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        out[7..11].copy_from_slice(&self.stored_len.to_le_bytes());
        out
    }

    /// Decodes a header found at `offset` of `file`; both lengths must be within `max_len`.
    pub(crate) fn decode(
        bytes: &[u8; HEADER_LEN],
        file: &str,
        offset: u64,
        max_len: u32,
    ) -> Result<Self, FormatError> {
        let mut c = Cursor::new(bytes, file, offset);
        let key_group = c.u16()?;
        let code = c.u8()?;
        let compression = CompressionKind::from_code(code)
            .ok_or_else(|| c.corrupt_at(2, format!("unknown compression code {code}")))?;
        let uncompressed_len = c.u32()?;
        let stored_len = c.u32()?;
        for (at, what, value) in [
            (3, "block uncompressed length", uncompressed_len),
            (7, "block stored length", stored_len),
        ] {
            if value > max_len {
                return Err(c.limit_at(at, what, value.into(), max_len.into()));
            }
        }
        Ok(BlockHeader {
            key_group,
            compression,
            uncompressed_len,
            stored_len,
        })
    }

    /// The whole block's length: header, payload and CRC.
    pub(crate) fn block_len(&self) -> u64 {
        (HEADER_LEN + TRAILER_LEN) as u64 + u64::from(self.stored_len)
    }
}

/// What the reader carries from one block of a key group to the next.
#[derive(Debug, Default)]
pub(crate) struct GroupState {
    /// The state of the last section read.
    prev_state: Option<u32>,
    /// The key and namespace of the last entry read (of `prev_state`).
    prev_key: Vec<u8>,
    prev_ns: Vec<u8>,
    /// Entries read so far in the key group.
    pub(crate) entries: u64,
    /// Blocks read so far in the key group.
    pub(crate) blocks: u64,
}

/// Reads the payload under `c` (one block), checking every rule of the format, and calls
/// `visit` with each entry. In a delta file (`delta`) a section's code is
/// `2 × state index + removal`, and a removal section's entries are key and namespace only.
pub(crate) fn parse_payload<'a, E: From<FormatError>>(
    c: &mut Cursor<'a>,
    shapes: &[ValueShape],
    delta: bool,
    group: &mut GroupState,
    visit: &mut impl FnMut(DecodedEntry<'a>) -> Result<(), E>,
) -> Result<(), E> {
    if c.is_empty() {
        return Err(c.corrupt_at(0, "empty block payload").into());
    }
    let first_block = group.blocks == 0;
    let mut first_section = true;
    // The previous entry of the current state within this block.
    let mut prev: Option<(&'a [u8], &'a [u8])> = None;
    while !c.is_empty() {
        let at = c.pos();
        let code = c.varint()?;
        let (index, removal) = if delta {
            (code / 2, code % 2 == 1)
        } else {
            (code, false)
        };
        let shape = usize::try_from(index)
            .ok()
            .and_then(|i| shapes.get(i))
            .copied()
            .ok_or_else(|| {
                c.corrupt_at(
                    at,
                    format!(
                        "unknown state index {index} (the file has {} states)",
                        shapes.len()
                    ),
                )
            })?;
        // `index` < `shapes.len()` <= MAX_STATES, so it and the code fit u32.
        let (index, code) = (index as u32, code as u32);
        // Does the section continue the previous block's last section?
        let continues = match group.prev_state {
            None => false,
            Some(p) if code > p => false,
            Some(p) if code == p && first_section && !first_block => true,
            Some(p) => {
                return Err(c
                    .corrupt_at(
                        at,
                        format!("state section {code} follows section {p}: states must ascend"),
                    )
                    .into())
            }
        };
        first_section = false;
        group.prev_state = Some(code);
        let count_at = c.pos();
        let min_len = if removal {
            MIN_REMOVAL_LEN
        } else {
            MIN_ENTRY_LEN
        };
        let count = c.count(min_len, "entry")?;
        if count == 0 {
            return Err(c.corrupt_at(count_at, "empty state section").into());
        }
        for i in 0..count {
            let entry_at = c.pos();
            let key = c.len_prefixed()?;
            let namespace = c.len_prefixed()?;
            let ordered = match prev {
                Some(p) => (key, namespace) > p,
                None if i == 0 && continues => {
                    (key, namespace) > (group.prev_key.as_slice(), group.prev_ns.as_slice())
                }
                None => true,
            };
            if !ordered {
                return Err(c
                    .corrupt_at(
                        entry_at,
                        format!(
                            "entry of state {index} is not after the previous one by (key, namespace): duplicate or out of order"
                        ),
                    )
                    .into());
            }
            let value = if removal {
                DecodedValue::Removed
            } else {
                parse_value(c, shape)?
            };
            prev = Some((key, namespace));
            group.entries += 1;
            visit(DecodedEntry {
                state_index: index,
                key,
                namespace,
                value,
            })?;
        }
        // The last section of a block may continue in the next block of the key group: keep
        // its last entry to compare. A following section in this block is another state, whose
        // first entry has no predecessor.
        if let Some((k, n)) = prev.take() {
            if c.is_empty() {
                keep(group, k, n);
            }
        }
    }
    group.blocks += 1;
    Ok(())
}

fn keep(group: &mut GroupState, key: &[u8], ns: &[u8]) {
    group.prev_key.clear();
    group.prev_key.extend_from_slice(key);
    group.prev_ns.clear();
    group.prev_ns.extend_from_slice(ns);
}

fn parse_value<'a>(c: &mut Cursor<'a>, shape: ValueShape) -> Result<DecodedValue<'a>, FormatError> {
    match shape {
        ValueShape::Value => Ok(DecodedValue::Value(c.len_prefixed()?)),
        ValueShape::List => {
            let count = c.count(1, "list element")?;
            let start = c.pos();
            for _ in 0..count {
                c.len_prefixed()?;
            }
            let bytes = c.slice_since(start);
            Ok(DecodedValue::List(ListElements::new(bytes, count as usize)))
        }
        ValueShape::Map => {
            let count = c.count(2, "map entry")?;
            let start = c.pos();
            let mut prev: Option<&[u8]> = None;
            for _ in 0..count {
                let at = c.pos();
                let k = c.len_prefixed()?;
                c.len_prefixed()?;
                if prev.is_some_and(|p| k <= p) {
                    return Err(c.corrupt_at(
                        at,
                        "map user keys are not strictly ascending: duplicate or out of order",
                    ));
                }
                prev = Some(k);
            }
            let bytes = c.slice_since(start);
            Ok(DecodedValue::Map(MapEntries::new(bytes, count as usize)))
        }
    }
}
