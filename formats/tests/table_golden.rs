//! Golden files pin the bytes of the LSM table format (spec/formats.md section 5). The
//! deterministic input of `table_common` must encode to exactly the committed files, and the
//! committed files must decode to that input: changing the layout without bumping its version
//! breaks this test. The seed corpus of the `table_decode` fuzz target is derived from the
//! golden files here too, and must match what is committed.
//!
//! After a deliberate change (with a version bump), rewrite the files and the seeds with
//! `FLOWSTATE_BLESS=1 cargo test -p flowstate-formats --test table_golden`.
//!
//! The compressed files also pin the output of `lz4_flex` and `zstd`: if a library upgrade
//! changes it, check that the old files still decode, then bless.

mod table_common;

use std::fs;
use std::path::PathBuf;

use flowstate_formats::fuzzing::repair_table_checksums;
use flowstate_formats::table::{
    EntryKind, RangeTombstone, TableEntry, TableReader, FOOTER_LEN, HEADER_LEN,
};
use flowstate_formats::CompressionKind;
use table_common::*;

fn bless() -> bool {
    std::env::var_os("FLOWSTATE_BLESS").is_some_and(|v| v == "1")
}

fn check_file(path: PathBuf, bytes: &[u8]) {
    if bless() {
        // Through a temporary name, so that a test reading the file meanwhile sees it whole.
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, bytes).expect("the directory is writable");
        fs::rename(&tmp, &path).expect("the directory is writable");
    }
    let committed = fs::read(&path)
        .unwrap_or_else(|e| panic!("{} is readable (bless to create it): {e}", path.display()));
    assert!(
        committed == bytes,
        "{} differs from what the builder produces now ({} bytes committed, {} now): a format \
         change needs a version bump, then FLOWSTATE_BLESS=1",
        path.display(),
        committed.len(),
        bytes.len()
    );
}

#[test]
fn tables_encode_to_the_committed_bytes() {
    for g in &GOLDEN_TABLES {
        check_file(golden_dir().join(g.name), &encode_golden(g));
    }
}

fn expected_tombstones() -> Vec<RangeTombstone> {
    let kg = |state: u8, kg: u16| {
        let mut k = vec![state];
        k.extend_from_slice(&kg.to_be_bytes());
        k
    };
    vec![
        RangeTombstone::new(kg(1, 5), kg(1, 7)),
        RangeTombstone::new(kg(2, 5), kg(2, 7)),
        RangeTombstone::new(kg(3, 5), kg(3, 7)),
        RangeTombstone::new(kg(4, 0), kg(5, 0)),
    ]
}

#[test]
fn committed_tables_decode_to_the_input() {
    let entries: Vec<TableEntry> = golden_entries()
        .into_iter()
        .map(|(key, kind, value)| TableEntry { key, kind, value })
        .collect();
    assert_eq!(entries.len(), 84);
    for g in GOLDEN_TABLES.iter().chain(&GOLDEN_TABLES_V1) {
        let bytes = golden(g.name);
        let t = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        let p = &t.properties;
        assert_eq!(t.range_tombstones, expected_tombstones(), "{}", g.name);
        for (name, value) in golden_user_properties() {
            assert_eq!(p.user_property(name), Some(&value[..]), "{}", g.name);
        }
        assert_eq!(p.prefix_extractor.as_deref(), Some("fixed:3"));
        assert_eq!(
            (p.restart_interval, p.block_size, p.bloom_bits_per_key),
            (4, 256, 10)
        );
        if !g.with_entries {
            assert!(t.entries.is_empty());
            assert_eq!((p.entries, p.data_blocks), (0, 0));
            continue;
        }
        assert_eq!(t.entries, entries, "{}", g.name);
        assert_eq!(
            (p.entries, p.deletes, p.merges),
            (84, 3, 24),
            "{}: counts",
            g.name
        );
        assert!(p.data_blocks >= 10, "{}: {} blocks", g.name, p.data_blocks);
        // The first data block shrinks under compression, so it is stored compressed.
        assert_eq!(
            CompressionKind::from_code(bytes[HEADER_LEN as usize + 1]),
            Some(g.compression.kind()),
            "{}: compression of the first data block",
            g.name
        );
        let r = TableReader::open(&bytes[..], g.name).unwrap();
        assert_eq!(
            r.get(&entries[5].key).unwrap(),
            Some((entries[5].kind, entries[5].value.clone()))
        );
        let kg4_state2: Vec<_> = r
            .iter_prefix(&[2, 0, 4])
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(kg4_state2.len(), 8);
        assert!(kg4_state2.iter().all(|e| e.kind == EntryKind::Merge));
    }
}

#[test]
fn the_golden_files_start_and_end_with_their_magic_and_version() {
    for (tables, version) in [(&GOLDEN_TABLES, 2u32), (&GOLDEN_TABLES_V1, 1)] {
        for g in tables {
            let b = golden(g.name);
            assert_eq!(&b[..8], b"FLOWLSMT");
            assert_eq!(&b[b.len() - 8..], b"FLOWLSMT");
            assert_eq!(&b[8..12], &version.to_le_bytes(), "{}", g.name);
            assert_eq!(&b[b.len() - 12..b.len() - 8], &version.to_le_bytes());
        }
    }
}

