//! The backend conformance suite: the rules of state semantics, written once against
//! [`KeyedStateBackend`] and run unchanged on every backend.
//!
//! Every case is a generic function `fn case<F: Factory>(f: &F) -> Result<()>`; the
//! [`Factory`] opens empty backends with a chosen max parallelism and key-group range, for any
//! key type. `conformance_suite!(name, factory)` expands to a module `name` with one `#[test]`
//! per case, so adding a backend is one line at the bottom of this file.
//!
//! Each case cites the rules of spec/state-semantics.md it checks (R1, R2, ...). Inspired by
//! Flink's `StateBackendTestBase`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod timers;
mod ttl;

use flowstate::codec::{to_bytes, Codec};
use flowstate::snapshot::CanonicalEntries;
use flowstate::*;
#[allow(clippy::wildcard_imports)]
use timers::*;
#[allow(clippy::wildcard_imports)]
use ttl::*;

// ------------------------------------------------------------------------------------------
// Factories
// ------------------------------------------------------------------------------------------

/// Opens empty backends for the suite.
pub trait Factory {
    /// The backend type, for key type `K`.
    type Backend<K: Key>: KeyedStateBackend<K>;
    /// An empty backend with `max_parallelism` key groups that owns `range`, on the system
    /// clock.
    fn open<K: Key>(&self, max_parallelism: u32, range: KeyGroupRange) -> Self::Backend<K> {
        self.open_clocked(max_parallelism, range, Arc::new(SystemClock))
    }
    /// An empty backend with `max_parallelism` key groups that owns `range`, on `clock`.
    fn open_clocked<K: Key>(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
    ) -> Self::Backend<K>;
    /// The number of entries a large case writes, given its usual `n`: a backend
    /// configured to flush on every write takes fewer, to keep the suite fast.
    fn scaled(&self, n: u64) -> u64 {
        n
    }
}

/// [`HeapBackend`] opened directly.
pub struct HeapFactory;

impl Factory for HeapFactory {
    type Backend<K: Key> = HeapBackend<K>;
    fn open_clocked<K: Key>(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
    ) -> HeapBackend<K> {
        HeapBackend::open(
            BackendConfig::heap()
                .max_parallelism(max_parallelism)
                .key_group_range(range)
                .clock(clock),
        )
        .expect("open heap backend")
    }
}

/// [`Backend`] (the run-time dispatching enum) of kind heap: checks the delegation too.
pub struct BackendEnumFactory;

impl Factory for BackendEnumFactory {
    type Backend<K: Key> = Backend<K>;
    fn open_clocked<K: Key>(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
    ) -> Backend<K> {
        Backend::open(
            BackendConfig::heap()
                .max_parallelism(max_parallelism)
                .key_group_range(range)
                .clock(clock),
        )
        .expect("open backend")
    }
}

/// [`LsmBackend`] on a [`MemStorage`], flushes and compactions inline, default sizes: the
/// state stays in the memtable (and frozen memtables, after snapshots).
pub struct LsmFactory;

impl Factory for LsmFactory {
    type Backend<K: Key> = LsmBackend<K>;
    fn open_clocked<K: Key>(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
    ) -> LsmBackend<K> {
        LsmBackend::open(
            BackendConfig::lsm_on(Arc::new(MemStorage::new()), "lsm")
                .lsm_background(lsm::LsmBackground::Inline)
                .max_parallelism(max_parallelism)
                .key_group_range(range)
                .clock(clock),
        )
        .expect("open LSM backend")
    }
}

/// An LSM backend on a [`MemStorage`] with `tree`'s options, a small block cache and inline
/// flushes and compactions.
fn flushing_lsm<K: Key>(
    tree: lsm::TreeOptions,
    max_parallelism: u32,
    range: KeyGroupRange,
    clock: Arc<dyn Clock>,
) -> LsmBackend<K> {
    LsmBackend::open(
        BackendConfig::lsm_on(Arc::new(MemStorage::new()), "lsm")
            .lsm_tree_options(tree)
            .lsm_block_cache_bytes(64 << 10)
            .lsm_background(lsm::LsmBackground::Inline)
            .max_parallelism(max_parallelism)
            .key_group_range(range)
            .clock(clock),
    )
    .expect("open LSM backend")
}

/// [`LsmBackend`] whose every write freezes the memtable, which is flushed into a table at
/// once, with tiny compaction budgets: every read goes through tables of several levels,
/// merge operands and tombstones across them.
pub struct LsmFlushingFactory;

impl Factory for LsmFlushingFactory {
    type Backend<K: Key> = LsmBackend<K>;
    fn open_clocked<K: Key>(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
    ) -> LsmBackend<K> {
        let tree = lsm::TreeOptions {
            memtable_bytes: 1,
            l0_compaction_trigger: 2,
            l0_stop_trigger: 4,
            target_table_bytes: 2 << 10,
            level1_max_bytes: 4 << 10,
            ..lsm::TreeOptions::default()
        };
        flushing_lsm(tree, max_parallelism, range, clock)
    }
    fn scaled(&self, n: u64) -> u64 {
        (n / 20).max(100)
    }
}

/// [`LsmBackend`] under the checkpoint-aware compaction policy, every write flushed into a
/// table: reads go through many runs over tiny partitions, run merges and merges into the
/// base.
pub struct LsmCheckpointAwareFactory;

impl Factory for LsmCheckpointAwareFactory {
    type Backend<K: Key> = LsmBackend<K>;
    fn open_clocked<K: Key>(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
    ) -> LsmBackend<K> {
        let tree = lsm::TreeOptions {
            memtable_bytes: 1,
            l0_compaction_trigger: 2,
            compaction: lsm::CompactionPolicy::CheckpointAware(lsm::CheckpointAwareOptions {
                delta_ratio: 0.5,
                max_runs: 3,
                partition_bytes: 2 << 10,
            }),
            ..lsm::TreeOptions::default()
        };
        flushing_lsm(tree, max_parallelism, range, clock)
    }
    fn scaled(&self, n: u64) -> u64 {
        (n / 20).max(100)
    }
}

/// [`Backend`] of kind LSM on a local temporary directory, with a background thread.
pub struct LsmBackendEnumFactory;

impl Factory for LsmBackendEnumFactory {
    type Backend<K: Key> = Backend<K>;
    fn open_clocked<K: Key>(
        &self,
        max_parallelism: u32,
        range: KeyGroupRange,
        clock: Arc<dyn Clock>,
    ) -> Backend<K> {
        // The backend creates the directory and removes it when dropped.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flowstate-conformance-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Backend::open(
            BackendConfig::lsm(dir)
                .lsm_memtable_bytes(256 << 10)
                .max_parallelism(max_parallelism)
                .key_group_range(range)
                .clock(clock),
        )
        .expect("open backend")
    }
}

/// The max parallelism of the default backend.
const MAXP: u32 = 128;

/// A backend with [`MAXP`] key groups owning all of them, keyed by `u64`.
fn open<F: Factory>(f: &F) -> F::Backend<u64> {
    f.open::<u64>(MAXP, KeyGroupRange::all(MAXP).unwrap())
}

/// A backend with [`MAXP`] key groups owning all of them, keyed by `String`.
fn open_str<F: Factory>(f: &F) -> F::Backend<String> {
    f.open::<String>(MAXP, KeyGroupRange::all(MAXP).unwrap())
}

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn kg_of<K: Codec>(key: &K, max_parallelism: u32) -> u16 {
    key_group_for(&to_bytes(key), max_parallelism)
}

/// The `n`-th (from 0) u64 key whose key group is inside (`inside`) or outside `range`.
fn pick_key(max_parallelism: u32, range: KeyGroupRange, inside: bool, n: usize) -> u64 {
    (0u64..)
        .filter(|k| range.contains(kg_of(k, max_parallelism)) == inside)
        .nth(n)
        .expect("some key qualifies")
}

/// The canonical entries of state `name` in a fresh snapshot.
fn live_entries<K: Key, B: KeyedStateBackend<K>>(b: &mut B, name: &str) -> CanonicalEntries {
    b.snapshot_state()
        .unwrap()
        .canonical_entries(name)
        .unwrap()
        .unwrap_or_else(|| panic!("state {name} is in the snapshot"))
}

/// One canonical entry.
fn centry<K: Codec, N: Codec>(
    max_parallelism: u32,
    key: &K,
    ns: &N,
    state: EncodedState,
) -> ((u16, Vec<u8>, Vec<u8>), EncodedState) {
    let kb = to_bytes(key);
    (
        (key_group_for(&kb, max_parallelism), kb, to_bytes(ns)),
        state,
    )
}

fn enc_value<V: Codec>(v: &V) -> EncodedState {
    EncodedState::Value(to_bytes(v))
}

fn enc_list<T: Codec>(items: &[T]) -> EncodedState {
    EncodedState::List(items.iter().map(to_bytes).collect())
}

fn enc_map<UK: Codec, UV: Codec>(entries: &[(UK, UV)]) -> EncodedState {
    let mut e: Vec<(Vec<u8>, Vec<u8>)> = entries
        .iter()
        .map(|(k, v)| (to_bytes(k), to_bytes(v)))
        .collect();
    e.sort();
    EncodedState::Map(e)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Asserts that `$e` is `Err($p)`; the `Ok` value, if any, is not printed.
macro_rules! assert_err {
    ($e:expr, $p:pat $(if $guard:expr)?, $($what:tt)+) => {
        match $e {
            Err($p) $(if $guard)? => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                format!($($what)+),
                stringify!($p),
                other.map(|_| ())
            ),
        }
    };
}

/// Sum of the inputs and their count, in a tuple accumulator changed in place.
struct SumCount;

impl AggregateFunction for SumCount {
    type In = u64;
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (u64, u64), value: u64) {
        acc.0 += value;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, acc: &mut (u64, u64), other: (u64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

/// Collects the inputs in a heap-allocated accumulator that grows in place; the result is the
/// inputs joined with commas.
struct Collect;

impl AggregateFunction for Collect {
    type In = u32;
    type Acc = Vec<u32>;
    type Out = String;
    fn create_accumulator(&self) -> Vec<u32> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<u32>, value: u32) {
        acc.push(value);
    }
    fn get_result(&self, acc: &Vec<u32>) -> String {
        acc.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
    fn merge(&self, acc: &mut Vec<u32>, mut other: Vec<u32>) {
        acc.append(&mut other);
    }
}

fn sum_u64(a: &u64, b: &u64) -> u64 {
    a + b
}

// ------------------------------------------------------------------------------------------
// Value state
// ------------------------------------------------------------------------------------------

/// R15: `get` on absent value state is `None`; a read creates no entry.
fn value_get_absent_is_none<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    b.set_current_key(&1);
    assert_eq!(b.value(&v).get()?, None);
    b.set_current_key(&2);
    b.value(&v).update(7)?;
    b.set_current_key(&1);
    assert_eq!(
        b.value(&v).get()?,
        None,
        "another key's value does not leak"
    );
    assert_eq!(b.entry_count().unwrap(), 1, "a read creates no entry");
    Ok(())
}

/// R16: `update` creates or replaces the value, per key.
fn value_update_get_overwrite<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<String>::new("v"))?;
    b.set_current_key(&1);
    b.value(&v).update("a".into())?;
    assert_eq!(b.value(&v).get()?, Some("a".to_string()));
    b.value(&v).update("b".into())?;
    assert_eq!(b.value(&v).get()?, Some("b".to_string()));
    b.set_current_key(&2);
    b.value(&v).update("c".into())?;
    b.set_current_key(&1);
    assert_eq!(b.value(&v).get()?, Some("b".to_string()));
    b.set_current_key(&2);
    assert_eq!(b.value(&v).get()?, Some("c".to_string()));
    Ok(())
}

/// R17: `clear` removes the value; the state is usable again.
fn value_clear_removes_value<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    b.set_current_key(&3);
    b.value(&v).update(1)?;
    b.value(&v).clear()?;
    assert_eq!(b.value(&v).get()?, None);
    assert_eq!(b.entry_count().unwrap(), 0);
    b.value(&v).update(2)?;
    assert_eq!(
        b.value(&v).get()?,
        Some(2),
        "state is usable again after clear"
    );
    Ok(())
}

/// R41: clearing absent state is a no-op.
fn value_clear_absent_is_noop<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    b.set_current_key(&1);
    b.value(&v).update(5)?;
    b.set_current_key(&2);
    b.value(&v).clear()?;
    b.value(&v).clear()?;
    assert_eq!(b.value(&v).get()?, None);
    assert_eq!(b.entry_count().unwrap(), 1);
    b.set_current_key(&1);
    assert_eq!(b.value(&v).get()?, Some(5));
    Ok(())
}

