//! How a backend is opened: [`BackendConfig`] (kind, max parallelism, owned key groups, clock,
//! and the LSM backend's settings) and [`BackendKind`].

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::key_group::{check_max_parallelism, KeyGroupRange, DEFAULT_MAX_PARALLELISM};
use crate::lsm::config::{LsmBackground, LsmConfig, LsmStorage};
use crate::lsm::{LsmPool, ShardedBlockCache, TreeOptions};

/// Which kind of backend to open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// [`HeapBackend`](crate::HeapBackend): typed state in copy-on-write maps in memory.
    Heap,
    /// [`LsmBackend`](crate::LsmBackend): encoded state in an LSM tree on disk, for state larger than memory.
    Lsm,
}

/// How to open a backend: its kind, max parallelism, owned key groups and clock.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub(crate) kind: BackendKind,
    max_parallelism: u32,
    key_group_range: Option<KeyGroupRange>,
    clock: Arc<dyn Clock>,
    lsm: Option<LsmConfig>,
    heap_incremental: Option<crate::heap::HeapIncremental>,
}

impl BackendConfig {
    /// A heap backend with max parallelism 128 owning every key group.
    pub fn heap() -> Self {
        BackendConfig {
            kind: BackendKind::Heap,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            key_group_range: None,
            clock: Arc::new(SystemClock),
            lsm: None,
            heap_incremental: None,
        }
    }

    /// An LSM backend working in directory `dir` (created if missing; the tree files an earlier
    /// backend left there are deleted at open), with max parallelism 128 owning every key group,
    /// a 64 MiB memtable, a 64 MiB block cache and a background thread of its own.
    pub fn lsm(dir: impl AsRef<std::path::Path>) -> Self {
        Self::with_lsm(LsmStorage::Path(dir.as_ref().to_path_buf()))
    }

    /// An LSM backend working in directory `dir` of `storage` (a [`MemStorage`] in tests, say);
    /// otherwise as [`lsm`](Self::lsm).
    ///
    /// [`MemStorage`]: crate::storage::MemStorage
    pub fn lsm_on(storage: Arc<dyn crate::storage::Storage>, dir: &str) -> Self {
        Self::with_lsm(LsmStorage::Storage(storage, dir.to_owned()))
    }

    fn with_lsm(storage: LsmStorage) -> Self {
        BackendConfig {
            kind: BackendKind::Lsm,
            lsm: Some(LsmConfig::new(storage)),
            ..Self::heap()
        }
    }

    fn map_lsm(mut self, change: impl FnOnce(&mut LsmConfig)) -> Self {
        if let Some(lsm) = &mut self.lsm {
            change(lsm);
        }
        self
    }

    /// LSM: the memory a memtable may use before it is frozen and flushed (default 64 MiB).
    /// Ignored by other kinds, as are all `lsm_*` settings. A memtable allocates about 110 KiB
    /// with its first write: below about 256 KiB each memtable holds a few entries and flushes
    /// and compactions dominate (below 110 KiB every write freezes one).
    pub fn lsm_memtable_bytes(self, bytes: usize) -> Self {
        self.map_lsm(|l| l.tree.memtable_bytes = bytes)
    }

    /// LSM: frozen memtables that may wait for a flush before writes flush themselves
    /// (default 2). With the memtable size it bounds memtable memory to
    /// `(max_immutable_memtables + 2) × memtable_bytes`.
    pub fn lsm_max_immutable_memtables(self, count: usize) -> Self {
        self.map_lsm(|l| l.tree.max_immutable_memtables = count)
    }

    /// LSM: the bytes of data blocks the block cache may hold (default 64 MiB; 0: no cache).
    pub fn lsm_block_cache_bytes(self, bytes: usize) -> Self {
        self.map_lsm(|l| l.block_cache_bytes = bytes)
    }

    /// LSM: whether tables are read through read-only memory maps where the storage can map
    /// them (default true; [`TreeOptions::mmap_reads`]).
    pub fn lsm_mmap_reads(self, enabled: bool) -> Self {
        self.map_lsm(|l| l.tree.mmap_reads = enabled)
    }

    /// LSM: a block cache shared with other backends of the process (bounds their total).
    pub fn lsm_shared_cache(self, cache: Arc<ShardedBlockCache>) -> Self {
        self.map_lsm(|l| l.shared_cache = Some(cache))
    }

