//! State handles: which published files hold a task's state.

use flowstate_formats::checkpoint::{
    check_relative_path, FileOrigin, KeyedHandleKind, KeyedStateHandleRecord,
    OperatorStateHandleRecord, StateFileRecord, TaskStateRecord,
};

use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;

/// A published state file: its path (relative to the checkpoint storage's root), its size and
/// the CRC-32C of its content (formats.md 4.2).
///
/// Returned by [`StateFileWriter::finish`](super::StateFileWriter::finish); opened again with
/// [`CheckpointStorage::open_state_file`](super::CheckpointStorage::open_state_file), which
/// checks the size and, when the file has one, the checksum: another file of the same size in
/// its place (a stale copy from an older checkpoint) is detected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateFile {
    path: String,
    size: u64,
    checksum: Option<u32>,
}

impl StateFile {
    /// A state file at `path` (relative to the checkpoint storage's root; the storage path
    /// rules apply) of `size` bytes.
    pub fn new(path: impl Into<String>, size: u64) -> Result<Self> {
        let path = path.into();
        check_relative_path(&path).map_err(|reason| Error::InvalidPath {
            path: path.clone().into(),
            reason,
        })?;
        Ok(StateFile {
            path,
            size,
            checksum: None,
        })
    }

    /// A state file whose content has the CRC-32 `checksum`.
    pub fn with_checksum(path: impl Into<String>, size: u64, checksum: u32) -> Result<Self> {
        Ok(StateFile {
            checksum: Some(checksum),
            ..StateFile::new(path, size)?
        })
    }

    /// The CRC-32 of the file's content, when recorded (`None` for files listed by a version-1
    /// `_metadata`).
    pub fn checksum(&self) -> Option<u32> {
        self.checksum
    }

    /// The path, relative to the checkpoint storage's root.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks what the file says it belongs to (`origin`, read from its header; `None` for a
    /// format version without one) against where its checkpoint lists it:
    /// [`Error::MisplacedFile`] for a file of another checkpoint or savepoint, or of another
    /// name, in its place.
    pub fn check_origin(&self, origin: Option<&FileOrigin>) -> Result<()> {
        match origin {
            Some(o) => o
                .check_path(&self.path)
                .map_err(|reason| Error::MisplacedFile {
                    path: self.path.clone(),
                    reason,
                }),
            None => Ok(()),
        }
    }

    /// The record of this file, with its path as it is.
    pub fn to_record(&self) -> StateFileRecord {
        StateFileRecord {
            crc32c: self.checksum,
            path: self.path.clone(),
            size: self.size,
        }
    }

    /// The file of a record (whose path is relative to the storage root).
    pub fn from_record(record: StateFileRecord) -> Result<Self> {
        Ok(StateFile {
            checksum: record.crc32c,
            ..StateFile::new(record.path, record.size)?
        })
    }

    /// This file with `f` applied to its path (rebasing between a savepoint directory and
    /// the storage root).
    pub(crate) fn map_path(&self, f: impl FnOnce(&str) -> Result<String>) -> Result<StateFile> {
        Ok(StateFile {
            checksum: self.checksum,
            ..StateFile::new(f(&self.path)?, self.size)?
        })
    }
}

/// The keyed state of a key-group range, held in one or more state files.
///
/// A handle of kind [`KeyedHandleKind::KeyGroupFiles`] lists canonical snapshot files: each
/// holds the state of the whole range, with an index by key group, so a restore of a sub-range
/// reads only its key groups (spec/formats.md). A handle of kind [`KeyedHandleKind::LsmNative`]
/// lists a native LSM snapshot: its first file describes the tables, its other files are
/// tables private to the snapshot (a native savepoint), and its [shared
/// files](Self::shared_files) are tables under `shared/` (an incremental checkpoint). A handle
/// of kind [`KeyedHandleKind::HeapChain`] has no file of its own: its shared files are a heap
/// backend's incremental checkpoint, a full canonical file then delta files, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyedStateHandle {
    kind: KeyedHandleKind,
    key_group_range: KeyGroupRange,
    files: Vec<StateFile>,
    shared: Vec<StateFile>,
}

impl KeyedStateHandle {
    /// A handle for the key groups of `key_group_range` (not empty) held in canonical snapshot
    /// `files` (at least one).
    pub fn new(key_group_range: KeyGroupRange, files: Vec<StateFile>) -> Result<Self> {
        Self::with_kind(
            KeyedHandleKind::KeyGroupFiles,
            key_group_range,
            files,
            Vec::new(),
        )
    }

