//! Compaction filters: a hook that sees every entry a compaction writes and may drop or change
//! it (RocksDB's `CompactionFilter`). The LSM backend's TTL cleanup is one
//! (`lsm::ttl_compaction`): expired values, list elements and map entries leave the tree as
//! their tables are compacted.
//!
//! Dropping an entry above the bottom level could uncover an older version of its key in a
//! deeper level, so there a removal is written as a tombstone; in a compaction into the bottom
//! level, which has nothing below it, the entry simply disappears.

use std::fmt::Debug;

use super::super::entry::Entry;
use super::super::merge::MergeLevel;
use crate::error::Result;

/// What a compaction filter decides for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    /// Write the entry as it is.
    Keep,
    /// Remove the key: a tombstone above the bottom level, nothing at the bottom.
    Remove,
    /// Write this entry instead (a list value or operand with fewer elements, say).
    Change(Entry),
}

/// The decision function of one compaction: called with each (key, entry) in key order.
pub type FilterFn<'a> = Box<dyn FnMut(&[u8], &Entry) -> FilterDecision + Send + 'a>;

/// A filter over the entries a compaction writes.
pub trait CompactionFilter: Send + Sync + Debug {
    /// Called once per compaction: the decision for each (key, entry) the compaction is about
    /// to write, in key order. A filter reads what it needs once here (the time, say), so a
    /// compaction sees one consistent view.
    fn begin(&self) -> FilterFn<'_>;

    /// Whether the filter may change anything now (default: yes). A compaction skips an
    /// inactive filter, and a full compaction of a settled tree is not forced by it.
    fn active(&self) -> bool {
        true
    }
}

/// The entries of `entries` after `decide`, at `level`.
pub(crate) fn apply<'a>(
    entries: impl Iterator<Item = Result<(Vec<u8>, Entry)>> + 'a,
    mut decide: FilterFn<'a>,
    level: MergeLevel,
) -> impl Iterator<Item = Result<(Vec<u8>, Entry)>> + 'a {
    entries.filter_map(move |item| {
        let (key, entry) = match item {
            Ok(pair) => pair,
            Err(e) => return Some(Err(e)),
        };
        if entry == Entry::Delete {
            return Some(Ok((key, entry)));
        }
        match decide(&key, &entry) {
            FilterDecision::Keep => Some(Ok((key, entry))),
            FilterDecision::Change(changed) => Some(Ok((key, changed))),
            FilterDecision::Remove => match level {
                MergeLevel::Upper => Some(Ok((key, Entry::Delete))),
                MergeLevel::Bottom => None,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct DropOdd;
    impl CompactionFilter for DropOdd {
        fn begin(&self) -> FilterFn<'_> {
            Box::new(|key, _| match key[0] % 3 {
                0 => FilterDecision::Keep,
                1 => FilterDecision::Remove,
                _ => FilterDecision::Change(Entry::Put(b"changed".to_vec())),
            })
        }
    }

    fn entries() -> Vec<Result<(Vec<u8>, Entry)>> {
        (0u8..6)
            .map(|k| Ok((vec![k], Entry::Put(vec![k]))))
            .chain(std::iter::once(Ok((vec![7], Entry::Delete))))
            .collect()
    }

    #[test]
    fn removals_are_tombstones_above_the_bottom_and_nothing_at_it() {
        let upper: Vec<(Vec<u8>, Entry)> =
            apply(entries().into_iter(), DropOdd.begin(), MergeLevel::Upper)
                .collect::<Result<_>>()
                .unwrap();
        assert_eq!(upper.len(), 7);
        assert_eq!(upper[1], (vec![1], Entry::Delete));
        assert_eq!(upper[2], (vec![2], Entry::Put(b"changed".to_vec())));
        assert_eq!(
            upper[6],
            (vec![7], Entry::Delete),
            "tombstones are not filtered"
        );
        let bottom: Vec<Vec<u8>> =
            apply(entries().into_iter(), DropOdd.begin(), MergeLevel::Bottom)
                .map(|r| r.unwrap().0)
                .collect();
        assert_eq!(bottom, vec![vec![0], vec![2], vec![3], vec![5], vec![7]]);
    }
}
