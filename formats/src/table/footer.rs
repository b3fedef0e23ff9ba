//! The fixed-size footer: where the index, filter, properties and range tombstone blocks are,
//! with their CRCs, the version and the magic number.
//!
//! ## Format
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | index frame offset, `u64` LE |
//! | 8 | 4 | index frame length, `u32` LE |
//! | 12 | 4 | index frame CRC (a copy of the frame's own), `u32` LE |
//! | 16 | 16 | filter: offset, length, CRC (all 0 when the table has no filter) |
//! | 32 | 16 | properties: offset, length, CRC |
//! | 48 | 16 | range tombstones: offset, length, CRC (all 0 when there are none) |
//! | 64 | 8 | table id, `u64` LE: the writer's name for the table, mixed into every block CRC |
//! | 72 | 4 | CRC-32 of footer bytes `0 .. 72` |
//! | 76 | 4 | format version, `u32` LE |
//! | 80 | 8 | magic `FLOWLSMT` |

use crate::codec::checksum;
use crate::FormatError;

use super::{MAGIC, MIN_VERSION, VERSION};

/// The length of the footer.
pub(crate) const FOOTER_LEN: usize = 88;

/// Where a meta block's frame is, and its CRC. All zero: the block is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MetaHandle {
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

impl MetaHandle {
    pub(crate) fn is_absent(&self) -> bool {
        *self == MetaHandle::default()
    }
}

/// The fields of the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Footer {
    pub(crate) index: MetaHandle,
    pub(crate) filter: MetaHandle,
    pub(crate) properties: MetaHandle,
    pub(crate) range_tombstones: MetaHandle,
    pub(crate) table_id: u64,
}

impl Footer {
    fn handles(&self) -> [MetaHandle; 4] {
        [
            self.index,
            self.filter,
            self.properties,
            self.range_tombstones,
        ]
    }

    pub(crate) fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        for (i, h) in self.handles().iter().enumerate() {
            let at = 16 * i;
            out[at..at + 8].copy_from_slice(&h.offset.to_le_bytes());
            out[at + 8..at + 12].copy_from_slice(&h.len.to_le_bytes());
            out[at + 12..at + 16].copy_from_slice(&h.crc.to_le_bytes());
        }
        out[64..72].copy_from_slice(&self.table_id.to_le_bytes());
        let crc = checksum::crc32(&out[0..72]);
        out[72..76].copy_from_slice(&crc.to_le_bytes());
        out[76..80].copy_from_slice(&VERSION.to_le_bytes());
        out[80..88].copy_from_slice(&MAGIC);
        out
    }

    /// Decodes the footer found at `offset` of `file`, of a table whose header says
    /// `version`: magic first, then version (the header's), then CRC.
    pub(crate) fn decode(
        bytes: &[u8; FOOTER_LEN],
        file: &str,
        offset: u64,
        version: u32,
    ) -> Result<Self, FormatError> {
        if bytes[80..88] != MAGIC {
            return Err(FormatError::BadMagic {
                file: file.to_owned(),
                offset: offset + 80,
            });
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let found = u32_at(76);
        if !(MIN_VERSION..=VERSION).contains(&found) {
            return Err(FormatError::UnsupportedVersion {
                file: file.to_owned(),
                found,
                supported: VERSION,
            });
        }
        if found != version {
            return Err(FormatError::Corrupt {
                file: file.to_owned(),
                offset: offset + 76,
                reason: format!("footer of version {found} in a table of version {version}"),
            });
        }
        checksum::verify(&bytes[0..72], u32_at(72), file, offset)?;
        let u64_at = |at: usize| {
            let mut o = [0u8; 8];
            o.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(o)
        };
        let handle = |i: usize| {
            let at = 16 * i;
            MetaHandle {
                offset: u64_at(at),
                len: u32_at(at + 8),
                crc: u32_at(at + 12),
            }
        };
        Ok(Footer {
            index: handle(0),
            filter: handle(1),
            properties: handle(2),
            range_tombstones: handle(3),
            table_id: u64_at(64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_magic_version_and_crc() {
        let f = Footer {
            index: MetaHandle {
                offset: 100,
                len: 30,
                crc: 7,
            },
            filter: MetaHandle::default(),
            properties: MetaHandle {
                offset: 70,
                len: 30,
                crc: 9,
            },
            range_tombstones: MetaHandle::default(),
            table_id: 42,
        };
        let bytes = f.encode();
        assert_eq!(Footer::decode(&bytes, "t", 0, VERSION).unwrap(), f);
        assert!(f.filter.is_absent() && !f.index.is_absent());
        let mut b = bytes;
        b[87] ^= 1;
        assert!(matches!(
            Footer::decode(&b, "t", 10, VERSION),
            Err(FormatError::BadMagic { offset: 90, .. })
        ));
        let mut b = bytes;
        b[76] = 3;
        assert!(matches!(
            Footer::decode(&b, "t", 0, VERSION),
            Err(FormatError::UnsupportedVersion { found: 3, .. })
        ));
        // A footer of another supported version than the header's is damage.
        let mut b = bytes;
        b[76] = 1;
        assert!(matches!(
            Footer::decode(&b, "t", 0, VERSION),
            Err(FormatError::Corrupt { offset: 76, .. })
        ));
        let mut b = bytes;
        b[3] ^= 1;
        assert!(matches!(
            Footer::decode(&b, "t", 0, VERSION),
            Err(FormatError::ChecksumMismatch { .. })
        ));
    }
}
