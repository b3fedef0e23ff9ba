//! The LSM manifest: the live set of tables of one tree, written whole and atomically.
//!
//! Layout (spec/formats.md, section "LSM manifest"), all integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `FLOWMANI` |
//! | 4 | format version ([`VERSION`]) |
//! | 4 | body length `n` |
//! | n | body |
//! | 4 | CRC-32 (crc32fast) of every byte before it |
//!
//! Body: `next_table_id: u64`, `table_count: u32`, then per table `level: u8`, `id: u64`,
//! `size: u64`, `name_len: u16`, name (UTF-8), `smallest_len: u32`, smallest key,
//! `largest_len: u32`, largest key. Tables are listed by level, then as the tree orders them
//! (L0 newest first, deeper levels by key).
//!
//! ```
//! use flowstate_formats::manifest::{Manifest, ManifestTable};
//! let m = Manifest {
//!     next_table_id: 8,
//!     tables: vec![ManifestTable {
//!         level: 0,
//!         id: 7,
//!         name: "000007.sst".into(),
//!         size: 1234,
//!         smallest: b"a".to_vec(),
//!         largest: b"z".to_vec(),
//!     }],
//! };
//! let bytes = m.encode();
//! assert_eq!(Manifest::decode(&bytes, "MANIFEST")?, m);
//! # Ok::<(), flowstate_formats::FormatError>(())
//! ```

use crate::FormatError;

/// The manifest's magic number.
pub const MAGIC: [u8; 8] = *b"FLOWMANI";

/// The manifest format version this code reads and writes.
pub const VERSION: u32 = 1;

/// The most tables a manifest may list.
pub const MAX_TABLES: u32 = 1 << 20;

/// The deepest level a manifest may name (levels are `0 ..= MAX_LEVEL`).
pub const MAX_LEVEL: u8 = 15;

/// The longest key a manifest may record as a table's smallest or largest key.
pub const MAX_KEY_LEN: u32 = 1 << 20;

const HEADER_LEN: usize = 16;

/// One table of the tree as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestTable {
    /// The level the table belongs to (0 ..= [`MAX_LEVEL`]).
    pub level: u8,
    /// The table's id (its file number; also the id in its frames' CRCs).
    pub id: u64,
    /// The table's file name in the tree's directory.
    pub name: String,
    /// The file's length in bytes.
    pub size: u64,
    /// The smallest key of the table: of its point entries and its range tombstones.
    pub smallest: Vec<u8>,
    /// The largest key of the table: of its point entries and its range tombstones (an
    /// upper bound when a range's exclusive end has no exact predecessor).
    pub largest: Vec<u8>,
}

/// The live set of tables of a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The id the next table will get: larger than every id listed.
    pub next_table_id: u64,
    /// The tables, by level.
    pub tables: Vec<ManifestTable>,
}

