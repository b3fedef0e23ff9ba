//! The one trait every keyed state backend implements, its configuration, and [`Backend`],
//! which picks the kind at run time.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::heap::HeapBackend;
use crate::key_group::{check_max_parallelism, KeyGroupRange, DEFAULT_MAX_PARALLELISM};
use crate::lsm::backend::{LsmConfig, LsmStorage};
use crate::lsm::{LsmBackend, LsmBackground, LsmPool, ShardedBlockCache, TreeOptions};
use crate::snapshot::StateSnapshot;
use crate::state::{
    AggregateFunction, AggregatingAccess, AggregatingState, AggregatingStateDescriptor, Key,
    ListAccess, ListState, ListStateDescriptor, MapAccess, MapState, MapStateDescriptor,
    MergingState, Namespace, ReducingAccess, ReducingState, ReducingStateDescriptor,
    StateDescriptor, StateHandle, StateId, StateMeta, StateValue, ValueAccess, ValueState,
    ValueStateDescriptor,
};

/// Keyed state storage: per key (set with [`set_current_key`](Self::set_current_key)) and
/// namespace, value, list, map, reducing and aggregating state.
///
/// Operator code written against this trait (or against [`Backend`]) runs unchanged on every
/// backend. The methods named after a state kind (`value_get`, `list_add`, ...) are the
/// primitives a backend implements; operator code normally calls them through the accessors
/// [`value`](Self::value), [`list`](Self::list), [`map`](Self::map),
/// [`reducing`](Self::reducing) and [`aggregating`](Self::aggregating).
///
/// Every access needs a current key whose key group the backend owns; otherwise it fails with
/// [`Error::NoCurrentKey`] or [`Error::KeyGroupOutOfRange`].
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

/// Which kind of backend to open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// [`HeapBackend`]: typed state in copy-on-write maps in memory.
    Heap,
    /// [`LsmBackend`]: encoded state in an LSM tree on disk, for state larger than memory.
    Lsm,
}

/// How to open a backend: its kind, max parallelism, owned key groups and clock.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    kind: BackendKind,
    max_parallelism: u32,
    key_group_range: Option<KeyGroupRange>,
    clock: Arc<dyn Clock>,
    lsm: Option<LsmConfig>,
}

impl BackendConfig {
    /// A heap backend with max parallelism 128 owning every key group.
    pub fn heap() -> Self {
        BackendConfig {
            kind: BackendKind::Heap,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            key_group_range: None,
            clock: Arc::new(SystemClock),
            lsm: None,
        }
    }

    /// An LSM backend working in directory `dir` (created if missing; the tree files an earlier
    /// backend left there are deleted at open), with max parallelism 128 owning every key group,
    /// a 64 MiB memtable, a 64 MiB block cache and a background thread of its own.
    pub fn lsm(dir: impl AsRef<std::path::Path>) -> Self {
        Self::with_lsm(LsmStorage::Path(dir.as_ref().to_path_buf()))
    }

    /// An LSM backend working in directory `dir` of `storage` (a [`MemStorage`] in tests, say);
    /// otherwise as [`lsm`](Self::lsm).
    ///
    /// [`MemStorage`]: crate::storage::MemStorage
    pub fn lsm_on(storage: Arc<dyn crate::storage::Storage>, dir: &str) -> Self {
        Self::with_lsm(LsmStorage::Storage(storage, dir.to_owned()))
    }

    fn with_lsm(storage: LsmStorage) -> Self {
        BackendConfig {
            kind: BackendKind::Lsm,
            lsm: Some(LsmConfig::new(storage)),
            ..Self::heap()
        }
    }

    fn map_lsm(mut self, change: impl FnOnce(&mut LsmConfig)) -> Self {
        if let Some(lsm) = &mut self.lsm {
            change(lsm);
        }
        self
    }

    /// LSM: the memory a memtable may use before it is frozen and flushed (default 64 MiB).
    /// Ignored by other kinds, as are all `lsm_*` settings.
    pub fn lsm_memtable_bytes(self, bytes: usize) -> Self {
        self.map_lsm(|l| l.tree.memtable_bytes = bytes)
    }