/// R41: `clear` removes only the current key's entry in the given namespace, for every kind.
fn clear_only_current_key_and_namespace<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v").with_namespace::<u32>())?;
    let l = b.register(ListStateDescriptor::<u64>::new("l").with_namespace::<u32>())?;
    let m = b.register(MapStateDescriptor::<u64, u64>::new("m").with_namespace::<u32>())?;
    let r = b.register(ReducingStateDescriptor::new("r", sum_u64).with_namespace::<u32>())?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_namespace::<u32>())?;
    for k in 1..=2u64 {
        b.set_current_key(&k);
        for ns in 1..=2u32 {
            let x = k * 10 + u64::from(ns);
            b.value(&v).namespace(&ns).update(x)?;
            b.list(&l).namespace(&ns).add(x)?;
            b.map(&m).namespace(&ns).put(x, x)?;
            b.reducing(&r).namespace(&ns).add(x)?;
            b.aggregating(&a).namespace(&ns).add(x)?;
        }
    }
    assert_eq!(b.entry_count().unwrap(), 20);
    b.set_current_key(&1);
    b.value(&v).namespace(&1).clear()?;
    b.list(&l).namespace(&1).clear()?;
    b.map(&m).namespace(&1).clear()?;
    b.reducing(&r).namespace(&1).clear()?;
    b.aggregating(&a).namespace(&1).clear()?;
    assert_eq!(b.entry_count().unwrap(), 15);
    for k in 1..=2u64 {
        b.set_current_key(&k);
        for ns in 1..=2u32 {
            let x = k * 10 + u64::from(ns);
            let gone = k == 1 && ns == 1;
            let expect = (!gone).then_some(x);
            assert_eq!(
                b.value(&v).namespace(&ns).get()?,
                expect,
                "value k{k} ns{ns}"
            );
            assert_eq!(
                b.list(&l).namespace(&ns).get()?,
                expect.into_iter().collect::<Vec<_>>(),
                "list k{k} ns{ns}"
            );
            assert_eq!(b.map(&m).namespace(&ns).get(&x)?, expect, "map k{k} ns{ns}");
            assert_eq!(
                b.reducing(&r).namespace(&ns).get()?,
                expect,
                "red k{k} ns{ns}"
            );
            assert_eq!(
                b.aggregating(&a).namespace(&ns).get()?,
                expect.map(|x| (x, 1)),
                "agg k{k} ns{ns}"
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// List state
// ------------------------------------------------------------------------------------------

/// R18: `get` on an absent list is an empty `Vec`.
fn list_get_absent_is_empty<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l"))?;
    b.set_current_key(&1);
    assert_eq!(b.list(&l).get()?, Vec::<u32>::new());
    b.set_current_key(&2);
    b.list(&l).add(1)?;
    b.set_current_key(&1);
    assert!(b.list(&l).get()?.is_empty());
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R18, R19: `add` appends; `get` returns the elements in insertion order.
fn list_add_preserves_order<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<String>::new("l"))?;
    b.set_current_key(&1);
    for s in ["c", "a", "b", "a"] {
        b.list(&l).add(s.to_string())?;
    }
    assert_eq!(b.list(&l).get()?, vec!["c", "a", "b", "a"]);
    Ok(())
}

/// R20: `add_all` appends in order, creating the list if absent.
fn list_add_all_appends_in_order<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l"))?;
    b.set_current_key(&1);
    b.list(&l).add(9)?;
    b.list(&l).add_all(vec![3, 1, 2])?;
    b.list(&l).add_all(vec![0])?;
    assert_eq!(b.list(&l).get()?, vec![9, 3, 1, 2, 0]);
    b.set_current_key(&2);
    b.list(&l).add_all(vec![5, 4])?;
    assert_eq!(
        b.list(&l).get()?,
        vec![5, 4],
        "add_all on an absent list creates it"
    );
    assert_eq!(b.entry_count().unwrap(), 2);
    Ok(())
}

/// R20, R22: an empty `add_all` on an absent list creates no entry.
fn list_add_all_empty_on_absent_creates_nothing<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.list(&l).namespace(&4).add_all(vec![])?;
    assert_eq!(b.list(&l).namespace(&4).get()?, Vec::<u32>::new());
    assert_eq!(b.entry_count().unwrap(), 0);
    assert!(b.keys(l, &4)?.is_empty());
    assert!(live_entries(&mut b, "l").is_empty());
    Ok(())
}

/// R20: an empty `add_all` on a list changes nothing.
fn list_add_all_empty_on_non_empty_is_noop<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l"))?;
    b.set_current_key(&1);
    b.list(&l).add_all(vec![1, 2])?;
    b.list(&l).add_all(vec![])?;
    assert_eq!(b.list(&l).get()?, vec![1, 2]);
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R21: `update` with elements replaces the whole list.
fn list_update_replaces<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l"))?;
    b.set_current_key(&1);
    b.list(&l).update(vec![7, 8])?;
    assert_eq!(
        b.list(&l).get()?,
        vec![7, 8],
        "update on an absent list creates it"
    );
    b.list(&l).add_all(vec![1, 2, 3])?;
    b.list(&l).update(vec![4])?;
    assert_eq!(b.list(&l).get()?, vec![4]);
    b.list(&l).add(5)?;
    assert_eq!(b.list(&l).get()?, vec![4, 5]);
    Ok(())
}

/// R21, R22: `update(vec![])` is `clear`; no empty list is stored.
fn list_update_empty_clears<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l"))?;
    b.set_current_key(&1);
    b.list(&l).add_all(vec![1, 2])?;
    b.set_current_key(&2);
    b.list(&l).add(3)?;
    assert_eq!(b.entry_count().unwrap(), 2);
    b.list(&l).update(vec![])?;
    assert!(b.list(&l).get()?.is_empty());
    assert_eq!(
        b.entry_count().unwrap(),
        1,
        "an emptied list leaves no entry"
    );
    assert_eq!(b.keys(l, &())?, vec![1]);
    b.list(&l).update(vec![])?;
    assert_eq!(
        b.entry_count().unwrap(),
        1,
        "update(vec![]) on an absent list creates nothing"
    );
    Ok(())
}

/// R23, R41: `clear` removes the current key's list only.
fn list_clear<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l"))?;
    b.set_current_key(&1);
    b.list(&l).add_all(vec![1, 2])?;
    b.set_current_key(&2);
    b.list(&l).add(3)?;
    b.list(&l).clear()?;
    assert!(b.list(&l).get()?.is_empty());
    b.set_current_key(&1);
    assert_eq!(b.list(&l).get()?, vec![1, 2]);
    assert_eq!(b.entry_count().unwrap(), 1);
    b.list(&l).clear()?;
    assert_eq!(b.entry_count().unwrap(), 0);
    b.list(&l).add(6)?;
    assert_eq!(b.list(&l).get()?, vec![6], "a cleared list starts afresh");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Map state
// ------------------------------------------------------------------------------------------

/// R24, R29: reads of an absent map: `None`, `false`, empty, `is_empty`.
fn map_absent_reads<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<String, u64>::new("m"))?;
    b.set_current_key(&1);
    assert_eq!(b.map(&m).get(&"x".into())?, None);
    assert!(!b.map(&m).contains(&"x".into())?);
    assert!(b.map(&m).entries()?.is_empty());
    assert!(b.map(&m).keys()?.is_empty());
    assert!(b.map(&m).values()?.is_empty());
    assert!(b.map(&m).is_empty()?);
    assert_eq!(b.entry_count().unwrap(), 0, "reads create no entry");
    Ok(())
}

/// R24, R25: `put`, `get`, `contains`; one map is one entry.
fn map_put_get_contains<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<String, u64>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m).put("a".into(), 1)?;
    b.map(&m).put("b".into(), 2)?;
    assert_eq!(b.map(&m).get(&"a".into())?, Some(1));
    assert_eq!(b.map(&m).get(&"b".into())?, Some(2));
    assert_eq!(b.map(&m).get(&"c".into())?, None);
    assert!(b.map(&m).contains(&"a".into())?);
    assert!(!b.map(&m).contains(&"c".into())?);
    assert!(!b.map(&m).is_empty()?);
    b.map(&m).put("a".into(), 10)?;
    assert_eq!(b.map(&m).get(&"a".into())?, Some(10), "put overwrites");
    assert_eq!(b.entry_count().unwrap(), 1, "one map is one entry");
    b.set_current_key(&2);
    assert_eq!(b.map(&m).get(&"a".into())?, None, "maps are per key");
    Ok(())
}

/// R26: `put_all` applies entries in order; an empty one changes nothing.
fn map_put_all_later_entry_wins<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m).put(1, 100)?;
    b.map(&m)
        .put_all(vec![(2, 20), (3, 30), (2, 21), (1, 11)])?;
    assert_eq!(
        sorted(b.map(&m).entries()?),
        vec![(1, 11), (2, 21), (3, 30)]
    );
    b.map(&m).put_all(Vec::new())?;
    assert_eq!(
        b.map(&m).entries()?.len(),
        3,
        "an empty put_all changes nothing"
    );
    Ok(())
}

/// R26: an empty `put_all` on an absent map creates no entry.
fn map_put_all_empty_on_absent_creates_nothing<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m).put_all(Vec::new())?;
    assert!(b.map(&m).is_empty()?);
    assert_eq!(b.entry_count().unwrap(), 0);
    assert!(b.keys(m, &())?.is_empty());
    Ok(())
}

/// R27: `remove`; removing an absent user key or from an absent map is a no-op.
fn map_remove_and_remove_absent<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m).put_all(vec![(1, 1), (2, 2)])?;
    b.map(&m).remove(&1)?;
    assert_eq!(b.map(&m).get(&1)?, None);
    assert!(!b.map(&m).contains(&1)?);
    assert_eq!(b.map(&m).entries()?, vec![(2, 2)]);
    b.map(&m).remove(&99)?;
    assert_eq!(
        b.map(&m).entries()?,
        vec![(2, 2)],
        "removing an absent key does nothing"
    );
    b.set_current_key(&2);
    b.map(&m).remove(&2)?;
    assert_eq!(
        b.entry_count().unwrap(),
        1,
        "removing from an absent map creates nothing"
    );
    assert!(b.map(&m).is_empty()?);
    Ok(())
}

/// R29: `keys`, `values` and `entries` return every entry.
fn map_keys_values_entries<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<String, u32>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m)
        .put_all(vec![("b".into(), 2), ("a".into(), 1), ("c".into(), 3)])?;
    assert_eq!(sorted(b.map(&m).keys()?), vec!["a", "b", "c"]);
    assert_eq!(sorted(b.map(&m).values()?), vec![1, 2, 3]);
    assert_eq!(
        sorted(b.map(&m).entries()?),
        vec![
            ("a".to_string(), 1),
            ("b".to_string(), 2),
            ("c".to_string(), 3)
        ]
    );
    // keys and values come from the same traversal: they pair up.
    let keys = b.map(&m).keys()?;
    let values = b.map(&m).values()?;
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(b.map(&m).get(k)?, Some(*v));
    }
    Ok(())
}

/// R28, R29: removing the last user key removes the map's entry.
fn map_is_empty_after_removing_all<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    let other = b.register(ValueStateDescriptor::<u32>::new("other"))?;
    b.set_current_key(&1);
    b.value(&other).update(1)?;
    assert!(b.map(&m).is_empty()?);
    for i in 0..300 {
        b.map(&m).put(i, i)?;
        assert!(!b.map(&m).is_empty()?, "after put {i}");
    }
    assert_eq!(b.entry_count().unwrap(), 2);
    for i in 0..300 {
        assert!(!b.map(&m).is_empty()?, "before remove {i}");
        b.map(&m).remove(&i)?;
    }
    assert!(b.map(&m).is_empty()?);
    assert!(b.map(&m).entries()?.is_empty());
    assert_eq!(
        b.entry_count().unwrap(),
        1,
        "an emptied map leaves no entry"
    );
    assert!(b.keys(m, &())?.is_empty());
    assert!(live_entries(&mut b, "m").is_empty());
    Ok(())
}

/// R29, R41: `clear` removes the current key's map only.
fn map_clear<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m).put_all(vec![(1, 1), (2, 2)])?;
    b.set_current_key(&2);
    b.map(&m).put(3, 3)?;
    b.map(&m).clear()?;
    assert!(b.map(&m).is_empty()?);
    assert_eq!(b.map(&m).get(&3)?, None);
    b.set_current_key(&1);
    assert_eq!(sorted(b.map(&m).entries()?), vec![(1, 1), (2, 2)]);
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R80: the borrowing reads see what `get` and `entries()` return, absent state included, in
/// a namespace too.
fn borrowing_reads_see_what_get_returns<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<String>::new("v"))?;
    let l = b.register(ListStateDescriptor::<u32>::new("l"))?;
    let m = b.register(MapStateDescriptor::<u32, String>::new("m"))?;
    let ln = b.register(ListStateDescriptor::<u32>::new("ln").with_namespace::<u32>())?;
    b.set_current_key(&1);
    assert_eq!(b.value(&v).read(|x| x.cloned())?, None);
    assert_eq!(b.list(&l).read(<[u32]>::to_vec)?, Vec::<u32>::new());
    assert_eq!(b.map(&m).read(&3, |x| x.cloned())?, None);
    let mut none = 0;
    b.map(&m).for_each(|_, _| none += 1)?;
    assert_eq!(none, 0);
    b.value(&v).update("seven".into())?;
    b.list(&l).add_all(vec![5, 1, 4])?;
    b.map(&m).put_all((0..50).map(|i| (i, format!("v{i}"))))?;
    b.list(&ln).namespace(&9).add(90)?;
    b.set_current_key(&2);
    b.value(&v).update("other key".into())?;
    b.list(&l).add(77)?;
    b.set_current_key(&1);
    assert_eq!(b.value(&v).read(|x| x.map(String::len))?, Some(5));
    assert_eq!(b.list(&l).read(<[u32]>::to_vec)?, vec![5, 1, 4]);
    assert_eq!(b.map(&m).read(&3, |x| x.cloned())?, Some("v3".into()));
    assert_eq!(b.map(&m).read(&50, |x| x.cloned())?, None);
    let mut seen = Vec::new();
    b.map(&m).for_each(|k, x| seen.push((*k, x.clone())))?;
    assert_eq!(sorted(seen), sorted(b.map(&m).entries()?));
    assert_eq!(b.list(&ln).namespace(&9).read(<[u32]>::to_vec)?, vec![90]);
    assert_eq!(b.list(&ln).namespace(&8).read(<[u32]>::len)?, 0);
    Ok(())
}

