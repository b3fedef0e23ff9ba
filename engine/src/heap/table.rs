//! One state's table: per owned key group, a [`CowMap`] of (key, namespace) -> typed state.
//!
//! The table is `Arc<Vec<Arc<CowMap>>>`: a snapshot clones the outer `Arc` (one atomic
//! increment, whatever the number of entries or key groups); the first write after it copies the
//! vector of key-group pointers, then the first write to a key group copies that key group's
//! bucket pointers, then each write copies only the bucket it changes.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use foldhash::fast::FixedState;

use super::cow::CowMap;
use super::ttl_cleanup::CleanupCursor;
use crate::codec::{to_bytes, Codec};
use crate::key_group::KeyGroupRange;
use crate::snapshot::{Change, EncodedEntry, StateTableSnapshot};
use crate::state::ttl::Expiry;
use crate::state::{Key, StateHandle, StateMeta, TtlConfig};

/// One (key, namespace) entry and its state.
#[derive(Clone)]
pub(crate) struct Entry<K, N, S> {
    pub(crate) key: K,
    pub(crate) ns: N,
    pub(crate) state: S,
}

pub(crate) type KeyGroupMap<K, H> =
    CowMap<Entry<K, <H as StateHandle>::Namespace, <H as StateHandle>::Stored>>;

/// The maps of a table's key groups, in key-group order.
pub(crate) type KeyGroupMaps<K, H> = Arc<Vec<Arc<KeyGroupMap<K, H>>>>;

/// The hash of an entry: the key's hash, mixed with the namespace's unless the namespace is a
/// zero-sized type (`()`), whose hash carries no information.
#[inline]
pub(crate) fn entry_hash<N: Hash>(hasher: &FixedState, key_hash: u64, ns: &N) -> u64 {
    if std::mem::size_of::<N>() == 0 {
        key_hash
    } else {
        let mut h = hasher.build_hasher();
        h.write_u64(key_hash);
        ns.hash(&mut h);
        h.finish()
    }
}

/// The removals logged in one key group: (epoch, key, namespace), shared with snapshots.
type GroupRemovals<K, N> = Arc<Vec<(u32, K, N)>>;

/// Empty logs for `groups` key groups, each its own allocation.
fn empty_logs<K, N>(groups: usize) -> Arc<Vec<GroupRemovals<K, N>>> {
    Arc::new((0..groups).map(|_| Arc::new(Vec::new())).collect())
}

/// The most removals a table logs between two confirmed checkpoints; past it the log is
/// dropped and the next incremental checkpoint writes a full base.
const MAX_LOGGED_REMOVALS: usize = 1 << 20;

/// The (key, namespace) pairs removed from each key group of a table, each with the epoch of
/// its removal: what a delta needs beyond the entries' epochs (heap incremental checkpoints;
/// spec/checkpoint-protocol.md 8.8). A snapshot shares it; the first removal after a snapshot
/// copies the vector of per-group pointers and that key group's log only (a log holds only the
/// removals since the last confirmed checkpoint).
pub(crate) struct Removals<K, N> {
    by_group: Arc<Vec<GroupRemovals<K, N>>>,
    logged: usize,
    /// Removals of this epoch and before may be missing (the log overflowed): no delta can
    /// be written since an epoch before it.
    lost_upto: u32,
}

impl<K, N> Clone for Removals<K, N> {
    fn clone(&self) -> Self {
        Removals {
            by_group: Arc::clone(&self.by_group),
            logged: self.logged,
            lost_upto: self.lost_upto,
        }
    }
}

/// The typed table of one registered state.
pub(crate) struct StateTable<K, H: StateHandle> {
    pub(crate) meta: Arc<StateMeta>,
    pub(crate) extra: H::Extra,
    pub(crate) hasher: FixedState,
    pub(crate) range: KeyGroupRange,
    pub(crate) key_groups: Arc<Vec<Arc<KeyGroupMap<K, H>>>>,
    /// Removals since the last confirmed checkpoint, with incremental checkpoints on.
    pub(crate) removals: Option<Removals<K, H::Namespace>>,
}

impl<K: Key, H: StateHandle> StateTable<K, H> {
    pub(crate) fn new(
        meta: StateMeta,
        extra: H::Extra,
        hasher: FixedState,
        range: KeyGroupRange,
    ) -> Self {
        let key_groups = (0..range.len())
            .map(|_| Arc::new(CowMap::default()))
            .collect();
        StateTable {
            meta: Arc::new(meta),
            extra,
            hasher,
            range,
            key_groups: Arc::new(key_groups),
            removals: None,
        }
    }

    /// Logs the removals of this table from now on (heap incremental checkpoints).
    pub(crate) fn track_removals(&mut self) {
        self.removals = Some(Removals {
            by_group: empty_logs(self.range.len()),
            logged: 0,
            lost_upto: 0,
        });
    }

