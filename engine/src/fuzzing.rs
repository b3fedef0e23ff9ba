//! Properties checked by the fuzz targets under `fuzz/`, kept in the crate so that the targets
//! and the ordinary tests that replay their corpora run the very same code.
//!
//! Each function panics when the property fails: that is how a fuzzer learns of a bug. Nothing
//! in the engine calls them.

use crate::codec::Codec;

/// Decodes `data` with `T`; if that succeeds, the value must re-encode to the bytes consumed,
/// and decoding those bytes alone must give the same encoding again.
fn round_trip<T: Codec>(data: &[u8]) {
    let mut input = data;
    if let Ok(value) = T::decode_from(&mut input) {
        let consumed = &data[..data.len() - input.len()];
        let mut again = Vec::new();
        value.encode(&mut again);
        assert_eq!(
            again,
            consumed,
            "{} re-encodes differently from the bytes it decoded",
            T::codec_name()
        );
        // `decode` of exactly the consumed bytes succeeds; with the rest appended it must
        // report the trailing bytes, not succeed.
        assert!(T::decode(consumed).is_ok());
        if !input.is_empty() {
            assert!(T::decode(data).is_err());
        }
    }
}

/// The property of the `codec_decode` fuzz target: every built-in codec, on arbitrary bytes,
/// returns a value or an error (no panic, no unbounded allocation), and a value re-encodes to
/// exactly the bytes it was decoded from. The first byte picks the type.
pub fn check_codec_decode(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 16 {
        0 => round_trip::<u64>(rest),
        1 => round_trip::<i32>(rest),
        2 => round_trip::<bool>(rest),
        3 => round_trip::<char>(rest),
        4 => round_trip::<String>(rest),
        5 => round_trip::<Vec<u8>>(rest),
        6 => round_trip::<Vec<String>>(rest),
        7 => round_trip::<Option<u16>>(rest),
        8 => round_trip::<(u8, String, i64)>(rest),
        9 => round_trip::<Vec<Vec<()>>>(rest),
        10 => round_trip::<Vec<Option<Vec<u32>>>>(rest),
        11 => round_trip::<f64>(rest),
        12 => round_trip::<crate::TimeWindow>(rest),
        13 => round_trip::<(bool, char, f32)>(rest),
        14 => round_trip::<Vec<(String, Vec<u8>)>>(rest),
        _ => round_trip::<u128>(rest),
    }
}

/// The model of [`check_state_ops`]: per key, the expected state of each of its four states.
#[derive(Clone, Default, PartialEq, Debug)]
struct Model {
    value: std::collections::BTreeMap<u64, u32>,
    list: std::collections::BTreeMap<(u64, u8), Vec<u8>>,
    map: std::collections::BTreeMap<u64, std::collections::BTreeMap<u8, u16>>,
    sum: std::collections::BTreeMap<u64, i64>,
}

