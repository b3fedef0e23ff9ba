//! The heap backend: typed state in memory, in copy-on-write maps.
//!
//! Each registered state has a `StateTable` (`table.rs`): one copy-on-write map per owned key group
//! (see `cow.rs` for the map and its costs). Values are stored as the Rust values they are, never
//! serialized on the access path; a snapshot's synchronous phase clones one `Arc` per state.

mod cow;
mod exclusive;
mod incremental;
pub(crate) mod restore;
mod table;
mod ttl_cleanup;

use std::any::TypeId;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::FixedState;

use crate::backend::KeyedStateBackend;
use crate::clock::Clock;
use crate::config::BackendConfig;
use crate::error::{Error, Result};
use crate::key_group::{key_group_for, KeyGroupRange};
use crate::snapshot::{RestoreSource, StateSnapshot, StateTableSnapshot};
use crate::state::ttl::Expiry;
use crate::state::ttl_filter::TtlFilteredTable;
use crate::state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, Key, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, MergingState, Namespace, ReducingState,
    ReducingStateDescriptor, StateHandle, StateId, StateMeta, StateValue, TtlConfig, ValueState,
    ValueStateDescriptor,
};
pub use incremental::HeapIncremental;
use incremental::{HeapChainJob, Tracker};
use table::{entry_hash, Entry, ErasedTable, StateTable};
use ttl_cleanup::CleanupCursor;

/// The seed of the in-memory hash. Fixed, so that runs are reproducible; it never reaches disk.
const HASH_SEED: u64 = 0x666c_6f77_7374_6174; // "flowstat"

/// Marks a current key whose key group this backend does not own.
const OUT_OF_RANGE: u32 = u32::MAX;

struct CurrentKey<K> {
    key: K,
    key_group: u16,
    /// Index of the key group within the owned range, or [`OUT_OF_RANGE`].
    kg_index: u32,
    /// In-memory hash of the key.
    hash: u64,
}

struct Registered {
    meta: StateMeta,
    type_id: TypeId,
    table: Box<dyn ErasedTable>,
    /// The state's time-to-live, if it was registered with one (R60).
    ttl: Option<TtlConfig>,
    /// Where its incremental TTL cleanup goes on (R70).
    cleanup: CleanupCursor,
}

/// Keyed state in memory: typed values in per-state, per-key-group copy-on-write maps.
///
/// Reads and writes touch no lock and no `RefCell`; a snapshot's synchronous phase
/// ([`KeyedStateBackend::snapshot_state`]) clones one reference per state.
///
/// ```
/// use flowstate::*;
/// let mut backend = HeapBackend::<u64>::open(BackendConfig::heap())?;
/// let seen = backend.register(ListStateDescriptor::<String>::new("seen"))?;
/// backend.set_current_key(&42);
/// backend.list(&seen).add("page-1".into())?;
/// let frozen = backend.snapshot_state()?;
/// backend.list(&seen).add("page-2".into())?;
/// assert_eq!(backend.list(&seen).get()?.len(), 2);
/// assert_eq!(frozen.state("seen").unwrap().entry_count()?, 1);
/// # Ok::<(), flowstate::Error>(())
/// ```
pub struct HeapBackend<K: Key> {
    max_parallelism: u32,
    range: KeyGroupRange,
    current: Option<CurrentKey<K>>,
    key_buf: Vec<u8>,
    hasher: FixedState,
    states: Vec<Registered>,
    by_name: HashMap<String, StateId>,
    /// Restored states not registered yet, in encoded form (see `restore.rs`).
    pending: Vec<restore::PendingState>,
    clock: Arc<dyn Clock>,
    /// Incremental checkpoints, if configured, and what the backend knows of them.
    incremental: Option<(HeapIncremental, Arc<parking_lot::Mutex<Tracker>>, u64)>,
    /// The epoch of writes: one more than the number of snapshots taken (see
    /// `incremental.rs`). Every write records it in the entry's slot.
    epoch: u32,
}

