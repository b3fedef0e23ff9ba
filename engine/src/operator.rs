//! Operator (non-keyed) state: per parallel task, not per key. Sources keep their offsets here,
//! sinks their pending transactions, and broadcast operators their rules.
//!
//! Three kinds, which differ only in how a restore at another parallelism distributes them:
//!
//! - **list state** ([`OperatorStateStore::list_state`]): the elements of all old tasks are
//!   concatenated in task order and split evenly into contiguous runs, one per new task;
//! - **union list state** ([`OperatorStateStore::union_list_state`]): every new task gets all the
//!   elements of all old tasks;
//! - **broadcast state** ([`OperatorStateStore::broadcast_state`]): a map that is the same on
//!   every task; every new task gets old task 0's copy.
//!
//! Operator state is small and touched rarely (at checkpoints and on restore), so the store keeps
//! it encoded and decodes at access; a snapshot is a copy of the encoded bytes.
//!
//! ```
//! use flowstate::operator::*;
//! use flowstate::*;
//! let mut store = OperatorStateStore::new();
//! let offsets = store.list_state(&ListStateDescriptor::<u64>::new("offsets"))?;
//! store.list(&offsets).update(vec![10, 20, 30, 40])?;
//! let snapshot = store.snapshot();
//! // Rescale 1 -> 2: each new task gets an even share of the offsets.
//! let mut first = OperatorStateStore::restore(&[&snapshot], 2, 0)?;
//! let offsets = first.list_state(&ListStateDescriptor::<u64>::new("offsets"))?;
//! assert_eq!(first.list(&offsets).get()?, vec![10, 20]);
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::codec::{to_bytes, Codec};
use crate::error::{Error, Result};
use crate::state::{
    CodecInfo, Key, ListStateDescriptor, MapStateDescriptor, StateDescriptor, StateValue,
};

/// How an operator state is distributed when the parallelism changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OperatorStateMode {
    /// A list split evenly over the new tasks.
    Split,
    /// A list every new task gets whole (the union of all old tasks' lists).
    Union,
    /// A map that is the same on every task.
    Broadcast,
}

impl OperatorStateMode {
    /// The mode's stable name.
    pub fn name(self) -> &'static str {
        match self {
            OperatorStateMode::Split => "split-list",
            OperatorStateMode::Union => "union-list",
            OperatorStateMode::Broadcast => "broadcast-map",
        }
    }
}

/// What an operator state is: its name, mode and codecs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperatorStateMeta {
    /// The state's name, unique within a store.
    pub name: String,
    /// How it is distributed on rescale.
    pub mode: OperatorStateMode,
    /// The codec of list elements, or of broadcast map values.
    pub value: CodecInfo,
    /// The codec of broadcast map keys.
    pub key: Option<CodecInfo>,
}

impl std::fmt::Display for OperatorStateMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} state of {}", self.mode.name(), self.value)?;
        if let Some(k) = &self.key {
            write!(f, " by {k}")?;
        }
        Ok(())
    }
}

/// The encoded content of one operator state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorStateData {
    /// The encoded elements of a list, in order.
    List(Vec<Vec<u8>>),
    /// The encoded entries of a broadcast map, ordered by key bytes.
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Slot {
    meta: OperatorStateMeta,
    data: OperatorStateData,
    registered: bool,
}

/// The operator states of one parallel task.
#[derive(Debug, Clone, Default)]
pub struct OperatorStateStore {
    states: Vec<Slot>,
}

/// A copy of a task's operator states, taken at a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStateSnapshot {
    /// Each state's description and encoded content, in registration order.
    pub states: Vec<(OperatorStateMeta, OperatorStateData)>,
}

/// A registered split or union list state.
#[derive(Debug)]
pub struct OperatorListState<T> {
    index: usize,
    _t: PhantomData<fn() -> T>,
}
impl<T> Clone for OperatorListState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OperatorListState<T> {}

/// A registered broadcast state.
#[derive(Debug)]
pub struct BroadcastState<K, V> {
    index: usize,
    _t: PhantomData<fn() -> (K, V)>,
}
impl<K, V> Clone for BroadcastState<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for BroadcastState<K, V> {}

fn decode<T: Codec>(bytes: &[u8], state: &str) -> Result<T> {
    T::decode(bytes).map_err(|source| Error::Codec {
        what: format!("an element of operator state '{state}'"),
        source,
    })
}

