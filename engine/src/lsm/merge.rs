//! Resolving keys across the sources of the tree, newest first, and the list-append merge
//! operator.
//!
//! The tree reads a key from several sources: the memtable, immutable memtables, then tables
//! from the newest to the oldest. Each holds at most one [`Entry`] per key. Going from the
//! newest source to older ones (spec/lsm-key-layout.md, "Entries and merging"):
//!
//! - a `Put(v)` ends the search: the value is `v` followed by the operands collected so far,
//!   oldest first;
//! - a `Delete` ends it: the value is the operands collected so far, or absent if there are
//!   none;
//! - `Merge(ops)` operands are collected and the search goes on; if no source has a `Put` or
//!   `Delete`, the value is the operands alone.
//!
//! [`resolve`] does this for a point read, pulling lookups lazily so that older sources are
//! not read once a `Put` or `Delete` is found. [`MergingIter`] does it for whole sorted
//! sources: the k-way merge under flushes, compactions and range reads.
//!
//! ## The list-append merge operator
//!
//! A list value, and a merge operand, is a sequence of elements, each written as a varint
//! length followed by the element's bytes ([`push_list_element`]); the empty sequence is the
//! empty list. Merging is concatenation: the value of `Put(v)` followed by the operands `a`
//! then `b` is `v ++ a ++ b`. Concatenation is associative, so operands can be combined in any
//! grouping (in a memtable, in a compaction) before they meet their base value, and the merge
//! code never parses elements; [`ListElements`] reads them back.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Arc;

use flowstate_formats::codec::varint;
use flowstate_formats::table::RangeTombstone;

use super::entry::{Entry, Lookup};
use super::key::Hex;
use super::ranges;
use crate::codec::CodecError;
use crate::error::{Error, Result};

/// Appends one list element to a list value or merge operand: varint length, then the bytes.
#[inline]
pub fn push_list_element(out: &mut Vec<u8>, element: &[u8]) {
    varint::encode_u64(element.len() as u64, out);
    out.extend_from_slice(element);
}

/// The elements of a list value or merge operand, in order; see [`push_list_element`].
///
/// Never panics: a length that runs past the end yields [`CodecError::Truncated`], a malformed
/// one [`CodecError::Invalid`], and the iterator ends after the first error.
#[derive(Debug, Clone)]
pub struct ListElements<'a> {
    rest: &'a [u8],
}

impl<'a> ListElements<'a> {
    /// The elements of `list`.
    pub fn new(list: &'a [u8]) -> Self {
        ListElements { rest: list }
    }
}

impl<'a> Iterator for ListElements<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut input = self.rest;
        let item = varint::decode_u64(&mut input)
            .map_err(CodecError::from)
            .and_then(|declared| {
                let available = input.len();
                let len = usize::try_from(declared)
                    .ok()
                    .filter(|&len| len <= available)
                    .ok_or(CodecError::Truncated {
                        needed: declared,
                        available: available as u64,
                    })?;
                let (element, rest) = input.split_at(len);
                input = rest;
                Ok(element)
            });
        // After an error, end: what follows cannot be framed.
        self.rest = if item.is_ok() { input } else { &[] };
        Some(item)
    }
}

impl std::iter::FusedIterator for ListElements<'_> {}

/// `base` followed by the operands, given newest first, in oldest-first order.
fn concat<'a>(base: Option<Cow<'a, [u8]>>, newest_first: Vec<Cow<'a, [u8]>>) -> Cow<'a, [u8]> {
    let mut operands = newest_first;
    match (base, operands.len()) {
        (Some(base), 0) => base,
        (None, 1) => operands.pop().unwrap_or_default(),
        (base, _) => {
            let base = base.unwrap_or_default();
            let total = base.len() + operands.iter().map(|o| o.len()).sum::<usize>();
            let mut out = base.into_owned();
            out.reserve_exact(total - out.len());
            for op in operands.iter().rev() {
                out.extend_from_slice(op);
            }
            Cow::Owned(out)
        }
    }
}

