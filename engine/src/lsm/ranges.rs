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
//! let set = ranges::union([
//!     &[RangeTombstone::new(*b"b", *b"d")][..],
//!     &[RangeTombstone::new(*b"c", *b"f"), RangeTombstone::new(*b"x", *b"z")][..],
//! ]);
//! assert_eq!(set, [RangeTombstone::new(*b"b", *b"f"), RangeTombstone::new(*b"x", *b"z")]);
//! assert!(ranges::covers(&set, b"e"));
//! assert!(!ranges::covers(&set, b"f"));
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use flowstate_formats::table::{
    covering_range_tombstone, normalize_range_tombstones, RangeTombstone,
};

/// A normalized set of ranges that takes ranges in any order: what a memtable keeps. Insert
/// and lookup are O(log n) (amortized: a range merged away is removed once); the memory
/// estimate is kept as ranges come and go, so reading it is O(1).
///
/// ```
/// use flowstate::lsm::ranges::RangeSet;
///
/// let mut set = RangeSet::default();
/// set.insert(b"x", b"z");
/// set.insert(b"b", b"d");
/// set.insert(b"c", b"f"); // overlaps [b, d): merged
/// assert_eq!(set.len(), 2);
/// assert!(set.covers(b"e") && !set.covers(b"f") && set.covers(b"y"));
/// let window = set.within(b"c", Some(b"y"));
/// assert_eq!(window.len(), 2); // [c, f) and [x, y)
/// ```
#[derive(Debug, Clone, Default)]
pub struct RangeSet {
    /// Start → end, normalized.
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// [`memory`](RangeSet::memory), kept up to date.
    bytes: usize,
}

/// The memory estimate of one range in a [`RangeSet`].
fn range_memory(start: &[u8], end: &[u8]) -> usize {
    // Two vectors and a B-tree slot, about.
    64 + start.len() + end.len()
}

impl RangeSet {
    /// Adds `[start, end)`, merging it with the ranges it overlaps or touches. An empty range
    /// (`start >= end`) changes nothing.
    pub fn insert(&mut self, start: &[u8], end: &[u8]) {
        if start >= end {
            return;
        }
        let mut new_start = start.to_vec();
        let mut new_end = end.to_vec();
        // A range starting at or before `start` that reaches it.
        let before = self
            .map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .filter(|(_, e)| e.as_slice() >= start)
            .map(|(s, _)| s.clone());
        let mut gone: Vec<Vec<u8>> = before.into_iter().collect();
        // Ranges starting within `(start, end]`.
        gone.extend(
            self.map
                .range::<[u8], _>((Bound::Excluded(start), Bound::Included(end)))
                .map(|(s, _)| s.clone()),
        );
        for s in gone {
            if let Some(e) = self.map.remove(&s) {
                self.bytes -= range_memory(&s, &e);
                if s < new_start {
                    new_start = s;
                }
                if e > new_end {
                    new_end = e;
                }
            }
        }
        self.bytes += range_memory(&new_start, &new_end);
        self.map.insert(new_start, new_end);
    }

    /// Whether a range deletes `key`. O(log n).
    pub fn covers(&self, key: &[u8]) -> bool {
        self.map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, e)| key < e.as_slice())
    }

    /// The number of ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the set holds no range.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The memory the set holds, about (64 bytes a range plus its bounds). O(1).
    pub fn memory(&self) -> usize {
        self.bytes
    }

    /// The parts of the ranges within `[lo, hi)` (`None`: no upper bound), sorted: what a
    /// scan of that window needs. O(log n + ranges in the window).
    pub fn within(&self, lo: &[u8], hi: Option<&[u8]>) -> Vec<RangeTombstone> {
        if hi.is_some_and(|h| h <= lo) {
            return Vec::new();
        }
        let first = self
            .map
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(lo)))
            .next_back()
            .map(|(s, _)| s.as_slice());
        let from = first.unwrap_or(lo);
        let upper = match hi {
            Some(h) => Bound::Excluded(h),
            None => Bound::Unbounded,
        };
        let found: Vec<RangeTombstone> = self
            .map
            .range::<[u8], _>((Bound::Included(from), upper))
            .map(|(s, e)| RangeTombstone::new(s.clone(), e.clone()))
            .collect();
        clip(&found, Some(lo), hi)
    }

    /// Every range, sorted.
    pub fn to_vec(&self) -> Vec<RangeTombstone> {
        self.map
            .iter()
            .map(|(s, e)| RangeTombstone::new(s.clone(), e.clone()))
            .collect()
    }
}