impl OperatorStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store of task `index` of `parallelism`, restored from the snapshots of all old tasks
    /// (in old task order), distributed by each state's mode (see the module documentation).
    /// States of the same name must have the same description in every snapshot.
    pub fn restore(
        snapshots: &[&OperatorStateSnapshot],
        parallelism: u32,
        index: u32,
    ) -> Result<Self> {
        if parallelism == 0 || index >= parallelism {
            return Err(Error::InvalidArgument(format!(
                "task index {index} is not below the parallelism {parallelism}"
            )));
        }
        // Gather per state name, in first-seen order.
        let mut gathered: Vec<(OperatorStateMeta, Vec<&OperatorStateData>)> = Vec::new();
        for snapshot in snapshots {
            for (meta, data) in &snapshot.states {
                match gathered.iter_mut().find(|(m, _)| m.name == meta.name) {
                    Some((m, parts)) => {
                        if m != meta {
                            return Err(Error::IncompatibleSnapshot(format!(
                                "operator state '{}' is {m} in one snapshot and {meta} in another",
                                meta.name
                            )));
                        }
                        parts.push(data);
                    }
                    None => gathered.push((meta.clone(), vec![data])),
                }
            }
        }
        let mut states = Vec::new();
        for (meta, parts) in gathered {
            let data = match meta.mode {
                OperatorStateMode::Split | OperatorStateMode::Union => {
                    let mut all = Vec::new();
                    for part in parts {
                        match part {
                            OperatorStateData::List(elements) => {
                                all.extend(elements.iter().cloned())
                            }
                            OperatorStateData::Map(_) => return Err(shape_error(&meta)),
                        }
                    }
                    if meta.mode == OperatorStateMode::Split {
                        // Contiguous, even runs: the first `len % p` tasks get one more.
                        let p = parallelism as usize;
                        let i = index as usize;
                        let (base, extra) = (all.len() / p, all.len() % p);
                        let start = i * base + i.min(extra);
                        let len = base + usize::from(i < extra);
                        OperatorStateData::List(all.drain(start..start + len).collect())
                    } else {
                        OperatorStateData::List(all)
                    }
                }
                OperatorStateMode::Broadcast => match parts.first() {
                    Some(OperatorStateData::Map(map)) => OperatorStateData::Map(map.clone()),
                    Some(OperatorStateData::List(_)) => return Err(shape_error(&meta)),
                    None => OperatorStateData::Map(BTreeMap::new()),
                },
            };
            states.push(Slot {
                meta,
                data,
                registered: false,
            });
        }
        Ok(OperatorStateStore { states })
    }

    fn register(&mut self, meta: OperatorStateMeta, empty: OperatorStateData) -> Result<usize> {
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument(
                "a state name must not be empty".into(),
            ));
        }
        if let Some(index) = self.states.iter().position(|s| s.meta.name == meta.name) {
            let slot = &mut self.states[index];
            if slot.meta != meta {
                return Err(if slot.registered {
                    Error::StateTypeMismatch {
                        name: meta.name.clone(),
                        registered: slot.meta.to_string(),
                        requested: meta.to_string(),
                    }
                } else {
                    Error::IncompatibleState {
                        name: meta.name.clone(),
                        snapshot: slot.meta.to_string(),
                        requested: meta.to_string(),
                    }
                });
            }
            slot.registered = true;
            return Ok(index);
        }
        self.states.push(Slot {
            meta,
            data: empty,
            registered: true,
        });
        Ok(self.states.len() - 1)
    }

    /// Registers a list state that a restore at another parallelism splits evenly.
    pub fn list_state<T: StateValue>(
        &mut self,
        descriptor: &ListStateDescriptor<T>,
    ) -> Result<OperatorListState<T>> {
        self.list_with_mode(descriptor, OperatorStateMode::Split)
    }

    /// Registers a list state that a restore gives whole, merged from all old tasks, to every
    /// new task.
    pub fn union_list_state<T: StateValue>(
        &mut self,
        descriptor: &ListStateDescriptor<T>,
    ) -> Result<OperatorListState<T>> {
        self.list_with_mode(descriptor, OperatorStateMode::Union)
    }

    fn list_with_mode<T: StateValue>(
        &mut self,
        descriptor: &ListStateDescriptor<T>,
        mode: OperatorStateMode,
    ) -> Result<OperatorListState<T>> {
        let meta = OperatorStateMeta {
            name: descriptor.name().to_owned(),
            mode,
            value: CodecInfo::of::<T>(),
            key: None,
        };
        let index = self.register(meta, OperatorStateData::List(Vec::new()))?;
        Ok(OperatorListState {
            index,
            _t: PhantomData,
        })
    }

    /// Registers a broadcast state: a map meant to be identical on every task.
    pub fn broadcast_state<K: Key, V: StateValue>(
        &mut self,
        descriptor: &MapStateDescriptor<K, V>,
    ) -> Result<BroadcastState<K, V>> {
        let meta = OperatorStateMeta {
            name: descriptor.name().to_owned(),
            mode: OperatorStateMode::Broadcast,
            value: CodecInfo::of::<V>(),
            key: Some(CodecInfo::of::<K>()),
        };
        let index = self.register(meta, OperatorStateData::Map(BTreeMap::new()))?;
        Ok(BroadcastState {
            index,
            _t: PhantomData,
        })
    }

    /// Access to a list state.
    pub fn list<T: StateValue>(
        &mut self,
        state: &OperatorListState<T>,
    ) -> OperatorListAccess<'_, T> {
        OperatorListAccess {
            slot: &mut self.states[state.index],
            _t: PhantomData,
        }
    }

    /// Access to a broadcast state.
    pub fn broadcast<K: Key, V: StateValue>(
        &mut self,
        state: &BroadcastState<K, V>,
    ) -> BroadcastAccess<'_, K, V> {
        BroadcastAccess {
            slot: &mut self.states[state.index],
            _t: PhantomData,
        }
    }

    /// A copy of every state (registered or restored but not registered yet).
    pub fn snapshot(&self) -> OperatorStateSnapshot {
        OperatorStateSnapshot {
            states: self
                .states
                .iter()
                .map(|s| (s.meta.clone(), s.data.clone()))
                .collect(),
        }
    }
}