/// The value of a key, from its lookups in every source, newest first; `None` if it is absent.
///
/// Lookups are pulled lazily: after a `Found` or a `Deleted`, older sources are not consulted.
/// The first error is returned as is. The value is borrowed from a source when no operand
/// needs appending to it.
///
/// ```
/// use flowstate::lsm::{merge::resolve, Lookup};
/// let newest_first = [
///     Ok(Lookup::MergeOperands(b"c"[..].into())),
///     Ok(Lookup::NotFound),
///     Ok(Lookup::MergeOperands(b"b"[..].into())),
///     Ok(Lookup::Found(b"a"[..].into())),
///     Err(flowstate::Error::InvalidArgument("never read".into())),
/// ];
/// assert_eq!(resolve(newest_first)?.as_deref(), Some(&b"abc"[..]));
/// # Ok::<(), flowstate::Error>(())
/// ```
pub fn resolve<'a, I>(newest_first: I) -> Result<Option<Cow<'a, [u8]>>>
where
    I: IntoIterator<Item = Result<Lookup<'a>>>,
{
    resolve_ranged(newest_first.into_iter().map(|l| l.map(|l| (l, false))))
}

/// [`resolve`] over sources that may hold range tombstones: each item is a source's point
/// lookup and whether one of the source's own range tombstones covers the key. A covering
/// range ends the walk after the source's point entry (which is newer than the range): older
/// sources are not asked, and operands found so far are the whole value.
///
/// ```
/// use flowstate::lsm::{merge, Lookup};
/// let newest = (Lookup::MergeOperands(b"\x01b"[..].into()), true); // covered by its own range
/// let older = (Lookup::Found(b"\x01a"[..].into()), false); // hidden by that range
/// let value = merge::resolve_ranged([Ok(newest), Ok(older)])?;
/// assert_eq!(value.as_deref(), Some(&b"\x01b"[..]));
/// # Ok::<(), flowstate::Error>(())
/// ```
pub fn resolve_ranged<'a, I>(newest_first: I) -> Result<Option<Cow<'a, [u8]>>>
where
    I: IntoIterator<Item = Result<(Lookup<'a>, bool)>>,
{
    let mut operands: Vec<Cow<'a, [u8]>> = Vec::new();
    for item in newest_first {
        let (lookup, covered) = item?;
        match lookup {
            Lookup::NotFound => {}
            Lookup::MergeOperands(ops) => operands.push(ops),
            Lookup::Found(value) => return Ok(Some(concat(Some(value), operands))),
            Lookup::Deleted => return Ok(done(operands)),
        }
        if covered {
            return Ok(done(operands));
        }
    }
    Ok(done(operands))
}

/// The value that operands without a base make, if any.
fn done(operands: Vec<Cow<'_, [u8]>>) -> Option<Cow<'_, [u8]>> {
    (!operands.is_empty()).then(|| concat(None, operands))
}

/// Where the output of a merge goes: whether data older than every merged source may exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MergeLevel {
    /// Older data may exist (a flush, or a compaction into any level but the bottom one):
    /// tombstones are kept, and operands that found no base stay operands.
    Upper,
    /// Nothing older exists (a compaction into the bottom level, or a read over every source
    /// of the tree): tombstones are dropped, and operands that found no base become the value.
    Bottom,
}

/// The entries of one key, newest first, combined into one entry: what a merge writes for the
/// key, or `None` if it writes nothing (a tombstone at the [`MergeLevel::Bottom`]).
///
/// Entries after the first `Put` or `Delete` are hidden by it and not consumed. A `Delete`
/// under operands becomes `Put(operands)`: the tombstone hid everything older, so the value
/// is known.
pub fn merge_entries<I>(newest_first: I, level: MergeLevel) -> Option<Entry>
where
    I: IntoIterator<Item = Entry>,
{
    let mut operands: Vec<Cow<'static, [u8]>> = Vec::new();
    for entry in newest_first {
        match entry {
            Entry::Merge(ops) => operands.push(Cow::Owned(ops)),
            Entry::Put(value) => {
                return Some(Entry::Put(
                    concat(Some(Cow::Owned(value)), operands).into_owned(),
                ))
            }
            Entry::Delete if operands.is_empty() => {
                return match level {
                    MergeLevel::Upper => Some(Entry::Delete),
                    MergeLevel::Bottom => None,
                }
            }
            Entry::Delete => return Some(Entry::Put(concat(None, operands).into_owned())),
        }
    }
    if operands.is_empty() {
        return None;
    }
    let operands = concat(None, operands).into_owned();
    Some(match level {
        MergeLevel::Upper => Entry::Merge(operands),
        MergeLevel::Bottom => Entry::Put(operands),
    })
}

/// The head of one source in the merge heap.
struct Head {
    key: Vec<u8>,
    source: usize,
    entry: Entry,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    /// Reversed, so that the max-heap pops the least key first and, among equal keys, the
    /// newest source (the lowest index) first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .cmp(&self.key)
            .then_with(|| other.source.cmp(&self.source))
    }
}

