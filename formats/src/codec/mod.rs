//! Primitive encodings shared by every format: varints, checksums, a stable hash and block
//! compression.

pub mod checksum;
pub mod compress;
pub mod hash;
pub mod varint;
