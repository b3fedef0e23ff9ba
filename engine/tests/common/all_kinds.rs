//! The five state kinds (and a windowed value) over `u64` keys, a model of them, a function
//! that changes every kind of a key and one that checks a backend against the model: what the
//! tests of incremental checkpoints (LSM and heap) restore and compare.
#![allow(dead_code)] // each test binary uses some of the shared pieces

use std::collections::BTreeMap;

use flowstate::*;

use super::Sum;

pub struct Handles {
    pub value: ValueState<u64>,
    pub list: ListState<String>,
    pub map: MapState<u32, f64>,
    pub reducing: ReducingState<i64>,
    pub aggregating: AggregatingState<Sum>,
    pub windowed: ValueState<u64, TimeWindow>,
}

pub fn register(b: &mut Backend<u64>) -> Handles {
    Handles {
        value: b
            .register(ValueStateDescriptor::<u64>::new("value"))
            .unwrap(),
        list: b
            .register(ListStateDescriptor::<String>::new("list"))
            .unwrap(),
        map: b
            .register(MapStateDescriptor::<u32, f64>::new("map"))
            .unwrap(),
        reducing: b
            .register(ReducingStateDescriptor::<i64>::new("reducing", |a, b| {
                a + b
            }))
            .unwrap(),
        aggregating: b
            .register(AggregatingStateDescriptor::new("aggregating", Sum))
            .unwrap(),
        windowed: b
            .register(ValueStateDescriptor::<u64>::new("windowed").with_namespace::<TimeWindow>())
            .unwrap(),
    }
}

pub fn window(k: u64) -> TimeWindow {
    TimeWindow::new((k % 3) as i64 * 10, (k % 3) as i64 * 10 + 10)
}

/// The expected state of every key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub value: BTreeMap<u64, u64>,
    pub list: BTreeMap<u64, Vec<String>>,
    pub map: BTreeMap<u64, BTreeMap<u32, f64>>,
    pub reducing: BTreeMap<u64, i64>,
    pub aggregating: BTreeMap<u64, (i64, u32)>,
    pub windowed: BTreeMap<u64, u64>,
}

/// The `t`-th touch of key `k`: changes every state kind, on the backend and in the model.
pub fn touch(b: &mut Backend<u64>, h: &Handles, m: &mut Model, k: u64, t: u64) {
    b.set_current_key(&k);
    b.value(&h.value).update(k * 10 + t).unwrap();
    m.value.insert(k, k * 10 + t);
    if (k + t) % 2 == 0 {
        b.list(&h.list).add(format!("e{k}-{t}")).unwrap();
        m.list.entry(k).or_default().push(format!("e{k}-{t}"));
    }
    if t % 5 == 4 {
        b.map(&h.map).clear().unwrap();
        m.map.remove(&k);
    } else {
        b.map(&h.map)
            .put((t % 4) as u32, k as f64 + t as f64)
            .unwrap();
        m.map
            .entry(k)
            .or_default()
            .insert((t % 4) as u32, k as f64 + t as f64);
    }
    b.reducing(&h.reducing).add(k as i64 + 1).unwrap();
    *m.reducing.entry(k).or_default() += k as i64 + 1;
    b.aggregating(&h.aggregating).add(t as i64).unwrap();
    let acc = m.aggregating.entry(k).or_default();
    acc.0 += t as i64;
    acc.1 += 1;
    if t % 3 == 2 {
        b.value(&h.windowed).namespace(&window(k)).clear().unwrap();
        m.windowed.remove(&k);
    } else {
        b.value(&h.windowed)
            .namespace(&window(k))
            .update(t)
            .unwrap();
        m.windowed.insert(k, t);
    }
}

/// Checks that `b` holds exactly the model's state of the keys it owns; returns how many
/// keys of `keys` it owns.
pub fn check(b: &mut Backend<u64>, h: &Handles, m: &Model, keys: u64) -> u64 {
    let mut owned = 0;
    for k in 0..keys {
        b.set_current_key(&k);
        if !super::owns_current(b) {
            continue;
        }
        owned += 1;
        assert_eq!(
            b.value(&h.value).get().unwrap(),
            m.value.get(&k).copied(),
            "value of {k}"
        );
        assert_eq!(
            b.list(&h.list).get().unwrap(),
            m.list.get(&k).cloned().unwrap_or_default(),
            "list of {k}"
        );
        let map: BTreeMap<u32, f64> = b.map(&h.map).entries().unwrap().into_iter().collect();
        assert_eq!(
            map,
            m.map.get(&k).cloned().unwrap_or_default(),
            "map of {k}"
        );
        assert_eq!(
            b.reducing(&h.reducing).get().unwrap(),
            m.reducing.get(&k).copied(),
            "reducing of {k}"
        );
        assert_eq!(
            b.aggregating(&h.aggregating).get().unwrap(),
            m.aggregating.get(&k).copied(),
            "aggregating of {k}"
        );
        assert_eq!(
            b.value(&h.windowed).namespace(&window(k)).get().unwrap(),
            m.windowed.get(&k).copied(),
            "windowed of {k}"
        );
    }
    owned
}