    /// LSM: frozen memtables that may wait for a flush before writes flush themselves
    /// (default 2). With the memtable size it bounds memtable memory to
    /// `(max_immutable_memtables + 2) × memtable_bytes`.
    pub fn lsm_max_immutable_memtables(self, count: usize) -> Self {
        self.map_lsm(|l| l.tree.max_immutable_memtables = count)
    }

    /// LSM: the bytes of data blocks the block cache may hold (default 64 MiB; 0: no cache).
    pub fn lsm_block_cache_bytes(self, bytes: usize) -> Self {
        self.map_lsm(|l| l.block_cache_bytes = bytes)
    }

    /// LSM: whether tables are read through read-only memory maps where the storage can map
    /// them (default true; [`TreeOptions::mmap_reads`]).
    pub fn lsm_mmap_reads(self, enabled: bool) -> Self {
        self.map_lsm(|l| l.tree.mmap_reads = enabled)
    }

    /// LSM: a block cache shared with other backends of the process (bounds their total).
    pub fn lsm_shared_cache(self, cache: Arc<ShardedBlockCache>) -> Self {
        self.map_lsm(|l| l.shared_cache = Some(cache))
    }

    /// LSM: runs flushes and compactions on `pool`, shared with other backends.
    pub fn lsm_pool(self, pool: Arc<LsmPool>) -> Self {
        self.map_lsm(|l| l.background = LsmBackground::Pool(pool))
    }

    /// LSM: where flushes and compactions run (default: one thread of the backend's own).
    pub fn lsm_background(self, background: LsmBackground) -> Self {
        self.map_lsm(|l| l.background = background)
    }

    /// LSM: whether checkpoints are incremental (default true): a checkpoint publishes only
    /// the table files no earlier checkpoint of the backend published, under `shared/`, and
    /// writes a small native snapshot file that lists every table it needs. `false`: every
    /// checkpoint writes the whole state as a canonical file (portable across backends, as
    /// savepoints always are). spec/checkpoint-protocol.md section 8.
    pub fn lsm_incremental_checkpoints(self, enabled: bool) -> Self {
        self.map_lsm(|l| l.incremental_checkpoints = enabled)
    }

    /// LSM: how compactions are picked (default [`CompactionPolicy::Leveled`](crate::lsm::CompactionPolicy);
    /// [`CompactionPolicy::CheckpointAware`](crate::lsm::CompactionPolicy) for incremental
    /// checkpoints that re-ship few bytes, at some space and read cost).
    pub fn lsm_compaction(self, policy: crate::lsm::CompactionPolicy) -> Self {
        self.map_lsm(|l| l.tree.compaction = policy)
    }

    /// LSM: every option of the tree at once (table format, compaction triggers and sizes).
    /// Its `block_cache` is replaced by the backend's cache.
    pub fn lsm_tree_options(self, options: TreeOptions) -> Self {
        self.map_lsm(|l| l.tree = options)
    }

    /// The LSM settings, for a configuration of kind LSM.
    pub fn lsm_config(&self) -> Option<&LsmConfig> {
        self.lsm.as_ref()
    }

    /// Sets the max parallelism (the number of key groups), 1..=32768.
    pub fn max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = max_parallelism;
        self
    }

    /// Sets the key groups the backend owns (default: all of them).
    pub fn key_group_range(mut self, range: KeyGroupRange) -> Self {
        self.key_group_range = Some(range);
        self
    }

    /// Sets the clock used for time-dependent state (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The kind of backend.
    pub fn kind(&self) -> &BackendKind {
        &self.kind
    }

    /// The configured clock.
    pub fn get_clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Checks the configuration and returns (max parallelism, key-group range).
    pub(crate) fn validate(&self) -> Result<(u32, KeyGroupRange)> {
        check_max_parallelism(self.max_parallelism)?;
        let range = match self.key_group_range {
            Some(r) => r,
            None => KeyGroupRange::all(self.max_parallelism)?,
        };
        if range.is_empty() {
            return Err(Error::InvalidConfig(
                "the key-group range is empty: a backend must own at least one key group".into(),
            ));
        }
        if u32::from(range.end()) >= self.max_parallelism {
            return Err(Error::InvalidConfig(format!(
                "key-group range {range} exceeds max parallelism {}",
                self.max_parallelism
            )));
        }
        Ok((self.max_parallelism, range))
    }
}

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
