//! Inputs and helpers shared by the snapshot and operator-state tests: the deterministic
//! content of the golden files, the files themselves, and a way to forge files the writer
//! would refuse to produce.
#![allow(dead_code)]

use std::num::NonZeroU64;
use std::path::PathBuf;

use flowstate_formats::checkpoint::{FileOrigin, OriginKind};
use flowstate_formats::codec::checksum::crc32;
use flowstate_formats::codec::varint;
use flowstate_formats::fuzzing::{self, Entry};
use flowstate_formats::operator::{
    OperatorState, OperatorStateData, OperatorStateMeta, OperatorStateMode, OperatorStateWriter,
};
use flowstate_formats::snapshot::{
    DeltaOf, OwnedValue, SnapshotMeta, SnapshotWriterOptions, StateKind, StateMetaRecord,
};
use flowstate_formats::{CodecRecord, Compression, FormatError, ReadLimits};

/// The directory of the golden files.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Reads golden file `name`.
pub fn golden(name: &str) -> Vec<u8> {
    let path = golden_dir().join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("golden file {} is readable: {e}", path.display()))
}

/// The block size the golden snapshots are written with: small, so that key group 15 spans
/// several blocks.
pub const GOLDEN_BLOCK_SIZE: usize = 160;

/// The golden snapshot files (format version 2, with an origin) and the compression each is
/// written with.
pub const GOLDEN_SNAPSHOTS: [(&str, Compression); 3] = [
    ("snapshot_none_v2.bin", Compression::None),
    ("snapshot_lz4_v2.bin", Compression::Lz4),
    ("snapshot_zstd_v2.bin", Compression::Zstd { level: 3 }),
];

/// The golden snapshot files of format version 1 (no origin), kept to show they are still
/// read: the same content as [`GOLDEN_SNAPSHOTS`].
pub const GOLDEN_SNAPSHOTS_V1: [&str; 3] = [
    "snapshot_none_v1.bin",
    "snapshot_lz4_v1.bin",
    "snapshot_zstd_v1.bin",
];

/// The golden operator-state file (format version 2, with an origin).
pub const GOLDEN_OPERATOR_STATE: &str = "operator_state_v2.bin";

/// The golden operator-state file of format version 1 (no origin block), still read.
pub const GOLDEN_OPERATOR_STATE_V1: &str = "operator_state_v1.bin";

/// The origin the golden files of version 2 record.
pub fn golden_origin() -> FileOrigin {
    FileOrigin {
        kind: OriginKind::Checkpoint,
        id: 7,
        name: "golden".into(),
    }
}

fn codec(name: &str) -> CodecRecord {
    CodecRecord::new(name, 1)
}

/// Four states, one of each layout (and an aggregating one), over key groups 10..=17 of 128.
pub fn golden_meta() -> SnapshotMeta {
    SnapshotMeta {
        max_parallelism: 128,
        key_group_start: 10,
        key_group_end: 17,
        key_codec: codec("string"),
        states: vec![
            StateMetaRecord {
                name: "clicks".into(),
                kind: StateKind::Value,
                namespace: codec("unit"),
                value: codec("u64"),
                user_key: None,
                ttl_millis: None,
            },
            StateMetaRecord {
                name: "events".into(),
                kind: StateKind::List,
                namespace: codec("time-window"),
                value: codec("string"),
                user_key: None,
                ttl_millis: NonZeroU64::new(3_600_000),
            },
            StateMetaRecord {
                name: "profile".into(),
                kind: StateKind::Map,
                namespace: codec("unit"),
                value: codec("string"),
                user_key: Some(codec("string")),
                ttl_millis: None,
            },
            StateMetaRecord {
                name: "average".into(),
                kind: StateKind::Aggregating,
                namespace: codec("unit"),
                value: codec("tuple(u64,u64)"),
                user_key: None,
                ttl_millis: None,
            },
        ],
    }
}

/// A `string` codec encoding.
pub fn s(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    varint::encode_u64(text.len() as u64, &mut out);
    out.extend_from_slice(text.as_bytes());
    out
}

fn window(start: i64) -> Vec<u8> {
    let mut out = start.to_le_bytes().to_vec();
    out.extend_from_slice(&(start + 60_000).to_le_bytes());
    out
}

fn pair(a: u64, b: u64) -> Vec<u8> {
    let mut out = a.to_le_bytes().to_vec();
    out.extend_from_slice(&b.to_le_bytes());
    out
}

