//! Inputs and helpers shared by the table tests: the deterministic content of the golden
//! tables, the files themselves, whole-file decoding, and a way to take a table apart into its
//! frames and put it back together with correct offsets and checksums, to forge files the
//! builder would refuse to write.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use flowstate_formats::codec::varint;
use flowstate_formats::fuzzing::{self, DecodedTable};
use flowstate_formats::table::{
    frame_crc, EntryKind, FixedPrefix, TableBuilder, TableOptions, FOOTER_LEN, HEADER_LEN,
};
use flowstate_formats::{Compression, FormatError, ReadLimits};

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

/// A golden table: its file name, compression, and whether it holds entries (the last one has
/// only range tombstones).
pub struct GoldenTable {
    pub name: &'static str,
    pub compression: Compression,
    pub with_entries: bool,
}

/// The golden tables of the version the builder writes (2).
pub const GOLDEN_TABLES: [GoldenTable; 4] = [
    GoldenTable {
        name: "table_none_v2.bin",
        compression: Compression::None,
        with_entries: true,
    },
    GoldenTable {
        name: "table_lz4_v2.bin",
        compression: Compression::Lz4,
        with_entries: true,
    },
    GoldenTable {
        name: "table_zstd_v2.bin",
        compression: Compression::Zstd { level: 3 },
        with_entries: true,
    },
    GoldenTable {
        name: "table_tombstones_only_v2.bin",
        compression: Compression::Lz4,
        with_entries: false,
    },
];

/// The golden tables of version 1, written by the version 1 builder: they must still read.
pub const GOLDEN_TABLES_V1: [GoldenTable; 4] = [
    GoldenTable {
        name: "table_none_v1.bin",
        compression: Compression::None,
        with_entries: true,
    },
    GoldenTable {
        name: "table_lz4_v1.bin",
        compression: Compression::Lz4,
        with_entries: true,
    },
    GoldenTable {
        name: "table_zstd_v1.bin",
        compression: Compression::Zstd { level: 3 },
        with_entries: true,
    },
    GoldenTable {
        name: "table_tombstones_only_v1.bin",
        compression: Compression::Lz4,
        with_entries: false,
    },
];

/// A key as the tree lays it out: state id (1 byte here), key group (big-endian u16, so that
/// keys sort by key group), key and namespace (length-prefixed), and a map user key.
pub fn tree_key(state: u8, key_group: u16, key: &str, ns: &str, user_key: Option<&str>) -> Vec<u8> {
    let mut out = vec![state];
    out.extend_from_slice(&key_group.to_be_bytes());
    for part in [key, ns] {
        varint::encode_u64(part.len() as u64, &mut out);
        out.extend_from_slice(part.as_bytes());
    }
    if let Some(u) = user_key {
        out.extend_from_slice(u.as_bytes());
    }
    out
}

/// The options of the golden tables: small blocks (so that there are many), a restart point
/// every 4 entries, 10 bloom bits per key, and the prefix (state id, key group) in the filter.
pub fn golden_options(compression: Compression) -> TableOptions {
    TableOptions {
        block_size: 256,
        restart_interval: 4,
        compression,
        bloom_bits_per_key: 10,
        prefix_extractor: Some(Arc::new(FixedPrefix::new(3))),
        table_id: 7,
    }
}

/// The entries of the golden tables, in key order: a value state (1) with puts and deletes,
/// a list state (2) with merge operands, a map state (3) with one entry per user key, over key
/// groups 3, 4 and 9.
pub fn golden_entries() -> Vec<(Vec<u8>, EntryKind, Vec<u8>)> {
    let mut e = Vec::new();
    for kg in [3u16, 4, 9] {
        for i in 0..8u32 {
            let key = format!("user-{kg}-{i:02}");
            let kind = if i % 5 == 4 {
                EntryKind::Delete
            } else {
                EntryKind::Put
            };
            let value = match kind {
                EntryKind::Delete => Vec::new(),
                _ => (u64::from(i) * 1000 + u64::from(kg)).to_le_bytes().to_vec(),
            };
            e.push((tree_key(1, kg, &key, "", None), kind, value));
            let window = format!("w{}", i % 3);
            e.push((
                tree_key(2, kg, &key, &window, None),
                EntryKind::Merge,
                format!("click,view,click-{i}").into_bytes(),
            ));
            if i % 2 == 0 {
                for city in ["city", "lang", "zip"] {
                    e.push((
                        tree_key(3, kg, &key, "", Some(city)),
                        EntryKind::Put,
                        format!("{city}-of-{key}").into_bytes(),
                    ));
                }
            }
        }
    }
    e.sort_by(|a, b| a.0.cmp(&b.0));
    e
}