/// R80, R2, R3: a borrowing read fails as `get` does, without calling its function.
fn borrowing_reads_fail_as_get_does<F: Factory>(f: &F) -> Result<()> {
    let mut b = f.open::<u64>(MAXP, KeyGroupRange::new(0, 0)?);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.register(ListStateDescriptor::<u64>::new("l"))?;
    let m = b.register(MapStateDescriptor::<u64, u64>::new("m"))?;
    let ln = b.register(ListStateDescriptor::<u64>::new("ln").with_namespace::<u32>())?;
    let called = std::cell::Cell::new(false);
    let mark = |_: &[u64]| called.set(true);
    assert!(matches!(
        b.value(&v).read(|_| called.set(true)),
        Err(Error::NoCurrentKey)
    ));
    assert!(matches!(b.list(&l).read(mark), Err(Error::NoCurrentKey)));
    let foreign = (0..1000u64)
        .find(|k| key_group_of(k, MAXP) != 0)
        .expect("some key is outside key group 0");
    b.set_current_key(&foreign);
    let out = |r: Result<()>| matches!(r, Err(Error::KeyGroupOutOfRange { .. }));
    assert!(out(b.value(&v).read(|_| called.set(true))));
    assert!(out(b.list(&l).read(mark)));
    assert!(out(b.map(&m).read(&1, |_| called.set(true))));
    assert!(out(b.map(&m).for_each(|_, _| called.set(true))));
    let own = (0..1000u64)
        .find(|k| key_group_of(k, MAXP) == 0)
        .expect("some key is in key group 0");
    b.set_current_key(&own);
    assert!(matches!(
        b.list(&ln).read(mark),
        Err(Error::NamespaceRequired { .. })
    ));
    assert!(!called.get(), "no read function ran");
    Ok(())
}

/// R30: the cursor yields every entry once.
fn map_cursor_visits_every_entry<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(&1);
    let expected: Vec<(u32, u32)> = (0..500).map(|i| (i, i * 3)).collect();
    b.map(&m).put_all(expected.clone())?;
    let cursor = b.map(&m).iter()?;
    let seen: Vec<(u32, u32)> = cursor.collect::<Result<_>>()?;
    assert_eq!(sorted(seen), expected);
    Ok(())
}

/// R28, R30: `remove_current` writes through; removing all removes the entry.
fn map_cursor_remove_current<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m).put_all((0..100).map(|i| (i, i)))?;
    let mut cursor = b.map(&m).iter()?;
    let mut visited = 0;
    while let Some(entry) = cursor.next() {
        let (k, _) = entry?;
        visited += 1;
        if k % 2 == 1 {
            cursor.remove_current()?;
        }
    }
    assert_eq!(visited, 100, "removing does not skip entries");
    assert_eq!(
        sorted(b.map(&m).keys()?),
        (0..100).step_by(2).collect::<Vec<_>>()
    );
    // Removing every remaining entry through the cursor removes the map's entry.
    let mut cursor = b.map(&m).iter()?;
    while let Some(entry) = cursor.next() {
        entry?;
        cursor.remove_current()?;
    }
    assert!(b.map(&m).is_empty()?);
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R30: a second `remove_current` without `next` fails.
fn map_cursor_second_remove_without_next_fails<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m).put_all(vec![(1, 1), (2, 2), (3, 3)])?;
    let mut cursor = b.map(&m).iter()?;
    let (first, _) = cursor.next().expect("an entry")?;
    cursor.remove_current()?;
    let err = cursor
        .remove_current()
        .expect_err("second remove without next");
    assert_eq!(err.kind(), ErrorKind::Usage);
    // next() then remove works again.
    let (second, _) = cursor.next().expect("an entry")?;
    cursor.remove_current()?;
    let left = b.map(&m).keys()?;
    assert_eq!(left.len(), 1);
    assert!(!left.contains(&first) && !left.contains(&second));
    Ok(())
}

/// R30: cursor writes before the first `next` fail; the last entry stays current after the end.
fn map_cursor_remove_before_next_fails<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    b.set_current_key(&1);
    b.map(&m).put_all(vec![(1, 1), (2, 2)])?;
    let mut cursor = b.map(&m).iter()?;
    let err = cursor.remove_current().expect_err("remove before next");
    assert_eq!(err.kind(), ErrorKind::Usage);
    let err = cursor.set_current_value(5).expect_err("set before next");
    assert_eq!(err.kind(), ErrorKind::Usage);
    drop(cursor);
    assert_eq!(
        sorted(b.map(&m).entries()?),
        vec![(1, 1), (2, 2)],
        "nothing changed"
    );
    // After the last entry the cursor still remembers it; after exhaustion remove is allowed
    // exactly once for the last returned entry.
    let mut cursor = b.map(&m).iter()?;
    let (a, _) = cursor.next().expect("entry")?;
    let (z, _) = cursor.next().expect("entry")?;
    assert!(cursor.next().is_none());
    cursor.remove_current()?;
    assert!(cursor.remove_current().is_err());
    assert!(
        cursor.set_current_value(9).is_err(),
        "set_current_value after remove_current, before next"
    );
    assert_eq!(b.map(&m).keys()?, vec![a]);
    assert_ne!(a, z);
    Ok(())
}

/// R30: `set_current_value` writes through to the state.
fn map_cursor_set_current_value_writes_through<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, String>::new("m").with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.map(&m)
        .namespace(&7)
        .put_all((0..50).map(|i| (i, format!("v{i}"))))?;
    let mut cursor = b.map(&m).namespace(&7).iter()?;
    while let Some(entry) = cursor.next() {
        let (k, v) = entry?;
        assert_eq!(v, format!("v{k}"));
        if k % 3 == 0 {
            cursor.set_current_value(format!("w{k}"))?;
        }
    }
    for k in 0..50 {
        let want = if k % 3 == 0 {
            format!("w{k}")
        } else {
            format!("v{k}")
        };
        assert_eq!(b.map(&m).namespace(&7).get(&k)?, Some(want));
    }
    assert_eq!(b.map(&m).namespace(&7).entries()?.len(), 50);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Reducing and aggregating state
// ------------------------------------------------------------------------------------------

/// R31, R33: absent reducing state is `None`, also after add + clear.
fn reducing_get_absent_is_none<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let r = b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64))?;
    b.set_current_key(&1);
    assert_eq!(b.reducing(&r).get()?, None);
    b.reducing(&r).add(3)?;
    b.reducing(&r).clear()?;
    assert_eq!(b.reducing(&r).get()?, None, "None again after add + clear");
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R32: the first value is stored as is, then `reduce(&current, &added)`.
fn reducing_add_applies_reduce_in_order<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let r = b.register(ReducingStateDescriptor::<String>::new("r", |a, b| {
        format!("{a},{b}")
    }))?;
    b.set_current_key(&1);
    b.reducing(&r).add("1".into())?;
    assert_eq!(
        b.reducing(&r).get()?,
        Some("1".to_string()),
        "the first value is stored as is"
    );
    b.reducing(&r).add("u1".into())?;
    b.reducing(&r).add("x".into())?;
    assert_eq!(b.reducing(&r).get()?, Some("1,u1,x".to_string()));
    Ok(())
}

/// R32, R33, R43: per-key reduction; clear brings the count to 0.
fn reducing_keys_are_independent<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let r = b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64))?;
    b.set_current_key(&1);
    b.reducing(&r).add(17)?;
    b.set_current_key(&2);
    b.reducing(&r).add(5)?;
    b.set_current_key(&1);
    b.reducing(&r).add(11)?;
    assert_eq!(b.reducing(&r).get()?, Some(28));
    b.reducing(&r).clear()?;
    assert_eq!(b.reducing(&r).get()?, None);
    b.set_current_key(&2);
    assert_eq!(b.reducing(&r).get()?, Some(5));
    b.reducing(&r).clear()?;
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R34: absent aggregating state is `None`.
fn aggregating_get_absent_is_none<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount))?;
    b.set_current_key(&1);
    assert_eq!(b.aggregating(&a).get()?, None);
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R34, R35: accumulators changed in place, per key.
fn aggregating_add_mutable_accumulator<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount))?;
    let c = b.register(AggregatingStateDescriptor::new("c", Collect))?;
    b.set_current_key(&1);
    for x in [17, 11, 2] {
        b.aggregating(&a).add(x)?;
        b.aggregating(&c).add(x as u32)?;
    }
    assert_eq!(b.aggregating(&a).get()?, Some((30, 3)));
    assert_eq!(b.aggregating(&c).get()?, Some("17,11,2".to_string()));
    b.set_current_key(&2);
    b.aggregating(&a).add(4)?;
    assert_eq!(b.aggregating(&a).get()?, Some((4, 1)));
    b.set_current_key(&1);
    assert_eq!(
        b.aggregating(&a).get()?,
        Some((30, 3)),
        "keys are independent"
    );
    Ok(())
}

/// R35, R36: after `clear`, `add` starts from `create_accumulator`.
fn aggregating_clear_starts_fresh_accumulator<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let c = b.register(AggregatingStateDescriptor::new("c", Collect))?;
    b.set_current_key(&1);
    b.aggregating(&c).add(1)?;
    b.aggregating(&c).add(2)?;
    b.aggregating(&c).clear()?;
    assert_eq!(b.aggregating(&c).get()?, None);
    assert_eq!(b.entry_count().unwrap(), 0);
    b.aggregating(&c).add(3)?;
    assert_eq!(b.aggregating(&c).get()?, Some("3".to_string()));
    Ok(())
}

// ------------------------------------------------------------------------------------------
// merge_namespaces
// ------------------------------------------------------------------------------------------

/// R37, R38: target elements first, then each source's; sources removed.
fn merge_list_sources_spread<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.list(&l).namespace(&1).add_all(vec![1, 2])?;
    b.list(&l).namespace(&2).add_all(vec![3])?;
    b.list(&l).namespace(&3).add_all(vec![4, 5])?;
    b.list(&l).merge_namespaces(&1, &[2, 3])?;
    assert_eq!(
        b.list(&l).namespace(&1).get()?,
        vec![1, 2, 3, 4, 5],
        "target first, then the sources in order"
    );
    assert!(b.list(&l).namespace(&2).get()?.is_empty());
    assert!(b.list(&l).namespace(&3).get()?.is_empty());
    assert_eq!(b.entry_count().unwrap(), 1, "sources are removed");
    b.list(&l).namespace(&1).clear()?;
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R37: an absent target takes the sources' elements.
fn merge_list_into_absent_target<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.list(&l).namespace(&3).add_all(vec![7, 8])?;
    b.list(&l).namespace(&2).add(6)?;
    b.list(&l).merge_namespaces(&1, &[3, 2])?;
    assert_eq!(b.list(&l).namespace(&1).get()?, vec![7, 8, 6]);
    assert_eq!(b.keys(l, &1)?, vec![1]);
    assert!(b.keys(l, &2)?.is_empty() && b.keys(l, &3)?.is_empty());
    Ok(())
}

/// R37, R38: an absent source is skipped.
fn merge_list_one_source_empty<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.list(&l).namespace(&1).add(1)?;
    b.list(&l).namespace(&3).add(3)?;
    b.list(&l).merge_namespaces(&1, &[2, 3])?;
    assert_eq!(b.list(&l).namespace(&1).get()?, vec![1, 3]);
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R39: all sources absent: an absent target stays absent.
fn merge_list_all_empty_stays_absent<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.list(&l).merge_namespaces(&1, &[2, 3])?;
    assert!(b.list(&l).namespace(&1).get()?.is_empty());
    assert_eq!(
        b.entry_count().unwrap(),
        0,
        "merging nothing creates no entry"
    );
    b.list(&l).merge_namespaces(&1, &[])?;
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R39: all sources absent: the target is unchanged.
fn merge_list_target_already_has_all<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.list(&l).namespace(&1).add_all(vec![1, 2, 3])?;
    b.list(&l).merge_namespaces(&1, &[2, 3])?;
    assert_eq!(b.list(&l).namespace(&1).get()?, vec![1, 2, 3]);
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R37, R38: a source equal to the target is skipped, a repeated one too.
fn merge_list_target_among_sources<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.list(&l).namespace(&1).add(1)?;
    b.list(&l).namespace(&2).add(2)?;
    b.list(&l).merge_namespaces(&1, &[1, 2, 1])?;
    assert_eq!(
        b.list(&l).namespace(&1).get()?,
        vec![1, 2],
        "a source equal to the target is skipped: neither removed nor duplicated"
    );
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R37: merging touches the current key only.
fn merge_only_touches_current_key<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    for k in 1..=2u64 {
        b.set_current_key(&k);
        b.list(&l).namespace(&1).add(k as u32 * 10)?;
        b.list(&l).namespace(&2).add(k as u32 * 10 + 1)?;
    }
    b.set_current_key(&1);
    b.list(&l).merge_namespaces(&1, &[2])?;
    b.set_current_key(&2);
    assert_eq!(b.list(&l).namespace(&1).get()?, vec![20]);
    assert_eq!(b.list(&l).namespace(&2).get()?, vec![21]);
    assert_eq!(b.entry_count().unwrap(), 3);
    Ok(())
}

/// R37, R38, R39: reducing state merges with its reduce function.
fn merge_reducing<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let r =
        b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64).with_namespace::<u32>())?;
    b.set_current_key(&1);
    // Spread over target and sources: 10 + 20 + 30 + 40 + 65 = 165.
    b.reducing(&r).namespace(&1).add(10)?;
    b.reducing(&r).namespace(&1).add(20)?;
    b.reducing(&r).namespace(&2).add(30)?;
    b.reducing(&r).namespace(&3).add(40)?;
    b.reducing(&r).namespace(&3).add(65)?;
    b.reducing(&r).merge_namespaces(&1, &[2, 3])?;
    assert_eq!(b.reducing(&r).namespace(&1).get()?, Some(165));
    assert_eq!(b.reducing(&r).namespace(&2).get()?, None);
    assert_eq!(b.reducing(&r).namespace(&3).get()?, None);
    assert_eq!(b.entry_count().unwrap(), 1);
    // Absent target, one empty source.
    b.reducing(&r).namespace(&5).add(5)?;
    b.reducing(&r).merge_namespaces(&4, &[6, 5])?;
    assert_eq!(b.reducing(&r).namespace(&4).get()?, Some(5));
    assert_eq!(b.reducing(&r).namespace(&5).get()?, None);
    // All empty.
    b.reducing(&r).merge_namespaces(&8, &[9, 10])?;
    assert_eq!(b.reducing(&r).namespace(&8).get()?, None);
    assert_eq!(b.entry_count().unwrap(), 2);
    Ok(())
}

