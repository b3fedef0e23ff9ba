//! Incremental checkpoints of the heap backend (spec/checkpoint-protocol.md, "Heap incremental
//! checkpoints"): what they ship, how chains consolidate and are collected, and restores from
//! them at any parallelism into either backend, checked against a model of every state kind;
//! then a property test with checkpoints, aborts, lost notifications and restores at random
//! points.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use flowstate::checkpoint::{
    CheckpointStorage, KeyedStateHandle, SnapshotResult, SnapshotTarget, SubtaskState,
};
use flowstate::heap::HeapIncremental;
use flowstate::lsm::LsmBackground;
use flowstate::storage::CrashMode;
use flowstate::*;
use flowstate_formats::checkpoint::KeyedHandleKind;
use flowstate_formats::Compression;
use proptest::prelude::*;

use common::all_kinds::{check, register, touch, Handles, Model};

const MAXP: u32 = 128;

fn heap(range: KeyGroupRange, limits: HeapIncremental) -> BackendConfig {
    BackendConfig::heap()
        .max_parallelism(MAXP)
        .key_group_range(range)
        .heap_incremental_checkpoints(limits)
}

use common::fs_storage;

struct Task {
    backend: Backend<u64>,
    handles: Handles,
}

fn new_task(limits: HeapIncremental) -> Task {
    let mut backend = Backend::open(heap(KeyGroupRange::all(MAXP).unwrap(), limits)).unwrap();
    let handles = register(&mut backend);
    Task { backend, handles }
}

/// Writes checkpoint `id` of `b` (task 0 of 1 of operator `op`) with `compression`.
fn write(
    b: &mut Backend<u64>,
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
    compression: Compression,
) -> SnapshotResult {
    b.snapshot(CheckpointId(id), storage, "op-0")
        .unwrap()
        .with_compression(compression)
        .run()
        .unwrap()
}

/// Completes checkpoint `id` with `handle` in `storage`.
fn complete(storage: &Arc<dyn CheckpointStorage>, id: u64, handle: KeyedStateHandle) {
    let state = SubtaskState::new("op", 0, 1, MAXP).with_keyed(handle);
    storage
        .complete_checkpoint(CheckpointId(id), vec![state])
        .unwrap();
}

/// Takes checkpoint `id` of `b`, completes it in `storage` and notifies the backend.
fn checkpoint(
    b: &mut Backend<u64>,
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
) -> SnapshotResult {
    let done = write(b, storage, id, Compression::None);
    complete(storage, id, done.handle.clone());
    b.notify_checkpoint_complete(CheckpointId(id)).unwrap();
    done
}

/// Restores task `i` of `p` from the latest completed checkpoint into the heap (incremental
/// again) or the LSM backend, its states registered.
fn restore(
    storage: &Arc<dyn CheckpointStorage>,
    dir: &std::path::Path,
    lsm: bool,
    p: u32,
    i: u32,
) -> (Backend<u64>, Handles) {
    let done = storage.latest_completed().unwrap().expect("a checkpoint");
    let range = KeyGroupRange::for_operator(MAXP, p, i).unwrap();
    let config = if lsm {
        BackendConfig::lsm(dir.join(format!("lsm-{p}-{i}")))
            .max_parallelism(MAXP)
            .key_group_range(range)
            .lsm_background(LsmBackground::Inline)
    } else {
        heap(range, HeapIncremental::default())
    };
    let mut b = Backend::restore_from(config, &**storage, &done.handles_for(range)).unwrap();
    let h = register(&mut b);
    (b, h)
}

/// Every task of a restore at parallelism `p` together holds exactly the model.
fn check_restores(
    storage: &Arc<dyn CheckpointStorage>,
    dir: &std::path::Path,
    m: &Model,
    keys: u64,
) {
    for (lsm, p) in [(false, 1), (false, 2), (true, 3)] {
        let mut owned = 0;
        for i in 0..p {
            let (mut b, h) = restore(storage, dir, lsm, p, i);
            owned += check(&mut b, &h, m, keys);
        }
        assert_eq!(
            owned, keys,
            "lsm {lsm}, parallelism {p}: every key owned once"
        );
    }
}

fn chain(handle: &KeyedStateHandle) -> Vec<String> {
    assert_eq!(handle.kind(), KeyedHandleKind::HeapChain);
    assert!(handle.files().is_empty());
    handle
        .shared_files()
        .iter()
        .map(|f| f.path().to_owned())
        .collect()
}

