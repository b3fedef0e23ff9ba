//! [`LsmBackend`]: keyed state in an LSM tree, for state larger than memory.
//!
//! Every state of a task lives in one [`Tree`] under keys of the layout of [`key`]:
//! `state id | key group | key | namespace [| map user key]`. Values are stored encoded with
//! their codecs:
//!
//! - value, reducing and aggregating state: one entry per (key, namespace), the encoded value
//!   or accumulator; reducing and aggregating `add` read, fold and write the entry;
//! - list state: one entry whose value is the elements, each as `varint(len) | bytes`; `add`
//!   writes a list-append merge operand and never reads ([`merge`](super::merge));
//! - map state: one entry per user key, so that `put` and `remove` never read the map and
//!   iteration is one prefix scan.
//!
//! A snapshot's synchronous phase freezes the memtable and pins the frozen memtables and the
//! current version of tables ([`Tree::snapshot`]): its cost does not grow with the state. The
//! views it returns read the pinned data per key group and give the same canonical entries as
//! the heap backend, so checkpoints and savepoints of both backends are interchangeable.
//!
//! spec/lsm-tree.md describes the tree, spec/lsm-key-layout.md the keys.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::cache::{CacheStats, ShardedBlockCache};
use super::checkpoint::{random_table_id_base, NativeJob, SharedTables};
use super::config::{LsmBackground, LsmStorage};
use super::key;
use super::merge::{push_list_element, ListElements};
use super::pool::{step, LsmPool, Worker};
use super::timer_key::{self, Layout};
use super::tree::{TableWriter, Tree, TreeOptions, TreeSnapshot, TreeStats, MANIFEST_NAME};
use super::ttl_compaction::TtlCompactionFilter;
use crate::backend::KeyedStateBackend;
use crate::clock::Clock;
use crate::codec::{Codec, CodecError};
use crate::config::BackendConfig;
use crate::error::{Error, Result};
use crate::key_group::{key_group_for, KeyGroupRange};
use crate::restore::{visit_sources, RestoreSink};
use crate::snapshot::{
    EncodedEntry, EncodedRun, EncodedState, RestoreSource, RunValueSource, StateSnapshot,
    StateTableSnapshot,
};
use crate::state::ttl_filter::{any_live, TtlFilteredTable};
use crate::state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, CodecInfo, Key, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, MergingState, Namespace, ReducingState,
    ReducingStateDescriptor, StateHandle, StateId, StateKind, StateMeta, StateValue, TtlConfig,
    ValueState, ValueStateDescriptor,
};
use crate::storage::{is_temp_name, LocalStorage, Storage, ROOT};

/// The current key: its value, encoding and key group.
struct CurrentKey<K> {
    key: K,
    encoded: Vec<u8>,
    key_group: u16,
    owned: bool,
}

/// A state of the backend: what it is and, once registered, the handle type and the extra
/// data (reduce or aggregate function) of its registration.
struct LsmState {
    meta: StateMeta,
    handle: Option<TypeId>,
    extra: Option<Box<dyn Any + Send + Sync>>,
    /// The state's time-to-live, if it was registered with one (R60).
    ttl: Option<TtlConfig>,
    /// How its tree keys are laid out (by its meta: timer states in firing order).
    layout: Layout,
}

impl LsmState {
    fn new(
        meta: StateMeta,
        handle: Option<TypeId>,
        extra: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        LsmState {
            layout: Layout::of(&meta),
            meta,
            handle,
            extra,
            ttl: None,
        }
    }
}

/// Counters of an LSM backend, from [`LsmBackend::stats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LsmStats {
    /// The tree's counters: memtable bytes, tables and bytes per level, bytes flushed and
    /// compacted (write amplification).
    pub tree: TreeStats,
    /// The block cache's counters, if the backend has a cache.
    pub cache: Option<CacheStats>,
    /// Flush and compaction steps run on background threads for this backend.
    pub background_steps: u64,
}

impl LsmStats {
    /// Bytes written to tables per byte flushed ([`TreeStats::write_amplification`]).
    pub fn write_amplification(&self) -> f64 {
        self.tree.write_amplification()
    }
}

/// Keyed state in an LSM tree on local disk (or any [`Storage`]); see [the module](self).
///
/// ```
/// use flowstate::*;
/// let dir = tempfile::tempdir().expect("a temporary directory");
/// let mut backend = LsmBackend::<String>::open(BackendConfig::lsm(dir.path()))?;
/// let visits = backend.register(MapStateDescriptor::<String, u32>::new("visits"))?;
/// backend.set_current_key(&"alice".to_string());
/// backend.map(&visits).put("home".into(), 3)?;
/// backend.map(&visits).put("cart".into(), 1)?;
/// let frozen = backend.snapshot_state()?; // microseconds: freezes the memtable
/// backend.map(&visits).remove(&"home".into())?;
/// assert_eq!(backend.map(&visits).entries()?.len(), 1);
/// assert_eq!(frozen.state("visits").unwrap().entry_count()?, 1); // one (key, namespace)
/// # Ok::<(), flowstate::Error>(())
/// ```
pub struct LsmBackend<K: Key> {
    pub(super) max_parallelism: u32,
    pub(super) range: KeyGroupRange,
    current: Option<CurrentKey<K>>,
    states: Vec<LsmState>,
    by_name: HashMap<String, StateId>,
    tree: Arc<Tree>,
    cache: Option<Arc<ShardedBlockCache>>,
    /// The pool and this tree's record in it; `None` when work runs inline.
    worker: Option<(Arc<LsmPool>, Arc<Worker>)>,
    clock: Arc<dyn Clock>,
    /// The TTL cleanup every compaction of the tree runs (R70).
    ttl_filter: Arc<TtlCompactionFilter>,
    /// Whether checkpoints are incremental native snapshots.
    incremental: bool,
    /// The tables published under `shared/` (the backend's side of the registry).
    pub(super) shared: Arc<parking_lot::Mutex<SharedTables>>,
    /// The storage of the working directory (where the table files are).
    pub(super) storage: Arc<dyn Storage>,
    /// Last field: dropped after the tree, so the tree's files are gone when it runs. Snapshot
    /// views hold it too: the directory goes with the last of the backend and its views.
    _created_dir: Arc<CreatedDir>,
}

/// A local directory the backend created, removed (if empty) when the backend is dropped.
struct CreatedDir(Option<PathBuf>);

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            // Fails, and leaves the directory, if a snapshot still holds a table file in it.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl<K: Key> Drop for LsmBackend<K> {
    fn drop(&mut self) {
        // The working files are useless without the backend (there is no write-ahead log):
        // delete them once nothing reads them. An error leaves files the next open removes.
        let _ = self.tree.dispose();
    }
}

