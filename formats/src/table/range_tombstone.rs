//! The range tombstone block: key ranges deleted in older tables (the tree drops the key
//! groups a task no longer owns after a rescale this way).
//!
//! ## Format
//!
//! | size | field |
//! |---|---|
//! | varint | count `T`, at least 1 (a table without range tombstones has no block) |
//! | `T` × (varint + bytes, varint + bytes) | start key (inclusive), end key (exclusive) |
//!
//! Each range is non-empty (start < end), and the ranges are normalized: sorted, and
//! separated by a gap (one's end is before the next one's start). Overlapping or touching
//! ranges are merged by the writer.

use crate::codec::varint;
use crate::cursor::Cursor;
use crate::record::put_bytes;
use crate::FormatError;

use super::MAX_KEY_LEN;

/// A deleted key range: every key `k` with `start <= k < end`.
///
/// ## Format
///
/// Two byte strings (varint length + bytes): start, then end. In a table, ranges are
/// non-empty, sorted and separated: see the range tombstone block in spec/formats.md.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeTombstone {
    /// The first key deleted.
    pub start: Vec<u8>,
    /// The first key after the range (not deleted).
    pub end: Vec<u8>,
}

impl RangeTombstone {
    /// The range `start .. end`.
    pub fn new(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        RangeTombstone {
            start: start.into(),
            end: end.into(),
        }
    }

    /// Whether the range deletes `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && key < self.end.as_slice()
    }

    pub(crate) fn encoded_len(&self) -> usize {
        varint::encoded_len(self.start.len() as u64)
            + self.start.len()
            + varint::encoded_len(self.end.len() as u64)
            + self.end.len()
    }
}

/// Sorts non-empty ranges and merges those that overlap or touch: the form a table stores
/// (empty or inverted ranges are dropped).
pub fn normalize(mut ranges: Vec<RangeTombstone>) -> Vec<RangeTombstone> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by(|a, b| a.start.cmp(&b.start));
    let mut out: Vec<RangeTombstone> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => {
                if r.end > last.end {
                    last.end = r.end;
                }
            }
            _ => out.push(r),
        }
    }
    out
}

/// The range of `ranges` (normalized) that deletes `key`.
pub fn covering<'a>(ranges: &'a [RangeTombstone], key: &[u8]) -> Option<&'a RangeTombstone> {
    // The last range starting at or before the key is the only candidate.
    let i = ranges.partition_point(|r| r.start.as_slice() <= key);
    ranges[..i].last().filter(|r| r.contains(key))
}

pub(crate) fn encode(ranges: &[RangeTombstone], out: &mut Vec<u8>) {
    varint::encode_u64(ranges.len() as u64, out);
    for r in ranges {
        put_bytes(&r.start, out);
        put_bytes(&r.end, out);
    }
}

pub(crate) fn decode(mut c: Cursor<'_>) -> Result<Vec<RangeTombstone>, FormatError> {
    // A range takes at least 3 bytes: an empty start and a 1-byte end.
    let count = c.count(3, "range tombstone")?;
    if count == 0 {
        return Err(c.corrupt_at(0, "range tombstone block without ranges"));
    }
    let mut out: Vec<RangeTombstone> = Vec::with_capacity(count as usize);
    for i in 0..count {
        let at = c.pos();
        let start = c.len_prefixed()?;
        let end = c.len_prefixed()?;
        if start.len().max(end.len()) > MAX_KEY_LEN {
            return Err(c.limit_at(
                at,
                "key length",
                start.len().max(end.len()) as u64,
                MAX_KEY_LEN as u64,
            ));
        }
        if start >= end {
            return Err(c.corrupt_at(at, format!("range tombstone {i} is empty or inverted")));
        }
        if out.last().is_some_and(|p| p.end.as_slice() >= start) {
            return Err(c.corrupt_at(
                at,
                format!("range tombstone {i} does not start after the previous one ends"),
            ));
        }
        out.push(RangeTombstone::new(start, end));
    }
    c.finish("range tombstones")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &str, b: &str) -> RangeTombstone {
        RangeTombstone::new(a.as_bytes(), b.as_bytes())
    }

    #[test]
    fn normalization_sorts_merges_and_drops_empty_ranges() {
        let n = normalize(vec![
            r("m", "p"),
            r("a", "c"),
            r("b", "d"),
            r("d", "e"),
            r("x", "x"),
            r("z", "y"),
            r("n", "o"),
        ]);
        assert_eq!(n, [r("a", "e"), r("m", "p")]);
        assert_eq!(covering(&n, b"a"), Some(&n[0]));
        assert_eq!(covering(&n, b"dz"), Some(&n[0]));
        assert_eq!(covering(&n, b"e"), None);
        assert_eq!(covering(&n, b""), None);
        assert_eq!(covering(&n, b"o"), Some(&n[1]));
        assert_eq!(covering(&n, b"p"), None);
    }

    #[test]
    fn decode_checks_order_and_emptiness() {
        let mut out = Vec::new();
        encode(&[r("a", "c"), r("d", "e")], &mut out);
        assert_eq!(
            decode(Cursor::new(&out, "t", 0)).unwrap(),
            [r("a", "c"), r("d", "e")]
        );
        for bad in [
            vec![r("a", "c"), r("c", "e")],
            vec![r("b", "c"), r("a", "e")],
            vec![r("c", "c")],
            vec![],
        ] {
            let mut out = Vec::new();
            encode(&bad, &mut out);
            assert!(decode(Cursor::new(&out, "t", 0)).is_err(), "{bad:?}");
        }
    }
}
