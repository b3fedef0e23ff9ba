//! Block compression: none, LZ4 (block format) and Zstandard (one frame), bounded on decoding.
//!
//! ## Format
//!
//! A compressed block is stored with a one-byte [`CompressionKind`] code next to its
//! uncompressed and stored lengths (the file format holds them, see spec/formats.md):
//!
//! | code | kind | stored bytes |
//! |---|---|---|
//! | `00` | none | the payload itself: stored length = uncompressed length |
//! | `01` | LZ4 | one LZ4 block (lz4 `Block_format`, no frame, no size prefix) |
//! | `02` | Zstandard | exactly one zstd frame that records its content size |
//!
//! A writer stores a block compressed only if that makes it strictly smaller and the
//! uncompressed length stays within the ratio bound below; otherwise it stores it raw (code
//! `00`). The decoder checks, before it allocates anything:
//!
//! - code `00`: stored length = uncompressed length;
//! - codes `01`, `02`: stored length < uncompressed length, and uncompressed length ≤
//!   [`max_ratio`] × stored length (255 for LZ4, whose sequences yield at most 255 bytes per
//!   input byte; 32 768 for zstd, whose smallest block, 4 bytes of RLE, yields at most
//!   128 KiB). A small payload can therefore never make the reader allocate a large buffer;
//! - code `02`: the frame spans the stored bytes exactly and its content size is the declared
//!   uncompressed length.
//!
//! It then decompresses into a buffer of exactly the declared length; a payload that would
//! produce more, or produces less, is an error.

use std::io;

use crate::FormatError;

/// The compression a writer applies to each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Blocks are stored as they are.
    #[default]
    None,
    /// LZ4 block compression (`lz4_flex`, safe code only): fast, modest ratio.
    Lz4,
    /// Zstandard at the given level (`zstd`; 1 to 22, negative levels for speed, 0 for zstd's
    /// default of 3).
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
}

impl Compression {
    /// The kind written in a block header when compression pays off.
    pub fn kind(self) -> CompressionKind {
        match self {
            Compression::None => CompressionKind::None,
            Compression::Lz4 => CompressionKind::Lz4,
            Compression::Zstd { .. } => CompressionKind::Zstd,
        }
    }
}

/// The compression of one stored block, as its header records it (a one-byte code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CompressionKind {
    /// Code `00`: stored raw.
    None = 0,
    /// Code `01`: an LZ4 block.
    Lz4 = 1,
    /// Code `02`: one zstd frame.
    Zstd = 2,
}

impl CompressionKind {
    /// The kind with on-disk code `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(CompressionKind::None),
            1 => Some(CompressionKind::Lz4),
            2 => Some(CompressionKind::Zstd),
            _ => None,
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The most uncompressed bytes one stored byte may stand for, by kind: 1 for none, 255 for
/// LZ4, 32 768 for zstd.
pub fn max_ratio(kind: CompressionKind) -> u64 {
    match kind {
        CompressionKind::None => 1,
        CompressionKind::Lz4 => 255,
        CompressionKind::Zstd => 32_768,
    }
}

/// Compresses blocks with one [`Compression`], reusing its buffers and zstd context.
pub struct Compressor {
    compression: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor for `compression`. Fails if a zstd level is outside
    /// `zstd::compression_level_range()` or zstd cannot allocate its context.
    pub fn new(compression: Compression) -> io::Result<Self> {
        let zstd = match compression {
            Compression::Zstd { level } => {
                if !zstd::compression_level_range().contains(&level) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "zstd level {level} is outside {:?}",
                            zstd::compression_level_range()
                        ),
                    ));
                }
                Some(zstd::bulk::Compressor::new(level)?)
            }
            _ => None,
        };
        Ok(Compressor {
            compression,
            zstd,
            scratch: Vec::new(),
        })
    }

    /// Compresses `input`; returns the kind to record and the bytes to store (`input` itself
    /// when compression does not pay off or is off). The result always satisfies the checks
    /// of [`decompress`].
    pub fn compress<'a>(&'a mut self, input: &'a [u8]) -> io::Result<(CompressionKind, &'a [u8])> {
        let kind = self.compression.kind();
        match self.compression {
            Compression::None => return Ok((CompressionKind::None, input)),
            Compression::Lz4 => {
                self.scratch.clear();
                self.scratch
                    .resize(lz4_flex::block::get_maximum_output_size(input.len()), 0);
                let n = lz4_flex::block::compress_into(input, &mut self.scratch)
                    .map_err(|e| io::Error::other(format!("lz4 compression failed: {e}")))?;
                self.scratch.truncate(n);
            }
            Compression::Zstd { .. } => {
                self.scratch.clear();
                self.scratch
                    .reserve(zstd::zstd_safe::compress_bound(input.len()));
                if let Some(z) = self.zstd.as_mut() {
                    z.compress_to_buffer(input, &mut self.scratch)?;
                }
            }
        }
        let stored = self.scratch.len() as u64;
        let pays_off = !self.scratch.is_empty()
            && stored < input.len() as u64
            && input.len() as u64 <= stored.saturating_mul(max_ratio(kind));
        if pays_off {
            Ok((kind, &self.scratch))
        } else {
            Ok((CompressionKind::None, input))
        }
    }
}

