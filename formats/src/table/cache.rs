//! The hook for a block cache: the engine implements [`BlockCache`] (sharded, with its own
//! eviction) and hands it to [`TableReader`](super::TableReader)s, which consult it in their
//! single block-reading path.

use std::sync::Arc;

use super::Block;

/// Names a data block across tables: the table's cache id (given by the caller when it opens
/// the table, unique among the tables sharing a cache) and the block's offset in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockCacheKey {
    /// The table's cache id ([`TableReadOptions::cache_id`](super::TableReadOptions::cache_id)).
    pub table: u64,
    /// The offset of the block's frame in the table file.
    pub offset: u64,
}

/// A cache of checked, decompressed data blocks, shared by the readers of many tables.
///
/// A reader asks [`get`](BlockCache::get) before it reads a data block and offers every block
/// it reads to [`insert`](BlockCache::insert); the cache decides what to keep
/// ([`Block::charge`] says what a block costs). Blocks are immutable: a hit needs no further
/// check. Implementations must be cheap to call from several threads at once.
pub trait BlockCache: Send + Sync {
    /// The block named `key`, if the cache holds it.
    fn get(&self, key: &BlockCacheKey) -> Option<Arc<Block>>;

    /// Offers `block`, just read and checked, under `key`.
    fn insert(&self, key: BlockCacheKey, block: Arc<Block>);

    /// Charges `bytes` of memory held outside the cache (an open table's index and filter)
    /// against its capacity, so that blocks and reservations together stay within it: the
    /// cache evicts blocks to make room. The default charges nothing.
    fn reserve(&self, bytes: usize) {
        let _ = bytes;
    }

    /// Takes back a reservation of `bytes` made by [`reserve`](BlockCache::reserve).
    fn unreserve(&self, bytes: usize) {
        let _ = bytes;
    }
}

impl std::fmt::Debug for dyn BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockCache")
    }
}