    /// A handle of a native LSM snapshot: `files` starts with the native snapshot file
    /// (then private table files), `shared` lists the shared tables it references.
    pub fn native(
        key_group_range: KeyGroupRange,
        files: Vec<StateFile>,
        shared: Vec<StateFile>,
    ) -> Result<Self> {
        Self::with_kind(KeyedHandleKind::LsmNative, key_group_range, files, shared)
    }

    /// A handle of a heap backend's incremental checkpoint: `chain` lists its shared files in
    /// order, a full canonical file then its delta files (spec/formats.md 3.11).
    pub fn heap_chain(key_group_range: KeyGroupRange, chain: Vec<StateFile>) -> Result<Self> {
        Self::with_kind(
            KeyedHandleKind::HeapChain,
            key_group_range,
            Vec::new(),
            chain,
        )
    }

    fn with_kind(
        kind: KeyedHandleKind,
        key_group_range: KeyGroupRange,
        files: Vec<StateFile>,
        shared: Vec<StateFile>,
    ) -> Result<Self> {
        if kind == KeyedHandleKind::KeyGroupFiles && !shared.is_empty() {
            return Err(Error::InvalidArgument(
                "a handle of canonical files lists no shared file".into(),
            ));
        }
        if key_group_range.is_empty() {
            return Err(Error::InvalidArgument(
                "a keyed state handle covers at least one key group".into(),
            ));
        }
        if kind == KeyedHandleKind::HeapChain {
            if !files.is_empty() || shared.is_empty() {
                return Err(Error::InvalidArgument(
                    "a heap chain handle lists no file of its own and at least one shared file"
                        .into(),
                ));
            }
        } else if files.is_empty() {
            return Err(Error::InvalidArgument(
                "a keyed state handle lists at least one file".into(),
            ));
        }
        Ok(KeyedStateHandle {
            kind,
            key_group_range,
            files,
            shared,
        })
    }

    /// What the handle's files are.
    pub fn kind(&self) -> KeyedHandleKind {
        self.kind
    }

    /// The shared files the handle references (tables under `shared/` of an incremental
    /// checkpoint); empty for other kinds.
    pub fn shared_files(&self) -> &[StateFile] {
        &self.shared
    }

    /// The key groups whose state the handle holds.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }

    /// The files of the snapshot itself (not the shared files).
    pub fn files(&self) -> &[StateFile] {
        &self.files
    }

    /// Whether the handle holds state of any key group of `range`.
    pub fn intersects(&self, range: KeyGroupRange) -> bool {
        !self.key_group_range.intersection(&range).is_empty()
    }

    /// The record of this handle (paths as they are).
    pub fn to_record(&self) -> KeyedStateHandleRecord {
        KeyedStateHandleRecord {
            kind: self.kind,
            shared: self.shared.iter().map(StateFile::to_record).collect(),
            key_group_range: (self.key_group_range.start(), self.key_group_range.end()),
            files: self.files.iter().map(StateFile::to_record).collect(),
        }
    }

    /// The handle of a record (paths relative to the storage root).
    pub fn from_record(record: KeyedStateHandleRecord) -> Result<Self> {
        let (first, last) = record.key_group_range;
        let files = record
            .files
            .into_iter()
            .map(StateFile::from_record)
            .collect::<Result<_>>()?;
        let shared = record
            .shared
            .into_iter()
            .map(StateFile::from_record)
            .collect::<Result<_>>()?;
        KeyedStateHandle::with_kind(record.kind, KeyGroupRange::new(first, last)?, files, shared)
    }

    /// The handle encoded standing alone (spec/formats.md section 4), to send it from a task
    /// to whoever completes the checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_record()
            .encode("keyed state handle")
            .expect("a KeyedStateHandle keeps the format's rules: valid paths, a non-empty range below 32768, at least one file")
    }

    /// Decodes a handle written by [`to_bytes`](Self::to_bytes); `what` names the bytes in
    /// errors (a file, a message).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        KeyedStateHandle::from_record(KeyedStateHandleRecord::decode(bytes, what)?)
    }

    /// This handle with `f` applied to the paths of its own files (shared files are always
    /// relative to the storage root).
    pub(crate) fn map_paths(&self, f: &dyn Fn(&str) -> Result<String>) -> Result<Self> {
        Ok(KeyedStateHandle {
            kind: self.kind,
            key_group_range: self.key_group_range,
            files: self
                .files
                .iter()
                .map(|file| file.map_path(f))
                .collect::<Result<_>>()?,
            shared: self.shared.clone(),
        })
    }
}

