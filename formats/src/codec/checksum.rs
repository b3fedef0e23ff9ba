//! CRC-32 (IEEE, as computed by `crc32fast`) over byte ranges.

use crate::FormatError;

/// The CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
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
