//! The block cache of the LSM tree: [`ShardedBlockCache`] keeps checked, decompressed data
//! blocks ([`Block`]) for the [`TableReader`](flowstate_formats::table::TableReader)s of one or
//! more trees, bounded by the bytes the blocks hold ([`Block::charge`]).
//!
//! The capacity is split among shards (16 by default, fewer for small capacities), each a
//! `parking_lot::Mutex` around an exact LRU: a hash map from [`BlockCacheKey`] to a slot of a
//! slab (`Vec`) whose slots are linked into a doubly-linked list, most recently used first,
//! with free slots chained for reuse (no per-entry allocation, no `unsafe`). A key picks its
//! shard by a multiply-xorshift mix of table and offset, so that the blocks of one table spread
//! over all shards and readers on different threads rarely wait for the same lock. A hit moves
//! the entry to the front; an insert evicts from the back until the block fits in its shard's
//! share; a block larger than the share is not cached. Every shard stays within its share at
//! all times and the shares add up to the capacity, so the cached blocks never charge more than
//! the capacity, whatever the threads do. Only blocks are charged, not the cache's own
//! bookkeeping (a few dozen bytes per entry).
//!
//! Memory that lives outside the cache can be charged to it as a reservation
//! ([`BlockCache::reserve`]): the tree reserves each open table's index and filter for as long
//! as the table is open, spread evenly over the shards, and the blocks get what is left. So
//! the cached blocks and the tables' indexes and filters together stay within the capacity
//! (RocksDB's cache reservation for table readers), as long as the indexes and filters alone
//! fit in it.

use std::fmt;
use std::sync::Arc;

use flowstate_formats::table::{Block, BlockCache, BlockCacheKey};
use hashbrown::HashMap;
use parking_lot::Mutex;

/// The number of shards [`ShardedBlockCache::new`] makes for a large enough capacity.
const DEFAULT_SHARDS: usize = 16;

/// The least capacity per shard [`ShardedBlockCache::new`] aims for: 32 KiB, room for about
/// seven blocks of the default 4 KiB size.
const MIN_SHARD_BYTES: usize = 32 << 10;

/// The end of a list (no slot).
const NIL: usize = usize::MAX;

/// Counters and sizes of a [`ShardedBlockCache`] ([`ShardedBlockCache::stats`]), summed over
/// its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found their block.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Blocks taken in (a replacement of a cached key counts; a block too large for its shard
    /// does not).
    pub inserts: u64,
    /// Blocks dropped to make room for others.
    pub evictions: u64,
    /// The charge of the cached blocks, in bytes: at most `capacity_bytes` less
    /// `reserved_bytes`.
    pub usage_bytes: usize,
    /// Memory held outside the cache and charged to it: the indexes and filters of the open
    /// tables that use the cache ([`BlockCache::reserve`]). While it is at most
    /// `capacity_bytes`, `usage_bytes + reserved_bytes <= capacity_bytes`; beyond, no block is
    /// cached and the reservations alone exceed the capacity.
    pub reserved_bytes: usize,
    /// The capacity, in bytes.
    pub capacity_bytes: usize,
    /// The number of cached blocks.
    pub entries: usize,
}

/// One slot of a shard's slab: an entry of its LRU list, or a free slot.
struct Slot {
    key: BlockCacheKey,
    /// The block; `None` while the slot is free.
    block: Option<Arc<Block>>,
    /// What the block was charged when inserted.
    charge: usize,
    /// The more recently used neighbour (`NIL` at the front).
    prev: usize,
    /// The less recently used neighbour (`NIL` at the back); on a free slot, the next free slot.
    next: usize,
}

