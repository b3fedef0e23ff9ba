//! The LSM tree: a memtable, frozen memtables and versions of immutable table files in levels.
//!
//! A [`Tree`] lives in one directory of a [`Storage`]: table files named `NNNNNN.sst` and a
//! `MANIFEST` (spec/formats.md, section "LSM manifest") that lists the live tables; design in
//! spec/lsm-tree.md.
//!
//! - Writes ([`Tree::put`], [`Tree::delete`], [`Tree::merge`]) go into the active
//!   [`MemTable`]; once it holds [`TreeOptions::memtable_bytes`] it is frozen into an
//!   [`ImmutableMemTable`]. When more than [`TreeOptions::max_immutable_memtables`] wait, the
//!   writer flushes one itself (back-pressure).
//! - [`Tree::flush_one`] writes the oldest frozen memtable into one L0 table and
//!   [`Tree::compact_one`] runs one leveled compaction step; the embedder's pool calls them
//!   (the tree starts no thread). Each installs a new [`Version`] and rewrites the manifest
//!   atomically.
//! - Reads ([`Tree::get`], [`Tree::scan_prefix`], [`Tree::scan_range`]) resolve newest first:
//!   the memtable, frozen memtables newest first, L0 tables newest first, then one table per
//!   deeper level.
//! - A table file is deleted when the manifest no longer lists it and no [`Version`] holds it
//!   ([`Tree::pin`] holds one for a snapshot).
//!
//! There is no write-ahead log: what is not flushed is lost on a crash; durability comes
//! from checkpoints.
//!
//! ```
//! use std::sync::Arc;
//! use flowstate::lsm::tree::{Tree, TreeOptions};
//! use flowstate::storage::MemStorage;
//!
//! let storage = Arc::new(MemStorage::new());
//! let tree = Tree::open(storage.clone(), "lsm", TreeOptions::default())?;
//! tree.put(b"k1", b"v1")?;
//! tree.freeze();
//! assert!(tree.flush_one()?);
//! tree.put(b"k2", b"v2")?;
//! assert_eq!(tree.get(b"k1")?.as_deref(), Some(&b"v1"[..]));
//! assert_eq!(tree.scan_prefix(b"k")?.len(), 2);
//! drop(tree);
//!
//! // Only flushed data survives a reopen.
//! let tree = Tree::open(storage, "lsm", TreeOptions::default())?;
//! assert_eq!(tree.get(b"k1")?.as_deref(), Some(&b"v1"[..]));
//! assert_eq!(tree.get(b"k2")?, None);
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use flowstate_formats::manifest::{Manifest, ManifestTable};
use flowstate_formats::table::{
    EntryKind, PrefixExtractor, RangeTombstone, TableBuilder, TableOptions, TableReadOptions,
    TableReader,
};
use flowstate_formats::{Compression, FormatError};

use super::entry::{Entry, Lookup};
use super::key;
use super::mem_table::{ImmutableMemTable, MemTable};
use super::merge::{resolve_ranged, MergeLevel, MergingIter};
use super::ranges;
use crate::error::{Error, Result};

mod checkpoint;
use crate::storage::{is_temp_name, ReadableFile, Storage, WritableFile, ROOT, TEMP_SUFFIX};
pub use checkpoint::CheckpointTables;

/// The manifest's file name in the tree's directory.
pub const MANIFEST_NAME: &str = "MANIFEST";

/// The suffix of table file names.
pub const TABLE_SUFFIX: &str = ".sst";

/// The largest manifest [`Tree::open`] reads.
pub const MAX_MANIFEST_LEN: u64 = 256 << 20;

/// The number of levels, L0 included.
pub const MAX_LEVELS: usize = 7;

/// How a [`Tree`] is configured.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// The memory a memtable may use before it is frozen (default 64 MiB), as
    /// [`MemTable::approximate_memory_usage`] counts it: that includes up to 128 KiB of chunks
    /// a memtable allocates by its first write, so a budget below that freezes every write.
    pub memtable_bytes: usize,
    /// Frozen memtables that may wait for a flush (default 2); past it, the writer flushes the
    /// oldest itself before returning.
    pub max_immutable_memtables: usize,
    /// The uncompressed size of a data block (default 4 KiB).
    pub block_size: usize,
    /// The compression of table blocks (default LZ4).
    pub compression: Compression,
    /// Bloom filter bits per key (default 10; 0: no filter).
    pub bloom_bits_per_key: u32,
    /// Whether table filters also hold the (key, namespace) prefix of every key
    /// ([`key::namespace_prefix_len`]), so that prefix scans skip tables (default true).
    pub prefix_bloom: bool,
    /// The number of L0 tables that triggers an L0 → L1 compaction (default 4).
    pub l0_compaction_trigger: usize,
    /// The size at which a compaction closes an output table (default 64 MiB).
    pub target_table_bytes: u64,
    /// The size budget of L1 (default 256 MiB); each deeper level has ten times the budget of
    /// the one above.
    pub level1_max_bytes: u64,
    /// The number of L0 tables at which a writer that froze a memtable runs a compaction
    /// itself before returning (default 12): back-pressure when compaction falls behind.
    pub l0_stop_trigger: usize,
    /// The cache of data blocks shared by the tree's tables (default none).
    pub block_cache: Option<Arc<dyn flowstate_formats::table::BlockCache>>,
    /// Whether tables are read through a read-only memory map where the storage can map
    /// ([`Storage::open_mapped`]; [`LocalStorage`](crate::storage::LocalStorage) can), instead
    /// of a system call per block read (default true: benches/README.md, "Table reads: mmap vs
    /// pread"). Table files are never written after they are renamed into place, which a map
    /// requires.
    pub mmap_reads: bool,
    /// The id of the first table a new tree writes (default 1); later tables count up from
    /// it. The LSM backend starts every tree at a random multiple of 2^24, so that tables of
    /// different backends (linked side by side by a restore at another parallelism, or named
    /// in shared checkpoint storage) seldom share an id.
    pub first_table_id: u64,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            memtable_bytes: 64 << 20,
            max_immutable_memtables: 2,
            block_size: flowstate_formats::table::DEFAULT_BLOCK_SIZE,
            compression: Compression::Lz4,
            bloom_bits_per_key: flowstate_formats::table::DEFAULT_BLOOM_BITS_PER_KEY,
            prefix_bloom: true,
            l0_compaction_trigger: 4,
            target_table_bytes: 64 << 20,
            level1_max_bytes: 256 << 20,
            l0_stop_trigger: 12,
            block_cache: None,
            mmap_reads: true,
            first_table_id: 1,
        }
    }
}

impl TreeOptions {
    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidConfig(format!("LSM tree: {what}")));
        if self.memtable_bytes == 0 {
            return bad("memtable_bytes must be above 0");
        }
        if self.l0_compaction_trigger < 2 {
            return bad("l0_compaction_trigger must be at least 2");
        }
        if self.l0_stop_trigger < self.l0_compaction_trigger {
            return bad("l0_stop_trigger must be at least l0_compaction_trigger");
        }
        if self.target_table_bytes == 0 || self.level1_max_bytes == 0 {
            return bad("target_table_bytes and level1_max_bytes must be above 0");
        }
        if self.bloom_bits_per_key > flowstate_formats::table::MAX_BLOOM_BITS_PER_KEY {
            return bad("bloom_bits_per_key is above the table format's maximum");
        }
        Ok(())
    }

    /// The size budget of `level` (1 ..).
    fn level_budget(&self, level: usize) -> u64 {
        let mut budget = self.level1_max_bytes;
        for _ in 1..level {
            budget = budget.saturating_mul(10);
        }
        budget
    }
}

/// The prefix extractor of the tree's filters: an entry key's (key, namespace) prefix.
#[derive(Debug, Clone, Copy, Default)]
pub struct NamespacePrefix;

impl PrefixExtractor for NamespacePrefix {
    fn name(&self) -> &str {
        "flowstate.namespace-prefix"
    }

    fn prefix_len(&self, key: &[u8]) -> Option<usize> {
        key::namespace_prefix_len(key)
    }
}

