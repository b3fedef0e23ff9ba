//! The `_metadata` file of a completed checkpoint or savepoint: which tasks took part and
//! the state handles each of them reported.
//!
//! Writing this file is what completes a checkpoint; see spec/checkpoint-protocol.md. Unlike
//! Flink's `_metadata`, ours carries a CRC-32 over all of its bytes.
//!
//! ## Format
//!
//! Integers are little-endian; the handle records are drawn in [`super::handle`].
//!
//! ```text
//! offset  size  field
//! 0       4     magic "FSCM" (46 53 43 4d)
//! 4       2     format version, u16 = 1
//! 6       8     checkpoint id, u64
//! 14      1     kind: 0 checkpoint, 1 savepoint
//! 15      8     timestamp, u64 milliseconds since the Unix epoch
//! 23      4     task count, u32
//! 27      ...   tasks, each:
//!                 u16 operator id length (>= 1) | operator id (UTF-8)
//!                 u32 subtask index | u32 parallelism | u32 max parallelism
//!                 u32 keyed handle count | keyed handles
//!                 u32 operator handle count | operator handles
//! n - 4   4     CRC-32 of bytes 0 .. n - 4
//! ```
//!
//! Rules a decoder checks (and an encoder refuses to break): `1 <= max parallelism <=
//! 32768`, `1 <= parallelism <= max parallelism`, `subtask index < parallelism`, every keyed
//! handle's last key group is below the task's max parallelism, no two tasks share an
//! (operator id, subtask index), and no byte follows the last task.

use std::collections::BTreeSet;

use super::handle::{
    KeyedStateHandleRecord, OperatorStateHandleRecord, MAX_KEY_GROUPS, MIN_KEYED_LEN,
    MIN_OPERATOR_LEN,
};
use super::{Frame, Reader, Result, Writer};

/// The frame of a `_metadata` file.
pub(crate) const METADATA_FRAME: Frame = Frame {
    magic: MAGIC,
    version: VERSION,
    oldest: 1,
};

/// The magic number a `_metadata` file starts with.
pub const MAGIC: [u8; 4] = *b"FSCM";

/// The newest format version: 2 records a CRC-32 of every file's content beside its size. A
/// record whose files carry no checksum is written as version 1, which is still read.
pub const VERSION: u16 = 2;

/// The largest `_metadata` file a reader should accept (64 MiB): far above what handles of
/// thousands of tasks take, small enough to read whole.
pub const MAX_METADATA_LEN: u64 = 64 << 20;

/// The smallest encoding of a task: a one-byte operator id and no handles.
const MIN_TASK_LEN: usize = 2 + 1 + 4 + 4 + 4 + 4 + 4;

/// Whether a checkpoint is owned by the system (deleted when subsumed) or by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotKindRecord {
    /// A checkpoint (kind byte 0).
    Checkpoint,
    /// A savepoint (kind byte 1).
    Savepoint,
}

impl SnapshotKindRecord {
    /// The kind's byte in the file.
    pub fn to_byte(self) -> u8 {
        match self {
            SnapshotKindRecord::Checkpoint => 0,
            SnapshotKindRecord::Savepoint => 1,
        }
    }

    /// The kind of a byte, if it names one.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(SnapshotKindRecord::Checkpoint),
            1 => Some(SnapshotKindRecord::Savepoint),
            _ => None,
        }
    }
}

/// The state one subtask of one operator reported for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskStateRecord {
    /// The operator's stable id (non-empty, at most 65535 bytes of UTF-8).
    pub operator_id: String,
    /// The subtask's index, below `parallelism`.
    pub subtask_index: u32,
    /// The operator's parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// The operator's max parallelism (its number of key groups).
    pub max_parallelism: u32,
    /// The keyed state handles of the subtask.
    pub keyed: Vec<KeyedStateHandleRecord>,
    /// The operator state handles of the subtask.
    pub operator: Vec<OperatorStateHandleRecord>,
}

/// The frame of a task's state standing alone (`FSTS`).
pub(crate) const TASK_FRAME: Frame = Frame {
    magic: *b"FSTS",
    version: 2,
    oldest: 1,
};

