//! The source of one worker: it owns some splits of the input, their offsets in operator state
//! (a split list state, so a restore at another parallelism deals the splits out again), and
//! replays from the offsets a checkpoint holds.

use std::sync::Arc;

use flowstate::operator::{OperatorListState, OperatorStateStore};
use flowstate::task::{restore_operator_task, snapshot_operator_task, TaskId};
use flowstate::*;

use crate::ack::Ack;
use crate::input::{InputSpec, Record};

/// The source operator's id.
pub const OPERATOR: &str = "source";

/// One worker's source task.
pub struct SourceTask {
    task: TaskId,
    spec: InputSpec,
    max_parallelism: u32,
    state: OperatorStateStore,
    offsets: OperatorListState<(u32, u64)>,
    storage: Arc<dyn CheckpointStorage>,
}

impl SourceTask {
    /// Task `index` of `parallelism`: fresh (split `s` goes to task `s % parallelism`, at offset
    /// 0), or restored from checkpoint `from`.
    pub fn open(
        spec: InputSpec,
        task: TaskId,
        max_parallelism: u32,
        storage: Arc<dyn CheckpointStorage>,
        from: Option<&CompletedCheckpoint>,
    ) -> Result<Self> {
        let mut state = match from {
            Some(done) => restore_operator_task(&*storage, done, &task)?,
            None => OperatorStateStore::new(),
        };
        let offsets = state.list_state(&ListStateDescriptor::<(u32, u64)>::new("offsets"))?;
        if from.is_none() {
            let mine = (0..spec.splits)
                .filter(|s| s % task.parallelism == task.index)
                .map(|s| (s, 0))
                .collect();
            state.list(&offsets).update(mine)?;
        }
        Ok(SourceTask {
            task,
            spec,
            max_parallelism,
            state,
            offsets,
            storage,
        })
    }

    /// The records of `epoch` of this task's splits; their offsets move past them.
    pub fn emit(&mut self, epoch: u64) -> Result<Vec<Record>> {
        let mut offsets = self.state.list(&self.offsets).get()?;
        let mut records = Vec::new();
        for (split, offset) in &mut offsets {
            if *offset != self.spec.offset_before(epoch) {
                return Err(Error::InvalidArgument(format!(
                    "split {split} stands at offset {offset}, not at the start of epoch {epoch}"
                )));
            }
            records.extend(self.spec.epoch_of_split(*split, epoch));
            *offset += self.spec.records;
        }
        self.state.list(&self.offsets).update(offsets)?;
        Ok(records)
    }

    /// The source's part of checkpoint `epoch + 1`, taken as it closes `epoch`: its offsets.
    pub fn checkpoint(&mut self, epoch: u64) -> Result<Ack> {
        let id = CheckpointId(epoch + 1);
        let written = snapshot_operator_task(
            &self.state,
            &self.task,
            self.max_parallelism,
            id,
            &self.storage,
        )?
        .run()?;
        Ack::new(id.0, &written.state)
    }
}