/// One open table file of the tree.
///
/// Once a compaction has replaced the table and the manifest that no longer lists it is
/// durable, the file is deleted when the last holder of the handle drops it.
pub struct TableHandle {
    id: u64,
    name: String,
    path: String,
    size: u64,
    smallest: Vec<u8>,
    largest: Vec<u8>,
    reader: TableReader<Arc<dyn ReadableFile>>,
    /// The table's range tombstones (shared with merges that read it).
    ranges: Arc<[RangeTombstone]>,
    /// The storage the file is deleted from once obsolete; `None` for a table read in place
    /// (a checkpoint's file), which is never deleted.
    storage: Option<Arc<dyn Storage>>,
    obsolete: AtomicBool,
}

impl TableHandle {
    /// The table's id (its file number).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The file name in the tree's directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's path in the tree's storage.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The smallest key the table holds or its range tombstones delete.
    pub fn smallest(&self) -> &[u8] {
        &self.smallest
    }

    /// The largest key the table holds or its range tombstones delete (a range's exclusive
    /// end when no smaller bound can be written: an upper bound).
    pub fn largest(&self) -> &[u8] {
        &self.largest
    }

    /// The table's range tombstones, normalized.
    pub fn range_tombstones(&self) -> &[RangeTombstone] {
        &self.ranges
    }

    /// Marks a table that no version holds, nor any manifest lists, for deletion: its file
    /// goes when the last holder drops it.
    pub(crate) fn discard(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    /// The open table.
    pub fn reader(&self) -> &TableReader<Arc<dyn ReadableFile>> {
        &self.reader
    }

    fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest.as_slice() <= hi && self.largest.as_slice() >= lo
    }

    /// The table's point entry for `key` and whether its range tombstones cover the key.
    fn lookup(&self, key: &[u8]) -> Result<(Lookup<'static>, bool)> {
        if key < self.smallest.as_slice() || key > self.largest.as_slice() {
            return Ok((Lookup::NotFound, false));
        }
        let lookup = match self.reader.get(key)? {
            Some((EntryKind::Put, v)) => Lookup::Found(v.into()),
            Some((EntryKind::Delete, _)) => Lookup::Deleted,
            Some((EntryKind::Merge, ops)) => Lookup::MergeOperands(ops.into()),
            None => Lookup::NotFound,
        };
        let covered = !self.ranges.is_empty()
            && matches!(lookup, Lookup::NotFound | Lookup::MergeOperands(_))
            && ranges::covers(&self.ranges, key);
        Ok((lookup, covered))
    }

    /// The table's entries from `start` (on) as a merge source; blocks read are offered to
    /// the block cache if `fill_cache`.
    fn source(&self, start: &[u8], prefix: Option<&[u8]>, fill_cache: bool) -> Source {
        let iter = match prefix {
            Some(p) => self.reader.iter_prefix(p),
            None => self.reader.iter_from(start),
        }
        .fill_cache(fill_cache);
        Box::new(iter.map(|e| {
            let e = e?;
            let entry = match e.kind {
                EntryKind::Put => Entry::Put(e.value),
                EntryKind::Delete => Entry::Delete,
                EntryKind::Merge => Entry::Merge(e.value),
            };
            Ok((e.key, entry))
        }))
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            // A file left behind is garbage that the next open removes.
            if let Some(storage) = &self.storage {
                let _ = storage.remove_file(&self.path);
            }
        }
    }
}

impl fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableHandle")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("size", &self.size)
            .field("smallest", &key::Hex(&self.smallest).to_string())
            .field("largest", &key::Hex(&self.largest).to_string())
            .finish()
    }
}

/// An immutable set of tables by level: L0 newest first (its tables may overlap), deeper
/// levels sorted by key (their tables do not overlap).
#[derive(Debug, Clone, Default)]
pub struct Version {
    levels: Vec<Vec<Arc<TableHandle>>>,
}

impl Version {
    fn empty() -> Self {
        Version {
            levels: vec![Vec::new(); MAX_LEVELS],
        }
    }

    /// A version of `levels` (at most [`MAX_LEVELS`]; L0 newest first, deeper levels sorted
    /// by key without overlap, which is checked).
    pub fn from_levels(levels: Vec<Vec<Arc<TableHandle>>>) -> Result<Self> {
        if levels.len() > MAX_LEVELS {
            return Err(Error::InvalidArgument(format!(
                "{} levels, more than {MAX_LEVELS}",
                levels.len()
            )));
        }
        let mut version = Version::empty();
        for (level, mut tables) in levels.into_iter().enumerate() {
            if level > 0 {
                tables.sort_by(|a, b| a.smallest.cmp(&b.smallest));
                if let Some(w) = tables.windows(2).find(|w| w[0].largest >= w[1].smallest) {
                    return Err(corrupt(
                        &w[1].path,
                        format!(
                            "tables {} and {} of level {level} overlap",
                            w[0].name, w[1].name
                        ),
                    ));
                }
            }
            version.levels[level] = tables;
        }
        Ok(version)
    }

    /// The tables of `level` (empty past the last level).
    pub fn tables(&self, level: usize) -> &[Arc<TableHandle>] {
        self.levels.get(level).map_or(&[], Vec::as_slice)
    }