impl<K: Key> HeapBackend<K> {
    /// Opens an empty heap backend as `config` says (its kind is ignored).
    pub fn open(config: BackendConfig) -> Result<Self> {
        let (max_parallelism, range) = config.validate()?;
        Ok(HeapBackend {
            max_parallelism,
            range,
            current: None,
            key_buf: Vec::with_capacity(64),
            hasher: FixedState::with_seed(HASH_SEED),
            states: Vec::new(),
            by_name: HashMap::new(),
            pending: Vec::new(),
            clock: config.get_clock().clone(),
            incremental: config.get_heap_incremental().map(|options| {
                (
                    options,
                    Arc::new(parking_lot::Mutex::new(Tracker::default())),
                    crate::random::random_u64(),
                )
            }),
            epoch: 1,
        })
    }

    /// Opens a heap backend as `config` says, with the state of `sources` in the key groups it
    /// owns: from each source only the owned key groups are read, so any set of snapshots whose
    /// ranges cover the new range without overlapping restores at any parallelism.
    ///
    /// The restored states take their types when a descriptor of the same name is registered;
    /// registering one with another kind or other codecs fails with
    /// [`Error::IncompatibleState`]. States never registered are kept, encoded, and written
    /// into every later snapshot. A source with another max parallelism or key codec, or two
    /// sources covering the same key group, fail with [`Error::IncompatibleSnapshot`].
    ///
    /// ```
    /// use flowstate::*;
    /// let mut old = HeapBackend::<u64>::open(BackendConfig::heap().max_parallelism(16))?;
    /// let count = old.register(ValueStateDescriptor::<u64>::new("count"))?;
    /// for k in 0..100u64 {
    ///     old.set_current_key(&k);
    ///     old.value(&count).update(k)?;
    /// }
    /// let snapshot = old.snapshot_state()?;
    /// // Rescale 1 -> 2: the second task owns key groups 8..=15 only.
    /// let range = KeyGroupRange::for_operator(16, 2, 1)?;
    /// let config = BackendConfig::heap().max_parallelism(16).key_group_range(range);
    /// let mut new = HeapBackend::<u64>::restore(config, &[&snapshot])?;
    /// let count = new.register(ValueStateDescriptor::<u64>::new("count"))?;
    /// for k in 0..100u64 {
    ///     new.set_current_key(&k);
    ///     if range.contains(new.current_key_group().unwrap_or(0)) {
    ///         assert_eq!(new.value(&count).get()?, Some(k));
    ///     }
    /// }
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    pub fn restore(config: BackendConfig, sources: &[&dyn RestoreSource]) -> Result<Self> {
        let mut backend = Self::open(config)?;
        backend.pending =
            restore::read_sources::<K>(backend.max_parallelism, backend.range, sources)?;
        Ok(backend)
    }

    /// The names of restored states that no descriptor has registered yet.
    pub fn unregistered_states(&self) -> Vec<&str> {
        self.pending.iter().map(|p| p.meta.name.as_str()).collect()
    }

    /// The clock this backend was opened with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Approximate bytes held by the state tables (hash tables, bucket and key-group vectors;
    /// not the heap allocations that keys and values own themselves). Buckets shared with a
    /// live snapshot are counted in full.
    pub fn table_bytes(&self) -> usize {
        self.states.iter().map(|r| r.table.allocated_bytes()).sum()
    }

    /// The current key and the index of its key group, or the error an access must return.
    #[inline]
    fn current(&self) -> Result<(&CurrentKey<K>, usize)> {
        let Some(cur) = &self.current else {
            return Err(Error::NoCurrentKey);
        };
        if cur.kg_index == OUT_OF_RANGE {
            return Err(Error::KeyGroupOutOfRange {
                key_group: cur.key_group,
                range: self.range,
            });
        }
        Ok((cur, cur.kg_index as usize))
    }

    #[inline]
    fn table<H: StateHandle>(&self, state: H) -> Result<&StateTable<K, H>> {
        self.states
            .get(state.id().0 as usize)
            .and_then(|r| exclusive::downcast::<StateTable<K, H>, _>(&*r.table, r.type_id))
            .ok_or(Error::UnknownState { id: state.id().0 })
    }