impl<K: Key> std::fmt::Debug for LsmBackend<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LsmBackend")
            .field("max_parallelism", &self.max_parallelism)
            .field("range", &self.range)
            .field("states", &self.states.len())
            .field("tree", &self.tree)
            .finish_non_exhaustive()
    }
}

/// Appends a map entry's user key to a tree key (see `LsmBackend::read_entry`).
type UserKeyWriter<'a> = dyn Fn(&mut Vec<u8>) + 'a;

fn codec_error(what: impl FnOnce() -> String) -> impl FnOnce(CodecError) -> Error {
    move |source| Error::Codec {
        what: what(),
        source,
    }
}

impl<K: Key> LsmBackend<K> {
    /// Opens an empty LSM backend as `config` says (it must be of kind LSM).
    ///
    /// The directory is the backend's working directory: table files and a manifest left in it
    /// by an earlier backend are deleted (state comes back from checkpoints, not from the
    /// working directory). Other files are left alone. When the backend is dropped its table
    /// files are deleted as soon as no snapshot reads them, and a directory it created is
    /// removed if that leaves it empty.
    pub fn open(config: BackendConfig) -> Result<Self> {
        let (max_parallelism, range) = config.validate()?;
        let Some(lsm) = config.lsm_config() else {
            return Err(Error::InvalidConfig(
                "LsmBackend::open needs a configuration of kind LSM (BackendConfig::lsm)".into(),
            ));
        };
        let mut created_dir = CreatedDir(None);
        let (storage, dir): (Arc<dyn Storage>, String) = match &lsm.storage {
            LsmStorage::Path(path) => {
                if !path.exists() {
                    created_dir.0 = Some(path.clone());
                }
                (Arc::new(LocalStorage::new(path)?), ROOT.to_owned())
            }
            LsmStorage::Storage(storage, dir) => (Arc::clone(storage), dir.clone()),
        };
        clear_working_dir(&*storage, &dir)?;
        let cache = match (&lsm.shared_cache, lsm.block_cache_bytes) {
            (Some(shared), _) => Some(Arc::clone(shared)),
            (None, 0) => None,
            (None, bytes) => Some(Arc::new(ShardedBlockCache::new(bytes))),
        };
        let mut tree_options = lsm.tree.clone();
        if tree_options.first_table_id == TreeOptions::default().first_table_id {
            tree_options.first_table_id = random_table_id_base();
        }
        tree_options.block_cache = cache
            .clone()
            .map(|c| c as Arc<dyn flowstate_formats::table::BlockCache>);
        let ttl_filter = Arc::new(TtlCompactionFilter::new(config.get_clock().clone()));
        if tree_options.compaction_filter.is_none() {
            tree_options.compaction_filter =
                Some(Arc::clone(&ttl_filter) as Arc<dyn super::tree::CompactionFilter>);
        }
        let tree = Arc::new(Tree::open(Arc::clone(&storage), &dir, tree_options)?);
        let worker = match &lsm.background {
            LsmBackground::Inline => None,
            LsmBackground::Pool(pool) => Some((Arc::clone(pool), pool.register(&tree))),
            LsmBackground::Threads(n) => {
                let pool = Arc::new(LsmPool::new(*n)?);
                let worker = pool.register(&tree);
                Some((pool, worker))
            }
        };
        Ok(LsmBackend {
            max_parallelism,
            range,
            current: None,
            states: Vec::new(),
            by_name: HashMap::new(),
            tree,
            cache,
            worker,
            clock: config.get_clock().clone(),
            ttl_filter,
            incremental: lsm.incremental_checkpoints,
            shared: Arc::new(parking_lot::Mutex::new(SharedTables::new())),
            storage,
            _created_dir: Arc::new(created_dir),
        })
    }

    /// Opens an LSM backend as `config` says, with the state of `sources` in the key groups it
    /// owns, by the rules of [`HeapBackend::restore`](crate::HeapBackend::restore): only owned
    /// key groups are read, the sources must share the max parallelism and key codec, and a
    /// restored state is checked against its descriptor when it is registered.
    ///
    /// The entries do not go through the memtable, flushes or compactions: the entries of one
    /// key group (in no particular order in a snapshot) are gathered, sorted, and written
    /// straight into table files (a [`TableWriter`] per state), which are ingested into the
    /// empty tree at the end: into its bottom level when they do not overlap, which they do
    /// not when no key group holds more than the memtable size (else a key group is written
    /// in several sorted runs and its tables go to L0). On an error the tables written so far
    /// are deleted.
    pub fn restore(config: BackendConfig, sources: &[&dyn RestoreSource]) -> Result<Self> {
        let mut backend = Self::open(config)?;
        backend.ingest_sources(&[], &[], sources)?;
        Ok(backend)
    }

    /// Restores `sources` into this backend, which has no state yet but may hold adopted
    /// tables: `preset` are the states of those tables (ids from 0), `restored` the key
    /// groups they cover. The entries are gathered per key group, sorted, written into tables
    /// and ingested; the backend's states become `preset` and then the sources' other states.
    pub(super) fn ingest_sources(
        &mut self,
        preset: &[StateMeta],
        restored: &[KeyGroupRange],
        sources: &[&dyn RestoreSource],
    ) -> Result<()> {
        let backend = self;
        let (max_parallelism, range) = (backend.max_parallelism, backend.range);
        let tree = Arc::clone(&backend.tree);
        let mut sink = RestoreRuns {
            tree: &tree,
            metas: preset.to_vec(),
            first_id: 0,
            writers: preset.iter().map(|_| tree.table_writer()).collect(),
            key_group: None,
            data: Vec::new(),
            runs: Vec::new(),
            budget: tree.options().memtable_bytes,
            list: Vec::new(),
        };
        visit_sources::<K>(max_parallelism, range, preset, restored, sources, &mut sink)?;
        sink.write_run()?;
        let mut tables = Vec::new();
        for writer in std::mem::take(&mut sink.writers) {
            match writer.finish() {
                Ok(written) => tables.extend(written),
                Err(e) => {
                    // The tables of the writers before are in no version: delete them.
                    for t in &tables {
                        t.discard();
                    }
                    return Err(e);
                }
            }
        }
        tree.ingest(tables)?;
        for meta in std::mem::take(&mut sink.metas) {
            let id = backend.next_id()?;
            backend.by_name.insert(meta.name.clone(), id);
            backend.states.push(LsmState::new(meta, None, None));
        }
        Ok(())
    }

