//! A small seeded generator (a 64-bit LCG) for the tests that draw random operations without
//! proptest: the same seed gives the same run.
#![allow(dead_code)] // each test binary uses some of the shared pieces

/// A 64-bit linear congruential generator; `below(n)` takes its high bits.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}
