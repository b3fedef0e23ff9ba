//! A parallel task's whole state in one call each way: [`snapshot_task`] writes its keyed and
//! operator state into one checkpoint or savepoint and returns the task's [`SubtaskState`];
//! [`restore_task`] restores task `i` of `p` from a completed checkpoint or savepoint, keyed
//! and operator state together, at any parallelism. What an embedder otherwise assembles by
//! hand (file names, handles, `SubtaskState`, filtering handles by key-group range, opening
//! restore sources, redistributing operator state) happens here.
//!
//! ```
//! use std::sync::Arc;
//! use flowstate::*;
//! use flowstate::operator::OperatorStateStore;
//! use flowstate::task::{restore_task, snapshot_task, TaskId};
//!
//! let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new());
//! let task = TaskId::new("counter", 0, 1);
//! let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
//! let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
//! backend.set_current_key(&7);
//! backend.value(&count).update(1)?;
//! let mut source = OperatorStateStore::new();
//! let offset = source.list_state(&ListStateDescriptor::<u64>::new("offset"))?;
//! source.list(&offset).update(vec![42])?;
//!
//! // The barrier: the synchronous phase, then the rest on any thread.
//! let pending = snapshot_task(&mut backend, &source, &task, CheckpointId(1), &storage)?;
//! let state = pending.run()?.state;
//! let done = storage.complete_checkpoint(CheckpointId(1), vec![state])?;
//!
//! // After a failure, at parallelism 2: task 1 of 2.
//! let mut restored = restore_task::<u64>(
//!     BackendConfig::heap(),
//!     &*storage,
//!     &done,
//!     &TaskId::new("counter", 1, 2),
//! )?;
//! let offset = restored.operator_state.list_state(&ListStateDescriptor::<u64>::new("offset"))?;
//! assert_eq!(restored.operator_state.list(&offset).get()?, Vec::<u64>::new()); // split: task 0 got it
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::sync::Arc;

use crate::backend::KeyedStateBackend;
use crate::checkpoint::{
    read_operator_state, write_operator_state, CheckpointStorage, CompletedCheckpoint,
    PendingSnapshot, SnapshotStats, SnapshotTarget, SubtaskState,
};
use crate::config::BackendConfig;
use crate::dispatch::Backend;
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::operator::{OperatorStateSnapshot, OperatorStateStore};
use crate::state::Key;

/// Which parallel task: an operator, the task's index and the operator's parallelism.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId {
    /// The operator's id, unique in the job (it names the task's files).
    pub operator_id: String,
    /// The task's index, below `parallelism`.
    pub index: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
}

impl TaskId {
    /// Task `index` of `parallelism` of `operator_id`.
    pub fn new(operator_id: impl Into<String>, index: u32, parallelism: u32) -> Self {
        TaskId {
            operator_id: operator_id.into(),
            index,
            parallelism,
        }
    }

    /// The name of the task's keyed state file in a snapshot: `<operator>-<index>-keyed`.
    pub fn keyed_file_name(&self) -> String {
        format!("{}-{}-keyed", self.operator_id, self.index)
    }

    /// The name of the task's operator state file in a snapshot: `<operator>-<index>-operator`.
    pub fn operator_file_name(&self) -> String {
        format!("{}-{}-operator", self.operator_id, self.index)
    }

    fn check(&self) -> Result<()> {
        if self.parallelism == 0 || self.index >= self.parallelism {
            return Err(Error::InvalidArgument(format!(
                "task {} of {}: the index must be below the parallelism",
                self.index, self.parallelism
            )));
        }
        Ok(())
    }
}

/// A task's snapshot between its synchronous phase and its completion: `run` (on any thread)
/// writes the keyed state and the operator state.
pub struct PendingTaskSnapshot {
    /// `None` for a task with operator state only ([`snapshot_operator_task`]).
    keyed: Option<PendingSnapshot>,
    operator: OperatorStateSnapshot,
    storage: Arc<dyn CheckpointStorage>,
    target: SnapshotTarget,
    task: TaskId,
    max_parallelism: u32,
}

impl std::fmt::Debug for PendingTaskSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingTaskSnapshot")
            .field("task", &self.task)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What a task's snapshot wrote: the [`SubtaskState`] to complete the checkpoint with, and the
/// keyed state's figures.
#[derive(Debug)]
pub struct TaskSnapshotResult {
    /// The task's state, for [`CheckpointStorage::complete`].
    pub state: SubtaskState,
    /// What writing the keyed state did (all zero for a task without keyed state).
    pub stats: SnapshotStats,
}

impl PendingTaskSnapshot {
    /// Writes the keyed state (canonical file or native snapshot) and the operator state (if
    /// the task has any) as files of the snapshot, and returns the task's state. On an error
    /// nothing is published; the embedder aborts the checkpoint.
    pub fn run(self) -> Result<TaskSnapshotResult> {
        let mut state = SubtaskState::new(
            self.task.operator_id.clone(),
            self.task.index,
            self.task.parallelism,
            self.max_parallelism,
        );
        let mut stats = SnapshotStats::default();
        if let Some(keyed) = self.keyed {
            let keyed = keyed.run()?;
            state = state.with_keyed(keyed.handle);
            stats = keyed.stats;
        }
        if !self.operator.states.is_empty() {
            let handle = write_operator_state(
                &*self.storage,
                &self.target,
                &self.task.operator_file_name(),
                &self.operator,
            )?;
            state = state.with_operator(handle);
        }
        Ok(TaskSnapshotResult { state, stats })
    }

