//! Workload generators shared by the flowstate benchmarks.
//!
//! The workloads follow Apache Flink's state benchmarks (`org.apache.flink.state.benchmark`):
//! 500,000 preloaded `u64` keys, 500,000 fresh keys, `u64` values, maps of 10 `u64 -> f64`
//! entries per key, lists filled by appends, `add_all` of 100 elements. Every operation first
//! sets the current key, as an operator does per record.

/// Number of keys preloaded before a workload runs.
pub const PRELOADED_KEYS: usize = 500_000;
/// Number of keys that are not preloaded (for the `add` workloads).
pub const FRESH_KEYS: usize = 500_000;
/// Entries per map in the map workloads.
pub const MAP_ENTRIES: u64 = 10;
/// Elements per `add_all` call in the list workloads.
pub const ADD_ALL_ELEMENTS: usize = 100;

/// A deterministic pseudo-random generator (SplitMix64): the same seed gives the same workload.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The preloaded keys `0..PRELOADED_KEYS` in a shuffled order, so that consecutive operations
/// touch unrelated keys as a stream of records does.
pub fn shuffled_keys(count: usize, seed: u64) -> Vec<u64> {
    let mut keys: Vec<u64> = (0..count as u64).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..keys.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        keys.swap(i, j);
    }
    keys
}

/// Fresh keys, disjoint from the preloaded ones, in shuffled order.
pub fn fresh_keys(count: usize, seed: u64) -> Vec<u64> {
    shuffled_keys(count, seed)
        .into_iter()
        .map(|k| k + PRELOADED_KEYS as u64)
        .collect()
}

/// A cursor that cycles through a slice of keys.
#[derive(Debug)]
pub struct Cycle<'a> {
    keys: &'a [u64],
    next: usize,
}

impl<'a> Cycle<'a> {
    /// A cursor at the start of `keys` (which must not be empty).
    pub fn new(keys: &'a [u64]) -> Self {
        Cycle { keys, next: 0 }
    }

    /// The next key, wrapping around at the end.
    #[inline]
    pub fn next_key(&mut self) -> u64 {
        let k = self.keys[self.next];
        self.next += 1;
        if self.next == self.keys.len() {
            self.next = 0;
        }
        k
    }
}

pub mod peers;

/// What the hashbrown baseline does per record besides the lookup: encode the key and compute
/// its key group, exactly as `set_current_key` does.
#[inline]
pub fn baseline_key_work(key: u64, buf: &mut Vec<u8>, max_parallelism: u32) -> u16 {
    use flowstate::Codec;
    buf.clear();
    key.encode(buf);
    flowstate::key_group_for(buf, max_parallelism)
}

/// One step of the xorshift64 generator the table benches use for lookup order: cheap enough
/// not to show in a lookup's time. `x` must not be 0.
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The table benches' key of entry `i`: a state id byte, a key group in 0..128 (big-endian, as
/// the tree lays keys out) and `user-{i:08}`; ascending in `i` within a key group.
pub fn table_key(i: u64) -> Vec<u8> {
    let kg = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57) as u16; // 0..128
    let mut k = vec![1u8];
    k.extend_from_slice(&kg.to_be_bytes());
    k.extend_from_slice(format!("user-{i:08}").as_bytes());
    k
}

/// The `n`-th command-line argument of an example as a number (`_` separators allowed), or
/// `default` when it is absent or not a number.
pub fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|s| s.replace('_', ""))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Sets value state `state` of keys `0..keys` to the key itself, one current key at a time.
pub fn load_values<B: flowstate::KeyedStateBackend<u64>>(
    b: &mut B,
    state: flowstate::ValueState<u64>,
    keys: u64,
) -> flowstate::Result<()> {
    for k in 0..keys {
        b.set_current_key(&k);
        b.value(&state).update(k)?;
    }
    Ok(())
}

/// Updates value state `state` of `count` random keys of `0..keys` with random values.
pub fn change_values<B: flowstate::KeyedStateBackend<u64>>(
    b: &mut B,
    state: flowstate::ValueState<u64>,
    keys: u64,
    count: u64,
    rng: &mut SplitMix64,
) -> flowstate::Result<()> {
    for _ in 0..count {
        let k = rng.below(keys);
        b.set_current_key(&k);
        b.value(&state).update(rng.next_u64())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_permutations_and_deterministic() {
        let a = shuffled_keys(1000, 7);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, shuffled_keys(1000, 7));
        assert_ne!(a, shuffled_keys(1000, 8));
        assert!(fresh_keys(10, 1)
            .iter()
            .all(|&k| k >= PRELOADED_KEYS as u64));
    }

    #[test]
    fn cycle_wraps() {
        let keys = [1, 2, 3];
        let mut c = Cycle::new(&keys);
        let got: Vec<u64> = (0..7).map(|_| c.next_key()).collect();
        assert_eq!(got, vec![1, 2, 3, 1, 2, 3, 1]);
    }
}
