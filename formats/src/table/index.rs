//! The index block: the last key of every data block and where the block is.
//!
//! ## Format
//!
//! | size | field |
//! |---|---|
//! | varint | number of data blocks `B` |
//! | `B` × entry | per data block, in file order |
//!
//! An entry:
//!
//! | size | field |
//! |---|---|
//! | varint + bytes | the block's last key, whole (not prefix-compressed, so that the reader's memory is the block's size) |
//! | varint | the block's frame offset |
//! | varint | the block's frame length (header, payload and CRC) |
//!
//! Keys ascend strictly. The frames tile the data region: the first starts right after the
//! file header, each next one where the previous ends, the last ends where the first meta
//! block starts.

use std::cmp::Ordering;
use std::ops::Range;

use crate::codec::varint;
use crate::FormatError;

use super::frame::{Payload, OVERHEAD};
use super::MAX_KEY_LEN;

/// Where a block's frame is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// Encodes index entries as data blocks are written.
#[derive(Debug, Default)]
pub(crate) struct IndexBuilder {
    entries: Vec<u8>,
    count: u64,
}

impl IndexBuilder {
    /// The bytes the entry of a block with last key `key` at `handle` takes (an upper bound
    /// when the handle is not known yet: 20 bytes for it).
    pub(crate) fn entry_len(key: &[u8]) -> usize {
        varint::encoded_len(key.len() as u64) + key.len() + 20
    }

    /// The payload length so far, with the count's varint at its largest.
    pub(crate) fn len_bound(&self) -> usize {
        self.entries.len() + 10
    }

    pub(crate) fn add(&mut self, last_key: &[u8], handle: BlockHandle) {
        crate::record::put_bytes(last_key, &mut self.entries);
        varint::encode_u64(handle.offset, &mut self.entries);
        varint::encode_u64(handle.len, &mut self.entries);
        self.count += 1;
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The payload.
    pub(crate) fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() + 10);
        varint::encode_u64(self.count, &mut out);
        out.extend_from_slice(&self.entries);
        out
    }
}

/// The decoded index: keys stay in the payload buffer.
///
/// A lookup binary-searches a dense array first: for each key, the 8 bytes after the prefix
/// that every key of the index shares, as a big-endian `u64` (zero-padded). That array is a
/// twentieth of the keys' bytes and contiguous, so the search touches a few cache lines where a
/// search over the keys would miss the cache at every step (two misses: the entry, then its
/// key bytes); only the entries whose 8 bytes equal the sought key's are compared in full.
#[derive(Debug)]
pub(crate) struct Index {
    buf: Payload,
    entries: Vec<(Range<usize>, BlockHandle)>,
    /// The length of the prefix every key shares.
    shared: usize,
    /// Per entry, the 8 key bytes after the shared prefix ([`word_after`]).
    words: Vec<u64>,
}

/// The 8 bytes of `key` from `at` as a big-endian `u64`, zero-padded past the key's end.
///
/// For two keys with the same first `at` bytes, `word_after(a) < word_after(b)` implies
/// `a < b`: the first differing byte within the word is a real byte of both keys (and decides
/// their order), or a padding zero of `a` against a byte of `b` (so `a` ends first and is a
/// prefix of `b` up to there). Equal words decide nothing.
#[inline]
fn word_after(key: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(rest) = key.get(at..) {
        let n = rest.len().min(8);
        word[..n].copy_from_slice(&rest[..n]);
    }
    u64::from_be_bytes(word)
}

