//! The frame around every block of a table: type, compression, lengths, and a CRC bound to the
//! table and to the block's offset in the file.
//!
//! ## Format
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | block type ([`BlockType`]) |
//! | 1 | 1 | compression code ([`CompressionKind`]) |
//! | 2 | 4 | uncompressed payload length `U`, `u32` LE |
//! | 6 | 4 | stored payload length `P`, `u32` LE |
//! | 10 | `P` | payload, stored as the code says |
//! | 10 + `P` | 4 | CRC-32 of the table id (`u64` LE, from the footer), the frame's file offset (`u64` LE), then bytes `0 .. 10 + P` |
//!
//! Binding the CRC to the table and the offset makes a block copied or moved to another place
//! of the file, or written into another table (a misdirected write, two blocks of equal length
//! swapped), fail its check like random damage (RocksDB's checksum context, format version 6).

use std::ops::Range;

use crate::codec::compress::{self, CompressionKind};
use crate::random_access::{read_into, RandomAccess};
use crate::FormatError;

/// The bytes of a frame before its payload.
pub(crate) const HEADER_LEN: usize = 10;

/// The bytes of a frame after its payload (the CRC).
pub(crate) const TRAILER_LEN: usize = 4;

/// The bytes a frame adds to its payload.
pub(crate) const OVERHEAD: u64 = (HEADER_LEN + TRAILER_LEN) as u64;

/// What a block holds: its frame's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum BlockType {
    Data = 0,
    Index = 1,
    Filter = 2,
    Properties = 3,
    RangeTombstones = 4,
}

impl BlockType {
    fn name(self) -> &'static str {
        match self {
            BlockType::Data => "data",
            BlockType::Index => "index",
            BlockType::Filter => "filter",
            BlockType::Properties => "properties",
            BlockType::RangeTombstones => "range tombstone",
        }
    }
}

/// The CRC of a frame of table `table_id` at `offset` whose bytes before the CRC are `header`
/// then `stored`.
pub(crate) fn crc(table_id: u64, offset: u64, header: &[u8], stored: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&table_id.to_le_bytes());
    h.update(&offset.to_le_bytes());
    h.update(header);
    h.update(stored);
    h.finalize()
}

/// Appends to `out` the frame of a block of `block_type` written at file offset `offset` of
/// table `table_id`, with `stored` bytes of kind `kind` standing for `uncompressed_len` bytes.
/// Returns the CRC. Both lengths are at most [`crate::MAX_BLOCK_LEN`] (the caller checked).
pub(crate) fn encode(
    table_id: u64,
    offset: u64,
    block_type: BlockType,
    kind: CompressionKind,
    uncompressed_len: usize,
    stored: &[u8],
    out: &mut Vec<u8>,
) -> u32 {
    let mut header = [0u8; HEADER_LEN];
    header[0] = block_type as u8;
    header[1] = kind.code();
    header[2..6].copy_from_slice(&(uncompressed_len as u32).to_le_bytes());
    header[6..10].copy_from_slice(&(stored.len() as u32).to_le_bytes());
    let crc = crc(table_id, offset, &header, stored);
    out.extend_from_slice(&header);
    out.extend_from_slice(stored);
    out.extend_from_slice(&crc.to_le_bytes());
    crc
}

/// The payload of a frame read and checked: `buf[range]`, uncompressed.
#[derive(Debug)]
pub(crate) struct Payload {
    pub(crate) buf: Vec<u8>,
    pub(crate) range: Range<usize>,
    /// The frame's CRC (as stored, and verified).
    pub(crate) crc: u32,
    /// Whether the payload was decompressed: errors inside it then name the frame's offset
    /// and the position in the payload.
    pub(crate) compressed: bool,
}

impl Payload {
    /// The uncompressed payload.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }

