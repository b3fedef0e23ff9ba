//! Key groups: the unit in which keyed state is partitioned, snapshotted and rescaled.
//!
//! Every key belongs to exactly one key group, `murmur3_32(encoded key, seed 0) % max_parallelism`.
//! A parallel task owns a contiguous [`KeyGroupRange`]; the ranges of the tasks of an operator are
//! given by the same formulas as Apache Flink's `KeyGroupRangeAssignment`. The hash and the formulas
//! never change: spec/key-groups.md fixes them and lists test vectors.

use std::fmt;

use crate::error::{Error, Result};

/// The largest max parallelism (number of key groups) supported: 2^15, as in Flink.
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The max parallelism used when the embedder does not choose one.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// MurmurHash3, x86 32-bit variant, over `bytes` with `seed`.
///
/// This is the key-group hash of flowstate: stable across versions, platforms and runs.
#[inline]
pub fn murmur3_32(bytes: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = bytes.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, &b) in tail.iter().enumerate() {
            k |= u32::from(b) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= bytes.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The key group of an encoded key: `murmur3_32(key_bytes, 0) % max_parallelism`.
///
/// `max_parallelism` must be in `1..=32768`; [`check_max_parallelism`] validates it. With a
/// value of 0 this returns key group 0 rather than dividing by zero.
#[inline]
pub fn key_group_for(key_bytes: &[u8], max_parallelism: u32) -> u16 {
    if max_parallelism == 0 {
        return 0;
    }
    (murmur3_32(key_bytes, 0) % max_parallelism) as u16
}

/// The key group of `key`: [`key_group_for`] of its encoding.
///
/// ```
/// use flowstate::key_group::{key_group_for, key_group_of};
/// use flowstate::codec::to_bytes;
/// assert_eq!(key_group_of(&42u64, 128), key_group_for(&to_bytes(&42u64), 128));
/// ```
pub fn key_group_of<K: crate::codec::Codec>(key: &K, max_parallelism: u32) -> u16 {
    key_group_for(&crate::codec::to_bytes(key), max_parallelism)
}

/// Checks that `max_parallelism` is in `1..=32768`.
pub fn check_max_parallelism(max_parallelism: u32) -> Result<()> {
    if max_parallelism == 0 || max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(Error::InvalidConfig(format!(
            "max parallelism {max_parallelism} is not in 1..={UPPER_BOUND_MAX_PARALLELISM}"
        )));
    }
    Ok(())
}

/// Checks `0 < parallelism <= max_parallelism <= 32768`.
pub fn check_parallelism(max_parallelism: u32, parallelism: u32) -> Result<()> {
    check_max_parallelism(max_parallelism)?;
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(Error::InvalidConfig(format!(
            "parallelism {parallelism} is not in 1..={max_parallelism} (the max parallelism)"
        )));
    }
    Ok(())
}

/// The operator index that owns `key_group`: `key_group * parallelism / max_parallelism`.
pub fn operator_index_for_key_group(max_parallelism: u32, parallelism: u32, key_group: u16) -> u32 {
    if max_parallelism == 0 {
        return 0;
    }
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// The index of the task, of `parallelism`, that owns `key`: where an engine routes a record
/// ([`operator_index_for_key_group`] of [`key_group_of`]). Task `i` owns
/// [`KeyGroupRange::for_operator`]`(max_parallelism, parallelism, i)`.
///
/// ```
/// use flowstate::key_group::{operator_index_of, KeyGroupRange};
/// use flowstate::key_group_of;
/// let task = operator_index_of(&"alice".to_string(), 128, 3);
/// let range = KeyGroupRange::for_operator(128, 3, task)?;
/// assert!(range.contains(key_group_of(&"alice".to_string(), 128)));
/// # Ok::<(), flowstate::Error>(())
/// ```
pub fn operator_index_of<K: crate::codec::Codec>(
    key: &K,
    max_parallelism: u32,
    parallelism: u32,
) -> u32 {
    operator_index_for_key_group(
        max_parallelism,
        parallelism,
        key_group_of(key, max_parallelism),
    )
}

/// The max parallelism Flink derives from a parallelism when none is configured:
/// `min(max(round_up_to_power_of_two(p + p / 2), 128), 32768)`.
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let p = u64::from(parallelism);
    let wanted = (p + p / 2).max(1).next_power_of_two();
    wanted.clamp(128, u64::from(UPPER_BOUND_MAX_PARALLELISM)) as u32
}

