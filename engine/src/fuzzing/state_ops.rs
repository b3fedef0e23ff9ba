//! The `state_ops` property: random state operations on every state type and namespace,
//! snapshots, checkpoints and restores at any parallelism, against a simple model.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{
    AggregateFunction, AggregatingStateDescriptor, Backend, BackendConfig, CheckpointStorage,
    Compression, KeyGroupRange, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, StateSnapshot, ValueStateDescriptor,
};

/// The key groups of the job.
pub(super) const MAXP: u32 = 16;
/// The keys the operations touch: `0..KEYS`.
pub(super) const KEYS: u64 = 8;
/// The namespaces of every state: `0..NAMESPACES`.
pub(super) const NAMESPACES: u8 = 4;
/// The user keys of the map state: `0..MAP_KEYS`.
const MAP_KEYS: u8 = 8;

/// The aggregate function of the fuzzed aggregating state: count, wrapping sum, and the last
/// input (so that the order of a merge shows).
pub(super) struct Stats;

/// The accumulator (and result) of [`Stats`]: count, wrapping sum, last input.
pub(super) type StatsAcc = (u32, i64, u8);

impl AggregateFunction for Stats {
    type In = u8;
    type Acc = StatsAcc;
    type Out = StatsAcc;
    fn create_accumulator(&self) -> StatsAcc {
        (0, 0, 0)
    }
    fn add(&self, acc: &mut StatsAcc, value: u8) {
        stats_add(acc, value);
    }
    fn get_result(&self, acc: &StatsAcc) -> StatsAcc {
        *acc
    }
    fn merge(&self, acc: &mut StatsAcc, other: StatsAcc) {
        stats_merge(acc, other);
    }
}

fn stats_add(acc: &mut StatsAcc, value: u8) {
    acc.0 = acc.0.wrapping_add(1);
    acc.1 = acc.1.wrapping_add(i64::from(value));
    acc.2 = value;
}

fn stats_merge(acc: &mut StatsAcc, other: StatsAcc) {
    acc.0 = acc.0.wrapping_add(other.0);
    acc.1 = acc.1.wrapping_add(other.1);
    acc.2 = other.2;
}

/// The reduce function of the fuzzed reducing state; not commutative, so that the order of its
/// arguments shows.
fn reduce(a: &i64, b: &i64) -> i64 {
    a.wrapping_mul(3).wrapping_add(*b)
}

/// A (key, namespace) cell of the model.
type Cell = (u64, u8);

/// The model: per key and namespace, the expected state of each of the five states.
#[derive(Clone, Default, PartialEq, Debug)]
pub(super) struct Model {
    pub(super) value: BTreeMap<Cell, u32>,
    pub(super) list: BTreeMap<Cell, Vec<u8>>,
    pub(super) map: BTreeMap<Cell, BTreeMap<u8, u16>>,
    pub(super) reducing: BTreeMap<Cell, i64>,
    pub(super) aggregating: BTreeMap<Cell, StatsAcc>,
}

/// `merge_namespaces` as spec/state-semantics.md R37–R39 state it, on one state of the model.
fn merge_model<T>(
    cells: &mut BTreeMap<Cell, T>,
    key: u64,
    target: u8,
    sources: &[u8],
    merge: impl Fn(&mut T, T),
) {
    for &s in sources {
        if s == target {
            continue;
        }
        let Some(source) = cells.remove(&(key, s)) else {
            continue;
        };
        match cells.get_mut(&(key, target)) {
            Some(t) => merge(t, source),
            None => {
                cells.insert((key, target), source);
            }
        }
    }
}

/// The handles of the five states, all namespaced by `u8`.
pub(super) struct Handles {
    value: crate::ValueState<u32, u8>,
    list: crate::ListState<u8, u8>,
    map: crate::MapState<u8, u16, u8>,
    reducing: crate::ReducingState<i64, u8>,
    aggregating: crate::AggregatingState<Stats, u8>,
}

/// Registers the five states of the property on `b`.
pub(super) fn register(b: &mut Backend<u64>) -> Handles {
    const WHY: &str = "registering a fresh or matching state succeeds";
    Handles {
        value: b
            .register(ValueStateDescriptor::<u32>::new("value").with_namespace::<u8>())
            .expect(WHY),
        list: b
            .register(ListStateDescriptor::<u8>::new("list").with_namespace::<u8>())
            .expect(WHY),
        map: b
            .register(MapStateDescriptor::<u8, u16>::new("map").with_namespace::<u8>())
            .expect(WHY),
        reducing: b
            .register(
                ReducingStateDescriptor::<i64>::new("reducing", reduce).with_namespace::<u8>(),
            )
            .expect(WHY),
        aggregating: b
            .register(AggregatingStateDescriptor::new("aggregating", Stats).with_namespace::<u8>())
            .expect(WHY),
    }
}

