//! Whatever the writer accepts, the reader returns unchanged: arbitrary states, key groups,
//! entries, compressions and block sizes (property test); and a key group read alone gives
//! exactly its share of a full read.

use std::collections::BTreeMap;

use flowstate_formats::fuzzing::{self, Entry};
use flowstate_formats::snapshot::{
    KeyGroupEncoder, OwnedValue, SnapshotMeta, SnapshotReader, SnapshotWriter,
    SnapshotWriterOptions, StateKind, StateMetaRecord, ValueShape,
};
use flowstate_formats::{CodecRecord, Compression, FormatError, ReadLimits};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    // Few distinct byte values, so that keys collide and compression has work to do.
    prop::collection::vec(0u8..4, 0..max)
}

type RawValue = (Vec<u8>, Vec<Vec<u8>>, BTreeMap<Vec<u8>, Vec<u8>>);

fn raw_value() -> impl Strategy<Value = RawValue> {
    (
        bytes(40),
        prop::collection::vec(bytes(6), 0..5),
        prop::collection::btree_map(bytes(4), bytes(6), 0..5),
    )
}

fn input() -> impl Strategy<Value = (SnapshotMeta, Vec<Entry>, Compression, usize)> {
    let kinds = prop::collection::vec(0u8..5, 1..5);
    let range = (0u16..120, 0u16..8);
    let raw = prop::collection::vec((0u16..8, 0usize..4, bytes(5), bytes(3), raw_value()), 0..60);
    let compression = prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd { level: 1 }),
    ];
    let block_size = prop_oneof![Just(1usize), Just(50), Just(1 << 20)];
    (kinds, range, raw, compression, block_size).prop_map(
        |(kinds, (start, extra), raw, compression, block_size)| {
            let states: Vec<StateMetaRecord> = kinds
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    let kind = StateKind::from_code(k).unwrap();
                    StateMetaRecord {
                        name: format!("s{i}"),
                        kind,
                        namespace: CodecRecord::new("unit", 1),
                        value: CodecRecord::new("bytes", 2),
                        user_key: (kind == StateKind::Map).then(|| CodecRecord::new("k", 1)),
                        ttl_millis: None,
                    }
                })
                .collect();
            let end = (start + extra).min(127);
            let mut sorted = BTreeMap::new();
            for (kg, state, key, ns, (v, list, map)) in raw {
                let kg = start + kg % (end - start + 1);
                let state = state % states.len();
                let value = match states[state].kind.shape() {
                    ValueShape::Value => OwnedValue::Value(v),
                    ValueShape::List => OwnedValue::List(list),
                    ValueShape::Map => OwnedValue::Map(map.into_iter().collect()),
                };
                sorted.insert((kg, state as u32, key, ns), value);
            }
            let meta = SnapshotMeta {
                max_parallelism: 128,
                key_group_start: start,
                key_group_end: end,
                key_codec: CodecRecord::new("bytes", 1),
                states,
            };
            let entries = sorted
                .into_iter()
                .map(|((kg, s, k, n), v)| (kg, s, k, n, v))
                .collect();
            (meta, entries, compression, block_size)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn what_is_written_reads_back((meta, entries, compression, block_size) in input()) {
        let bytes = fuzzing::encode_snapshot(&meta, &entries, compression, block_size).unwrap();
        let (meta2, entries2) = fuzzing::decode_snapshot(&bytes, ReadLimits::default()).unwrap();
        prop_assert_eq!(&meta2, &meta);
        prop_assert_eq!(&entries2, &entries);

        let r = SnapshotReader::open(&bytes[..], "f").unwrap();
        prop_assert_eq!(r.entry_count(), entries.len() as u64);
        for kg in r.key_group_range() {
            let mut alone = Vec::new();
            let n = r.read_key_group(kg, |e| {
                alone.push((kg, e.state_index, e.key.to_vec(), e.namespace.to_vec(), e.value.to_owned_value()));
                Ok::<_, FormatError>(())
            }).unwrap();
            let expected: Vec<Entry> = entries.iter().filter(|e| e.0 == kg).cloned().collect();
            prop_assert_eq!(n, expected.len() as u64);
            prop_assert_eq!(r.location(kg).map_or(0, |l| l.entry_count), n);
            prop_assert_eq!(alone, expected);
        }
        // The property of the fuzz target holds on every valid file too.
        let mut input = vec![0u8];
        input.extend_from_slice(&bytes);
        fuzzing::check_snapshot_decode(&input);
    }
}

