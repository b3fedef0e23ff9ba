//! [`Backend`]: the backend of the kind a [`BackendConfig`] names, chosen at run time, which
//! dispatches every call of [`KeyedStateBackend`] to it.

use crate::backend::KeyedStateBackend;
use crate::config::{BackendConfig, BackendKind};
use crate::error::Result;
use crate::heap::HeapBackend;
use crate::key_group::KeyGroupRange;
use crate::lsm::LsmBackend;
use crate::snapshot::StateSnapshot;
use crate::state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, Key, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, MergingState, Namespace, ReducingState,
    ReducingStateDescriptor, StateHandle, StateId, StateMeta, StateValue, ValueState,
    ValueStateDescriptor,
};

/// A keyed state backend of the kind chosen by configuration at run time.
///
/// ```
/// use flowstate::*;
/// let config = BackendConfig::heap()
///     .max_parallelism(128)
///     .key_group_range(KeyGroupRange::for_operator(128, 1, 0)?);
/// let mut backend = Backend::<String>::open(config)?;
/// let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
/// backend.set_current_key(&"alice".to_string());
/// let n = backend.value(&count).get()?.unwrap_or(0);
/// backend.value(&count).update(n + 1)?;
/// assert_eq!(backend.value(&count).get()?, Some(1));
/// # Ok::<(), flowstate::Error>(())
/// ```
#[non_exhaustive]
pub enum Backend<K: Key> {
    /// A heap backend.
    Heap(HeapBackend<K>),
    /// An LSM backend.
    Lsm(LsmBackend<K>),
}

/// Controls of the LSM backend's tree, reachable without matching on the kind: each does
/// nothing (and [`lsm_stats`](Backend::lsm_stats) returns `None`) on the heap backend, which
/// has no memtables, tables or background work.
///
/// ```
/// use flowstate::*;
/// let dir = tempfile::tempdir().expect("a temporary directory");
/// let mut backend = Backend::<u64>::open(BackendConfig::lsm(dir.path()))?;
/// let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
/// backend.set_current_key(&1);
/// backend.value(&count).update(5)?;
/// backend.flush()?;
/// backend.compact()?;
/// backend.wait_idle()?;
/// let stats = backend.lsm_stats().expect("an LSM backend");
/// assert_eq!(stats.tree.flushes, 1);
/// assert!(stats.tree.levels.iter().map(|l| l.tables).sum::<usize>() >= 1);
/// # Ok::<(), flowstate::Error>(())
/// ```
impl<K: Key> Backend<K> {
    /// Flushes the memtables into tables (LSM), on the calling thread.
    pub fn flush(&self) -> Result<()> {
        match self {
            Backend::Heap(_) => Ok(()),
            Backend::Lsm(b) => b.flush(),
        }
    }

    /// Flushes, then runs every compaction that is due, on the calling thread (LSM).
    pub fn compact(&self) -> Result<()> {
        match self {
            Backend::Heap(_) => Ok(()),
            Backend::Lsm(b) => b.flush_and_compact(),
        }
    }

    /// A full manual compaction: every table merged into the bottom level (LSM). Rewrites
    /// the whole state.
    pub fn compact_all(&self) -> Result<()> {
        match self {
            Backend::Heap(_) => Ok(()),
            Backend::Lsm(b) => b.compact_all(),
        }
    }

    /// Waits until no background flush or compaction is queued or running (LSM with a
    /// background pool), or returns the error of one that failed.
    pub fn wait_idle(&self) -> Result<()> {
        match self {
            Backend::Heap(_) => Ok(()),
            Backend::Lsm(b) => b.wait_idle(),
        }
    }

    /// The LSM backend's counters (tree, block cache, background steps); `None` for the heap
    /// backend.
    pub fn lsm_stats(&self) -> Option<crate::lsm::LsmStats> {
        match self {
            Backend::Heap(_) => None,
            Backend::Lsm(b) => Some(b.stats()),
        }
    }
}

impl<K: Key> Backend<K> {
    /// Opens an empty backend as `config` says.
    pub fn open(config: BackendConfig) -> Result<Self> {
        match config.kind {
            BackendKind::Heap => Ok(Backend::Heap(HeapBackend::open(config)?)),
            BackendKind::Lsm => Ok(Backend::Lsm(LsmBackend::open(config)?)),
        }
    }

