//! Incremental checkpoints of the LSM backend: what they ship, what the shared-file registry
//! keeps, and restores from them (same range by linking, rescaled, mixed with canonical
//! files, into the heap backend), all checked against a model of every state kind.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flowstate::checkpoint::{
    CheckpointStorage, FsCheckpointOptions, FsCheckpointStorage, KeyedStateHandle, SnapshotTarget,
    SubtaskState, SHARED_DIR,
};
use flowstate::lsm::LsmBackground;
use flowstate::*;

const MAXP: u32 = 128;

use common::all_kinds::{check, register, touch, window, Handles, Model};

/// An LSM configuration that makes many small tables, with flushes and compactions inline.
fn lsm(dir: &std::path::Path, range: KeyGroupRange) -> BackendConfig {
    BackendConfig::lsm(dir)
        .max_parallelism(MAXP)
        .key_group_range(range)
        .lsm_memtable_bytes(192 << 10)
        .lsm_background(LsmBackground::Inline)
}

use common::fs_storage;

/// One task: its backend, handles and the key groups it owns.
struct Task {
    backend: Backend<u64>,
    handles: Handles,
}

/// Tasks `0..p` of an operator, each filled with `keys` keys' state (touch 0), in
/// directories under `root`.
fn tasks(root: &std::path::Path, p: u32, keys: u64, m: &mut Model) -> Vec<Task> {
    (0..p)
        .map(|i| {
            let range = KeyGroupRange::for_operator(MAXP, p, i).unwrap();
            let mut backend =
                Backend::open(lsm(&root.join(format!("task-{p}-{i}")), range)).unwrap();
            let handles = register(&mut backend);
            for k in 0..keys {
                let kg = key_group_for(&flowstate::codec::to_bytes(&k), MAXP);
                if range.contains(kg) {
                    touch(&mut backend, &handles, m, k, 0);
                }
            }
            Task { backend, handles }
        })
        .collect()
}

/// The index of the task that owns key `k`.
fn owner(tasks: &[Task], k: u64) -> usize {
    let kg = key_group_for(&flowstate::codec::to_bytes(&k), MAXP);
    tasks
        .iter()
        .position(|t| t.backend.key_group_range().contains(kg))
        .expect("the tasks cover every key group")
}

/// Checkpoints every task into checkpoint `id` and completes it; returns the handles.
fn checkpoint(
    tasks: &mut [Task],
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
) -> (
    Vec<KeyedStateHandle>,
    Vec<flowstate::checkpoint::SnapshotStats>,
) {
    let p = tasks.len() as u32;
    let mut states = Vec::new();
    let mut handles = Vec::new();
    let mut stats = Vec::new();
    for (i, t) in tasks.iter_mut().enumerate() {
        let pending = t
            .backend
            .snapshot(CheckpointId(id), storage, &format!("op-{i}"))
            .unwrap();
        assert!(pending.is_native());
        let done = pending.run().unwrap();
        handles.push(done.handle.clone());
        stats.push(done.stats);
        states.push(SubtaskState::new("op", i as u32, p, MAXP).with_keyed(done.handle));
    }
    storage
        .complete_checkpoint(CheckpointId(id), states)
        .unwrap();
    for t in tasks.iter_mut() {
        t.backend
            .notify_checkpoint_complete(CheckpointId(id))
            .unwrap();
    }
    (handles, stats)
}

/// Restores an LSM task of `range` from `handles` in directory `dir`, its states registered.
fn restore_lsm(
    dir: &std::path::Path,
    range: KeyGroupRange,
    storage: &Arc<dyn CheckpointStorage>,
    handles: &[KeyedStateHandle],
) -> (Backend<u64>, Handles, RestoreStats) {
    let (b, stats) = LsmBackend::<u64>::restore_from(lsm(dir, range), &**storage, handles).unwrap();
    let mut b = Backend::Lsm(b);
    let h = register(&mut b);
    (b, h, stats)
}

/// The files of `shared/` and those the complete checkpoints reference.
fn shared_state(storage: &Arc<dyn CheckpointStorage>) -> (BTreeSet<String>, BTreeSet<String>) {
    let refs = storage.shared_file_references().unwrap();
    let present: BTreeSet<String> = refs.keys().cloned().collect();
    let referenced: BTreeSet<String> = refs
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(p, _)| p.clone())
        .collect();
    (present, referenced)
}