/// The operator (non-keyed) state of one task, held in one state file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperatorStateHandle {
    file: StateFile,
}

impl OperatorStateHandle {
    /// A handle for operator state held in `file`.
    pub fn new(file: StateFile) -> Self {
        OperatorStateHandle { file }
    }

    /// The file.
    pub fn file(&self) -> &StateFile {
        &self.file
    }

    /// The record of this handle (path as it is).
    pub fn to_record(&self) -> OperatorStateHandleRecord {
        OperatorStateHandleRecord {
            file: self.file.to_record(),
        }
    }

    /// The handle of a record (path relative to the storage root).
    pub fn from_record(record: OperatorStateHandleRecord) -> Result<Self> {
        Ok(OperatorStateHandle::new(StateFile::from_record(
            record.file,
        )?))
    }

    /// The handle encoded standing alone (spec/formats.md section 4).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_record()
            .encode("operator state handle")
            .expect("an OperatorStateHandle keeps the format's rules: its path is valid")
    }

    /// Decodes a handle written by [`to_bytes`](Self::to_bytes); `what` names the bytes in
    /// errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        OperatorStateHandle::from_record(OperatorStateHandleRecord::decode(bytes, what)?)
    }

    pub(crate) fn map_paths(&self, f: &dyn Fn(&str) -> Result<String>) -> Result<Self> {
        Ok(OperatorStateHandle {
            file: self.file.map_path(f)?,
        })
    }
}

/// The state one subtask of one operator reported for a checkpoint: what
/// [`CheckpointStorage::complete_checkpoint`](super::CheckpointStorage::complete_checkpoint)
/// takes from every task, and what a [`CompletedCheckpoint`](super::CompletedCheckpoint)
/// lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubtaskState {
    /// The operator's stable id (not empty), the same in every checkpoint of the job.
    pub operator_id: String,
    /// The subtask's index, below `parallelism`.
    pub subtask_index: u32,
    /// The operator's parallelism, at least 1 and at most `max_parallelism`.
    pub parallelism: u32,
    /// The operator's max parallelism (its number of key groups), at most 32768.
    pub max_parallelism: u32,
    /// The keyed state handles of the subtask.
    pub keyed: Vec<KeyedStateHandle>,
    /// The operator state handles of the subtask.
    pub operator: Vec<OperatorStateHandle>,
}

impl SubtaskState {
    /// The record of this state (paths as they are).
    pub fn to_record(&self) -> TaskStateRecord {
        TaskStateRecord {
            operator_id: self.operator_id.clone(),
            subtask_index: self.subtask_index,
            parallelism: self.parallelism,
            max_parallelism: self.max_parallelism,
            keyed: self.keyed.iter().map(KeyedStateHandle::to_record).collect(),
            operator: self
                .operator
                .iter()
                .map(OperatorStateHandle::to_record)
                .collect(),
        }
    }

    /// The state of a record (paths relative to the storage root).
    pub fn from_record(record: TaskStateRecord) -> Result<Self> {
        Ok(SubtaskState {
            operator_id: record.operator_id,
            subtask_index: record.subtask_index,
            parallelism: record.parallelism,
            max_parallelism: record.max_parallelism,
            keyed: record
                .keyed
                .into_iter()
                .map(KeyedStateHandle::from_record)
                .collect::<Result<_>>()?,
            operator: record
                .operator
                .into_iter()
                .map(OperatorStateHandle::from_record)
                .collect::<Result<_>>()?,
        })
    }

