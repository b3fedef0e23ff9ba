//! A completed checkpoint or savepoint, as its `_metadata` file describes it.

use flowstate_formats::checkpoint::CheckpointMetadataRecord;

use super::handle::{KeyedStateHandle, OperatorStateHandle, StateFile, SubtaskState};
use super::{CheckpointId, SnapshotKind, METADATA_FILE};
use crate::error::Result;
use crate::key_group::KeyGroupRange;

/// A checkpoint (or savepoint) whose `_metadata` file is durable: every file its handles
/// list was published before it, so all of them can be read.
///
/// Handle paths are relative to the checkpoint storage's root, for savepoints too (their
/// `_metadata` stores them relative to the savepoint directory, which the storage resolves
/// when it reads the file), so [`CheckpointStorage::open_state_file`] opens any of them.
///
/// [`CheckpointStorage::open_state_file`]: super::CheckpointStorage::open_state_file
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCheckpoint {
    id: CheckpointId,
    kind: SnapshotKind,
    timestamp_millis: u64,
    location: String,
    tasks: Vec<SubtaskState>,
}

impl CompletedCheckpoint {
    pub(crate) fn new(
        id: CheckpointId,
        kind: SnapshotKind,
        timestamp_millis: u64,
        location: String,
        tasks: Vec<SubtaskState>,
    ) -> Self {
        CompletedCheckpoint {
            id,
            kind,
            timestamp_millis,
            location,
            tasks,
        }
    }