#[test]
fn incremental_checkpoints_ship_only_new_tables_and_restore_by_linking() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("checkpoints"), 1);
    let keys = 6_000;
    let mut model = Model::default();
    let mut ts = tasks(dir.path(), 1, keys, &mut model);
    let (_, first) = checkpoint(&mut ts, &storage, 1);
    let first = &first[0];
    assert!(first.shared_files >= 2, "{first:?}");
    assert_eq!(first.new_shared_files, first.shared_files);
    assert_eq!(
        first.linked_files, first.new_shared_files,
        "same file system: hard links"
    );
    // Change 1% of the keys: the next checkpoint references the old tables.
    for k in (0..keys).step_by(100) {
        let Task { backend, handles } = &mut ts[0];
        touch(backend, handles, &mut model, k, 1);
    }
    let (handles, second) = checkpoint(&mut ts, &storage, 2);
    let second = &second[0];
    assert!(second.new_shared_files >= 1);
    assert!(second.new_shared_files < second.shared_files, "{second:?}");
    assert!(
        second.new_shared_bytes * 5 < second.shared_bytes,
        "a 1% change ships a fraction of the state: {second:?}"
    );
    // Retention 1: checkpoint 1 is gone, and so are the files only it referenced.
    let (present, referenced) = shared_state(&storage);
    assert_eq!(present, referenced);
    assert_eq!(
        referenced,
        handles[0]
            .shared_files()
            .iter()
            .map(|f| f.path().to_string())
            .collect()
    );
    // Same range: every table linked, nothing rewritten.
    let (restored, stats) = LsmBackend::<u64>::restore_from(
        lsm(
            &dir.path().join("restored"),
            KeyGroupRange::new(0, 127).unwrap(),
        ),
        &*storage,
        &handles,
    )
    .unwrap();
    assert_eq!(stats.linked_tables, second.shared_files, "{stats:?}");
    assert_eq!(
        (
            stats.copied_tables,
            stats.clipped_tables,
            stats.ingested_sources
        ),
        (0, 0, 0)
    );
    let mut restored = Backend::Lsm(restored);
    let h = register(&mut restored);
    assert_eq!(check(&mut restored, &h, &model, keys), keys);
    // The restored backend's next checkpoint references the linked tables: nothing new but
    // what changed since.
    touch(&mut restored, &h, &mut model, 7, 2);
    let mut ts = vec![Task {
        backend: restored,
        handles: h,
    }];
    let (_, third) = checkpoint(&mut ts, &storage, 3);
    assert!(third[0].new_shared_files <= 2, "{:?}", third[0]);
    assert!(
        third[0].new_shared_bytes * 20 < third[0].shared_bytes,
        "{:?}",
        third[0]
    );
}

#[test]
fn incremental_checkpoints_restore_into_the_heap_backend_and_copy_without_a_local_path() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemStorage::new());
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(FsCheckpointStorage::open(mem, FsCheckpointOptions::default()).unwrap());
    let keys = 3_000;
    let mut model = Model::default();
    let mut ts = tasks(dir.path(), 1, keys, &mut model);
    let (handles, stats) = checkpoint(&mut ts, &storage, 1);
    assert_eq!(stats[0].linked_files, 0, "no local path: copies");
    assert!(stats[0].new_shared_files > 0);
    let mut heap = Backend::<u64>::restore_from(
        BackendConfig::heap().max_parallelism(MAXP),
        &*storage,
        &handles,
    )
    .unwrap();
    let h = register(&mut heap);
    assert_eq!(check(&mut heap, &h, &model, keys), keys);
    let (lsm_backend, stats) = LsmBackend::<u64>::restore_from(
        lsm(&dir.path().join("r"), KeyGroupRange::new(0, 127).unwrap()),
        &*storage,
        &handles,
    )
    .unwrap();
    assert_eq!(stats.linked_tables, 0);
    assert!(stats.copied_tables > 0);
    let mut b = Backend::Lsm(lsm_backend);
    let h = register(&mut b);
    assert_eq!(check(&mut b, &h, &model, keys), keys);
}

/// Ranges of `q` tasks shifted by `shift` key groups from Flink's assignment.
fn ranges(q: u32, shift: u16) -> Vec<KeyGroupRange> {
    let mut out: Vec<KeyGroupRange> = (0..q)
        .map(|i| KeyGroupRange::for_operator(MAXP, q, i).unwrap())
        .collect();
    if shift > 0 {
        for i in 0..out.len() {
            let start = if i == 0 { 0 } else { out[i].start() + shift };
            let end = if i + 1 == out.len() {
                127
            } else {
                out[i].end() + shift
            };
            out[i] = KeyGroupRange::new(start, end).unwrap();
        }
    }
    out
}

