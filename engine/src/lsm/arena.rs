//! Storage for the memtable that never moves what it holds: bytes in fixed chunks
//! ([`Arena`]) and records (entries, tree nodes) in fixed chunks ([`Chunked`]).
//!
//! Neither ever reallocates a chunk, so growing costs no copy and no pause, and the memory they
//! report grows by one chunk at a time: what the memtable's flush threshold needs. Both are
//! plain vectors of vectors: no `unsafe`, and `Send + Sync`.

/// Bytes per arena chunk. Items larger than a quarter of it get a chunk of their own.
const CHUNK_BYTES: usize = 32 << 10;

/// Where an item starts in an [`Arena`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Slot {
    chunk: u32,
    offset: u32,
}

/// Append-only byte storage in chunks that never move.
#[derive(Debug, Default)]
pub(super) struct Arena {
    chunks: Vec<Vec<u8>>,
    /// The chunk small items go to, if any.
    current: Option<usize>,
    /// The sum of the chunks' capacities.
    reserved: usize,
}

impl Arena {
    /// Stores `bytes` in a slot of `capacity` bytes (at least `bytes.len()`); the bytes after
    /// them are zero until written. `capacity` must fit a `u32` (the memtable checks).
    pub(super) fn alloc(&mut self, bytes: &[u8], capacity: usize) -> Slot {
        debug_assert!(bytes.len() <= capacity && u32::try_from(capacity).is_ok());
        let chunk = if capacity > CHUNK_BYTES / 4 {
            self.new_chunk(capacity)
        } else {
            match self.current {
                Some(c) if self.chunks[c].capacity() - self.chunks[c].len() >= capacity => c,
                _ => {
                    let c = self.new_chunk(CHUNK_BYTES);
                    self.current = Some(c);
                    c
                }
            }
        };
        let data = &mut self.chunks[chunk];
        let offset = data.len();
        data.extend_from_slice(bytes);
        data.resize(offset + capacity, 0);
        Slot {
            // A chunk holds at most max(CHUNK_BYTES, u32::MAX) bytes; there are fewer than
            // 2^32 chunks while the address space is 64 bits or less and chunks are >= 1 byte.
            chunk: chunk as u32,
            offset: offset as u32,
        }
    }

    /// Stores `key` and then `value` side by side (one cache line apart at most when small),
    /// the value in a slot of `value_capacity` bytes. Returns the two slots.
    pub(super) fn alloc_pair(
        &mut self,
        key: &[u8],
        value: &[u8],
        value_capacity: usize,
    ) -> (Slot, Slot) {
        let total = key.len() + value_capacity;
        if total > CHUNK_BYTES / 4 {
            // Large: two items, so that a small key does not take a dedicated value chunk.
            return (
                self.alloc(key, key.len()),
                self.alloc(value, value_capacity),
            );
        }
        let slot = self.alloc(key, total);
        self.get_mut_at(slot, key.len(), value.len())
            .copy_from_slice(value);
        let value_slot = Slot {
            chunk: slot.chunk,
            offset: slot.offset + key.len() as u32,
        };
        (slot, value_slot)
    }

    fn get_mut_at(&mut self, slot: Slot, skip: usize, len: usize) -> &mut [u8] {
        let start = slot.offset as usize + skip;
        &mut self.chunks[slot.chunk as usize][start..start + len]
    }

    /// The number of chunks.
    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn new_chunk(&mut self, capacity: usize) -> usize {
        let chunk = Vec::with_capacity(capacity);
        self.reserved += chunk.capacity();
        self.chunks.push(chunk);
        self.chunks.len() - 1
    }

    /// The `len` bytes at `slot`.
    #[inline]
    pub(super) fn get(&self, slot: Slot, len: u32) -> &[u8] {
        let start = slot.offset as usize;
        &self.chunks[slot.chunk as usize][start..start + len as usize]
    }

    /// The `len` bytes at `slot`, writable.
    #[inline]
    pub(super) fn get_mut(&mut self, slot: Slot, len: u32) -> &mut [u8] {
        let start = slot.offset as usize;
        &mut self.chunks[slot.chunk as usize][start..start + len as usize]
    }

    /// Copies the `len` bytes at `from` to `to` (distinct slots, each of at least `len` bytes).
    pub(super) fn copy(&mut self, from: Slot, to: Slot, len: u32) {
        let (f, t) = (from.chunk as usize, to.chunk as usize);
        let (fo, to_off, len) = (from.offset as usize, to.offset as usize, len as usize);
        if f == t {
            self.chunks[f].copy_within(fo..fo + len, to_off);
        } else {
            let (src, dst) = if f < t {
                let (a, b) = self.chunks.split_at_mut(t);
                (&a[f], &mut b[0])
            } else {
                let (a, b) = self.chunks.split_at_mut(f);
                (&b[0], &mut a[t])
            };
            dst[to_off..to_off + len].copy_from_slice(&src[fo..fo + len]);
        }
    }