/// The range tombstones given to the builder, in this order (two overlap and merge): key
/// groups 5..=6 of every state, the whole of state 4, and a second, overlapping, piece.
pub fn golden_range_tombstones() -> Vec<(Vec<u8>, Vec<u8>)> {
    let kg = |state: u8, kg: u16| {
        let mut k = vec![state];
        k.extend_from_slice(&kg.to_be_bytes());
        k
    };
    vec![
        (kg(4, 0), kg(5, 0)),
        (kg(1, 5), kg(1, 7)),
        (kg(2, 5), kg(2, 6)),
        (kg(2, 6), kg(2, 7)),
        (kg(3, 5), kg(3, 7)),
        (kg(1, 6), kg(1, 7)),
    ]
}

/// The user properties of the golden tables: the key-group range (first, last as u16 LE) the
/// tree records.
pub fn golden_user_properties() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "flowstate.key-groups",
            [3u16.to_le_bytes(), 9u16.to_le_bytes()].concat(),
        ),
        ("flowstate.writer", b"golden".to_vec()),
    ]
}

/// Writes golden table `g`.
pub fn encode_golden(g: &GoldenTable) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = TableBuilder::new(&mut out, golden_options(g.compression), g.name).unwrap();
    if g.with_entries {
        for (k, kind, v) in golden_entries() {
            b.add(&k, kind, &v).unwrap();
        }
    }
    for (s, e) in golden_range_tombstones() {
        b.add_range_tombstone(&s, &e).unwrap();
    }
    for (name, value) in golden_user_properties() {
        b.add_user_property(name, &value).unwrap();
    }
    b.finish().unwrap();
    out
}

/// Decodes a whole table with the default limits.
pub fn decode(bytes: &[u8]) -> Result<DecodedTable, FormatError> {
    fuzzing::decode_table(bytes, ReadLimits::default())
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
            assert!(e.is_corruption(), "{what}: {e}");
            e
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One block frame, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The block type byte: 0 data, 1 index, 2 filter, 3 properties, 4 range tombstones.
    pub block_type: u8,
    /// The compression code.
    pub compression: u8,
    /// The declared uncompressed length.
    pub uncompressed_len: u32,
    /// The stored payload.
    pub stored: Vec<u8>,
}

impl Frame {
    /// An uncompressed frame of `block_type` holding `payload`.
    pub fn raw(block_type: u8, payload: Vec<u8>) -> Self {
        Frame {
            block_type,
            compression: 0,
            uncompressed_len: payload.len() as u32,
            stored: payload,
        }
    }

    fn parse(b: &[u8], at: usize) -> (Frame, usize) {
        let stored = u32_at(b, at + 6) as usize;
        let f = Frame {
            block_type: b[at],
            compression: b[at + 1],
            uncompressed_len: u32_at(b, at + 2),
            stored: b[at + 10..at + 10 + stored].to_vec(),
        };
        (f, at + 14 + stored)
    }

    fn write(&self, table_id: u64, out: &mut Vec<u8>) -> (u64, u32, u32) {
        let at = out.len() as u64;
        let mut header = vec![self.block_type, self.compression];
        header.extend_from_slice(&self.uncompressed_len.to_le_bytes());
        header.extend_from_slice(&(self.stored.len() as u32).to_le_bytes());
        let crc = frame_crc(table_id, at, &header, &self.stored);
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.stored);
        out.extend_from_slice(&crc.to_le_bytes());
        (at, 14 + self.stored.len() as u32, crc)
    }
}

/// A table taken apart into its frames (a valid table, as a builder writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub data: Vec<Frame>,
    pub range_tombstones: Option<Frame>,
    pub filter: Option<Frame>,
    pub properties: Frame,
    pub index: Frame,
    pub table_id: u64,
    /// The format version of the header and footer.
    pub version: u32,
}

