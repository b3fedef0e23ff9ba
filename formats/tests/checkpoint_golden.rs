//! Golden files pin the bytes of the checkpoint formats (spec/formats.md section 4): a
//! deterministic record must encode to exactly the committed file, and the committed file
//! must decode to the record. Changing the layout without bumping the version breaks this
//! test. `FLOWSTATE_BLESS=1 cargo test -p flowstate-formats --test checkpoint_golden`
//! rewrites the files after a deliberate change.
//!
//! Every single-bit flip, every truncation and an appended byte of each golden file must be
//! reported as an error naming the file.

use std::fs;
use std::path::PathBuf;

use flowstate_formats::checkpoint::{
    CheckpointMetadataRecord, FileOrigin, KeyedHandleKind, KeyedStateHandleRecord,
    NativeSnapshotRecord, NativeTableRecord, OperatorStateHandleRecord, OriginKind,
    SnapshotKindRecord, StateFileRecord, TableLocation, TaskStateRecord,
};
use flowstate_formats::snapshot::{SnapshotMeta, StateKind, StateMetaRecord};
use flowstate_formats::{CodecRecord, FormatError};

fn file(path: &str, size: u64) -> StateFileRecord {
    StateFileRecord {
        crc32c: None,
        path: path.into(),
        size,
    }
}

fn keyed_handle() -> KeyedStateHandleRecord {
    KeyedStateHandleRecord {
        kind: KeyedHandleKind::KeyGroupFiles,
        shared: vec![],
        key_group_range: (43, 85),
        files: vec![
            file("chk-42/keyed-agg-1", 65_537),
            file("chk-42/keyed-agg-1-b", 0),
        ],
    }
}

fn operator_handle() -> OperatorStateHandleRecord {
    OperatorStateHandleRecord {
        file: file("chk-42/source-0-offsets", 300),
    }
}

/// Two operators: a keyed one at parallelism 3 (one subtask with two handles, one with
/// none) and a source with operator state.
fn metadata() -> CheckpointMetadataRecord {
    let keyed_task = |index: u32, keyed: Vec<KeyedStateHandleRecord>| TaskStateRecord {
        operator_id: "keyed-agg".into(),
        subtask_index: index,
        parallelism: 3,
        max_parallelism: 128,
        keyed,
        operator: vec![],
    };
    CheckpointMetadataRecord {
        checkpoint_id: 42,
        kind: SnapshotKindRecord::Checkpoint,
        timestamp_millis: 1_700_000_123_456,
        tasks: vec![
            keyed_task(
                0,
                vec![KeyedStateHandleRecord {
                    kind: KeyedHandleKind::KeyGroupFiles,
                    shared: vec![],
                    key_group_range: (0, 42),
                    files: vec![file("chk-42/keyed-agg-0", 1_000)],
                }],
            ),
            keyed_task(1, vec![keyed_handle()]),
            keyed_task(2, vec![]),
            TaskStateRecord {
                operator_id: "source \u{e9}".into(),
                subtask_index: 0,
                parallelism: 1,
                max_parallelism: 1,
                keyed: vec![],
                operator: vec![operator_handle()],
            },
        ],
    }
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `encoded` with the golden file `name` (or rewrites it under `FLOWSTATE_BLESS=1`)
/// and returns the golden bytes.
fn check_golden(name: &str, encoded: &[u8]) -> Vec<u8> {
    let path = golden_path(name);
    if std::env::var_os("FLOWSTATE_BLESS").is_some_and(|v| v == "1") {
        fs::write(&path, encoded).expect("the golden file is writable");
    }
    let golden = fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} is readable ({e}); run with FLOWSTATE_BLESS=1 to create it",
            path.display()
        )
    });
    assert!(
        golden == encoded,
        "{name}: the encoding changed ({} bytes, golden {} bytes). If this is deliberate, bump \
         the format version, update spec/formats.md section 4 and re-run with FLOWSTATE_BLESS=1",
        encoded.len(),
        golden.len()
    );
    golden
}