impl Manifest {
    /// The manifest's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.next_table_id.to_le_bytes());
        body.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for t in &self.tables {
            body.push(t.level);
            body.extend_from_slice(&t.id.to_le_bytes());
            body.extend_from_slice(&t.size.to_le_bytes());
            body.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
            body.extend_from_slice(t.name.as_bytes());
            body.extend_from_slice(&(t.smallest.len() as u32).to_le_bytes());
            body.extend_from_slice(&t.smallest);
            body.extend_from_slice(&(t.largest.len() as u32).to_le_bytes());
            body.extend_from_slice(&t.largest);
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Checks and decodes a manifest read from `file` (the name is used in errors).
    ///
    /// Checks, in order: the length holds a header and a CRC; the magic; the version; the
    /// body length matches the file's length; the CRC; then every field of the body, which
    /// must end exactly at the CRC. Names must be non-empty UTF-8 without `/`, levels at most
    /// [`MAX_LEVEL`], ids below `next_table_id` and distinct, smallest ≤ largest.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Manifest, FormatError> {
        let min = HEADER_LEN + 4;
        if bytes.len() < min {
            return Err(FormatError::TruncatedFile {
                file: file.to_owned(),
                offset: 0,
                needed: min as u64,
                available: bytes.len() as u64,
            });
        }
        if bytes[..8] != MAGIC {
            return Err(FormatError::BadMagic {
                file: file.to_owned(),
                offset: 0,
            });
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion {
                file: file.to_owned(),
                found: version,
                supported: VERSION,
            });
        }
        let body_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as u64;
        let actual = (bytes.len() - min) as u64;
        if body_len != actual {
            return Err(FormatError::Corrupt {
                file: file.to_owned(),
                offset: 12,
                reason: format!("body length {body_len} but the file holds {actual} body bytes"),
            });
        }
        let crc_at = bytes.len() - 4;
        let stored = u32::from_le_bytes([
            bytes[crc_at],
            bytes[crc_at + 1],
            bytes[crc_at + 2],
            bytes[crc_at + 3],
        ]);
        let computed = crc32fast::hash(&bytes[..crc_at]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch {
                file: file.to_owned(),
                offset: 0,
                expected: stored,
                found: computed,
            });
        }
        let mut r = Reader {
            bytes: &bytes[..crc_at],
            pos: HEADER_LEN,
            file,
        };
        let next_table_id = r.u64()?;
        let count_at = r.pos;
        let count = r.u32()?;
        if count > MAX_TABLES {
            return Err(FormatError::LimitExceeded {
                file: file.to_owned(),
                offset: count_at as u64,
                what: "manifest table count",
                value: count.into(),
                limit: MAX_TABLES.into(),
            });
        }
        let mut tables = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..count {
            let at = r.pos;
            let level = r.u8()?;
            let id = r.u64()?;
            let size = r.u64()?;
            let name_len = r.u16()?;
            let name_at = r.pos;
            let name = r.take(name_len.into())?;
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..")
                .ok_or_else(|| r.corrupt(name_at, "table name is empty, not UTF-8 or a path"))?
                .to_owned();
            let smallest = r.key()?;
            let largest = r.key()?;
            if level > MAX_LEVEL {
                return Err(r.corrupt(at, &format!("level {level} is above {MAX_LEVEL}")));
            }
            if id >= next_table_id || !ids.insert(id) {
                return Err(r.corrupt(
                    at,
                    &format!("table id {id} is repeated or not below {next_table_id}"),
                ));
            }
            if smallest > largest {
                return Err(r.corrupt(at, "smallest key above largest key"));
            }
            tables.push(ManifestTable {
                level,
                id,
                name,
                size,
                smallest,
                largest,
            });
        }
        if r.pos != r.bytes.len() {
            return Err(r.corrupt(r.pos, "bytes after the last table"));
        }
        Ok(Manifest {
            next_table_id,
            tables,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, at: usize, reason: &str) -> FormatError {
        FormatError::Corrupt {
            file: self.file.to_owned(),
            offset: at as u64,
            reason: reason.to_owned(),
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        let available = (self.bytes.len() - self.pos) as u64;
        if n > available {
            return Err(FormatError::TruncatedFile {
                file: self.file.to_owned(),
                offset: self.pos as u64,
                needed: n,
                available,
            });
        }
        let start = self.pos;
        // n <= available fits in usize.
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn key(&mut self) -> Result<Vec<u8>, FormatError> {
        let at = self.pos;
        let len = self.u32()?;
        if len > MAX_KEY_LEN {
            return Err(FormatError::LimitExceeded {
                file: self.file.to_owned(),
                offset: at as u64,
                what: "manifest key length",
                value: len.into(),
                limit: MAX_KEY_LEN.into(),
            });
        }
        Ok(self.take(len.into())?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            next_table_id: 10,
            tables: vec![
                ManifestTable {
                    level: 0,
                    id: 9,
                    name: "000009.sst".into(),
                    size: 100,
                    smallest: b"b".to_vec(),
                    largest: b"c".to_vec(),
                },
                ManifestTable {
                    level: 1,
                    id: 3,
                    name: "000003.sst".into(),
                    size: 4096,
                    smallest: Vec::new(),
                    largest: b"zz".to_vec(),
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode(), "M").unwrap(), m);
        let empty = Manifest::default();
        assert_eq!(Manifest::decode(&empty.encode(), "M").unwrap(), empty);
    }

    #[test]
    fn the_empty_manifest_is_the_documented_bytes() {
        let m = Manifest {
            next_table_id: 1,
            tables: Vec::new(),
        };
        let mut want = b"FLOWMANI".to_vec();
        want.extend_from_slice(&[1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0x93, 0xab, 0x17, 0x19]);
        assert_eq!(m.encode(), want);
    }

    #[test]
    fn every_flip_and_truncation_is_an_error() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(Manifest::decode(&b, "M").is_err(), "flip {i}.{bit}");
            }
            assert!(Manifest::decode(&bytes[..i], "M").is_err(), "cut {i}");
        }
    }

    #[test]
    fn rule_breaks_with_a_valid_crc_are_corrupt() {
        let mut m = sample();
        m.next_table_id = 9;
        assert!(Manifest::decode(&m.encode(), "M").is_err());
        let mut m = sample();
        m.tables[1].id = 9;
        assert!(Manifest::decode(&m.encode(), "M").is_err());
        let mut m = sample();
        m.tables[0].name = "a/b".into();
        assert!(Manifest::decode(&m.encode(), "M").is_err());
        let mut m = sample();
        m.tables[0].level = MAX_LEVEL + 1;
        assert!(Manifest::decode(&m.encode(), "M").is_err());
        let mut m = sample();
        m.tables[0].smallest = b"d".to_vec();
        assert!(Manifest::decode(&m.encode(), "M").is_err());
    }
}