    /// LSM: runs flushes and compactions on `pool`, shared with other backends.
    pub fn lsm_pool(self, pool: Arc<LsmPool>) -> Self {
        self.map_lsm(|l| l.background = LsmBackground::Pool(pool))
    }

    /// LSM: where flushes and compactions run (default: one thread of the backend's own).
    pub fn lsm_background(self, background: LsmBackground) -> Self {
        self.map_lsm(|l| l.background = background)
    }

    /// LSM: whether checkpoints are incremental (default true): a checkpoint publishes only
    /// the table files no earlier checkpoint of the backend published, under `shared/`, and
    /// writes a small native snapshot file that lists every table it needs. `false`: every
    /// checkpoint writes the whole state as a canonical file (portable across backends, as
    /// savepoints always are). spec/checkpoint-protocol.md section 8.
    pub fn lsm_incremental_checkpoints(self, enabled: bool) -> Self {
        self.map_lsm(|l| l.incremental_checkpoints = enabled)
    }

    /// LSM: how compactions are picked (default [`CompactionPolicy::Leveled`](crate::lsm::CompactionPolicy);
    /// [`CompactionPolicy::CheckpointAware`](crate::lsm::CompactionPolicy) for incremental
    /// checkpoints that re-ship few bytes, at some space and read cost).
    pub fn lsm_compaction(self, policy: crate::lsm::CompactionPolicy) -> Self {
        self.map_lsm(|l| l.tree.compaction = policy)
    }

    /// LSM: every option of the tree at once (table format, compaction triggers and sizes).
    /// Its `block_cache` is replaced by the backend's cache.
    pub fn lsm_tree_options(self, options: TreeOptions) -> Self {
        self.map_lsm(|l| l.tree = options)
    }

    /// The LSM settings, for a configuration of kind LSM.
    pub fn lsm_config(&self) -> Option<&LsmConfig> {
        self.lsm.as_ref()
    }

    /// Sets the max parallelism (the number of key groups), 1..=32768.
    pub fn max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = max_parallelism;
        self
    }

    /// Sets the key groups the backend owns (default: all of them).
    pub fn key_group_range(mut self, range: KeyGroupRange) -> Self {
        self.key_group_range = Some(range);
        self
    }

    /// Sets the clock used for time-dependent state (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The kind of backend.
    pub fn get_kind(&self) -> &BackendKind {
        &self.kind
    }

    /// Heap: incremental checkpoints (default off). A checkpoint then writes only what changed
    /// since the last checkpoint the backend was told completed, as a delta file under
    /// `shared/`, until the chain reaches the limits of `limits` and a new full base is written
    /// (spec/checkpoint-protocol.md, "Heap incremental checkpoints"). Savepoints stay full and
    /// canonical. Ignored by the LSM backend, whose incremental checkpoints are
    /// [`lsm_incremental_checkpoints`](Self::lsm_incremental_checkpoints).
    pub fn heap_incremental_checkpoints(
        mut self,
        limits: impl Into<Option<crate::heap::HeapIncremental>>,
    ) -> Self {
        if self.kind == BackendKind::Heap {
            self.heap_incremental = limits.into();
        }
        self
    }

    /// The heap backend's incremental checkpoint limits, if they are on.
    pub fn get_heap_incremental(&self) -> Option<crate::heap::HeapIncremental> {
        self.heap_incremental
    }

    /// The configured max parallelism.
    pub fn get_max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The configured key-group range (`None`: every key group).
    pub fn get_key_group_range(&self) -> Option<KeyGroupRange> {
        self.key_group_range
    }

    /// The configured clock.
    pub fn get_clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Checks the configuration and returns (max parallelism, key-group range).
    pub(crate) fn validate(&self) -> Result<(u32, KeyGroupRange)> {
        check_max_parallelism(self.max_parallelism)?;
        let range = match self.key_group_range {
            Some(r) => r,
            None => KeyGroupRange::all(self.max_parallelism)?,
        };
        if range.is_empty() {
            return Err(Error::InvalidConfig(
                "the key-group range is empty: a backend must own at least one key group".into(),
            ));
        }
        if u32::from(range.end()) >= self.max_parallelism {
            return Err(Error::InvalidConfig(format!(
                "key-group range {range} exceeds max parallelism {}",
                self.max_parallelism
            )));
        }
        Ok((self.max_parallelism, range))
    }
}