/// A contiguous, inclusive range of key groups, `start..=end`; it may be empty.
///
/// The invariant `start <= end` holds for every non-empty range; the empty range is represented
/// once, by [`KeyGroupRange::EMPTY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    start: u16,
    // One past the last key group, so that the empty range is representable.
    end_exclusive: u32,
}

impl KeyGroupRange {
    /// The range with no key groups.
    pub const EMPTY: KeyGroupRange = KeyGroupRange {
        start: 0,
        end_exclusive: 0,
    };

    /// The range `start..=end`. Fails if `start > end` or `end >= 32768`.
    pub fn new(start: u16, end: u16) -> Result<Self> {
        if start > end || u32::from(end) >= UPPER_BOUND_MAX_PARALLELISM {
            return Err(Error::InvalidArgument(format!(
                "key-group range {start}..={end} is not a valid range within 0..{UPPER_BOUND_MAX_PARALLELISM}"
            )));
        }
        Ok(KeyGroupRange {
            start,
            end_exclusive: u32::from(end) + 1,
        })
    }

    /// The range of all key groups of `max_parallelism`: `0..=max_parallelism - 1`.
    pub fn all(max_parallelism: u32) -> Result<Self> {
        check_max_parallelism(max_parallelism)?;
        Self::new(0, (max_parallelism - 1) as u16)
    }

    /// The key groups owned by operator `index` of `parallelism` tasks, by Flink's formula:
    /// `[(i * maxP + p - 1) / p, ((i + 1) * maxP - 1) / p]`.
    pub fn for_operator(max_parallelism: u32, parallelism: u32, index: u32) -> Result<Self> {
        check_parallelism(max_parallelism, parallelism)?;
        if index >= parallelism {
            return Err(Error::InvalidArgument(format!(
                "operator index {index} is not below the parallelism {parallelism}"
            )));
        }
        let (m, p, i) = (
            u64::from(max_parallelism),
            u64::from(parallelism),
            u64::from(index),
        );
        let start = (i * m).div_ceil(p); // Flink: (i * maxP + p - 1) / p
        let end = ((i + 1) * m - 1) / p;
        Self::new(start as u16, end as u16)
    }

    /// The first key group. Meaningless for an empty range.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// The last key group (inclusive). Meaningless for an empty range.
    pub fn end(&self) -> u16 {
        self.end_exclusive.saturating_sub(1) as u16
    }