#[test]
fn rescaled_restores_from_incremental_checkpoints_match_the_model() {
    let keys = 2_000;
    for (p, q, shift) in [(1, 3, 0), (3, 2, 0), (4, 4, 5), (2, 7, 0), (128, 1, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let storage = fs_storage(&dir.path().join("checkpoints"), 1);
        let mut model = Model::default();
        let mut ts = tasks(dir.path(), p, keys, &mut model);
        checkpoint(&mut ts, &storage, 1);
        for k in (0..keys).step_by(7) {
            let index = owner(&ts, k);
            let t = &mut ts[index];
            touch(&mut t.backend, &t.handles, &mut model, k, 1);
        }
        checkpoint(&mut ts, &storage, 2);
        drop(ts);
        let latest = storage.latest_completed().unwrap().unwrap();
        let mut total = 0;
        let mut clipped = 0;
        for (j, range) in ranges(q, shift).into_iter().enumerate() {
            let handles = latest.handles_for(range);
            let (b, stats) = LsmBackend::<u64>::restore_from(
                lsm(&dir.path().join(format!("r-{j}")), range),
                &*storage,
                &handles,
            )
            .unwrap();
            clipped += stats.clipped_tables + stats.skipped_tables;
            let mut b = Backend::Lsm(b);
            let h = register(&mut b);
            total += check(&mut b, &h, &model, keys);
            let mut heap = Backend::<u64>::restore_from(
                BackendConfig::heap()
                    .max_parallelism(MAXP)
                    .key_group_range(range),
                &*storage,
                &handles,
            )
            .unwrap();
            let h = register(&mut heap);
            check(&mut heap, &h, &model, keys);
        }
        assert_eq!(total, keys, "{p} -> {q}: every key in exactly one task");
        if p < q || shift > 0 {
            assert!(clipped > 0, "{p} -> {q}: tables clipped or skipped");
        }
    }
}

#[test]
fn mixed_sources_restore_together() {
    // Task 0 takes incremental checkpoints, task 1 writes canonical files.
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("checkpoints"), 1);
    let keys = 2_000;
    let mut model = Model::default();
    let mut ts = tasks(dir.path(), 2, keys, &mut model);
    let canonical = lsm(
        &dir.path().join("canonical"),
        KeyGroupRange::for_operator(MAXP, 2, 1).unwrap(),
    )
    .lsm_incremental_checkpoints(false);
    let mut b1 = Backend::open(canonical).unwrap();
    let h1 = register(&mut b1);
    for k in 0..keys {
        b1.set_current_key(&k);
        if b1
            .current_key_group()
            .is_some_and(|kg| b1.key_group_range().contains(kg))
        {
            // The same state the first fill gave this key.
            touch(&mut b1, &h1, &mut Model::default(), k, 0);
        }
    }
    ts[1] = Task {
        backend: b1,
        handles: h1,
    };
    let mut states = Vec::new();
    for (i, t) in ts.iter_mut().enumerate() {
        let pending = t
            .backend
            .snapshot(CheckpointId(1), &storage, &format!("op-{i}"))
            .unwrap();
        assert_eq!(pending.is_native(), i == 0);
        let done = pending.run().unwrap();
        states.push(SubtaskState::new("op", i as u32, 2, MAXP).with_keyed(done.handle));
    }
    let done = storage
        .complete_checkpoint(CheckpointId(1), states)
        .unwrap();
    let all = KeyGroupRange::new(0, 127).unwrap();
    let (mut b, h, stats) =
        restore_lsm(&dir.path().join("r"), all, &storage, &done.handles_for(all));
    assert!(stats.linked_tables > 0);
    assert_eq!(stats.ingested_sources, 1);
    assert_eq!(check(&mut b, &h, &model, keys), keys);
}