/// The entries of the golden snapshots, in the order a reader returns them. Key groups are
/// assigned by hand (the format does not hash keys): 10 holds every state, 12 a map with
/// several user keys, 15 enough list entries to span several blocks, 17 a value; 11, 13, 14
/// and 16 are empty.
pub fn golden_entries() -> Vec<Entry> {
    let unit = Vec::new;
    let mut e: Vec<Entry> = vec![
        (
            10,
            0,
            s("alice"),
            unit(),
            OwnedValue::Value(7u64.to_le_bytes().to_vec()),
        ),
        (
            10,
            0,
            s("bob"),
            unit(),
            OwnedValue::Value(0u64.to_le_bytes().to_vec()),
        ),
        (
            10,
            1,
            s("alice"),
            window(0),
            OwnedValue::List(vec![s("click"), s("click"), s("scroll")]),
        ),
        (10, 1, s("alice"), window(60_000), OwnedValue::List(vec![])),
        (
            10,
            2,
            s("bob"),
            unit(),
            OwnedValue::Map(vec![(s("city"), s("Lyon")), (s("lang"), s("fr"))]),
        ),
        (10, 3, s("bob"), unit(), OwnedValue::Value(pair(12, 3))),
        (
            12,
            2,
            s("carol"),
            unit(),
            OwnedValue::Map(
                (0..6)
                    .map(|i| (s(&format!("k{i}")), s(&"value-".repeat(i + 1))))
                    .collect(),
            ),
        ),
        (
            12,
            2,
            s("dave"),
            unit(),
            OwnedValue::Map(vec![(s(""), s(""))]),
        ),
    ];
    for i in 0..12 {
        e.push((
            15,
            1,
            s(&format!("user-{i:02}")),
            window(i * 60_000),
            OwnedValue::List(vec![s("page-view"); (i % 4) as usize + 1]),
        ));
    }
    e.push((15, 3, s("user-00"), unit(), OwnedValue::Value(pair(1, 1))));
    e.push((
        17,
        0,
        s("zoe"),
        unit(),
        OwnedValue::Value(u64::MAX.to_le_bytes().to_vec()),
    ));
    // The order of encoded bytes, not of the strings: "bob" (03 62 ..) sorts before "alice"
    // (05 61 ..).
    for entry in &mut e {
        if let OwnedValue::Map(pairs) = &mut entry.4 {
            pairs.sort();
        }
    }
    e.sort_by(|a, b| (a.0, a.1, &a.2, &a.3).cmp(&(b.0, b.1, &b.2, &b.3)));
    e
}

/// The golden content written with `compression`.
pub fn encode_golden(compression: Compression) -> Vec<u8> {
    let options = SnapshotWriterOptions {
        compression,
        block_size: GOLDEN_BLOCK_SIZE,
        file_name: "golden".into(),
        origin: Some(golden_origin()),
        delta: None,
    };
    fuzzing::encode_snapshot_with(&golden_meta(), &golden_entries(), options)
        .expect("the golden input is valid")
}

/// The golden delta file (format version 3, spec/formats.md 3.11).
pub const GOLDEN_DELTA: &str = "snapshot_delta_v3.bin";

/// What the golden delta applies to.
pub fn golden_delta_of() -> DeltaOf {
    DeltaOf {
        base_checkpoint: 7,
        position: 2,
    }
}

/// The golden delta's changes over [`golden_meta`]: changed entries and removals in three key
/// groups, in the order a reader returns them (per key group, per state its changes, then its
/// removals).
pub fn golden_delta_entries() -> Vec<Entry> {
    let unit = Vec::new;
    vec![
        (
            10,
            0,
            s("alice"),
            unit(),
            OwnedValue::Value(8u64.to_le_bytes().to_vec()),
        ),
        (10, 0, s("bob"), unit(), OwnedValue::Removed),
        (10, 1, s("alice"), window(60_000), OwnedValue::Removed),
        (
            12,
            2,
            s("carol"),
            unit(),
            OwnedValue::Map(vec![(s("lang"), s("de"))]),
        ),
        (12, 2, s("bob"), unit(), OwnedValue::Removed),
        (16, 0, s("dave"), unit(), OwnedValue::Removed),
    ]
}

