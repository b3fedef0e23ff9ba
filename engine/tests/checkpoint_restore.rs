//! Heap checkpoints end to end: the asynchronous phase writes canonical snapshot files through
//! checkpoint storage while the task keeps writing, `_metadata` completes the checkpoint, and a
//! restore at another parallelism reads only its key groups from the files. Savepoints,
//! operator state, compression and damaged files too.

use std::sync::Arc;

use flowstate::operator::{OperatorStateSnapshot, OperatorStateStore};
use flowstate::*;
use flowstate_formats::Compression;

const MAXP: u32 = 128;
const KEYS: u64 = 3_000;

fn fs_storage(dir: &std::path::Path, retained: usize) -> Result<Arc<dyn CheckpointStorage>> {
    Ok(Arc::new(FsCheckpointStorage::open_local(
        dir,
        FsCheckpointOptions::default().with_retained(retained),
    )?))
}

fn config(p: u32, i: u32) -> Result<BackendConfig> {
    Ok(BackendConfig::heap()
        .max_parallelism(MAXP)
        .key_group_range(KeyGroupRange::for_operator(MAXP, p, i)?))
}

fn owned(b: &Backend<u64>) -> bool {
    b.current_key_group()
        .is_some_and(|kg| b.key_group_range().contains(kg))
}

struct States {
    value: ValueState<u64>,
    list: ListState<String>,
    map: MapState<u32, String, TimeWindow>,
}

fn register(b: &mut Backend<u64>) -> Result<States> {
    Ok(States {
        value: b.register(ValueStateDescriptor::<u64>::new("value"))?,
        list: b.register(ListStateDescriptor::<String>::new("list"))?,
        map: b.register(
            MapStateDescriptor::<u32, String>::new("map").with_namespace::<TimeWindow>(),
        )?,
    })
}

fn window(k: u64) -> TimeWindow {
    TimeWindow::new(k as i64 % 5, k as i64 % 5 + 1)
}

fn fill(b: &mut Backend<u64>, s: &States, salt: u64) -> Result<()> {
    for k in 0..KEYS {
        b.set_current_key(&k);
        if !owned(b) {
            continue;
        }
        b.value(&s.value).update(k + salt)?;
        if k % 4 != 0 {
            b.list(&s.list)
                .update(vec![format!("{k}"), format!("{salt}")])?;
        }
        let w = window(k);
        b.map(&s.map)
            .namespace(&w)
            .put((k % 7) as u32, format!("v{k}-{salt}"))?;
    }
    Ok(())
}

fn check(b: &mut Backend<u64>, s: &States, salt: u64) -> Result<u64> {
    let mut n = 0;
    for k in 0..KEYS {
        b.set_current_key(&k);
        if !owned(b) {
            continue;
        }
        n += 1;
        assert_eq!(b.value(&s.value).get()?, Some(k + salt), "value of {k}");
        let want: Vec<String> = if k % 4 != 0 {
            vec![format!("{k}"), format!("{salt}")]
        } else {
            vec![]
        };
        assert_eq!(b.list(&s.list).get()?, want, "list of {k}");
        let w = window(k);
        assert_eq!(
            b.map(&s.map).namespace(&w).entries()?,
            vec![((k % 7) as u32, format!("v{k}-{salt}"))]
        );
    }
    Ok(n)
}

/// Snapshots `old_p` tasks into checkpoint `id`, completes it, and restores `new_p` tasks
/// from the files of the handles intersecting each new range.
fn checkpoint_and_rescale(
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
    old_p: u32,
    new_p: u32,
    compression: Compression,
) -> Result<()> {
    let mut tasks = Vec::new();
    for i in 0..old_p {
        let mut b = Backend::<u64>::open(config(old_p, i)?)?;
        let s = register(&mut b)?;
        fill(&mut b, &s, id)?;
        let pending = b
            .snapshot(CheckpointId(id), storage, &format!("task-{i}"))?
            .with_compression(compression);
        let result = std::thread::spawn(move || pending.run())
            .join()
            .expect("the asynchronous phase does not panic")?;
        tasks.push(SubtaskState::new("op", i, old_p, MAXP).with_keyed(result.handle));
    }
    storage.complete_checkpoint(CheckpointId(id), tasks)?;
    let latest = storage.latest_completed()?.expect("a completed checkpoint");
    assert_eq!(latest.id(), CheckpointId(id));
    let mut total = 0;
    for i in 0..new_p {
        let range = KeyGroupRange::for_operator(MAXP, new_p, i)?;
        let handles = latest.handles_for(range);
        assert!(handles
            .iter()
            .all(|h| !h.key_group_range().intersection(&range).is_empty()));
        let sources = FileRestoreSource::open_all(&**storage, &handles)?;
        let sources: Vec<&dyn RestoreSource> = sources.iter().map(|s| s as _).collect();
        let mut b = Backend::<u64>::restore(config(new_p, i)?, &sources)?;
        let s = register(&mut b)?;
        total += check(&mut b, &s, id)?;
    }
    assert_eq!(total, KEYS, "every key restored exactly once");
    Ok(())
}

