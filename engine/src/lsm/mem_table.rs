//! The memtable: the newest entries of the LSM tree, in memory, in key order.
//!
//! The task thread owns the [`MemTable`] and writes into it without locks. When it is full
//! ([`MemTable::approximate_memory_usage`] over the flush threshold) the backend
//! [`freeze`](MemTable::freeze)s it into an [`ImmutableMemTable`] behind an `Arc`, which reads,
//! iterators and a flush on other threads share while a fresh memtable takes the writes.
//!
//! ## Structure
//!
//! - **Arena.** Keys and values are bytes in 32 KiB chunks that never move (items of more than
//!   8 KiB get a chunk of their own); a new entry's key and value sit side by side. A value is
//!   overwritten in place when the new one fits its slot, and list-append operands are
//!   appended in place into spare capacity that doubles when it runs out, so a counter updated
//!   a million times or a list appended to a million times allocates rarely. Slots given up
//!   are not reused: the memtable is short-lived, and its reported size includes them.
//! - **Entries.** One 40-byte record per key (hash, key and value slots, lengths, kind), in
//!   chunks that never move, addressed by a `u32` id.
//! - **Hash index.** A `hashbrown` table maps a key's hash to its entry id, so a point read, an
//!   overwrite and an append find an existing key in O(1).
//! - **Order.** An insert-only B+tree of entry ids (`btree.rs`: 32 keys a node, the first 16
//!   key bytes kept inline for comparisons, leaves linked for iteration). Only the insertion
//!   of a new key and a seek walk it (O(log n)).
//!
//! Measured against a `BTreeMap<Vec<u8>, Entry>` holding the same 1 M keys of 16 bytes
//! (6-byte header, a `u64` key, unit namespace) in random order, with 16-byte values, in an
//! optimised build on one core of the 2-core development machine (a throwaway harness, not in
//! the repository; the `benches/` crate is where a memtable benchmark belongs):
//!
//! | per operation | memtable | `BTreeMap` |
//! |---|---|---|
//! | insert a new key | 1.0–1.1 µs | 1.3–1.9 µs |
//! | get an existing key | 0.19 µs | 1.3–1.7 µs |
//! | overwrite a value | 0.28 µs | 1.2–1.9 µs |
//! | append a 4-byte operand | 0.3–0.4 µs | 1.3–1.9 µs |
//! | iterate, per entry | 145 ns | 35 ns |
//! | seek a key-group prefix and read 10 entries | 0.42 µs | 0.24–0.28 µs |
//! | drop, per entry | 12 ns | 250–400 ns |
//!
//! Iteration is the weak spot: each entry is a leaf slot, then its record, then its bytes in
//! the arena, two dependent cache misses where the `BTreeMap` has independent ones. It costs a
//! flush about 0.15 s per million entries. Memory for that table: 139 MiB by
//! [`MemTable::approximate_memory_usage`], about 145 bytes per entry: 64 in the arena (the
//! 16-byte key and the first 16-byte value slot, given up when the append outgrew it, then a
//! 32-byte slot holding 20 bytes), 40 the record, about 30 the tree, 10 the hash index.
//!
//! Nothing is `unsafe`: ids are indices, slots are bounds-checked slices.

use std::fmt;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

use super::arena::{Arena, Chunked, Slot};
use super::btree::{BTree, Cursor, Keys};
use super::entry::{Entry, EntryRef, Lookup};
use super::ranges::{self, RangeSet};
use crate::error::{Error, Result};
use flowstate_formats::table::RangeTombstone;

/// The seed of the key hash. Fixed, so runs are reproducible; it never reaches disk.
const HASH_SEED: u64 = 0x6d65_6d74_6162_6c65; // "memtable"

/// The most entries, tree nodes or arena chunks a memtable holds: below `u32::MAX`, with room
/// for the records one more write adds.
const MAX_RECORDS: usize = u32::MAX as usize - 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Put,
    Delete,
    Merge,
}

/// One key and its entry.
#[derive(Debug, Clone, Copy, Default)]
struct Record {
    hash: u64,
    key: Slot,
    value: Slot,
    key_len: u32,
    value_len: u32,
    value_cap: u32,
    kind: Kind,
}

