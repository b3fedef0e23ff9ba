//! The copy-on-write hash map of the heap backend: a linear-hashing table of small
//! `hashbrown` tables, each behind a reference count.
//!
//! ## Design
//!
//! A [`CowMap`] is a vector of buckets; bucket `i` is an `Arc<HashTable<T>>`. Linear hashing
//! picks the bucket from bits 28.. of the entry's 64-bit hash (the low bits and the top seven
//! bits are what `hashbrown` uses inside a bucket, so the two never correlate) and grows one
//! bucket at a time: when the map holds more than [`TARGET_BUCKET_LEN`] entries per bucket on
//! average, the bucket at the split pointer is split in two. Growth is therefore incremental:
//! no operation ever rehashes more than one bucket.
//!
//! Every bucket is referenced by exactly one slot of the vector, so a bucket whose reference
//! count is one is owned by the live map alone and is changed in place. A snapshot clones the
//! `Arc` that holds the whole map (see `table.rs`): nothing per entry. The first write after it
//! copies the vector of bucket pointers once, then copies only the buckets it writes to
//! (`Arc::make_mut`). Buckets no write touches stay shared with the snapshot until it is
//! dropped; dropping the snapshot frees the buckets only it still holds.

use std::sync::Arc;

use hashbrown::HashTable;

/// Average number of entries per bucket above which the map grows by one bucket.
pub(crate) const TARGET_BUCKET_LEN: usize = 24;

/// How far the bucket-selecting bits are shifted right: bits 28..60 of the hash choose the
/// bucket, which leaves hashbrown's bits (the low ones for the slot, the top seven for the tag)
/// independent of the bucket choice for up to 2^29 buckets.
const BUCKET_HASH_SHIFT: u32 = 28;

/// A copy-on-write hash map of `T` (see the module documentation).
pub(crate) struct CowMap<T> {
    buckets: Vec<Arc<HashTable<T>>>,
    /// Bucket count before the current round of splits is `1 << level`.
    level: u32,
    /// Next bucket to split in this round.
    split: usize,
    len: usize,
}

impl<T> Clone for CowMap<T> {
    /// Copies the vector of bucket pointers; the buckets themselves are shared.
    fn clone(&self) -> Self {
        CowMap {
            buckets: self.buckets.clone(),
            level: self.level,
            split: self.split,
            len: self.len,
        }
    }
}

impl<T> Default for CowMap<T> {
    fn default() -> Self {
        CowMap {
            buckets: Vec::new(),
            level: 0,
            split: 0,
            len: 0,
        }
    }
}

#[inline]
fn bucket_bits(hash: u64) -> usize {
    (hash >> BUCKET_HASH_SHIFT) as usize
}