/// Writes `entries` with every key group of the range encoded apart by a [`KeyGroupEncoder`]
/// (each state's entries through `add_sorted_entries`) and appended with `add_key_group`,
/// empty key groups included; the key groups are encoded in reverse order, as threads might
/// finish them.
fn encode_apart(
    meta: &SnapshotMeta,
    entries: &[Entry],
    compression: Compression,
    block_size: usize,
) -> Vec<u8> {
    let options = SnapshotWriterOptions {
        compression,
        block_size,
        file_name: fuzzing::FILE_NAME.to_owned(),
        origin: None,
        delta: None,
    };
    let mut encoder = KeyGroupEncoder::new(meta, &options).unwrap();
    let mut groups = Vec::new();
    for kg in (meta.key_group_start..=meta.key_group_end).rev() {
        encoder.begin(kg, Vec::new());
        for state in 0..meta.states.len() as u32 {
            let run = entries
                .iter()
                .filter(|e| e.0 == kg && e.1 == state)
                .map(|e| (&e.2[..], &e.3[..], e.4.as_entry_value().unwrap()));
            encoder.add_sorted_entries(state, run).unwrap();
        }
        groups.push(encoder.finish().unwrap());
    }
    let mut out = Vec::new();
    let mut w = SnapshotWriter::with_options(&mut out, meta, options).unwrap();
    for group in groups.iter().rev() {
        w.add_key_group(group).unwrap();
    }
    w.finish().unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn key_groups_encoded_apart_give_the_bytes_written_entry_by_entry(
        (meta, entries, compression, block_size) in input()
    ) {
        let bytes = fuzzing::encode_snapshot(&meta, &entries, compression, block_size).unwrap();
        prop_assert_eq!(encode_apart(&meta, &entries, compression, block_size), bytes);
    }
}

#[test]
fn a_key_group_encoded_apart_must_follow_the_previous_one_in_range() {
    let meta = SnapshotMeta {
        max_parallelism: 8,
        key_group_start: 2,
        key_group_end: 5,
        key_codec: CodecRecord::new("bytes", 1),
        states: vec![StateMetaRecord {
            name: "v".into(),
            kind: StateKind::Value,
            namespace: CodecRecord::new("unit", 1),
            value: CodecRecord::new("bytes", 1),
            user_key: None,
            ttl_millis: None,
        }],
    };
    let options = SnapshotWriterOptions::default();
    let mut encoder = KeyGroupEncoder::new(&meta, &options).unwrap();
    let mut group = |kg: u16| {
        encoder.begin(kg, Vec::new());
        encoder
            .add_entry(
                0,
                b"k",
                b"",
                flowstate_formats::snapshot::EntryValue::Value(b"v"),
            )
            .unwrap();
        encoder.finish().unwrap()
    };
    let (g1, g3, g4, g6) = (group(1), group(3), group(4), group(6));
    let mut w = SnapshotWriter::with_options(Vec::new(), &meta, options).unwrap();
    for outside in [&g1, &g6] {
        let err = w.add_key_group(outside).unwrap_err();
        assert!(matches!(err, FormatError::InvalidInput { .. }), "{err}");
    }
    w.add_key_group(&g4).unwrap();
    for not_after in [&g3, &g4] {
        let err = w.add_key_group(not_after).unwrap_err();
        assert!(err.to_string().contains("must ascend"), "{err}");
    }
    w.begin_key_group(5).unwrap();
    assert!(w
        .add_key_group(&g4)
        .unwrap_err()
        .to_string()
        .contains("still open"));
    w.end_key_group().unwrap();
    let summary = w.finish().unwrap();
    assert_eq!(summary.entry_count, 1);
}

#[test]
fn a_visitor_error_stops_the_reading_and_is_returned() {
    #[derive(Debug)]
    enum MyError {
        Format(FormatError),
        Stop(u32),
    }
    impl From<FormatError> for MyError {
        fn from(e: FormatError) -> Self {
            MyError::Format(e)
        }
    }
    let meta = SnapshotMeta {
        max_parallelism: 4,
        key_group_start: 0,
        key_group_end: 3,
        key_codec: CodecRecord::new("bytes", 1),
        states: vec![StateMetaRecord {
            name: "v".into(),
            kind: StateKind::Value,
            namespace: CodecRecord::new("unit", 1),
            value: CodecRecord::new("bytes", 1),
            user_key: None,
            ttl_millis: None,
        }],
    };
    let entries: Vec<Entry> = (0..5u8)
        .map(|i| (2, 0, vec![i], vec![], OwnedValue::Value(vec![i])))
        .collect();
    let bytes = fuzzing::encode_snapshot(&meta, &entries, Compression::None, 1 << 20).unwrap();
    let r = SnapshotReader::open(&bytes[..], "f").unwrap();
    let mut seen = 0;
    let err = r
        .read_key_group(2, |e| {
            seen += 1;
            if e.key == [2] {
                Err(MyError::Stop(2))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, MyError::Stop(2)));
    assert_eq!(seen, 3);
    match r.read_key_group(7, |_| Ok::<_, MyError>(())) {
        Err(MyError::Format(e)) => assert!(matches!(e, FormatError::InvalidInput { .. })),
        other => panic!("{other:?}"),
    }
}
