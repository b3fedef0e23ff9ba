//! Timers: event-time and processing-time timers per key and namespace, deduplicated, fired in
//! timestamp order with the current key set to the timer's key (Flink's
//! `InternalTimerService`; spec/state-semantics.md R72–R78).
//!
//! A [`TimerService`] keeps its timers in a keyed state of the backend (`timers:<name>`, one
//! entry per timer: the timer's key, a [`TimerSlot`] as namespace, no value), so that they are
//! part of every snapshot, restored with the keyed state and moved with their key group on a
//! rescale, on either backend. Beside it the service keeps the order in which they fire:
//!
//! - on the heap backend, every pending timer of each domain in an ordered set in memory;
//! - on the LSM backend, whose tree keeps timer states in firing order per key group (the timer
//!   layout, spec/lsm-key-layout.md section 9), only a cache of the earliest timers of each key
//!   group (`TimerService::register_with_cache`, 128 per key group by default) and the earliest
//!   of each group; the rest is read from the tree as the caches empty. A million pending
//!   timers need not fit in memory.
//!
//! Registering the service again on a restored backend takes up the restored timers.
//!
//! ```
//! use flowstate::*;
//! use flowstate::timer::{TimerService, TimeDomain};
//!
//! let mut backend = Backend::<u64>::open(BackendConfig::heap())?;
//! let mut timers = TimerService::<u64, TimeWindow>::register(&mut backend, "windows")?;
//! let w = TimeWindow::new(0, 60_000);
//! backend.set_current_key(&7);
//! timers.register_event_time_timer(&mut backend, &w, w.end - 1)?;
//! timers.register_event_time_timer(&mut backend, &w, w.end - 1)?; // deduplicated
//! let mut fired = Vec::new();
//! timers.advance_watermark(&mut backend, 59_999, |backend, _timers, timer| {
//!     assert_eq!(backend.current_key(), Some(&7)); // the timer's key is current
//!     fired.push((timer.key, timer.namespace, timer.timestamp));
//!     Ok(())
//! })?;
//! assert_eq!(fired, vec![(7, w, 59_999)]);
//! assert_eq!(timers.len(TimeDomain::EventTime), 0);
//! # Ok::<(), flowstate::Error>(())
//! ```

mod queued;
mod slot;
mod tree_queue;

use std::marker::PhantomData;

use crate::backend::KeyedStateBackend;
use crate::error::{Error, Result};
use crate::state::{Key, Namespace, StateHandle, ValueState, ValueStateDescriptor};
use queued::{MemoryQueue, Queued, INLINE};
pub use slot::TimerSlot;
pub(crate) use slot::{decode_slot_header, timestamp_bytes, SLOT_HEADER_LEN};
use tree_queue::TreeQueue;

/// The time a timer fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires when the watermark reaches its timestamp ([`TimerService::advance_watermark`]).
    EventTime,
    /// Fires when processing time reaches its timestamp
    /// ([`TimerService::advance_processing_time`]).
    ProcessingTime,
}

impl TimeDomain {
    pub(crate) fn code(self) -> u8 {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }

    fn index(self) -> usize {
        usize::from(self.code())
    }
}

/// A timer that fires: its key (current while it is handled), namespace, time and domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K, N> {
    /// The key the timer was registered for.
    pub key: K,
    /// The timer's namespace.
    pub namespace: N,
    /// When it was set to fire.
    pub timestamp: i64,
    /// Its domain.
    pub domain: TimeDomain,
}

/// The per-key-group cache of a [`TimerService`] on a backend that keeps timers in order
/// (LSM), unless [`TimerService::register_with_cache`] says otherwise: Flink's default
/// (`state.backend.rocksdb.timer-service.cache-size`).
pub const DEFAULT_CACHE_PER_KEY_GROUP: usize = 128;

/// Where a service keeps the order of its pending timers, per domain.
#[derive(Debug)]
enum Queues {
    /// All of them in memory (a backend that does not keep timers in order: heap).
    Memory([MemoryQueue; 2]),
    /// In the backend, with the earliest of each key group cached (LSM).
    Tree([TreeQueue; 2]),
}