impl<T: Clone> CowMap<T> {
    /// The number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn bucket_index(&self, hash: u64) -> usize {
        let bits = bucket_bits(hash);
        let low = bits & ((1usize << self.level) - 1);
        if low < self.split {
            bits & ((1usize << (self.level + 1)) - 1)
        } else {
            low
        }
    }

    /// The entry with `hash` for which `eq` holds.
    #[inline]
    pub(crate) fn get(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        if self.buckets.is_empty() {
            return None;
        }
        self.buckets[self.bucket_index(hash)].find(hash, eq)
    }

    /// The entry with `hash` for which `eq` holds, for writing. A bucket shared with a
    /// snapshot is copied first, and only if the entry is in it.
    #[inline]
    pub(crate) fn get_mut(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        if self.buckets.is_empty() {
            return None;
        }
        let i = self.bucket_index(hash);
        let slot = &mut self.buckets[i];
        if Arc::get_mut(slot).is_none() && slot.find(hash, &mut eq).is_none() {
            return None;
        }
        Arc::make_mut(slot).find_mut(hash, eq)
    }

    /// The entry with `hash` for which `eq` holds, inserted with `make` if absent, and whether
    /// it was inserted. `rehash` must return the hash an entry was inserted with.
    ///
    /// The map grows (splits one bucket) before the lookup when one more entry would pass the
    /// target load, so that the hot path probes once whether the entry is present or not.
    #[inline]
    pub(crate) fn get_or_insert_with(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        make: impl FnOnce() -> T,
        rehash: impl Fn(&T) -> u64,
    ) -> (&mut T, bool) {
        if self.buckets.is_empty() {
            self.buckets.push(Arc::new(HashTable::new()));
        }
        if self.len + 1 > self.buckets.len() * TARGET_BUCKET_LEN {
            self.split_one(&rehash);
        }
        let i = self.bucket_index(hash);
        let table = Arc::make_mut(&mut self.buckets[i]);
        match table.find_entry(hash, eq) {
            Ok(entry) => (entry.into_mut(), false),
            Err(absent) => {
                self.len += 1;
                let table = absent.into_table();
                (table.insert_unique(hash, make(), rehash).into_mut(), true)
            }
        }
    }

    /// Removes and returns the entry with `hash` for which `eq` holds.
    pub(crate) fn remove(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<T> {
        if self.buckets.is_empty() {
            return None;
        }
        let i = self.bucket_index(hash);
        let slot = &mut self.buckets[i];
        if Arc::get_mut(slot).is_none() && slot.find(hash, &mut eq).is_none() {
            return None;
        }
        let table = Arc::make_mut(slot);
        match table.find_entry(hash, eq) {
            Ok(entry) => {
                self.len -= 1;
                Some(entry.remove().0)
            }
            Err(_) => None,
        }
    }

    /// Splits the bucket at the split pointer, adding one bucket.
    fn split_one(&mut self, rehash: &impl Fn(&T) -> u64) {
        let old = self.split;
        let new_index = old + (1usize << self.level);
        let high_bit = 1usize << self.level;
        // Take the bucket out; if a snapshot shares it, its entries are cloned, else moved.
        let taken = std::mem::replace(&mut self.buckets[old], Arc::new(HashTable::new()));
        let mut stay = HashTable::with_capacity(taken.len() / 2 + 1);
        let mut moved = HashTable::with_capacity(taken.len() / 2 + 1);
        let mut place = |entry: T| {
            let h = rehash(&entry);
            if bucket_bits(h) & high_bit == 0 {
                stay.insert_unique(h, entry, rehash);
            } else {
                moved.insert_unique(h, entry, rehash);
            }
        };
        match Arc::try_unwrap(taken) {
            Ok(table) => table.into_iter().for_each(&mut place),
            Err(shared) => shared.iter().cloned().for_each(&mut place),
        }
        self.buckets[old] = Arc::new(stay);
        debug_assert_eq!(self.buckets.len(), new_index);
        self.buckets.push(Arc::new(moved));
        self.split += 1;
        if self.split == (1usize << self.level) {
            self.level += 1;
            self.split = 0;
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.buckets.iter().flat_map(|b| b.iter())
    }

    /// Heap bytes held by the map, counting shared buckets in full.
    pub(crate) fn allocated_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<HashTable<T>>() + 2 * std::mem::size_of::<usize>();
        self.buckets.capacity() * std::mem::size_of::<Arc<HashTable<T>>>()
            + self
                .buckets
                .iter()
                .map(|b| per_bucket + b.allocation_size())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(k: u64) -> u64 {
        // A strong mix so that every bit of the hash varies.
        let mut x = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn put(m: &mut CowMap<(u64, u64)>, k: u64, v: u64) {
        m.get_or_insert_with(hash(k), |e| e.0 == k, || (k, 0), |e| hash(e.0)).0 .1 = v;
    }

    fn get(m: &CowMap<(u64, u64)>, k: u64) -> Option<u64> {
        m.get(hash(k), |e| e.0 == k).map(|e| e.1)
    }

    #[test]
    fn grows_one_bucket_at_a_time_and_finds_everything() {
        let mut m = CowMap::default();
        for k in 0..10_000 {
            put(&mut m, k, k * 2);
        }
        assert_eq!(m.len(), 10_000);
        assert!(m.buckets.len() >= 10_000 / TARGET_BUCKET_LEN);
        for k in 0..10_000 {
            assert_eq!(get(&m, k), Some(k * 2));
        }
        assert_eq!(get(&m, 10_000), None);
        for k in (0..10_000).step_by(2) {
            assert_eq!(m.remove(hash(k), |e| e.0 == k), Some((k, k * 2)));
        }
        assert_eq!(m.len(), 5_000);
        assert_eq!(m.iter().count(), 5_000);
        assert!(m.iter().all(|e| e.0 % 2 == 1));
    }

    #[test]
    fn a_clone_is_isolated_from_later_writes() {
        let mut live = CowMap::default();
        for k in 0..2_000 {
            put(&mut live, k, 1);
        }
        let frozen = live.clone();
        for k in 0..3_000 {
            put(&mut live, k, 2);
        }
        live.remove(hash(5), |e| e.0 == 5);
        live.remove(hash(6), |e| e.0 == 6);
        assert_eq!(frozen.len(), 2_000);
        for k in 0..2_000 {
            assert_eq!(get(&frozen, k), Some(1));
        }
        assert_eq!(get(&frozen, 2_500), None);
        assert_eq!(get(&live, 5), None);
        assert_eq!(get(&live, 6), None);
        assert_eq!(get(&live, 7), Some(2));
        assert_eq!(live.len(), 2_998);
    }

    #[test]
    fn unwritten_buckets_stay_shared_and_written_ones_are_copied() {
        let mut live = CowMap::default();
        for k in 0..1_000 {
            put(&mut live, k, 1);
        }
        let frozen = live.clone();
        let mut copy_of_ptrs = live.clone();
        put(&mut copy_of_ptrs, 1, 9);
        let shared = copy_of_ptrs
            .buckets
            .iter()
            .zip(&frozen.buckets)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, frozen.buckets.len() - 1, "exactly one bucket was copied");
        // A miss on a shared bucket copies nothing.
        let before = Arc::strong_count(&live.buckets[0]);
        assert!(live.get_mut(hash(99_999), |e| e.0 == 99_999).is_none());
        assert!(live.remove(hash(99_999), |e| e.0 == 99_999).is_none());
        assert_eq!(Arc::strong_count(&live.buckets[0]), before);
    }

    #[test]
    fn colliding_hashes_still_work() {
        let mut m: CowMap<(u64, u64)> = CowMap::default();
        for k in 0..500 {
            let (_, inserted) = m.get_or_insert_with(7, |e| e.0 == k, || (k, k), |_| 7);
            assert!(inserted);
        }
        assert_eq!(m.len(), 500);
        for k in 0..500 {
            assert_eq!(m.get(7, |e| e.0 == k).map(|e| e.1), Some(k));
        }
    }
}
