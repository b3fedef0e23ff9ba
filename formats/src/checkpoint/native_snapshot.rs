//! The native snapshot file of the LSM backend: which table files hold a task's state at one
//! checkpoint, in which level, with their sizes, checksums and key ranges, plus the meta block
//! of the canonical format (key-group range, key codec, the states by id).
//!
//! A native snapshot restores by opening (linking or copying) its tables instead of replaying
//! entries. An incremental checkpoint's tables live under `shared/` and are referenced by
//! every checkpoint that still holds them; a native savepoint's tables sit beside this file.
//!
//! ## Format (spec/formats.md section 8)
//!
//! Integers are little-endian; the frame is the one of [`super`] (magic `FSLN`, version 3,
//! CRC-32 over every byte before it). Version 3 has the bytes of version 2 and says that the
//! tables key timer states in the timer layout (spec/lsm-key-layout.md section 9); in the
//! tables of versions 1 and 2 every state has the keyed layout. Version 1 lacks the origin
//! fields. All three are read.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "FSLN" (46 53 4c 4e)
//! 4       2     format version, u16 = 3 (2 or 1 in older files)
//! 6       8     checkpoint id, u64
//! 14      1     origin kind (versions 2 and 3): 0 none, 1 checkpoint, 2 savepoint
//!         ...   if not none: u16 name length | name (UTF-8, one path component): the
//!               file's name in its snapshot's directory (formats.md 4.9)
//!         4     meta block length m, u32
//!         m     meta block (formats.md 3.3): max parallelism, key-group range, key codec,
//!               the states in id order (a state's id is its index)
//!         4     table count, u32
//!         ...   tables, each:
//!                 u8 level (0..=15) | u8 location: 0 shared/, 1 beside this file
//!                 u64 table id | u16 name length | name (UTF-8, one path component)
//!                 u64 size | u32 CRC-32C of the whole table file
//!                 u32 smallest key length | smallest key | u32 largest key length | largest key
//! n - 4   4     CRC-32 of bytes 0 .. n - 4
//! ```
//!
//! Rules a decoder checks (and an encoder refuses to break): the meta block is valid (as in a
//! canonical file), levels are at most 15, names are valid single path components and no two
//! tables share a (location, name) or a table id, `smallest <= largest`, keys are at most
//! 1 MiB, and no byte follows the last table.

use std::collections::BTreeSet;

use super::handle::check_relative_path;
use super::{FileOrigin, OriginKind};
use super::{Frame, Reader, Result, Writer};
use crate::snapshot::SnapshotMeta;

/// The frame of a native snapshot file.
pub(crate) const NATIVE_FRAME: Frame = Frame {
    magic: MAGIC,
    version: VERSION,
    oldest: 1,
};

/// The magic number a native snapshot file starts with.
pub const MAGIC: [u8; 4] = *b"FSLN";

/// The format version this build writes (it reads 1 and 2 too).
pub const VERSION: u16 = 3;

/// The first version whose tables key timer states in the timer layout.
const TIMER_LAYOUT_VERSION: u16 = 3;

/// The largest native snapshot file a reader should accept (256 MiB, as the LSM manifest).
pub const MAX_NATIVE_SNAPSHOT_LEN: u64 = 256 << 20;

/// The deepest level a native snapshot may name.
pub const MAX_LEVEL: u8 = 15;

/// The longest smallest or largest key a table record may hold.
pub const MAX_KEY_LEN: u32 = 1 << 20;

/// The smallest encoding of a table record: a one-byte name, empty keys.
const MIN_TABLE_LEN: usize = 1 + 1 + 8 + 2 + 1 + 8 + 4 + 4 + 4;

/// Where a table file of a native snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableLocation {
    /// Under the checkpoint storage's `shared/` directory (byte 0): an incremental checkpoint.
    Shared,
    /// In the directory of the native snapshot file (byte 1): a native savepoint.
    Private,
}

impl TableLocation {
    fn to_byte(self) -> u8 {
        match self {
            TableLocation::Shared => 0,
            TableLocation::Private => 1,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(TableLocation::Shared),
            1 => Some(TableLocation::Private),
            _ => None,
        }
    }
}

