//! The interface of checkpoint storage: where state files are written and read, and how
//! checkpoints complete, abort and are found again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::{fmt, io};

use super::completed::CompletedCheckpoint;
use super::handle::{KeyedStateHandle, OperatorStateHandle, StateFile, SubtaskState};
use super::{CheckpointId, SnapshotKind};
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::storage::ReadableFile;
use flowstate_formats::checkpoint::{FileOrigin, OriginKind};

/// What a snapshot is written for: checkpoint `id`, or a savepoint (also numbered with a
/// checkpoint id) in a directory the user names.
///
/// `CheckpointId` converts into a checkpoint target: `storage.create_state_file(&id.into(),
/// name)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotTarget {
    id: CheckpointId,
    savepoint_dir: Option<String>,
    native: bool,
}

impl SnapshotTarget {
    /// Checkpoint `id`: files go to `chk-<id>/`.
    pub fn checkpoint(id: CheckpointId) -> Self {
        SnapshotTarget {
            id,
            savepoint_dir: None,
            native: false,
        }
    }

    /// A savepoint numbered `id` in directory `dir` (relative to the storage root; not
    /// `chk-<n>`, `shared` or `taskowned`, nor inside them). Retention never touches it.
    pub fn savepoint(id: CheckpointId, dir: impl Into<String>) -> Self {
        SnapshotTarget {
            id,
            savepoint_dir: Some(dir.into()),
            native: false,
        }
    }

    /// A native savepoint numbered `id` in directory `dir`: a backend that has a native format
    /// (the LSM backend: its table files, copied into `dir`) writes it instead of the
    /// canonical file. It restores faster into the same kind of backend, but only into it;
    /// like every savepoint it is self-contained (no file under `shared/`). A backend without
    /// a native format writes the canonical file.
    pub fn native_savepoint(id: CheckpointId, dir: impl Into<String>) -> Self {
        SnapshotTarget {
            native: true,
            ..SnapshotTarget::savepoint(id, dir)
        }
    }

    /// Whether this is a native savepoint ([`native_savepoint`](Self::native_savepoint)).
    pub fn is_native_savepoint(&self) -> bool {
        self.native
    }

    /// The checkpoint id.
    pub fn id(&self) -> CheckpointId {
        self.id
    }

    /// What a state file named `name` of this snapshot records as its origin (spec/formats.md
    /// section 4.9): the snapshot's kind and id and the file's name.
    pub fn origin(&self, name: &str) -> FileOrigin {
        FileOrigin {
            kind: match self.kind() {
                SnapshotKind::Checkpoint => OriginKind::Checkpoint,
                SnapshotKind::Savepoint => OriginKind::Savepoint,
            },
            id: self.id.0,
            name: name.to_owned(),
        }
    }

    /// Checkpoint or savepoint.
    pub fn kind(&self) -> SnapshotKind {
        if self.savepoint_dir.is_some() {
            SnapshotKind::Savepoint
        } else {
            SnapshotKind::Checkpoint
        }
    }

    /// The savepoint directory, for a savepoint.
    pub fn savepoint_dir(&self) -> Option<&str> {
        self.savepoint_dir.as_deref()
    }
}

impl From<CheckpointId> for SnapshotTarget {
    fn from(id: CheckpointId) -> Self {
        SnapshotTarget::checkpoint(id)
    }
}

impl fmt::Display for SnapshotTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.savepoint_dir {
            None => write!(f, "checkpoint {}", self.id),
            Some(dir) => write!(f, "savepoint {} in {dir}", self.id),
        }
    }
}

/// A state file being written. Nothing is visible under the file's name until
/// [`finish`](StateFileWriter::finish) has made it durable and published it atomically.
///
/// Dropping a writer without finishing it leaves a temporary file that aborting the
/// checkpoint, or the next start of the storage, removes. After an error the writer is
/// unusable: `finish` fails too.
pub trait StateFileWriter: Send + fmt::Debug {
    /// The path the file will have, relative to the storage root.
    fn path(&self) -> &str;