/// One task: a backend and the handles of its states.
pub(super) type Task = (Backend<u64>, Handles);

/// Checks that the current key `k` of `b` holds exactly what `model` says, in every state and
/// namespace.
pub(super) fn check_key(b: &mut Backend<u64>, h: &Handles, k: u64, model: &Model) {
    const OWNED: &str = "the task owns the key";
    for ns in 0..NAMESPACES {
        let cell = (k, ns);
        assert_eq!(
            b.value(&h.value).namespace(&ns).get().expect(OWNED),
            model.value.get(&cell).copied(),
            "value state of key {k}, namespace {ns}"
        );
        assert_eq!(
            b.list(&h.list).namespace(&ns).get().expect(OWNED),
            model.list.get(&cell).cloned().unwrap_or_default(),
            "list state of key {k}, namespace {ns}"
        );
        let mut entries = b.map(&h.map).namespace(&ns).entries().expect(OWNED);
        entries.sort_unstable();
        let want: Vec<(u8, u16)> = model
            .map
            .get(&cell)
            .map(|m| m.iter().map(|(a, b)| (*a, *b)).collect())
            .unwrap_or_default();
        assert_eq!(entries, want, "map state of key {k}, namespace {ns}");
        assert_eq!(
            b.reducing(&h.reducing).namespace(&ns).get().expect(OWNED),
            model.reducing.get(&cell).copied(),
            "reducing state of key {k}, namespace {ns}"
        );
        assert_eq!(
            b.aggregating(&h.aggregating)
                .namespace(&ns)
                .get()
                .expect(OWNED),
            model.aggregating.get(&cell).copied(),
            "aggregating state of key {k}, namespace {ns}"
        );
    }
}

/// Checks that the tasks (which together own every key group) hold exactly `model`, each key
/// owned by exactly one task.
pub(super) fn check(tasks: &mut [Task], model: &Model) {
    for k in 0..KEYS {
        let mut owners = 0;
        for (b, h) in tasks.iter_mut() {
            b.set_current_key(&k);
            let kg = b.current_key_group().expect("a key was just set");
            if !b.key_group_range().contains(kg) {
                continue;
            }
            owners += 1;
            check_key(b, h, k, model);
        }
        assert_eq!(owners, 1, "key {k} is owned by exactly one task");
    }
}

/// The task of `tasks` that owns key `k`.
pub(super) fn owner(tasks: &mut [Task], k: u64) -> &mut Task {
    let kg = crate::key_group_for(&crate::codec::to_bytes(&k), MAXP);
    tasks
        .iter_mut()
        .find(|(b, _)| b.key_group_range().contains(kg))
        .expect("the tasks cover every key group")
}