    /// The number of levels ([`MAX_LEVELS`]).
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// The bytes of the table files of `level`.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.tables(level).iter().map(|t| t.size).sum()
    }

    /// Every table, L0 newest first, then each level by key.
    pub fn all_tables(&self) -> impl Iterator<Item = &Arc<TableHandle>> {
        self.levels.iter().flatten()
    }

    /// The tables that may hold `key`, newest first.
    fn candidates<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a Arc<TableHandle>> {
        let l0 = self.tables(0).iter();
        let deeper = self.levels.iter().skip(1).filter_map(move |tables| {
            let i = tables.partition_point(|t| t.largest.as_slice() < key);
            tables.get(i).filter(|t| t.smallest.as_slice() <= key)
        });
        l0.chain(deeper)
    }

    /// The value of `key` in this version's tables, resolved newest first, or `None`: what a
    /// snapshot that pinned the version (after flushing the memtables) reads.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let lookups = self.candidates(key).map(|t| t.lookup(key));
        Ok(resolve_ranged(lookups)?.map(|v| v.into_owned()))
    }

    /// The `(key, value)` pairs of this version's tables whose keys start with `prefix`, in
    /// key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = key::prefix_successor(prefix);
        self.scan_with(Vec::new(), prefix, end.as_deref(), Some(prefix))
    }

    /// Merges `newer` (newest first, each with its range tombstones) with this version's
    /// tables over `start .. end`.
    fn scan_with(
        &self,
        newer: Vec<(Source, Arc<[RangeTombstone]>)>,
        start: &[u8],
        end: Option<&[u8]>,
        prefix: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (mut sources, mut ranges): (Vec<Source>, Vec<Arc<[RangeTombstone]>>) =
            newer.into_iter().unzip();
        for t in self.all_tables() {
            if t.largest.as_slice() < start || end.is_some_and(|e| t.smallest.as_slice() >= e) {
                continue;
            }
            let end = end.map(<[u8]>::to_vec);
            sources.push(Box::new(t.source(start, prefix, true).take_while(
                move |r| match (r, &end) {
                    (Ok((k, _)), Some(e)) => k < e,
                    _ => true,
                },
            )));
            ranges.push(Arc::clone(&t.ranges));
        }
        let mut out = Vec::new();
        for item in MergingIter::with_ranges(sources, ranges, MergeLevel::Bottom) {
            if let (k, Entry::Put(v)) = item? {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    fn manifest(&self, next_table_id: u64) -> Manifest {
        let mut tables = Vec::new();
        for (level, ts) in self.levels.iter().enumerate() {
            for t in ts {
                tables.push(ManifestTable {
                    level: level as u8,
                    id: t.id,
                    name: t.name.clone(),
                    size: t.size,
                    smallest: t.smallest.clone(),
                    largest: t.largest.clone(),
                });
            }
        }
        // Adopted tables keep their own ids, which may lie above the tree's counter.
        let above = tables
            .iter()
            .map(|t| t.id.saturating_add(1))
            .max()
            .unwrap_or(0);
        Manifest {
            next_table_id: next_table_id.max(above),
            tables,
        }
    }
}

/// What [`TreeSnapshot::visit_prefix`] calls with each `(key, value)` pair; an error stops
/// the visit.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A frozen view of a [`Tree`] ([`Tree::snapshot`]): frozen memtables, newest first, over a
/// version of tables. `Send + Sync`; cheap to clone.
#[derive(Debug, Clone)]
pub struct TreeSnapshot {
    imms: Vec<Arc<ImmutableMemTable>>,
    version: Arc<Version>,
}

impl TreeSnapshot {
    /// The version of tables under the frozen memtables.
    pub fn version(&self) -> &Arc<Version> {
        &self.version
    }

    /// The value of `key` in the view, or `None` if it is absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let lookups = self
            .imms
            .iter()
            .map(|m| Ok(memtable_lookup(m.get(key), || m.covers(key))))
            .chain(self.version.candidates(key).map(|t| t.lookup(key)));
        Ok(resolve_ranged(lookups)?.map(|v| v.into_owned()))
    }

    /// The `(key, value)` pairs of the view whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = key::prefix_successor(prefix);
        self.scan(prefix, end.as_deref(), Some(prefix))
    }

    /// The `(key, value)` pairs of the view with `start <= key < end`, in key order.
    pub fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.scan(start, Some(end), None)
    }

    /// Calls `visit` with each `(key, value)` pair of the view whose key starts with
    /// `prefix`, in key order: what [`scan_prefix`](Self::scan_prefix) returns. When the
    /// frozen memtables hold nothing there and one level alone holds tables over the prefix,
    /// without range tombstones there (the state after a full compaction), the pairs are read
    /// straight out of those tables' blocks, without a merge and without a copy per entry;
    /// otherwise they come from `scan_prefix`. Stops at the first error `visit` returns.
    pub fn visit_prefix(&self, prefix: &[u8], visit: &mut EntryVisitor<'_>) -> Result<()> {
        let end = key::prefix_successor(prefix);
        if let Some(tables) = self.single_level(prefix, end.as_deref()) {
            for t in tables {
                let mut it = t.reader.iter_prefix(prefix);
                while it.advance()? {
                    match it.kind() {
                        EntryKind::Delete => {}
                        // One source: operands have no base below them and are the value.
                        EntryKind::Put | EntryKind::Merge => visit(it.key(), it.value())?,
                    }
                }
            }
            return Ok(());
        }
        for (k, v) in self.scan_prefix(prefix)? {
            visit(&k, &v)?;
        }
        Ok(())
    }

    /// The tables over `[prefix, end)` if they alone hold keys there: no frozen memtable has an
    /// entry or a range there, they all sit in one level (one table, in L0), and none has a
    /// range tombstone there. In key order.
    fn single_level(&self, prefix: &[u8], end: Option<&[u8]>) -> Option<Vec<&Arc<TableHandle>>> {
        let window = |set: &[RangeTombstone]| ranges::overlaps(set, Some(prefix), end);
        for m in &self.imms {
            if m.prefix(prefix).next().is_some() || window(m.range_tombstones()) {
                return None;
            }
        }
        let mut found: Vec<&Arc<TableHandle>> = Vec::new();
        let mut found_level = None;
        for level in 0..self.version.level_count() {
            for t in self.version.tables(level) {
                if t.largest.as_slice() < prefix || end.is_some_and(|e| t.smallest.as_slice() >= e)
                {
                    continue;
                }
                if window(&t.ranges)
                    || found_level.is_some_and(|l| l != level)
                    || (level == 0 && !found.is_empty())
                {
                    return None;
                }
                found_level = Some(level);
                found.push(t);
            }
        }
        Some(found)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        prefix: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end_bound = end.map_or(Bound::Unbounded, Bound::Excluded);
        let sources = self
            .imms
            .iter()
            .map(|m| {
                (
                    Box::new(Arc::clone(m).owned_entries(Bound::Included(start), end_bound))
                        as Source,
                    Arc::clone(m.range_tombstones()),
                )
            })
            .collect();
        self.version.scan_with(sources, start, end, prefix)
    }
}

/// The number of tables and their bytes in one level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelStats {
    /// Tables in the level.
    pub tables: usize,
    /// Bytes of their files.
    pub bytes: u64,
}

/// Counters of a [`Tree`], from [`Tree::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Memory of the active memtable.
    pub memtable_bytes: usize,
    /// Frozen memtables waiting for a flush.
    pub immutable_memtables: usize,
    /// Their memory.
    pub immutable_memtable_bytes: usize,
    /// Tables and bytes per level, L0 first.
    pub levels: Vec<LevelStats>,
    /// Memory the open tables of the current version hold outside the block cache: their
    /// indexes, filters, properties and range tombstones (about 3 bytes an entry with the
    /// default 10 filter bits per key and 4 KiB blocks). No setting bounds it: it grows with
    /// the data.
    pub table_memory_bytes: usize,
    /// Flushes completed since the tree was opened.
    pub flushes: u64,
    /// Bytes of table files written by flushes since the tree was opened.
    pub flush_bytes_written: u64,
    /// Compactions completed since the tree was opened.
    pub compactions: u64,
    /// Bytes of table files read by compactions (their inputs' sizes).
    pub compaction_bytes_read: u64,
    /// Bytes of table files written by compactions.
    pub compaction_bytes_written: u64,
    /// Compactions that moved a table to the next level without rewriting it (no table of
    /// that level overlapped it); counted in `compactions` too.
    pub trivial_moves: u64,
    /// Tables added by [`Tree::ingest`] since the tree was opened.
    pub ingested_tables: u64,
    /// Their bytes.
    pub ingested_bytes: u64,
}

impl TreeStats {
    /// Bytes written to tables per byte that entered the tree as a table (flushed or
    /// ingested): `(flush + ingest + compaction) / (flush + ingest)`, or 0 before the first.
    pub fn write_amplification(&self) -> f64 {
        let entered = self.flush_bytes_written + self.ingested_bytes;
        if entered == 0 {
            return 0.0;
        }
        (entered + self.compaction_bytes_written) as f64 / entered as f64
    }
}

/// The mutable part of a tree, behind its lock.
struct State {
    mem: MemTable,
    /// Frozen memtables, oldest at the front.
    imms: VecDeque<Arc<ImmutableMemTable>>,
    version: Arc<Version>,
    next_id: u64,
    stats: TreeStats,
    /// Per level, the largest key of the last table compacted out of it: the next compaction
    /// of the level starts after it (round robin over the key space).
    compact_pointer: Vec<Vec<u8>>,
    /// Frozen memtables that checkpoint views wait for (by address), with how many views
    /// wait and, once flushed, the tables the flush wrote.
    flush_outputs: HashMap<usize, FlushOutput>,
    /// Ids of adopted tables (written by other trees), which new tables skip.
    adopted_ids: HashSet<u64>,
}

type Source = Box<dyn Iterator<Item = Result<(Vec<u8>, Entry)>> + Send>;

/// An LSM tree in one directory of a [`Storage`]; see [the module](self).
///
/// All methods take `&self`: a tree can be shared (in an `Arc`) between the task thread that
/// writes and reads and the pool threads that flush and compact. Flushes run one at a time,
/// and compactions one at a time, but a flush runs beside a compaction: a long L0 → L1
/// compaction does not hold back the flushes that free memtable memory.
pub struct Tree {
    storage: Arc<dyn Storage>,
    dir: String,
    options: TreeOptions,
    table_options: TableOptions,
    read_options: TableReadOptions,
    state: Mutex<State>,
    /// Held by a flush for its whole run.
    flush_lock: Mutex<()>,
    /// Held by a compaction (or a trivial move) for its whole run.
    compact_lock: Mutex<()>,
    /// Held while a new version is formed from the current one, its manifest written and
    /// the version installed, so that a flush and a compaction finishing together both land.
    install_lock: Mutex<()>,
    /// Called (outside the tree's locks) after a memtable is frozen.
    listener: OnceLock<Arc<dyn Fn() + Send + Sync>>,
    /// Set by [`Tree::dispose`]: flushes and compactions do nothing any more.
    disposed: AtomicBool,
}

