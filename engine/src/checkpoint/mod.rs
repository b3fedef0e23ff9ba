//! Checkpoints: where the files of a snapshot go, how a checkpoint completes, which completed
//! checkpoints are kept, and how a restore finds the state of a key-group range.
//!
//! A checkpoint is taken in three steps (spec/checkpoint-protocol.md states the rules):
//!
//! 1. every task writes its state files through a [`CheckpointStorage`]: a
//!    [`StateFileWriter`] publishes a file atomically when it is finished and returns the
//!    [`StateFile`] (path and size) that a [`KeyedStateHandle`] or [`OperatorStateHandle`]
//!    lists;
//! 2. whoever coordinates the tasks gathers their handles as [`SubtaskState`]s and calls
//!    [`CheckpointStorage::complete_checkpoint`], which writes `chk-<id>/_metadata` last and
//!    atomically: a checkpoint without `_metadata` does not exist;
//! 3. completing a checkpoint subsumes older ones beyond the retention, deleting their files
//!    only once the new `_metadata` is durable.
//!
//! After a crash, [`CheckpointStorage::latest_completed`] returns the checkpoint to restore,
//! and [`CompletedCheckpoint::handles_for`] the handles that cover a task's key groups.
//!
//! ```
//! use std::sync::Arc;
//! use flowstate::checkpoint::*;
//! use flowstate::{KeyGroupRange, MemStorage};
//!
//! let storage = FsCheckpointStorage::open(Arc::new(MemStorage::new()), FsCheckpointOptions::default())?;
//! let id = CheckpointId(1);
//!
//! // A task writes its keyed state (the canonical snapshot bytes) and gets a handle back.
//! let range = KeyGroupRange::for_operator(128, 2, 0)?;
//! let handle = storage.write_keyed_state_bytes(&id.into(), "counter-0-keyed", range, b"snapshot bytes")?;
//!
//! // The coordinator completes the checkpoint with the handles of every task.
//! let task = SubtaskState::new("counter", 0, 2, 128).with_keyed(handle);
//! let done = storage.complete_checkpoint(id, vec![task])?;
//! assert_eq!(done.location(), "chk-1");
//!
//! // After a crash: the latest checkpoint, and the handles for a task's key groups.
//! let latest = storage.latest_completed()?.expect("checkpoint 1 is complete");
//! let mine = latest.handles_for(KeyGroupRange::new(0, 10)?);
//! let file = storage.open_state_file(&mine[0].files()[0])?;
//! let mut bytes = vec![0; file.len() as usize];
//! file.read_at(0, &mut bytes)?;
//! assert_eq!(bytes, b"snapshot bytes");
//! # Ok::<(), flowstate::Error>(())
//! ```

mod chain;
mod completed;
mod delta;
mod fs;
mod handle;
mod memory;
mod parallel_encode;
mod storage;
#[cfg(feature = "object-store")]
mod url;
mod write;

use std::fmt;

pub use chain::ChainRestoreSource;
pub use completed::CompletedCheckpoint;
pub(crate) use delta::{diffable, write_delta};
pub use fs::{FsCheckpointOptions, FsCheckpointStorage};
pub use handle::{KeyedStateHandle, OperatorStateHandle, StateFile, SubtaskState};
pub use memory::{MemoryCheckpointStorage, DEFAULT_MAX_STATE_SIZE};
pub use parallel_encode::default_encode_threads;
pub use storage::{CheckpointStorage, SnapshotTarget, StateFileWriter};
pub(crate) use write::{add_run, state_metas, write_state_file, NativeSnapshot};
pub use write::{
    read_operator_state, snapshot_meta, write_canonical, write_canonical_on, write_operator_state,
    FileRestoreSource, PendingSnapshot, SnapshotResult, SnapshotStats,
};

/// How deep under the root [`CheckpointStorage::savepoints`] looks for savepoint directories,
/// in path components (`savepoints/2026/sp-7` is 3).
pub const MAX_SAVEPOINT_DEPTH: usize = 4;

/// The name of the file that completes a checkpoint or savepoint, in its directory.
pub const METADATA_FILE: &str = "_metadata";

/// The directory, under the checkpoint storage's root, of files shared between incremental
/// checkpoints (the LSM backend's tables).
pub const SHARED_DIR: &str = "shared";

/// The directory, under the checkpoint storage's root, reserved for files the tasks own
/// (not used yet).
pub const TASK_OWNED_DIR: &str = "taskowned";

/// The id of a checkpoint, increasing with every checkpoint a job takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointId(pub u64);

impl CheckpointId {
    /// The name of the checkpoint's directory under the storage root: `chk-<id>`.
    pub fn dir_name(self) -> String {
        format!("chk-{}", self.0)
    }

    /// The id of a checkpoint directory's name, if `name` is exactly `chk-<id>` (decimal, no
    /// leading zero).
    pub fn from_dir_name(name: &str) -> Option<CheckpointId> {
        let digits = name.strip_prefix("chk-")?;
        let id: u64 = digits.parse().ok()?;
        (CheckpointId(id).dir_name() == name).then_some(CheckpointId(id))
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who owns a snapshot: the system (a checkpoint, deleted when subsumed) or the user (a
/// savepoint, in a directory the user names and the system never deletes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotKind {
    /// A checkpoint, kept while retention says so.
    Checkpoint,
    /// A savepoint, kept until the user deletes it.
    Savepoint,
}

impl SnapshotKind {
    pub(crate) fn to_record(self) -> flowstate_formats::checkpoint::SnapshotKindRecord {
        use flowstate_formats::checkpoint::SnapshotKindRecord as R;
        match self {
            SnapshotKind::Checkpoint => R::Checkpoint,
            SnapshotKind::Savepoint => R::Savepoint,
        }
    }

    pub(crate) fn from_record(kind: flowstate_formats::checkpoint::SnapshotKindRecord) -> Self {
        use flowstate_formats::checkpoint::SnapshotKindRecord as R;
        match kind {
            R::Checkpoint => SnapshotKind::Checkpoint,
            R::Savepoint => SnapshotKind::Savepoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_parse_only_in_canonical_form() {
        assert_eq!(CheckpointId(7).dir_name(), "chk-7");
        assert_eq!(CheckpointId::from_dir_name("chk-7"), Some(CheckpointId(7)));
        assert_eq!(
            CheckpointId::from_dir_name(&format!("chk-{}", u64::MAX)),
            Some(CheckpointId(u64::MAX))
        );
        for bad in [
            "chk-",
            "chk-07",
            "chk-+7",
            "chk-7x",
            "chk7",
            "shared",
            "chk-18446744073709551616",
        ] {
            assert_eq!(CheckpointId::from_dir_name(bad), None, "{bad}");
        }
    }
}