/// Whether a range of the normalized set `set` deletes `key`. O(log n).
pub fn covers(set: &[RangeTombstone], key: &[u8]) -> bool {
    covering_range_tombstone(set, key).is_some()
}

/// The positions in the normalized set `set` of the ranges that reach into `[lo, hi)` (`None`
/// bounds are open): normalized ranges are sorted by start and by end alike, so two bisections
/// find them. Empty when `lo >= hi`.
fn window(set: &[RangeTombstone], lo: Option<&[u8]>, hi: Option<&[u8]>) -> Range<usize> {
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if lo >= hi {
            return 0..0;
        }
    }
    let from = lo.map_or(0, |lo| set.partition_point(|r| r.end.as_slice() <= lo));
    let to = hi.map_or(set.len(), |hi| {
        set.partition_point(|r| r.start.as_slice() < hi)
    });
    from..to.max(from)
}

/// Whether a range of the normalized set `set` deletes a key in `[lo, hi)`. O(log n).
pub fn overlaps(set: &[RangeTombstone], lo: Option<&[u8]>, hi: Option<&[u8]>) -> bool {
    !window(set, lo, hi).is_empty()
}

/// An empty set, shared: what a source without range tombstones passes to a merge, without
/// an allocation per scan.
pub fn none() -> Arc<[RangeTombstone]> {
    static NONE: OnceLock<Arc<[RangeTombstone]>> = OnceLock::new();
    Arc::clone(NONE.get_or_init(|| Arc::from(Vec::new())))
}

/// The union of normalized sets, normalized.
pub fn union<'a>(sets: impl IntoIterator<Item = &'a [RangeTombstone]>) -> Vec<RangeTombstone> {
    normalize_range_tombstones(sets.into_iter().flatten().cloned().collect())
}

/// The parts of the normalized set `set` within `[lo, hi)`; `None` bounds are open.
/// O(log n + ranges in the window).
pub fn clip(set: &[RangeTombstone], lo: Option<&[u8]>, hi: Option<&[u8]>) -> Vec<RangeTombstone> {
    set[window(set, lo, hi)]
        .iter()
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
            let mut rs = RangeSet::default();
            for (s, e) in &ranges {
                rs.insert(s, e);
                prop_assert!(normalized(&rs.to_vec()));
            }
            let set = rs.to_vec();
            let fresh: usize = set.iter().map(|r| range_memory(&r.start, &r.end)).sum();
            prop_assert_eq!(rs.memory(), fresh);
            prop_assert_eq!(rs.len(), set.len());
            let halves = ranges.len() / 2;
            let mut a = RangeSet::default();
            let mut b = RangeSet::default();
            for (s, e) in &ranges[..halves] { a.insert(s, e); }
            for (s, e) in &ranges[halves..] { b.insert(s, e); }
            let u = union([a.to_vec().as_slice(), b.to_vec().as_slice()]);
            prop_assert_eq!(&u, &set);
            let clipped = clip(&set, lo.as_deref(), hi.as_deref());
            prop_assert!(normalized(&clipped));
            if let Some(lo) = &lo {
                prop_assert_eq!(rs.within(lo, hi.as_deref()), clip(&set, Some(lo), hi.as_deref()));
            }
            for p in &probes {
                let expect = model_covers(&ranges, p);
                prop_assert_eq!(covers(&set, p), expect);
                prop_assert_eq!(rs.covers(p), expect);
                let in_window = lo.as_deref().is_none_or(|l| p.as_slice() >= l)
                    && hi.as_deref().is_none_or(|h| p.as_slice() < h);
                prop_assert_eq!(covers(&clipped, p), expect && in_window);
            }
            for (x, y) in probes.iter().zip(probes.iter().skip(1)) {
                let expect = set.iter().any(|r| {
                    r.start.as_slice().max(x.as_slice()) < r.end.as_slice().min(y.as_slice())
                });
                prop_assert_eq!(overlaps(&set, Some(x), Some(y)), expect);
                prop_assert_eq!(overlaps(&set, Some(x), Some(y)), !clip(&set, Some(x), Some(y)).is_empty());
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