    /// Counters of the tree, the block cache and the background work.
    pub fn stats(&self) -> LsmStats {
        LsmStats {
            tree: self.tree.stats(),
            cache: self.cache.as_ref().map(|c| c.stats()),
            background_steps: self.worker.as_ref().map_or(0, |(_, w)| w.steps()),
        }
    }

    /// The tree that holds the state (for tools and tests: reading it directly bypasses the
    /// state types).
    pub fn tree(&self) -> &Arc<Tree> {
        &self.tree
    }

    /// The clock this backend was opened with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The names of restored states that no descriptor has registered yet.
    pub fn unregistered_states(&self) -> Vec<&str> {
        self.states
            .iter()
            .filter(|s| s.handle.is_none())
            .map(|s| s.meta.name.as_str())
            .collect()
    }

    /// Freezes the active memtable and flushes every frozen one into tables, on the calling
    /// thread (no compaction).
    pub fn flush(&self) -> Result<()> {
        self.tree.freeze();
        while self.tree.flush_one()? {}
        Ok(())
    }

    /// Waits until the background pool has no flush or compaction of this backend queued or
    /// running, or returns the error of a step that failed; with inline background work
    /// (nothing runs in the background) it returns at once.
    pub fn wait_idle(&self) -> Result<()> {
        match &self.worker {
            Some((_, worker)) => worker.wait_idle(),
            None => Ok(()),
        }
    }

    /// Flushes every memtable and runs compactions until none is due, on the calling thread.
    pub fn flush_and_compact(&self) -> Result<()> {
        self.tree.freeze();
        while step(&self.tree)? {}
        Ok(())
    }

    /// A manual full compaction on the calling thread ([`Tree::compact_all`]): every memtable
    /// flushed and every table merged into the bottom level. Rewrites the whole state.
    pub fn compact_all(&self) -> Result<()> {
        self.tree.compact_all()?;
        Ok(())
    }

    fn next_id(&self) -> Result<StateId> {
        u32::try_from(self.states.len()).map(StateId).map_err(|_| {
            Error::InvalidArgument("too many states registered (more than 2^32)".into())
        })
    }

    /// After a write: report a failed background step; with inline work, flush and compact
    /// what the write froze.
    fn after_write(&self) -> Result<()> {
        match &self.worker {
            Some((_, worker)) => worker.check(),
            None => {
                if self.tree.immutable_memtables() > 0 {
                    while step(&self.tree)? {}
                }
                Ok(())
            }
        }
    }

    #[inline]
    fn current(&self) -> Result<&CurrentKey<K>> {
        let cur = self.current.as_ref().ok_or(Error::NoCurrentKey)?;
        if !cur.owned {
            return Err(Error::KeyGroupOutOfRange {
                key_group: cur.key_group,
                range: self.range,
            });
        }
        Ok(cur)
    }

    /// The state `handle` names, if this backend registered it with the handle's types.
    fn state<H: StateHandle>(&self, handle: H) -> Result<&LsmState> {
        self.states
            .get(handle.id().0 as usize)
            .filter(|s| s.handle == Some(TypeId::of::<H>()))
            .ok_or(Error::UnknownState { id: handle.id().0 })
    }

    fn extra<H: StateHandle>(&self, handle: H) -> Result<&H::Extra> {
        self.state(handle)?
            .extra
            .as_ref()
            .and_then(|e| e.downcast_ref::<H::Extra>())
            .ok_or(Error::UnknownState { id: handle.id().0 })
    }

    /// The tree key of the current key's entry of `handle` in `ns` (after the checks every
    /// access makes: a current key in an owned key group, a state of this backend).
    #[inline]
    fn entry_key<H: StateHandle>(&self, handle: H, ns: &H::Namespace) -> Result<Vec<u8>> {
        let mut k = Vec::new();
        self.entry_key_into(handle, ns, &mut k)?;
        Ok(k)
    }

    /// Writes the tree key of the current key's entry of `handle` in `ns` into `k` (cleared
    /// first).
    fn entry_key_into<H: StateHandle>(
        &self,
        handle: H,
        ns: &H::Namespace,
        k: &mut Vec<u8>,
    ) -> Result<()> {
        let cur = self.current()?;
        let layout = self.state(handle)?.layout;
        let mut ns_bytes = Vec::new();
        ns.encode(&mut ns_bytes);
        k.clear();
        k.reserve(key::HEADER_LEN + 4 + cur.encoded.len() + ns_bytes.len());
        layout
            .encode(k, handle.id(), cur.key_group, &cur.encoded, &ns_bytes)
            .map_err(codec_error(|| {
                format!("the namespace of state '{}'", self.name(handle.id()))
            }))
    }