/// The key bytes of entry ids, for the tree.
struct KeyView<'a> {
    arena: &'a Arena,
    records: &'a Chunked<Record>,
}

impl Keys for KeyView<'_> {
    #[inline]
    fn key(&self, id: u32) -> &[u8] {
        let r = self.records.get(id);
        self.arena.get(r.key, r.key_len)
    }
}

/// The data of a memtable, mutable or frozen.
struct Table {
    arena: Arena,
    records: Chunked<Record>,
    index: HashTable<u32>,
    tree: BTree,
    hasher: FixedState,
    /// Bytes of arena slots given up when a value moved to a larger slot.
    abandoned: usize,
    /// Range tombstones, normalized: they delete keys of older sources; every entry of this
    /// table in a range was made a tombstone when the range was added, and later entries are
    /// newer than it.
    ranges: RangeSet,
}

fn check_len(what: &str, len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        Error::InvalidArgument(format!(
            "a memtable {what} of {len} bytes exceeds the limit of {} bytes",
            u32::MAX
        ))
    })
}

impl Table {
    fn new() -> Self {
        Table {
            arena: Arena::default(),
            records: Chunked::new(),
            index: HashTable::new(),
            tree: BTree::new(),
            hasher: FixedState::with_seed(HASH_SEED),
            abandoned: 0,
            ranges: RangeSet::default(),
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn keys(&self) -> KeyView<'_> {
        KeyView {
            arena: &self.arena,
            records: &self.records,
        }
    }

    #[inline]
    fn key(&self, id: u32) -> &[u8] {
        let r = self.records.get(id);
        self.arena.get(r.key, r.key_len)
    }

    #[inline]
    fn entry(&self, id: u32) -> EntryRef<'_> {
        let r = self.records.get(id);
        match r.kind {
            Kind::Put => EntryRef::Put(self.arena.get(r.value, r.value_len)),
            Kind::Delete => EntryRef::Delete,
            Kind::Merge => EntryRef::Merge(self.arena.get(r.value, r.value_len)),
        }
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn find_hashed(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.index
            .find(hash, |&id| {
                let r = self.records.get(id);
                r.hash == hash && self.arena.get(r.key, r.key_len) == key
            })
            .copied()
    }

    fn get(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        let id = self.find_hashed(self.hash(key), key)?;
        Some(self.entry(id))
    }

    fn seek(&self, start: Bound<&[u8]>) -> Cursor {
        match start {
            Bound::Unbounded => self.tree.first(),
            Bound::Included(key) => self.tree.seek(&self.keys(), key, true),
            Bound::Excluded(key) => self.tree.seek(&self.keys(), key, false),
        }
    }

    /// Fails if one more entry could overflow a `u32` id.
    fn check_room(&self) -> Result<()> {
        if self.records.len() > MAX_RECORDS || self.arena.chunk_count() > MAX_RECORDS {
            return Err(Error::InvalidArgument(
                "the memtable holds too many entries: freeze it and start a new one".into(),
            ));
        }
        Ok(())
    }

    /// Applies a put, a delete or a merge operand to `key`.
    fn write(&mut self, key: &[u8], op: EntryRef<'_>) -> Result<()> {
        let key_len = check_len("key", key.len())?;
        self.check_room()?;
        let hash = self.hash(key);
        let Some(id) = self.find_hashed(hash, key) else {
            let (kind, value) = match op {
                EntryRef::Put(v) => (Kind::Put, v),
                EntryRef::Delete => (Kind::Delete, &[][..]),
                EntryRef::Merge(v) => (Kind::Merge, v),
            };
            let value_len = check_len("value", value.len())?;
            self.insert(hash, key, key_len, kind, value, value_len);
            return Ok(());
        };
        let kind = self.records.get(id).kind;
        match (op, kind) {
            (EntryRef::Put(v), _) => self.replace(id, Kind::Put, v),
            (EntryRef::Delete, _) => {
                let r = self.records.get_mut(id);
                r.kind = Kind::Delete;
                r.value_len = 0;
                Ok(())
            }
            // The tombstone hides everything older: the list is the operand alone.
            (EntryRef::Merge(operand), Kind::Delete) => self.replace(id, Kind::Put, operand),
            // Put(v) + operand = Put(v ++ operand); Merge(ops) + operand = Merge(ops ++ operand).
            (EntryRef::Merge(operand), _) => self.append(id, operand),
        }
    }

    /// Adds a new key: its record, its place in the tree and in the index.
    fn insert(
        &mut self,
        hash: u64,
        key: &[u8],
        key_len: u32,
        kind: Kind,
        value: &[u8],
        value_len: u32,
    ) {
        let (key_slot, value_slot) = self.arena.alloc_pair(key, value, value.len());
        let id = self.records.push(Record {
            hash,
            key: key_slot,
            value: value_slot,
            key_len,
            value_len,
            value_cap: value_len,
            kind,
        });
        let Table {
            arena,
            records,
            index,
            tree,
            ..
        } = self;
        tree.insert(&KeyView { arena, records }, id, key);
        index.insert_unique(hash, id, |&i| records.get(i).hash);
    }

    /// Replaces the value of entry `id`, in place when it fits the slot.
    fn replace(&mut self, id: u32, kind: Kind, value: &[u8]) -> Result<()> {
        let len = check_len("value", value.len())?;
        let r = *self.records.get(id);
        let (slot, cap) = if len <= r.value_cap {
            self.arena.get_mut(r.value, len).copy_from_slice(value);
            (r.value, r.value_cap)
        } else {
            self.abandoned += r.value_cap as usize;
            (self.arena.alloc(value, value.len()), len)
        };
        let r = self.records.get_mut(id);
        r.kind = kind;
        r.value = slot;
        r.value_len = len;
        r.value_cap = cap;
        Ok(())
    }

    /// Appends `operand` to the value or operands of entry `id`, in place when the slot has
    /// room, else in a new slot of twice the capacity.
    fn append(&mut self, id: u32, operand: &[u8]) -> Result<()> {
        let r = *self.records.get(id);
        let old = r.value_len as usize;
        let new_len = check_len("merged value", old.saturating_add(operand.len()))?;
        let (slot, cap) = if new_len <= r.value_cap {
            (r.value, r.value_cap)
        } else {
            let cap = (r.value_cap as usize)
                .saturating_mul(2)
                .clamp(new_len as usize, u32::MAX as usize);
            let slot = self.arena.alloc(&[], cap);
            self.arena.copy(r.value, slot, r.value_len);
            self.abandoned += r.value_cap as usize;
            (slot, cap as u32)
        };
        self.arena.get_mut(slot, new_len)[old..].copy_from_slice(operand);
        let r = self.records.get_mut(id);
        r.value = slot;
        r.value_len = new_len;
        r.value_cap = cap;
        Ok(())
    }

    /// Adds the range tombstone `[start, end)`: every entry in it becomes a tombstone (so
    /// that the table's own entries stay newer than its ranges), then the range is recorded.
    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<()> {
        check_len("key", start.len())?;
        check_len("key", end.len())?;
        if start >= end {
            return Ok(());
        }
        let end_bound = Bound::Excluded(end.to_vec());
        let mut cursor = self.seek(Bound::Included(start));
        while let Some((id, next)) = self.step(cursor, &end_bound) {
            let r = self.records.get_mut(id);
            r.kind = Kind::Delete;
            r.value_len = 0;
            cursor = next;
        }
        self.ranges.insert(start, end);
        Ok(())
    }

    fn memory(&self) -> usize {
        std::mem::size_of::<Table>()
            + self.ranges.memory()
            + self.arena.reserved()
            + self.records.reserved()
            + self.tree.reserved()
            + self.index.allocation_size()
    }

    fn range(&self, start: Bound<&[u8]>, end: Bound<Vec<u8>>) -> Iter<'_> {
        Iter {
            table: self,
            cursor: self.seek(start),
            end,
        }
    }

