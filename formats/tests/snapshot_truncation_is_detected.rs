//! Every truncation of a golden snapshot file, and every extension by trailing bytes, is
//! reported as an error naming the file: the footer sits at the very end.

mod common;

use common::*;

#[test]
fn every_prefix_of_every_golden_snapshot_is_an_error() {
    for (name, _) in GOLDEN_SNAPSHOTS {
        let original = golden(name);
        for cut in 0..original.len() {
            expect_error(&original[..cut], &format!("{name} cut to {cut} bytes"));
        }
    }
}

#[test]
fn trailing_bytes_after_the_footer_are_an_error() {
    for (name, _) in GOLDEN_SNAPSHOTS {
        let mut bytes = golden(name);
        bytes.push(0);
        expect_error(&bytes, &format!("{name} + 1 byte"));
        // The footer repeated at the end: magic and CRC check out, the layout does not.
        let original = golden(name);
        let mut doubled = original.clone();
        doubled.extend_from_slice(&original[original.len() - 56..]);
        expect_error(&doubled, &format!("{name} with its footer twice"));
    }
}
