//! Incremental checkpoints of the heap backend (spec/checkpoint-protocol.md, "Heap incremental
//! checkpoints"): a checkpoint writes only what changed since the last *confirmed* checkpoint,
//! as a delta file under `shared/`, and its handle lists the chain it completes: the base (a
//! full canonical file) and every delta since.
//!
//! Change tracking is tied to the maps' versions: every snapshot starts a new *epoch* of the
//! backend, every write records its epoch in the entry's slot (in bytes the slot had as
//! padding), and every removal is logged with its epoch per key group. A delta since the
//! confirmed checkpoint of epoch `e` is then the entries written after `e` and the logged
//! removals after `e` of pairs no longer there
//! ([`StateTableSnapshot::changes_since`](crate::snapshot::StateTableSnapshot::changes_since)).
//! No view is kept beyond the checkpoint's own asynchronous phase, so writes copy no more
//! buckets than without incremental checkpoints; the removal log is pruned at each
//! confirmation.
//!
//! A delta is relative to the last checkpoint `notify_checkpoint_complete` confirmed, so
//! several checkpoints may be in flight and any may abort. Once the chain has
//! `max_deltas` deltas, or its deltas add up to more than `max_delta_ratio` times the base's
//! bytes, the next checkpoint writes a new full base instead (consolidation), so a restore
//! reads a bounded chain; the files of the old chain are deleted once no retained checkpoint
//! references them.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate_formats::snapshot::DeltaOf;
use flowstate_formats::Compression;
use parking_lot::Mutex;

use crate::checkpoint::{
    write_canonical, write_state_file, CheckpointId, CheckpointStorage, KeyedStateHandle,
    NativeSnapshot, SnapshotKind, SnapshotResult, SnapshotStats, SnapshotTarget, StateFile,
};
use crate::error::{Error, Result};
use crate::snapshot::StateSnapshot;

/// When a heap backend's incremental checkpoint writes a new full base instead of a delta
/// ([`BackendConfig::heap_incremental_checkpoints`](crate::BackendConfig::heap_incremental_checkpoints)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeapIncremental {
    /// The most deltas a chain holds after its base (default 8).
    pub max_deltas: u32,
    /// The most bytes the deltas of a chain add up to, as a multiple of the base's bytes
    /// (default 1.0): past it, restoring the chain reads more than a new base would cost.
    pub max_delta_ratio: f64,
}

impl Default for HeapIncremental {
    fn default() -> Self {
        HeapIncremental {
            max_deltas: 8,
            max_delta_ratio: 1.0,
        }
    }
}

/// The most checkpoints in flight whose views the backend keeps (older ones are forgotten:
/// if one of them completes later, the next checkpoint is relative to the older confirmed one).
const MAX_IN_FLIGHT: usize = 16;

/// The files of a chain and their sizes.
#[derive(Debug, Clone)]
struct Chain {
    /// The base, then the deltas in order.
    files: Vec<StateFile>,
    /// The checkpoint that wrote the base.
    base_checkpoint: u64,
    base_bytes: u64,
    delta_bytes: u64,
}

/// A checkpoint's epoch and the chain its handle lists.
#[derive(Clone)]
struct Written {
    epoch: u32,
    chain: Chain,
}

/// What the backend knows of its incremental checkpoints: the last confirmed one and those
/// written but not yet confirmed or aborted.
#[derive(Default)]
pub(crate) struct Tracker {
    confirmed: Option<(u64, Written)>,
    in_flight: BTreeMap<u64, Written>,
}

impl Tracker {
    /// Checkpoint `id` completed: it becomes the base of later deltas (if it is the newest
    /// confirmed), and checkpoints in flight before it are forgotten. Returns the epoch of the
    /// confirmed base: removals of it and before need no log any more.
    pub(crate) fn complete(&mut self, id: u64) -> Option<u32> {
        if let Some(written) = self.in_flight.remove(&id) {
            if self.confirmed.as_ref().is_none_or(|(c, _)| *c < id) {
                self.confirmed = Some((id, written));
            }
        }
        self.in_flight.retain(|&k, _| k > id);
        self.confirmed.as_ref().map(|(_, w)| w.epoch)
    }

    /// Checkpoint `id` aborted: its files are not a base for anything.
    pub(crate) fn abort(&mut self, id: u64) {
        self.in_flight.remove(&id);
    }

    fn written(&mut self, id: u64, written: Written) {
        self.in_flight.insert(id, written);
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.in_flight.pop_first();
        }
    }

    /// The number of checkpoints written and not yet confirmed or aborted.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// The asynchronous phase of a heap incremental checkpoint.
