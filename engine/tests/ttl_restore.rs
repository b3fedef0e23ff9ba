//! State TTL across snapshots and restores (spec/state-semantics.md R65–R67): timestamps survive
//! a canonical savepoint into the other backend, expired state is not written, the file records
//! the TTL, and a state cannot change between having a TTL and not having one.

use std::sync::Arc;
use std::time::Duration;

use flowstate::*;
use flowstate_formats::snapshot::SnapshotReader;

const MAXP: u32 = 16;

fn ttl(ms: u64) -> TtlConfig {
    TtlConfig::after(Duration::from_millis(ms))
}

/// Takes a canonical savepoint of `backend` into `storage` and returns its handles.
fn savepoint<B: KeyedStateBackend<u64>>(
    backend: &mut B,
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
) -> Result<CompletedCheckpoint> {
    let target = SnapshotTarget::savepoint(CheckpointId(id), format!("sp-{id}"));
    let written = backend.snapshot(target, storage, "task-0")?.run()?;
    let task = SubtaskState::new("op", 0, 1, MAXP).with_keyed(written.handle);
    storage.complete_savepoint(CheckpointId(id), &format!("sp-{id}"), vec![task])
}

fn restore(
    config: BackendConfig,
    storage: &Arc<dyn CheckpointStorage>,
    done: &CompletedCheckpoint,
) -> Result<Backend<u64>> {
    Backend::restore_from(
        config,
        &**storage,
        &done.handles_for(KeyGroupRange::all(MAXP)?),
    )
}

#[test]
fn timestamps_survive_a_savepoint_from_heap_into_lsm_and_expired_state_is_not_written() -> Result<()>
{
    let clock = Arc::new(ManualClock::new(1_000));
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new());
    let mut heap = Backend::<u64>::open(
        BackendConfig::heap()
            .max_parallelism(MAXP)
            .clock(clock.clone()),
    )?;
    let v = heap.register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(100)))?;
    let l = heap.register(ListStateDescriptor::<u32>::new("l").with_ttl(ttl(100)))?;
    for k in 0..50u64 {
        heap.set_current_key(&k);
        heap.value(&v).update(k)?;
        heap.list(&l).add(1)?;
    }
    clock.set(1_060);
    for k in 0..50u64 {
        heap.set_current_key(&k);
        heap.list(&l).add(2)?;
        if k % 2 == 0 {
            heap.value(&v).update(k + 100)?; // restamped at 1 060
        }
    }
    clock.set(1_100); // the first writes have expired
    let done = savepoint(&mut heap, &storage, 1)?;

    // The file records the TTL and holds only what was live at 1 100.
    let file = &done.files().next().expect("one file").clone();
    let reader = SnapshotReader::open(storage.open_state_file(file)?, file.path())?;
    let ttls: Vec<Option<u64>> = reader
        .meta()
        .states
        .iter()
        .map(|s| s.ttl_millis.map(|t| t.get()))
        .collect();
    assert_eq!(ttls, vec![Some(100), Some(100)]);
    assert_eq!(reader.entry_count(), 25 + 50, "25 live values, 50 lists");

    // Restored into the LSM backend on the same clock: each entry expires when it would have.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut lsm = restore(
        BackendConfig::lsm(dir.path().join("lsm"))
            .max_parallelism(MAXP)
            .clock(clock.clone()),
        &storage,
        &done,
    )?;
    let v = lsm.register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl(100)))?;
    let l = lsm.register(ListStateDescriptor::<u32>::new("l").with_ttl(ttl(100)))?;
    clock.set(1_159);
    for k in 0..50u64 {
        lsm.set_current_key(&k);
        let expected = (k % 2 == 0).then_some(k + 100);
        assert_eq!(lsm.value(&v).get()?, expected, "key {k}");
        assert_eq!(lsm.list(&l).get()?, vec![2], "key {k}");
    }
    clock.set(1_160);
    assert_eq!(lsm.entry_count()?, 0, "everything has expired at 1 160");
    lsm.set_current_key(&0);
    assert_eq!(lsm.value(&v).get()?, None);
    Ok(())
}

#[test]
fn a_state_cannot_gain_or_lose_its_ttl_across_a_restore() -> Result<()> {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new());
    let mut b = Backend::<u64>::open(BackendConfig::heap().max_parallelism(MAXP))?;
    let plain = b.register(ValueStateDescriptor::<u64>::new("plain"))?;
    let timed = b.register(ValueStateDescriptor::<u64>::new("timed").with_ttl(ttl(60_000)))?;
    b.set_current_key(&1);
    b.value(&plain).update(1)?;
    b.value(&timed).update(2)?;
    let done = savepoint(&mut b, &storage, 1)?;
    let dir = tempfile::tempdir().expect("a temporary directory");
    for config in [
        BackendConfig::heap().max_parallelism(MAXP),
        BackendConfig::lsm(dir.path().join("lsm")).max_parallelism(MAXP),
    ] {
        let mut r = restore(config, &storage, &done)?;
        let gained = r.register(ValueStateDescriptor::<u64>::new("plain").with_ttl(ttl(5)));
        match gained {
            Err(Error::IncompatibleState {
                name, requested, ..
            }) => {
                assert_eq!(name, "plain");
                assert!(requested.contains("ttl<u64>"), "{requested}");
            }
            other => panic!("{other:?}"),
        }
        let lost = r.register(ValueStateDescriptor::<u64>::new("timed"));
        match lost {
            Err(Error::IncompatibleState { name, snapshot, .. }) => {
                assert_eq!(name, "timed");
                assert!(snapshot.contains("ttl<u64>"), "{snapshot}");
            }
            other => panic!("{other:?}"),
        }
        // The entries are kept for a registration of the right form (R67).
        let plain = r.register(ValueStateDescriptor::<u64>::new("plain"))?;
        let timed = r.register(ValueStateDescriptor::<u64>::new("timed").with_ttl(ttl(60_000)))?;
        r.set_current_key(&1);
        assert_eq!(r.value(&plain).get()?, Some(1));
        assert_eq!(r.value(&timed).get()?, Some(2));
    }
    Ok(())
}