#[test]
fn a_missing_damaged_or_resized_shared_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    let storage = fs_storage(&root, 1);
    let mut model = Model::default();
    let mut ts = tasks(dir.path(), 1, 2_000, &mut model);
    let (handles, _) = checkpoint(&mut ts, &storage, 1);
    let victim = handles[0].shared_files()[0].path().to_string();
    let full = root.join(&victim);
    let original = std::fs::read(&full).unwrap();
    let restore = |name: &str| {
        LsmBackend::<u64>::restore_from(
            lsm(&dir.path().join(name), KeyGroupRange::new(0, 127).unwrap()),
            &*storage,
            &handles,
        )
        .map(|_| ())
    };
    let expect = |err: Error, what: &str| {
        let text = err.to_string();
        assert!(
            matches!(err, Error::SharedFile { checkpoint: 1, .. }),
            "{what}: {text}"
        );
        assert!(text.contains(&victim), "{what}: {text}");
    };
    // A byte flipped, same size: the checksum.
    let mut damaged = original.clone();
    damaged[original.len() / 2] ^= 0x20;
    std::fs::write(&full, &damaged).unwrap();
    expect(restore("a").unwrap_err(), "flipped");
    let heap = Backend::<u64>::restore_from(BackendConfig::heap(), &*storage, &handles);
    expect(heap.map(|_| ()).unwrap_err(), "flipped, heap");
    // Truncated.
    std::fs::write(&full, &original[..original.len() - 1]).unwrap();
    expect(restore("b").unwrap_err(), "truncated");
    // Missing.
    std::fs::remove_file(&full).unwrap();
    expect(restore("c").unwrap_err(), "missing");
    let heap = Backend::<u64>::restore_from(BackendConfig::heap(), &*storage, &handles);
    expect(heap.map(|_| ()).unwrap_err(), "missing, heap");
    // Back in place, the restore works.
    std::fs::write(&full, &original).unwrap();
    restore("d").unwrap();
}

#[test]
fn native_savepoints_are_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    let storage = fs_storage(&root, 1);
    let keys = 2_000;
    let mut model = Model::default();
    let mut ts = tasks(dir.path(), 1, keys, &mut model);
    checkpoint(&mut ts, &storage, 1);
    let target = SnapshotTarget::native_savepoint(CheckpointId(2), "savepoints/sp-2");
    let done = ts[0]
        .backend
        .snapshot(target.clone(), &storage, "op-0")
        .unwrap()
        .run()
        .unwrap();
    assert!(done.handle.shared_files().is_empty());
    assert!(
        done.handle.files().len() > 1,
        "the snapshot file and its tables"
    );
    let task = SubtaskState::new("op", 0, 1, MAXP).with_keyed(done.handle);
    storage.complete(&target, vec![task]).unwrap();
    // Every checkpoint and shared file gone: the savepoint still restores.
    drop(ts);
    std::fs::remove_dir_all(root.join("chk-1")).unwrap();
    std::fs::remove_dir_all(root.join(SHARED_DIR)).unwrap();
    std::fs::create_dir(root.join(SHARED_DIR)).unwrap();
    let savepoint = storage.load_savepoint("savepoints/sp-2").unwrap();
    let all = KeyGroupRange::new(0, 127).unwrap();
    let (mut b, h, stats) = restore_lsm(
        &dir.path().join("r"),
        all,
        &storage,
        &savepoint.handles_for(all),
    );
    assert!(stats.linked_tables > 0);
    assert_eq!(check(&mut b, &h, &model, keys), keys);
    // A savepoint may not reference shared files.
    let shared_target = SnapshotTarget::savepoint(CheckpointId(3), "savepoints/sp-3");
    assert!(storage.create_shared_file(&shared_target, "x.sst").is_err());
}