    /// The state encoded standing alone (spec/formats.md section 4.10), to send it from a task
    /// to the coordinator that completes the checkpoint, in another thread or process.
    /// Fails only for a state that breaks the format's rules (an empty operator id, an index
    /// or parallelism out of range, a handle past the max parallelism): `InvalidArgument`.
    ///
    /// ```
    /// use flowstate::*;
    /// let file = StateFile::with_checksum("chk-3/op-0-keyed", 1_000, 0xfeed)?;
    /// let handle = KeyedStateHandle::new(KeyGroupRange::all(128)?, vec![file])?;
    /// let state = SubtaskState::new("op", 0, 1, 128).with_keyed(handle);
    /// let bytes = state.to_bytes()?;
    /// assert_eq!(SubtaskState::from_bytes(&bytes, "ack from task 0")?, state);
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_record()
            .encode("subtask state")
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// Decodes a state written by [`to_bytes`](Self::to_bytes); `what` names the bytes in
    /// errors (a message, a file). Damage is an error, never a wrong state: the encoding ends
    /// with a CRC-32.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        Self::from_record(TaskStateRecord::decode(bytes, what)?)
    }

    /// The state of subtask `subtask_index` of `parallelism` of operator `operator_id`, with
    /// no handles yet.
    pub fn new(
        operator_id: impl Into<String>,
        subtask_index: u32,
        parallelism: u32,
        max_parallelism: u32,
    ) -> Self {
        SubtaskState {
            operator_id: operator_id.into(),
            subtask_index,
            parallelism,
            max_parallelism,
            keyed: Vec::new(),
            operator: Vec::new(),
        }
    }

    /// This state with a keyed state handle added.
    pub fn with_keyed(mut self, handle: KeyedStateHandle) -> Self {
        self.keyed.push(handle);
        self
    }

    /// This state with an operator state handle added.
    pub fn with_operator(mut self, handle: OperatorStateHandle) -> Self {
        self.operator.push(handle);
        self
    }

    /// Every state file of the snapshot the subtask's handles list (not the shared files).
    pub fn files(&self) -> impl Iterator<Item = &StateFile> {
        self.keyed
            .iter()
            .flat_map(|h| h.files.iter())
            .chain(self.operator.iter().map(|h| &h.file))
    }

    /// Every shared file the subtask's handles reference.
    pub fn shared_files(&self) -> impl Iterator<Item = &StateFile> {
        self.keyed.iter().flat_map(|h| h.shared.iter())
    }

    /// This state with `f` applied to every file's path.
    pub(crate) fn map_paths(&self, f: &dyn Fn(&str) -> Result<String>) -> Result<Self> {
        Ok(SubtaskState {
            keyed: self
                .keyed
                .iter()
                .map(|h| h.map_paths(f))
                .collect::<Result<_>>()?,
            operator: self
                .operator
                .iter()
                .map(|h| h.map_paths(f))
                .collect::<Result<_>>()?,
            ..SubtaskState::new(
                self.operator_id.clone(),
                self.subtask_index,
                self.parallelism,
                self.max_parallelism,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn handle() -> KeyedStateHandle {
        KeyedStateHandle::new(
            KeyGroupRange::new(4, 9).unwrap(),
            vec![StateFile::new("chk-3/op-1", 77).unwrap()],
        )
        .unwrap()
    }

    #[test]
    fn handles_convert_to_records_and_bytes_and_back() {
        let h = handle();
        assert_eq!(KeyedStateHandle::from_record(h.to_record()).unwrap(), h);
        assert_eq!(KeyedStateHandle::from_bytes(&h.to_bytes(), "h").unwrap(), h);
        let op = OperatorStateHandle::new(StateFile::new("chk-3/src-0", 5).unwrap());
        assert_eq!(
            OperatorStateHandle::from_bytes(&op.to_bytes(), "o").unwrap(),
            op
        );

        let mut bytes = h.to_bytes();
        bytes[8] ^= 0x40;
        let err = KeyedStateHandle::from_bytes(&bytes, "from task 3").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.to_string().contains("from task 3"), "{err}");
    }

    #[test]
    fn handles_refuse_what_the_format_cannot_hold() {
        assert!(StateFile::new("../escape", 1).is_err());
        assert!(StateFile::new("/abs", 1).is_err());
        assert!(
            KeyedStateHandle::new(KeyGroupRange::EMPTY, vec![StateFile::new("a", 1).unwrap()])
                .is_err()
        );
        assert!(KeyedStateHandle::new(KeyGroupRange::new(0, 1).unwrap(), vec![]).is_err());
    }

    #[test]
    fn intersects_is_true_exactly_when_a_key_group_is_shared() {
        let h = handle(); // 4..=9
        for (start, end, expected) in [
            (0, 3, false),
            (0, 4, true),
            (9, 12, true),
            (10, 20, false),
            (5, 6, true),
        ] {
            assert_eq!(
                h.intersects(KeyGroupRange::new(start, end).unwrap()),
                expected,
                "{start}..={end}"
            );
        }
        assert!(!h.intersects(KeyGroupRange::EMPTY));
    }
}
