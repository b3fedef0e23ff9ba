//! Byte layouts of flowstate: varints, checksums, block compression and the file formats.
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
//!
//! A snapshot file, written and read back:
//!
//! ```
//! use flowstate_formats::snapshot::{
//!     EntryValue, SnapshotMeta, SnapshotReader, SnapshotWriter, StateKind, StateMetaRecord,
//! };
//! use flowstate_formats::{CodecRecord, Compression, FormatError};
//!
//! let meta = SnapshotMeta {
//!     max_parallelism: 128,
//!     key_group_start: 0,
//!     key_group_end: 63,
//!     key_codec: CodecRecord::new("string", 1),
//!     states: vec![StateMetaRecord {
//!         name: "count".into(),
//!         kind: StateKind::Value,
//!         namespace: CodecRecord::new("unit", 1),
//!         value: CodecRecord::new("u64", 1),
//!         user_key: None,
//!         ttl_millis: None,
//!     }],
//! };
//! let mut file = Vec::new();
//! let mut w = SnapshotWriter::new(&mut file, &meta, Compression::Lz4)?;
//! w.begin_key_group(7)?;
//! w.add_entry(0, b"\x05alice", b"", EntryValue::Value(&3u64.to_le_bytes()))?;
//! w.end_key_group()?;
//! let summary = w.finish()?;
//! assert_eq!(summary.entry_count, 1);
//!
//! let r = SnapshotReader::open(&file[..], "chk-1/state")?;
//! assert_eq!(r.meta(), &meta);
//! let mut keys = Vec::new();
//! r.read_key_group(7, |e| {
//!     keys.push(e.key.to_vec());
//!     Ok::<_, FormatError>(())
//! })?;
//! assert_eq!(keys, [b"\x05alice".to_vec()]);
//! # Ok::<(), FormatError>(())
//! ```

pub mod checkpoint;
pub mod codec;
mod cursor;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod limits;
pub mod manifest;
pub mod operator;
mod random_access;
mod record;
pub mod snapshot;
pub mod table;

pub use codec::compress::{Compression, CompressionKind};
pub use error::FormatError;
pub use limits::{ReadLimits, MAX_BLOCK_LEN, MAX_META_LEN};
pub use random_access::RandomAccess;
pub use record::{CodecRecord, MAX_NAME_LEN};