/// SplitMix64, for seeded runs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn the_registry_keeps_exactly_what_retained_checkpoints_reference_over_a_long_seeded_run() {
    for (retained, seed) in [(1usize, 11u64), (3, 12), (1, 13), (3, 14)] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        let mut storage = fs_storage(&root, retained);
        let keys = 1_500;
        let mut rng = Rng(seed);
        let mut model = Model::default();
        let mut ts = tasks(dir.path(), 2, keys, &mut model);
        let mut touches = BTreeMap::<u64, u64>::new();
        let mut id = 0u64;
        let mut restarts = 0;
        for round in 0..40 {
            for _ in 0..rng.below(120) {
                let k = rng.below(keys);
                let t = touches.entry(k).or_insert(0);
                *t += 1;
                let index = owner(&ts, k);
                let task = &mut ts[index];
                touch(&mut task.backend, &task.handles, &mut model, k, *t);
            }
            id += 1;
            let p = ts.len() as u32;
            let mut states = Vec::new();
            for (i, t) in ts.iter_mut().enumerate() {
                let done = t
                    .backend
                    .snapshot(CheckpointId(id), &storage, &format!("op-{i}"))
                    .unwrap()
                    .run()
                    .unwrap();
                states.push(SubtaskState::new("op", i as u32, p, MAXP).with_keyed(done.handle));
            }
            match rng.below(5) {
                0 => {
                    storage.abort_checkpoint(CheckpointId(id)).unwrap();
                    for t in ts.iter_mut() {
                        t.backend
                            .notify_checkpoint_aborted(CheckpointId(id))
                            .unwrap();
                    }
                }
                1 => {
                    // Completed, but the tasks never hear of it (a lost notification).
                    storage
                        .complete_checkpoint(CheckpointId(id), states)
                        .unwrap();
                }
                _ => {
                    storage
                        .complete_checkpoint(CheckpointId(id), states)
                        .unwrap();
                    for t in ts.iter_mut() {
                        t.backend
                            .notify_checkpoint_complete(CheckpointId(id))
                            .unwrap();
                    }
                }
            }
            let (present, referenced) = shared_state(&storage);
            assert_eq!(present, referenced, "retained {retained}, round {round}");
            if rng.below(8) == 0 {
                // A restart: the storage reopens, the tasks restore from the latest checkpoint
                // at another parallelism.
                restarts += 1;
                drop(ts);
                storage = fs_storage(&root, retained);
                let latest = storage.latest_completed().unwrap().unwrap();
                let q = 1 + rng.below(3) as u32;
                // The model of the latest checkpoint: replay is not kept, so continue from
                // what the checkpoint holds, checked against the model when it is the newest
                // state (no abort since).
                ts = (0..q)
                    .map(|i| {
                        let range = KeyGroupRange::for_operator(MAXP, q, i).unwrap();
                        let (backend, handles, _) = restore_lsm(
                            &dir.path().join(format!("restart-{restarts}-{i}")),
                            range,
                            &storage,
                            &latest.handles_for(range),
                        );
                        Task { backend, handles }
                    })
                    .collect();
                if latest.id() == CheckpointId(id) {
                    let total: u64 = ts
                        .iter_mut()
                        .map(|t| check(&mut t.backend, &t.handles, &model, keys))
                        .sum();
                    assert_eq!(total, keys);
                } else {
                    // The aborted checkpoint's changes are lost with the tasks: rebuild the
                    // model from the restored state.
                    model = Model::default();
                    for t in ts.iter_mut() {
                        read_model(&mut t.backend, &t.handles, &mut model, keys);
                    }
                }
            }
        }
        let (present, referenced) = shared_state(&storage);
        assert_eq!(present, referenced, "retained {retained}");
        assert!(!present.is_empty());
        let completed = storage.completed().unwrap();
        assert!(
            !completed.is_empty() && completed.len() <= retained,
            "retention keeps at most {retained}: {completed:?}"
        );
    }
}

/// Reads the state of the keys `b` owns into `m`.
fn read_model(b: &mut Backend<u64>, h: &Handles, m: &mut Model, keys: u64) {
    for k in 0..keys {
        b.set_current_key(&k);
        if !common::owns_current(b) {
            continue;
        }
        if let Some(v) = b.value(&h.value).get().unwrap() {
            m.value.insert(k, v);
        }
        let list = b.list(&h.list).get().unwrap();
        if !list.is_empty() {
            m.list.insert(k, list);
        }
        let map: BTreeMap<u32, f64> = b.map(&h.map).entries().unwrap().into_iter().collect();
        if !map.is_empty() {
            m.map.insert(k, map);
        }
        if let Some(v) = b.reducing(&h.reducing).get().unwrap() {
            m.reducing.insert(k, v);
        }
        if let Some(v) = b.aggregating(&h.aggregating).get().unwrap() {
            m.aggregating.insert(k, v);
        }
        if let Some(v) = b.value(&h.windowed).namespace(&window(k)).get().unwrap() {
            m.windowed.insert(k, v);
        }
    }
}

#[test]
fn a_crash_at_every_step_of_publishing_and_deleting_shared_files_loses_nothing() {
    crash_sweep(CrashMode::DropUnsynced, 1);
}