    fn prefix(&self, prefix: &[u8]) -> Iter<'_> {
        let end = match super::key::prefix_successor(prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        self.range(Bound::Included(prefix), end)
    }

    /// The entry at `cursor` if its key is before `end`, and the cursor after it.
    #[inline]
    fn step(&self, cursor: Cursor, end: &Bound<Vec<u8>>) -> Option<(u32, Cursor)> {
        let (id, next) = self.tree.next(cursor)?;
        before_end(self.key(id), end).then_some((id, next))
    }
}

fn before_end(key: &[u8], end: &Bound<Vec<u8>>) -> bool {
    match end {
        Bound::Unbounded => true,
        Bound::Included(e) => key <= e.as_slice(),
        Bound::Excluded(e) => key < e.as_slice(),
    }
}

/// The mutable memtable, owned by the task thread.
///
/// Every key has at most one [`Entry`]: a put replaces it, a delete makes it a tombstone, and
/// a merge operand is appended (list append: spec/lsm-key-layout.md, "Entries and merging"):
///
/// | entry before | after `merge(op)` |
/// |---|---|
/// | none | `Merge(op)` |
/// | `Put(v)` | `Put(v ++ op)` |
/// | `Delete` | `Put(op)`: the tombstone hides everything older |
/// | `Merge(ops)` | `Merge(ops ++ op)` |
///
/// ```
/// use flowstate::lsm::{EntryRef, Lookup, MemTable};
/// let mut m = MemTable::new();
/// m.put(b"b", b"1")?;
/// m.merge(b"a", b"x")?;
/// m.merge(b"a", b"y")?;
/// m.delete(b"c")?;
/// assert_eq!(m.get(b"b"), Lookup::Found(b"1"[..].into()));
/// assert_eq!(m.get(b"a"), Lookup::MergeOperands(b"xy"[..].into()));
/// assert_eq!(m.get(b"c"), Lookup::Deleted);
/// assert_eq!(m.get(b"d"), Lookup::NotFound);
/// let keys: Vec<&[u8]> = m.iter().map(|(k, _)| k).collect();
/// assert_eq!(keys, [b"a", b"b", b"c"]);
/// let frozen = m.freeze(); // Arc<ImmutableMemTable>: Send + Sync
/// assert_eq!(frozen.len(), 3);
/// # Ok::<(), flowstate::Error>(())
/// ```
pub struct MemTable {
    table: Table,
}

