//! The `crash_recovery` property: state operations and checkpoints on checkpoint storage that
//! fails and crashes at a step the input picks; after recovery, the latest checkpoint is the
//! last acknowledged one (or a complete unacknowledged one).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::state_ops::{
    apply, check, owner, register, restore_tasks, Model, Task, KEYS, MAXP, OPCODES,
};
use crate::checkpoint::{
    CheckpointId, CheckpointStorage, FsCheckpointOptions, FsCheckpointStorage,
};
use crate::storage::{CrashMode, MemStorage};
use crate::{Backend, BackendConfig, KeyedStateBackend, SubtaskState};

/// Opens checkpoint storage over `mem`, retaining `retained` checkpoints.
fn open(mem: &MemStorage, retained: usize) -> crate::Result<FsCheckpointStorage> {
    FsCheckpointStorage::open(
        Arc::new(mem.clone()),
        FsCheckpointOptions::default().with_retained(retained),
    )
}

/// Takes checkpoint `id` of `task` into `storage` and completes it (or aborts it): the
/// embedder's whole sequence, notifications included. An error is where the process dies.
fn checkpoint(
    task: &mut Task,
    storage: &Arc<dyn CheckpointStorage>,
    id: CheckpointId,
    complete: bool,
) -> crate::Result<()> {
    let (b, _) = task;
    let written = b.snapshot(id, storage, "task-0")?.run()?;
    if complete {
        let state = SubtaskState::new("op", 0, 1, MAXP).with_keyed(written.handle);
        storage.complete_checkpoint(id, vec![state])?;
        b.notify_checkpoint_complete(id)
    } else {
        storage.abort_checkpoint(id)?;
        b.notify_checkpoint_aborted(id)
    }
}

/// Restores one heap task from the latest completed checkpoint of `storage` and checks it
/// against `expected`, which gives the model of each checkpoint id that may be the latest.
fn check_latest(
    storage: &FsCheckpointStorage,
    expected: &dyn Fn(u64) -> Option<Model>,
) -> Option<u64> {
    let latest = storage
        .latest_completed()
        .expect("the latest checkpoint after recovery reads")?;
    let id = latest.id().0;
    let model = expected(id).unwrap_or_else(|| panic!("checkpoint {id} may not be the latest"));
    let mut tasks = restore_tasks(1, None, crate::BackendConfig::heap(), |config, range| {
        Backend::<u64>::restore_from(config, storage, &latest.handles_for(range))
            .expect("the latest checkpoint after recovery restores")
    });
    check(&mut tasks, &model);
    Some(id)
}