/// The object-store counterpart: the store fails every request from the n-th on (the server
/// went away mid-checkpoint: uploads, `_metadata`, deletions), the process dies, the store
/// comes back and the owner reopens. Each request is tried once, so that the n-th failure is
/// final.
#[cfg(feature = "object-store")]
#[test]
fn an_object_store_failing_at_every_request_of_a_checkpoint_loses_nothing() {
    use flowstate::storage::{object_store::memory::InMemory, FaultyObjectStore};
    use flowstate::storage::{ObjectStorage, ObjectStorageOptions};
    use std::time::Duration;

    struct ObjectSwept(FaultyObjectStore);
    impl common::all_kinds::SweptStore for ObjectSwept {
        fn open(&self) -> Arc<dyn CheckpointStorage> {
            let options =
                ObjectStorageOptions::default().with_retries(1, Duration::ZERO, Duration::ZERO);
            let storage =
                ObjectStorage::new(Arc::new(self.0.clone()), "root", "faulty", options).unwrap();
            Arc::new(
                FsCheckpointStorage::open(Arc::new(storage), FsCheckpointOptions::default())
                    .unwrap(),
            )
        }
        fn ops(&self) -> u64 {
            self.0.requests()
        }
        fn fail_after(&self, n: u64) {
            self.0.fail_after(n);
        }
        fn crash_and_heal(&self) {
            self.0.heal();
        }
    }
    let store = |_| ObjectSwept(FaultyObjectStore::new(Arc::new(InMemory::new())));
    crash_sweep_on(store, 2);
}

#[test]
fn torn_crashes_while_publishing_and_deleting_shared_files_lose_nothing() {
    // Unsynced data partly kept (prefixes of appends, some name changes), at every third step.
    for seed in [1, 2] {
        crash_sweep(CrashMode::Torn { seed }, 3);
    }
}

/// The tree works on its own storage; the checkpoint storage's MemStorage fails from its n-th
/// operation on (n = 1, 1 + step, ...), crashes as `mode` says, heals and reopens.
fn crash_sweep(mode: CrashMode, step: u64) {
    let store = |n| common::all_kinds::MemSwept(Arc::new(MemStorage::with_seed(n)), mode);
    crash_sweep_on(store, step);
}

/// [`crash_sweep`] on the checkpoint storage `store(n)` makes for trial n.
fn crash_sweep_on<S: common::all_kinds::SweptStore>(store: impl Fn(u64) -> S, step: u64) {
    let keys = 800;
    let trial = |storage: &Arc<dyn CheckpointStorage>, arm: &mut dyn FnMut()| {
        let config = BackendConfig::lsm_on(Arc::new(MemStorage::new()), "task")
            .max_parallelism(MAXP)
            .lsm_memtable_bytes(128 << 10)
            .lsm_background(LsmBackground::Inline);
        let mut backend = Backend::<u64>::open(config).unwrap();
        let h = register(&mut backend);
        let mut model = Model::default();
        for k in 0..keys {
            touch(&mut backend, &h, &mut model, k, 0);
        }
        let first = model.clone();
        let mut ts = vec![Task {
            backend,
            handles: h,
        }];
        checkpoint(&mut ts, storage, 1);
        for k in (0..keys).step_by(13) {
            let Task { backend, handles } = &mut ts[0];
            touch(backend, handles, &mut model, k, 1);
        }
        // Checkpoint 2 (publication, completion, deletion of what only checkpoint 1
        // referenced), failing from operation n on.
        arm();
        let result = ts[0]
            .backend
            .snapshot(CheckpointId(2), storage, "op-0")
            .and_then(|p| p.run())
            .and_then(|done| {
                storage.complete_checkpoint(
                    CheckpointId(2),
                    vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(done.handle)],
                )
            });
        (first, model, result.is_ok())
    };
    let restore = |storage: &Arc<dyn CheckpointStorage>, latest: &CompletedCheckpoint, n: u64| {
        Backend::<u64>::restore_from(
            BackendConfig::lsm_on(Arc::new(MemStorage::new()), "restored")
                .max_parallelism(MAXP)
                .lsm_background(LsmBackground::Inline),
            &**storage,
            &latest.handles_for(KeyGroupRange::new(0, 127).unwrap()),
        )
        .unwrap_or_else(|e| panic!("n = {n}: {e}"))
    };
    common::all_kinds::crash_sweep_on(store, step, keys, 2, trial, restore);
}

