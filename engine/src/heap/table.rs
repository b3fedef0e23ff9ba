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

/// The typed table of one registered state.
pub(crate) struct StateTable<K, H: StateHandle> {
    pub(crate) meta: Arc<StateMeta>,
    pub(crate) extra: H::Extra,
    pub(crate) hasher: FixedState,
    pub(crate) range: KeyGroupRange,
    pub(crate) key_groups: Arc<Vec<Arc<KeyGroupMap<K, H>>>>,
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
        }
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

    /// Visits every entry of every key group.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry<K, H::Namespace, H::Stored>> + '_ {
        self.key_groups.iter().flat_map(|m| m.iter())
    }
}

/// What the backend needs of a table without knowing its types.
pub(crate) trait ErasedTable: Send + 'static {
    fn snapshot(&self) -> Arc<dyn StateTableSnapshot>;
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
    ) -> usize;
}

impl<K: Key, H: StateHandle> ErasedTable for StateTable<K, H> {
    fn snapshot(&self) -> Arc<dyn StateTableSnapshot> {
        Arc::new(TableSnapshot::<K, H> {
            meta: self.meta.clone(),
            range: self.range,
            key_groups: self.key_groups.clone(),
        })
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
    ) -> usize {
        super::ttl_cleanup::clean_step(self, cursor, budget, ttl, now)
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
    key_groups: Arc<Vec<Arc<KeyGroupMap<K, H>>>>,
}

impl<K: Key, H: StateHandle> TableSnapshot<K, H> {
    /// `base` as a view of this same table type and range.
    fn same_table<'a>(&self, base: &'a dyn StateTableSnapshot) -> Option<&'a Self> {
        base.as_any()?
            .downcast_ref::<Self>()
            .filter(|b| b.range == self.range && b.key_groups.len() == self.key_groups.len())
    }
}

impl<K: Key, H: StateHandle> StateTableSnapshot for TableSnapshot<K, H> {
    fn meta(&self) -> &StateMeta {
        &self.meta
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn diffable_with(&self, base: &dyn StateTableSnapshot) -> bool {
        self.same_table(base).is_some()
    }

    /// Compares the key group's map with the base's bucket by bucket: buckets still shared
    /// with the base (copy on write: no write touched them since) hold the same entries and are
    /// skipped; the entries of the other buckets are matched by (key, namespace) and their
    /// encoded states compared. Work is proportional to the buckets written since the base.
    fn changes_since(
        &self,
        base: &dyn StateTableSnapshot,
        key_group: u16,
        visit: &mut dyn FnMut(Change),
    ) -> crate::Result<()> {
        let Some(base) = self.same_table(base) else {
            return Err(crate::Error::InvalidArgument(format!(
                "state '{}': the base is not an earlier view of this table",
                self.meta.name
            )));
        };
        let Some(index) = self.range.index_of(key_group) else {
            return Ok(());
        };
        let (old, new) = (&base.key_groups[index], &self.key_groups[index]);
        if Arc::ptr_eq(old, new) {
            return Ok(());
        }
        let buckets = old.bucket_count().max(new.bucket_count());
        let mut before: std::collections::HashMap<
            (Vec<u8>, Vec<u8>),
            &Entry<K, H::Namespace, H::Stored>,
        > = std::collections::HashMap::new();
        let mut after = Vec::new();
        for b in 0..buckets {
            if new.same_bucket(old, b) {
                continue;
            }
            for e in old.bucket_entries(b) {
                before.insert((to_bytes(&e.key), to_bytes(&e.ns)), e);
            }
            after.extend(new.bucket_entries(b));
        }
        for e in after {
            let (key, namespace) = (to_bytes(&e.key), to_bytes(&e.ns));
            let state = H::encode_stored(&e.state);
            if let Some(was) = before.remove(&(key.clone(), namespace.clone())) {
                if H::encode_stored(&was.state) == state {
                    continue;
                }
            }
            visit(Change::Changed(EncodedEntry {
                key,
                namespace,
                state,
            }));
        }
        for ((key, namespace), _) in before {
            visit(Change::Removed { key, namespace });
        }
        Ok(())
    }
    fn entry_count(&self) -> crate::Result<usize> {
        Ok(self.key_groups.iter().map(|m| m.len()).sum())
    }
    fn encode_key_group(
        &self,
        key_group: u16,
        run: &mut crate::snapshot::EncodedRun,
    ) -> crate::Result<()> {
        let Some(index) = self.range.index_of(key_group) else {
            return Ok(());
        };
        for e in self.key_groups[index].iter() {
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
        for e in self.key_groups[index].iter() {
            visit(EncodedEntry {
                key: to_bytes(&e.key),
                namespace: to_bytes(&e.ns),
                state: H::encode_stored(&e.state),
            });
        }
        Ok(())
    }
}