#[test]
fn deltas_ship_only_the_changes_and_restore_at_any_parallelism_into_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("chk"), 2);
    let keys = 2_000;
    let mut task = new_task(HeapIncremental::default());
    let mut m = Model::default();
    for k in 0..keys {
        touch(&mut task.backend, &task.handles, &mut m, k, 0);
    }
    let base = checkpoint(&mut task.backend, &storage, 1);
    assert_eq!(
        chain(&base.handle).len(),
        1,
        "the first checkpoint is a base"
    );
    assert!(chain(&base.handle)[0].ends_with(".base"));
    assert_eq!(base.stats.new_shared_files, 1);
    check_restores(&storage, dir.path(), &m, keys);

    // 1% of the keys change: the delta holds about 1% of the bytes.
    for k in (0..keys).step_by(100) {
        touch(&mut task.backend, &task.handles, &mut m, k, 1);
    }
    let delta = checkpoint(&mut task.backend, &storage, 2);
    let files = chain(&delta.handle);
    assert_eq!(files.len(), 2);
    assert_eq!(files[0], chain(&base.handle)[0], "the base is shared");
    assert!(files[1].ends_with(".delta"));
    assert!(
        delta.stats.new_shared_bytes * 20 < base.stats.new_shared_bytes,
        "a 1% delta of {} bytes beside a base of {}",
        delta.stats.new_shared_bytes,
        base.stats.new_shared_bytes
    );
    check_restores(&storage, dir.path(), &m, keys);

    // Removals: values, whole maps and windows cleared (touch clears some), keys emptied.
    for k in (0..keys).step_by(7) {
        task.backend.set_current_key(&k);
        task.backend.value(&task.handles.value).clear().unwrap();
        m.value.remove(&k);
        task.backend.list(&task.handles.list).clear().unwrap();
        m.list.remove(&k);
        touch(&mut task.backend, &task.handles, &mut m, k, 4);
    }
    let third = checkpoint(&mut task.backend, &storage, 3);
    assert_eq!(chain(&third.handle).len(), 3);
    check_restores(&storage, dir.path(), &m, keys);

    // One user key removed from maps that keep others: the entry changes in place.
    for k in (0..keys).step_by(5) {
        task.backend.set_current_key(&k);
        let map = &task.handles.map;
        let first = task
            .backend
            .map(map)
            .entries()
            .unwrap()
            .first()
            .map(|e| e.0);
        if let Some(u) = first {
            task.backend.map(map).remove(&u).unwrap();
            let entry = m.map.get_mut(&k).expect("the model has the map");
            entry.remove(&u);
            if entry.is_empty() {
                m.map.remove(&k);
            }
        }
    }
    let removed = checkpoint(&mut task.backend, &storage, 4);
    assert_eq!(chain(&removed.handle).len(), 4);
    check_restores(&storage, dir.path(), &m, keys);

    // Nothing changed: an empty delta.
    let fifth = checkpoint(&mut task.backend, &storage, 5);
    assert_eq!(chain(&fifth.handle).len(), 5);
    assert_eq!(fifth.stats.entries, 0);
    check_restores(&storage, dir.path(), &m, keys);

    // Savepoints stay full and canonical.
    let pending = task
        .backend
        .snapshot(
            SnapshotTarget::savepoint(CheckpointId(5), "sp-5"),
            &storage,
            "op-0",
        )
        .unwrap();
    assert!(!pending.is_native());
    let sp = pending.run().unwrap();
    assert_eq!(sp.handle.kind(), KeyedHandleKind::KeyGroupFiles);
}

