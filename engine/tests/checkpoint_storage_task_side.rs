//! A task-side `FsCheckpointStorage` (`open_for_tasks`), as the tasks of a process other than
//! the coordinator's open the shared checkpoint directory: it writes the state files of a
//! checkpoint the owner then completes, reads completed checkpoints, and refuses everything
//! that deletes or completes.

use std::sync::Arc;

use flowstate::operator::OperatorStateStore;
use flowstate::task::{restore_task, snapshot_task, TaskId};
use flowstate::*;

#[test]
fn tasks_write_through_a_task_side_instance_and_the_owner_completes() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let owner: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::open_local(
        dir.path(),
        FsCheckpointOptions::default(),
    )?);
    let tasks: Arc<dyn CheckpointStorage> =
        Arc::new(FsCheckpointStorage::open_for_tasks(dir.path())?);

    let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
    let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
    backend.set_current_key(&7);
    backend.value(&count).update(3)?;
    let task = TaskId::new("counter", 0, 1);
    let state = snapshot_task(
        &mut backend,
        &OperatorStateStore::new(),
        &task,
        CheckpointId(1),
        &tasks,
    )?
    .run()?
    .state;

    // The task-side instance cannot complete, abort or collect garbage.
    for refused in [
        tasks
            .complete_checkpoint(CheckpointId(1), vec![state.clone()])
            .err(),
        tasks.abort_checkpoint(CheckpointId(1)).err(),
        tasks.collect_garbage().err(),
    ] {
        assert!(
            matches!(refused, Some(Error::InvalidArgument(_))),
            "{refused:?}"
        );
    }
    owner.complete_checkpoint(CheckpointId(1), vec![state])?;

    // The task side sees the completion and restores from it.
    assert_eq!(tasks.completed()?, vec![CheckpointId(1)]);
    let done = tasks
        .latest_completed()?
        .expect("checkpoint 1 was completed by the owner");
    let mut restored = restore_task::<u64>(BackendConfig::heap(), &*tasks, &done, &task)?;
    let count = restored
        .backend
        .register(ValueStateDescriptor::<u64>::new("count"))?;
    restored.backend.set_current_key(&7);
    assert_eq!(restored.backend.value(&count).get()?, Some(3));
    Ok(())
}