impl TaskStateRecord {
    /// Encodes the task's state standing alone (framed, with its checksum: formats.md 4.10), to
    /// send it from a task to whoever completes the checkpoint. Version 2 when every file
    /// carries a checksum, 1 when none does. `file` names the destination in errors.
    pub fn encode(&self, file: &str) -> Result<Vec<u8>> {
        let files = self
            .keyed
            .iter()
            .flat_map(|h| h.files.iter().chain(&h.shared))
            .chain(self.operator.iter().map(|h| &h.file));
        let version = super::handle::version_for(files).map_err(|reason| {
            crate::FormatError::InvalidInput {
                file: file.to_string(),
                reason: reason.into(),
            }
        })?;
        let mut w = TASK_FRAME.writer_of(file, version);
        self.write(&mut w)?;
        Ok(w.finish())
    }

    /// Decodes a task's state standing alone, as written by [`encode`](Self::encode); errors
    /// name `file`.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Self> {
        let mut r = TASK_FRAME.open(bytes, file)?;
        let task = Self::read(&mut r)?;
        r.finish()?;
        Ok(task)
    }

    fn check(&self) -> Result<(), String> {
        if self.operator_id.is_empty() {
            return Err("empty operator id".into());
        }
        if self.max_parallelism == 0 || self.max_parallelism > MAX_KEY_GROUPS {
            return Err(format!(
                "max parallelism {} is not in 1..={MAX_KEY_GROUPS}",
                self.max_parallelism
            ));
        }
        if self.parallelism == 0 || self.parallelism > self.max_parallelism {
            return Err(format!(
                "parallelism {} is not in 1..={}",
                self.parallelism, self.max_parallelism
            ));
        }
        if self.subtask_index >= self.parallelism {
            return Err(format!(
                "subtask index {} is not below the parallelism {}",
                self.subtask_index, self.parallelism
            ));
        }
        Ok(())
    }

    fn check_handle(&self, handle: &KeyedStateHandleRecord) -> Result<(), String> {
        let (first, last) = handle.key_group_range;
        if u32::from(last) >= self.max_parallelism {
            return Err(format!(
                "keyed handle range {first}..={last} reaches past max parallelism {}",
                self.max_parallelism
            ));
        }
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let at = r.pos();
        let operator_id = r.str16()?;
        let subtask_index = r.u32()?;
        let parallelism = r.u32()?;
        let max_parallelism = r.u32()?;
        let mut task = TaskStateRecord {
            operator_id,
            subtask_index,
            parallelism,
            max_parallelism,
            keyed: Vec::new(),
            operator: Vec::new(),
        };
        task.check().map_err(|reason| r.invalid(at, reason))?;
        let count = r.count(MIN_KEYED_LEN)?;
        task.keyed.reserve_exact(count);
        for _ in 0..count {
            let at = r.pos();
            let handle = KeyedStateHandleRecord::read(r)?;
            task.check_handle(&handle)
                .map_err(|reason| r.invalid(at, reason))?;
            task.keyed.push(handle);
        }
        let count = r.count(MIN_OPERATOR_LEN)?;
        task.operator.reserve_exact(count);
        for _ in 0..count {
            task.operator.push(OperatorStateHandleRecord::read(r)?);
        }
        Ok(task)
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        self.check().map_err(|reason| w.invalid(reason))?;
        w.str16(&self.operator_id)?;
        w.u32(self.subtask_index);
        w.u32(self.parallelism);
        w.u32(self.max_parallelism);
        w.count(self.keyed.len())?;
        for handle in &self.keyed {
            self.check_handle(handle)
                .map_err(|reason| w.invalid(reason))?;
            handle.write(w)?;
        }
        w.count(self.operator.len())?;
        for handle in &self.operator {
            handle.write(w)?;
        }
        Ok(())
    }
}

/// The content of a `_metadata` file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckpointMetadataRecord {
    /// The checkpoint's id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKindRecord,
    /// When the checkpoint completed, in milliseconds since the Unix epoch.
    pub timestamp_millis: u64,
    /// The tasks that took part, each (operator id, subtask index) at most once.
    pub tasks: Vec<TaskStateRecord>,
}