/// Every single-bit flip, every truncation and one appended byte make `decode` fail with an
/// error naming the file.
fn check_damage_is_detected<T>(
    golden: &[u8],
    decode: impl Fn(&[u8], &str) -> Result<T, FormatError>,
) {
    let name = "golden-under-test";
    let check = |bytes: &[u8], what: &str| match decode(bytes, name) {
        Ok(_) => panic!("{what} was not detected"),
        Err(err) => {
            assert_eq!(err.file(), Some(name), "{what}: {err}");
            assert!(err.is_corruption(), "{what}: {err}");
            assert!(
                err.offset().unwrap_or(0) <= golden.len() as u64,
                "{what}: {err}"
            );
        }
    };
    for i in 0..golden.len() {
        for bit in 0..8 {
            let mut damaged = golden.to_vec();
            damaged[i] ^= 1 << bit;
            check(&damaged, &format!("flip of bit {bit} of byte {i}"));
        }
        check(&golden[..i], &format!("truncation to {i} bytes"));
    }
    let mut longer = golden.to_vec();
    longer.push(0);
    check(&longer, "an appended byte");
}

#[test]
fn metadata_matches_its_golden_file_and_damage_is_detected() {
    let encoded = metadata().encode("chk-42/_metadata").unwrap();
    let golden = check_golden("checkpoint_metadata_v1.bin", &encoded);
    assert_eq!(
        CheckpointMetadataRecord::decode(&golden, "chk-42/_metadata").unwrap(),
        metadata()
    );
    check_damage_is_detected(&golden, CheckpointMetadataRecord::decode);
}

#[test]
fn keyed_handle_matches_its_golden_file_and_damage_is_detected() {
    let encoded = keyed_handle().encode("handle").unwrap();
    let golden = check_golden("keyed_state_handle_v1.bin", &encoded);
    assert_eq!(
        KeyedStateHandleRecord::decode(&golden, "handle").unwrap(),
        keyed_handle()
    );
    check_damage_is_detected(&golden, KeyedStateHandleRecord::decode);
}

#[test]
fn operator_handle_matches_its_golden_file_and_damage_is_detected() {
    let encoded = operator_handle().encode("handle").unwrap();
    let golden = check_golden("operator_state_handle_v1.bin", &encoded);
    assert_eq!(
        OperatorStateHandleRecord::decode(&golden, "handle").unwrap(),
        operator_handle()
    );
    check_damage_is_detected(&golden, OperatorStateHandleRecord::decode);
}

#[test]
fn metadata_header_bytes_are_as_specified() {
    let golden = fs::read(golden_path("checkpoint_metadata_v1.bin")).unwrap();
    // spec/formats.md section 4: magic, version 1, id 42, kind 0, timestamp, 4 tasks.
    assert_eq!(&golden[..6], b"FSCM\x01\x00");
    assert_eq!(golden[6..14], 42u64.to_le_bytes());
    assert_eq!(golden[14], 0);
    assert_eq!(golden[15..23], 1_700_000_123_456u64.to_le_bytes());
    assert_eq!(golden[23..27], 4u32.to_le_bytes());
    // The first task's operator id follows: u16 length 9, "keyed-agg".
    assert_eq!(&golden[27..38], b"\x09\x00keyed-agg");
    let crc = flowstate_formats::codec::checksum::crc32(&golden[..golden.len() - 4]);
    assert_eq!(golden[golden.len() - 4..], crc.to_le_bytes());
}

fn native_handle() -> KeyedStateHandleRecord {
    KeyedStateHandleRecord {
        kind: KeyedHandleKind::LsmNative,
        key_group_range: (0, 63),
        files: vec![file("chk-42/keyed-agg-0", 312)],
        shared: vec![
            file(
                "shared/00112233445566778899aabbccddeeff-0000000001000001.sst",
                4_096,
            ),
            file(
                "shared/00112233445566778899aabbccddeeff-0000000001000002.sst",
                70_000,
            ),
        ],
    }
}