/// The two versions differ in the filter's layout only: every version 1 file holds the same
/// entries, tombstones and properties as its version 2 counterpart, and both filters hold
/// every key.
#[test]
fn version_1_and_2_files_differ_only_in_the_filter() {
    for (v2, v1) in GOLDEN_TABLES.iter().zip(&GOLDEN_TABLES_V1) {
        let (a, b) = (golden(v2.name), golden(v1.name));
        let (ta, tb) = (decode(&a).unwrap(), decode(&b).unwrap());
        assert_eq!(ta.entries, tb.entries, "{}", v1.name);
        assert_eq!(ta.range_tombstones, tb.range_tombstones, "{}", v1.name);
        let (ra, rb) = (
            TableReader::open(&a[..], v2.name).unwrap(),
            TableReader::open(&b[..], v1.name).unwrap(),
        );
        assert_eq!(ra.verify().unwrap(), rb.verify().unwrap(), "{}", v1.name);
    }
}

/// The frame offsets of a table, in file order (data blocks, then meta blocks).
fn frame_offsets(b: &[u8]) -> Vec<usize> {
    let end = b.len() - FOOTER_LEN as usize;
    let mut pos = HEADER_LEN as usize;
    let mut out = Vec::new();
    while pos < end {
        out.push(pos);
        pos += 14 + u32::from_le_bytes(b[pos + 6..pos + 10].try_into().unwrap()) as usize;
    }
    out
}

/// The frame of `block_type` (first of them), as (offset, stored length).
fn frame_of(b: &[u8], block_type: u8) -> (usize, usize) {
    let at = frame_offsets(b)
        .into_iter()
        .find(|&at| b[at] == block_type)
        .unwrap();
    let stored = u32::from_le_bytes(b[at + 6..at + 10].try_into().unwrap()) as usize;
    (at, stored)
}