/// One shard: an LRU of blocks bounded by `capacity` bytes of charge.
struct Shard {
    /// Every cached key, to its slot.
    map: HashMap<BlockCacheKey, usize>,
    slots: Vec<Slot>,
    /// The first free slot, chained through `next`.
    free: usize,
    /// The most recently used slot.
    head: usize,
    /// The least recently used slot: the next to be evicted.
    tail: usize,
    usage: usize,
    capacity: usize,
    /// Bytes held outside the cache charged to this shard ([`BlockCache::reserve`]): the
    /// blocks get what is left of the capacity.
    reserved: usize,
    hits: u64,
    misses: u64,
    inserts: u64,
    evictions: u64,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Shard {
            map: HashMap::new(),
            slots: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            usage: 0,
            capacity,
            reserved: 0,
            hits: 0,
            misses: 0,
            inserts: 0,
            evictions: 0,
        }
    }

    /// Takes slot `i` out of the LRU list.
    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
    }

    /// Puts slot `i` (not in the list) at the front of the LRU list.
    fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head == NIL {
            self.tail = i;
        } else {
            self.slots[self.head].prev = i;
        }
        self.head = i;
    }

    /// Frees slot `i`, whose key has been taken out of the map: unlinks it, uncharges it and
    /// chains it to the free slots.
    fn release(&mut self, i: usize) {
        self.unlink(i);
        let slot = &mut self.slots[i];
        slot.block = None;
        self.usage -= slot.charge;
        slot.charge = 0;
        slot.prev = NIL;
        slot.next = self.free;
        self.free = i;
    }

    fn get(&mut self, key: &BlockCacheKey) -> Option<Arc<Block>> {
        let Some(&i) = self.map.get(key) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        self.slots[i].block.clone()
    }

    /// What the blocks may charge: the capacity less the reservations.
    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.reserved)
    }

    /// Evicts from the back until the blocks charge at most `limit`.
    fn evict_to(&mut self, limit: usize) {
        while self.usage > limit {
            let victim = self.tail;
            if victim == NIL {
                // Unreachable: usage > 0 means the list holds an entry.
                break;
            }
            self.map.remove(&self.slots[victim].key);
            self.release(victim);
            self.evictions += 1;
        }
    }

    fn insert(&mut self, key: BlockCacheKey, block: Arc<Block>) {
        let charge = block.charge();
        if let Some(i) = self.map.remove(&key) {
            self.release(i);
        }
        let room = self.room();
        if charge > room {
            return;
        }
        // `usage + charge > room`, without overflow (charge <= room).
        self.evict_to(room - charge);
        let slot = Slot {
            key,
            block: Some(block),
            charge,
            prev: NIL,
            next: NIL,
        };
        let i = if self.free == NIL {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let i = self.free;
            self.free = self.slots[i].next;
            self.slots[i] = slot;
            i
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.usage += charge;
        self.inserts += 1;
    }
}

/// A sharded LRU cache of data blocks, bounded by the bytes the cached blocks hold
/// ([`Block::charge`]): the engine's [`BlockCache`] (see the [module docs](self)).
///
/// Share one behind an `Arc` among the table readers of one or more trees, each table with its
/// own [`cache_id`](flowstate_formats::table::TableReadOptions::cache_id).
///
/// ```
/// use std::sync::Arc;
/// use flowstate::lsm::ShardedBlockCache;
/// use flowstate_formats::table::{BlockCache, TableReadOptions};
///
/// let cache = Arc::new(ShardedBlockCache::new(64 << 20));
/// let options = TableReadOptions {
///     block_cache: Some(Arc::clone(&cache) as Arc<dyn BlockCache>),
///     cache_id: 1,
///     ..TableReadOptions::default()
/// };
/// # let _ = options;
/// assert_eq!(cache.capacity(), 64 << 20);
/// assert_eq!(cache.usage(), 0);
/// ```
pub struct ShardedBlockCache {
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
}

impl ShardedBlockCache {
    /// A cache of `capacity_bytes` with 16 shards, or fewer (down to one) when that would give
    /// a shard less than 32 KiB. A capacity of 0 caches nothing.
    pub fn new(capacity_bytes: usize) -> Self {
        let shards = (capacity_bytes / MIN_SHARD_BYTES).clamp(1, DEFAULT_SHARDS);
        // A power of two, so that shards are as even as the capacity allows.
        let shards = 1usize << shards.ilog2();
        Self::with_shards(capacity_bytes, shards)
    }