impl Default for MemTable {
    fn default() -> Self {
        MemTable::new()
    }
}

impl MemTable {
    /// An empty memtable. It allocates the tree's first chunk (about 40 KiB) at once, and the
    /// first arena and record chunks (about 70 KiB) with the first write.
    pub fn new() -> Self {
        MemTable {
            table: Table::new(),
        }
    }

    /// Sets `key` to `value`.
    ///
    /// Fails (changing nothing) if the key or the value is 4 GiB or larger, or if the memtable
    /// holds about 4 billion entries: limits a memtable frozen at its flush threshold never
    /// meets.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.table.write(key, EntryRef::Put(value))
    }

    /// Makes `key` a tombstone, hiding what older sources hold.
    ///
    /// Fails as [`put`](Self::put) does.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.table.write(key, EntryRef::Delete)
    }

    /// Appends the list-append `operand` (encoded list elements, see
    /// [`merge::push_list_element`](super::merge::push_list_element)) to `key`'s entry, as the
    /// table of [`MemTable`] shows.
    ///
    /// Fails as [`put`](Self::put) does, and if the merged value would reach 4 GiB.
    pub fn merge(&mut self, key: &[u8], operand: &[u8]) -> Result<()> {
        self.table.write(key, EntryRef::Merge(operand))
    }

    /// Deletes every key in `[start, end)` of older sources (a range tombstone), and makes
    /// each entry of this memtable in the range a tombstone. Later writes in the range are
    /// newer than the range. O(entries of the memtable in the range + log ranges), amortized; nothing
    /// older is read. An empty range changes nothing.
    ///
    /// Fails as [`put`](Self::put) does for a bound of 4 GiB or more.
    pub fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<()> {
        self.table.delete_range(start, end)
    }

    /// What the memtable holds for `key`. O(1): a hash lookup. The memtable's range
    /// tombstones are not applied: see [`covers`](Self::covers).
    pub fn get(&self, key: &[u8]) -> Lookup<'_> {
        self.table.get(key).into()
    }

    /// Whether one of the memtable's range tombstones deletes `key` in older sources.
    /// O(log ranges).
    pub fn covers(&self, key: &[u8]) -> bool {
        self.table.ranges.covers(key)
    }

    /// The parts of the memtable's range tombstones within `[lo, hi)` (`None`: no upper
    /// bound), normalized: what a scan of that window applies.
    pub fn range_tombstones_within(&self, lo: &[u8], hi: Option<&[u8]>) -> Vec<RangeTombstone> {
        self.table.ranges.within(lo, hi)
    }

    /// The number of keys (tombstones included; range tombstones not).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the memtable holds no key and no range tombstone.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.table.ranges.is_empty()
    }

    /// The memory the memtable has allocated, in bytes: every arena chunk (keys, values, the
    /// spare capacity of list values, slots given up by values that grew, the unused end of the
    /// current chunk), the entry records (40 bytes per entry), the tree (about 20 to 30 bytes
    /// per entry) and the hash index (about 6 to 11 bytes per entry). What the flush threshold
    /// compares against. It grows by one chunk at a time (32 to 64 KiB) and, when the hash
    /// index doubles, by the index's size.
    pub fn approximate_memory_usage(&self) -> usize {
        self.table.memory()
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.table.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// The entries whose keys are at least `key`, in key order.
    pub fn iter_from(&self, key: &[u8]) -> Iter<'_> {
        self.table.range(Bound::Included(key), Bound::Unbounded)
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn prefix(&self, prefix: &[u8]) -> Iter<'_> {
        self.table.prefix(prefix)
    }

    /// The entries whose keys are within the bounds, in key order.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Iter<'_> {
        self.table.range(start, end.map(<[u8]>::to_vec))
    }

    /// The entries in key order as owned `(key, entry)` pairs: a source for
    /// [`MergingIter`](super::merge::MergingIter).
    pub fn entries(&self) -> Entries<'_> {
        self.iter().into_entries()
    }

    /// Ends writing: the memtable becomes immutable and shareable between threads. O(1).
    pub fn freeze(mut self) -> Arc<ImmutableMemTable> {
        // The set moves into a sorted slice: held once, counted once.
        let set = std::mem::take(&mut self.table.ranges);
        let ranges_memory = set.memory();
        Arc::new(ImmutableMemTable {
            table: self.table,
            ranges: Arc::from(set.to_vec()),
            ranges_memory,
        })
    }
}