/// The timers of one operator: registered per current key and namespace, deduplicated, fired
/// in order of (timestamp, key length, key bytes, namespace bytes) per domain. See the module
/// documentation.
#[derive(Debug)]
pub struct TimerService<K, N> {
    name: String,
    state: ValueState<(), TimerSlot<N>>,
    queues: Queues,
    _key: PhantomData<fn() -> K>,
}

/// The name of the keyed state that holds the timers of service `name`.
pub fn state_name(name: &str) -> String {
    format!("timers:{name}")
}

impl<K: Key, N: Namespace> TimerService<K, N> {
    /// Registers the timer service `name` with `backend` (its state `timers:<name>`), and takes
    /// up the timers a restored backend holds for it: those of the key groups it owns. On the
    /// LSM backend it caches [`DEFAULT_CACHE_PER_KEY_GROUP`] timers per key group.
    pub fn register<B: KeyedStateBackend<K>>(backend: &mut B, name: &str) -> Result<Self> {
        Self::register_with_cache(backend, name, DEFAULT_CACHE_PER_KEY_GROUP)
    }

    /// [`register`](Self::register), caching at most `per_key_group` timers of each domain per
    /// owned key group in memory where the backend keeps timers in order (LSM); the heap
    /// backend keeps them all in memory whatever this says. `per_key_group` must be at least 1.
    pub fn register_with_cache<B: KeyedStateBackend<K>>(
        backend: &mut B,
        name: &str,
        per_key_group: usize,
    ) -> Result<Self> {
        if per_key_group == 0 {
            return Err(Error::InvalidArgument(format!(
                "timer service '{name}': the cache must hold at least one timer per key group"
            )));
        }
        let state_name = state_name(name);
        let state = backend.register(
            ValueStateDescriptor::<()>::new(state_name.clone()).with_namespace::<TimerSlot<N>>(),
        )?;
        let queues = if backend.timers_in_order(state.id()) {
            let load = |domain| TreeQueue::load(backend, state.id(), domain, per_key_group);
            Queues::Tree([
                load(TimeDomain::EventTime)?,
                load(TimeDomain::ProcessingTime)?,
            ])
        } else {
            Queues::Memory(load_memory(backend, name, &state_name)?)
        };
        Ok(TimerService {
            name: name.to_owned(),
            state,
            queues,
            _key: PhantomData,
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of pending timers of `domain`.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match &self.queues {
            Queues::Memory(q) => q[domain.index()].len(),
            Queues::Tree(q) => q[domain.index()].len(),
        }
    }

    /// Whether no timer of either domain is pending.
    pub fn is_empty(&self) -> bool {
        self.len(TimeDomain::EventTime) == 0 && self.len(TimeDomain::ProcessingTime) == 0
    }

    /// The number of pending timers held in memory, both domains: all of them on the heap
    /// backend, at most the cache size per owned key group and domain on the LSM backend.
    pub fn timers_in_memory(&self) -> usize {
        match &self.queues {
            Queues::Memory(q) => q.iter().map(MemoryQueue::len).sum(),
            Queues::Tree(q) => q.iter().map(TreeQueue::cached).sum(),
        }
    }

    /// The time of the earliest pending timer of `domain`.
    pub fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.first(domain).map(|q| q.timestamp)
    }

    /// The earliest pending timer of `domain`.
    fn first(&self, domain: TimeDomain) -> Option<&Queued> {
        match &self.queues {
            Queues::Memory(q) => q[domain.index()].first(),
            Queues::Tree(q) => q[domain.index()].first(),
        }
    }

    /// Fails if reading timers back from the backend failed earlier (the order in memory may
    /// then miss some): such a service is not used again; register it anew on a backend
    /// restored from a checkpoint.
    fn check_usable(&self) -> Result<()> {
        let failed = match &self.queues {
            Queues::Memory(_) => None,
            Queues::Tree(q) => q.iter().find_map(TreeQueue::failure),
        };
        match failed {
            None => Ok(()),
            Some(reason) => Err(Error::InvalidArgument(format!(
                "timer service '{}' failed reading its timers ({reason}): register it again \
                 on a backend restored from a checkpoint",
                self.name
            ))),
        }
    }

    /// Registers a timer of `domain` at `timestamp` for the current key in `namespace`; a timer
    /// already registered there is not added twice (R73).
    pub fn register_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        let (queued, slot, pending) = self.locate(backend, domain, namespace, timestamp)?;
        if pending {
            return Ok(());
        }
        backend.value(&self.state).namespace(&slot).update(())?;
        match &mut self.queues {
            Queues::Memory(queues) => queues[domain.index()].insert(queued),
            Queues::Tree(queues) => {
                let kg = owned_key_group(backend)?;
                queues[domain.index()].added(kg, queued, true);
            }
        }
        Ok(())
    }

