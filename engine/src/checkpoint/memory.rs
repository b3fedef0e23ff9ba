//! Bounded checkpoint storage in memory, for tests and small jobs.

use std::sync::Arc;

use super::completed::CompletedCheckpoint;
use super::fs::{FsCheckpointOptions, FsCheckpointStorage};
use super::handle::{StateFile, SubtaskState};
use super::storage::{CheckpointStorage, SnapshotTarget, StateFileWriter};
use super::CheckpointId;
use crate::error::Result;
use crate::storage::{MemStorage, ReadableFile};

/// The default limit of one state file in [`MemoryCheckpointStorage`]: 5 MiB, as Flink's
/// `JobManagerCheckpointStorage` (`DEFAULT_MAX_STATE_SIZE`).
pub const DEFAULT_MAX_STATE_SIZE: u64 = 5 * 1024 * 1024;

/// Checkpoint storage in memory: the layout and rules of [`FsCheckpointStorage`] on a
/// [`MemStorage`], with a limit on the size of each state file.
///
/// As with Flink's `JobManagerCheckpointStorage`, the limit applies to each state file (each
/// task's snapshot), [`DEFAULT_MAX_STATE_SIZE`] unless configured: a write that would go
/// past it fails with [`Error::StateSizeLimit`](crate::Error::StateSizeLimit) naming the file
/// and the limit, and the checkpoint fails instead of growing memory without bound. The total
/// held is at most the retained checkpoints' files.
///
/// The state lives as long as the storage (and clones of its [`MemStorage`]); the
/// `MemStorage` also simulates crashes, for tests.
#[derive(Debug)]
pub struct MemoryCheckpointStorage {
    inner: FsCheckpointStorage,
    memory: MemStorage,
    max_state_size: u64,
}

impl Default for MemoryCheckpointStorage {
    fn default() -> Self {
        MemoryCheckpointStorage::new()
    }
}

impl MemoryCheckpointStorage {
    /// Empty storage with the default limit and options (one retained checkpoint).
    pub fn new() -> Self {
        MemoryCheckpointStorage::open(
            MemStorage::new(),
            DEFAULT_MAX_STATE_SIZE,
            FsCheckpointOptions::default(),
        )
        .expect("the default options are valid, and a new MemStorage injects no fault")
    }

    /// Empty storage whose state files may hold at most `max_state_size` bytes each. Fails
    /// only on invalid options (a retention of 0).
    pub fn with_limit(max_state_size: u64, options: FsCheckpointOptions) -> Result<Self> {
        MemoryCheckpointStorage::open(MemStorage::new(), max_state_size, options)
    }

    /// Storage on `memory`, which may already hold checkpoints (for instance after a
    /// simulated crash); start-up cleans it as [`FsCheckpointStorage::open`] does.
    pub fn open(
        memory: MemStorage,
        max_state_size: u64,
        options: FsCheckpointOptions,
    ) -> Result<Self> {
        let inner = FsCheckpointStorage::open_with_limit(
            Arc::new(memory.clone()),
            options,
            Some(max_state_size),
        )?;
        Ok(MemoryCheckpointStorage {
            inner,
            memory,
            max_state_size,
        })
    }

    /// The in-memory file system holding the checkpoints.
    pub fn memory(&self) -> &MemStorage {
        &self.memory
    }

    /// The most bytes one state file may hold.
    pub fn max_state_size(&self) -> u64 {
        self.max_state_size
    }
}

impl CheckpointStorage for MemoryCheckpointStorage {
    fn create_state_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<Box<dyn StateFileWriter>> {
        self.inner.create_state_file(target, name)
    }

    fn create_shared_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
    ) -> Result<Box<dyn StateFileWriter>> {
        self.inner.create_shared_file(target, name)
    }

    /// Memory cannot link to a local file: always `None` (the caller copies).
    fn link_shared_file(
        &self,
        target: &SnapshotTarget,
        name: &str,
        _source: &std::path::Path,
    ) -> Result<Option<StateFile>> {
        self.inner.shared_path(target, name)?;
        Ok(None)
    }

    fn reserve_shared_file(&self, target: &SnapshotTarget, file: &StateFile) -> Result<bool> {
        self.inner.reserve_shared_file(target, file)
    }

    fn shared_file_references(&self) -> Result<std::collections::BTreeMap<String, usize>> {
        self.inner.shared_file_references()
    }

    /// Memory has no local path: `None`.
    fn local_path(&self, _file: &StateFile) -> Result<Option<std::path::PathBuf>> {
        Ok(None)
    }

    fn open_state_file(&self, file: &StateFile) -> Result<Box<dyn ReadableFile>> {
        self.inner.open_state_file(file)
    }

    fn open_state_file_unchecked(&self, file: &StateFile) -> Result<Box<dyn ReadableFile>> {
        self.inner.open_state_file_unchecked(file)
    }

    fn complete(
        &self,
        target: &SnapshotTarget,
        tasks: Vec<SubtaskState>,
    ) -> Result<CompletedCheckpoint> {
        self.inner.complete(target, tasks)
    }

    fn abort(&self, target: &SnapshotTarget) -> Result<()> {
        self.inner.abort(target)
    }

    fn latest_completed(&self) -> Result<Option<CompletedCheckpoint>> {
        self.inner.latest_completed()
    }

    fn completed(&self) -> Result<Vec<CheckpointId>> {
        self.inner.completed()
    }

    fn load_checkpoint(&self, id: CheckpointId) -> Result<CompletedCheckpoint> {
        self.inner.load_checkpoint(id)
    }

    fn load_savepoint(&self, dir: &str) -> Result<CompletedCheckpoint> {
        self.inner.load_savepoint(dir)
    }

    fn savepoints(&self) -> Result<Vec<(CheckpointId, String)>> {
        self.inner.savepoints()
    }

    fn collect_garbage(&self) -> Result<()> {
        self.inner.collect_garbage()
    }
}