#[test]
fn checkpoint_restore_rescale_1_to_3_3_to_2_4_to_4() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = fs_storage(dir.path(), 2)?;
    checkpoint_and_rescale(&storage, 1, 1, 3, Compression::None)?;
    checkpoint_and_rescale(&storage, 2, 3, 2, Compression::Lz4)?;
    checkpoint_and_rescale(&storage, 3, 4, 4, Compression::Zstd { level: 3 })?;
    // Retention 2: checkpoint 1 is gone, 2 and 3 remain.
    assert_eq!(storage.completed()?, vec![CheckpointId(2), CheckpointId(3)]);
    Ok(())
}

#[test]
fn memory_checkpoint_storage_round_trips_and_enforces_its_limit() -> Result<()> {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new());
    checkpoint_and_rescale(&storage, 1, 2, 3, Compression::None)?;
    let tiny: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::with_limit(
        1_000,
        FsCheckpointOptions::default(),
    )?);
    let mut b = Backend::<u64>::open(config(1, 0)?)?;
    let s = register(&mut b)?;
    fill(&mut b, &s, 1)?;
    let err = b
        .snapshot(CheckpointId(1), &tiny, "task-0")?
        .run()
        .expect_err("the state is over 1,000 bytes");
    assert!(
        err.to_string().contains("1000") || err.to_string().contains("limit"),
        "{err}"
    );
    Ok(())
}

#[test]
fn writes_during_the_asynchronous_phase_do_not_reach_the_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = fs_storage(dir.path(), 1)?;
    let mut b = Backend::<u64>::open(config(1, 0)?)?;
    let s = register(&mut b)?;
    fill(&mut b, &s, 10)?;
    let pending = b.snapshot(CheckpointId(5), &storage, "task-0")?;
    let writer = std::thread::spawn(move || pending.run());
    // The task thread keeps changing every key while the file is written.
    fill(&mut b, &s, 11)?;
    for k in (0..KEYS).step_by(3) {
        b.set_current_key(&k);
        b.value(&s.value).clear()?;
    }
    let result = writer.join().expect("no panic")?;
    assert!(result.stats.entries > 0 && result.stats.bytes > 0);
    let done = storage.complete_checkpoint(
        CheckpointId(5),
        vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(result.handle)],
    )?;
    let sources =
        FileRestoreSource::open_all(&*storage, &done.handles_for(KeyGroupRange::all(MAXP)?))?;
    let sources: Vec<&dyn RestoreSource> = sources.iter().map(|s| s as _).collect();
    let mut r = Backend::<u64>::restore(config(1, 0)?, &sources)?;
    let s = register(&mut r)?;
    assert_eq!(check(&mut r, &s, 10)?, KEYS);
    Ok(())
}

#[test]
fn savepoints_survive_retention_and_restore() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = fs_storage(dir.path(), 1)?;
    let mut b = Backend::<u64>::open(config(1, 0)?)?;
    let s = register(&mut b)?;
    fill(&mut b, &s, 3)?;
    let target = SnapshotTarget::savepoint(CheckpointId(1), "savepoints/before-upgrade");
    let result = b.snapshot(target, &storage, "task-0")?.run()?;
    storage.complete_savepoint(
        CheckpointId(1),
        "savepoints/before-upgrade",
        vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(result.handle)],
    )?;
    // Three checkpoints later, with retention 1, the savepoint is still there.
    for id in 2..5 {
        let r = b.snapshot(CheckpointId(id), &storage, "task-0")?.run()?;
        storage.complete_checkpoint(
            CheckpointId(id),
            vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(r.handle)],
        )?;
    }
    let sp = storage.load_savepoint("savepoints/before-upgrade")?;
    assert_eq!(sp.kind(), SnapshotKind::Savepoint);
    let sources =
        FileRestoreSource::open_all(&*storage, &sp.handles_for(KeyGroupRange::all(MAXP)?))?;
    let sources: Vec<&dyn RestoreSource> = sources.iter().map(|s| s as _).collect();
    let mut r = Backend::<u64>::restore(config(2, 1)?, &sources)?;
    let s = register(&mut r)?;
    assert!(check(&mut r, &s, 3)? > 0);
    Ok(())
}