    /// Deletes the timer of `domain` at `timestamp` for the current key in `namespace`, if
    /// there is one.
    pub fn delete_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        let (queued, slot, pending) = self.locate(backend, domain, namespace, timestamp)?;
        if !pending {
            return Ok(());
        }
        backend.value(&self.state).namespace(&slot).clear()?;
        match &mut self.queues {
            Queues::Memory(queues) => {
                queues[domain.index()].remove(&queued);
            }
            Queues::Tree(queues) => {
                let kg = owned_key_group(backend)?;
                queues[domain.index()].removed(backend, kg, &queued, true)?;
            }
        }
        Ok(())
    }

    /// The queue entry and the slot of the timer of `domain` at `timestamp` for the current key
    /// in `namespace`, and whether it is pending: the in-memory order tells, or (a tree queue
    /// whose cache cannot) one read of the state.
    fn locate<B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
    ) -> Result<(Queued, TimerSlot<N>, bool)> {
        self.check_usable()?;
        let queued = self.queued(backend, timestamp, namespace)?;
        let slot = TimerSlot {
            domain,
            timestamp,
            namespace: namespace.clone(),
        };
        let known = match &self.queues {
            Queues::Memory(queues) => Some(queues[domain.index()].contains(&queued)),
            Queues::Tree(queues) => {
                queues[domain.index()].knows(owned_key_group(backend)?, &queued)
            }
        };
        let pending = match known {
            Some(pending) => pending,
            None => backend.value(&self.state).namespace(&slot).get()?.is_some(),
        };
        Ok((queued, slot, pending))
    }

    /// [`register_timer`](Self::register_timer) in event time.
    pub fn register_event_time_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.register_timer(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// [`register_timer`](Self::register_timer) in processing time.
    pub fn register_processing_time_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.register_timer(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// [`delete_timer`](Self::delete_timer) in event time.
    pub fn delete_event_time_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.delete_timer(backend, TimeDomain::EventTime, namespace, timestamp)
    }

    /// [`delete_timer`](Self::delete_timer) in processing time.
    pub fn delete_processing_time_timer<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        namespace: &N,
        timestamp: i64,
    ) -> Result<()> {
        self.delete_timer(backend, TimeDomain::ProcessingTime, namespace, timestamp)
    }

    /// Removes the earliest timer of `domain` due at `time` (timestamp at most `time`), makes
    /// its key the current key and returns it; `None` if no timer is due. The caller handles
    /// it (and may register more timers) before polling again.
    ///
    /// A timer whose key or namespace does not decode (a damaged restore) is an error and stays
    /// pending, as it stays in the state.
    pub fn poll<B: KeyedStateBackend<K>>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Option<Timer<K, N>>> {
        self.check_usable()?;
        let Some(queued) = self.first(domain) else {
            return Ok(None);
        };
        if queued.timestamp > time {
            return Ok(None);
        }
        let timestamp = queued.timestamp;
        let bad = |what: &str, source| Error::Codec {
            what: format!("the {what} of a timer of service '{}'", self.name),
            source,
        };
        let key = K::decode(queued.key()).map_err(|e| bad("key", e))?;
        let namespace = N::decode(queued.namespace()).map_err(|e| bad("namespace", e))?;
        let queued = queued.clone();
        backend.set_current_key(&key);
        let slot = TimerSlot {
            domain,
            timestamp,
            namespace: namespace.clone(),
        };
        backend.value(&self.state).namespace(&slot).clear()?;
        match &mut self.queues {
            Queues::Memory(queues) => {
                queues[domain.index()].pop_first();
            }
            Queues::Tree(queues) => {
                // The timer's key is current: its key group is the timer's.
                let kg = owned_key_group(backend)?;
                queues[domain.index()].popped(backend, kg, &queued)?;
            }
        }
        Ok(Some(Timer {
            key,
            namespace,
            timestamp,
            domain,
        }))
    }

    /// Fires every event-time timer due at `watermark`, in order, calling `on_timer` with the
    /// backend (the timer's key current), the service (to register or delete timers; one due
    /// at `watermark` fires in this same call) and the timer. Returns how many fired.
    pub fn advance_watermark<B, F>(
        &mut self,
        backend: &mut B,
        watermark: i64,
        on_timer: F,
    ) -> Result<usize>
    where
        B: KeyedStateBackend<K>,
        F: FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    {
        self.advance(backend, TimeDomain::EventTime, watermark, on_timer)
    }

    /// Fires every processing-time timer due at `now` (see
    /// [`advance_watermark`](Self::advance_watermark)).
    pub fn advance_processing_time<B, F>(
        &mut self,
        backend: &mut B,
        now: i64,
        on_timer: F,
    ) -> Result<usize>
    where
        B: KeyedStateBackend<K>,
        F: FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    {
        self.advance(backend, TimeDomain::ProcessingTime, now, on_timer)
    }

    fn advance<B, F>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        time: i64,
        mut on_timer: F,
    ) -> Result<usize>
    where
        B: KeyedStateBackend<K>,
        F: FnMut(&mut B, &mut Self, Timer<K, N>) -> Result<()>,
    {
        let mut fired = 0;
        while let Some(timer) = self.poll(backend, domain, time)? {
            on_timer(backend, self, timer)?;
            fired += 1;
        }
        Ok(fired)
    }

    /// The queue entry of a timer of the current key.
    fn queued<B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        timestamp: i64,
        namespace: &N,
    ) -> Result<Queued> {
        let key = backend.current_key().ok_or(Error::NoCurrentKey)?;
        let mut buf = Vec::with_capacity(INLINE);
        key.encode(&mut buf);
        let key_len = buf.len();
        namespace.encode(&mut buf);
        Ok(Queued::new(timestamp, &buf[..key_len], &buf[key_len..]))
    }
}

