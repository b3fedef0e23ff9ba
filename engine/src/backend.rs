//! The one trait every keyed state backend implements. Its configuration is in
//! [`config`](crate::config), and [`Backend`](crate::Backend), which picks the kind at run
//! time, in [`dispatch`](crate::dispatch).

use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::snapshot::StateSnapshot;
use crate::state::{
    AggregateFunction, AggregatingAccess, AggregatingState, AggregatingStateDescriptor, Key,
    ListAccess, ListState, ListStateDescriptor, MapAccess, MapState, MapStateDescriptor,
    MergingState, Namespace, ReducingAccess, ReducingState, ReducingStateDescriptor,
    StateDescriptor, StateHandle, StateId, StateMeta, StateValue, TtlConfig, ValueAccess,
    ValueState, ValueStateDescriptor,
};

/// What `KeyedStateBackend::scan_timers` calls with each timer: its timestamp, key bytes and
/// namespace bytes (after the slot header).
#[doc(hidden)]
pub type TimerVisitor<'a> = dyn FnMut(i64, &[u8], &[u8]) + 'a;

/// Keyed state storage: per key (set with [`set_current_key`](Self::set_current_key)) and
/// namespace, value, list, map, reducing and aggregating state.
///
/// Operator code written against this trait (or against [`Backend`](crate::Backend)) runs unchanged on every
/// backend. The methods named after a state kind (`value_get`, `list_add`, ...) are the
/// primitives a backend implements; operator code normally calls them through the accessors
/// [`value`](Self::value), [`list`](Self::list), [`map`](Self::map),
/// [`reducing`](Self::reducing) and [`aggregating`](Self::aggregating).
///
/// Every access needs a current key whose key group the backend owns; otherwise it fails with
/// [`Error::NoCurrentKey`] or
/// [`Error::KeyGroupOutOfRange`].
pub trait KeyedStateBackend<K: Key> {
    /// The number of key groups of the job.
    fn max_parallelism(&self) -> u32;
    /// The key groups this backend owns.
    fn key_group_range(&self) -> KeyGroupRange;
    /// Makes `key` the current key: encodes it and computes its key group once.
    fn set_current_key(&mut self, key: &K);
    /// The current key, if one was set.
    fn current_key(&self) -> Option<&K>;
    /// The key group of the current key, if one was set.
    fn current_key_group(&self) -> Option<u16>;
    /// What the state with `id` is, if this backend has it.
    fn state_meta(&self, id: StateId) -> Option<&StateMeta>;
    /// The id of the state named `name`, if one is registered (the LSM backend also knows
    /// restored states not registered yet).
    fn state_id(&self, name: &str) -> Option<StateId>;
    /// The time-to-live state `id` was registered with, if any (spec/state-semantics.md R60).
    fn state_ttl(&self, id: StateId) -> Option<TtlConfig>;
    /// Gives state `id` a time-to-live: what registering a descriptor `with_ttl` does after
    /// registering the state's stored form. Fails with `UnknownState` for an id this backend
    /// did not issue.
    #[doc(hidden)]
    fn set_state_ttl(&mut self, id: StateId, ttl: TtlConfig) -> Result<()>;
    /// The clock time-dependent state (TTL) reads.
    fn clock(&self) -> &std::sync::Arc<dyn crate::clock::Clock>;
    /// Replaces the per-state data of a registered state (its reduce or aggregate function):
    /// what registering a state with a TTL again does, so that the function judges expiry by
    /// the new TTL. Fails with `UnknownState` if `handle` is not registered as its type.
    #[doc(hidden)]
    fn set_state_extra<H: StateHandle>(&mut self, handle: H, extra: H::Extra) -> Result<()>;
    /// One step of background TTL cleanup for state `id`, which the accessors take on each
    /// access to a state with a TTL: the heap backend checks a few more entries
    /// (`TtlConfig::incremental_cleanup`, R70); the LSM backend cleans up in compaction and does
    /// nothing here. `now` is the access's time, read once by the accessor.
    #[doc(hidden)]
    fn ttl_cleanup_step(&mut self, id: StateId, now: u64) -> Result<()> {
        let _ = (id, now);
        Ok(())
    }
    /// Whether the backend keeps the entries of timer state `id` in firing order per key group
    /// (the LSM backend's timer layout), so that a timer service reads them a few at a time
    /// with [`scan_timers`](Self::scan_timers) instead of holding them all in memory.
    #[doc(hidden)]
    fn timers_in_order(&self, id: StateId) -> bool {
        let _ = id;
        false
    }
    /// Visits the first `limit` timers of timer state `id` in `key_group` and the domain of
    /// code `domain` from the timer `from` on (timestamp, key bytes, namespace bytes; the
    /// group's start if `None`), in firing order, as (timestamp, key bytes, namespace bytes
    /// after the slot header). Only where [`timers_in_order`](Self::timers_in_order); elsewhere an
    /// error.
    #[doc(hidden)]
    fn scan_timers(
        &self,
        id: StateId,
        key_group: u16,
        domain: u8,
        from: Option<(i64, &[u8], &[u8])>,
        limit: usize,
        visit: &mut TimerVisitor<'_>,
    ) -> Result<()> {
        let _ = (key_group, domain, from, limit, visit);
        Err(Error::InvalidArgument(format!(
            "state {} is not kept in timer order by this backend",
            id.0
        )))
    }
    /// The number of (key, namespace) entries over all states: a count in memory for the
    /// heap backend, a scan of every state for the LSM backend.
    fn entry_count(&self) -> Result<usize>;