/// R37: `reduce(&target, &source)` in the order of the sources; an absent target takes a source as is.
fn merge_reducing_order<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let r = b.register(
        ReducingStateDescriptor::<String>::new("r", |a, b| format!("{a},{b}"))
            .with_namespace::<u32>(),
    )?;
    b.set_current_key(&1);
    b.reducing(&r).namespace(&1).add("t".into())?;
    b.reducing(&r).namespace(&2).add("a".into())?;
    b.reducing(&r).namespace(&3).add("b".into())?;
    b.reducing(&r).merge_namespaces(&1, &[3, 2])?;
    assert_eq!(
        b.reducing(&r).namespace(&1).get()?,
        Some("t,b,a".to_string()),
        "reduce(&target, &source), sources in order"
    );
    // An absent target takes the first present source as it is (no reduce call).
    b.reducing(&r).namespace(&5).add("x".into())?;
    b.reducing(&r).namespace(&6).add("y".into())?;
    b.reducing(&r).merge_namespaces(&4, &[7, 5, 6])?;
    assert_eq!(b.reducing(&r).namespace(&4).get()?, Some("x,y".to_string()));
    Ok(())
}

/// R37, R38, R39: aggregating state merges with `merge`; the result keeps accumulating.
fn merge_aggregating<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.aggregating(&a).namespace(&1).add(10)?;
    b.aggregating(&a).namespace(&2).add(20)?;
    b.aggregating(&a).namespace(&2).add(30)?;
    b.aggregating(&a).namespace(&3).add(105)?;
    b.aggregating(&a).merge_namespaces(&1, &[2, 3, 4])?;
    assert_eq!(b.aggregating(&a).namespace(&1).get()?, Some((165, 4)));
    assert_eq!(b.aggregating(&a).namespace(&2).get()?, None);
    assert_eq!(b.aggregating(&a).namespace(&3).get()?, None);
    assert_eq!(b.entry_count().unwrap(), 1);
    // Target among sources, and the merged accumulator keeps accumulating.
    b.aggregating(&a).merge_namespaces(&1, &[1])?;
    b.aggregating(&a).namespace(&1).add(1)?;
    assert_eq!(b.aggregating(&a).namespace(&1).get()?, Some((166, 5)));
    // All empty.
    b.aggregating(&a).merge_namespaces(&7, &[8, 9])?;
    assert_eq!(b.aggregating(&a).namespace(&7).get()?, None);
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R37: `merge(&mut target_acc, source_acc)` with a heap accumulator.
fn merge_aggregating_heap_accumulator<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let c = b.register(AggregatingStateDescriptor::new("c", Collect).with_namespace::<u32>())?;
    b.set_current_key(&1);
    b.aggregating(&c).namespace(&2).add(2)?;
    b.aggregating(&c).namespace(&3).add(3)?;
    b.aggregating(&c).merge_namespaces(&1, &[2, 3])?;
    assert_eq!(
        b.aggregating(&c).namespace(&1).get()?,
        Some("2,3".to_string()),
        "the first source moved as is, then merge(&mut target, source)"
    );
    b.aggregating(&c).namespace(&0).add(0)?;
    b.aggregating(&c).merge_namespaces(&0, &[1])?;
    b.aggregating(&c).namespace(&0).add(4)?;
    assert_eq!(
        b.aggregating(&c).namespace(&0).get()?,
        Some("0,2,3,4".to_string())
    );
    assert_eq!(b.keys(c, &0)?, vec![1]);
    assert!(b.keys(c, &1)?.is_empty());
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Namespaces and keys()
// ------------------------------------------------------------------------------------------

/// R12: entries of different namespaces are independent.
fn namespaces_isolate_state<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u32>::new("v").with_namespace::<TimeWindow>())?;
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<String>())?;
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m").with_namespace::<u64>())?;
    let (w1, w2) = (TimeWindow::new(0, 10), TimeWindow::new(10, 20));
    b.set_current_key(&1);
    b.value(&v).namespace(&w1).update(1)?;
    b.value(&v).namespace(&w2).update(2)?;
    b.list(&l).namespace(&"a".to_string()).add(1)?;
    b.list(&l).namespace(&"b".to_string()).add(2)?;
    b.map(&m).namespace(&0).put(1, 1)?;
    b.map(&m).namespace(&1).put(1, 2)?;
    assert_eq!(b.value(&v).namespace(&w1).get()?, Some(1));
    assert_eq!(b.value(&v).namespace(&w2).get()?, Some(2));
    assert_eq!(b.value(&v).namespace(&TimeWindow::new(0, 20)).get()?, None);
    assert_eq!(b.list(&l).namespace(&"a".to_string()).get()?, vec![1]);
    assert_eq!(b.list(&l).namespace(&"b".to_string()).get()?, vec![2]);
    assert!(b.list(&l).namespace(&String::new()).get()?.is_empty());
    assert_eq!(b.map(&m).namespace(&0).get(&1)?, Some(1));
    assert_eq!(b.map(&m).namespace(&1).get(&1)?, Some(2));
    assert_eq!(b.entry_count().unwrap(), 6);
    Ok(())
}

/// R42: `keys(state, ns)` is exactly the keys with an entry, each once.
fn keys_returns_exactly_keys_with_entries<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m").with_namespace::<u32>())?;
    let v = b.register(ValueStateDescriptor::<u32>::new("v").with_namespace::<u32>())?;
    let mut in_ns1 = BTreeSet::new();
    let mut in_ns2 = BTreeSet::new();
    for k in 0..1000u64 {
        b.set_current_key(&k);
        if k % 3 != 0 {
            b.map(&m).namespace(&1).put(k as u32, 1)?;
            in_ns1.insert(k);
        }
        if k % 2 == 0 {
            b.map(&m).namespace(&2).put(0, 0)?;
            in_ns2.insert(k);
        }
        if k % 5 == 0 {
            // Another state's entries do not show up in keys(m, ..).
            b.value(&v).namespace(&1).update(0)?;
        }
    }
    let keys1 = b.keys(m, &1)?;
    assert_eq!(keys1.len(), in_ns1.len(), "no key is listed twice");
    assert_eq!(keys1.into_iter().collect::<BTreeSet<_>>(), in_ns1);
    assert_eq!(b.keys(m, &2)?.into_iter().collect::<BTreeSet<_>>(), in_ns2);
    assert!(b.keys(m, &3)?.is_empty());
    assert_eq!(b.keys(v, &1)?.len(), 200);
    Ok(())
}

/// R42, R22, R28: cleared, emptied and removed entries are not listed.
fn keys_excludes_removed_entries<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    let l = b.register(ListStateDescriptor::<u32>::new("l"))?;
    let v = b.register(ValueStateDescriptor::<u32>::new("v"))?;
    for k in 1..=3u64 {
        b.set_current_key(&k);
        b.map(&m).put(1, 1)?;
        b.list(&l).add(1)?;
        b.value(&v).update(1)?;
    }
    b.set_current_key(&1);
    b.map(&m).remove(&1)?;
    b.list(&l).update(vec![])?;
    b.value(&v).clear()?;
    b.set_current_key(&2);
    b.map(&m).clear()?;
    b.list(&l).clear()?;
    assert_eq!(b.keys(m, &())?, vec![3]);
    assert_eq!(b.keys(l, &())?, vec![3]);
    assert_eq!(sorted(b.keys(v, &())?), vec![2, 3]);
    Ok(())
}

/// R42: `keys` needs no current key and does not change it.
fn keys_needs_no_current_key<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u32>::new("v").with_namespace::<u32>())?;
    assert!(b.keys(v, &0)?.is_empty());
    b.set_current_key(&9);
    b.value(&v).namespace(&0).update(1)?;
    let mut b2 = open(f);
    let v2 = b2.register(ValueStateDescriptor::<u32>::new("v").with_namespace::<u32>())?;
    assert!(
        b2.keys(v2, &0)?.is_empty(),
        "a fresh backend without a current key"
    );
    b.set_current_key(&4);
    assert_eq!(b.keys(v, &0)?, vec![9]);
    assert_eq!(
        b.current_key(),
        Some(&4),
        "keys does not change the current key"
    );
    assert_eq!(b.value(&v).namespace(&0).get()?, None);
    Ok(())
}

/// R1, R42: `String` keys, including the empty string.
fn keys_and_values_with_string_keys<F: Factory>(f: &F) -> Result<()> {
    let mut b = open_str(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.register(ListStateDescriptor::<String>::new("l").with_namespace::<u32>())?;
    let names: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        b.set_current_key(name);
        assert_eq!(b.current_key(), Some(name));
        assert_eq!(b.current_key_group(), Some(kg_of(name, MAXP)));
        b.value(&v).update(i as u64)?;
        b.list(&l).namespace(&(i as u32 % 2)).add(name.clone())?;
    }
    b.set_current_key(&String::new());
    assert_eq!(
        b.value(&v).get()?,
        None,
        "the empty string is a distinct key"
    );
    b.value(&v).update(999)?;
    for (i, name) in names.iter().enumerate() {
        b.set_current_key(name);
        assert_eq!(b.value(&v).get()?, Some(i as u64));
        assert_eq!(
            b.list(&l).namespace(&(i as u32 % 2)).get()?,
            vec![name.clone()]
        );
    }
    let even: BTreeSet<String> = names.iter().step_by(2).cloned().collect();
    assert_eq!(b.keys(l, &0)?.into_iter().collect::<BTreeSet<_>>(), even);
    assert_eq!(b.keys(v, &())?.len(), 201);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------

/// R2: value and reducing accesses without a current key fail.
fn no_current_key_value_and_reducing<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let vn = b.register(ValueStateDescriptor::<u64>::new("vn").with_namespace::<u32>())?;
    let r =
        b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64).with_namespace::<u32>())?;
    assert_eq!(b.current_key(), None);
    assert_eq!(b.current_key_group(), None);
    assert_err!(b.value(&v).get(), Error::NoCurrentKey, "value get");
    assert_err!(b.value(&v).update(1), Error::NoCurrentKey, "value update");
    assert_err!(b.value(&v).clear(), Error::NoCurrentKey, "value clear");
    assert_err!(
        b.value(&vn).namespace(&1).get(),
        Error::NoCurrentKey,
        "ns value get"
    );
    assert_err!(
        b.value(&vn).namespace(&1).update(1),
        Error::NoCurrentKey,
        "ns value update"
    );
    assert_err!(
        b.reducing(&r).namespace(&1).get(),
        Error::NoCurrentKey,
        "reducing get"
    );
    assert_err!(
        b.reducing(&r).namespace(&1).add(1),
        Error::NoCurrentKey,
        "reducing add"
    );
    assert_err!(
        b.reducing(&r).namespace(&1).clear(),
        Error::NoCurrentKey,
        "reducing clear"
    );
    assert_err!(
        b.reducing(&r).merge_namespaces(&1, &[2]),
        Error::NoCurrentKey,
        "reducing merge"
    );
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R2, R20, R21: list accesses without a current key fail, empty ones too.
fn no_current_key_list<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u64>::new("l").with_namespace::<u32>())?;
    let ns = 1u32;
    assert_err!(
        b.list(&l).namespace(&ns).get(),
        Error::NoCurrentKey,
        "list get"
    );
    assert_err!(
        b.list(&l).namespace(&ns).add(1),
        Error::NoCurrentKey,
        "list add"
    );
    assert_err!(
        b.list(&l).namespace(&ns).add_all(vec![1]),
        Error::NoCurrentKey,
        "add_all"
    );
    assert_err!(
        b.list(&l).namespace(&ns).add_all(vec![]),
        Error::NoCurrentKey,
        "add_all []"
    );
    assert_err!(
        b.list(&l).namespace(&ns).update(vec![1]),
        Error::NoCurrentKey,
        "update"
    );
    assert_err!(
        b.list(&l).namespace(&ns).update(vec![]),
        Error::NoCurrentKey,
        "update []"
    );
    assert_err!(
        b.list(&l).namespace(&ns).clear(),
        Error::NoCurrentKey,
        "list clear"
    );
    assert_err!(
        b.list(&l).merge_namespaces(&1, &[2, 3]),
        Error::NoCurrentKey,
        "list merge"
    );
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R2, R26: map accesses without a current key fail, empty ones too.
fn no_current_key_map<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    assert_err!(b.map(&m).get(&1), Error::NoCurrentKey, "map get");
    assert_err!(b.map(&m).contains(&1), Error::NoCurrentKey, "map contains");
    assert_err!(b.map(&m).put(1, 1), Error::NoCurrentKey, "map put");
    assert_err!(
        b.map(&m).put_all(vec![(1, 1)]),
        Error::NoCurrentKey,
        "map put_all"
    );
    assert_err!(
        b.map(&m).put_all(vec![]),
        Error::NoCurrentKey,
        "map put_all []"
    );
    assert_err!(b.map(&m).remove(&1), Error::NoCurrentKey, "map remove");
    assert_err!(b.map(&m).entries(), Error::NoCurrentKey, "map entries");
    assert_err!(b.map(&m).keys(), Error::NoCurrentKey, "map keys");
    assert_err!(b.map(&m).values(), Error::NoCurrentKey, "map values");
    assert_err!(b.map(&m).is_empty(), Error::NoCurrentKey, "map is_empty");
    assert_err!(b.map(&m).clear(), Error::NoCurrentKey, "map clear");
    assert_err!(b.map(&m).iter(), Error::NoCurrentKey, "map iter");
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R2: aggregating accesses without a current key fail.
fn no_current_key_aggregating<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount))?;
    let an = b.register(AggregatingStateDescriptor::new("an", SumCount).with_namespace::<u32>())?;
    assert_err!(b.aggregating(&a).get(), Error::NoCurrentKey, "agg get");
    assert_err!(b.aggregating(&a).add(1), Error::NoCurrentKey, "agg add");
    assert_err!(b.aggregating(&a).clear(), Error::NoCurrentKey, "agg clear");
    assert_err!(
        b.aggregating(&an).merge_namespaces(&1, &[2]),
        Error::NoCurrentKey,
        "agg merge"
    );
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// Max parallelism 10, owning key groups 0..=4 (as Flink's test base, but half of them).
fn half_range() -> (u32, KeyGroupRange) {
    (10, KeyGroupRange::new(0, 4).unwrap())
}

