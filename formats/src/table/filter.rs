//! The bloom filter block: one bit array over the hashes of every key and of every distinct
//! key prefix, so that a lookup, or a prefix scan, can skip a table that cannot hold what it
//! looks for.
//!
//! ## Format
//!
//! | size | field |
//! |---|---|
//! | 1 | probes `k`, 1 ..= 30 |
//! | `n` ≥ 1 | the bit array: `m = 8n` bits, bit `i` is bit `i % 8` of byte `i / 8` |
//!
//! A key is hashed as `h = xxh64(key, 0)`, a prefix as `h = xxh64(prefix, 1)`
//! ([`crate::codec::hash::xxh64`]). With `d = mix(h)` (the SplitMix64 finalizer), the probes
//! are the bits `((h + i·d mod 2^64) × m) >> 64` for `i` in `0 .. k` (double hashing, each
//! 64-bit value mapped to a bit by multiplication rather than division). A builder sizes the
//! array at `bits per key × hashed items` bits (at least 64, rounded up to whole bytes) and
//! `k = round(0.69 × bits per key)`, clamped to 1 ..= 30.

use std::fmt;

use crate::codec::hash::xxh64;
use crate::cursor::Cursor;
use crate::FormatError;

/// The seed of whole-key hashes.
const KEY_SEED: u64 = 0;

/// The seed of prefix hashes: a prefix and a key with the same bytes set different bits.
const PREFIX_SEED: u64 = 1;

/// The most probes a filter may record.
pub(crate) const MAX_PROBES: u8 = 30;

/// Extracts from a key the prefix a prefix scan asks for, so that the table filter can hold the
/// prefixes too (as RocksDB's prefix extractor does).
///
/// Contract: `prefix_len(key)`, when `Some(n)`, is at most `key.len()`; and the prefix is
/// determined by its own bytes: if `p` is the prefix of some key, then every key that starts
/// with `p` has prefix `p` (so `prefix_len(p) == Some(p.len())`). A fixed-length prefix, or a
/// self-delimiting one (length-prefixed fields), keeps it. The [`name`](PrefixExtractor::name)
/// is recorded in the table's properties: a reader uses the prefix bits only with an extractor
/// of the same name.
pub trait PrefixExtractor: Send + Sync {
    /// A stable name: two extractors of the same name extract the same prefixes.
    fn name(&self) -> &str;

    /// The length of `key`'s prefix, or `None` if the key has none (it is then only in the
    /// filter as a whole key).
    fn prefix_len(&self, key: &[u8]) -> Option<usize>;
}

impl fmt::Debug for dyn PrefixExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PrefixExtractor")
            .field(&self.name())
            .finish()
    }
}

/// The first `len` bytes of every key at least that long (RocksDB's fixed prefix transform),
/// named `fixed:<len>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedPrefix {
    len: usize,
    name: String,
}

impl FixedPrefix {
    /// The extractor of `len`-byte prefixes.
    pub fn new(len: usize) -> Self {
        FixedPrefix {
            len,
            name: format!("fixed:{len}"),
        }
    }

    /// The prefix length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the prefix is empty (every key of at least 0 bytes has the empty prefix).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl PrefixExtractor for FixedPrefix {
    fn name(&self) -> &str {
        &self.name
    }

    fn prefix_len(&self, key: &[u8]) -> Option<usize> {
        (key.len() >= self.len).then_some(self.len)
    }
}

/// The hash a filter sets for a whole key.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, KEY_SEED)
}

/// The hash a filter sets for a prefix.
pub(crate) fn prefix_hash(prefix: &[u8]) -> u64 {
    xxh64(prefix, PREFIX_SEED)
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline]
fn probes(h: u64, k: u8, m: u64) -> impl Iterator<Item = u64> {
    let d = mix(h);
    (0..u64::from(k)).map(move |i| {
        let g = h.wrapping_add(i.wrapping_mul(d));
        ((u128::from(g) * u128::from(m)) >> 64) as u64
    })
}

/// The number of probes for `bits_per_key`.
pub(crate) fn probes_for(bits_per_key: u32) -> u8 {
    ((u64::from(bits_per_key) * 69 + 50) / 100).clamp(1, u64::from(MAX_PROBES)) as u8
}