    /// Appends all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> Result<()>;

    /// The number of bytes written so far.
    fn len(&self) -> u64;

    /// Whether nothing was written yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the bytes durable and publishes the file under its name (temporary file,
    /// sync, rename, directory sync), returning the file for a handle.
    fn finish(self: Box<Self>) -> Result<StateFile>;
}

/// Where checkpoints and savepoints are stored: the state files the tasks write, the
/// `_metadata` file that completes a checkpoint, retention of completed checkpoints, and
/// finding them again after a crash.
///
/// Implementations: [`FsCheckpointStorage`](super::FsCheckpointStorage) over any
/// [`Storage`](crate::storage::Storage), and the bounded
/// [`MemoryCheckpointStorage`](super::MemoryCheckpointStorage). spec/checkpoint-protocol.md
/// states the visibility and deletion rules every implementation keeps.
///
/// All methods take `&self` and may be called from several threads: tasks write state files
/// concurrently; completion, abort and garbage collection are serialized.
pub trait CheckpointStorage: Send + Sync + fmt::Debug {
    /// Opens a new state file named `name` for the snapshot `target`.
    ///
    /// `name` is one path component (no `/`), not `_metadata`, unique within the snapshot
    /// (a task's operator id and subtask index make a good name); writing a name again
    /// replaces the earlier file when the new one is finished. Fails if the snapshot is
    /// already complete, or if `target` is a checkpoint not newer than the latest completed
    /// one.
    fn create_state_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<Box<dyn StateFileWriter>>;

    /// Opens shared file `name` (one path component: it goes to `shared/<name>`) for
    /// checkpoint `target`, to be referenced by this and later checkpoints (an incremental
    /// LSM checkpoint's new table). The name must identify the content for good: a file of
    /// that name that exists already holds the same bytes, and finishing the writer replaces
    /// it atomically. The file is reserved for `target` from now on: garbage collection does
    /// not delete it while `target` is in progress, nor later while a retained checkpoint
    /// references it. Refused for a savepoint (a savepoint never references a shared file),
    /// a complete target, or a checkpoint not newer than the latest completed one.
    fn create_shared_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<Box<dyn StateFileWriter>>;

