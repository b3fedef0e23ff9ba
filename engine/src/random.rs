//! Random bits for names that must not collide between backends and runs (shared file names,
//! table id bases), without a dependency: the standard library's randomly keyed hasher.

use std::hash::{BuildHasher, Hasher};

/// 64 random bits from the standard library's per-process random hasher keys.
pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
