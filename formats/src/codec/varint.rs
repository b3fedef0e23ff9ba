//! Unsigned LEB128 variable-length integers (7 bits a byte, low group first).
//!
//! ## Format
//!
//! Each byte carries 7 bits of the value, least significant group first; the high bit is set on
//! every byte but the last. A `u64` takes at most 10 bytes. The decoder rejects encodings longer
//! than 10 bytes, values that overflow 64 bits, and non-shortest encodings (a last byte of zero
//! after other bytes), so that every value has exactly one encoding.

use crate::FormatError;

/// Appends `value` to `out` as a varint.
#[inline]
pub fn encode_u64(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The number of bytes [`encode_u64`] writes for `value`.
pub fn encoded_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a varint from the front of `input` and advances it past the bytes read.
#[inline]
pub fn decode_u64(input: &mut &[u8]) -> Result<u64, FormatError> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(10) {
        let group = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return Err(FormatError::MalformedVarint);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                // A final zero group after other groups: a longer encoding of a smaller value.
                return Err(FormatError::MalformedVarint);
            }
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    if input.len() >= 10 {
        Err(FormatError::MalformedVarint)
    } else {
        // Every byte present had its continuation bit set: at least one more is needed.
        Err(FormatError::Truncated {
            needed: input.len() as u64 + 1,
            available: input.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edge_values() {
        for v in [
            0,
            1,
            127,
            128,
            255,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            encode_u64(v, &mut out);
            assert_eq!(out.len(), encoded_len(v), "length of {v}");
            let mut input = &out[..];
            assert_eq!(decode_u64(&mut input).unwrap(), v);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        let mut input: &[u8] = &[0x80, 0x80];
        assert!(matches!(
            decode_u64(&mut input),
            Err(FormatError::Truncated { .. })
        ));
        let mut input: &[u8] = &[0xff; 11];
        assert!(matches!(
            decode_u64(&mut input),
            Err(FormatError::MalformedVarint)
        ));
        // Ten bytes whose last carries more than the single remaining bit overflow u64.
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(
            decode_u64(&mut input),
            Err(FormatError::MalformedVarint)
        ));
        let mut input: &[u8] = &[];
        assert!(matches!(
            decode_u64(&mut input),
            Err(FormatError::Truncated { .. })
        ));
        // Non-shortest encodings of 0 and 1 are rejected.
        let mut input: &[u8] = &[0x80, 0x00];
        assert!(matches!(
            decode_u64(&mut input),
            Err(FormatError::MalformedVarint)
        ));
        let mut input: &[u8] = &[0x81, 0x80, 0x00];
        assert!(matches!(
            decode_u64(&mut input),
            Err(FormatError::MalformedVarint)
        ));
    }
}
