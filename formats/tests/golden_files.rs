//! Golden files pin the bytes of the snapshot and operator-state formats (spec/formats.md
//! sections 3 and 4). The deterministic input of `common` must encode to exactly the committed
//! files, and the committed files must decode to that input: changing a layout without
//! bumping its version breaks this test.
//!
//! After a deliberate change (with a version bump), rewrite the files with
//! `FLOWSTATE_BLESS=1 cargo test -p flowstate-formats --test golden_files`, and copy them into
//! the fuzz corpora (`fuzz/corpus/snapshot_decode/`, `fuzz/corpus/operator_state_decode/`,
//! each with a leading mode byte) as the fuzz README says.
//!
//! The compressed files also pin the output of `lz4_flex` and `zstd`: if a library upgrade
//! changes its output, check that the old files still decode (part (b)) and bless.

mod common;

use std::fs;

use common::*;
use flowstate_formats::fuzzing;
use flowstate_formats::snapshot::{SnapshotReader, SnapshotWriter, SnapshotWriterOptions};
use flowstate_formats::{CompressionKind, ReadLimits};

fn bless() -> bool {
    std::env::var_os("FLOWSTATE_BLESS").is_some_and(|v| v == "1")
}

fn check_bytes(name: &str, bytes: &[u8]) {
    let path = golden_dir().join(name);
    if bless() {
        fs::write(&path, bytes).expect("the golden directory is writable");
    }
    let committed = golden(name);
    assert!(
        committed == bytes,
        "{name} differs from what the writer produces now ({} bytes committed, {} now): a \
         format change needs a version bump, then FLOWSTATE_BLESS=1",
        committed.len(),
        bytes.len()
    );
}

#[test]
fn snapshots_encode_to_the_committed_bytes() {
    for (name, compression) in GOLDEN_SNAPSHOTS {
        check_bytes(name, &encode_golden(compression));
    }
}

#[test]
fn operator_state_encodes_to_the_committed_bytes() {
    check_bytes(GOLDEN_OPERATOR_STATE, &encode_golden_operator_state());
}

#[test]
fn committed_snapshots_decode_to_the_input() {
    for (name, compression) in GOLDEN_SNAPSHOTS {
        let bytes = golden(name);
        let (meta, entries) = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta, golden_meta(), "{name}");
        assert_eq!(entries, golden_entries(), "{name}");

        let r = SnapshotReader::open(&bytes[..], name).unwrap();
        assert_eq!(r.entry_count(), golden_entries().len() as u64);
        let groups: Vec<u16> = r.locations().map(|l| l.key_group).collect();
        assert_eq!(groups, [10, 12, 15, 17], "{name}: the non-empty key groups");
        // Key group 15 spans several blocks (GOLDEN_BLOCK_SIZE), which the file must show:
        // its span is longer than one block of at most the block size plus framing.
        let kg15 = r.location(15).unwrap();
        assert!(kg15.len > 2 * 15, "{name}: {kg15:?}");
        // Every block of a compressed file that shrinks is stored compressed: at least the
        // first block of key group 15 (repetitive list elements) must be.
        let first_code = bytes[kg15.offset as usize + 2];
        let expected = compression.kind();
        assert_eq!(
            CompressionKind::from_code(first_code),
            Some(expected),
            "{name}: compression of key group 15's first block"
        );
    }
}

#[test]
fn committed_snapshots_record_their_origin_and_version_1_is_still_read() {
    for (name, _) in GOLDEN_SNAPSHOTS {
        let bytes = golden(name);
        let r = SnapshotReader::open(&bytes[..], name).unwrap();
        assert_eq!(r.version(), 2, "{name}");
        assert_eq!(r.origin(), Some(&golden_origin()), "{name}");
    }
    for name in GOLDEN_SNAPSHOTS_V1 {
        let bytes = golden(name);
        let r = SnapshotReader::open(&bytes[..], name).unwrap();
        assert_eq!((r.version(), r.origin()), (1, None), "{name}");
        let (meta, entries) = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta, golden_meta(), "{name}");
        assert_eq!(entries, golden_entries(), "{name}");
    }
    // A version-1 header with a version-2 footer is refused.
    let mut mixed = golden(GOLDEN_SNAPSHOTS_V1[0]);
    let n = mixed.len();
    mixed[n - 12..n - 8].copy_from_slice(&2u32.to_le_bytes());
    assert!(SnapshotReader::open(&mixed[..], "mixed").is_err());
}