    /// The checkpoint from a decoded `_metadata` record whose paths are relative to
    /// `location`'s base (`rebase` turns them into storage paths).
    pub(crate) fn from_record(
        record: CheckpointMetadataRecord,
        location: String,
        rebase: &dyn Fn(&str) -> Result<String>,
    ) -> Result<Self> {
        let tasks = record
            .tasks
            .into_iter()
            .map(|task| SubtaskState::from_record(task)?.map_paths(rebase))
            .collect::<Result<_>>()?;
        Ok(CompletedCheckpoint::new(
            CheckpointId(record.checkpoint_id),
            SnapshotKind::from_record(record.kind),
            record.timestamp_millis,
            location,
            tasks,
        ))
    }

    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.id
    }

    /// Checkpoint or savepoint.
    pub fn kind(&self) -> SnapshotKind {
        self.kind
    }

    /// When it completed, in milliseconds since the Unix epoch (from the storage's clock).
    pub fn timestamp_millis(&self) -> u64 {
        self.timestamp_millis
    }

    /// Its directory, relative to the storage root: `chk-<id>`, or the savepoint directory.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The path of its `_metadata` file, relative to the storage root.
    pub fn metadata_path(&self) -> String {
        format!("{}/{METADATA_FILE}", self.location)
    }

    /// The state every subtask reported, in the order they were given at completion.
    pub fn tasks(&self) -> &[SubtaskState] {
        &self.tasks
    }

    /// The state subtask `subtask_index` of operator `operator_id` reported, if it took part.
    pub fn task(&self, operator_id: &str, subtask_index: u32) -> Option<&SubtaskState> {
        self.tasks
            .iter()
            .find(|t| t.operator_id == operator_id && t.subtask_index == subtask_index)
    }

    /// The operator state handles of subtask `subtask_index` of `operator_id` (empty if it
    /// did not take part).
    pub fn operator_handles(
        &self,
        operator_id: &str,
        subtask_index: u32,
    ) -> &[OperatorStateHandle] {
        self.task(operator_id, subtask_index)
            .map_or(&[], |t| t.operator.as_slice())
    }

    /// Every keyed state handle, of any operator, whose key-group range intersects `range`:
    /// what a task owning `range` restores from, at any parallelism (Flink's
    /// `extractIntersectingState`). Handles are returned whole; the restore reads only the
    /// key groups it owns from them. For a job with several keyed operators use
    /// [`keyed_handles_for`](Self::keyed_handles_for).
    pub fn handles_for(&self, range: KeyGroupRange) -> Vec<KeyedStateHandle> {
        self.tasks
            .iter()
            .flat_map(|t| t.keyed.iter())
            .filter(|h| h.intersects(range))
            .cloned()
            .collect()
    }

    /// The keyed state handles of operator `operator_id` whose range intersects `range`.
    pub fn keyed_handles_for(
        &self,
        operator_id: &str,
        range: KeyGroupRange,
    ) -> Vec<KeyedStateHandle> {
        self.tasks
            .iter()
            .filter(|t| t.operator_id == operator_id)
            .flat_map(|t| t.keyed.iter())
            .filter(|h| h.intersects(range))
            .cloned()
            .collect()
    }

    /// Every state file of the checkpoint's own directory its handles list (a file listed
    /// twice appears twice); not the shared files.
    pub fn files(&self) -> impl Iterator<Item = &StateFile> {
        self.tasks.iter().flat_map(SubtaskState::files)
    }

    /// Every shared file (under `shared/`) the checkpoint's handles reference (a file
    /// referenced twice appears twice).
    pub fn shared_files(&self) -> impl Iterator<Item = &StateFile> {
        self.tasks.iter().flat_map(SubtaskState::shared_files)
    }

    /// The `_metadata` record, with every path made relative by `relativize`.
    pub(crate) fn to_record(
        &self,
        relativize: &dyn Fn(&str) -> Result<String>,
    ) -> Result<CheckpointMetadataRecord> {
        let tasks = self
            .tasks
            .iter()
            .map(|t| Ok(SubtaskState::to_record(&t.map_paths(relativize)?)))
            .collect::<Result<_>>()?;
        Ok(CheckpointMetadataRecord {
            checkpoint_id: self.id.0,
            kind: self.kind.to_record(),
            timestamp_millis: self.timestamp_millis,
            tasks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint of one keyed operator at `parallelism` over 128 key groups, as Flink
    /// assigns them.
    fn checkpoint(parallelism: u32) -> CompletedCheckpoint {
        let tasks = (0..parallelism)
            .map(|i| {
                let range = KeyGroupRange::for_operator(128, parallelism, i).unwrap();
                let file = StateFile::new(format!("chk-1/op-{i}"), 10).unwrap();
                SubtaskState::new("op", i, parallelism, 128)
                    .with_keyed(KeyedStateHandle::new(range, vec![file]).unwrap())
            })
            .collect();
        CompletedCheckpoint::new(
            CheckpointId(1),
            SnapshotKind::Checkpoint,
            0,
            "chk-1".into(),
            tasks,
        )
    }

    fn ranges(handles: &[KeyedStateHandle]) -> Vec<(u16, u16)> {
        handles
            .iter()
            .map(|h| (h.key_group_range().start(), h.key_group_range().end()))
            .collect()
    }

    #[test]
    fn handles_for_picks_every_intersecting_handle_when_rescaling() {
        // 1 -> 3: every new task restores from the one handle.
        let one = checkpoint(1);
        for i in 0..3 {
            let range = KeyGroupRange::for_operator(128, 3, i).unwrap();
            assert_eq!(ranges(&one.handles_for(range)), vec![(0, 127)]);
        }
        // 3 -> 2: [0..=42], [43..=85], [86..=127] onto [0..=63], [64..=127].
        let three = checkpoint(3);
        let r0 = KeyGroupRange::for_operator(128, 2, 0).unwrap();
        let r1 = KeyGroupRange::for_operator(128, 2, 1).unwrap();
        assert_eq!(ranges(&three.handles_for(r0)), vec![(0, 42), (43, 85)]);
        assert_eq!(ranges(&three.handles_for(r1)), vec![(43, 85), (86, 127)]);
        // Range edges: a range touching a handle's last key group includes it.
        let edge = KeyGroupRange::new(42, 42).unwrap();
        assert_eq!(ranges(&three.handles_for(edge)), vec![(0, 42)]);
        assert!(three.handles_for(KeyGroupRange::EMPTY).is_empty());
        // By operator: another operator's handles are left out.
        assert_eq!(three.keyed_handles_for("op", r0).len(), 2);
        assert!(three.keyed_handles_for("other", r0).is_empty());
        assert!(three.operator_handles("op", 0).is_empty());
        assert_eq!(three.files().count(), 3);
        assert_eq!(three.metadata_path(), "chk-1/_metadata");
    }
}