pub(crate) struct HeapChainJob {
    pub(crate) view: StateSnapshot,
    /// The epoch of the view (of the newest writes it holds).
    pub(crate) epoch: u32,
    pub(crate) tracker: Arc<Mutex<Tracker>>,
    pub(crate) options: HeapIncremental,
    /// Random bits that make this backend's shared file names its own.
    pub(crate) uid: u64,
}

impl HeapChainJob {
    /// The confirmed checkpoint to write a delta against, if there is one and the chain may
    /// grow: older than this view, not past its limits, every state tracking its changes since
    /// it, every file still in the storage (reserved for `target`).
    fn base(
        &self,
        target: &SnapshotTarget,
        storage: &Arc<dyn CheckpointStorage>,
    ) -> Result<Option<Written>> {
        let Some((_, base)) = self.tracker.lock().confirmed.clone() else {
            return Ok(None);
        };
        let chain = &base.chain;
        let deltas = chain.files.len() as u64 - 1;
        let too_long = deltas >= u64::from(self.options.max_deltas)
            || chain.delta_bytes as f64 > self.options.max_delta_ratio * chain.base_bytes as f64;
        let older = base.epoch < self.epoch;
        if too_long || !older || !crate::checkpoint::diffable(&self.view, base.epoch) {
            return Ok(None);
        }
        for file in &chain.files {
            if !storage.reserve_shared_file(target, file)? {
                return Ok(None);
            }
        }
        Ok(Some(base))
    }
}

impl NativeSnapshot for HeapChainJob {
    fn run(
        self: Box<Self>,
        target: &SnapshotTarget,
        storage: &Arc<dyn CheckpointStorage>,
        name: &str,
        compression: Compression,
    ) -> Result<SnapshotResult> {
        if target.kind() != SnapshotKind::Checkpoint {
            return Err(Error::InvalidArgument(
                "a heap incremental snapshot is for checkpoints; savepoints are full".into(),
            ));
        }
        let CheckpointId(id) = target.id();
        let base = self.base(target, storage)?;
        let (kind, position) = match &base {
            Some(b) => ("delta", b.chain.files.len() as u32),
            None => ("base", 0),
        };
        let file_name = format!("{name}-{:016x}-{id:016x}.{kind}", self.uid);
        let writer = storage.create_shared_file(target, &file_name)?;
        let view = &self.view;
        let (file, stats) = write_state_file(writer, |sink, path| match &base {
            Some(b) => crate::checkpoint::write_delta(
                view,
                b.epoch,
                sink,
                compression,
                path,
                DeltaOf {
                    base_checkpoint: b.chain.base_checkpoint,
                    position,
                },
            ),
            None => write_canonical(view, sink, compression, path, None),
        })?;
        let chain = match base {
            Some(b) => {
                let mut chain = b.chain;
                chain.delta_bytes += file.size();
                chain.files.push(file.clone());
                chain
            }
            None => Chain {
                files: vec![file.clone()],
                base_checkpoint: id,
                base_bytes: file.size(),
                delta_bytes: 0,
            },
        };
        let handle =
            KeyedStateHandle::heap_chain(self.view.key_group_range(), chain.files.clone())?;
        let stats = SnapshotStats {
            bytes: 0,
            shared_files: chain.files.len() as u64,
            shared_bytes: chain.files.iter().map(StateFile::size).sum(),
            new_shared_files: 1,
            new_shared_bytes: file.size(),
            ..stats
        };
        self.tracker.lock().written(
            id,
            Written {
                epoch: self.epoch,
                chain,
            },
        );
        Ok(SnapshotResult { handle, stats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(id: u64) -> Written {
        Written {
            epoch: id as u32,
            chain: Chain {
                files: Vec::new(),
                base_checkpoint: id,
                base_bytes: 0,
                delta_bytes: 0,
            },
        }
    }

    #[test]
    fn the_base_is_the_newest_confirmed_checkpoint() {
        let mut t = Tracker::default();
        for id in 1..=3 {
            t.written(id, written(id));
        }
        t.abort(2);
        t.complete(3);
        assert_eq!(t.confirmed.as_ref().map(|c| c.0), Some(3));
        assert_eq!(
            t.in_flight(),
            0,
            "1 is older than the confirmed 3, 2 aborted"
        );
        // A late completion of an older checkpoint does not replace a newer base.
        t.written(5, written(5));
        t.written(4, written(4));
        t.complete(5);
        t.complete(4);
        assert_eq!(t.confirmed.as_ref().map(|c| c.0), Some(5));
        // At most MAX_IN_FLIGHT views are kept.
        for id in 10..10 + 2 * MAX_IN_FLIGHT as u64 {
            t.written(id, written(id));
        }
        assert_eq!(t.in_flight(), MAX_IN_FLIGHT);
    }
}