fn shape_error(meta: &OperatorStateMeta) -> Error {
    Error::IncompatibleSnapshot(format!(
        "operator state '{}' ({meta}) holds data of the wrong shape",
        meta.name
    ))
}

/// Access to an operator list state.
pub struct OperatorListAccess<'a, T> {
    slot: &'a mut Slot,
    _t: PhantomData<fn() -> T>,
}

impl<T: StateValue> OperatorListAccess<'_, T> {
    fn elements(&mut self) -> &mut Vec<Vec<u8>> {
        if !matches!(self.slot.data, OperatorStateData::List(_)) {
            self.slot.data = OperatorStateData::List(Vec::new());
        }
        match &mut self.slot.data {
            OperatorStateData::List(elements) => elements,
            OperatorStateData::Map(_) => unreachable!("set to a list just above"),
        }
    }

    /// The elements, in order.
    pub fn get(&mut self) -> Result<Vec<T>> {
        let name = self.slot.meta.name.clone();
        self.elements().iter().map(|e| decode(e, &name)).collect()
    }

    /// Appends one element.
    pub fn add(&mut self, element: T) -> Result<()> {
        self.elements().push(to_bytes(&element));
        Ok(())
    }

    /// Replaces the elements.
    pub fn update(&mut self, elements: Vec<T>) -> Result<()> {
        *self.elements() = elements.iter().map(to_bytes).collect();
        Ok(())
    }

    /// Removes every element.
    pub fn clear(&mut self) -> Result<()> {
        self.elements().clear();
        Ok(())
    }
}