impl CheckpointMetadataRecord {
    /// Encodes the file. `file` names the destination in errors about a record that breaks
    /// the format's rules (the error's offset is where the bad field would have gone).
    pub fn encode(&self, file: &str) -> Result<Vec<u8>> {
        let version = super::handle::version_for(
            self.tasks
                .iter()
                .flat_map(|t| t.keyed.iter().flat_map(|h| h.files.iter().chain(&h.shared)))
                .chain(
                    self.tasks
                        .iter()
                        .flat_map(|t| t.operator.iter().map(|h| &h.file)),
                ),
        )
        .map_err(|reason| crate::FormatError::InvalidInput {
            file: file.to_string(),
            reason: reason.into(),
        })?;
        let mut w = METADATA_FRAME.writer_of(file, version);
        w.u64(self.checkpoint_id);
        w.u8(self.kind.to_byte());
        w.u64(self.timestamp_millis);
        w.count(self.tasks.len())?;
        let mut seen = BTreeSet::new();
        for task in &self.tasks {
            if !seen.insert((task.operator_id.as_str(), task.subtask_index)) {
                return Err(w.invalid(duplicate(task)));
            }
            task.write(&mut w)?;
        }
        Ok(w.finish())
    }

    /// Decodes a `_metadata` file; errors name `file` and the offset of the first bad
    /// field. Checks the magic, version and checksum before anything else.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Self> {
        let mut r = METADATA_FRAME.open(bytes, file)?;
        let checkpoint_id = r.u64()?;
        let at = r.pos();
        let kind = r.u8()?;
        let kind = SnapshotKindRecord::from_byte(kind)
            .ok_or_else(|| r.invalid(at, format!("unknown snapshot kind {kind}")))?;
        let timestamp_millis = r.u64()?;
        let count = r.count(MIN_TASK_LEN)?;
        let mut tasks = Vec::with_capacity(count);
        let mut seen = BTreeSet::new();
        for _ in 0..count {
            let at = r.pos();
            let task = TaskStateRecord::read(&mut r)?;
            if !seen.insert((task.operator_id.clone(), task.subtask_index)) {
                return Err(r.invalid(at, duplicate(&task)));
            }
            tasks.push(task);
        }
        // A record without files is written as version 1 (`version_for`): a version-2 one
        // would be a second encoding of the same content.
        let any_file = tasks.iter().any(|t| {
            !t.operator.is_empty()
                || t.keyed
                    .iter()
                    .any(|h| !h.files.is_empty() || !h.shared.is_empty())
        });
        if r.version >= 2 && !any_file {
            return Err(r.invalid(
                4,
                "version 2 but no file is listed: a record without files is version 1",
            ));
        }
        r.finish()?;
        Ok(CheckpointMetadataRecord {
            checkpoint_id,
            kind,
            timestamp_millis,
            tasks,
        })
    }
}