#[test]
fn operator_state_round_trips_through_files_and_redistributes() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = fs_storage(dir.path(), 1)?;
    let target = SnapshotTarget::checkpoint(CheckpointId(1));
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        let mut store = OperatorStateStore::new();
        let offsets = store.list_state(&ListStateDescriptor::<u64>::new("offsets"))?;
        let rules = store.broadcast_state(&MapStateDescriptor::<String, u32>::new("rules"))?;
        store
            .list(&offsets)
            .update((i * 10..i * 10 + 4).collect())?;
        store.broadcast(&rules).put("max".into(), 9)?;
        let handle = checkpoint::write_operator_state(
            &*storage,
            &target,
            &format!("source-{i}-operator"),
            &store.snapshot(),
        )?;
        tasks.push(SubtaskState::new("source", i as u32, 3, MAXP).with_operator(handle));
    }
    let done = storage.complete_checkpoint(CheckpointId(1), tasks)?;
    let mut snapshots: Vec<OperatorStateSnapshot> = Vec::new();
    for task in done.tasks() {
        for handle in &task.operator {
            snapshots.push(checkpoint::read_operator_state(&*storage, handle)?);
        }
    }
    let refs: Vec<&OperatorStateSnapshot> = snapshots.iter().collect();
    let mut all = Vec::new();
    for i in 0..2 {
        let mut store = OperatorStateStore::restore(&refs, 2, i)?;
        let offsets = store.list_state(&ListStateDescriptor::<u64>::new("offsets"))?;
        all.extend(store.list(&offsets).get()?);
        let rules = store.broadcast_state(&MapStateDescriptor::<String, u32>::new("rules"))?;
        assert_eq!(store.broadcast(&rules).get(&"max".to_string())?, Some(9));
    }
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]);
    Ok(())
}

#[test]
fn a_damaged_state_file_fails_the_restore_with_an_error_naming_it() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = fs_storage(dir.path(), 1)?;
    let mut b = Backend::<u64>::open(config(1, 0)?)?;
    let s = register(&mut b)?;
    fill(&mut b, &s, 1)?;
    let result = b.snapshot(CheckpointId(1), &storage, "task-0")?.run()?;
    let file = result.handle.files()[0].clone();
    let path = dir.path().join(file.path());
    let mut bytes = std::fs::read(&path).expect("the state file is readable");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, &bytes).expect("the state file is writable");
    let outcome = FileRestoreSource::open(&*storage, &file).and_then(|source| {
        Backend::<u64>::restore(config(1, 0)?, &[&source as &dyn RestoreSource]).map(|_| ())
    });
    let err = outcome.expect_err("a flipped byte is detected");
    assert!(err.to_string().contains("task-0"), "{err}");
    Ok(())
}