/// One table file of a native snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NativeTableRecord {
    /// The level the table was in when the snapshot was taken.
    pub level: u8,
    /// Where the file is.
    pub location: TableLocation,
    /// The table's id (the one written in its footer and frames).
    pub table_id: u64,
    /// The file name in its location: one path component.
    pub name: String,
    /// The file's length in bytes.
    pub size: u64,
    /// The CRC-32C of the whole file (formats.md 4.2).
    pub crc32c: u32,
    /// The smallest key of the table (of its entries and range tombstones).
    pub smallest: Vec<u8>,
    /// The largest key of the table (an upper bound where a range tombstone ends it).
    pub largest: Vec<u8>,
}

/// A native LSM snapshot: the state metadata and the tables by level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeSnapshotRecord {
    /// The checkpoint (or savepoint) id the snapshot was taken for.
    pub checkpoint_id: u64,
    /// What the file belongs to (its id is `checkpoint_id`); `None` for version 1 and for a
    /// file written outside a snapshot.
    pub origin: Option<FileOrigin>,
    /// The key-group range, key codec and states (by id), as in a canonical file.
    pub meta: SnapshotMeta,
    /// The tables: L0 newest first, then each deeper level by key.
    pub tables: Vec<NativeTableRecord>,
    /// Whether the tables key timer states (value states of a `timer<…>` namespace) in the
    /// timer layout of spec/lsm-key-layout.md section 9: true from version 3, which the
    /// encoder writes when it is set (version 2 when not, for a snapshot in the old layout).
    pub timer_layout: bool,
}

impl NativeSnapshotRecord {
    /// Encodes the file; `file` names the destination in errors about a record that breaks
    /// the format's rules.
    pub fn encode(&self, file: &str) -> Result<Vec<u8>> {
        let version = if self.timer_layout {
            VERSION
        } else {
            TIMER_LAYOUT_VERSION - 1
        };
        let mut w = NATIVE_FRAME.writer_of(file, version);
        w.u64(self.checkpoint_id);
        match &self.origin {
            None => w.u8(0),
            Some(o) => {
                if o.id != self.checkpoint_id {
                    return Err(w.invalid(format!(
                        "origin id {} is not the checkpoint id {}",
                        o.id, self.checkpoint_id
                    )));
                }
                check_origin_name(&o.name).map_err(|reason| w.invalid(reason))?;
                w.u8(o.kind as u8);
                w.str16(&o.name)?;
            }
        }
        self.meta
            .validate()
            .map_err(|reason| w.invalid(format!("meta block: {reason}")))?;
        let mut meta = Vec::new();
        self.meta.encode(&mut meta);
        w.bytes32(&meta)?;
        w.count(self.tables.len())?;
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for t in &self.tables {
            check_table(t, &mut names, &mut ids).map_err(|reason| w.invalid(reason))?;
            w.u8(t.level);
            w.u8(t.location.to_byte());
            w.u64(t.table_id);
            w.str16(&t.name)?;
            w.u64(t.size);
            w.u32(t.crc32c);
            w.bytes32(&t.smallest)?;
            w.bytes32(&t.largest)?;
        }
        Ok(w.finish())
    }

