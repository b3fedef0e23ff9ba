//! The name and version of a codec, as the file formats record them.

use crate::codec::varint;
use crate::cursor::Cursor;
use crate::FormatError;

/// The longest name (of a state or a codec) a file may hold, in bytes: 65 535.
pub const MAX_NAME_LEN: usize = u16::MAX as usize;

/// The name and version of a codec (the engine's `CodecInfo`).
///
/// ## Format
///
/// | size | field |
/// |---|---|
/// | varint | name length `n` (at most [`MAX_NAME_LEN`]) |
/// | `n` | name, UTF-8 |
/// | 4 | version, `u32` LE |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodecRecord {
    /// The codec's stable name (for example `u64`, `vec<string>`).
    pub name: String,
    /// The codec's version.
    pub version: u32,
}

impl CodecRecord {
    /// A record of codec `name` at `version`.
    pub fn new(name: impl Into<String>, version: u32) -> Self {
        CodecRecord {
            name: name.into(),
            version,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_str(&self.name, out);
        out.extend_from_slice(&self.version.to_le_bytes());
    }

    pub(crate) fn decode(c: &mut Cursor<'_>) -> Result<Self, FormatError> {
        let name = c.string(MAX_NAME_LEN, "codec name length")?.to_owned();
        let version = c.u32()?;
        Ok(CodecRecord { name, version })
    }
}

impl std::fmt::Display for CodecRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Appends a varint length and the UTF-8 bytes of `s`.
pub(crate) fn put_str(s: &str, out: &mut Vec<u8>) {
    put_bytes(s.as_bytes(), out);
}

/// Appends a varint length and `bytes`.
pub(crate) fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    varint::encode_u64(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}