/// The golden delta written without compression.
pub fn encode_golden_delta() -> Vec<u8> {
    let options = SnapshotWriterOptions {
        compression: Compression::None,
        block_size: GOLDEN_BLOCK_SIZE,
        file_name: "golden-delta".into(),
        origin: None,
        delta: Some(golden_delta_of()),
    };
    fuzzing::encode_snapshot_with(&golden_meta(), &golden_delta_entries(), options)
        .expect("the golden delta is valid")
}

/// Decodes a whole snapshot with the default limits.
pub fn decode(bytes: &[u8]) -> Result<(SnapshotMeta, Vec<Entry>), FormatError> {
    fuzzing::decode_snapshot(bytes, ReadLimits::default())
}

/// The states of the golden operator-state file: one of each mode.
pub fn golden_operator_states() -> Vec<OperatorState> {
    vec![
        OperatorState {
            meta: OperatorStateMeta {
                name: "kafka-offsets".into(),
                mode: OperatorStateMode::SplitList,
                value: codec("tuple(string,u32,i64)"),
                key: None,
            },
            data: OperatorStateData::List(
                (0..3u32)
                    .map(|p| {
                        let mut e = s("orders");
                        e.extend_from_slice(&p.to_le_bytes());
                        e.extend_from_slice(&(1000 * i64::from(p) + 17).to_le_bytes());
                        e
                    })
                    .collect(),
            ),
        },
        OperatorState {
            meta: OperatorStateMeta {
                name: "watermarks".into(),
                mode: OperatorStateMode::UnionList,
                value: codec("i64"),
                key: None,
            },
            data: OperatorStateData::List(vec![]),
        },
        OperatorState {
            meta: OperatorStateMeta {
                name: "rules".into(),
                mode: OperatorStateMode::BroadcastMap,
                value: codec("string"),
                key: Some(codec("string")),
            },
            // Ascending by encoded key: "region" (06 ..) before "max-rate" (08 ..).
            data: OperatorStateData::Map(vec![
                (s("region"), s("eu-west")),
                (s("max-rate"), s("100/s")),
            ]),
        },
    ]
}

/// The golden operator-state content, encoded.
pub fn encode_golden_operator_state() -> Vec<u8> {
    let mut out = Vec::new();
    let origin = golden_origin();
    let mut w = OperatorStateWriter::with_origin(&mut out, "golden", Some(&origin))
        .expect("writing to memory");
    for state in golden_operator_states() {
        match &state.data {
            OperatorStateData::List(items) => w.write_list_state(&state.meta, items),
            OperatorStateData::Map(pairs) => {
                w.write_map_state(&state.meta, pairs.iter().map(|(k, v)| (k, v)))
            }
        }
        .expect("the golden input is valid");
    }
    w.finish().expect("writing to memory");
    out
}

/// A snapshot of `meta` whose key-group blocks are the given raw blocks (key group,
/// compression code, uncompressed length, stored payload), with a correct index, correct
/// footer and correct checksums: for content the writer would refuse. Entries per key group
/// are taken from `entries`.
pub fn forge_snapshot(meta: &SnapshotMeta, blocks: &[ForgedBlock]) -> Vec<u8> {
    let empty = fuzzing::encode_snapshot(meta, &[], Compression::None, 1024).unwrap();
    let meta_len = u32::from_le_bytes(
        empty[empty.len() - 48..empty.len() - 44]
            .try_into()
            .unwrap(),
    );
    let data_start = 12 + meta_len as usize;
    let mut out = empty[..data_start].to_vec();
    let first = meta.key_group_start;
    let n = usize::from(meta.key_group_end - first) + 1;
    let mut slots = vec![(0u64, 0u64, 0u64); n];
    for b in blocks {
        let at = out.len() as u64;
        out.extend_from_slice(&b.key_group.to_le_bytes());
        out.push(b.compression);
        out.extend_from_slice(&b.uncompressed_len.to_le_bytes());
        out.extend_from_slice(&(b.stored.len() as u32).to_le_bytes());
        out.extend_from_slice(&b.stored);
        let crc = crc32(&out[at as usize..]);
        out.extend_from_slice(&crc.to_le_bytes());
        let slot = &mut slots[usize::from(b.key_group - first)];
        if slot.1 == 0 {
            slot.0 = at;
        }
        slot.1 += out.len() as u64 - at;
        slot.2 += b.entries;
    }
    let index_at = out.len() as u64;
    let mut index = Vec::new();
    index.extend_from_slice(&first.to_le_bytes());
    index.extend_from_slice(&meta.key_group_end.to_le_bytes());
    for (o, l, e) in &slots {
        index.extend_from_slice(&o.to_le_bytes());
        index.extend_from_slice(&l.to_le_bytes());
        index.extend_from_slice(&e.to_le_bytes());
    }
    out.extend_from_slice(&index);
    let mut footer = Vec::new();
    footer.extend_from_slice(&12u64.to_le_bytes());
    footer.extend_from_slice(&meta_len.to_le_bytes());
    footer.extend_from_slice(&crc32(&out[12..data_start]).to_le_bytes());
    footer.extend_from_slice(&index_at.to_le_bytes());
    footer.extend_from_slice(&(index.len() as u32).to_le_bytes());
    footer.extend_from_slice(&crc32(&index).to_le_bytes());
    let total: u64 = slots.iter().map(|s| s.2).sum();
    footer.extend_from_slice(&total.to_le_bytes());
    footer.extend_from_slice(&crc32(&footer).to_le_bytes());
    footer.extend_from_slice(&flowstate_formats::snapshot::FULL_VERSION.to_le_bytes());
    footer.extend_from_slice(b"FLOWSNAP");
    out.extend_from_slice(&footer);
    out
}