/// The property of the `crash_recovery` fuzz target. The first byte configures the run: bit 0
/// an LSM backend (incremental checkpoints with shared files) instead of a heap backend; bit 1
/// two retained checkpoints instead of one; bits 2–3 the crash mode (drop what was not synced,
/// or tear it with a seed); bit 4 short writes. The next two bytes (little-endian) are the
/// mutating storage operation from which every operation fails (`0`: none fails). Then each
/// operation takes four bytes as in `state_ops`: opcodes from `0xF0` on take a checkpoint,
/// completed (aborted when the value byte is a multiple of 4), the others change state (every
/// state type and namespace).
///
/// When a checkpoint step fails (the process dies), or after the last operation, the storage
/// crashes in the chosen mode. Then, with faults healed:
///
/// - the checkpoint storage reopens;
/// - its completed checkpoints are acknowledged ones or the one whose completion failed (an
///   unacknowledged checkpoint is absent or complete), never an aborted one;
/// - the latest is the last acknowledged checkpoint, or the one whose completion failed, and
///   it restores exactly the state the model had when it was taken;
/// - a new checkpoint of the restored state completes and restores too.
pub fn check_crash_recovery(data: &[u8]) {
    let Some((&[config, lo, hi], ops)) = data.split_first_chunk::<3>() else {
        return;
    };
    let lsm = config & 1 == 1;
    let retained = 1 + usize::from(config >> 1 & 1);
    let fail_from = u64::from(u16::from_le_bytes([lo, hi]));
    let mode = match config >> 2 & 3 {
        0 | 1 => CrashMode::DropUnsynced,
        _ => CrashMode::Torn {
            seed: fail_from ^ u64::from(config),
        },
    };
    let mem = MemStorage::with_seed(fail_from);
    mem.set_short_writes(config & 0x10 != 0);
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(open(&mem, retained).expect("checkpoint storage opens on an empty MemStorage"));
    let backend_config = if lsm {
        super::state_ops::lsm_config(false, crate::Compression::None)
    } else {
        BackendConfig::heap()
    };
    let mut backend =
        Backend::<u64>::open(backend_config.max_parallelism(MAXP)).expect("a valid configuration");
    let handles = register(&mut backend);
    let mut tasks = vec![(backend, handles)];
    let mut model = Model::default();
    if fail_from > 0 {
        mem.fail_after(fail_from);
    }

    let mut acknowledged: Vec<(u64, Model)> = Vec::new();
    let mut aborted = BTreeSet::new();
    // The checkpoint whose completion failed: complete or absent after recovery.
    let mut unknown: Option<(u64, Model)> = None;
    let mut next_id = 1u64;
    for op in ops.chunks_exact(4) {
        if op[0] >= 0xF0 {
            let id = next_id;
            next_id += 1;
            let complete = op[3] % 4 != 0;
            let taken = model.clone();
            match checkpoint(&mut tasks[0], &storage, CheckpointId(id), complete) {
                Ok(()) if complete => acknowledged.push((id, taken)),
                Ok(()) => {
                    aborted.insert(id);
                }
                Err(_) => {
                    if complete {
                        unknown = Some((id, taken));
                    } else {
                        aborted.insert(id);
                    }
                    break;
                }
            }
            continue;
        }
        let (code, k, x, v) = (op[0] % OPCODES, u64::from(op[1]) % KEYS, op[2], op[3]);
        let (b, h) = owner(&mut tasks, k);
        b.set_current_key(&k);
        // Opcodes that are not state operations (snapshots and restores in `state_ops`) do
        // nothing here.
        apply(b, h, &mut model, code, k, x, v).expect("an operation on an owned key succeeds");
    }
    drop(tasks);
    drop(storage);
    mem.crash_with(mode);
    mem.heal();
    mem.set_short_writes(false);

    let storage = open(&mem, retained).expect("checkpoint storage reopens after a crash");
    let completed = storage
        .completed()
        .expect("the checkpoints after recovery list");
    let acked: BTreeSet<u64> = acknowledged.iter().map(|(id, _)| *id).collect();
    for id in &completed {
        assert!(
            acked.contains(&id.0) || unknown.as_ref().is_some_and(|(u, _)| *u == id.0),
            "checkpoint {id} after recovery was neither acknowledged nor in completion; aborted: {aborted:?}"
        );
    }
    let last = acknowledged.last().map(|(id, m)| (*id, m.clone()));
    let expected = |id: u64| -> Option<Model> {
        match (&unknown, &last) {
            (Some((u, m)), _) if *u == id => Some(m.clone()),
            (_, Some((l, m))) if *l == id => Some(m.clone()),
            _ => None,
        }
    };
    let latest = check_latest(&storage, &expected);
    assert!(
        latest.is_some() || last.is_none(),
        "acknowledged checkpoint {:?} is lost",
        last.as_ref().map(|(id, _)| id)
    );

    // The recovered storage takes new checkpoints: one of the restored state completes and
    // restores.
    let Some(id) = latest else {
        return;
    };
    let model = expected(id).expect("the latest was checked against a model");
    let done = storage
        .load_checkpoint(CheckpointId(id))
        .expect("the latest checkpoint loads");
    let storage: Arc<dyn CheckpointStorage> = Arc::new(storage);
    let mut tasks = restore_tasks(1, None, crate::BackendConfig::heap(), |config, range| {
        Backend::<u64>::restore_from(config, &*storage, &done.handles_for(range))
            .expect("the latest checkpoint restores")
    });
    checkpoint(&mut tasks[0], &storage, CheckpointId(next_id), true)
        .expect("a checkpoint after recovery completes");
    let mut after = restore_tasks(1, None, crate::BackendConfig::heap(), |config, range| {
        let latest = storage
            .latest_completed()
            .expect("the checkpoints read")
            .expect("a checkpoint was just completed");
        assert_eq!(latest.id(), CheckpointId(next_id));
        Backend::<u64>::restore_from(config, &*storage, &latest.handles_for(range))
            .expect("the new checkpoint restores")
    });
    check(&mut after, &model);
}
