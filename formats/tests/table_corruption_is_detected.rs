//! Damage to a table file is an error naming the file and an offset within it: never a panic,
//! never different content read without complaint.
//!
//! - every single-byte change of every golden table (every position; every single-bit flip and
//!   the complement) fails to decode, and point lookups on a damaged file that still opens
//!   return the original answer or an error;
//! - every truncation, trailing bytes, a doubled footer;
//! - data blocks swapped (in place, or with an index rewritten to match), and a block of
//!   another table written at the same offset.

mod table_common;

use flowstate_formats::table::{EntryKind, TableBuilder, TableOptions, TableReader, FOOTER_LEN};
use flowstate_formats::Compression;
use table_common::*;

const PATTERNS: [u8; 9] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff];

#[test]
fn every_byte_change_of_every_golden_table_is_an_error() {
    let entries = golden_entries();
    let samples: Vec<_> = entries.iter().step_by(7).collect();
    for g in &GOLDEN_TABLES {
        let original = golden(g.name);
        assert!(decode(&original).is_ok());
        let mut damaged = original.clone();
        let (mut opened, mut lookups) = (0, 0);
        for pos in 0..original.len() {
            for pattern in PATTERNS {
                damaged[pos] ^= pattern;
                expect_error(
                    &damaged,
                    &format!("{}: byte {pos} ^ {pattern:#04x}", g.name),
                );
                // A damaged data block is found when it is read: lookups elsewhere still answer,
                // and never with something else than the original answer.
                if let Ok(r) = TableReader::open(&damaged[..], "damaged") {
                    opened += 1;
                    for (key, kind, value) in &samples {
                        match r.get(key) {
                            Ok(found) => {
                                assert_eq!(
                                    found,
                                    Some((*kind, value.clone())),
                                    "{}: byte {pos} ^ {pattern:#04x}",
                                    g.name
                                );
                                lookups += 1;
                            }
                            Err(e) => assert!(e.is_corruption(), "{e}"),
                        }
                    }
                }
                damaged[pos] = original[pos];
            }
        }
        if g.with_entries {
            assert!(
                opened > 0 && lookups > 0,
                "{}: data block damage opens",
                g.name
            );
        }
    }
}

#[test]
fn every_truncation_of_every_golden_table_is_an_error() {
    for g in &GOLDEN_TABLES {
        let original = golden(g.name);
        for cut in 0..original.len() {
            expect_error(&original[..cut], &format!("{} cut to {cut} bytes", g.name));
        }
    }
}

#[test]
fn trailing_bytes_and_a_doubled_footer_are_errors() {
    for g in &GOLDEN_TABLES {
        let original = golden(g.name);
        let mut longer = original.clone();
        longer.push(0);
        expect_error(&longer, &format!("{} + 1 byte", g.name));
        let mut doubled = original.clone();
        doubled.extend_from_slice(&original[original.len() - FOOTER_LEN as usize..]);
        expect_error(&doubled, &format!("{} with its footer twice", g.name));
        let mut prefixed = original[..12].to_vec();
        prefixed.extend_from_slice(&original);
        expect_error(&prefixed, &format!("{} after a second header", g.name));
    }
}

#[test]
fn swapped_data_blocks_are_errors() {
    let original = golden("table_none_v2.bin");
    let parts = Parts::split(&original);
    assert_eq!(parts.assemble(true), original, "the forge is faithful");
    let n = parts.data.len();
    let mut equal_length_pairs = 0;
    for i in 0..n {
        for j in i + 1..n {
            // With an index rewritten to the new positions: the keys disagree with the index.
            let mut p = parts.clone();
            p.data.swap(i, j);
            expect_error(&p.assemble(true), &format!("blocks {i} and {j} swapped"));
            // In place, the blocks' bytes unchanged: the CRCs are bound to the offsets.
            if parts.data[i].stored.len() == parts.data[j].stored.len() {
                equal_length_pairs += 1;
                let mut q = parts.clone();
                q.data.swap(i, j);
                let mut bytes = q.assemble(false);
                // Keep the original CRCs (the blocks are moved, not rewritten).
                let offsets = frame_offsets(&original);
                for k in [i, j] {
                    let from = if k == i { j } else { i };
                    let len = 14 + parts.data[from].stored.len();
                    let src = &original[offsets[from]..offsets[from] + len];
                    bytes[offsets[k]..offsets[k] + len].copy_from_slice(src);
                }
                expect_error(&bytes, &format!("blocks {i} and {j} swapped in place"));
            }
        }
    }
    assert!(
        equal_length_pairs > 0,
        "the golden table has blocks of equal length"
    );
}

fn frame_offsets(b: &[u8]) -> Vec<usize> {
    let end = b.len() - FOOTER_LEN as usize;
    let mut pos = 12;
    let mut out = Vec::new();
    while pos < end {
        out.push(pos);
        pos += 14 + u32::from_le_bytes(b[pos + 6..pos + 10].try_into().unwrap()) as usize;
    }
    out
}

fn table_with(table_id: u64, value: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = TableBuilder::new(
        &mut out,
        TableOptions {
            block_size: 128,
            compression: Compression::None,
            table_id,
            ..TableOptions::default()
        },
        "t",
    )
    .unwrap();
    for i in 0..100u32 {
        b.add(&i.to_be_bytes(), EntryKind::Put, &[value; 8])
            .unwrap();
    }
    b.finish().unwrap();
    out
}

#[test]
fn a_block_of_another_table_at_the_same_offset_is_an_error() {
    // Two tables with the same keys and layout, other values: a misdirected write of one's
    // block into the other passes every structural check; the table id in the CRC catches it.
    let a = table_with(1, 0xaa);
    let b = table_with(2, 0xbb);
    assert_eq!(a.len(), b.len());
    let offsets = frame_offsets(&a);
    assert_eq!(offsets, frame_offsets(&b));
    for w in offsets.windows(2) {
        let mut mixed = a.clone();
        mixed[w[0]..w[1]].copy_from_slice(&b[w[0]..w[1]]);
        expect_error(&mixed, &format!("block at {} from another table", w[0]));
    }
    // Without distinct ids (both 0), the same transplant would read the other values: give
    // every table its own id.
    let (a0, b0) = (table_with(0, 0xaa), table_with(0, 0xbb));
    let mut mixed = a0.clone();
    mixed[offsets[0]..offsets[1]].copy_from_slice(&b0[offsets[0]..offsets[1]]);
    let t = decode(&mixed).unwrap();
    assert_eq!(t.entries[0].value, [0xbb; 8]);
}
