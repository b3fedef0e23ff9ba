//! Primitive encodings shared by every format: varints, checksums and block compression.

pub mod checksum;
pub mod compress;
pub mod varint;