/// A k-way merge of sorted sources, newest first, into one sorted stream with one entry per
/// key.
///
/// Each source yields `(key, entry)` pairs in strictly ascending key order. For every key, the
/// entries of all sources that hold it are combined by [`merge_entries`]: the newest `Put` or
/// `Delete` wins, operands above it are appended to it, and at the [`MergeLevel::Bottom`]
/// tombstones disappear and lone operands become values. A source whose keys do not ascend
/// strictly is an [`Error::InvalidArgument`].
///
/// After the first error (from a source, or a source out of order) the iterator yields that
/// error and then ends: an entry after it could be wrong, since a newer entry of its key may
/// have been lost.
///
/// ```
/// use flowstate::lsm::{Entry, MergeLevel, MergingIter};
/// let newer = vec![Ok((b"a".to_vec(), Entry::Delete)), Ok((b"b".to_vec(), Entry::Merge(b"2".to_vec())))];
/// let older = vec![Ok((b"a".to_vec(), Entry::Put(b"x".to_vec()))), Ok((b"b".to_vec(), Entry::Put(b"1".to_vec())))];
/// let merged: Vec<_> = MergingIter::new(vec![newer.into_iter(), older.into_iter()], MergeLevel::Bottom)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(merged, vec![(b"b".to_vec(), Entry::Put(b"12".to_vec()))]);
/// # Ok::<(), flowstate::Error>(())
/// ```
pub struct MergingIter<I> {
    sources: Vec<I>,
    heap: BinaryHeap<Head>,
    level: MergeLevel,
    /// The entries of the current key, newest first, and their sources (reused).
    group: Vec<Entry>,
    group_sources: Vec<usize>,
    /// Per source, its range tombstones (normalized; empty for most sources): they hide the
    /// entries of older sources.
    ranges: Vec<Arc<[RangeTombstone]>>,
    started: bool,
    done: bool,
}

impl<I> MergingIter<I>
where
    I: Iterator<Item = Result<(Vec<u8>, Entry)>>,
{
    /// A merge of `sources`, given newest first, written to `level`. Sources are not read
    /// until the first call to `next`.
    pub fn new(sources: Vec<I>, level: MergeLevel) -> Self {
        Self::with_ranges(sources, Vec::new(), level)
    }

    /// A merge of `sources`, given newest first, where `ranges[i]` holds the range tombstones
    /// of source `i` (normalized; a missing entry is none). A source's ranges hide the entries
    /// of older sources in them; its own entries are newer than its ranges. A key whose
    /// entries are all hidden is left out (at the [`MergeLevel::Upper`] the caller writes the
    /// ranges out with the result); operands above a covering range become a value, as over a
    /// tombstone.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flowstate::lsm::{Entry, MergeLevel, MergingIter, RangeTombstone};
    /// let newer = vec![Ok((b"b".to_vec(), Entry::Put(b"new".to_vec())))];
    /// let older = vec![
    ///     Ok((b"a".to_vec(), Entry::Put(b"1".to_vec()))),
    ///     Ok((b"b".to_vec(), Entry::Put(b"2".to_vec()))),
    ///     Ok((b"c".to_vec(), Entry::Put(b"3".to_vec()))),
    /// ];
    /// // The newer source deleted [a, c) before it wrote b.
    /// let ranges: Vec<Arc<[RangeTombstone]>> = vec![Arc::from(vec![RangeTombstone::new(*b"a", *b"c")])];
    /// let merged: Vec<_> = MergingIter::with_ranges(vec![newer.into_iter(), older.into_iter()], ranges, MergeLevel::Bottom)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(merged, vec![
    ///     (b"b".to_vec(), Entry::Put(b"new".to_vec())),
    ///     (b"c".to_vec(), Entry::Put(b"3".to_vec())),
    /// ]);
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    pub fn with_ranges(
        sources: Vec<I>,
        mut ranges: Vec<Arc<[RangeTombstone]>>,
        level: MergeLevel,
    ) -> Self {
        if ranges.iter().all(|r| r.is_empty()) {
            ranges.clear();
        } else {
            ranges.resize_with(sources.len(), ranges::none);
        }
        MergingIter {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            level,
            group: Vec::new(),
            group_sources: Vec::new(),
            ranges,
            started: false,
            done: false,
        }
    }

    /// Pulls the next entry of `source` into the heap; its key must follow `after`.
    fn refill(&mut self, source: usize, after: Option<&[u8]>) -> Result<()> {
        let Some(item) = self.sources[source].next() else {
            return Ok(());
        };
        let (key, entry) = item?;
        if let Some(after) = after {
            if key.as_slice() <= after {
                return Err(Error::InvalidArgument(format!(
                    "merge source {source} is not sorted: key {} follows key {}",
                    Hex(&key),
                    Hex(after)
                )));
            }
        }
        self.heap.push(Head { key, source, entry });
        Ok(())
    }

    fn next_entry(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        if !self.started {
            self.started = true;
            for source in 0..self.sources.len() {
                self.refill(source, None)?;
            }
        }
        loop {
            let Some(first) = self.heap.pop() else {
                return Ok(None);
            };
            let key = first.key;
            self.group.clear();
            self.group_sources.clear();
            self.group.push(first.entry);
            self.group_sources.push(first.source);
            self.refill(first.source, Some(&key))?;
            // Equal keys pop in source order, newest first.
            while self.heap.peek().is_some_and(|h| h.key == key) {
                let Some(head) = self.heap.pop() else { break };
                self.group.push(head.entry);
                self.group_sources.push(head.source);
                self.refill(head.source, Some(&key))?;
            }
            // The newest source whose ranges cover the key hides every older entry of it.
            let covering = if self.ranges.is_empty() {
                None
            } else {
                self.ranges
                    .iter()
                    .enumerate()
                    .find(|(_, r)| ranges::covers(r, &key))
                    .map(|(i, _)| i)
            };
            if let Some(range_source) = covering {
                let keep = self.group_sources.partition_point(|&s| s <= range_source);
                self.group.truncate(keep);
                if self.group.is_empty() {
                    continue;
                }
                self.group.push(Entry::Delete);
                match merge_entries(self.group.drain(..), self.level) {
                    // The range says as much (an output at the upper level carries it).
                    None | Some(Entry::Delete) => continue,
                    Some(entry) => return Ok(Some((key, entry))),
                }
            }
            if let Some(entry) = merge_entries(self.group.drain(..), self.level) {
                return Ok(Some((key, entry)));
            }
        }
    }
}

