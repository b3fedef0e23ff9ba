//! The fixed-size footer: where the meta block and the index are, and their checksums.
//!
//! ## Format
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | meta block offset, `u64` LE (always 12) |
//! | 8 | 4 | meta block length, `u32` LE |
//! | 12 | 4 | CRC-32 of the meta block |
//! | 16 | 8 | index offset, `u64` LE |
//! | 24 | 4 | index length, `u32` LE |
//! | 28 | 4 | CRC-32 of the index |
//! | 32 | 8 | total entry count, `u64` LE |
//! | 40 | 4 | CRC-32 of footer bytes `0..40` |
//! | 44 | 4 | format version, `u32` LE |
//! | 48 | 8 | magic `FLOWSNAP` |

use crate::codec::checksum;
use crate::cursor::Cursor;
use crate::FormatError;

use super::{MAGIC, MIN_VERSION, VERSION};

/// The length of the footer.
pub(crate) const FOOTER_LEN: usize = 56;

/// The fields of the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub(crate) meta_offset: u64,
    pub(crate) meta_len: u32,
    pub(crate) meta_crc: u32,
    pub(crate) index_offset: u64,
    pub(crate) index_len: u32,
    pub(crate) index_crc: u32,
    pub(crate) entry_count: u64,
}

impl Footer {
    /// The footer of a file of format `version`.
    pub(crate) fn encode(&self, version: u32) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        out[0..8].copy_from_slice(&self.meta_offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.meta_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.meta_crc.to_le_bytes());
        out[16..24].copy_from_slice(&self.index_offset.to_le_bytes());
        out[24..28].copy_from_slice(&self.index_len.to_le_bytes());
        out[28..32].copy_from_slice(&self.index_crc.to_le_bytes());
        out[32..40].copy_from_slice(&self.entry_count.to_le_bytes());
        let crc = checksum::crc32(&out[0..40]);
        out[40..44].copy_from_slice(&crc.to_le_bytes());
        out[44..48].copy_from_slice(&version.to_le_bytes());
        out[48..56].copy_from_slice(&MAGIC);
        out
    }

    /// Decodes the footer found at `offset` of `file`: magic first, then version (one this code
    /// reads, and the header's `header_version`), then CRC.
    pub(crate) fn decode(
        bytes: &[u8; FOOTER_LEN],
        file: &str,
        offset: u64,
        header_version: u32,
    ) -> Result<Self, FormatError> {
        if bytes[48..56] != MAGIC {
            return Err(FormatError::BadMagic {
                file: file.to_owned(),
                offset: offset + 48,
            });
        }
        let mut c = Cursor::new(bytes, file, offset);
        let meta_offset = c.u64()?;
        let meta_len = c.u32()?;
        let meta_crc = c.u32()?;
        let index_offset = c.u64()?;
        let index_len = c.u32()?;
        let index_crc = c.u32()?;
        let entry_count = c.u64()?;
        let crc = c.u32()?;
        let version = c.u32()?;
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                file: file.to_owned(),
                found: version,
                supported: VERSION,
            });
        }
        if version != header_version {
            return Err(FormatError::Corrupt {
                file: file.to_owned(),
                offset: offset + 44,
                reason: format!(
                    "footer of format version {version}, header of version {header_version}"
                ),
            });
        }
        checksum::verify(&bytes[0..40], crc, file, offset)?;
        Ok(Footer {
            meta_offset,
            meta_len,
            meta_crc,
            index_offset,
            index_len,
            index_crc,
            entry_count,
        })
    }
}