    /// Decodes a native snapshot file read from `file`.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Self> {
        let mut r = NATIVE_FRAME.open(bytes, file)?;
        let timer_layout = r.version >= TIMER_LAYOUT_VERSION;
        let checkpoint_id = r.u64()?;
        let origin = if r.version >= 2 {
            let at = r.pos();
            let kind = match r.u8()? {
                0 => None,
                1 => Some(OriginKind::Checkpoint),
                2 => Some(OriginKind::Savepoint),
                other => return Err(r.invalid(at, format!("unknown origin kind {other}"))),
            };
            match kind {
                None => None,
                Some(kind) => {
                    let name_at = r.pos();
                    let name = r.str16()?;
                    check_origin_name(&name).map_err(|reason| r.invalid(name_at, reason))?;
                    Some(FileOrigin {
                        kind,
                        id: checkpoint_id,
                        name,
                    })
                }
            }
        } else {
            None
        };
        let meta_at = r.pos() + 4;
        let meta_bytes = r.bytes32(u32::MAX)?;
        let meta = SnapshotMeta::decode(meta_bytes, file, meta_at as u64)?;
        let count = r.count(MIN_TABLE_LEN)?;
        let mut tables = Vec::with_capacity(count);
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for _ in 0..count {
            let at = r.pos();
            let level = r.u8()?;
            let location_at = r.pos();
            let byte = r.u8()?;
            let location = TableLocation::from_byte(byte)
                .ok_or_else(|| r.invalid(location_at, format!("unknown table location {byte}")))?;
            let table_id = r.u64()?;
            let name = r.str16()?;
            let size = r.u64()?;
            let crc32c = r.u32()?;
            let smallest = r.bytes32(MAX_KEY_LEN)?.to_vec();
            let largest = r.bytes32(MAX_KEY_LEN)?.to_vec();
            let table = NativeTableRecord {
                level,
                location,
                table_id,
                name,
                size,
                crc32c,
                smallest,
                largest,
            };
            check_table(&table, &mut names, &mut ids).map_err(|reason| r.invalid(at, reason))?;
            tables.push(table);
        }
        r.finish()?;
        Ok(NativeSnapshotRecord {
            checkpoint_id,
            origin,
            timer_layout,
            meta,
            tables,
        })
    }
}

fn check_origin_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        Err(format!("origin name {name:?} is not a file name"))
    } else {
        Ok(())
    }
}

fn check_table(
    t: &NativeTableRecord,
    names: &mut BTreeSet<(TableLocation, String)>,
    ids: &mut BTreeSet<u64>,
) -> std::result::Result<(), String> {
    if t.level > MAX_LEVEL {
        return Err(format!(
            "table {} is in level {}, past {MAX_LEVEL}",
            t.name, t.level
        ));
    }
    if t.name.contains('/') {
        return Err(format!("table name {:?} is not one path component", t.name));
    }
    check_relative_path(&t.name).map_err(|reason| format!("table name {:?}: {reason}", t.name))?;
    if t.smallest > t.largest {
        return Err(format!(
            "table {} has its smallest key above its largest",
            t.name
        ));
    }
    if t.smallest.len() > MAX_KEY_LEN as usize || t.largest.len() > MAX_KEY_LEN as usize {
        return Err(format!(
            "table {} has a key over {MAX_KEY_LEN} bytes",
            t.name
        ));
    }
    if !names.insert((t.location, t.name.clone())) {
        return Err(format!("table {} is listed twice", t.name));
    }
    if !ids.insert(t.table_id) {
        return Err(format!("table id {} is listed twice", t.table_id));
    }
    Ok(())
}

impl Reader<'_> {
    /// A byte string: u32 LE length (at most `max`), then the bytes.
    pub(crate) fn bytes32(&mut self, max: u32) -> Result<&[u8]> {
        let at = self.pos();
        let len = self.u32()?;
        if len > max {
            return Err(self.invalid(at, format!("length {len} is over the limit {max}")));
        }
        self.take(len as usize)
    }
}