impl fmt::Debug for MemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTable")
            .field("len", &self.len())
            .field("memory", &self.approximate_memory_usage())
            .field("abandoned", &self.table.abandoned)
            .finish()
    }
}

/// A memtable that takes no more writes, shared behind an `Arc` by point reads, iterators and
/// the flush that turns it into an L0 table. `Send + Sync`.
pub struct ImmutableMemTable {
    table: Table,
    /// The range tombstones, normalized, shared with the merges that read them.
    ranges: Arc<[RangeTombstone]>,
    /// Their memory, as the live memtable counted it.
    ranges_memory: usize,
}

impl ImmutableMemTable {
    /// What the memtable holds for `key`. O(1): a hash lookup. The memtable's range
    /// tombstones are not applied: see [`covers`](Self::covers).
    pub fn get(&self, key: &[u8]) -> Lookup<'_> {
        self.table.get(key).into()
    }

    /// Whether one of the memtable's range tombstones deletes `key` in older sources.
    pub fn covers(&self, key: &[u8]) -> bool {
        ranges::covers(&self.ranges, key)
    }

    /// The memtable's range tombstones, normalized (made once, when it was frozen).
    pub fn range_tombstones(&self) -> &Arc<[RangeTombstone]> {
        &self.ranges
    }

    /// The number of keys (tombstones included; range tombstones not).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the memtable holds no key and no range tombstone.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.ranges.is_empty()
    }

    /// The memory the memtable holds, as [`MemTable::approximate_memory_usage`] counts it.
    pub fn approximate_memory_usage(&self) -> usize {
        self.table.memory() + self.ranges_memory
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.table.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// The entries whose keys are at least `key`, in key order.
    pub fn iter_from(&self, key: &[u8]) -> Iter<'_> {
        self.table.range(Bound::Included(key), Bound::Unbounded)
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn prefix(&self, prefix: &[u8]) -> Iter<'_> {
        self.table.prefix(prefix)
    }

    /// The entries whose keys are within the bounds, in key order.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Iter<'_> {
        self.table.range(start, end.map(<[u8]>::to_vec))
    }

    /// The entries in key order as owned `(key, entry)` pairs: a source for
    /// [`MergingIter`](super::merge::MergingIter).
    pub fn entries(&self) -> Entries<'_> {
        self.iter().into_entries()
    }

    /// The entries within the bounds as owned `(key, entry)` pairs, holding the memtable
    /// alive: a `Send + 'static` source for a merge on another thread.
    pub fn owned_entries(self: Arc<Self>, start: Bound<&[u8]>, end: Bound<&[u8]>) -> OwnedEntries {
        let cursor = self.table.seek(start);
        OwnedEntries {
            table: self,
            cursor,
            end: end.map(<[u8]>::to_vec),
        }
    }
}

