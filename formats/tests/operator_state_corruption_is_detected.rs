//! Every single-byte change and every truncation of the golden operator-state file is an error
//! naming the file; content that breaks a rule behind valid checksums is an error too; hostile
//! counts and lengths are refused before anything is allocated for them.

mod common;

use common::*;
use flowstate_formats::codec::checksum::crc32;
use flowstate_formats::fuzzing::{self, repair_operator_state_checksums};
use flowstate_formats::operator::OperatorStateReader;
use flowstate_formats::{FormatError, ReadLimits, MAX_BLOCK_LEN};

fn decode_op(bytes: &[u8]) -> Result<(), FormatError> {
    fuzzing::decode_operator_state(bytes, ReadLimits::default()).map(|_| ())
}

#[track_caller]
fn error(bytes: &[u8], what: &str) -> FormatError {
    let e = decode_op(bytes).expect_err(what);
    assert_eq!(e.file(), Some(fuzzing::FILE_NAME), "{what}: {e}");
    if let Some(o) = e.offset() {
        assert!(o <= bytes.len() as u64, "{what}: {e}");
    }
    e
}

/// An operator-state file from raw payloads, with correct lengths and checksums.
fn forge(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"FLOWOPST".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    for p in payloads {
        let at = out.len();
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
        let crc = crc32(&out[at..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let count = (payloads.len() as u32).to_le_bytes();
    out.extend_from_slice(&count);
    out.extend_from_slice(&crc32(&count).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(b"FLOWOPST");
    out
}

/// A list-state payload header: name, mode, element codec.
fn list_head(name: &str, mode: u64) -> Payload {
    Payload::default()
        .b(name.as_bytes())
        .v(mode)
        .b(b"u64")
        .v(1)
        .v(0)
        .v(0)
        .v(0)
}

fn map_head(name: &str) -> Payload {
    Payload::default()
        .b(name.as_bytes())
        .v(2)
        .b(b"u64")
        .v(1)
        .v(0)
        .v(0)
        .v(0)
        .b(b"string")
        .v(1)
        .v(0)
        .v(0)
        .v(0)
}

#[test]
fn the_forgery_helper_is_right() {
    let p = list_head("a", 0).v(2).b(b"x").b(b"y");
    fuzzing::decode_operator_state(&forge(&[p.0]), ReadLimits::default()).unwrap();
}

#[test]
fn every_byte_change_is_an_error() {
    let original = golden(GOLDEN_OPERATOR_STATE);
    let mut damaged = original.clone();
    for pos in 0..original.len() {
        for pattern in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
            damaged[pos] ^= pattern;
            error(&damaged, &format!("byte {pos} ^ {pattern:#04x}"));
            damaged[pos] = original[pos];
        }
    }
}

#[test]
fn every_truncation_and_extension_is_an_error() {
    let original = golden(GOLDEN_OPERATOR_STATE);
    for cut in 0..original.len() {
        error(&original[..cut], &format!("cut to {cut}"));
    }
    let mut longer = original.clone();
    longer.push(0);
    error(&longer, "one more byte");
}

#[test]
fn rule_breaking_content_behind_valid_checksums_is_an_error() {
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (
            vec![list_head("a", 3).v(0).0],
            "unknown operator state mode 3",
        ),
        (
            vec![list_head("a", 0).v(1).b(b"x").0, list_head("a", 1).v(0).0],
            "a second operator state named 'a'",
        ),
        (
            vec![map_head("m").v(2).b(b"b").b(b"").b(b"a").b(b"").0],
            "not strictly ascending",
        ),
        (
            vec![map_head("m").v(2).b(b"a").b(b"").b(b"a").b(b"").0],
            "not strictly ascending",
        ),
        (
            vec![list_head("a", 0).v(1).b(b"x").v(7).0],
            "bytes left over",
        ),
        (vec![list_head("a", 0).v(2).b(b"x").0], "truncated"),
        (
            vec![list_head("a", 0).v(u64::from(u32::MAX)).b(b"x").0],
            "list element count 4294967295",
        ),
        (vec![map_head("m").v(1 << 40).0], "map entry count"),
        (vec![Payload::default().v(1 << 40).0], "state name length"),
    ];
    for (payloads, needle) in cases {
        let e = error(&forge(&payloads), needle);
        assert!(e.to_string().contains(needle), "expected '{needle}': {e}");
    }
}

#[test]
fn hostile_counts_and_lengths_are_refused_before_allocation() {
    let original = golden(GOLDEN_OPERATOR_STATE);
    let f = original.len() - 20;
    // A state count of u32::MAX cannot fit: refused before the table of blocks is sized.
    let mut bytes = original.clone();
    bytes[f..f + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    repair_operator_state_checksums(&mut bytes);
    let e = error(&bytes, "huge count");
    assert!(
        e.to_string().contains("4294967295 states cannot fit"),
        "{e}"
    );
    // An origin block (right after the header) of u32::MAX bytes.
    let mut bytes = original.clone();
    bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = error(&bytes, "huge origin block");
    assert!(
        e.to_string().contains("origin block of 4294967295 bytes"),
        "{e}"
    );
    // A block length of u32::MAX, or above the caller's limit.
    let first = 12 + 8 + u32::from_le_bytes(original[12..16].try_into().expect("4 bytes")) as usize;
    let mut bytes = original.clone();
    bytes[first..first + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    match decode_op(&bytes) {
        Err(FormatError::LimitExceeded {
            what,
            limit,
            offset,
            ..
        }) if offset == first as u64 => {
            assert_eq!(what, "operator state length");
            assert_eq!(limit, u64::from(MAX_BLOCK_LEN));
        }
        other => panic!("{other:?}"),
    }
    let small = ReadLimits {
        max_block_len: 16,
        ..ReadLimits::default()
    };
    let r = OperatorStateReader::open_with_limits(&original[..], "op", small);
    assert!(
        matches!(r, Err(FormatError::LimitExceeded { limit: 16, .. })),
        "{r:?}"
    );
    // A count too small or too large for the blocks there are.
    for count in [2u32, 4] {
        let mut bytes = original.clone();
        bytes[f..f + 4].copy_from_slice(&count.to_le_bytes());
        repair_operator_state_checksums(&mut bytes);
        error(&bytes, &format!("count {count}"));
    }
}

#[test]
fn every_byte_change_behind_repaired_checksums_keeps_the_properties() {
    let mut input = vec![1u8];
    input.extend_from_slice(&golden(GOLDEN_OPERATOR_STATE));
    fuzzing::check_operator_state_decode(&input);
    for pos in 1..input.len() {
        for pattern in [0x01u8, 0x80, 0xff] {
            input[pos] ^= pattern;
            fuzzing::check_operator_state_decode(&input);
            input[pos] ^= pattern;
        }
    }
}