/// The current key's group, which the backend must own (as every state access requires):
/// `NoCurrentKey` or `KeyGroupOutOfRange` otherwise.
fn owned_key_group<K: Key, B: KeyedStateBackend<K>>(backend: &B) -> Result<u16> {
    let kg = backend.current_key_group().ok_or(Error::NoCurrentKey)?;
    let range = backend.key_group_range();
    if range.contains(kg) {
        Ok(kg)
    } else {
        Err(Error::KeyGroupOutOfRange {
            key_group: kg,
            range,
        })
    }
}

/// Every timer of state `state_name` of a backend that does not keep them in order, read from
/// a frozen view into one in-memory queue per domain.
fn load_memory<K: Key, B: KeyedStateBackend<K>>(
    backend: &mut B,
    service: &str,
    state_name: &str,
) -> Result<[MemoryQueue; 2]> {
    let mut queues = [MemoryQueue::default(), MemoryQueue::default()];
    let view = backend.snapshot_state()?;
    let Some(table) = view.state(state_name) else {
        return Ok(queues);
    };
    let mut failure = None;
    for kg in backend.key_group_range().iter() {
        table.visit_key_group(kg, &mut |e| {
            if failure.is_some() {
                return;
            }
            match decode_slot_header(&mut &e.namespace[..]) {
                Ok((domain, timestamp)) => {
                    let ns = &e.namespace[SLOT_HEADER_LEN..];
                    queues[domain.index()].insert(Queued::new(timestamp, &e.key, ns));
                }
                Err(source) => {
                    failure = Some(Error::Codec {
                        what: format!("a timer of service '{service}' in key group {kg}"),
                        source,
                    })
                }
            }
        })?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(queues),
    }
}