    /// Opens a backend as `config` says, with the state of `sources` in the key groups it owns
    /// (see [`HeapBackend::restore`]).
    pub fn restore(
        config: BackendConfig,
        sources: &[&dyn crate::snapshot::RestoreSource],
    ) -> Result<Self> {
        match config.kind {
            BackendKind::Heap => Ok(Backend::Heap(HeapBackend::restore(config, sources)?)),
            BackendKind::Lsm => Ok(Backend::Lsm(LsmBackend::restore(config, sources)?)),
        }
    }

    /// Opens a backend as `config` says with the state of `handles` (of any kind: canonical
    /// files, native LSM snapshots of incremental checkpoints or native savepoints) in the key
    /// groups it owns, read through `storage`; handles that do not intersect its range are
    /// ignored. The LSM backend links the tables of native snapshots
    /// ([`LsmBackend::restore_from`]); the heap backend reads every handle entry by entry.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use flowstate::*;
    /// let dir = tempfile::tempdir().expect("a temporary directory");
    /// let storage: Arc<dyn CheckpointStorage> =
    ///     Arc::new(FsCheckpointStorage::new(dir.path().join("checkpoints"))?);
    /// let mut backend = Backend::<u64>::open(BackendConfig::lsm(dir.path().join("work")))?;
    /// let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
    /// backend.set_current_key(&7);
    /// backend.value(&count).update(1)?;
    /// // An incremental checkpoint: tables under shared/, a small native snapshot file.
    /// let written = backend.snapshot(CheckpointId(1), &storage, "task-0")?.run()?;
    /// let task = SubtaskState::new("counter", 0, 1, 128).with_keyed(written.handle);
    /// let done = storage.complete_checkpoint(CheckpointId(1), vec![task])?;
    /// backend.notify_checkpoint_complete(CheckpointId(1))?;
    ///
    /// // Into either backend, at any parallelism.
    /// let handles = done.handles_for(KeyGroupRange::new(0, 127)?);
    /// for config in [BackendConfig::heap(), BackendConfig::lsm(dir.path().join("work-2"))] {
    ///     let mut restored = Backend::<u64>::restore_from(config, &*storage, &handles)?;
    ///     let count = restored.register(ValueStateDescriptor::<u64>::new("count"))?;
    ///     restored.set_current_key(&7);
    ///     assert_eq!(restored.value(&count).get()?, Some(1));
    /// }
    /// # Ok::<(), flowstate::Error>(())
    /// ```
    pub fn restore_from(
        config: BackendConfig,
        storage: &dyn crate::checkpoint::CheckpointStorage,
        handles: &[crate::checkpoint::KeyedStateHandle],
    ) -> Result<Self> {
        match config.kind {
            BackendKind::Heap => {
                let (_, range) = config.validate()?;
                let handles: Vec<_> = handles
                    .iter()
                    .filter(|h| h.intersects(range))
                    .cloned()
                    .collect();
                let sources = crate::lsm::native_restore::open_restore_sources(storage, &handles)?;
                let sources: Vec<&dyn crate::snapshot::RestoreSource> =
                    sources.iter().map(|s| &**s as _).collect();
                Ok(Backend::Heap(HeapBackend::restore(config, &sources)?))
            }
            BackendKind::Lsm => Ok(Backend::Lsm(
                LsmBackend::restore_from(config, storage, handles)?.0,
            )),
        }
    }

    /// The kind of this backend.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Heap(_) => BackendKind::Heap,
            Backend::Lsm(_) => BackendKind::Lsm,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Backend::Heap($b) => $e,
            Backend::Lsm($b) => $e,
        }
    };
}