/// Cache ids of tables: unique in the process, so that trees may share a block cache.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn owned(lookup: Lookup<'_>) -> Lookup<'static> {
    match lookup {
        Lookup::Found(v) => Lookup::Found(v.into_owned().into()),
        Lookup::Deleted => Lookup::Deleted,
        Lookup::MergeOperands(o) => Lookup::MergeOperands(o.into_owned().into()),
        Lookup::NotFound => Lookup::NotFound,
    }
}

/// A memtable's point lookup and whether its own range tombstones cover the key (asked only
/// when the point lookup does not decide).
fn memtable_lookup<'a>(lookup: Lookup<'a>, covers: impl FnOnce() -> bool) -> (Lookup<'a>, bool) {
    let covered = matches!(lookup, Lookup::NotFound | Lookup::MergeOperands(_)) && covers();
    (lookup, covered)
}

/// An `io::Write` over a storage file that keeps the storage's own error (the table builder
/// only sees an `io::Error` made from it) in a slot the writer of the table reads.
struct FileWriter {
    file: Box<dyn WritableFile>,
    error: Arc<Mutex<Option<Error>>>,
}

impl std::io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf).map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            *lock(&self.error) = Some(e);
            io
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A table being written: its builder streaming into a temporary file.
struct OpenTable {
    id: u64,
    name: String,
    path: String,
    tmp: String,
    builder: TableBuilder<FileWriter>,
    /// The storage error behind a failed builder call, if any.
    error: Arc<Mutex<Option<Error>>>,
    /// The last key added.
    last_key: Option<Vec<u8>>,
}

impl OpenTable {
    /// The error to report for `e`: the storage's own error if a write failed.
    fn error(&self, e: impl Into<Error>) -> Error {
        lock(&self.error).take().unwrap_or_else(|| e.into())
    }
}

/// Writes sorted `(key, value)` pairs straight into table files of about
/// [`TreeOptions::target_table_bytes`] ([`Tree::table_writer`]); [`Tree::ingest`] adds them
/// to the tree. A key not above the previous one starts a new table, so several sorted runs
/// may go through one writer (the tables of different runs may then overlap).
///
/// Tables finished but never ingested, and a table being written when the writer is dropped,
/// are deleted.
pub struct TableWriter<'t> {
    tree: &'t Tree,
    current: Option<OpenTable>,
    tables: Vec<Arc<TableHandle>>,
}

impl fmt::Debug for TableWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableWriter")
            .field("tables", &self.tables.len())
            .field("open", &self.current.is_some())
            .finish()
    }
}

impl TableWriter<'_> {
    /// Adds `key` with `value` (a put).
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let cut = self.current.as_ref().is_some_and(|t| {
            t.last_key.as_deref().is_some_and(|last| key <= last)
                || t.builder.estimated_len() >= self.tree.options.target_table_bytes
        });
        if cut {
            self.cut()?;
        }
        let table = match &mut self.current {
            Some(t) => t,
            None => self.current.insert(self.tree.start_table()?),
        };
        if let Err(e) = table.builder.add(key, EntryKind::Put, value) {
            let e = table.error(e);
            self.abandon();
            return Err(e);
        }
        match &mut table.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => table.last_key = Some(key.to_vec()),
        }
        Ok(())
    }

    /// Finishes the open table, if any.
    fn cut(&mut self) -> Result<()> {
        if let Some(table) = self.current.take() {
            if let Some(handle) = self.tree.finish_table(table, &[])? {
                self.tables.push(handle);
            }
        }
        Ok(())
    }

    /// Removes the open table's temporary file.
    fn abandon(&mut self) {
        if let Some(table) = self.current.take() {
            let _ = self.tree.storage.remove_file(&table.tmp);
        }
    }

    /// Finishes the last table and returns every table written, in order, for
    /// [`Tree::ingest`].
    pub fn finish(mut self) -> Result<Vec<Arc<TableHandle>>> {
        self.cut()?;
        Ok(std::mem::take(&mut self.tables))
    }
}

/// Where [`Tree::ingest`] put the tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Tables that went to L0 (they overlap an ingested table kept out of L0, or an L0 table).
    pub l0_tables: usize,
    /// The level the other tables went to (0 when all went to L0).
    pub level: usize,
    /// The number of tables that went there.
    pub level_tables: usize,
}

impl Drop for TableWriter<'_> {
    fn drop(&mut self) {
        self.abandon();
        for t in &self.tables {
            t.obsolete.store(true, Ordering::Release);
        }
    }
}

/// The most bytes of range tombstones the tree writes into one table (their encoded size,
/// about): well within the table format's bound on the block (`MAX_META_LEN`, 16 MiB).
pub const RANGE_BYTES_PER_TABLE: usize = 4 << 20;

/// Where to cut a table so that no table holds more than `budget` bytes of `ranges`
/// (normalized): the starts of the ranges that would pass it, in order. Cutting at a range's
/// start splits no range, and the ranges before it end before it (normalized ranges are
/// separated), so the tables on both sides do not overlap.
fn range_cuts(ranges: &[RangeTombstone], budget: usize) -> Vec<Vec<u8>> {
    let mut cuts = Vec::new();
    let mut bytes = 0usize;
    for r in ranges {
        let len = r.start.len() + r.end.len() + 10;
        if bytes > 0 && bytes + len > budget {
            cuts.push(r.start.clone());
            bytes = 0;
        }
        bytes += len;
    }
    cuts
}

/// The inclusive upper bound of keys below the exclusive `end`: the key itself when `end` is
/// a [`ranges::successor`] (`x` followed by a zero byte has `x` as its exact predecessor),
/// else `end` (an upper bound one key too high, which only costs a needless table probe).
fn inclusive_below(end: &[u8]) -> &[u8] {
    match end.split_last() {
        Some((0, rest)) => rest,
        _ => end,
    }
}

/// What a flush of a frozen memtable that checkpoint views wait for wrote.
struct FlushOutput {
    /// The views waiting.
    waiting: usize,
    /// The tables, once flushed.
    tables: Option<Vec<Arc<TableHandle>>>,
}

/// The key of a frozen memtable in [`State::flush_outputs`]: its address, stable while a
/// view holds it.
fn memtable_key(imm: &Arc<ImmutableMemTable>) -> usize {
    Arc::as_ptr(imm) as usize
}

fn table_name(id: u64) -> String {
    format!("{id:06}{TABLE_SUFFIX}")
}

fn corrupt(file: &str, reason: String) -> Error {
    Error::Format(FormatError::Corrupt {
        file: file.to_owned(),
        offset: 0,
        reason,
    })
}

impl Tree {
    /// Opens the tree in directory `dir` of `storage` (created if missing): reads the manifest,
    /// if any, opens every table it lists and deletes the table files and temporary files it
    /// does not list.
    ///
    /// A listed table that is missing, of another size or another id is an error.
    pub fn open(storage: Arc<dyn Storage>, dir: &str, options: TreeOptions) -> Result<Tree> {
        options.check()?;
        let prefix: Option<Arc<dyn PrefixExtractor>> =
            options.prefix_bloom.then(|| Arc::new(NamespacePrefix) as _);
        let table_options = TableOptions {
            block_size: options.block_size,
            compression: options.compression,
            bloom_bits_per_key: options.bloom_bits_per_key,
            prefix_extractor: prefix.clone(),
            ..TableOptions::default()
        };
        let read_options = TableReadOptions {
            prefix_extractor: prefix,
            block_cache: options.block_cache.clone(),
            ..TableReadOptions::default()
        };
        if dir != ROOT {
            storage.create_dir_all(dir)?;
            // Make every directory on the way durable, so that a flush's files survive a crash.
            let parts: Vec<&str> = dir.split('/').collect();
            for i in 0..parts.len() {
                let parent = if i == 0 {
                    ROOT.to_owned()
                } else {
                    parts[..i].join("/")
                };
                storage.sync_dir(&parent)?;
            }
        }
        let mut tree = Tree {
            storage,
            dir: dir.to_owned(),
            options,
            table_options,
            read_options,
            state: Mutex::new(State {
                mem: MemTable::new(),
                imms: VecDeque::new(),
                version: Arc::new(Version::empty()),
                next_id: 1,
                stats: TreeStats::default(),
                compact_pointer: vec![Vec::new(); MAX_LEVELS],
                flush_outputs: HashMap::new(),
                adopted_ids: HashSet::new(),
            }),
            flush_lock: Mutex::new(()),
            compact_lock: Mutex::new(()),
            install_lock: Mutex::new(()),
            listener: OnceLock::new(),
            disposed: AtomicBool::new(false),
        };
        tree.recover()?;
        Ok(tree)
    }

