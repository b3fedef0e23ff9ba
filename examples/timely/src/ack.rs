//! A task's acknowledgement of a checkpoint: its `SubtaskState`, sent through the dataflow to
//! the coordinator (worker 0), possibly in another process. The handles travel in their
//! standalone encoding (`KeyedStateHandle::to_bytes`, `OperatorStateHandle::to_bytes`).

use flowstate::{KeyedStateHandle, OperatorStateHandle, SubtaskState};
use serde::{Deserialize, Serialize};

/// One task's state for one checkpoint, encodable for timely's exchange between processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The checkpoint.
    pub checkpoint: u64,
    /// The task's operator.
    pub operator: String,
    /// The task's index.
    pub index: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// The keyed state handles, each encoded standing alone.
    pub keyed: Vec<Vec<u8>>,
    /// The operator state handles, each encoded standing alone.
    pub operator_state: Vec<Vec<u8>>,
    /// The bytes of the files the task wrote.
    pub bytes: u64,
}

impl Ack {
    /// The acknowledgement of `state` for `checkpoint`.
    pub fn new(checkpoint: u64, state: &SubtaskState) -> Self {
        Ack {
            checkpoint,
            operator: state.operator_id.clone(),
            index: state.subtask_index,
            parallelism: state.parallelism,
            max_parallelism: state.max_parallelism,
            keyed: state.keyed.iter().map(KeyedStateHandle::to_bytes).collect(),
            operator_state: state
                .operator
                .iter()
                .map(OperatorStateHandle::to_bytes)
                .collect(),
            bytes: state.files().map(|f| f.size()).sum(),
        }
    }

    /// The task's `SubtaskState` again (the handles decoded and checked).
    pub fn subtask_state(&self) -> flowstate::Result<SubtaskState> {
        let what = format!("the ack of {} {}", self.operator, self.index);
        let mut state = SubtaskState::new(
            self.operator.clone(),
            self.index,
            self.parallelism,
            self.max_parallelism,
        );
        for bytes in &self.keyed {
            state = state.with_keyed(KeyedStateHandle::from_bytes(bytes, &what)?);
        }
        for bytes in &self.operator_state {
            state = state.with_operator(OperatorStateHandle::from_bytes(bytes, &what)?);
        }
        Ok(state)
    }
}