#[test]
fn the_delta_file_encodes_to_the_committed_bytes_and_decodes_to_its_changes() {
    let encoded = encode_golden_delta();
    check_bytes(GOLDEN_DELTA, &encoded);
    assert_eq!(
        &encoded[8..12],
        &3u32.to_le_bytes(),
        "a delta file is version 3"
    );
    let r = SnapshotReader::open(&encoded[..], GOLDEN_DELTA).unwrap();
    assert_eq!((r.version(), r.origin()), (3, None));
    assert_eq!(r.delta(), Some(&golden_delta_of()));
    let (meta, entries) = decode(&encoded).unwrap();
    assert_eq!(meta, golden_meta());
    assert_eq!(entries, golden_delta_entries());
    // Every bit flip and every truncation is detected.
    for i in 0..encoded.len() {
        let mut damaged = encoded.clone();
        damaged[i] ^= 0x10;
        assert!(
            decode(&damaged).is_err(),
            "a flip at byte {i} went unnoticed"
        );
    }
    for len in 0..encoded.len() {
        assert!(decode(&encoded[..len]).is_err(), "truncated to {len}");
    }
    // A full file records no removal, and a delta's removals of a state come after its
    // changes.
    let full = SnapshotWriterOptions::default();
    let mut w = SnapshotWriter::with_options(Vec::new(), &golden_meta(), full).unwrap();
    w.begin_key_group(10).unwrap();
    assert!(w.add_removal(0, &s("bob"), &[]).is_err());
    let delta = SnapshotWriterOptions {
        delta: Some(golden_delta_of()),
        ..SnapshotWriterOptions::default()
    };
    let mut w = SnapshotWriter::with_options(Vec::new(), &golden_meta(), delta).unwrap();
    w.begin_key_group(10).unwrap();
    w.add_removal(0, &s("bob"), &[]).unwrap();
    let value = 1u64.to_le_bytes();
    let change = flowstate_formats::snapshot::EntryValue::Value(&value);
    assert!(w.add_entry(0, &s("carl"), &[], change).is_err());
    w.add_entry(
        1,
        &s("carl"),
        &window_bytes(0),
        flowstate_formats::snapshot::EntryValue::List(&[]),
    )
    .unwrap();
    assert!(
        w.add_removal(0, &s("zed"), &[]).is_err(),
        "state 0 after state 1"
    );
}

/// A time window's encoding (start, end), as the golden input writes it.
fn window_bytes(start: i64) -> Vec<u8> {
    let mut out = start.to_le_bytes().to_vec();
    out.extend_from_slice(&(start + 60_000).to_le_bytes());
    out
}

#[test]
fn committed_operator_state_of_version_1_is_still_read_without_an_origin() {
    let bytes = golden(GOLDEN_OPERATOR_STATE_V1);
    let r = flowstate_formats::operator::OperatorStateReader::open(&bytes[..], "v1").unwrap();
    assert_eq!(r.origin(), None);
    assert_eq!(r.read_all().unwrap(), golden_operator_states());
    let bytes = golden(GOLDEN_OPERATOR_STATE);
    let r = flowstate_formats::operator::OperatorStateReader::open(&bytes[..], "v2").unwrap();
    assert_eq!(r.origin(), Some(&golden_origin()));
}

#[test]
fn key_group_fifteen_spans_several_blocks() {
    // Walk the blocks of key group 15 in the uncompressed golden file by their headers.
    let bytes = golden("snapshot_none_v1.bin");
    let r = SnapshotReader::open(&bytes[..], "snapshot_none_v1.bin").unwrap();
    let loc = r.location(15).unwrap();
    let (mut pos, end, mut blocks) = (loc.offset as usize, (loc.offset + loc.len) as usize, 0);
    while pos < end {
        assert_eq!(u16::from_le_bytes([bytes[pos], bytes[pos + 1]]), 15);
        let stored = u32::from_le_bytes(bytes[pos + 7..pos + 11].try_into().unwrap());
        pos += 15 + stored as usize;
        blocks += 1;
    }
    assert_eq!(pos, end);
    assert!(blocks >= 3, "key group 15 has {blocks} blocks");
}

#[test]
fn committed_operator_state_decodes_to_the_input() {
    let bytes = golden(GOLDEN_OPERATOR_STATE);
    let states = fuzzing::decode_operator_state(&bytes, ReadLimits::default()).unwrap();
    assert_eq!(states, golden_operator_states());
}

#[test]
fn the_golden_files_start_and_end_with_their_magic() {
    for (name, _) in GOLDEN_SNAPSHOTS {
        let b = golden(name);
        assert_eq!(&b[..8], b"FLOWSNAP");
        assert_eq!(&b[b.len() - 8..], b"FLOWSNAP");
        assert_eq!(&b[8..12], &2u32.to_le_bytes());
    }
    let b = golden(GOLDEN_OPERATOR_STATE);
    assert_eq!(&b[..8], b"FLOWOPST");
    assert_eq!(&b[b.len() - 8..], b"FLOWOPST");
}