    /// A cursor over the payload of the frame at `offset` of `file`, reporting offsets as the
    /// file's (or the frame's, with the position in the reason, if it was compressed).
    pub(crate) fn cursor<'a>(&'a self, file: &'a str, offset: u64) -> crate::cursor::Cursor<'a> {
        if self.compressed {
            crate::cursor::Cursor::decompressed(self.bytes(), file, offset)
        } else {
            crate::cursor::Cursor::new(self.bytes(), file, offset + HEADER_LEN as u64)
        }
    }
}

/// Reads the frame of `len` bytes at `offset` of `source` (table `table_id`), which the caller
/// has checked lies within the file, and which must hold a block of `block_type` whose lengths are within
/// `max_len`.
///
/// Checks, in order: the length holds a frame and its payload is within `max_len`
/// (`Corrupt`, `LimitExceeded`, before anything is allocated); the CRC
/// (`ChecksumMismatch` at `offset`); the type (`Corrupt`); the stored length against the
/// frame's (`Corrupt`); the compression code (`Corrupt`) and the uncompressed length within
/// `max_len` (`LimitExceeded`); then the rules of [`compress::decompress`].
pub(crate) fn read<R: RandomAccess + ?Sized>(
    source: &R,
    file: &str,
    table_id: u64,
    offset: u64,
    len: u64,
    block_type: BlockType,
    max_len: u32,
) -> Result<Payload, FormatError> {
    let corrupt = |at: u64, reason: String| FormatError::Corrupt {
        file: file.to_owned(),
        offset: at,
        reason,
    };
    if len < OVERHEAD {
        return Err(corrupt(
            offset,
            format!(
                "{} block of {len} bytes cannot hold a {OVERHEAD}-byte frame",
                block_type.name()
            ),
        ));
    }
    let stored_len = len - OVERHEAD;
    if stored_len > u64::from(max_len) {
        return Err(FormatError::LimitExceeded {
            file: file.to_owned(),
            offset,
            what: "block stored length",
            value: stored_len,
            limit: max_len.into(),
        });
    }
    // A mapped source lends the frame in place: checked and decompressed where it lies.
    let mapped = usize::try_from(len)
        .ok()
        .and_then(|n| source.bytes_at(offset, n));
    let mut copy = Vec::new();
    if mapped.is_none() {
        read_into(source, file, offset, len, &mut copy)?;
    }
    let buf: &[u8] = mapped.unwrap_or(&copy);
    let body_len = buf.len() - TRAILER_LEN;
    let (body, trailer) = buf.split_at(body_len);
    let stored_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let found = crc(table_id, offset, &body[..HEADER_LEN], &body[HEADER_LEN..]);
    if found != stored_crc {
        return Err(FormatError::ChecksumMismatch {
            file: file.to_owned(),
            offset,
            expected: stored_crc,
            found,
        });
    }
    if body[0] != block_type as u8 {
        return Err(corrupt(
            offset,
            format!(
                "block of type {} where a {} block (type {}) belongs",
                body[0],
                block_type.name(),
                block_type as u8
            ),
        ));
    }
    let code = body[1];
    let uncompressed = u32::from_le_bytes([body[2], body[3], body[4], body[5]]);
    let declared_stored = u32::from_le_bytes([body[6], body[7], body[8], body[9]]);
    if u64::from(declared_stored) != stored_len {
        return Err(corrupt(
            offset + 6,
            format!("frame of {len} bytes declares {declared_stored} stored payload bytes"),
        ));
    }
    let kind = CompressionKind::from_code(code)
        .ok_or_else(|| corrupt(offset + 1, format!("unknown compression code {code}")))?;
    if uncompressed > max_len {
        return Err(FormatError::LimitExceeded {
            file: file.to_owned(),
            offset: offset + 2,
            what: "block uncompressed length",
            value: uncompressed.into(),
            limit: max_len.into(),
        });
    }
    let stored = HEADER_LEN..body_len;
    if kind == CompressionKind::None {
        if uncompressed as usize != stored.len() {
            return Err(corrupt(
                offset,
                format!(
                    "uncompressed block stores {} bytes but declares {uncompressed}",
                    stored.len()
                ),
            ));
        }
        let buf = match mapped {
            Some(bytes) => bytes.to_vec(),
            None => copy,
        };
        return Ok(Payload {
            buf,
            range: stored,
            crc: stored_crc,
            compressed: false,
        });
    }
    let mut plain = Vec::new();
    compress::decompress(
        kind,
        &buf[stored],
        uncompressed as usize,
        &mut plain,
        file,
        offset,
    )?;
    Ok(Payload {
        range: 0..plain.len(),
        buf: plain,
        crc: stored_crc,
        compressed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_at(offset: u64, kind: CompressionKind, payload: &[u8], u: usize) -> Vec<u8> {
        let mut file = vec![0u8; offset as usize];
        encode(7, offset, BlockType::Index, kind, u, payload, &mut file);
        file
    }

    #[test]
    fn a_frame_reads_back_and_binds_its_offset() {
        let file = frame_at(12, CompressionKind::None, b"hello", 5);
        let p = read(&file[..], "t", 7, 12, 19, BlockType::Index, 1024).unwrap();
        assert_eq!(p.bytes(), b"hello");
        assert!(!p.compressed);
        // The same bytes one position later fail the CRC.
        let mut moved = vec![0u8];
        moved.extend_from_slice(&file);
        let err = read(&moved[..], "t", 7, 13, 19, BlockType::Index, 1024).unwrap_err();
        assert!(
            matches!(err, FormatError::ChecksumMismatch { offset: 13, .. }),
            "{err}"
        );
        // And in another table.
        let err = read(&file[..], "t", 8, 12, 19, BlockType::Index, 1024).unwrap_err();
        assert!(matches!(err, FormatError::ChecksumMismatch { .. }), "{err}");
    }

    #[test]
    fn the_type_lengths_and_limits_are_checked() {
        let file = frame_at(0, CompressionKind::None, b"hello", 5);
        let err = read(&file[..], "t", 7, 0, 19, BlockType::Data, 1024).unwrap_err();
        assert!(err.to_string().contains("where a data block"), "{err}");
        let err = read(&file[..], "t", 7, 0, 13, BlockType::Index, 1024).unwrap_err();
        assert!(err.to_string().contains("cannot hold"), "{err}");
        let err = read(&file[..], "t", 7, 0, 19, BlockType::Index, 4).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::LimitExceeded {
                    value: 5,
                    limit: 4,
                    ..
                }
            ),
            "{err}"
        );
        let file = frame_at(0, CompressionKind::None, b"hello", 6);
        let err = read(&file[..], "t", 7, 0, 19, BlockType::Index, 1024).unwrap_err();
        assert!(err.to_string().contains("declares 6"), "{err}");
        let file = frame_at(0, CompressionKind::None, b"hello", 5000);
        let err = read(&file[..], "t", 7, 0, 19, BlockType::Index, 1024).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::LimitExceeded {
                    offset: 2,
                    value: 5000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn compressed_payloads_are_bounded_and_decompressed() {
        let input = vec![7u8; 1000];
        let mut c = compress::Compressor::new(crate::Compression::Lz4).unwrap();
        let (kind, stored) = c.compress(&input).unwrap();
        let stored = stored.to_vec();
        let file = frame_at(0, kind, &stored, 1000);
        let p = read(
            &file[..],
            "t",
            7,
            0,
            file.len() as u64,
            BlockType::Index,
            1024,
        )
        .unwrap();
        assert_eq!(p.bytes(), &input[..]);
        assert!(p.compressed);
        let err = read(
            &file[..],
            "t",
            7,
            0,
            file.len() as u64,
            BlockType::Index,
            999,
        )
        .unwrap_err();
        assert!(matches!(err, FormatError::LimitExceeded { .. }), "{err}");
    }
}
