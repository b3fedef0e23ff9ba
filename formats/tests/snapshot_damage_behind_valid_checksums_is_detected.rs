//! Content that breaks a rule of the format is an error even when every checksum matches (a
//! buggy or hostile writer): unknown state indexes, out-of-order or duplicate entries, unsorted
//! or duplicate map keys, states out of order, empty sections and blocks, entry counts that do
//! not add up, trailing bytes, and every single-byte change behind repaired checksums keeps
//! the decoder's properties.

mod common;

use common::*;
use flowstate_formats::fuzzing;
use flowstate_formats::snapshot::SnapshotMeta;

fn meta() -> SnapshotMeta {
    golden_meta()
}

/// State 0 (value) section with the given entries: (key, ns, value).
fn values(state: u64, entries: &[(&[u8], &[u8], &[u8])]) -> Payload {
    let mut p = Payload::default().v(state).v(entries.len() as u64);
    for (k, n, v) in entries {
        p = p.b(k).b(n).b(v);
    }
    p
}

fn forge_one(payload: Payload, entries: u64) -> Vec<u8> {
    forge_snapshot(&meta(), &[ForgedBlock::raw(10, payload.0, entries)])
}

fn reason(bytes: &[u8], what: &str) -> String {
    expect_error(bytes, what).to_string()
}

#[test]
fn a_well_formed_forgery_decodes() {
    // The forging helper itself is right: a valid payload decodes.
    let bytes = forge_one(values(0, &[(b"a", b"", b"1"), (b"b", b"", b"2")]), 2);
    let (_, entries) = decode(&bytes).unwrap();
    assert_eq!(entries.len(), 2);
}

#[test]
fn an_unknown_state_index_is_an_error() {
    let r = reason(&forge_one(values(4, &[(b"a", b"", b"1")]), 1), "state 4");
    assert!(r.contains("unknown state index 4"), "{r}");
    let r = reason(
        &forge_one(values(u64::MAX, &[(b"a", b"", b"1")]), 1),
        "state max",
    );
    assert!(r.contains("unknown state index"), "{r}");
}

#[test]
fn duplicate_and_descending_entries_are_errors() {
    let r = reason(
        &forge_one(values(0, &[(b"a", b"", b"1"), (b"a", b"", b"2")]), 2),
        "dup",
    );
    assert!(r.contains("duplicate or out of order"), "{r}");
    let r = reason(
        &forge_one(values(0, &[(b"b", b"", b"1"), (b"a", b"", b"2")]), 2),
        "desc",
    );
    assert!(r.contains("duplicate or out of order"), "{r}");
    // Same key, namespaces descending.
    let r = reason(
        &forge_one(values(0, &[(b"a", b"2", b"1"), (b"a", b"1", b"2")]), 2),
        "ns",
    );
    assert!(r.contains("duplicate or out of order"), "{r}");
}

#[test]
fn a_duplicate_across_a_block_boundary_is_an_error() {
    let blocks = [
        ForgedBlock::raw(10, values(0, &[(b"a", b"", b"1")]).0, 1),
        ForgedBlock::raw(10, values(0, &[(b"a", b"", b"2")]).0, 1),
    ];
    let r = reason(&forge_snapshot(&meta(), &blocks), "dup across blocks");
    assert!(r.contains("duplicate or out of order"), "{r}");
    // The same continuation with ascending keys is fine.
    let blocks = [
        ForgedBlock::raw(10, values(0, &[(b"a", b"", b"1")]).0, 1),
        ForgedBlock::raw(10, values(0, &[(b"b", b"", b"2")]).0, 1),
    ];
    assert_eq!(
        decode(&forge_snapshot(&meta(), &blocks)).unwrap().1.len(),
        2
    );
}

#[test]
fn states_out_of_order_and_repeated_sections_are_errors() {
    let mut p = values(3, &[(b"a", b"", b"1")]);
    p.0.extend(values(0, &[(b"a", b"", b"1")]).0);
    let r = reason(&forge_one(p, 2), "descending states");
    assert!(r.contains("states must ascend"), "{r}");
    // A state's section repeated inside one block (only a new block may continue a state).
    let mut p = values(0, &[(b"a", b"", b"1")]);
    p.0.extend(values(0, &[(b"b", b"", b"1")]).0);
    let r = reason(&forge_one(p, 2), "repeated section");
    assert!(r.contains("states must ascend"), "{r}");
}

#[test]
fn unsorted_and_duplicate_map_keys_are_errors() {
    for keys in [[b"b", b"a"], [b"a", b"a"]] {
        let p = Payload::default()
            .v(2)
            .v(1)
            .b(b"k")
            .b(b"")
            .v(2)
            .b(keys[0])
            .b(b"x")
            .b(keys[1])
            .b(b"y");
        let r = reason(&forge_one(p, 1), "map keys");
        assert!(
            r.contains("map user keys are not strictly ascending"),
            "{r}"
        );
    }
}

#[test]
fn empty_sections_and_blocks_are_errors() {
    let r = reason(&forge_one(Payload::default().v(0).v(0), 1), "empty section");
    assert!(r.contains("empty"), "{r}");
    let r = reason(&forge_one(Payload::default(), 1), "empty block");
    assert!(r.contains("empty block payload"), "{r}");
}

#[test]
fn entry_counts_that_do_not_add_up_are_errors() {
    let r = reason(
        &forge_one(values(0, &[(b"a", b"", b"1")]), 2),
        "index says 2",
    );
    assert!(r.contains("holds 1 entries, the index says 2"), "{r}");
    // A section count larger than its entries runs into the end of the payload.
    let mut p = Payload::default().v(0).v(2).b(b"a").b(b"").b(b"1");
    p.0.push(0);
    expect_error(&forge_one(p, 2), "short section");
}

#[test]
fn trailing_bytes_in_a_payload_are_an_error() {
    let mut p = values(0, &[(b"a", b"", b"1")]);
    p.0.push(0x7f);
    expect_error(&forge_one(p, 1), "trailing byte");
}

#[test]
fn a_value_of_the_wrong_shape_is_an_error() {
    // A map entry written under the list state: the map's pairs read as list elements leave
    // the count wrong or bytes over.
    let p = Payload::default()
        .v(1)
        .v(1)
        .b(b"k")
        .b(b"")
        .v(2)
        .b(b"a")
        .b(b"b")
        .b(b"c");
    expect_error(&forge_one(p, 1), "list count mismatch");
}

#[test]
fn every_byte_change_behind_repaired_checksums_keeps_the_properties() {
    // With the checksums recomputed, a changed byte reaches the parser: the result is an
    // error, or content that re-encodes and decodes the same (fuzzing::check_snapshot_decode).
    for (name, _) in GOLDEN_SNAPSHOTS {
        let original = golden(name);
        let mut input = vec![1u8];
        input.extend_from_slice(&original);
        fuzzing::check_snapshot_decode(&input);
        for pos in 1..input.len() {
            for pattern in [0x01u8, 0x80, 0xff] {
                input[pos] ^= pattern;
                fuzzing::check_snapshot_decode(&input);
                input[pos] ^= pattern;
            }
        }
    }
}