impl Writer<'_> {
    /// A byte string of at most `u32::MAX` bytes.
    pub(crate) fn bytes32(&mut self, bytes: &[u8]) -> Result<()> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| self.invalid(format!("{} bytes exceed u32", bytes.len())))?;
        self.u32(len);
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{StateKind, StateMetaRecord};
    use crate::{CodecRecord, FormatError};

    pub(crate) fn sample() -> NativeSnapshotRecord {
        NativeSnapshotRecord {
            checkpoint_id: 9,
            origin: Some(FileOrigin {
                kind: OriginKind::Checkpoint,
                id: 9,
                name: "task-0.native".into(),
            }),
            meta: SnapshotMeta {
                max_parallelism: 128,
                key_group_start: 0,
                key_group_end: 63,
                key_codec: CodecRecord::new("u64", 1),
                states: vec![StateMetaRecord {
                    name: "count".into(),
                    kind: StateKind::Value,
                    namespace: CodecRecord::new("unit", 1),
                    value: CodecRecord::new("u64", 1),
                    user_key: None,
                    ttl_millis: None,
                }],
            },
            tables: vec![
                NativeTableRecord {
                    level: 0,
                    location: TableLocation::Shared,
                    table_id: 7,
                    name: "00ff-000007.sst".into(),
                    size: 4096,
                    crc32c: 0xdead_beef,
                    smallest: b"\x00\x00\x00\x00a".to_vec(),
                    largest: b"\x00\x00\x00\x00z".to_vec(),
                },
                NativeTableRecord {
                    level: 6,
                    location: TableLocation::Private,
                    table_id: 3,
                    name: "000003.sst".into(),
                    size: 1 << 20,
                    crc32c: 1,
                    smallest: vec![],
                    largest: vec![0xff],
                },
            ],
            timer_layout: true,
        }
    }

    #[test]
    fn native_snapshots_round_trip() {
        let bytes = sample().encode("n").unwrap();
        assert_eq!(&bytes[..6], b"FSLN\x03\x00");
        assert_eq!(NativeSnapshotRecord::decode(&bytes, "n").unwrap(), sample());
        // Without the timer layout: version 2, the same bytes after the version.
        let old = NativeSnapshotRecord {
            timer_layout: false,
            ..sample()
        };
        let old_bytes = old.encode("n").unwrap();
        assert_eq!(&old_bytes[..6], b"FSLN\x02\x00");
        assert_eq!(old_bytes[6..old_bytes.len() - 4], bytes[6..bytes.len() - 4]);
        assert_eq!(NativeSnapshotRecord::decode(&old_bytes, "n").unwrap(), old);
        // One encoding per record.
        let again = NativeSnapshotRecord::decode(&bytes, "n").unwrap();
        assert_eq!(again.encode("n").unwrap(), bytes);
    }

    #[test]
    fn every_flip_and_truncation_is_an_error() {
        let bytes = sample().encode("n").unwrap();
        for i in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(
                    NativeSnapshotRecord::decode(&damaged, "n").is_err(),
                    "{i}.{bit}"
                );
            }
            assert!(
                NativeSnapshotRecord::decode(&bytes[..i], "n").is_err(),
                "len {i}"
            );
        }
    }

    #[test]
    fn the_encoder_refuses_what_the_decoder_would_reject() {
        type Change = Box<dyn Fn(&mut NativeSnapshotRecord)>;
        let cases: Vec<(&str, Change)> = vec![
            ("level", Box::new(|r| r.tables[0].level = 16)),
            ("slash", Box::new(|r| r.tables[0].name = "a/b".into())),
            ("dotdot", Box::new(|r| r.tables[0].name = "..".into())),
            ("empty", Box::new(|r| r.tables[0].name = String::new())),
            (
                "order",
                Box::new(|r| {
                    r.tables[0].smallest = b"z".to_vec();
                    r.tables[0].largest = b"a".to_vec();
                }),
            ),
            ("same id", Box::new(|r| r.tables[1].table_id = 7)),
            (
                "same name",
                Box::new(|r| {
                    r.tables[1].name = r.tables[0].name.clone();
                    r.tables[1].location = TableLocation::Shared;
                }),
            ),
            ("meta", Box::new(|r| r.meta.key_group_end = 200)),
        ];
        for (what, change) in cases {
            let mut r = sample();
            change(&mut r);
            assert!(
                matches!(r.encode("n"), Err(FormatError::InvalidInput { .. })),
                "{what}"
            );
        }
        // The same name in another location is fine.
        let mut r = sample();
        r.tables[1].name = r.tables[0].name.clone();
        assert!(r.encode("n").is_ok());
    }

    #[test]
    fn a_lying_table_count_allocates_nothing() {
        let mut r = sample();
        r.tables.clear();
        let mut bytes = r.encode("n").unwrap();
        let count_at = bytes.len() - 8;
        bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc_at = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            NativeSnapshotRecord::decode(&bytes, "n"),
            Err(FormatError::TruncatedFile { .. })
        ));
    }
}
