//! The index: where each key group of the range starts, how long it is, how many entries it
//! holds.
//!
//! ## Format
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | first key group of the range, `u16` LE (as in the meta block) |
//! | 2 | 2 | last key group of the range, `u16` LE |
//! | 4 + 24 i | 8 | offset of key group `first + i`'s first block, `u64` LE; 0 if it has no entries |
//! | 12 + 24 i | 8 | length of all its blocks, `u64` LE; 0 if it has no entries |
//! | 20 + 24 i | 8 | its entry count, `u64` LE; 0 if it has no entries |
//!
//! The blocks of non-empty key groups follow each other without gaps, in key-group order, from
//! the end of the meta block to the start of the index.

use crate::cursor::Cursor;
use crate::FormatError;

use super::block;

/// The length of one index slot.
pub(crate) const SLOT_LEN: usize = 24;

/// Where a key group's blocks sit in a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupLocation {
    /// The key group.
    pub key_group: u16,
    /// The offset of its first block.
    pub offset: u64,
    /// The length of all its blocks.
    pub len: u64,
    /// The number of entries it holds (over all states).
    pub entry_count: u64,
}

/// One slot per key group of the range: (offset, length, entries), zeros for an empty group.
pub(crate) type Slot = (u64, u64, u64);

/// The length of the index of a range of `key_groups` key groups.
pub(crate) fn index_len(key_groups: usize) -> u64 {
    4 + (SLOT_LEN * key_groups) as u64
}

pub(crate) fn encode(first: u16, last: u16, slots: &[Slot], out: &mut Vec<u8>) {
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    for &(offset, len, entries) in slots {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&entries.to_le_bytes());
    }
}

/// Decodes and checks an index found at `origin` of `file`: the range must be `first..=last`,
/// the blocks must tile `data_start..data_end` in key-group order, and the entry counts must
/// add up to `total_entries`.
pub(crate) fn decode(
    bytes: &[u8],
    file: &str,
    origin: u64,
    (first, last): (u16, u16),
    (data_start, data_end): (u64, u64),
    total_entries: u64,
) -> Result<Vec<Slot>, FormatError> {
    let mut c = Cursor::new(bytes, file, origin);
    let (f, l) = (c.u16()?, c.u16()?);
    if (f, l) != (first, last) {
        return Err(c.corrupt_at(
            0,
            format!("index covers key groups {f}..={l}, the meta block {first}..={last}"),
        ));
    }
    let n = usize::from(last - first) + 1;
    // The caller sized `bytes` from the meta block's range; check again before allocating.
    if c.remaining() != SLOT_LEN * n {
        return Err(c.corrupt_at(
            4,
            format!("index holds {} bytes for {n} key groups", c.remaining()),
        ));
    }
    let mut slots = Vec::with_capacity(n);
    let mut next = data_start;
    let mut sum: u64 = 0;
    for i in 0..n {
        let at = c.pos();
        let kg = usize::from(first) + i;
        let (offset, len, entries) = (c.u64()?, c.u64()?, c.u64()?);
        if len == 0 {
            if offset != 0 || entries != 0 {
                return Err(c.corrupt_at(
                    at,
                    format!(
                        "key group {kg} has no blocks but offset {offset} and {entries} entries"
                    ),
                ));
            }
        } else {
            if offset != next {
                return Err(c.corrupt_at(at, format!("key group {kg} starts at {offset}, not at {next} where the previous one ends")));
            }
            if len < (block::HEADER_LEN + block::TRAILER_LEN) as u64 || entries == 0 {
                return Err(c.corrupt_at(
                    at,
                    format!("key group {kg} has {len} bytes and {entries} entries"),
                ));
            }
            next = match offset.checked_add(len) {
                Some(end) if end <= data_end => end,
                _ => {
                    return Err(c.corrupt_at(at, format!("key group {kg} ({len} bytes at {offset}) runs past the data, which ends at {data_end}")))
                }
            };
            sum = sum.saturating_add(entries);
        }
        slots.push((offset, len, entries));
    }
    if next != data_end {
        return Err(c.corrupt_at(
            0,
            format!("key-group blocks end at {next}, the index starts at {data_end}"),
        ));
    }
    if sum != total_entries {
        return Err(c.corrupt_at(
            0,
            format!("key groups hold {sum} entries, the footer says {total_entries}"),
        ));
    }
    Ok(slots)
}