    /// Publishes the local file `source` as shared file `name` of checkpoint `target` by a
    /// hard link, where this storage keeps its files on the same local file system; returns
    /// `None` (and creates nothing) where it cannot: the caller then copies through
    /// [`create_shared_file`](Self::create_shared_file). The rules of `create_shared_file`
    /// apply; a file of that name that exists already (the same content, by the naming
    /// rule) is kept and returned if its size is `source`'s.
    fn link_shared_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
        source: &Path,
    ) -> Result<Option<StateFile>>;

    /// Reserves the existing shared file `file` for checkpoint `target`, which is about to
    /// reference it: returns `true` if it exists with the recorded size (it is then kept at
    /// least until `target` completes or aborts), `false` if it is gone or differs (the
    /// caller publishes it again). The same refusals as
    /// [`create_shared_file`](Self::create_shared_file).
    fn reserve_shared_file(&self, target: &SnapshotTarget, file: &StateFile) -> Result<bool>;

    /// The shared files under `shared/` and, for each, how many complete checkpoints
    /// reference it (0: garbage that the next collection deletes, or a file an in-progress
    /// checkpoint reserved). Errors if a complete checkpoint's `_metadata` cannot be read.
    fn shared_file_references(&self) -> Result<BTreeMap<String, usize>>;

    /// The local file-system path of a state or shared file, where this storage keeps its
    /// files in a local directory (a restore links it instead of copying); `None` otherwise.
    fn local_path(&self, file: &StateFile) -> Result<Option<PathBuf>>;

    /// How many files a task's checkpoint should upload, or its restore fetch, at once (the
    /// tables of an incremental LSM checkpoint): 1 by default, more on an object store
    /// (`ObjectStorageOptions::with_parallel_transfers`, feature `object-store`).
    fn parallel_transfers(&self) -> usize {
        1
    }

    /// Opens a state file of a handle for random-access reads, checking that its length is
    /// the size the handle records ([`Error::StateFileSize`](crate::Error::StateFileSize)
    /// otherwise). The file implements [`flowstate_formats::RandomAccess`], so the formats'
    /// readers (a snapshot reader seeking to the key groups it restores) read it directly.
    fn open_state_file(&self, file: &StateFile) -> Result<Box<dyn ReadableFile>>;

    /// Opens a state file as [`open_state_file`](Self::open_state_file) does (only a regular
    /// file inside the storage), but without checking its size or content checksum against
    /// the handle: for verification tools that locate the damaged blocks of a file whose
    /// whole-content check already failed. A restore never uses it.
    fn open_state_file_unchecked(&self, file: &StateFile) -> Result<Box<dyn ReadableFile>>;

    /// Completes the snapshot `target` with the state every task reported: checks that
    /// every listed file is a finished state file of this snapshot with the recorded size,
    /// then writes `_metadata` atomically and durably. Only then is the snapshot complete,
    /// and only then does a checkpoint subsume older ones beyond the retention (a failure to
    /// delete them does not fail the completion: the garbage is collected later).
    ///
    /// On an error the snapshot may or may not be complete (the `_metadata` publication may
    /// have been cut short after its rename); it is never partly visible.
    fn complete(
        &self,
        target: &SnapshotTarget,
        tasks: Vec<SubtaskState>,
    ) -> Result<CompletedCheckpoint>;

    /// Aborts the snapshot `target`: deletes every file written for it. Fails if it is
    /// complete (completed checkpoints are deleted by retention, savepoints by the user).
    fn abort(&self, target: &SnapshotTarget) -> Result<()>;

    /// The newest completed checkpoint (savepoints are not considered), or `None`. A
    /// damaged `_metadata` is an error naming the file, never skipped silently.
    fn latest_completed(&self) -> Result<Option<CompletedCheckpoint>>;

    /// The ids of the completed checkpoints (those with a `_metadata` file), ascending.
    fn completed(&self) -> Result<Vec<CheckpointId>>;

    /// Reads completed checkpoint `id`.
    fn load_checkpoint(&self, id: CheckpointId) -> Result<CompletedCheckpoint>;

    /// Reads the completed savepoint in directory `dir` (relative to the storage root).
    fn load_savepoint(&self, dir: &str) -> Result<CompletedCheckpoint>;

    /// The completed savepoints under the root: every directory up to
    /// [`MAX_SAVEPOINT_DEPTH`](super::MAX_SAVEPOINT_DEPTH) components deep (outside `chk-<n>`,
    /// `shared` and `taskowned`) that holds a savepoint's `_metadata`, as (id, directory),
    /// ascending. A `_metadata` that cannot be read is an error naming it, never skipped.
    fn savepoints(&self) -> Result<Vec<(CheckpointId, String)>>;

    /// Reads the savepoint numbered `id`, found among [`savepoints`](Self::savepoints), as
    /// checkpoints are found by id. None with that id, or several (savepoint ids are the
    /// embedder's choice), is [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming
    /// them: load one by directory then.
    fn load_savepoint_by_id(&self, id: CheckpointId) -> Result<CompletedCheckpoint> {
        let dirs: Vec<String> = self
            .savepoints()?
            .into_iter()
            .filter(|(found, _)| *found == id)
            .map(|(_, dir)| dir)
            .collect();
        match dirs.as_slice() {
            [dir] => self.load_savepoint(dir),
            [] => Err(crate::Error::InvalidArgument(format!(
                "no savepoint numbered {} under the checkpoint root",
                id.0
            ))),
            several => Err(crate::Error::InvalidArgument(format!(
                "savepoints in {} are all numbered {}: load one by its directory",
                several.join(", "),
                id.0
            ))),
        }
    }

    /// Applies retention now: deletes completed checkpoints beyond the newest N and
    /// incomplete checkpoints older than the newest completed one. Completion does this
    /// too; call it to retry after a deletion failed.
    fn collect_garbage(&self) -> Result<()>;

    /// Writes `bytes`, already encoded (a canonical key-group snapshot of `key_group_range`),
    /// as state file `name` of `target` and returns the handle listing it. (To write a task's
    /// state, use `task::snapshot_task`; to encode and write operator state,
    /// `checkpoint::write_operator_state`.)
    fn write_keyed_state_bytes(
        &self,
        target: &SnapshotTarget,
        name: &str,
        key_group_range: KeyGroupRange,
        bytes: &[u8],
    ) -> Result<KeyedStateHandle> {
        let mut writer = self.create_state_file(target, name)?;
        writer.write_all(bytes)?;
        KeyedStateHandle::new(key_group_range, vec![writer.finish()?])
    }

    /// Writes `bytes`, already encoded (a task's operator state file), as state file `name` of
    /// `target` and returns the handle listing it.
    fn write_operator_state_bytes(
        &self,
        target: &SnapshotTarget,
        name: &str,
        bytes: &[u8],
    ) -> Result<OperatorStateHandle> {
        let mut writer = self.create_state_file(target, name)?;
        writer.write_all(bytes)?;
        Ok(OperatorStateHandle::new(writer.finish()?))
    }

    /// Completes checkpoint `id`; see [`complete`](CheckpointStorage::complete).
    fn complete_checkpoint(
        &self,
        id: CheckpointId,
        tasks: Vec<SubtaskState>,
    ) -> Result<CompletedCheckpoint> {
        self.complete(&SnapshotTarget::checkpoint(id), tasks)
    }

    /// Completes the savepoint `id` in directory `dir`; see
    /// [`complete`](CheckpointStorage::complete).
    fn complete_savepoint(
        &self,
        id: CheckpointId,
        dir: &str,
        tasks: Vec<SubtaskState>,
    ) -> Result<CompletedCheckpoint> {
        self.complete(&SnapshotTarget::savepoint(id, dir), tasks)
    }

    /// Aborts checkpoint `id`; see [`abort`](CheckpointStorage::abort).
    fn abort_checkpoint(&self, id: CheckpointId) -> Result<()> {
        self.abort(&SnapshotTarget::checkpoint(id))
    }
}