    /// The bytes the arena has allocated.
    pub(super) fn reserved(&self) -> usize {
        self.reserved + self.chunks.capacity() * std::mem::size_of::<Vec<u8>>()
    }
}

/// Bytes per [`Chunked`] chunk, at most (a chunk holds a power of two of records, at least one).
const CHUNK_RECORD_BYTES: usize = 64 << 10;

/// A vector of records addressed by `u32` index, stored in chunks that never move.
#[derive(Debug)]
pub(super) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
    /// log2 of the records per chunk.
    shift: u32,
}

impl<T: Copy> Chunked<T> {
    pub(super) fn new() -> Self {
        let per_chunk = (CHUNK_RECORD_BYTES / std::mem::size_of::<T>().max(1)).max(1);
        Chunked {
            chunks: Vec::new(),
            len: 0,
            shift: per_chunk.ilog2(),
        }
    }

    fn per_chunk(&self) -> usize {
        1 << self.shift
    }

    /// The number of records.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Appends one record and returns its index. The memtable refuses entries long before the
    /// count nears `u32::MAX` (see `MemTable::put`).
    pub(super) fn push(&mut self, record: T) -> u32 {
        let per_chunk = self.per_chunk();
        match self.chunks.last_mut() {
            Some(last) if last.len() < per_chunk => last.push(record),
            _ => {
                let mut chunk = Vec::with_capacity(per_chunk);
                chunk.push(record);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
        (self.len - 1) as u32
    }

    /// The record at `index`.
    #[inline]
    pub(super) fn get(&self, index: u32) -> &T {
        let i = index as usize;
        &self.chunks[i >> self.shift][i & (self.per_chunk() - 1)]
    }

    /// The record at `index`, writable.
    #[inline]
    pub(super) fn get_mut(&mut self, index: u32) -> &mut T {
        let i = index as usize;
        let mask = self.per_chunk() - 1;
        &mut self.chunks[i >> self.shift][i & mask]
    }

    /// The bytes the records' chunks have allocated.
    pub(super) fn reserved(&self) -> usize {
        self.chunks.len() * self.per_chunk() * std::mem::size_of::<T>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_slots_keep_their_bytes() {
        let mut a = Arena::default();
        let mut slots = Vec::new();
        for i in 0..5000u32 {
            let bytes = i.to_le_bytes().repeat((i % 7) as usize);
            let slot = a.alloc(&bytes, bytes.len() + (i % 3) as usize);
            slots.push((slot, bytes));
        }
        // A large item gets its own chunk.
        let big = vec![7u8; CHUNK_BYTES];
        let big_slot = a.alloc(&big, CHUNK_BYTES);
        for (slot, bytes) in &slots {
            assert_eq!(a.get(*slot, bytes.len() as u32), &bytes[..]);
        }
        assert_eq!(a.get(big_slot, CHUNK_BYTES as u32), &big[..]);
        assert!(a.reserved() >= 5000 * 4 * 3 + CHUNK_BYTES);
        // Slack after the bytes is writable, and copies work between and within chunks.
        let grow = a.alloc(&[1, 2, 3, 4], 8);
        assert_eq!(a.get(grow, 8), [1, 2, 3, 4, 0, 0, 0, 0]);
        a.get_mut(grow, 8)[4..].copy_from_slice(&[5, 6, 7, 8]);
        assert_eq!(a.get(grow, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
        let to = a.alloc(&[], 64);
        a.copy(grow, to, 8);
        assert_eq!(a.get(to, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
        a.copy(big_slot, to, 4);
        assert_eq!(a.get(to, 8), [7, 7, 7, 7, 5, 6, 7, 8]);
        a.copy(grow, big_slot, 2);
        assert_eq!(a.get(big_slot, 4), [1, 2, 7, 7]);
        // A key and its value side by side.
        let (k, v) = a.alloc_pair(b"key", b"value", 9);
        assert_eq!(a.get(k, 3), b"key");
        assert_eq!(a.get(v, 9), b"value\0\0\0\0");
        assert_eq!(a.chunk_count(), a.chunks.len());
    }

    #[test]
    fn chunked_records_keep_their_index() {
        let mut c: Chunked<u32> = Chunked::new();
        assert_eq!(c.per_chunk(), CHUNK_RECORD_BYTES / 4);
        for i in 0..100_000u32 {
            assert_eq!(c.push(i * 3), i);
        }
        assert_eq!(c.len(), 100_000);
        for i in (0..100_000u32).step_by(97) {
            assert_eq!(*c.get(i), i * 3);
        }
        *c.get_mut(70_000) = 1;
        assert_eq!(*c.get(70_000), 1);
        assert!(c.reserved() >= 400_000);
        // Records larger than a chunk's budget get one chunk each.
        let mut big: Chunked<[u8; 100_000]> = Chunked::new();
        assert_eq!(big.per_chunk(), 1);
        big.push([1; 100_000]);
        big.push([2; 100_000]);
        assert_eq!(big.get(1)[99_999], 2);
    }
}
