//! The copy-on-write hash map of the heap backend: a linear-hashing table of small
//! open-addressed buckets, each behind a reference count.
//!
//! ## Design
//!
//! A [`CowMap`] is a vector of buckets; a bucket is an `Arc<[Slot<T>]>`, a power-of-two array
//! of slots probed linearly in Robin Hood order (any size: the probe start is the tag scaled to the
//! size), each slot holding a 32-bit tag taken from the hash beside the entry.
//! A lookup computes the bucket from the high 32 bits of the entry's 64-bit hash, starts probing at
//! `tag & (slots - 1)`, and compares tags before keys. The slots sit in the `Arc`'s own
//! allocation, so a lookup that hits touches the bucket vector (small, cached) and then usually
//! one cache line of slots: no table header on the way, unlike a bucket that would own a
//! `hashbrown` table.
//!
//! Linear hashing grows the map one bucket at a time: when the map holds more than
//! [`TARGET_BUCKET_LEN`] entries per bucket on average, the bucket at the split pointer is
//! split in two. A bucket rebuilds itself with half again as many slots as entries when it
//! passes 4/5 load, so buckets stay between 2/3 and 4/5 full. No operation ever
//! rehashes more than one bucket.
//!
//! Every bucket is referenced by exactly one slot of the vector, so a bucket whose reference
//! count is one belongs to the live map alone and is changed in place. A snapshot clones the
//! `Arc` that holds the whole map (see `table.rs`): nothing per entry. The first write after it
//! copies the vector of bucket pointers once, then copies only the buckets it writes to. Buckets
//! no write touches stay shared with the snapshot until it is dropped; dropping the snapshot
//! frees the buckets only it still holds.

use std::num::NonZeroU32;
use std::sync::Arc;

/// Average number of entries per bucket above which the map grows by one bucket.
pub(crate) const TARGET_BUCKET_LEN: usize = 24;

/// How far the bucket-selecting bits are shifted right: the high 32 bits of the hash choose the
/// bucket, the low 32 bits make the tag (and so the probe start), so the two never correlate.
/// (The probe start is the tag's high bits scaled to the slot count: had the bucket bits
/// overlapped them, the entries of a bucket would all start probing in one part of it.)
const BUCKET_HASH_SHIFT: u32 = 32;

/// Slots of a new bucket's array.
const MIN_SLOTS: usize = 8;

/// What a full slot holds beside its entry: the tag (hash bits 0..31, lowest bit set so it is
/// non-zero) and the epoch of the entry's last write (see [`CowMap::iter_since`]). Eight bytes,
/// which an entry aligned to 8 bytes left as padding after a bare tag.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    tag: NonZeroU32,
    epoch: u32,
}

/// A slot: empty, or an entry with its stamp.
type Slot<T> = Option<(Stamp, T)>;

#[inline]
fn tag_of(hash: u64) -> NonZeroU32 {
    NonZeroU32::new((hash as u32) | 1).expect("the lowest bit is set, so it is non-zero")
}

/// The slot where the probe for `tag` starts in an array of `n` slots: the tag scaled to
/// `0..n` (a multiply and a shift, so `n` need not be a power of two).
#[inline]
fn home(tag: NonZeroU32, n: usize) -> usize {
    ((u64::from(tag.get()) * n as u64) >> 32) as usize
}

/// How far slot `i` is from where the probe for `tag` starts, in an array of `n` slots.
#[inline]
fn distance(tag: NonZeroU32, i: usize, n: usize) -> usize {
    let start = home(tag, n);
    if i >= start {
        i - start
    } else {
        i + n - start
    }
}

/// Whether a bucket of `slots` slots may hold `len` entries: at most 4/5 full.
#[inline]
fn fits(len: usize, slots: usize) -> bool {
    len * 5 <= slots * 4
}

/// The slots to allocate for `len` entries: 3/2 of them (2/3 full), at least [`MIN_SLOTS`].
#[inline]
fn slots_for(len: usize) -> usize {
    (len + len / 2 + 1).max(MIN_SLOTS)
}

#[inline]
fn bucket_bits(hash: u64) -> usize {
    (hash >> BUCKET_HASH_SHIFT) as usize
}