/// Storage files are what the formats' readers read: a failed read keeps its
/// `io::ErrorKind` (`UnexpectedEof` past the end) and carries the engine's error, path
/// included.
impl flowstate_formats::RandomAccess for dyn ReadableFile {
    fn len(&self) -> u64 {
        ReadableFile::len(self)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        ReadableFile::read_at(self, offset, buf).map_err(|err| {
            let kind = match &err {
                Error::Io { source, .. } => source.kind(),
                _ => io::ErrorKind::Other,
            };
            io::Error::new(kind, err)
        })
    }

    fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        ReadableFile::bytes_at(self, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use flowstate_formats::RandomAccess;

    use super::*;
    use crate::storage::{MemStorage, Storage};

    #[test]
    fn storage_files_are_random_access_sources_for_the_formats() {
        let storage = MemStorage::new();
        storage.write_atomic("f", b"0123456789").unwrap();
        let file: Box<dyn ReadableFile> = storage.open("f").unwrap();
        assert_eq!(RandomAccess::len(&file), 10);
        let mut buf = [0u8; 3];
        RandomAccess::read_at(&file, 4, &mut buf).unwrap();
        assert_eq!(&buf, b"456");
        let err = RandomAccess::read_at(&file, 8, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains('f'), "{err}");
    }
}