    /// Records that `key` in `ns` was removed from key group `index` in `epoch`, if removals
    /// are logged.
    pub(crate) fn log_removal(&mut self, index: usize, epoch: u32, key: &K, ns: &H::Namespace) {
        let Some(r) = &mut self.removals else {
            return;
        };
        if r.logged >= MAX_LOGGED_REMOVALS {
            r.by_group = empty_logs(self.range.len());
            r.logged = 0;
            r.lost_upto = epoch;
            return;
        }
        Arc::make_mut(&mut Arc::make_mut(&mut r.by_group)[index]).push((
            epoch,
            key.clone(),
            ns.clone(),
        ));
        r.logged += 1;
    }

    /// The key-group map at `index`, for reading.
    #[inline]
    pub(crate) fn map(&self, index: usize) -> &KeyGroupMap<K, H> {
        &self.key_groups[index]
    }

    /// The key-group map at `index`, for writing: copied first if a snapshot shares it.
    #[inline]
    pub(crate) fn map_mut(&mut self, index: usize) -> &mut KeyGroupMap<K, H> {
        super::exclusive::exclusive(&mut super::exclusive::exclusive(&mut self.key_groups)[index])
    }

    /// The hash of an entry whose key hashes to `key_hash`, for use as a rehash function.
    #[inline]
    pub(crate) fn rehasher(&self) -> impl Fn(&Entry<K, H::Namespace, H::Stored>) -> u64 {
        let hasher = self.hasher;
        move |e| entry_hash(&hasher, hasher.hash_one(&e.key), &e.ns)
    }

    /// Forgets the removals of epoch `upto` and before: a confirmed checkpoint of that epoch
    /// is the base of every later delta.
    pub(crate) fn prune(&mut self, upto: u32) {
        if let Some(r) = &mut self.removals {
            let stale = |g: &[(u32, K, H::Namespace)]| g.iter().any(|(e, _, _)| *e <= upto);
            if r.by_group.iter().any(|g| stale(g)) {
                let groups = Arc::make_mut(&mut r.by_group);
                for g in groups.iter_mut().filter(|g| stale(g)) {
                    Arc::make_mut(g).retain(|(e, _, _)| *e > upto);
                }
                r.logged = groups.iter().map(|g| g.len()).sum();
            }
        }
    }

    /// Visits every entry of every key group.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry<K, H::Namespace, H::Stored>> + '_ {
        self.key_groups.iter().flat_map(|m| m.iter())
    }
}

/// What the backend needs of a table without knowing its types.
pub(crate) trait ErasedTable: Send + 'static {
    /// A frozen view of the table, taken in `epoch` (the epoch of the writes it holds).
    fn snapshot(&self, epoch: u32) -> Arc<dyn StateTableSnapshot>;
    /// Forgets logged removals of epoch `upto` and before (`StateTable::prune`).
    fn prune_removals(&mut self, upto: u32);
    fn len(&self) -> usize;
    /// The entries with something live at `now` under `ttl` (a scan, without encoding).
    fn live_len(&self, ttl: &TtlConfig, now: u64) -> usize;
    fn allocated_bytes(&self) -> usize;
    /// One step of incremental TTL cleanup (`ttl_cleanup::clean_step`).
    fn ttl_cleanup(
        &mut self,
        cursor: &mut CleanupCursor,
        budget: usize,
        ttl: &TtlConfig,
        now: u64,
        epoch: u32,
    ) -> usize;
}

impl<K: Key, H: StateHandle> ErasedTable for StateTable<K, H> {
    fn snapshot(&self, epoch: u32) -> Arc<dyn StateTableSnapshot> {
        Arc::new(TableSnapshot::<K, H> {
            meta: self.meta.clone(),
            range: self.range,
            key_groups: parking_lot::Mutex::new(self.key_groups.clone()),
            hasher: self.hasher,
            epoch,
            removals: self.removals.clone(),
        })
    }
    fn prune_removals(&mut self, upto: u32) {
        self.prune(upto);
    }
    fn len(&self) -> usize {
        self.key_groups.iter().map(|m| m.len()).sum()
    }
    fn live_len(&self, ttl: &TtlConfig, now: u64) -> usize {
        self.iter()
            .filter(|e| H::stored_expiry(&e.state, ttl, now) != Expiry::All)
            .count()
    }
    fn ttl_cleanup(
        &mut self,
        cursor: &mut CleanupCursor,
        budget: usize,
        ttl: &TtlConfig,
        now: u64,
        epoch: u32,
    ) -> usize {
        super::ttl_cleanup::clean_step(self, cursor, budget, ttl, now, epoch)
    }
    fn allocated_bytes(&self) -> usize {
        self.key_groups.capacity() * std::mem::size_of::<usize>()
            + self
                .key_groups
                .iter()
                .map(|m| std::mem::size_of::<KeyGroupMap<K, H>>() + 16 + m.allocated_bytes())
                .sum::<usize>()
    }
}