#[test]
fn checkpoints_race_background_flushes_and_compactions() {
    // A pool thread flushes and compacts while checkpoints run on other threads and the task
    // keeps writing: each checkpoint holds exactly the state of its synchronous phase.
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("checkpoints"), 2);
    let all = KeyGroupRange::new(0, 127).unwrap();
    let config = BackendConfig::lsm(dir.path().join("work"))
        .max_parallelism(MAXP)
        .lsm_memtable_bytes(128 << 10)
        .lsm_background(LsmBackground::Threads(1));
    let mut backend = Backend::<u64>::open(config).unwrap();
    let h = register(&mut backend);
    let keys = 1_500;
    let mut model = Model::default();
    let mut rng = Rng(5);
    let mut at_checkpoint = Vec::new();
    for id in 1..=8u64 {
        for _ in 0..600 {
            let k = rng.below(keys);
            touch(&mut backend, &h, &mut model, k, id);
        }
        let pending = backend
            .snapshot(CheckpointId(id), &storage, "op-0")
            .unwrap();
        at_checkpoint.push(model.clone());
        // The asynchronous phase runs while the task writes on.
        let writer = std::thread::spawn(move || pending.run());
        for _ in 0..300 {
            let k = rng.below(keys);
            touch(&mut backend, &h, &mut model, k, id + 100);
        }
        let done = writer.join().unwrap().unwrap();
        storage
            .complete_checkpoint(
                CheckpointId(id),
                vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(done.handle)],
            )
            .unwrap();
        backend
            .notify_checkpoint_complete(CheckpointId(id))
            .unwrap();
        let latest = storage.latest_completed().unwrap().unwrap();
        let (mut restored, rh, _) = restore_lsm(
            &dir.path().join(format!("r-{id}")),
            all,
            &storage,
            &latest.handles_for(all),
        );
        assert_eq!(
            check(&mut restored, &rh, &at_checkpoint[id as usize - 1], keys),
            keys,
            "checkpoint {id}"
        );
    }
}

#[test]
fn checkpoints_in_flight_together_publish_and_reference_consistently() {
    // Two checkpoints of one backend in flight at once, finished in either order; the later
    // one completes, the earlier one then aborts (or completes first); the tables both need
    // are published under one name and kept.
    for later_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let storage = fs_storage(&dir.path().join("checkpoints"), 1);
        let keys = 2_000;
        let mut model = Model::default();
        let mut ts = tasks(dir.path(), 1, keys, &mut model);
        let Task { backend, handles } = &mut ts[0];
        let first = backend.snapshot(CheckpointId(1), &storage, "op-0").unwrap();
        let at_first = model.clone();
        for k in (0..keys).step_by(11) {
            touch(backend, handles, &mut model, k, 1);
        }
        let second = backend.snapshot(CheckpointId(2), &storage, "op-0").unwrap();
        let task = |h: KeyedStateHandle| vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(h)];
        let (done_first, done_second) = if later_first {
            let s = second.run().unwrap();
            let f = first.run().unwrap();
            (f, s)
        } else {
            let f = first.run().unwrap();
            let s = second.run().unwrap();
            (f, s)
        };
        // Both reference the loaded tables under the same shared names.
        let shared = |h: &KeyedStateHandle| -> BTreeSet<String> {
            h.shared_files()
                .iter()
                .map(|f| f.path().to_string())
                .collect()
        };
        assert!(!shared(&done_first.handle).is_disjoint(&shared(&done_second.handle)));
        if later_first {
            storage
                .complete_checkpoint(CheckpointId(2), task(done_second.handle))
                .unwrap();
            backend.notify_checkpoint_complete(CheckpointId(2)).unwrap();
            // Checkpoint 1 can no longer complete: it is aborted.
            assert!(storage
                .complete_checkpoint(CheckpointId(1), task(done_first.handle))
                .is_err());
            storage.abort_checkpoint(CheckpointId(1)).unwrap();
            backend.notify_checkpoint_aborted(CheckpointId(1)).unwrap();
        } else {
            storage
                .complete_checkpoint(CheckpointId(1), task(done_first.handle))
                .unwrap();
            backend.notify_checkpoint_complete(CheckpointId(1)).unwrap();
            let (r, h, _) = restore_lsm(
                &dir.path().join("r1"),
                KeyGroupRange::new(0, 127).unwrap(),
                &storage,
                &storage
                    .load_checkpoint(CheckpointId(1))
                    .unwrap()
                    .handles_for(KeyGroupRange::new(0, 127).unwrap()),
            );
            let mut r = r;
            assert_eq!(check(&mut r, &h, &at_first, keys), keys);
            storage
                .complete_checkpoint(CheckpointId(2), task(done_second.handle))
                .unwrap();
            backend.notify_checkpoint_complete(CheckpointId(2)).unwrap();
        }
        let (present, referenced) = shared_state(&storage);
        assert_eq!(present, referenced);
        let all = KeyGroupRange::new(0, 127).unwrap();
        let latest = storage.latest_completed().unwrap().unwrap();
        let (mut r, h, _) = restore_lsm(
            &dir.path().join("r2"),
            all,
            &storage,
            &latest.handles_for(all),
        );
        assert_eq!(check(&mut r, &h, &model, keys), keys);
        // The next checkpoint references or republishes what it needs; nothing leaks.
        touch(backend, handles, &mut model, 3, 2);
        checkpoint(&mut ts, &storage, 3);
        let (present, referenced) = shared_state(&storage);
        assert_eq!(present, referenced);
        let latest = storage.latest_completed().unwrap().unwrap();
        let (mut r, h, _) = restore_lsm(
            &dir.path().join("r3"),
            all,
            &storage,
            &latest.handles_for(all),
        );
        assert_eq!(check(&mut r, &h, &model, keys), keys);
    }
}