impl Index {
    /// Decodes the index payload of the frame at `offset` of `file`: every data block lies in
    /// `data` (tiling it), no stored payload above `max_block_len`.
    pub(crate) fn decode(
        payload: Payload,
        file: &str,
        offset: u64,
        data: Range<u64>,
        max_block_len: u32,
    ) -> Result<Index, FormatError> {
        let mut c = payload.cursor(file, offset);
        let base = payload.range.start;
        // An entry takes at least 3 bytes: an empty key, an offset, a length.
        let count = c.count(3, "index entry")?;
        let mut entries = Vec::with_capacity(count as usize);
        let mut next = data.start;
        let mut prev: Option<Range<usize>> = None;
        for i in 0..count {
            let at = c.pos();
            let key = c.len_prefixed()?;
            if key.len() > MAX_KEY_LEN {
                return Err(c.limit_at(at, "key length", key.len() as u64, MAX_KEY_LEN as u64));
            }
            let key_end = c.pos();
            let key_range = base + key_end - key.len()..base + key_end;
            let off_at = c.pos();
            let block_offset = c.varint()?;
            let len = c.varint()?;
            if block_offset != next {
                return Err(c.corrupt_at(
                    off_at,
                    format!(
                        "data block {i} at {block_offset}, where the previous one ends at {next}"
                    ),
                ));
            }
            if len < OVERHEAD || len - OVERHEAD > u64::from(max_block_len) {
                return Err(c.limit_at(
                    off_at,
                    "block stored length",
                    len.saturating_sub(OVERHEAD),
                    max_block_len.into(),
                ));
            }
            if let Some(p) = &prev {
                if payload.buf[p.clone()] >= payload.buf[key_range.clone()] {
                    return Err(
                        c.corrupt_at(at, format!("index key {i} is not after the previous one"))
                    );
                }
            }
            next = block_offset.saturating_add(len);
            if next > data.end {
                return Err(c.corrupt_at(
                    off_at,
                    format!(
                        "data block {i} runs to {next}, past the data region's end at {}",
                        data.end
                    ),
                ));
            }
            prev = Some(key_range.clone());
            entries.push((
                key_range,
                BlockHandle {
                    offset: block_offset,
                    len,
                },
            ));
        }
        c.finish("index entries")?;
        if next != data.end {
            return Err(c.corrupt_at(
                c.pos(),
                format!("data blocks end at {next}, the data region at {}", data.end),
            ));
        }
        let key = |i: usize| &payload.buf[entries[i].0.clone()];
        let shared = match entries.len() {
            0 => 0,
            n => {
                // Sorted keys: what the first and the last share, all share.
                let (first, last) = (key(0), key(n - 1));
                first.iter().zip(last).take_while(|(a, b)| a == b).count()
            }
        };
        let words = (0..entries.len())
            .map(|i| word_after(key(i), shared))
            .collect();
        Ok(Index {
            buf: payload,
            entries,
            shared,
            words,
        })
    }

    /// The number of data blocks.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The last key of block `i`.
    pub(crate) fn key(&self, i: usize) -> Option<&[u8]> {
        let (r, _) = self.entries.get(i)?;
        self.buf.buf.get(r.clone())
    }

    /// Where block `i` is.
    pub(crate) fn handle(&self, i: usize) -> Option<BlockHandle> {
        self.entries.get(i).map(|e| e.1)
    }

    /// The first block whose last key is at least `key`: the only block that may hold `key`,
    /// and where a scan from `key` starts. `None` if `key` is after every key.
    pub(crate) fn find(&self, key: &[u8]) -> Option<usize> {
        let i = self.first_not_below(key);
        (i < self.entries.len()).then_some(i)
    }

    /// The number of index keys below `key`: a binary search over the dense words, then over
    /// the keys whose word ties with `key`'s.
    fn first_not_below(&self, key: &[u8]) -> usize {
        let n = self.entries.len();
        let Some(first) = self.key(0) else {
            return 0;
        };
        let shared = &first[..self.shared];
        let head = &key[..key.len().min(self.shared)];
        // A `key` shorter than the shared prefix and equal to its start is below every key.
        match head
            .cmp(&shared[..head.len()])
            .then(head.len().cmp(&shared.len()))
        {
            Ordering::Less => return 0,
            Ordering::Greater => return n,
            Ordering::Equal => {}
        }
        let word = word_after(key, self.shared);
        let lo = self.words.partition_point(|&w| w < word);
        let ties = self.words[lo..].partition_point(|&w| w == word);
        let below = self.entries[lo..lo + ties]
            .partition_point(|(r, _)| self.buf.buf.get(r.clone()).unwrap_or_default() < key);
        lo + below
    }