/// R1, R3, R5: a foreign key is accepted by `set_current_key`; value and list accesses fail and change nothing.
fn key_group_out_of_range_value_list<F: Factory>(f: &F) -> Result<()> {
    let (maxp, range) = half_range();
    let mut b = f.open::<u64>(maxp, range);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.register(ListStateDescriptor::<u64>::new("l").with_namespace::<u32>())?;
    let inside = pick_key(maxp, range, true, 0);
    let outside = pick_key(maxp, range, false, 0);
    let kg = kg_of(&outside, maxp);
    b.set_current_key(&inside);
    b.value(&v).update(1)?;
    b.set_current_key(&outside);
    assert_eq!(b.current_key(), Some(&outside));
    assert_eq!(b.current_key_group(), Some(kg));
    macro_rules! oor {
        ($e:expr, $what:literal) => {
            assert_err!(
                $e,
                Error::KeyGroupOutOfRange { key_group, range: r } if key_group == kg && r == range,
                $what
            )
        };
    }
    oor!(b.value(&v).get(), "value get");
    oor!(b.value(&v).update(2), "value update");
    oor!(b.value(&v).clear(), "value clear");
    oor!(b.list(&l).namespace(&1).get(), "list get");
    oor!(b.list(&l).namespace(&1).add(1), "list add");
    oor!(b.list(&l).namespace(&1).add_all(vec![1]), "list add_all");
    oor!(b.list(&l).namespace(&1).add_all(vec![]), "list add_all []");
    oor!(b.list(&l).namespace(&1).update(vec![1]), "list update");
    oor!(b.list(&l).namespace(&1).update(vec![]), "list update []");
    oor!(b.list(&l).namespace(&1).clear(), "list clear");
    oor!(b.list(&l).merge_namespaces(&1, &[2]), "list merge");
    assert_eq!(b.entry_count().unwrap(), 1, "failed writes change nothing");
    b.set_current_key(&inside);
    assert_eq!(b.value(&v).get()?, Some(1), "an owned key works again");
    Ok(())
}

/// R3, R5: map, reducing and aggregating accesses for a foreign key fail.
fn key_group_out_of_range_map_reducing_aggregating<F: Factory>(f: &F) -> Result<()> {
    let (maxp, range) = half_range();
    let mut b = f.open::<u64>(maxp, range);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    let r =
        b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64).with_namespace::<u32>())?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_namespace::<u32>())?;
    let outside = pick_key(maxp, range, false, 3);
    b.set_current_key(&outside);
    macro_rules! oor {
        ($e:expr, $what:literal) => {
            assert_err!($e, Error::KeyGroupOutOfRange { .. }, $what)
        };
    }
    oor!(b.map(&m).get(&1), "map get");
    oor!(b.map(&m).contains(&1), "map contains");
    oor!(b.map(&m).put(1, 1), "map put");
    oor!(b.map(&m).put_all(vec![(1, 1)]), "map put_all");
    oor!(b.map(&m).put_all(vec![]), "map put_all []");
    oor!(b.map(&m).remove(&1), "map remove");
    oor!(b.map(&m).entries(), "map entries");
    oor!(b.map(&m).is_empty(), "map is_empty");
    oor!(b.map(&m).clear(), "map clear");
    oor!(b.map(&m).iter(), "map iter");
    oor!(b.reducing(&r).namespace(&1).get(), "reducing get");
    oor!(b.reducing(&r).namespace(&1).add(1), "reducing add");
    oor!(b.reducing(&r).namespace(&1).clear(), "reducing clear");
    oor!(b.reducing(&r).merge_namespaces(&1, &[2]), "reducing merge");
    oor!(b.aggregating(&a).namespace(&1).get(), "agg get");
    oor!(b.aggregating(&a).namespace(&1).add(1), "agg add");
    oor!(b.aggregating(&a).namespace(&1).clear(), "agg clear");
    oor!(b.aggregating(&a).merge_namespaces(&1, &[2]), "agg merge");
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R3: a backend owning a sub-range serves the keys of that range.
fn owned_sub_range_accepts_its_keys<F: Factory>(f: &F) -> Result<()> {
    let range = KeyGroupRange::for_operator(128, 4, 1)?;
    let mut b = f.open::<u64>(128, range);
    assert_eq!(b.max_parallelism(), 128);
    assert_eq!(b.key_group_range(), range);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let keys: Vec<u64> = (0..200).map(|n| pick_key(128, range, true, n)).collect();
    for &k in &keys {
        b.set_current_key(&k);
        assert!(range.contains(b.current_key_group().unwrap()));
        b.value(&v).update(k * 2)?;
    }
    for &k in &keys {
        b.set_current_key(&k);
        assert_eq!(b.value(&v).get()?, Some(k * 2));
    }
    let entries = live_entries(&mut b, "v");
    assert_eq!(entries.len(), 200);
    assert!(entries.keys().all(|(kg, _, _)| range.contains(*kg)));
    Ok(())
}

/// R14: a namespaced state used without `.namespace` fails, naming the state.
fn namespace_required_without_namespace<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("nv").with_namespace::<u32>())?;
    let l = b.register(ListStateDescriptor::<u64>::new("nl").with_namespace::<u32>())?;
    let m = b.register(MapStateDescriptor::<u32, u32>::new("nm").with_namespace::<u32>())?;
    let r = b.register(ReducingStateDescriptor::new("nr", sum_u64).with_namespace::<u32>())?;
    let a = b.register(AggregatingStateDescriptor::new("na", SumCount).with_namespace::<u32>())?;
    b.set_current_key(&1);
    macro_rules! nsreq {
        ($e:expr, $name:literal) => {
            assert_err!($e, Error::NamespaceRequired { ref state } if state == $name, $name)
        };
    }
    nsreq!(b.value(&v).get(), "nv");
    nsreq!(b.value(&v).update(1), "nv");
    nsreq!(b.value(&v).clear(), "nv");
    nsreq!(b.list(&l).get(), "nl");
    nsreq!(b.list(&l).add(1), "nl");
    nsreq!(b.list(&l).add_all(vec![1]), "nl");
    nsreq!(b.list(&l).update(vec![1]), "nl");
    nsreq!(b.list(&l).clear(), "nl");
    nsreq!(b.map(&m).get(&1), "nm");
    nsreq!(b.map(&m).contains(&1), "nm");
    nsreq!(b.map(&m).put(1, 1), "nm");
    nsreq!(b.map(&m).put_all(vec![(1, 1)]), "nm");
    nsreq!(b.map(&m).remove(&1), "nm");
    nsreq!(b.map(&m).entries(), "nm");
    nsreq!(b.map(&m).is_empty(), "nm");
    nsreq!(b.map(&m).clear(), "nm");
    nsreq!(b.reducing(&r).get(), "nr");
    nsreq!(b.reducing(&r).add(1), "nr");
    nsreq!(b.reducing(&r).clear(), "nr");
    nsreq!(b.aggregating(&a).get(), "na");
    nsreq!(b.aggregating(&a).add(1), "na");
    nsreq!(b.aggregating(&a).clear(), "na");
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R13: the `()` namespace is implicit; `.namespace(&())` is the same.
fn unit_namespace_is_implicit_and_explicit<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    b.set_current_key(&1);
    b.value(&v).update(4)?;
    assert_eq!(b.value(&v).namespace(&()).get()?, Some(4));
    b.value(&v).namespace(&()).update(5)?;
    assert_eq!(b.value(&v).get()?, Some(5));
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R8: the same name and types give the same handle; the first function stays.
fn register_same_name_twice_returns_same_handle<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v1 = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l1 = b.register(ListStateDescriptor::<u64>::new("l").with_namespace::<u32>())?;
    let m1 = b.register(MapStateDescriptor::<u32, String>::new("m"))?;
    let r1 = b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64))?;
    let a1 = b.register(AggregatingStateDescriptor::new("a", SumCount))?;
    b.set_current_key(&1);
    b.value(&v1).update(3)?;
    let v2 = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l2 = b.register(ListStateDescriptor::<u64>::new("l").with_namespace::<u32>())?;
    let m2 = b.register(MapStateDescriptor::<u32, String>::new("m"))?;
    let r2 = b.register(ReducingStateDescriptor::<u64>::new("r", |a, b| a * b))?;
    let a2 = b.register(AggregatingStateDescriptor::new("a", SumCount))?;
    assert_eq!(v1, v2);
    assert_eq!(l1, l2);
    assert_eq!(m1, m2);
    assert_eq!(r1, r2);
    assert_eq!(a1, a2);
    assert_eq!(
        b.value(&v2).get()?,
        Some(3),
        "re-registering keeps the state"
    );
    assert_eq!(b.snapshot_state()?.states().len(), 5, "no duplicate state");
    b.reducing(&r2).add(3)?;
    b.reducing(&r2).add(4)?;
    assert_eq!(
        b.reducing(&r1).get()?,
        Some(7),
        "the first registration's reduce function stays in effect"
    );
    Ok(())
}

/// R9: the same name with another kind is a type mismatch naming the state.
fn register_other_kind_is_type_mismatch<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    b.register(ValueStateDescriptor::<u64>::new("s"))?;
    assert_err!(
        b.register(ListStateDescriptor::<u64>::new("s")),
        Error::StateTypeMismatch { ref name, .. } if name == "s",
        "list over value"
    );
    assert_err!(
        b.register(ReducingStateDescriptor::<u64>::new("s", sum_u64)),
        Error::StateTypeMismatch { ref name, .. } if name == "s",
        "reducing over value"
    );
    assert_err!(
        b.register(MapStateDescriptor::<u64, u64>::new("s")),
        Error::StateTypeMismatch { ref name, .. } if name == "s",
        "map over value"
    );
    b.register(AggregatingStateDescriptor::new("agg", SumCount))?;
    let err = b
        .register(ValueStateDescriptor::<(u64, u64)>::new("agg"))
        .unwrap_err();
    assert!(matches!(err, Error::StateTypeMismatch { .. }));
    assert!(
        err.to_string().contains("agg"),
        "the message names the state: {err}"
    );
    assert_eq!(err.kind(), ErrorKind::Usage);
    Ok(())
}

/// R9: the same name with other value, user-key or namespace types is a type mismatch.
fn register_other_types_is_type_mismatch<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    b.register(ValueStateDescriptor::<u64>::new("v"))?;
    b.register(MapStateDescriptor::<u32, u64>::new("m"))?;
    b.register(ListStateDescriptor::<u64>::new("l").with_namespace::<u32>())?;
    let mismatch = |r: Result<()>, what: &str, state: &str| match r {
        Err(Error::StateTypeMismatch { name, .. }) => assert_eq!(name, state, "{what}"),
        other => panic!("{what}: expected a type mismatch, got {other:?}"),
    };
    mismatch(
        b.register(ValueStateDescriptor::<u32>::new("v")).map(drop),
        "value type",
        "v",
    );
    mismatch(
        b.register(ValueStateDescriptor::<u64>::new("v").with_namespace::<u32>())
            .map(drop),
        "namespace type",
        "v",
    );
    mismatch(
        b.register(MapStateDescriptor::<u64, u64>::new("m"))
            .map(drop),
        "user key type",
        "m",
    );
    mismatch(
        b.register(MapStateDescriptor::<u32, u32>::new("m"))
            .map(drop),
        "map value type",
        "m",
    );
    mismatch(
        b.register(ListStateDescriptor::<u64>::new("l")).map(drop),
        "list without namespace",
        "l",
    );
    mismatch(
        b.register(ValueStateDescriptor::<usize>::new("v"))
            .map(drop),
        "usize is not u64, even with the same codec",
        "v",
    );
    Ok(())
}

/// R10: an empty name is rejected.
fn register_empty_name_is_rejected<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    assert_err!(
        b.register(ValueStateDescriptor::<u64>::new("")),
        Error::InvalidArgument(_),
        "v"
    );
    assert_err!(
        b.register(ListStateDescriptor::<u64>::new("")),
        Error::InvalidArgument(_),
        "l"
    );
    assert_err!(
        b.register(MapStateDescriptor::<u64, u64>::new("")),
        Error::InvalidArgument(_),
        "m"
    );
    assert_err!(
        b.register(ReducingStateDescriptor::<u64>::new("", sum_u64)),
        Error::InvalidArgument(_),
        "r"
    );
    assert_err!(
        b.register(AggregatingStateDescriptor::new("", SumCount)),
        Error::InvalidArgument(_),
        "a"
    );
    assert!(
        b.snapshot_state()?.states().is_empty(),
        "nothing was registered"
    );
    Ok(())
}