    /// Calls `read` with the stored bytes of the current key's entry of `handle` in `ns`
    /// (with `user_key` appended to the key, for a map entry), lent by the tree
    /// ([`Tree::get_with`]): a point read that allocates nothing once its block is cached. The
    /// key is built in a buffer of the calling thread's.
    fn read_entry<H: StateHandle, R>(
        &self,
        handle: H,
        ns: &H::Namespace,
        user_key: Option<&UserKeyWriter<'_>>,
        read: impl FnOnce(Option<&[u8]>) -> Result<R>,
    ) -> Result<R> {
        thread_local! {
            static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let lookup = |k: &mut Vec<u8>| {
            self.entry_key_into(handle, ns, k)?;
            if let Some(user_key) = user_key {
                user_key(k);
            }
            self.tree.get_with(k, read)?
        };
        KEY.with(|cell| match cell.try_borrow_mut() {
            Ok(mut k) => lookup(&mut k),
            // Taken further up this thread's stack (a read function reading another backend).
            Err(_) => lookup(&mut Vec::new()),
        })
    }

    fn name(&self, id: StateId) -> String {
        self.states
            .get(id.0 as usize)
            .map_or_else(|| format!("#{}", id.0), |s| s.meta.name.clone())
    }

    fn decode_value<T: Codec>(&self, id: StateId, bytes: &[u8], part: &str) -> Result<T> {
        T::decode(bytes).map_err(codec_error(|| {
            format!(
                "the {part} of state '{}' read from the LSM tree",
                self.name(id)
            )
        }))
    }

    fn decode_list<T: Codec>(&self, id: StateId, bytes: &[u8]) -> Result<Vec<T>> {
        ListElements::new(bytes)
            .map(|e| e.and_then(T::decode))
            .collect::<std::result::Result<_, _>>()
            .map_err(codec_error(|| {
                format!(
                    "a list element of state '{}' read from the LSM tree",
                    self.name(id)
                )
            }))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.put(key, value)?;
        self.after_write()
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.tree.delete(key)?;
        self.after_write()
    }

    fn register_state<H: StateHandle>(&mut self, name: &str, extra: H::Extra) -> Result<H> {
        let requested = H::meta(name);
        if let Some(&id) = self.by_name.get(name) {
            let state = &mut self.states[id.0 as usize];
            return match state.handle {
                Some(t) if t == TypeId::of::<H>() => Ok(H::from_id(id)),
                Some(_) => Err(Error::StateTypeMismatch {
                    name: name.to_owned(),
                    registered: state.meta.to_string(),
                    requested: requested.to_string(),
                }),
                None if state.meta != requested => Err(Error::IncompatibleState {
                    name: name.to_owned(),
                    snapshot: state.meta.to_string(),
                    requested: requested.to_string(),
                }),
                None => {
                    state.handle = Some(TypeId::of::<H>());
                    state.extra = Some(Box::new(extra));
                    Ok(H::from_id(id))
                }
            };
        }
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "a state name must not be empty".into(),
            ));
        }
        let id = self.next_id()?;
        self.states.push(LsmState::new(
            requested,
            Some(TypeId::of::<H>()),
            Some(Box::new(extra)),
        ));
        self.by_name.insert(name.to_owned(), id);
        Ok(H::from_id(id))
    }

    /// Whether a call with handle type `S` on state `id` must go to the state's stored form:
    /// the state has a TTL and was registered as `S::Ttl`, not as `S` (R70).
    fn ttl_routed<S: StateHandle>(&self, id: StateId) -> bool {
        self.states
            .get(id.0 as usize)
            .is_some_and(|s| s.ttl.is_some() && s.handle != Some(TypeId::of::<S>()))
    }

    /// `pick` of the encoded key and namespace of every live entry of state `id` (checked as
    /// registered as `S` or, with a TTL, as `S::Ttl`) whose namespace encodes to `ns` (all, if
    /// `None`); with a TTL that hides expired state, only entries with something live (R63).
    fn scan_keys<S: StateHandle, T>(
        &self,
        id: StateId,
        ns: Option<&[u8]>,
        pick: impl Fn(&[u8], &[u8]) -> std::result::Result<T, crate::codec::CodecError>,
    ) -> Result<Vec<T>> {
        if self.ttl_routed::<S>(id) {
            self.state(S::Ttl::from_id(id))?;
        } else {
            self.state(S::from_id(id))?;
        }
        let ttl = self.state_ttl(id).filter(|t| !t.returns_expired());
        let now = self.clock.now_millis();
        let name = self.name(id);
        let mut found = Vec::new();
        let mut failure = None;
        self.visit_live(id, &mut |_, e| {
            if failure.is_some() || ns.is_some_and(|ns| e.namespace != ns) {
                return;
            }
            if ttl.is_some_and(|t| !any_live(&e.state, &t, now)) {
                return;
            }
            match pick(&e.key, &e.namespace) {
                Ok(pair) => found.push(pair),
                Err(source) => {
                    failure = Some(Error::Codec {
                        what: format!("a key or namespace of state '{name}' in the LSM tree"),
                        source,
                    })
                }
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// `clear` on the handle type the state was registered with.
    fn clear_typed<S: StateHandle>(&mut self, state: S, ns: &S::Namespace) -> Result<()> {
        let k = self.entry_key(state, ns)?;
        if S::KIND == StateKind::Map {
            // One range tombstone over the map's prefix: nothing is read.
            let end = key::prefix_successor(&k).expect(
                "an entry key holds a big-endian key group below 2^15, a byte below 0xff, \
                 so its prefix has a successor",
            );
            self.tree.delete_range(&k, &end)?;
            return self.after_write();
        }
        self.delete(&k)
    }

    /// `merge_namespaces` on the handle type the state was registered with.
    fn merge_typed<S: MergingState>(
        &mut self,
        state: S,
        target: &S::Namespace,
        sources: &[S::Namespace],
    ) -> Result<()> {
        let target_key = self.entry_key(state, target)?;
        for source in sources {
            if source == target {
                continue;
            }
            let source_key = self.entry_key(state, source)?;
            let Some(moved) = self.tree.get(&source_key)? else {
                continue;
            };
            if S::KIND == StateKind::List {
                // A list's encoding is a valid list-append operand: append it unread.
                self.tree.merge(&target_key, &moved)?;
            } else {
                let bad = |source| Error::Codec {
                    what: format!(
                        "the state of '{}' merged from a namespace",
                        self.name(state.id())
                    ),
                    source,
                };
                let moved = S::decode_stored(&EncodedState::Value(moved)).map_err(bad)?;
                let merged = match self.tree.get(&target_key)? {
                    Some(bytes) => {
                        let mut current =
                            S::decode_stored(&EncodedState::Value(bytes)).map_err(bad)?;
                        S::merge_stored(self.extra(state)?, &mut current, moved);
                        current
                    }
                    None => moved,
                };
                match S::encode_stored(&merged) {
                    EncodedState::Value(bytes) => self.tree.put(&target_key, &bytes)?,
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "state '{}' does not encode as a single value",
                            self.name(state.id())
                        )))
                    }
                }
            }
            self.tree.delete(&source_key)?;
            self.after_write()?;
        }
        Ok(())
    }

    /// Every entry of `id` in the live tree, over the owned key groups, grouped into
    /// canonical entries; `visit` gets the key group too.
    fn visit_live(&self, id: StateId, visit: &mut dyn FnMut(u16, EncodedEntry)) -> Result<()> {
        let state = &self.states[id.0 as usize];
        let (kind, layout) = (state.meta.kind, state.layout);
        for kg in self.range.iter() {
            let mut prefix = Vec::new();
            key::key_group_prefix(&mut prefix, id, kg);
            let entries = self.tree.scan_prefix(&prefix)?;
            group_entries(kind, layout, &self.name(id), entries, &mut |e| visit(kg, e))?;
        }
        Ok(())
    }
}

/// Deletes the tree files (manifest, tables, temporary files) a backend left in `dir`.
fn clear_working_dir(storage: &dyn Storage, dir: &str) -> Result<()> {
    if !storage.exists(dir)? {
        return Ok(());
    }
    for name in storage.list_dir(dir)? {
        if name == MANIFEST_NAME || name.ends_with(super::tree::TABLE_SUFFIX) || is_temp_name(&name)
        {
            let path = if dir == ROOT {
                name
            } else {
                format!("{dir}/{name}")
            };
            storage.remove_file(&path)?;
        }
    }
    Ok(())
}