    /// A cache of `capacity_bytes` split evenly among `shards` shards (at least one; each
    /// shard gets its share, the first ones a byte more when the capacity does not divide).
    /// A block whose charge exceeds its shard's share is never cached.
    pub fn with_shards(capacity_bytes: usize, shards: usize) -> Self {
        let n = shards.max(1);
        let (share, extra) = (capacity_bytes / n, capacity_bytes % n);
        let shards = (0..n)
            .map(|i| Mutex::new(Shard::new(share + usize::from(i < extra))))
            .collect();
        ShardedBlockCache {
            shards,
            capacity: capacity_bytes,
        }
    }

    /// The capacity in bytes: the most the cached blocks ever charge in all.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The charge of the cached blocks, in bytes (each shard read in turn).
    pub fn usage(&self) -> usize {
        self.shards.iter().map(|s| s.lock().usage).sum()
    }

    /// The bytes reserved for memory held outside the cache ([`BlockCache::reserve`]).
    pub fn reserved(&self) -> usize {
        self.shards.iter().map(|s| s.lock().reserved).sum()
    }

    /// The part of `bytes` shard `i` of `n` carries: an even share, the first ones a byte
    /// more when `bytes` does not divide (the same split every time, so that taking a
    /// reservation back undoes it exactly).
    fn portion(bytes: usize, i: usize, n: usize) -> usize {
        bytes / n + usize::from(i < bytes % n)
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The counters and sizes, summed over the shards (each shard read in turn, so under
    /// concurrent use the sum mixes slightly different instants).
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            capacity_bytes: self.capacity,
            ..CacheStats::default()
        };
        for shard in self.shards.iter() {
            let s = shard.lock();
            stats.hits += s.hits;
            stats.misses += s.misses;
            stats.inserts += s.inserts;
            stats.evictions += s.evictions;
            stats.usage_bytes += s.usage;
            stats.reserved_bytes += s.reserved;
            stats.entries += s.map.len();
        }
        stats
    }

    /// The shard of `key`.
    fn shard(&self, key: &BlockCacheKey) -> &Mutex<Shard> {
        // Multiply-high maps the 64-bit hash evenly onto 0 .. n for any n.
        let i = ((u128::from(mix(key)) * self.shards.len() as u128) >> 64) as usize;
        &self.shards[i]
    }
}

/// Memory charged to a block cache ([`BlockCache::reserve`]) until dropped.
pub(crate) struct CacheReservation {
    cache: Arc<dyn BlockCache>,
    bytes: usize,
}

impl CacheReservation {
    /// Charges `bytes` to `cache`.
    pub(crate) fn new(cache: Arc<dyn BlockCache>, bytes: usize) -> CacheReservation {
        cache.reserve(bytes);
        CacheReservation { cache, bytes }
    }
}

impl Drop for CacheReservation {
    fn drop(&mut self) {
        self.cache.unreserve(self.bytes);
    }
}

