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