/// One bucket: its slots (shared with snapshots), how many are full, and whether this map
/// alone holds them.
///
/// `owned` is true only while the slots' `Arc` is unique: it is set when the slots are created
/// or found unique, and a clone of the bucket (made only when [`CowMap::clone`] copies the
/// bucket vector for a writer, see `exclusive`) starts with it false. The map that was cloned
/// is never written again: it belongs to a snapshot, which only reads. So a write to an owned
/// bucket needs no look at the reference counts, which sit in another cache line than most
/// slots.
struct Bucket<T> {
    slots: Arc<[Slot<T>]>,
    len: u32,
    owned: bool,
}

impl<T> Clone for Bucket<T> {
    fn clone(&self) -> Self {
        Bucket {
            slots: self.slots.clone(),
            len: self.len,
            owned: false,
        }
    }
}

impl<T: Clone> Bucket<T> {
    fn with_slots(slots: usize) -> Self {
        Bucket {
            slots: (0..slots).map(|_| None).collect(),
            len: 0,
            owned: true,
        }
    }

    /// The index of the slot holding the entry with `tag` for which `eq` holds.
    ///
    /// Robin Hood order lets a miss stop early: the probe ends at an empty slot or at an entry
    /// that sits closer to its own start than the probe has come from its start.
    #[inline]
    fn find(&self, tag: NonZeroU32, mut eq: impl FnMut(&T) -> bool) -> Option<usize> {
        let slots = &self.slots[..];
        let n = slots.len();
        if n == 0 {
            return None;
        }
        let mut i = home(tag, n);
        let mut dist = 0;
        loop {
            match &slots[i] {
                None => return None,
                Some((t, e)) => {
                    if t.tag == tag && eq(e) {
                        return Some(i);
                    }
                    if distance(t.tag, i, n) < dist {
                        return None;
                    }
                }
            }
            i += 1;
            if i == n {
                i = 0;
            }
            dist += 1;
        }
    }

    /// The slots for writing: copied first if a snapshot shares them.
    #[inline]
    fn slots_mut(&mut self) -> &mut [Slot<T>] {
        if !self.owned {
            if super::exclusive::is_unique(&self.slots) {
                // A snapshot's map that held the bucket may have been dropped on another
                // thread just now (a key group released by an asynchronous phase): order its
                // reads before our writes, as `Arc::get_mut` would.
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            } else {
                self.slots = self.slots.iter().cloned().collect();
            }
            self.owned = true;
        }
        // SAFETY: `owned` is true only while the slots' Arc is unique (see `Bucket`): it was
        // just checked (with a fence after a snapshot thread's last reference went) or copied
        // above, or set when this map alone held the bucket and no clone of the map has been
        // made since (a clone clears the flag in the copy that is written). The map itself was
        // obtained through `exclusive`, which fences after seeing a snapshot thread's last
        // reference go.
        unsafe { super::exclusive::assume_unique_mut(&mut self.slots) }
    }

    /// Inserts an entry known to be absent, growing the slots first if needed, and returns
    /// its slot. Robin Hood: an entry that has probed further than the one in a slot takes the
    /// slot, and the displaced entry continues the probe.
    fn insert_absent(&mut self, stamp: Stamp, entry: T) -> usize {
        if !fits(self.len as usize + 1, self.slots.len()) {
            self.rebuild(slots_for(self.len as usize + 1));
        }
        let slots = self.slots_mut();
        let n = slots.len();
        let mut i = home(stamp.tag, n);
        let mut dist = 0;
        let mut carry: Slot<T> = Some((stamp, entry));
        let mut placed = None;
        let at = loop {
            match &slots[i] {
                None => {
                    slots[i] = carry;
                    break placed.unwrap_or(i);
                }
                Some((t, _)) => {
                    let d = distance(t.tag, i, n);
                    if d < dist {
                        std::mem::swap(&mut slots[i], &mut carry);
                        placed.get_or_insert(i);
                        dist = d;
                    }
                }
            }
            i += 1;
            if i == n {
                i = 0;
            }
            dist += 1;
        };
        self.len += 1;
        at
    }

