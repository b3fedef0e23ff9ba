//! The pending timers of one domain on a backend that keeps them in firing order (the LSM
//! backend's timer layout): the backend holds them all; memory holds, per key group, a cache of
//! the earliest few and, over the key groups, an ordered set of each group's earliest timer
//! (Flink's `KeyGroupPartitionedPriorityQueue` over `RocksDBCachingPriorityQueueSet`s).
//!
//! Per key group the cache is the `n` earliest timers of the group in the backend, for some
//! `n <= capacity`, and `complete` says whether they are all of them. Every change keeps that
//! invariant:
//!
//! - a new timer earlier than the cache's last (or any, when complete) joins the cache, which
//!   drops its last beyond `capacity` (that one stays in the backend: no longer complete); a
//!   later one goes to the backend only;
//! - a removed timer leaves the cache if it is there;
//! - a cache that empties while incomplete is refilled at once from the backend, so the head of
//!   a key group is always in memory.
//!
//! So memory holds at most `capacity` timers per owned key group, however many are pending.
//!
//! Fired timers leave tombstones in the tree until compaction drops them. So that a refill does
//! not step over all of them each time, each group keeps a floor (Flink's seek hint): every
//! timer in the tree below it is in the cache, and a refill reads from it. Firing the earliest
//! timer raises the floor to it; a timer below the floor that goes to the tree only (dropped
//! by a full cache, or registered later than the cache's last) lowers the floor to it.

use std::collections::BTreeSet;

use super::queued::Queued;
use super::TimeDomain;
use crate::backend::KeyedStateBackend;
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::state::{Key, StateId};

/// The earliest timers of one key group.
#[derive(Debug, Default)]
struct GroupCache {
    cached: BTreeSet<Queued>,
    /// Whether `cached` holds every timer of the group.
    complete: bool,
    /// Every timer of the group in the tree below this one is in `cached` (`None`: the
    /// group's start).
    floor: Option<Queued>,
}

/// Reads up to `limit` timers of `group` (key group `key_group`) from its floor on into its cache,
/// keeping the first `capacity`, and marks whether that is all of them. Returns how many it read.
fn fill<K: Key, B: KeyedStateBackend<K>>(
    backend: &B,
    state: StateId,
    domain: TimeDomain,
    key_group: u16,
    group: &mut GroupCache,
    capacity: usize,
    limit: usize,
) -> Result<usize> {
    let mut seen = 0usize;
    let GroupCache {
        cached,
        complete,
        floor,
    } = group;
    let from = floor
        .as_ref()
        .map(|f| (f.timestamp, f.key(), f.namespace()));
    backend.scan_timers(
        state,
        key_group,
        domain.code(),
        from,
        limit,
        &mut |ts, key, ns| {
            if seen < capacity {
                cached.insert(Queued::new(ts, key, ns));
            }
            seen += 1;
        },
    )?;
    *complete = seen <= capacity;
    Ok(seen)
}

/// Keeps the floor's promise for `timer`, in the tree and not in the cache: every timer below
/// the floor is cached, so a floor above it comes down to it.
fn lower_floor(group: &mut GroupCache, timer: Queued) {
    if group.floor.as_ref().is_some_and(|floor| timer < *floor) {
        group.floor = Some(timer);
    }
}

/// The head of a key group in the set of heads: its earliest timer, then the group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Head {
    timer: Queued,
    key_group: u16,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct TreeQueue {
    state: StateId,
    domain: TimeDomain,
    range: KeyGroupRange,
    capacity: usize,
    groups: Vec<GroupCache>,
    heads: BTreeSet<Head>,
    len: usize,
    /// Why a refill failed, if one did: the caches may then miss timers, and the service
    /// refuses further use.
    failed: Option<String>,
}

impl TreeQueue {
    /// Reads the timers of `domain` of timer state `state` in the key groups of `range`: counts
    /// them and caches the earliest `capacity` of each group.
    pub(super) fn load<K: Key, B: KeyedStateBackend<K>>(
        backend: &B,
        state: StateId,
        domain: TimeDomain,
        capacity: usize,
    ) -> Result<TreeQueue> {
        let range = backend.key_group_range();
        let mut queue = TreeQueue {
            state,
            domain,
            range,
            capacity,
            groups: (0..range.len()).map(|_| GroupCache::default()).collect(),
            heads: BTreeSet::new(),
            len: 0,
            failed: None,
        };
        for kg in range.iter() {
            let index = queue.index(kg);
            let group = &mut queue.groups[index];
            let seen = fill(backend, state, domain, kg, group, capacity, usize::MAX)?;
            queue.len += seen;
            if let Some(first) = group.cached.first() {
                queue.heads.insert(Head {
                    timer: first.clone(),
                    key_group: kg,
                });
            }
        }
        Ok(queue)
    }