impl Parts {
    /// Takes the table `b` apart by walking its frames.
    pub fn split(b: &[u8]) -> Parts {
        let f = b.len() - FOOTER_LEN as usize;
        let meta = |i: usize| (u64_at(b, f + 16 * i) as usize, u32_at(b, f + 16 * i + 8));
        let (index_at, _) = meta(0);
        let present = |i: usize| (meta(i).1 > 0).then(|| Frame::parse(b, meta(i).0).0);
        let data_end = [3, 1, 2, 0]
            .iter()
            .map(|&i| meta(i))
            .find(|m| m.1 > 0)
            .map(|m| m.0)
            .unwrap();
        let mut data = Vec::new();
        let mut pos = HEADER_LEN as usize;
        while pos < data_end {
            let (frame, next) = Frame::parse(b, pos);
            data.push(frame);
            pos = next;
        }
        Parts {
            data,
            range_tombstones: present(3),
            filter: present(1),
            properties: present(2).unwrap(),
            index: Frame::parse(b, index_at).0,
            table_id: u64_at(b, f + 64),
            version: u32_at(b, 8),
        }
    }

    /// Lays the frames out again with correct CRCs and footer; with `fix_index`, rewrites the
    /// handles of the (uncompressed) index payload to where the data frames now are, keeping
    /// its keys.
    pub fn assemble(&self, fix_index: bool) -> Vec<u8> {
        let mut out = b"FLOWLSMT".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        let mut handles = Vec::new();
        for d in &self.data {
            handles.push(d.write(self.table_id, &mut out));
        }
        let mut footer = [[0u8; 16]; 4];
        let mut put = |slot: usize, (at, len, crc): (u64, u32, u32)| {
            footer[slot][..8].copy_from_slice(&at.to_le_bytes());
            footer[slot][8..12].copy_from_slice(&len.to_le_bytes());
            footer[slot][12..].copy_from_slice(&crc.to_le_bytes());
        };
        if let Some(r) = &self.range_tombstones {
            put(3, r.write(self.table_id, &mut out));
        }
        if let Some(f) = &self.filter {
            put(1, f.write(self.table_id, &mut out));
        }
        put(2, self.properties.write(self.table_id, &mut out));
        let mut index = self.index.clone();
        if fix_index {
            assert_eq!(index.compression, 0, "fix_index needs a raw index");
            let keys = index_keys(&index.stored);
            let mut payload = Vec::new();
            varint::encode_u64(keys.len() as u64, &mut payload);
            for (k, (at, len, _)) in keys.iter().zip(&handles) {
                varint::encode_u64(k.len() as u64, &mut payload);
                payload.extend_from_slice(k);
                varint::encode_u64(*at, &mut payload);
                varint::encode_u64(u64::from(*len), &mut payload);
            }
            index = Frame::raw(1, payload);
        }
        put(0, index.write(self.table_id, &mut out));
        let mut tail: Vec<u8> = footer.concat();
        tail.extend_from_slice(&self.table_id.to_le_bytes());
        let crc = flowstate_formats::codec::checksum::crc32(&tail);
        tail.extend_from_slice(&crc.to_le_bytes());
        tail.extend_from_slice(&self.version.to_le_bytes());
        tail.extend_from_slice(b"FLOWLSMT");
        out.extend_from_slice(&tail);
        out
    }
}

/// The keys of an uncompressed index payload.
pub fn index_keys(payload: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = payload;
    let n = varint::decode_u64(&mut rest).unwrap();
    (0..n)
        .map(|_| {
            let len = varint::decode_u64(&mut rest).unwrap() as usize;
            let k = rest[..len].to_vec();
            rest = &rest[len..];
            varint::decode_u64(&mut rest).unwrap();
            varint::decode_u64(&mut rest).unwrap();
            k
        })
        .collect()
}

/// Builds a payload from varints and raw or length-prefixed bytes.
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

    /// Raw bytes.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// A u32 LE.
    pub fn u32(mut self, n: u32) -> Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }
}

/// A small table with every kind of block, uncompressed: the base of the forged ones.
pub fn small_table(entries: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = TableBuilder::new(
        &mut out,
        TableOptions {
            block_size: 64,
            restart_interval: 2,
            compression: Compression::None,
            ..golden_options(Compression::None)
        },
        "small",
    )
    .unwrap();
    for i in 0..entries as u32 {
        b.add(
            &tree_key(1, 3, &format!("k{i:03}"), "", None),
            EntryKind::Put,
            &i.to_le_bytes(),
        )
        .unwrap();
    }
    b.add_range_tombstone(b"\x05", b"\x06").unwrap();
    b.add_user_property("p", b"v").unwrap();
    b.finish().unwrap();
    out
}