    /// Writes the keyed state's blocks with `compression` (see
    /// [`PendingSnapshot::with_compression`]); no effect on a task without keyed state.
    pub fn with_compression(mut self, compression: flowstate_formats::Compression) -> Self {
        self.keyed = self.keyed.map(|k| k.with_compression(compression));
        self
    }
}

/// The synchronous phase of a task's snapshot: freezes the keyed state of `backend` and copies
/// `operator_state`, for checkpoint or savepoint `target` of `storage`. The files are named after
/// the task ([`TaskId::keyed_file_name`], [`TaskId::operator_file_name`]), so no two tasks of a
/// job collide.
pub fn snapshot_task<K: Key, B: KeyedStateBackend<K>>(
    backend: &mut B,
    operator_state: &OperatorStateStore,
    task: &TaskId,
    target: impl Into<SnapshotTarget>,
    storage: &Arc<dyn CheckpointStorage>,
) -> Result<PendingTaskSnapshot> {
    task.check()?;
    let target = target.into();
    let keyed = backend.snapshot(target.clone(), storage, &task.keyed_file_name())?;
    Ok(PendingTaskSnapshot {
        keyed: Some(keyed),
        operator: operator_state.snapshot(),
        storage: Arc::clone(storage),
        target,
        task: task.clone(),
        max_parallelism: backend.max_parallelism(),
    })
}

/// The synchronous phase of the snapshot of a task with operator state only (a source, a
/// sink): copies `operator_state`, for checkpoint or savepoint `target` of `storage`, of an
/// operator of `max_parallelism` (the job's, as the keyed operators'). Restore it with
/// [`restore_operator_task`].
pub fn snapshot_operator_task(
    operator_state: &OperatorStateStore,
    task: &TaskId,
    max_parallelism: u32,
    target: impl Into<SnapshotTarget>,
    storage: &Arc<dyn CheckpointStorage>,
) -> Result<PendingTaskSnapshot> {
    task.check()?;
    Ok(PendingTaskSnapshot {
        keyed: None,
        operator: operator_state.snapshot(),
        storage: Arc::clone(storage),
        target: target.into(),
        task: task.clone(),
        max_parallelism,
    })
}

/// A task's keyed state backend and its operator state: restored ([`restore_task`]) or fresh
/// ([`open_task`]).
pub struct RestoredTask<K: Key> {
    /// The keyed state of the key groups the task owns.
    pub backend: Backend<K>,
    /// The task's share of the operator's operator state (split, union and broadcast state
    /// redistributed over the new parallelism).
    pub operator_state: OperatorStateStore,
}

impl<K: Key> std::fmt::Debug for RestoredTask<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoredTask")
            .field("key_groups", &self.backend.key_group_range())
            .finish_non_exhaustive()
    }
}

/// Opens `task` fresh, for a job started without a checkpoint: the backend `config` describes,
/// owning the key groups of task `index` of `parallelism` (the config's key-group range is set
/// to that, as [`restore_task`] does), and an empty operator state. So an embedder has one
/// path: `restore_task` when there is a checkpoint to start from, `open_task` when there is none.
pub fn open_task<K: Key>(config: BackendConfig, task: &TaskId) -> Result<RestoredTask<K>> {
    task.check()?;
    let range =
        KeyGroupRange::for_operator(config.get_max_parallelism(), task.parallelism, task.index)?;
    Ok(RestoredTask {
        backend: Backend::open(config.key_group_range(range))?,
        operator_state: OperatorStateStore::new(),
    })
}

/// Restores `task` from checkpoint or savepoint `from` of `storage`, at any parallelism: the
/// backend `config` describes, owning the key groups of task `index` of `parallelism` (the
/// config's key-group range is set to that), with the keyed state of the operator's handles
/// that intersect them; and the operator's operator state redistributed to the task.
pub fn restore_task<K: Key>(
    config: BackendConfig,
    storage: &dyn CheckpointStorage,
    from: &CompletedCheckpoint,
    task: &TaskId,
) -> Result<RestoredTask<K>> {
    task.check()?;
    let max_parallelism = config.get_max_parallelism();
    let range = KeyGroupRange::for_operator(max_parallelism, task.parallelism, task.index)?;
    let handles = from.keyed_handles_for(&task.operator_id, range);
    let backend = Backend::restore_from(config.key_group_range(range), storage, &handles)?;
    let operator_state = restore_operator_task(storage, from, task)?;
    Ok(RestoredTask {
        backend,
        operator_state,
    })
}

/// Restores the operator state of `task` from checkpoint or savepoint `from` of `storage`, at
/// any parallelism: the operator's operator state redistributed to task `index` of
/// `parallelism` (empty if the operator had none). [`restore_task`] does this too; this alone
/// serves a task without keyed state.
pub fn restore_operator_task(
    storage: &dyn CheckpointStorage,
    from: &CompletedCheckpoint,
    task: &TaskId,
) -> Result<OperatorStateStore> {
    task.check()?;
    let mut snapshots = Vec::new();
    for old in from
        .tasks()
        .iter()
        .filter(|t| t.operator_id == task.operator_id)
    {
        for handle in &old.operator {
            snapshots.push(read_operator_state(storage, handle)?);
        }
    }
    let refs: Vec<&OperatorStateSnapshot> = snapshots.iter().collect();
    if refs.is_empty() {
        Ok(OperatorStateStore::new())
    } else {
        OperatorStateStore::restore(&refs, task.parallelism, task.index)
    }
}