    fn index(&self, key_group: u16) -> usize {
        usize::from(key_group - self.range.start())
    }

    /// Why reading timers back failed, if it did (see `failed`).
    pub(super) fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The number of pending timers.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The number of timers held in memory (in the caches).
    pub(super) fn cached(&self) -> usize {
        self.groups.iter().map(|g| g.cached.len()).sum()
    }

    /// The earliest pending timer.
    pub(super) fn first(&self) -> Option<&Queued> {
        self.heads.first().map(|h| &h.timer)
    }

    /// Whether `timer` of `key_group` is pending, if the cache can tell (it can for timers up
    /// to its last, and for all when complete); `None` means ask the backend.
    pub(super) fn knows(&self, key_group: u16, timer: &Queued) -> Option<bool> {
        let group = &self.groups[self.index(key_group)];
        let within = group.complete || group.cached.last().is_some_and(|last| timer <= last);
        within.then(|| group.cached.contains(timer))
    }

    /// Records a timer of `key_group` just written to the backend; `new` if it was not
    /// pending before.
    pub(super) fn added(&mut self, key_group: u16, timer: Queued, new: bool) {
        if new {
            self.len += 1;
        }
        let index = self.index(key_group);
        let capacity = self.capacity;
        let before = self.groups[index].cached.first().cloned();
        let group = &mut self.groups[index];
        if group.complete || group.cached.last().is_some_and(|last| timer < *last) {
            group.cached.insert(timer);
            if group.cached.len() > capacity {
                if let Some(dropped) = group.cached.pop_last() {
                    lower_floor(group, dropped);
                }
                group.complete = false;
            }
        } else {
            // In the tree only: below the floor, it becomes the floor.
            lower_floor(group, timer);
        }
        self.head_changed(key_group, before);
    }

    /// Records that a timer of `key_group` was just deleted from the backend; `existed` if
    /// it was pending.
    pub(super) fn removed<K: Key, B: KeyedStateBackend<K>>(
        &mut self,
        backend: &B,
        key_group: u16,
        timer: &Queued,
        existed: bool,
    ) -> Result<()> {
        if existed {
            self.len -= 1;
        }
        let index = self.index(key_group);
        let before = self.groups[index].cached.first().cloned();
        let refilled = if self.groups[index].cached.remove(timer) {
            self.refill_if_empty(backend, key_group)
        } else {
            Ok(())
        };
        // The heads follow the cache even when a refill failed; the queue is then marked
        // failed (the group may hold timers no cache shows).
        self.head_changed(key_group, before);
        if let Err(e) = &refilled {
            self.failed = Some(e.to_string());
        }
        refilled
    }

    /// Records that the earliest pending timer (`first`) of `key_group` was just deleted
    /// from the backend, as it fires: no timer below it is left in the tree.
    pub(super) fn popped<K: Key, B: KeyedStateBackend<K>>(
        &mut self,
        backend: &B,
        key_group: u16,
        timer: &Queued,
    ) -> Result<()> {
        let index = self.index(key_group);
        let group = &mut self.groups[index];
        if group.floor.as_ref().is_none_or(|floor| floor < timer) {
            group.floor = Some(timer.clone());
        }
        self.removed(backend, key_group, timer, true)
    }

    /// Refills an incomplete, empty cache with the earliest timers of the group.
    fn refill_if_empty<K: Key, B: KeyedStateBackend<K>>(
        &mut self,
        backend: &B,
        key_group: u16,
    ) -> Result<()> {
        let index = self.index(key_group);
        let capacity = self.capacity;
        let group = &mut self.groups[index];
        if !group.cached.is_empty() || group.complete {
            return Ok(());
        }
        fill(
            backend,
            self.state,
            self.domain,
            key_group,
            group,
            capacity,
            capacity + 1,
        )?;
        Ok(())
    }

    /// Puts the set of heads right after `key_group`'s earliest timer was `before`.
    fn head_changed(&mut self, key_group: u16, before: Option<Queued>) {
        let after = self.groups[self.index(key_group)].cached.first();
        if before.as_ref() == after {
            return;
        }
        let after = after.cloned();
        if let Some(timer) = before {
            self.heads.remove(&Head { timer, key_group });
        }
        if let Some(timer) = after {
            self.heads.insert(Head { timer, key_group });
        }
    }
}