#[test]
fn chains_consolidate_and_old_files_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("chk"), 1);
    let keys = 500;
    let limits = HeapIncremental {
        max_deltas: 2,
        max_delta_ratio: 0.5,
    };
    let mut task = new_task(limits);
    let mut m = Model::default();
    for k in 0..keys {
        touch(&mut task.backend, &task.handles, &mut m, k, 0);
    }
    let mut lens = Vec::new();
    for id in 1..=5 {
        touch(&mut task.backend, &task.handles, &mut m, id, id);
        let done = checkpoint(&mut task.backend, &storage, id);
        lens.push(chain(&done.handle).len());
        // Retaining one checkpoint, shared/ holds exactly the files of its chain.
        let refs = storage.shared_file_references().unwrap();
        let present: BTreeSet<String> = refs.keys().cloned().collect();
        let listed: BTreeSet<String> = chain(&done.handle).into_iter().collect();
        assert_eq!(
            present, listed,
            "checkpoint {id}: shared/ holds its chain only"
        );
        assert!(refs.values().all(|&n| n == 1));
    }
    assert_eq!(lens, [1, 2, 3, 1, 2], "after two deltas, a new base");
    check_restores(&storage, dir.path(), &m, keys);

    // Deltas that outgrow the ratio: every key changes, so the next checkpoint is a base.
    for k in 0..keys {
        touch(&mut task.backend, &task.handles, &mut m, k, 9);
    }
    let big = checkpoint(&mut task.backend, &storage, 6);
    assert_eq!(
        chain(&big.handle).len(),
        3,
        "a delta as large as the base is written"
    );
    touch(&mut task.backend, &task.handles, &mut m, 1, 10);
    let after = checkpoint(&mut task.backend, &storage, 7);
    assert_eq!(
        chain(&after.handle).len(),
        1,
        "then the ratio asks for a new base"
    );
    check_restores(&storage, dir.path(), &m, keys);
}

#[test]
fn deltas_are_relative_to_the_last_confirmed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("chk"), 3);
    let keys = 300;
    let mut task = new_task(HeapIncremental::default());
    let mut m = Model::default();
    for k in 0..keys {
        touch(&mut task.backend, &task.handles, &mut m, k, 0);
    }
    checkpoint(&mut task.backend, &storage, 1);
    // Checkpoint 2 is written, then aborted; 3 is written in flight beside it.
    touch(&mut task.backend, &task.handles, &mut m, 5, 1);
    let two = task
        .backend
        .snapshot(CheckpointId(2), &storage, "op-0")
        .unwrap();
    touch(&mut task.backend, &task.handles, &mut m, 6, 1);
    let three = task
        .backend
        .snapshot(CheckpointId(3), &storage, "op-0")
        .unwrap();
    let two = two.run().unwrap();
    storage.abort_checkpoint(CheckpointId(2)).unwrap();
    task.backend
        .notify_checkpoint_aborted(CheckpointId(2))
        .unwrap();
    let three = three.run().unwrap();
    assert_eq!(chain(&two.handle).len(), 2);
    assert_eq!(
        chain(&three.handle)[..1],
        chain(&two.handle)[..1],
        "both deltas of the base of checkpoint 1"
    );
    let state = SubtaskState::new("op", 0, 1, MAXP).with_keyed(three.handle.clone());
    storage
        .complete_checkpoint(CheckpointId(3), vec![state])
        .unwrap();
    // The notification of 3 is lost: checkpoint 4 is still a delta of checkpoint 1's view.
    touch(&mut task.backend, &task.handles, &mut m, 7, 1);
    let four = checkpoint(&mut task.backend, &storage, 4);
    assert_eq!(chain(&four.handle).len(), 2);
    check_restores(&storage, dir.path(), &m, keys);
    // A restored backend starts a chain of its own.
    let (mut b, h) = restore(&storage, dir.path(), false, 1, 0);
    touch(&mut b, &h, &mut m, 8, 2);
    let mut task = Task {
        backend: b,
        handles: h,
    };
    let five = checkpoint(&mut task.backend, &storage, 5);
    assert_eq!(chain(&five.handle).len(), 1);
    check_restores(&storage, dir.path(), &m, keys);
}

/// What the property test does.
#[derive(Debug, Clone)]
enum Op {
    Touch(u64, u64),
    ClearValue(u64),
    /// Removes one user key of a key's map (the map stays if other user keys remain).
    MapRemove(u64, u32),
    /// A checkpoint: completed (else aborted), and then notified or not.
    Checkpoint {
        complete: bool,
        notify: bool,
    },
    /// Restore the latest completed checkpoint into a heap backend.
    Restore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..40, 0u64..8).prop_map(|(k, t)| Op::Touch(k, t)),
        1 => (0u64..40).prop_map(Op::ClearValue),
        2 => (0u64..40, 0u32..4).prop_map(|(k, u)| Op::MapRemove(k, u)),
        3 => (any::<bool>(), any::<bool>()).prop_map(|(c, n)| Op::Checkpoint {
            complete: c || n,
            notify: n || !c,
        }),
        1 => Just(Op::Restore),
    ]
}