    /// Registers a value state; registering the same name again with the same types returns the
    /// same handle, with other types fails with [`Error::StateTypeMismatch`].
    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        descriptor: &ValueStateDescriptor<V, N>,
    ) -> Result<ValueState<V, N>>;
    /// Registers a list state (see [`register_value`](Self::register_value)).
    fn register_list<T: StateValue, N: Namespace>(
        &mut self,
        descriptor: &ListStateDescriptor<T, N>,
    ) -> Result<ListState<T, N>>;
    /// Registers a map state (see [`register_value`](Self::register_value)).
    fn register_map<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV, N>,
    ) -> Result<MapState<UK, UV, N>>;
    /// Registers a reducing state (see [`register_value`](Self::register_value)).
    fn register_reducing<V: StateValue, N: Namespace>(
        &mut self,
        descriptor: &ReducingStateDescriptor<V, N>,
    ) -> Result<ReducingState<V, N>>;
    /// Registers an aggregating state (see [`register_value`](Self::register_value)).
    fn register_aggregating<F: AggregateFunction, N: Namespace>(
        &mut self,
        descriptor: &AggregatingStateDescriptor<F, N>,
    ) -> Result<AggregatingState<F, N>>;

    /// The value of the current key in `ns`.
    fn value_get<V: StateValue, N: Namespace>(
        &self,
        state: ValueState<V, N>,
        ns: &N,
    ) -> Result<Option<V>>;
    /// Sets the value of the current key in `ns`.
    fn value_update<V: StateValue, N: Namespace>(
        &mut self,
        state: ValueState<V, N>,
        ns: &N,
        value: V,
    ) -> Result<()>;

    /// The list of the current key in `ns` (empty if absent).
    fn list_get<T: StateValue, N: Namespace>(
        &self,
        state: ListState<T, N>,
        ns: &N,
    ) -> Result<Vec<T>>;
    /// Appends to the list of the current key in `ns`.
    fn list_add<T: StateValue, N: Namespace>(
        &mut self,
        state: ListState<T, N>,
        ns: &N,
        element: T,
    ) -> Result<()>;
    /// Appends all `elements` to the list of the current key in `ns`.
    fn list_add_all<T: StateValue, N: Namespace>(
        &mut self,
        state: ListState<T, N>,
        ns: &N,
        elements: Vec<T>,
    ) -> Result<()>;
    /// Replaces the list of the current key in `ns`; an empty vector clears it.
    fn list_update<T: StateValue, N: Namespace>(
        &mut self,
        state: ListState<T, N>,
        ns: &N,
        elements: Vec<T>,
    ) -> Result<()>;

    /// The value of `user_key` in the map of the current key in `ns`.
    fn map_get<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        state: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<Option<UV>>;
    /// Whether the map of the current key in `ns` holds `user_key`.
    fn map_contains<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        state: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<bool>;
    /// Sets `user_key` to `value` in the map of the current key in `ns`.
    fn map_put<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        state: MapState<UK, UV, N>,
        ns: &N,
        user_key: UK,
        value: UV,
    ) -> Result<()>;
    /// Sets every entry of `entries` in the map of the current key in `ns`.
    fn map_put_all<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        state: MapState<UK, UV, N>,
        ns: &N,
        entries: Vec<(UK, UV)>,
    ) -> Result<()>;
    /// Removes `user_key` from the map of the current key in `ns`.
    fn map_remove<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        state: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<()>;
    /// Every entry of the map of the current key in `ns`.
    fn map_entries<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        state: MapState<UK, UV, N>,
        ns: &N,
    ) -> Result<Vec<(UK, UV)>>;
    /// Whether the map of the current key in `ns` is empty.
    fn map_is_empty<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        state: MapState<UK, UV, N>,
        ns: &N,
    ) -> Result<bool>;

    /// Calls `visit` with the value of the current key in `ns` (`None` if absent) and returns
    /// what it returns. The heap backend lends its stored value, so a read copies nothing; the
    /// default decodes an owned value through [`value_get`](Self::value_get) and lends that.
    fn value_visit<V: StateValue, N: Namespace, R>(
        &self,
        state: ValueState<V, N>,
        ns: &N,
        visit: impl FnOnce(Option<&V>) -> R,
    ) -> Result<R> {
        Ok(visit(self.value_get(state, ns)?.as_ref()))
    }
    /// Calls `visit` with the elements of the list of the current key in `ns` (empty if
    /// absent), borrowed as [`value_visit`](Self::value_visit) borrows a value.
    fn list_visit<T: StateValue, N: Namespace, R>(
        &self,
        state: ListState<T, N>,
        ns: &N,
        visit: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        Ok(visit(&self.list_get(state, ns)?))
    }
    /// Calls `visit` with the value of `user_key` in the map of the current key in `ns`
    /// (`None` if absent), borrowed as [`value_visit`](Self::value_visit) borrows a value.
    fn map_get_visit<UK: Key, UV: StateValue, N: Namespace, R>(
        &self,
        state: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
        visit: impl FnOnce(Option<&UV>) -> R,
    ) -> Result<R> {
        Ok(visit(self.map_get(state, ns, user_key)?.as_ref()))
    }
    /// Calls `visit` with every entry of the map of the current key in `ns`, in an
    /// unspecified order, without collecting them: the heap backend lends its stored entries,
    /// the LSM backend decodes each entry as its scan reaches it.
    fn map_visit<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        state: MapState<UK, UV, N>,
        ns: &N,
        mut visit: impl FnMut(&UK, &UV),
    ) -> Result<()> {
        for (k, v) in self.map_entries(state, ns)? {
            visit(&k, &v);
        }
        Ok(())
    }

    /// The reduced value of the current key in `ns`.
    fn reducing_get<V: StateValue, N: Namespace>(
        &self,
        state: ReducingState<V, N>,
        ns: &N,
    ) -> Result<Option<V>>;
    /// Folds `value` into the reduced value of the current key in `ns`.
    fn reducing_add<V: StateValue, N: Namespace>(
        &mut self,
        state: ReducingState<V, N>,
        ns: &N,
        value: V,
    ) -> Result<()>;

    /// The aggregate result of the current key in `ns`.
    fn aggregating_get<F: AggregateFunction, N: Namespace>(
        &self,
        state: AggregatingState<F, N>,
        ns: &N,
    ) -> Result<Option<F::Out>>;
    /// Adds `value` to the accumulator of the current key in `ns`.
    fn aggregating_add<F: AggregateFunction, N: Namespace>(
        &mut self,
        state: AggregatingState<F, N>,
        ns: &N,
        value: F::In,
    ) -> Result<()>;

    /// Removes the entry of the current key in `ns` (only that key and namespace).
    fn clear<S: StateHandle>(&mut self, state: S, ns: &S::Namespace) -> Result<()>;
    /// Merges the state of the current key in each of `sources` into `target`, then removes
    /// the sources. A source equal to `target` is skipped.
    fn merge_namespaces<S: MergingState>(
        &mut self,
        state: S,
        target: &S::Namespace,
        sources: &[S::Namespace],
    ) -> Result<()>;
    /// Every key that has an entry of `state` in namespace `ns`, over all owned key groups,
    /// in no particular order. Needs no current key.
    fn keys<S: StateHandle>(&self, state: S, ns: &S::Namespace) -> Result<Vec<K>>;
    /// Every (key, namespace) that has an entry of `state`, over all owned key groups, in no
    /// particular order (Flink's `getKeysAndNamespaces`); with a TTL, only entries with
    /// something live (R63). Needs no current key.
    fn keys_and_namespaces<S: StateHandle>(&self, state: S) -> Result<Vec<(K, S::Namespace)>>;

    /// The synchronous phase of a snapshot: a frozen view of every state, whose cost does not
    /// grow with the number of entries. Later writes do not change the view.
    fn snapshot_state(&mut self) -> Result<StateSnapshot>;

    /// Tells the backend that checkpoint `id` completed: it may release what it kept for it
    /// (pinned files of an incremental checkpoint). A backend that keeps nothing per
    /// checkpoint (the heap backend: a snapshot's view is released when its asynchronous
    /// phase returns) does nothing.
    fn notify_checkpoint_complete(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()>;

    /// Tells the backend that checkpoint `id` was aborted: it may drop what it wrote or kept
    /// for it. The storage deletes the checkpoint's files (`CheckpointStorage::abort`).
    fn notify_checkpoint_aborted(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()>;

    /// The synchronous phase of a checkpoint or savepoint: freezes every state (as
    /// [`snapshot_state`](Self::snapshot_state)) and returns the asynchronous phase, which
    /// writes it as state file `name` of `target` when its `run()` is called, on any thread.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flowstate::*;
    /// let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::new());
    /// let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
    /// let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
    /// backend.set_current_key(&7);
    /// backend.value(&count).update(1)?;
    ///
    /// let pending = backend.snapshot(CheckpointId(1), &storage, "task-0")?; // microseconds
    /// let written = std::thread::spawn(move || pending.run()).join().expect("no panic")?;
    /// let task = SubtaskState::new("counter", 0, 1, 128).with_keyed(written.handle);
    /// let done = storage.complete_checkpoint(CheckpointId(1), vec![task])?;
    ///
    /// let handles = done.handles_for(backend.key_group_range());
    /// let sources = FileRestoreSource::open_all(&*storage, &handles)?;
    /// let sources: Vec<&dyn RestoreSource> = sources.iter().map(|s| s as _).collect();
    /// let mut restored = Backend::<u64>::restore(BackendConfig::heap(), &sources)?;
    /// let count = restored.register(ValueStateDescriptor::<u64>::new("count"))?;
    /// restored.set_current_key(&7);
    /// assert_eq!(restored.value(&count).get()?, Some(1));
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    fn snapshot(
        &mut self,
        target: impl Into<crate::checkpoint::SnapshotTarget>,
        storage: &std::sync::Arc<dyn crate::checkpoint::CheckpointStorage>,
        name: &str,
    ) -> Result<crate::checkpoint::PendingSnapshot>
    where
        Self: Sized,
    {
        let view = self.snapshot_state()?;
        Ok(crate::checkpoint::PendingSnapshot::new(
            view,
            target.into(),
            storage.clone(),
            name,
        ))
    }

    /// The handle of the state registered as `name`, for operator code that finds its state by
    /// name at run time (an engine that builds operators from a plan) rather than keeping the
    /// handle [`register`](Self::register) returned. `H` is the handle type it was registered
    /// as (with or without a TTL): another kind or other codecs are
    /// [`Error::StateTypeMismatch`], a name no state has is [`Error::InvalidArgument`].
    ///
    /// ```
    /// use flowstate::*;
    /// let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
    /// backend.register(ValueStateDescriptor::<u64>::new("count"))?;
    /// // Elsewhere, by name:
    /// let count: ValueState<u64> = backend.handle("count")?;
    /// backend.set_current_key(&7);
    /// backend.value(&count).update(1)?;
    /// assert!(backend.handle::<ListState<u64>>("count").is_err());
    /// assert!(backend.handle::<ValueState<u64>>("missing").is_err());
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    fn handle<H: StateHandle>(&self, name: &str) -> Result<H>
    where
        Self: Sized,
    {
        let id = self
            .state_id(name)
            .ok_or_else(|| Error::InvalidArgument(format!("no state is named '{name}'")))?;
        let requested = if self.state_ttl(id).is_some() {
            <H::Ttl as StateHandle>::meta(name)
        } else {
            H::meta(name)
        };
        match self.state_meta(id) {
            Some(registered) if *registered == requested => Ok(H::from_id(id)),
            Some(registered) => Err(Error::StateTypeMismatch {
                name: name.to_owned(),
                registered: registered.to_string(),
                requested: requested.to_string(),
            }),
            None => Err(Error::UnknownState { id: id.0 }),
        }
    }

    /// Registers `descriptor` and returns its handle.
    fn register<D: StateDescriptor>(&mut self, descriptor: D) -> Result<D::Handle>
    where
        Self: Sized,
    {
        descriptor.register_in(self)
    }

    /// Access to value state for the current key.
    fn value<V: StateValue, N: Namespace>(
        &mut self,
        state: &ValueState<V, N>,
    ) -> ValueAccess<'_, K, Self, V, N>
    where
        Self: Sized,
    {
        ValueAccess::new(self, *state)
    }

    /// Access to list state for the current key.
    fn list<T: StateValue, N: Namespace>(
        &mut self,
        state: &ListState<T, N>,
    ) -> ListAccess<'_, K, Self, T, N>
    where
        Self: Sized,
    {
        ListAccess::new(self, *state)
    }

    /// Access to map state for the current key.
    fn map<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        state: &MapState<UK, UV, N>,
    ) -> MapAccess<'_, K, Self, UK, UV, N>
    where
        Self: Sized,
    {
        MapAccess::new(self, *state)
    }

    /// Access to reducing state for the current key.
    fn reducing<V: StateValue, N: Namespace>(
        &mut self,
        state: &ReducingState<V, N>,
    ) -> ReducingAccess<'_, K, Self, V, N>
    where
        Self: Sized,
    {
        ReducingAccess::new(self, *state)
    }

    /// Access to aggregating state for the current key.
    fn aggregating<F: AggregateFunction, N: Namespace>(
        &mut self,
        state: &AggregatingState<F, N>,
    ) -> AggregatingAccess<'_, K, Self, F, N>
    where
        Self: Sized,
    {
        AggregatingAccess::new(self, *state)
    }
}