    fn rebuild(&mut self, slot_count: usize) {
        let mut fresh = Bucket::with_slots(slot_count);
        let old = std::mem::replace(&mut self.slots, Arc::from(Vec::new()));
        for_each_owned(old, |stamp, entry| {
            fresh.insert_absent(stamp, entry);
        });
        *self = fresh;
    }

    /// Removes the entry at slot `i`, shifting later entries of its probe run back.
    fn remove_at(&mut self, mut i: usize) -> T {
        let slots = self.slots_mut();
        let n = slots.len();
        let (_, removed) = slots[i].take().expect("remove_at is called on a full slot");
        let mut j = if i + 1 == n { 0 } else { i + 1 };
        // Shift the rest of the run back by one until an entry that is at its start (or a gap).
        while let Some((stamp, _)) = &slots[j] {
            if distance(stamp.tag, j, n) == 0 {
                break;
            }
            slots[i] = slots[j].take();
            i = j;
            j = if j + 1 == n { 0 } else { j + 1 };
        }
        self.len -= 1;
        removed
    }

    fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.slots.iter().filter_map(|s| s.as_ref().map(|(_, e)| e))
    }
}

/// Calls `f` with every entry of `slots`, moving them out if nothing else shares the slots and
/// cloning them otherwise.
fn for_each_owned<T: Clone>(slots: Arc<[Slot<T>]>, mut f: impl FnMut(Stamp, T)) {
    let mut slots = slots;
    match Arc::get_mut(&mut slots) {
        Some(owned) => {
            for slot in owned.iter_mut() {
                if let Some((stamp, entry)) = slot.take() {
                    f(stamp, entry);
                }
            }
        }
        None => {
            for (stamp, entry) in slots.iter().flatten() {
                f(*stamp, entry.clone());
            }
        }
    }
}

/// What [`CowMap::clean_bucket`] does with an entry.
pub(crate) enum Verdict<T> {
    /// Keeps it as it is.
    Keep,
    /// Removes it.
    Remove,
    /// Replaces it with this entry, which must have the same hash and key.
    Replace(T),
}