impl std::fmt::Debug for CacheReservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheReservation")
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// A 64-bit hash of `key` mixing all bits of table and offset (splitmix64's finalizer, twice):
/// block offsets of one table differ in few, low bits, tables by small numbers.
fn mix(key: &BlockCacheKey) -> u64 {
    fn fmix(mut h: u64) -> u64 {
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
    fmix(key.offset ^ fmix(key.table.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

impl BlockCache for ShardedBlockCache {
    fn get(&self, key: &BlockCacheKey) -> Option<Arc<Block>> {
        self.shard(key).lock().get(key)
    }

    fn insert(&self, key: BlockCacheKey, block: Arc<Block>) {
        self.shard(&key).lock().insert(key, block);
    }

    /// Spreads `bytes` evenly over the shards and evicts blocks until each shard's blocks fit
    /// in what its reservation leaves.
    fn reserve(&self, bytes: usize) {
        let n = self.shards.len();
        for (i, shard) in self.shards.iter().enumerate() {
            let mut s = shard.lock();
            s.reserved = s.reserved.saturating_add(Self::portion(bytes, i, n));
            let room = s.room();
            s.evict_to(room);
        }
    }

    fn unreserve(&self, bytes: usize) {
        let n = self.shards.len();
        for (i, shard) in self.shards.iter().enumerate() {
            let mut s = shard.lock();
            s.reserved = s.reserved.saturating_sub(Self::portion(bytes, i, n));
        }
    }
}

impl fmt::Debug for ShardedBlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedBlockCache")
            .field("shards", &self.shards.len())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;

    use flowstate_formats::table::{
        EntryKind, TableBuilder, TableOptions, TableReadOptions, TableReader,
    };
    use flowstate_formats::Compression;
    use proptest::prelude::*;

    use super::*;

    /// Records every block a reader offers and caches nothing: how the tests get real blocks.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Arc<Block>>>);

    impl BlockCache for Recorder {
        fn get(&self, _: &BlockCacheKey) -> Option<Arc<Block>> {
            None
        }

        fn insert(&self, _: BlockCacheKey, block: Arc<Block>) {
            self.0.lock().push(block);
        }
    }

    /// A table of `n` entries `key-{i:05}` with `value_len`-byte values, uncompressed, in blocks
    /// of about `block_size` bytes.
    fn table_file(n: usize, value_len: usize, block_size: usize) -> Vec<u8> {
        let mut file = Vec::new();
        let options = TableOptions {
            block_size,
            compression: Compression::None,
            ..TableOptions::default()
        };
        let mut b = TableBuilder::new(&mut file, options, "t.sst").unwrap();
        for i in 0..n {
            let value = vec![(i % 251) as u8; value_len];
            b.add(format!("key-{i:05}").as_bytes(), EntryKind::Put, &value)
                .unwrap();
        }
        b.finish().unwrap();
        file
    }

    /// A real block holding one entry with a `value_len`-byte value.
    fn block(value_len: usize) -> Arc<Block> {
        let file = table_file(1, value_len, 1 << 20);
        let recorder = Arc::new(Recorder::default());
        let options = TableReadOptions {
            block_cache: Some(Arc::clone(&recorder) as Arc<dyn BlockCache>),
            ..TableReadOptions::default()
        };
        let reader = TableReader::open_with(&file[..], "t.sst", options).unwrap();
        assert!(reader.get(b"key-00000").unwrap().is_some());
        let mut blocks = recorder.0.lock();
        assert_eq!(blocks.len(), 1);
        blocks.pop().unwrap()
    }

    /// Blocks of increasing charge, built once.
    fn blocks() -> &'static [Arc<Block>] {
        static BLOCKS: OnceLock<Vec<Arc<Block>>> = OnceLock::new();
        BLOCKS.get_or_init(|| [0, 200, 1000, 3000].into_iter().map(block).collect())
    }

    fn key(table: u64, offset: u64) -> BlockCacheKey {
        BlockCacheKey { table, offset }
    }

    impl ShardedBlockCache {
        /// Checks every shard's structure and bound.
        fn check(&self) {
            let mut total = 0;
            for shard in self.shards.iter() {
                let s = shard.lock();
                s.check();
                total += s.usage;
            }
            assert!(total <= self.capacity, "{total} > {}", self.capacity);
        }

        /// The keys of the only shard, most recently used first.
        fn order(&self) -> Vec<BlockCacheKey> {
            assert_eq!(self.shards.len(), 1);
            self.shards[0].lock().order()
        }
    }

    impl Shard {
        fn order(&self) -> Vec<BlockCacheKey> {
            let mut keys = Vec::new();
            let mut i = self.head;
            while i != NIL {
                keys.push(self.slots[i].key);
                i = self.slots[i].next;
            }
            keys
        }

        /// The list links both ways, agrees with the map, and charges add up within capacity;
        /// every other slot is free.
        fn check(&self) {
            let mut i = self.head;
            let mut prev = NIL;
            let mut count = 0;
            let mut usage = 0;
            while i != NIL {
                let slot = &self.slots[i];
                assert_eq!(slot.prev, prev);
                assert_eq!(self.map.get(&slot.key), Some(&i));
                let block = slot.block.as_ref().expect("a listed slot holds a block");
                assert_eq!(slot.charge, block.charge());
                usage += slot.charge;
                count += 1;
                assert!(count <= self.slots.len(), "the list has a cycle");
                prev = i;
                i = slot.next;
            }
            assert_eq!(self.tail, prev);
            assert_eq!(count, self.map.len());
            assert_eq!(usage, self.usage);
            assert!(
                self.usage <= self.room(),
                "blocks within what the reservations leave"
            );
            let mut free = 0;
            let mut f = self.free;
            while f != NIL {
                assert!(self.slots[f].block.is_none());
                free += 1;
                assert!(free <= self.slots.len(), "the free list has a cycle");
                f = self.slots[f].next;
            }
            assert_eq!(free + count, self.slots.len());
        }
    }

    #[test]
    fn blocks_grow_in_charge() {
        let charges: Vec<usize> = blocks().iter().map(|b| b.charge()).collect();
        assert!(charges.windows(2).all(|w| w[0] < w[1]), "{charges:?}");
    }

    #[test]
    fn hits_misses_and_lru_eviction_order() {
        let b = &blocks()[1];
        let c = ShardedBlockCache::with_shards(3 * b.charge(), 1);
        assert!(c.get(&key(1, 0)).is_none());
        for offset in 0..3 {
            c.insert(key(1, offset), Arc::clone(b));
        }
        assert_eq!(c.order(), [key(1, 2), key(1, 1), key(1, 0)]);
        // A hit moves the entry to the front: 1 becomes the least recently used.
        assert!(Arc::ptr_eq(&c.get(&key(1, 0)).unwrap(), b));
        assert_eq!(c.order(), [key(1, 0), key(1, 2), key(1, 1)]);
        c.insert(key(1, 3), Arc::clone(b));
        assert_eq!(c.order(), [key(1, 3), key(1, 0), key(1, 2)]);
        assert!(c.get(&key(1, 1)).is_none());
        assert!(c.get(&key(1, 2)).is_some());
        c.insert(key(1, 4), Arc::clone(b));
        assert_eq!(c.order(), [key(1, 4), key(1, 2), key(1, 3)]);
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 2,
                misses: 2,
                inserts: 5,
                evictions: 2,
                usage_bytes: 3 * b.charge(),
                reserved_bytes: 0,
                capacity_bytes: 3 * b.charge(),
                entries: 3,
            }
        );
        assert_eq!(c.usage(), 3 * b.charge());
        c.check();
    }

    #[test]
    fn reservations_evict_blocks_and_leave_the_rest_of_the_capacity() {
        let b = &blocks()[1];
        let cap = 8 * b.charge();
        let c = Arc::new(ShardedBlockCache::with_shards(cap, 2));
        let dyn_cache = || Arc::clone(&c) as Arc<dyn BlockCache>;
        for offset in 0..64 {
            c.insert(key(1, offset), Arc::clone(b));
        }
        let full = c.stats();
        assert!(full.usage_bytes <= cap && full.entries >= 6, "{full:?}");
        // A reservation of half the capacity evicts until the blocks fit in the other half.
        let half = CacheReservation::new(dyn_cache(), cap / 2);
        let s = c.stats();
        assert_eq!(s.reserved_bytes, cap / 2);
        assert!(s.usage_bytes + s.reserved_bytes <= cap, "{s:?}");
        assert!(s.evictions > full.evictions);
        for offset in 64..128 {
            c.insert(key(1, offset), Arc::clone(b));
            let s = c.stats();
            assert!(s.usage_bytes + s.reserved_bytes <= cap, "{s:?}");
        }
        // An odd reservation splits unevenly over the shards and is taken back exactly.
        let odd = CacheReservation::new(dyn_cache(), 7);
        assert_eq!(c.reserved(), cap / 2 + 7);
        drop(odd);
        drop(half);
        assert_eq!(c.reserved(), 0);
        for offset in 128..192 {
            c.insert(key(1, offset), Arc::clone(b));
        }
        assert!(
            c.usage() > cap / 2,
            "the room is back once the reservations are gone"
        );
        // Reservations beyond the capacity leave no room: nothing is cached.
        c.reserve(2 * cap);
        assert_eq!(c.stats().entries, 0);
        c.insert(key(2, 0), Arc::clone(b));
        assert!(c.get(&key(2, 0)).is_none());
        c.unreserve(2 * cap);
        c.insert(key(2, 0), Arc::clone(b));
        assert!(c.get(&key(2, 0)).is_some());
        c.check();
    }

    #[test]
    fn a_large_block_evicts_as_many_as_it_needs() {
        let (small, large) = (&blocks()[0], &blocks()[2]);
        let cap = large.charge() + small.charge();
        let c = ShardedBlockCache::with_shards(cap, 1);
        let n = cap / small.charge();
        for offset in 0..n as u64 {
            c.insert(key(0, offset), Arc::clone(small));
        }
        assert_eq!(c.stats().entries, n);
        c.insert(key(0, 1000), Arc::clone(large));
        assert_eq!(c.order(), [key(0, 1000), key(0, n as u64 - 1)]);
        assert_eq!(c.stats().evictions, n as u64 - 1);
        assert_eq!(c.usage(), cap);
        c.check();
    }

    #[test]
    fn inserting_a_cached_key_replaces_its_block() {
        let (a, b) = (&blocks()[0], &blocks()[1]);
        let c = ShardedBlockCache::with_shards(10 * b.charge(), 1);
        c.insert(key(2, 0), Arc::clone(a));
        c.insert(key(2, 8), Arc::clone(a));
        c.insert(key(2, 0), Arc::clone(b));
        assert!(Arc::ptr_eq(&c.get(&key(2, 0)).unwrap(), b));
        assert_eq!(c.order(), [key(2, 0), key(2, 8)]);
        let s = c.stats();
        assert_eq!((s.entries, s.inserts, s.evictions), (2, 3, 0));
        assert_eq!(s.usage_bytes, a.charge() + b.charge());
        c.check();
    }

    #[test]
    fn a_block_larger_than_its_shard_is_not_cached() {
        let (small, large) = (&blocks()[0], &blocks()[3]);
        let c = ShardedBlockCache::with_shards(large.charge() - 1, 1);
        c.insert(key(3, 0), Arc::clone(small));
        c.insert(key(3, 1), Arc::clone(large));
        assert!(c.get(&key(3, 1)).is_none());
        // Nothing was evicted for it.
        assert!(c.get(&key(3, 0)).is_some());
        // Offering a too large block for a cached key drops the cached one.
        c.insert(key(3, 0), Arc::clone(large));
        assert!(c.get(&key(3, 0)).is_none());
        let s = c.stats();
        assert_eq!(
            (s.entries, s.inserts, s.evictions, s.usage_bytes),
            (0, 1, 0, 0)
        );
        c.check();

        // With shards, the bound is a shard's share, not the whole capacity.
        let c = ShardedBlockCache::with_shards(2 * large.charge() - 2, 2);
        for offset in 0..16 {
            c.insert(key(3, offset), Arc::clone(large));
        }
        assert_eq!(c.usage(), 0);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        for c in [
            ShardedBlockCache::new(0),
            ShardedBlockCache::with_shards(0, 8),
        ] {
            c.insert(key(4, 0), Arc::clone(&blocks()[0]));
            assert!(c.get(&key(4, 0)).is_none());
            assert_eq!(
                c.stats(),
                CacheStats {
                    misses: 1,
                    ..CacheStats::default()
                }
            );
            assert_eq!((c.capacity(), c.usage()), (0, 0));
        }
    }

    #[test]
    fn shard_counts() {
        assert_eq!(ShardedBlockCache::new(0).shard_count(), 1);
        assert_eq!(ShardedBlockCache::new(64 << 10).shard_count(), 2);
        assert_eq!(ShardedBlockCache::new(100 << 10).shard_count(), 2);
        assert_eq!(ShardedBlockCache::new(128 << 10).shard_count(), 4);
        assert_eq!(ShardedBlockCache::new(8 << 20).shard_count(), 16);
        assert_eq!(ShardedBlockCache::with_shards(1000, 0).shard_count(), 1);
        let c = ShardedBlockCache::with_shards(10, 3);
        let shares: Vec<usize> = c.shards.iter().map(|s| s.lock().capacity).collect();
        assert_eq!(shares, [4, 3, 3]);
        assert!(format!("{c:?}").starts_with("ShardedBlockCache { shards: 3"));
    }

    #[test]
    fn the_blocks_of_a_table_spread_over_the_shards() {
        let c = ShardedBlockCache::with_shards(1 << 20, 16);
        let mut counts = [0usize; 16];
        for offset in 0..1600u64 {
            let s = c.shard(&key(7, 12 + offset * 4109));
            let i = c.shards.iter().position(|x| std::ptr::eq(x, s)).unwrap();
            counts[i] += 1;
        }
        // 100 expected per shard.
        assert!(
            counts.iter().all(|&n| (60..=140).contains(&n)),
            "{counts:?}"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Get(u64),
        Insert(u64, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..12u64).prop_map(Op::Get),
            (0..12u64, 0..4usize).prop_map(|(k, b)| Op::Insert(k, b)),
        ]
    }

    proptest! {
        /// One shard behaves exactly as a plain LRU model: the same hits and the same blocks,
        /// the same order, the same counters, and never more than its capacity.
        #[test]
        fn one_shard_matches_an_lru_model(
            ops in prop::collection::vec(op(), 0..200),
            cap_blocks in 0usize..12,
        ) {
            let blocks = blocks();
            let cap = cap_blocks * blocks[1].charge();
            let c = ShardedBlockCache::with_shards(cap, 1);
            // Most recently used first: (offset, block index).
            let mut model: VecDeque<(u64, usize)> = VecDeque::new();
            let mut expected = CacheStats { capacity_bytes: cap, ..CacheStats::default() };
            for op in ops {
                match op {
                    Op::Get(k) => {
                        let got = c.get(&key(0, k));
                        match model.iter().position(|&(mk, _)| mk == k) {
                            Some(p) => {
                                let e = model.remove(p).unwrap();
                                model.push_front(e);
                                expected.hits += 1;
                                prop_assert!(got.is_some_and(|b| Arc::ptr_eq(&b, &blocks[e.1])));
                            }
                            None => {
                                expected.misses += 1;
                                prop_assert!(got.is_none());
                            }
                        }
                    }
                    Op::Insert(k, b) => {
                        c.insert(key(0, k), Arc::clone(&blocks[b]));
                        model.retain(|&(mk, _)| mk != k);
                        let charge = |m: &VecDeque<(u64, usize)>| {
                            m.iter().map(|&(_, b)| blocks[b].charge()).sum::<usize>()
                        };
                        if blocks[b].charge() <= cap {
                            while charge(&model) + blocks[b].charge() > cap {
                                model.pop_back();
                                expected.evictions += 1;
                            }
                            model.push_front((k, b));
                            expected.inserts += 1;
                        }
                    }
                }
                let usage = model.iter().map(|&(_, b)| blocks[b].charge()).sum::<usize>();
                prop_assert!(usage <= cap);
                prop_assert_eq!(c.usage(), usage);
            }
            let order: Vec<BlockCacheKey> = model.iter().map(|&(k, _)| key(0, k)).collect();
            prop_assert_eq!(c.order(), order);
            expected.usage_bytes = c.usage();
            expected.entries = model.len();
            prop_assert_eq!(c.stats(), expected);
            c.check();
        }

        /// Over any number of shards the cached blocks never charge more than the capacity.
        #[test]
        fn usage_never_exceeds_capacity(
            ops in prop::collection::vec((0..4u64, 0..64u64, 0..4usize), 0..300),
            cap in 0usize..40_000,
            shards in 1usize..9,
        ) {
            let blocks = blocks();
            let c = ShardedBlockCache::with_shards(cap, shards);
            for (table, offset, b) in ops {
                c.insert(key(table, offset), Arc::clone(&blocks[b]));
                prop_assert!(c.usage() <= cap);
                let _ = c.get(&key(table, offset ^ 1));
            }
            c.check();
            let s = c.stats();
            prop_assert!(s.usage_bytes <= cap);
            prop_assert!(s.inserts >= s.evictions + s.entries as u64);
        }
    }

    #[test]
    fn concurrent_use_keeps_the_bound_and_the_counters() {
        const THREADS: u64 = 4;
        const OPS: usize = 20_000;
        let blocks = blocks();
        // Room for about 16 middle-sized blocks over 4 shards; every block fits in a shard.
        let cap = 16 * blocks[2].charge();
        let c = ShardedBlockCache::with_shards(cap, 4);
        assert!(blocks.iter().all(|b| b.charge() <= cap / 4));
        let done = AtomicBool::new(false);
        let (gets, misses) = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut checks = 0u64;
                while !done.load(Ordering::Relaxed) {
                    assert!(c.usage() <= cap);
                    checks += 1;
                    std::thread::yield_now();
                }
                checks
            });
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let c = &c;
                    s.spawn(move || {
                        let mut x = 0x2545_f491_4f6c_dd1d ^ (t + 1);
                        let (mut gets, mut misses) = (0u64, 0u64);
                        for _ in 0..OPS {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            // Each thread has its own table, so only it inserts its keys: a
                            // miss then an insert never replaces a cached block.
                            let k = key(t, (x >> 8) % 96 * 4096);
                            gets += 1;
                            if c.get(&k).is_none() {
                                misses += 1;
                                c.insert(k, Arc::clone(&blocks[(x % 4) as usize]));
                            }
                        }
                        (gets, misses)
                    })
                })
                .collect();
            let totals = workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            done.store(true, Ordering::Relaxed);
            assert!(watcher.join().unwrap() > 0);
            totals
        });
        c.check();
        let s = c.stats();
        assert_eq!(gets, THREADS * OPS as u64);
        assert_eq!(s.hits + s.misses, gets);
        assert_eq!(s.misses, misses);
        assert_eq!(s.inserts, misses);
        assert_eq!(s.entries as u64, s.inserts - s.evictions);
        assert!(s.hits > 0 && s.evictions > 0, "{s:?}");
        assert!(s.usage_bytes <= cap);
        assert_eq!(s.usage_bytes, c.usage());
    }

    #[test]
    fn a_table_reader_hits_the_cache_on_a_second_lookup() {
        let file = table_file(1000, 20, 512);
        let cache = Arc::new(ShardedBlockCache::new(1 << 20));
        let options = TableReadOptions {
            block_cache: Some(Arc::clone(&cache) as Arc<dyn BlockCache>),
            cache_id: 42,
            ..TableReadOptions::default()
        };
        let reader = TableReader::open_with(&file[..], "t.sst", options).unwrap();
        assert!(reader.data_block_count() > 10);
        let expected = Some((EntryKind::Put, vec![(500 % 251) as u8; 20]));

        assert_eq!(reader.get(b"key-00500").unwrap(), expected);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.entries), (0, 1, 1, 1));

        assert_eq!(reader.get(b"key-00500").unwrap(), expected);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.entries), (1, 1, 1, 1));
        assert!(s.usage_bytes > 0);

        // Another block: a miss, then a hit; a full scan then reads every other block once.
        assert!(reader.get(b"key-00003").unwrap().is_some());
        assert!(reader.get(b"key-00003").unwrap().is_some());
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.entries), (2, 2, 2));
        let n = reader.iter().count();
        assert_eq!(n, 1000);
        let s = cache.stats();
        assert_eq!(s.entries, reader.data_block_count());
        assert_eq!(s.hits + s.misses, 4 + reader.data_block_count() as u64);
        assert!(s.usage_bytes <= cache.capacity());

        // A cache too small for any block never hits.
        let tiny = Arc::new(ShardedBlockCache::new(64));
        let options = TableReadOptions {
            block_cache: Some(Arc::clone(&tiny) as Arc<dyn BlockCache>),
            cache_id: 43,
            ..TableReadOptions::default()
        };
        let reader = TableReader::open_with(&file[..], "t.sst", options).unwrap();
        assert_eq!(reader.get(b"key-00500").unwrap(), expected);
        assert_eq!(reader.get(b"key-00500").unwrap(), expected);
        let s = tiny.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.entries), (0, 2, 0, 0));
    }
}