/// Turns the `(tree key, value)` pairs of one state and key group, in key order, into
/// canonical entries: one per (key, namespace), map entries gathered by user key.
pub(crate) fn group_entries(
    kind: StateKind,
    layout: Layout,
    state: &str,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    visit: &mut dyn FnMut(EncodedEntry),
) -> Result<()> {
    let bad_key = |source: CodecError| Error::Codec {
        what: format!("a key of state '{state}' in the LSM tree"),
        source,
    };
    let mut map: Option<EncodedEntry> = None;
    if layout == Layout::Timer {
        for (k, v) in entries {
            let (key, namespace) = layout
                .split(&k, |key, ns| (key.to_vec(), ns.to_vec()))
                .map_err(bad_key)?;
            visit(EncodedEntry {
                key,
                namespace,
                state: EncodedState::Value(v),
            });
        }
        return Ok(());
    }
    for (k, v) in entries {
        let decoded = key::decode(&k).map_err(bad_key)?;
        match kind {
            StateKind::Map => {
                let user_key = decoded.map_user_key().to_vec();
                if let Some(open) = &mut map {
                    if open.key == decoded.key && open.namespace == decoded.namespace {
                        if let EncodedState::Map(pairs) = &mut open.state {
                            pairs.push((user_key, v));
                        }
                        continue;
                    }
                }
                if let Some(done) = map.take() {
                    visit(done);
                }
                map = Some(EncodedEntry {
                    key: decoded.key.to_vec(),
                    namespace: decoded.namespace.to_vec(),
                    state: EncodedState::Map(vec![(user_key, v)]),
                });
            }
            StateKind::List => {
                let elements = ListElements::new(&v)
                    .map(|e| e.map(<[u8]>::to_vec))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|source| Error::Codec {
                        what: format!("a list of state '{state}' in the LSM tree"),
                        source,
                    })?;
                if elements.is_empty() {
                    continue;
                }
                visit(EncodedEntry {
                    key: decoded.key.to_vec(),
                    namespace: decoded.namespace.to_vec(),
                    state: EncodedState::List(elements),
                });
            }
            _ => visit(EncodedEntry {
                key: decoded.key.to_vec(),
                namespace: decoded.namespace.to_vec(),
                state: EncodedState::Value(v),
            }),
        }
    }
    if let Some(done) = map.take() {
        visit(done);
    }
    Ok(())
}

/// The view of one state in a tree snapshot.
struct LsmStateView {
    meta: StateMeta,
    layout: Layout,
    id: StateId,
    range: KeyGroupRange,
    view: Arc<TreeSnapshot>,
    /// After `view`: dropped once the view's tables are released.
    _dir: Arc<CreatedDir>,
}

impl StateTableSnapshot for LsmStateView {
    fn meta(&self) -> &StateMeta {
        &self.meta
    }

    fn entry_count(&self) -> Result<usize> {
        let mut n = 0;
        for kg in self.range.iter() {
            self.visit_key_group(kg, &mut |_| n += 1)?;
        }
        Ok(n)
    }

    fn visit_key_group(&self, key_group: u16, visit: &mut dyn FnMut(EncodedEntry)) -> Result<()> {
        if !self.range.contains(key_group) {
            return Ok(());
        }
        let mut prefix = Vec::new();
        key::key_group_prefix(&mut prefix, self.id, key_group);
        let entries = self.view.scan_prefix(&prefix)?;
        group_entries(self.meta.kind, self.layout, &self.meta.name, entries, visit)
    }

    /// Value-like states go straight from the tree into the run (no owned entry per key);
    /// lists and maps, which the run holds as owned parts, through `visit_key_group`.
    fn encode_key_group(&self, key_group: u16, run: &mut EncodedRun) -> Result<()> {
        if matches!(self.meta.kind, StateKind::List | StateKind::Map) {
            return self.visit_key_group(key_group, &mut |e| run.push_entry(e));
        }
        if !self.range.contains(key_group) {
            return Ok(());
        }
        let mut prefix = Vec::new();
        key::key_group_prefix(&mut prefix, self.id, key_group);
        let name = &self.meta.name;
        let bad_key = |source| Error::Codec {
            what: format!("a key of state '{name}' in the LSM tree"),
            source,
        };
        let timers = self.layout == Layout::Timer;
        self.view.visit_prefix(&prefix, &mut |k, v| {
            if timers {
                let decoded = timer_key::decode(k).map_err(bad_key)?;
                run.push_with(
                    |b| b.extend_from_slice(decoded.key),
                    |b| decoded.slot_namespace(b),
                    RunValueSource::Encode(&mut |b| b.extend_from_slice(v)),
                );
                return Ok(());
            }
            let decoded = key::decode(k).map_err(bad_key)?;
            run.push_with(
                |b| b.extend_from_slice(decoded.key),
                |b| b.extend_from_slice(decoded.namespace),
                RunValueSource::Encode(&mut |b| b.extend_from_slice(v)),
            );
            Ok(())
        })
    }
}

/// The restore sink of [`LsmBackend::restore`]: gathers the tree entries of one key group in
/// one buffer, then sorts them and hands each state's sorted run to its [`TableWriter`].
struct RestoreRuns<'t> {
    tree: &'t Tree,
    metas: Vec<StateMeta>,
    first_id: u32,
    /// One per restored state, by index.
    writers: Vec<TableWriter<'t>>,
    /// The key group being gathered.
    key_group: Option<u16>,
    /// Keys and values of the gathered entries, back to back.
    data: Vec<u8>,
    /// The gathered entries, in arrival order.
    runs: Vec<Gathered>,
    /// `data` and `runs` are written out once they hold this many bytes, even within a key
    /// group (the key group is then written in several sorted runs, whose tables overlap).
    budget: usize,
    list: Vec<u8>,
}

/// One entry gathered by [`RestoreRuns`]: its key and value sit back to back in `data`.
#[derive(Clone, Copy)]
struct Gathered {
    state: u32,
    at: usize,
    key_len: u32,
    value_len: u32,
}