/// A copy-on-write hash map of `T` (see the module documentation).
pub(crate) struct CowMap<T> {
    buckets: Vec<Bucket<T>>,
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
        let bucket = &self.buckets[self.bucket_index(hash)];
        let i = bucket.find(tag_of(hash), eq)?;
        bucket.slots[i].as_ref().map(|(_, e)| e)
    }

    /// The entry with `hash` for which `eq` holds, for writing in `epoch` (recorded as its
    /// last write). A bucket shared with a snapshot is copied first, and only if the entry is
    /// in it.
    #[inline]
    pub(crate) fn get_mut(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        epoch: u32,
    ) -> Option<&mut T> {
        if self.buckets.is_empty() {
            return None;
        }
        let b = self.bucket_index(hash);
        let bucket = &mut self.buckets[b];
        let i = bucket.find(tag_of(hash), eq)?;
        bucket.slots_mut()[i].as_mut().map(|(stamp, e)| {
            stamp.epoch = epoch;
            e
        })
    }

    /// The entry with `hash` for which `eq` holds, inserted with `make` if absent, and whether
    /// it was inserted; for writing in `epoch` (recorded as its last write).
    ///
    /// The map grows (splits one bucket) before the lookup when one more entry would pass the
    /// target load, so that the lookup happens once whether the entry is present or not.
    /// `rehash` must return the hash an entry was inserted with.
    #[inline]
    pub(crate) fn get_or_insert_with(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        make: impl FnOnce() -> T,
        rehash: impl Fn(&T) -> u64,
        epoch: u32,
    ) -> (&mut T, bool) {
        if self.buckets.is_empty() {
            self.buckets.push(Bucket::with_slots(MIN_SLOTS));
        }
        if self.len + 1 > self.buckets.len() * TARGET_BUCKET_LEN {
            self.split_one(&rehash);
        }
        let b = self.bucket_index(hash);
        let tag = tag_of(hash);
        let bucket = &mut self.buckets[b];
        let (i, inserted) = match bucket.find(tag, eq) {
            Some(i) => (i, false),
            None => {
                // Make the entry before counting it, so a panic in `make` leaves `len` right.
                let entry = make();
                self.len += 1;
                (bucket.insert_absent(Stamp { tag, epoch }, entry), true)
            }
        };
        let entry = bucket.slots_mut()[i]
            .as_mut()
            .map(|(stamp, e)| {
                stamp.epoch = epoch;
                e
            })
            .expect("the slot was just found or filled");
        (entry, inserted)
    }

    /// Removes and returns the entry with `hash` for which `eq` holds.
    pub(crate) fn remove(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<T> {
        if self.buckets.is_empty() {
            return None;
        }
        let b = self.bucket_index(hash);
        let bucket = &mut self.buckets[b];
        let i = bucket.find(tag_of(hash), eq)?;
        self.len -= 1;
        Some(bucket.remove_at(i))
    }

    /// Splits the bucket at the split pointer, adding one bucket.
    fn split_one(&mut self, rehash: &impl Fn(&T) -> u64) {
        let old = self.split;
        let high_bit = 1usize << self.level;
        let taken = std::mem::replace(&mut self.buckets[old], Bucket::with_slots(0));
        let slots = slots_for(taken.len as usize / 2 + 1);
        let mut stay = Bucket::with_slots(slots);
        let mut moved = Bucket::with_slots(slots);
        for_each_owned(taken.slots, |stamp, entry| {
            if bucket_bits(rehash(&entry)) & high_bit == 0 {
                stay.insert_absent(stamp, entry);
            } else {
                moved.insert_absent(stamp, entry);
            }
        });
        self.buckets[old] = stay;
        debug_assert_eq!(self.buckets.len(), old + high_bit);
        self.buckets.push(moved);
        self.split += 1;
        if self.split == high_bit {
            self.level += 1;
            self.split = 0;
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.buckets.iter().flat_map(|b| b.iter())
    }

    /// The number of slots of bucket `b` (0 if there is no such bucket).
    pub(crate) fn bucket_slots(&self, b: usize) -> usize {
        self.buckets.get(b).map_or(0, |bucket| bucket.slots.len())
    }

    /// The entry in slot `i` of bucket `b`, if that slot exists and is full.
    pub(crate) fn slot_entry(&self, b: usize, i: usize) -> Option<&T> {
        self.buckets.get(b)?.slots.get(i)?.as_ref().map(|(_, e)| e)
    }

    /// The number of buckets (a cleanup cursor walks them in order).
    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// The entries whose last write was in an epoch after `epoch` (the epoch a writer passes
    /// to [`get_mut`](Self::get_mut) and [`get_or_insert_with`](Self::get_or_insert_with)):
    /// what changed since a snapshot taken in `epoch`. Cleanup keeps an entry's epoch.
    pub(crate) fn iter_since(&self, epoch: u32) -> impl Iterator<Item = &T> + '_ {
        self.buckets.iter().flat_map(move |b| {
            b.slots
                .iter()
                .flatten()
                .filter(move |(stamp, _)| stamp.epoch > epoch)
                .map(|(_, e)| e)
        })
    }

    /// Judges every entry of bucket `b` (if it exists): kept, removed, or replaced by another
    /// value of the same key. Returns the number of entries judged. The bucket is rewritten
    /// (a fresh allocation, so a snapshot sharing the old one keeps it) only if something
    /// changes.
    pub(crate) fn clean_bucket(
        &mut self,
        b: usize,
        mut judge: impl FnMut(&T) -> Verdict<T>,
    ) -> usize {
        let Some(bucket) = self.buckets.get(b) else {
            return 0;
        };
        let mut verdicts = Vec::new();
        let mut changed = false;
        for (_, e) in bucket.slots.iter().flatten() {
            let v = judge(e);
            changed |= !matches!(v, Verdict::Keep);
            verdicts.push(v);
        }
        let judged = verdicts.len();
        if changed {
            let old = &self.buckets[b];
            // Sized for what stays, so that memory goes down as entries leave.
            let kept = verdicts
                .iter()
                .filter(|v| !matches!(v, Verdict::Remove))
                .count();
            let mut fresh = Bucket::with_slots(slots_for(kept).min(old.slots.len()));
            let mut removed = 0;
            let entries = old.slots.iter().flatten();
            for ((stamp, entry), verdict) in entries.zip(verdicts) {
                match verdict {
                    Verdict::Keep => {
                        fresh.insert_absent(*stamp, entry.clone());
                    }
                    Verdict::Replace(with) => {
                        fresh.insert_absent(*stamp, with);
                    }
                    Verdict::Remove => removed += 1,
                }
            }
            self.buckets[b] = fresh;
            self.len -= removed;
        }
        judged
    }

    /// Heap bytes held by the map, counting shared buckets in full.
    pub(crate) fn allocated_bytes(&self) -> usize {
        // An Arc allocation carries two counters before the slots.
        let arc_header = 2 * std::mem::size_of::<usize>();
        self.buckets.capacity() * std::mem::size_of::<Bucket<T>>()
            + self
                .buckets
                .iter()
                .map(|b| arc_header + std::mem::size_of_val(&b.slots[..]))
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

    use super::super::exclusive::exclusive;

    /// Writes go through `exclusive`, as in the backend: a map shared with a frozen copy is
    /// copied (with its bucket pointers) before it is written.
    fn put(m: &mut Arc<CowMap<(u64, u64)>>, k: u64, v: u64) {
        exclusive(m)
            .get_or_insert_with(hash(k), |e| e.0 == k, || (k, 0), |e| hash(e.0), 1)
            .0
             .1 = v;
    }

    fn get(m: &CowMap<(u64, u64)>, k: u64) -> Option<u64> {
        m.get(hash(k), |e| e.0 == k).map(|e| e.1)
    }

    #[test]
    fn grows_one_bucket_at_a_time_and_finds_everything() {
        let mut m = Arc::new(CowMap::default());
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
            assert_eq!(
                exclusive(&mut m).remove(hash(k), |e| e.0 == k),
                Some((k, k * 2))
            );
        }
        assert_eq!(m.len(), 5_000);
        assert_eq!(m.iter().count(), 5_000);
        assert!(m.iter().all(|e| e.0 % 2 == 1));
    }

    #[test]
    fn a_clone_is_isolated_from_later_writes() {
        let mut live = Arc::new(CowMap::default());
        for k in 0..2_000 {
            put(&mut live, k, 1);
        }
        let frozen = live.clone();
        for k in 0..3_000 {
            put(&mut live, k, 2);
        }
        exclusive(&mut live).remove(hash(5), |e| e.0 == 5);
        exclusive(&mut live).remove(hash(6), |e| e.0 == 6);
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
        let mut live = Arc::new(CowMap::default());
        for k in 0..1_000 {
            put(&mut live, k, 1);
        }
        let frozen = live.clone();
        put(&mut live, 1, 9);
        let shared = live
            .buckets
            .iter()
            .zip(&frozen.buckets)
            .filter(|(a, b)| Arc::ptr_eq(&a.slots, &b.slots))
            .count();
        assert_eq!(
            shared,
            frozen.buckets.len() - 1,
            "exactly one bucket was copied"
        );
        // A miss on a shared bucket copies nothing.
        let mut live = frozen.clone();
        let before: Vec<usize> = frozen
            .buckets
            .iter()
            .map(|b| Arc::strong_count(&b.slots))
            .collect();
        let writer = exclusive(&mut live);
        assert!(writer.get_mut(hash(99_999), |e| e.0 == 99_999, 1).is_none());
        assert!(writer.remove(hash(99_999), |e| e.0 == 99_999).is_none());
        drop(live);
        let after: Vec<usize> = frozen
            .buckets
            .iter()
            .map(|b| Arc::strong_count(&b.slots))
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn cleaning_a_bucket_removes_and_replaces_without_touching_a_snapshot() {
        let mut m = Arc::new(CowMap::default());
        for k in 0..200 {
            put(&mut m, k, k);
        }
        let frozen = m.clone();
        let map = exclusive(&mut m);
        let mut judged = 0;
        for b in 0..map.bucket_count() {
            judged += map.clean_bucket(b, |&(k, v)| match k % 3 {
                0 => Verdict::Remove,
                1 => Verdict::Replace((k, v + 1000)),
                _ => Verdict::Keep,
            });
        }
        assert_eq!(judged, 200);
        assert_eq!(map.len(), 200 - 67);
        assert_eq!(map.clean_bucket(map.bucket_count(), |_| Verdict::Remove), 0);
        for k in 0..200 {
            let expected = match k % 3 {
                0 => None,
                1 => Some(k + 1000),
                _ => Some(k),
            };
            assert_eq!(get(&m, k), expected, "key {k}");
            assert_eq!(get(&frozen, k), Some(k), "the snapshot keeps key {k}");
        }
    }

    #[test]
    fn epochs_tell_what_was_written_since_through_splits_copies_and_cleanup() {
        let mut m: Arc<CowMap<(u64, u64)>> = Arc::new(CowMap::default());
        let write = |m: &mut Arc<CowMap<(u64, u64)>>, k: u64, epoch: u32| {
            exclusive(m)
                .get_or_insert_with(hash(k), |e| e.0 == k, || (k, 0), |e| hash(e.0), epoch)
                .0
                 .1 = u64::from(epoch);
        };
        for k in 0..1_000 {
            write(&mut m, k, 1);
        }
        let frozen = m.clone();
        // Epoch 2: new keys (which split buckets), rewrites and a change through get_mut.
        for k in (0..3_000).step_by(3) {
            write(&mut m, k, 2);
        }
        if let Some(e) = exclusive(&mut m).get_mut(hash(1), |e| e.0 == 1, 2) {
            e.1 = 22;
        }
        // Cleanup keeps what it keeps with its epoch.
        let map = exclusive(&mut m);
        for b in 0..map.bucket_count() {
            map.clean_bucket(b, |&(k, v)| {
                if k == 4 {
                    Verdict::Replace((k, v))
                } else {
                    Verdict::Keep
                }
            });
        }
        let mut since: Vec<u64> = m.iter_since(1).map(|e| e.0).collect();
        since.sort_unstable();
        let mut expected: Vec<u64> = (0..3_000).step_by(3).chain([1]).collect();
        expected.sort_unstable();
        assert_eq!(since, expected);
        assert_eq!(m.iter_since(0).count(), m.len());
        assert_eq!(m.iter_since(2).count(), 0);
        assert_eq!(
            frozen.iter_since(1).count(),
            0,
            "the snapshot keeps its epochs"
        );
    }

    #[test]
    fn colliding_hashes_still_work() {
        let mut m: CowMap<(u64, u64)> = CowMap::default();
        for k in 0..500 {
            let (_, inserted) = m.get_or_insert_with(7, |e| e.0 == k, || (k, k), |_| 7, 1);
            assert!(inserted);
        }
        assert_eq!(m.len(), 500);
        for k in 0..500 {
            assert_eq!(m.get(7, |e| e.0 == k).map(|e| e.1), Some(k));
        }
    }

    #[test]
    fn random_inserts_and_removes_match_a_model_with_clustered_hashes() {
        // A weak hash (few distinct values in the low bits) makes long probe runs, which
        // exercises the backward shift of removals across runs and the wrap-around.
        let weak = |k: u64| (k % 13) | ((k % 5) << 40);
        let mut m: Arc<CowMap<(u64, u64)>> = Arc::new(CowMap::default());
        let mut model = std::collections::HashMap::new();
        let mut x = 1u64;
        let mut frozen = Vec::new();
        for step in 0..20_000u64 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let k = (x >> 33) % 300;
            if (x >> 20) % 3 == 0 {
                assert_eq!(
                    exclusive(&mut m).remove(weak(k), |e| e.0 == k).map(|e| e.1),
                    model.remove(&k),
                    "remove {k} at step {step}"
                );
            } else {
                exclusive(&mut m)
                    .get_or_insert_with(weak(k), |e| e.0 == k, || (k, 0), |e| weak(e.0), 1)
                    .0
                     .1 = step;
                model.insert(k, step);
            }
            if step % 997 == 0 {
                frozen.push((m.clone(), model.clone()));
            }
        }
        assert_eq!(m.len(), model.len());
        for k in 0..300 {
            assert_eq!(
                m.get(weak(k), |e| e.0 == k).map(|e| e.1),
                model.get(&k).copied()
            );
        }
        for (snapshot, expected) in &frozen {
            assert_eq!(snapshot.len(), expected.len());
            for k in 0..300 {
                assert_eq!(
                    snapshot.get(weak(k), |e| e.0 == k).map(|e| e.1),
                    expected.get(&k).copied()
                );
            }
        }
    }
}