    /// The current key, its key-group index and the table of `state`, for writing.
    #[inline]
    fn parts_mut<H: StateHandle>(
        &mut self,
        state: H,
    ) -> Result<(&CurrentKey<K>, usize, &mut StateTable<K, H>)> {
        let HeapBackend {
            current,
            states,
            range,
            ..
        } = self;
        let cur = current.as_ref().ok_or(Error::NoCurrentKey)?;
        if cur.kg_index == OUT_OF_RANGE {
            return Err(Error::KeyGroupOutOfRange {
                key_group: cur.key_group,
                range: *range,
            });
        }
        let table = states
            .get_mut(state.id().0 as usize)
            .and_then(|r| exclusive::downcast_mut::<StateTable<K, H>, _>(&mut *r.table, r.type_id))
            .ok_or(Error::UnknownState { id: state.id().0 })?;
        Ok((cur, cur.kg_index as usize, table))
    }

    /// Reads the state of the current key in `ns` through `read`.
    #[inline]
    fn read<H: StateHandle, R>(
        &self,
        state: H,
        ns: &H::Namespace,
        read: impl FnOnce(Option<&H::Stored>, &H::Extra) -> R,
    ) -> Result<R> {
        let (cur, index) = self.current()?;
        let table = self.table(state)?;
        let hash = entry_hash(&table.hasher, cur.hash, ns);
        let entry = table
            .map(index)
            .get(hash, |e| e.key == cur.key && e.ns == *ns);
        Ok(read(entry.map(|e| &e.state), &table.extra))
    }

    /// The state of the current key in `ns` for writing, inserted with `make` if absent; with
    /// whether it was inserted and the state's extra data (its reduce or aggregate function).
    #[inline]
    fn slot<H: StateHandle>(
        &mut self,
        state: H,
        ns: &H::Namespace,
        make: impl FnOnce(&H::Extra) -> H::Stored,
    ) -> Result<(&mut H::Stored, bool, &H::Extra)> {
        let epoch = self.epoch;
        let (cur, index, table) = self.parts_mut(state)?;
        let hash = entry_hash(&table.hasher, cur.hash, ns);
        let rehash = table.rehasher();
        let StateTable {
            extra, key_groups, ..
        } = table;
        let map = exclusive::exclusive(&mut exclusive::exclusive(key_groups)[index]);
        let (entry, inserted) = map.get_or_insert_with(
            hash,
            |e| e.key == cur.key && e.ns == *ns,
            || Entry {
                key: cur.key.clone(),
                ns: ns.clone(),
                state: make(extra),
            },
            rehash,
            epoch,
        );
        Ok((&mut entry.state, inserted, extra))
    }

    /// Sets the state of the current key in `ns` to `stored`.
    #[inline]
    fn put<H: StateHandle>(
        &mut self,
        state: H,
        ns: &H::Namespace,
        stored: H::Stored,
    ) -> Result<()> {
        let mut stored = Some(stored);
        let (slot, _, _) = self.slot(state, ns, |_| {
            stored
                .take()
                .expect("the value is taken once, by the insert")
        })?;
        if let Some(value) = stored {
            *slot = value;
        }
        Ok(())
    }

    /// Changes the existing state of the current key in `ns` with `change`; if `change` returns
    /// true the entry is removed afterwards. Absent state is left absent.
    fn modify<H: StateHandle>(
        &mut self,
        state: H,
        ns: &H::Namespace,
        change: impl FnOnce(&mut H::Stored) -> bool,
    ) -> Result<()> {
        let epoch = self.epoch;
        let (cur, index, table) = self.parts_mut(state)?;
        let hash = entry_hash(&table.hasher, cur.hash, ns);
        let map = table.map_mut(index);
        let eq = |e: &Entry<K, H::Namespace, H::Stored>| e.key == cur.key && e.ns == *ns;
        let remove = match map.get_mut(hash, eq, epoch) {
            Some(entry) => change(&mut entry.state),
            None => false,
        };
        if remove {
            map.remove(hash, eq);
            table.log_removal(index, epoch, &cur.key, ns);
        }
        Ok(())
    }