impl RestoreRuns<'_> {
    fn key(&self, g: &Gathered) -> &[u8] {
        &self.data[g.at..g.at + g.key_len as usize]
    }

    /// Sorts the gathered entries and writes them to their states' writers.
    fn write_run(&mut self) -> Result<()> {
        let mut runs = std::mem::take(&mut self.runs);
        runs.sort_unstable_by(|a, b| self.key(a).cmp(self.key(b)));
        for g in &runs {
            let key_end = g.at + g.key_len as usize;
            let (key, value) = (
                &self.data[g.at..key_end],
                &self.data[key_end..key_end + g.value_len as usize],
            );
            let writer = self
                .writers
                .get_mut(g.state as usize)
                .expect("entries are gathered only for announced states");
            writer.add(key, value)?;
        }
        runs.clear();
        self.runs = runs;
        self.data.clear();
        Ok(())
    }

    /// Gathers one tree entry of state `state`; `key` is in `self.data` from `key_start`.
    fn gather(&mut self, state: u32, key_start: usize, value: &[u8]) -> Result<()> {
        let key_len = self.data.len() - key_start;
        let too_long = |what: &str, len: usize| {
            Error::InvalidArgument(format!(
                "a restored entry's {what} of {len} bytes is too long"
            ))
        };
        let key_len = u32::try_from(key_len).map_err(|_| too_long("key", key_len))?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_long("value", value.len()))?;
        self.data.extend_from_slice(value);
        self.runs.push(Gathered {
            state,
            at: key_start,
            key_len,
            value_len,
        });
        Ok(())
    }
}

impl RestoreSink for RestoreRuns<'_> {
    fn new_state(&mut self, meta: &StateMeta) -> Result<()> {
        self.metas.push(meta.clone());
        self.writers.push(self.tree.table_writer());
        Ok(())
    }

    fn entry(&mut self, state: usize, kg: u16, e: EncodedEntry) -> Result<()> {
        let gathered = self.data.len() + self.runs.len() * std::mem::size_of::<Gathered>();
        if self.key_group != Some(kg) || gathered >= self.budget {
            self.write_run()?;
            self.key_group = Some(kg);
        }
        let index = u32::try_from(state)
            .ok()
            .filter(|&s| (s as usize) < self.writers.len())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a restored entry names state {state}, which was not announced"
                ))
            })?;
        let id = self
            .first_id
            .checked_add(index)
            .map(StateId)
            .ok_or_else(|| {
                Error::InvalidArgument("too many states restored (more than 2^32)".into())
            })?;
        match e.state {
            EncodedState::Value(v) => {
                let start = self.data.len();
                let layout = Layout::of(&self.metas[index as usize]);
                if let Err(source) = layout.encode(&mut self.data, id, kg, &e.key, &e.namespace) {
                    self.data.truncate(start);
                    return Err(Error::Codec {
                        what: format!(
                            "a restored timer of state '{}'",
                            self.metas[index as usize].name
                        ),
                        source,
                    });
                }
                self.gather(index, start, &v)
            }
            EncodedState::List(elements) => {
                if elements.is_empty() {
                    return Ok(());
                }
                let mut list = std::mem::take(&mut self.list);
                list.clear();
                for element in &elements {
                    push_list_element(&mut list, element);
                }
                let start = self.data.len();
                key::encode_state_key(&mut self.data, id, kg, &e.key, &e.namespace);
                let gathered = self.gather(index, start, &list);
                self.list = list;
                gathered
            }
            EncodedState::Map(entries) => {
                for (user_key, value) in &entries {
                    let start = self.data.len();
                    key::encode_state_key(&mut self.data, id, kg, &e.key, &e.namespace);
                    self.data.extend_from_slice(user_key);
                    self.gather(index, start, value)?;
                }
                Ok(())
            }
        }
    }
}

impl<K: Key> KeyedStateBackend<K> for LsmBackend<K> {
    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn set_current_key(&mut self, key: &K) {
        let cur = self.current.get_or_insert_with(|| CurrentKey {
            key: key.clone(),
            encoded: Vec::new(),
            key_group: 0,
            owned: false,
        });
        cur.key.clone_from(key);
        cur.encoded.clear();
        key.encode(&mut cur.encoded);
        cur.key_group = key_group_for(&cur.encoded, self.max_parallelism);
        cur.owned = self.range.contains(cur.key_group);
    }

    fn current_key(&self) -> Option<&K> {
        self.current.as_ref().map(|c| &c.key)
    }

    fn current_key_group(&self) -> Option<u16> {
        self.current.as_ref().map(|c| c.key_group)
    }

    fn state_meta(&self, id: StateId) -> Option<&StateMeta> {
        self.states.get(id.0 as usize).map(|s| &s.meta)
    }

    fn state_id(&self, name: &str) -> Option<StateId> {
        self.by_name.get(name).copied()
    }

    /// Scans every state: O(entries), unlike the heap backend's count.
    fn entry_count(&self) -> Result<usize> {
        let mut n = 0;
        let now = self.clock.now_millis();
        for (index, s) in self.states.iter().enumerate() {
            // Expired entries do not count (R63).
            let ttl = s.ttl.filter(|t| !t.returns_expired());
            self.visit_live(StateId(index as u32), &mut |_, e| {
                if ttl.is_none_or(|t| any_live(&e.state, &t, now)) {
                    n += 1;
                }
            })?;
        }
        Ok(n)
    }

    fn state_ttl(&self, id: StateId) -> Option<TtlConfig> {
        self.states.get(id.0 as usize).and_then(|s| s.ttl)
    }

    fn set_state_ttl(&mut self, id: StateId, ttl: TtlConfig) -> Result<()> {
        let s = self
            .states
            .get_mut(id.0 as usize)
            .ok_or(Error::UnknownState { id: id.0 })?;
        s.ttl = Some(ttl);
        self.ttl_filter.set(id, s.meta.kind, ttl);
        Ok(())
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn timers_in_order(&self, id: StateId) -> bool {
        self.states
            .get(id.0 as usize)
            .is_some_and(|s| s.layout == Layout::Timer)
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
        /// Timers read from the tree per call (bounded memory whatever `limit` is).
        const CHUNK: usize = 1024;
        if !self.timers_in_order(id) {
            return Err(Error::InvalidArgument(format!(
                "state '{}' is not a timer state",
                self.name(id)
            )));
        }
        if !self.range.contains(key_group) {
            return Ok(());
        }
        let (mut start, end) = timer_key::domain_range(id, key_group, domain);
        if let Some((timestamp, key_bytes, ns)) = from {
            let mut slot = Vec::with_capacity(crate::timer::SLOT_HEADER_LEN + ns.len());
            slot.push(domain);
            slot.extend_from_slice(&crate::timer::timestamp_bytes(timestamp));
            slot.extend_from_slice(ns);
            let mut first = Vec::new();
            timer_key::encode(&mut first, id, key_group, key_bytes, &slot).map_err(codec_error(
                || format!("a timer of state '{}'", self.name(id)),
            ))?;
            start = start.max(first);
        }
        let mut left = limit;
        while left > 0 {
            let (entries, resume) = self
                .tree
                .scan_range_limited(&start, &end, left.min(CHUNK))?;
            for (k, _) in &entries {
                let bad = codec_error(|| format!("a timer of state '{}'", self.name(id)));
                let t = timer_key::decode(k).map_err(bad)?;
                let (_, timestamp) = crate::timer::decode_slot_header(&mut &t.slot_header[..])
                    .map_err(codec_error(|| {
                        format!("a timer of state '{}'", self.name(id))
                    }))?;
                visit(timestamp, t.key, t.namespace);
            }
            left -= entries.len();
            match resume {
                Some(next) => start = next,
                None => break,
            }
        }
        Ok(())
    }

    fn set_state_extra<H: StateHandle>(&mut self, handle: H, extra: H::Extra) -> Result<()> {
        self.state(handle)?;
        let s = &mut self.states[handle.id().0 as usize];
        s.extra = Some(Box::new(extra));
        Ok(())
    }

    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        d: &ValueStateDescriptor<V, N>,
    ) -> Result<ValueState<V, N>> {
        self.register_state(crate::StateDescriptor::name(d), ())
    }

