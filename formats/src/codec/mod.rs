//! Primitive encodings shared by every format: varints and checksums.

pub mod checksum;
pub mod varint;
