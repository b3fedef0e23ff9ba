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

use super::entry::{Entry, EntryRef, Lookup};
use super::key;
use super::mem_table::{ImmutableMemTable, MemTable};
use super::merge::{resolve_ranged, MergeLevel, MergingIter};
use super::ranges;
use crate::error::{Error, Result};

use crate::storage::{is_temp_name, ReadableFile, Storage, WritableFile, ROOT, TEMP_SUFFIX};

mod checkpoint;
mod compaction;
mod compaction_filter;
mod flush;
mod ingest;
mod policy;
mod table_writing;
mod version;
pub use checkpoint::CheckpointTables;
pub use compaction::{CheckpointAwareOptions, CompactionPolicy};
pub use compaction_filter::{CompactionFilter, FilterDecision, FilterFn};
pub use ingest::Ingested;
pub use table_writing::{TableWriter, RANGE_BYTES_PER_TABLE};
pub use version::{EntryVisitor, TableHandle, TreeSnapshot, Version};

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
    /// How compactions are picked (default [`CompactionPolicy::Leveled`]).
    pub compaction: CompactionPolicy,
    /// A filter every compaction passes its output through (default none); the LSM backend
    /// sets its TTL cleanup here.
    pub compaction_filter: Option<Arc<dyn CompactionFilter>>,
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
            compaction: CompactionPolicy::Leveled,
            compaction_filter: None,
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
        if let CompactionPolicy::CheckpointAware(o) = &self.compaction {
            o.check()?;
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

/// The merge sources of a range read over `start .. end` from under the state lock: the live
/// memtable's entries `mem` (already read from it) with its range tombstones there, then the
/// frozen memtables, newest first; and the version of tables beneath them.
fn memtable_sources(
    state: &State,
    mem: Vec<Result<(Vec<u8>, Entry)>>,
    start: &[u8],
    end: Option<&[u8]>,
) -> (Vec<RangedSource>, Arc<Version>) {
    let end_bound = end.map_or(Bound::Unbounded, Bound::Excluded);
    let mem_ranges = state.mem.range_tombstones_within(start, end);
    let mem_ranges = if mem_ranges.is_empty() {
        ranges::none()
    } else {
        Arc::from(mem_ranges)
    };
    let mut sources: Vec<RangedSource> = vec![(Box::new(mem.into_iter()), mem_ranges)];
    for m in state.imms.iter().rev() {
        sources.push((
            Box::new(Arc::clone(m).owned_entries(Bound::Included(start), end_bound)),
            Arc::clone(m.range_tombstones()),
        ));
    }
    (sources, Arc::clone(&state.version))
}

/// What [`Tree::scan_range_limited`] returns: the `(key, value)` pairs read, and the key to go
/// on from (`None` when the range has no live pair after them).
pub type LimitedScan = (Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>);

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
    /// default 10 filter bits per key and 4 KiB blocks). With a block cache, every open table
    /// charges it to the cache as a reservation ([`CacheStats::reserved_bytes`](crate::lsm::CacheStats)),
    /// so cached blocks and table memory together stay within the cache's capacity while this
    /// alone fits in it; it grows with the data, and beyond the capacity no block is cached.
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
    /// Checkpoint-aware policy: partitions merged into the base (counted in `compactions`).
    pub partition_merges: u64,
    /// Checkpoint-aware policy: runs of a partition merged among themselves (counted in
    /// `compactions`).
    pub run_merges: u64,
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

/// A merge source with the range tombstones that come with it.
type RangedSource = (Source, Arc<[RangeTombstone]>);

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
            _reservation: self.read_options.block_cache.as_ref().map(|cache| {
                crate::lsm::cache::CacheReservation::new(Arc::clone(cache), reader.memory())
            }),
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
        // After the flushes above: L0 may have grown by them. (The checkpoint-aware policy
        // keeps many runs in L0 by design, bounded per partition by its own merges.)
        while matches!(self.options.compaction, CompactionPolicy::Leveled)
            && self.pin().tables(0).len() >= self.options.l0_stop_trigger
        {
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
        let (near, version) = self.memtable_lookups(key);
        Self::resolve(key, near, version.as_ref())
    }

    /// The value of `key` from the memtables' lookups `near` (newest first) and, if they did
    /// not decide, the tables of `version`.
    fn resolve(
        key: &[u8],
        near: Vec<(Lookup<'static>, bool)>,
        version: Option<&Arc<Version>>,
    ) -> Result<Option<Vec<u8>>> {
        let tables = version
            .into_iter()
            .flat_map(|v| v.candidates(key))
            .map(|t| t.lookup(key));
        let lookups = near.into_iter().map(Ok).chain(tables);
        Ok(resolve_ranged(lookups)?.map(|v| v.into_owned()))
    }

    /// The memtables' lookups of `key` that matter (newest first: entries, and misses whose
    /// memtable's range tombstones cover the key), taken under the lock (hash lookups); and
    /// the version whose tables decide the rest, if the memtables did not decide.
    fn memtable_lookups(&self, key: &[u8]) -> (Vec<(Lookup<'static>, bool)>, Option<Arc<Version>>) {
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
    }

    /// Calls `visit` with the value of `key` (`None` if absent) and returns what it returns:
    /// [`get`](Self::get) without copying the value when a table holds it. When no memtable
    /// has the key or a range tombstone over it, and the newest table with an entry for it
    /// holds a value or a tombstone (not merge operands), the value is lent straight out of
    /// that table's block. Otherwise (the memtables decide, or operands must be combined) it
    /// is resolved as `get` resolves it and lent from there.
    pub fn get_with<R>(&self, key: &[u8], visit: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        let (near, version) = self.memtable_lookups(key);
        let version = match version {
            // Nothing in the memtables: the tables alone decide, read in place below.
            Some(version) if near.is_empty() => version,
            version => {
                return Ok(visit(
                    Self::resolve(key, near, version.as_ref())?.as_deref(),
                ))
            }
        };
        let mut visit = Some(visit);
        let mut operands = false;
        for t in version.candidates(key) {
            if key < t.smallest.as_slice() || key > t.largest.as_slice() {
                continue;
            }
            let lent = t.reader.get_with(key, |kind, value| match kind {
                EntryKind::Put => visit.take().map(|f| f(Some(value))),
                EntryKind::Delete => visit.take().map(|f| f(None)),
                EntryKind::Merge => None,
            })?;
            match lent {
                Some(Some(result)) => return Ok(result),
                // Operands: older tables hold the base; resolve as `get` does.
                Some(None) => {
                    operands = true;
                    break;
                }
                None if !t.ranges.is_empty() && ranges::covers(&t.ranges, key) => {
                    return Ok(visit.take().map(|f| f(None)).expect("not called yet"));
                }
                None => {}
            }
        }
        let f = visit.expect("visit is called at most once, and returns right after");
        if !operands {
            return Ok(f(None));
        }
        // The memtables had nothing: the tables alone give the value.
        Ok(f(Self::resolve(key, Vec::new(), Some(&version))?.as_deref()))
    }

    /// The `(key, value)` pairs whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = key::prefix_successor(prefix);
        self.scan(prefix, end.as_deref(), Some(prefix))
    }

    /// Calls `visit` with each `(key, value)` pair whose key starts with `prefix`, in key
    /// order: what [`scan_prefix`](Self::scan_prefix) returns. When no memtable holds an entry
    /// or a range tombstone there and one level alone holds tables over the prefix, without
    /// range tombstones there (settled state, as after a compaction), the pairs are read
    /// straight out of those tables' blocks: no merge, no copy per entry. Otherwise they come
    /// from `scan_prefix`. Stops at the first error `visit` returns.
    pub fn visit_prefix(&self, prefix: &[u8], visit: &mut EntryVisitor<'_>) -> Result<()> {
        let end = key::prefix_successor(prefix);
        let settled = {
            let state = lock(&self.state);
            let quiet = state.mem.prefix(prefix).next().is_none()
                && state
                    .mem
                    .range_tombstones_within(prefix, end.as_deref())
                    .is_empty()
                && version::frozen_quiet(&state.imms, prefix, end.as_deref());
            quiet.then(|| Arc::clone(&state.version))
        };
        if let Some(version) = settled {
            if let Some(tables) = version.single_level(prefix, end.as_deref()) {
                return Version::visit_single_level(&tables, prefix, visit);
            }
        }
        for (k, v) in self.scan_prefix(prefix)? {
            visit(&k, &v)?;
        }
        Ok(())
    }

    /// The `(key, value)` pairs with `start <= key < end`, in key order.
    pub fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.scan(start, Some(end), None)
    }

    /// Up to `limit` live `(key, value)` pairs with `start <= key < end`, in key order, and
    /// the key to go on from: `None` when the range holds no live pair after those returned.
    ///
    /// The work is bounded by `limit`, not by the range: the live memtable gives at most
    /// `limit` values and a bounded number of tombstones per call (beyond them the call stops
    /// early, with fewer pairs and a key to go on from), and the frozen memtables and tables
    /// are merged lazily. A run of tombstones, such as the timers a service fired and deleted,
    /// costs its length once per call that crosses it.
    pub fn scan_range_limited(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<LimitedScan> {
        if start >= end || limit == 0 {
            return Ok((Vec::new(), (start < end).then(|| start.to_vec())));
        }
        // Tombstones of the live memtable read per call beyond the values it gives.
        const TOMBSTONES: usize = 4096;
        let mut cut: Option<Vec<u8>> = None;
        let (sources, version) = {
            let state = lock(&self.state);
            let mut mem = Vec::new();
            let (mut values, mut others) = (0usize, 0usize);
            for (k, e) in state
                .mem
                .range(Bound::Included(start), Bound::Excluded(end))
            {
                if values == limit || others == TOMBSTONES {
                    cut = Some(k.to_vec());
                    break;
                }
                match e {
                    EntryRef::Put(_) => values += 1,
                    _ => others += 1,
                }
                mem.push(Ok((k.to_vec(), e.to_entry())));
            }
            let stop = cut.as_deref().unwrap_or(end);
            memtable_sources(&state, mem, start, Some(stop))
        };
        let stop = cut.clone().unwrap_or_else(|| end.to_vec());
        let out = version.scan_with(sources, start, Some(&stop), None, limit)?;
        let resume = if out.len() == limit {
            // After the last pair returned: its key with a zero byte appended.
            let mut next = out[out.len() - 1].0.clone();
            next.push(0);
            (next.as_slice() < end).then_some(next)
        } else {
            cut
        };
        Ok((out, resume))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        prefix: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end_bound = end.map_or(Bound::Unbounded, Bound::Excluded);
        let (sources, version) = {
            let state = lock(&self.state);
            let mem: Vec<_> = state
                .mem
                .range(Bound::Included(start), end_bound)
                .into_entries()
                .collect();
            memtable_sources(&state, mem, start, end)
        };
        version.scan_with(sources, start, end, prefix, usize::MAX)
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