/// Builds the filter payload over `hashes` (of keys and prefixes) at `bits_per_key`, using at
/// most `max_len` bytes.
pub(crate) fn build(hashes: &[u64], bits_per_key: u32, max_len: usize) -> Vec<u8> {
    let k = probes_for(bits_per_key);
    let bits = (hashes.len() as u64)
        .saturating_mul(u64::from(bits_per_key))
        .max(64);
    let bytes = (bits.div_ceil(8) as usize).min(max_len.saturating_sub(1).max(1));
    let m = bytes as u64 * 8;
    let mut out = vec![0u8; 1 + bytes];
    out[0] = k;
    let array = &mut out[1..];
    for &h in hashes {
        for bit in probes(h, k, m) {
            array[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    out
}

/// A decoded bloom filter.
pub(crate) struct BloomFilter {
    probes: u8,
    bits: Vec<u8>,
}

impl fmt::Debug for BloomFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BloomFilter")
            .field("probes", &self.probes)
            .field("bits", &(self.bits.len() * 8))
            .finish()
    }
}

impl BloomFilter {
    /// Decodes a filter payload (under `c`).
    pub(crate) fn decode(mut c: Cursor<'_>) -> Result<BloomFilter, FormatError> {
        let k = c.u8()?;
        if k == 0 || k > MAX_PROBES {
            return Err(c.corrupt_at(
                0,
                format!("bloom filter with {k} probes (1 ..= {MAX_PROBES})"),
            ));
        }
        if c.is_empty() {
            return Err(c.corrupt_at(1, "bloom filter without bits"));
        }
        let bits = c.take(c.remaining())?.to_vec();
        Ok(BloomFilter { probes: k, bits })
    }

    fn check(&self, h: u64) -> bool {
        let m = self.bits.len() as u64 * 8;
        probes(h, self.probes, m).all(|bit| {
            self.bits
                .get((bit / 8) as usize)
                .is_some_and(|b| b & (1 << (bit % 8)) != 0)
        })
    }

    /// Whether `key` may be in the table (`false`: it is certainly not).
    pub(crate) fn may_contain_key(&self, key: &[u8]) -> bool {
        self.check(key_hash(key))
    }

    /// Whether a key with extracted prefix `prefix` may be in the table.
    pub(crate) fn may_contain_prefix(&self, prefix: &[u8]) -> bool {
        self.check(prefix_hash(prefix))
    }

    /// The bytes held in memory.
    pub(crate) fn memory(&self) -> usize {
        self.bits.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(hashes: &[u64], bits_per_key: u32) -> BloomFilter {
        let bytes = build(hashes, bits_per_key, 1 << 20);
        BloomFilter::decode(Cursor::new(&bytes, "t", 0)).unwrap()
    }

    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives_at_ten_bits() {
        let keys: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| format!("key-{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        let f = filter(&hashes, 10);
        assert_eq!(f.probes, 7);
        assert!(keys.iter().all(|k| f.may_contain_key(k)));
        let fp = (0..100_000u32)
            .filter(|i| f.may_contain_key(format!("other-{i}").as_bytes()))
            .count();
        // Theory: 0.82 % at 10 bits and 7 probes.
        assert!(fp < 1_300, "{fp} false positives in 100 000");
        assert!(
            fp > 300,
            "{fp} false positives in 100 000: suspiciously few"
        );
    }

    #[test]
    fn keys_and_prefixes_are_hashed_apart() {
        let f = filter(&[prefix_hash(b"ab")], 10);
        assert!(f.may_contain_prefix(b"ab"));
        assert!(!f.may_contain_key(b"ab"));
    }

    #[test]
    fn probes_follow_bits_per_key() {
        assert_eq!(probes_for(0), 1);
        assert_eq!(probes_for(1), 1);
        assert_eq!(probes_for(10), 7);
        assert_eq!(probes_for(64), 30);
    }

    #[test]
    fn the_size_is_capped() {
        let hashes: Vec<u64> = (0..1000).collect();
        assert_eq!(build(&hashes, 10, 101).len(), 101);
        assert_eq!(build(&[], 10, 1 << 20).len(), 9);
    }

    #[test]
    fn bad_payloads_are_errors() {
        for bytes in [&[][..], &[0, 1], &[31, 1], &[7]] {
            assert!(
                BloomFilter::decode(Cursor::new(bytes, "t", 0)).is_err(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn fixed_prefix_extracts_the_first_bytes() {
        let p = FixedPrefix::new(3);
        assert_eq!(p.name(), "fixed:3");
        assert_eq!(p.prefix_len(b"abcd"), Some(3));
        assert_eq!(p.prefix_len(b"ab"), None);
    }
}