/// A frozen view of a [`StateTable`]: it shares the table's key-group maps.
struct TableSnapshot<K, H: StateHandle> {
    meta: Arc<StateMeta>,
    range: KeyGroupRange,
    /// Behind a lock only so that [`release_key_group`](StateTableSnapshot::release_key_group)
    /// can drop one; readers take the map they read out (one reference count) and let go.
    key_groups: parking_lot::Mutex<KeyGroupMaps<K, H>>,
    hasher: FixedState,
    /// The epoch of the newest writes it holds.
    epoch: u32,
    removals: Option<Removals<K, H::Namespace>>,
}

impl<K: Key, H: StateHandle> TableSnapshot<K, H> {
    /// The map of the key group at `index` (empty once released).
    fn key_group(&self, index: usize) -> Arc<KeyGroupMap<K, H>> {
        Arc::clone(&self.key_groups.lock()[index])
    }
}

impl<K: Key, H: StateHandle> StateTableSnapshot for TableSnapshot<K, H> {
    fn meta(&self) -> &StateMeta {
        &self.meta
    }

    /// Replaces the key group's map by an empty one: the live table's next write to the key
    /// group no longer copies what only this view held (its map, then each bucket it writes).
    /// The first release copies the vector of map pointers if the live table still shares it.
    fn release_key_group(&self, key_group: u16) {
        let Some(index) = self.range.index_of(key_group) else {
            return;
        };
        let mut key_groups = self.key_groups.lock();
        Arc::make_mut(&mut key_groups)[index] = Arc::new(CowMap::default());
    }

    fn tracks_changes_since(&self, epoch: u32) -> bool {
        self.removals
            .as_ref()
            .is_some_and(|r| epoch >= r.lost_upto && epoch < self.epoch)
    }

    /// The entries whose last write came after `epoch` (their slots record it), and the
    /// logged removals after `epoch` of pairs the view does not hold: work proportional to
    /// the entries of the key group (a comparison each) plus the changes (encoded).
    fn changes_since(
        &self,
        epoch: u32,
        key_group: u16,
        visit: &mut dyn FnMut(Change),
    ) -> crate::Result<()> {
        let Some(removals) = self
            .removals
            .as_ref()
            .filter(|_| self.tracks_changes_since(epoch))
        else {
            return Err(crate::Error::InvalidArgument(format!(
                "state '{}' does not track its changes since epoch {epoch}",
                self.meta.name
            )));
        };
        let Some(index) = self.range.index_of(key_group) else {
            return Ok(());
        };
        let map = self.key_group(index);
        for e in map.iter_since(epoch) {
            visit(Change::Changed(EncodedEntry {
                key: to_bytes(&e.key),
                namespace: to_bytes(&e.ns),
                state: H::encode_stored(&e.state),
            }));
        }
        let mut gone: Vec<(Vec<u8>, Vec<u8>)> = removals.by_group[index]
            .iter()
            .filter(|(e, _, _)| *e > epoch)
            .filter(|(_, key, ns)| {
                let hash = entry_hash(&self.hasher, self.hasher.hash_one(key), ns);
                map.get(hash, |e| e.key == *key && e.ns == *ns).is_none()
            })
            .map(|(_, key, ns)| (to_bytes(key), to_bytes(ns)))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        for (key, namespace) in gone {
            visit(Change::Removed { key, namespace });
        }
        Ok(())
    }

    fn entry_count(&self) -> crate::Result<usize> {
        Ok(self.key_groups.lock().iter().map(|m| m.len()).sum())
    }
    fn encode_key_group(
        &self,
        key_group: u16,
        run: &mut crate::snapshot::EncodedRun,
    ) -> crate::Result<()> {
        let Some(index) = self.range.index_of(key_group) else {
            return Ok(());
        };
        for e in self.key_group(index).iter() {
            H::encode_stored_run(&e.state, run, |b| e.key.encode(b), |b| e.ns.encode(b));
        }
        Ok(())
    }

    fn visit_key_group(
        &self,
        key_group: u16,
        visit: &mut dyn FnMut(EncodedEntry),
    ) -> crate::Result<()> {
        let Some(index) = self.range.index_of(key_group) else {
            return Ok(());
        };
        for e in self.key_group(index).iter() {
            visit(EncodedEntry {
                key: to_bytes(&e.key),
                namespace: to_bytes(&e.ns),
                state: H::encode_stored(&e.state),
            });
        }
        Ok(())
    }
}