fn run_model(ops: &[Op], max_deltas: u32) {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("chk"), 2);
    let limits = HeapIncremental {
        max_deltas,
        max_delta_ratio: 4.0,
    };
    let keys = 40;
    let mut task = new_task(limits);
    let mut m = Model::default();
    let mut completed: Option<Model> = None;
    for (id, op) in (1u64..).zip(ops) {
        match *op {
            Op::Touch(k, t) => touch(&mut task.backend, &task.handles, &mut m, k, t),
            Op::ClearValue(k) => {
                task.backend.set_current_key(&k);
                task.backend.value(&task.handles.value).clear().unwrap();
                m.value.remove(&k);
            }
            Op::MapRemove(k, u) => {
                task.backend.set_current_key(&k);
                task.backend.map(&task.handles.map).remove(&u).unwrap();
                if let Some(map) = m.map.get_mut(&k) {
                    map.remove(&u);
                    if map.is_empty() {
                        m.map.remove(&k);
                    }
                }
            }
            Op::Checkpoint { complete, notify } => {
                let done = write(&mut task.backend, &storage, id, Compression::None);
                let cid = CheckpointId(id);
                if complete {
                    self::complete(&storage, id, done.handle);
                    completed = Some(m.clone());
                    if notify {
                        task.backend.notify_checkpoint_complete(cid).unwrap();
                    }
                } else {
                    storage.abort_checkpoint(cid).unwrap();
                    if notify {
                        task.backend.notify_checkpoint_aborted(cid).unwrap();
                    }
                }
            }
            Op::Restore => {
                let Some(at) = &completed else { continue };
                let (b, h) = restore(&storage, dir.path(), false, 1, 0);
                task = Task {
                    backend: b,
                    handles: h,
                };
                m = at.clone();
                assert_eq!(check(&mut task.backend, &task.handles, &m, keys), keys);
            }
        }
    }
    if let Some(at) = &completed {
        check_restores(&storage, dir.path(), at, keys);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn chains_restore_the_state_of_their_checkpoint(
        ops in proptest::collection::vec(op(), 1..40),
        max_deltas in 1u32..4,
    ) {
        run_model(&ops, max_deltas);
    }
}

/// A heap backend of every key group with incremental checkpoints, on a manual clock at 1 s.
fn on_manual_clock() -> (Arc<ManualClock>, Backend<u64>) {
    let clock = Arc::new(ManualClock::new(1_000));
    let config = heap(
        KeyGroupRange::all(MAXP).unwrap(),
        HeapIncremental::default(),
    )
    .clock(clock.clone());
    (clock, Backend::<u64>::open(config).unwrap())
}

#[test]
fn states_with_a_ttl_write_deltas_as_full_snapshots_would() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("chk"), 2);
    let (clock, mut b) = on_manual_clock();
    let ttl = TtlConfig::after(std::time::Duration::from_millis(100));
    let v = b
        .register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))
        .unwrap();
    let l = b
        .register(ListStateDescriptor::<u32>::new("l").with_ttl(ttl))
        .unwrap();
    for k in 0..20u64 {
        b.set_current_key(&k);
        b.value(&v).update(k).unwrap();
        b.list(&l).add(1).unwrap();
    }
    checkpoint(&mut b, &storage, 1);
    // At 1 060, keys 0..10 get a second list element and keys 10..20 a new value.
    clock.set(1_060);
    for k in 0..20u64 {
        b.set_current_key(&k);
        if k < 10 {
            b.list(&l).add(2).unwrap();
        } else {
            b.value(&v).update(k + 100).unwrap();
        }
    }
    // At 1 120 what was written at 1 000 has expired: a changed list keeps only its element of
    // 1 060; an unchanged expired value stays in the base's file and is hidden on restore.
    clock.set(1_120);
    let delta = checkpoint(&mut b, &storage, 2);
    assert_eq!(chain(&delta.handle).len(), 2);
    let done = storage.latest_completed().unwrap().unwrap();
    let restore_at = |now: u64| {
        let clock = Arc::new(ManualClock::new(now));
        let config = BackendConfig::heap().max_parallelism(MAXP).clock(clock);
        let mut r = Backend::<u64>::restore_from(
            config,
            &*storage,
            &done.handles_for(KeyGroupRange::all(MAXP).unwrap()),
        )
        .unwrap();
        let v = r
            .register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))
            .unwrap();
        let l = r
            .register(ListStateDescriptor::<u32>::new("l").with_ttl(ttl))
            .unwrap();
        (r, v, l)
    };
    let (mut r, rv, rl) = restore_at(1_120);
    for k in 0..20u64 {
        r.set_current_key(&k);
        if k < 10 {
            assert_eq!(
                r.list(&rl).get().unwrap(),
                vec![2],
                "key {k}: the live element"
            );
            assert_eq!(
                r.value(&rv).get().unwrap(),
                None,
                "key {k}: expired in the base"
            );
        } else {
            assert_eq!(r.list(&rl).get().unwrap(), Vec::<u32>::new(), "key {k}");
            assert_eq!(r.value(&rv).get().unwrap(), Some(k + 100), "key {k}");
        }
    }
    // What the chain holds counts the same as a full snapshot's live entries.
    let full = b.snapshot_state().unwrap().entry_count().unwrap();
    let (mut r, _, _) = restore_at(1_120);
    assert_eq!(r.snapshot_state().unwrap().entry_count().unwrap(), full);
}