impl fmt::Debug for ImmutableMemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImmutableMemTable")
            .field("len", &self.len())
            .field("memory", &self.approximate_memory_usage())
            .finish()
    }
}

/// An iterator over a memtable's entries in key order, borrowing keys and values.
#[derive(Clone)]
pub struct Iter<'a> {
    table: &'a Table,
    cursor: Cursor,
    end: Bound<Vec<u8>>,
}

impl<'a> Iter<'a> {
    /// The same entries as owned `(key, entry)` pairs in `Ok`: a source for
    /// [`MergingIter`](super::merge::MergingIter).
    pub fn into_entries(self) -> Entries<'a> {
        Entries { iter: self }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], EntryRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let Some((id, next)) = self.table.step(self.cursor, &self.end) else {
            self.cursor = Cursor::END;
            return None;
        };
        self.cursor = next;
        Some((self.table.key(id), self.table.entry(id)))
    }
}

impl std::iter::FusedIterator for Iter<'_> {}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("done", &(self.cursor == Cursor::END))
            .finish()
    }
}

/// A memtable's entries in key order as owned `Ok((key, entry))` pairs; see
/// [`Iter::into_entries`].
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    iter: Iter<'a>,
}

impl Iterator for Entries<'_> {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, entry) = self.iter.next()?;
        Some(Ok((key.to_vec(), entry.to_entry())))
    }
}

impl std::iter::FusedIterator for Entries<'_> {}

/// An immutable memtable's entries in key order as owned `Ok((key, entry))` pairs, holding the
/// memtable alive: `Send + 'static`. See [`ImmutableMemTable::owned_entries`].
pub struct OwnedEntries {
    table: Arc<ImmutableMemTable>,
    cursor: Cursor,
    end: Bound<Vec<u8>>,
}

impl Iterator for OwnedEntries {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        let table = &self.table.table;
        let Some((id, next)) = table.step(self.cursor, &self.end) else {
            self.cursor = Cursor::END;
            return None;
        };
        self.cursor = next;
        Some(Ok((table.key(id).to_vec(), table.entry(id).to_entry())))
    }
}

impl std::iter::FusedIterator for OwnedEntries {}

impl fmt::Debug for OwnedEntries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedEntries")
            .field("done", &(self.cursor == Cursor::END))
            .finish()
    }
}

