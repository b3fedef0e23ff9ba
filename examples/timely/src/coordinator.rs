//! The checkpoint coordinator, on worker 0: it collects the acknowledgements of every task
//! (the keyed operator's and the source's, from every worker of every process) and completes
//! each checkpoint into the shared checkpoint directory once its epoch is closed.
//!
//! Timely's progress tracking is what makes this simple: the acknowledgements of epoch `e`
//! carry timestamp `e`, so once the coordinator's input frontier has passed `e`, every task's
//! acknowledgement of checkpoint `e + 1` has arrived, or never will.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate::{CheckpointId, CheckpointStorage};

use crate::ack::Ack;

/// What the coordinator did, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Completed {
    /// The checkpoints completed, each with the bytes its tasks wrote.
    pub checkpoints: Vec<(u64, u64)>,
}

/// Collects acknowledgements and completes checkpoints.
#[derive(Debug)]
pub struct Coordinator {
    storage: Arc<dyn CheckpointStorage>,
    tasks: usize,
    acks: BTreeMap<u64, Vec<Ack>>,
    completed: Completed,
}

impl Coordinator {
    /// A coordinator expecting `tasks` acknowledgements per checkpoint.
    pub fn new(storage: Arc<dyn CheckpointStorage>, tasks: usize) -> Self {
        Coordinator {
            storage,
            tasks,
            acks: BTreeMap::new(),
            completed: Completed::default(),
        }
    }

    /// Takes the acknowledgements that arrived with timestamp `epoch`.
    pub fn receive(&mut self, epoch: u64, acks: &mut Vec<Ack>) {
        self.acks.entry(epoch).or_default().append(acks);
    }

    /// Completes the checkpoint of every epoch before `frontier` (all of them once the
    /// frontier is empty, `None`).
    pub fn complete_closed(&mut self, frontier: Option<u64>) -> Result<(), String> {
        while let Some(entry) = self.acks.first_entry() {
            if frontier.is_some_and(|f| *entry.key() >= f) {
                break;
            }
            let acks = entry.remove();
            let id = acks.first().map(|a| a.checkpoint).unwrap_or_default();
            if acks.len() != self.tasks || acks.iter().any(|a| a.checkpoint != id) {
                let _ = self.storage.abort_checkpoint(CheckpointId(id));
                return Err(format!(
                    "checkpoint {id}: {} acknowledgements, expected {} of the same checkpoint",
                    acks.len(),
                    self.tasks
                ));
            }
            let mut states = Vec::with_capacity(acks.len());
            for ack in &acks {
                states.push(ack.subtask_state().map_err(|e| e.to_string())?);
            }
            self.storage
                .complete_checkpoint(CheckpointId(id), states)
                .map_err(|e| format!("completing checkpoint {id}: {e}"))?;
            let bytes = acks.iter().map(|a| a.bytes).sum();
            self.completed.checkpoints.push((id, bytes));
        }
        Ok(())
    }

    /// What it completed so far.
    pub fn completed(&self) -> &Completed {
        &self.completed
    }
}