fn with(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

fn edit(b: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = b.to_vec();
    f(&mut b);
    b
}

/// The seeds of the `table_decode` fuzz target, by name: each is a mode byte (bit 0: repair the
/// checksums before decoding) and a table, whole, damaged, or forged.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let none = golden("table_none_v2.bin");
    let lz4 = golden("table_lz4_v2.bin");
    let zstd = golden("table_zstd_v2.bin");
    let only = golden("table_tombstones_only_v2.bin");
    let n = none.len();
    let f = n - FOOTER_LEN as usize;
    let (index_at, _) = frame_of(&none, 1);
    let (filter_at, _) = frame_of(&none, 2);
    let (props_at, _) = frame_of(&none, 3);
    let (rt_at, _) = frame_of(&none, 4);
    let data = HEADER_LEN as usize;
    let (lz4_data, lz4_stored) = frame_of(&lz4, 0);
    let (zstd_data, zstd_stored) = frame_of(&zstd, 0);
    let data_stored = frame_of(&none, 0).1;

    let mut s: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty", vec![0]),
        ("mode_only", vec![1]),
        ("golden_none", with(0, &none)),
        ("golden_none_repaired", with(1, &none)),
        ("golden_lz4", with(0, &lz4)),
        ("golden_lz4_repaired", with(1, &lz4)),
        ("golden_zstd", with(0, &zstd)),
        ("golden_tombstones_only", with(0, &only)),
        ("flip_header_magic", with(0, &edit(&none, |b| b[0] ^= 1))),
        (
            "flip_footer_version",
            with(0, &edit(&none, |b| b[f + 76] ^= 1)),
        ),
        (
            "flip_footer_table_id",
            with(0, &edit(&none, |b| b[f + 64] ^= 1)),
        ),
        (
            "repaired_footer_table_id",
            with(1, &edit(&none, |b| b[f + 64] ^= 1)),
        ),
        (
            "flip_data_block",
            with(0, &edit(&none, |b| b[data + 20] ^= 0x10)),
        ),
        (
            "flip_index",
            with(0, &edit(&none, |b| b[index_at + 12] ^= 1)),
        ),
        (
            "flip_filter",
            with(0, &edit(&none, |b| b[filter_at + 14] ^= 1)),
        ),
        (
            "flip_properties",
            with(0, &edit(&none, |b| b[props_at + 10] ^= 1)),
        ),
        ("truncated_half", with(0, &none[..n / 2])),
        ("truncated_footer", with(0, &none[..n - 1])),
        ("trailing_byte", with(0, &edit(&none, |b| b.push(0)))),
        // Damage behind the checksums, which mode 1 recomputes.
        (
            "repaired_restart_count_max",
            with(
                1,
                &edit(&none, |b| {
                    let at = data + 10 + data_stored - 4;
                    b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                }),
            ),
        ),
        (
            "repaired_entry_kind_3",
            with(1, &edit(&none, |b| b[data + 12] |= 3)),
        ),
        (
            "repaired_key_byte",
            with(1, &edit(&none, |b| b[data + 13] = 0xff)),
        ),
        (
            "repaired_block_type_1",
            with(1, &edit(&none, |b| b[data] = 1)),
        ),
        (
            "repaired_compression_code_9",
            with(1, &edit(&none, |b| b[data + 1] = 9)),
        ),
        (
            "repaired_uncompressed_len_max",
            with(
                1,
                &edit(&none, |b| {
                    b[data + 2..data + 6].copy_from_slice(&u32::MAX.to_le_bytes())
                }),
            ),
        ),
        (
            "repaired_stored_len_plus_one",
            with(
                1,
                &edit(&none, |b| {
                    let v = u32::from_le_bytes(b[data + 6..data + 10].try_into().unwrap()) + 1;
                    b[data + 6..data + 10].copy_from_slice(&v.to_le_bytes());
                }),
            ),
        ),
        (
            "repaired_filter_probes_0",
            with(1, &edit(&none, |b| b[filter_at + 10] = 0)),
        ),
        (
            "repaired_properties_entries",
            with(1, &edit(&none, |b| b[props_at + 10] ^= 1)),
        ),
        (
            "repaired_tombstone_inverted",
            with(1, &edit(&none, |b| b[rt_at + 12] = 9)),
        ),
        (
            "repaired_footer_index_len_max",
            with(
                1,
                &edit(&none, |b| {
                    b[f + 8..f + 12].copy_from_slice(&u32::MAX.to_le_bytes())
                }),
            ),
        ),
        (
            "repaired_footer_filter_absent",
            with(1, &edit(&none, |b| b[f + 16..f + 32].fill(0))),
        ),
        (
            "lz4_data_flip_repaired",
            with(
                1,
                &edit(&lz4, |b| b[lz4_data + 10 + lz4_stored / 2] ^= 0x20),
            ),
        ),
        (
            "zstd_data_flip_repaired",
            with(
                1,
                &edit(&zstd, |b| b[zstd_data + 10 + zstd_stored / 2] ^= 0x20),
            ),
        ),
    ];

    // Two data blocks swapped: caught by the CRCs (bound to offsets) or, repaired, by the
    // index keys.
    let mut parts = Parts::split(&none);
    parts.data.swap(1, 2);
    let swapped = parts.assemble(true);
    s.push(("swapped_data_blocks", with(0, &swapped)));
    let mut swapped_raw = none.clone();
    let offs = frame_offsets(&none);
    let (a, b, c) = (offs[1], offs[2], offs[3]);
    let block_b = none[b..c].to_vec();
    let block_a = none[a..b].to_vec();
    swapped_raw[a..a + block_b.len()].copy_from_slice(&block_b);
    swapped_raw[a + block_b.len()..c].copy_from_slice(&block_a);
    s.push(("swapped_data_blocks_in_place", with(0, &swapped_raw)));

    // Forged with correct checksums (mode 0): hostile counts and lengths.
    let mut p = Parts::split(&none);
    p.index = Frame::raw(1, Payload::default().v(u64::from(u32::MAX)).0);
    s.push(("forged_index_count_max", with(0, &p.assemble(false))));
    let mut p = Parts::split(&none);
    p.data[0] = Frame::raw(0, Payload::default().v(0).v(1 << 40).v(0).u32(0).u32(1).0);
    s.push(("forged_unshared_len_huge", with(0, &p.assemble(true))));
    let mut p = Parts::split(&none);
    let mut bomb = vec![0x1f, 0x00, 0x01, 0x00];
    bomb.extend(std::iter::repeat_n(0xff, 200));
    bomb.extend_from_slice(&[0x00, 0x50, 0, 0, 0, 0, 0]);
    p.data[0] = Frame {
        block_type: 0,
        compression: 1,
        uncompressed_len: 64 << 20,
        stored: bomb,
    };
    s.push(("forged_lz4_bomb", with(0, &p.assemble(true))));
    let mut p = Parts::split(&none);
    p.range_tombstones = Some(Frame::raw(4, Payload::default().v(1 << 33).0));
    s.push(("forged_tombstone_count_huge", with(0, &p.assemble(false))));
    // The same table, written again by hand: decodes (the forge is faithful).
    s.push((
        "forged_identity",
        with(0, &Parts::split(&none).assemble(true)),
    ));
    // Repair is idempotent on a valid table.
    let mut repaired = none.clone();
    repair_table_checksums(&mut repaired);
    assert_eq!(repaired, none, "repair leaves a valid table as it is");
    s
}

#[test]
fn the_fuzz_seed_corpus_is_derived_from_the_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/table_decode");
    let seeds = seeds();
    assert!(seeds.len() >= 30);
    for (name, bytes) in &seeds {
        check_file(dir.join(name), bytes);
    }
    // Every seed runs through the property without failing.
    for (name, bytes) in &seeds {
        let r = std::panic::catch_unwind(|| flowstate_formats::fuzzing::check_table_decode(bytes));
        assert!(r.is_ok(), "seed {name} fails the property");
    }
}