/// Decompresses the `stored` bytes of a block of kind `kind` into `out` (cleared first), which
/// must then hold exactly `uncompressed_len` bytes.
///
/// `file` and `offset` (the block's) go into errors: [`FormatError::Corrupt`] for every broken
/// rule of the module's format. The caller has already checked `uncompressed_len` against its
/// limits; this function allocates at most `uncompressed_len` bytes, and only once the ratio
/// bound has passed.
pub fn decompress(
    kind: CompressionKind,
    stored: &[u8],
    uncompressed_len: usize,
    out: &mut Vec<u8>,
    file: &str,
    offset: u64,
) -> Result<(), FormatError> {
    let corrupt = |reason: String| FormatError::Corrupt {
        file: file.to_owned(),
        offset,
        reason,
    };
    out.clear();
    let stored_len = stored.len() as u64;
    let declared = uncompressed_len as u64;
    if kind == CompressionKind::None {
        if stored_len != declared {
            return Err(corrupt(format!(
                "uncompressed block stores {stored_len} bytes but declares {declared}"
            )));
        }
        out.extend_from_slice(stored);
        return Ok(());
    }
    if stored_len >= declared {
        return Err(corrupt(format!(
            "compressed block stores {stored_len} bytes for {declared}: not smaller"
        )));
    }
    if declared > stored_len.saturating_mul(max_ratio(kind)) {
        return Err(corrupt(format!(
            "{kind:?} block of {stored_len} bytes cannot expand to the {declared} it declares"
        )));
    }
    if kind == CompressionKind::Zstd {
        match zstd::zstd_safe::find_frame_compressed_size(stored) {
            Ok(n) if n == stored.len() => {}
            _ => {
                return Err(corrupt(
                    "zstd payload is not exactly one well-formed frame".to_owned(),
                ))
            }
        }
        match zstd::zstd_safe::get_frame_content_size(stored) {
            Ok(Some(n)) if n == declared => {}
            Ok(Some(n)) => {
                return Err(corrupt(format!(
                    "zstd frame content size {n} differs from the declared {declared}"
                )))
            }
            _ => {
                return Err(corrupt(
                    "zstd frame does not record its content size".to_owned(),
                ))
            }
        }
    }
    out.resize(uncompressed_len, 0);
    let produced = match kind {
        CompressionKind::Lz4 => lz4_flex::block::decompress_into(stored, out)
            .map_err(|e| corrupt(format!("lz4 payload does not decompress: {e}")))?,
        CompressionKind::Zstd => zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(stored, &mut out[..]))
            .map_err(|e| corrupt(format!("zstd payload does not decompress: {e}")))?,
        CompressionKind::None => unreachable!("handled above"),
    };
    if produced != uncompressed_len {
        out.clear();
        return Err(corrupt(format!(
            "block decompresses to {produced} bytes, not the declared {declared}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(compression: Compression, input: &[u8]) -> CompressionKind {
        let mut c = Compressor::new(compression).unwrap();
        let (kind, stored) = c.compress(input).unwrap();
        let stored = stored.to_vec();
        let mut out = Vec::new();
        decompress(kind, &stored, input.len(), &mut out, "t", 0).unwrap();
        assert_eq!(out, input);
        kind
    }

    #[test]
    fn compressible_input_is_compressed_and_round_trips() {
        let input: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        assert_eq!(round_trip(Compression::None, &input), CompressionKind::None);
        assert_eq!(round_trip(Compression::Lz4, &input), CompressionKind::Lz4);
        assert_eq!(
            round_trip(Compression::Zstd { level: 3 }, &input),
            CompressionKind::Zstd
        );
    }

    #[test]
    fn incompressible_input_is_stored_raw() {
        let input = [0x5a_u8, 0x13, 0x77];
        assert_eq!(round_trip(Compression::Lz4, &input), CompressionKind::None);
        assert_eq!(
            round_trip(Compression::Zstd { level: 1 }, &input),
            CompressionKind::None
        );
        assert_eq!(round_trip(Compression::Lz4, &[]), CompressionKind::None);
    }

    #[test]
    fn the_ratio_bounds_hold_for_the_most_compressible_input() {
        // Runs of one byte are the best case of both algorithms; the bound must leave room.
        for len in [1usize, 16, 300, 4096, 65_536, 1 << 20, 8 << 20] {
            let input = vec![0u8; len];
            for compression in [
                Compression::Lz4,
                Compression::Zstd { level: 1 },
                Compression::Zstd { level: 19 },
            ] {
                let mut c = Compressor::new(compression).unwrap();
                let (kind, stored) = c.compress(&input).unwrap();
                if kind != CompressionKind::None {
                    assert!(
                        (len as u64) <= stored.len() as u64 * max_ratio(kind),
                        "{compression:?} of {len} zeros gives {} bytes",
                        stored.len()
                    );
                }
                if len >= 4096 {
                    assert_eq!(kind, compression.kind(), "{len} zeros compress");
                }
            }
        }
    }

    #[test]
    fn bad_levels_are_refused() {
        assert!(Compressor::new(Compression::Zstd { level: 1000 }).is_err());
    }

    #[test]
    fn a_payload_that_expands_past_its_declared_length_is_an_error() {
        let input = vec![7u8; 100_000];
        for compression in [Compression::Lz4, Compression::Zstd { level: 3 }] {
            let mut c = Compressor::new(compression).unwrap();
            let (kind, stored) = c.compress(&input).unwrap();
            let stored = stored.to_vec();
            let mut out = Vec::new();
            for declared in [99_999, 100_001, stored.len() + 1] {
                let err = decompress(kind, &stored, declared, &mut out, "t", 9).unwrap_err();
                assert!(
                    matches!(err, FormatError::Corrupt { offset: 9, .. }),
                    "{compression:?} declared {declared}: {err}"
                );
            }
        }
    }

    #[test]
    fn declared_lengths_beyond_the_ratio_are_refused_before_allocating() {
        let mut out = Vec::new();
        let err = decompress(CompressionKind::Lz4, &[0; 10], 2551, &mut out, "t", 0).unwrap_err();
        assert!(err.to_string().contains("cannot expand"), "{err}");
        assert_eq!(out.capacity(), 0);
        let err =
            decompress(CompressionKind::Zstd, &[0; 10], 327_681, &mut out, "t", 0).unwrap_err();
        assert!(err.to_string().contains("cannot expand"), "{err}");
        assert_eq!(out.capacity(), 0);
    }
}
