//! Moving key-group blocks around is detected, even though each block still carries a valid
//! CRC: a block names its key group, and the index requires the blocks to tile the data region
//! in key-group order.

mod common;

use common::*;
use flowstate_formats::fuzzing::{self, repair_snapshot_checksums};
use flowstate_formats::snapshot::{OwnedValue, SnapshotReader};
use flowstate_formats::Compression;

/// A snapshot whose key groups 10 and 11 each hold one value entry of the same size, so that
/// their blocks have the same length.
fn equal_blocks() -> (Vec<u8>, [(usize, usize); 2]) {
    let entries = vec![
        (
            10,
            0,
            s("ann"),
            vec![],
            OwnedValue::Value(1u64.to_le_bytes().to_vec()),
        ),
        (
            11,
            0,
            s("ben"),
            vec![],
            OwnedValue::Value(2u64.to_le_bytes().to_vec()),
        ),
    ];
    let bytes =
        fuzzing::encode_snapshot(&golden_meta(), &entries, Compression::None, 1024).unwrap();
    let r = SnapshotReader::open(&bytes[..], "t").unwrap();
    let (a, b) = (r.location(10).unwrap(), r.location(11).unwrap());
    assert_eq!(a.len, b.len);
    (
        bytes,
        [
            (a.offset as usize, a.len as usize),
            (b.offset as usize, b.len as usize),
        ],
    )
}

#[test]
fn swapping_two_blocks_of_equal_length_is_an_error() {
    let (bytes, [(a, n), (b, _)]) = equal_blocks();
    let mut swapped = bytes.clone();
    swapped[a..a + n].copy_from_slice(&bytes[b..b + n]);
    swapped[b..b + n].copy_from_slice(&bytes[a..a + n]);
    let err = expect_error(&swapped, "swapped blocks");
    assert!(
        err.to_string()
            .contains("key group 11 where the index puts key group 10"),
        "{err}"
    );
}

#[test]
fn swapping_blocks_and_their_index_slots_is_an_error() {
    // Even an index rewritten to follow the blocks (with every CRC recomputed) is refused:
    // key groups must come in ascending order.
    let (bytes, [(a, n), (b, _)]) = equal_blocks();
    let mut swapped = bytes.clone();
    swapped[a..a + n].copy_from_slice(&bytes[b..b + n]);
    swapped[b..b + n].copy_from_slice(&bytes[a..a + n]);
    let f = swapped.len() - 56;
    let index_at = u64::from_le_bytes(swapped[f + 16..f + 24].try_into().unwrap()) as usize;
    let slot = |kg: usize| index_at + 4 + 24 * (kg - 10);
    let (sa, sb) = (slot(10), slot(11));
    let (oa, ob) = (swapped[sa..sa + 8].to_vec(), swapped[sb..sb + 8].to_vec());
    swapped[sa..sa + 8].copy_from_slice(&ob);
    swapped[sb..sb + 8].copy_from_slice(&oa);
    repair_snapshot_checksums(&mut swapped);
    let err = expect_error(&swapped, "swapped blocks and slots");
    assert!(err.to_string().contains("starts at"), "{err}");
}

#[test]
fn swapping_blocks_of_different_lengths_in_a_golden_file_is_an_error() {
    for (name, _) in GOLDEN_SNAPSHOTS {
        let bytes = golden(name);
        let r = SnapshotReader::open(&bytes[..], name).unwrap();
        let locs: Vec<_> = r.locations().collect();
        for i in 0..locs.len() {
            for j in i + 1..locs.len() {
                let (x, y) = (locs[i], locs[j]);
                let (xs, xe) = (x.offset as usize, (x.offset + x.len) as usize);
                let (ys, ye) = (y.offset as usize, (y.offset + y.len) as usize);
                let mut swapped = bytes[..xs].to_vec();
                swapped.extend_from_slice(&bytes[ys..ye]);
                swapped.extend_from_slice(&bytes[xe..ys]);
                swapped.extend_from_slice(&bytes[xs..xe]);
                swapped.extend_from_slice(&bytes[ye..]);
                assert_eq!(swapped.len(), bytes.len());
                expect_error(
                    &swapped,
                    &format!(
                        "{name}: key groups {} and {} swapped",
                        x.key_group, y.key_group
                    ),
                );
                let mut repaired = swapped.clone();
                repair_snapshot_checksums(&mut repaired);
                expect_error(&repaired, &format!("{name}: swapped and repaired"));
            }
        }
    }
}
