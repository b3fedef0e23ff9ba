//! A task's acknowledgement of a checkpoint: its `SubtaskState`, sent through the dataflow to
//! the coordinator (worker 0), possibly in another process, in the state's standalone encoding
//! (`SubtaskState::to_bytes`, spec/formats.md 4.10: framed, with a CRC-32).

use flowstate::SubtaskState;
use serde::{Deserialize, Serialize};

/// One task's state for one checkpoint, encodable for timely's exchange between processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The checkpoint.
    pub checkpoint: u64,
    /// The task's `SubtaskState`, encoded standing alone.
    pub state: Vec<u8>,
    /// The bytes of the files the task wrote.
    pub bytes: u64,
}

impl Ack {
    /// The acknowledgement of `state` for `checkpoint`.
    pub fn new(checkpoint: u64, state: &SubtaskState) -> flowstate::Result<Self> {
        Ok(Ack {
            checkpoint,
            state: state.to_bytes()?,
            bytes: state.files().map(|f| f.size()).sum(),
        })
    }

    /// The task's `SubtaskState` again (decoded and checked).
    pub fn subtask_state(&self) -> flowstate::Result<SubtaskState> {
        let what = format!("an acknowledgement of checkpoint {}", self.checkpoint);
        SubtaskState::from_bytes(&self.state, &what)
    }
}