/// The frozen memtable is shared between threads; the live one moves with its backend.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<ImmutableMemTable>();
    send::<OwnedEntries>();
    send::<MemTable>();
};

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn entries(iter: Iter<'_>) -> Vec<(Vec<u8>, Entry)> {
        iter.map(|(k, e)| (k.to_vec(), e.to_entry())).collect()
    }

    #[test]
    fn merge_follows_the_table() {
        let mut m = MemTable::new();
        m.merge(b"none", b"op").unwrap();
        m.put(b"put", b"v").unwrap();
        m.merge(b"put", b"op").unwrap();
        m.delete(b"del").unwrap();
        m.merge(b"del", b"op").unwrap();
        m.merge(b"merge", b"a").unwrap();
        m.merge(b"merge", b"b").unwrap();
        assert_eq!(m.get(b"none"), Lookup::MergeOperands(b"op"[..].into()));
        assert_eq!(m.get(b"put"), Lookup::Found(b"vop"[..].into()));
        assert_eq!(m.get(b"del"), Lookup::Found(b"op"[..].into()));
        assert_eq!(m.get(b"merge"), Lookup::MergeOperands(b"ab"[..].into()));
        // A put or a delete replaces operands.
        m.put(b"merge", b"x").unwrap();
        assert_eq!(m.get(b"merge"), Lookup::Found(b"x"[..].into()));
        m.delete(b"merge").unwrap();
        assert_eq!(m.get(b"merge"), Lookup::Deleted);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn values_grow_shrink_and_move() {
        let mut m = MemTable::new();
        m.put(b"k", b"").unwrap();
        let mut expected = Vec::new();
        for i in 0..10_000u32 {
            let op = i.to_le_bytes();
            m.merge(b"k", &op).unwrap();
            expected.extend_from_slice(&op);
        }
        assert_eq!(m.get(b"k"), Lookup::Found(expected.clone().into()));
        // Doubling: the 40 000-byte value moved about log2(40 000) times.
        assert!(m.table.abandoned < 2 * expected.len(), "{m:?}");
        // Shrink in place, then grow past the slot.
        m.put(b"k", b"small").unwrap();
        assert_eq!(m.get(b"k"), Lookup::Found(b"small"[..].into()));
        let big = vec![3u8; 100_000];
        m.put(b"k", &big).unwrap();
        assert_eq!(m.get(b"k"), Lookup::Found(big.into()));
        m.delete(b"k").unwrap();
        m.merge(b"k", b"after").unwrap();
        assert_eq!(m.get(b"k"), Lookup::Found(b"after"[..].into()));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn iteration_is_ordered_and_bounded() {
        let mut m = MemTable::new();
        let keys: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"ab".to_vec(),
            b"a\xff".to_vec(),
            b"a\xff\xff".to_vec(),
            b"b".to_vec(),
            vec![0xff],
            vec![0xff, 0xff],
        ];
        for k in keys.iter().rev() {
            m.put(k, k).unwrap();
        }
        let all: Vec<Vec<u8>> = m.iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(all, keys);
        let from: Vec<&[u8]> = m.iter_from(b"a\x01").map(|(k, _)| k).collect();
        assert_eq!(
            from,
            [
                &b"ab"[..],
                b"a\xff",
                b"a\xff\xff",
                b"b",
                b"\xff",
                b"\xff\xff"
            ]
        );
        let prefixed: Vec<&[u8]> = m.prefix(b"a\xff").map(|(k, _)| k).collect();
        assert_eq!(prefixed, [&b"a\xff"[..], b"a\xff\xff"]);
        let prefixed: Vec<&[u8]> = m.prefix(b"\xff").map(|(k, _)| k).collect();
        assert_eq!(prefixed, [&b"\xff"[..], b"\xff\xff"]);
        assert_eq!(m.prefix(b"").count(), keys.len());
        assert_eq!(m.prefix(b"c").count(), 0);
        let ranged: Vec<&[u8]> = m
            .range(Bound::Excluded(b"a"), Bound::Included(b"ab"))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(ranged, [&b"a\x00"[..], b"ab"]);
        let frozen = m.freeze();
        let owned: Vec<Vec<u8>> = Arc::clone(&frozen)
            .owned_entries(Bound::Included(b"a\xff"), Bound::Excluded(b"\xff"))
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(
            owned,
            [b"a\xff".to_vec(), b"a\xff\xff".to_vec(), b"b".to_vec()]
        );
        assert_eq!(frozen.prefix(b"a").count(), 5);
        assert_eq!(frozen.iter_from(b"b").count(), 3);
    }

    #[test]
    fn frozen_memtable_is_read_from_other_threads() {
        let mut m = MemTable::new();
        for i in 0..1000u32 {
            m.put(&i.to_be_bytes(), &i.to_le_bytes()).unwrap();
        }
        let frozen = m.freeze();
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let f = Arc::clone(&frozen);
                std::thread::spawn(move || {
                    let n = Arc::clone(&f)
                        .owned_entries(Bound::Unbounded, Bound::Unbounded)
                        .count();
                    let i = 500u32 + t;
                    let found = match f.get(&i.to_be_bytes()) {
                        Lookup::Found(v) => Some(v.into_owned()),
                        _ => None,
                    };
                    (n, found)
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            let (n, found) = h.join().unwrap();
            assert_eq!(n, 1000);
            let i = 500u32 + t as u32;
            assert_eq!(found, Some(i.to_le_bytes().to_vec()));
        }
    }

    #[test]
    fn memory_usage_counts_keys_values_and_entries() {
        let mut m = MemTable::new();
        let empty = m.approximate_memory_usage();
        // The tree's first chunk; the first write adds an arena and a record chunk.
        assert!(empty > 0 && empty < 64 << 10, "{empty}");
        let mut one = MemTable::new();
        one.put(b"k", b"v").unwrap();
        assert!(one.approximate_memory_usage() < 128 << 10, "{one:?}");
        let value = [7u8; 100];
        for i in 0..20_000u32 {
            m.put(&i.to_be_bytes(), &value).unwrap();
        }
        let used = m.approximate_memory_usage();
        let payload = 20_000 * (4 + 100);
        assert!(used > payload + 20_000 * 48, "{used}");
        assert!(used < payload * 2, "{used}");
        // Overwrites in place do not grow it.
        for i in 0..20_000u32 {
            m.put(&i.to_be_bytes(), &[1u8; 50]).unwrap();
        }
        assert_eq!(m.approximate_memory_usage(), used);
    }

    #[test]
    fn oversized_input_is_an_error() {
        // Only the length checks: no 4 GiB allocation.
        assert!(check_len("key", u32::MAX as usize).is_ok());
        #[cfg(target_pointer_width = "64")]
        assert!(matches!(
            check_len("key", u32::MAX as usize + 1),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(Vec<u8>, Vec<u8>),
        Delete(Vec<u8>),
        Merge(Vec<u8>, Vec<u8>),
    }

    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff)], 0..4)
    }

    fn op() -> impl Strategy<Value = Op> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..6);
        prop_oneof![
            (small_key(), bytes()).prop_map(|(k, v)| Op::Put(k, v)),
            small_key().prop_map(Op::Delete),
            (small_key(), bytes()).prop_map(|(k, v)| Op::Merge(k, v)),
        ]
    }

    proptest! {
        /// The memtable equals a `BTreeMap` that applies the same operations by the table of
        /// [`MemTable`], for point reads, full iteration, seeks and prefixes.
        #[test]
        fn memtable_matches_btreemap(ops in prop::collection::vec(op(), 0..300), probe in small_key()) {
            let mut m = MemTable::new();
            let mut model: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        m.put(&k, &v).unwrap();
                        model.insert(k, Entry::Put(v));
                    }
                    Op::Delete(k) => {
                        m.delete(&k).unwrap();
                        model.insert(k, Entry::Delete);
                    }
                    Op::Merge(k, v) => {
                        m.merge(&k, &v).unwrap();
                        let e = match model.remove(&k) {
                            None => Entry::Merge(v),
                            Some(Entry::Put(mut old)) => { old.extend_from_slice(&v); Entry::Put(old) }
                            Some(Entry::Delete) => Entry::Put(v),
                            Some(Entry::Merge(mut old)) => { old.extend_from_slice(&v); Entry::Merge(old) }
                        };
                        model.insert(k, e);
                    }
                }
            }
            prop_assert_eq!(m.len(), model.len());
            let all: Vec<_> = model.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
            prop_assert_eq!(entries(m.iter()), all.clone());
            for (k, e) in &model {
                prop_assert_eq!(m.get(k), e.borrowed().lookup());
            }
            let expected_get = model.get(&probe).map(|e| e.borrowed()).into();
            prop_assert_eq!(m.get(&probe), expected_get);
            let from: Vec<_> = model.range(probe.clone()..).map(|(k, e)| (k.clone(), e.clone())).collect();
            prop_assert_eq!(entries(m.iter_from(&probe)), from);
            let prefixed: Vec<_> = model
                .iter()
                .filter(|(k, _)| k.starts_with(&probe))
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect();
            prop_assert_eq!(entries(m.prefix(&probe)), prefixed.clone());
            let frozen = m.freeze();
            prop_assert_eq!(entries(frozen.prefix(&probe)), prefixed);
            let owned: Vec<_> = frozen
                .clone()
                .owned_entries(Bound::Unbounded, Bound::Unbounded)
                .collect::<Result<_>>()
                .unwrap();
            prop_assert_eq!(owned, all);
        }
    }
}