#[test]
fn review_findings_stay_fixed() {
    use flowstate::checkpoint::MemoryCheckpointStorage;
    use flowstate::storage::Storage as _;
    use flowstate_formats::checkpoint::NativeSnapshotRecord;

    // A failed copy leaves no temporary file in shared/ behind (the writer removes it).
    let dir = tempfile::tempdir().unwrap();
    let small = Arc::new(
        MemoryCheckpointStorage::with_limit(64 << 10, FsCheckpointOptions::default()).unwrap(),
    );
    let storage: Arc<dyn CheckpointStorage> = small.clone();
    let mut model = Model::default();
    let mut ts = tasks(dir.path(), 1, 3_000, &mut model);
    let failed = ts[0]
        .backend
        .snapshot(CheckpointId(1), &storage, "op-0")
        .unwrap()
        .run();
    assert!(
        matches!(failed, Err(Error::StateSizeLimit { .. })),
        "{failed:?}"
    );
    let left = small.memory().list_dir(SHARED_DIR).unwrap();
    assert!(
        left.iter().all(|n| !flowstate::storage::is_temp_name(n)),
        "{left:?}"
    );
    // The abort releases what the attempt published.
    storage.abort_checkpoint(CheckpointId(1)).unwrap();
    let left = small.memory().list_dir(SHARED_DIR).unwrap();
    assert!(left.is_empty(), "{left:?}");

    // Completing a savepoint numbered like a checkpoint in flight keeps that checkpoint's
    // reservations.
    let storage = fs_storage(&dir.path().join("checkpoints"), 1);
    let target = SnapshotTarget::checkpoint(CheckpointId(7));
    let mut w = storage.create_shared_file(&target, "t.sst").unwrap();
    w.write_all(b"table bytes").unwrap();
    let file = w.finish().unwrap();
    let sp = SnapshotTarget::savepoint(CheckpointId(7), "sp-7");
    storage
        .complete(&sp, vec![SubtaskState::new("op", 0, 1, MAXP)])
        .unwrap();
    storage.collect_garbage().unwrap();
    assert!(
        storage.reserve_shared_file(&target, &file).unwrap(),
        "still reserved and present"
    );

    // Two native handles over the same key groups are refused, not merged.
    let storage = fs_storage(&dir.path().join("checkpoints-2"), 1);
    let (handles, _) = checkpoint(&mut ts, &storage, 1);
    let twice = vec![handles[0].clone(), handles[0].clone()];
    let all = KeyGroupRange::new(0, 127).unwrap();
    let err =
        LsmBackend::<u64>::restore_from(lsm(&dir.path().join("twice"), all), &*storage, &twice)
            .unwrap_err();
    assert!(matches!(err, Error::IncompatibleSnapshot(_)), "{err}");

    // A table level past the tree's levels (the format allows 15) is an error, not a panic.
    let snapshot = &handles[0].files()[0];
    let root = dir.path().join("checkpoints-2");
    let bytes = std::fs::read(root.join(snapshot.path())).unwrap();
    let mut record = NativeSnapshotRecord::decode(&bytes, "s").unwrap();
    record.tables[0].level = 12;
    std::fs::write(root.join(snapshot.path()), record.encode("s").unwrap()).unwrap();
    let deep =
        LsmBackend::<u64>::restore_from(lsm(&dir.path().join("deep"), all), &*storage, &handles);
    assert!(deep.is_err());
}