    /// Removes and returns the state of the current key in `ns`.
    fn take<H: StateHandle>(&mut self, state: H, ns: &H::Namespace) -> Result<Option<H::Stored>> {
        // Look first: removing nothing must not copy a table level shared with a snapshot.
        if !self.read(state, ns, |s, _| s.is_some())? {
            return Ok(None);
        }
        let epoch = self.epoch;
        let (cur, index, table) = self.parts_mut(state)?;
        let hash = entry_hash(&table.hasher, cur.hash, ns);
        let map = table.map_mut(index);
        let removed = map
            .remove(hash, |e| e.key == cur.key && e.ns == *ns)
            .map(|e| e.state);
        if removed.is_some() {
            table.log_removal(index, epoch, &cur.key, ns);
        }
        Ok(removed)
    }

    fn register_state<H: StateHandle>(&mut self, name: &str, extra: H::Extra) -> Result<H> {
        let type_id = TypeId::of::<StateTable<K, H>>();
        if let Some(&id) = self.by_name.get(name) {
            let existing = &self.states[id.0 as usize];
            if existing.type_id == type_id {
                return Ok(H::from_id(id));
            }
            return Err(Error::StateTypeMismatch {
                name: name.to_owned(),
                registered: existing.meta.to_string(),
                requested: H::meta(name).to_string(),
            });
        }
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "a state name must not be empty".into(),
            ));
        }
        let restored = self.pending.iter().position(|p| p.meta.name == name);
        let id = StateId(u32::try_from(self.states.len()).map_err(|_| {
            Error::InvalidArgument("too many states registered (more than 2^32)".into())
        })?);
        let meta = H::meta(name);
        let mut table = StateTable::<K, H>::new(meta.clone(), extra, self.hasher, self.range);
        if self.incremental.is_some() {
            table.track_removals();
        }
        if let Some(position) = restored {
            self.fill_from_pending(&mut table, position)?;
            self.pending.remove(position);
        }
        // The invariant of `exclusive::downcast`: `type_id` is the type of the boxed table.
        self.states.push(Registered {
            meta,
            type_id,
            ttl: None,
            cleanup: CleanupCursor::default(),
            table: Box::new(table),
        });
        self.by_name.insert(name.to_owned(), id);
        Ok(H::from_id(id))
    }
}

impl<K: Key> HeapBackend<K> {
    /// Whether a call with handle type `S` on state `id` must go to the state's stored form:
    /// the state has a TTL and was registered as `S::Ttl`, not as `S` (R70).
    fn ttl_routed<S: StateHandle>(&self, id: StateId) -> bool {
        self.states
            .get(id.0 as usize)
            .is_some_and(|r| r.ttl.is_some() && r.type_id != TypeId::of::<StateTable<K, S>>())
    }

    fn merge_typed<S: MergingState>(
        &mut self,
        state: S,
        target: &S::Namespace,
        sources: &[S::Namespace],
    ) -> Result<()> {
        // Fail as any access does without a current key or for a foreign key group, even when
        // there is nothing to merge (no sources, or only the target).
        self.current()?;
        self.table(state)?;
        for source in sources {
            if source == target {
                continue;
            }
            let Some(moved) = self.take(state, source)? else {
                continue;
            };
            let mut moved = Some(moved);
            let (current, _, extra) = self.slot(state, target, |_| {
                moved.take().expect("the source state is moved once")
            })?;
            if let Some(moved) = moved {
                S::merge_stored(extra, current, moved);
            }
        }
        Ok(())
    }

    /// `pick` of the key and namespace of every entry of `state` that `ns` accepts (all, if
    /// `None`); with `ttl`, only those with something live at its time (R63).
    fn keys_typed<S: StateHandle, T>(
        &self,
        state: S,
        ns: Option<&S::Namespace>,
        ttl: Option<(TtlConfig, u64)>,
        pick: impl Fn(&K, &S::Namespace) -> T,
    ) -> Result<Vec<T>> {
        let table = self.table(state)?;
        Ok(table
            .iter()
            .filter(|e| ns.is_none_or(|ns| e.ns == *ns))
            .filter(|e| {
                ttl.is_none_or(|(ttl, now)| S::stored_expiry(&e.state, &ttl, now) != Expiry::All)
            })
            .map(|e| pick(&e.key, &e.ns))
            .collect())
    }