fn native_snapshot() -> NativeSnapshotRecord {
    let table =
        |level: u8, id: u64, name: &str, smallest: &[u8], largest: &[u8]| NativeTableRecord {
            level,
            location: TableLocation::Shared,
            table_id: id,
            name: name.into(),
            size: 4_096 * id % 100_000,
            crc32c: (id as u32).wrapping_mul(0x9e37_79b9),
            smallest: smallest.to_vec(),
            largest: largest.to_vec(),
        };
    NativeSnapshotRecord {
        checkpoint_id: 42,
        origin: Some(FileOrigin {
            kind: OriginKind::Checkpoint,
            id: 42,
            name: "keyed-agg-0".into(),
        }),
        meta: SnapshotMeta {
            max_parallelism: 128,
            key_group_start: 0,
            key_group_end: 63,
            key_codec: CodecRecord::new("u64", 1),
            states: vec![
                StateMetaRecord {
                    name: "count".into(),
                    kind: StateKind::Value,
                    namespace: CodecRecord::new("unit", 1),
                    value: CodecRecord::new("u64", 1),
                    user_key: None,
                    ttl_millis: None,
                },
                StateMetaRecord {
                    name: "visits".into(),
                    kind: StateKind::Map,
                    namespace: CodecRecord::new("unit", 1),
                    value: CodecRecord::new("u32", 1),
                    user_key: Some(CodecRecord::new("string", 1)),
                    ttl_millis: None,
                },
            ],
        },
        tables: vec![
            table(
                0,
                17,
                "00112233445566778899aabbccddeeff-0000000000000011.sst",
                b"\0\0\0\0\0\x05a",
                b"\0\0\0\x01\0\x3fz",
            ),
            table(
                6,
                3,
                "00112233445566778899aabbccddeeff-0000000000000003.sst",
                b"\0\0\0\0\0\0",
                b"\0\0\0\0\0\x20",
            ),
            NativeTableRecord {
                location: TableLocation::Private,
                ..table(
                    6,
                    4,
                    "000004.sst",
                    b"\0\0\0\0\0\x21",
                    b"\0\0\0\x01\0\x3f\xff",
                )
            },
        ],
        timer_layout: true,
    }
}

#[test]
fn native_handle_matches_its_golden_file_and_damage_is_detected() {
    let encoded = native_handle().encode("handle").unwrap();
    let golden = check_golden("keyed_state_handle_native_v1.bin", &encoded);
    assert_eq!(golden[6], 2, "kind byte 2: LSM native");
    assert_eq!(
        KeyedStateHandleRecord::decode(&golden, "handle").unwrap(),
        native_handle()
    );
    check_damage_is_detected(&golden, KeyedStateHandleRecord::decode);
}

/// A task's state standing alone: a heap chain handle and an operator handle (version 2).
fn task_state() -> TaskStateRecord {
    TaskStateRecord {
        operator_id: "window-sum".into(),
        subtask_index: 1,
        parallelism: 2,
        max_parallelism: 128,
        keyed: vec![heap_chain_handle()],
        operator: vec![OperatorStateHandleRecord {
            file: StateFileRecord {
                path: "chk-9/window-sum-1-operator".into(),
                size: 211,
                crc32c: Some(0x5eed_5eed),
            },
        }],
    }
}

#[test]
fn a_task_state_standing_alone_matches_its_golden_file_and_damage_is_detected() {
    let encoded = task_state().encode("ack").unwrap();
    let golden = check_golden("task_state_v2.bin", &encoded);
    assert_eq!(&golden[..6], b"FSTS\x02\x00");
    assert_eq!(
        TaskStateRecord::decode(&golden, "ack").unwrap(),
        task_state()
    );
    check_damage_is_detected(&golden, TaskStateRecord::decode);
    // The rules of _metadata's task records hold: an index past the parallelism is refused.
    let bad = TaskStateRecord {
        subtask_index: 2,
        ..task_state()
    };
    assert!(bad.encode("f").is_err());
}

/// A heap incremental checkpoint's handle: a base and two deltas, with checksums (version 2).
fn heap_chain_handle() -> KeyedStateHandleRecord {
    let shared = |name: &str, size: u64, crc: u32| StateFileRecord {
        path: format!("shared/{name}"),
        size,
        crc32c: Some(crc),
    };
    KeyedStateHandleRecord {
        kind: KeyedHandleKind::HeapChain,
        key_group_range: (64, 127),
        files: Vec::new(),
        shared: vec![
            shared(
                "op-1-0123456789abcdef-0000000000000007.base",
                90_000,
                0x0bad_cafe,
            ),
            shared(
                "op-1-0123456789abcdef-0000000000000008.delta",
                900,
                0x1234_5678,
            ),
            shared(
                "op-1-0123456789abcdef-0000000000000009.delta",
                850,
                0x9abc_def0,
            ),
        ],
    }
}

