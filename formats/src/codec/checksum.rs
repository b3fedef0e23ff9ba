//! CRC-32 (IEEE, as computed by `crc32fast`) over byte ranges.

use crate::FormatError;

/// The CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A CRC-32 computed piece by piece: the same value as [`crc32`] of the pieces joined.
#[derive(Debug, Clone, Default)]
pub struct Crc32(crc32fast::Hasher);

impl Crc32 {
    /// A CRC over no bytes yet.
    pub fn new() -> Self {
        Crc32(crc32fast::Hasher::new())
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The CRC-32 of every byte added.
    pub fn finalize(self) -> u32 {
        self.0.finalize()
    }
}

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), computed piece by piece: the
/// checksum that binds a whole state file to the `_metadata` that lists it.
///
/// Not the CRC-32 of [`crc32`]: a file that ends with the CRC-32 of all its preceding bytes
/// (every framed checkpoint file does) has one and the same CRC-32 as every other such file of
/// its length, which would let a stale copy pass for the current one. CRC-32C, another
/// polynomial, has no such fixed value over them.
///
/// ```
/// use flowstate_formats::codec::checksum::Crc32c;
/// let mut c = Crc32c::new();
/// c.update(b"1234");
/// c.update(b"56789");
/// assert_eq!(c.finalize(), 0xe306_9283);
/// ```
#[derive(Debug, Clone)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

impl Crc32c {
    /// A CRC over no bytes yet.
    pub fn new() -> Self {
        Crc32c(0)
    }

    /// Adds `bytes` (with the CPU's CRC-32C instruction where it has one: SSE 4.2 on x86-64,
    /// the CRC extension on AArch64; a table-driven loop elsewhere).
    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, bytes);
    }

    /// The CRC-32C of every byte added.
    pub fn finalize(self) -> u32 {
        self.0
    }
}

/// The CRC-32C of `bytes` ([`Crc32c`]).
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = Crc32c::new();
    c.update(bytes);
    c.finalize()
}

/// Checks that `bytes`, found at byte `offset` of `file`, have the CRC-32 `expected`.
///
/// The error is [`FormatError::ChecksumMismatch`] with `offset` (the first byte covered).
pub fn verify(bytes: &[u8], expected: u32, file: &str, offset: u64) -> Result<(), FormatError> {
    let found = crc32(bytes);
    if found == expected {
        Ok(())
    } else {
        Err(FormatError::ChecksumMismatch {
            file: file.to_owned(),
            offset,
            expected,
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_vectors_in_any_pieces() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 31 + 7) as u8).collect();
        let whole = crc32c(&bytes);
        for cut in [1, 3, 8, 9, 500, 999] {
            let mut c = Crc32c::new();
            c.update(&bytes[..cut]);
            c.update(&bytes[cut..]);
            assert_eq!(c.finalize(), whole, "{cut}");
        }
    }

    #[test]
    fn crc32c_equals_a_bitwise_reference_at_every_length_and_alignment() {
        // The definition, one bit at a time: what the accelerated code must agree with at
        // lengths and offsets that exercise its 8-byte and remainder paths.
        fn reference(bytes: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 == 1 {
                        (c >> 1) ^ 0x82F6_3B78
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        let bytes: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for len in (0..80).chain([255, 256, 257, 511, 590]) {
                let piece = &bytes[start..(start + len).min(bytes.len())];
                assert_eq!(crc32c(piece), reference(piece), "start {start} len {len}");
            }
        }
    }

    #[test]
    fn framed_files_of_one_length_differ_in_crc32c_though_not_in_crc32() {
        // A file ending with the CRC-32 of the bytes before it has a fixed CRC-32.
        let framed = |body: &[u8]| {
            let mut f = body.to_vec();
            f.extend_from_slice(&crc32(body).to_le_bytes());
            f
        };
        let (a, b) = (framed(b"offset 299999"), framed(b"offset 300000"));
        assert_eq!(crc32(&a), crc32(&b));
        assert_ne!(crc32c(&a), crc32c(&b));
    }

    #[test]
    fn a_crc_in_pieces_equals_the_crc_of_the_whole() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut c = Crc32::new();
        for chunk in bytes.chunks(37) {
            c.update(chunk);
        }
        assert_eq!(c.finalize(), crc32(&bytes));
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The check value of CRC-32/ISO-HDLC over the ASCII digits "123456789".
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn verify_reports_both_values() {
        assert!(verify(b"abc", crc32(b"abc"), "f", 0).is_ok());
        let err = verify(b"abd", crc32(b"abc"), "f", 7).unwrap_err();
        assert!(matches!(
            err,
            FormatError::ChecksumMismatch { offset: 7, expected, found, .. }
                if expected == crc32(b"abc") && found == crc32(b"abd")
        ));
    }
}
