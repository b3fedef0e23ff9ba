//! Byte layouts of flowstate: varints, checksums and (as the engine grows) every file format.
//!
//! This crate knows nothing of the engine: it holds pure functions over bytes, so the engine,
//! the command-line tools and the fuzzers all read and write files through the same code.
//! spec/formats.md in the repository is the contract every layout here follows.
//!
//! ```
//! use flowstate_formats::codec::varint;
//! let mut out = Vec::new();
//! varint::encode_u64(300, &mut out);
//! assert_eq!(out, [0xac, 0x02]);
//! let mut input = &out[..];
//! assert_eq!(varint::decode_u64(&mut input).unwrap(), 300);
//! assert!(input.is_empty());
//! ```

pub mod checkpoint;
pub mod codec;
mod error;

pub use error::FormatError;