    fn path(&self, name: &str) -> String {
        if self.dir == ROOT {
            name.to_owned()
        } else {
            format!("{}/{name}", self.dir)
        }
    }

    fn recover(&mut self) -> Result<()> {
        let manifest_path = self.path(MANIFEST_NAME);
        let manifest = if self.storage.exists(&manifest_path)? {
            let bytes = self.storage.read_all(&manifest_path, MAX_MANIFEST_LEN)?;
            Manifest::decode(&bytes, &manifest_path)?
        } else {
            Manifest {
                next_table_id: self.options.first_table_id,
                tables: Vec::new(),
            }
        };
        let mut version = Version::empty();
        let mut listed = HashSet::new();
        for t in &manifest.tables {
            let level = usize::from(t.level);
            if level >= MAX_LEVELS {
                return Err(corrupt(
                    &manifest_path,
                    format!("table {} is in level {level}, past the last level", t.name),
                ));
            }
            let handle = self.open_table(t.id, &t.name, &t.smallest, &t.largest)?;
            if handle.size != t.size {
                return Err(corrupt(
                    &handle.path,
                    format!(
                        "the manifest records {} bytes, the file has {}",
                        t.size, handle.size
                    ),
                ));
            }
            listed.insert(t.name.clone());
            version.levels[level].push(Arc::new(handle));
        }
        for (level, tables) in version.levels.iter_mut().enumerate().skip(1) {
            tables.sort_by(|a, b| a.smallest.cmp(&b.smallest));
            if tables.windows(2).any(|w| w[0].largest >= w[1].smallest) {
                return Err(corrupt(
                    &manifest_path,
                    format!("tables of level {level} overlap"),
                ));
            }
        }
        let mut next_id = manifest.next_table_id.max(1);
        for name in self.storage.list_dir(&self.dir)? {
            if listed.contains(&name) || name == MANIFEST_NAME {
                continue;
            }
            if let Some(id) = name
                .strip_suffix(TABLE_SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            {
                next_id = next_id.max(id.saturating_add(1));
            }
            if name.ends_with(TABLE_SUFFIX) || is_temp_name(&name) {
                self.storage.remove_file(&self.path(&name))?;
            }
        }
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        state.version = Arc::new(version);
        state.next_id = next_id;
        Ok(())
    }

    fn open_table(
        &self,
        id: u64,
        name: &str,
        smallest: &[u8],
        largest: &[u8],
    ) -> Result<TableHandle> {
        let path = self.path(name);
        let mapped = if self.options.mmap_reads {
            self.storage.open_mapped(&path)?
        } else {
            None
        };
        let file: Arc<dyn ReadableFile> = match mapped {
            Some(file) => Arc::from(file),
            None => Arc::from(self.storage.open(&path)?),
        };
        let size = file.len();
        let read_options = TableReadOptions {
            cache_id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            ..self.read_options.clone()
        };
        let reader = TableReader::open_with(file, &path, read_options)?;
        if reader.table_id() != id {
            return Err(corrupt(
                &path,
                format!("table id {} where {id} is expected", reader.table_id()),
            ));
        }
        let ranges = Arc::from(reader.range_tombstones());
        Ok(TableHandle {
            ranges,
            id,
            name: name.to_owned(),
            path,
            size,
            smallest: smallest.to_vec(),
            largest: largest.to_vec(),
            reader,
            storage: Some(Arc::clone(&self.storage)),
            obsolete: AtomicBool::new(false),
        })
    }

    /// The tree's options.
    pub fn options(&self) -> &TreeOptions {
        &self.options
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write(|mem| mem.put(key, value))
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.write(|mem| mem.delete(key))
    }

    /// Deletes every key `k` with `start <= k < end` (a range tombstone): O(entries of the
    /// active memtable in the range), whatever older memtables and tables hold; nothing is
    /// read. Keys written after it are not deleted. An empty range (`start >= end`) does
    /// nothing.
    pub fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        self.write(|mem| mem.delete_range(start, end))
    }

    /// Appends the list-append `operand` (see [`merge::push_list_element`](super::merge::push_list_element))
    /// to the value of `key`.
    pub fn merge(&self, key: &[u8], operand: &[u8]) -> Result<()> {
        self.write(|mem| mem.merge(key, operand))
    }

    fn write(&self, op: impl FnOnce(&mut MemTable) -> Result<()>) -> Result<()> {
        let (waiting, frozen) = {
            let mut state = lock(&self.state);
            op(&mut state.mem)?;
            let frozen = state.mem.approximate_memory_usage() >= self.options.memtable_bytes
                && Self::freeze_locked(&mut state);
            (state.imms.len(), frozen)
        };
        if !frozen {
            return Ok(());
        }
        self.notify();
        if waiting > self.options.max_immutable_memtables {
            while lock(&self.state).imms.len() > self.options.max_immutable_memtables {
                if !self.flush_one()? {
                    break;
                }
            }
        }
        // After the flushes above: L0 may have grown by them.
        while self.pin().tables(0).len() >= self.options.l0_stop_trigger {
            if !self.compact_one()? {
                break;
            }
        }
        Ok(())
    }

    /// Freezes the active memtable if it holds anything; returns whether it did.
    fn freeze_locked(state: &mut State) -> bool {
        if state.mem.is_empty() {
            return false;
        }
        let mem = std::mem::take(&mut state.mem);
        state.imms.push_back(mem.freeze());
        true
    }

    fn notify(&self) {
        if let Some(listener) = self.listener.get() {
            listener();
        }
    }

    /// Sets the function called (outside the tree's locks) each time a memtable is frozen,
    /// so that a pool can flush it. Only the first call takes effect; returns whether it did.
    pub fn set_listener(&self, listener: Arc<dyn Fn() + Send + Sync>) -> bool {
        self.listener.set(listener).is_ok()
    }

    /// Freezes the active memtable (if it holds anything) so that the next flushes write it.
    pub fn freeze(&self) {
        if Self::freeze_locked(&mut lock(&self.state)) {
            self.notify();
        }
    }

    /// A frozen view of the whole tree: freezes the active memtable and holds the frozen
    /// memtables and the current version. Its cost does not grow with the tree's size; later
    /// writes, flushes and compactions do not change what it reads, and its table files stay
    /// until it is dropped.
    pub fn snapshot(&self) -> TreeSnapshot {
        let (snapshot, frozen) = {
            let mut state = lock(&self.state);
            let frozen = Self::freeze_locked(&mut state);
            (
                TreeSnapshot {
                    imms: state.imms.iter().rev().cloned().collect(),
                    version: Arc::clone(&state.version),
                },
                frozen,
            )
        };
        if frozen {
            self.notify();
        }
        snapshot
    }

    /// The number of frozen memtables waiting for a flush.
    pub fn immutable_memtables(&self) -> usize {
        lock(&self.state).imms.len()
    }

    /// The current version; holding it keeps its table files from being deleted.
    pub fn pin(&self) -> Arc<Version> {
        Arc::clone(&lock(&self.state).version)
    }