    /// The number of key groups in the range.
    pub fn len(&self) -> usize {
        (self.end_exclusive - u32::from(self.start)) as usize
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key_group` is in the range.
    #[inline]
    pub fn contains(&self, key_group: u16) -> bool {
        key_group >= self.start && u32::from(key_group) < self.end_exclusive
    }

    /// The position of `key_group` within the range, if it is in it.
    #[inline]
    pub fn index_of(&self, key_group: u16) -> Option<usize> {
        if self.contains(key_group) {
            Some(usize::from(key_group - self.start))
        } else {
            None
        }
    }

    /// The key groups in both ranges.
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end_exclusive = self.end_exclusive.min(other.end_exclusive);
        if u32::from(start) >= end_exclusive {
            KeyGroupRange::EMPTY
        } else {
            KeyGroupRange {
                start,
                end_exclusive,
            }
        }
    }

    /// The key groups of the range, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (u32::from(self.start)..self.end_exclusive).map(|kg| kg as u16)
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "[empty]")
        } else {
            write!(f, "[{}..={}]", self.start, self.end())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn encoded<T: Codec>(v: T) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode(&mut out);
        out
    }

    // Reference values of MurmurHash3_x86_32, as published with the algorithm and produced by
    // independent implementations (Python's mmh3); spec/key-groups.md lists the same vectors.
    #[test]
    fn murmur3_matches_reference_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(&[0, 0, 0, 0], 0), 0x2362_f9de);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn key_group_vectors_of_the_spec() {
        let u64_groups: Vec<u16> = (0u64..10)
            .map(|k| key_group_for(&encoded(k), 128))
            .collect();
        assert_eq!(u64_groups, crate::key_group::tests::SPEC_U64_KEY_GROUPS_128);
        let strings: Vec<u16> = ["alice", "bob", "carol", ""]
            .iter()
            .map(|s| key_group_for(&encoded(s.to_string()), 128))
            .collect();
        assert_eq!(strings, crate::key_group::tests::SPEC_STRING_KEY_GROUPS_128);
    }

    /// Key groups of the u64 keys 0..10 with max parallelism 128 (spec/key-groups.md).
    pub(super) const SPEC_U64_KEY_GROUPS_128: [u16; 10] =
        [124, 68, 116, 51, 38, 119, 81, 67, 63, 119];
    /// Key groups of "alice", "bob", "carol", "" with max parallelism 128 (spec/key-groups.md).
    pub(super) const SPEC_STRING_KEY_GROUPS_128: [u16; 4] = [105, 76, 60, 55];

    #[test]
    fn operator_ranges_follow_flinks_formula() {
        let r: Vec<_> = (0..3)
            .map(|i| KeyGroupRange::for_operator(128, 3, i).unwrap())
            .map(|r| (r.start(), r.end()))
            .collect();
        assert_eq!(r, vec![(0, 42), (43, 85), (86, 127)]);
        for &(m, p) in &[
            (128u32, 1u32),
            (128, 3),
            (128, 7),
            (10, 3),
            (32768, 77),
            (7, 7),
        ] {
            let mut next = 0u32;
            for i in 0..p {
                let range = KeyGroupRange::for_operator(m, p, i).unwrap();
                assert_eq!(u32::from(range.start()), next, "ranges are contiguous");
                for kg in range.iter() {
                    assert_eq!(operator_index_for_key_group(m, p, kg), i);
                }
                next = u32::from(range.end()) + 1;
            }
            assert_eq!(next, m, "ranges cover every key group");
        }
    }

    #[test]
    fn default_max_parallelism_vectors() {
        let got: Vec<u32> = [1, 85, 86, 100, 1000, 30000]
            .iter()
            .map(|&p| default_max_parallelism(p))
            .collect();
        assert_eq!(got, vec![128, 128, 256, 256, 2048, 32768]);
    }

    #[test]
    fn invalid_parallelism_is_an_error() {
        assert!(KeyGroupRange::for_operator(0, 1, 0).is_err());
        assert!(KeyGroupRange::for_operator(128, 0, 0).is_err());
        assert!(KeyGroupRange::for_operator(128, 129, 0).is_err());
        assert!(KeyGroupRange::for_operator(128, 4, 4).is_err());
        assert!(KeyGroupRange::for_operator(40000, 4, 0).is_err());
        assert!(KeyGroupRange::new(5, 4).is_err());
        assert_eq!(key_group_for(b"x", 0), 0);
    }

    #[test]
    fn range_operations() {
        let a = KeyGroupRange::new(10, 20).unwrap();
        let b = KeyGroupRange::new(15, 30).unwrap();
        assert_eq!(a.intersection(&b), KeyGroupRange::new(15, 20).unwrap());
        assert!(a
            .intersection(&KeyGroupRange::new(21, 22).unwrap())
            .is_empty());
        assert_eq!(a.len(), 11);
        assert_eq!(a.index_of(10), Some(0));
        assert_eq!(a.index_of(21), None);
        assert_eq!(KeyGroupRange::EMPTY.iter().count(), 0);
        assert_eq!(a.to_string(), "[10..=20]");
    }
}