/// Checkpoint 3 consolidates (a new base after one delta), and completing it with one
/// checkpoint retained deletes the old chain. The checkpoint storage's MemStorage fails from
/// its n-th operation on (n = 1, 1 + step, ...) through checkpoint 3's publication, completion
/// and collection, crashes as `mode` says, heals and reopens: the latest complete checkpoint
/// restores to the model of its moment and `shared/` holds exactly what it references.
fn consolidation_crash_sweep(mode: CrashMode, step: u64) {
    let keys = 300;
    let trial = |storage: &Arc<dyn CheckpointStorage>, arm: &mut dyn FnMut()| {
        let mut task = new_task(HeapIncremental {
            max_deltas: 1,
            max_delta_ratio: 10.0,
        });
        let mut m = Model::default();
        for k in 0..keys {
            touch(&mut task.backend, &task.handles, &mut m, k, 0);
        }
        checkpoint(&mut task.backend, storage, 1);
        for k in (0..keys).step_by(11) {
            touch(&mut task.backend, &task.handles, &mut m, k, 1);
        }
        let two = checkpoint(&mut task.backend, storage, 2);
        assert_eq!(chain(&two.handle).len(), 2);
        let second = m.clone();
        for k in (0..keys).step_by(7) {
            touch(&mut task.backend, &task.handles, &mut m, k, 2);
        }
        arm();
        let result = task
            .backend
            .snapshot(CheckpointId(3), storage, "op-0")
            .and_then(|p| p.run())
            .and_then(|done| {
                assert_eq!(chain(&done.handle).len(), 1, "checkpoint 3 is a new base");
                storage.complete_checkpoint(
                    CheckpointId(3),
                    vec![SubtaskState::new("op", 0, 1, MAXP).with_keyed(done.handle)],
                )
            });
        (second, m, result.is_ok())
    };
    let restore = |storage: &Arc<dyn CheckpointStorage>, latest: &CompletedCheckpoint, n: u64| {
        Backend::<u64>::restore_from(
            BackendConfig::heap().max_parallelism(MAXP),
            &**storage,
            &latest.handles_for(KeyGroupRange::all(MAXP).unwrap()),
        )
        .unwrap_or_else(|e| panic!("n = {n}: {e}"))
    };
    common::all_kinds::crash_sweep(mode, step, keys, 3, trial, restore);
}

#[test]
fn a_crash_at_every_step_of_a_consolidation_loses_nothing() {
    consolidation_crash_sweep(CrashMode::DropUnsynced, 1);
}

#[test]
fn torn_crashes_during_a_consolidation_lose_nothing() {
    for seed in [1, 2] {
        consolidation_crash_sweep(CrashMode::Torn { seed }, 3);
    }
}

