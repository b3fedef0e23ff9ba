//! A task's whole state in one call each way (`task::snapshot_task`, `task::restore_task`):
//! keyed and operator state of every task of an operator written into one checkpoint or
//! savepoint, then restored at other parallelisms into either backend, each key in exactly one
//! task and the operator state redistributed.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate::operator::OperatorStateStore;
use flowstate::task::{restore_task, snapshot_task, TaskId};
use flowstate::*;

const MAXP: u32 = 64;

fn config(kind: &str, dir: &std::path::Path, tag: &str) -> BackendConfig {
    match kind {
        "heap" => BackendConfig::heap(),
        _ => BackendConfig::lsm(dir.join(tag)).lsm_background(lsm::LsmBackground::Inline),
    }
    .max_parallelism(MAXP)
}

#[test]
fn an_operator_snapshots_and_restores_in_one_call_per_task() -> Result<()> {
    for (from, target) in [
        ("heap", "checkpoint"),
        ("lsm", "checkpoint"),
        ("lsm", "savepoint"),
    ] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::open_local(
            dir.path().join("checkpoints"),
            FsCheckpointOptions::default(),
        )?);
        let offsets = ListStateDescriptor::<u64>::new("offsets");
        let mut expected = BTreeMap::new();
        let mut states = Vec::new();
        for i in 0..2u32 {
            let task = TaskId::new("counter", i, 2);
            let range = KeyGroupRange::for_operator(MAXP, 2, i)?;
            let mut b = Backend::<u64>::open(
                config(from, dir.path(), &format!("old-{i}")).key_group_range(range),
            )?;
            let count = b.register(ValueStateDescriptor::<u64>::new("count"))?;
            for k in 0..500u64 {
                if range.contains(key_group_of(&k, MAXP)) {
                    b.set_current_key(&k);
                    b.value(&count).update(k * 3)?;
                    expected.insert(k, k * 3);
                }
            }
            let mut source = OperatorStateStore::new();
            let list = source.list_state(&offsets)?;
            source
                .list(&list)
                .update(vec![u64::from(i) * 10, u64::from(i) * 10 + 1])?;
            let pending = match target {
                "checkpoint" => snapshot_task(&mut b, &source, &task, CheckpointId(1), &storage)?,
                _ => snapshot_task(
                    &mut b,
                    &source,
                    &task,
                    SnapshotTarget::savepoint(CheckpointId(1), "sp-1"),
                    &storage,
                )?,
            };
            let result = std::thread::spawn(move || pending.run())
                .join()
                .expect("the asynchronous phase does not panic")?;
            states.push(result.state);
        }
        let done = match target {
            "checkpoint" => storage.complete_checkpoint(CheckpointId(1), states)?,
            _ => storage.complete_savepoint(CheckpointId(1), "sp-1", states)?,
        };
        for (to, p) in [("heap", 3u32), ("lsm", 1), ("lsm", 4)] {
            let mut seen = BTreeMap::new();
            let mut all_offsets = Vec::new();
            for i in 0..p {
                let mut restored = restore_task::<u64>(
                    config(to, dir.path(), &format!("{from}-{target}-{to}-{p}-{i}")),
                    &*storage,
                    &done,
                    &TaskId::new("counter", i, p),
                )?;
                let b = &mut restored.backend;
                assert_eq!(
                    b.key_group_range(),
                    KeyGroupRange::for_operator(MAXP, p, i)?
                );
                let count = b.register(ValueStateDescriptor::<u64>::new("count"))?;
                for k in b.keys(count, &())? {
                    b.set_current_key(&k);
                    let v = b.value(&count).get()?.expect("a listed key has a value");
                    assert!(seen.insert(k, v).is_none(), "key {k} restored twice");
                }
                let list = restored.operator_state.list_state(&offsets)?;
                all_offsets.extend(restored.operator_state.list(&list).get()?);
            }
            assert_eq!(seen, expected, "{from} {target} -> {to} at {p}");
            assert_eq!(
                all_offsets,
                vec![0, 1, 10, 11],
                "{from} {target} -> {to} at {p}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_task_index_past_the_parallelism_is_refused() -> Result<()> {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new());
    let mut b = Backend::<u64>::open(BackendConfig::heap())?;
    let source = OperatorStateStore::new();
    for task in [TaskId::new("op", 2, 2), TaskId::new("op", 0, 0)] {
        let r = snapshot_task(&mut b, &source, &task, CheckpointId(1), &storage);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{task:?}");
    }
    Ok(())
}

#[test]
fn a_task_with_operator_state_only_snapshots_and_restores_at_another_parallelism() -> Result<()> {
    use flowstate::task::{restore_operator_task, snapshot_operator_task};
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new());
    let splits = ListStateDescriptor::<(u32, u64)>::new("split-offsets");
    let mut states = Vec::new();
    for i in 0..2u32 {
        let mut source = OperatorStateStore::new();
        let handle = source.list_state(&splits)?;
        source
            .list(&handle)
            .update(vec![(2 * i, 100), (2 * i + 1, 200)])?;
        let task = TaskId::new("source", i, 2);
        let written =
            snapshot_operator_task(&source, &task, MAXP, CheckpointId(1), &storage)?.run()?;
        assert!(written.state.keyed.is_empty());
        assert_eq!(written.state.max_parallelism, MAXP);
        states.push(written.state);
    }
    let done = storage.complete_checkpoint(CheckpointId(1), states)?;
    let mut all = Vec::new();
    for i in 0..3u32 {
        let mut source = restore_operator_task(&*storage, &done, &TaskId::new("source", i, 3))?;
        let handle = source.list_state(&splits)?;
        all.extend(source.list(&handle).get()?);
    }
    assert_eq!(all, vec![(0, 100), (1, 200), (2, 100), (3, 200)]);
    // An operator the checkpoint has no state of restores empty.
    let none = restore_operator_task(&*storage, &done, &TaskId::new("other", 0, 1))?;
    assert!(none.snapshot().states.is_empty());
    Ok(())
}

#[test]
fn a_fresh_task_owns_its_key_group_range_like_a_restored_one() -> Result<()> {
    use flowstate::task::open_task;
    for i in 0..3u32 {
        let task = TaskId::new("counter", i, 3);
        let fresh = open_task::<u64>(BackendConfig::heap().max_parallelism(MAXP), &task)?;
        assert_eq!(
            fresh.backend.key_group_range(),
            KeyGroupRange::for_operator(MAXP, 3, i)?
        );
        assert!(fresh.operator_state.snapshot().states.is_empty());
    }
    assert!(open_task::<u64>(BackendConfig::heap(), &TaskId::new("counter", 3, 3)).is_err());
    Ok(())
}