fn duplicate(task: &TaskStateRecord) -> String {
    format!(
        "operator {:?} subtask {} is listed twice",
        task.operator_id, task.subtask_index
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{KeyedHandleKind, StateFileRecord};
    use crate::FormatError;

    fn task(op: &str, index: u32) -> TaskStateRecord {
        TaskStateRecord {
            operator_id: op.into(),
            subtask_index: index,
            parallelism: 2,
            max_parallelism: 128,
            keyed: vec![KeyedStateHandleRecord {
                kind: KeyedHandleKind::KeyGroupFiles,
                shared: vec![],
                key_group_range: (0, 63),
                files: vec![StateFileRecord {
                    crc32c: None,
                    path: format!("chk-1/{op}-{index}"),
                    size: 10,
                }],
            }],
            operator: vec![],
        }
    }

    fn metadata() -> CheckpointMetadataRecord {
        CheckpointMetadataRecord {
            checkpoint_id: 1,
            kind: SnapshotKindRecord::Savepoint,
            timestamp_millis: 5,
            tasks: vec![task("a", 0), task("a", 1)],
        }
    }

    #[test]
    fn files_with_checksums_make_version_2_and_mixed_files_are_refused() {
        let mut m = metadata();
        for t in &mut m.tasks {
            for h in &mut t.keyed {
                for (i, f) in h.files.iter_mut().enumerate() {
                    f.crc32c = Some(0x1234_5678 + i as u32);
                }
            }
        }
        let bytes = m.encode("m").unwrap();
        assert_eq!(&bytes[4..6], &2u16.to_le_bytes());
        assert_eq!(CheckpointMetadataRecord::decode(&bytes, "m").unwrap(), m);
        let v1 = metadata().encode("m").unwrap();
        assert_eq!(&v1[4..6], &1u16.to_le_bytes());
        m.tasks[0].keyed[0].files[0].crc32c = None;
        assert!(matches!(
            m.encode("m"),
            Err(FormatError::InvalidInput { .. })
        ));
    }

    #[test]
    fn version_2_without_files_is_refused_as_a_second_encoding() {
        // Found by the metadata_decode fuzz target (corpus file version_2_without_files): a
        // record listing no file is written as version 1, so version 2 would be a second
        // encoding of the same content.
        for tasks in [
            vec![],
            vec![TaskStateRecord {
                keyed: vec![],
                ..task("op", 0)
            }],
        ] {
            let record = CheckpointMetadataRecord {
                tasks,
                ..metadata()
            };
            let v1 = record.encode("m").unwrap();
            assert_eq!(&v1[4..6], &1u16.to_le_bytes());
            assert_eq!(CheckpointMetadataRecord::decode(&v1, "m").unwrap(), record);
            let mut v2 = v1.clone();
            v2[4] = 2;
            crate::fuzzing::repair_checkpoint_checksum(&mut v2);
            let err = CheckpointMetadataRecord::decode(&v2, "m").unwrap_err();
            assert!(
                matches!(err, FormatError::Corrupt { offset: 4, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn round_trips_and_starts_with_the_header() {
        let bytes = metadata().encode("m").unwrap();
        assert_eq!(&bytes[..6], b"FSCM\x01\x00");
        assert_eq!(
            CheckpointMetadataRecord::decode(&bytes, "m").unwrap(),
            metadata()
        );
        let empty = CheckpointMetadataRecord {
            tasks: vec![],
            ..metadata()
        };
        let bytes = empty.encode("m").unwrap();
        assert_eq!(bytes.len(), 27 + 4);
        assert_eq!(
            CheckpointMetadataRecord::decode(&bytes, "m").unwrap(),
            empty
        );
    }

    #[test]
    fn rule_breaking_records_are_refused_by_the_encoder() {
        type Damage = Box<dyn Fn(&mut CheckpointMetadataRecord)>;
        let cases: Vec<(&str, Damage)> = vec![
            ("listed twice", Box::new(|m| m.tasks[1].subtask_index = 0)),
            ("not below", Box::new(|m| m.tasks[0].subtask_index = 2)),
            ("parallelism 0", Box::new(|m| m.tasks[0].parallelism = 0)),
            (
                "max parallelism 0",
                Box::new(|m| m.tasks[0].max_parallelism = 0),
            ),
            (
                "max parallelism 40000",
                Box::new(|m| m.tasks[0].max_parallelism = 40000),
            ),
            (
                "empty operator id",
                Box::new(|m| m.tasks[0].operator_id.clear()),
            ),
            (
                "reaches past",
                Box::new(|m| m.tasks[0].keyed[0].key_group_range = (0, 128)),
            ),
        ];
        for (what, damage) in cases {
            let mut m = metadata();
            damage(&mut m);
            match m.encode("m") {
                Err(FormatError::InvalidInput { reason, .. }) => {
                    assert!(reason.contains(what), "{what}: {reason}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    /// Re-encodes a damaged body with a correct checksum, so that the structural checks
    /// (not the CRC) must catch the damage.
    fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crate::codec::checksum::crc32(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    #[test]
    fn structural_damage_behind_a_valid_checksum_is_reported_with_its_offset() {
        let bytes = metadata().encode("m").unwrap();
        let body = &bytes[..bytes.len() - 4];
        // Kind byte 2 at offset 14.
        let mut b = body.to_vec();
        b[14] = 2;
        let err = CheckpointMetadataRecord::decode(&with_crc(b), "m").unwrap_err();
        assert_eq!((err.offset(), err.file()), (Some(14), Some("m")), "{err}");
        // A task count of u32::MAX cannot allocate: it is checked against the bytes left.
        let mut b = body.to_vec();
        b[23..27].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = CheckpointMetadataRecord::decode(&with_crc(b), "m").unwrap_err();
        assert!(
            matches!(err, FormatError::TruncatedFile { offset: 23, .. }),
            "{err}"
        );
        // A trailing byte before the checksum.
        let mut b = body.to_vec();
        b.push(0);
        let err = CheckpointMetadataRecord::decode(&with_crc(b), "m").unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        // Version 3 (a future one) and 0 are refused.
        for version in [0, 3] {
            let mut b = body.to_vec();
            b[4] = version;
            assert!(matches!(
                CheckpointMetadataRecord::decode(&with_crc(b), "m"),
                Err(FormatError::UnsupportedVersion { .. })
            ));
        }
        // Version 2 bytes of version-1 content: the files lack their checksums (truncated).
        let mut b = body.to_vec();
        b[4] = 2;
        assert!(CheckpointMetadataRecord::decode(&with_crc(b), "m").is_err());
    }
}
