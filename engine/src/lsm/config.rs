//! How an LSM backend is configured: its working directory, the tree's options, the block
//! cache and where flushes and compactions run. [`BackendConfig::lsm`](crate::BackendConfig::lsm)
//! and the `lsm_*` methods of [`BackendConfig`](crate::BackendConfig) build it.

use std::path::PathBuf;
use std::sync::Arc;

use super::cache::ShardedBlockCache;
use super::pool::LsmPool;
use super::tree::TreeOptions;
use crate::storage::Storage;

/// Where flushes and compactions of an LSM backend run.
#[derive(Debug, Clone)]
pub enum LsmBackground {
    /// On a pool of the backend's own with this many threads (default: 1).
    Threads(usize),
    /// On a pool shared with other backends of the process.
    Pool(Arc<LsmPool>),
    /// On the task thread, inside the write that freezes a memtable: deterministic, for tests
    /// and single-threaded embedders.
    Inline,
}

/// How an LSM backend is configured: its directory, the tree's options and bounds, the block
/// cache and where background work runs. Build it with [`BackendConfig::lsm`](crate::BackendConfig::lsm)
/// and the `lsm_*` methods of [`BackendConfig`](crate::BackendConfig).
#[derive(Debug, Clone)]
pub struct LsmConfig {
    pub(crate) storage: LsmStorage,
    /// The tree's options: memtable size, frozen memtables allowed, table format, compaction.
    pub tree: TreeOptions,
    /// The bytes of data blocks the backend's own block cache may hold (default 64 MiB; 0: no
    /// cache). Ignored when [`shared_cache`](Self::shared_cache) is set.
    pub block_cache_bytes: usize,
    /// A block cache shared with other backends of the process (default none).
    pub shared_cache: Option<Arc<ShardedBlockCache>>,
    /// Where flushes and compactions run (default: a pool of one thread of the backend's own).
    pub background: LsmBackground,
    /// Whether checkpoints are incremental native snapshots (default true) or canonical files.
    pub incremental_checkpoints: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum LsmStorage {
    Path(PathBuf),
    Storage(Arc<dyn Storage>, String),
}

impl LsmConfig {
    pub(crate) fn new(storage: LsmStorage) -> Self {
        LsmConfig {
            storage,
            tree: TreeOptions::default(),
            block_cache_bytes: 64 << 20,
            shared_cache: None,
            background: LsmBackground::Threads(1),
            incremental_checkpoints: true,
        }
    }
}