    /// The TTL filter of reads of state `id` through handle type `S`: the TTL and the time, if
    /// the state has a TTL that hides expired state.
    fn ttl_filter_of(&self, id: StateId) -> Option<(TtlConfig, u64)> {
        let ttl = self.state_ttl(id).filter(|t| !t.returns_expired());
        ttl.map(|t| (t, self.clock.now_millis()))
    }

    /// Decodes the pending (restored) state at `position` into `table`, after checking that the
    /// registration asks for the kind and codecs the snapshot recorded. On any error the pending
    /// state is left as it was.
    fn fill_from_pending<H: StateHandle>(
        &self,
        table: &mut StateTable<K, H>,
        position: usize,
    ) -> Result<()> {
        let pending = &self.pending[position];
        let name = pending.meta.name.as_str();
        if *pending.meta != *table.meta {
            return Err(Error::IncompatibleState {
                name: name.to_owned(),
                snapshot: pending.meta.to_string(),
                requested: table.meta.to_string(),
            });
        }
        for (index, entries) in pending.key_groups.iter().enumerate() {
            let kg = self.range.start() + index as u16;
            for encoded in entries {
                let key: K = restore::decode_part(&encoded.key, name, kg, "key")?;
                let ns: H::Namespace =
                    restore::decode_part(&encoded.namespace, name, kg, "namespace")?;
                let stored = H::decode_stored(&encoded.state).map_err(|source| Error::Codec {
                    what: format!("the state of an entry of state '{name}' in key group {kg}"),
                    source,
                })?;
                let hash = entry_hash(&self.hasher, self.hasher.hash_one(&key), &ns);
                let rehash = table.rehasher();
                let (_, inserted) = table.map_mut(index).get_or_insert_with(
                    hash,
                    |e| e.key == key && e.ns == ns,
                    || Entry {
                        key: key.clone(),
                        ns: ns.clone(),
                        state: stored,
                    },
                    rehash,
                    self.epoch,
                );
                if !inserted {
                    return Err(Error::IncompatibleSnapshot(format!(
                        "state '{name}' has two entries for one key and namespace in key group {kg}"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl<K: Key> KeyedStateBackend<K> for HeapBackend<K> {
    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    #[inline]
    fn set_current_key(&mut self, key: &K) {
        self.key_buf.clear();
        key.encode(&mut self.key_buf);
        let key_group = key_group_for(&self.key_buf, self.max_parallelism);
        let kg_index = self
            .range
            .index_of(key_group)
            .map_or(OUT_OF_RANGE, |i| i as u32);
        let hash = self.hasher.hash_one(key);
        match &mut self.current {
            Some(cur) => {
                cur.key.clone_from(key);
                cur.key_group = key_group;
                cur.kg_index = kg_index;
                cur.hash = hash;
            }
            None => {
                self.current = Some(CurrentKey {
                    key: key.clone(),
                    key_group,
                    kg_index,
                    hash,
                })
            }
        }
    }

    fn current_key(&self) -> Option<&K> {
        self.current.as_ref().map(|c| &c.key)
    }

    fn current_key_group(&self) -> Option<u16> {
        self.current.as_ref().map(|c| c.key_group)
    }

    fn state_meta(&self, id: StateId) -> Option<&StateMeta> {
        self.states.get(id.0 as usize).map(|r| &r.meta)
    }

    fn state_id(&self, name: &str) -> Option<StateId> {
        self.by_name.get(name).copied()
    }

    fn state_ttl(&self, id: StateId) -> Option<TtlConfig> {
        self.states.get(id.0 as usize).and_then(|r| r.ttl)
    }

    fn set_state_ttl(&mut self, id: StateId, ttl: TtlConfig) -> Result<()> {
        let r = self
            .states
            .get_mut(id.0 as usize)
            .ok_or(Error::UnknownState { id: id.0 })?;
        r.ttl = Some(ttl);
        Ok(())
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn set_state_extra<H: StateHandle>(&mut self, handle: H, extra: H::Extra) -> Result<()> {
        let r = self
            .states
            .get_mut(handle.id().0 as usize)
            .ok_or(Error::UnknownState { id: handle.id().0 })?;
        let table = exclusive::downcast_mut::<StateTable<K, H>, _>(&mut *r.table, r.type_id)
            .ok_or(Error::UnknownState { id: handle.id().0 })?;
        table.extra = extra;
        Ok(())
    }

    fn ttl_cleanup_step(&mut self, id: StateId, now: u64) -> Result<()> {
        let epoch = self.epoch;
        if let Some(r) = self.states.get_mut(id.0 as usize) {
            if let Some(ttl) = r.ttl {
                let budget = ttl.incremental_cleanup_size();
                r.table
                    .ttl_cleanup(&mut r.cleanup, budget, &ttl, now, epoch);
            }
        }
        Ok(())
    }

    fn entry_count(&self) -> Result<usize> {
        let now = self.clock.now_millis();
        let mut registered = 0;
        for r in &self.states {
            registered += match r.ttl {
                // Expired entries do not count (R63): a scan of the typed entries.
                Some(ttl) if !ttl.returns_expired() => r.table.live_len(&ttl, now),
                _ => r.table.len(),
            };
        }
        Ok(registered
            + self
                .pending
                .iter()
                .map(|p| p.key_groups.iter().map(Vec::len).sum::<usize>())
                .sum::<usize>())
    }

    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        d: &ValueStateDescriptor<V, N>,
    ) -> Result<ValueState<V, N>> {
        self.register_state::<ValueState<V, N>>(crate::StateDescriptor::name(d), ())
    }

    fn register_list<T: StateValue, N: Namespace>(
        &mut self,
        d: &ListStateDescriptor<T, N>,
    ) -> Result<ListState<T, N>> {
        self.register_state::<ListState<T, N>>(crate::StateDescriptor::name(d), ())
    }

    fn register_map<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        d: &MapStateDescriptor<UK, UV, N>,
    ) -> Result<MapState<UK, UV, N>> {
        self.register_state::<MapState<UK, UV, N>>(crate::StateDescriptor::name(d), ())
    }

    fn register_reducing<V: StateValue, N: Namespace>(
        &mut self,
        d: &ReducingStateDescriptor<V, N>,
    ) -> Result<ReducingState<V, N>> {
        self.register_state::<ReducingState<V, N>>(
            crate::StateDescriptor::name(d),
            d.reducer().clone(),
        )
    }

    fn register_aggregating<F: AggregateFunction, N: Namespace>(
        &mut self,
        d: &AggregatingStateDescriptor<F, N>,
    ) -> Result<AggregatingState<F, N>> {
        self.register_state::<AggregatingState<F, N>>(
            crate::StateDescriptor::name(d),
            d.function().clone(),
        )
    }

    #[inline]
    fn value_get<V: StateValue, N: Namespace>(
        &self,
        s: ValueState<V, N>,
        ns: &N,
    ) -> Result<Option<V>> {
        self.read(s, ns, |v, _| v.cloned())
    }

    #[inline]
    fn value_update<V: StateValue, N: Namespace>(
        &mut self,
        s: ValueState<V, N>,
        ns: &N,
        value: V,
    ) -> Result<()> {
        self.put(s, ns, value)
    }

    fn list_get<T: StateValue, N: Namespace>(&self, s: ListState<T, N>, ns: &N) -> Result<Vec<T>> {
        self.read(s, ns, |v, _| v.cloned().unwrap_or_default())
    }

    fn list_add<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        element: T,
    ) -> Result<()> {
        let (list, _, _) = self.slot(s, ns, |_| Vec::new())?;
        list.push(element);
        Ok(())
    }

    fn list_add_all<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        if elements.is_empty() {
            // Still fail as any access does without a current key or for a foreign key group.
            self.current()?;
            self.table(s)?;
            return Ok(());
        }
        let (list, _, _) = self.slot(s, ns, |_| Vec::new())?;
        list.extend(elements);
        Ok(())
    }

    fn list_update<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        if elements.is_empty() {
            self.take(s, ns).map(drop)
        } else {
            self.put(s, ns, elements)
        }
    }

    fn map_get<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        self.read(s, ns, |m, _| m.and_then(|m| m.get(user_key).cloned()))
    }

    fn map_contains<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<bool> {
        self.read(s, ns, |m, _| m.is_some_and(|m| m.contains_key(user_key)))
    }

    fn map_put<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: UK,
        value: UV,
    ) -> Result<()> {
        let (map, _, _) = self.slot(s, ns, |_| crate::state::MapStore::default())?;
        map.insert(user_key, value);
        Ok(())
    }

    fn map_put_all<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        entries: Vec<(UK, UV)>,
    ) -> Result<()> {
        if entries.is_empty() {
            self.current()?;
            self.table(s)?;
            return Ok(());
        }
        let (map, _, _) = self.slot(s, ns, |_| crate::state::MapStore::default())?;
        map.extend(entries);
        Ok(())
    }

    fn map_remove<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<()> {
        // Only write (and so copy a shared bucket) if the key is there.
        if !self.map_contains(s, ns, user_key)? {
            return Ok(());
        }
        self.modify(s, ns, |m| {
            m.remove(user_key);
            m.is_empty()
        })
    }

    fn map_entries<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
    ) -> Result<Vec<(UK, UV)>> {
        self.read(s, ns, |m, _| {
            m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })
    }

