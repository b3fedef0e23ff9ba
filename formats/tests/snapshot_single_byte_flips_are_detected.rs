//! Every single-byte change of a golden snapshot file (every position; every single-bit flip
//! and the complement) is reported as an error naming the file and an offset within it: never
//! a panic, never a different content decoded without complaint. Every byte of the file is
//! covered by a CRC or checked against a fixed value (magic, version).

mod common;

use common::*;

#[test]
fn every_byte_change_of_every_golden_snapshot_is_an_error() {
    for (name, _) in GOLDEN_SNAPSHOTS {
        let original = golden(name);
        assert!(decode(&original).is_ok());
        let mut damaged = original.clone();
        for pos in 0..original.len() {
            for pattern in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                damaged[pos] ^= pattern;
                expect_error(&damaged, &format!("{name}: byte {pos} ^ {pattern:#04x}"));
                damaged[pos] = original[pos];
            }
        }
    }
}