    fn register_list<T: StateValue, N: Namespace>(
        &mut self,
        d: &ListStateDescriptor<T, N>,
    ) -> Result<ListState<T, N>> {
        self.register_state(crate::StateDescriptor::name(d), ())
    }

    fn register_map<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        d: &MapStateDescriptor<UK, UV, N>,
    ) -> Result<MapState<UK, UV, N>> {
        self.register_state(crate::StateDescriptor::name(d), ())
    }

    fn register_reducing<V: StateValue, N: Namespace>(
        &mut self,
        d: &ReducingStateDescriptor<V, N>,
    ) -> Result<ReducingState<V, N>> {
        self.register_state(crate::StateDescriptor::name(d), d.reducer().clone())
    }

    fn register_aggregating<F: AggregateFunction, N: Namespace>(
        &mut self,
        d: &AggregatingStateDescriptor<F, N>,
    ) -> Result<AggregatingState<F, N>> {
        self.register_state(crate::StateDescriptor::name(d), d.function().clone())
    }

    fn value_get<V: StateValue, N: Namespace>(
        &self,
        s: ValueState<V, N>,
        ns: &N,
    ) -> Result<Option<V>> {
        self.read_entry(s, ns, None, |bytes| {
            bytes
                .map(|b| self.decode_value(s.id(), b, "value"))
                .transpose()
        })
    }

    fn value_update<V: StateValue, N: Namespace>(
        &mut self,
        s: ValueState<V, N>,
        ns: &N,
        value: V,
    ) -> Result<()> {
        let k = self.entry_key(s, ns)?;
        let mut v = Vec::new();
        value.encode(&mut v);
        self.put(&k, &v)
    }

    fn list_get<T: StateValue, N: Namespace>(&self, s: ListState<T, N>, ns: &N) -> Result<Vec<T>> {
        self.read_entry(s, ns, None, |bytes| match bytes {
            Some(b) => self.decode_list(s.id(), b),
            None => Ok(Vec::new()),
        })
    }

    fn list_add<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        element: T,
    ) -> Result<()> {
        self.list_add_all(s, ns, vec![element])
    }

    fn list_add_all<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        let k = self.entry_key(s, ns)?;
        if elements.is_empty() {
            return Ok(());
        }
        let mut operand = Vec::new();
        let mut element_bytes = Vec::new();
        for element in &elements {
            element_bytes.clear();
            element.encode(&mut element_bytes);
            push_list_element(&mut operand, &element_bytes);
        }
        self.tree.merge(&k, &operand)?;
        self.after_write()
    }

    fn list_update<T: StateValue, N: Namespace>(
        &mut self,
        s: ListState<T, N>,
        ns: &N,
        elements: Vec<T>,
    ) -> Result<()> {
        let k = self.entry_key(s, ns)?;
        if elements.is_empty() {
            return self.delete(&k);
        }
        let mut list = Vec::new();
        let mut element_bytes = Vec::new();
        for element in &elements {
            element_bytes.clear();
            element.encode(&mut element_bytes);
            push_list_element(&mut list, &element_bytes);
        }
        self.put(&k, &list)
    }

    fn map_get<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        self.read_entry(s, ns, Some(&|k| user_key.encode(k)), |bytes| {
            bytes
                .map(|b| self.decode_value(s.id(), b, "map value"))
                .transpose()
        })
    }

    fn map_contains<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<bool> {
        self.read_entry(s, ns, Some(&|k| user_key.encode(k)), |bytes| {
            Ok(bytes.is_some())
        })
    }

    fn map_put<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: UK,
        value: UV,
    ) -> Result<()> {
        let mut k = self.entry_key(s, ns)?;
        user_key.encode(&mut k);
        let mut v = Vec::new();
        value.encode(&mut v);
        self.put(&k, &v)
    }

    fn map_put_all<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        entries: Vec<(UK, UV)>,
    ) -> Result<()> {
        let prefix = self.entry_key(s, ns)?;
        let mut k = prefix.clone();
        let mut v = Vec::new();
        for (user_key, value) in entries {
            k.truncate(prefix.len());
            user_key.encode(&mut k);
            v.clear();
            value.encode(&mut v);
            self.tree.put(&k, &v)?;
        }
        self.after_write()
    }

    fn map_remove<UK: Key, UV: StateValue, N: Namespace>(
        &mut self,
        s: MapState<UK, UV, N>,
        ns: &N,
        user_key: &UK,
    ) -> Result<()> {
        let mut k = self.entry_key(s, ns)?;
        user_key.encode(&mut k);
        self.delete(&k)
    }

    fn map_entries<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
    ) -> Result<Vec<(UK, UV)>> {
        let prefix = self.entry_key(s, ns)?;
        self.tree
            .scan_prefix(&prefix)?
            .into_iter()
            .map(|(k, v)| {
                let user_key = self.decode_value(s.id(), &k[prefix.len()..], "map user key")?;
                let value = self.decode_value(s.id(), &v, "map value")?;
                Ok((user_key, value))
            })
            .collect()
    }

    fn map_visit<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
        mut visit: impl FnMut(&UK, &UV),
    ) -> Result<()> {
        let prefix = self.entry_key(s, ns)?;
        self.tree.visit_prefix(&prefix, &mut |k, v| {
            let user_key: UK = self.decode_value(s.id(), &k[prefix.len()..], "map user key")?;
            let value: UV = self.decode_value(s.id(), v, "map value")?;
            visit(&user_key, &value);
            Ok(())
        })
    }

    fn map_is_empty<UK: Key, UV: StateValue, N: Namespace>(
        &self,
        s: MapState<UK, UV, N>,
        ns: &N,
    ) -> Result<bool> {
        let prefix = self.entry_key(s, ns)?;
        // The first live entry decides: a bounded scan, not the whole map.
        let Some(end) = key::prefix_successor(&prefix) else {
            return Ok(self.tree.scan_prefix(&prefix)?.is_empty());
        };
        let mut start = prefix;
        loop {
            let (pairs, next) = self.tree.scan_range_limited(&start, &end, 1)?;
            if !pairs.is_empty() {
                return Ok(false);
            }
            match next {
                Some(from) => start = from,
                None => return Ok(true),
            }
        }
    }

    fn reducing_get<V: StateValue, N: Namespace>(
        &self,
        s: ReducingState<V, N>,
        ns: &N,
    ) -> Result<Option<V>> {
        self.read_entry(s, ns, None, |bytes| {
            bytes
                .map(|b| self.decode_value(s.id(), b, "value"))
                .transpose()
        })
    }

    fn reducing_add<V: StateValue, N: Namespace>(
        &mut self,
        s: ReducingState<V, N>,
        ns: &N,
        value: V,
    ) -> Result<()> {
        let k = self.entry_key(s, ns)?;
        let reduced = match self.tree.get(&k)? {
            Some(bytes) => {
                let current: V = self.decode_value(s.id(), &bytes, "value")?;
                let reduce = self.extra(s)?;
                reduce(&current, &value)
            }
            None => value,
        };
        let mut v = Vec::new();
        reduced.encode(&mut v);
        self.put(&k, &v)
    }

    fn aggregating_get<F: AggregateFunction, N: Namespace>(
        &self,
        s: AggregatingState<F, N>,
        ns: &N,
    ) -> Result<Option<F::Out>> {
        let k = self.entry_key(s, ns)?;
        match self.tree.get(&k)? {
            Some(bytes) => {
                let acc: F::Acc = self.decode_value(s.id(), &bytes, "accumulator")?;
                Ok(Some(self.extra(s)?.get_result(&acc)))
            }
            None => Ok(None),
        }
    }

    fn aggregating_add<F: AggregateFunction, N: Namespace>(
        &mut self,
        s: AggregatingState<F, N>,
        ns: &N,
        value: F::In,
    ) -> Result<()> {
        let k = self.entry_key(s, ns)?;
        let f = self.extra(s)?;
        let mut acc = match self.tree.get(&k)? {
            Some(bytes) => self.decode_value(s.id(), &bytes, "accumulator")?,
            None => f.create_accumulator(),
        };
        f.add(&mut acc, value);
        let mut v = Vec::new();
        acc.encode(&mut v);
        self.put(&k, &v)
    }

    fn clear<S: StateHandle>(&mut self, state: S, ns: &S::Namespace) -> Result<()> {
        if self.ttl_routed::<S>(state.id()) {
            return self.clear_typed(S::Ttl::from_id(state.id()), ns);
        }
        self.clear_typed(state, ns)
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
        let ns_bytes = crate::codec::to_bytes(ns);
        self.scan_keys::<S, K>(state.id(), Some(&ns_bytes), |k, _| K::decode(k))
    }

    fn keys_and_namespaces<S: StateHandle>(&self, state: S) -> Result<Vec<(K, S::Namespace)>> {
        self.scan_keys::<S, _>(state.id(), None, |k, ns| {
            Ok((K::decode(k)?, S::Namespace::decode(ns)?))
        })
    }

    fn snapshot_state(&mut self) -> Result<StateSnapshot> {
        if let Some((_, worker)) = &self.worker {
            worker.check()?;
        }
        let view = Arc::new(self.tree.snapshot());
        let now = self.clock.now_millis();
        let states: Vec<Arc<dyn StateTableSnapshot>> = self
            .states
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let table = Arc::new(LsmStateView {
                    meta: s.meta.clone(),
                    layout: s.layout,
                    id: StateId(index as u32),
                    range: self.range,
                    view: Arc::clone(&view),
                    _dir: Arc::clone(&self._created_dir),
                }) as Arc<dyn StateTableSnapshot>;
                match s.ttl {
                    // Full snapshots leave out what has expired (R65).
                    Some(ttl) => TtlFilteredTable::wrap(table, self.range, ttl, now),
                    None => table,
                }
            })
            .collect();
        self.after_write()?;
        Ok(StateSnapshot::new(
            self.max_parallelism,
            self.range,
            CodecInfo::of::<K>(),
            states,
        ))
    }

    /// The tables checkpoint `id` and earlier ones published are confirmed (the next
    /// checkpoints reference them), and the records of tables the tree no longer holds are
    /// dropped. A snapshot's view holds its own files until its asynchronous phase ends.
    fn notify_checkpoint_complete(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        let live: std::collections::HashSet<u64> =
            self.tree.pin().all_tables().map(|t| t.id()).collect();
        self.shared.lock().complete(id, &live);
        Ok(())
    }

    /// The tables checkpoint `id` published are not assumed published any more: the next
    /// checkpoint publishes them again unless the storage still holds them for another.
    fn notify_checkpoint_aborted(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        self.shared.lock().abort(id);
        Ok(())
    }

    /// The synchronous phase of a checkpoint or savepoint. A checkpoint of a backend with
    /// incremental checkpoints (the default) and a native savepoint take the tree's tables
    /// (memtable frozen, version held: independent of the state's size) and return a native
    /// asynchronous phase; otherwise the canonical file is written, as by every backend.
    fn snapshot(
        &mut self,
        target: impl Into<crate::checkpoint::SnapshotTarget>,
        storage: &Arc<dyn crate::checkpoint::CheckpointStorage>,
        name: &str,
    ) -> Result<crate::checkpoint::PendingSnapshot> {
        let target = target.into();
        let native = match target.kind() {
            crate::checkpoint::SnapshotKind::Checkpoint => self.incremental,
            crate::checkpoint::SnapshotKind::Savepoint => target.is_native_savepoint(),
        };
        if !native {
            let view = self.snapshot_state()?;
            return Ok(crate::checkpoint::PendingSnapshot::new(
                view,
                target,
                storage.clone(),
                name,
            ));
        }
        if let Some((_, worker)) = &self.worker {
            worker.check()?;
        }
        let tables = self.tree.checkpoint_tables();
        let view = self.snapshot_state()?;
        let job = NativeJob {
            tables,
            shared: Arc::clone(&self.shared),
            tree_storage: Arc::clone(&self.storage),
            meta: crate::checkpoint::snapshot_meta(&view),
            range: self.range,
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