/// R7, R44: ids in registration order; `StateMeta`; snapshot states in order.
fn state_meta_describes_registration<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let m = b.register(MapStateDescriptor::<String, u32>::new("m").with_namespace::<u32>())?;
    let vm = b.state_meta(v.id()).expect("meta of v").clone();
    assert_eq!((vm.name.as_str(), vm.kind), ("v", StateKind::Value));
    assert_eq!(vm.value, CodecInfo::of::<u64>());
    assert_eq!(vm.namespace, CodecInfo::of::<()>());
    assert_eq!(vm.user_key, None);
    let mm = b.state_meta(m.id()).expect("meta of m").clone();
    assert_eq!((mm.name.as_str(), mm.kind), ("m", StateKind::Map));
    assert_eq!(mm.user_key, Some(CodecInfo::of::<String>()));
    assert_eq!(mm.namespace, CodecInfo::of::<u32>());
    assert_eq!(
        (v.id(), m.id()),
        (StateId(0), StateId(1)),
        "ids in registration order"
    );
    assert!(b.state_meta(StateId(999)).is_none());
    let l = b.register(ListStateDescriptor::<u8>::new("a-list"))?;
    assert_eq!(l.id(), StateId(2));
    let snap = b.snapshot_state()?;
    assert_eq!(snap.state("m").unwrap().meta(), &mm);
    let names: Vec<&str> = snap
        .states()
        .iter()
        .map(|s| s.meta().name.as_str())
        .collect();
    assert_eq!(
        names,
        vec!["v", "m", "a-list"],
        "snapshot states in registration order"
    );
    Ok(())
}

/// R11: a handle of another backend is unknown (absent id, or other types).
fn handle_of_another_backend_is_unknown<F: Factory>(f: &F) -> Result<()> {
    let mut a = open(f);
    a.register(ValueStateDescriptor::<u64>::new("x"))?;
    let v = a.register(ValueStateDescriptor::<u64>::new("v"))?;
    let mut b = open(f);
    b.set_current_key(&1);
    assert_err!(b.value(&v).get(), Error::UnknownState { .. }, "get");
    assert_err!(b.value(&v).update(1), Error::UnknownState { .. }, "update");
    assert_err!(b.keys(v, &()), Error::UnknownState { .. }, "keys");
    assert_eq!(b.entry_count().unwrap(), 0);
    // The id exists here with other types: still unknown.
    b.register(ValueStateDescriptor::<u64>::new("first"))?;
    let other = b.register(ListStateDescriptor::<u64>::new("second"))?;
    assert_eq!(other.id(), v.id());
    assert_err!(
        b.value(&v).get(),
        Error::UnknownState { .. },
        "get, other types"
    );
    assert_err!(
        b.value(&v).update(1),
        Error::UnknownState { .. },
        "update, other types"
    );
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// entry_count and independence
// ------------------------------------------------------------------------------------------

/// R43: `entry_count` counts (state, key, namespace) entries.
fn entry_count_counts_key_namespace_pairs<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v").with_namespace::<u32>())?;
    let l = b.register(ListStateDescriptor::<u64>::new("l"))?;
    assert_eq!(b.entry_count().unwrap(), 0);
    b.set_current_key(&1);
    b.value(&v).namespace(&1).update(1)?;
    b.value(&v).namespace(&1).update(2)?;
    assert_eq!(
        b.entry_count().unwrap(),
        1,
        "updating the same key twice is one entry"
    );
    b.value(&v).namespace(&2).update(1)?;
    assert_eq!(
        b.entry_count().unwrap(),
        2,
        "another namespace is another entry"
    );
    b.list(&l).add(1)?;
    b.list(&l).add(2)?;
    assert_eq!(
        b.entry_count().unwrap(),
        3,
        "a list is one entry whatever its length"
    );
    b.set_current_key(&2);
    b.value(&v).namespace(&1).update(1)?;
    assert_eq!(b.entry_count().unwrap(), 4);
    b.value(&v).namespace(&1).clear()?;
    b.set_current_key(&1);
    b.value(&v).namespace(&1).clear()?;
    b.value(&v).namespace(&2).clear()?;
    b.list(&l).clear()?;
    assert_eq!(
        b.entry_count().unwrap(),
        0,
        "clear brings the count back to 0"
    );
    Ok(())
}

/// R41, R43: states under one key are independent.
fn multiple_states_under_one_key_are_independent<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v1 = b.register(ValueStateDescriptor::<u64>::new("v1"))?;
    let v2 = b.register(ValueStateDescriptor::<u64>::new("v2"))?;
    let l1 = b.register(ListStateDescriptor::<u64>::new("l1"))?;
    let l2 = b.register(ListStateDescriptor::<u64>::new("l2"))?;
    b.set_current_key(&1);
    b.value(&v1).update(1)?;
    b.value(&v2).update(2)?;
    b.list(&l1).add(1)?;
    b.list(&l2).add(2)?;
    assert_eq!(b.value(&v1).get()?, Some(1));
    assert_eq!(b.value(&v2).get()?, Some(2));
    b.value(&v1).clear()?;
    b.list(&l2).update(vec![])?;
    assert_eq!(b.value(&v1).get()?, None);
    assert_eq!(b.value(&v2).get()?, Some(2));
    assert_eq!(b.list(&l1).get()?, vec![1]);
    assert!(b.list(&l2).get()?.is_empty());
    let snap = b.snapshot_state()?;
    assert_eq!(snap.canonical_entries("v1").unwrap().unwrap().len(), 0);
    assert_eq!(snap.canonical_entries("v2").unwrap().unwrap().len(), 1);
    Ok(())
}

/// R1, R48: many keys over every key group; canonical entries after clears.
fn many_keys_across_key_groups<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let n = f.scaled(5_000).max(2_000);
    let mut groups = BTreeSet::new();
    for k in 0..n {
        b.set_current_key(&k);
        let kg = b.current_key_group().unwrap();
        assert_eq!(kg, kg_of(&k, MAXP), "key group of {k}");
        groups.insert(kg);
        b.value(&v).update(k ^ 0xabcd)?;
    }
    assert_eq!(
        groups.len(),
        MAXP as usize,
        "the keys cover every key group"
    );
    assert_eq!(b.entry_count().unwrap(), n as usize);
    for k in 0..n {
        b.set_current_key(&k);
        assert_eq!(b.value(&v).get()?, Some(k ^ 0xabcd));
    }
    for k in (0..n).step_by(2) {
        b.set_current_key(&k);
        b.value(&v).clear()?;
    }
    assert_eq!(b.entry_count().unwrap(), (n / 2) as usize);
    let entries = live_entries(&mut b, "v");
    let expected: CanonicalEntries = (1..n)
        .step_by(2)
        .map(|k| centry(MAXP, &k, &(), enc_value(&(k ^ 0xabcd))))
        .collect();
    assert_eq!(entries, expected);
    Ok(())
}

/// R42, R43: one key group holding many entries.
fn single_key_group_backend<F: Factory>(f: &F) -> Result<()> {
    let mut b = f.open::<u64>(1, KeyGroupRange::all(1)?);
    let l = b.register(ListStateDescriptor::<u64>::new("l").with_namespace::<u32>())?;
    for k in 0..600u64 {
        b.set_current_key(&k);
        assert_eq!(b.current_key_group(), Some(0));
        b.list(&l).namespace(&((k % 3) as u32)).add(k)?;
    }
    assert_eq!(b.entry_count().unwrap(), 600);
    assert_eq!(b.keys(l, &1)?.len(), 200);
    let snap = b.snapshot_state()?;
    assert_eq!(snap.canonical_entries("l").unwrap().unwrap().len(), 600);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Snapshots
// ------------------------------------------------------------------------------------------

/// R48, R49: the canonical encoding of every kind of state.
fn snapshot_canonical_form<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v").with_namespace::<u32>())?;
    let l = b.register(ListStateDescriptor::<String>::new("l"))?;
    let m = b.register(MapStateDescriptor::<u32, String>::new("m"))?;
    let r = b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64))?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount))?;
    b.set_current_key(&42);
    b.value(&v).namespace(&7).update(9)?;
    b.list(&l).add_all(vec!["x".into(), "y".into()])?;
    // Put in an order that differs from the byte order of the user keys (little-endian u32).
    b.map(&m).put(256, "b".into())?;
    b.map(&m).put(1, "a".into())?;
    b.map(&m).put(2, "c".into())?;
    b.reducing(&r).add(5)?;
    b.reducing(&r).add(6)?;
    b.aggregating(&a).add(3)?;
    let snap = b.snapshot_state()?;
    assert_eq!(snap.max_parallelism(), MAXP);
    assert_eq!(snap.key_group_range(), KeyGroupRange::all(MAXP)?);
    assert_eq!(snap.entry_count().unwrap(), 5);
    let one = |e| -> CanonicalEntries { [e].into_iter().collect() };
    assert_eq!(
        snap.canonical_entries("v").unwrap().unwrap(),
        one(centry(MAXP, &42u64, &7u32, enc_value(&9u64)))
    );
    assert_eq!(
        snap.canonical_entries("l").unwrap().unwrap(),
        one(centry(
            MAXP,
            &42u64,
            &(),
            enc_list(&["x".to_string(), "y".to_string()])
        ))
    );
    let map_state = enc_map(&[(1u32, "a".to_string()), (256, "b".into()), (2, "c".into())]);
    if let EncodedState::Map(e) = &map_state {
        assert_eq!(
            e[0].0,
            to_bytes(&256u32),
            "the expectation is sorted by bytes"
        );
    }
    assert_eq!(
        snap.canonical_entries("m").unwrap().unwrap(),
        one(centry(MAXP, &42u64, &(), map_state))
    );
    assert_eq!(
        snap.canonical_entries("r").unwrap().unwrap(),
        one(centry(MAXP, &42u64, &(), enc_value(&11u64)))
    );
    assert_eq!(
        snap.canonical_entries("a").unwrap().unwrap(),
        one(centry(MAXP, &42u64, &(), enc_value(&(3u64, 1u64))))
    );
    assert!(snap.canonical_entries("nope").unwrap().is_none());
    Ok(())
}

/// R45, R48: snapshot isolation and canonical form with `String` keys.
fn snapshot_with_string_keys<F: Factory>(f: &F) -> Result<()> {
    let mut b = open_str(f);
    let v = b.register(ValueStateDescriptor::<u32>::new("v"))?;
    for (i, name) in ["alice", "bob", "carol"].iter().enumerate() {
        b.set_current_key(&name.to_string());
        b.value(&v).update(i as u32)?;
    }
    let snap = b.snapshot_state()?;
    b.set_current_key(&"bob".to_string());
    b.value(&v).clear()?;
    b.set_current_key(&"dave".to_string());
    b.value(&v).update(3)?;
    let expected: CanonicalEntries = ["alice", "bob", "carol"]
        .iter()
        .enumerate()
        .map(|(i, n)| centry(MAXP, &n.to_string(), &(), enc_value(&(i as u32))))
        .collect();
    assert_eq!(snap.canonical_entries("v").unwrap().unwrap(), expected);
    let now: BTreeSet<String> = b.keys(v, &())?.into_iter().collect();
    assert_eq!(
        now,
        ["alice", "carol", "dave"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    Ok(())
}

/// R45: value updates, clears and new entries do not reach a snapshot.
fn snapshot_isolation_value<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    for k in 1..=3u64 {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
    }
    let before = live_entries(&mut b, "v");
    let snap = b.snapshot_state()?;
    b.set_current_key(&1);
    b.value(&v).update(100)?;
    b.set_current_key(&2);
    b.value(&v).clear()?;
    b.set_current_key(&4);
    b.value(&v).update(4)?;
    assert_eq!(snap.canonical_entries("v").unwrap().unwrap(), before);
    assert_eq!(snap.state("v").unwrap().entry_count().unwrap(), 3);
    let after = live_entries(&mut b, "v");
    assert_ne!(after, before, "the live state did change");
    assert_eq!(after.len(), 3);
    Ok(())
}

/// R45: list adds, updates and clears do not reach a snapshot.
fn snapshot_isolation_list<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u64>::new("l"))?;
    for k in 1..=4u64 {
        b.set_current_key(&k);
        b.list(&l).add_all(vec![k, k + 1])?;
    }
    let before = live_entries(&mut b, "l");
    let snap = b.snapshot_state()?;
    b.set_current_key(&1);
    b.list(&l).add(9)?;
    b.set_current_key(&2);
    b.list(&l).add_all(vec![7, 8])?;
    b.set_current_key(&3);
    b.list(&l).update(vec![0])?;
    b.set_current_key(&4);
    b.list(&l).update(vec![])?;
    b.set_current_key(&5);
    b.list(&l).add(5)?;
    assert_eq!(snap.canonical_entries("l").unwrap().unwrap(), before);
    b.set_current_key(&1);
    assert_eq!(b.list(&l).get()?, vec![1, 2, 9]);
    Ok(())
}

/// R45: map puts, removes, cursor writes and clears do not reach a snapshot.
fn snapshot_isolation_map<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m"))?;
    for k in 1..=3u64 {
        b.set_current_key(&k);
        b.map(&m).put_all((0..10).map(|i| (i, i)))?;
    }
    let before = live_entries(&mut b, "m");
    let snap = b.snapshot_state()?;
    b.set_current_key(&1);
    b.map(&m).put(0, 100)?;
    b.map(&m).put(50, 50)?;
    b.map(&m).remove(&1)?;
    b.set_current_key(&2);
    {
        let mut cursor = b.map(&m).iter()?;
        while let Some(e) = cursor.next() {
            let (k, _) = e?;
            if k < 5 {
                cursor.remove_current()?;
            } else {
                cursor.set_current_value(0)?;
            }
        }
    }
    b.set_current_key(&3);
    b.map(&m).clear()?;
    assert_eq!(snap.canonical_entries("m").unwrap().unwrap(), before);
    assert_eq!(snap.state("m").unwrap().entry_count().unwrap(), 3);
    assert_eq!(b.entry_count().unwrap(), 2);
    Ok(())
}