impl<K: Key> KeyedStateBackend<K> for Backend<K> {
    fn max_parallelism(&self) -> u32 {
        delegate!(self, b => b.max_parallelism())
    }
    fn key_group_range(&self) -> KeyGroupRange {
        delegate!(self, b => b.key_group_range())
    }
    #[inline]
    fn set_current_key(&mut self, key: &K) {
        delegate!(self, b => b.set_current_key(key))
    }
    fn current_key(&self) -> Option<&K> {
        delegate!(self, b => b.current_key())
    }
    fn current_key_group(&self) -> Option<u16> {
        delegate!(self, b => b.current_key_group())
    }
    fn state_meta(&self, id: StateId) -> Option<&StateMeta> {
        delegate!(self, b => b.state_meta(id))
    }
    fn state_id(&self, name: &str) -> Option<StateId> {
        delegate!(self, b => b.state_id(name))
    }
    fn state_ttl(&self, id: StateId) -> Option<crate::state::TtlConfig> {
        delegate!(self, b => b.state_ttl(id))
    }
    fn set_state_ttl(&mut self, id: StateId, ttl: crate::state::TtlConfig) -> Result<()> {
        delegate!(self, b => b.set_state_ttl(id, ttl))
    }
    fn clock(&self) -> &std::sync::Arc<dyn crate::clock::Clock> {
        delegate!(self, b => KeyedStateBackend::clock(b))
    }
    fn ttl_cleanup_step(&mut self, id: StateId, now: u64) -> Result<()> {
        delegate!(self, b => b.ttl_cleanup_step(id, now))
    }
    fn set_state_extra<H: StateHandle>(&mut self, handle: H, extra: H::Extra) -> Result<()> {
        delegate!(self, b => b.set_state_extra(handle, extra))
    }
    fn timers_in_order(&self, id: StateId) -> bool {
        delegate!(self, b => b.timers_in_order(id))
    }
    fn scan_timers(
        &self,
        id: StateId,
        key_group: u16,
        domain: u8,
        from: Option<(i64, &[u8], &[u8])>,
        limit: usize,
        visit: &mut crate::backend::TimerVisitor<'_>,
    ) -> Result<()> {
        delegate!(self, b => b.scan_timers(id, key_group, domain, from, limit, visit))
    }
    fn entry_count(&self) -> Result<usize> {
        delegate!(self, b => b.entry_count())
    }
    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        d: &ValueStateDescriptor<V, N>,
    ) -> Result<ValueState<V, N>> {
        delegate!(self, b => b.register_value(d))
    }
    fn register_list<T: StateValue, N: Namespace>(
        &mut self,
        d: &ListStateDescriptor<T, N>,
    ) -> Result<ListState<T, N>> {
        delegate!(self, b => b.register_list(d))
    }
    fn register_map<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        d: &MapStateDescriptor<UK, UV, N>,
    ) -> Result<MapState<UK, UV, N>> {
        delegate!(self, b => b.register_map(d))
    }
    fn register_reducing<V: StateValue, N: Namespace>(
        &mut self,
        d: &ReducingStateDescriptor<V, N>,
    ) -> Result<ReducingState<V, N>> {
        delegate!(self, b => b.register_reducing(d))
    }
    fn register_aggregating<F: AggregateFunction, N: Namespace>(
        &mut self,
        d: &AggregatingStateDescriptor<F, N>,
    ) -> Result<AggregatingState<F, N>> {
        delegate!(self, b => b.register_aggregating(d))
    }
    #[inline]
    fn value_get<V: StateValue, N: Namespace>(
        &self,
        s: ValueState<V, N>,
        ns: &N,
    ) -> Result<Option<V>> {
        delegate!(self, b => b.value_get(s, ns))
    }
    #[inline]
    fn value_update<V: StateValue, N: Namespace>(
        &mut self,
        s: ValueState<V, N>,
        ns: &N,
        v: V,
    ) -> Result<()> {
        delegate!(self, b => b.value_update(s, ns, v))
    }
    fn list_get<T: StateValue, N: Namespace>(&self, s: ListState<T, N>, ns: &N) -> Result<Vec<T>> {
        delegate!(self, b => b.list_get(s, ns))
    }
    fn list_add<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        e: T,
    ) -> Result<()> {
        delegate!(self, b => b.list_add(s, ns, e))
    }
    fn list_add_all<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        e: Vec<T>,
    ) -> Result<()> {
        delegate!(self, b => b.list_add_all(s, ns, e))
    }
    fn list_update<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        e: Vec<T>,
    ) -> Result<()> {
        delegate!(self, b => b.list_update(s, ns, e))
    }
    fn map_get<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        k: &UK,
    ) -> Result<Option<UV>> {
        delegate!(self, b => b.map_get(s, ns, k))
    }
    fn map_contains<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        k: &UK,
    ) -> Result<bool> {
        delegate!(self, b => b.map_contains(s, ns, k))
    }
    fn map_put<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        k: UK,
        v: UV,
    ) -> Result<()> {
        delegate!(self, b => b.map_put(s, ns, k, v))
    }
    fn map_put_all<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        e: Vec<(UK, UV)>,
    ) -> Result<()> {
        delegate!(self, b => b.map_put_all(s, ns, e))
    }
    fn map_remove<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        k: &UK,
    ) -> Result<()> {
        delegate!(self, b => b.map_remove(s, ns, k))
    }
    fn map_entries<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
    ) -> Result<Vec<(UK, UV)>> {
        delegate!(self, b => b.map_entries(s, ns))
    }
    fn value_visit<V: StateValue, N: Namespace, R>(
        &self,
        s: ValueState<V, N>,
        ns: &N,
        visit: impl FnOnce(Option<&V>) -> R,
    ) -> Result<R> {
        delegate!(self, b => b.value_visit(s, ns, visit))
    }
    fn list_visit<T: StateValue, N: Namespace, R>(
        &self,
        s: ListState<T, N>,
        ns: &N,
        visit: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        delegate!(self, b => b.list_visit(s, ns, visit))
    }
    fn map_get_visit<UK: Key, UV: StateValue, N: Namespace, R>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
        visit: impl FnOnce(Option<&UV>) -> R,
    ) -> Result<R> {
        delegate!(self, b => b.map_get_visit(s, ns, user_key, visit))
    }
    fn map_visit<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        visit: impl FnMut(&UK, &UV),
    ) -> Result<()> {
        delegate!(self, b => b.map_visit(s, ns, visit))
    }
    fn map_is_empty<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
    ) -> Result<bool> {
        delegate!(self, b => b.map_is_empty(s, ns))
    }
    fn reducing_get<V: StateValue, N: Namespace>(
        &self,
        s: ReducingState<V, N>,
        ns: &N,
    ) -> Result<Option<V>> {
        delegate!(self, b => b.reducing_get(s, ns))
    }
    fn reducing_add<V: StateValue, N: Namespace>(
        &mut self,
        s: ReducingState<V, N>,
        ns: &N,
        v: V,
    ) -> Result<()> {
        delegate!(self, b => b.reducing_add(s, ns, v))
    }
    fn aggregating_get<F: AggregateFunction, N: Namespace>(
        &self,
        s: AggregatingState<F, N>,
        ns: &N,
    ) -> Result<Option<F::Out>> {
        delegate!(self, b => b.aggregating_get(s, ns))
    }
    fn aggregating_add<F: AggregateFunction, N: Namespace>(
        &mut self,
        s: AggregatingState<F, N>,
        ns: &N,
        v: F::In,
    ) -> Result<()> {
        delegate!(self, b => b.aggregating_add(s, ns, v))
    }
    fn clear<S: StateHandle>(&mut self, s: S, ns: &S::Namespace) -> Result<()> {
        delegate!(self, b => b.clear(s, ns))
    }
    fn merge_namespaces<S: MergingState>(
        &mut self,
        s: S,
        target: &S::Namespace,
        sources: &[S::Namespace],
    ) -> Result<()> {
        delegate!(self, b => b.merge_namespaces(s, target, sources))
    }
    fn keys<S: StateHandle>(&self, s: S, ns: &S::Namespace) -> Result<Vec<K>> {
        delegate!(self, b => b.keys(s, ns))
    }
    fn keys_and_namespaces<S: StateHandle>(&self, state: S) -> Result<Vec<(K, S::Namespace)>> {
        delegate!(self, b => b.keys_and_namespaces(state))
    }
    fn snapshot_state(&mut self) -> Result<StateSnapshot> {
        delegate!(self, b => b.snapshot_state())
    }
    fn snapshot(
        &mut self,
        target: impl Into<crate::checkpoint::SnapshotTarget>,
        storage: &std::sync::Arc<dyn crate::checkpoint::CheckpointStorage>,
        name: &str,
    ) -> Result<crate::checkpoint::PendingSnapshot> {
        delegate!(self, b => b.snapshot(target, storage, name))
    }
    fn notify_checkpoint_complete(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        delegate!(self, b => b.notify_checkpoint_complete(id))
    }
    fn notify_checkpoint_aborted(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        delegate!(self, b => b.notify_checkpoint_aborted(id))
    }
}