    /// The value of `key`, resolved newest first, or `None` if it is absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // The memtables answer under the lock (hash lookups); the tables after it.
        let (near, version) = {
            let state = lock(&self.state);
            let mut near: Vec<(Lookup<'static>, bool)> = Vec::new();
            let mut decided = false;
            let mem = std::iter::once(memtable_lookup(state.mem.get(key), || {
                state.mem.covers(key)
            }));
            let imms = state
                .imms
                .iter()
                .rev()
                .map(|m| memtable_lookup(m.get(key), || m.covers(key)));
            for (lookup, covered) in mem.chain(imms) {
                let more = matches!(lookup, Lookup::NotFound | Lookup::MergeOperands(_));
                if !matches!(lookup, Lookup::NotFound) || covered {
                    near.push((owned(lookup), covered));
                }
                if !more || covered {
                    decided = true;
                    break;
                }
            }
            (near, (!decided).then(|| Arc::clone(&state.version)))
        };
        let tables = version
            .iter()
            .flat_map(|v| v.candidates(key))
            .map(|t| t.lookup(key));
        let lookups = near.into_iter().map(Ok).chain(tables);
        Ok(resolve_ranged(lookups)?.map(|v| v.into_owned()))
    }

    /// The `(key, value)` pairs whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = key::prefix_successor(prefix);
        self.scan(prefix, end.as_deref(), Some(prefix))
    }

    /// The `(key, value)` pairs with `start <= key < end`, in key order.
    pub fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.scan(start, Some(end), None)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        prefix: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end_bound = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut sources: Vec<(Source, Arc<[RangeTombstone]>)> = Vec::new();
        let version = {
            let state = lock(&self.state);
            let mem: Vec<_> = state
                .mem
                .range(Bound::Included(start), end_bound)
                .into_entries()
                .collect();
            let mem_ranges = state.mem.range_tombstones_within(start, end);
            let mem_ranges = if mem_ranges.is_empty() {
                ranges::none()
            } else {
                Arc::from(mem_ranges)
            };
            sources.push((Box::new(mem.into_iter()), mem_ranges));
            for m in state.imms.iter().rev() {
                sources.push((
                    Box::new(Arc::clone(m).owned_entries(Bound::Included(start), end_bound)),
                    Arc::clone(m.range_tombstones()),
                ));
            }
            Arc::clone(&state.version)
        };
        version.scan_with(sources, start, end, prefix)
    }

    /// Starts a table: allocates its id and creates its temporary file.
    fn start_table(&self) -> Result<OpenTable> {
        let id = {
            let mut state = lock(&self.state);
            let mut id = state.next_id;
            while state.adopted_ids.contains(&id) {
                id += 1;
            }
            state.next_id = id + 1;
            id
        };
        let name = table_name(id);
        let path = self.path(&name);
        let tmp = format!("{path}{TEMP_SUFFIX}");
        let file = self.storage.create(&tmp)?;
        let error = Arc::new(Mutex::new(None));
        let writer = FileWriter {
            file,
            error: Arc::clone(&error),
        };
        let options = TableOptions {
            table_id: id,
            ..self.table_options.clone()
        };
        match TableBuilder::new(writer, options, &path) {
            Ok(builder) => Ok(OpenTable {
                id,
                name,
                path,
                tmp,
                builder,
                error,
                last_key: None,
            }),
            Err(e) => {
                let _ = self.storage.remove_file(&tmp);
                Err(e.into())
            }
        }
    }

    /// Adds `ranges` (normalized, already cut to the table's share) to `table`, finishes it,
    /// syncs it, renames it into place and opens it. `None` (and no file) if the table holds
    /// neither an entry nor a range. On an error the temporary file is removed.
    fn finish_table(
        &self,
        table: OpenTable,
        ranges: &[RangeTombstone],
    ) -> Result<Option<Arc<TableHandle>>> {
        let tmp = table.tmp.clone();
        let finished = self.finish_table_inner(table, ranges);
        if !matches!(finished, Ok(Some(_))) {
            let _ = self.storage.remove_file(&tmp);
        }
        finished
    }

    fn finish_table_inner(
        &self,
        mut table: OpenTable,
        ranges: &[RangeTombstone],
    ) -> Result<Option<Arc<TableHandle>>> {
        for r in ranges {
            if let Err(e) = table.builder.add_range_tombstone(&r.start, &r.end) {
                return Err(table.error(e));
            }
        }
        if table.builder.entries() == 0 && ranges.is_empty() {
            return Ok(None);
        }
        let OpenTable {
            id,
            name,
            path,
            tmp,
            builder,
            error,
            ..
        } = table;
        let (summary, mut writer) = builder
            .finish_into_inner()
            .map_err(|e| lock(&error).take().unwrap_or_else(|| e.into()))?;
        let mut smallest = summary.smallest().map(<[u8]>::to_vec);
        let mut largest = summary.largest().map(<[u8]>::to_vec);
        if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
            let lo = first.start.as_slice();
            let hi = inclusive_below(&last.end);
            smallest = Some(smallest.map_or(lo.to_vec(), |s| s.min(lo.to_vec())));
            largest = Some(largest.map_or(hi.to_vec(), |l| l.max(hi.to_vec())));
        }
        let (Some(smallest), Some(largest)) = (smallest, largest) else {
            return Ok(None);
        };
        writer.file.sync()?;
        drop(writer);
        self.storage.rename(&tmp, &path)?;
        Ok(Some(Arc::new(
            self.open_table(id, &name, &smallest, &largest)?,
        )))
    }

    /// Writes the entries of `entries` and the range tombstones `ranges` (normalized) into new
    /// tables, each closed once it reaches `limit` bytes, streamed to a temporary file, synced
    /// and renamed. The caller syncs the directory.
    ///
    /// When the output is cut after a key, table `t` takes the parts of the ranges up to that
    /// key (exclusive end: its [`ranges::successor`]) and table `t + 1` the parts after it, so
    /// that the tables' key ranges, ranges included, do not overlap. A table is also cut before
    /// the start of the range that would take its range tombstones past
    /// [`RANGE_BYTES_PER_TABLE`] (the table format bounds the block), so a memtable or a merge
    /// full of ranges makes several tables. Ranges with no entry around them make tables of
    /// their own.
    fn write_tables(
        &self,
        entries: &mut dyn Iterator<Item = Result<(Vec<u8>, Entry)>>,
        ranges: &[RangeTombstone],
        limit: u64,
    ) -> Result<Vec<Arc<TableHandle>>> {
        let cuts = range_cuts(ranges, RANGE_BYTES_PER_TABLE);
        let mut next_cut = 0;
        let mut out = Vec::new();
        let mut lower: Option<Vec<u8>> = None;
        let mut pending = entries.next();
        loop {
            while next_cut < cuts.len()
                && lower
                    .as_deref()
                    .is_some_and(|l| cuts[next_cut].as_slice() <= l)
            {
                next_cut += 1;
            }
            let cut = cuts.get(next_cut).map(Vec::as_slice);
            let mut table = self.start_table()?;
            let filled = Self::fill_table(&mut table, entries, &mut pending, limit, cut);
            let stopped_at_cut = match filled {
                Ok(stopped) => stopped,
                Err(e) => {
                    let _ = self.storage.remove_file(&table.tmp);
                    return Err(table.error(e));
                }
            };
            // Where this table's share of the ranges ends: at a range cut, after the last key
            // when more entries follow, at the next range cut when only ranges are left, or
            // nowhere (the last table).
            let upper = match (&pending, &table.last_key) {
                _ if stopped_at_cut => cut.map(<[u8]>::to_vec),
                (Some(_), Some(k)) => Some(ranges::successor(k)),
                _ => cut.map(<[u8]>::to_vec),
            };
            let mine = ranges::clip(ranges, lower.as_deref(), upper.as_deref());
            if let Some(handle) = self.finish_table(table, &mine)? {
                out.push(handle);
            }
            if upper.is_none() {
                break;
            }
            lower = upper;
        }
        Ok(out)
    }

    /// Adds entries from `pending` on to `table` until it reaches `limit` bytes, leaving the
    /// next entry in `pending`; stops before an entry at or after `cut`. Returns whether it
    /// stopped at `cut`.
    fn fill_table(
        table: &mut OpenTable,
        entries: &mut dyn Iterator<Item = Result<(Vec<u8>, Entry)>>,
        pending: &mut Option<Result<(Vec<u8>, Entry)>>,
        limit: u64,
        cut: Option<&[u8]>,
    ) -> Result<bool> {
        while let Some(next) = pending.take() {
            let (k, entry) = next?;
            if cut.is_some_and(|c| k.as_slice() >= c) {
                *pending = Some(Ok((k, entry)));
                return Ok(true);
            }
            match &entry {
                Entry::Put(v) => table.builder.add(&k, EntryKind::Put, v)?,
                Entry::Delete => table.builder.add(&k, EntryKind::Delete, &[])?,
                Entry::Merge(o) => table.builder.add(&k, EntryKind::Merge, o)?,
            }
            table.last_key = Some(k);
            *pending = entries.next();
            if table.builder.estimated_len() >= limit {
                break;
            }
        }
        Ok(false)
    }

    /// A writer of tables from sorted values, for [`ingest`](Self::ingest): bulk loading
    /// without the memtable, flushes or compactions.
    pub fn table_writer(&self) -> TableWriter<'_> {
        TableWriter {
            tree: self,
            current: None,
            tables: Vec::new(),
        }
    }

    /// Adds `tables` (from [`TableWriter::finish`]) to the tree as its newest data. In key
    /// order, a table that overlaps the previous table kept out of L0, or an L0 table, goes to
    /// L0 (later ones newer); the others, disjoint, go together into the deepest level that
    /// holds no table overlapping them, in it or in a level above (an ingest into an empty tree lands in the bottom level, where nothing
    /// compacts it again until newer data comes down). The tables must not hold a key twice.
    ///
    /// Fails with [`Error::InvalidArgument`] if a memtable holds data (it would be older than
    /// the tables, but read first): freeze and flush first. A refused ingest deletes the
    /// tables. When writing the manifest fails, the tree is unchanged in memory, but (as for a
    /// flush) the manifest on disk may already list the tables: the next open then has them.
    pub fn ingest(&self, tables: Vec<Arc<TableHandle>>) -> Result<Ingested> {
        let _flush = lock(&self.flush_lock);
        let _compact = lock(&self.compact_lock);
        let fail = |e: Error| {
            for t in &tables {
                t.obsolete.store(true, Ordering::Release);
            }
            Err(e)
        };
        if self.disposed.load(Ordering::Acquire) {
            return fail(Error::InvalidArgument(
                "ingest into a disposed tree".to_owned(),
            ));
        }
        {
            let state = lock(&self.state);
            if !state.mem.is_empty() || !state.imms.is_empty() {
                drop(state);
                return fail(Error::InvalidArgument(
                    "ingest into a tree whose memtables hold data: flush them first".to_owned(),
                ));
            }
        }
        if tables.is_empty() {
            return Ok(Ingested::default());
        }
        // In key order, a table goes deep unless it overlaps the last table that did or an L0
        // table: the deep ones are then disjoint, and the others go to L0.
        let mut sorted = tables.clone();
        sorted.sort_by(|a, b| a.smallest.cmp(&b.smallest));
        let base = self.pin();
        let mut deep: Vec<Arc<TableHandle>> = Vec::new();
        let mut l0_ids: HashSet<u64> = HashSet::new();
        for t in sorted {
            let after_deep = deep.last().is_none_or(|d| t.smallest > d.largest);
            let over_l0 = base
                .tables(0)
                .iter()
                .any(|o| o.overlaps(&t.smallest, &t.largest));
            if after_deep && !over_l0 {
                deep.push(t);
            } else {
                l0_ids.insert(t.id);
            }
        }
        // The deepest level with no table overlapping the deep ones in it or above.
        let level_overlaps = |level: usize| {
            let tables = base.tables(level);
            deep.iter().any(|n| {
                let i = tables.partition_point(|t| t.largest < n.smallest);
                tables.get(i).is_some_and(|t| t.smallest <= n.largest)
            })
        };
        let mut level = 0;
        if !deep.is_empty() {
            for l in 1..MAX_LEVELS {
                if level_overlaps(l) {
                    break;
                }
                level = l;
            }
        }
        if level == 0 {
            l0_ids.extend(deep.drain(..).map(|t| t.id));
        }
        // L0 takes them in the caller's order (later ones newer).
        let to_l0: Vec<Arc<TableHandle>> = tables
            .iter()
            .filter(|t| l0_ids.contains(&t.id))
            .cloned()
            .collect();
        if let Err(e) = self.storage.sync_dir(&self.dir) {
            return fail(e);
        }
        let bytes: u64 = tables.iter().map(|t| t.size).sum();
        let outcome = Ingested {
            l0_tables: to_l0.len(),
            level,
            level_tables: deep.len(),
        };
        let installed = self.install(
            |version| {
                for t in &to_l0 {
                    version.levels[0].insert(0, Arc::clone(t));
                }
                if level > 0 {
                    let out = &mut version.levels[level];
                    out.extend(deep.iter().cloned());
                    out.sort_by(|a, b| a.smallest.cmp(&b.smallest));
                }
            },
            |state| {
                state.stats.ingested_tables += tables.len() as u64;
                state.stats.ingested_bytes += bytes;
            },
        );
        // After an error here the manifest on disk may list the tables (a rename that landed
        // before a failed directory sync): their files stay, as a failed flush's do, and the
        // next open keeps them if listed and deletes them if not.
        installed.map(|()| outcome)
    }

    /// Forms a new version from the current one with `edit`, writes its manifest atomically
    /// and installs it, then runs `after` on the state (under its lock). Flushes and
    /// compactions install one at a time; neither blocks readers or writers meanwhile except
    /// for the two short moments it takes the state lock.
    fn install(
        &self,
        edit: impl FnOnce(&mut Version),
        after: impl FnOnce(&mut State),
    ) -> Result<()> {
        let _install = lock(&self.install_lock);
        // Only installers change the version, so it stays current until installed below.
        let mut version = (*self.pin()).clone();
        edit(&mut version);
        let next_id = lock(&self.state).next_id;
        let bytes = version.manifest(next_id).encode();
        self.storage
            .write_atomic(&self.path(MANIFEST_NAME), &bytes)?;
        let mut state = lock(&self.state);
        state.version = Arc::new(version);
        after(&mut state);
        Ok(())
    }

    /// Flushes the oldest frozen memtable into one L0 table, records it in the manifest and
    /// installs the new version. Returns `false` if no memtable was waiting. Runs beside a
    /// compaction.
    ///
    /// On an error the memtable stays frozen (a later call retries) and the tree is unchanged;
    /// a table file written before the error is removed on the next open.
    pub fn flush_one(&self) -> Result<bool> {
        let _flush = lock(&self.flush_lock);
        if self.disposed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Some(imm) = lock(&self.state).imms.front().cloned() else {
            return Ok(false);
        };
        let own = imm.range_tombstones();
        // A point tombstone under the memtable's own range says nothing the range does not.
        let mut entries = imm
            .entries()
            .filter(|e| !matches!(e, Ok((k, Entry::Delete)) if ranges::covers(own, k)));
        let tables = self.write_tables(&mut entries, own, u64::MAX)?;
        if !tables.is_empty() {
            self.storage.sync_dir(&self.dir)?;
        }
        let written: u64 = tables.iter().map(|t| t.size).sum();
        self.install(
            |version| {
                for t in tables.iter().rev() {
                    version.levels[0].insert(0, Arc::clone(t));
                }
            },
            |state| {
                if let Some(out) = state.flush_outputs.get_mut(&memtable_key(&imm)) {
                    out.tables = Some(tables.clone());
                }
                state.imms.pop_front();
                state.stats.flushes += 1;
                state.stats.flush_bytes_written += written;
            },
        )?;
        Ok(true)
    }

    /// Picks one compaction: `(input level, its input tables newest first)`. In a level
    /// below L0, the table after the level's compaction pointer (or the first one).
    fn pick(&self, version: &Version) -> Option<(usize, Vec<Arc<TableHandle>>)> {
        if version.tables(0).len() >= self.options.l0_compaction_trigger {
            return Some((0, version.tables(0).to_vec()));
        }
        for level in 1..MAX_LEVELS - 1 {
            if version.level_bytes(level) > self.options.level_budget(level) {
                let tables = version.tables(level);
                let pointer = lock(&self.state).compact_pointer[level].clone();
                let next = tables
                    .iter()
                    .find(|t| t.smallest > pointer)
                    .or_else(|| tables.first())?;
                return Some((level, vec![Arc::clone(next)]));
            }
        }
        None
    }

    /// Runs one compaction step if one is due: L0 into L1 once L0 holds
    /// [`TreeOptions::l0_compaction_trigger`] tables, else one table of the first level over its
    /// size budget into the next level. Returns `false` if none was due. Flushes run beside
    /// it: they add L0 tables newer than its inputs, which it leaves in place.
    ///
    /// Tombstones and range tombstones are dropped only when no deeper level holds tables
    /// overlapping the output; until then the output carries the inputs' range tombstones.
    /// Compaction reads do not fill the block cache. The replaced files are deleted once the
    /// new manifest is durable and no pinned version holds them.
    pub fn compact_one(&self) -> Result<bool> {
        let _compact = lock(&self.compact_lock);
        if self.disposed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let base = self.pin();
        let Some((level, upper)) = self.pick(&base) else {
            return Ok(false);
        };
        let out_level = level + 1;
        let lo = upper
            .iter()
            .map(|t| t.smallest.as_slice())
            .min()
            .unwrap_or_default()
            .to_vec();
        let hi = upper
            .iter()
            .map(|t| t.largest.as_slice())
            .max()
            .unwrap_or_default()
            .to_vec();
        let lower: Vec<Arc<TableHandle>> = base
            .tables(out_level)
            .iter()
            .filter(|t| t.overlaps(&lo, &hi))
            .cloned()
            .collect();
        if level > 0 && lower.is_empty() {
            return self.trivial_move(level, &upper[0]).map(|()| true);
        }
        let lo = lower
            .first()
            .map_or(lo.clone(), |t| t.smallest.clone().min(lo.clone()));
        let hi = lower
            .last()
            .map_or(hi.clone(), |t| t.largest.clone().max(hi.clone()));
        let deeper = (out_level + 1..MAX_LEVELS)
            .any(|l| base.tables(l).iter().any(|t| t.overlaps(&lo, &hi)));
        let merge_level = if deeper {
            MergeLevel::Upper
        } else {
            MergeLevel::Bottom
        };
        let inputs: Vec<Arc<TableHandle>> = upper.iter().chain(&lower).cloned().collect();
        self.merge_tables(&inputs, out_level, merge_level, |state| {
            if let Some(last) = upper.last() {
                state.compact_pointer[level] = last.largest.clone();
            }
        })?;
        Ok(true)
    }

    /// Merges `inputs` (newest first) at `merge_level` into new tables of `out_level`, then
    /// installs the version without the inputs and with the outputs (running `after` on the
    /// state) and marks the inputs obsolete. At [`MergeLevel::Upper`] the outputs carry the
    /// inputs' range tombstones; at the bottom they are dropped. Inputs are read without
    /// filling the block cache. The caller holds the compaction lock.
    fn merge_tables(
        &self,
        inputs: &[Arc<TableHandle>],
        out_level: usize,
        merge_level: MergeLevel,
        after: impl FnOnce(&mut State),
    ) -> Result<()> {
        let sources: Vec<Source> = inputs.iter().map(|t| t.source(&[], None, false)).collect();
        let input_ranges: Vec<Arc<[RangeTombstone]>> =
            inputs.iter().map(|t| Arc::clone(&t.ranges)).collect();
        let out_ranges = match merge_level {
            MergeLevel::Upper => ranges::union(input_ranges.iter().map(|r| &r[..])),
            MergeLevel::Bottom => Vec::new(),
        };
        let mut merged = MergingIter::with_ranges(sources, input_ranges, merge_level);
        let outputs =
            self.write_tables(&mut merged, &out_ranges, self.options.target_table_bytes)?;
        if !outputs.is_empty() {
            self.storage.sync_dir(&self.dir)?;
        }
        let gone: HashSet<u64> = inputs.iter().map(|t| t.id).collect();
        self.install(
            |version| {
                for tables in &mut version.levels {
                    tables.retain(|t| !gone.contains(&t.id));
                }
                let out = &mut version.levels[out_level];
                out.extend(outputs.iter().cloned());
                out.sort_by(|a, b| a.smallest.cmp(&b.smallest));
            },
            |state| {
                after(state);
                state.stats.compactions += 1;
                state.stats.compaction_bytes_read += inputs.iter().map(|t| t.size).sum::<u64>();
                state.stats.compaction_bytes_written += outputs.iter().map(|t| t.size).sum::<u64>();
            },
        )?;
        for t in inputs {
            t.obsolete.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// A manual full compaction: flushes every memtable, then merges every table of the
    /// current version into new tables in the bottom level (tombstones, range tombstones and
    /// overwritten values dropped, list operands resolved). Returns `false` if there was
    /// nothing to do (no table, or one table already in the bottom level without tombstones to
    /// drop). Rewrites the whole tree: for after a restore or before a savepoint, not for
    /// routine use. Flushes may run meanwhile; their L0 tables are newer and stay.
    pub fn compact_all(&self) -> Result<bool> {
        self.freeze();
        while self.flush_one()? {}
        let _compact = lock(&self.compact_lock);
        if self.disposed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let base = self.pin();
        let bottom = MAX_LEVELS - 1;
        let inputs: Vec<Arc<TableHandle>> = base.all_tables().cloned().collect();
        let settled = inputs.len() == 1
            && base.tables(bottom).len() == 1
            && inputs[0].ranges.is_empty()
            && inputs[0].reader.properties().deletes == 0
            && inputs[0].reader.properties().merges == 0;
        if inputs.is_empty() || settled {
            return Ok(false);
        }
        // L0 newest first, then each level: newest first overall, as a merge wants.
        self.merge_tables(&inputs, bottom, MergeLevel::Bottom, |_| {})?;
        Ok(true)
    }

    /// Moves `table` from `level` to the next level without rewriting it.
    fn trivial_move(&self, level: usize, table: &Arc<TableHandle>) -> Result<()> {
        self.install(
            |version| {
                version.levels[level].retain(|t| t.id != table.id);
                let out = &mut version.levels[level + 1];
                out.push(Arc::clone(table));
                out.sort_by(|a, b| a.smallest.cmp(&b.smallest));
            },
            |state| {
                state.compact_pointer[level] = table.largest.clone();
                state.stats.compactions += 1;
                state.stats.trivial_moves += 1;
            },
        )
    }

    /// Gives the tree's files up: deletes the manifest and marks every table of the current
    /// version obsolete, so that each table file is deleted when the last version holding it
    /// (the tree's, a snapshot's) is dropped. Writes and reads keep working on what is in
    /// memory and in open tables, but nothing the tree writes later is recorded. For a backend
    /// being dropped: its state lives in checkpoints, not in its working directory.
    pub fn dispose(&self) -> Result<()> {
        // Wait for a running flush and compaction; none starts after this.
        let _flush = lock(&self.flush_lock);
        let _compact = lock(&self.compact_lock);
        self.disposed.store(true, Ordering::Release);
        let version = self.pin();
        for t in version.all_tables() {
            t.obsolete.store(true, Ordering::Release);
        }
        let manifest = self.path(MANIFEST_NAME);
        if self.storage.exists(&manifest)? {
            self.storage.remove_file(&manifest)?;
        }
        Ok(())
    }

    /// Counters: memtable memory, tables and bytes per level, bytes written by flushes and
    /// compactions.
    pub fn stats(&self) -> TreeStats {
        let state = lock(&self.state);
        let mut stats = state.stats.clone();
        stats.memtable_bytes = state.mem.approximate_memory_usage();
        stats.immutable_memtables = state.imms.len();
        stats.immutable_memtable_bytes = state
            .imms
            .iter()
            .map(|m| m.approximate_memory_usage())
            .sum();
        stats.table_memory_bytes = state.version.all_tables().map(|t| t.reader.memory()).sum();
        stats.levels = (0..state.version.level_count())
            .map(|l| LevelStats {
                tables: state.version.tables(l).len(),
                bytes: state.version.level_bytes(l),
            })
            .collect();
        stats
    }
}
