//! Sets of range tombstones: deleted key ranges `[start, end)`, kept normalized (sorted,
//! non-empty, separated by a gap), as memtables, merges and table outputs use them.
//!
//! A source's range tombstones delete keys of *older* sources only: its own point entries are
//! newer than its own ranges (spec/lsm-tree.md, "Range deletion").
//!
//! ```
//! use flowstate::lsm::ranges;
//! use flowstate::lsm::RangeTombstone;
//!
//! let mut set = Vec::new();
//! ranges::insert(&mut set, b"b", b"d");
//! ranges::insert(&mut set, b"c", b"f"); // overlaps: merged
//! ranges::insert(&mut set, b"x", b"z");
//! assert_eq!(set, [RangeTombstone::new(*b"b", *b"f"), RangeTombstone::new(*b"x", *b"z")]);
//! assert!(ranges::covers(&set, b"e"));
//! assert!(!ranges::covers(&set, b"f"));
//! ```

use flowstate_formats::table::{normalize_range_tombstones, RangeTombstone};

/// Adds `[start, end)` to the normalized set `set`, merging it with the ranges it overlaps or
/// touches. An empty range (`start >= end`) changes nothing.
pub fn insert(set: &mut Vec<RangeTombstone>, start: &[u8], end: &[u8]) {
    if start >= end {
        return;
    }
    // The ranges that overlap or touch `[start, end]`: those with `r.end >= start` and
    // `r.start <= end`, a run in the sorted set.
    let first = set.partition_point(|r| r.end.as_slice() < start);
    let last = set.partition_point(|r| r.start.as_slice() <= end);
    if first >= last {
        set.insert(first, RangeTombstone::new(start, end));
        return;
    }
    let new_start = set[first].start.as_slice().min(start).to_vec();
    let new_end = set[last - 1].end.as_slice().max(end).to_vec();
    set.drain(first + 1..last);
    set[first] = RangeTombstone::new(new_start, new_end);
}

/// Whether a range of the normalized set `set` deletes `key`. O(log n).
pub fn covers(set: &[RangeTombstone], key: &[u8]) -> bool {
    let i = set.partition_point(|r| r.start.as_slice() <= key);
    i > 0 && set[i - 1].contains(key)
}

/// Whether a range of `set` intersects `[lo, hi]` (both inclusive).
pub fn intersects(set: &[RangeTombstone], lo: &[u8], hi: &[u8]) -> bool {
    let i = set.partition_point(|r| r.end.as_slice() <= lo);
    set.get(i).is_some_and(|r| r.start.as_slice() <= hi)
}

/// The union of normalized sets, normalized.
pub fn union<'a>(sets: impl IntoIterator<Item = &'a [RangeTombstone]>) -> Vec<RangeTombstone> {
    normalize_range_tombstones(sets.into_iter().flatten().cloned().collect())
}

/// The parts of the normalized set `set` within `[lo, hi)`; `None` bounds are open.
pub fn clip(set: &[RangeTombstone], lo: Option<&[u8]>, hi: Option<&[u8]>) -> Vec<RangeTombstone> {
    set.iter()
        .filter_map(|r| {
            let start = match lo {
                Some(lo) if lo > r.start.as_slice() => lo,
                _ => r.start.as_slice(),
            };
            let end = match hi {
                Some(hi) if hi < r.end.as_slice() => hi,
                _ => r.end.as_slice(),
            };
            (start < end).then(|| RangeTombstone::new(start, end))
        })
        .collect()
}

/// The smallest key after `key`: `key` followed by a zero byte.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(key.len() + 1);
    s.extend_from_slice(key);
    s.push(0);
    s
}

/// The bytes a set of ranges holds in memory, about.
pub fn memory(set: &[RangeTombstone]) -> usize {
    set.iter()
        .map(|r| std::mem::size_of::<RangeTombstone>() + r.start.len() + r.end.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_covers(ranges: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> bool {
        ranges
            .iter()
            .any(|(s, e)| s.as_slice() <= key && key < e.as_slice())
    }

    fn normalized(set: &[RangeTombstone]) -> bool {
        set.iter().all(|r| r.start < r.end) && set.windows(2).all(|w| w[0].end < w[1].start)
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..4, 0..3)
    }

    proptest! {
        #[test]
        fn insert_union_and_clip_match_a_model(
            ranges in proptest::collection::vec((key(), key()), 0..12),
            probes in proptest::collection::vec(key(), 0..20),
            lo in proptest::option::of(key()),
            hi in proptest::option::of(key()),
        ) {
            let mut set = Vec::new();
            for (s, e) in &ranges {
                insert(&mut set, s, e);
                prop_assert!(normalized(&set));
            }
            let halves = ranges.len() / 2;
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (s, e) in &ranges[..halves] { insert(&mut a, s, e); }
            for (s, e) in &ranges[halves..] { insert(&mut b, s, e); }
            let u = union([a.as_slice(), b.as_slice()]);
            prop_assert_eq!(&u, &set);
            let clipped = clip(&set, lo.as_deref(), hi.as_deref());
            prop_assert!(normalized(&clipped));
            for p in &probes {
                let expect = model_covers(&ranges, p);
                prop_assert_eq!(covers(&set, p), expect);
                let in_window = lo.as_deref().is_none_or(|l| p.as_slice() >= l)
                    && hi.as_deref().is_none_or(|h| p.as_slice() < h);
                prop_assert_eq!(covers(&clipped, p), expect && in_window);
            }
            for (x, y) in probes.iter().zip(probes.iter().skip(1)) {
                let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
                let expect = set.iter().any(|r| r.start.as_slice() <= hi.as_slice() && r.end.as_slice() > lo.as_slice());
                prop_assert_eq!(intersects(&set, lo, hi), expect);
            }
        }
    }

    #[test]
    fn successor_is_the_next_key() {
        assert_eq!(successor(b"ab"), b"ab\0");
        assert!(successor(b"ab").as_slice() > &b"ab"[..]);
        assert!(successor(b"ab").as_slice() < &b"ab\0\0"[..]);
    }
}