    #[inline]
    fn value_visit<V: StateValue, N: Namespace, R>(
        &self,
        s: ValueState<V, N>,
        ns: &N,
        visit: impl FnOnce(Option<&V>) -> R,
    ) -> Result<R> {
        self.read(s, ns, |v, _| visit(v))
    }

    #[inline]
    fn list_visit<T: StateValue, N: Namespace, R>(
        &self,
        s: ListState<T, N>,
        ns: &N,
        visit: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        self.read(s, ns, |v, _| visit(v.map_or(&[], Vec::as_slice)))
    }

    #[inline]
    fn map_get_visit<UK: Key, UV: StateValue, N: Namespace, R>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
        visit: impl FnOnce(Option<&UV>) -> R,
    ) -> Result<R> {
        self.read(s, ns, |m, _| visit(m.and_then(|m| m.get(user_key))))
    }

    #[inline]
    fn map_visit<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        mut visit: impl FnMut(&UK, &UV),
    ) -> Result<()> {
        self.read(s, ns, |m, _| {
            if let Some(m) = m {
                m.iter().for_each(|(k, v)| visit(k, v));
            }
        })
    }

    fn map_is_empty<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
    ) -> Result<bool> {
        self.read(s, ns, |m, _| m.is_none_or(|m| m.is_empty()))
    }

    fn reducing_get<V: StateValue, N: Namespace>(
        &self,
        s: ReducingState<V, N>,
        ns: &N,
    ) -> Result<Option<V>> {
        self.read(s, ns, |v, _| v.cloned())
    }

    fn reducing_add<V: StateValue, N: Namespace>(
        &mut self,
        s: ReducingState<V, N>,
        ns: &N,
        value: V,
    ) -> Result<()> {
        let mut value = Some(value);
        let (current, _, reduce) = self.slot(s, ns, |_| {
            value.take().expect("the added value is used once")
        })?;
        if let Some(added) = value {
            *current = reduce(current, &added);
        }
        Ok(())
    }

    fn aggregating_get<F: AggregateFunction, N: Namespace>(
        &self,
        s: AggregatingState<F, N>,
        ns: &N,
    ) -> Result<Option<F::Out>> {
        self.read(s, ns, |acc, f| acc.map(|acc| f.get_result(acc)))
    }

    fn aggregating_add<F: AggregateFunction, N: Namespace>(
        &mut self,
        s: AggregatingState<F, N>,
        ns: &N,
        value: F::In,
    ) -> Result<()> {
        let (acc, _, f) = self.slot(s, ns, |f| f.create_accumulator())?;
        f.add(acc, value);
        Ok(())
    }

    fn clear<S: StateHandle>(&mut self, state: S, ns: &S::Namespace) -> Result<()> {
        if self.ttl_routed::<S>(state.id()) {
            return self.take(S::Ttl::from_id(state.id()), ns).map(drop);
        }
        self.take(state, ns).map(drop)
    }

    fn merge_namespaces<S: MergingState>(
        &mut self,
        state: S,
        target: &S::Namespace,
        sources: &[S::Namespace],
    ) -> Result<()> {
        if self.ttl_routed::<S>(state.id()) {
            return self.merge_typed(S::TtlMerging::from_id(state.id()), target, sources);
        }
        self.merge_typed(state, target, sources)
    }

    fn keys<S: StateHandle>(&self, state: S, ns: &S::Namespace) -> Result<Vec<K>> {
        let id = state.id();
        let key = |k: &K, _: &S::Namespace| k.clone();
        if self.ttl_routed::<S>(id) {
            self.keys_typed(S::Ttl::from_id(id), Some(ns), self.ttl_filter_of(id), key)
        } else {
            self.keys_typed(state, Some(ns), None, key)
        }
    }

    fn keys_and_namespaces<S: StateHandle>(&self, state: S) -> Result<Vec<(K, S::Namespace)>> {
        let id = state.id();
        let both = |k: &K, ns: &S::Namespace| (k.clone(), ns.clone());
        if self.ttl_routed::<S>(id) {
            self.keys_typed(S::Ttl::from_id(id), None, self.ttl_filter_of(id), both)
        } else {
            self.keys_typed(state, None, None, both)
        }
    }

    fn snapshot_state(&mut self) -> Result<StateSnapshot> {
        let now = self.clock.now_millis();
        let epoch = self.epoch;
        // Writes after the snapshot belong to the next epoch (incremental.rs).
        self.epoch = self.epoch.checked_add(1).ok_or_else(|| {
            Error::InvalidArgument("more than 2^32 snapshots of one heap backend".into())
        })?;
        let mut states: Vec<Arc<dyn StateTableSnapshot>> = self
            .states
            .iter()
            .map(|r| match r.ttl {
                // Full snapshots leave out what has expired (R65).
                Some(ttl) => TtlFilteredTable::wrap(r.table.snapshot(epoch), self.range, ttl, now),
                None => r.table.snapshot(epoch),
            })
            .collect();
        for pending in &self.pending {
            states.push(Arc::new(pending.clone()));
        }
        Ok(StateSnapshot::new(
            self.max_parallelism,
            self.range,
            crate::state::CodecInfo::of::<K>(),
            states,
        ))
    }

    /// With incremental checkpoints, checkpoint `id` becomes the base of later deltas (its
    /// view is kept, the views of older checkpoints in flight are dropped). Otherwise nothing
    /// to release: the frozen view belongs to the `PendingSnapshot`.
    fn notify_checkpoint_complete(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        if let Some((_, tracker, _)) = &self.incremental {
            if let Some(base) = tracker.lock().complete(id.0) {
                for r in &mut self.states {
                    r.table.prune_removals(base);
                }
            }
        }
        Ok(())
    }

    /// With incremental checkpoints, forgets checkpoint `id`'s view: no delta is written
    /// against it.
    fn notify_checkpoint_aborted(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        if let Some((_, tracker, _)) = &self.incremental {
            tracker.lock().abort(id.0);
        }
        Ok(())
    }

    /// A canonical file, or with incremental checkpoints configured and `target` a checkpoint,
    /// a delta file (or a new base) under `shared/` and a handle listing its chain
    /// (`incremental.rs`).
    fn snapshot(
        &mut self,
        target: impl Into<crate::checkpoint::SnapshotTarget>,
        storage: &Arc<dyn crate::checkpoint::CheckpointStorage>,
        name: &str,
    ) -> Result<crate::checkpoint::PendingSnapshot> {
        let target = target.into();
        let epoch = self.epoch;
        let view = self.snapshot_state()?;
        let incremental = self
            .incremental
            .as_ref()
            .filter(|_| target.kind() == crate::checkpoint::SnapshotKind::Checkpoint);
        let Some((options, tracker, uid)) = incremental else {
            return Ok(crate::checkpoint::PendingSnapshot::new(
                view,
                target,
                storage.clone(),
                name,
            ));
        };
        let job = HeapChainJob {
            view: view.clone(),
            epoch,
            tracker: Arc::clone(tracker),
            options: *options,
            uid: *uid,
        };
        Ok(crate::checkpoint::PendingSnapshot::native(
            view,
            target,
            storage.clone(),
            name,
            Box::new(job),
        ))
    }
}