/// R45: reducing adds and in-place accumulator changes do not reach a snapshot.
fn snapshot_isolation_reducing_aggregating<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let r = b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64))?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount))?;
    let c = b.register(AggregatingStateDescriptor::new("c", Collect))?;
    b.set_current_key(&1);
    b.reducing(&r).add(1)?;
    b.aggregating(&a).add(1)?;
    b.aggregating(&c).add(1)?;
    let snap = b.snapshot_state()?;
    b.reducing(&r).add(2)?;
    b.aggregating(&a).add(2)?;
    b.aggregating(&c).add(2)?;
    let one = |s: EncodedState| -> CanonicalEntries {
        [centry(MAXP, &1u64, &(), s)].into_iter().collect()
    };
    assert_eq!(
        snap.canonical_entries("r").unwrap().unwrap(),
        one(enc_value(&1u64))
    );
    assert_eq!(
        snap.canonical_entries("a").unwrap().unwrap(),
        one(enc_value(&(1u64, 1u64)))
    );
    assert_eq!(
        snap.canonical_entries("c").unwrap().unwrap(),
        one(enc_value(&vec![1u32])),
        "an accumulator changed in place is not shared with the snapshot"
    );
    assert_eq!(b.aggregating(&c).get()?, Some("1,2".to_string()));
    b.reducing(&r).clear()?;
    b.aggregating(&a).clear()?;
    assert_eq!(
        snap.canonical_entries("r").unwrap().unwrap(),
        one(enc_value(&1u64))
    );
    assert_eq!(
        snap.canonical_entries("a").unwrap().unwrap(),
        one(enc_value(&(1u64, 1u64)))
    );
    Ok(())
}

/// R45: merges do not reach a snapshot.
fn snapshot_isolation_merge<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    let r =
        b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64).with_namespace::<u32>())?;
    b.set_current_key(&1);
    for ns in 1..=3u32 {
        b.list(&l).namespace(&ns).add(ns)?;
        b.reducing(&r).namespace(&ns).add(u64::from(ns))?;
    }
    let before_l = live_entries(&mut b, "l");
    let before_r = live_entries(&mut b, "r");
    let snap = b.snapshot_state()?;
    b.list(&l).merge_namespaces(&1, &[2, 3])?;
    b.reducing(&r).merge_namespaces(&4, &[1, 2, 3])?;
    assert_eq!(snap.canonical_entries("l").unwrap().unwrap(), before_l);
    assert_eq!(snap.canonical_entries("r").unwrap().unwrap(), before_r);
    assert_eq!(snap.canonical_entries("l").unwrap().unwrap().len(), 3);
    assert_eq!(b.list(&l).namespace(&1).get()?, vec![1, 2, 3]);
    assert_eq!(b.reducing(&r).namespace(&4).get()?, Some(6));
    assert_eq!(b.entry_count().unwrap(), 2);
    Ok(())
}

/// R46: several snapshots each keep their own instant.
fn concurrent_snapshots_keep_their_own_views<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let mut snaps = Vec::new();
    let mut expected = Vec::new();
    for round in 0..5u64 {
        for k in 0..50u64 {
            b.set_current_key(&k);
            if (k + round) % 4 == 0 {
                b.value(&v).clear()?;
            } else {
                b.value(&v).update(k * 100 + round)?;
            }
        }
        expected.push(live_entries(&mut b, "v"));
        snaps.push(b.snapshot_state()?);
    }
    for w in expected.windows(2) {
        assert_ne!(w[0], w[1], "every round changes the state");
    }
    // Drop one from the middle: the others are unaffected.
    snaps.remove(2);
    expected.remove(2);
    for (i, (snap, want)) in snaps.iter().zip(&expected).enumerate() {
        assert_eq!(
            &snap.canonical_entries("v").unwrap().unwrap(),
            want,
            "snapshot {i}"
        );
    }
    Ok(())
}

/// R44, R49: snapshots without state or without entries.
fn snapshot_of_empty_backend_is_empty<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let snap = b.snapshot_state()?;
    assert!(snap.states().is_empty());
    assert_eq!(snap.entry_count().unwrap(), 0);
    assert!(snap.canonical_entries("v").unwrap().is_none());
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let snap = b.snapshot_state()?;
    assert_eq!(snap.states().len(), 1);
    assert_eq!(
        snap.canonical_entries("v").unwrap(),
        Some(CanonicalEntries::new())
    );
    assert_eq!(snap.entry_count().unwrap(), 0);
    b.set_current_key(&1);
    b.value(&v).update(1)?;
    b.value(&v).clear()?;
    let snap = b.snapshot_state()?;
    assert_eq!(
        snap.canonical_entries("v").unwrap(),
        Some(CanonicalEntries::new())
    );
    Ok(())
}

/// R48: a snapshot covers the owned key groups only.
fn snapshot_covers_only_owned_key_groups<F: Factory>(f: &F) -> Result<()> {
    let range = KeyGroupRange::new(3, 6)?;
    let mut b = f.open::<u64>(10, range);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let keys: Vec<u64> = (0..40).map(|n| pick_key(10, range, true, n)).collect();
    for &k in &keys {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
    }
    let snap = b.snapshot_state()?;
    assert_eq!(snap.key_group_range(), range);
    assert_eq!(snap.max_parallelism(), 10);
    let expected: CanonicalEntries = keys
        .iter()
        .map(|k| centry(10, k, &(), enc_value(k)))
        .collect();
    assert_eq!(snap.canonical_entries("v").unwrap().unwrap(), expected);
    let table = snap.state("v").unwrap();
    let mut outside = 0;
    for kg in [0u16, 1, 2, 7, 8, 9] {
        table.visit_key_group(kg, &mut |_| outside += 1).unwrap();
    }
    assert_eq!(outside, 0, "key groups outside the range have no entries");
    let mut in_kg3 = Vec::new();
    table
        .visit_key_group(3, &mut |e| in_kg3.push(u64::decode(&e.key).unwrap()))
        .unwrap();
    let want: Vec<u64> = sorted(keys.iter().copied().filter(|k| kg_of(k, 10) == 3).collect());
    assert_eq!(sorted(in_kg3), want);
    Ok(())
}

/// R47: a snapshot is read on other threads while the task thread writes.
fn snapshot_is_send_and_readable_from_another_thread<F: Factory>(f: &F) -> Result<()> {
    fn assert_send_sync_static<T: Send + Sync + 'static>(_: &T) {}
    let mut b = open(f);
    let n = f.scaled(2_000);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.register(ListStateDescriptor::<u64>::new("l"))?;
    for k in 0..n {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
        b.list(&l).add(k)?;
    }
    let snap = b.snapshot_state()?;
    assert_send_sync_static(&snap);
    let expected_v = snap.canonical_entries("v").unwrap().unwrap();
    let expected_l = snap.canonical_entries("l").unwrap().unwrap();
    assert_eq!(expected_v.len(), n as usize);
    let started = Arc::new(AtomicBool::new(false));
    let reader = {
        let snap = snap.clone();
        let expected_v = expected_v.clone();
        let started = started.clone();
        std::thread::spawn(move || {
            started.store(true, Ordering::SeqCst);
            for _ in 0..5 {
                assert_eq!(snap.canonical_entries("v").unwrap().unwrap(), expected_v);
            }
            snap.entry_count().unwrap()
        })
    };
    // Keep writing on this thread while the other one reads.
    let mut round = 0u64;
    while !started.load(Ordering::SeqCst) || round < 3 {
        for k in 0..n {
            b.set_current_key(&k);
            b.value(&v).update(k + round + 1)?;
            if k % 3 == 0 {
                b.list(&l).add(round)?;
            }
        }
        round += 1;
    }
    assert_eq!(reader.join().expect("reader thread"), 2 * n as usize);
    // A scoped reader borrows the expectation and reads while this thread clears everything.
    std::thread::scope(|s| -> Result<()> {
        let reader = s.spawn(|| snap.canonical_entries("l").unwrap().unwrap() == expected_l);
        for k in 0..n {
            b.set_current_key(&k);
            b.value(&v).clear()?;
            b.list(&l).clear()?;
        }
        assert!(reader.join().unwrap(), "the list view did not change");
        Ok(())
    })?;
    assert_eq!(b.entry_count().unwrap(), 0);
    assert_eq!(snap.canonical_entries("v").unwrap().unwrap(), expected_v);
    drop(snap);
    Ok(())
}

/// R50: writes after snapshots are dropped.
fn dropping_snapshots_then_writing_works<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    for k in 0..500u64 {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
    }
    let s1 = b.snapshot_state()?;
    let s2 = b.snapshot_state()?;
    for k in 0..250u64 {
        b.set_current_key(&k);
        b.value(&v).update(k + 1)?;
    }
    drop(s1);
    let s3 = b.snapshot_state()?;
    drop(s2);
    for k in 0..500u64 {
        b.set_current_key(&k);
        b.value(&v).update(k + 2)?;
    }
    drop(s3);
    for k in 0..500u64 {
        b.set_current_key(&k);
        if k % 2 == 0 {
            b.value(&v).clear()?;
        }
    }
    for k in 0..500u64 {
        b.set_current_key(&k);
        let want = (k % 2 == 1).then_some(k + 2);
        assert_eq!(b.value(&v).get()?, want);
    }
    assert_eq!(b.entry_count().unwrap(), 250);
    Ok(())
}

/// R44, R45: states registered after a snapshot are not in it.
fn register_new_state_after_snapshot<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    b.set_current_key(&1);
    b.value(&v).update(1)?;
    let s1 = b.snapshot_state()?;
    let w = b.register(ValueStateDescriptor::<u64>::new("w"))?;
    b.value(&w).update(2)?;
    b.value(&v).update(3)?;
    let s2 = b.snapshot_state()?;
    let x = b.register(ListStateDescriptor::<u64>::new("x"))?;
    b.list(&x).add(4)?;
    assert!(
        s1.state("w").is_none(),
        "a snapshot has only the states registered before it"
    );
    assert_eq!(s1.states().len(), 1);
    assert_eq!(
        s1.canonical_entries("v").unwrap().unwrap(),
        [centry(MAXP, &1u64, &(), enc_value(&1u64))]
            .into_iter()
            .collect()
    );
    assert_eq!(s2.states().len(), 2);
    assert_eq!(s2.canonical_entries("w").unwrap().unwrap().len(), 1);
    assert!(s2.canonical_entries("x").unwrap().is_none());
    assert_eq!(b.snapshot_state()?.states().len(), 3);
    assert_eq!(b.value(&w).get()?, Some(2));
    Ok(())
}

/// R45, R49: 50k entries, all rewritten after the snapshot.
fn large_state_snapshot_isolation<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let n = f.scaled(50_000);
    let extra = n / 10;
    for k in 0..n {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
    }
    let snap = b.snapshot_state()?;
    for k in 0..n {
        b.set_current_key(&k);
        if k % 10 == 0 {
            b.value(&v).clear()?;
        } else {
            b.value(&v).update(k + 1)?;
        }
    }
    for k in n..n + extra {
        b.set_current_key(&k);
        b.value(&v).update(k)?;
    }
    assert_eq!(snap.state("v").unwrap().entry_count().unwrap(), n as usize);
    assert_eq!(snap.entry_count().unwrap(), n as usize);
    let entries = snap.canonical_entries("v").unwrap().unwrap();
    assert_eq!(entries.len(), n as usize);
    for ((kg, kb, nsb), state) in &entries {
        let k = u64::decode(kb).unwrap();
        assert_eq!(*kg, kg_of(&k, MAXP));
        assert!(nsb.is_empty());
        assert_eq!(state, &enc_value(&k), "key {k}");
    }
    assert_eq!(b.entry_count().unwrap(), (n - n / 10 + extra) as usize);
    b.set_current_key(&7);
    assert_eq!(b.value(&v).get()?, Some(8));
    Ok(())
}