#[test]
fn heap_chain_handle_matches_its_golden_file_and_damage_is_detected() {
    let encoded = heap_chain_handle().encode("handle").unwrap();
    let golden = check_golden("keyed_state_handle_heap_chain_v2.bin", &encoded);
    assert_eq!(golden[6], 3, "kind byte 3: heap chain");
    assert_eq!(
        KeyedStateHandleRecord::decode(&golden, "handle").unwrap(),
        heap_chain_handle()
    );
    check_damage_is_detected(&golden, KeyedStateHandleRecord::decode);
    // A chain lists no file of its own and at least one shared file.
    let mut own = heap_chain_handle();
    own.files = vec![own.shared[0].clone()];
    assert!(own.encode("f").is_err());
    let mut empty = heap_chain_handle();
    empty.shared.clear();
    assert!(empty.encode("f").is_err());
}

#[test]
fn native_snapshot_matches_its_golden_file_and_damage_is_detected() {
    let encoded = native_snapshot().encode("chk-42/keyed-agg-0").unwrap();
    let golden = check_golden("lsm_native_snapshot_v3.bin", &encoded);
    assert_eq!(&golden[..6], b"FSLN\x03\x00");
    assert_eq!(golden[6..14], 42u64.to_le_bytes());
    assert_eq!(
        NativeSnapshotRecord::decode(&golden, "chk-42/keyed-agg-0").unwrap(),
        native_snapshot()
    );
    check_damage_is_detected(&golden, NativeSnapshotRecord::decode);
    // An origin whose id is not the checkpoint's is refused by the encoder.
    let mut bad = native_snapshot();
    bad.origin.as_mut().expect("the sample has an origin").id = 41;
    assert!(bad.encode("f").is_err());
}

#[test]
fn native_snapshots_of_version_2_are_still_read_in_the_keyed_layout() {
    let path = golden_path("lsm_native_snapshot_v2.bin");
    let golden = fs::read(&path).expect("the version-2 golden file is kept");
    assert_eq!(&golden[..6], b"FSLN\x02\x00");
    let decoded = NativeSnapshotRecord::decode(&golden, "chk-42/keyed-agg-0").unwrap();
    assert_eq!(
        decoded,
        NativeSnapshotRecord {
            timer_layout: false,
            ..native_snapshot()
        }
    );
    // Written again without the timer layout, it is the same file.
    assert_eq!(decoded.encode("chk-42/keyed-agg-0").unwrap(), golden);
    check_damage_is_detected(&golden, NativeSnapshotRecord::decode);
}

#[test]
fn native_snapshots_of_version_1_are_still_read_without_an_origin() {
    let path = golden_path("lsm_native_snapshot_v1.bin");
    let golden = fs::read(&path).expect("the version-1 golden file is kept");
    assert_eq!(&golden[..6], b"FSLN\x01\x00");
    let decoded = NativeSnapshotRecord::decode(&golden, "chk-42/keyed-agg-0").unwrap();
    assert_eq!(decoded.origin, None);
    assert_eq!(
        decoded,
        NativeSnapshotRecord {
            origin: None,
            timer_layout: false,
            ..native_snapshot()
        }
    );
    check_damage_is_detected(&golden, NativeSnapshotRecord::decode);
}

/// The metadata of [`metadata`] with a CRC-32C on every file: format version 2.
fn metadata_v2() -> CheckpointMetadataRecord {
    let mut m = metadata();
    let mut next = 0x5eed_0001u32;
    for task in &mut m.tasks {
        for handle in &mut task.keyed {
            for file in handle.files.iter_mut().chain(handle.shared.iter_mut()) {
                file.crc32c = Some(next);
                next = next.wrapping_mul(0x9e37_79b9).wrapping_add(1);
            }
        }
        for handle in &mut task.operator {
            handle.file.crc32c = Some(next);
            next = next.wrapping_mul(0x9e37_79b9).wrapping_add(1);
        }
    }
    m
}

#[test]
fn metadata_v2_matches_its_golden_file_and_damage_is_detected() {
    let encoded = metadata_v2().encode("chk-42/_metadata").unwrap();
    let golden = check_golden("checkpoint_metadata_v2.bin", &encoded);
    assert_eq!(&golden[..6], b"FSCM\x02\x00");
    assert_eq!(
        CheckpointMetadataRecord::decode(&golden, "chk-42/_metadata").unwrap(),
        metadata_v2()
    );
    check_damage_is_detected(&golden, CheckpointMetadataRecord::decode);
    // Version 1 files still read, with no checksums.
    let v1 = fs::read(golden_path("checkpoint_metadata_v1.bin")).unwrap();
    assert_eq!(
        CheckpointMetadataRecord::decode(&v1, "chk-42/_metadata").unwrap(),
        metadata()
    );
}