    /// The payload bytes the index holds in memory.
    pub(crate) fn memory(&self) -> usize {
        self.buf.buf.capacity()
            + self.entries.capacity() * std::mem::size_of::<(Range<usize>, BlockHandle)>()
            + self.words.capacity() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(bytes: Vec<u8>) -> Payload {
        Payload {
            range: 0..bytes.len(),
            buf: bytes,
            crc: 0,
            compressed: false,
        }
    }

    fn index(blocks: &[(&[u8], u64)]) -> Vec<u8> {
        let mut b = IndexBuilder::default();
        let mut at = 12;
        for (k, len) in blocks {
            b.add(
                k,
                BlockHandle {
                    offset: at,
                    len: *len,
                },
            );
            at += len;
        }
        b.finish()
    }

    #[test]
    fn finds_the_block_of_a_key() {
        let bytes = index(&[(b"b", 20), (b"d", 30), (b"f", 14)]);
        let idx = Index::decode(payload(bytes), "t", 0, 12..76, 1024).unwrap();
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.find(b""), Some(0));
        assert_eq!(idx.find(b"b"), Some(0));
        assert_eq!(idx.find(b"b\0"), Some(1));
        assert_eq!(idx.find(b"f"), Some(2));
        assert_eq!(idx.find(b"g"), None);
        assert_eq!(idx.key(1), Some(&b"d"[..]));
        assert_eq!(
            idx.handle(1),
            Some(BlockHandle {
                offset: 32,
                len: 30
            })
        );
    }

    /// The dense search finds what a search over the keys finds, for keys with long shared
    /// prefixes, keys that are prefixes of others, ties in the dense words, and sought keys
    /// shorter than, below, inside and above the shared prefix.
    #[test]
    fn the_dense_search_agrees_with_a_search_over_the_keys() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..200 {
            let shared: Vec<u8> = b"state-7/kg".iter().take(round % 11).copied().collect();
            let mut keys: Vec<Vec<u8>> = (0..1 + next() % 60)
                .map(|_| {
                    let mut k = shared.clone();
                    // Few distinct bytes, so that words tie and keys prefix one another.
                    let tail = next() % 14;
                    k.extend((0..tail).map(|_| b"ab\0"[(next() % 3) as usize]));
                    k
                })
                .collect();
            keys.sort();
            keys.dedup();
            let blocks: Vec<(&[u8], u64)> = keys.iter().map(|k| (k.as_slice(), 20)).collect();
            let end = 12 + 20 * keys.len() as u64;
            let idx = Index::decode(payload(index(&blocks)), "t", 0, 12..end, 1024).unwrap();
            let mut probes: Vec<Vec<u8>> = keys.clone();
            for k in &keys {
                let mut longer = k.clone();
                longer.push(0);
                probes.push(longer);
                probes.push(k[..k.len() / 2].to_vec());
            }
            probes.extend([vec![], b"a".to_vec(), b"z".to_vec(), b"state-7/kh".to_vec()]);
            for p in &probes {
                let expected = keys.partition_point(|k| k.as_slice() < p.as_slice());
                assert_eq!(
                    idx.first_not_below(p),
                    expected,
                    "keys {keys:?}, probe {p:?}"
                );
            }
        }
    }

    #[test]
    fn handles_must_tile_the_data_region_and_keys_ascend() {
        let ok = index(&[(b"b", 20), (b"d", 30)]);
        assert!(Index::decode(payload(ok.clone()), "t", 0, 12..62, 1024).is_ok());
        for (data, needle) in [
            (12..61, "past the data region"),
            (12..63, "data blocks end at 62"),
        ] {
            let err = Index::decode(payload(ok.clone()), "t", 0, data, 1024).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = Index::decode(payload(ok.clone()), "t", 0, 13..63, 1024).unwrap_err();
        assert!(err.to_string().contains("data block 0 at 12"), "{err}");
        let err = Index::decode(payload(ok.clone()), "t", 0, 12..62, 10).unwrap_err();
        assert!(matches!(err, FormatError::LimitExceeded { .. }), "{err}");
        let bad = index(&[(b"d", 20), (b"b", 30)]);
        let err = Index::decode(payload(bad), "t", 0, 12..62, 1024).unwrap_err();
        assert!(err.to_string().contains("not after"), "{err}");
        let small = index(&[(b"b", 13)]);
        assert!(Index::decode(payload(small), "t", 0, 12..25, 1024).is_err());
        let mut huge = Vec::new();
        varint::encode_u64(u64::from(u32::MAX), &mut huge);
        let err = Index::decode(payload(huge), "t", 0, 12..12, 1024).unwrap_err();
        assert!(err.to_string().contains("index entry count"), "{err}");
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(Index::decode(payload(trailing), "t", 0, 12..62, 1024).is_err());
    }
}