/// Access to a broadcast state.
pub struct BroadcastAccess<'a, K, V> {
    slot: &'a mut Slot,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: Key, V: StateValue> BroadcastAccess<'_, K, V> {
    fn map(&mut self) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        if !matches!(self.slot.data, OperatorStateData::Map(_)) {
            self.slot.data = OperatorStateData::Map(BTreeMap::new());
        }
        match &mut self.slot.data {
            OperatorStateData::Map(map) => map,
            OperatorStateData::List(_) => unreachable!("set to a map just above"),
        }
    }

    /// The value of `key`.
    pub fn get(&mut self, key: &K) -> Result<Option<V>> {
        let name = self.slot.meta.name.clone();
        self.map()
            .get(&to_bytes(key))
            .map(|v| decode(v, &name))
            .transpose()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: K, value: V) -> Result<()> {
        self.map().insert(to_bytes(&key), to_bytes(&value));
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Result<()> {
        self.map().remove(&to_bytes(key));
        Ok(())
    }

    /// Every entry, ordered by the key's encoding.
    pub fn entries(&mut self) -> Result<Vec<(K, V)>> {
        let name = self.slot.meta.name.clone();
        self.map()
            .iter()
            .map(|(k, v)| Ok((decode(k, &name)?, decode(v, &name)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_with(elements: std::ops::Range<u64>) -> OperatorStateSnapshot {
        let mut store = OperatorStateStore::new();
        let offsets = store
            .list_state(&ListStateDescriptor::<u64>::new("offsets"))
            .expect("new state");
        let txns = store
            .union_list_state(&ListStateDescriptor::<String>::new("txns"))
            .expect("new state");
        let rules = store
            .broadcast_state(&MapStateDescriptor::<String, u32>::new("rules"))
            .expect("new state");
        store
            .list(&offsets)
            .update(elements.clone().collect())
            .expect("update");
        store
            .list(&txns)
            .add(format!("t{}", elements.start))
            .expect("add");
        store
            .broadcast(&rules)
            .put("limit".into(), 10)
            .expect("put");
        store.snapshot()
    }

    #[test]
    fn split_lists_are_distributed_evenly_and_completely() {
        let old = [task_with(0..5), task_with(5..12), task_with(12..13)];
        let refs: Vec<&OperatorStateSnapshot> = old.iter().collect();
        for p in 1..=6u32 {
            let mut all = Vec::new();
            let mut sizes = Vec::new();
            for i in 0..p {
                let mut store = OperatorStateStore::restore(&refs, p, i).expect("restore");
                let offsets = store
                    .list_state(&ListStateDescriptor::<u64>::new("offsets"))
                    .expect("same types");
                let got = store.list(&offsets).get().expect("decode");
                sizes.push(got.len());
                all.extend(got);
            }
            assert_eq!(all, (0..13).collect::<Vec<_>>(), "p = {p}");
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 1),
                "even split {sizes:?}"
            );
        }
    }

    #[test]
    fn union_lists_go_whole_to_every_task_and_broadcast_is_copied() {
        let old = [task_with(0..2), task_with(2..4)];
        let refs: Vec<&OperatorStateSnapshot> = old.iter().collect();
        for i in 0..3 {
            let mut store = OperatorStateStore::restore(&refs, 3, i).expect("restore");
            let txns = store
                .union_list_state(&ListStateDescriptor::<String>::new("txns"))
                .expect("same types");
            assert_eq!(store.list(&txns).get().expect("decode"), vec!["t0", "t2"]);
            let rules = store
                .broadcast_state(&MapStateDescriptor::<String, u32>::new("rules"))
                .expect("same types");
            assert_eq!(
                store.broadcast(&rules).entries().expect("decode"),
                vec![("limit".to_string(), 10)]
            );
        }
    }

    #[test]
    fn registration_checks_mode_and_codecs() {
        let old = task_with(0..3);
        let mut store = OperatorStateStore::restore(&[&old], 1, 0).expect("restore");
        assert!(matches!(
            store.union_list_state(&ListStateDescriptor::<u64>::new("offsets")),
            Err(Error::IncompatibleState { .. })
        ));
        assert!(matches!(
            store.list_state(&ListStateDescriptor::<u32>::new("offsets")),
            Err(Error::IncompatibleState { .. })
        ));
        let offsets = store
            .list_state(&ListStateDescriptor::<u64>::new("offsets"))
            .expect("the right types");
        assert_eq!(store.list(&offsets).get().expect("decode"), vec![0, 1, 2]);
        assert!(matches!(
            store.list_state(&ListStateDescriptor::<i64>::new("offsets")),
            Err(Error::StateTypeMismatch { .. })
        ));
        assert!(OperatorStateStore::restore(&[&old], 2, 2).is_err());
        assert!(OperatorStateStore::restore(&[&old], 0, 0).is_err());
    }

    #[test]
    fn unregistered_states_survive_a_snapshot_and_conflicts_are_detected() {
        let old = task_with(0..3);
        let store = OperatorStateStore::restore(&[&old], 1, 0).expect("restore");
        assert_eq!(store.snapshot(), old);
        let mut other = OperatorStateStore::new();
        other
            .union_list_state(&ListStateDescriptor::<u64>::new("offsets"))
            .expect("new state");
        let conflicting = other.snapshot();
        assert!(matches!(
            OperatorStateStore::restore(&[&old, &conflicting], 1, 0),
            Err(Error::IncompatibleSnapshot(_))
        ));
    }
}