/// The property of the `state_ops` fuzz target: a random sequence of state operations,
/// snapshots, restores and rescales, driven by `data`, leaves every backend equal to a simple
/// model, and every restore (at a parallelism the input picks) recreates exactly the model's state
/// at the moment of the snapshot, each key in exactly one task.
///
/// Each operation takes four bytes: opcode, key, namespace or user key, value. Opcodes below
/// `0xF0` (modulo 13): value update and clear, list add, update and namespace merge, map put
/// and remove, reducing add and clear, snapshot of every task, restore of the held snapshot
/// into heap backends (10) or into LSM backends on in-memory storage that flush and compact on
/// every write (11), map clear (12, a range tombstone on the LSM backend). Opcodes `0xF0` to
/// `0xF7`: a checkpoint of every task into a checkpoint storage kept across the run (retention
/// 1; incremental on LSM tasks, canonical on heap tasks), completed and notified, or aborted
/// when the value byte is a multiple of 4; `0xF8` to `0xFF`: a restore from the latest
/// completed checkpoint at a parallelism of 1 to 4, into LSM backends (heap when the value's
/// bit 2 is set), through `Backend::restore_from`, checked against the model of that
/// checkpoint. At the end, `shared/` holds exactly what the retained checkpoint references.
pub fn check_state_ops(data: &[u8]) {
    use crate::{
        Backend, BackendConfig, KeyGroupRange, KeyedStateBackend, ListStateDescriptor,
        MapStateDescriptor, ReducingStateDescriptor, StateSnapshot, ValueStateDescriptor,
    };
    const MAXP: u32 = 16;
    const KEYS: u64 = 12;

    struct Handles {
        value: crate::ValueState<u32>,
        list: crate::ListState<u8, u8>,
        map: crate::MapState<u8, u16>,
        sum: crate::ReducingState<i64>,
    }
    fn register(b: &mut Backend<u64>) -> Handles {
        Handles {
            value: b
                .register(ValueStateDescriptor::<u32>::new("value"))
                .expect("registering a fresh or matching state succeeds"),
            list: b
                .register(ListStateDescriptor::<u8>::new("list").with_namespace::<u8>())
                .expect("registering a fresh or matching state succeeds"),
            map: b
                .register(MapStateDescriptor::<u8, u16>::new("map"))
                .expect("registering a fresh or matching state succeeds"),
            sum: b
                .register(ReducingStateDescriptor::<i64>::new("sum", |a, b| {
                    a.wrapping_add(*b)
                }))
                .expect("registering a fresh or matching state succeeds"),
        }
    }
    /// Checks that the backends (which together own every key group) hold exactly `model`.
    fn check(tasks: &mut [(Backend<u64>, Handles)], model: &Model) {
        for k in 0..KEYS {
            let mut owners = 0;
            for (b, h) in tasks.iter_mut() {
                b.set_current_key(&k);
                let kg = b.current_key_group().expect("a key was just set");
                if !b.key_group_range().contains(kg) {
                    continue;
                }
                owners += 1;
                assert_eq!(
                    b.value(&h.value).get().ok(),
                    Some(model.value.get(&k).copied())
                );
                for ns in 0..4u8 {
                    let want = model.list.get(&(k, ns)).cloned().unwrap_or_default();
                    assert_eq!(b.list(&h.list).namespace(&ns).get().ok(), Some(want));
                }
                let mut entries = b.map(&h.map).entries().expect("owned key");
                entries.sort_unstable();
                let want: Vec<(u8, u16)> = model
                    .map
                    .get(&k)
                    .map(|m| m.iter().map(|(a, b)| (*a, *b)).collect())
                    .unwrap_or_default();
                assert_eq!(entries, want);
                assert_eq!(
                    b.reducing(&h.sum).get().ok(),
                    Some(model.sum.get(&k).copied())
                );
            }
            assert_eq!(owners, 1, "key {k} is owned by exactly one task");
        }
    }

    let mut live = Backend::<u64>::open(BackendConfig::heap().max_parallelism(MAXP))
        .expect("a valid configuration");
    let handles = register(&mut live);
    let mut tasks = vec![(live, handles)];
    let mut model = Model::default();
    // The latest snapshot round: one view per task (together every key group) and the model
    // at that moment.
    let mut held: Option<(Vec<StateSnapshot>, Model)> = None;
    // Checkpoints kept across the run: the storage, the last id, and the model of the latest
    // completed checkpoint.
    let checkpoints: std::sync::Arc<dyn crate::CheckpointStorage> =
        std::sync::Arc::new(crate::MemoryCheckpointStorage::new());
    let mut last_id = 0u64;
    let mut completed: Option<Model> = None;

    for op in data.chunks_exact(4) {
        if op[0] >= 0xF0 {
            let v = op[3];
            if op[0] < 0xF8 {
                last_id += 1;
                checkpoint_round(&mut tasks, &checkpoints, last_id, v % 4 != 0);
                if v % 4 != 0 {
                    completed = Some(model.clone());
                }
            } else if let Some(expected) = completed.clone() {
                let latest = checkpoints
                    .latest_completed()
                    .expect("the latest checkpoint reads")
                    .expect("a checkpoint completed");
                tasks = restore_checkpoint(&checkpoints, &latest, u32::from(v % 4) + 1, v & 4 == 0);
                check(&mut tasks, &expected);
                model = expected;
            }
            continue;
        }
        let (code, k, x, v) = (op[0] % 13, u64::from(op[1]) % KEYS, op[2], op[3]);
        let ns = x % 4;
        let (b, h) = {
            let owner = tasks
                .iter()
                .position(|(b, _)| {
                    let kg = crate::key_group_for(&crate::codec::to_bytes(&k), MAXP);
                    b.key_group_range().contains(kg)
                })
                .expect("the tasks cover every key group");
            let (b, h) = &mut tasks[owner];
            (b, h)
        };
        b.set_current_key(&k);
        match code {
            0 => {
                b.value(&h.value).update(u32::from(v)).expect("owned key");
                model.value.insert(k, u32::from(v));
            }
            1 => {
                b.value(&h.value).clear().expect("owned key");
                model.value.remove(&k);
            }
            2 => {
                b.list(&h.list).namespace(&ns).add(v).expect("owned key");
                model.list.entry((k, ns)).or_default().push(v);
            }
            3 => {
                let elements: Vec<u8> = (0..v % 3).map(|i| v.wrapping_add(i)).collect();
                b.list(&h.list)
                    .namespace(&ns)
                    .update(elements.clone())
                    .expect("owned key");
                if elements.is_empty() {
                    model.list.remove(&(k, ns));
                } else {
                    model.list.insert((k, ns), elements);
                }
            }
            4 => {
                let sources = [(ns + 1) % 4, (ns + 2) % 4];
                b.list(&h.list)
                    .merge_namespaces(&ns, &sources)
                    .expect("owned key");
                let mut merged = model.list.remove(&(k, ns)).unwrap_or_default();
                for s in sources {
                    if s != ns {
                        merged.extend(model.list.remove(&(k, s)).unwrap_or_default());
                    }
                }
                if !merged.is_empty() {
                    model.list.insert((k, ns), merged);
                }
            }
            5 => {
                b.map(&h.map).put(x, u16::from(v) * 3).expect("owned key");
                model.map.entry(k).or_default().insert(x, u16::from(v) * 3);
            }
            6 => {
                b.map(&h.map).remove(&x).expect("owned key");
                if let Some(m) = model.map.get_mut(&k) {
                    m.remove(&x);
                    if m.is_empty() {
                        model.map.remove(&k);
                    }
                }
            }
            7 => {
                b.reducing(&h.sum)
                    .add(i64::from(v) - 100)
                    .expect("owned key");
                let s = model.sum.entry(k).or_insert(0);
                *s = s.wrapping_add(i64::from(v) - 100);
            }
            8 => {
                b.reducing(&h.sum).clear().expect("owned key");
                model.sum.remove(&k);
            }
            9 => {
                let views = tasks
                    .iter_mut()
                    .map(|(b, _)| {
                        b.snapshot_state()
                            .expect("snapshots of backends in memory succeed")
                    })
                    .collect();
                held = Some((views, model.clone()));
            }
            10 | 11 => {
                // Restore the held round at a parallelism of 1..=4 and continue from it, on
                // heap backends (10) or on LSM backends (11) that flush every write.
                let Some((views, expected)) = held.take() else {
                    continue;
                };
                tasks = restore_round(&views, u32::from(v % 4) + 1, code == 11);
                check(&mut tasks, &expected);
                model = expected;
            }
            12 => {
                b.map(&h.map).clear().expect("owned key");
                model.map.remove(&k);
            }
            _ => {}
        }
    }
    check(&mut tasks, &model);
    // A held snapshot still shows its moment, whatever happened since.
    if let Some((views, expected)) = held {
        check(&mut restore_round(&views, 1, false), &expected);
    }
    // The shared-file registry keeps exactly what the retained checkpoint references.
    let refs = checkpoints
        .shared_file_references()
        .expect("the registry reads");
    assert!(
        refs.values().all(|&n| n > 0),
        "unreferenced shared files remain: {refs:?}"
    );
    drop(tasks);
    if let Some(expected) = completed {
        let latest = checkpoints
            .latest_completed()
            .expect("the latest checkpoint reads")
            .expect("a checkpoint completed");
        check(
            &mut restore_checkpoint(&checkpoints, &latest, 2, true),
            &expected,
        );
    }

    /// The configuration of a restored LSM task: tiny memtables and levels, flushed and
    /// compacted inline, so that every write reaches a table and compactions run all the time.
    fn lsm_config() -> BackendConfig {
        let tree = crate::lsm::TreeOptions {
            memtable_bytes: 48 << 10,
            l0_compaction_trigger: 2,
            target_table_bytes: 1 << 10,
            level1_max_bytes: 2 << 10,
            block_size: 128,
            ..crate::lsm::TreeOptions::default()
        };
        BackendConfig::lsm_on(std::sync::Arc::new(crate::MemStorage::new()), "lsm")
            .lsm_tree_options(tree)
            .lsm_background(crate::lsm::LsmBackground::Inline)
    }

    /// Checkpoints every task as checkpoint `id` (incremental on LSM tasks), then completes it
    /// and tells the tasks, or aborts it and tells them that.
    fn checkpoint_round(
        tasks: &mut [(Backend<u64>, Handles)],
        storage: &std::sync::Arc<dyn crate::CheckpointStorage>,
        id: u64,
        complete: bool,
    ) {
        let p = tasks.len() as u32;
        let mut states = Vec::new();
        for (i, (b, _)) in tasks.iter_mut().enumerate() {
            let written = b
                .snapshot(crate::CheckpointId(id), storage, &format!("task-{i}"))
                .and_then(|pending| pending.run())
                .expect("a checkpoint in memory succeeds");
            states
                .push(crate::SubtaskState::new("op", i as u32, p, MAXP).with_keyed(written.handle));
        }
        if complete {
            storage
                .complete_checkpoint(crate::CheckpointId(id), states)
                .expect("the checkpoint completes");
        } else {
            storage
                .abort_checkpoint(crate::CheckpointId(id))
                .expect("the checkpoint aborts");
        }
        for (b, _) in tasks.iter_mut() {
            let told = if complete {
                b.notify_checkpoint_complete(crate::CheckpointId(id))
            } else {
                b.notify_checkpoint_aborted(crate::CheckpointId(id))
            };
            told.expect("the notification is taken");
        }
    }

    /// Restores `p` tasks from checkpoint `done`, into LSM backends (`lsm`) or heap backends.
    fn restore_checkpoint(
        storage: &std::sync::Arc<dyn crate::CheckpointStorage>,
        done: &crate::CompletedCheckpoint,
        p: u32,
        lsm: bool,
    ) -> Vec<(Backend<u64>, Handles)> {
        restore_tasks(p, lsm, |config, range| {
            Backend::<u64>::restore_from(config, &**storage, &done.handles_for(range))
                .expect("a checkpoint restores at any parallelism")
        })
    }

    /// `p` tasks, each restored by `restore` into an LSM backend (`lsm`) or a heap backend of
    /// its key-group range, with their states registered.
    fn restore_tasks(
        p: u32,
        lsm: bool,
        restore: impl Fn(BackendConfig, KeyGroupRange) -> Backend<u64>,
    ) -> Vec<(Backend<u64>, Handles)> {
        (0..p)
            .map(|i| {
                let range = KeyGroupRange::for_operator(MAXP, p, i)
                    .expect("1..=4 tasks of 16 key groups is a valid split");
                let config = if lsm {
                    lsm_config()
                } else {
                    BackendConfig::heap()
                };
                let mut backend =
                    restore(config.max_parallelism(MAXP).key_group_range(range), range);
                let handles = register(&mut backend);
                (backend, handles)
            })
            .collect()
    }

    /// Writes the views as canonical snapshot files (in memory checkpoint storage) and
    /// restores `p` tasks from the files, so that the file format is on the fuzzed path.
    fn restore_round(views: &[StateSnapshot], p: u32, lsm: bool) -> Vec<(Backend<u64>, Handles)> {
        use std::sync::Arc;
        let storage: Arc<dyn crate::CheckpointStorage> =
            Arc::new(crate::MemoryCheckpointStorage::new());
        let target = crate::SnapshotTarget::checkpoint(crate::CheckpointId(1));
        let files: Vec<crate::FileRestoreSource> = views
            .iter()
            .enumerate()
            .map(|(i, view)| {
                let pending = crate::PendingSnapshot::new(
                    view.clone(),
                    target.clone(),
                    storage.clone(),
                    format!("task-{i}"),
                );
                let written = pending
                    .run()
                    .expect("writing a snapshot file in memory succeeds");
                let file = &written.handle.files()[0];
                crate::FileRestoreSource::open(&*storage, file).expect("a file just written opens")
            })
            .collect();
        let sources: Vec<&dyn crate::RestoreSource> = files
            .iter()
            .map(|s| s as &dyn crate::RestoreSource)
            .collect();
        restore_tasks(p, lsm, |config, _| {
            Backend::<u64>::restore(config, &sources)
                .expect("a snapshot round restores at any parallelism")
        })
    }
}