impl<I> Iterator for MergingIter<I>
where
    I: Iterator<Item = Result<(Vec<u8>, Entry)>>,
{
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                self.heap.clear();
                Some(Err(e))
            }
        }
    }
}

impl<I> std::iter::FusedIterator for MergingIter<I> where
    I: Iterator<Item = Result<(Vec<u8>, Entry)>>
{
}

impl<I> fmt::Debug for MergingIter<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MergingIter")
            .field("sources", &self.sources.len())
            .field("level", &self.level)
            .field("done", &self.done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(v: &[u8]) -> Entry {
        Entry::Put(v.to_vec())
    }

    fn ops(v: &[u8]) -> Entry {
        Entry::Merge(v.to_vec())
    }

    #[test]
    fn list_elements_round_trip_and_reject_damage() {
        let mut list = Vec::new();
        let elements: [&[u8]; 4] = [b"", b"a", &[0u8; 200], b"xyz"];
        for e in elements {
            push_list_element(&mut list, e);
        }
        let read: Vec<&[u8]> = ListElements::new(&list).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, elements);
        assert_eq!(ListElements::new(&[]).count(), 0);
        // Every truncation but the element boundaries is an error, reported once.
        let boundaries = [0, 1, 3, 3 + 202, list.len()];
        for n in 0..list.len() {
            let results: Vec<_> = ListElements::new(&list[..n]).collect();
            let errors = results.iter().filter(|r| r.is_err()).count();
            assert_eq!(errors, usize::from(!boundaries.contains(&n)), "length {n}");
            assert!(results.last().is_none_or(|r| r.is_ok()) || errors == 1);
        }
        let mut it = ListElements::new(&[0x80, 0x00, 1]);
        assert!(matches!(it.next(), Some(Err(CodecError::Invalid(_)))));
        assert!(it.next().is_none());
    }

    #[test]
    fn resolve_rules() {
        let found = |v: &'static [u8]| Ok(Lookup::Found(v.into()));
        let merged = |v: &'static [u8]| Ok(Lookup::MergeOperands(v.into()));
        assert_eq!(resolve(Vec::new()).unwrap(), None);
        assert_eq!(resolve([Ok(Lookup::NotFound)]).unwrap(), None);
        assert_eq!(
            resolve([found(b"v"), found(b"old")]).unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert!(matches!(
            resolve([found(b"v")]).unwrap(),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(resolve([Ok(Lookup::Deleted), found(b"old")]).unwrap(), None);
        assert_eq!(
            resolve([merged(b"2"), Ok(Lookup::Deleted), found(b"old")])
                .unwrap()
                .as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(
            resolve([merged(b"3"), merged(b"2"), Ok(Lookup::NotFound)])
                .unwrap()
                .as_deref(),
            Some(&b"23"[..])
        );
        assert_eq!(
            resolve([merged(b""), Ok(Lookup::NotFound)])
                .unwrap()
                .as_deref(),
            Some(&b""[..])
        );
        // An error before the answer is returned; one after it is never read.
        assert!(resolve([merged(b"1"), Err(Error::InvalidArgument("boom".into()))]).is_err());
        assert!(resolve([found(b"1"), Err(Error::InvalidArgument("boom".into()))]).is_ok());
    }

    #[test]
    fn merge_entries_rules() {
        use MergeLevel::*;
        for level in [Upper, Bottom] {
            assert_eq!(
                merge_entries([put(b"a"), put(b"b")], level),
                Some(put(b"a"))
            );
            assert_eq!(
                merge_entries([ops(b"c"), ops(b"b"), put(b"a")], level),
                Some(put(b"abc"))
            );
            assert_eq!(
                merge_entries([ops(b"b"), Entry::Delete, put(b"a")], level),
                Some(put(b"b"))
            );
            assert_eq!(merge_entries(Vec::new(), level), None);
        }
        assert_eq!(
            merge_entries([Entry::Delete, put(b"a")], Upper),
            Some(Entry::Delete)
        );
        assert_eq!(merge_entries([Entry::Delete, put(b"a")], Bottom), None);
        assert_eq!(
            merge_entries([ops(b"b"), ops(b"a")], Upper),
            Some(ops(b"ab"))
        );
        assert_eq!(
            merge_entries([ops(b"b"), ops(b"a")], Bottom),
            Some(put(b"ab"))
        );
    }

    type Source = std::vec::IntoIter<Result<(Vec<u8>, Entry)>>;

    fn source(entries: &[(&[u8], Entry)]) -> Source {
        entries
            .iter()
            .map(|(k, e)| Ok((k.to_vec(), e.clone())))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn merging_iter_combines_sources() {
        let sources = || {
            let newest = source(&[(b"a", ops(b"3")), (b"c", Entry::Delete), (b"e", put(b"e1"))]);
            let middle = source(&[(b"a", ops(b"2")), (b"b", ops(b"b")), (b"d", Entry::Delete)]);
            let oldest = source(&[(b"a", put(b"1")), (b"c", put(b"c0")), (b"e", put(b"e0"))]);
            vec![newest, middle, oldest]
        };
        let upper: Vec<_> = MergingIter::new(sources(), MergeLevel::Upper)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            upper,
            vec![
                (b"a".to_vec(), put(b"123")),
                (b"b".to_vec(), ops(b"b")),
                (b"c".to_vec(), Entry::Delete),
                (b"d".to_vec(), Entry::Delete),
                (b"e".to_vec(), put(b"e1")),
            ]
        );
        let bottom: Vec<_> = MergingIter::new(sources(), MergeLevel::Bottom)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            bottom,
            vec![
                (b"a".to_vec(), put(b"123")),
                (b"b".to_vec(), put(b"b")),
                (b"e".to_vec(), put(b"e1")),
            ]
        );
        assert_eq!(
            MergingIter::new(Vec::<Source>::new(), MergeLevel::Bottom).count(),
            0
        );
    }

    #[test]
    fn merging_iter_stops_at_the_first_error() {
        let bad: Source = vec![
            Ok((b"a".to_vec(), put(b"1"))),
            Err(Error::InvalidArgument("damaged block".into())),
            Ok((b"z".to_vec(), put(b"1"))),
        ]
        .into_iter();
        let good = source(&[(b"b", put(b"2")), (b"c", put(b"3"))]);
        let out: Vec<_> = MergingIter::new(vec![good, bad], MergeLevel::Upper).collect();
        // "a" is pulled, and refilling its source fails before "a" is returned.
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());

        let unsorted = source(&[(b"b", put(b"1")), (b"a", put(b"2"))]);
        let out: Vec<_> = MergingIter::new(vec![unsorted], MergeLevel::Upper).collect();
        assert_eq!(out.len(), 1);
        let err = out[0].as_ref().unwrap_err();
        assert!(
            err.to_string()
                .contains("not sorted: key 61 follows key 62"),
            "{err}"
        );
        let duplicate = source(&[(b"a", put(b"1")), (b"a", put(b"2"))]);
        assert!(MergingIter::new(vec![duplicate], MergeLevel::Upper).any(|r| r.is_err()));
    }
}