/// A snapshot with the raw meta block `meta` (any bytes) over key groups `first..=last`, no
/// blocks, an index of empty slots, and correct checksums.
pub fn forge_with_raw_meta(meta: &[u8], first: u16, last: u16) -> Vec<u8> {
    let mut out = b"FLOWSNAP".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(meta);
    let index_at = out.len() as u64;
    let mut index = first.to_le_bytes().to_vec();
    index.extend_from_slice(&last.to_le_bytes());
    index.resize(4 + 24 * (usize::from(last.saturating_sub(first)) + 1), 0);
    out.extend_from_slice(&index);
    let mut footer = 12u64.to_le_bytes().to_vec();
    footer.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    footer.extend_from_slice(&crc32(meta).to_le_bytes());
    footer.extend_from_slice(&index_at.to_le_bytes());
    footer.extend_from_slice(&(index.len() as u32).to_le_bytes());
    footer.extend_from_slice(&crc32(&index).to_le_bytes());
    footer.extend_from_slice(&0u64.to_le_bytes());
    footer.extend_from_slice(&crc32(&footer).to_le_bytes());
    footer.extend_from_slice(&1u32.to_le_bytes());
    footer.extend_from_slice(b"FLOWSNAP");
    out.extend_from_slice(&footer);
    out
}

/// One block of a forged snapshot.
#[derive(Debug, Clone)]
pub struct ForgedBlock {
    /// The key group in the header (and the index slot it is filed under).
    pub key_group: u16,
    /// The compression code.
    pub compression: u8,
    /// The declared uncompressed length.
    pub uncompressed_len: u32,
    /// The stored payload.
    pub stored: Vec<u8>,
    /// The entries the index counts for it.
    pub entries: u64,
}

impl ForgedBlock {
    /// An uncompressed block holding `payload`, counted as `entries` entries.
    pub fn raw(key_group: u16, payload: Vec<u8>, entries: u64) -> Self {
        ForgedBlock {
            key_group,
            compression: 0,
            uncompressed_len: payload.len() as u32,
            stored: payload,
            entries,
        }
    }
}

/// Builds a block payload from varints and length-prefixed byte strings.
#[derive(Debug, Default, Clone)]
pub struct Payload(pub Vec<u8>);

impl Payload {
    /// A varint.
    pub fn v(mut self, n: u64) -> Self {
        varint::encode_u64(n, &mut self.0);
        self
    }

    /// A length-prefixed byte string.
    pub fn b(mut self, bytes: &[u8]) -> Self {
        varint::encode_u64(bytes.len() as u64, &mut self.0);
        self.0.extend_from_slice(bytes);
        self
    }
}

/// Decodes `bytes` and expects an error, which must name the file and lie within it.
pub fn expect_error(bytes: &[u8], what: &str) -> FormatError {
    match decode(bytes) {
        Ok(_) => panic!("{what}: decoded without error"),
        Err(e) => {
            assert_eq!(e.file(), Some(fuzzing::FILE_NAME), "{what}: {e}");
            if let Some(o) = e.offset() {
                assert!(o <= bytes.len() as u64, "{what}: offset past the end: {e}");
            }
            e
        }
    }
}