/// Applies state operation `code` (an opcode of [`check_state_ops`] that changes state) with bytes `x` and `v` to the current
/// key `k` of `b` and to `model`. Returns whether `code` is a state operation.
pub(super) fn apply(
    b: &mut Backend<u64>,
    h: &Handles,
    model: &mut Model,
    code: u8,
    k: u64,
    x: u8,
    v: u8,
) -> crate::Result<bool> {
    let ns = x % NAMESPACES;
    let cell = (k, ns);
    let sources = [(ns + 1) % NAMESPACES, (ns + 2) % NAMESPACES, ns];
    match code {
        0 => {
            b.value(&h.value).namespace(&ns).update(u32::from(v))?;
            model.value.insert(cell, u32::from(v));
        }
        1 => {
            b.value(&h.value).namespace(&ns).clear()?;
            model.value.remove(&cell);
        }
        2 => {
            b.list(&h.list).namespace(&ns).add(v)?;
            model.list.entry(cell).or_default().push(v);
        }
        3 => {
            let elements: Vec<u8> = (0..v % 3).map(|i| v.wrapping_add(i)).collect();
            b.list(&h.list).namespace(&ns).update(elements.clone())?;
            if elements.is_empty() {
                model.list.remove(&cell);
            } else {
                model.list.insert(cell, elements);
            }
        }
        4 => {
            let sources = &sources[..1 + usize::from(v % 3)];
            b.list(&h.list).merge_namespaces(&ns, sources)?;
            merge_model(&mut model.list, k, ns, sources, |t, s| t.extend(s));
        }
        5 | 6 => {
            let uk = (x / NAMESPACES) % MAP_KEYS;
            if code == 5 {
                b.map(&h.map).namespace(&ns).put(uk, u16::from(v) * 3)?;
                model
                    .map
                    .entry(cell)
                    .or_default()
                    .insert(uk, u16::from(v) * 3);
            } else {
                b.map(&h.map).namespace(&ns).remove(&uk)?;
                if let Some(m) = model.map.get_mut(&cell) {
                    m.remove(&uk);
                    if m.is_empty() {
                        model.map.remove(&cell);
                    }
                }
            }
        }
        7 => {
            let input = i64::from(v) - 100;
            b.reducing(&h.reducing).namespace(&ns).add(input)?;
            model
                .reducing
                .entry(cell)
                .and_modify(|s| *s = reduce(s, &input))
                .or_insert(input);
        }
        8 => {
            b.reducing(&h.reducing).namespace(&ns).clear()?;
            model.reducing.remove(&cell);
        }
        12 => {
            b.map(&h.map).namespace(&ns).clear()?;
            model.map.remove(&cell);
        }
        13 => {
            let sources = &sources[..1 + usize::from(v % 3)];
            b.reducing(&h.reducing).merge_namespaces(&ns, sources)?;
            merge_model(&mut model.reducing, k, ns, sources, |t, s| {
                *t = reduce(t, &s)
            });
        }
        14 => {
            b.aggregating(&h.aggregating).namespace(&ns).add(v)?;
            stats_add(model.aggregating.entry(cell).or_insert((0, 0, 0)), v);
        }
        15 => {
            b.aggregating(&h.aggregating).namespace(&ns).clear()?;
            model.aggregating.remove(&cell);
        }
        16 => {
            let sources = &sources[..1 + usize::from(v % 3)];
            b.aggregating(&h.aggregating)
                .merge_namespaces(&ns, sources)?;
            merge_model(&mut model.aggregating, k, ns, sources, stats_merge);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The number of opcodes below `0xF0`: an opcode byte is taken modulo this.
pub(super) const OPCODES: u8 = 18;

/// How one input runs, from its first byte.
#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    /// The compression of canonical snapshot blocks.
    compression: Compression,
    /// Whether restores may go into LSM backends: on an eighth of the inputs, chosen by a hash
    /// of the whole input ([`lsm_input`]). LSM restores cost several times what heap restores
    /// do, and cover more code, so a fuzzer's corpus fills with them; with the choice hashed,
    /// a mutation of an LSM input is an LSM input only an eighth of the time too.
    lsm: bool,
    /// Whether restored LSM backends flush (and so compact) on every write; otherwise their
    /// writes stay in the memtable, over the tables the restore ingested.
    flush_every_write: bool,
    /// Whether heap tasks take incremental checkpoints (chains of at most two deltas).
    heap_incremental: bool,
}

/// Whether the run of input `data` may restore into LSM backends: its 64-bit FNV-1a hash is a
/// multiple of 8. (A seed is made an LSM seed, or not, by appending a byte past its last
/// whole operation.)
pub fn lsm_input(data: &[u8]) -> bool {
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % 8 == 0
}

impl Run {
    /// The LSM mode of a restore that asks for LSM backends when `wanted` (see
    /// [`restore_tasks`]).
    fn lsm_if(self, wanted: bool) -> Option<Run> {
        (self.lsm && wanted).then_some(self)
    }

    fn new(b: u8, data: &[u8]) -> Run {
        Run {
            compression: match b & 3 {
                1 => Compression::Lz4,
                2 => Compression::Zstd { level: 1 },
                _ => Compression::None,
            },
            lsm: lsm_input(data),
            flush_every_write: b & 0x10 == 0x10,
            heap_incremental: b & 0x20 == 0x20,
        }
    }

    /// The configuration of a heap task of this run.
    fn heap_config(self) -> BackendConfig {
        let config = BackendConfig::heap().max_parallelism(MAXP);
        if self.heap_incremental {
            config.heap_incremental_checkpoints(crate::heap::HeapIncremental {
                max_deltas: 2,
                max_delta_ratio: 1.0,
            })
        } else {
            config
        }
    }
}

/// The property of the `state_ops` fuzz target: a random sequence of state operations,
/// snapshots, checkpoints, restores and rescales, driven by `data`, leaves every backend equal
/// to a simple model, and every restore (at a parallelism the input picks) recreates exactly
/// the model's state at the moment of the snapshot, each key in exactly one task.
///
/// The first byte configures the run: bits 0–1 the compression of snapshot blocks and LSM
/// table blocks (none, LZ4, zstd, none); bit 4 makes restored LSM backends flush and compact
/// on every write; bit 5 gives heap tasks incremental checkpoints (chains of at most two
/// deltas, so that checkpoints write bases, deltas and consolidations). Restores go into LSM backends only on inputs whose [`lsm_input`] hash says
/// so (an eighth of them); on the others every restore is into heap backends. Then each operation takes four bytes: opcode, key, namespace or user key, value.
/// The namespace is the third byte modulo 4 and the map's user key its upper bits modulo 8.
/// Opcodes below `0xF0`, modulo 18: value update (0) and clear (1); list add (2), update (3)
/// and namespace merge (4); map put (5), remove (6) and clear (12, a range tombstone on the
/// LSM backend); reducing add (7), clear (8) and namespace merge (13); aggregating add (14),
/// clear (15) and namespace merge (16); a check of the current key (17); a snapshot of every
/// task held (9); a restore of the held snapshot through canonical snapshot files into heap
/// backends (10) or into LSM backends on in-memory storage with tiny tables and inline
/// compactions (11, heap unless the run allows LSM). Opcodes `0xF0` to `0xF7`: a
/// checkpoint of every task into a checkpoint storage kept across the run (retention 1;
/// incremental on LSM tasks, canonical on heap tasks), completed and notified, or aborted when
/// the value byte is a multiple of 4; `0xF8` to `0xFF`: a restore from the latest completed
/// checkpoint at a parallelism of 1 to 4, into LSM backends (when the run allows them and the
/// value's bit 2 is clear) or heap backends, through `Backend::restore_from`, checked against
/// the model of that checkpoint. At the end, every task equals the model, a held snapshot still
/// restores to its moment, `shared/` holds exactly what the retained checkpoint references, and
/// the latest completed checkpoint, the tasks gone, restores into two heap tasks.
pub fn check_state_ops(data: &[u8]) {
    let Some((&config, ops)) = data.split_first() else {
        return;
    };
    let run = Run::new(config, data);
    let mut live = Backend::<u64>::open(run.heap_config()).expect("a valid configuration");
    let handles = register(&mut live);
    let mut tasks = vec![(live, handles)];
    let mut model = Model::default();
    // The latest snapshot round: one view per task (together every key group) and the model
    // at that moment.
    let mut held: Option<(Vec<StateSnapshot>, Model)> = None;
    // Checkpoints kept across the run: the storage, the last id, and the model of the latest
    // completed checkpoint.
    let checkpoints: Arc<dyn CheckpointStorage> = Arc::new(crate::MemoryCheckpointStorage::new());
    let mut last_id = 0u64;
    let mut completed: Option<Model> = None;

    for op in ops.chunks_exact(4) {
        if op[0] >= 0xF0 {
            let v = op[3];
            if op[0] < 0xF8 {
                last_id += 1;
                let complete = v % 4 != 0;
                checkpoint_round(&mut tasks, &checkpoints, last_id, complete, run);
                if complete {
                    completed = Some(model.clone());
                }
            } else if let Some(expected) = completed.clone() {
                let latest = checkpoints
                    .latest_completed()
                    .expect("the latest checkpoint reads")
                    .expect("a checkpoint completed");
                let lsm = run.lsm_if(v & 4 == 0);
                let p = u32::from(v % 4) + 1;
                tasks = restore_checkpoint(&checkpoints, &latest, p, lsm, run.heap_config());
                check(&mut tasks, &expected);
                model = expected;
            }
            continue;
        }
        let (code, k, x, v) = (op[0] % OPCODES, u64::from(op[1]) % KEYS, op[2], op[3]);
        match code {
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
                let lsm = run.lsm_if(code == 11);
                let p = u32::from(v % 4) + 1;
                tasks = restore_round(&views, p, lsm, run.compression, run.heap_config());
                check(&mut tasks, &expected);
                model = expected;
            }
            17 => {
                let (b, h) = owner(&mut tasks, k);
                b.set_current_key(&k);
                check_key(b, h, k, &model);
            }
            _ => {
                let (b, h) = owner(&mut tasks, k);
                b.set_current_key(&k);
                let applied = apply(b, h, &mut model, code, k, x, v)
                    .expect("an operation on an owned key succeeds");
                debug_assert!(applied, "opcode {code} is a state operation");
            }
        }
    }
    check(&mut tasks, &model);
    // A held snapshot still shows its moment, whatever happened since.
    if let Some((views, expected)) = held {
        check(
            &mut restore_round(&views, 1, None, run.compression, run.heap_config()),
            &expected,
        );
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
            &mut restore_checkpoint(&checkpoints, &latest, 2, None, BackendConfig::heap()),
            &expected,
        );
    }
}