#[test]
fn verify_checks_every_file_of_a_chain_and_a_damaged_delta_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("chk");
    let storage = fs_storage(&root, 1);
    let keys = 400;
    let mut task = new_task(HeapIncremental::default());
    let mut m = Model::default();
    for k in 0..keys {
        touch(&mut task.backend, &task.handles, &mut m, k, 0);
    }
    checkpoint(&mut task.backend, &storage, 1);
    touch(&mut task.backend, &task.handles, &mut m, 3, 1);
    let done = checkpoint(&mut task.backend, &storage, 2);
    let latest = storage.latest_completed().unwrap().unwrap();
    let report = flowstate::verify::verify_checkpoint(&*storage, &latest);
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert_eq!(report.files, 2, "the base and the delta");
    // A flipped byte in the delta: verify names it, a restore refuses it.
    let delta = root.join(&chain(&done.handle)[1]);
    let mut bytes = std::fs::read(&delta).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&delta, &bytes).unwrap();
    let report = flowstate::verify::verify_checkpoint(&*storage, &latest);
    assert!(
        report
            .damage
            .iter()
            .any(|d| d.file == chain(&done.handle)[1]),
        "{:?}",
        report.damage
    );
    let all = KeyGroupRange::all(MAXP).unwrap();
    let restored = Backend::<u64>::restore_from(
        BackendConfig::heap().max_parallelism(MAXP),
        &*storage,
        &latest.handles_for(all),
    );
    assert!(restored.is_err());
}

#[test]
fn bases_and_deltas_are_compressed_as_the_pending_snapshot_asks() {
    let dir = tempfile::tempdir().unwrap();
    let keys = 1_000;
    let mut sizes = Vec::new();
    for compression in [Compression::None, Compression::Lz4] {
        let storage = fs_storage(&dir.path().join(format!("{compression:?}")), 2);
        let mut task = new_task(HeapIncremental::default());
        let mut m = Model::default();
        for k in 0..keys {
            touch(&mut task.backend, &task.handles, &mut m, k, 0);
        }
        let mut bytes = 0;
        for id in 1..=2 {
            touch(&mut task.backend, &task.handles, &mut m, id, id);
            let done = write(&mut task.backend, &storage, id, compression);
            bytes += done.stats.new_shared_bytes;
            complete(&storage, id, done.handle);
            task.backend
                .notify_checkpoint_complete(CheckpointId(id))
                .unwrap();
        }
        sizes.push(bytes);
        check_restores(&storage, dir.path(), &m, keys);
    }
    assert!(
        sizes[1] < sizes[0],
        "LZ4 {} bytes, none {}",
        sizes[1],
        sizes[0]
    );
}

/// TTL cleanup that removes a whole entry changed since the base logs the removal, or a restore
/// would bring back the base's version: here a map user key removed after the base, still live
/// in the base's file (found in review).
#[test]
fn ttl_cleanup_of_an_entry_changed_since_the_base_is_a_removal() {
    let dir = tempfile::tempdir().unwrap();
    let storage = fs_storage(&dir.path().join("chk"), 2);
    let (clock, mut b) = on_manual_clock();
    let ttl = TtlConfig::after(std::time::Duration::from_millis(100)).incremental_cleanup(1_000);
    let m = b
        .register(MapStateDescriptor::<u32, u32>::new("m").with_ttl(ttl))
        .unwrap();
    b.set_current_key(&1);
    b.map(&m).put(1, 10).unwrap();
    clock.set(1_090);
    b.map(&m).put(2, 20).unwrap();
    checkpoint(&mut b, &storage, 1);
    clock.set(1_095);
    b.map(&m).remove(&2).unwrap();
    // At 1 101 user key 1 has expired: an access to another key's state cleans the entry up.
    clock.set(1_101);
    b.set_current_key(&2);
    assert_eq!(b.map(&m).get(&1).unwrap(), None);
    checkpoint(&mut b, &storage, 2);
    b.set_current_key(&1);
    assert_eq!(b.map(&m).get(&2).unwrap(), None, "the live backend");
    let done = storage.latest_completed().unwrap().unwrap();
    let config = BackendConfig::heap()
        .max_parallelism(MAXP)
        .clock(Arc::new(ManualClock::new(1_101)));
    let mut r = Backend::<u64>::restore_from(
        config,
        &*storage,
        &done.handles_for(KeyGroupRange::all(MAXP).unwrap()),
    )
    .unwrap();
    let rm = r
        .register(MapStateDescriptor::<u32, u32>::new("m").with_ttl(ttl))
        .unwrap();
    r.set_current_key(&1);
    assert_eq!(r.map(&rm).get(&2).unwrap(), None, "not brought back");
}