/// The checkpoint storage a crash sweep fails: its failures armed from an operation on, then
/// a crash (what the storage kept of unfinished work) and a heal.
pub trait SweptStore {
    /// Opens the checkpoint storage (as the owner: start-up cleanup runs).
    fn open(&self) -> std::sync::Arc<dyn CheckpointStorage>;
    /// The operations (or requests) counted so far.
    fn ops(&self) -> u64;
    /// Fails the `n`th operation from now and every later one.
    fn fail_after(&self, n: u64);
    /// The crash, then the end of the failures.
    fn crash_and_heal(&self);
}

/// A `MemStorage` that crashes as `mode` says.
pub struct MemSwept(
    pub std::sync::Arc<MemStorage>,
    pub flowstate::storage::CrashMode,
);

impl SweptStore for MemSwept {
    fn open(&self) -> std::sync::Arc<dyn CheckpointStorage> {
        std::sync::Arc::new(
            FsCheckpointStorage::open(self.0.clone(), FsCheckpointOptions::default()).unwrap(),
        )
    }
    fn ops(&self) -> u64 {
        self.0.op_count()
    }
    fn fail_after(&self, n: u64) {
        self.0.fail_after(n);
    }
    fn crash_and_heal(&self) {
        self.0.crash_with(self.1);
        self.0.heal();
    }
}

/// A crash sweep over one checkpoint, `new_id`: for n = 1, 1 + step, ..., `trial` sets up a
/// task on a fresh checkpoint storage (an `FsCheckpointStorage` over a `MemStorage` seeded with
/// n), calls `arm` right before the checkpoint under test (from then on the storage fails from
/// its n-th operation), tries to write and complete it, and returns the model before it, the
/// model after it, and whether the completion was acknowledged. The storage then crashes as
/// `mode` says and heals; the latest complete checkpoint must be the new one if it was
/// acknowledged, `restore(storage, latest, n)` of it must hold the model of its moment, and
/// `shared/` must hold nothing unreferenced. The sweep ends at the first n the trial does not
/// reach, and must have seen both outcomes.
pub fn crash_sweep(
    mode: flowstate::storage::CrashMode,
    step: u64,
    keys: u64,
    new_id: u64,
    trial: impl FnMut(&std::sync::Arc<dyn CheckpointStorage>, &mut dyn FnMut()) -> (Model, Model, bool),
    restore: impl Fn(&std::sync::Arc<dyn CheckpointStorage>, &CompletedCheckpoint, u64) -> Backend<u64>,
) {
    let store = |n| MemSwept(std::sync::Arc::new(MemStorage::with_seed(n)), mode);
    crash_sweep_on(store, step, keys, new_id, trial, restore);
}

/// [`crash_sweep`] on the store `store(n)` makes for trial n.
pub fn crash_sweep_on<S: SweptStore>(
    store: impl Fn(u64) -> S,
    step: u64,
    keys: u64,
    new_id: u64,
    mut trial: impl FnMut(
        &std::sync::Arc<dyn CheckpointStorage>,
        &mut dyn FnMut(),
    ) -> (Model, Model, bool),
    restore: impl Fn(&std::sync::Arc<dyn CheckpointStorage>, &CompletedCheckpoint, u64) -> Backend<u64>,
) {
    let mut n = 1;
    let mut outcomes = std::collections::BTreeSet::new();
    loop {
        let swept = store(n);
        let storage = swept.open();
        let mut start = None;
        let (before, after, acknowledged) = trial(&storage, &mut || {
            start = Some(swept.ops());
            swept.fail_after(n);
        });
        let start = start.expect("the trial arms the failure before the checkpoint under test");
        // Whether the n-th operation came: if not, the whole trial went through.
        let reached = swept.ops() - start >= n;
        drop(storage);
        swept.crash_and_heal();
        let storage = swept.open();
        let latest = storage.latest_completed().unwrap().unwrap();
        if acknowledged {
            assert_eq!(
                latest.id(),
                CheckpointId(new_id),
                "n = {n}: an acknowledged checkpoint"
            );
        }
        outcomes.insert(latest.id().0);
        let expected = if latest.id() == CheckpointId(new_id) {
            &after
        } else {
            &before
        };
        let mut restored = restore(&storage, &latest, n);
        let h = register(&mut restored);
        assert_eq!(check(&mut restored, &h, expected, keys), keys, "n = {n}");
        let refs = storage.shared_file_references().unwrap();
        assert!(
            refs.values().all(|&c| c > 0),
            "n = {n}: garbage left: {refs:?}"
        );
        if !reached {
            assert!(acknowledged);
            break;
        }
        n += step;
    }
    assert!(
        outcomes.contains(&(new_id - 1)) && outcomes.contains(&new_id),
        "{outcomes:?}"
    );
    assert!(n > 5, "the sweep covered the publication steps: {n}");
}