/// The configuration of a restored LSM task: a small tree (tiny tables and levels, compacted
/// inline, blocks compressed with `compression`); with `flush_every_write`, a memtable budget below what its first write reserves, so
/// that every write reaches a table and compactions run all the time.
pub(super) fn lsm_config(flush_every_write: bool, compression: Compression) -> BackendConfig {
    let tree = crate::lsm::TreeOptions {
        memtable_bytes: if flush_every_write { 48 << 10 } else { 4 << 20 },
        l0_compaction_trigger: 2,
        target_table_bytes: 1 << 10,
        level1_max_bytes: 2 << 10,
        block_size: 128,
        compression,
        ..crate::lsm::TreeOptions::default()
    };
    BackendConfig::lsm_on(Arc::new(crate::MemStorage::new()), "lsm")
        .lsm_tree_options(tree)
        .lsm_background(crate::lsm::LsmBackground::Inline)
}

/// Checkpoints every task as checkpoint `id` (incremental on LSM tasks, canonical files
/// compressed as `run` says on heap tasks), then completes it and tells the tasks, or aborts
/// it and tells them that.
fn checkpoint_round(
    tasks: &mut [Task],
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
    complete: bool,
    run: Run,
) {
    let p = tasks.len() as u32;
    let mut states = Vec::new();
    for (i, (b, _)) in tasks.iter_mut().enumerate() {
        let written = b
            .snapshot(crate::CheckpointId(id), storage, &format!("task-{i}"))
            .and_then(|pending| pending.with_compression(run.compression).run())
            .expect("a checkpoint in memory succeeds");
        states.push(crate::SubtaskState::new("op", i as u32, p, MAXP).with_keyed(written.handle));
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

/// Restores `p` tasks from checkpoint `done`, into LSM backends (`lsm`, see
/// [`restore_tasks`]) or heap backends.
fn restore_checkpoint(
    storage: &Arc<dyn CheckpointStorage>,
    done: &crate::CompletedCheckpoint,
    p: u32,
    lsm: Option<Run>,
    heap: BackendConfig,
) -> Vec<Task> {
    restore_tasks(p, lsm, heap, |config, range| {
        Backend::<u64>::restore_from(config, &**storage, &done.handles_for(range))
            .expect("a checkpoint restores at any parallelism")
    })
}

/// `p` tasks, each restored by `restore` into an LSM backend configured as `lsm` says
/// ([`lsm_config`]) or, with `None`, a heap backend configured as `heap` for its key-group
/// range, with their states registered.
pub(super) fn restore_tasks(
    p: u32,
    lsm: Option<Run>,
    heap: BackendConfig,
    restore: impl Fn(BackendConfig, KeyGroupRange) -> Backend<u64>,
) -> Vec<Task> {
    (0..p)
        .map(|i| {
            let range = KeyGroupRange::for_operator(MAXP, p, i)
                .expect("1..=4 tasks of 16 key groups is a valid split");
            let config = if let Some(run) = lsm {
                lsm_config(run.flush_every_write, run.compression)
            } else {
                heap.clone()
            };
            let mut backend = restore(config.max_parallelism(MAXP).key_group_range(range), range);
            let handles = register(&mut backend);
            (backend, handles)
        })
        .collect()
}

/// Writes the views as canonical snapshot files (in memory checkpoint storage, blocks
/// compressed with `compression`) and restores `p` tasks from the files, so that the file
/// format is on the fuzzed path.
fn restore_round(
    views: &[StateSnapshot],
    p: u32,
    lsm: Option<Run>,
    compression: Compression,
    heap: BackendConfig,
) -> Vec<Task> {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(crate::MemoryCheckpointStorage::new());
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
                .with_compression(compression)
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
    restore_tasks(p, lsm, heap, |config, _| {
        Backend::<u64>::restore(config, &sources)
            .expect("a snapshot round restores at any parallelism")
    })
}