/// R45, R46: snapshots while many entries in few key groups come and go.
fn snapshot_while_map_grows_and_shrinks<F: Factory>(f: &F) -> Result<()> {
    // Many (key, namespace) entries in few key groups, so that the backend's per-key-group
    // structures grow and shrink while several snapshots are alive.
    let mut b = f.open::<u64>(2, KeyGroupRange::all(2)?);
    let m = b.register(MapStateDescriptor::<u32, u32>::new("m").with_namespace::<u32>())?;
    let mut model: BTreeMap<(u64, u32), BTreeMap<u32, u32>> = BTreeMap::new();
    let mut snaps = Vec::new();
    let encode = |model: &BTreeMap<(u64, u32), BTreeMap<u32, u32>>| -> CanonicalEntries {
        model
            .iter()
            .map(|((k, ns), map)| {
                let e: Vec<(u32, u32)> = map.iter().map(|(a, b)| (*a, *b)).collect();
                centry(2, k, ns, enc_map(&e))
            })
            .collect()
    };
    for round in 0..6u32 {
        for k in 0..300u64 {
            b.set_current_key(&k);
            let ns = (k as u32 + round) % 3;
            if (k + u64::from(round)) % 5 == 0 {
                b.map(&m).namespace(&ns).clear()?;
                model.remove(&(k, ns));
            } else {
                b.map(&m).namespace(&ns).put(round, k as u32)?;
                model.entry((k, ns)).or_default().insert(round, k as u32);
            }
        }
        snaps.push((b.snapshot_state()?, encode(&model)));
    }
    for (i, (snap, want)) in snaps.iter().enumerate() {
        assert_eq!(
            &snap.canonical_entries("m").unwrap().unwrap(),
            want,
            "snapshot {i}"
        );
    }
    assert_eq!(live_entries(&mut b, "m"), encode(&model));
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Error precedence, merges with nothing to merge, copies
// ------------------------------------------------------------------------------------------

/// R4: `NamespaceRequired`, then `NoCurrentKey`, then `KeyGroupOutOfRange`, then `UnknownState`.
fn error_precedence<F: Factory>(f: &F) -> Result<()> {
    let (maxp, range) = half_range();
    let mut other = f.open::<u64>(maxp, range);
    other.register(ValueStateDescriptor::<u64>::new("x0"))?;
    // Id 1, which `b` below never issues: an unknown handle there.
    let foreign = other.register(ValueStateDescriptor::<u64>::new("x1").with_namespace::<u32>())?;
    let mut b = f.open::<u64>(maxp, range);
    let v = b.register(ValueStateDescriptor::<u64>::new("v").with_namespace::<u32>())?;
    // No current key.
    assert_err!(
        b.value(&v).get(),
        Error::NamespaceRequired { .. },
        "ns before key"
    );
    assert_err!(
        b.value(&foreign).get(),
        Error::NamespaceRequired { .. },
        "ns before key and handle"
    );
    assert_err!(
        b.value(&foreign).namespace(&1).update(1),
        Error::NoCurrentKey,
        "key before handle"
    );
    // A key outside the range.
    b.set_current_key(&pick_key(maxp, range, false, 0));
    assert_err!(
        b.value(&v).update(1),
        Error::NamespaceRequired { .. },
        "ns before range"
    );
    assert_err!(
        b.value(&foreign).namespace(&1).get(),
        Error::KeyGroupOutOfRange { .. },
        "range before handle"
    );
    // An owned key.
    b.set_current_key(&pick_key(maxp, range, true, 0));
    assert_err!(
        b.value(&foreign).namespace(&1).get(),
        Error::UnknownState { .. },
        "handle"
    );
    assert_eq!(b.entry_count().unwrap(), 0);
    Ok(())
}

/// R40: `merge_namespaces` checks the current key and the handle even with nothing to merge.
fn merge_with_nothing_to_merge_still_checks_the_key<F: Factory>(f: &F) -> Result<()> {
    let (maxp, range) = half_range();
    let mut b = f.open::<u64>(maxp, range);
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    let r =
        b.register(ReducingStateDescriptor::<u64>::new("r", sum_u64).with_namespace::<u32>())?;
    let a = b.register(AggregatingStateDescriptor::new("a", SumCount).with_namespace::<u32>())?;
    assert_err!(
        b.list(&l).merge_namespaces(&1, &[]),
        Error::NoCurrentKey,
        "list []"
    );
    assert_err!(
        b.list(&l).merge_namespaces(&1, &[1, 1]),
        Error::NoCurrentKey,
        "list [target]"
    );
    assert_err!(
        b.reducing(&r).merge_namespaces(&1, &[]),
        Error::NoCurrentKey,
        "red []"
    );
    assert_err!(
        b.aggregating(&a).merge_namespaces(&1, &[1]),
        Error::NoCurrentKey,
        "agg [target]"
    );
    b.set_current_key(&pick_key(maxp, range, false, 1));
    assert_err!(
        b.list(&l).merge_namespaces(&1, &[]),
        Error::KeyGroupOutOfRange { .. },
        "foreign list []"
    );
    assert_err!(
        b.reducing(&r).merge_namespaces(&1, &[1]),
        Error::KeyGroupOutOfRange { .. },
        "foreign red [target]"
    );
    assert_err!(
        b.aggregating(&a).merge_namespaces(&1, &[]),
        Error::KeyGroupOutOfRange { .. },
        "foreign agg []"
    );
    // With an owned key, nothing to merge is a no-op.
    b.set_current_key(&pick_key(maxp, range, true, 1));
    b.list(&l).namespace(&1).add(1)?;
    b.list(&l).merge_namespaces(&1, &[])?;
    b.list(&l).merge_namespaces(&1, &[1])?;
    b.reducing(&r).merge_namespaces(&2, &[])?;
    assert_eq!(b.list(&l).namespace(&1).get()?, vec![1]);
    assert_eq!(b.entry_count().unwrap(), 1);
    Ok(())
}

/// R6: changing a returned value never changes the state.
fn reads_return_copies<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<Vec<u32>>::new("v"))?;
    let l = b.register(ListStateDescriptor::<String>::new("l"))?;
    let m = b.register(MapStateDescriptor::<u32, Vec<u8>>::new("m"))?;
    b.set_current_key(&1);
    b.value(&v).update(vec![1])?;
    b.list(&l).add("a".into())?;
    b.map(&m).put(1, vec![1])?;
    let snap_before = live_entries(&mut b, "m");
    let mut got = b.value(&v).get()?.unwrap();
    got.push(2);
    let mut list = b.list(&l).get()?;
    list[0].push('!');
    list.push("b".into());
    let mut entries = b.map(&m).entries()?;
    entries[0].1.push(2);
    let mut one = b.map(&m).get(&1)?.unwrap();
    one.clear();
    assert_eq!(b.value(&v).get()?, Some(vec![1]));
    assert_eq!(b.list(&l).get()?, vec!["a".to_string()]);
    assert_eq!(b.map(&m).get(&1)?, Some(vec![1]));
    assert_eq!(live_entries(&mut b, "m"), snap_before);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The suite
// ------------------------------------------------------------------------------------------

/// `conformance_suite!(name, factory)`: a module `name` with one `#[test]` per case, each
/// running the case against backends opened by `factory`.
/// `keys_and_namespaces` (Flink's `getKeysAndNamespaces`): every (key, namespace) with an
/// entry of a state, each once, without a current key; with a TTL, only live ones (R63).
fn keys_and_namespaces_lists_every_entry<F: Factory>(f: &F) -> Result<()> {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = f.open_clocked::<u64>(MAXP, KeyGroupRange::all(MAXP).unwrap(), clock.clone());
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_namespace::<u32>())?;
    let t = b.register(
        ValueStateDescriptor::<u32>::new("t")
            .with_namespace::<u32>()
            .with_ttl(TtlConfig::after(std::time::Duration::from_millis(10))),
    )?;
    let mut want = Vec::new();
    for key in 0..20u64 {
        b.set_current_key(&key);
        for ns in 0..(key % 3) as u32 {
            b.list(&l).namespace(&ns).add(1)?;
            want.push((key, ns));
        }
        b.value(&t).namespace(&7).update(1)?;
    }
    let mut got = b.keys_and_namespaces(l)?;
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(b.keys_and_namespaces(t)?.len(), 20);
    clock.set(10);
    assert!(
        b.keys_and_namespaces(t)?.is_empty(),
        "expired entries are not listed"
    );
    Ok(())
}

/// `handle(name)`: the handle of a state found by name (with or without a TTL, of every kind);
/// another kind or codec is a type mismatch, an unknown name an error; the handle reads and
/// writes what the registered one does, also after a restore (into the heap backend).
fn handles_are_found_by_name<F: Factory>(f: &F) -> Result<()> {
    let mut b = open(f);
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    b.register(MapStateDescriptor::<u32, String>::new("m").with_namespace::<u8>())?;
    b.register(
        ListStateDescriptor::<u32>::new("l")
            .with_ttl(TtlConfig::after(std::time::Duration::from_secs(3600))),
    )?;
    b.set_current_key(&3);
    b.value(&v).update(9)?;
    let by_name: ValueState<u64> = b.handle("v")?;
    assert_eq!(b.value(&by_name).get()?, Some(9));
    let m: MapState<u32, String, u8> = b.handle("m")?;
    b.map(&m).namespace(&1).put(2, "two".into())?;
    let l: ListState<u32> = b.handle("l")?;
    b.list(&l).add(5)?;
    assert_eq!(
        b.list(&l).get()?,
        vec![5],
        "a TTL state by its user-facing handle"
    );
    assert_err!(
        b.handle::<ValueState<u32>>("v"),
        Error::StateTypeMismatch { .. },
        "another value codec"
    );
    assert_err!(
        b.handle::<ListState<u64>>("v"),
        Error::StateTypeMismatch { .. },
        "another kind"
    );
    assert_err!(
        b.handle::<ValueState<u64>>("nope"),
        Error::InvalidArgument(_),
        "an unknown name"
    );
    assert_eq!(b.state_id("v"), Some(v.id()));
    assert_eq!(b.state_id("nope"), None);
    let snapshot = b.snapshot_state()?;
    let mut r = Backend::<u64>::restore(BackendConfig::heap().max_parallelism(MAXP), &[&snapshot])?;
    r.register(ValueStateDescriptor::<u64>::new("v"))?;
    let again: ValueState<u64> = r.handle("v")?;
    r.set_current_key(&3);
    assert_eq!(r.value(&again).get()?, Some(9));
    Ok(())
}

macro_rules! conformance_suite {
    ($module:ident, $factory:expr) => {
        conformance_suite!(@cases $module, $factory;
            value_get_absent_is_none,
            value_update_get_overwrite,
            value_clear_removes_value,
            value_clear_absent_is_noop,
            clear_only_current_key_and_namespace,
            list_get_absent_is_empty,
            list_add_preserves_order,
            list_add_all_appends_in_order,
            list_add_all_empty_on_absent_creates_nothing,
            list_add_all_empty_on_non_empty_is_noop,
            list_update_replaces,
            list_update_empty_clears,
            list_clear,
            map_absent_reads,
            map_put_get_contains,
            map_put_all_later_entry_wins,
            map_put_all_empty_on_absent_creates_nothing,
            map_remove_and_remove_absent,
            map_keys_values_entries,
            map_is_empty_after_removing_all,
            map_clear,
            map_cursor_visits_every_entry,
            borrowing_reads_see_what_get_returns,
            borrowing_reads_fail_as_get_does,
            map_cursor_remove_current,
            map_cursor_second_remove_without_next_fails,
            map_cursor_remove_before_next_fails,
            map_cursor_set_current_value_writes_through,
            reducing_get_absent_is_none,
            reducing_add_applies_reduce_in_order,
            reducing_keys_are_independent,
            aggregating_get_absent_is_none,
            aggregating_add_mutable_accumulator,
            aggregating_clear_starts_fresh_accumulator,
            merge_list_sources_spread,
            merge_list_into_absent_target,
            merge_list_one_source_empty,
            merge_list_all_empty_stays_absent,
            merge_list_target_already_has_all,
            merge_list_target_among_sources,
            merge_only_touches_current_key,
            merge_reducing,
            merge_aggregating,
            merge_aggregating_heap_accumulator,
            namespaces_isolate_state,
            keys_returns_exactly_keys_with_entries,
            keys_excludes_removed_entries,
            keys_needs_no_current_key,
            keys_and_values_with_string_keys,
            no_current_key_value_and_reducing,
            no_current_key_list,
            no_current_key_map,
            no_current_key_aggregating,
            key_group_out_of_range_value_list,
            key_group_out_of_range_map_reducing_aggregating,
            owned_sub_range_accepts_its_keys,
            namespace_required_without_namespace,
            unit_namespace_is_implicit_and_explicit,
            register_same_name_twice_returns_same_handle,
            register_other_kind_is_type_mismatch,
            register_other_types_is_type_mismatch,
            register_empty_name_is_rejected,
            state_meta_describes_registration,
            handle_of_another_backend_is_unknown,
            entry_count_counts_key_namespace_pairs,
            multiple_states_under_one_key_are_independent,
            many_keys_across_key_groups,
            single_key_group_backend,
            snapshot_canonical_form,
            snapshot_with_string_keys,
            snapshot_isolation_value,
            snapshot_isolation_list,
            snapshot_isolation_map,
            snapshot_isolation_reducing_aggregating,
            snapshot_isolation_merge,
            concurrent_snapshots_keep_their_own_views,
            snapshot_of_empty_backend_is_empty,
            snapshot_covers_only_owned_key_groups,
            snapshot_is_send_and_readable_from_another_thread,
            dropping_snapshots_then_writing_works,
            register_new_state_after_snapshot,
            large_state_snapshot_isolation,
            snapshot_while_map_grows_and_shrinks,
            error_precedence,
            merge_with_nothing_to_merge_still_checks_the_key,
            reads_return_copies,
            merge_reducing_order,
            keys_and_namespaces_lists_every_entry,
            handles_are_found_by_name,
            ttl_value_expires_and_the_read_removes_it,
            ttl_reads_restamp_with_on_read_and_write,
            ttl_return_expired_if_not_cleaned_up,
            ttl_list_elements_expire_one_by_one,
            ttl_map_entries_expire_one_by_one,
            ttl_borrowing_reads_see_only_live_state,
            ttl_reducing_and_aggregating_start_over_after_expiry,
            ttl_namespace_merges_leave_expired_state_out,
            ttl_snapshots_leave_expired_state_out,
            ttl_registration_rules,
            ttl_reregistration_takes_the_new_ttl_in_reduce_and_aggregate,
            timers_fire_once_in_order,
            timers_deleted_do_not_fire_and_domains_are_apart,
            timers_registered_while_firing_fire_if_due,
            timers_are_state,
        );
    };
    (@cases $module:ident, $factory:expr; $($case:ident),+ $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() -> flowstate::Result<()> {
                    super::$case(&$factory)
                }
            )+
        }
    };
}

conformance_suite!(heap, HeapFactory);
conformance_suite!(backend_enum, BackendEnumFactory);
conformance_suite!(lsm_memtable, LsmFactory);
conformance_suite!(lsm_flushing, LsmFlushingFactory);
conformance_suite!(lsm_backend_enum, LsmBackendEnumFactory);
conformance_suite!(lsm_checkpoint_aware, LsmCheckpointAwareFactory);