#[test]
fn the_encoded_run_matches_the_visited_entries_for_every_kind() -> Result<()> {
    struct Sum;
    impl AggregateFunction for Sum {
        type In = u8;
        type Acc = (u64, String);
        type Out = u64;
        fn create_accumulator(&self) -> (u64, String) {
            (0, String::new())
        }
        fn add(&self, acc: &mut (u64, String), v: u8) {
            acc.0 += u64::from(v);
            acc.1.push('x');
        }
        fn get_result(&self, acc: &(u64, String)) -> u64 {
            acc.0
        }
        fn merge(&self, acc: &mut (u64, String), o: (u64, String)) {
            acc.0 += o.0;
        }
    }
    let mut b = Backend::<String>::open(BackendConfig::heap().max_parallelism(8))?;
    let v = b.register(ValueStateDescriptor::<Vec<u8>>::new("v").with_namespace::<u32>())?;
    let l = b.register(ListStateDescriptor::<String>::new("l"))?;
    let m = b.register(MapStateDescriptor::<String, i16>::new("m"))?;
    let r = b.register(ReducingStateDescriptor::<i64>::new("r", |a, b| a - b))?;
    let a = b.register(AggregatingStateDescriptor::new("a", Sum))?;
    for k in 0..300u32 {
        // Keys of different lengths share 8-byte prefixes, so the prefix tie-break is used.
        b.set_current_key(&format!("key-{:0width$}", k, width = (k % 5) as usize));
        b.value(&v)
            .namespace(&(k % 3))
            .update(vec![k as u8; (k % 4) as usize])?;
        b.list(&l).add(format!("{k}"))?;
        b.map(&m)
            .put_all([(format!("a{k}"), 1), (format!("b{k}"), -2)])?;
        b.reducing(&r).add(i64::from(k))?;
        b.aggregating(&a).add(k as u8)?;
    }
    let view = b.snapshot_state()?;
    for state in view.states() {
        for kg in view.key_group_range().iter() {
            let mut visited = Vec::new();
            state.visit_key_group(kg, &mut |e| visited.push(e)).unwrap();
            visited.sort_by(|x, y| (&x.key, &x.namespace).cmp(&(&y.key, &y.namespace)));
            let mut run = EncodedRun::default();
            state.encode_key_group(kg, &mut run).unwrap();
            run.sort();
            let from_run: Vec<EncodedEntry> = run
                .iter()
                .map(|e| EncodedEntry {
                    key: e.key.to_vec(),
                    namespace: e.namespace.to_vec(),
                    state: match e.state {
                        flowstate::snapshot::RunStateRef::Value(v) => {
                            EncodedState::Value(v.to_vec())
                        }
                        flowstate::snapshot::RunStateRef::List(l) => EncodedState::List(l.to_vec()),
                        flowstate::snapshot::RunStateRef::Map(m) => EncodedState::Map(m.to_vec()),
                    },
                })
                .collect();
            assert_eq!(
                from_run,
                visited,
                "state {} key group {kg}",
                state.meta().name
            );
        }
    }
    Ok(())
}

/// A state file records the checkpoint it was written for (its origin): a file of checkpoint
/// 1 copied into checkpoint 2's directory is refused from its own header, even where the handle
/// records no checksum (a version-1 `_metadata`), for keyed and operator state alike.
#[test]
fn a_file_of_another_checkpoint_is_refused_by_its_origin_without_a_checksum() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = fs_storage(dir.path(), 2)?;
    let mut b = Backend::<u64>::open(config(1, 0)?)?;
    let s = register(&mut b)?;
    let mut offsets = OperatorStateStore::new();
    let offset = offsets.list_state(&ListStateDescriptor::<u64>::new("offset"))?;
    for id in 1..=2u64 {
        fill(&mut b, &s, id)?;
        offsets.list(&offset).update(vec![id])?;
        let keyed = b.snapshot(CheckpointId(id), &storage, "task-0")?.run()?;
        let operator = checkpoint::write_operator_state(
            &*storage,
            &SnapshotTarget::checkpoint(CheckpointId(id)),
            "source-0",
            &offsets.snapshot(),
        )?;
        let task = SubtaskState::new("op", 0, 1, MAXP)
            .with_keyed(keyed.handle)
            .with_operator(operator);
        storage.complete_checkpoint(CheckpointId(id), vec![task])?;
    }
    for name in ["task-0", "source-0"] {
        let stale = std::fs::read(dir.path().join("chk-1").join(name)).expect("readable");
        std::fs::write(dir.path().join("chk-2").join(name), &stale).expect("writable");
        // A handle without a checksum, of the stale file's size: only the origin can tell.
        let file = StateFile::new(format!("chk-2/{name}"), stale.len() as u64)?;
        let err = if name == "task-0" {
            FileRestoreSource::open(&*storage, &file).map(|_| ())
        } else {
            checkpoint::read_operator_state(&*storage, &OperatorStateHandle::new(file)).map(|_| ())
        }
        .expect_err("a file of checkpoint 1 in checkpoint 2 is refused");
        assert!(
            matches!(&err, Error::MisplacedFile { path, reason }
                if path == &format!("chk-2/{name}") && reason.contains("of checkpoint 1")),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Corruption);
        // In its own place the same bytes are accepted.
        let own = StateFile::new(format!("chk-1/{name}"), stale.len() as u64)?;
        if name == "task-0" {
            FileRestoreSource::open(&*storage, &own)?;
        } else {
            checkpoint::read_operator_state(&*storage, &OperatorStateHandle::new(own))?;
        }
    }
    Ok(())
}
